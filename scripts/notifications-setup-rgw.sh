#!/usr/bin/env bash
# Sets up bucket notifications on Ceph RGW for s3mount's --notification-queue, through RabbitMQ
# (RGW pushes to AMQP; it has no SQS): a topic exchange on the broker, one durable queue per mount
# bound to it, an RGW topic (RGW's SNS-compatible API) that publishes to that exchange, and the
# bucket's notification configuration (ObjectCreated:* and ObjectRemoved:* to the topic). Prints
# each mount's --notification-queue URL, one per line. Safe to run again (it adds queues).
#
#   S3MOUNT_AMQP_PASSWORD=... bash scripts/notifications-setup-rgw.sh BUCKET amqp://USER@HOST[:PORT][/VHOST] QUEUE_NAME [QUEUE_NAME...]
#   e.g. bash scripts/notifications-setup-rgw.sh my-bucket amqp://s3mount@rabbit.example:5672/%2F s3mount-host1 s3mount-host2
#
# The broker URL is as RGW reaches it (RGW and the mounts connect as that user here; give the mounts
# a user of their own that may only read their queues if you like). The password comes from
# S3MOUNT_AMQP_PASSWORD, never the command line. RGW: AWS_ENDPOINT_URL and the usual AWS_* keys
# (boto3's configuration); RGW refuses a topic whose endpoint holds a password unless the request
# came over HTTPS: an https:// endpoint, or RGW's `rgw_trust_forwarded_https` and
# RGW_FORWARDED_HTTPS=1 here (a request that says it passed a TLS proxy). AMQP_EXCHANGE names the
# exchange (default s3mount). RGW_PERSISTENT=0: a topic RGW pushes to during the request, not
# from its queue of persistent notifications (which it retries while the broker is down, but
# looks at only every few seconds). Needs python3 with boto3 and pika (pip install boto3 pika).
# A bucket that already has a notification configuration is left alone (say so, merge by hand).
set -euo pipefail

if [ $# -lt 3 ] || [[ "$1" == -* ]]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
python3 -c "import boto3, pika" 2>/dev/null || { echo "notifications-setup-rgw: python3 with boto3 and pika is needed (pip install boto3 pika)" >&2; exit 1; }
[ -n "${S3MOUNT_AMQP_PASSWORD:-}" ] || { echo "notifications-setup-rgw: set S3MOUNT_AMQP_PASSWORD to the broker user's password" >&2; exit 1; }
[ -n "${AWS_ENDPOINT_URL:-}" ] || { echo "notifications-setup-rgw: set AWS_ENDPOINT_URL to RGW's S3 endpoint" >&2; exit 1; }

exec python3 - "$@" <<'PY'
import json
import os
import sys
import urllib.parse

import boto3
import pika

bucket, broker, queues = sys.argv[1], sys.argv[2], sys.argv[3:]
password = os.environ["S3MOUNT_AMQP_PASSWORD"]
exchange = os.environ.get("AMQP_EXCHANGE", "s3mount")
endpoint = os.environ["AWS_ENDPOINT_URL"]

def fail(why):
    print(f"notifications-setup-rgw: {why}", file=sys.stderr)
    sys.exit(1)

u = urllib.parse.urlsplit(broker)
if u.scheme not in ("amqp", "amqps"):
    fail(f"the broker URL must be amqp:// or amqps://, not {u.scheme}://")
if u.password is not None:
    fail("the broker URL must not hold the password (S3MOUNT_AMQP_PASSWORD holds it)")
if not u.username or not u.hostname or u.query or u.fragment:
    fail("expected amqp://USER@HOST[:PORT][/VHOST]")
tls = u.scheme == "amqps"
port = u.port or (5671 if tls else 5672)
vhost_enc = u.path[1:] if u.path.startswith("/") else ""
vhost = urllib.parse.unquote(vhost_enc) if vhost_enc else "/"
user = urllib.parse.unquote(u.username)
host = u.hostname
host_in_url = f"[{host}]" if ":" in host else host
topic = "s3mount-" + bucket.replace(".", "-")

# The broker: the exchange RGW publishes to (topic type: RGW's routing key is the topic's name),
# and each mount's queue bound to it with that key. Durable: a broker restart keeps them.
params = pika.ConnectionParameters(host=host, port=port, virtual_host=vhost,
                                   credentials=pika.PlainCredentials(user, password),
                                   ssl_options=pika.SSLOptions(__import__("ssl").create_default_context(), host) if tls else None,
                                   socket_timeout=10, blocked_connection_timeout=10)
try:
    conn = pika.BlockingConnection(params)
except Exception as e:
    fail(f"cannot connect to the broker at {host}:{port} vhost {vhost!r} as {user!r}: {e!r}")
ch = conn.channel()
ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
for q in queues:
    ch.queue_declare(queue=q, durable=True)
    ch.queue_bind(queue=q, exchange=exchange, routing_key=topic)
conn.close()

# RGW's topic: its SNS-compatible API at the S3 endpoint. The push endpoint holds the password
# (RGW keeps it and shows it to the topic's owner only).
sns = boto3.client("sns", endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
if os.environ.get("RGW_FORWARDED_HTTPS") == "1":
    sns.meta.events.register("before-sign.sns.*", lambda request, **kw: request.headers.__setitem__("X-Forwarded-Proto", "https"))
push = (f"{u.scheme}://{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@{host_in_url}:{port}"
        + (f"/{vhost_enc}" if vhost_enc else ""))
attributes = {"push-endpoint": push, "amqp-exchange": exchange, "amqp-ack-level": "broker",
              "persistent": "false" if os.environ.get("RGW_PERSISTENT") == "0" else "true"}
if tls:
    attributes["verify-ssl"] = "true"
try:
    topic_arn = sns.create_topic(Name=topic, Attributes=attributes)["TopicArn"]
except Exception as e:
    text = str(e).replace(password, "***")
    if "insecure transport" in text:
        fail(f"RGW refuses a push endpoint with a password over plain HTTP ({text}); use RGW's https:// endpoint, "
             "or set rgw_trust_forwarded_https on RGW and RGW_FORWARDED_HTTPS=1 here")
    fail(f"creating the topic {topic}: {text}")

s3 = boto3.client("s3", endpoint_url=endpoint)
existing = s3.get_bucket_notification_configuration(Bucket=bucket)
existing.pop("ResponseMetadata", None)
ours = [c for c in existing.get("TopicConfigurations", []) if c.get("TopicArn") == topic_arn]
others = {k: v for k, v in existing.items() if v and k != "TopicConfigurations"}
if not ours:
    if others or existing.get("TopicConfigurations"):
        print(f"notifications-setup-rgw: bucket {bucket} already has a notification configuration; add this to it by hand:", file=sys.stderr)
        print(f"  TopicConfigurations: [{{TopicArn: {topic_arn}, Events: [s3:ObjectCreated:*, s3:ObjectRemoved:*]}}]", file=sys.stderr)
        sys.exit(1)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"TopicConfigurations": [
        {"Id": "s3mount", "TopicArn": topic_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})

for q in queues:
    print(f"{u.scheme}://{urllib.parse.quote(user, safe='')}@{host_in_url}:{port}/{urllib.parse.quote(vhost, safe='')}?queue={urllib.parse.quote(q, safe='')}")
PY
