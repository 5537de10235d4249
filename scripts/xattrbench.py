#!/usr/bin/env python3
"""What `--xattr` costs `ls -la`: 1,000 files written through a mount, then `ls -la` of them
on a fresh mount with and without the option (first run: listing and index; then runs served from
the caches). Without it the kernel learns once that there are no xattr operations and `ls` asks
nothing per file; with it, every file's security.selinux and system.posix_acl_* questions reach the
daemon, which answers them locally (no request). Prints seconds per run and the requests sent.

    S3MOUNT_BIN=.build/release/s3mount python3 scripts/xattrbench.py [--files 1000] [--runs 5]
"""
import argparse
import os
import subprocess
import tempfile
import time

from bench import BIN, Moto, mounted

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}


def mount(moto, bucket, args):
    path = tempfile.mkdtemp(prefix="xattrbench-")
    env = dict(os.environ, **CREDS)
    subprocess.run([BIN, bucket, path, "--endpoint-url", moto.endpoint, "--force-path-style", *args], env=env, check=True, timeout=60)
    assert mounted(path)
    return path


def unmount(path):
    subprocess.run(["fusermount3", "-u", path], check=False)
    time.sleep(1)
    os.rmdir(path)


def requests(path):
    import json
    out = subprocess.run([BIN, "stats", path], capture_output=True, text=True, check=True)
    return sum(v["total"] for v in json.loads(out.stdout)["requests"].values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    moto = Moto()
    moto.s3.create_bucket(Bucket="xattrbench")
    # Written through a mount, so that each file has its own metadata in the directory's index.
    w = mount(moto, "xattrbench", ["--xattr"])
    os.mkdir(os.path.join(w, "d"))
    for i in range(a.files):
        with open(os.path.join(w, "d", f"f{i:05d}"), "w") as f:
            f.write("x")
    unmount(w)
    print(f"ls -la of {a.files} files, {a.runs} runs each (first: fresh mount)")
    print("| mount | first run (s) | later runs, median (s) | requests |")
    print("|---|---|---|---|")
    for label, args in (("default", []), ("--xattr", ["--xattr"])):
        m = mount(moto, "xattrbench", args)
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            subprocess.run(["ls", "-la", os.path.join(m, "d")], stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t)
        later = sorted(times[1:])[len(times[1:]) // 2]
        print(f"| {label} | {times[0]:.3f} | {later:.3f} | {requests(m)} |")
        unmount(m)


if __name__ == "__main__":
    main()
