"""Writing through a real mount; contents verified in S3 with boto3, not only through the mount."""
import binascii
import errno
import glob
import hashlib
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import STORE, delta, mounted, run, seed
from checksumproxy import ChecksumProxy, crc32_b64
from faultproxy import FaultProxy


def body(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket, prefix="", indexes=False):
    """The bucket's keys under prefix; without the directories' metadata indexes unless asked
    (every directory a file was written to through the mount has one: its stored mtimes)."""
    out, token = [], None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        out += [o["Key"] for o in r.get("Contents", []) if indexes or o["Key"].rsplit("/", 1)[-1] != ".s3mount-meta"]
        if not r.get("IsTruncated"):
            return out
        token = r["NextContinuationToken"]


def test_cp_256_mib_then_compare_in_s3(moto, s3, bucket, mount, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(8 << 20))
    m = mount(bucket)
    before = m.requests()
    t0 = time.time()
    out = run(["cp", str(src), os.path.join(m.path, "big.bin")], timeout=600)
    secs = time.time() - t0
    assert out.returncode == 0, out.stderr
    d = delta(before, m.requests())
    assert d.get("CreateMultipartUpload") == 1 and d.get("CompleteMultipartUpload") == 1 and d.get("UploadPart", 0) >= 32, d
    h = hashlib.sha256()
    obj = s3.get_object(Bucket=bucket, Key="big.bin")["Body"]
    for chunk in iter(lambda: obj.read(8 << 20), b""):
        h.update(chunk)
    assert h.hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
    # The written file is listed and stat'ed with its real size, without a request.
    before = m.requests()
    assert os.path.getsize(os.path.join(m.path, "big.bin")) == 256 << 20
    assert "big.bin" in os.listdir(m.path)
    assert delta(before, m.requests()).get("HeadObject", 0) == 0
    print(f"cp 256 MiB: {256 * 1.048576 / secs:.1f} MB/s ({secs:.2f} s), requests {d}")


def test_hundred_small_files_by_redirection(moto, s3, bucket, mount):
    m = mount(bucket)
    before = m.requests()
    t0 = time.time()
    out = run(f"for i in $(seq 1 100); do echo \"file $i\" > {m.path}/small-$i.txt || exit 1; done")
    secs = time.time() - t0
    assert out.returncode == 0, out.stderr
    d = delta(before, m.requests())
    # bash closes a duplicate of the new file's descriptor before echo writes: that close leaves
    # the (still empty) file in S3 as it should, then the data follows. At most two PUTs a file,
    # and the directory's metadata index (each file's stored nanosecond mtime), written at most
    # once a second while files change.
    assert 100 <= d.get("PutObject", 0) <= 200 + int(secs) + 2, d
    assert d.get("HeadObject", 0) == 0
    assert sorted(keys(s3, bucket)) == sorted(f"small-{i}.txt" for i in range(1, 101))
    assert body(s3, bucket, "small-42.txt") == b"file 42\n"
    before = m.requests()
    out = run(f"ls -la {m.path} && stat {m.path}/small-7.txt && cat {m.path}/small-7.txt")
    assert "file 7" in out.stdout
    assert delta(before, m.requests()).get("HeadObject", 0) == 0
    assert delta(before, m.requests()).get("ListObjectsV2", 0) == 0
    print(f"100 small files: {100 / secs:.1f} files/s ({secs:.2f} s), requests {d}")


def test_overwrite_append_truncate(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="f.txt", Body=b"original contents\n")
    s3.put_object(Bucket=bucket, Key="large.bin", Body=b"L" * (4 << 20))
    m = mount(bucket)
    p = os.path.join(m.path, "f.txt")
    assert run(f"echo replaced > {p}").returncode == 0
    assert body(s3, bucket, "f.txt") == b"replaced\n"
    assert run(f"echo appended >> {p}").returncode == 0
    assert body(s3, bucket, "f.txt") == b"replaced\nappended\n"
    assert open(p).read() == "replaced\nappended\n"
    with open(p, "r+b") as f:  # random write inside the file
        f.seek(2)
        f.write(b"XY")
    assert body(s3, bucket, "f.txt") == b"reXYaced\nappended\n"
    assert run(["truncate", "-s", "4", p]).returncode == 0
    assert body(s3, bucket, "f.txt") == b"reXY"
    assert os.path.getsize(p) == 4
    assert run(["truncate", "-s", "0", p]).returncode == 0
    assert body(s3, bucket, "f.txt") == b""
    assert run(f"touch {m.path}/empty").returncode == 0
    assert body(s3, bucket, "empty") == b""
    # touch of an existing object neither downloads nor rewrites it.
    assert run(f"ls {m.path}/large.bin").returncode == 0
    before = m.requests()
    assert run(f"touch {m.path}/large.bin").returncode == 0
    d = delta(before, m.requests())
    assert "GetObject" not in d and "PutObject" not in d, d


def test_editor_style_save(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="doc/notes.txt", Body=b"v1")
    m = mount(bucket)
    d = os.path.join(m.path, "doc")
    with open(os.path.join(d, ".notes.txt.swp"), "w") as f:
        f.write("v2 saved by the editor")
    os.rename(os.path.join(d, ".notes.txt.swp"), os.path.join(d, "notes.txt"))
    assert body(s3, bucket, "doc/notes.txt") == b"v2 saved by the editor"
    assert keys(s3, bucket, "doc/") == ["doc/notes.txt"]
    assert os.listdir(d) == ["notes.txt"]
    assert open(os.path.join(d, "notes.txt")).read() == "v2 saved by the editor"


def test_mkdir_rmdir_rm_r(moto, s3, bucket, mount):
    m = mount(bucket)
    assert run(f"mkdir -p {m.path}/a/b/c").returncode == 0
    assert sorted(keys(s3, bucket)) == ["a/", "a/b/", "a/b/c/"]
    assert os.listdir(os.path.join(m.path, "a", "b", "c")) == []
    assert run(f"echo x > {m.path}/a/b/file").returncode == 0
    out = run(["rmdir", f"{m.path}/a/b"])
    assert out.returncode != 0 and "Directory not empty" in out.stderr
    before = m.requests()
    assert run(["rm", "-r", f"{m.path}/a"]).returncode == 0
    assert keys(s3, bucket, indexes=True) == []
    # Everything under a/ is known from the mount's own changes: no listing, one delete each (and
    # one for a/b/'s metadata index when its write, a second after the file's, came first).
    d = delta(before, m.requests())
    assert d.get("DeleteObject") in (4, 5) and d.get("ListObjectsV2", 0) == 0 and d.get("HeadObject", 0) == 0, d
    assert os.listdir(m.path) == []
    # The directory survives a remount (marker object).
    assert run(f"mkdir {m.path}/kept").returncode == 0
    m2 = mount(bucket)
    assert os.listdir(m2.path) == ["kept"]


def test_rm_r_of_1000_files_costs_a_few_batched_deletes(moto, s3, bucket, mount):
    seed(s3, bucket, [f"many/f{i:04d}" for i in range(1000)] + ["many/sub/deep.txt", "kept.txt"])
    m = mount(bucket)
    assert len(os.listdir(os.path.join(m.path, "many"))) == 1001
    before = m.requests()
    t0 = time.time()
    assert run(["rm", "-r", f"{m.path}/many"], timeout=300).returncode == 0
    secs = time.time() - t0
    # rm's last step is the rmdir, which waits for the deletes under it: S3 holds nothing now.
    assert keys(s3, bucket, "many/", indexes=True) == []
    # The first unlink of the burst is sent alone; the rest go 1,000 keys a request at most.
    d = delta(before, m.requests())
    batches, single = d.get("DeleteObjects", 0), d.get("DeleteObject", 0)
    assert 1 <= batches and single <= 5 and batches + single <= 100, (d, secs)
    assert sum(d.values()) <= 110, (d, secs)
    assert os.listdir(m.path) == ["kept.txt"]
    st = m.stats()["deletes"]
    assert st["batched"] >= 990 and 1 <= st["batches"] <= batches and st["pending"] == 0 and st["failed"] == 0, (st, d)


def test_names_unlinked_in_a_burst_never_come_back(moto, s3, bucket, mount):
    names = [f"f{i:03d}" for i in range(300)]
    seed(s3, bucket, [f"burst/{n}" for n in names])
    # Every listing asks S3: keys still waiting for their batch must not show.
    m = mount(bucket, "--metadata-ttl", "0")
    d = os.path.join(m.path, "burst")
    assert sorted(os.listdir(d)) == names
    again = names[::10]
    for n in names:
        os.unlink(os.path.join(d, n))
        if n in again[:5]:
            # Written again at once, within the burst: the new file is kept.
            with open(os.path.join(d, n), "wb") as f:
                f.write(b"new " + n.encode())
        assert n not in os.listdir(d) or n in again[:5]
    for n in again[5:]:
        with open(os.path.join(d, n), "wb") as f:
            f.write(b"new " + n.encode())
    assert sorted(os.listdir(d)) == again
    # fsync (of a directory here) returns once the pending deletes are in S3.
    fd = os.open(d, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    time.sleep(0.5)  # nothing lands late
    assert keys(s3, bucket, "burst/") == [f"burst/{n}" for n in again]
    for n in again:
        assert body(s3, bucket, f"burst/{n}") == b"new " + n.encode()
    assert sorted(os.listdir(d)) == again
    st = m.stats()["deletes"]
    assert st["batched"] >= 250 and st["pending"] == 0 and st["failed"] == 0, st


def test_refused_deletes_fail_the_first_unlink_and_show_a_refused_batch_again(moto, s3, bucket, mount):
    files = [f"d/a{i:03d}" for i in range(40)] + ["d/deny-delete-me"] + [f"d/z{i:03d}" for i in range(40)]
    seed(s3, bucket, files + ["deny-delete.txt"])
    proxy = FaultProxy(moto.port)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint)
        # Sent alone and answered with S3's reply.
        out = run(["rm", f"{m.path}/deny-delete.txt"])
        assert out.returncode != 0 and "Permission denied" in out.stderr, out.stderr
        assert "deny-delete.txt" in keys(s3, bucket) and os.path.exists(f"{m.path}/deny-delete.txt")
        # In a burst the unlinks are answered at once; the batch holding the refused key is refused
        # whole, its files show again, and rm -r's rmdir says the directory is not empty.
        out = run(["rm", "-r", f"{m.path}/d"])
        assert out.returncode != 0 and "Directory not empty" in out.stderr, out.stderr
        left = keys(s3, bucket, "d/")
        assert "d/deny-delete-me" in left
        assert sorted(os.listdir(f"{m.path}/d")) == sorted(k[2:] for k in left)
        st = m.stats()["deletes"]
        assert st["failed"] >= 1 and st["pending"] == 0, st
        assert "AccessDenied" in m.log(), m.log()
    finally:
        proxy.stop()


def test_mv_file_and_directory_of_1500_keys(moto, s3, bucket, mount):
    seed(s3, bucket, [f"src/sub{i % 5}/k{i:04d}" for i in range(1500)] + [("one.txt", b"one")])
    m = mount(bucket)
    assert run(["mv", f"{m.path}/one.txt", f"{m.path}/two.txt"]).returncode == 0
    assert body(s3, bucket, "two.txt") == b"one" and "one.txt" not in keys(s3, bucket)
    os.listdir(os.path.join(m.path, "src"))
    t0 = time.time()
    out = run(["mv", f"{m.path}/src", f"{m.path}/dst"], timeout=600)
    secs = time.time() - t0
    assert out.returncode == 0, out.stderr
    assert keys(s3, bucket, "src/") == []
    moved = keys(s3, bucket, "dst/")
    assert len(moved) == 1500 and "dst/sub3/k0003" in moved
    assert sorted(os.listdir(os.path.join(m.path, "dst"))) == [f"sub{i}" for i in range(5)]
    assert len(os.listdir(os.path.join(m.path, "dst", "sub2"))) == 300
    assert not os.path.exists(os.path.join(m.path, "src"))
    print(f"mv of a directory with 1,500 keys: {secs:.2f} s")


def test_rename_noreplace_and_kind_errors(moto, s3, bucket, mount):
    seed(s3, bucket, ["a.txt", "b.txt", "d/x"])
    m = mount(bucket)
    out = run(["mv", "--no-clobber", "--update=none-fail", f"{m.path}/a.txt", f"{m.path}/b.txt"])
    assert body(s3, bucket, "a.txt") == b"x", "no-clobber kept the source"
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_NOREPLACE = -100, 1
    r = libc.renameat2(AT_FDCWD, f"{m.path}/a.txt".encode(), AT_FDCWD, f"{m.path}/b.txt".encode(), RENAME_NOREPLACE)
    assert r == -1 and ctypes.get_errno() == errno.EEXIST
    try:
        os.rename(f"{m.path}/a.txt", f"{m.path}/d")
        assert False
    except OSError as e:
        assert e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)


def test_two_writers_last_close_wins(moto, s3, bucket, mount):
    m = mount(bucket)
    p = os.path.join(m.path, "race.bin")
    a, b = os.urandom(3 << 20), os.urandom(2 << 20)
    fa = open(p, "wb")
    fb = open(p, "wb")
    fa.write(a)
    fb.write(b)
    fa.close()
    assert body(s3, bucket, "race.bin") == a
    fb.close()
    assert body(s3, bucket, "race.bin") == b, "the last close wins, whole"


def test_upload_failures_reach_the_writer(moto, s3, bucket, mount, tmp_path):
    proxy = FaultProxy(moto.port)
    try:
        spool = tmp_path / "spool"
        spool.mkdir()
        # A short retry budget: the failure is meant to outlast it.
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--spool-dir", str(spool), "--write-retry-time", "2")
        # Retried S3 throttling succeeds.
        assert run(f"echo ok > {m.path}/flaky.txt").returncode == 0
        assert body(s3, bucket, "flaky.txt") == b"ok\n"
        assert m.stats()["retries"] >= 2
        # A failure that persists is the writer's error, and the data is kept on disk.
        f = open(os.path.join(m.path, "fail-me.txt"), "wb")
        f.write(b"precious data\n")
        try:
            f.close()
            assert False, "close() must report the failed upload"
        except OSError as e:
            assert e.errno == errno.EIO
        src = tmp_path / "src.txt"
        src.write_bytes(b"more data")
        out = run(["cp", str(src), f"{m.path}/fail-me-too.txt"])
        assert out.returncode != 0 and "Input/output error" in out.stderr, out.stderr
        assert "fail-me.txt" not in keys(s3, bucket)
        assert [i for i in proxy.injected if "fail-me" in i[1]], "the failure came from the S3 side"
        deadline = time.time() + 20  # release (after close) tries once more before keeping the spool
        while len(glob.glob(str(spool / "s3mount-unsaved-*"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
        kept = glob.glob(str(spool / "s3mount-unsaved-*"))
        assert sorted(open(k, "rb").read() for k in kept) == [b"more data", b"precious data\n"]
        assert "kept in" in m.log()
    finally:
        proxy.stop()


def composite_crc32(data, part=8 << 20):
    """S3's checksum of a multipart object: the CRC-32 of its parts' CRC-32s (S3 appends "-N",
    the part count; some moto versions do not, so that is left out of the comparison)."""
    crcs = b"".join(binascii.crc32(data[i:i + part]).to_bytes(4, "big") for i in range(0, len(data), part))
    return crc32_b64(crcs)


def test_uploads_carry_checksums_that_s3_verifies(moto, s3, bucket, mount, tmp_path):
    proxy = ChecksumProxy(moto.port)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint)
        # A small file: one PutObject with its CRC-32.
        assert run(f"echo checked > {m.path}/small.txt").returncode == 0
        assert body(s3, bucket, "small.txt") == b"checked\n"
        assert any("/small.txt" in p for p in proxy.verified_puts)
        # 40 MiB: five parts, each with its CRC-32, and a completion that lists them.
        src = tmp_path / "big.bin"
        data = bytearray(os.urandom(40 << 20))
        src.write_bytes(data)
        assert run(["cp", str(src), f"{m.path}/big.bin"], timeout=300).returncode == 0
        assert body(s3, bucket, "big.bin") == data
        assert proxy.verified_completions == 1
        # The store's own checksum of what it received (moto computes it from the bytes; Ceph RGW
        # 16.2 takes the checksum headers and keeps nothing: the proxy above is the check there).
        head = s3.head_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")
        if STORE == "rgw":
            assert "ChecksumCRC32" not in head
        else:
            assert head["ChecksumCRC32"].split("-")[0] == composite_crc32(bytes(data))
        # Rewriting parts in place (download, modify, upload again) sends fresh checksums.
        with open(f"{m.path}/big.bin", "r+b") as f:
            for off in (100, 20 << 20, (40 << 20) - 5):
                f.seek(off)
                f.write(b"PATCH")
                data[off:off + 5] = b"PATCH"
        assert body(s3, bucket, "big.bin") == data
        assert proxy.verified_completions == 2
        if STORE != "rgw":
            assert s3.head_object(Bucket=bucket, Key="big.bin", ChecksumMode="ENABLED")["ChecksumCRC32"].split("-")[0] == composite_crc32(bytes(data))
        assert not proxy.rejected and not [p for p in proxy.plain_puts if "big.bin" in p or "small.txt" in p]
        # Bytes damaged on the way (S3 answers BadDigest) are sent again.
        retries = m.stats()["retries"]
        assert run(f"echo safe > {m.path}/damaged-once.txt").returncode == 0
        assert body(s3, bucket, "damaged-once.txt") == b"safe\n"
        assert [code for _, code in proxy.rejected] == ["BadDigest"] and m.stats()["retries"] == retries + 1
    finally:
        proxy.stop()


def test_store_that_refuses_checksums_still_gets_every_upload(moto, s3, bucket, mount, tmp_path):
    proxy = ChecksumProxy(moto.port, refuse=True)
    src = tmp_path / "big.bin"
    data = os.urandom(20 << 20)
    src.write_bytes(data)
    try:
        # Told not to send checksums: nothing is refused.
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--no-upload-checksums")
        assert run(f"echo one > {m.path}/one.txt").returncode == 0
        assert run(["cp", str(src), f"{m.path}/one.bin"], timeout=300).returncode == 0
        assert body(s3, bucket, "one.txt") == b"one\n" and body(s3, bucket, "one.bin") == data
        assert proxy.rejected == []
        m.unmount()
        # By default: the first refusal turns checksums off for the mount, and nothing is lost.
        m = mount(bucket, "--endpoint-url", proxy.endpoint)
        assert run(f"echo two > {m.path}/two.txt").returncode == 0
        assert run(["cp", str(src), f"{m.path}/two.bin"], timeout=300).returncode == 0
        assert body(s3, bucket, "two.txt") == b"two\n" and body(s3, bucket, "two.bin") == data
        assert [code for _, code in proxy.rejected] == ["InvalidArgument"]
        assert "refused upload checksums" in m.log()
    finally:
        proxy.stop()


def test_spool_disk_full_is_enospc(moto, s3, bucket, mount, tmp_path):
    spool = tmp_path / "tiny"
    spool.mkdir()
    # (mode=0700: a tmpfs is 1777 by default, and a spool others can write is refused.)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(spool)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        m = mount(bucket, "--spool-dir", str(spool))
        out = run(f"head -c 3000000 /dev/zero > {m.path}/too-big.bin")
        assert out.returncode != 0 and "No space left on device" in out.stderr, out.stderr
        assert mounted(m.path), "the daemon is still there"
        assert run(f"echo fine > {m.path}/small.txt").returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(spool)])


def test_unmount_uploads_files_still_open(moto, s3, bucket, mount):
    m = mount(bucket)
    f = open(os.path.join(m.path, "open.bin"), "wb")
    data = os.urandom(1 << 20)
    f.write(data)
    f.flush()  # into the kernel, not closed: no upload yet
    pid = m.daemon_pid()
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 30
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.1)
    try:
        f.close()
    except OSError:
        pass
    assert body(s3, bucket, "open.bin") == data
