#!/usr/bin/env python3
"""Many small files written at cloud speed (issue 30): s3mount (default, and with extra options,
e.g. --write-back) against s3fs and rclone mount --vfs-cache-mode writes. Each tool runs four
workloads, each on a fresh mount of one bucket of its own, in this order:

  1. `tar xf` of a real tree of small files: by default the C/C++ headers of Node.js and LLVM 14
     (/usr/include/node and /usr/include/llvm-14, Debian packages libnode-dev and llvm-14-dev:
     4,045 files, 74 MB of tar), packed deterministically here (sorted, fixed mtime, owner 0);
  2. `git clone file://` of a bare copy of this repository (at --git-rev, default HEAD), working
     tree checked out into the mount;
  3. `cp -r` of 1,000 files of 30,000 random bytes;
  4. `rm -r` of all of it.

Measured: the time until the command returns, and until S3 holds every file byte-equal (the store
listed directly every 0.3 s after the command returned, each ETag compared with the file's MD5; a
multipart object is read back once; .git/config and .git/index, which depend on the filesystem
git finds, only have to be there; for rm: until no key is left), and the requests the store
served from the command's start until the mount stopped (unmount included; the polls' own
requests taken off), by type, from the store's access log. At each latency of --latencies: 0 ms is the store directly, more is through
scripts/cloudproxy.py (that many ms before each request, 25 MB/s per connection). s3fs at a
latency above 0 writes about 7 files a second: it runs a 500-file slice of the tar and no git clone
(--slice 0: everything).

The stores are the integration tests' own (Tests/integration/conftest.py): moto_server, or with
--store rgw a single-node Ceph RADOS Gateway (scripts/rgwcluster.py).

    S3MOUNT_BIN=.build/release/s3mount python3 scripts/smallbench.py [--store moto|rgw] [--latencies 0,20]
        [--tools "s3mount,s3mount --write-back,s3fs,rclone"] [--git-rev 3fbda00] [--quick]
    python3 scripts/smallbench.py --render [--store rgw]      (the tables again from the JSON)

An s3mount entry of --tools may carry options; one this build does not know makes its rows
"n/a (option not in this build)". Writes docs/benchmarks/smallfiles.json (RGW:
smallfiles-rgw.json) and prints markdown tables.
"""
import argparse
import hashlib
import io
import json
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "Tests", "integration"))
import conftest  # noqa: E402  (the tests' stores; it puts scripts/ on sys.path too)
import s3log  # noqa: E402
from bench import BIN, KEY, SECRET  # noqa: E402
from cloudproxy import ProxyProcess  # noqa: E402
from metabench import MetaTool, available, shell, unmount_quietly, versions  # noqa: E402

MTIME = 1_600_000_000
PRESENT = None  # a file that only has to be in S3, whatever its bytes
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "bench",
           "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_COMMITTER_DATE": f"{MTIME} +0000"}
SHORT = {"PutObject": "PUT", "GetObject": "GET", "HeadObject": "HEAD", "ListObjectsV2": "LIST", "ListObjects": "LIST",
         "DeleteObject": "DELETE", "DeleteObjects": "DELETE×N", "CreateMultipartUpload": "MPU", "UploadPart": "PART",
         "CompleteMultipartUpload": "MPU-END", "AbortMultipartUpload": "MPU-ABORT", "HeadBucket": "HEAD-BUCKET"}


def md5(data):
    return hashlib.md5(data).hexdigest()


# ---- the data: {key: md5, or PRESENT} of what each workload writes ----------------------------------

def make_tar(path, dirs, limit):
    """A deterministic tar of the regular files under `dirs` (sorted; named from their parent),
    the first `limit` of them if set; returns {relative path: md5}."""
    files = sorted(os.path.join(r, f) for d in dirs for r, _, fs in os.walk(d) for f in fs
                   if os.path.isfile(os.path.join(r, f)) and not os.path.islink(os.path.join(r, f)))
    files = files[:limit] if limit else files
    want, dirs_done = {}, set()
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for f in files:
            rel = os.path.relpath(f, os.path.dirname(os.path.commonpath(dirs)))
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs_done:
                    dirs_done.add(d)
                    tar.addfile(tarinfo(d, tarfile.DIRTYPE, 0o755))
            data = open(f, "rb").read()
            tar.addfile(tarinfo(rel, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
            want[rel] = md5(data)
    return want


def tarinfo(name, kind, mode, size=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime, ti.uname, ti.gname = kind, mode, size, MTIME, "root", "root"
    return ti


def tree(path):
    """{relative path: md5} of the regular files under `path`. What git writes of the filesystem
    it finds (.git/config: core.filemode; .git/index: stat times) only has to be there."""
    out = {}
    for r, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(r, f)
            if os.path.isfile(p) and not os.path.islink(p):
                rel = os.path.relpath(p, path)
                out[rel] = PRESENT if rel in (".git/index", ".git/config") else md5(open(p, "rb").read())
    return out


def git_cmd(args):
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in GIT_ENV.items()) + " git " + args


def prepare(work, args):
    """The tarballs, a bare repository (packed single-threaded: the same pack every clone) and its
    reference clone, and the cp source; returns the workloads."""
    full = make_tar(os.path.join(work, "tree.tar"), args.tar_dirs.split(","), args.tar_files)
    part = make_tar(os.path.join(work, "slice.tar"), args.tar_dirs.split(","), args.slice) if args.slice else None
    bare = os.path.join(work, "repo.git")
    subprocess.run(f"git clone -q --bare --no-local {shlex.quote(ROOT)} {bare} && git -C {bare} config pack.threads 1 && "
                   f"git -C {bare} branch -q -f bench {shlex.quote(args.git_rev)} && git -C {bare} symbolic-ref HEAD refs/heads/bench",
                   shell=True, check=True)
    clone = git_cmd(f"clone -q file://{bare}")
    subprocess.run(f"{clone} {work}/ref1 && {clone} {work}/ref2", shell=True, check=True)
    ref = tree(os.path.join(work, "ref1"))
    if ref != tree(os.path.join(work, "ref2")):
        raise SystemExit("smallbench: two clones of the repository differ: git clone is not deterministic here")
    src = os.path.join(work, "cp-src")
    os.mkdir(src)
    rnd, cp = random.Random(30), {}
    for i in range(args.cp_files):
        data = rnd.randbytes(args.cp_size)
        with open(os.path.join(src, f"f{i:04d}.bin"), "wb") as f:
            f.write(data)
        cp[f"f{i:04d}.bin"] = md5(data)
    size = os.path.getsize(os.path.join(work, "tree.tar"))
    return [
        {"name": f"tar xf ({len(full):,} files, {size / 1e6:.0f} MB tar)", "prefix": "tar/", "want": full,
         "cmd": lambda mp: f"mkdir {mp}/tar && tar xf {work}/tree.tar -C {mp}/tar",
         "slice": part and {"want": part, "cmd": lambda mp: f"mkdir {mp}/tar && tar xf {work}/slice.tar -C {mp}/tar"}},
        {"name": f"git clone ({len(ref):,} files)", "prefix": "git/", "want": ref, "skip_slow": True,
         "cmd": lambda mp: f"{clone} {mp}/git"},
        {"name": f"cp -r ({args.cp_files:,} × {args.cp_size:,} B)", "prefix": "cp/", "want": cp,
         "cmd": lambda mp: f"cp -r {src} {mp}/cp"},
        {"name": "rm -r (all of the above)", "prefix": None, "want": {}, "cmd": None},
    ]


# ---- S3 as it is: listed directly, the poller's own requests counted to be taken off -------------

class Poller:
    def __init__(self, store):
        self.s3 = store.client(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
        self.s3.meta.events.register("before-send.s3", self._count)
        self.sent, self.read_back = {}, {}

    def _count(self, request, **kw):
        path = request.url.split("//", 1)[1].split("/", 1)[1]
        op = s3log.classify(request.method, "/" + path)
        self.sent[op] = self.sent.get(op, 0) + 1

    def listing(self, bucket, prefixes):
        have = {}
        for prefix in prefixes:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                have.update({o["Key"]: (o["ETag"].strip('"'), o["Size"]) for o in page.get("Contents", [])})
        return have

    def equal(self, bucket, key, got, want):
        if got is None:
            return False
        etag, _ = got
        if want is PRESENT:
            return True
        if "-" not in etag:
            return etag == want
        if self.read_back.get((key, etag)) is None:  # multipart: its ETag is no MD5; read it once
            self.read_back[(key, etag)] = md5(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == want
        return self.read_back[(key, etag)]

    def settle(self, bucket, prefixes, want, t0, limit):
        """Polls until S3 holds `want` ({key: md5}; empty: nothing under `prefixes`), from the
        moment the command returned: seconds since t0, or what is missing at the deadline."""
        deadline, polls = time.time() + limit, 0
        while True:
            have = self.listing(bucket, prefixes)
            polls += 1
            missing = [k for k, w in want.items() if not self.equal(bucket, k, have.get(k), w)] if want else sorted(have)
            if not missing:
                return {"in_s3_s": round(time.time() - t0, 2), "at_return": polls == 1, "polls": polls}
            if time.time() > deadline:
                return {"in_s3_s": None, "settle_timeout": limit, "missing": len(missing), "missing_first": missing[:3]}
            time.sleep(0.3)


# ---- one tool, one latency -----------------------------------------------------------------------

def unknown_option(extra):
    """The first option of `extra` that the s3mount binary's --help does not name, or None."""
    helptext = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
    for opt in extra:
        name = opt.split("=", 1)[0]
        if name.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", helptext):
            return name
    return None


def run_tool(store, endpoint, bucket, label, extra, slow, workloads, work, args, log):
    base = label.split()[0]
    s3 = store.client(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    s3.create_bucket(Bucket=bucket)
    poller, rows = Poller(store), {}
    removed = {}  # workload name: the files it wrote, for the rm at the end
    for w in workloads:
        if slow and w.get("skip_slow"):
            rows[w["name"]] = {"skipped": "not run (s3fs at this latency: subset)"}
            continue
        want, cmd = (w["slice"]["want"], w["slice"]["cmd"]) if slow and w.get("slice") else (w["want"], w["cmd"])
        prefixes = [w["prefix"]] if w["prefix"] else [x["prefix"] for x in workloads if x["prefix"]]
        e, pos = {"files": len(want), "subset": want is not w["want"]}, None
        tool = MetaTool(label, base, endpoint, work, extra)
        mp = tempfile.mkdtemp(prefix="smallbench-")
        try:
            tool.mount(bucket, mp)
            if w["cmd"] is None:  # rm -r of the trees the tool's earlier workloads left
                left = [x for x in workloads if x["name"] in removed and os.path.isdir(mp + "/" + x["prefix"])]
                e["files"] = sum(len(removed[x["name"]]) for x in left)
                cmd = lambda mp: "rm -r " + " ".join(f"{mp}/{x['prefix'].rstrip('/')}" for x in left) if left else "true"
            pos, poller.sent = store.log_position(), {}
            t0 = time.time()
            try:
                out = shell(cmd(mp), args.timeout)
                e["returns_s"], e["ok"] = round(time.time() - t0, 2), out.returncode == 0
                if out.returncode:
                    e["error"] = out.stderr.strip()[-300:]
            except subprocess.TimeoutExpired:
                e["returns_s"], e["timeout"] = None, args.timeout
            e.update(poller.settle(bucket, prefixes, {w["prefix"] + k: v for k, v in want.items()} if want else {},
                                   t0, args.settle_timeout if e.get("ok") else 0))
        except Exception as ex:
            e["error"] = f"{type(ex).__name__}: {ex}"[:300]
        finally:
            unmount_quietly(tool, mp)
        if pos is not None:
            served = store.requests_since(pos, bucket)
            counts = {}
            for op, _, _ in served:
                counts[op] = counts.get(op, 0) + 1
            for op, n in poller.sent.items():
                counts[op] = counts.get(op, 0) - n
            e["requests"] = {op: n for op, n in counts.items() if n}
            e["not_found"] = sum(1 for _, status, _ in served if status == 404)
        if w["prefix"]:
            removed[w["name"]] = want
        rows[w["name"]] = e
        log(f"{label:22s} {w['name']:34s} {cell_times(e)}  {cell_requests(e)}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", choices=("moto", "rgw"), default="moto")
    ap.add_argument("--latencies", default="0,20", help="ms before each request, one run per value (0: no proxy)")
    ap.add_argument("--conn-mbps", type=float, default=25.0, help="the proxy's MB/s per connection")
    ap.add_argument("--tools", default="s3mount,s3mount --write-back,s3fs,rclone",
                    help="comma-separated: s3mount [OPTIONS...], s3fs, rclone")
    ap.add_argument("--tar-dirs", default="/usr/include/node,/usr/include/llvm-14", help="the trees in the tarball")
    ap.add_argument("--tar-files", type=int, default=0, help="only the first N files of them (0: all)")
    ap.add_argument("--slice", type=int, default=500, help="files of the tar s3fs extracts above 0 ms, and no git clone (0: all)")
    ap.add_argument("--git-rev", default="HEAD", help="the commit of this repository the clone checks out (same figures: same commit)")
    ap.add_argument("--cp-files", type=int, default=1000)
    ap.add_argument("--cp-size", type=int, default=30000)
    ap.add_argument("--timeout", type=float, default=900, help="seconds a command may take")
    ap.add_argument("--settle-timeout", type=float, default=180, help="seconds S3 may take to hold it all after that")
    ap.add_argument("--quick", action="store_true", help="a try-out: 300 files of the tar, 100 to cp, 0 ms only")
    ap.add_argument("--out", default=None, help="default docs/benchmarks/smallfiles.json (RGW: smallfiles-rgw.json)")
    ap.add_argument("--render", action="store_true", help="only print the tables of --out")
    args = ap.parse_args()
    args.out = args.out or os.path.join(ROOT, "docs", "benchmarks", "smallfiles.json" if args.store == "moto" else "smallfiles-rgw.json")
    if args.render:
        print(markdown(json.load(open(args.out))))
        return
    if args.quick:
        args.tar_files, args.cp_files, args.latencies, args.slice = 300, 100, "0", 50
    t0, work, store = time.time(), tempfile.mkdtemp(prefix="smallbench-"), None

    def log(msg):
        print(f"smallbench: [{time.time() - t0:5.0f} s] {msg}", flush=True)

    results = {"store": args.store, "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}", "s3mount_bin": BIN,
               "versions": dict(versions(), s3mount=subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %cs"],
                                                                    capture_output=True, text=True).stdout.strip()),
               "loadavg_start": os.getloadavg(), "runs": []}
    try:
        workloads = prepare(work, args)
        results["workloads"] = [w["name"] for w in workloads]
        results["git_rev"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.git_rev], capture_output=True,
                                            text=True).stdout.strip()
        log("prepared: " + "; ".join(w["name"] for w in workloads))
        store = conftest.Rgw(os.path.join(work, "rgw")) if args.store == "rgw" else conftest.Moto(work)
        store.allow_key(KEY, SECRET)
        for lat in [float(x) for x in args.latencies.split(",")]:
            proxy = ProxyProcess(store.port, lat, args.conn_mbps) if lat else None
            try:
                for i, entry in enumerate(t for t in args.tools.split(",") if t.strip()):
                    label, extra = entry.strip(), shlex.split(entry)[1:]
                    run = {"latency_ms": lat, "tool": label}
                    missing = unknown_option(extra) if label.startswith("s3mount") else None
                    if missing or not available(label.split()[0]):
                        run["na"] = "n/a (option not in this build)" if missing else "n/a (not installed)"
                        log(f"{label}: {run['na']}")
                    else:
                        run["rows"] = run_tool(store, proxy.endpoint if proxy else store.endpoint, f"small-{i}-{lat:g}ms",
                                               label, extra, label == "s3fs" and lat > 0 and args.slice > 0,
                                               workloads, work, args, log)
                    results["runs"].append(run)
            finally:
                if proxy:
                    proxy.stop()
    finally:
        if store:
            store.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"], results["loadavg_end"] = round(time.time() - t0), os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print("\n" + markdown(results))
    print(f"\nsmallbench: done in {results['total_seconds']} s; results in {args.out}")


# ---- the tables ----------------------------------------------------------------------------------

def cell_times(e):
    if e.get("skipped"):
        return e["skipped"]
    if e.get("error") and e.get("returns_s") is None:
        return "failed: " + e["error"][-100:].replace("|", "/").replace("\n", " ") + " | —"
    ret = f"timeout (> {e['timeout']:.0f} s)" if e.get("timeout") else f"{e['returns_s']:.1f} s"
    if e.get("error"):
        ret += " (exit ≠ 0: " + e["error"][-80:].replace("|", "/").replace("\n", " ") + ")"
    if e.get("in_s3_s") is None and not e.get("ok"):
        s3 = "— (the command failed)"
    elif e.get("in_s3_s") is None:
        s3 = f"not after {e.get('settle_timeout', 0):.0f} s more ({e.get('missing')} missing or left, e.g. {e.get('missing_first')})"
    else:
        s3 = f"{e['in_s3_s']:.1f} s" + (" (= returns)" if e.get("at_return") else "")
    return (f"{ret} *({e['files']:,} files: subset)*" if e.get("subset") else ret) + f" | {s3}"


def cell_requests(e):
    req = {}
    for op, n in e.get("requests", {}).items():
        req[SHORT.get(op, op)] = req.get(SHORT.get(op, op), 0) + n
    text = ", ".join(f"{n:,} {op}" for op, n in sorted(req.items(), key=lambda x: -x[1]))
    if e.get("not_found"):
        text += f" ({e['not_found']:,} × 404)"
    total = sum(req.values())
    return f"{text or '—'} | {total / e['files']:.2f}" if e.get("files") else f"{text or '—'} | —"


def markdown(results):
    lines = [f"Store {results['store']}, {results['date']}, {results['machine']}, s3mount {results['versions'].get('s3mount')} "
             f"({results['s3mount_bin'].replace(ROOT + '/', '')}), {results['versions'].get('s3fs')}, "
             f"{results['versions'].get('rclone')}; git clone of {results.get('git_rev', 'HEAD')}; "
             f"{results.get('total_seconds', '?')} s in all; load average "
             f"{[round(x, 1) for x in results['loadavg_start']]} at start, {[round(x, 1) for x in results.get('loadavg_end', [])]} at end."]
    for lat in sorted({r["latency_ms"] for r in results["runs"]}):
        lines += ["", f"**{lat:g} ms per request**" + (" (scripts/cloudproxy.py)" if lat else " (the store directly)"), "",
                  "| workload | tool | returns | all in S3 | requests by type | requests per file |", "|---|---|---|---|---|---|"]
        runs = [r for r in results["runs"] if r["latency_ms"] == lat]
        for w in results["workloads"]:
            for r in runs:
                e = r.get("rows", {}).get(w)
                if e and w == results["workloads"][-1] and any(x.get("subset") for x in r["rows"].values()):
                    e = dict(e, subset=True)  # the rm of what a subset wrote
                name = w.replace("|", "\\|")
                if e is None:
                    lines.append(f"| {name} | {r['tool']} | {r.get('na', '—')} | | | |")
                elif e.get("skipped"):
                    lines.append(f"| {name} | {r['tool']} | {e['skipped']} | | | |")
                else:
                    lines.append(f"| {name} | {r['tool']} | {cell_times(e)} | {cell_requests(e)} |")
    lines += ["", "Returns: until the command exits. All in S3: from the command's start until a listing of the store "
              "(every 0.3 s from its return) shows every file with its MD5 (rm: no key left); \"= returns\": the first "
              "listing did. Requests: served by the store from the command's start until the mount stopped, "
              "unmount included (PUT counts copies too; DELETE×N is a multi-object delete); per file: of the files "
              "the workload wrote or removed."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
