"""Buckets as companies configure them: encryption (SSE-S3, SSE-KMS, SSE-C), storage classes and
archived objects, requester pays, the expected bucket owner. What each option sends is seen
request by request by a recording proxy in front of the store (headerproxy.py), and what the
store made of it by asking the store itself (HeadObject with boto3)."""
import base64
import hashlib
import json
import os
import stat
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, STORE, free_port, run
from headerproxy import HeaderProxy

KMS_KEY = "s3mount-test-key"  # RGW's testing KMS knows this one (scripts/rgwcluster.py); moto takes any id
INDEX = ".s3mount-meta"


@pytest.fixture()
def proxy(moto):
    p = HeaderProxy(moto.port)
    yield p
    p.stop()


def write_files(m, tmp_path, copies=True):
    """Every kind of write the mount makes: a small file (PutObject), a 20 MiB one (multipart),
    a rename (CopyObject), a chmod and a directory's metadata (the directory's index)."""
    assert run(f"echo small > {m.path}/small.txt").returncode == 0
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))
    assert run(["cp", str(big), f"{m.path}/big.bin"], timeout=300).returncode == 0
    if copies:
        assert run(f"echo moved > {m.path}/before.txt").returncode == 0
        assert run(["mv", f"{m.path}/before.txt", f"{m.path}/after.txt"]).returncode == 0
        assert run(f"cat {m.path}/after.txt").stdout == "moved\n"
        assert run(["chmod", "600", f"{m.path}/small.txt"]).returncode == 0
    os.mkdir(f"{m.path}/d", 0o750)
    time.sleep(1.5)  # the metadata change and the index are written within a second
    return big.read_bytes()


WRITES = {"PutObject", "CreateMultipartUpload", "CopyObject"}


def test_sse_kms_and_storage_class_on_every_write(moto, s3, bucket, mount, proxy, tmp_path):
    # STANDARD_IA: the class RGW's zone gets beside STANDARD (scripts/rgwcluster.py)
    m = mount(bucket, "--endpoint-url", proxy.endpoint, "--sse", "aws:kms", "--sse-kms-key-id", KMS_KEY, "--sse-bucket-key",
              "--storage-class", "STANDARD_IA")
    data = write_files(m, tmp_path, copies=STORE == "moto")
    m.unmount()
    m = mount(bucket, "--endpoint-url", proxy.endpoint, "--sse", "aws:kms", "--sse-kms-key-id", KMS_KEY)
    assert run(f"cat {m.path}/small.txt").stdout == "small\n"  # a read, which carries none of the headers
    # The chmod after the upload went to the (encrypted) index, not to a copy.
    chmodded = stat.S_IMODE(os.stat(f"{m.path}/small.txt").st_mode)
    m.unmount()
    writes = WRITES if STORE == "moto" else WRITES - {"CopyObject"}
    assert writes | {"UploadPart", "CompleteMultipartUpload"} <= proxy.kinds(), proxy.kinds()
    assert proxy.kinds() & {"GetObject", "GetObject(range)"}, "a read went by too, without the headers"
    for k, path, h in proxy.seen:
        if k in WRITES:
            assert h.get("x-amz-server-side-encryption") == "aws:kms", (k, path)
            assert h.get("x-amz-server-side-encryption-aws-kms-key-id") == KMS_KEY, (k, path)
            assert h.get("x-amz-server-side-encryption-bucket-key-enabled") == "true", (k, path)
            assert h.get("x-amz-storage-class") == "STANDARD_IA", (k, path)
        else:
            assert not any(n.startswith("x-amz-server-side-encryption") or n == "x-amz-storage-class" for n in h), (k, path)
    # What the store keeps: every object the mount made, the renamed one (CopyObject)
    # and the directory index included. Without the headers on the copies, moto drops both the
    # encryption and the class (as S3 would give a copy the bucket's defaults).
    for key in ("small.txt", "big.bin", "d/", INDEX) + (("after.txt",) if STORE == "moto" else ()):
        h = s3.head_object(Bucket=bucket, Key=key)
        assert h.get("ServerSideEncryption") == "aws:kms" and h.get("SSEKMSKeyId") == KMS_KEY, key
        assert h.get("StorageClass") == "STANDARD_IA", key
        if STORE == "moto":  # RGW keeps no bucket-key flag
            # moto keeps no bucket-key flag for a multipart upload (the header went: checked above)
            assert key == "big.bin" or h.get("BucketKeyEnabled") is True, key
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    if STORE == "moto":
        assert chmodded == 0o600


@pytest.mark.rgw_only("moto copies encrypted objects; the refusal is RGW's")
def test_rename_of_an_encrypted_object_refused_by_rgw_loses_nothing(moto, s3, bucket, mount):
    # Ceph RGW 16.2 answers CopyObject of an SSE-KMS or SSE-C object with 501 NotImplemented (copies
    # of encrypted objects came with Reef): the rename fails with one error, the object stays.
    m = mount(bucket, "--sse", "aws:kms", "--sse-kms-key-id", KMS_KEY)
    assert run(f"echo kept > {m.path}/a.txt").returncode == 0
    out = run(["mv", f"{m.path}/a.txt", f"{m.path}/b.txt"])
    assert out.returncode != 0 and "Input/output error" in out.stderr, out
    assert run(f"cat {m.path}/a.txt").stdout == "kept\n"
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"kept\n"


@pytest.mark.moto_only("Ceph RGW 16.2 does not implement SSE-S3 (x-amz-server-side-encryption: AES256)")
def test_sse_s3_on_every_write(moto, s3, bucket, mount, proxy, tmp_path):
    m = mount(bucket, "--endpoint-url", proxy.endpoint, "--sse", "AES256")
    write_files(m, tmp_path)
    m.unmount()
    for k, path, h in proxy.seen:
        assert h.get("x-amz-server-side-encryption") == ("AES256" if k in WRITES else None), (k, path)
        assert "x-amz-server-side-encryption-aws-kms-key-id" not in h
    for key in ("small.txt", "big.bin", "after.txt", INDEX):
        assert s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == "AES256", key


def test_rename_and_chmod_keep_an_objects_own_storage_class(moto, s3, bucket, mount):
    # RGW's zone has STANDARD and STANDARD_IA only; there a copy without the header keeps the
    # source's class, but one with the mount's class would move the object to it.
    own, tree = ("ONEZONE_IA", "GLACIER_IR") if STORE == "moto" else ("STANDARD", "STANDARD")
    s3.put_object(Bucket=bucket, Key="cold.txt", Body=b"one\n", StorageClass=own)
    s3.put_object(Bucket=bucket, Key="tree/a.txt", Body=b"a\n", StorageClass=tree)
    m = mount(bucket, "--storage-class", "STANDARD_IA")
    assert run(f"echo new > {m.path}/new.txt").returncode == 0
    assert run(["chmod", "640", f"{m.path}/cold.txt"]).returncode == 0
    time.sleep(1.5)
    assert run(["mv", f"{m.path}/cold.txt", f"{m.path}/cold2.txt"]).returncode == 0
    assert run(["mv", f"{m.path}/tree", f"{m.path}/tree2"]).returncode == 0
    m.unmount()
    assert s3.head_object(Bucket=bucket, Key="new.txt")["StorageClass"] == "STANDARD_IA"
    h = s3.head_object(Bucket=bucket, Key="cold2.txt")
    assert h.get("StorageClass", "STANDARD") == own and int(h["Metadata"]["mode"]) & 0o777 == 0o640
    assert s3.head_object(Bucket=bucket, Key="tree2/a.txt").get("StorageClass", "STANDARD") == tree


def test_requester_pays_and_expected_owner_on_every_request(moto, s3, bucket, mount, proxy, tmp_path):
    owner = "123456789012"
    m = mount(bucket, "--endpoint-url", proxy.endpoint, "--requester-pays", "--expected-bucket-owner", owner)
    write_files(m, tmp_path)
    assert run(f"cat {m.path}/big.bin > /dev/null && ls -la {m.path}/d {m.path}").returncode == 0
    assert run(["rm", "-r", f"{m.path}/d", f"{m.path}/after.txt"]).returncode == 0
    m.unmount()
    assert {"ListObjectsV2", "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject",
            "DeleteObject"} <= proxy.kinds(), proxy.kinds()
    assert proxy.kinds() & {"GetObject", "GetObject(range)"}
    assert len(proxy.seen) > 10
    for k, path, h in proxy.seen:
        assert h.get("x-amz-request-payer") == "requester", (k, path)
        assert h.get("x-amz-expected-bucket-owner") == owner, (k, path)
        assert h.get("x-amz-source-expected-bucket-owner") == (owner if k in ("CopyObject", "UploadPartCopy") else None), (k, path)


def test_option_values_are_checked(tmp_path):
    for args, said in ((["--sse", "aws:kmz"], "--sse expects AES256 or aws:kms"),
                       (["--sse-kms-key-id", "k"], "--sse-kms-key-id needs --sse=aws:kms"),
                       (["--sse", "AES256", "--sse-bucket-key"], "needs --sse=aws:kms, not AES256"),
                       (["--storage-class", "COLD"], "--storage-class expects one of"),
                       (["--expected-bucket-owner", "12345"], "12-digit"),
                       (["-o", "sse=aws:kms,sse_c_key_file=/nonexistent"], "sse_c_key_file and sse contradict"),
                       (["--as-of", "2026-12-07 17:00"], "--as-of expects a UTC time"),
                       (["--as-of", "@1765126800", "--notification-queue", "https://sqs.us-east-1.amazonaws.com/123456789012/q"],
                        "--as-of and --notification-queue contradict")):
        out = run([BIN, "b-ucket", str(tmp_path), *args])
        assert out.returncode == 2 and said in out.stderr, (args, out.stderr)


def test_fstab_forms(moto, s3, bucket, mount, proxy):
    m = mount(bucket, "--endpoint-url", proxy.endpoint,
              "-o", f"sse=aws:kms,sse_kms_key_id={KMS_KEY},sse_bucket_key,requester_pays,expected_bucket_owner=123456789012")
    assert run(f"echo x > {m.path}/f").returncode == 0
    m.unmount()
    put = proxy.of("PutObject")[0]
    assert (put["x-amz-server-side-encryption"], put["x-amz-server-side-encryption-aws-kms-key-id"], put["x-amz-request-payer"],
            put["x-amz-expected-bucket-owner"]) == ("aws:kms", KMS_KEY, "requester", "123456789012")


def key_file(tmp_path, raw, mode=0o600, name="sse-c.key"):
    p = tmp_path / name
    p.write_bytes(raw)
    os.chmod(p, mode)
    return str(p)


SSE_C_KINDS = {"GetObject", "GetObject(range)", "HeadObject", "PutObject", "CreateMultipartUpload", "UploadPart",
               "CompleteMultipartUpload", "CopyObject", "UploadPartCopy"}


@pytest.mark.moto_only("moto takes SSE-C headers on copies; RGW 16.2 refuses copies of SSE-C objects")
def test_sse_c_key_on_every_request_that_touches_bytes_and_never_in_the_log(moto, s3, bucket, mount, proxy, tmp_path):
    raw = os.urandom(32)
    b64 = base64.b64encode(raw).decode()
    md5 = base64.b64encode(hashlib.md5(raw).digest()).decode()
    loose = key_file(tmp_path, raw, mode=0o644, name="loose.key")
    with pytest.raises(RuntimeError, match="can be read by others"):
        mount(bucket, "--sse-c-key-file", loose)
    kf = key_file(tmp_path, (b64 + "\n").encode())  # the base64 form
    m = mount(bucket, "--endpoint-url", proxy.endpoint, "--sse-c-key-file", kf, "--debug")
    data = write_files(m, tmp_path)
    assert open(f"{m.path}/big.bin", "rb").read() == data
    with open(f"{m.path}/big.bin", "rb") as f:
        f.seek(12 << 20)
        assert f.read(4096) == data[12 << 20:(12 << 20) + 4096]
    stats = json.dumps(m.stats())
    cmdline = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    m.unmount()
    assert {"GetObject", "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject"} <= proxy.kinds()
    for k, path, h in proxy.seen:
        carries = k in SSE_C_KINDS
        assert h.get("x-amz-server-side-encryption-customer-algorithm") == ("AES256" if carries else None), (k, path)
        assert h.get("x-amz-server-side-encryption-customer-key") == (b64 if carries else None), (k, path)
        assert h.get("x-amz-server-side-encryption-customer-key-md5") == (md5 if carries else None), (k, path)
        copies = k in ("CopyObject", "UploadPartCopy")
        assert h.get("x-amz-copy-source-server-side-encryption-customer-key") == (b64 if copies else None), (k, path)
        assert h.get("x-amz-copy-source-server-side-encryption-customer-key-md5") == (md5 if copies else None), (k, path)
    # The key is in no log line (a debug log of every request), no command line, no statistic.
    for text in (m.log(), cmdline, stats):
        assert b64 not in text and raw.hex() not in text


@pytest.mark.rgw_only("moto neither checks nor keeps SSE-C keys (a GET without the key returns the bytes)")
def test_sse_c_object_reads_back_with_the_key_and_is_refused_without_it(moto, s3, bucket, mount, tmp_path):
    raw = os.urandom(32)
    kf = key_file(tmp_path, raw)  # the raw form
    m = mount(bucket, "--sse-c-key-file", kf)
    assert run(f"echo secret > {m.path}/small.txt").returncode == 0
    big = os.urandom(20 << 20)
    (tmp_path / "big.bin").write_bytes(big)
    assert run(["cp", str(tmp_path / "big.bin"), f"{m.path}/big.bin"], timeout=300).returncode == 0
    m.unmount()
    m = mount(bucket, "--sse-c-key-file", kf)  # a new mount: read from the store, not a cache
    assert open(f"{m.path}/small.txt", "rb").read() == b"secret\n"
    assert open(f"{m.path}/big.bin", "rb").read() == big
    m.unmount()
    got = s3.get_object(Bucket=bucket, Key="big.bin", SSECustomerAlgorithm="AES256", SSECustomerKey=raw)["Body"].read()
    assert got == big
    with pytest.raises(Exception):
        s3.get_object(Bucket=bucket, Key="small.txt")
    # Without the key, and with another: one clear error at the first read, one log line, no
    # retries (the store saw one GET of the object per read the kernel made).
    for args in ((), ("--sse-c-key-file", key_file(tmp_path, os.urandom(32), name="wrong.key"))):
        m = mount(bucket, *args)
        pos = moto.log_position()
        out = run(f"cat {m.path}/small.txt")
        assert out.returncode != 0 and "Permission denied" in out.stderr, (args, out)
        # (The directory's metadata index is encrypted with the key too: its read fails apart.)
        gets = [r for r in moto.requests_since(pos, bucket) if r[0] == "GetObject" and r[2].endswith("/small.txt")]
        assert 1 <= len(gets) <= 3, gets
        lines = [line for line in m.log().splitlines() if "small.txt" in line and ("SSE-C" in line or "customer key" in line)]
        assert len(lines) == 1, m.log()
        m.unmount()


@pytest.mark.moto_only("Ceph RGW 16.2 has no archive classes (GLACIER is refused, there is no RestoreObject to cold storage)")
def test_archived_object_open_fails_once_with_eacces_and_reads_after_restore(moto, s3, bucket, mount, proxy):
    s3.put_object(Bucket=bucket, Key="cold/g.bin", Body=b"glacier\n", StorageClass="GLACIER")
    s3.put_object(Bucket=bucket, Key="cold/d.bin", Body=b"deep\n", StorageClass="DEEP_ARCHIVE")
    s3.put_object(Bucket=bucket, Key="cold/warm.txt", Body=b"warm\n")
    port = free_port()
    m = mount(bucket, "--endpoint-url", proxy.endpoint, "--metrics-address", f"127.0.0.1:{port}")
    for name in ("g.bin", "d.bin"):
        for _ in range(3):
            out = run(f"cat {m.path}/cold/{name}")
            assert out.returncode == 1 and "Permission denied" in out.stderr, out
    assert run(f"cat {m.path}/cold/warm.txt").stdout == "warm\n"
    assert os.stat(f"{m.path}/cold/g.bin").st_size == 8, "stat works: only the bytes need a restore"
    # No GET of an archived object: one HeadObject per open tells whether a restored copy is there.
    gets = [p for k, p, _ in proxy.seen if k.startswith("GetObject") and "/cold/" in p and "warm" not in p]
    assert gets == []
    log = m.log()
    for key, cls in (("cold/g.bin", "GLACIER"), ("cold/d.bin", "DEEP_ARCHIVE")):
        lines = [line for line in log.splitlines() if f'"{key}"' in line]
        assert len(lines) == 1 and cls in lines[0] and "s3mount restore" in lines[0], log
    out = run([BIN, "restore", f"{m.path}/cold/g.bin", "--days", "2", "--tier", "Bulk"])
    assert out.returncode == 0 and "restore started" in out.stdout, out
    restores = [(p, h) for k, p, h in proxy.seen if k == "RestoreObject"]
    assert len(restores) == 1 and "/cold/g.bin" in restores[0][0]
    assert s3.head_object(Bucket=bucket, Key="cold/g.bin")["Restore"].startswith('ongoing-request="false"')  # moto restores at once
    assert run(f"cat {m.path}/cold/g.bin").stdout == "glacier\n"
    assert run(f"cat {m.path}/cold/d.bin").returncode == 1
    # At the mount's root too, by a relative path.
    s3.put_object(Bucket=bucket, Key="top.bin", Body=b"top\n", StorageClass="DEEP_ARCHIVE")
    assert run(f"ls {m.path} > /dev/null; cat {m.path}/top.bin").returncode == 1
    out = run([BIN, "restore", "top.bin"], cwd=m.path)
    assert out.returncode == 0 and "restore started" in out.stdout, out
    assert run(f"cat {m.path}/top.bin").stdout == "top\n"
    out = run([BIN, "restore", f"{m.path}/cold/warm.txt", f"{m.path}/cold/nothing"])
    assert out.returncode == 1 and "cold/nothing: No such file" in out.stderr, out
    archived = m.stats()["archived"]
    assert archived["refused_opens"] >= 8 and archived["restores_started"] == 2, archived
    # How many archived entries the mount knows now: g.bin (its class stays GLACIER once restored), d.bin, top.bin.
    assert archived["listed"] == 3, archived
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "s3mount_restores_started_total 2" in metrics and "s3mount_archived_listed 3" in metrics, metrics


def test_restore_outside_a_mount_says_so(tmp_path):
    (tmp_path / "f").write_text("x")
    out = run([BIN, "restore", str(tmp_path / "f")])
    assert out.returncode == 1 and "not on an s3mount mount" in out.stderr, out
    out = run([BIN, "restore", str(tmp_path / "f"), "--tier", "Fast"])
    assert out.returncode == 2 and "--tier expects" in out.stderr, out


def test_versioned_bucket_as_of_three_moments(moto, s3, bucket, mount, proxy, tmp_path):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def moment():
        """The time of the newest version so far (as the store dates it), then a pause so that
        the next change is dated later."""
        newest = max(v["LastModified"] for v in s3.list_object_versions(Bucket=bucket).get("Versions", []) +
                     s3.list_object_versions(Bucket=bucket).get("DeleteMarkers", []))
        time.sleep(1.2)
        return newest.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a1\n")
    s3.put_object(Bucket=bucket, Key="b.txt", Body=b"b1\n")
    s3.put_object(Bucket=bucket, Key="dir/x.txt", Body=b"x1\n")
    first = moment()
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a2, longer\n")
    s3.delete_object(Bucket=bucket, Key="b.txt")
    s3.put_object(Bucket=bucket, Key="c.txt", Body=b"c2\n")
    second = moment()
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a3\n")
    s3.put_object(Bucket=bucket, Key="b.txt", Body=b"b3\n")
    s3.put_object(Bucket=bucket, Key="dir/x.txt", Body=b"x3\n")
    third = moment()
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"after all three\n")

    def state(m):
        out = {}
        for root, _, files in os.walk(m.path):
            for f in files:
                p = os.path.join(root, f)
                out[os.path.relpath(p, m.path)] = open(p, "rb").read()
        return out

    expected = [
        (first, {"a.txt": b"a1\n", "b.txt": b"b1\n", "dir/x.txt": b"x1\n"}),
        (second, {"a.txt": b"a2, longer\n", "c.txt": b"c2\n", "dir/x.txt": b"x1\n"}),
        (third, {"a.txt": b"a3\n", "b.txt": b"b3\n", "c.txt": b"c2\n", "dir/x.txt": b"x3\n"}),
    ]
    cache = tmp_path / "cache"
    for at, files in expected:
        # One data cache for all three: what one moment read must not be served at another.
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--as-of", at, "--cache", str(cache))
        assert state(m) == files, at
        assert os.stat(f"{m.path}/a.txt").st_size == len(files["a.txt"])
        out = run(f"echo no > {m.path}/new.txt")
        assert out.returncode != 0 and "Read-only file system" in out.stderr
        m.unmount()
    # Listings of versions, reads by version id: never the plain listing, never an unversioned GET.
    kinds = proxy.kinds()
    assert "ListObjectVersions" in kinds and "ListObjectsV2" not in kinds and "HeadObject" not in kinds, kinds
    gets = [p for k, p, _ in proxy.seen if k.startswith("GetObject")]
    assert gets and all("versionId=" in p for p in gets), gets
    # The same moment by epoch seconds.
    epoch = time.mktime(time.strptime(second[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0." + second[20:23])
    m = mount(bucket, "--as-of", f"@{epoch:.3f}")
    assert state(m) == expected[1][1]
