#!/usr/bin/env bash
# Builds s3mount in release mode (scripts/build-release.sh: no Swift libraries needed at run time)
# and installs it: the binary in /usr/local/bin, the man page and the bash, zsh and fish
# completions under /usr/local/share, the systemd unit in /etc/systemd/system, an example
# configuration in /etc/s3mount, and fuse.s3mount in updatedb's PRUNEFS (so the nightly locate
# index does not walk mounted buckets). Run as root. (A Debian package: scripts/package.sh.)
#   PREFIX=/usr/local         where bin/ and share/ go
#   DESTDIR=/some/root        stage everything under it (a package's root); then nothing on this
#                             machine is changed (no PRUNEFS, no systemctl)
#   SKIP_BUILD=1 BIN=path     install a binary already built (default .build/release/s3mount)
# The man page and completions are the committed, generated files (scripts/gen-cli-files.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
BIN="${BIN:-.build/release/s3mount}"
if [ -z "${SKIP_BUILD:-}" ]; then
    bash scripts/setup.sh build
    bash scripts/build-release.sh
fi
install -D -m 0755 "$BIN" "$DESTDIR$PREFIX/bin/s3mount"
install -D -m 0644 docs/s3mount.1 "$DESTDIR$PREFIX/share/man/man1/s3mount.1"
install -D -m 0644 scripts/completions/s3mount.bash "$DESTDIR$PREFIX/share/bash-completion/completions/s3mount"
install -D -m 0644 scripts/completions/_s3mount "$DESTDIR$PREFIX/share/zsh/site-functions/_s3mount"
install -D -m 0644 scripts/completions/s3mount.fish "$DESTDIR$PREFIX/share/fish/vendor_completions.d/s3mount.fish"
install -D -m 0644 systemd/s3mount@.service "$DESTDIR/etc/systemd/system/s3mount@.service"
if [ "$PREFIX" != /usr/local ]; then
    sed -i "s|/usr/local/bin/s3mount|$PREFIX/bin/s3mount|g" "$DESTDIR/etc/systemd/system/s3mount@.service"
fi
install -d -m 0700 "$DESTDIR/etc/s3mount"
[ -e "$DESTDIR/etc/s3mount/example.env" ] || install -m 0600 systemd/example.env "$DESTDIR/etc/s3mount/example.env"
if [ -z "$DESTDIR" ]; then
    bash scripts/prunefs.sh add
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
echo "installed $DESTDIR$PREFIX/bin/s3mount (man page, bash/zsh/fish completions in $DESTDIR$PREFIX/share) and $DESTDIR/etc/systemd/system/s3mount@.service"
echo "configure: cp /etc/s3mount/example.env /etc/s3mount/NAME.env; edit it; systemctl enable --now s3mount@NAME"
echo "fstab:     my-bucket /mnt/my-bucket fuse.s3mount _netdev,allow_other,uid=1000 0 0"
