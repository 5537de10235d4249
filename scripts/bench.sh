#!/usr/bin/env bash
# Benchmarks s3mount against s3fs and rclone mount (default and --use-server-modtime) on a local
# S3 store, plain and behind a 20 ms-per-request latency proxy. Full run < 15 min; --quick < 3.
# The store is moto (the emulator) unless --store rgw: a single-node Ceph RADOS Gateway started for
# the run (scripts/rgwcluster.py), its results kept apart (docs/benchmarks/results-rgw.json).
#   bash scripts/bench.sh [--quick] [--store moto|rgw] [--tools s3mount,s3fs] [--only "cat,ls -la"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
missing=()
for p in s3fs rclone curl; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v aws >/dev/null 2>&1 || python3 -m pip install -q awscli
swift build -c release 2>&1 | tail -1
S3MOUNT_BIN="$PWD/.build/release/s3mount" python3 scripts/bench.py "$@"
