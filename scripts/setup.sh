#!/usr/bin/env bash
# Installs what a fresh Debian machine needs to build and test s3mount. Idempotent.
set -euo pipefail

APT_PACKAGES=(libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config)
# The everyday tools the integration tests run through the mount, and s3fs to check that what each
# writes reads right through the other.
APT_PACKAGES+=(rsync git make s3fs)
# File managers the tests open a bucket folder in (Thunar and PCManFM under Xvfb, mc and ranger
# under tmux), and what they need: a D-Bus session, ImageMagick for real images and screenshots.
APT_PACKAGES+=(xvfb thunar pcmanfm dbus-x11 mc ranger tmux imagemagick)
# A second S3 store for the integration tests and the benchmark: a single-node Ceph cluster with
# the RADOS Gateway (scripts/rgwcluster.py starts one in a folder; no service is enabled here).
APT_PACKAGES+=(radosgw ceph-mon ceph-osd ceph-common)
# The shells whose completions the tests try (scripts/completions/), and man for the man page.
APT_PACKAGES+=(bash-completion zsh fish)
command -v man >/dev/null 2>&1 || APT_PACKAGES+=(man-db)
# python3/pip may come from elsewhere (pyenv): ask apt only when the command is absent.
command -v python3 >/dev/null 2>&1 || APT_PACKAGES+=(python3)
python3 -m pip --version >/dev/null 2>&1 || APT_PACKAGES+=(python3-pip)
# systemd-analyze (unit verification in the tests), mount(8) and curl (demo).
command -v systemd-analyze >/dev/null 2>&1 || APT_PACKAGES+=(systemd)
command -v mount >/dev/null 2>&1 || APT_PACKAGES+=(mount)
command -v curl >/dev/null 2>&1 || APT_PACKAGES+=(curl)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c "import moto.server, boto3, pytest" >/dev/null 2>&1; then
    echo "setup: installing moto[server], boto3, pytest from PyPI"
    python3 -m pip install -q 'moto[server]' boto3 pytest 2>/dev/null \
        || python3 -m pip install -q --break-system-packages 'moto[server]' boto3 pytest
    hash -r
fi

# The aws CLI: scripts/notifications-setup.sh makes the SNS topic and SQS queues with it (the tests run it on moto).
if ! command -v aws >/dev/null 2>&1; then
    echo "setup: installing awscli from PyPI"
    python3 -m pip install -q awscli 2>/dev/null || python3 -m pip install -q --break-system-packages awscli
    hash -r
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "setup: the Swift toolchain (6.x) is required and was not found on PATH" >&2
    exit 1
fi
if [ ! -e /dev/fuse ]; then
    echo "setup: /dev/fuse is missing; FUSE mounts (and the integration tests) need it" >&2
    exit 1
fi
# (`swift --version` leaves a TemporaryDirectory.* behind in $TMPDIR: give it one of its own.)
swift_tmp=$(mktemp -d)
swift_version=$(TMPDIR="$swift_tmp" swift --version 2>/dev/null | head -1)
rm -rf "$swift_tmp"
echo "setup: ready ($swift_version; fuse3 $(pkg-config --modversion fuse3); moto $(python3 -c 'import moto; print(moto.__version__)'); ceph $(ceph --version | awk '{print $3}'))"
