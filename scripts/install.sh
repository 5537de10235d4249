#!/usr/bin/env bash
# Builds s3mount in release mode (scripts/build-release.sh: no Swift libraries needed at run time)
# and installs it: the binary in /usr/local/bin, the systemd unit in /etc/systemd/system, an
# example configuration in /etc/s3mount, and fuse.s3mount in updatedb's PRUNEFS (so the nightly
# locate index does not walk mounted buckets). Run as root. (A Debian package: scripts/package.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
bash scripts/setup.sh
bash scripts/build-release.sh
install -D -m 0755 .build/release/s3mount "$PREFIX/bin/s3mount"
install -D -m 0644 systemd/s3mount@.service /etc/systemd/system/s3mount@.service
install -d -m 0700 /etc/s3mount
[ -e /etc/s3mount/example.env ] || install -m 0600 systemd/example.env /etc/s3mount/example.env
bash scripts/prunefs.sh add
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "installed $PREFIX/bin/s3mount and /etc/systemd/system/s3mount@.service"
echo "configure: cp /etc/s3mount/example.env /etc/s3mount/NAME.env; edit it; systemctl enable --now s3mount@NAME"
echo "fstab:     my-bucket /mnt/my-bucket fuse.s3mount _netdev,allow_other,uid=1000 0 0"
