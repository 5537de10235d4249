#!/usr/bin/env python3
"""Reads under cloud-like conditions: s3mount against s3fs and rclone mount, each behind
scripts/cloudproxy.py (20 ms before each request, 25 MB/s per connection, both settable), on the
in-process emulator and mount harness of scripts/bench.py and scripts/metabench.py. Every request
is counted from moto's own log; the daemon's VmRSS and Threads are sampled every 0.1 s.

Workloads, each tool on a fresh mount, the page cache dropped before every read:
  - reference ceiling: 8 parallel `curl -r` ranges of the big object through the proxy, and one
    plain `curl` (a single stream); the same two against the emulator directly (loopback).
  - `cat` of the big object (1 GiB; quick 256 MiB), through the proxy and on loopback.
  - 8 `cat`s at once of 8 different files (128 MiB each; quick 32 MiB).
  - `cat` of a file twice, the page cache dropped between: the second read's requests (for a
    read cache: extra s3mount options go in with --s3mount-opts).
  - `tar cf - DIR | wc -c` of 1,000 small files (4-16 KiB; quick 200) through the proxy.

moto 5.2.1 answers a ranged GetObject by copying the whole object and slicing it: here a single
`bytes=a-b` / `bytes=a-` range reads only those bytes, streamed from the object's buffer in 1 MiB
pieces, as S3 sends them (patch_moto_ranges). Objects stay in memory (moto would spool anything
past 5 MiB to /tmp, which drop_caches would send back to the disk).

    S3MOUNT_BIN=.build/release/s3mount python3 scripts/cloudbench.py [--quick] [--tools s3mount,s3fs,rclone]
        [--latency-ms 20] [--conn-mbps 25] [--s3mount-opts "--cache DIR"] [--timeout 300]
    python3 scripts/cloudbench.py --render     (the table again from the JSON)

With --store rgw the store is a single-node Ceph RADOS Gateway (scripts/rgwcluster.py), seeded
over S3, requests counted from its access log; RGW reads only the range asked, unpatched.

Writes docs/benchmarks/cloud.json (RGW: cloud-rgw.json) and prints a markdown table.
"""
import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import boto3
from botocore.config import Config

from bench import BIN, KEY, ROOT, SECRET, Moto, Rgw
from cloudproxy import CloudProxy, ProxyProcess
from metabench import MetaTool, available, shell, unmount_quietly, versions

MiB = 1 << 20
STREAM_PIECE = 1 << 20
BUCKET = "cloud"
TOOL_NAMES = ("s3mount", "s3fs", "rclone")

# ---- moto: ranged reads that read only the range ----------------------------------------------

SIMPLE_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_asked = threading.local()


def _stream(key, begin, end):
    """Bytes begin..end (inclusive) of `key`, a piece at a time, each read under the key's lock."""
    pos = begin
    while pos <= end:
        with key.lock:
            key._value_buffer.seek(pos)
            piece = key._value_buffer.read(min(STREAM_PIECE, end + 1 - pos))
        if not piece:
            return
        pos += len(piece)
        yield piece


def patch_moto_ranges():
    """S3Response.get_object sends a single `bytes=a-b` or `bytes=a-` range (and a GET without
    Range) by reading just those bytes as they are sent, instead of moto's copy of the whole object
    sliced afterwards. moto's own get_object still runs — key lookup, If-Match (412),
    If-None-Match (304), headers, checksums — but its read of `key.value` is swapped for a marker
    for the one request: the range is then answered here, 206 with Content-Range. Every other
    request (suffix or multiple ranges, partNumber, a range past the end: 416) goes to moto as is."""
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response
    if getattr(S3Response.get_object, "ranged", False):
        return
    whole_value, moto_get_object = FakeKey.value, S3Response.get_object

    def value(key):
        want, _asked.want = getattr(_asked, "want", None), None
        if want is None or want[0] >= max(key.size, 1):
            return whole_value.fget(key)
        begin, end = want
        _asked.got = (key, begin, key.size - 1 if end is None else min(end, key.size - 1))
        return b""

    def get_object(self):
        rng = self.headers.get("range")
        m = SIMPLE_RANGE.fullmatch(rng.strip()) if rng else None
        if (rng and not m) or self._get_int_param("partNumber"):
            return moto_get_object(self)
        begin, end = (int(m.group(1)), int(m.group(2)) if m.group(2) else None) if m else (0, None)
        if end is not None and end < begin:  # S3 ignores such a range
            return moto_get_object(self)
        _asked.want, _asked.got = (begin, end), None
        try:
            status, headers, body = moto_get_object(self)
        finally:
            _asked.want = None
        got, _asked.got = _asked.got, None
        if status != 200 or got is None:
            return status, headers, body
        key, begin, end = got
        headers["content-length"] = str(end + 1 - begin)
        if not m:
            return 200, headers, _stream(key, 0, end)
        if begin or end < key.size - 1:  # a part of the object carries no checksum
            for h in [h for h in headers if h.lower().startswith("x-amz-checksum-")]:
                del headers[h]
        headers["content-range"] = f"bytes {begin}-{end}/{key.size}"
        return 206, headers, _stream(key, begin, end)

    get_object.ranged = True
    FakeKey.value = property(value, whole_value.fset)
    S3Response.get_object = get_object


def put_object(moto, key, body):
    """Seeds `key` straight into the backend; its ETag is worked out now (moto computes it on
    first use by seeking the object's buffer without the lock that ranged reads take). RGW: a PUT."""
    moto.put(BUCKET, key, body)
    if isinstance(moto, Moto):
        _ = moto.backend().get_object(BUCKET, key).etag


# ---- measuring ----------------------------------------------------------------------------------

def proc_status(pid):
    """VmRSS (KiB) and Threads of a process, from /proc/PID/status; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["Threads"])
    except (OSError, KeyError, ValueError):
        return None


def cpu_seconds(pid):
    """User + system CPU time a process has used so far; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Sampler(threading.Thread):
    """The peak VmRSS of a process and its thread count, every `interval` seconds until stop(),
    and the CPU time it used meanwhile."""

    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.done = pid, interval, threading.Event()
        self.peak_rss = self.threads_at_peak = self.threads_max = 0
        self.cpu0 = cpu_seconds(pid) if pid else None
        self.start()

    def run(self):
        while True:
            st = proc_status(self.pid) if self.pid else None
            if st:
                rss, threads = st
                if rss > self.peak_rss:
                    self.peak_rss, self.threads_at_peak = rss, threads
                self.threads_max = max(self.threads_max, threads)
            if self.done.wait(self.interval):
                return

    def stop(self):
        self.done.set()
        self.join()
        if not self.peak_rss:
            return {}
        cpu = cpu_seconds(self.pid)
        return {"peak_rss_mib": round(self.peak_rss / 1024, 1), "threads_at_peak_rss": self.threads_at_peak,
                "threads_max": self.threads_max, "cpu_seconds": round(cpu - self.cpu0, 2) if cpu is not None and self.cpu0 is not None else None}


def drop_caches():
    subprocess.run(["bash", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=True)


def curl_ranges(url_of, path, size, streams, limit):
    """`streams` parallel curls of `path` (one plain GET when 1, else `-r` ranges that cover it):
    aggregate MB/s over the wall clock, and each stream's rate after its first byte."""
    step = -(-size // streams)
    cmds = []
    for i in range(streams):
        rng = ["-r", f"{i * step}-{min(size, (i + 1) * step) - 1}"] if streams > 1 else []
        cmds.append(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
                     *rng, url_of(path)])
    t = time.time()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in cmds]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=max(1, limit - (time.time() - t)))[0].split())
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
                q.communicate()
            return {"seconds": None, "timeout": limit}
    secs = time.time() - t
    got = sum(int(o[1]) for o in outs)
    steady = [int(o[1]) / max(1e-6, float(o[3]) - float(o[2])) / 1e6 for o in outs]
    return {"seconds": round(secs, 3), "MBps": round(got / secs / 1e6, 1), "streams": streams,
            "statuses": sorted({o[0] for o in outs}), "bytes": got, "ok": got == size,
            "first_byte_ms_max": round(max(float(o[2]) for o in outs) * 1000, 1),
            "per_stream_MBps_after_first_byte": round(sum(steady) / len(steady), 1),
            "aggregate_MBps_after_first_byte": round(sum(steady), 1)}


def curl_sequential(urls, limit):
    """One curl that GETs `urls` one after the other on one kept-alive connection: the floor of a
    sequential reader of small files at the proxy's latency."""
    with tempfile.NamedTemporaryFile("w", prefix="cloudbench-urls-", suffix=".conf") as conf:
        for u in urls:
            conf.write(f'url = "{u}"\noutput = "/dev/null"\n')
        conf.flush()
        t = time.time()
        try:
            r = subprocess.run(["curl", "-sS", "-K", conf.name, "-w", "%{http_code}\n"], capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "timeout": limit}
    secs = time.time() - t
    codes = r.stdout.split()
    return {"seconds": round(secs, 3), "requests": len(codes), "ok": codes == ["200"] * len(urls),
            "ms_per_request": round(secs * 1000 / max(1, len(urls)), 1)}


def check_moto_ranges(moto, body, key, url_of):
    """curl -r against the emulator: the bytes of each range as in the object, 206/416 as S3
    answers, and how long an 8 MiB range of the big object takes (patched), against a suffix range
    of the same length (moto's own path, which still copies the whole object)."""
    size = len(body)
    cases = [("0-8388607", body[:8 * MiB])] * 3 + [(f"{size - 5 * MiB - 3}-", body[size - 5 * MiB - 3:]),
             (f"{size // 2}-{size // 2 + 1000}", body[size // 2:size // 2 + 1001]), (f"0-{size + 99}", body),
             ("-8388608", body[-8 * MiB:]), ("", body), (f"{size}-", None)]
    out, ok = [], True
    with tempfile.NamedTemporaryFile(prefix="cloudbench-range-") as tmp:
        for rng, want in cases:
            cmd = ["curl", "-sS", "-o", tmp.name, "-D", "-", "-w", "%{time_total}"] + (["-r", rng] if rng else []) + [url_of(key)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            head, _, total = r.stdout.rpartition("\n")
            status = int(head.split()[1])
            crange = re.search(r"(?im)^content-range: *(\S+ \S+)", head)
            with open(tmp.name, "rb") as f:
                got = f.read()
            good = status == 416 if want is None else (got == want and status == (200 if not rng else 206))
            ok &= good
            out.append({"range": rng or "(none)", "status": status, "bytes": len(got), "identical": good,
                        "content_range": crange.group(1) if crange else None, "ms": round(float(total) * 1000, 1)})
    ms = min(c["ms"] for c in out if c["range"] == "0-8388607")
    moto_ms = [c for c in out if c["range"] == "-8388608"][0]["ms"]
    return {"ok": ok, "object_bytes": size, "ranged_8MiB_ms": ms, "moto_suffix_8MiB_ms": moto_ms, "cases": out}


# ---- the benchmark ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: 256 MiB big object, 8 x 32 MiB, 200 small files")
    ap.add_argument("--tools", default=",".join(TOOL_NAMES), help="any of s3mount,s3fs,rclone")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="the proxy's wait before each request")
    ap.add_argument("--conn-mbps", type=float, default=25.0, help="the proxy's MB/s per connection (0: unpaced)")
    ap.add_argument("--no-cache", action="store_true", help="s3mount reads the 2nd cat without --cache too")
    ap.add_argument("--s3mount-opts", default="", help='extra s3mount options, e.g. "--cache /var/tmp/c"')
    ap.add_argument("--timeout", type=float, default=None, help="seconds one tool may take for one workload (300; quick 120)")
    ap.add_argument("--inprocess-proxy", action="store_true", help="run the proxy in this process (default: a process of its own)")
    ap.add_argument("--store", choices=("moto", "rgw"), default="moto",
                    help="moto (in this process, ranges patched) or rgw (a single-node Ceph RADOS Gateway)")
    ap.add_argument("--out", default=None, help="default docs/benchmarks/cloud.json (RGW: cloud-rgw.json)")
    ap.add_argument("--keep-log", action="store_true", help="keep the emulator's access log (its path is printed)")
    ap.add_argument("--render", action="store_true", help="only print the table of --out")
    args = ap.parse_args()
    args.out = args.out or os.path.join(ROOT, "docs", "benchmarks", "cloud.json" if args.store == "moto" else "cloud-rgw.json")
    if args.render:
        print(markdown(json.load(open(args.out))))
        return
    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t not in TOOL_NAMES:
            ap.error(f"unknown tool {t}; known: {', '.join(TOOL_NAMES)}")
    tools = [t for t in tools if available(t)]
    quick = args.quick
    timeout = args.timeout or (120 if quick else 300)
    big = (256 if quick else 1024) * MiB
    part = (32 if quick else 128) * MiB
    again = (64 if quick else 256) * MiB
    n_small = 200 if quick else 1000
    s3mount_extra = shlex.split(args.s3mount_opts)

    signal.signal(signal.SIGTERM, on_sigterm)  # so that the finally below unmounts and stops
    os.environ["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(1 << 40)  # objects stay in memory
    if args.store == "moto":
        patch_moto_ranges()
    t0 = time.time()
    load0 = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared: other load skews every figure
    work = tempfile.mkdtemp(prefix="s3mount-cloudbench-")
    moto = proxy = None

    def log(msg):
        print(f"cloudbench: [{time.time() - t0:5.0f} s] {msg}", flush=True)

    results = {"store": args.store, "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": quick,
               "config": {"latency_ms": args.latency_ms, "conn_mbps": args.conn_mbps, "timeout_s": timeout,
                          "big_bytes": big, "parallel_files": 8, "parallel_file_bytes": part, "again_bytes": again,
                          "small_files": n_small, "s3mount_opts": args.s3mount_opts, "s3mount_bin": BIN,
                          "proxy": "in-process" if args.inprocess_proxy else "own process"},
               "versions": dict(versions(), s3mount=git_rev()), "reference": {}, "workloads": []}
    try:
        moto = Rgw(memstore_gib=(big + 8 * part + again) / (1 << 30) + 4) if args.store == "rgw" else Moto()
        moto.s3.create_bucket(Bucket=BUCKET)
        log(f"seeding ({'quick' if quick else 'full'}): {big // MiB} MiB, 8 x {part // MiB} MiB, {again // MiB} MiB, {n_small} small files")
        big_body = os.urandom(big)
        put_object(moto, "big.bin", big_body)
        for i in range(8):
            put_object(moto, f"par/f{i}.bin", os.urandom(part))
        put_object(moto, "again.bin", os.urandom(again))
        rnd = random.Random(1)
        small_bytes = 0
        for i in range(n_small):
            body = os.urandom(rnd.randint(4096, 16384))
            small_bytes += len(body)
            put_object(moto, f"small/f{i:04d}.dat", body)
        results["config"]["small_bytes"] = small_bytes
        proxy = (CloudProxy(moto.port, args.latency_ms, args.conn_mbps) if args.inprocess_proxy else
                 ProxyProcess(moto.port, args.latency_ms, args.conn_mbps, log=open(os.path.join(work, "proxy.log"), "w")))

        def url_of(endpoint):
            # Signed for the host it is sent to: RGW checks that the Host header was signed as sent.
            signer = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY,
                                  aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"}))

            def url(key):
                return signer.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=7200)
            return url

        log("seeded; checking ranged reads of the emulator")
        results["moto_range_check"] = check_moto_ranges(moto, big_body, "big.bin", url_of(moto.endpoint))
        del big_body
        log(f"ranges {'identical' if results['moto_range_check']['ok'] else 'WRONG'}: 8 MiB of {big // MiB} MiB in "
            f"{results['moto_range_check']['ranged_8MiB_ms']} ms (moto's own path: {results['moto_range_check']['moto_suffix_8MiB_ms']} ms)")

        ref = results["reference"]
        for name, endpoint, streams in [("proxy_8_ranges", proxy.endpoint, 8), ("proxy_1_stream", proxy.endpoint, 1),
                                        ("loopback_8_ranges", moto.endpoint, 8), ("loopback_1_stream", moto.endpoint, 1)]:
            drop_caches()
            pos = moto.mark()
            ref[name] = curl_ranges(url_of(endpoint), "big.bin", big, streams, timeout)
            ref[name]["requests"], _ = moto.requests_since(pos, BUCKET)
            log(f"reference {name}: {ref[name].get('MBps')} MB/s in {ref[name].get('seconds')} s; after first byte "
                f"{ref[name].get('aggregate_MBps_after_first_byte')} MB/s; statuses {ref[name].get('statuses')}")
        ref["proxy_small_sequential"] = curl_sequential([url_of(proxy.endpoint)(f"small/f{i:04d}.dat") for i in range(n_small)], timeout)
        log(f"reference proxy_small_sequential: {n_small} GETs one after the other in {ref['proxy_small_sequential'].get('seconds')} s")

        def one(label, endpoint, run, mount_opts=()):
            """Mounts `label` on `endpoint`, drops the page cache, runs run(mp, entry) -> command,
            timed, requests counted, the daemon sampled; unmounts."""
            base = label
            tool = MetaTool(label, base, endpoint, work, (*s3mount_extra, *mount_opts) if base == "s3mount" else ())
            mp = tempfile.mkdtemp(prefix=f"cloudbench-{label}-")
            entry = {}
            try:
                tool.mount(BUCKET, mp)
                pid = tool.daemon_pid(mp)
                cmd = run(mp, entry)
                drop_caches()
                pos = moto.mark()
                sampler = Sampler(pid)
                t = time.time()
                try:
                    out = shell("set -o pipefail; " + cmd, timeout)
                    entry["seconds"] = round(time.time() - t, 3)
                    entry["ok"] = out.returncode == 0
                    entry["stdout"] = out.stdout.strip()[-200:]
                    if out.returncode:
                        entry["error"] = out.stderr.strip()[-300:]
                except subprocess.TimeoutExpired:
                    entry["seconds"], entry["timeout"] = None, timeout
                entry.update(sampler.stop())
                entry["requests"], entry["not_found"] = moto.requests_since(pos, BUCKET)
            except subprocess.TimeoutExpired:  # in a read before the timed one (the 1st of two)
                entry["seconds"], entry["timeout"] = None, timeout
            except Exception as e:
                entry.setdefault("seconds", None)
                entry["error"] = f"{type(e).__name__}: {e}"[:300]
            finally:
                unmount_quietly(tool, mp)
            return entry

        def workload(name, kind, via, nbytes, run, s3mount_opts=()):
            row = {"workload": name, "kind": kind, "via": via, "bytes": nbytes, "tools": {}}
            if s3mount_opts:
                row["s3mount_opts"] = " ".join(s3mount_opts)
            for label in tools:
                e = one(label, proxy.endpoint if via == "proxy" else moto.endpoint, run, s3mount_opts)
                if e.get("seconds"):
                    e["MBps"] = round(nbytes / e["seconds"] / 1e6, 1)
                row["tools"][label] = e
                log(f"{name:38s} {label:8s} {fmt_cell(kind, e)}   {e.get('requests')} {e.get('error', '')[-120:]}")
            results["workloads"].append(row)

        def cat(path):
            return lambda mp, entry: f"cat {mp}/{path} > /dev/null"

        lat = f"{args.latency_ms:g} ms + {args.conn_mbps:g} MB/s/conn"
        workload(f"cat {big // MiB} MiB ({lat})", "stream", "proxy", big, cat("big.bin"))
        workload(f"cat {big // MiB} MiB (loopback)", "stream", "loopback", big, cat("big.bin"))
        workload(f"8 x cat {part // MiB} MiB at once ({lat})", "stream", "proxy", 8 * part,
                 lambda mp, entry: " & ".join(f"cat {mp}/par/f{i}.bin > /dev/null" for i in range(8)) + " & wait")

        def second_read(mp, entry):
            drop_caches()
            pos = moto.mark()
            t = time.time()
            out = shell(f"cat {mp}/again.bin > /dev/null", timeout)
            entry["first_read"] = {"seconds": round(time.time() - t, 3), "ok": out.returncode == 0}
            entry["first_read"]["requests"], _ = moto.requests_since(pos, BUCKET)
            return f"cat {mp}/again.bin > /dev/null"
        # s3mount's local data cache serves the second read (s3fs and rclone run with their defaults).
        cache_opts = () if args.no_cache else ("--cache", os.path.join(work, "data-cache"))
        workload(f"2nd cat of {again // MiB} MiB, cache dropped ({lat})", "again", "proxy", again, second_read, cache_opts)
        workload(f"tar cf - {n_small:,} small files | wc -c ({args.latency_ms:g} ms)", "files", "proxy", small_bytes,
                 lambda mp, entry: f"tar cf - -C {mp} small | wc -c")
    finally:
        if proxy:
            proxy.stop()
        if moto:
            moto.stop()
            if args.keep_log:
                log(f"emulator access log kept: {moto.logpath}")
            elif os.path.exists(moto.logpath):
                os.remove(moto.logpath)
        shutil.rmtree(work, ignore_errors=True)

    results["total_seconds"] = round(time.time() - t0)
    results["loadavg_start"], results["loadavg_end"] = load0, [round(x, 2) for x in os.getloadavg()]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print()
    print(markdown(results))
    print(f"\ncloudbench: done in {results['total_seconds']} s; results in {args.out}")


def on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def git_rev():
    r = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %cs %s"], capture_output=True, text=True)
    return r.stdout.strip()[:100] or None


# ---- the table ----------------------------------------------------------------------------------

def gets(e):
    return e.get("requests", {}).get("GetObject", 0)


def score(kind, e):
    """The figure a row ranks by, higher better: MB/s, or 1/seconds of the (second) read."""
    if not e or not e.get("seconds") or not e.get("ok", False):
        return None
    return e["MBps"] if kind == "stream" else 1.0 / e["seconds"]


def fmt_cell(kind, e):
    if not e:
        return "—"
    if e.get("timeout"):
        return f"timeout (> {e['timeout']:.0f} s)"
    if e.get("seconds") is None or not e.get("ok", False):
        return "failed: " + (e.get("error") or "?")[-80:].replace("|", "/").replace("\n", " ")
    req = e.get("requests", {})
    mem = f"{e['peak_rss_mib']:.0f} MiB RSS" if "peak_rss_mib" in e else ""
    if kind == "stream":
        parts = [f"**{e['MBps']:.0f} MB/s**", f"{e['seconds']:.1f} s", f"{gets(e)} GET", mem]
        if e.get("threads_max"):
            parts.append(f"{e['threads_max']} threads")
        if e.get("cpu_seconds") is not None:
            parts.append(f"{e['cpu_seconds']:.1f} s CPU")
    elif kind == "again":
        first = e.get("first_read", {})
        parts = [f"1st {first.get('seconds', 0):.1f} s ({gets(first)} GET)", f"**2nd {e['seconds']:.1f} s**", f"**{gets(e)} GET**", mem]
    else:
        parts = [f"**{e['seconds']:.1f} s**", f"{gets(e)} GET", f"{req.get('HeadObject', 0)} HEAD",
                 f"{req.get('ListObjectsV2', 0) + req.get('ListObjects', 0)} LIST", mem]
    return ", ".join(p for p in parts if p)


def markdown(results):
    tools = [t for t in TOOL_NAMES if any(t in r["tools"] for r in results["workloads"])]
    ref = results.get("reference", {})
    cfg = results["config"]
    chk = results.get("moto_range_check", {})
    store = results.get("store", "moto")
    lines = [f"Run: `python3 scripts/cloudbench.py{' --quick' if results['quick'] else ''}"
             f"{' --store ' + store if store != 'moto' else ''}` on {results['machine']}, store "
             f"{'moto (in-process, ranges patched)' if store == 'moto' else 'Ceph RGW 16.2 (single node, memstore)'}, "
             f"{results['date']}, {results.get('total_seconds', '?')} s in all; s3mount {results['versions'].get('s3mount')}"
             + (f", options `{cfg['s3mount_opts']}`" if cfg.get("s3mount_opts") else "") + ".",
             f"Load average (1, 5, 15 min) at start {results.get('loadavg_start')}, at end {results.get('loadavg_end')}. "
             f"Proxy: {cfg['latency_ms']:g} ms before each request, {cfg['conn_mbps']:g} MB/s per connection ({cfg['proxy']}).", ""]
    for name, title in [("proxy_8_ranges", "8 × `curl -r` through the proxy (ceiling)"),
                        ("proxy_1_stream", "1 × `curl` through the proxy"),
                        ("loopback_8_ranges", "8 × `curl -r` on loopback"), ("loopback_1_stream", "1 × `curl` on loopback")]:
        r = ref.get(name)
        if r and r.get("seconds"):
            lines.append(f"- {title}: **{r['MBps']:.0f} MB/s** ({r['seconds']:.1f} s; "
                         f"{r['aggregate_MBps_after_first_byte']:.0f} MB/s counted from each stream's first byte)")
    r = ref.get("proxy_small_sequential")
    if r and r.get("seconds"):
        lines.append(f"- 1 × `curl` GETting the {r['requests']:,} small files one after the other through the proxy, one connection: "
                     f"**{r['seconds']:.1f} s** ({r['ms_per_request']:.1f} ms each; the floor of a sequential reader)")
    if chk:
        lines.append(f"- store: 8 MiB range of the {chk['object_bytes'] // MiB} MiB object in {chk['ranged_8MiB_ms']:.0f} ms "
                     + (f"(moto's unpatched path: {chk['moto_suffix_8MiB_ms']:.0f} ms)" if store == "moto" else
                        f"(a suffix range of the same length: {chk['moto_suffix_8MiB_ms']:.0f} ms)")
                     + f"; ranges byte-identical: {chk['ok']}")
    lines += ["", "| workload | " + " | ".join(tools) + " | best peer | s3mount vs best peer | s3mount vs ceiling |",
              "|---" * (len(tools) + 4) + "|"]
    for row in results["workloads"]:
        kind = row["kind"]
        me = row["tools"].get("s3mount")
        peers = [(t, score(kind, e)) for t, e in row["tools"].items() if t != "s3mount" and score(kind, e)]
        peer = max(peers, key=lambda p: p[1]) if peers else (None, None)
        mine = score(kind, me)
        ratio = f"{mine / peer[1]:.2f}×" if mine and peer[1] else "—"
        ceiling = "—"
        if kind == "stream" and mine:
            top = ref.get("proxy_8_ranges" if row["via"] == "proxy" else "loopback_8_ranges", {}).get("MBps")
            if row["via"] == "loopback":
                top = max(top or 0, ref.get("loopback_1_stream", {}).get("MBps") or 0)
            ceiling = f"{mine / top:.0%}" if top else "—"
        elif kind == "files" and mine and (ref.get("proxy_small_sequential") or {}).get("seconds"):
            ceiling = f"{mine * ref['proxy_small_sequential']['seconds']:.0%}"
        name = row["workload"].replace("|", "\\|")
        lines.append(f"| {name} | " + " | ".join(fmt_cell(kind, row["tools"].get(t)) for t in tools)
                     + f" | {peer[0] or '—'} | {ratio} | {ceiling} |")
    lines += ["", "Ratios: MB/s (or 1/seconds of the read timed) of s3mount over the best peer's; above 1 s3mount is faster. "
              "Ceiling: 8 parallel curl ranges, through the proxy or on loopback (the better of 8 and 1 there); "
              "for tar, one curl GETting the files one after the other (a parallel reader could beat it)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
