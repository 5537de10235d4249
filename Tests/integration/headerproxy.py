"""Records the headers of every request on its way to the store, by request kind: the stores'
access logs give method, path and status only, and the headers are what the bucket's settings
(encryption, storage class, requester pays, expected owner) travel in."""
from urllib.parse import parse_qs, urlsplit

from s3proxy import ForwardingProxy


def kind(method, path, headers):
    """The S3 operation of a path-style request."""
    parts = urlsplit(path)
    q = parse_qs(parts.query, keep_blank_values=True)
    has_key = parts.path.strip("/").count("/") >= 1
    copy = "x-amz-copy-source" in headers
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if not has_key:
            return "ListObjectVersions" if "versions" in q else "ListObjectsV2"
        return "GetObject(range)" if "Range" in headers else "GetObject"
    if method == "PUT":
        if "partNumber" in q:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        if "delete" in q:
            return "DeleteObjects"
        if "restore" in q:
            return "RestoreObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return method


class HeaderProxy(ForwardingProxy):
    def __init__(self, upstream_port):
        self.seen = []  # (kind, path, {lower-case header: value})
        super().__init__(upstream_port, inspect=self.record)

    def record(self, method, path, headers, body):
        self.seen.append((kind(method, path, headers), path, {k.lower(): v for k, v in headers.items()}))
        return None

    def kinds(self):
        return {k for k, _, _ in self.seen}

    def of(self, k):
        return [h for kk, _, h in self.seen if kk == k]
