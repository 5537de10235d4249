"""Bugs found by running suites and habits s3mount was not written against (issue 14): each test
failed before its fix."""
import os
import stat
import subprocess
import time

from conftest import BIN, mounted, run


def keys(s3, bucket):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_a_file_unlinked_while_open_is_discarded_at_close(moto, s3, bucket, mount):
    m = mount(bucket)
    p = os.path.join(m.path, "tmp")
    # The shell form from the report.
    out = run(["bash", "-c", f"exec 3>{p}; echo x >&3; rm {p}; echo y >&3; exec 3>&-"])
    assert out.returncode == 0, out.stderr
    assert not os.path.exists(p)
    # A private temporary file: written, unlinked, still readable and stat'able through its fd.
    q = os.path.join(m.path, "scratch")
    fd = os.open(q, os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"before ")
    os.unlink(q)
    os.write(fd, b"after")
    assert os.fstat(fd).st_size == 12
    assert os.pread(fd, 12, 0) == b"before after"
    os.fsync(fd)
    os.close(fd)
    time.sleep(0.3)
    assert keys(s3, bucket) == [], "nothing comes back in S3"
    m.unmount()
    m2 = mount(bucket)
    assert os.listdir(m2.path) == []


def test_files_created_with_metadata_ttl_0_never_vanish(moto, s3, bucket, mount):
    m = mount(bucket, "--metadata-ttl", "0")
    for i in range(3):
        out = run(["bash", "-c", f"echo old{i} > {m.path}/newfile{i}"])
        assert out.returncode == 0, out.stderr
        assert s3.get_object(Bucket=bucket, Key=f"newfile{i}")["Body"].read() == f"old{i}\n".encode()
    out = run(["bash", "-c", f"echo more >> {m.path}/newfile0 && cat {m.path}/newfile0"])
    assert out.returncode == 0 and out.stdout == "old0\nmore\n", out.stderr


def test_endpoint_urls_with_query_fragment_or_credentials_are_refused(moto, bucket, tmp_path):
    mp = str(tmp_path / "mp")
    os.mkdir(mp)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    for url, why in [(moto.endpoint + "/?x=1", "query"), (moto.endpoint + "#frag", "fragment"),
                     (moto.endpoint.replace("://", "://user:hunter2@"), "credentials")]:
        out = subprocess.run([BIN, bucket, mp, "--endpoint-url", url, "--force-path-style"], env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and why in out.stderr, (url, out.stderr)
        assert "hunter2" not in out.stderr + out.stdout, "the password is never echoed"
        assert not mounted(mp)
    # The same from the environment: a clear refusal, nothing mounted.
    env["AWS_ENDPOINT_URL"] = moto.endpoint + "?x=1"
    out = subprocess.run([BIN, bucket, mp, "--force-path-style"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "query" in out.stderr, out.stderr
    assert not mounted(mp)


def test_a_key_with_a_newline_cannot_forge_a_log_line(moto, s3, bucket, mount):
    m = mount(bucket, "--debug")
    # moto refuses keys with a newline (real S3 takes them): the refusal is logged with the key,
    # which must stay on one line.
    try:
        with open(os.path.join(m.path, "x\nerror: FORGED LINE"), "wb") as f:
            f.write(b"payload")
    except OSError:
        pass
    with open(os.path.join(m.path, "esc\x1b[31mred"), "wb") as f:
        f.write(b"payload")
    assert open(os.path.join(m.path, "esc\x1b[31mred"), "rb").read() == b"payload"
    m.unmount()
    log = m.log()
    assert "x\\nerror: FORGED LINE" in log, "the key is logged, escaped"
    assert not any(line.startswith("error: FORGED") for line in log.splitlines())
    assert "esc\\x1b[31mred" in log and "\x1b" not in log


def test_uploads_carry_a_content_type_from_their_extension(moto, s3, bucket, mount):
    m = mount(bucket)
    for name in ["page.html", "data.json", "photo.JPG", "notes", "archive.tar.gz", "odd.zzzz"]:
        with open(os.path.join(m.path, name), "w") as f:
            f.write("x")
    ct = lambda k: s3.head_object(Bucket=bucket, Key=k)["ContentType"]
    assert ct("page.html") == "text/html"
    assert ct("data.json") == "application/json"
    assert ct("photo.JPG") == "image/jpeg"
    assert ct("archive.tar.gz") == "application/gzip"
    assert ct("notes") == ct("odd.zzzz") == "application/octet-stream"
    # A metadata change and a rename rewrite the headers: the type stays right.
    os.chmod(os.path.join(m.path, "page.html"), 0o600)
    os.rename(os.path.join(m.path, "data.json"), os.path.join(m.path, "moved.json"))
    time.sleep(1.5)
    assert ct("page.html") == "text/html" and ct("moved.json") == "application/json"
    m.unmount()
    plain = mount(bucket, "--no-guess-content-type")
    with open(os.path.join(plain.path, "other.html"), "w") as f:
        f.write("x")
    assert ct("other.html") == "application/octet-stream"


def test_mknod_makes_a_regular_file(moto, s3, bucket, mount):
    m = mount(bucket)
    out = run(["mknod", os.path.join(m.path, "made"), "p"])
    assert out.returncode == 0, out.stderr  # a FIFO: test_posix_nodes_times_xattrs.py
    os.mknod(os.path.join(m.path, "regular"), stat.S_IFREG | 0o644)
    assert s3.get_object(Bucket=bucket, Key="regular")["Body"].read() == b""
