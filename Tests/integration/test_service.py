"""Running for real: systemd unit, the notify protocol, fstab mounting, metrics, logs."""
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, CREDS, ROOT, free_port, mounted, run, seed


def env_with_creds(**extra):
    e = dict(os.environ)
    e.update(CREDS)
    e["AWS_EC2_METADATA_DISABLED"] = "true"
    e.update(extra)
    return e


def wait_for(pred, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_unit_verifies(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing: scripts/setup.sh installs it")
    unit = open(os.path.join(ROOT, "systemd", "s3mount@.service")).read().replace("/usr/local/bin/s3mount", BIN)
    path = tmp_path / "s3mount@test.service"
    path.write_text(unit)
    # verify runs `man` for Documentation=man:s3mount(1): the repository's page, as the package installs it.
    (tmp_path / "man" / "man1").mkdir(parents=True)
    os.symlink(os.path.join(ROOT, "docs", "s3mount.1"), tmp_path / "man" / "man1" / "s3mount.1")
    out = run(["systemd-analyze", "verify", str(path)], env=dict(os.environ, MANPATH=str(tmp_path / "man")))
    assert out.returncode == 0, out.stderr
    assert "s3mount@test.service" not in out.stderr, out.stderr
    assert "Type=notify" in unit and "Restart=on-failure" in unit and "After=network-online.target" in unit
    assert "DeviceAllow=/dev/fuse" in unit and "ExecStop=/bin/fusermount3 -u" in unit


def test_notify_ready_and_stopping(moto, s3, bucket, tmp_path):
    seed(s3, bucket, ["a.txt"])
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    mp = str(tmp_path / "mnt")
    os.mkdir(mp)
    p = subprocess.Popen([BIN, "-f", bucket, mp, "--endpoint-url", moto.endpoint, "--force-path-style"],
                         env=env_with_creds(NOTIFY_SOCKET=sock_path), stderr=subprocess.PIPE, text=True)
    try:
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg and f"MAINPID={p.pid}" in msg
        assert mounted(mp), "READY is sent once the mount is usable"
        assert os.listdir(mp) == ["a.txt"]
        p.send_signal(signal.SIGTERM)
        msg = sock.recv(4096).decode()
        assert "STOPPING=1" in msg
        p.wait(30)
        assert p.returncode == 0 and not mounted(mp)
    finally:
        if p.poll() is None:
            p.kill()
        sock.close()


@pytest.fixture()
def installed_binary():
    """mount(8) runs helpers with a fixed PATH and environment, as at boot: the binary must be
    where scripts/install.sh puts it."""
    installed = "/usr/local/bin/s3mount"
    made_link = False
    if not os.path.lexists(installed):
        os.symlink(BIN, installed)
        made_link = True
    elif os.path.realpath(installed) != os.path.realpath(BIN):
        pytest.skip("another s3mount is installed in /usr/local/bin")
    yield installed
    if made_link:
        os.unlink(installed)


def test_fstab_mount_through_mount_fuse3(moto, s3, bucket, tmp_path, installed_binary):
    seed(s3, bucket, ["team/doc.txt", "other.txt"])
    # Credentials come from a file named in the options: mount(8) passes no environment.
    creds = tmp_path / "creds"
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    os.chmod(creds, 0o600)
    mp = tmp_path / "fstab-mnt"
    mp.mkdir()
    log = tmp_path / "fstab.log"
    opts = (f"_netdev,nofail,x-systemd.automount,uid=1000,gid=1000,endpoint_url={moto.endpoint},force_path_style,"
            f"credentials_file={creds},log_file={log}")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "AWS_EC2_METADATA_DISABLED": "true"}
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{bucket}:team {mp} fuse.s3mount {opts} 0 0\n")
    out = subprocess.run(["mount", "-a", "-T", str(fstab)], env=env, capture_output=True, text=True, timeout=60)
    try:
        assert out.returncode == 0, out.stderr
        assert mounted(str(mp))
        assert os.listdir(mp) == ["doc.txt"]
        st = os.stat(mp / "doc.txt")
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        fstype = [l.split()[2] for l in open("/proc/mounts") if l.split()[1] == str(mp)]
        assert fstype == ["fuse.s3mount"]
    finally:
        run(["umount", str(mp)])
    assert not mounted(str(mp))
    # The same through mount -t, with -o.
    out = subprocess.run(["mount", "-t", "fuse.s3mount", bucket, str(mp), "-o",
                          f"ro,endpoint_url={moto.endpoint},force_path_style,credentials_file={creds}"],
                         env=env, capture_output=True, text=True, timeout=60)
    try:
        assert out.returncode == 0, out.stderr
        assert sorted(os.listdir(mp)) == ["other.txt", "team"]
        assert "Read-only" in run(f"touch {mp}/x").stderr
    finally:
        run(["umount", str(mp)])


def test_secret_files_must_be_private(moto, s3, bucket, tmp_path):
    envfile = tmp_path / "demo.env"
    envfile.write_text("AWS_ACCESS_KEY_ID=x\n")
    os.chmod(envfile, 0o644)
    mp = tmp_path / "m"
    mp.mkdir()
    base = [BIN, bucket, str(mp), "--endpoint-url", moto.endpoint, "--force-path-style"]
    out = run(base, env=env_with_creds(S3MOUNT_ENV_FILE=str(envfile)))
    assert out.returncode == 1 and "can be read by others" in out.stderr and "chmod 600" in out.stderr
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = fromfile\naws_secret_access_key = s3cr3t-from-file\n")
    moto.allow_key("fromfile", "s3cr3t-from-file")  # RGW checks keys: the same user's second key there
    os.chmod(creds, 0o640)
    out = run(base + ["--credentials-file", str(creds)], env=env_with_creds(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY=""))
    assert out.returncode == 1 and "credentials file" in out.stderr and "can be read by others" in out.stderr
    os.chmod(creds, 0o600)
    os.chmod(envfile, 0o600)
    log = tmp_path / "log"
    out = run(base + ["--credentials-file", str(creds), "--log-file", str(log), "--debug"],
              env=env_with_creds(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="", S3MOUNT_ENV_FILE=str(envfile)))
    try:
        assert out.returncode == 0, out.stderr
        os.listdir(mp)
        text = log.read_text()
        assert "credentials: profile default" in text
        assert "s3cr3t-from-file" not in text
    finally:
        run(["fusermount3", "-u", str(mp)])


def test_metrics_sigusr1_and_debug_log(moto, s3, bucket, mount, tmp_path):
    seed(s3, bucket, ["d/a.txt", "d/b.txt"])
    port = free_port()
    m = mount(bucket, "--metrics-address", f"127.0.0.1:{port}", "--debug")
    run(f"ls -la {m.path}/d; stat {m.path}/d/missing; cat {m.path}/d/a.txt")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 's3mount_requests_total{operation="ListObjectsV2",outcome="ok"}' in text
    assert 's3mount_requests_total{operation="GetObject",outcome="ok"} 1' in text
    assert "s3mount_requests_avoided_total" in text and 's3mount_cache_hits_total{cache="negative"}' in text
    os.kill(m.daemon_pid(), signal.SIGUSR1)
    assert wait_for(lambda: "stats: requests" in m.log())
    log = m.log()
    assert "fuse lookup" in log and "s3 ListObjectsV2" in log and "s3 GetObject key=d/a.txt status=" in log
    assert "fuse read ino=" in log and "bytes at 0" in log, "a successful read is traced too"
    # Every operation is traced with --debug, successes too: a mkdir, a write, an fsync, an rmdir.
    run(f"mkdir {m.path}/made && dd if=/dev/zero of={m.path}/made/f bs=1k count=3 conv=fsync status=none && rm {m.path}/made/f && rmdir {m.path}/made")
    assert wait_for(lambda: "fuse rmdir" in m.log())
    log = m.log()
    for line in ("fuse mkdir ino=1 name=made -> ok", "fuse write ino=", "ok, 1024 bytes at 2048", "fuse fsync ino=", "fuse release ino=",
                 "fuse unlink ino=", "fuse rmdir ino=1 name=made -> ok"):
        assert line in log, (line, log[-3000:])
    assert CREDS["AWS_SECRET_ACCESS_KEY"] + "\n" not in log and "Signature=" not in log
    assert mounted(m.path), "SIGUSR1 does not stop the daemon"
    (tmp_path / "bad").mkdir()
    bad = run([BIN, bucket, str(tmp_path / "bad"), "--endpoint-url", moto.endpoint, "--force-path-style",
               "--metrics-address", "nonsense"], env=env_with_creds())
    assert bad.returncode == 1 and "--metrics-address" in bad.stderr
