"""A mount that serves every user of a host (docs/SECURITY.md): what a local user, a file planted
in a shared folder, a bucket writer or a lying endpoint can do, tried for real. Each is refused,
bounded or harmless, and the daemon lives on for everyone else."""
import errno
import os
import re
import shutil
import stat
import subprocess
import time

import pytest

from conftest import BIN, CREDS, ROOT, mounted, run, seed

import sys
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from s3proxy import ForwardingProxy  # noqa: E402

NOBODY = 65534


def alive_and_serving(m, name="probe.txt"):
    """The daemon still answers, for anyone: a new file written and read back."""
    path = os.path.join(m.path, name)
    with open(path, "w") as f:
        f.write("still here\n")
    return open(path).read() == "still here\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_a_huge_truncate_or_pwrite_is_efbig_and_the_daemon_lives(moto, s3, bucket, mount):
    m = mount(bucket)
    f = os.path.join(m.path, "f")
    out = run(["truncate", "-s", "9223372036854775807", f])
    assert out.returncode != 0 and "File too large" in out.stderr, out
    # A file with a multipart upload under way (parts already sent), then a write far past S3's
    # 5 TiB: refused, and the file's bytes are intact.
    big = os.path.join(m.path, "big.bin")
    data = os.urandom(24 << 20)
    fd = os.open(big, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        for offset in (1 << 62, (5 << 40) + 1):
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x", offset)
            assert e.value.errno == errno.EFBIG, (offset, e.value)
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, 1 << 62)
        assert e.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert m.daemon_pid() is not None, "the daemon is alive"
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    assert alive_and_serving(m)


@pytest.mark.moto_only("the proxy rewrites moto's listing; the parser is the same for every store")
def test_a_listing_that_claims_an_impossible_size_skips_that_entry(moto, s3, bucket, mount):
    seed(s3, bucket, ["d/huge.bin", "d/fine.txt"])

    def lie(method, path, body):
        if method == "GET" and "list-type=2" in path:
            return re.sub(rb"(<Key>d/huge\.bin</Key>.*?<Size>)\d+(</Size>)", rb"\g<1>9223372036854775807\g<2>", body, flags=re.S)
        return body
    proxy = ForwardingProxy(moto.port, rewrite=lie)
    try:
        m = mount(bucket, "--endpoint-url", proxy.endpoint)
        out = run(["ls", "-l", os.path.join(m.path, "d")])
        assert out.returncode == 0, out.stderr
        assert "fine.txt" in out.stdout and "huge.bin" not in out.stdout
        assert not os.path.exists(os.path.join(m.path, "d", "huge.bin"))
        assert "no readable size" in m.log()
        assert m.daemon_pid() is not None
        assert alive_and_serving(m)
    finally:
        proxy.stop()


def test_a_fifo_and_a_sparse_journal_planted_in_the_spool_neither_hang_nor_fill_memory(moto, bucket, mount, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    os.mkfifo(spool / "s3mount-spool-x")
    os.mkfifo(spool / "s3mount-uploads-7.journal")
    with open(spool / "s3mount-uploads-8.journal", "wb") as f:
        f.truncate(1 << 40)  # a terabyte on paper
    start = time.time()
    m = mount(bucket, "--spool-dir", str(spool))
    assert time.time() - start < 20, "the mount came up in its usual time"
    time.sleep(1)  # the record of earlier runs is read in the background
    assert rss_kib(m.daemon_pid()) < 300 << 10, "nothing read the terabyte"
    assert "s3mount-uploads-8.journal: larger than any record" in m.log()
    assert alive_and_serving(m)


def test_the_default_spool_is_a_private_folder_and_one_planted_first_is_refused(moto, bucket, mount, tmp_path):
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # as /var/tmp is
    m = mount(bucket, env={"TMPDIR": str(shared)})
    own = shared / f"s3mount-{os.geteuid()}"
    st = os.lstat(own)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    assert alive_and_serving(m)
    m.unmount()
    # Another user got there first (with a FIFO inside, or anything): the mount says so and stops.
    shutil.rmtree(own)
    os.mkdir(own)
    os.mkfifo(own / "s3mount-spool-x")
    os.chown(own, NOBODY, NOBODY)
    with pytest.raises(RuntimeError) as e:
        mount(bucket, env={"TMPDIR": str(shared)})
    assert f"belongs to uid {NOBODY}" in str(e.value) and "--spool-dir" in str(e.value), e.value
    # A spool folder others can write is refused, even with the sticky bit.
    with pytest.raises(RuntimeError) as e:
        mount(bucket, "--spool-dir", str(shared))
    assert "can be written by other users" in str(e.value), e.value


def test_a_cache_folder_of_another_user_is_refused_and_one_cache_serves_one_mount(moto, s3, bucket, mount, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(RuntimeError) as e:
        mount(bucket, "--cache", str(theirs))
    assert f"belongs to uid {NOBODY}" in str(e.value), e.value
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    with pytest.raises(RuntimeError) as e:
        mount(bucket, "--cache", str(open_to_all))
    assert "can be written by other users" in str(e.value), e.value
    seed(s3, bucket, ["a.txt"], body=b"cached bytes")
    cache = tmp_path / "cache"
    first = mount(bucket, "--cache", str(cache))
    assert open(os.path.join(first.path, "a.txt"), "rb").read() == b"cached bytes"
    with pytest.raises(RuntimeError) as e:
        mount(bucket, "--cache", str(cache))
    assert "in use by another running mount" in str(e.value), e.value
    first.unmount()
    again = mount(bucket, "--cache", str(cache))
    assert open(os.path.join(again.path, "a.txt"), "rb").read() == b"cached bytes"


def mount_flags(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                return set(fields[5].split(","))
    return set()


def test_a_setuid_root_program_written_to_the_bucket_runs_with_its_users_rights(moto, s3, bucket, mount):
    idbin = shutil.which("id")
    s3.put_object(Bucket=bucket, Key="bin/id", Body=open(idbin, "rb").read(),
                  Metadata={"mode": str(stat.S_IFREG | stat.S_ISUID | 0o755), "uid": "0", "gid": "0"})
    m = mount(bucket, "--allow-other", "--metadata", "head")
    tool = os.path.join(m.path, "bin", "id")
    assert os.stat(tool).st_mode & stat.S_ISUID, "the mode shows as stored"
    assert {"nosuid", "nodev"} <= mount_flags(m.path)
    out = run(["runuser", "-u", "nobody", "--", tool, "-u"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(NOBODY), "setuid did not take effect"
    m.unmount()
    # The admin pins owners and caps modes: the bucket's setuid and owner no longer show.
    pinned = mount(bucket, "--allow-other", "--metadata", "head", "--umask", "7022", "--force-owner", "--uid", "0", "--gid", "0", "--no-exec")
    st = os.stat(os.path.join(pinned.path, "bin", "id"))
    assert stat.S_IMODE(st.st_mode) == 0o755 and (st.st_uid, st.st_gid) == (0, 0)
    assert "noexec" in mount_flags(pinned.path)
    with pytest.raises(PermissionError):
        run([os.path.join(pinned.path, "bin", "id")])


def test_fstab_mount_flags_reach_the_kernel(moto, s3, bucket, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = dict(os.environ, **CREDS, AWS_EC2_METADATA_DISABLED="true", TMPDIR=str(tmp_path))
    opts = f"endpoint_url={moto.endpoint},force_path_style,noexec,suid,nosuid,log_file={tmp_path}/log"
    out = subprocess.run([BIN, bucket, str(mp), "-o", opts], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        flags = mount_flags(str(mp))
        assert {"noexec", "nosuid", "nodev"} <= flags, flags
    finally:
        subprocess.run(["fusermount3", "-u", str(mp)])
        deadline = time.time() + 10
        while mounted(str(mp)) and time.time() < deadline:
            time.sleep(0.1)


def test_an_index_in_a_format_it_cannot_read_is_left_alone(moto, s3, bucket, mount):
    seed(s3, bucket, ["d/f.txt"])
    foreign = b"s3mount-meta 9\nf.txt\tsomething newer\n"
    s3.put_object(Bucket=bucket, Key="d/.s3mount-meta", Body=foreign)
    m = mount(bucket)
    f = os.path.join(m.path, "d", "f.txt")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o644
    with pytest.raises(OSError) as e:
        os.chmod(f, 0o600)
    assert e.value.errno == errno.EROFS
    m.unmount()
    assert s3.get_object(Bucket=bucket, Key="d/.s3mount-meta")["Body"].read() == foreign
    assert "is not in a format this version of s3mount reads" in m.log()
