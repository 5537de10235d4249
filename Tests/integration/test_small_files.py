"""Many small files (#30): one request per file for what tar, cp -p, rsync and git do, and
--write-back (close returns once the file is in a journal on local disk; uploads in parallel after).
Counted request by request from the daemon's statistics; checked byte by byte in S3."""
import errno
import glob
import hashlib
import os
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import BIN, delta, run
from s3proxy import ForwardingProxy


def body(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def object_keys(s3, bucket, prefix=""):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith(".s3mount-meta")]
    return out


def data_of(i):
    """File i's bytes: small ones, and every 50th larger than a journal record carries inline."""
    size = 300_000 if i % 50 == 7 else 100 + (i * 37) % 4000
    return hashlib.sha256(str(i).encode()).digest() * (size // 32) + b"%d\n" % i


class SlowPuts(ForwardingProxy):
    """PUTs (uploads, index writes) wait `seconds` before they are forwarded: uploads are still
    owed when the test looks. With `failing`, PUTs of keys with "fail-me" get 500 instead. A
    mount after a crash must use the same endpoint (what tells one store from another in the
    spool), so tests change these rather than the proxy."""

    def __init__(self, upstream_port, seconds, failing=False):
        self.seconds, self.failing = seconds, failing

        def slow(method, path):
            if method == "PUT" and self.failing and "fail-me" in path:
                return (500, "InternalError")
            if method == "PUT":
                time.sleep(self.seconds)
            return None
        super().__init__(upstream_port, before=slow)


def write_tar_like(path, i):
    """What tar x does per file: create, write, close, then set the times and the mode."""
    p = os.path.join(path, f"f{i:04d}.txt")
    with open(p, "wb") as f:
        f.write(data_of(i))
    os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_123_456_789 + i))
    os.chmod(p, 0o600 if i % 2 else 0o640)
    return p


def test_tar_like_sequences_cost_one_request_per_file(moto, s3, bucket, mount):
    m = mount(bucket)
    d = os.path.join(m.path, "tree")
    os.mkdir(d)
    before = m.requests()
    for i in range(60):
        write_tar_like(d, i)
    time.sleep(2.5)  # the directory's index is written within a second of the last change
    sent = delta(before, m.requests())
    # One PutObject per file; the times and modes set after the close travel in the directory's
    # index (a PUT or two for the whole directory), never in a copy per file.
    assert sent.get("CopyObject", 0) == 0 and sent.get("HeadObject", 0) == 0, sent
    assert 60 <= sent.get("PutObject", 0) <= 60 + 4, sent
    # What a tool that reads only headers (s3fs) sees: the mode and mtime of the upload.
    h = s3.head_object(Bucket=bucket, Key="tree/f0001.txt")["Metadata"]
    assert int(h["mode"]) == stat.S_IFREG | 0o644, h
    m.unmount()
    m2 = mount(bucket)
    before = m2.requests()
    for i in range(60):
        st = os.stat(os.path.join(m2.path, "tree", f"f{i:04d}.txt"))
        assert stat.S_IMODE(st.st_mode) == (0o600 if i % 2 else 0o640), i
        assert st.st_mtime_ns == 1_600_000_000_123_456_789 + i, i
    assert delta(before, m2.requests()).get("HeadObject", 0) == 0
    assert open(os.path.join(m2.path, "tree", "f0007.txt"), "rb").read() == data_of(7)


def test_write_back_returns_at_close_serves_the_spool_and_fsync_waits_for_s3(moto, s3, bucket, mount, tmp_path):
    proxy = SlowPuts(moto.port, 0.3)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--write-back")
        d = os.path.join(m.path, "wb")
        os.mkdir(d)
        start = time.time()
        for i in range(40):
            with open(os.path.join(d, f"f{i}"), "wb") as f:
                f.write(data_of(i))
        took = time.time() - start
        # 40 uploads of 0.3 s each, one after another, would take 12 s.
        assert took < 6, took
        wb = m.stats()["write_back"]
        assert wb["pending"] > 0, wb
        # Owed files are what every reader on the mount sees: listed, sized, read from the spool.
        assert sorted(os.listdir(d)) == sorted(f"f{i}" for i in range(40))
        assert os.path.getsize(os.path.join(d, "f3")) == len(data_of(3))
        assert open(os.path.join(d, "f39"), "rb").read() == data_of(39)
        # fsync waits for S3.
        fd = os.open(os.path.join(d, "f38"), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        assert body(s3, bucket, "wb/f38") == data_of(38)
        deadline = time.time() + 30
        while m.stats()["write_back"]["pending"] and time.time() < deadline:
            time.sleep(0.2)
        wb = m.stats()["write_back"]
        assert wb["pending"] == 0 and wb["uploaded"] >= 40 and wb["failed"] == 0, wb
        for i in range(40):
            assert body(s3, bucket, f"wb/f{i}") == data_of(i), i
        assert "s3m-writeback" in m.stats()["pools"]
    finally:
        proxy.stop()


def test_write_then_rename_under_write_back_moves_no_object(moto, s3, bucket, mount, tmp_path):
    proxy = SlowPuts(moto.port, 0.2)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--write-back")
        before = m.requests()
        # rsync's and git's way: a temporary name, written and closed, then renamed over the real one.
        for i in range(10):
            tmp = os.path.join(m.path, f".f{i}.tmp")
            with open(tmp, "wb") as f:
                f.write(data_of(i))
            os.chmod(tmp, 0o600)
            os.rename(tmp, os.path.join(m.path, f"f{i}"))
        deadline = time.time() + 30
        while m.stats()["write_back"]["pending"] and time.time() < deadline:
            time.sleep(0.1)
        sent = delta(before, m.requests())
        assert sorted(object_keys(s3, bucket)) == sorted(f"f{i}" for i in range(10))
        for i in range(10):
            assert body(s3, bucket, f"f{i}") == data_of(i)
            assert int(s3.head_object(Bucket=bucket, Key=f"f{i}")["Metadata"]["mode"]) == stat.S_IFREG | 0o600
        assert "CopyObject" not in sent and "DeleteObject" not in sent, sent
    finally:
        proxy.stop()


def test_write_back_rename_sends_one_put_per_file(moto, s3, bucket, mount):
    m = mount(bucket, "--write-back")
    before = m.requests()
    for i in range(20):
        tmp = os.path.join(m.path, f".g{i}.tmp")
        with open(tmp, "wb") as f:
            f.write(data_of(i))
        os.rename(tmp, os.path.join(m.path, f"g{i}"))
    deadline = time.time() + 20
    while m.stats()["write_back"]["pending"] and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    sent = delta(before, m.requests())
    assert sent.get("CopyObject", 0) == 0 and sent.get("DeleteObject", 0) == 0, sent
    assert 20 <= sent.get("PutObject", 0) <= 22, sent
    assert sorted(object_keys(s3, bucket)) == sorted(f"g{i}" for i in range(20))


def test_a_daemon_killed_during_write_back_of_500_files_loses_nothing(moto, s3, bucket, mount, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    proxy = SlowPuts(moto.port, 0.5)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--write-back", "--spool-dir", str(spool))
        d = os.path.join(m.path, "many")
        os.mkdir(d)
        for i in range(500):
            with open(os.path.join(d, f"f{i:03d}"), "wb") as f:
                f.write(data_of(i))
        # Every close returned: the bytes are in the journal. The daemon dies now.
        pid = m.daemon_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            time.sleep(0.05)
        subprocess.run(["fusermount3", "-uz", m.path], capture_output=True)
        landed = len(object_keys(s3, bucket, "many/"))
        assert landed < 500, "the test meant to kill the daemon with uploads owed"
        assert glob.glob(str(spool / "s3mount-writeback-*.journal"))
        # The next mount with the same spool sends what was owed before it answers a lookup.
        proxy.seconds = 0
        m2 = mount(bucket, "--endpoint-url", proxy.endpoint, "--spool-dir", str(spool))
        assert sorted(k for k in object_keys(s3, bucket, "many/") if k != "many/") == [f"many/f{i:03d}" for i in range(500)]
        for i in range(500):
            assert body(s3, bucket, f"many/f{i:03d}") == data_of(i), i
        assert open(os.path.join(m2.path, "many", "f007"), "rb").read() == data_of(7)
        assert "an earlier run closed and did not upload" in m2.log()
        # Nothing owed is left behind: no journal of the dead run, no spool file.
        assert not [p for p in glob.glob(str(spool / "s3mount-writeback-*.journal")) if f"-{pid}-" in p]
        assert not glob.glob(str(spool / "s3mount-spool-*"))
    finally:
        proxy.stop()


def test_a_full_write_back_bound_makes_the_writer_wait(moto, s3, bucket, mount):
    proxy = SlowPuts(moto.port, 0.3)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--write-back", "--write-back-max-files", "3")
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                seen.append(m.stats()["write_back"]["pending"])
                time.sleep(0.05)
        t = threading.Thread(target=watch)
        t.start()
        start = time.time()
        for i in range(15):
            with open(os.path.join(m.path, f"b{i}"), "wb") as f:
                f.write(data_of(i))
        took = time.time() - start
        stop.set()
        t.join()
        # At most 3 owed at once: the closes waited for uploads (15 files, 3 at a time, 0.3 s each).
        assert max(seen) <= 3 and max(seen) >= 1, seen
        assert took > 1.0, took
        m.unmount()
        for i in range(15):
            assert body(s3, bucket, f"b{i}") == data_of(i)
    finally:
        proxy.stop()


def test_a_failed_write_back_is_reported_at_fsync_kept_and_sent_by_the_next_mount(moto, s3, bucket, mount, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    proxy = SlowPuts(moto.port, 0, failing=True)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--write-back", "--spool-dir", str(spool), "--write-retry-time", "1")
        p = os.path.join(m.path, "fail-me.txt")
        with open(p, "wb") as f:
            f.write(b"precious data\n")  # the close succeeds: the bytes are in the journal
        deadline = time.time() + 20
        while m.stats()["write_back"]["failed"] == 0 and time.time() < deadline:
            time.sleep(0.2)
        wb = m.stats()["write_back"]
        assert wb["failed"] == 1 and wb["failed_kept"] == 1, wb
        assert "write-back: the upload of \"fail-me.txt\" failed" in m.log() or "fail-me.txt" in m.log()
        # Still what the mount shows, and the next fsync on the file reports the failure.
        assert open(p, "rb").read() == b"precious data\n"
        fd = os.open(p, os.O_RDONLY)
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        os.close(fd)
        assert e.value.errno == errno.EIO
        m.unmount()
        assert "fail-me.txt" not in object_keys(s3, bucket)
        # Kept for the next mount of this bucket with this spool, which sends it.
        proxy.failing = False
        m2 = mount(bucket, "--endpoint-url", proxy.endpoint, "--spool-dir", str(spool))
        assert body(s3, bucket, "fail-me.txt") == b"precious data\n"
        assert open(os.path.join(m2.path, "fail-me.txt"), "rb").read() == b"precious data\n"
    finally:
        proxy.stop()


def test_write_back_and_its_bounds_in_fstab_form(moto, bucket, mount):
    m = mount(bucket, "-o", "write_back,write_back_max_files=8,write_back_max_bytes=64M")
    with open(os.path.join(m.path, "x"), "wb") as f:
        f.write(b"x")
    assert m.stats()["write_back"]["journal_records"] >= 0
    out = run([BIN, "x", "/mnt", "--write-back-max-files", "0"])
    assert out.returncode != 0 and "write-back-max-files" in out.stderr, out.stderr


@pytest.mark.moto_only("the notification queue is SQS (moto)")
def test_another_mount_with_notifications_sees_a_write_back_file_once_it_lands(moto, s3, bucket, mount):
    from test_notifications import notification_stats, queues, until
    s3.put_object(Bucket=bucket, Key="d/seed", Body=b"seed")
    qa, qb = queues(moto, bucket, 2)
    proxy = SlowPuts(moto.port, 1.0)
    try:
        a = mount(bucket, "--endpoint-url", proxy.endpoint, "--write-back", "--notification-queue", qa, "--metadata-ttl", "indefinite")
        b = mount(bucket, "--notification-queue", qb, "--metadata-ttl", "indefinite")
        until(lambda: notification_stats(b)["healthy"], what="B's first poll")
        assert os.listdir(os.path.join(b.path, "d")) == ["seed"]
        with open(os.path.join(a.path, "d", "new"), "wb") as f:
            f.write(b"written back")
        # A shows it at once; B, another host, when it lands (the upload waits 1 s in the proxy).
        assert sorted(os.listdir(os.path.join(a.path, "d"))) == ["new", "seed"]
        assert "new" not in os.listdir(os.path.join(b.path, "d"))
        until(lambda: open(os.path.join(b.path, "d", "new"), "rb").read() == b"written back", timeout=20, what="the write-back file on B")
        assert a.stats()["write_back"]["pending"] == 0
    finally:
        proxy.stop()


def test_a_file_being_written_reads_back_through_another_descriptor_and_git_clone_works(moto, s3, bucket, mount, tmp_path):
    m = mount(bucket)
    # git's index-pack reads the pack it is writing through a second descriptor: it must get the
    # bytes written so far, not what S3 held (nothing, or an older object).
    p = os.path.join(m.path, "growing")
    w = open(p, "wb")
    w.write(b"first part ")
    w.flush()
    assert open(p, "rb").read() == b"first part "
    w.write(b"second part")
    w.flush()
    with open(p, "rb") as r:
        assert r.read() == b"first part second part"
    w.close()
    assert body(s3, bucket, "growing") == b"first part second part"
    src = tmp_path / "repo"
    for cmd in (["git", "init", "-q", str(src)], ["git", "-C", str(src), "config", "user.email", "t@example.com"],
                ["git", "-C", str(src), "config", "user.name", "t"]):
        assert run(cmd).returncode == 0
    for i in range(30):
        (src / f"file{i}.txt").write_text(f"content {i}\n" * (i + 1))
        if i % 10 == 9:
            assert run(["git", "-C", str(src), "add", "."]).returncode == 0
            assert run(["git", "-C", str(src), "commit", "-q", "-m", f"c{i}"]).returncode == 0
    out = run(["git", "clone", "-q", f"file://{src}", os.path.join(m.path, "clone")])
    assert out.returncode == 0, out.stderr
    fsck = run(["git", "-C", os.path.join(m.path, "clone"), "fsck", "--full"])
    assert fsck.returncode == 0, fsck.stderr
    assert run(["git", "-C", os.path.join(m.path, "clone"), "status", "--porcelain"]).stdout == ""
    assert open(os.path.join(m.path, "clone", "file29.txt")).read() == "content 29\n" * 30


def test_write_back_mkdir_markers_go_up_behind_and_rmdir_takes_them_back(moto, s3, bucket, mount):
    proxy = SlowPuts(moto.port, 0.3)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint, "--write-back")
        start = time.time()
        for i in range(10):
            os.mkdir(os.path.join(m.path, f"d{i}"), 0o750)
        assert time.time() - start < 2, "ten mkdirs do not wait for ten PUTs of 0.3 s"
        os.rmdir(os.path.join(m.path, "d9"))  # owed, never sent
        os.mkdir(os.path.join(m.path, "d8", "sub"))
        with pytest.raises(OSError) as e:
            os.rmdir(os.path.join(m.path, "d8"))
        assert e.value.errno == errno.ENOTEMPTY
        os.rmdir(os.path.join(m.path, "d8", "sub"))
        os.rmdir(os.path.join(m.path, "d8"))
        assert sorted(os.listdir(m.path)) == [f"d{i}" for i in range(8)]
        deadline = time.time() + 20
        while m.stats()["write_back"]["pending"] and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        markers = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"].endswith("/"))
        assert markers == [f"d{i}/" for i in range(8)], markers
        assert int(s3.head_object(Bucket=bucket, Key="d3/")["Metadata"]["mode"]) == stat.S_IFDIR | 0o750
    finally:
        proxy.stop()
