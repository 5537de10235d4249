"""POSIX where S3 allows it, on a real mount: FIFOs, sockets and device nodes (empty objects whose
mode says the type, as s3fs stores them), ctime apart from mtime, a directory's times following
its entries, the stored nanosecond mtime of every file written, noatime, and extended attributes
behind --xattr in s3fs's format. Each is checked where a user would look (stat, ls, open, the
object's headers in S3) and after a remount, with the requests that reached S3."""
import json
import os
import socket
import stat
import subprocess
import threading
import time
import urllib.parse
import base64

import pytest

from conftest import BIN, CREDS, delta, mounted, run


def headers(s3, bucket, key):
    return s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def test_a_file_written_with_the_default_mode_shows_its_stored_nanosecond_mtime_and_make_rebuilds_once(moto, s3, bucket, mount):
    m = mount(bucket)
    p = os.path.join(m.path, "hello.o")
    with open(p, "w") as f:
        f.write("object\n")
    st = os.stat(p)
    stored = headers(s3, bucket, "hello.o")["mtime"]
    sec, _, frac = stored.partition(".")
    assert st.st_mtime_ns == int(sec) * 10**9 + int((frac or "0").ljust(9, "0")), (st.st_mtime_ns, stored)
    # The index holds it: a new mount shows the same nanoseconds from its listing, with no HeadObject.
    time.sleep(1.5)
    m.unmount()
    m2 = mount(bucket)
    before = m2.requests()
    assert os.listdir(m2.path) == ["hello.o"]
    assert os.stat(os.path.join(m2.path, "hello.o")).st_mtime_ns == st.st_mtime_ns
    assert delta(before, m2.requests()).get("HeadObject", 0) == 0
    # touch a.c; make; make within one second: the second make builds nothing.
    proj = os.path.join(m2.path, "proj")
    os.mkdir(proj)
    with open(os.path.join(proj, "Makefile"), "w") as f:
        f.write("a.o: a.c\n\tcp a.c a.o\n")
    for _ in range(5):
        start = time.time()
        if os.path.exists(os.path.join(proj, "a.o")):
            os.remove(os.path.join(proj, "a.o"))
        run(["touch", os.path.join(proj, "a.c")])
        first = run(["make", "-C", proj])
        second = run(["make", "-C", proj])
        if int(time.time()) == int(start):
            break
    assert first.returncode == 0 and "cp a.c a.o" in first.stdout, first.stdout + first.stderr
    assert second.returncode == 0 and "up to date" in second.stdout, second.stdout
    assert os.stat(os.path.join(proj, "a.o")).st_mtime_ns >= os.stat(os.path.join(proj, "a.c")).st_mtime_ns


def test_fifos_sockets_and_device_nodes_are_stored_as_s3fs_stores_them_and_work_locally(moto, s3, bucket, mount):
    m = mount(bucket)
    fifo, sock, dev = (os.path.join(m.path, n) for n in ("fifo", "sock", "null"))
    os.mkfifo(fifo, 0o640)
    st = os.stat(fifo)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    # A FIFO passes data between two processes of this host; the daemon never sees it.
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    with open(fifo, "wb") as w:
        w.write(b"through the pipe\n")
    reader.join(10)
    assert got == [b"through the pipe\n"]
    # bind() of a UNIX socket makes its node in the mount.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    st = os.stat(dev)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    # Inert: the mount is nodev unless --dev.
    with pytest.raises(PermissionError):
        open(dev, "rb")
    # In S3: empty objects, the type in the mode, the device number in rdev (s3fs's headers).
    h = headers(s3, bucket, "null")
    assert stat.S_ISCHR(int(h["mode"])) and int(h["rdev"]) == os.makedev(1, 3)
    assert stat.S_ISFIFO(int(headers(s3, bucket, "fifo")["mode"]))
    assert s3.head_object(Bucket=bucket, Key="fifo")["ContentLength"] == 0
    time.sleep(1.5)
    m.unmount()
    # Shown by the next mount from its listing and index: no HeadObject.
    m2 = mount(bucket)
    before = m2.requests()
    out = run(["ls", "-l", m2.path])
    assert out.returncode == 0, out.stderr
    kinds = {line.split()[-1]: line[0] for line in out.stdout.splitlines()[1:]}
    assert kinds == {"fifo": "p", "sock": "s", "null": "c"}, out.stdout
    assert os.stat(os.path.join(m2.path, "null")).st_rdev == os.makedev(1, 3)
    assert delta(before, m2.requests()).get("HeadObject", 0) == 0
    os.rename(os.path.join(m2.path, "fifo"), os.path.join(m2.path, "fifo2"))
    assert stat.S_ISFIFO(os.stat(os.path.join(m2.path, "fifo2")).st_mode)
    for n in ("fifo2", "sock", "null"):
        os.remove(os.path.join(m2.path, n))
    assert os.listdir(m2.path) == []


def test_ctime_apart_from_mtime_directory_times_follow_entries_and_the_mount_is_noatime(moto, s3, bucket, mount):
    m = mount(bucket)
    d = os.path.join(m.path, "d")
    os.mkdir(d)
    p = os.path.join(d, "f")
    with open(p, "w") as f:
        f.write("data\n")
    st0 = os.stat(p)
    assert st0.st_ctime_ns == st0.st_mtime_ns
    time.sleep(0.05)
    os.chmod(p, 0o600)
    st1 = os.stat(p)
    assert st1.st_mtime_ns == st0.st_mtime_ns and st1.st_ctime_ns > st0.st_ctime_ns
    time.sleep(0.05)
    os.chown(p, 1234, 1234)
    st2 = os.stat(p)
    assert st2.st_mtime_ns == st0.st_mtime_ns and st2.st_ctime_ns > st1.st_ctime_ns
    # A directory's mtime and ctime change when an entry is created, renamed or removed in it.
    for change in (lambda: open(os.path.join(d, "g"), "w").close(),
                   lambda: os.rename(os.path.join(d, "g"), os.path.join(d, "h")),
                   lambda: os.remove(os.path.join(d, "h")),
                   lambda: os.mkdir(os.path.join(d, "sub")),
                   lambda: os.rmdir(os.path.join(d, "sub"))):
        before = os.stat(d)
        time.sleep(0.05)
        change()
        after = os.stat(d)
        assert after.st_mtime_ns > before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns
    # A rename changes the file's ctime, not its mtime.
    time.sleep(0.05)
    os.rename(p, os.path.join(d, "f2"))
    st3 = os.stat(os.path.join(d, "f2"))
    assert st3.st_mtime_ns == st0.st_mtime_ns and st3.st_ctime_ns > st2.st_ctime_ns
    # noatime: reading changes no atime; utimensat sets it, and it is kept.
    assert "noatime" in [l for l in open("/proc/mounts").read().splitlines() if m.path in l][0]
    os.utime(os.path.join(d, "f2"), ns=(1_400_000_000_000_000_007, 1_500_000_000_000_000_009))
    open(os.path.join(d, "f2")).read()
    st4 = os.stat(os.path.join(d, "f2"))
    assert (st4.st_atime_ns, st4.st_mtime_ns) == (1_400_000_000_000_000_007, 1_500_000_000_000_000_009)
    assert st4.st_ctime_ns > st3.st_ctime_ns
    time.sleep(1.5)
    m.unmount()
    # What a remount keeps: the file's times (its headers and index). (The directory's new times
    # stayed in that mount's memory: it has no record of its own; docs/SEMANTICS.md, "Times".)
    m2 = mount(bucket)
    st5 = os.stat(os.path.join(m2.path, "d", "f2"))
    assert (st5.st_atime_ns, st5.st_mtime_ns, st5.st_ctime_ns) == (st4.st_atime_ns, st4.st_mtime_ns, st4.st_ctime_ns)
    # Set after the upload: kept in the directory's index, not in a copy of the object (its headers
    # keep what the upload said; --metadata head copies them too, as s3fs does).
    h = headers(s3, bucket, "d/f2")
    assert "atime" not in h and h["mtime"] != "1500000000.000000009", h


def test_xattrs_user_namespace_in_s3fs_format_carried_by_renames_and_a_remount(moto, s3, bucket, mount):
    m = mount(bucket, "--xattr")
    p = os.path.join(m.path, "f")
    with open(p, "w") as f:
        f.write("x\n")
    os.setxattr(p, "user.color", b"blue")
    os.setxattr(p, "user.bin", bytes(range(256))[:100])
    assert os.getxattr(p, "user.color") == b"blue"
    assert sorted(os.listxattr(p)) == ["user.bin", "user.color"]
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.none")
    assert e.value.errno == 61  # ENODATA
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.color", b"red", os.XATTR_CREATE)
    assert e.value.errno == 17  # EEXIST
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.new", b"v", os.XATTR_REPLACE)
    assert e.value.errno == 61
    # Answered locally: no SELinux label, no ACL; neither can be set.
    for name in ("security.selinux", "system.posix_acl_access"):
        with pytest.raises(OSError) as e:
            os.getxattr(p, name)
        assert e.value.errno == 61
    with pytest.raises(OSError) as e:
        os.setxattr(p, "security.test", b"x")
    assert e.value.errno == 95  # EOPNOTSUPP
    # More than S3's 2 KB of user metadata holds: refused as a full disk refuses it.
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.big", b"x" * 3000)
    assert e.value.errno == 28  # ENOSPC
    os.removexattr(p, "user.bin")
    assert os.listxattr(p) == ["user.color"]
    # Directories too; a rename carries them.
    d = os.path.join(m.path, "dir")
    os.mkdir(d)
    os.setxattr(d, "user.tag", b"folder")
    os.rename(p, os.path.join(d, "moved"))
    assert os.getxattr(os.path.join(d, "moved"), "user.color") == b"blue"
    time.sleep(2.5)
    # In S3: s3fs's header, percent-encoded JSON of base64 values.
    raw = headers(s3, bucket, "dir/moved")["xattr"]
    assert json.loads(urllib.parse.unquote(raw)) == {"user.color": base64.b64encode(b"blue").decode()}
    m.unmount()
    m2 = mount(bucket, "--xattr")
    before = m2.requests()
    assert os.getxattr(os.path.join(m2.path, "dir", "moved"), "user.color") == b"blue"
    assert os.getxattr(os.path.join(m2.path, "dir"), "user.tag") == b"folder"
    assert delta(before, m2.requests()).get("HeadObject", 0) == 0
    m2.unmount()
    # Without --xattr the kernel is told there are none, once: nothing reaches the daemon.
    m3 = mount(bucket)
    with pytest.raises(OSError) as e:
        os.setxattr(os.path.join(m3.path, "dir", "moved"), "user.x", b"y")
    assert e.value.errno == 95
    with pytest.raises(OSError) as e:
        os.listxattr(os.path.join(m3.path, "dir", "moved"))
    assert e.value.errno == 95


def test_xattrs_set_by_another_tool_are_read_with_one_head(moto, s3, bucket, mount):
    value = urllib.parse.quote(json.dumps({"user.origin": base64.b64encode(b"s3fs").decode()}, separators=(",", ":")), safe="")
    s3.put_object(Bucket=bucket, Key="theirs", Body=b"t", Metadata={"xattr": value, "mode": "33188"})
    m = mount(bucket, "--xattr")
    p = os.path.join(m.path, "theirs")
    before = m.requests()
    assert os.getxattr(p, "user.origin") == b"s3fs"
    assert os.getxattr(p, "user.origin") == b"s3fs"
    assert delta(before, m.requests()).get("HeadObject", 0) == 1


def test_a_file_unlinked_while_open_shows_no_link_and_leaves_nothing(moto, s3, bucket, mount):
    m = mount(bucket)
    p, q = os.path.join(m.path, "read"), os.path.join(m.path, "written")
    with open(p, "w") as f:
        f.write("r")
    reader = os.open(p, os.O_RDONLY)
    os.unlink(p)
    assert os.fstat(reader).st_nlink == 0 and os.pread(reader, 1, 0) == b"r"
    os.close(reader)
    writer = os.open(q, os.O_CREAT | os.O_RDWR, 0o600)
    os.write(writer, b"w")
    os.unlink(q)
    assert os.fstat(writer).st_nlink == 0
    os.close(writer)
    time.sleep(1.5)
    # The root's new times alone make no metadata index: the bucket is as it was.
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_the_fstab_form_of_xattr(moto, s3, bucket, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = dict(os.environ, **CREDS, AWS_EC2_METADATA_DISABLED="true", TMPDIR=str(tmp_path))
    opts = f"endpoint_url={moto.endpoint},force_path_style,xattr,log_file={tmp_path}/log"
    out = subprocess.run([BIN, bucket, str(mp), "-o", opts], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        p = str(mp / "f")
        with open(p, "w") as f:
            f.write("x")
        os.setxattr(p, "user.k", b"v")
        assert os.getxattr(p, "user.k") == b"v"
    finally:
        subprocess.run(["fusermount3", "-u", str(mp)])
        deadline = time.time() + 10
        while mounted(str(mp)) and time.time() < deadline:
            time.sleep(0.1)
