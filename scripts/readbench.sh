#!/usr/bin/env bash
# Sequential read through the mount against a direct curl download of the same object from the
# same emulator: N alternating runs each (page cache dropped before every run), medians.
#   bash scripts/readbench.sh [SIZE_MIB (1024)] [RUNS (6)] [extra s3mount options...]
# Needs root (drop_caches) and a release build (bash scripts/bench.sh builds one).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}; RUNS=${2:-6}; shift $(( $# > 2 ? 2 : $# )) || true
BIN=${S3MOUNT_BIN:-$PWD/.build/release/s3mount}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WORK=$(mktemp -d /tmp/s3mount-readbench-XXXX)
moto_server -H 127.0.0.1 -p "$PORT" > "$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'umount "$WORK/mnt" 2>/dev/null || true; kill $MOTO 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$PORT" >/dev/null && break; sleep 0.1; done
EP="http://127.0.0.1:$PORT"
aws --endpoint-url "$EP" s3 mb s3://readbench >/dev/null
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/obj.bin"
aws --endpoint-url "$EP" s3 cp "$WORK/obj.bin" s3://readbench/obj.bin --quiet
rm "$WORK/obj.bin"
URL=$(aws --endpoint-url "$EP" s3 presign s3://readbench/obj.bin)
mkdir "$WORK/mnt"
"$BIN" readbench "$WORK/mnt" --endpoint-url "$EP" --force-path-style "$@"
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
c=(); m=()
for _ in $(seq "$RUNS"); do
    echo 3 > /proc/sys/vm/drop_caches; c+=("$(secs curl -s -o /dev/null "$URL")")
    echo 3 > /proc/sys/vm/drop_caches; m+=("$(secs cat "$WORK/mnt/obj.bin")")
done
gets=$(grep -c "GET /readbench/obj.bin" "$WORK/moto.log" || true)
python3 - "$SIZE_MIB" "${c[*]}" "${m[*]}" "$gets" "$RUNS" <<'PY'
import statistics as st, sys
size = int(sys.argv[1]) << 20
c = [float(x) for x in sys.argv[2].split()]; m = [float(x) for x in sys.argv[3].split()]
mc, mm = st.median(c), st.median(m)
print(f"curl:  median {mc:.2f} s ({size / mc / 1e6:.0f} MB/s), runs {' '.join(f'{x:.2f}' for x in c)}")
print(f"mount: median {mm:.2f} s ({size / mm / 1e6:.0f} MB/s), runs {' '.join(f'{x:.2f}' for x in m)}")
print(f"mount / curl: {100 * mc / mm:.0f} %; GET requests for the object: {sys.argv[4]} (curl {sys.argv[5]}, mount {int(sys.argv[4]) - int(sys.argv[5])})")
PY
