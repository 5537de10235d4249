#!/usr/bin/env bash
# The release build that install.sh, package.sh and demo.sh share: the Swift standard library
# and Foundation linked in statically (the binary runs on machines without the Swift toolchain),
# the commit recorded for `s3mount --version`, and SwiftPM's progress shown as it goes.
#   bash scripts/build-release.sh      # -> .build/release/s3mount
set -euo pipefail
cd "$(dirname "$0")/.."

commit=""
if git rev-parse --git-dir >/dev/null 2>&1; then
    commit=$(git rev-parse --short=12 HEAD)
    git diff --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
fi
flags=(-c release --static-swift-stdlib)
# Debian's hardening for the parts that are C (the shims) and for the link: fortified libc calls,
# relocations resolved at start and then read-only.
flags+=(-Xcc -D_FORTIFY_SOURCE=2 -Xlinker -z -Xlinker now)
# Bare tokens (hex, '-dirty'): buildinfo.c turns them into a string.
[ -n "$commit" ] && flags+=(-Xcc "-DS3MOUNT_COMMIT=$commit")

echo "build: swift build ${flags[*]} (about a minute when nothing is built yet)"
start=$SECONDS
# SwiftPM leaves lock files and TemporaryDirectory.* folders in $TMPDIR: a private one, removed.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ -t 1 ]; then
    # A terminal: SwiftPM's own one-line progress.
    TMPDIR="$scratch" swift build "${flags[@]}"
else
    # A log: SwiftPM prints "[n/m] Compiling ..." lines, a handful per module; keep them, less the
    # linker's warnings about the static Foundation that no user can act on.
    TMPDIR="$scratch" swift build "${flags[@]}" 2>&1 | { grep -vE "warning: the use of .(mktemp|tempnam|tmpnam). is dangerous" || true; }
fi
echo "build: .build/release/s3mount built in $((SECONDS - start)) s ($(.build/release/s3mount --version))"
