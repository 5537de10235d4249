#!/usr/bin/env python3
"""Threads of the daemon while 8 large files are read and 8 written at once (issue 16): the most
threads alive at one moment, how many were ever started (distinct thread ids seen), the peak RSS,
and the wall time. moto_server behind scripts/cloudproxy.py (20 ms a request, 25 MB/s a
connection) unless --loopback.
    python3 scripts/threadcount.py [--bin .build/release/s3mount] [--size-mib 64] [--loopback]"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "Tests", "integration"))
sys.path.insert(0, HERE)
import conftest  # noqa: E402
from cloudproxy import ProxyProcess  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", ".build", "release", "s3mount"))
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--loopback", action="store_true")
    a = ap.parse_args()
    conftest.BIN = os.path.abspath(a.bin)
    work = tempfile.mkdtemp()
    moto = conftest.Moto(work)
    s3 = moto.client()
    s3.create_bucket(Bucket="threads")
    size = a.size_mib << 20
    blob = os.urandom(size)
    for i in range(8):
        s3.put_object(Bucket="threads", Key=f"in/{i}.bin", Body=blob)
    proxy = None if a.loopback else ProxyProcess(moto.port)
    m = conftest.Mount(moto, "threads", work, ["--endpoint-url", proxy.endpoint] if proxy else [])
    pid = m.daemon_pid()
    os.listdir(os.path.join(m.path, "in"))
    os.mkdir(os.path.join(m.path, "out"))
    src = os.path.join(work, "src.bin")
    with open(src, "wb") as f:
        f.write(blob)
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"])
    seen, peak, rss, stop = set(), [0], [0], threading.Event()

    def sample():
        while not stop.is_set():
            try:
                tids = os.listdir(f"/proc/{pid}/task")
                seen.update(tids)
                peak[0] = max(peak[0], len(tids))
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        rss[0] = max(rss[0], int(line.split()[1]) << 10)
            except OSError:
                pass
            time.sleep(0.05)
    before = len(os.listdir(f"/proc/{pid}/task"))
    t = threading.Thread(target=sample)
    t.start()
    t0 = time.time()
    procs = [subprocess.Popen(["cat", os.path.join(m.path, "in", f"{i}.bin")], stdout=subprocess.DEVNULL) for i in range(8)]
    procs += [subprocess.Popen(["cp", src, os.path.join(m.path, "out", f"{i}.bin")]) for i in range(8)]
    rcs = [p.wait() for p in procs]
    wall = time.time() - t0
    stop.set()
    t.join()
    pools = m.stats().get("pools", {})
    m.unmount()
    if proxy:
        proxy.stop()
    moto.stop()
    print(f"binary {a.bin}: {'loopback' if a.loopback else 'cloud proxy 20 ms, 25 MB/s/conn'}, 8 x {a.size_mib} MiB read + 8 written at once")
    print(f"  exit codes {sorted(set(rcs))}; {wall:.1f} s; threads idle {before}, at most {peak[0]} at once, {len(seen)} started; peak RSS {rss[0] >> 20} MiB")
    if pools:
        print("  pools: " + ", ".join(f"{k} {v['threads']}" for k, v in pools.items()))


if __name__ == "__main__":
    main()
