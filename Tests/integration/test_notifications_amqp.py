"""S3 event notifications through AMQP (--notification-queue amqp://...): Ceph RGW pushes its
bucket notifications to a RabbitMQ started for these tests (its own data, log, ports and epmd),
set up by scripts/notifications-setup-rgw.sh: an RGW topic publishing to a topic exchange, one
queue per mount. Two daemons of one bucket stand for two hosts. With --metadata-ttl indefinite,
nothing but the events can make a mount see a change made by boto3, and it asks RGW nothing for
it. The refusals of a password on the command line or in a file others can read run on any store."""
import json
import os
import subprocess
import time
import uuid

import pytest

from conftest import CREDS, ROOT, BIN, run, delta

SETUP = os.path.join(ROOT, "scripts", "notifications-setup-rgw.sh")
from rabbitmq import RABBIT_BIN, USER, VHOST, Rabbit  # noqa: E402,F401 (scripts/, shared with burstbench)

rgw_only = pytest.mark.rgw_only("RGW pushes bucket notifications to AMQP; moto's S3 sends them to SQS only")


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory):
    if not os.path.exists(os.path.join(RABBIT_BIN, "rabbitmq-server")):
        pytest.fail("rabbitmq-server is not installed (bash scripts/setup.sh tests)")
    r = Rabbit(tmp_path_factory.mktemp("rabbit"))
    yield r
    r.stop()


def queues(store, rabbit, bucket, n):
    names = [f"q-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    env = dict(os.environ, **CREDS, AWS_ENDPOINT_URL=store.endpoint, S3MOUNT_AMQP_PASSWORD=rabbit.password, RGW_FORWARDED_HTTPS="1",
               # Pushed during the request: RGW 16's persistent topics crashed it here (a segfault in
               # a messenger thread) and deliver only when its notification thread next looks.
               RGW_PERSISTENT="0")
    r = subprocess.run(["bash", SETUP, bucket, rabbit.url(), *names], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert rabbit.password not in r.stdout + r.stderr
    urls = r.stdout.split()
    assert urls == [f"{rabbit.url()}?queue={n}" for n in names], r.stdout
    return names, urls


def first_event(s3, bucket, mounts):
    """One object put and deleted, waited for on every mount: the path works before counting. (A
    persistent topic's first events wait until RGW's notification thread picks its queue up,
    which it looks for every 30 s.)"""
    key = f"warm-up-{uuid.uuid4().hex[:6]}"
    for m in mounts:
        os.listdir(m.path)  # then only an event can show the new key
    s3.put_object(Bucket=bucket, Key=key, Body=b"w")
    for m in mounts:
        until(lambda: os.path.exists(f"{m.path}/{key}"), timeout=75, what="RGW's first event")
    s3.delete_object(Bucket=bucket, Key=key)
    for m in mounts:
        until(lambda: not os.path.exists(f"{m.path}/{key}"), what="the warm-up's delete")


def one_following_mount(store, s3, bucket, mount, rabbit):
    """A queue of its own and a mount that follows it (TTL indefinite), with the path shown to work."""
    (name,), (url,) = queues(store, rabbit, bucket, 1)
    m = mount(bucket, "--notification-queue", url, "--metadata-ttl", "indefinite", env={"S3MOUNT_AMQP_PASSWORD": rabbit.password})
    until(lambda: m.stats()["notifications"]["healthy"], what="the first receive")
    first_event(s3, bucket, (m,))
    return name, m


def until(check, timeout=45.0, what="the change"):
    start = time.time()
    while True:
        try:
            if check():
                return time.time() - start
        except (OSError, subprocess.SubprocessError):
            pass
        if time.time() - start > timeout:
            raise AssertionError(f"{what} did not show within {timeout} s")
        time.sleep(0.05)


def sh(*cmd):
    """A real tool's output; None when it fails (a missing file)."""
    r = run(list(cmd))
    return r.stdout if r.returncode == 0 else None


def password_file(tmp_path, password, mode=0o600):
    p = tmp_path / f"amqp-password-{uuid.uuid4().hex[:6]}"
    p.write_text(password + "\n")
    os.chmod(p, mode)
    return str(p)


@rgw_only
def test_puts_and_deletes_by_another_client_show_on_two_mounts(store, s3, bucket, mount, rabbit, tmp_path):
    for k in ("docs/a.txt", "keep.txt"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"seed " + k.encode())
    (na, nb), (qa, qb) = queues(store, rabbit, bucket, 2)
    # One mount takes the password from the environment, the other from a private file.
    a = mount(bucket, "--notification-queue", qa, "--metadata-ttl", "indefinite", env={"S3MOUNT_AMQP_PASSWORD": rabbit.password})
    b = mount(bucket, "--notification-queue", qb, "--metadata-ttl", "indefinite",
              "--notification-password-file", password_file(tmp_path, rabbit.password))
    for m in (a, b):
        until(lambda: m.stats()["notifications"]["healthy"], what="the first receive")
        assert sh("ls", "-R", m.path) is not None
        assert sorted(os.listdir(m.path)) == ["docs", "keep.txt"]
    first_event(s3, bucket, (a, b))
    before = {m: m.requests() for m in (a, b)}

    # RGW sends keys as they are: "+" and "%41" are no escapes.
    odd = "docs/a+b %41 é.txt"
    s3.put_object(Bucket=bucket, Key=odd, Body=b"12345")
    s3.put_object(Bucket=bucket, Key="docs/a.txt", Body=b"overwritten by boto3")
    s3.put_object(Bucket=bucket, Key="deep/er/new.txt", Body=b"new")
    for m in (a, b):
        until(lambda: sh("stat", "-c", "%s", f"{m.path}/{odd}") == "5\n", what=f"the put of {odd}")
        until(lambda: sh("cat", f"{m.path}/docs/a.txt") == "overwritten by boto3", what="the overwrite")
        until(lambda: sh("cat", f"{m.path}/deep/er/new.txt") == "new", what="a put into new directories")
        assert sorted(sh("ls", f"{m.path}/docs").split("\n")[:-1]) == ["a+b %41 é.txt", "a.txt"]
    s3.delete_object(Bucket=bucket, Key="deep/er/new.txt")
    s3.delete_object(Bucket=bucket, Key="keep.txt")
    for m in (a, b):
        until(lambda: sh("ls", m.path) == "docs\n", what="the deletes")
        assert sh("stat", f"{m.path}/keep.txt") is None
        assert sh("cat", f"{m.path}/{odd}") == "12345"

    for m in (a, b):
        used = delta(before[m], m.requests())
        assert used.get("ListObjectsV2", 0) == 0, (used, m.log())
        assert used.get("HeadObject", 0) == 0, used
        assert set(used) <= {"GetObject"}, f"only content was read: {used}"
        st = m.stats()["notifications"]
        assert st["applied"] >= 5 and st["malformed"] == 0 and st["healthy"], st
    # Everything applied was acked: nothing left in either queue, delivered or not.
    until(lambda: rabbit.messages(na) == (0, 0) and rabbit.messages(nb) == (0, 0), what="the acks")
    assert rabbit.password not in a.log() + b.log()


@rgw_only
def test_malformed_and_oversized_messages_are_acked_and_counted(store, s3, bucket, mount, rabbit, tmp_path):
    name, m = one_following_mount(store, s3, bucket, mount, rabbit)
    rabbit.publish(name, b"not json")
    rabbit.publish(name, b"{" + b" " * (2 << 20) + b"}")  # 2 MiB: over the bound, never read into memory whole
    s3.put_object(Bucket=bucket, Key="after.txt", Body=b"still works")
    until(lambda: sh("cat", f"{m.path}/after.txt") == "still works", what="the put after them")
    until(lambda: m.stats()["notifications"]["malformed"] == 2, what="both counted")
    until(lambda: rabbit.messages(name) == (0, 0), what="the acks")


@rgw_only
def test_a_broker_restart_falls_back_and_reconnects(store, s3, bucket, mount, rabbit, tmp_path):
    name, m = one_following_mount(store, s3, bucket, mount, rabbit)
    r = rabbit.ctl("stop_app")
    assert r.returncode == 0, r.stderr
    until(lambda: not m.stats()["notifications"]["healthy"], timeout=30, what="the lost connection")
    assert rabbit.ctl("start_app").returncode == 0
    until(lambda: m.stats()["notifications"]["healthy"], timeout=60, what="the reconnection")
    s3.put_object(Bucket=bucket, Key="later.txt", Body=b"after the restart")
    until(lambda: sh("cat", f"{m.path}/later.txt") == "after the restart", timeout=30, what="a put after the restart")


def test_a_password_on_the_command_line_or_in_an_open_file_is_refused(store, bucket, tmp_path):
    base = [BIN, bucket, str(tmp_path / "mnt"), "--endpoint-url", store.endpoint, "--force-path-style", "--foreground"]
    os.mkdir(tmp_path / "mnt")
    env = dict(os.environ, **CREDS)
    r = subprocess.run(base + ["--notification-queue", "amqp://u:hunter2@127.0.0.1/%2F?queue=q"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "holds a password" in r.stderr and "hunter2" not in r.stderr, r.stderr
    url = "amqp://u@127.0.0.1:1/%2F?queue=q"
    for mode in (0o644, 0o640, 0o604):
        r = subprocess.run(base + ["--notification-queue", url, "--notification-password-file", password_file(tmp_path, "pw", mode)],
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "can be read by others" in r.stderr and "chmod 600" in r.stderr, r.stderr
    # Private, but another user's: refused too.
    other = password_file(tmp_path, "pw")
    os.chown(other, 65534, 65534)
    r = subprocess.run(base + ["--notification-queue", url, "--notification-password-file", other], env=env,
                       capture_output=True, text=True, timeout=30)
    if os.getuid() == 0:
        assert r.returncode != 0 and "owned by uid 65534" in r.stderr, r.stderr
    # No password at all.
    env.pop("S3MOUNT_AMQP_PASSWORD", None)
    r = subprocess.run(base + ["--notification-queue", url], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "S3MOUNT_AMQP_PASSWORD" in r.stderr, r.stderr
    # A password file with an SQS queue means nothing.
    r = subprocess.run(base + ["--notification-queue", "https://sqs.us-east-1.amazonaws.com/1/q", "--notification-password-file", other],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "is for an amqp://" in r.stderr, r.stderr


def rgw_record(bucket, key, body):
    """A record as RGW 16 writes it (test_notifications_amqp's RGW tests see the real ones)."""
    import hashlib
    return json.dumps({"Records": [{"eventVersion": "2.2", "eventSource": "ceph:s3", "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                                    "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {
                                        "key": key, "size": len(body), "eTag": hashlib.md5(body).hexdigest(), "sequencer": "854E176B274D8724"}}}]})


def test_amqps_checks_the_broker_certificate(store, s3, bucket, mount, rabbit, tmp_path):
    """Over TLS with the CA given (S3MOUNT_AMQP_CA_FILE) an event arrives; without it the system's
    CA bundle does not know the broker's certificate, and the queue is never healthy. Events are
    published straight to the queue here: only the transport is in question, on any store."""
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    rabbit.publish(queue, None, declare=True)
    url = f"amqps://{USER}@localhost:{rabbit.tls_port}/s3m%2Ftests?queue={queue}"
    m = mount(bucket, "--notification-queue", url, "--metadata-ttl", "indefinite",
              env={"S3MOUNT_AMQP_PASSWORD": rabbit.password, "S3MOUNT_AMQP_CA_FILE": rabbit.ca})
    until(lambda: m.stats()["notifications"]["healthy"], what="the TLS connection")
    assert os.listdir(m.path) == []
    s3.put_object(Bucket=bucket, Key="tls.txt", Body=b"over tls")
    rabbit.publish(queue, rgw_record(bucket, "tls.txt", b"over tls"))
    until(lambda: sh("cat", f"{m.path}/tls.txt") == "over tls", what="the event over TLS")

    other = f"tls-{uuid.uuid4().hex[:8]}"
    rabbit.publish(other, None, declare=True)
    bad = mount(bucket, "--notification-queue", url.replace(queue, other), env={"S3MOUNT_AMQP_PASSWORD": rabbit.password})
    until(lambda: bad.stats()["notifications"]["poll_errors"] > 0, what="the refused certificate")
    assert not bad.stats()["notifications"]["healthy"]
    assert "SSL" in bad.log() or "certificate" in bad.log(), bad.log()
    assert rabbit.password not in bad.log()


@pytest.mark.parametrize("case", ["password", "vhost", "queue"])
def test_what_the_broker_refuses_is_logged_plainly(store, bucket, mount, rabbit, case):
    queue = f"ok-{uuid.uuid4().hex[:8]}"
    rabbit.publish(queue, None, declare=True)
    url, password, expect = f"{rabbit.url()}?queue={queue}", rabbit.password, ""
    if case == "password":
        password, expect = "wrong" + rabbit.password, "ACCESS_REFUSED"
    elif case == "vhost":
        url, expect = url.replace("s3m%2Ftests", "nowhere"), "NOT_ALLOWED - vhost nowhere not found"
    else:
        url, expect = url.replace(queue, "missing-" + queue), "NOT_FOUND"
    m = mount(bucket, "--notification-queue", url, env={"S3MOUNT_AMQP_PASSWORD": password})
    until(lambda: m.stats()["notifications"]["poll_errors"] > 0, what="the refusal")
    assert not m.stats()["notifications"]["healthy"]
    assert expect in m.log(), m.log()
    assert password not in m.log()


def test_a_burst_of_events_is_applied_and_acked(store, bucket, mount, rabbit):
    """300 events at once, more than the prefetch window (100) and the batches (10): all applied,
    all acked, nothing listed."""
    queue = f"burst-{uuid.uuid4().hex[:8]}"
    rabbit.publish(queue, None, declare=True)
    m = mount(bucket, "--notification-queue", f"{rabbit.url()}?queue={queue}", "--metadata-ttl", "indefinite",
              env={"S3MOUNT_AMQP_PASSWORD": rabbit.password})
    until(lambda: m.stats()["notifications"]["healthy"], what="the first receive")
    assert os.listdir(m.path) == []
    before = m.requests()
    import pika
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbit.port, VHOST, pika.PlainCredentials(USER, rabbit.password)))
    ch = c.channel()
    for i in range(300):
        ch.basic_publish(exchange="", routing_key=queue, body=rgw_record(bucket, f"burst/k{i:03d}", b"x" * i))
    c.close()
    until(lambda: len(os.listdir(f"{m.path}/burst")) == 300, what="all 300")
    assert sh("stat", "-c", "%s", f"{m.path}/burst/k299") == "299\n"
    until(lambda: rabbit.messages(queue) == (0, 0), what="the acks")
    st = m.stats()["notifications"]
    assert st["applied"] == 300 and st["malformed"] == 0, st
    used = delta(before, m.requests())
    assert "ListObjectsV2" not in used and "HeadObject" not in used, used


@rgw_only
def test_two_mounts_given_one_amqp_queue_are_detected(store, s3, bucket, mount, rabbit, tmp_path):
    """The broker hands a queue's messages to its consumers in turn: each mount receives the
    other's probes, says so once and falls back to the short TTL."""
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=b"a")
    _, (url,) = queues(store, rabbit, bucket, 1)
    env = {"S3MOUNT_AMQP_PASSWORD": rabbit.password}
    a = mount(bucket, "--notification-queue", url, "--notification-check-interval", "2", env=env)
    b = mount(bucket, "--notification-queue", url, "--notification-check-interval", "2", env=env)
    for m in (a, b):
        until(lambda: m.stats()["notifications"]["gaps"] >= 1, timeout=60, what="the shared queue")
        st = m.stats()["notifications"]
        assert "another reader" in st["gap"] and st["metadata_ttl"] == 60, st
        assert m.log().count("another reader takes events") == 1, m.log()


@rgw_only
def test_a_user_that_may_not_publish_consumes_without_probes(store, s3, bucket, mount, rabbit, tmp_path):
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=b"a")
    _, (url,) = queues(store, rabbit, bucket, 1)
    # A user that may read its queue and nothing else: its probes are refused.
    password = uuid.uuid4().hex
    for cmd in (("add_user", "reader", password), ("set_permissions", "-p", VHOST, "reader", "^$", "^$", ".*")):
        r = rabbit.ctl(*cmd)
        assert r.returncode == 0, r.stderr
    try:
        reader_url = url.replace(f"amqp://{USER}@", "amqp://reader@")
        m = mount(bucket, "--notification-queue", reader_url, "--notification-check-interval", "1", "--metadata-ttl", "indefinite",
                  env={"S3MOUNT_AMQP_PASSWORD": password})
        assert os.listdir(f"{m.path}/d") == ["a.txt"]
        until(lambda: "no probes" in m.log(), what="the refused probe")
        assert "ACCESS_REFUSED" in m.log() or "access" in m.log().lower(), m.log()
        # Consuming goes on: a put by boto3 shows, and no gap was made up.
        s3.put_object(Bucket=bucket, Key="d/b.txt", Body=b"bb")
        until(lambda: sorted(os.listdir(f"{m.path}/d")) == ["a.txt", "b.txt"], what="the put after the refusal")
        time.sleep(3)
        st = m.stats()["notifications"]
        assert st["healthy"] and st["gaps"] == 0 and st["metadata_ttl"] is None, st
    finally:
        rabbit.ctl("delete_user", "reader")
