"""Checks upload checksums in front of moto the way S3 does (moto stores them unchecked): a PUT
whose x-amz-checksum-crc32 is not the CRC-32 of its body gets 400 BadDigest, and a multipart
completion whose part checksums are not those of the parts as last received gets 400 InvalidPart.
With refuse=True it plays a store without checksum support: a request carrying a checksum header
gets 400 InvalidArgument. The first checksummed PUT of a key containing "damaged-once" is answered
400 BadDigest, as if its bytes had been damaged on the way."""
import base64
import binascii
import re
import threading
from urllib.parse import parse_qs, urlsplit

from s3proxy import ForwardingProxy


def crc32_b64(data):
    return base64.b64encode(binascii.crc32(data).to_bytes(4, "big")).decode()


class ChecksumProxy(ForwardingProxy):
    def __init__(self, upstream_port, refuse=False):
        self.lock = threading.Lock()
        self.refuse = refuse
        self.part_crcs = {}  # (upload id, part number) -> CRC of the part's bytes as last received
        self.verified_puts = []  # paths of PUTs whose checksum matched their body
        self.plain_puts = []  # paths of PUTs with a body and no checksum
        self.verified_completions = 0
        self.rejected = []  # (path, code)
        self.damaged_once = set()
        super().__init__(upstream_port, inspect=self.check)

    def check(self, method, path, headers, body):
        crc = headers.get("x-amz-checksum-crc32")
        with self.lock:
            if self.refuse and (crc or headers.get("x-amz-checksum-algorithm")):
                self.rejected.append((path, "InvalidArgument"))
                return (400, "InvalidArgument")
            query = parse_qs(urlsplit(path).query, keep_blank_values=True)
            if method == "PUT" and "x-amz-copy-source" not in headers:
                if crc is None:
                    self.plain_puts.append(path)
                    return None
                actual = crc32_b64(body or b"")
                key = urlsplit(path).path
                if "damaged-once" in key and key not in self.damaged_once:
                    self.damaged_once.add(key)
                    actual = crc32_b64((body or b"") + b"!")
                if actual != crc:
                    self.rejected.append((path, "BadDigest"))
                    return (400, "BadDigest")
                if "uploadId" in query:
                    self.part_crcs[(query["uploadId"][0], int(query["partNumber"][0]))] = actual
                self.verified_puts.append(path)
            elif method == "POST" and "uploadId" in query and body:
                upload = query["uploadId"][0]
                parts = re.findall(rb"<Part>(.*?)</Part>", body, re.S)
                for part in parts:
                    number = int(re.search(rb"<PartNumber>(\d+)</PartNumber>", part).group(1))
                    sent = re.search(rb"<ChecksumCRC32>([^<]*)</ChecksumCRC32>", part)
                    if (upload, number) in self.part_crcs:
                        if not sent or sent.group(1).decode() != self.part_crcs[(upload, number)]:
                            self.rejected.append((path, "InvalidPart"))
                            return (400, "InvalidPart")
                if any((upload, n) in self.part_crcs for n in range(1, len(parts) + 1)):
                    self.verified_completions += 1
        return None
