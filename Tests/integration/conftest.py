"""Integration harness: a real S3 store on free loopback ports (moto_server, or a single-node Ceph
cluster with the RADOS Gateway: `--store rgw` or S3M_STORE=rgw), real s3mount mounts, real tools
through the mount, and every S3 request counted twice (s3mount's own stats and the store's
access log).

The store fixture is `store`; `moto` is the same object under its older name (most tests were
written against moto alone). A test that cannot run on one store says why with
`@pytest.mark.moto_only("reason")` or `@pytest.mark.rgw_only("reason")`; `STORE` names the store of
this run, for the few assertions that differ (docs/SEMANTICS.md, "Stores: moto and Ceph RGW")."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import s3log  # noqa: E402  (the benchmark counts requests with the same code)
from rgwcluster import RgwCluster, missing_binaries  # noqa: E402
BIN = os.environ.get("S3MOUNT_BIN", os.path.join(ROOT, ".build", "debug", "s3mount"))
# The chaos run (scripts/chaos.sh): S3M_CHAOS="SLOWDOWN,RESET" (shares, e.g. "0.05,0.01") puts a
# proxy that injects random 503 SlowDowns and connection resets in front of every mount. Requests
# counted by the tests leave out the ones a fault hit (each proxy records them), so every test
# asserts what it asserts in a normal run.
CHAOS = os.environ.get("S3M_CHAOS")
CHAOS_RECORDS = []  # every chaos proxy's record file, for moto's request log
CHAOS_PORTS = {}  # a test's first chaos port: a remount in the same test gets the same endpoint

# A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so
# would every program it starts (an ignored signal stays ignored across exec): the daemon, whose
# libfuse then leaves SIGINT alone, and the `cat` a test interrupts. A handler here is reset to
# the default in each child.
signal.signal(signal.SIGINT, signal.default_int_handler)
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STORES = ("moto", "rgw")
STORE = os.environ.get("S3M_STORE", "moto")  # set from --store at configure time


def pytest_addoption(parser):
    parser.addoption("--store", choices=STORES, default=None,
                     help="the S3 store the integration tests run against (default: $S3M_STORE, else moto)")


def pytest_configure(config):
    global STORE
    STORE = config.getoption("--store") or os.environ.get("S3M_STORE") or "moto"
    if STORE not in STORES:
        raise pytest.UsageError(f"S3M_STORE={STORE!r}: one of {', '.join(STORES)}")
    os.environ["S3M_STORE"] = STORE  # for the tests' helper processes
    config.addinivalue_line("markers", "moto_only(reason): runs on moto only; skipped on RGW with the reason")
    config.addinivalue_line("markers", "rgw_only(reason): runs on RGW only; skipped on moto with the reason")


def pytest_report_header(config):
    return f"store: {STORE}"


def pytest_runtest_setup(item):
    for mark, store in (("moto_only", "moto"), ("rgw_only", "rgw")):
        m = item.get_closest_marker(mark)
        if m and STORE != store:
            pytest.skip(f"{store} only: " + (m.args[0] if m.args else "no reason given"))


class LoggedStore:
    """What the tests ask of a store: `endpoint`, `port`, `client()`, and the requests it served,
    read from its access log (`logpath`) with scripts/s3log.py."""
    name = "?"

    def _flush(self):
        pass

    def log_position(self):
        self._flush()
        pos = self._settled_size()
        self.position_times = getattr(self, "position_times", {})
        self.position_times.setdefault(pos, time.time())
        return pos

    def _settled_size(self):
        return os.path.getsize(self.logpath)

    def _read_since(self, pos, bucket):
        time.sleep(0.05)
        self._flush()
        self._settled_size()
        with open(self.logpath, "rb") as f:
            f.seek(pos)
            return s3log.requests(f.read().decode("utf-8", "replace"), bucket)

    def served_since(self, pos, bucket=None):
        """Every request the store answered since `pos`, chaos or not."""
        return self._read_since(pos, bucket)

    def requests_since(self, pos, bucket=None):
        """[(operation, status, target)] that the store served since `pos` (for `bucket` only if
        given), less those a chaos proxy cut off after the store served them."""
        served = self._read_since(pos, bucket)
        since = getattr(self, "position_times", {}).get(pos)
        if CHAOS and since is not None:
            for fault in chaos_faults(CHAOS_RECORDS, since):
                if fault["kind"] != "reset_any":
                    continue  # a SlowDown never reached the store
                hit = next((i for i, r in enumerate(served) if r[2] == fault["target"]), None)
                if hit is not None:
                    del served[hit]
        return served

    def allow_key(self, access_key, secret_key):
        """Makes a key pair valid for the tests' user (moto takes any key: nothing to do)."""

    def client(self, **creds):
        c = dict(CREDS)
        c.update(creds)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=c["AWS_ACCESS_KEY_ID"], aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"],
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


class Rgw(LoggedStore):
    """A single-node Ceph cluster (monitor, OSD on memstore, RADOS Gateway) in `workdir`, made by
    scripts/rgwcluster.py; its S3 user has the tests' keys (CREDS). RGW's access lines (beast, at
    `debug rgw = 1`) go to its log file, read as moto's are. stop() ends exactly the daemons it
    started (also at exit, and when the test process dies: they get SIGTERM with their parent)."""
    name = "rgw"

    def __init__(self, workdir):
        if missing_binaries():
            pytest.exit("Ceph is not installed (missing " + ", ".join(missing_binaries()) + "): run scripts/setup.sh",
                        returncode=3)
        self.cluster = RgwCluster(workdir, memstore_gib=8, access_key=CREDS["AWS_ACCESS_KEY_ID"],
                                  secret_key=CREDS["AWS_SECRET_ACCESS_KEY"], die_with_parent=True)
        try:
            self.cluster.start()
        except Exception as e:
            pytest.exit(f"the Ceph RGW cluster did not start: {e}", returncode=3)
        self.port = self.cluster.port
        self.endpoint = self.cluster.endpoint
        self.logpath = self.cluster.rgw_log
        self.startup_seconds = self.cluster.startup_seconds

    def _settled_size(self):
        # Ceph writes its log from a thread of its own: wait until the lines of the requests
        # answered so far are in (the size holds still for 30 ms).
        size = os.path.getsize(self.logpath)
        for _ in range(50):
            time.sleep(0.03)
            now = os.path.getsize(self.logpath)
            if now == size:
                return size
            size = now
        return size

    def allow_key(self, access_key, secret_key):
        self.cluster.add_key(access_key, secret_key)

    def add_user(self, uid):
        """A second S3 user of the same cluster: (access key, secret key)."""
        return self.cluster.add_user(uid)

    def stop(self):
        self.cluster.stop()


class Moto(LoggedStore):
    name = "moto"

    def __init__(self, logdir, extra_env=None):
        """`logdir`: where moto's request log goes (a pytest tmp_path, which pytest removes)."""
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.logpath = os.path.join(str(logdir), "moto.log")
        env = dict(os.environ)
        env.update(extra_env or {})
        exe = shutil.which("moto_server")
        if exe is None:
            pytest.exit("moto_server not found: run scripts/setup.sh (pip install 'moto[server]')", returncode=3)
        self.logf = open(self.logpath, "w")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    pytest.exit("moto_server exited at start: " + open(self.logpath).read(), returncode=3)
                time.sleep(0.1)
        else:
            pytest.exit("moto_server did not start within 30 s", returncode=3)

    def _flush(self):
        self.logf.flush()

    def stop(self):
        stop_process(self.proc)
        self.logf.close()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """The store of this run (--store / S3M_STORE), one for the whole session; each test makes
    its own bucket."""
    m = Rgw(tmp_path_factory.mktemp("rgw")) if STORE == "rgw" else Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


@pytest.fixture(scope="session")
def moto(store):
    """The store under the name the tests were first written with: moto or RGW alike."""
    return store


@pytest.fixture()
def s3(moto):
    return moto.client()


@pytest.fixture()
def bucket(s3):
    name = "t-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    return name


def seed(s3, bucket, keys, body=b"x"):
    """Puts each key (str or (key, body)) in parallel."""
    def put(k):
        if isinstance(k, tuple):
            s3.put_object(Bucket=bucket, Key=k[0], Body=k[1])
        else:
            s3.put_object(Bucket=bucket, Key=k, Body=body)
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(put, keys))


def alive(pid):
    """Running (an exited daemon stays a zombie until its new parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_process(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def chaos_faults(records, since=0.0):
    out = []
    for path in records:
        try:
            with open(path) as f:
                out += [json.loads(line) for line in f if line.strip()]
        except OSError:
            pass
    return [r for r in out if r["t"] >= since]


class ChaosProcess:
    """scripts/chaos.sh: the fault proxy in front of one mount, in its own process."""

    def __init__(self, moto, record, test):
        slowdown, reset = (CHAOS.split(",") + ["0.01"])[:2] if "," in CHAOS else ("0.05", "0.01")
        self.record = record
        CHAOS_RECORDS.append(record)
        cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "chaosproxy.py"), "--upstream", str(moto.port),
               "--slowdown", slowdown, "--reset", reset, "--record", record]
        if os.environ.get("S3M_CHAOS_SEED"):
            cmd += ["--seed", os.environ["S3M_CHAOS_SEED"]]
        # The endpoint is part of what the data cache is keyed on: a remount within a test asks
        # for the port its first mount had (free again once that mount is gone).
        for port in ([CHAOS_PORTS[test]] if test in CHAOS_PORTS else []) + [0]:
            self.proc = subprocess.Popen(cmd + ["--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            line = self.proc.stdout.readline()
            if line.strip():
                break
            self.proc.wait()
        CHAOS_PORTS.setdefault(test, int(line))
        self.endpoint = f"http://127.0.0.1:{int(line)}"

    def faults(self):
        return chaos_faults([self.record])

    def stop(self):
        stop_process(self.proc)


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Mount:
    def __init__(self, moto, bucket, workdir, args=(), env=None, source=None):
        """Mounts `bucket` on a new directory in /tmp (removed at unmount; in /tmp so that a second
        user can reach it), with its log and its spool ($TMPDIR) in `workdir`, the test's
        tmp_path, which pytest removes."""
        self.moto = moto
        self.bucket = bucket
        self.path = tempfile.mkdtemp(prefix="s3m-")
        name = os.path.basename(self.path)
        self.logpath = os.path.join(str(workdir), name + ".log")
        spool = os.path.join(str(workdir), name + "-spool")
        os.mkdir(spool)
        self.env = dict(os.environ)
        self.env.update(CREDS)
        self.env["AWS_EC2_METADATA_DISABLED"] = "true"
        self.env["TMPDIR"] = spool  # the default spool directory: what an upload that failed leaves is kept there
        self.env.update(env or {})
        self.chaos = ChaosProcess(moto, os.path.join(str(workdir), name + "-chaos.jsonl"), str(workdir)) if CHAOS else None
        endpoint = self.chaos.endpoint if self.chaos else moto.endpoint
        cmd = [BIN, source or bucket, self.path, "--endpoint-url", endpoint, "--force-path-style",
               "--log-file", self.logpath, *args]
        self.result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if self.result.returncode != 0:
            if self.chaos:
                self.chaos.stop()
            raise RuntimeError(f"mount failed ({self.result.returncode}): {self.result.stderr}")
        assert mounted(self.path)

    def stats(self):
        out = subprocess.run([BIN, "stats", self.path], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def requests(self):
        """{operation: count} sent by the daemon so far, from its own statistics (less the
        requests a chaos proxy failed: those the daemon sent again)."""
        counts = {op: v["total"] for op, v in self.stats()["requests"].items()}
        if self.chaos:
            for fault in self.chaos.faults():
                counts[fault["op"]] = counts.get(fault["op"], 0) - 1
        return counts

    def daemon_pid(self):
        out = subprocess.run(["pgrep", "-f", f"s3mount .* {re.escape(self.path)} "], capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split()]
        return pids[0] if pids else None

    def log(self):
        try:
            return open(self.logpath).read()
        except FileNotFoundError:
            return ""

    def unmount(self):
        if mounted(self.path):
            pid = self.daemon_pid()
            subprocess.run(["fusermount3", "-u", self.path], capture_output=True)
            deadline = time.time() + 10
            while mounted(self.path) and time.time() < deadline:
                time.sleep(0.1)
            if mounted(self.path):
                subprocess.run(["fusermount3", "-uz", self.path], capture_output=True)
            # The daemon writes what it still holds (uploads, metadata) after the kernel lets go:
            # a test that mounts again must see all of it, as a user waiting for it would.
            deadline = time.time() + 30
            while pid and alive(pid) and time.time() < deadline:
                time.sleep(0.05)
        if self.chaos:
            self.chaos.stop()
        try:
            os.rmdir(self.path)
        except OSError:
            pass


@pytest.fixture()
def mount(moto, tmp_path):
    made = []

    def make(bucket, *args, env=None, source=None):
        m = Mount(moto, bucket, tmp_path, args, env=env, source=source)
        made.append(m)
        return m
    yield make
    for m in made:
        m.unmount()


def run(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def delta(before, after):
    ops = set(before) | set(after)
    return {op: after.get(op, 0) - before.get(op, 0) for op in ops if after.get(op, 0) != before.get(op, 0)}
