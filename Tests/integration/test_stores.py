"""Where moto and Ceph RGW answer differently (docs/SEMANTICS.md, "Stores: moto and Ceph RGW"):
each behaviour asserted for the store of the run, and what s3mount does with it. The store is
asked directly (boto3, or a request signed by hand where boto3 would hide the answer's form)."""
import base64
import errno
import hashlib
import http.client
import os
import stat
import zlib

import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import CREDS, STORE, run, seed


def code_of(fn):
    """The S3 error code of a call, or "ok"."""
    try:
        fn()
        return "ok"
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]


def raw(store, method, path, query="", headers=None, body=b""):
    """A request signed here (SigV4, as s3mount signs it): (status, headers, body)."""
    target = path + ("?" + query if query else "")
    h = dict(headers or {})
    h["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    req = AWSRequest(method=method, url=store.endpoint + target, data=body, headers=h)
    SigV4Auth(Credentials(CREDS["AWS_ACCESS_KEY_ID"], CREDS["AWS_SECRET_ACCESS_KEY"]), "s3", "us-east-1").add_auth(req)
    c = http.client.HTTPConnection("127.0.0.1", store.port, timeout=30)
    c.request(method, target, body=body, headers=dict(req.headers.items()))
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return out


def test_signatures_and_keys_are_checked_by_rgw_only(moto, s3, bucket, mount):
    wrong_secret = moto.client(AWS_SECRET_ACCESS_KEY="not-the-secret")
    unknown_key = moto.client(AWS_ACCESS_KEY_ID="AKIAUNKNOWNKEY000000")
    got = (code_of(lambda: wrong_secret.list_objects_v2(Bucket=bucket)), code_of(lambda: unknown_key.list_objects_v2(Bucket=bucket)))
    assert got == (("SignatureDoesNotMatch", "InvalidAccessKeyId") if STORE == "rgw" else ("ok", "ok"))
    # Every request s3mount sends is signed right: RGW refused none of a session's worth
    # (listings with odd prefixes, ranged GETs, multipart uploads, copies, deletes).
    odd = ["a+b c.txt", "%41 é.txt", "t~a=e&amp;@x,y;z'q", "cafe\u0301", "(paren) [br] {c} $d #h"]
    seed(s3, bucket, [f"odd dir/{n}" for n in odd] + ["plain/x"])
    m = mount(bucket)
    pos = moto.log_position()
    script = (f"cd {m.path} && ls -la 'odd dir' plain >/dev/null && cat 'odd dir'/* >/dev/null && "
              f"head -c 12000000 /dev/urandom > 'new file+1.bin' && mv 'new file+1.bin' 'odd dir/moved é.bin' && "
              f"chmod 600 'odd dir/moved é.bin' && mv 'odd dir' 'renamed dir' && rm -r plain && ls -la 'renamed dir'")
    out = run(script)
    assert out.returncode == 0, out.stderr
    m.unmount()
    refused = [r for r in moto.requests_since(pos, bucket) if r[1] in (400, 403)]
    assert refused == []
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if not o["Key"].endswith(".s3mount-meta")) == \
        sorted([f"renamed dir/{n}" for n in odd] + ["renamed dir/moved é.bin"])


def test_conditional_writes_and_the_etag_quotes(moto, s3, bucket, mount):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["ETag"]
    assert etag.startswith('"')
    # If-None-Match: * holds on both.
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")) == "PreconditionFailed"
    # If-Match: RGW 16.2 compares the header with the stored ETag without its quotes.
    quoted = code_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"1", IfMatch=etag))
    assert quoted == ("PreconditionFailed" if STORE == "rgw" else "ok")
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"1", IfMatch=etag.strip('"'))) == "ok"
    # A GET's If-Match and a copy's x-amz-copy-source-if-match take the quoted form on both.
    assert code_of(lambda: s3.get_object(Bucket=bucket, Key="k", IfMatch=etag)) == "ok"
    assert code_of(lambda: s3.copy_object(Bucket=bucket, Key="k2", CopySource={"Bucket": bucket, "Key": "k"}, CopySourceIfMatch=etag)) == "ok"
    # If-Match on a key that does not exist.
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key="absent", Body=b"1", IfMatch=etag)) == \
        ("PreconditionFailed" if STORE == "rgw" else "NoSuchKey")
    # s3mount writes a directory's metadata index with If-None-Match, then If-Match: both mounts'
    # changes are kept on both stores (on RGW after one 412, the ETag then sent unquoted).
    m = mount(bucket)
    assert run(f"touch {m.path}/a {m.path}/b && chmod 640 {m.path}/a").returncode == 0
    m.unmount()  # the index is new: If-None-Match
    m2 = mount(bucket)
    assert run(f"chmod 604 {m2.path}/b && chown 12:34 {m2.path}/a").returncode == 0
    m2.unmount()  # the index as read: If-Match
    assert "could not be written" not in m.log() + m2.log()
    assert ("sent so from now on" in m2.log()) == (STORE == "rgw")
    m3 = mount(bucket)
    a, b = os.stat(os.path.join(m3.path, "a")), os.stat(os.path.join(m3.path, "b"))
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid, stat.S_IMODE(b.st_mode)) == (0o640, 12, 34, 0o604)


def test_checksums_are_kept_by_moto_and_ignored_by_rgw(moto, s3, bucket, mount):
    data = b"hello world"
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    # Sent as a plain header (as s3mount sends it), not in an aws-chunked trailer: neither keeps
    # it (moto keeps a PutObject's checksum only with x-amz-sdk-checksum-algorithm beside it).
    st, _, _ = raw(moto, "PUT", f"/{bucket}/good", headers={"x-amz-checksum-crc32": good}, body=data)
    assert st == 200
    st, h, _ = raw(moto, "HEAD", f"/{bucket}/good", headers={"x-amz-checksum-mode": "ENABLED"})
    assert h.get("x-amz-checksum-crc32") is None
    # A wrong CRC-32: S3 answers BadDigest; moto stores it unchecked, RGW ignores the header.
    st, _, _ = raw(moto, "PUT", f"/{bucket}/bad", headers={"x-amz-checksum-crc32": "AAAAAA=="}, body=data)
    assert st == 200
    # A multipart upload asked with a checksum algorithm: RGW neither refuses nor echoes it.
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="mpu", ChecksumAlgorithm="CRC32")
    assert mpu["ResponseMetadata"]["HTTPHeaders"].get("x-amz-checksum-algorithm") == (None if STORE == "rgw" else "CRC32")
    part = os.urandom(1000)
    crc = base64.b64encode(zlib.crc32(part).to_bytes(4, "big")).decode()
    etag = s3.upload_part(Bucket=bucket, Key="mpu", UploadId=mpu["UploadId"], PartNumber=1, Body=part, ChecksumCRC32=crc)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=mpu["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag, "ChecksumCRC32": crc}]})
    # moto keeps the composite CRC-32 of a multipart upload (without S3's "-N"), RGW none.
    kept = s3.head_object(Bucket=bucket, Key="mpu", ChecksumMode="ENABLED").get("ChecksumCRC32")
    assert (kept is None) == (STORE == "rgw"), kept
    # s3mount: checksums are sent (not refused: nothing to fall back from) and every upload lands.
    m = mount(bucket)
    src = os.urandom(12 << 20)
    with open(os.path.join(m.path, "up.bin"), "wb") as f:
        f.write(src)
    assert run(f"echo small > {m.path}/small.txt").returncode == 0
    m.unmount()
    assert "refused upload checksums" not in m.log()
    assert s3.get_object(Bucket=bucket, Key="up.bin")["Body"].read() == src


def test_etags_of_completions_and_copies(moto, s3, bucket, mount, tmp_path):
    """RGW 16.2 answers CompleteMultipartUpload with an empty <ETag/> and CopyObject with an
    unquoted one (its listings and HEADs quote them); s3mount keeps working from the listing."""
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    p1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=mpu, PartNumber=1, Body=b"a" * (5 << 20))["ETag"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=mpu,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1}]})
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="mp")["Contents"][0]["ETag"]
    assert listed.startswith('"') and listed.endswith('-1"')
    assert done.get("ETag", "") == ("" if STORE == "rgw" else listed)
    copied = s3.copy_object(Bucket=bucket, Key="cp", CopySource={"Bucket": bucket, "Key": "mp"})["CopyObjectResult"]["ETag"]
    assert copied.startswith('"') == (STORE != "rgw")
    # Through the mount: a multipart write read back (its completion gave RGW's empty ETag), a
    # rename (a copy) and a chmod (a copy in place) of a smaller file, read back with the data
    # cache after a remount: right bytes, and the cache still serves them.
    m = mount(bucket, "--cache", str(tmp_path / "cache"))
    big, data = os.urandom(20 << 20), os.urandom(3 << 20)
    for name, body in (("big.bin", big), ("w.bin", data)):
        with open(os.path.join(m.path, name), "wb") as f:
            f.write(body)
    assert open(os.path.join(m.path, "big.bin"), "rb").read() == big
    assert run(f"mv {m.path}/w.bin {m.path}/r.bin && chmod 600 {m.path}/r.bin").returncode == 0
    assert open(os.path.join(m.path, "r.bin"), "rb").read() == data
    m.unmount()
    m2 = mount(bucket, "--cache", str(tmp_path / "cache"))
    assert stat.S_IMODE(os.stat(os.path.join(m2.path, "r.bin")).st_mode) == 0o600
    assert open(os.path.join(m2.path, "r.bin"), "rb").read() == data
    assert open(os.path.join(m2.path, "big.bin"), "rb").read() == big
    pos = moto.log_position()
    run("echo 3 > /proc/sys/vm/drop_caches")
    assert open(os.path.join(m2.path, "r.bin"), "rb").read() == data
    assert [r for r in moto.requests_since(pos, bucket) if r[0] == "GetObject"] == [], "the second read comes from the cache"


def test_listing_encoding_and_order_of_odd_keys(moto, s3, bucket, mount):
    names = ["a b", "a!", "a%2Fb", "a+b", "a-b", "a.txt", "a~", "A", "z", "é", "\U0001F600", "a\tb"]
    seed(s3, bucket, [f"odd/{n}" for n in names] + ["odd/a/x", "odd/été/y", "odd/50%41/z", "odd/p+q r/w"])
    # Both list in the order of the keys' UTF-8 bytes.
    flat = [o["Key"][4:] for o in s3.list_objects_v2(Bucket=bucket, Prefix="odd/")["Contents"]]
    assert flat == sorted(flat, key=lambda k: k.encode())
    # encoding-type=url: what each encodes (boto3 decodes it: asked by hand).
    st, _, body = raw(moto, "GET", f"/{bucket}", "delimiter=%2F&encoding-type=url&list-type=2&prefix=odd%2F")
    text = body.decode()
    assert st == 200
    if STORE == "rgw":
        # Keys with their "/" encoded too, a space as %20; prefixes with "/" as is.
        assert "<Key>odd%2Fa%20b</Key>" in text and "<Key>odd%2Fa!</Key>" in text and "<Prefix>odd/p%2Bq%20r/</Prefix>" in text
    else:
        assert "<Key>odd/a%20b</Key>" in text and "<Key>odd/a%21</Key>" in text
    assert "<EncodingType>url</EncodingType>" in text
    # s3mount shows the same names on both.
    m = mount(bucket)
    assert sorted(os.listdir(os.path.join(m.path, "odd"))) == sorted(names + ["a", "été", "50%41", "p+q r"])
    assert os.listdir(os.path.join(m.path, "odd", "50%41")) == ["z"]


def test_error_codes_and_limits(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="k", Body=b"12345")
    # The same on both.
    assert code_of(lambda: s3.get_object(Bucket=bucket, Key="nope")) == "NoSuchKey"
    assert code_of(lambda: s3.list_objects_v2(Bucket="no-such-bucket-" + bucket)) == "NoSuchBucket"
    assert code_of(lambda: s3.get_object(Bucket=bucket, Key="k", Range="bytes=10-20")) == "InvalidRange"
    assert code_of(lambda: s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "nope"})) == "NoSuchKey"
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="mp", UploadId=mpu, PartNumber=n, Body=b"x" * 1024)["ETag"]}
             for n in (1, 2)]
    assert code_of(lambda: s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=mpu, MultipartUpload={"Parts": parts})) == "EntityTooSmall"
    # Part numbers past 10,000: moto refuses, RGW 16.2 takes them (s3mount never sends one).
    assert code_of(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=mpu, PartNumber=10001, Body=b"x")) == \
        ("ok" if STORE == "rgw" else "InvalidArgument")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=mpu)
    # Keys longer than 1,024 bytes: RGW refuses them (InvalidObjectName, as S3 does with
    # KeyTooLongError), moto takes them. Through the mount: a path that long is refused, on both.
    long_key = "d/" + "k" * 1100
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key=long_key, Body=b"")) == ("InvalidObjectName" if STORE == "rgw" else "ok")
    m = mount(bucket)
    path, failed = m.path, None
    for level in range(6):  # the 6th directory's marker is a key of 1,206 bytes
        path = os.path.join(path, "n" * 200)
        try:
            os.mkdir(path)
        except OSError as e:
            failed = (level, e.errno)
            break
    m.unmount()
    # s3mount refuses a key over S3's 1,024 bytes itself, on both stores, as a local disk refuses
    # a path too long: ENAMETOOLONG, no request.
    assert failed == (5, errno.ENAMETOOLONG)
