#!/usr/bin/env bash
# Builds the fuzz targets (FuzzTargets/, libFuzzer: swift build --sanitize=fuzzer) and runs each
# for a fixed time, one after the other, on a scratch copy of its corpus (FuzzTargets/corpus/<target>/,
# so a run leaves the repository as it was). A crash, a trap, a broken invariant, a hang (over 10 s
# on one input) or more than 2 GB of memory (8 GB for s3xml) stops that target; its input is kept in
# FuzzTargets/.build/crashes/<target>/ and the script exits 1 after the other targets ran.
# The last lines give each target's executions and executions per second (docs/FUZZING.md).
#   bash scripts/fuzz.sh                 # every target, 60 s each
#   bash scripts/fuzz.sh 600 s3xml http  # those targets, 10 minutes each
# Reproduce a crash: FuzzTargets/.build/debug/fuzz-TARGET FuzzTargets/.build/crashes/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/../FuzzTargets"

seconds=${1:-60}
shift || true
all=(s3xml events metadata journal credentials http fstab)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [ -d "corpus/$t" ] || { echo "fuzz.sh: no target \"$t\" (targets: ${all[*]})" >&2; exit 2; }
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-fuzz.XXXXXX")
trap 'rm -rf --one-file-system "$scratch"' EXIT

echo "== build (swift build --sanitize=fuzzer)"
start=$SECONDS
TMPDIR="$scratch" nice -n 10 swift build --sanitize=fuzzer 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }
echo "== build: $((SECONDS - start)) s"

rc=0
summary=()
for t in "${targets[@]}"; do
    echo "== fuzz-$t for $seconds s"
    mkdir -p "$scratch/corpus-$t" ".build/crashes/$t"
    cp -R "corpus/$t/." "$scratch/corpus-$t/"
    # A copy of the binary: a build during the run does not pull it from under the fuzzer.
    cp ".build/debug/fuzz-$t" "$scratch/fuzz-$t"
    set +e
    # FoundationXML leaks a little on each document it cannot parse (docs/FUZZING.md): s3xml gets more room.
    rss=2048
    [ "$t" != s3xml ] || rss=8192
    SWIFT_BACKTRACE=enable=no nice -n 10 "$scratch/fuzz-$t" "$scratch/corpus-$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=$rss \
        -max_len=16384 -print_final_stats=1 -artifact_prefix=".build/crashes/$t/" > "$scratch/$t.log" 2>&1
    trc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$t.log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$scratch/$t.log" | tail -1)
    if [ "$trc" -ne 0 ]; then
        rc=1
        grep -E 'ERROR|Fatal error|invariant broken|SUMMARY|Test unit written|panic' "$scratch/$t.log" | head -20 || true
        tail -40 "$scratch/$t.log" > ".build/crashes/$t/last.log"
        summary+=("fuzz-$t: CRASH (exit $trc) after ${execs:-?} executions; see FuzzTargets/.build/crashes/$t/")
    else
        summary+=("fuzz-$t: $seconds s, ${execs:-?} executions, ${rate:-?}/s, $cov, no crash")
    fi
    echo "${summary[-1]}"
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $rc
