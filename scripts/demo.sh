#!/usr/bin/env bash
# First run without a cloud account: builds s3mount, starts a local S3 store with a sample bucket
# (the emulator moto, or with --rgw a single-node Ceph cluster with the RADOS Gateway), mounts it,
# browses it, and prints the request statistics. It leaves the mount and the store running for you
# to try; `stop` unmounts and stops the store it started.
#   bash scripts/demo.sh            # mount at /tmp/s3mount-demo
#   bash scripts/demo.sh --rgw      # the same on Ceph RGW (a cluster in /tmp/s3mount-demo-rgw)
#   MOUNTPOINT=~/s3 bash scripts/demo.sh
#   bash scripts/demo.sh stop       # unmount, stop the store (by its PIDs), remove the logs
set -euo pipefail
cd "$(dirname "$0")/.."

# What the demo left running, for `stop`: KEY=value lines.
STATE="/tmp/s3mount-demo.state"

state_get() {  # state_get KEY: the value, or nothing
    if [ -f "$STATE" ]; then sed -n "s/^$1=//p" "$STATE" | head -1; fi
}

running_moto() {  # running_moto PID: the PID is a moto_server
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' < "/proc/$1/cmdline" | grep -q moto_server
}

stop() {
    if [ ! -f "$STATE" ]; then
        echo "demo: nothing to stop ($STATE is missing: no demo running, or stopped already)"
        return 0
    fi
    if [ "$(stat -c %u "$STATE")" != "$(id -u)" ]; then
        echo "demo: $STATE belongs to another user: not using it" >&2
        return 1
    fi
    local mp daemon moto log motolog rgwdir
    mp=$(state_get MOUNTPOINT); daemon=$(state_get DAEMON_PID); moto=$(state_get MOTO_PID)
    log=$(state_get LOG); motolog=$(state_get MOTO_LOG); rgwdir=$(state_get RGW_DIR)
    if [ -n "$mp" ] && grep -q " $mp fuse" /proc/mounts; then
        fusermount3 -u "$mp"
        echo "demo: unmounted $mp"
    fi
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        # It exits by itself once unmounted (after its last uploads).
        for _ in $(seq 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$daemon" 2>/dev/null && echo "demo: the s3mount daemon (PID $daemon) is still finishing" \
            || echo "demo: the s3mount daemon (PID $daemon) has exited"
    fi
    if running_moto "$moto"; then
        kill "$moto"
        for _ in $(seq 100); do kill -0 "$moto" 2>/dev/null || break; sleep 0.1; done
        echo "demo: stopped the S3 emulator (moto_server, PID $moto)"
    elif [ -n "$moto" ]; then
        echo "demo: the S3 emulator (PID $moto) is not running any more"
    fi
    if [ -n "$rgwdir" ] && [ -d "$rgwdir" ]; then
        # Only the daemons its start recorded, each checked to be that cluster's.
        python3 scripts/rgwcluster.py stop "$rgwdir" | sed 's/^rgwcluster:/demo:/'
        rm -rf --one-file-system "$rgwdir"
        echo "demo: removed the Ceph cluster's folder $rgwdir"
    fi
    [ -n "$mp" ] && rmdir "$mp" 2>/dev/null || true
    rm -f "$log" "$motolog" "$STATE"
    echo "demo: removed the logs and $STATE"
}

STORE=moto
if [ "${1:-}" = "stop" ]; then
    stop
    exit
elif [ "${1:-}" = "--rgw" ] && [ $# -eq 1 ]; then
    STORE=rgw
elif [ $# -gt 0 ]; then
    echo "usage: bash scripts/demo.sh [--rgw | stop]" >&2
    exit 2
fi

MOUNTPOINT="${MOUNTPOINT:-/tmp/s3mount-demo}"
PORT="${S3_PORT:-5900}"
ENDPOINT="http://127.0.0.1:$PORT"
BUCKET="demo-bucket"
LOG=/tmp/s3mount-demo.log
MOTO_LOG=/tmp/s3mount-demo-moto.log
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-demo}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-demo}" AWS_REGION="${AWS_REGION:-us-east-1}"

# Only what the demo needs (FUSE and the build's libraries, the emulator or Ceph, boto3 for the
# sample bucket), said before it is installed: not the test bench (scripts/setup.sh tests).
demo_start=$SECONDS
echo "== setting up what the demo needs (scripts/setup.sh $( [ "$STORE" = rgw ] && echo rgw-demo || echo demo))"
bash scripts/setup.sh "$( [ "$STORE" = rgw ] && echo rgw-demo || echo demo)"
setup_seconds=$((SECONDS - demo_start))
echo "== building (release)"
bash scripts/build-release.sh
build_seconds=$((SECONDS - demo_start - setup_seconds))
BIN="$PWD/.build/release/s3mount"

# A demo on one store replaces a running demo on the other.
if [ -f "$STATE" ] && { { [ "$STORE" = rgw ] && [ -n "$(state_get MOTO_PID)" ]; } || { [ "$STORE" = moto ] && [ -n "$(state_get RGW_DIR)" ]; }; }; then
    echo "== stopping the earlier demo on the other store"
    stop
fi

RGW_DIR=""
MOTO_PID=""
if [ "$STORE" = rgw ]; then
    RGW_DIR=/tmp/s3mount-demo-rgw
    if [ -d "$RGW_DIR" ] && [ -f "$RGW_DIR/pids" ] && curl -s -o /dev/null "$ENDPOINT/"; then
        echo "== the Ceph RGW cluster of an earlier demo answers on $ENDPOINT ($RGW_DIR)"
    else
        if curl -s -o /dev/null "$ENDPOINT/"; then
            echo "demo: something this demo did not start answers on $ENDPOINT: set S3_PORT to a free port" >&2
            exit 1
        fi
        [ -d "$RGW_DIR" ] && python3 scripts/rgwcluster.py stop "$RGW_DIR" >/dev/null && rm -rf --one-file-system "$RGW_DIR"
        echo "== starting a single-node Ceph cluster with the RADOS Gateway on $ENDPOINT (in $RGW_DIR; a few seconds)"
        python3 scripts/rgwcluster.py start "$RGW_DIR" --port "$PORT" --access-key "$AWS_ACCESS_KEY_ID" \
            --secret-key "$AWS_SECRET_ACCESS_KEY" > "$RGW_DIR.json"
        mv "$RGW_DIR.json" "$RGW_DIR/cluster.json"
        echo "   up in $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["startup_seconds"])' "$RGW_DIR/cluster.json") s; daemons: $(tr '\n' ' ' < "$RGW_DIR/pids")"
    fi
    MOTO_LOG="$RGW_DIR/log/client.rgw.log"
else
MOTO_PID=$(state_get MOTO_PID)
if running_moto "$MOTO_PID" && curl -s -o /dev/null "$ENDPOINT/moto-api/"; then
    echo "== the S3 emulator of an earlier demo is running on $ENDPOINT (PID $MOTO_PID)"
elif curl -s -o /dev/null "$ENDPOINT/moto-api/"; then
    MOTO_PID=""
    echo "== an S3 emulator this demo did not start answers on $ENDPOINT: using it (stop will leave it running)"
else
    echo "== starting the local S3 emulator on $ENDPOINT (log: $MOTO_LOG)"
    nohup moto_server -H 127.0.0.1 -p "$PORT" > "$MOTO_LOG" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 100); do curl -s -o /dev/null "$ENDPOINT/moto-api/" && break; sleep 0.1; done
    curl -s -o /dev/null "$ENDPOINT/moto-api/" || { echo "demo: moto_server did not start: see $MOTO_LOG" >&2; exit 1; }
fi
fi
# An earlier demo's mount elsewhere is not left behind when this one forgets it.
old_mp=$(state_get MOUNTPOINT)
if [ -n "$old_mp" ] && [ "$old_mp" != "$MOUNTPOINT" ] && grep -q " $old_mp fuse" /proc/mounts; then
    fusermount3 -u "$old_mp" && echo "== unmounted the earlier demo's $old_mp"
fi
printf 'MOUNTPOINT=%s\nMOTO_PID=%s\nRGW_DIR=%s\nLOG=%s\nMOTO_LOG=%s\n' "$MOUNTPOINT" "$MOTO_PID" "$RGW_DIR" "$LOG" \
    "$( [ "$STORE" = moto ] && echo "$MOTO_LOG")" > "$STATE"

echo "== seeding s3://$BUCKET (a tree of 2,000 objects and a 64 MiB file)"
python3 - "$ENDPOINT" "$BUCKET" <<'PY'
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
ep, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=ep, config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
try:
    s3.create_bucket(Bucket=bucket)
except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
    pass
t = time.time()
keys = [f"projects/p{p:02d}/{kind}/file-{i:03d}.txt" for p in range(20) for kind in ("src", "docs") for i in range(50)]
with ThreadPoolExecutor(32) as ex:
    for n, _ in enumerate(ex.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=f"contents of {k}\n".encode()), keys), 1):
        if n % 500 == 0:
            print(f"   {n} objects", flush=True)
s3.put_object(Bucket=bucket, Key="README.txt", Body=b"Welcome to the s3mount demo bucket.\n")
s3.put_object(Bucket=bucket, Key="media/big-video.bin", Body=os.urandom(64 << 20))
print(f"   seeded in {time.time() - t:.1f} s")
PY

mkdir -p "$MOUNTPOINT"
if grep -q " $MOUNTPOINT fuse" /proc/mounts; then fusermount3 -u "$MOUNTPOINT"; fi
echo "== mounting: s3mount $BUCKET $MOUNTPOINT --endpoint-url $ENDPOINT --force-path-style"
"$BIN" "$BUCKET" "$MOUNTPOINT" --endpoint-url "$ENDPOINT" --force-path-style --log-file "$LOG"
# The daemon's PID, from its "mounted" line.
DAEMON_PID=$(sed -n 's/.* s3mount\[\([0-9]*\)\] info: mounted .*/\1/p' "$LOG" | tail -1)
echo "DAEMON_PID=$DAEMON_PID" >> "$STATE"

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

Left running for you to try:
  - the bucket mounted at $MOUNTPOINT (s3mount daemon, PID ${DAEMON_PID:-?}; log: $LOG):
    browse it with ls, find, cat or a file manager
  - $( if [ "$STORE" = rgw ]; then echo "Ceph's RADOS Gateway on $ENDPOINT (monitor, OSD and radosgw: PIDs $(awk '{print $2}' "$RGW_DIR/pids" | tr '\n' ' ')in $RGW_DIR; its log, one line per request: $MOTO_LOG)";
      else echo "the S3 emulator moto_server on $ENDPOINT$( [ -n "$MOTO_PID" ] && echo " (PID $MOTO_PID; log: $MOTO_LOG)" || echo " (not started by this demo)")"; fi)
Stop both:  bash scripts/demo.sh stop

The demo took $((SECONDS - demo_start)) s (setup ${setup_seconds} s, build ${build_seconds} s).
MSG
