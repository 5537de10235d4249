#!/usr/bin/env bash
# Sets up the machine, builds, and runs every test: Swift unit and client integration tests,
# then the mount integration tests (real FUSE mounts against moto_server).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
swift build --build-tests >/dev/null

echo "== swift test"
swift test --skip-build 2>&1 | grep -vE "^Test Case .*(started|passed)" | tail -n 40
test "${PIPESTATUS[0]}" -eq 0

echo "== integration tests (real mounts)"
export S3MOUNT_BIN="$PWD/.build/debug/s3mount"
python3 -m pytest -q -p no:cacheprovider Tests/integration "$@"
