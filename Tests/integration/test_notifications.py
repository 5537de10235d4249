"""S3 event notifications (--notification-queue): two daemons of one bucket stand for two hosts,
each with its own SQS queue subscribed to the bucket's SNS topic (set up by
scripts/notifications-setup.sh against moto's S3, SNS and SQS). With --metadata-ttl indefinite,
nothing but the events can make mount B see a change made through mount A or by boto3."""
import json
import os
import subprocess
import sys
import time
import uuid

import boto3
import pytest

from conftest import CREDS, ROOT, run, delta, stop_process

# RGW has no SQS (its bucket notifications push to HTTP, AMQP or Kafka endpoints): docs/CONFIGURATION.md.
pytestmark = pytest.mark.moto_only("Ceph RGW has no SQS to read S3 events from (its notifications push to HTTP, AMQP or Kafka)")

SETUP = os.path.join(ROOT, "scripts", "notifications-setup.sh")
PROXY = os.path.join(ROOT, "Tests", "integration", "chaosproxy.py")


def aws_env(moto):
    env = dict(os.environ)
    env.update(CREDS)
    env.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto.endpoint})
    return env


def queues(moto, bucket, n):
    """`n` queues subscribed to the bucket's topic, made by the setup script; their URLs."""
    names = [f"q-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    r = subprocess.run(["bash", SETUP, bucket, *names], env=aws_env(moto), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    urls = r.stdout.split()
    assert len(urls) == n and all(u.startswith(moto.endpoint + "/") for u in urls), r.stdout
    return urls


def sqs(moto):
    return boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def until(check, timeout=10.0, what="the change"):
    """Waits until `check()` is true; returns the seconds it took."""
    start = time.time()
    while True:
        try:
            if check():
                return time.time() - start
        except OSError:
            pass
        if time.time() - start > timeout:
            raise AssertionError(f"{what} did not show within {timeout} s")
        time.sleep(0.05)


def size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def notification_stats(m):
    return m.stats()["notifications"]


def test_changes_through_one_mount_and_by_boto3_show_on_another(moto, s3, bucket, mount):
    for k in ("docs/a.txt", "docs/b.txt", "docs/old/x.txt", "keep.txt"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"seed " + k.encode())
    qa, qb = queues(moto, bucket, 2)
    a = mount(bucket, "--notification-queue", qa, "--metadata-ttl", "indefinite")
    b = mount(bucket, "--notification-queue", qb, "--metadata-ttl", "indefinite")
    until(lambda: notification_stats(b)["healthy"], what="B's first poll")
    # B has seen everything once (as a user's `ls -R` would), then only events may change its view.
    assert run(["find", b.path]).returncode == 0
    assert sorted(os.listdir(b.path)) == ["docs", "keep.txt"]
    before = b.requests()
    pos = moto.log_position()
    lags = {}

    # Through mount A.
    with open(f"{a.path}/docs/new.txt", "w") as f:
        f.write("made through A")
    lags["create via A"] = until(lambda: read(f"{b.path}/docs/new.txt") == b"made through A")
    with open(f"{a.path}/docs/a.txt", "w") as f:
        f.write("overwritten through A, longer than before")
    lags["overwrite via A"] = until(lambda: read(f"{b.path}/docs/a.txt") == b"overwritten through A, longer than before")
    os.unlink(f"{a.path}/docs/b.txt")
    lags["delete via A"] = until(lambda: "b.txt" not in os.listdir(f"{b.path}/docs") and size(f"{b.path}/docs/b.txt") is None)
    os.rename(f"{a.path}/keep.txt", f"{a.path}/kept.txt")
    lags["rename file via A"] = until(lambda: sorted(os.listdir(b.path)) == ["docs", "kept.txt"] and read(f"{b.path}/kept.txt") == b"seed keep.txt")
    os.rename(f"{a.path}/docs/old", f"{a.path}/docs/older")
    lags["rename dir via A"] = until(lambda: sorted(os.listdir(f"{b.path}/docs")) == ["a.txt", "new.txt", "older"]
                                     and read(f"{b.path}/docs/older/x.txt") == b"seed docs/old/x.txt")
    os.mkdir(f"{a.path}/made")
    lags["mkdir via A"] = until(lambda: os.path.isdir(f"{b.path}/made") and os.listdir(f"{b.path}/made") == [])
    # A mode change travels in the directory's metadata index: B reads it again (one GET).
    os.chmod(f"{a.path}/docs/a.txt", 0o600)
    lags["chmod via A"] = until(lambda: os.stat(f"{b.path}/docs/a.txt").st_mode & 0o777 == 0o600)

    # By another S3 client.
    s3.put_object(Bucket=bucket, Key="docs/from-boto3.txt", Body=b"12345")
    lags["put by boto3"] = until(lambda: size(f"{b.path}/docs/from-boto3.txt") == 5)
    s3.put_object(Bucket=bucket, Key="docs/from-boto3.txt", Body=b"123456789")
    lags["overwrite by boto3"] = until(lambda: read(f"{b.path}/docs/from-boto3.txt") == b"123456789")
    s3.copy_object(Bucket=bucket, Key="deep/er/copy.txt", CopySource={"Bucket": bucket, "Key": "docs/from-boto3.txt"})
    lags["copy into new dirs by boto3"] = until(lambda: read(f"{b.path}/deep/er/copy.txt") == b"123456789")
    s3.delete_object(Bucket=bucket, Key="deep/er/copy.txt")
    # Its directories were implied by that one key: they go with it, as a listing would show.
    lags["delete by boto3"] = until(lambda: "deep" not in os.listdir(b.path))

    used = delta(before, b.requests())
    assert used.get("ListObjectsV2", 0) == 0, (used, [r for r in moto.requests_since(pos, bucket) if r[0] == "ListObjectsV2"], b.log())
    assert used.get("HeadObject", 0) == 0, used
    assert set(used) <= {"GetObject"}, f"B read content, and nothing else: {used}"
    st = notification_stats(b)
    assert st["applied"] >= len(lags) and st["malformed"] == 0, st
    assert st["lag_ms"]["p99"] is not None
    # A sees its own writes come back and changes nothing for them.
    assert notification_stats(a)["own"] > 0
    assert max(lags.values()) < 10, lags
    print("seconds until B showed it:", {k: round(v, 2) for k, v in lags.items()})


def test_duplicated_reordered_and_malformed_messages(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="d/r.txt", Body=b"x" * 20)
    (qb,) = queues(moto, bucket, 1)
    b = mount(bucket, "--notification-queue", qb, "--metadata-ttl", "indefinite")
    assert os.listdir(f"{b.path}/d") == ["r.txt"]
    until(lambda: notification_stats(b)["healthy"], what="the first poll")
    q = sqs(moto)

    def record(name, key, sz=0, etag="e", t="2030-01-01T00:00:00.000Z"):
        return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": t, "eventName": name,
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": sz, "eTag": etag}}}

    stats0 = notification_stats(b)
    # Malformed: logged and deleted; the mount carries on.
    q.send_message(QueueUrl=qb, MessageBody="this is not an S3 event")
    q.send_message(QueueUrl=qb, MessageBody=json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}))
    # Reordered: the newer version (30 bytes) arrives before an older one (10 bytes).
    q.send_message(QueueUrl=qb, MessageBody=json.dumps({"Records": [record("ObjectCreated:Put", "d/r.txt", 30, "v3", "2030-01-01T00:00:05.000Z")]}))
    until(lambda: size(f"{b.path}/d/r.txt") == 30, what="the newer event")
    q.send_message(QueueUrl=qb, MessageBody=json.dumps({"Records": [record("ObjectCreated:Put", "d/r.txt", 10, "v2", "2030-01-01T00:00:01.000Z")]}))
    # Duplicated: the same event twice; and an event for a key in a directory B never listed.
    dup = json.dumps({"Records": [record("ObjectCreated:Put", "d/dup.txt", 7, "dd")]})
    q.send_message(QueueUrl=qb, MessageBody=dup)
    q.send_message(QueueUrl=qb, MessageBody=dup)
    q.send_message(QueueUrl=qb, MessageBody=json.dumps({"Records": [record("ObjectCreated:Put", "elsewhere/never/listed.txt", 1)]}))
    until(lambda: notification_stats(b)["messages"] - stats0["messages"] >= 7, what="all seven messages")
    st = notification_stats(b)
    assert st["malformed"] - stats0["malformed"] == 2, st
    assert st["stale"] - stats0["stale"] >= 1, st
    assert size(f"{b.path}/d/r.txt") == 30, "an older event delivered late changes nothing"
    assert size(f"{b.path}/d/dup.txt") == 7
    assert os.path.ismount(b.path)
    assert "is not an S3 event" in b.log()
    # Every message was deleted from the queue.
    time.sleep(1)
    left = q.get_queue_attributes(QueueUrl=qb, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert left == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}, left


def test_an_unreachable_queue_at_mount_time_degrades_to_the_ttl(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="f.txt", Body=b"x")
    # Nothing listens on this port: the mount starts all the same, with a warning.
    dead = f"http://127.0.0.1:9/123456789012/nothing-here"
    m = mount(bucket, "--notification-queue", dead)
    assert os.listdir(m.path) == ["f.txt"]
    until(lambda: "notification queue" in m.log(), what="the warning")
    st = notification_stats(m)
    assert st["healthy"] is False and st["poll_errors"] >= 1 and st["metadata_ttl"] == 60, st
    assert "notification queue http://127.0.0.1:9/123456789012/nothing-here" in m.log()
    # A queue that does not exist at a reachable endpoint: the same.
    n = mount(bucket, "--notification-queue", f"{moto.endpoint}/123456789012/no-such-queue-{uuid.uuid4().hex[:6]}")
    until(lambda: notification_stats(n)["poll_errors"] >= 1, what="the failed poll")
    assert "QueueDoesNotExist" in n.log() or "NonExistentQueue" in n.log(), n.log()


def test_a_queue_lost_mid_run_falls_back_and_catches_up(moto, s3, bucket, mount, tmp_path):
    s3.put_object(Bucket=bucket, Key="d/one.txt", Body=b"1")
    (qb,) = queues(moto, bucket, 1)
    port_line = None

    def start_proxy(port=0):
        p = subprocess.Popen([sys.executable, PROXY, "--upstream", str(moto.port), "--port", str(port), "--slowdown", "0", "--reset", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return p, int(p.stdout.readline())

    proxy, port = start_proxy()
    try:
        via_proxy = qb.replace(moto.endpoint, f"http://127.0.0.1:{port}")
        b = mount(bucket, "--notification-queue", via_proxy, "--metadata-ttl", "indefinite")
        assert os.listdir(f"{b.path}/d") == ["one.txt"]
        until(lambda: notification_stats(b)["healthy"], what="the first poll")
        s3.put_object(Bucket=bucket, Key="d/two.txt", Body=b"2")
        until(lambda: sorted(os.listdir(f"{b.path}/d")) == ["one.txt", "two.txt"])
        # The queue's endpoint goes away: a warning, and the TTL of a mount without notifications.
        stop_process(proxy)
        until(lambda: not notification_stats(b)["healthy"], timeout=30, what="the lost queue")
        assert notification_stats(b)["metadata_ttl"] == 60
        s3.put_object(Bucket=bucket, Key="d/three.txt", Body=b"3")
        # Back: what SQS kept meanwhile is applied.
        proxy, _ = start_proxy(port)
        until(lambda: sorted(os.listdir(f"{b.path}/d")) == ["one.txt", "three.txt", "two.txt"], timeout=40,
              what="the change made while the queue was away")
        st = notification_stats(b)
        assert st["healthy"] and st["metadata_ttl"] is None, st
        assert "answers again" in b.log()
    finally:
        stop_process(proxy)


def test_bad_queue_urls_are_refused_before_mounting(bucket, tmp_path):
    from conftest import BIN
    for url in ("sqs://x/1/q", "http://127.0.0.1:9/only-one-part", "http://h/1/q?x=1"):
        r = run([BIN, bucket, str(tmp_path), "--notification-queue", url])
        assert r.returncode != 0 and "notification-queue" in r.stderr, (url, r.stderr)


def test_a_burst_of_puts_shows_within_seconds_of_the_last(moto, s3, bucket, mount):
    """600 objects put by 16 threads: while they come, the receivers poll in parallel; B has every
    one soon after the last put, without a LIST or HEAD of its own."""
    s3.put_object(Bucket=bucket, Key="burst/seed", Body=b"s")
    (qb,) = queues(moto, bucket, 1)
    b = mount(bucket, "--notification-queue", qb, "--metadata-ttl", "indefinite")
    until(lambda: notification_stats(b)["healthy"], what="the first poll")
    assert os.listdir(f"{b.path}/burst") == ["seed"]
    before = b.requests()
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"burst/p{i:04d}", Body=b"p" * (i % 7)), range(600)))
    behind = until(lambda: len(os.listdir(f"{b.path}/burst")) == 601, timeout=30, what="all 600 puts")
    assert size(f"{b.path}/burst/p0599") == 599 % 7
    used = delta(before, b.requests())
    assert used.get("ListObjectsV2", 0) == 0 and used.get("HeadObject", 0) == 0, used
    st = notification_stats(b)
    assert st["receivers"] == 8 and st["applied"] >= 600 and st["gaps"] == 0, st
    print(f"B had all 600 puts {behind:.2f} s after the last; events/s now {st['events_per_second']}")


def test_two_mounts_given_one_queue_are_detected_and_follow_the_short_ttl(moto, s3, bucket, mount):
    """A mistake: one queue for two mounts, each sees about half the events. Their probes tell
    them within a minute; each says so once, falls back to the short TTL, and revalidates, so that
    a change either one missed shows on both all the same."""
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=b"a")
    (q,) = queues(moto, bucket, 1)
    a = mount(bucket, "--notification-queue", q, "--notification-check-interval", "2")
    b = mount(bucket, "--notification-queue", q, "--notification-check-interval", "2")
    for m in (a, b):
        assert os.listdir(f"{m.path}/d") == ["a.txt"]
    start = time.time()
    for m in (a, b):
        until(lambda: notification_stats(m)["gaps"] >= 1, timeout=60, what="the shared queue")
    found = time.time() - start
    for m in (a, b):
        st = notification_stats(m)
        assert st["metadata_ttl"] == 60 and "another reader" in st["gap"], st
        assert m.log().count("another reader takes events") == 1, m.log()
        assert st["revalidations"] >= 1, st
    # Ten changes by another client: each mount receives about half of their events, and shows
    # the rest all the same after a revalidation, within the short TTL.
    for i in range(10):
        s3.put_object(Bucket=bucket, Key=f"d/n{i}.txt", Body=b"n" * i)
    want = sorted(["a.txt"] + [f"n{i}.txt" for i in range(10)])
    for m in (a, b):
        until(lambda: sorted(os.listdir(f"{m.path}/d")) == want, timeout=65, what="every change on both mounts")
    print(f"both mounts found the shared queue within {found:.1f} s")


def test_probes_come_back_to_a_mount_with_its_own_queue(moto, s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="f.txt", Body=b"x")
    (q,) = queues(moto, bucket, 1)
    m = mount(bucket, "--notification-queue", q, "--notification-check-interval", "1")
    until(lambda: notification_stats(m)["probes"]["back"] >= 3, timeout=30, what="three probes back")
    st = notification_stats(m)
    assert st["gaps"] == 0 and st["gap"] is None and st["metadata_ttl"] == 3600, st
    assert st["probes"]["foreign"] == 0 and st["malformed"] == 0, st
