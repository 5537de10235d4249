"""Everyday tools on a real mount: rsync -a, cp -a, tar, install, chmod +x, touch -d, make, git,
symlinks, permissions between users. Modes, owners, mtimes and symlinks must survive a remount
(they live in S3: object headers, and a per-directory index), and listing them costs no
HeadObject."""
import os
import pwd
import shutil
import stat
import subprocess
import tarfile
import time

import pytest

from conftest import delta, run

META_INDEX = ".s3mount-meta"


def tree_stats(root):
    """{relative path: (type, mode, mtime_ns, size, link target)} of everything below root."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), mtime, size, target)
    return out


def make_source_tree(base):
    """A small tree with the modes, times and links that tools carry over."""
    src = os.path.join(base, "src")
    os.makedirs(os.path.join(src, "bin"))
    os.makedirs(os.path.join(src, "private"))
    files = {"README": (b"hello\n", 0o644), "bin/run.sh": (b"#!/bin/sh\necho ran\n", 0o755),
             "private/key": (b"secret\n", 0o600), "notes.txt": (b"x" * 5000, 0o640)}
    for i, (rel, (data, mode)) in enumerate(sorted(files.items())):
        p = os.path.join(src, rel)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        os.utime(p, ns=(1_500_000_000_123_456_789 + i, 1_500_000_000_123_456_789 + i * 1_000_000_007))
    os.chmod(os.path.join(src, "private"), 0o700)
    os.symlink("bin/run.sh", os.path.join(src, "run"))
    os.symlink("does/not/exist", os.path.join(src, "dangling"))
    # Links made just now would differ from their copies below the second, which rsync ignores.
    os.utime(os.path.join(src, "run"), ns=(1, 1_400_000_000_000_000_001), follow_symlinks=False)
    os.utime(os.path.join(src, "dangling"), ns=(1, 1_300_000_000_999_999_999), follow_symlinks=False)
    return src


def itemized_files(out):
    """Files rsync -i says it transferred (lines starting with '>f' or '<f')."""
    return [line for line in out.splitlines() if line[:2] in (">f", "<f")]


def test_rsync_a_twice_sends_nothing_the_second_time_even_after_a_remount(moto, s3, bucket, mount, tmp_path):
    src = make_source_tree(str(tmp_path))
    m = mount(bucket)
    dst = os.path.join(m.path, "rs")
    before = m.requests()
    out = run(["rsync", "-a", src + "/", dst + "/"])
    assert out.returncode == 0, out.stderr
    assert tree_stats(dst) == tree_stats(src)
    # rsync writes a temporary file, sets its times and mode, renames it: the header changes ride
    # on the rename's copy.
    d = delta(before, m.requests())
    assert d.get("HeadObject", 0) == 0 and d.get("CopyObject", 0) == 4, d
    again = run(["rsync", "-a", "-i", src + "/", dst + "/"])
    assert again.returncode == 0 and itemized_files(again.stdout) == [], again.stdout
    # S3 has what s3fs would have written: decimal st_mode, uid, gid, mtime in seconds.
    h = s3.head_object(Bucket=bucket, Key="rs/bin/run.sh")["Metadata"]
    assert int(h["mode"]) == stat.S_IFREG | 0o755 and h["uid"] == str(os.getuid()), h
    ns = os.stat(os.path.join(src, "bin", "run.sh")).st_mtime_ns
    assert h["mtime"] == f"{ns // 10**9}.{ns % 10**9:09d}", h
    # The index is hidden from listings and from lookups.
    assert META_INDEX not in os.listdir(dst)
    assert not os.path.exists(os.path.join(dst, META_INDEX))
    m.unmount()
    m2 = mount(bucket)
    dst2 = os.path.join(m2.path, "rs")
    before = m2.requests()
    assert tree_stats(dst2) == tree_stats(src)
    listing = delta(before, m2.requests())
    assert listing.get("HeadObject", 0) == 0, listing
    third = run(["rsync", "-a", "-i", src + "/", dst2 + "/"])
    assert third.returncode == 0 and itemized_files(third.stdout) == [], third.stdout


def test_cp_a_and_tar_keep_modes_mtimes_and_links_across_a_remount(moto, s3, bucket, mount, tmp_path):
    src = make_source_tree(str(tmp_path))
    archive = str(tmp_path / "t.tar")
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname="src")
    # What tar makes of the archive on a local disk (the archive keeps times to the microsecond).
    local = tmp_path / "local"
    local.mkdir()
    assert run(["tar", "xpf", archive, "-C", str(local)]).returncode == 0
    m = mount(bucket)
    out = run(["cp", "-a", src, os.path.join(m.path, "cpa")])
    assert out.returncode == 0, out.stderr
    os.mkdir(os.path.join(m.path, "tx"))
    out = run(["tar", "xpf", archive, "-C", os.path.join(m.path, "tx")])
    assert out.returncode == 0, out.stderr
    expected, from_tar = tree_stats(src), tree_stats(str(local / "src"))
    assert tree_stats(os.path.join(m.path, "cpa")) == expected
    assert tree_stats(os.path.join(m.path, "tx", "src")) == from_tar
    m.unmount()
    m2 = mount(bucket)
    assert tree_stats(os.path.join(m2.path, "cpa")) == expected
    assert tree_stats(os.path.join(m2.path, "tx", "src")) == from_tar
    assert run([os.path.join(m2.path, "cpa", "run")]).stdout == "ran\n"


def test_create_chmod_chown_utimens_install_and_exec(moto, s3, bucket, mount, tmp_path):
    m = mount(bucket)
    p = os.path.join(m.path, "f")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"data")
    os.close(fd)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    script = os.path.join(m.path, "script.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho executed\n")
    assert run(["sh", "-c", script]).returncode == 126, "not executable yet"
    before = m.requests()
    assert run(["chmod", "+x", script]).returncode == 0
    assert run(["chmod", "g-r", script]).returncode == 0
    assert delta(before, m.requests()) == {}, "shown at once, sent a moment later"
    assert run([script]).stdout == "executed\n"
    time.sleep(1.5)
    # Changes in a row to a stored object are one write of its directory's index, no copy: its
    # headers keep what its upload said (--metadata head also copies them, as s3fs does).
    d = delta(before, m.requests())
    assert d.get("CopyObject", 0) == 0 and d.get("PutObject") == 1 and d.get("HeadObject", 0) == 0, d
    assert int(s3.head_object(Bucket=bucket, Key="script.sh")["Metadata"]["mode"]) == stat.S_IFREG | 0o644
    assert run(["touch", "-d", "2020-01-02 03:04:05.987654321", p]).returncode == 0
    os.utime(script, ns=(1, 1_234_567_890_123_456_789))
    os.chown(p, 4242, 4343)
    out = run(["install", "-m", "755", "/etc/hostname", os.path.join(m.path, "installed")])
    assert out.returncode == 0, out.stderr
    os.mkdir(os.path.join(m.path, "d"), 0o750)
    time.sleep(1.5)  # the index is written back within a second of the last change
    m.unmount()
    m2 = mount(bucket)
    st = os.stat(os.path.join(m2.path, "f"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 4242, 4343)
    assert st.st_mtime_ns == 1577934245_987654321
    assert os.stat(os.path.join(m2.path, "script.sh")).st_mtime_ns == 1_234_567_890_123_456_789
    assert run([os.path.join(m2.path, "script.sh")]).stdout == "executed\n"
    assert stat.S_IMODE(os.stat(os.path.join(m2.path, "installed")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.join(m2.path, "d")).st_mode) == 0o750
    # Headers as s3fs writes them, with what the upload knew: the chown and touch that came after
    # it went to the directory's index (--metadata head copies them onto the object too).
    h = s3.head_object(Bucket=bucket, Key="f")["Metadata"]
    assert (int(h["mode"]), h["uid"], h["gid"]) == (stat.S_IFREG | 0o600, str(os.getuid()), str(os.getgid())), h
    assert h["mtime"] != "1577934245.987654321"
    assert int(s3.head_object(Bucket=bucket, Key="d/")["Metadata"]["mode"]) == stat.S_IFDIR | 0o750


def test_objects_without_metadata_show_the_mount_defaults_and_other_tools_overwrites_win(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="plain/a", Body=b"a")
    m = mount(bucket, "--file-mode", "0640", "--dir-mode", "0750", "--uid", "1234", "--gid", "2345")
    st = os.stat(os.path.join(m.path, "plain", "a"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 2345)
    assert stat.S_IMODE(os.stat(os.path.join(m.path, "plain")).st_mode) == 0o750
    p = os.path.join(m.path, "plain", "b")
    with open(p, "w") as f:
        f.write("mine")
    os.chmod(p, 0o600)
    time.sleep(1.5)
    # Another tool replaces the object: its new ETag no longer matches the index entry.
    s3.put_object(Bucket=bucket, Key="plain/b", Body=b"theirs")
    m.unmount()
    m2 = mount(bucket, "--file-mode", "0640")
    assert stat.S_IMODE(os.stat(os.path.join(m2.path, "plain", "b")).st_mode) == 0o640
    assert open(os.path.join(m2.path, "plain", "b")).read() == "theirs"


def test_symlinks(moto, s3, bucket, mount, tmp_path):
    m = mount(bucket)
    os.mkdir(os.path.join(m.path, "l"))
    target = os.path.join(m.path, "l", "target.txt")
    with open(target, "w") as f:
        f.write("pointed at\n")
    assert run(["ln", "-s", "target.txt", os.path.join(m.path, "l", "link")]).returncode == 0
    assert run(["ln", "-s", "../nowhere", os.path.join(m.path, "l", "dangling")]).returncode == 0
    assert os.readlink(os.path.join(m.path, "l", "link")) == "target.txt"
    assert open(os.path.join(m.path, "l", "link")).read() == "pointed at\n"
    ls = run(["ls", "-l", os.path.join(m.path, "l")]).stdout
    assert "link -> target.txt" in ls and "dangling -> ../nowhere" in ls, ls
    assert not os.path.exists(os.path.join(m.path, "l", "dangling")) and os.path.islink(os.path.join(m.path, "l", "dangling"))
    assert run(["find", os.path.join(m.path, "l"), "-type", "l"]).stdout.count("\n") == 2
    # Hard links do not exist in S3.
    with pytest.raises(PermissionError):
        os.link(target, os.path.join(m.path, "l", "hard"))
    # The object is the target, as s3fs stores a symlink.
    o = s3.get_object(Bucket=bucket, Key="l/link")
    assert o["Body"].read() == b"target.txt" and int(o["Metadata"]["mode"]) == stat.S_IFLNK | 0o777
    out = run(["cp", "-a", os.path.join(m.path, "l"), str(tmp_path / "copy")])
    assert out.returncode == 0, out.stderr
    assert os.readlink(tmp_path / "copy" / "link") == "target.txt"
    m.unmount()
    m2 = mount(bucket)
    assert os.readlink(os.path.join(m2.path, "l", "link")) == "target.txt"
    assert os.readlink(os.path.join(m2.path, "l", "dangling")) == "../nowhere"


def test_make_twice_builds_nothing_and_git_clone_is_clean(moto, s3, bucket, mount, tmp_path):
    m = mount(bucket)
    proj = os.path.join(m.path, "proj")
    os.mkdir(proj)
    with open(os.path.join(proj, "in.txt"), "w") as f:
        f.write("source\n")
    with open(os.path.join(proj, "Makefile"), "w") as f:
        f.write("out.txt: in.txt\n\tcp in.txt out.txt\n")
    first = run(["make", "-C", proj])
    assert first.returncode == 0 and "cp in.txt out.txt" in first.stdout, first.stdout + first.stderr
    second = run(["make", "-C", proj])
    assert second.returncode == 0 and "up to date" in second.stdout, second.stdout
    # A git repository with an executable file, cloned onto the mount.
    repo = tmp_path / "repo"
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e")
    assert run(["git", "init", "-q", str(repo)]).returncode == 0
    (repo / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    os.chmod(repo / "tool.sh", 0o755)
    (repo / "README").write_text("readme\n")
    os.symlink("README", repo / "link")
    assert run(["git", "-C", str(repo), "add", "-A"], env=env).returncode == 0
    assert run(["git", "-C", str(repo), "commit", "-qm", "one"], env=env).returncode == 0
    clone = os.path.join(m.path, "clone")
    out = run(["git", "clone", "-q", str(repo), clone], timeout=300)
    assert out.returncode == 0, out.stderr
    status = run(["git", "-C", clone, "status", "--porcelain"])
    assert status.returncode == 0 and status.stdout == "", status.stdout + status.stderr
    assert os.access(os.path.join(clone, "tool.sh"), os.X_OK)
    assert os.readlink(os.path.join(clone, "link")) == "README"


def test_mknod_of_a_regular_file_and_rename_keep_metadata(moto, s3, bucket, mount):
    m = mount(bucket)
    p = os.path.join(m.path, "node")
    os.mknod(p, stat.S_IFREG | 0o640)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640 and os.path.getsize(p) == 0
    os.mkdir(os.path.join(m.path, "from"))
    os.chmod(p, 0o604)
    os.rename(p, os.path.join(m.path, "from", "moved"))
    os.rename(os.path.join(m.path, "from"), os.path.join(m.path, "to"))
    time.sleep(1.5)
    m.unmount()
    m2 = mount(bucket)
    assert stat.S_IMODE(os.stat(os.path.join(m2.path, "to", "moved")).st_mode) == 0o604
    # rmdir of a directory whose only key left is its index.
    os.remove(os.path.join(m2.path, "to", "moved"))
    os.rmdir(os.path.join(m2.path, "to"))
    time.sleep(1.5)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any(k.startswith("to/") for k in keys), keys


def test_ls_la_of_2500_files_costs_listings_and_a_few_index_reads_no_head(moto, s3, bucket, mount):
    m = mount(bucket)
    d = os.path.join(m.path, "many")
    os.mkdir(d)
    for i in range(2500):
        fd = os.open(os.path.join(d, "f%04d" % i), os.O_CREAT | os.O_WRONLY, 0o600 if i % 2 else 0o640)
        os.close(fd)
    time.sleep(1.5)
    m.unmount()
    m2 = mount(bucket)
    before = m2.requests()
    out = run(["ls", "-la", d.replace(m.path, m2.path)])
    assert out.returncode == 0
    lines = [line for line in out.stdout.splitlines() if " f" in line]
    assert len(lines) == 2500
    assert all(line.startswith("-rw-------") or line.startswith("-rw-r-----") for line in lines)
    assert sum(line.startswith("-rw-------") for line in lines) == 1250
    d2 = delta(before, m2.requests())
    assert d2.get("HeadObject", 0) == 0, d2
    assert d2.get("ListObjectsV2", 0) <= 5 and d2.get("GetObject", 0) <= 2, d2
    print(f"ls -la of 2,500 files with modes on a fresh mount: {d2}")
    stats = m2.stats()["metadata"]
    assert stats["index_gets"] >= 1 and stats["head_requests"] == 0


def test_two_mounts_changing_one_directory_keep_both_changes(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="shared/a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="shared/b", Body=b"b")
    m1 = mount(bucket)
    m2 = mount(bucket)
    os.listdir(os.path.join(m1.path, "shared"))
    os.listdir(os.path.join(m2.path, "shared"))
    os.chmod(os.path.join(m1.path, "shared", "a"), 0o600)
    os.chmod(os.path.join(m2.path, "shared", "b"), 0o700)
    time.sleep(2)
    m1.unmount()
    m2.unmount()
    m3 = mount(bucket)
    assert stat.S_IMODE(os.stat(os.path.join(m3.path, "shared", "a")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(m3.path, "shared", "b")).st_mode) == 0o700


def other_user():
    name = "s3mtest"
    try:
        return pwd.getpwnam(name)
    except KeyError:
        out = run(["useradd", "--no-create-home", "--shell", "/bin/sh", name])
        if out.returncode != 0:
            pytest.skip("cannot add a second user: " + out.stderr)
        return pwd.getpwnam(name)


def test_permissions_are_enforced_for_other_users_with_allow_other(moto, s3, bucket, mount):
    user = other_user()
    m = mount(bucket, "--allow-other")
    secret = os.path.join(m.path, "secret")
    fd = os.open(secret, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"root only")
    os.close(fd)
    shared = os.path.join(m.path, "shared")
    with open(shared, "w") as f:
        f.write("everyone")
    os.chmod(shared, 0o644)
    mine = os.path.join(m.path, "theirs")
    fd = os.open(mine, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chown(mine, user.pw_uid, user.pw_gid)
    as_user = ["runuser", "-u", user.pw_name, "--"]
    denied = run(as_user + ["cat", secret])
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    assert run(as_user + ["cat", shared]).stdout == "everyone"
    assert run(as_user + ["sh", "-c", f"echo x >> {shared}"]).returncode != 0, "0644 is not writable by others"
    wrote = run(as_user + ["sh", "-c", f"echo hers > {mine}"])
    assert wrote.returncode == 0, wrote.stderr
    assert run(as_user + ["chmod", "600", secret]).returncode != 0, "only the owner may chmod"
    pub = os.path.join(m.path, "pub")
    os.mkdir(pub)
    os.chmod(pub, 0o777)
    created = run(as_user + ["sh", "-c", f"umask 022; mkdir {pub}/userdir && touch {pub}/userdir/x"])
    assert created.returncode == 0, created.stderr
    st = os.stat(os.path.join(pub, "userdir", "x"))
    assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)


class S3fs:
    """The real s3fs-fuse (Debian's package) on the same bucket: what one tool writes, the other
    must show the same way."""

    def __init__(self, moto, bucket, tmp_path):
        if shutil.which("s3fs") is None:
            pytest.skip("s3fs is not installed (scripts/setup.sh installs it)")
        self.path = str(tmp_path / "s3fs-mnt")
        os.mkdir(self.path)
        pw = tmp_path / "passwd-s3fs"
        pw.write_text("testing:testing\n")
        os.chmod(pw, 0o600)
        out = run(["s3fs", bucket, self.path, "-o", f"url={moto.endpoint},use_path_request_style,passwd_file={pw},"
                   "stat_cache_expire=1,enable_noobj_cache"])
        assert out.returncode == 0, out.stderr
        deadline = time.time() + 20
        while not os.path.ismount(self.path) and time.time() < deadline:
            time.sleep(0.1)
        assert os.path.ismount(self.path)

    def unmount(self):
        subprocess.run(["umount", self.path], capture_output=True)


@pytest.fixture()
def s3fs_mount(moto, tmp_path):
    made = []

    def make(bucket):
        m = S3fs(moto, bucket, tmp_path)
        made.append(m)
        return m
    yield make
    for m in made:
        m.unmount()


def test_s3fs_shows_what_s3mount_wrote(moto, s3, bucket, mount, s3fs_mount):
    # A bucket shared with s3fs, which reads only headers: --metadata head keeps them current.
    m = mount(bucket, "--metadata", "head")
    os.mkdir(os.path.join(m.path, "w"), 0o750)
    p = os.path.join(m.path, "w", "file")
    with open(p, "w") as f:
        f.write("by s3mount\n")
    os.chmod(p, 0o604)
    os.chown(p, 4242, 4343)
    os.utime(p, ns=(1, 1_600_000_000_123_456_789))
    os.symlink("file", os.path.join(m.path, "w", "link"))
    m.unmount()
    fs = s3fs_mount(bucket)
    st = os.stat(os.path.join(fs.path, "w", "file"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o604, 4242, 4343)
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    assert os.readlink(os.path.join(fs.path, "w", "link")) == "file"
    assert stat.S_IMODE(os.stat(os.path.join(fs.path, "w")).st_mode) == 0o750


def test_s3mount_shows_what_s3fs_wrote_with_metadata_head(moto, s3, bucket, mount, s3fs_mount):
    fs = s3fs_mount(bucket)
    d = os.path.join(fs.path, "from-s3fs")
    os.mkdir(d)
    for i in range(20):
        p = os.path.join(d, f"f{i:02d}")
        with open(p, "w") as f:
            f.write("x" * i)
        os.chmod(p, 0o640 if i % 2 else 0o600)
        os.utime(p, (1_555_555_555, 1_555_555_555 + i))
    os.chown(os.path.join(d, "f03"), 1234, 5678)
    os.symlink("f01", os.path.join(d, "link"))
    fs.unmount()
    # By default the listing's attributes: the index has no entries for them, and nothing is HEADed.
    plain = mount(bucket)
    before = plain.requests()
    assert stat.S_IMODE(os.stat(os.path.join(plain.path, "from-s3fs", "f01")).st_mode) == 0o644
    assert delta(before, plain.requests()).get("HeadObject", 0) == 0
    plain.unmount()
    m = mount(bucket, "--metadata", "head")
    mp = os.path.join(m.path, "from-s3fs")
    before = m.requests()
    pos = moto.log_position()
    names = os.listdir(mp)
    assert sorted(names) == sorted([f"f{i:02d}" for i in range(20)] + ["link"])
    assert delta(before, m.requests()).get("HeadObject", 0) == 0, "listing names sends no HeadObject"
    out = run(["ls", "-l", "--time-style=+%s", mp])
    assert out.returncode == 0, out.stderr
    for i in range(20):
        st = os.stat(os.path.join(mp, f"f{i:02d}"))
        assert stat.S_IMODE(st.st_mode) == (0o640 if i % 2 else 0o600) and st.st_mtime == 1_555_555_555 + i
    st = os.stat(os.path.join(mp, "f03"))
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert os.readlink(os.path.join(mp, "link")) == "f01" and "link -> f01" in out.stdout
    # Once per file, however often it is stat'ed: counted where they arrive (in the chaos run, the
    # mount also counts its attempts that a fault cut off before an answer).
    heads = [r for r in moto.requests_since(pos, bucket) if r[0] == "HeadObject"]
    assert len(heads) == 21, heads
    assert m.stats()["not_found_404"] == 0


def test_error_replies_are_counted_per_operation_and_failures_logged(moto, s3, bucket, mount):
    """Every error the mount answers is counted by FUSE operation and errno; answers programs
    expect (ENOTEMPTY, EPERM for a hard link) stay out of the log."""
    m = mount(bucket)
    os.mkdir(os.path.join(m.path, "d"))
    open(os.path.join(m.path, "d", "f"), "w").close()
    assert run(["rmdir", os.path.join(m.path, "d")]).returncode != 0
    assert run(["rmdir", os.path.join(m.path, "d")]).returncode != 0
    assert run(["ln", os.path.join(m.path, "d", "f"), os.path.join(m.path, "d", "g")]).returncode != 0
    errors = m.stats()["fuse_errors"]
    assert errors["rmdir"] == {"ENOTEMPTY": 2}, errors
    assert errors["link"] == {"EPERM": 1}, errors
    assert "ENOTEMPTY" not in m.log() and "EPERM" not in m.log()
    pools = m.stats()["pools"]
    assert set(pools) >= {"s3m-list", "s3m-upload", "s3m-copy", "s3m-head", "s3m-read"}, pools


def test_s3fs_and_s3mount_read_each_others_fifos_and_device_nodes(moto, s3, bucket, mount, s3fs_mount):
    # (Debian's s3fs 1.90 is built without xattr support: the xattr header's format is checked
    # against what s3fs writes in test_posix_nodes_times_xattrs.py and the unit tests.)
    m = mount(bucket)
    os.mkfifo(os.path.join(m.path, "myfifo"), 0o600)
    os.mknod(os.path.join(m.path, "mydev"), stat.S_IFBLK | 0o600, os.makedev(7, 1))
    m.unmount()
    fs = s3fs_mount(bucket)
    assert stat.S_ISFIFO(os.stat(os.path.join(fs.path, "myfifo")).st_mode)
    st = os.stat(os.path.join(fs.path, "mydev"))
    os.mknod(os.path.join(fs.path, "theirdev"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
    os.mkfifo(os.path.join(fs.path, "theirfifo"))
    fs.unmount()
    # The type, in the mode; Debian's s3fs 1.90 neither writes nor reads x-amz-meta-rdev (0 there).
    assert stat.S_ISBLK(st.st_mode)
    assert s3.head_object(Bucket=bucket, Key="mydev")["Metadata"]["rdev"] == str(os.makedev(7, 1))
    m2 = mount(bucket, "--metadata", "head")
    assert stat.S_ISCHR(os.stat(os.path.join(m2.path, "theirdev")).st_mode)
    assert stat.S_ISFIFO(os.stat(os.path.join(m2.path, "theirfifo")).st_mode)
