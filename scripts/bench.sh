#!/usr/bin/env bash
# Benchmarks s3mount against s3fs and rclone mount (default and --use-server-modtime) on a local
# S3 store, plain and behind a 20 ms-per-request latency proxy. Full run < 15 min; --quick < 3.
# The store is moto (the emulator) unless --store rgw: a single-node Ceph RADOS Gateway started for
# the run (scripts/rgwcluster.py), its results kept apart (docs/benchmarks/results-rgw.json).
#   bash scripts/bench.sh [--quick] [--store moto|rgw] [--tools s3mount,s3fs] [--only "cat,ls -la"]
set -euo pipefail
cd "$(dirname "$0")/.."
# The benchmark's tools (s3fs, rclone, the aws CLI, moto), and Ceph for --store rgw.
case " $* " in *" --store rgw "*|*" --store=rgw "*) bash scripts/setup.sh bench rgw ;; *) bash scripts/setup.sh bench ;; esac
swift build -c release 2>&1 | tail -1
S3MOUNT_BIN="$PWD/.build/release/s3mount" python3 scripts/bench.py "$@"
