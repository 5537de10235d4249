"""The command: clear one-line errors with exit codes, nothing left mounted, clean unmounts."""
import os
import re
import signal
import subprocess
import tempfile
import time

import boto3
import pytest

from conftest import BIN, CREDS, ROOT, STORE, Moto, mounted, run, seed


# Mount points try_mount made, removed after each test (once its assertions about them are done).
made_mountpoints = []


@pytest.fixture(autouse=True)
def remove_made_mountpoints():
    yield
    while made_mountpoints:
        mp = made_mountpoints.pop()
        if mounted(mp):
            subprocess.run(["fusermount3", "-u", mp], capture_output=True)
        try:
            os.rmdir(mp)
        except OSError:
            pass


def try_mount(args, env=None, mountpoint=None):
    mp = mountpoint
    if mp is None:
        mp = tempfile.mkdtemp(prefix="s3m-bad-")
        made_mountpoints.append(mp)
    e = dict(os.environ)
    e.update(CREDS)
    e["AWS_EC2_METADATA_DISABLED"] = "true"
    e.update(env or {})
    t0 = time.time()
    out = subprocess.run([BIN, *args[:1], mp, *args[1:]] if mountpoint is None else [BIN, *args],
                         env=e, capture_output=True, text=True, timeout=120)
    return out, mp, time.time() - t0


def assert_failed_cleanly(out, mp, code, *phrases):
    assert out.returncode == code, (out.returncode, out.stderr)
    err = out.stderr.strip()
    for p in phrases:
        assert p in err, err
    assert err.startswith("s3mount: ")
    assert not mounted(mp), "nothing may be left mounted"


def test_no_such_bucket(moto):
    out, mp, _ = try_mount(["no-such-bucket-here", "--endpoint-url", moto.endpoint, "--force-path-style"])
    assert_failed_cleanly(out, mp, 1, "bucket \"no-such-bucket-here\" does not exist")


def test_unreachable_endpoint(moto):
    from conftest import free_port
    port = free_port()
    out, mp, secs = try_mount(["some-bucket", "--endpoint-url", f"http://127.0.0.1:{port}", "--force-path-style"])
    assert_failed_cleanly(out, mp, 1, "cannot reach http://127.0.0.1:")
    assert secs < 30


def test_missing_credentials(moto, tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "HOME": str(tmp_path),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    out, mp, _ = try_mount(["some-bucket", "--endpoint-url", moto.endpoint, "--force-path-style"], env=env)
    assert_failed_cleanly(out, mp, 1, "no credentials found")


def test_unknown_profile(moto, tmp_path):
    env = {"HOME": str(tmp_path), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    out, mp, _ = try_mount(["some-bucket", "--endpoint-url", moto.endpoint, "--force-path-style", "--profile", "nope"], env=env)
    assert_failed_cleanly(out, mp, 1, "profile 'nope' not found")


def test_bad_mountpoints(moto, s3, bucket, mount, tmp_path):
    missing = str(tmp_path / "missing")
    out, _, _ = try_mount([bucket, missing, "--endpoint-url", moto.endpoint, "--force-path-style"], mountpoint=missing)
    assert out.returncode == 1 and f"mount point {missing} does not exist" in out.stderr
    f = tmp_path / "file"
    f.write_text("x")
    out, _, _ = try_mount([bucket, str(f), "--endpoint-url", moto.endpoint, "--force-path-style"], mountpoint=str(f))
    assert out.returncode == 1 and "is not a directory" in out.stderr
    m = mount(bucket)
    out, _, _ = try_mount([bucket, m.path, "--endpoint-url", moto.endpoint, "--force-path-style"], mountpoint=m.path)
    assert out.returncode == 1 and "already a mount point" in out.stderr
    assert os.listdir(m.path) == [], "the first mount still works"


@pytest.mark.parametrize("args,phrase", [
    (["--uid", "abc"], "--uid expects a number"),
    (["--file-mode", "999"], "expects octal permission bits"),
    (["--metadata-ttl", "soon"], "--metadata-ttl expects seconds"),
    (["--frobnicate"], "unknown option --frobnicate"),
    (["-o", "bogus_opt"], "unknown mount option \"bogus_opt\""),
    (["--endpoint-url", "ftp://x"], "invalid endpoint URL"),
    (["--region"], "option --region needs a value"),
])
def test_bad_options(moto, args, phrase):
    out, mp, _ = try_mount(["b-bucket", *args])
    assert_failed_cleanly(out, mp, 2, phrase)


@pytest.mark.parametrize("opts,phrase", [
    ("file_mode=999", "file_mode expects octal permission bits"),
    ("uid", "option uid needs a value (uid=...)"),
    ("endpoint_url=", "option endpoint_url needs a value"),
    ("read_part_size=1G", "read_part_size expects a size like 512M or 5G"),
    ("metadata=all", "--metadata expects one of index, head, none"),
    # mount(8)'s generic options (and x-*, comment=) are ignored; the options after them still count.
    ("rw,defaults,user,nofail,noauto,_netdev,x-systemd.automount,x-systemd.mount-timeout=30,comment=x,nosuid,nodev,"
     "allow_other,use_path_request_style,url=ftp://x", "invalid endpoint URL ftp://x"),
])
def test_bad_fstab_options(opts, phrase):
    # -o translated into the same options: its errors are the options', named as in fstab.
    for args in (["b-bucket", "/tmp", "-o", opts], ["b-bucket", "/tmp", "-o" + opts]):
        out = run([BIN, *args])
        assert out.returncode == 2 and out.stderr.startswith("s3mount: ") and phrase in out.stderr, out.stderr


def test_usage_help_and_stats_usage():
    out = run([BIN])
    assert out.returncode == 2 and "USAGE: s3mount" in out.stdout
    for args in (["--help"], ["-h"], ["b-bucket", "/tmp", "--read-only", "--help"]):
        out = run([BIN, *args])
        assert out.returncode == 0 and "--endpoint-url <URL>" in out.stdout and "-o <OPT[,OPT...]>" in out.stdout, args
    out = run([BIN, "stats", "--help"])
    assert out.returncode == 0 and "USAGE: s3mount stats <mountpoint>" in out.stdout
    out = run([BIN, "stats"])
    assert out.returncode == 2 and "usage: s3mount stats MOUNTPOINT" in out.stderr
    out = run([BIN, "b-bucket"])
    assert out.returncode == 2 and "expected BUCKET[:PREFIX] and MOUNTPOINT" in out.stderr
    out = run([BIN, "b-bucket", "/tmp", "extra"])
    assert out.returncode == 2 and "unexpected argument extra" in out.stderr


def test_bad_bucket_name():
    out = run([BIN, "a/b", "/tmp"])
    assert out.returncode == 2 and "invalid bucket name" in out.stderr


def test_version_names_the_release_and_the_commit():
    out = run([BIN, "--version"])
    assert out.returncode == 0 and out.stderr == "", out.stderr
    # A plain `swift build` records no commit; scripts/build-release.sh does (the package's build).
    assert re.fullmatch(r"s3mount \d+\.\d+\.\d+ \((commit [0-9a-f]{12}(-dirty)?|development build, commit not recorded)\)\n",
                        out.stdout), out.stdout


def test_stats_of_something_else_is_a_clear_error(tmp_path):
    out = run([BIN, "stats", str(tmp_path)])
    assert out.returncode == 1 and "is not an s3mount mount" in out.stderr, out.stderr
    out = run([BIN, "stats", str(tmp_path / "missing")])
    assert out.returncode == 1 and "No such file or directory" in out.stderr, out.stderr


def test_signals_and_fusermount_unmount_cleanly(moto, s3, bucket, mount):
    seed(s3, bucket, ["a.txt"])
    for how in ("TERM", "INT", "fusermount"):
        m = mount(bucket)
        assert os.listdir(m.path) == ["a.txt"]
        pid = m.daemon_pid()
        assert pid, "daemon runs in the background"
        if how == "fusermount":
            assert run(["fusermount3", "-u", m.path]).returncode == 0
        else:
            os.kill(pid, getattr(signal, "SIG" + how))
        deadline = time.time() + 10
        while (mounted(m.path) or os.path.exists(f"/proc/{pid}")) and time.time() < deadline:
            time.sleep(0.1)
        assert not mounted(m.path), how
        assert not os.path.exists(f"/proc/{pid}"), f"daemon exited after {how}"
        assert "unmounted" in m.log()


def test_foreground_mode_logs_to_stderr(moto, s3, bucket, tmp_path):
    seed(s3, bucket, ["a.txt"])
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    env = dict(os.environ, **CREDS)
    p = subprocess.Popen([BIN, "-f", "--debug", bucket, mp, "--endpoint-url", moto.endpoint, "--force-path-style"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not mounted(mp) and time.time() < deadline:
        time.sleep(0.1)
    assert mounted(mp)
    assert os.listdir(mp) == ["a.txt"]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0
    assert "mounted " in err and "s3 ListObjectsV2" in err
    assert "testing" not in err.replace("AWS_", ""), "no secret in the log"
    assert not mounted(mp)


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory, store):
    """A store with a bucket "locked" that a second user's key may not read: on moto a second moto
    that enforces IAM after its first three actions (bucket, user, key); on RGW a second user of
    the same cluster (RGW always checks who owns a bucket, and every signature)."""
    if STORE == "rgw":
        store.client().create_bucket(Bucket="locked")
        access, secret = store.add_user("nobody")
        yield store, {"AccessKeyId": access, "SecretAccessKey": secret}
        return
    m = Moto(tmp_path_factory.mktemp("auth-moto"), extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    s3 = m.client()
    s3.create_bucket(Bucket="locked")
    iam = boto3.client("iam", endpoint_url=m.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    yield m, key
    m.stop()


def test_denied_bucket_and_rejected_credentials(auth_moto):
    m, key = auth_moto
    args = ["locked", "--endpoint-url", m.endpoint, "--force-path-style"]
    env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    out, mp, _ = try_mount(args, env=env)
    assert_failed_cleanly(out, mp, 1, "access denied to bucket \"locked\"")
    out, mp, _ = try_mount(args, env={"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000", "AWS_SECRET_ACCESS_KEY": "x"})
    assert_failed_cleanly(out, mp, 1, "credentials rejected", "InvalidAccessKeyId")
    out, mp, _ = try_mount(args, env={"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    assert_failed_cleanly(out, mp, 1, "credentials rejected", "SignatureDoesNotMatch")
    assert key["SecretAccessKey"] not in out.stderr


def test_install_keeps_updatedb_out_of_mounted_buckets(tmp_path):
    conf = tmp_path / "updatedb.conf"
    conf.write_text('PRUNE_BIND_MOUNTS="yes"\nPRUNEFS="NFS afs proc sysfs tmpfs"\nPRUNEPATHS="/tmp"\n')
    env = dict(os.environ, UPDATEDB_CONF=str(conf))
    for _ in range(2):  # a second install changes nothing
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "prunefs.sh"), "add"], env=env, check=True, capture_output=True)
    lines = conf.read_text().splitlines()
    assert lines[1] == 'PRUNEFS="fuse.s3mount NFS afs proc sysfs tmpfs"', lines
    assert len(lines) == 3
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "prunefs.sh"), "remove"], env=env, check=True)
    assert conf.read_text().splitlines()[1] == 'PRUNEFS="NFS afs proc sysfs tmpfs"'
