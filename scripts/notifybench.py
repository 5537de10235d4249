#!/usr/bin/env python3
"""Coherence between mounts: how long until a change made through one s3mount mount (A), or by
another S3 client (boto3), shows on a second mount of the same bucket (B), and what B sends to
S3 meanwhile. Both mounts follow the bucket's S3 event notifications (--notification-queue, one
SQS queue each, fanned out from one SNS topic made by scripts/notifications-setup.sh), on moto's
S3, SNS and SQS. Then the same kinds of change by boto3 against rclone mount and s3fs with their
default caches, and the idle cost of a mount. Writes docs/benchmarks/coherence.json.

    python3 scripts/notifybench.py [--changes 100] [--peers rclone,s3fs] [--peer-cap 120] [--idle 60]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import bench  # Moto (in this process, with SNS and SQS), Tool (peers' mount commands), BIN, KEY

ROOT = bench.ROOT


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round((len(s) - 1) * p)))]


def until(check, cap):
    """Seconds until `check()` holds (polling every 5 ms), or None past `cap` seconds."""
    start = time.time()
    while time.time() - start < cap:
        try:
            if check():
                return time.time() - start
        except OSError:
            pass
        time.sleep(0.005)
    return None


def size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def s3mount_stats(mp):
    out = subprocess.run([bench.BIN, "stats", mp], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def s3_requests(stats):
    return {op: v["total"] for op, v in stats["requests"].items()}


def mount_s3mount(moto, bucket, mp, queue, log):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=bench.KEY, AWS_SECRET_ACCESS_KEY=bench.SECRET, AWS_EC2_METADATA_DISABLED="true")
    subprocess.run([bench.BIN, bucket, mp, "--endpoint-url", moto.endpoint, "--force-path-style", "--notification-queue", queue,
                    "--log-file", log], env=env, check=True, capture_output=True)


def changes(n):
    """n changes as (who, kind, index), alternating A and boto3, cycling the kinds."""
    kinds = ["create", "overwrite", "delete", "rename", "newdir"]
    return [("A" if i % 2 == 0 else "boto3", kinds[(i // 2) % len(kinds)], i) for i in range(n)]


def make_change(who, kind, i, a_root, s3, bucket):
    """Makes one change; returns (what B must show, as a function of B's root)."""
    d = f"dir{i % 10}"
    if kind in ("create", "overwrite"):
        key, body = (f"{d}/new-{i}.txt", b"n" * (100 + i)) if kind == "create" else (f"{d}/f{i % 20}.txt", b"o" * (1000 + i))
        if who == "A":
            with open(f"{a_root}/{key}", "wb") as f:
                f.write(body)
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        return lambda b: size(f"{b}/{key}") == len(body)
    if kind == "delete":
        key = f"{d}/del{i}.txt"
        if who == "A":
            os.unlink(f"{a_root}/{key}")
        else:
            s3.delete_object(Bucket=bucket, Key=key)
        return lambda b: size(f"{b}/{key}") is None
    if kind == "rename":
        src, dst = f"{d}/mv{i}.txt", f"{d}/moved-{i}.txt"
        if who == "A":
            os.rename(f"{a_root}/{src}", f"{a_root}/{dst}")
        else:
            s3.copy_object(Bucket=bucket, Key=dst, CopySource={"Bucket": bucket, "Key": src})
            s3.delete_object(Bucket=bucket, Key=src)
        return lambda b: size(f"{b}/{dst}") is not None and size(f"{b}/{src}") is None
    # newdir: a file in a directory that did not exist
    key = f"fresh-{i}/inside.txt"
    if who == "A":
        os.mkdir(f"{a_root}/fresh-{i}")
        with open(f"{a_root}/{key}", "wb") as f:
            f.write(b"x" * 7)
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 7)
    return lambda b: size(f"{b}/{key}") == 7


def seed(moto, bucket, n):
    """10 directories of 20 files, and the files the first `n` changes delete and rename."""
    for d in range(10):
        for j in range(20):
            moto.put(bucket, f"dir{d}/f{j}.txt", b"s" * 10)
    for i in range(n):
        moto.put(bucket, f"dir{i % 10}/del{i}.txt", b"d")
        moto.put(bucket, f"dir{i % 10}/mv{i}.txt", b"m")


def prime(root):
    """What a user's `ls -lR` does: list and stat everything once."""
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            os.stat(os.path.join(dirpath, f))


def run_s3mount(moto, args, work):
    bucket = "coherence"
    moto.s3.create_bucket(Bucket=bucket)
    seed(moto, bucket, args.changes)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=bench.KEY, AWS_SECRET_ACCESS_KEY=bench.SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=moto.endpoint)
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "notifications-setup.sh"), bucket, "bench-a", "bench-b"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    qa, qb = out
    a, b = tempfile.mkdtemp(prefix="coh-a-"), tempfile.mkdtemp(prefix="coh-b-")
    mount_s3mount(moto, bucket, a, qa, f"{work}/a.log")
    mount_s3mount(moto, bucket, b, qb, f"{work}/b.log")
    try:
        until(lambda: s3mount_stats(b)["notifications"]["healthy"], 30)
        prime(b)
        prime(a)
        before = s3_requests(s3mount_stats(b))
        rows = []
        for who, kind, i in changes(args.changes):
            check = make_change(who, kind, i, a, moto.s3, bucket)
            t = until(lambda: check(b), args.cap)
            rows.append({"who": who, "kind": kind, "seconds": t})
        after = s3mount_stats(b)
        used = {op: n - before.get(op, 0) for op, n in s3_requests(after).items() if n != before.get(op, 0)}
        # Idle: what B sends while nothing changes.
        polls0, req0 = after["notifications"]["polls"], sum(s3_requests(after).values())
        time.sleep(args.idle)
        idle = s3mount_stats(b)
        polls = idle["notifications"]["polls"] - polls0
        idle_s3 = sum(s3_requests(idle).values()) - req0
        seen = [r["seconds"] for r in rows if r["seconds"] is not None]
        result = {
            "changes": len(rows), "shown": len(seen),
            "p50_s": round(pct(seen, 0.5), 3), "p99_s": round(pct(seen, 0.99), 3), "max_s": round(max(seen), 3),
            "by_who": {w: {"p50_s": round(pct([r["seconds"] for r in rows if r["who"] == w and r["seconds"] is not None], 0.5), 3),
                           "p99_s": round(pct([r["seconds"] for r in rows if r["who"] == w and r["seconds"] is not None], 0.99), 3)}
                       for w in ("A", "boto3")},
            "by_kind": {k: round(statistics.median([r["seconds"] for r in rows if r["kind"] == k and r["seconds"] is not None]), 3)
                        for k in sorted({r["kind"] for r in rows})},
            "b_requests_while_catching_up": used,
            "b_notifications": idle["notifications"],
            "idle_seconds": args.idle, "idle_receive_calls": polls, "idle_s3_requests": idle_s3,
            "idle_receive_calls_per_hour": round(polls * 3600 / args.idle),
        }
        return result
    finally:
        for mp in (a, b):
            subprocess.run(["fusermount3", "-u", mp], capture_output=True)


def run_peer(moto, name, args, work):
    """The same kinds of change by boto3, all at once, against a peer with its default caches:
    seconds until its `stat` shows each (None: not within the cap)."""
    bucket = f"coh-{name}"
    moto.s3.create_bucket(Bucket=bucket)
    seed(moto, bucket, args.peer_changes * 2)
    tool = bench.Tool(name, moto.endpoint, work)
    mp = tempfile.mkdtemp(prefix=f"coh-{name}-")
    tool.mount(bucket, mp)
    try:
        prime(mp)
        checks = []
        for who, kind, i in changes(args.peer_changes * 2):
            if who != "boto3":
                continue
            checks.append((kind, make_change(who, kind, i, None, moto.s3, bucket)))
        start = time.time()
        shown = {}
        while len(shown) < len(checks) and time.time() - start < args.peer_cap:
            for n, (kind, check) in enumerate(checks):
                if n not in shown:
                    try:
                        if check(mp):
                            shown[n] = time.time() - start
                    except OSError:
                        pass
            time.sleep(0.05)
        seen = [shown[n] for n in range(len(checks)) if n in shown]
        return {"changes": [{"kind": kind, "seconds": round(shown[n], 2) if n in shown else None} for n, (kind, _) in enumerate(checks)],
                "shown": len(seen), "cap_s": args.peer_cap,
                "p50_s": round(pct(seen, 0.5), 2) if seen else None, "max_s": round(max(seen), 2) if seen else None}
    finally:
        tool.unmount(mp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--cap", type=float, default=30, help="seconds to wait for one change on B")
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--peers", default="rclone,s3fs")
    ap.add_argument("--peer-changes", type=int, default=10, help="changes by boto3 on each peer (the five kinds in turn)")
    ap.add_argument("--peer-cap", type=float, default=120)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks", "coherence.json"))
    args = ap.parse_args()
    moto = bench.Moto()
    work = tempfile.mkdtemp(prefix="coherence-")
    try:
        result = {"date": time.strftime("%Y-%m-%d"), "command": "python3 scripts/notifybench.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
            "s3mount": run_s3mount(moto, args, work)}
        print(json.dumps(result["s3mount"], indent=1))
        for peer in [p for p in args.peers.split(",") if p]:
            result[peer] = run_peer(moto, peer, args, work)
            print(peer, json.dumps(result[peer]))
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
