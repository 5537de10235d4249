#!/usr/bin/env python3
"""A throwaway single-node Ceph cluster serving S3 through the RADOS Gateway, for the tests, the
benchmark and the demo: one monitor, one OSD on `memstore` (objects in RAM) and RGW's beast
frontend, all on free loopback ports, all under one folder, started directly (no systemd) and
stopped by the PIDs this code started.

    python3 scripts/rgwcluster.py start DIR [--port N] [--memstore-gib G] [--access-key K --secret-key S]
                                            # prints JSON (endpoint, PIDs, log), leaves it running
    python3 scripts/rgwcluster.py stop DIR                                  # stops what `start` started

From Python: `c = RgwCluster(DIR); c.start(); ... c.stop()`. RGW writes one access line per
request to `c.rgw_log` in the form `"GET /bucket?list-type=2 HTTP/1.1" 200 ...` (beast's access
log at `debug rgw = 1`), which scripts/s3log.py reads as it reads moto's.
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
USER = "s3mount"
# The one key of RGW's testing KMS: --sse aws:kms --sse-kms-key-id s3mount-test-key (a test key, no secret)
KMS_TEST_KEY_ID = "s3mount-test-key"
KMS_TEST_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
# The storage class the zone gets beside STANDARD (kept in the same pool: only the name matters to the tests)
EXTRA_STORAGE_CLASS = "STANDARD_IA"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_binaries():
    return [b for b in ("ceph-mon", "ceph-osd", "radosgw", "ceph", "ceph-authtool", "monmaptool", "radosgw-admin")
            if shutil.which(b) is None]


def _parent_death_signal():
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RgwCluster:
    def __init__(self, workdir, port=None, memstore_gib=4, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                 die_with_parent=False):
        """`die_with_parent`: the daemons get SIGTERM when the process that started them dies (the
        tests: nothing outlives a killed pytest); off for `start`, which leaves them running."""
        self.die_with_parent = die_with_parent
        self.dir = os.path.abspath(str(workdir))
        self.port = port or free_port()
        self.mon_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key, self.secret_key = access_key, secret_key
        self.memstore_bytes = int(memstore_gib * (1 << 30))
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.rgw_log = os.path.join(self.dir, "log", "client.rgw.log")
        self.procs = {}  # name -> Popen, only what this object started
        self._atexit = False

    # -- setup ---------------------------------------------------------------------------------
    def _run(self, *cmd, timeout=60):
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
        return r.stdout

    def _ceph(self, *args, timeout=60):
        return self._run("ceph", "-c", self.conf, "--connect-timeout", "20", *args, timeout=timeout)

    def _write_conf(self):
        d = self.dir
        fsid = str(uuid.uuid4())
        self.fsid = fsid
        text = f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{self.mon_port}
mon initial members = a
# msgr2 only, on loopback
ms bind msgr1 = false
ms bind ipv4 = true
ms bind ipv6 = false
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
log to stderr = false
err to stderr = false
crash dir = {d}/crash
mon data = {d}/mon/$id
osd data = {d}/osd/$id
# one OSD, objects in RAM
osd objectstore = memstore
memstore device bytes = {self.memstore_bytes}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
auth allow insecure global id reclaim = false

[mon]
mon cluster log file = {d}/log/cluster.log

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{self.port} tcp_nodelay=1
rgw dns name = 127.0.0.1
rgw thread pool size = 64
# beast's access line per request ("GET /b/k HTTP/1.1" 200 ...), read like moto's log
debug rgw = 1
debug ms = 0
rgw enable usage log = false
rgw keystone api version = 3
# SSE-C and SSE-KMS over loopback HTTP (RGW refuses customer keys without TLS otherwise), with
# KMS keys from this list (RGW's "testing" KMS, which needs no Vault or Barbican)
rgw crypt require ssl = false
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = {KMS_TEST_KEY_ID}={KMS_TEST_KEY}
# Bucket notification topics whose AMQP endpoint holds a password are refused over plain HTTP; a
# request that says it came through a TLS proxy (X-Forwarded-Proto: https) is taken as secure, as
# behind a real one (scripts/notifications-setup-rgw.sh, test_notifications_amqp.py)
rgw trust forwarded https = true
"""
        with open(self.conf, "w") as f:
            f.write(text)

    def _spawn(self, name, cmd):
        log = open(os.path.join(self.dir, "log", f"{name}.stdout"), "w")
        # Its own session: the caller's Ctrl-C is ours to handle (stop() ends it), and the daemon
        # does not fork away: -f keeps it in the foreground, so the PID is the daemon's.
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=_parent_death_signal if self.die_with_parent else None)
        log.close()
        self.procs[name] = p
        with open(os.path.join(self.dir, "pids"), "a") as f:
            f.write(f"{name} {p.pid}\n")
        return p

    def start(self, timeout=90):
        """Makes the cluster and waits until RGW answers S3 with the user's keys. Raises on failure,
        having stopped whatever it had started."""
        if missing_binaries():
            raise RuntimeError("Ceph is not installed (missing " + ", ".join(missing_binaries()) + "): run scripts/setup.sh")
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        t0 = time.time()
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = round(time.time() - t0, 2)
        return self

    def _start(self, timeout):
        d = self.dir
        for sub in ("run", "log", "crash", "mon/a", "osd/0"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self._write_conf()
        kr, monkr = os.path.join(d, "keyring"), os.path.join(d, "mon.keyring")
        self._run("ceph-authtool", "--create-keyring", monkr, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
        self._run("ceph-authtool", "--create-keyring", kr, "--gen-key", "-n", "client.admin",
                  "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *", "--cap", "mds", "allow *")
        self._run("ceph-authtool", kr, "--gen-key", "-n", "osd.0",
                  "--cap", "mon", "allow profile osd", "--cap", "osd", "allow *", "--cap", "mgr", "allow profile osd")
        self._run("ceph-authtool", kr, "--gen-key", "-n", "client.rgw",
                  "--cap", "mon", "allow rw", "--cap", "osd", "allow rwx", "--cap", "mgr", "allow rw")
        self._run("ceph-authtool", monkr, "--import-keyring", kr)
        monmap = os.path.join(d, "monmap")
        self._run("monmaptool", "--create", "--fsid", self.fsid, "--addv", "a", f"[v2:127.0.0.1:{self.mon_port}]", monmap)
        self._run("ceph-mon", "-c", self.conf, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", monkr)
        self._spawn("mon.a", ["ceph-mon", "-f", "-c", self.conf, "-i", "a"])
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise RuntimeError(f"ceph osd new gave id {osd_id!r}")
        with open(os.path.join(d, "osd", "0", "keyring"), "w") as f:
            f.write(f"[osd.0]\n\tkey = {self._run('ceph-authtool', kr, '-p', '-n', 'osd.0').strip()}\n")
        self._run("ceph-osd", "-c", self.conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid,
                  "--keyring", os.path.join(d, "osd", "0", "keyring"))
        self._spawn("osd.0", ["ceph-osd", "-f", "-c", self.conf, "-i", "0",
                              "--keyring", os.path.join(d, "osd", "0", "keyring")])
        self._spawn("client.rgw", ["radosgw", "-f", "-c", self.conf, "-n", "client.rgw"])
        self._wait_for_rgw(timeout)
        # A second storage class (RGW knows STANDARD only): its zone placement is read when RGW
        # starts, so RGW is started again once the default zone exists.
        admin = ("radosgw-admin", "-c", self.conf, "-n", "client.admin")
        self._run(*admin, "zonegroup", "placement", "add", "--rgw-zonegroup", "default", "--placement-id", "default-placement",
                  "--storage-class", EXTRA_STORAGE_CLASS)
        self._run(*admin, "zone", "placement", "add", "--rgw-zone", "default", "--placement-id", "default-placement",
                  "--storage-class", EXTRA_STORAGE_CLASS, "--data-pool", "default.rgw.buckets.data")
        rgw = self.procs.pop("client.rgw")
        rgw.terminate()
        rgw.wait(30)
        self._spawn("client.rgw", ["radosgw", "-f", "-c", self.conf, "-n", "client.rgw"])
        self._wait_for_rgw(timeout)
        self._run("radosgw-admin", "-c", self.conf, "-n", "client.admin", "user", "create", f"--uid={USER}",
                  "--display-name=s3mount tests", f"--access-key={self.access_key}", f"--secret={self.secret_key}",
                  "--max-buckets=100000")

    def _wait_for_rgw(self, timeout):
        """Until RGW answers S3 on its port (raises if a daemon exited or `timeout` passed)."""
        d = self.dir
        deadline = time.time() + timeout
        while True:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited at start: see {d}/log/")
            try:
                with urllib.request.urlopen(self.endpoint, timeout=2) as r:
                    r.read()
                break
            except urllib.error.HTTPError:
                break  # an S3 error (AccessDenied to an anonymous listing) is an answer
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"RGW did not answer on {self.endpoint} within {timeout} s: see {d}/log/")
            time.sleep(0.1)

    # -- use -----------------------------------------------------------------------------------
    def describe(self):
        return {"endpoint": self.endpoint, "port": self.port, "dir": self.dir, "access_key": self.access_key,
                "secret_key": self.secret_key, "rgw_log": self.rgw_log,
                "pids": {n: p.pid for n, p in self.procs.items()}}

    def add_user(self, uid):
        """Another S3 user: (access key, secret key)."""
        out = json.loads(self._run("radosgw-admin", "-c", self.conf, "-n", "client.admin", "user", "create",
                                   f"--uid={uid}", f"--display-name={uid}"))
        k = out["keys"][0]
        return k["access_key"], k["secret_key"]

    def add_key(self, access_key, secret_key):
        """Another key pair for the S3 user (the same owner of the same buckets)."""
        self._run("radosgw-admin", "-c", self.conf, "-n", "client.admin", "key", "create", f"--uid={USER}",
                  "--key-type=s3", f"--access-key={access_key}", f"--secret={secret_key}")

    def stop(self):
        """Stops the daemons this object started (RGW first), by PID: SIGTERM, then SIGKILL."""
        for name in ("client.rgw", "osd.0", "mon.a"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()


def stop_dir(d):
    """Stops the daemons a `start` of this script recorded in DIR/pids, checking that each PID is
    still that daemon (its command line names DIR's ceph.conf)."""
    pids = os.path.join(d, "pids")
    if not os.path.exists(pids):
        return []
    stopped = []
    conf = os.path.join(os.path.abspath(d), "ceph.conf")
    entries = [line.split() for line in open(pids) if line.strip()]
    for name, pid in reversed(entries):
        pid = int(pid)
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if conf.encode() not in cmdline:
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            try:
                if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        stopped.append((name, pid))
    os.remove(pids)
    return stopped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("dir")
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--memstore-gib", type=float, default=4)
    s.add_argument("--access-key", default=ACCESS_KEY)
    s.add_argument("--secret-key", default=SECRET_KEY)
    t = sub.add_parser("stop")
    t.add_argument("dir")
    args = ap.parse_args()
    if args.cmd == "start":
        os.makedirs(args.dir, exist_ok=True)
        c = RgwCluster(args.dir, port=args.port, memstore_gib=args.memstore_gib, access_key=args.access_key,
                       secret_key=args.secret_key)
        try:
            c.start()
        except Exception as e:
            print(f"rgwcluster: {e}", file=sys.stderr)
            sys.exit(1)
        atexit.unregister(c.stop)  # left running on purpose: `stop DIR` ends it
        info = c.describe()
        info["startup_seconds"] = c.startup_seconds
        print(json.dumps(info))
    else:
        for name, pid in stop_dir(args.dir):
            print(f"rgwcluster: stopped {name} (PID {pid})")


if __name__ == "__main__":
    main()
