#!/usr/bin/env bash
# Builds the package and its tests with a sanitizer and runs the XCTest tests (unit, reference
# model, client integration against moto_server) under it:
#   bash scripts/sanitizers.sh address   # AddressSanitizer (+ LeakSanitizer): overflows, use after free, leaks
#   bash scripts/sanitizers.sh thread    # ThreadSanitizer: data races
#   bash scripts/sanitizers.sh thread --filter ReferenceModel   # extra arguments go to swift test
# The build goes to .build-<sanitizer>/ (the plain .build/ is left as it is). Exits non-zero when a
# test fails or the sanitizer reports anything; the reports are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
san=${1:-address}
shift || true
case "$san" in address|thread) ;; *) echo "usage: sanitizers.sh [address|thread] [SWIFT TEST ARGS]" >&2; exit 2 ;; esac

scratch=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-$san.XXXXXX")
trap 'rm -rf --one-file-system "$scratch"' EXIT
swift_() { TMPDIR="$scratch" nice -n 10 swift "$@"; }

echo "== build with --sanitize=$san"
start=$SECONDS
swift_ build --build-tests --sanitize="$san" --scratch-path ".build-$san" 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }
echo "== build: $((SECONDS - start)) s"

echo "== XCTest under --sanitize=$san"
start=$SECONDS
set +e
# halt_on_error=0 for TSan: every race of the run is reported, not only the first. No Swift
# backtracer: under ASan it faults reading the crashed process's memory and hangs the run.
# LeakSanitizer: leaks in Foundation and XCTest are suppressed (scripts/lsan-suppressions.txt).
SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan-suppressions.txt:print_suppressions=0} TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1} \
    swift_ test --skip-build --sanitize="$san" --scratch-path ".build-$san" --disable-swift-testing "$@" > "$scratch/test.log" 2>&1
rc=$?
set -e
echo "== tests: $((SECONDS - start)) s (exit $rc)"
grep -E "^Test Case '.*' failed|error: |Executed [0-9]+ tests?" "$scratch/test.log" | tail -20 || true
reports=$(grep -cE '^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: (Address|Leak)Sanitizer)' "$scratch/test.log" || true)
# At exit LeakSanitizer also finds what XCTest never frees: its test cases and what they hold,
# kept in cycles ("Indirect leak" only, no "Direct leak"). Those are not counted.
if [ "$reports" -gt 0 ] && ! grep -qE '^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: AddressSanitizer|Direct leak)' "$scratch/test.log"; then
    echo "== LeakSanitizer: $(grep -c '^Indirect leak' "$scratch/test.log") indirect leaks only (objects in cycles kept by XCTest's test cases), not counted"
    reports=0
    # Its report made the test process exit non-zero: the tests' own result is the summary line.
    if grep -E 'Executed [0-9]+ tests?, with' "$scratch/test.log" | tail -1 | grep -q 'with 0 failures'; then rc=0; fi
fi
if [ "$reports" -gt 0 ]; then
    echo "== $reports sanitizer report(s)"
    # Each report, up to its SUMMARY line.
    awk '/^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: (Address|Leak)Sanitizer)/{p=1} p{print} /^SUMMARY: /{p=0}' "$scratch/test.log"
    rc=1
fi
[ "$rc" -eq 0 ]
