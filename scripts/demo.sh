#!/usr/bin/env bash
# First run without a cloud account: builds s3mount, starts a local S3 emulator (moto) with a
# sample bucket, mounts it, browses it, and prints the request statistics.
#   bash scripts/demo.sh            # mount at /tmp/s3mount-demo
#   MOUNTPOINT=~/s3 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MOUNTPOINT="${MOUNTPOINT:-/tmp/s3mount-demo}"
PORT="${S3_PORT:-5900}"
ENDPOINT="http://127.0.0.1:$PORT"
BUCKET="demo-bucket"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-demo}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-demo}" AWS_REGION="${AWS_REGION:-us-east-1}"

bash scripts/setup.sh
echo "== building (release)"
swift build -c release 2>&1 | tail -1
BIN="$PWD/.build/release/s3mount"

if ! curl -s -o /dev/null "$ENDPOINT/moto-api/"; then
    echo "== starting the local S3 emulator on $ENDPOINT (log: /tmp/s3mount-demo-moto.log)"
    nohup moto_server -H 127.0.0.1 -p "$PORT" > /tmp/s3mount-demo-moto.log 2>&1 &
    for _ in $(seq 100); do curl -s -o /dev/null "$ENDPOINT/moto-api/" && break; sleep 0.1; done
fi

echo "== seeding s3://$BUCKET (a tree of 2,000 objects and a 64 MiB file)"
python3 - "$ENDPOINT" "$BUCKET" <<'PY'
import os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
ep, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=ep, config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
keys = [f"projects/p{p:02d}/{kind}/file-{i:03d}.txt" for p in range(20) for kind in ("src", "docs") for i in range(50)]
with ThreadPoolExecutor(32) as ex:
    list(ex.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=f"contents of {k}\n".encode()), keys))
s3.put_object(Bucket=bucket, Key="README.txt", Body=b"Welcome to the s3mount demo bucket.\n")
s3.put_object(Bucket=bucket, Key="media/big-video.bin", Body=os.urandom(64 << 20))
PY

mkdir -p "$MOUNTPOINT"
if grep -q " $MOUNTPOINT fuse" /proc/mounts; then fusermount3 -u "$MOUNTPOINT"; fi
echo "== mounting: s3mount $BUCKET $MOUNTPOINT --endpoint-url $ENDPOINT --force-path-style"
"$BIN" "$BUCKET" "$MOUNTPOINT" --endpoint-url "$ENDPOINT" --force-path-style --log-file /tmp/s3mount-demo.log

echo "== ls -la $MOUNTPOINT"
ls -la "$MOUNTPOINT"
echo "== ls -la $MOUNTPOINT/projects/p00/src | head"
ls -la "$MOUNTPOINT/projects/p00/src" | head -5
echo "== find $MOUNTPOINT | wc -l"
find "$MOUNTPOINT" | wc -l
echo "== cat $MOUNTPOINT/README.txt"
cat "$MOUNTPOINT/README.txt"
echo "== s3mount stats $MOUNTPOINT"
"$BIN" stats "$MOUNTPOINT"
cat <<MSG

The bucket is mounted at $MOUNTPOINT: browse it with ls, find, cat or a file manager.
Stop:   fusermount3 -u $MOUNTPOINT        (the emulator: pkill -f "moto_server -H 127.0.0.1 -p $PORT")
Log:    /tmp/s3mount-demo.log
MSG
