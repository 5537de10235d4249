#!/usr/bin/env bash
# The chaos run (issue 15): every integration test, with each mount behind a proxy that answers
# 5 % of requests with 503 SlowDown (before they reach the store) and resets 1 % of connections
# after the store served them (mid-body when there is one). The tests assert what they assert in a
# normal run (requests a fault hit are left out of their counts), so a pass means no writer saw an
# error and no wrong byte was read. Ends with the faults injected and what the mounts logged.
#   bash scripts/chaos.sh [PYTEST ARGS]        SLOWDOWN=0.05 RESET=0.01 SEED=N to change the odds
set -euo pipefail
cd "$(dirname "$0")/.."
slowdown=${SLOWDOWN:-0.05}
reset=${RESET:-0.01}
swift build --build-tests 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }
scratch=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-chaos.XXXXXX")
trap 'rm -rf --one-file-system "$scratch"' EXIT
# A copy of the binary: a rebuild during the run does not change what is tested.
cp .build/debug/s3mount "$scratch/s3mount"
export S3M_CHAOS="$slowdown,$reset" S3MOUNT_BIN="$scratch/s3mount"
[ -n "${SEED:-}" ] && export S3M_CHAOS_SEED="$SEED"
set +e
python3 -m pytest -q -p no:cacheprovider --basetemp="$scratch/pytest" Tests/integration "$@"
rc=$?
set -e
python3 - "$scratch/pytest" "$slowdown" "$reset" <<'PY'
import collections
import glob
import json
import os
import sys

root, slowdown, reset = sys.argv[1:]
faults = collections.Counter()
# pytest's "...current" links name the same folders again: each file once.
def files(pattern):
    return sorted({os.path.realpath(p) for p in glob.glob(f"{root}/**/{pattern}", recursive=True)})

for path in files("*-chaos.jsonl"):
    for line in open(path):
        r = json.loads(line)
        faults[("503 SlowDown" if r["kind"] == "slowdown" else "reset", r["op"])] += 1
logs = files("s3m-*.log")
unsaved = {}
for p in logs:
    n = open(p, errors="replace").read().count("could not be uploaded")
    if n:
        test = os.path.basename(os.path.dirname(p))
        unsaved[test] = unsaved.get(test, 0) + n
print(f"== chaos: {float(slowdown):.0%} SlowDown, {float(reset):.0%} resets; "
      f"{sum(n for (k, _), n in faults.items() if k != 'reset')} SlowDowns and "
      f"{sum(n for (k, _), n in faults.items() if k == 'reset')} resets injected in {len(logs)} mounts")
for (kind, op), n in sorted(faults.items(), key=lambda x: -x[1]):
    print(f"   {n:6d}  {kind:12s} {op}")
# Tests that make an upload fail on purpose (their own proxy refuses it) are listed by name.
print(f"== uploads the mounts could not save (logged 'could not be uploaded'): {sum(unsaved.values())}"
      + "".join(f"\n   {n}  {t}" for t, n in sorted(unsaved.items())))
PY
exit $rc
