#!/usr/bin/env bash
# Sets up the machine, builds, and runs every test: Swift unit and client integration tests
# (XCTest), then the mount integration tests (pytest: real FUSE mounts) once per S3 store: moto
# (moto_server, the emulator), then Ceph's RADOS Gateway (a single-node cluster started for the
# run, see scripts/rgwcluster.py). The last line sums up everything: "N passed, N failed", with the
# figures of each suite and store. Nothing is left in /tmp: pytest's folders, the cluster and the
# toolchain's own temporary files go to a scratch folder removed at the end.
#   bash scripts/test.sh [PYTEST ARGS]      # e.g. -k fstab -x
#   S3M_STORES=rgw bash scripts/test.sh     # one store only (default: "moto rgw")
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh tests
scratch=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-test.XXXXXX")
trap 'rm -rf --one-file-system "$scratch"' EXIT
# SwiftPM and the compiler leave lock files and TemporaryDirectory.* folders in $TMPDIR.
swift_() { TMPDIR="$scratch" swift "$@"; }

echo "== build (debug, with the tests)"
swift_ build --build-tests 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }

echo "== unit tests (XCTest)"
# Only XCTest: Swift Testing has no tests here and would end on "0 tests in 0 suites passed".
# Shown: what the tests print, failures and the suites that failed; not each test that passed.
set +e
swift_ test --skip-build --disable-swift-testing > "$scratch/xctest.log" 2>&1
xctest_rc=$?
set -e
grep -vE "^Test Case '.*' (started|passed)|^Test Suite '.*' (started|passed)|^[[:space:]]*Executed [0-9]+ tests?, with 0 failures|^\[[0-9]+/[0-9]+\] |^Building for|^Build complete" \
    "$scratch/xctest.log" || true

export S3MOUNT_BIN="$PWD/.build/debug/s3mount"
reports=()
for store in ${S3M_STORES:-moto rgw}; do
    echo "== integration tests on $store (pytest: real mounts)"
    start=$SECONDS
    set +e
    python3 -m pytest -q -p no:cacheprovider --store "$store" --basetemp="$scratch/pytest-$store" \
        --junitxml="$scratch/pytest-$store.xml" -o junit_family=xunit2 Tests/integration "$@"
    rc=$?
    set -e
    echo "== pytest on $store: $((SECONDS - start)) s"
    reports+=("$store" "$scratch/pytest-$store.xml" "$rc" "$((SECONDS - start))")
done

# One line for every suite: XCTest's last "Executed" line (all tests), each pytest run's JUnit report. A suite
# that ended without its figures (a crash) counts as one failure.
python3 - "$scratch/xctest.log" "$xctest_rc" "${reports[@]}" <<'PY'
import re
import sys
import xml.etree.ElementTree as ET

def xctest(path, rc):
    try:
        text = open(path, errors="replace").read()
    except OSError:
        text = ""
    found = re.findall(r"Executed (\d+) tests?, with (?:(\d+) tests? skipped and )?(\d+) failures?", text)
    if not found:
        return 0, 1, 0, f"no summary, exit {rc}"
    total, skipped, failed = (int(x or 0) for x in found[-1])
    return total - failed - skipped, failed, skipped, ""

def pytest(path, rc):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return 0, 1, 0, f"no report, exit {rc}"
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return total - failed - skipped, failed, skipped, ""

suites = [("XCTest", xctest, sys.argv[1], int(sys.argv[2]), None)]
rest = sys.argv[3:]
for i in range(0, len(rest), 4):
    store, path, rc, secs = rest[i:i + 4]
    suites.append((f"pytest on {store}", pytest, path, int(rc), int(secs)))
parts, passed, failed = [], 0, 0
for name, parse, path, rc, secs in suites:
    p, f, s, note = parse(path, rc)
    if secs is not None:
        note = ", ".join(x for x in (note, f"{secs} s") if x)
    if rc != 0 and f == 0:
        f, note = 1, f"exit {rc} without a failed test"
    passed, failed = passed + p, failed + f
    parts.append(f"{name} {p} passed, {f} failed" + (f", {s} skipped" if s else "") + (f" ({note})" if note else ""))
print(f"== {passed} passed, {failed} failed ({'; '.join(parts)})")
PY
all_rc=$xctest_rc
for ((i = 2; i < ${#reports[@]}; i += 4)); do [ "${reports[$i]}" -eq 0 ] || all_rc=1; done
[ "$all_rc" -eq 0 ]
