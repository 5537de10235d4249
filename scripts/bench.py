#!/usr/bin/env python3
"""Benchmark s3mount against s3fs and rclone mount on the same local S3 store, one after the
other, counting every request the store served. The store is moto (the emulator, in this process;
default) or Ceph's RADOS Gateway (`--store rgw`: a single-node cluster started for the run by
scripts/rgwcluster.py). Writes docs/benchmarks/results.json (RGW: results-rgw.json),
docs/benchmarks/plot.svg (plot-rgw.svg) and the results section of docs/BENCHMARKS.md for that
store.

    python3 scripts/bench.py [--quick] [--store moto|rgw] [--tools s3mount,s3fs,rclone,rclone-modtime] [--only WORDS]
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

import s3log
from s3proxy import ForwardingProxy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("S3MOUNT_BIN", os.path.join(ROOT, ".build", "release", "s3mount"))
KEY, SECRET = "bench", "bench"
PROBES = [".hidden", "desktop.ini", ".directory", "folder.jpg"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LogCounter:
    """Counts the requests a store served from its access log (`logpath`), with scripts/s3log.py."""

    def _flush(self):
        pass

    def mark(self):
        self._flush()
        return os.path.getsize(self.logpath)

    def _own(self, text):
        """The log less the benchmark's own requests (none on moto: it asks the backend)."""
        return text

    def requests_since(self, pos, bucket):
        time.sleep(0.2)
        self._flush()
        with open(self.logpath, "rb") as f:
            f.seek(pos)
            seen = s3log.requests(self._own(f.read().decode("utf-8", "replace")), bucket)
        counts = {}
        for op, _, _ in seen:
            counts[op] = counts.get(op, 0) + 1
        return counts, sum(1 for _, status, _ in seen if status == 404)

    def put_many(self, bucket, items):
        for k, body in items:
            self.put(bucket, k, body)


class Moto(LogCounter):
    """moto's S3 in this process: requests are logged to a file (werkzeug's access log) and the
    bench data is seeded straight into its backend, which is 100 times faster than over HTTP."""

    def __init__(self):
        import logging
        from moto.server import ThreadedMotoServer
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.logpath = tempfile.mktemp(prefix="bench-moto-", suffix=".log")
        handler = logging.FileHandler(self.logpath)
        self.handler = handler
        wl = logging.getLogger("werkzeug")
        wl.setLevel(logging.INFO)
        wl.addHandler(handler)
        wl.propagate = False
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                               aws_secret_access_key=SECRET,
                               config=Config(s3={"addressing_style": "path"}, max_pool_connections=64))

    def backend(self):
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends
        accounts = s3_backends[DEFAULT_ACCOUNT_ID]
        return accounts["aws"] if "aws" in accounts else accounts["global"]

    def put(self, bucket, key, body):
        self.backend().put_object(bucket, key, body)

    def size(self, bucket, key):
        try:
            return self.backend().get_object(bucket, key).size
        except Exception:
            return -1

    def _flush(self):
        self.handler.flush()

    def stop(self):
        self.server.stop()


class Rgw(LogCounter):
    """A single-node Ceph cluster with the RADOS Gateway (scripts/rgwcluster.py), objects in RAM
    (memstore), in a folder of its own; seeded over S3 with 64 requests at a time. RGW writes one
    access line per request, read as moto's log is."""
    name = "rgw"

    def __init__(self, memstore_gib):
        from rgwcluster import RgwCluster
        self.dir = tempfile.mkdtemp(prefix="bench-rgw-")
        self.cluster = RgwCluster(self.dir, memstore_gib=memstore_gib, access_key=KEY, secret_key=SECRET,
                                  die_with_parent=True).start()
        print(f"bench: Ceph RGW up in {self.cluster.startup_seconds} s on {self.cluster.endpoint} ({self.dir})", flush=True)
        self.port, self.endpoint, self.logpath = self.cluster.port, self.cluster.endpoint, self.cluster.rgw_log
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                               aws_secret_access_key=SECRET,
                               config=Config(s3={"addressing_style": "path"}, max_pool_connections=64,
                                             retries={"max_attempts": 5}))

    def put(self, bucket, key, body):
        self.s3.put_object(Bucket=bucket, Key=key, Body=body)

    def put_many(self, bucket, items):
        with ThreadPoolExecutor(64) as ex:
            list(ex.map(lambda it: self.put(bucket, *it), items))

    def size(self, bucket, key):
        try:
            return self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except Exception:
            return -1

    def _own(self, text):
        # The benchmark's own checks (a HEAD until a write is in the store) go through boto3,
        # which none of the tools use: not counted. RGW's access line names the client.
        return "\n".join(line for line in text.splitlines() if '"Boto3/' not in line)

    def _flush(self):
        # Ceph writes its log from a thread of its own: wait until the size holds still.
        size = -1
        for _ in range(50):
            now = os.path.getsize(self.logpath)
            if now == size:
                return
            size = now
            time.sleep(0.05)

    def stop(self):
        self.cluster.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(l.split()[4] == path for l in f)


class Tool:
    def __init__(self, name, endpoint, workdir):
        self.name, self.endpoint, self.workdir = name, endpoint, workdir
        self.proc = None

    def mount(self, bucket, mp):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_EC2_METADATA_DISABLED="true")
        env.pop("AWS_CA_BUNDLE", None)  # rclone refuses a CA bundle with its own transport
        if self.name == "s3mount":
            cmd = [BIN, bucket, mp, "--endpoint-url", self.endpoint, "--force-path-style"]
            subprocess.run(cmd, env=env, check=True, capture_output=True)
        elif self.name == "s3fs":
            pw = os.path.join(self.workdir, "passwd-s3fs")
            with open(pw, "w") as f:
                f.write(f"{KEY}:{SECRET}\n")
            os.chmod(pw, 0o600)
            subprocess.run(["s3fs", bucket, mp, "-o", f"url={self.endpoint},use_path_request_style,passwd_file={pw},"
                            "allow_other,mp_umask=022,nonempty,enable_noobj_cache"], check=True, capture_output=True)
        else:
            env.update({"RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                        "RCLONE_CONFIG_BENCH_ENDPOINT": self.endpoint, "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": KEY,
                        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET, "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"})
            cmd = ["rclone", "mount", f"bench:{bucket}", mp, "--vfs-cache-mode", "writes", "--allow-non-empty"]
            if self.name == "rclone-modtime":
                cmd.append("--use-server-modtime")
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not mounted(mp) and time.time() < deadline:
            time.sleep(0.1)
        if not mounted(mp):
            raise RuntimeError(f"{self.name} did not mount")

    def unmount(self, mp):
        subprocess.run(["fusermount3", "-u", mp], capture_output=True)
        deadline = time.time() + 60
        while mounted(mp) and time.time() < deadline:
            time.sleep(0.1)
        if mounted(mp):
            subprocess.run(["fusermount3", "-uz", mp], capture_output=True)
        if self.proc:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def daemon_pid(self, mp):
        out = subprocess.run(["pgrep", "-f", f" {mp}"], capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def seed(moto, bucket, items):
    moto.put_many(bucket, [it if isinstance(it, tuple) else (it, b"x" * 100) for it in items])


def tree_keys():
    """1,000 objects in 221 directories (1 + 10 + 10*21 = 221), as in the issue."""
    keys = []
    for a in range(10):
        for b in range(21):
            n = 5 if (a * 21 + b) < 160 else 4
            keys += [f"d{a}/e{b:02d}/f{c}.txt" for c in range(n)]
    keys += [f"top{i}.txt" for i in range(1000 - len(keys))] if len(keys) < 1000 else []
    return keys[:1000]


def big_file(path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        left = size
        block = os.urandom(8 << 20)
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes and short timeouts, under 3 minutes")
    ap.add_argument("--tools", default=None, help="default: s3mount,s3fs,rclone,rclone-modtime (quick: without plain rclone)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds a single workload may take")
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks"))
    ap.add_argument("--render", action="store_true", help="only redraw the plot and tables from results.json")
    ap.add_argument("--markdown", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"), help="the page whose results section is rewritten")
    ap.add_argument("--store", choices=("moto", "rgw"), default="moto",
                    help="moto (the emulator, in this process) or rgw (a single-node Ceph RADOS Gateway)")
    ap.add_argument("--only", default=None, help="run only the workloads whose name contains one of these comma-separated words")
    args = ap.parse_args()
    suffix = "" if args.store == "moto" else "-" + args.store
    if args.render:
        results = json.load(open(os.path.join(args.out, f"results{suffix}.json")))
        write_svg(results, os.path.join(args.out, f"plot{suffix}.svg"))
        write_markdown(results, args.markdown, suffix)
        return
    quick = args.quick
    tools = [t for t in (args.tools or ("s3mount,s3fs,rclone-modtime" if quick else "s3mount,s3fs,rclone,rclone-modtime")).split(",") if t]
    timeout = args.timeout or (8 if quick else 30)
    listing_sizes = [1000] if quick else [1000, 10000, 100000]
    big = (128 << 20) if quick else (1 << 30)
    small_count = 100 if quick else 1000

    work = tempfile.mkdtemp(prefix="s3mount-bench-")
    # RGW keeps objects in RAM (memstore): the big file, a copy per tool written in, the rest small.
    moto = Rgw(memstore_gib=(2 + 2 * len(tools)) * big / (1 << 30) + 4) if args.store == "rgw" else Moto()
    # Every request delayed as a round trip to real S3 would be.
    proxy = ForwardingProxy(moto.port, before=lambda method, path: time.sleep(args.latency_ms / 1000.0))
    s3 = moto.s3
    t0 = time.time()
    print(f"bench: seeding {args.store} ({'quick' if quick else 'full'})", flush=True)
    s3.create_bucket(Bucket="bench")
    # The 100,000-object directory lives in a bucket of its own: moto scans a whole bucket for
    # every listing, which would slow every other workload down.
    s3.create_bucket(Bucket="bench-big")
    for n in listing_sizes:
        seed(moto, "bench-big" if n >= 100000 else "bench", [f"flat{n}/obj-{i:06d}.dat" for i in range(n)])
    seed(moto, "bench", [f"tree/{k}" for k in tree_keys()])
    if not quick:
        # A tree far bigger than one listing page, in a bucket of its own (moto scans the whole
        # bucket for every page).
        s3.create_bucket(Bucket="bench-wide")
        seed(moto, "bench-wide", [f"wide/d{i:04d}/f{j}.txt" for i in range(1000) for j in range(10)])
    seed(moto, "bench", [(f"small/f{i:04d}.txt", os.urandom(4096)) for i in range(small_count)])
    bigpath = os.path.join(work, "big.bin")
    big_file(bigpath, big)
    print(f"bench: seeded in {time.time() - t0:.0f} s", flush=True)

    results = {"store": args.store,
               "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": quick, "only": args.only,
               "workloads": [], "reference": {}}

    # Reference figures: an upload with the AWS CLI (which also seeds big.bin) and a direct
    # download with curl, same server, same run.
    t = time.time()
    subprocess.run(["aws", "--endpoint-url", moto.endpoint, "s3", "cp", bigpath, "s3://bench/big.bin", "--quiet"],
                   env=dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1"), check=True)
    results["reference"]["awscli_upload_MBps"] = round(big / (time.time() - t) / 1e6, 1)
    t = time.time()
    # A presigned URL: RGW, unlike moto, refuses an unsigned GET of a private object.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": "big.bin"}, ExpiresIn=3600)
    subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=True)
    results["reference"]["curl_download_MBps"] = round(big / (time.time() - t) / 1e6, 1)
    print(f"bench: reference {results['reference']}", flush=True)

    def shell(cmd, limit=None):
        # A session of its own, killed whole on timeout: a `find | xargs stat` left running
        # would keep the mount busy and stall its unmount for a minute.
        p = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=limit or timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    workloads = []
    for n in listing_sizes:
        # moto itself needs about a minute to list 100,000 keys: that one gets 4 minutes.
        workloads.append((f"ls -la {n:,}", lambda mp, tool, n=n: shell(f"ls -la {mp}/flat{n} | wc -l", 240 if n >= 100000 else None)))
    workloads.append(("find + xargs stat (1,000 obj, 221 dirs)", lambda mp, tool: shell(f"find {mp}/tree -type f -print0 | xargs -0 stat > /dev/null")))
    wide_name = "find (10,000 obj, 1,001 dirs)"
    if not quick:
        workloads.append((wide_name, lambda mp, tool: shell(f"find {mp}/wide -type f | wc -l")))

    def probes(mp, tool):
        return shell(f"for d in $(find {mp}/tree -type d); do ls $d > /dev/null; for p in {' '.join(PROBES)}; do stat $d/$p >/dev/null 2>&1; done; done; true")
    workloads.append(("file-manager probes (221 dirs)", probes))
    workloads.append((f"cat {big >> 20} MiB", lambda mp, tool: shell(f"cat {mp}/big.bin > /dev/null")))
    workloads.append((f"cat {small_count:,} small files", lambda mp, tool: shell(f"cat {mp}/small/* > /dev/null")))
    def durable(pred, limit):
        """Waits until S3 really holds what was written (rclone uploads after close returns)."""
        deadline = time.time() + limit
        while time.time() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return False

    def stored(key):
        return moto.size("bench", key)

    def cp_in(mp, tool):
        out = shell(f"cp {bigpath} {mp}/in-{tool}.bin")
        durable(lambda: stored(f"in-{tool}.bin") == big, timeout)
        return out

    def small_in(mp, tool):
        out = shell(f"mkdir -p {mp}/new-{tool} && for i in $(seq 100); do echo data-$i > {mp}/new-{tool}/f$i; done")
        durable(lambda: all(stored(f"new-{tool}/f{i}") > 0 for i in range(1, 101)), timeout)
        return out
    workloads.append((f"cp {big >> 20} MiB in", cp_in))
    workloads.append(("100 small files in", small_in))

    def rm_r(mp, tool):
        return shell(f"rm -r {mp}/todelete")
    workloads.append(("rm -r 1,000 objects", rm_r))
    latency_names = {f"ls -la {listing_sizes[0]:,}"}
    if not quick:
        latency_names |= {"find + xargs stat (1,000 obj, 221 dirs)", "file-manager probes (221 dirs)"}

    if args.only:
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        workloads = [(w, f) for w, f in workloads if any(x in w for x in words)]
    for wname, fn in workloads:
        for via_proxy in ([False, True] if wname in latency_names else [False]):
            label = wname + (f" (+{int(args.latency_ms)} ms/request)" if via_proxy else "")
            row = {"workload": label, "tools": {}}
            for tname in tools:
                if wname == "ls -la 100,000" and tname in ("s3fs", "rclone"):
                    # One HeadObject per object: 100,000 of them (the 10,000 row shows the rate).
                    row["tools"][tname] = {"seconds": None, "skipped": "sends one HeadObject per object; see the 10,000 row"}
                    continue
                if wname == wide_name and tname in ("s3fs", "rclone"):
                    row["tools"][tname] = {"seconds": None, "skipped": "one listing and HeadObjects per directory; see the 1,000-object find"}
                    continue
                if shutil.which({"s3mount": BIN, "s3fs": "s3fs"}.get(tname, "rclone")) is None:
                    continue
                if wname.startswith("rm -r"):
                    seed(moto, "bench", [f"todelete/x{i // 100}/k{i:04d}" for i in range(1000)])
                tool = Tool(tname, proxy.endpoint if via_proxy else moto.endpoint, work)
                mp = tempfile.mkdtemp(prefix=f"bench-{tname}-")
                entry = {}
                try:
                    bucket = {"ls -la 100,000": "bench-big", wide_name: "bench-wide"}.get(wname, "bench")
                    tool.mount(bucket, mp)
                    pos = moto.mark()
                    t = time.time()
                    try:
                        out = fn(mp, tname)
                        secs = time.time() - t
                        entry["seconds"] = round(secs, 3)
                        entry["ok"] = out.returncode == 0
                        if out.returncode != 0:
                            entry["error"] = (out.stderr or "")[-200:]
                    except subprocess.TimeoutExpired:
                        entry["seconds"] = None
                        entry["timeout"] = timeout
                    counts, nf = moto.requests_since(pos, bucket)
                    entry["requests"] = counts
                    entry["requests_total"] = sum(counts.values())
                    entry["not_found"] = nf
                    if wname.startswith("cat ") and "MiB" in wname and entry.get("seconds"):
                        entry["MBps"] = round(big / entry["seconds"] / 1e6, 1)
                    if wname.startswith("cp ") and entry.get("seconds"):
                        entry["MBps"] = round(big / entry["seconds"] / 1e6, 1)
                    if tname == "s3mount" and wname == f"ls -la {listing_sizes[-1]:,}" and not via_proxy:
                        pid = tool.daemon_pid(mp)
                        if pid:
                            entry["rss_kib_after_listing"] = rss_kib(pid)
                            subprocess.run(["bash", "-c", "sync; echo 2 > /proc/sys/vm/drop_caches"], capture_output=True)
                            time.sleep(1)
                            entry["rss_kib_after_forget"] = rss_kib(pid)
                finally:
                    tool.unmount(mp)
                    try:
                        os.rmdir(mp)
                    except OSError:
                        pass
                row["tools"][tname] = entry
                print(f"bench: [{time.time() - t0:5.0f} s] {label:55s} {tname:15s} {entry.get('seconds')} s  {entry.get('requests_total')} requests "
                      f"{entry.get('requests')} 404s={entry.get('not_found')}", flush=True)
            results["workloads"].append(row)

    # Baseline RSS of an idle s3mount for the memory figure.
    tool = Tool("s3mount", moto.endpoint, work)
    mp = tempfile.mkdtemp(prefix="bench-rss-")
    tool.mount("bench", mp)
    time.sleep(0.5)
    results["reference"]["s3mount_idle_rss_kib"] = rss_kib(tool.daemon_pid(mp))
    tool.unmount(mp)
    os.rmdir(mp)

    results["total_seconds"] = round(time.time() - t0)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"results{suffix}.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_svg(results, os.path.join(args.out, f"plot{suffix}.svg"))
    write_markdown(results, args.markdown, suffix)
    moto.stop()
    print(f"bench: done in {results['total_seconds']} s; results in {args.out} and {args.markdown}")


def fmt_entry(e):
    if not e:
        return "—"
    if e.get("skipped"):
        return "not run: " + e["skipped"]
    if e.get("seconds") is None:
        return f"timeout > {e.get('timeout')} s"
    s = f"{e['seconds']:.2f} s, {e['requests_total']} req"
    if e.get("not_found"):
        s += f", {e['not_found']} 404"
    if "MBps" in e:
        s += f", {e['MBps']} MB/s"
    if not e.get("ok", True):
        s += " (failed)"
    return s


def best_peer(row):
    peers = [(t, e) for t, e in row["tools"].items() if t != "s3mount" and e.get("seconds") is not None and e.get("ok", True)]
    return min(peers, key=lambda p: p[1]["seconds"]) if peers else (None, None)


def write_markdown(results, path, suffix=""):
    tools = []
    for row in results["workloads"]:
        for t in row["tools"]:
            if t not in tools:
                tools.append(t)
    lines = ["| workload | " + " | ".join(tools) + " | s3mount vs best peer (time) |", "|---" * (len(tools) + 2) + "|"]
    for row in results["workloads"]:
        cells = [fmt_entry(row["tools"].get(t)) for t in tools]
        me = row["tools"].get("s3mount")
        peer, pe = best_peer(row)
        ratio = "—"
        if me and me.get("seconds") and pe:
            ratio = f"{pe['seconds'] / me['seconds']:.1f}× faster than {peer}" if me["seconds"] <= pe["seconds"] else f"{me['seconds'] / pe['seconds']:.1f}× slower than {peer}"
        elif me and me.get("seconds") and not pe:
            ratio = "peers timed out or failed"
        lines.append(f"| {row['workload'].replace('|', '+')} | " + " | ".join(cells) + f" | {ratio} |")
    req = ["| workload | " + " | ".join(tools) + " |", "|---" * (len(tools) + 1) + "|"]
    for row in results["workloads"]:
        req.append(f"| {row['workload'].replace('|', '+')} | " + " | ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(row["tools"].get(t, {}).get("requests", {}).items())) or "—" for t in tools) + " |")
    mem = ""
    for row in results["workloads"]:
        e = row["tools"].get("s3mount", {})
        if "rss_kib_after_listing" in e:
            n = int(row["workload"].split()[-1].replace(",", ""))
            idle = results["reference"].get("s3mount_idle_rss_kib", 0)
            per = (e["rss_kib_after_listing"] - idle) * 1024 / n
            mem = (f"RSS of the s3mount daemon: idle {idle / 1024:.1f} MiB; after `ls -la` of {n:,} objects "
                   f"{e['rss_kib_after_listing'] / 1024:.1f} MiB ({per:.0f} bytes per cached entry); after the kernel "
                   f"forgets them (`echo 2 > /proc/sys/vm/drop_caches`) {e['rss_kib_after_forget'] / 1024:.1f} MiB.")
    ref = results["reference"]
    store = results.get("store", "moto")
    tag = "results" + suffix
    cmd = ("python3 scripts/bench.py --quick" if results["quick"] else "bash scripts/bench.sh") + \
        (f" --store {store}" if store != "moto" else "") + (f" --only '{results['only']}'" if results.get("only") else "")
    where = "moto (the emulator, in-process)" if store == "moto" else "Ceph RGW 16.2 (single node, memstore)"
    section = "\n".join([
        f"<!-- {tag}:start -->",
        f"Run: `{cmd}` on {results['machine']}, "
        f"{results['date']}, {results['total_seconds']} s in all. Store: {where}. Every request counted from the store's own log.",
        "",
        f"![time per workload](benchmarks/plot{suffix}.svg)",
        "",
        "### Time and requests",
        "",
        *lines,
        "",
        "### Requests by type",
        "",
        *req,
        "",
        f"Reference, same store, same run: `curl` download {ref.get('curl_download_MBps')} MB/s; "
        f"`aws s3 cp` upload {ref.get('awscli_upload_MBps')} MB/s.",
        "",
        mem,
        f"<!-- {tag}:end -->",
    ])
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if f"<!-- {tag}:start -->" not in text:
        text += f"\n<!-- {tag}:start -->\n<!-- {tag}:end -->\n"
    text = re.sub(rf"<!-- {tag}:start -->.*<!-- {tag}:end -->", lambda _: section, text, flags=re.S)
    with open(path, "w") as f:
        f.write(text)


def write_svg(results, path):
    """A grouped horizontal bar chart of seconds (log scale), made without plotting libraries."""
    import math
    colors = {"s3mount": "#2b7bba", "s3fs": "#d95f02", "rclone": "#7570b3", "rclone-modtime": "#1b9e77"}
    rows = results["workloads"]
    tools = [t for t in colors if any(t in r["tools"] for r in rows)]
    bar, gap, left, width = 9, 10, 330, 520
    height = len(rows) * (len(tools) * bar + gap) + 60
    vals = [e["seconds"] for r in rows for e in r["tools"].values() if e.get("seconds")]
    lo, hi = math.log10(max(min(vals), 0.005)), math.log10(max(vals) * 1.5)
    def x(v):
        return left + (math.log10(max(v, 0.005)) - lo) / (hi - lo) * width
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="14" font-weight="bold">seconds per workload (log scale; shorter is better)</text>']
    y = 30
    for r in rows:
        out.append(f'<text x="{left - 6}" y="{y + len(tools) * bar / 2 + 4}" text-anchor="end">{r["workload"]}</text>')
        for t in tools:
            e = r["tools"].get(t)
            if e and e.get("seconds"):
                out.append(f'<rect x="{left}" y="{y}" width="{max(1, x(e["seconds"]) - left):.1f}" height="{bar - 1}" fill="{colors[t]}"/>')
                out.append(f'<text x="{x(e["seconds"]) + 3:.1f}" y="{y + bar - 2}" font-size="9">{e["seconds"]:.2f}</text>')
            elif e:
                label = "not run" if e.get("skipped") else "timeout"
                out.append(f'<text x="{left + 3}" y="{y + bar - 2}" font-size="9" fill="{colors[t]}">{t}: {label}</text>')
            y += bar
        y += gap
    for i, t in enumerate(tools):
        out.append(f'<rect x="{left + i * 120}" y="{height - 18}" width="10" height="10" fill="{colors[t]}"/><text x="{left + i * 120 + 14}" y="{height - 9}">{t}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
