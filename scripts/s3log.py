"""Reads an S3 emulator's access log (werkzeug's, as moto writes it): which S3 operation each
request was, with its status. Shared by the integration tests and the benchmark, so both count
requests the same way."""
import re

LOG_LINE = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours some status lines


def classify(method, target):
    """The S3 operation of a path-style request. CopyObject and UploadPartCopy look like
    PutObject and UploadPart in an access log (the difference is a header)."""
    path, _, q = target.partition("?")
    parts = path.split("/", 2)  # ["", bucket, key]
    has_key = len(parts) == 3 and parts[2] != ""
    if method == "GET" and "list-type=2" in q:
        return "ListObjectsV2"
    if method == "GET":
        return "GetObject" if has_key else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "PUT":
        if "partNumber=" in q:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in q and "uploadId" not in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        if "delete" in q:
            return "DeleteObjects"
        return "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return method


def requests(text, bucket=None):
    """[(operation, status, target)] in log `text`, for `bucket` only if given."""
    out = []
    for m in LOG_LINE.finditer(ANSI.sub("", text)):
        method, target, status = m.group(1), m.group(2), int(m.group(3))
        if target.startswith("/moto-api"):
            continue
        if bucket is not None and not (target == f"/{bucket}" or target.startswith(f"/{bucket}/") or target.startswith(f"/{bucket}?")):
            continue
        out.append((classify(method, target), status, target))
    return out
