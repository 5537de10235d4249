#!/usr/bin/env python3
"""Benchmark of POSIX metadata kept in S3 (modes, owners, mtimes): s3mount (its per-directory
index `.s3mount-meta`, and `--metadata head`) against s3fs and rclone mount, on the emulator and
harness of scripts/bench.py, every request counted from moto's own log. Three workloads, each tool
on a fresh mount:

 1. `ls -la` of 2,500 files written by s3mount (modes 0600/0640 alternating, explicit mtimes):
    seconds, requests by operation, 404s, and how many lines show the right mode and mtime.
 2. `ls -la` of 2,500 files written by s3fs (chmod 640, explicit mtimes): the same.
 3. `rsync -a` of the repo's docs/ into the mount, then `rsync -a -i --stats` again on the same
    mount and after a remount: files transferred, requests, seconds.

The listings run against the emulator directly and behind a proxy that adds 20 ms to each request
(`--no-ls-latency`: directly only); rsync always both ways. Writes results to
docs/benchmarks/metadata.json and prints a markdown table per workload.

    S3MOUNT_BIN=.build/release/s3mount python3 scripts/metabench.py [--quick] [--tools ...]
"""
import argparse
import atexit
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from bench import BIN, ROOT, Moto, Tool, mounted
from s3proxy import ForwardingProxy

MTIME0 = 1_600_000_000  # files written by s3mount: mtime MTIME0 + i
MTIME1 = 1_500_000_000  # files written by s3fs: mtime MTIME1 + i
TOOL_BINARY = {"s3mount": BIN, "s3fs": "s3fs", "rclone": "rclone"}


class MetaTool(Tool):
    """bench.Tool with a label of its own and extra s3mount options (`--metadata head`). Mounts
    still there at exit (an exception on the way) are unmounted then."""
    live = {}

    def __init__(self, label, base, endpoint, workdir, extra=()):
        super().__init__(base, endpoint, workdir)
        self.label, self.extra = label, list(extra)

    def mount(self, bucket, mp):
        MetaTool.live[mp] = self
        if self.name.startswith("rclone"):
            # A VFS cache of its own per mount: a fresh mount knows only what S3 holds (rclone
            # would otherwise take modtimes from files a previous mount left in ~/.cache/rclone).
            os.environ["RCLONE_CACHE_DIR"] = tempfile.mkdtemp(prefix="rclone-cache-", dir=self.workdir)
            try:
                return super().mount(bucket, mp)
            finally:
                os.environ.pop("RCLONE_CACHE_DIR", None)
        if self.name != "s3mount" or not self.extra:
            return super().mount(bucket, mp)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")
        subprocess.run([BIN, bucket, mp, "--endpoint-url", self.endpoint, "--force-path-style", *self.extra],
                       env=env, check=True, capture_output=True)
        deadline = time.time() + 30
        while not mounted(mp) and time.time() < deadline:
            time.sleep(0.1)
        if not mounted(mp):
            raise RuntimeError(f"{self.label} did not mount")

    def unmount(self, mp):
        MetaTool.live.pop(mp, None)
        pid = self.daemon_pid(mp) if self.name == "s3mount" else None
        super().unmount(mp)
        # s3mount writes what it still holds (deferred header copies, indexes) after the kernel
        # lets go: the next workload must not see those requests, nor a bucket half written.
        deadline = time.time() + 120
        while pid and time.time() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.1)


@atexit.register
def _unmount_left():
    for mp, tool in list(MetaTool.live.items()):
        tool.unmount(mp)


TOOLS = {
    "s3mount": ("s3mount", []),
    "s3mount-head": ("s3mount", ["--metadata", "head"]),
    "s3fs": ("s3fs", []),
    "rclone": ("rclone", []),
    "rclone-modtime": ("rclone-modtime", []),
}


def available(label):
    base = TOOLS[label][0]
    return shutil.which(TOOL_BINARY.get(base, "rclone")) is not None


def shell(cmd, limit):
    """bash -c `cmd` in a session of its own, killed whole on timeout (a process left in the
    mount would stall its unmount)."""
    p = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def unmount_quietly(tool, mp):
    try:
        tool.unmount(mp)
    finally:
        try:
            os.rmdir(mp)
        except OSError:
            pass


def expected_s3mount(i):
    return (0o600 if i % 2 == 0 else 0o640), MTIME0 + i


def expected_s3fs(i):
    return 0o640, MTIME1 + i


def check_listing(text, n, expected):
    """Counts the lines of `ls -la --time-style=+%s` that show the mode and mtime written."""
    modes_right = mtimes_right = files = 0
    extra, shown = [], {}
    for line in text.splitlines():
        f = line.split(None, 6)
        if len(f) < 7 or line.startswith("total"):
            continue
        perms, mtime, name = f[0], f[5], f[6]
        if name in (".", ".."):
            continue
        m = re.fullmatch(r"f(\d{5})", name)
        if not m or int(m.group(1)) >= n:
            extra.append(name)
            continue
        files += 1
        mode, want_mtime = expected(int(m.group(1)))
        want = "-" + stat.filemode(stat.S_IFREG | mode)[1:]
        shown[perms] = shown.get(perms, 0) + 1
        if perms[:10] == want:
            modes_right += 1
        if mtime == str(want_mtime):
            mtimes_right += 1
    return {"files_listed": files, "modes_right": modes_right, "mtimes_right": mtimes_right,
            "modes_shown": shown, "extra_entries": extra}


def s3fs_headers_right(moto, bucket, i):
    """Whether the object of file i holds the mode and mtime headers it was given (read from
    moto's backend: no request)."""
    mode, mtime = expected_s3fs(i)
    try:
        h = moto.backend().get_object(bucket, f"d/f{i:05d}").metadata
    except Exception:
        return False
    return h.get("x-amz-meta-mode") == str(stat.S_IFREG | mode) and h.get("x-amz-meta-mtime") == str(mtime)


def parallel(n, fn, deadline, threads=8):
    """fn(i) for i < n on `threads` threads, skipping what is left after `deadline`; the count done."""
    def one(i):
        if time.time() > deadline:
            return 0
        fn(i)
        return 1
    with ThreadPoolExecutor(threads) as ex:
        return sum(ex.map(one, range(n)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="500 files, short timeouts, no proxied listings (about 2 minutes)")
    ap.add_argument("--files", type=int, default=None, help="files per listed directory (default 2,500; quick 500)")
    ap.add_argument("--tools", default="s3mount,s3mount-head,s3fs,rclone,rclone-modtime",
                    help="tools to run, where a workload lists them (s3mount-head = s3mount --metadata head)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds a single run may take (default 120; quick 30)")
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--no-ls-latency", action="store_true", help="the listings only against the emulator directly")
    ap.add_argument("--s3fs-writer", choices=["s3fs", "boto3"], default="s3fs",
                    help="workload 2: write the files through an s3fs mount (8 threads), or PUT them with s3fs's headers")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs"), help="the tree rsync copies")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks", "metadata.json"))
    args = ap.parse_args()
    os.umask(0o022)  # the modes created are the modes asked for
    quick = args.quick
    n = args.files or (500 if quick else 2500)
    timeout = args.timeout or (30 if quick else 120)
    wanted = [t for t in args.tools.split(",") if t]
    for t in wanted:
        if t not in TOOLS:
            ap.error(f"unknown tool {t}; known: {', '.join(TOOLS)}")
    ls_profiles = [False] if (quick or args.no_ls_latency) else [False, True]

    work = tempfile.mkdtemp(prefix="s3mount-metabench-")
    moto = Moto()
    proxy = ForwardingProxy(moto.port, before=lambda method, path: time.sleep(args.latency_ms / 1000.0))
    s3 = moto.s3
    t0 = time.time()
    lat = f"+{int(args.latency_ms)} ms/request"
    results = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": quick, "files": n,
               "timeout_s": timeout, "latency_ms": args.latency_ms, "versions": versions(), "workloads": {}}

    def log(msg):
        print(f"metabench: [{time.time() - t0:5.0f} s] {msg}", flush=True)

    def endpoint(via_proxy):
        return proxy.endpoint if via_proxy else moto.endpoint

    # ---- 1. files written by s3mount ------------------------------------------------------
    b1 = "meta-by-s3mount"
    s3.create_bucket(Bucket=b1)
    prep = {}
    writer = MetaTool("s3mount", "s3mount", moto.endpoint, work)
    mp = tempfile.mkdtemp(prefix="metabench-write-")
    t = time.time()
    try:
        writer.mount(b1, mp)
        pos = moto.mark()
        os.mkdir(os.path.join(mp, "d"), 0o755)

        def write1(i):
            mode, mtime = expected_s3mount(i)
            p = os.path.join(mp, "d", f"f{i:05d}")
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
            os.write(fd, b"x" * 100)
            os.close(fd)
            os.utime(p, (mtime, mtime))
        done = parallel(n, write1, time.time() + 4 * timeout)
        time.sleep(2.0)  # the index is written back debounced (1 s)
        prep["written"] = done
        prep["write_seconds"] = round(time.time() - t, 1)
        prep["write_requests"], _ = moto.requests_since(pos, b1)
    finally:
        unmount_quietly(writer, mp)
    try:
        prep["index_bytes"] = s3.head_object(Bucket=b1, Key="d/.s3mount-meta")["ContentLength"]
    except Exception as e:
        prep["index_bytes"] = None
        prep["index_error"] = str(e)[:120]
    prep["headers_of_f00001"] = s3.head_object(Bucket=b1, Key="d/f00001")["Metadata"]
    log(f"wrote {prep['written']} files through s3mount in {prep['write_seconds']} s; index {prep['index_bytes']} bytes; "
        f"f00001 headers {prep['headers_of_f00001']}")

    def listing(label, bucket, expected, via_proxy):
        base, extra = TOOLS[label]
        tool = MetaTool(label, base, endpoint(via_proxy), work, extra)
        mp = tempfile.mkdtemp(prefix=f"metabench-{label}-")
        entry = {"tool": label, "latency": lat if via_proxy else "loopback"}
        try:
            tool.mount(bucket, mp)
            pos = moto.mark()
            t = time.time()
            try:
                out = shell(f"ls -la --time-style=+%s {mp}/d", timeout)
                entry["seconds"] = round(time.time() - t, 3)
                entry["ok"] = out.returncode == 0
                if out.returncode != 0:
                    entry["error"] = out.stderr[-200:]
                entry.update(check_listing(out.stdout, n, expected))
            except subprocess.TimeoutExpired:
                entry["seconds"] = None
                entry["timeout"] = timeout
            entry["requests"], entry["not_found"] = moto.requests_since(pos, bucket)
            entry["requests_total"] = sum(entry["requests"].values())
        except Exception as e:
            entry["seconds"] = None
            entry["error"] = str(e)[:200]
        finally:
            unmount_quietly(tool, mp)
        log(f"ls -la {label:15s} {entry['latency']:18s} {entry.get('seconds')} s {entry.get('requests')} 404s={entry.get('not_found')} "
            f"modes right {entry.get('modes_right')}/{n} mtimes right {entry.get('mtimes_right')}/{n} extra {entry.get('extra_entries')}")
        return entry

    rows = []
    for via_proxy in ls_profiles:
        for label in [t for t in ["s3mount", "s3fs", "rclone-modtime", "rclone"] if t in wanted and available(t)]:
            rows.append(listing(label, b1, expected_s3mount, via_proxy))
    results["workloads"]["ls_written_by_s3mount"] = {"prep": prep, "runs": rows}

    # ---- 2. files written by s3fs ---------------------------------------------------------
    b2 = "meta-by-s3fs"
    s3.create_bucket(Bucket=b2)
    prep = {"writer": args.s3fs_writer}
    t = time.time()
    pos = moto.mark()
    if args.s3fs_writer == "s3fs" and shutil.which("s3fs"):
        writer = MetaTool("s3fs", "s3fs", moto.endpoint, work)
        mp = tempfile.mkdtemp(prefix="metabench-write-")
        try:
            writer.mount(b2, mp)
            os.mkdir(os.path.join(mp, "d"), 0o755)

            def write2(i):
                mode, mtime = expected_s3fs(i)
                p = os.path.join(mp, "d", f"f{i:05d}")
                with open(p, "wb") as f:
                    f.write(b"y" * 100)
                os.chmod(p, mode)
                os.utime(p, (mtime, mtime))
            prep["written"] = parallel(n, write2, time.time() + 4 * timeout)
            # Under parallel writers s3fs sometimes answers chmod and utime with success but
            # sends nothing (its headers stay those of the create): found from the backend, and
            # done again one at a time, so the files hold what s3fs is meant to write.
            prep["dropped_by_s3fs"] = bad = [i for i in range(n) if not s3fs_headers_right(moto, b2, i)]
            for _ in range(3):
                for i in bad:
                    mode, mtime = expected_s3fs(i)
                    p = os.path.join(mp, "d", f"f{i:05d}")
                    os.chmod(p, mode)
                    os.utime(p, (mtime, mtime))
                bad = [i for i in bad if not s3fs_headers_right(moto, b2, i)]
            prep["still_wrong"] = bad
        finally:
            unmount_quietly(writer, mp)
    else:
        # The headers s3fs writes: decimal st_mode with S_IFREG, uid, gid, mtime in seconds.
        prep["writer"] = "boto3"
        s3.put_object(Bucket=b2, Key="d/", Body=b"", Metadata={"mode": str(stat.S_IFDIR | 0o755), "uid": "0", "gid": "0",
                                                                "mtime": str(MTIME1)})

        def put2(i):
            mode, mtime = expected_s3fs(i)
            s3.put_object(Bucket=b2, Key=f"d/f{i:05d}", Body=b"y" * 100, ContentType="application/octet-stream",
                          Metadata={"mode": str(stat.S_IFREG | mode), "uid": str(os.getuid()), "gid": str(os.getgid()),
                                    "mtime": str(mtime)})
        prep["written"] = parallel(n, put2, time.time() + 4 * timeout, threads=16)
    prep["write_seconds"] = round(time.time() - t, 1)
    prep["write_requests"], _ = moto.requests_since(pos, b2)
    prep["headers_of_f00001"] = s3.head_object(Bucket=b2, Key="d/f00001")["Metadata"]
    log(f"wrote {prep['written']} files with {prep['writer']} in {prep['write_seconds']} s ({prep['write_requests']}); "
        f"chmod+utime dropped by s3fs and redone: {prep.get('dropped_by_s3fs')}, still wrong: {prep.get('still_wrong')}; "
        f"f00001 headers {prep['headers_of_f00001']}")
    rows = []
    for via_proxy in ls_profiles:
        for label in [t for t in ["s3mount-head", "s3mount", "s3fs"] if t in wanted and available(t)]:
            rows.append(listing(label, b2, expected_s3fs, via_proxy))
    results["workloads"]["ls_written_by_s3fs"] = {"prep": prep, "runs": rows}

    # ---- 3. rsync -a twice, and again after a remount -------------------------------------
    src = os.path.join(work, "docs")
    # Without this benchmark's own output, so that every run copies the same tree.
    shutil.copytree(args.docs, src, ignore=shutil.ignore_patterns(os.path.basename(args.out)))
    src_files = {}
    for d, _, fs in os.walk(src):
        for f in fs:
            p = os.path.join(d, f)
            src_files["docs/" + os.path.relpath(p, src)] = os.path.getsize(p)

    def stored_all(bucket):
        for k, size in src_files.items():
            try:
                if moto.backend().get_object(bucket, k).size != size:
                    return False
            except Exception:
                return False
        return True

    def rsync_run(tool, mp, bucket, cmd, first):
        r = {}
        pos = moto.mark()
        t = time.time()
        try:
            out = shell(cmd, timeout)
            if first:
                # Done when S3 holds every file (rclone uploads after close returns).
                deadline = time.time() + timeout
                while not stored_all(bucket) and time.time() < deadline:
                    time.sleep(0.05)
                r["stored"] = stored_all(bucket)
            r["seconds"] = round(time.time() - t, 3)
            r["rc"] = out.returncode
            if out.returncode != 0:
                r["error"] = out.stderr.strip()[-300:]
            m = re.search(r"Number of regular files transferred: ([\d,]+)", out.stdout)
            if m:
                r["files_transferred"] = int(m.group(1).replace(",", ""))
            r["itemized"] = [l for l in out.stdout.splitlines() if re.match(r"^[<>ch.*][fdLDS][^ ]{9,10} ", l)]
        except subprocess.TimeoutExpired:
            r["seconds"] = None
            r["timeout"] = timeout
        # Written back later: s3mount's index (debounced 1 s), rclone's uploads (--vfs-write-back 5 s).
        time.sleep(6.5 if tool.name.startswith("rclone") else 1.5)
        r["requests"], r["not_found"] = moto.requests_since(pos, bucket)
        r["requests_total"] = sum(r["requests"].values())
        return r

    rows = []
    for via_proxy in [False, True]:
        for label in [t for t in ["s3mount", "s3fs", "rclone", "rclone-modtime"] if t in wanted and available(t)]:
            bucket = f"rsync-{label}-{'lat' if via_proxy else 'lo'}"
            s3.create_bucket(Bucket=bucket)
            entry = {"tool": label, "latency": lat if via_proxy else "loopback"}
            base, extra = TOOLS[label]
            dst = None
            for phase in ["first", "second", "remount"]:
                if phase in ("first", "remount"):
                    tool = MetaTool(label, base, endpoint(via_proxy), work, extra)
                    mp = tempfile.mkdtemp(prefix=f"metabench-{label}-")
                    try:
                        tool.mount(bucket, mp)
                    except Exception as e:
                        entry[phase] = {"seconds": None, "error": str(e)[:200]}
                        unmount_quietly(tool, mp)
                        break
                    dst = os.path.join(mp, "docs")
                cmd = f"rsync -a {src}/ {dst}/" if phase == "first" else f"rsync -a -i --stats {src}/ {dst}/"
                try:
                    entry[phase] = rsync_run(tool, mp, bucket, cmd, phase == "first")
                finally:
                    if phase in ("second", "remount"):
                        unmount_quietly(tool, mp)
                e = entry[phase]
                log(f"rsync {phase:7s} {label:15s} {entry['latency']:18s} {e.get('seconds')} s rc={e.get('rc')} "
                    f"transferred={e.get('files_transferred')} {e.get('requests')} 404s={e.get('not_found')} {e.get('error', '')[-120:]}")
            rows.append(entry)
    results["workloads"]["rsync_docs"] = {"files": len(src_files), "bytes": sum(src_files.values()), "runs": rows}

    results["total_seconds"] = round(time.time() - t0)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    proxy.stop()
    moto.stop()
    shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(results))
    print(f"\nmetabench: done in {results['total_seconds']} s; results in {args.out}")


def versions():
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except Exception:
            return None
    return {"s3fs": first(["s3fs", "--version"]), "rclone": first(["rclone", "version"]), "rsync": first(["rsync", "--version"])}


def fmt_requests(e):
    return ", ".join(f"{k} {v}" for k, v in sorted(e.get("requests", {}).items())) or "—"


def fmt_secs(e):
    if e.get("seconds") is not None:
        return f"{e['seconds']:.2f}"
    if e.get("timeout"):
        return f"timeout > {e['timeout']:.0f} s"
    return "failed: " + e.get("error", "?")[:60]


def markdown(results):
    n = results["files"]
    out = []
    for key, title in [("ls_written_by_s3mount", f"`ls -la` of {n:,} files written by s3mount (modes 0600/0640 alternating)"),
                       ("ls_written_by_s3fs", f"`ls -la` of {n:,} files written by s3fs (chmod 640)")]:
        w = results["workloads"].get(key)
        if not w:
            continue
        p = w["prep"]
        out += [f"### {title}", "",
                f"Written by {p.get('writer', 's3mount')}: {p.get('written')} files in {p.get('write_seconds')} s "
                f"({sum(p.get('write_requests', {}).values())} requests); headers of f00001: `{p.get('headers_of_f00001')}`"
                + (f"; index {p['index_bytes']} bytes" if p.get("index_bytes") else "")
                + (f"; s3fs acknowledged but never sent chmod+utime of {len(p['dropped_by_s3fs'])} files "
                   f"({', '.join(f'f{i:05d}' for i in p['dropped_by_s3fs'][:8])}), done again one at a time "
                   f"({len(p.get('still_wrong', []))} still wrong)" if p.get("dropped_by_s3fs") else ""), "",
                "| tool | latency | seconds | requests | by operation | 404s | modes right | mtimes right | other entries |",
                "|---|---|---|---|---|---|---|---|---|"]
        for e in w["runs"]:
            out.append(f"| {e['tool']} | {e['latency']} | {fmt_secs(e)} | {e.get('requests_total', '—')} | {fmt_requests(e)} | "
                       f"{e.get('not_found', '—')} | {e.get('modes_right', '—')}/{n} | {e.get('mtimes_right', '—')}/{n} | "
                       f"{', '.join(e.get('extra_entries', [])) or '—'} |")
        out.append("")
    w = results["workloads"].get("rsync_docs")
    if w:
        out += [f"### `rsync -a` of docs/ ({w['files']} files, {w['bytes']:,} bytes): first run, again on the same mount, again after a remount",
                "", "Second and remount runs are `rsync -a -i --stats`; \"sent\" = Number of regular files transferred. "
                "First-run seconds include waiting until S3 holds every file (rclone uploads "
                "after its 5 s --vfs-write-back delay); requests are counted until 1.5 s (rclone: 6.5 s) after rsync returns, "
                "so later uploads and index writes land in the run that caused them. rclone gets a fresh VFS cache directory per mount.", "",
                "| tool | latency | 1st: s | 1st: requests | 2nd: s | 2nd: sent | 2nd: requests | remount: s | remount: sent | remount: requests |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for e in w["runs"]:
            cells = []
            for ph in ["first", "second", "remount"]:
                r = e.get(ph, {})
                s = fmt_secs(r) if r else "—"
                if r.get("rc"):
                    s += f" (rc {r['rc']})"
                cells.append(s)
                if ph != "first":
                    cells.append(str(r.get("files_transferred", "—")))
                cells.append(f"{r.get('requests_total', '—')}: {fmt_requests(r)}" if r else "—")
            out.append(f"| {e['tool']} | {e['latency']} | " + " | ".join(cells) + " |")
        errs = [(e["tool"], e["latency"], ph, e[ph]["error"]) for e in w["runs"] for ph in ["first", "second", "remount"]
                if e.get(ph, {}).get("error")]
        if errs:
            out += ["", "Errors:"] + [f"- {t} ({l}, {ph}): `{err[-160:]}`" for t, l, ph, err in errs]
    return "\n".join(out)


if __name__ == "__main__":
    main()
