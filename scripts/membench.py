#!/usr/bin/env python3
"""Memory of the s3mount daemon per cached entry, on its own (the full benchmark measures the
same within its `ls -la 100,000` row): seeds N objects in one directory of a local emulator,
mounts, `ls -la`s it and reads the daemon's RSS and heap before, after the listing, after the
kernel forgets the inodes, and once the 60 s metadata TTL has passed and the sweeper has run.

    python3 scripts/membench.py [N]        (S3MOUNT_BIN: the binary; default .build/release)
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from bench import BIN, Moto, Tool, rss_kib, seed


def heap(mp):
    out = subprocess.run([BIN, "stats", mp], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["heap_bytes"]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    moto = Moto()
    moto.s3.create_bucket(Bucket="mem")
    seed(moto, "mem", [f"flat/obj-{i:06d}.dat" for i in range(n)])
    work = tempfile.mkdtemp(prefix="s3mount-membench-")
    mp = tempfile.mkdtemp(prefix="membench-")
    tool = Tool("s3mount", moto.endpoint, work)
    tool.mount("mem", mp)
    try:
        pid = tool.daemon_pid(mp)
        time.sleep(0.5)
        idle, idle_heap = rss_kib(pid), heap(mp)
        t = time.time()
        lines = subprocess.run(["bash", "-c", f"ls -la {mp}/flat | wc -l"], capture_output=True, text=True, check=True).stdout.strip()
        secs = time.time() - t
        listed, listed_heap = rss_kib(pid), heap(mp)
        subprocess.run(["bash", "-c", "sync; echo 2 > /proc/sys/vm/drop_caches"], capture_output=True)
        time.sleep(1)
        forgot, forgot_heap = rss_kib(pid), heap(mp)
        # The sweeper runs every half TTL (30 s) and drops what is older than the TTL (60 s).
        time.sleep(max(0, 60 + 30 + 5 - (time.time() - t)))
        swept, swept_heap = rss_kib(pid), heap(mp)
    finally:
        tool.unmount(mp)
        os.rmdir(mp)
        moto.stop()
    per = lambda kib: (kib - idle) * 1024 / n
    print(f"membench: {n:,} objects, ls -la printed {lines} lines in {secs:.1f} s")
    print(f"membench: RSS idle {idle / 1024:.1f} MiB, after listing {listed / 1024:.1f} MiB ({per(listed):.0f} bytes per entry), "
          f"after forget {forgot / 1024:.1f} MiB ({per(forgot):.0f} bytes per entry), after the TTL {swept / 1024:.1f} MiB")
    print(f"membench: heap idle {idle_heap / 2**20:.1f} MiB, after listing {(listed_heap - idle_heap) / n:.0f} bytes per entry, "
          f"after forget {(forgot_heap - idle_heap) / n:.0f} bytes per entry, after the TTL {swept_heap / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
