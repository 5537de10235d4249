#!/usr/bin/env python3
"""Bursts of S3 events: how fast one s3mount mount applies them, and how far behind it is after
the last of many changes. The objects are in moto's S3; the events reach the mount through the
loopback SQS queue of scripts/minisqs.py, which answers at once or after --sqs-latency seconds
(moto's own SQS takes 0.85 s a call with 2,000 messages queued, so it cannot hold a burst), or,
with --rgw, from Ceph RGW through RabbitMQ.

drain: N messages, each one S3 event record for a name in a directory the mount has listed, are
  sent straight to the mount's queue in SendMessageBatch calls of 10 while the mount is not
  reading it (so neither the store's put rate nor the sender bounds it). Then the mount starts
  and its events counter is read every 20 ms until it has all of them: events applied per
  second, and the daemon's CPU seconds meanwhile (/proc). The records are dated a minute ahead,
  so that the listing made at mount time is older than they are and each is applied, not dropped
  as stale.
lag: N changes at --rate a second: each object is put straight into moto's backend and its
  event record sent to the queue in batches of 10 (four senders), as S3 would during an
  `aws s3 sync` of small files; seconds from the last change until the mount has applied all N
  (then `ls` lists them), its CPU seconds, and what it sent to S3 meanwhile.
rgw: N objects put by 16 threads to a single-node Ceph RGW, which pushes each event to a RabbitMQ
  queue of the mount's own (scripts/notifications-setup-rgw.sh); each event's lag from its
  eventTime to its application, and the time from the last put until all are applied.

    python3 scripts/burstbench.py [--drain 10000] [--lag 10000] [--rate 1000] [--receivers 1,8] [--sqs-latency 0,0.02]
                                  [--rgw 10000] [--out FILE]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

import bench  # Moto (in this process, with SNS and SQS), BIN, KEY
import minisqs  # a queue that holds a burst (moto's SQS slows with its length)

ROOT = bench.ROOT


def stats(mp):
    return json.loads(subprocess.run([bench.BIN, "stats", mp], capture_output=True, text=True, check=True).stdout)


def daemon_pid(mp):
    """The s3mount process serving mountpoint `mp`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"s3mount") and mp.encode() in args:
            return int(pid)
    raise RuntimeError(f"no s3mount process for {mp}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mount(moto, bucket, mp, queue, receivers, log):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=bench.KEY, AWS_SECRET_ACCESS_KEY=bench.SECRET, AWS_EC2_METADATA_DISABLED="true")
    subprocess.run([bench.BIN, bucket, mp, "--endpoint-url", moto.endpoint, "--force-path-style", "--notification-queue", queue,
                    "--notification-receivers", str(receivers), "--log-file", log], env=env, check=True, capture_output=True)


def record(bucket, key, size, when):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when * 1000) % 1000:03d}Z"
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": stamp,
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": f"{size:032x}"}}}


def until(check, cap, every=0.02):
    start = time.time()
    while time.time() - start < cap:
        if check():
            return time.time() - start
        time.sleep(every)
    return None


def bucket_and_queue(moto, sqs_server, run, receivers):
    """A bucket of its own for a run (d/ holds one object), its loopback queue, and a client of it."""
    bucket = f"{run}-{receivers}-{round(sqs_server.latency * 1000)}"
    moto.s3.create_bucket(Bucket=bucket)
    moto.put(bucket, "d/seed", b"s")
    sqs = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{sqs_server.port}", region_name="us-east-1",
                       aws_access_key_id=bench.KEY, aws_secret_access_key=bench.SECRET)
    return bucket, sqs_server.queue_url(bucket), sqs


def drain(moto, sqs_server, n, receivers, work):
    bucket, queue, sqs = bucket_and_queue(moto, sqs_server, "drain", receivers)
    ahead = time.time() + 60
    sent_at = time.time()
    for i in range(0, n, 10):
        entries = [{"Id": str(j), "MessageBody": json.dumps({"Records": [record(bucket, f"d/f{i + j}", i + j, ahead)]})}
                   for j in range(min(10, n - i))]
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    send_s = time.time() - sent_at
    mp = tempfile.mkdtemp(prefix="drain-")
    # The mount starts reading at once: list d/ first thing, so that the events find it listed.
    mount(moto, bucket, mp, queue, receivers, f"{work}/drain-{receivers}.log")
    try:
        os.listdir(f"{mp}/d")
        pid = daemon_pid(mp)
        cpu0, t0 = cpu_seconds(pid), time.time()
        events0 = stats(mp)["notifications"]["events"]
        took = until(lambda: stats(mp)["notifications"]["events"] >= n, 600)
        cpu = cpu_seconds(pid) - cpu0
        s = stats(mp)["notifications"]
        return {"messages": n, "receivers": receivers, "send_seconds": round(send_s, 2),
                "events_before_timing": events0, "seconds": round(took, 2) if took else None,
                "events_per_second": round((n - events0) / took) if took else None,
                "daemon_cpu_seconds": round(cpu, 2), "applied": s["applied"], "stale": s["stale"], "ignored": s["ignored"],
                "receive_calls": sqs_server.calls["ReceiveMessage"], "delete_calls": sqs_server.calls["DeleteMessageBatch"]}
    finally:
        subprocess.run(["fusermount3", "-u", mp], capture_output=True)


def lag(moto, sqs_server, n, rate, receivers, work):
    """n changes, each an object put straight into moto's backend (fast, and no notification of
    its own) and its S3 event record sent to the queue, at `rate` a second in batches of 10 (what
    S3 does during an `aws s3 sync` of small files): seconds from the last until the mount lists
    all n names, and what it sent to S3 meanwhile."""
    bucket, queue, sqs = bucket_and_queue(moto, sqs_server, "lag", receivers)
    mp = tempfile.mkdtemp(prefix="lag-")
    mount(moto, bucket, mp, queue, receivers, f"{work}/lag-{receivers}.log")
    try:
        until(lambda: stats(mp)["notifications"]["healthy"], 30)
        os.listdir(f"{mp}/d")
        pid = daemon_pid(mp)
        before = {op: v["total"] for op, v in stats(mp)["requests"].items()}
        cpu0 = cpu_seconds(pid)
        started = time.time()

        def send(i):
            # Paced: the batch of change i leaves at i / rate seconds; four senders, so that the
            # queue's latency does not slow the pace.
            ahead = started + i / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
            entries = []
            for j in range(i, min(n, i + 10)):
                moto.put(bucket, f"d/p{j}", b"p" * (j % 100))
                entries.append({"Id": str(j - i), "MessageBody": json.dumps({"Records": [record(bucket, f"d/p{j}", j % 100, time.time())]})})
            sqs.send_message_batch(QueueUrl=queue, Entries=entries)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(0, n, 10)))
        last = time.time()
        # The counter first (a listing of 10,000 names every 10 ms would be the daemon's main work).
        behind = until(lambda: stats(mp)["notifications"]["applied"] >= n, 120, every=0.01)
        cpu = cpu_seconds(pid) - cpu0
        listed = len(os.listdir(f"{mp}/d")) - 1
        st = stats(mp)
        after = {op: v["total"] for op, v in st["requests"].items()}
        return {"changes": n, "receivers": receivers, "sqs_latency_ms": round(sqs_server.latency * 1000),
                "sent_per_second": round(n / (last - started)),
                "seconds_after_last_change": round(behind, 2) if behind is not None else None, "names_listed": listed,
                "daemon_cpu_seconds": round(cpu, 2),
                "requests_from_the_mount": {op: after[op] - before.get(op, 0) for op in after if after[op] != before.get(op, 0)},
                "lag_ms": st["notifications"]["lag_ms"], "stale": st["notifications"]["stale"]}
    finally:
        subprocess.run(["fusermount3", "-u", mp], capture_output=True)


def rgw_lag(n, receivers, work):
    """On Ceph RGW, which pushes its bucket notifications to a RabbitMQ queue of the mount's own
    (scripts/notifications-setup-rgw.sh): n objects put by 16 threads; each event's lag from its
    eventTime to its application (the mount's statistics), the time from the last put until all
    are applied, and what the mount sent to RGW meanwhile."""
    from rgwcluster import RgwCluster
    import rabbitmq
    cluster = RgwCluster(os.path.join(work, "rgw"), memstore_gib=4, access_key=bench.KEY, secret_key=bench.SECRET, die_with_parent=True)
    cluster.start()
    rabbit = None
    mp = tempfile.mkdtemp(prefix="rgw-lag-")
    try:
        os.makedirs(os.path.join(work, "rabbit"), exist_ok=True)
        rabbit = rabbitmq.Rabbit(os.path.join(work, "rabbit"))
        s3 = boto3.client("s3", endpoint_url=cluster.endpoint, region_name="us-east-1", aws_access_key_id=bench.KEY,
                          aws_secret_access_key=bench.SECRET, config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
        bucket = "rgw-burst"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="d/seed", Body=b"s")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=bench.KEY, AWS_SECRET_ACCESS_KEY=bench.SECRET, AWS_ENDPOINT_URL=cluster.endpoint,
                   AWS_DEFAULT_REGION="us-east-1", S3MOUNT_AMQP_PASSWORD=rabbit.password, RGW_FORWARDED_HTTPS="1", RGW_PERSISTENT="0",
                   AWS_EC2_METADATA_DISABLED="true")
        (url,) = subprocess.run(["bash", os.path.join(ROOT, "scripts", "notifications-setup-rgw.sh"), bucket, rabbit.url(), "bench"],
                                env=env, capture_output=True, text=True, check=True).stdout.split()
        subprocess.run([bench.BIN, bucket, mp, "--endpoint-url", cluster.endpoint, "--force-path-style", "--notification-queue", url,
                        "--notification-receivers", str(receivers), "--log-file", f"{work}/rgw-lag.log"], env=env, check=True, capture_output=True)
        until(lambda: stats(mp)["notifications"]["healthy"], 30)
        os.listdir(f"{mp}/d")
        # The path works before counting.
        s3.put_object(Bucket=bucket, Key="d/warm-up", Body=b"w")
        until(lambda: os.path.exists(f"{mp}/d/warm-up"), 75)
        applied0 = stats(mp)["notifications"]["applied"]
        pid = daemon_pid(mp)
        before = {op: v["total"] for op, v in stats(mp)["requests"].items()}
        cpu0, started = cpu_seconds(pid), time.time()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"d/p{i}", Body=b"p"), range(n)))
        last = time.time()
        behind = until(lambda: stats(mp)["notifications"]["applied"] - applied0 >= n, 120, every=0.01)
        cpu = cpu_seconds(pid) - cpu0
        listed = len(os.listdir(f"{mp}/d")) - 2
        st = stats(mp)
        after = {op: v["total"] for op, v in st["requests"].items()}
        return {"store": "rgw", "source": "amqp", "changes": n, "receivers": receivers, "puts_per_second": round(n / (last - started)),
                "seconds_after_last_put": round(behind, 2) if behind is not None else None, "names_listed": listed,
                "daemon_cpu_seconds": round(cpu, 2), "lag_ms": st["notifications"]["lag_ms"],
                "requests_from_the_mount": {op: after[op] - before.get(op, 0) for op in after if after[op] != before.get(op, 0)}}
    finally:
        subprocess.run(["fusermount3", "-u", mp], capture_output=True)
        if rabbit:
            rabbit.stop()
        cluster.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drain", type=int, default=10000, help="messages sent straight to the queue (0: skip)")
    ap.add_argument("--lag", type=int, default=10000, help="changes sent at --rate a second (0: skip)")
    ap.add_argument("--rate", type=float, default=1000, help="changes a second in the lag run")
    ap.add_argument("--receivers", default="1,8", help="--notification-receivers values to compare")
    ap.add_argument("--sqs-latency", default="0,0.02", help="seconds the drain's queue adds to each call (loopback, cloud-like)")
    ap.add_argument("--rgw", type=int, default=0, help="objects put to Ceph RGW, its events through RabbitMQ (0: skip)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks", "events-burst.json"))
    args = ap.parse_args()
    moto = bench.Moto()
    servers = {lat: minisqs.MiniSQS(latency=lat) for lat in [float(x) for x in args.sqs_latency.split(",")]}
    work = tempfile.mkdtemp(prefix="burst-")
    result = {"date": time.strftime("%Y-%m-%d"), "command": "python3 scripts/burstbench.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"), "drain": [], "lag": []}
    try:
        for r in [int(x) for x in args.receivers.split(",")]:
            for lat, server in servers.items() if args.drain else []:
                server.calls.clear()
                result["drain"].append(dict(drain(moto, server, args.drain, r, work), sqs_latency_ms=round(lat * 1000)))
                print(json.dumps(result["drain"][-1]), flush=True)
            for lat, server in servers.items() if args.lag else []:
                result["lag"].append(lag(moto, server, args.lag, args.rate, r, work))
                print(json.dumps(result["lag"][-1]), flush=True)
        if args.rgw:
            result["rgw"] = [rgw_lag(args.rgw, max(int(x) for x in args.receivers.split(",")), work)]
            print(json.dumps(result["rgw"][-1]), flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    finally:
        for server in servers.values():
            server.stop()
        moto.stop()


if __name__ == "__main__":
    main()
