#!/usr/bin/env bash
# Installs what a fresh Debian machine needs for one purpose, and only that; says what it installs
# before it does. Idempotent: what is there already is left alone.
#   bash scripts/setup.sh build       # build s3mount: FUSE and the libraries it links (scripts/install.sh, package.sh)
#   bash scripts/setup.sh demo        # build + the S3 emulator moto and boto3 to seed its bucket (scripts/demo.sh)
#   bash scripts/setup.sh rgw-demo    # build + Ceph's RADOS Gateway and boto3 (scripts/demo.sh --rgw)
#   bash scripts/setup.sh bench       # build + moto, s3fs, rclone, the aws CLI, pytest (scripts/bench.sh, scripts/smallbench.py; add rgw for --store rgw)
#   bash scripts/setup.sh [tests]     # everything the tests use (the default; scripts/test.sh, .ci/run)
# Several purposes may be given: `setup.sh bench rgw`.
set -euo pipefail

usage() { echo "usage: bash scripts/setup.sh [build|demo|rgw-demo|rgw|bench|tests]..." >&2; exit 2; }
[ $# -gt 0 ] || set -- tests
want_build=0 want_moto=0 want_boto3=0 want_rgw=0 want_bench=0 want_tests=0
for purpose in "$@"; do
    case "$purpose" in
        build) want_build=1 ;;
        demo) want_build=1; want_moto=1; want_boto3=1 ;;
        rgw-demo) want_build=1; want_rgw=1; want_boto3=1 ;;
        rgw) want_rgw=1; want_boto3=1 ;;
        bench) want_build=1; want_moto=1; want_boto3=1; want_bench=1 ;;
        tests) want_build=1; want_moto=1; want_boto3=1; want_rgw=1; want_tests=1 ;;
        *) usage ;;
    esac
done
label="$*"

# Each group: what it is for, then its packages. A package is asked for only when it is missing.
APT_PACKAGES=()
declare -A WHY=()
add() {  # add WHY PACKAGE...
    local why=$1; shift
    for p in "$@"; do APT_PACKAGES+=("$p"); WHY[$p]=$why; done
}
if [ "$want_build" = 1 ]; then
    add build libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config librabbitmq-dev
fi
# python3/pip may come from elsewhere (pyenv): ask apt only when the command is absent.
if [ "$want_moto" = 1 ] || [ "$want_boto3" = 1 ] || [ "$want_tests" = 1 ]; then
    command -v python3 >/dev/null 2>&1 || add python python3
    python3 -m pip --version >/dev/null 2>&1 || add python python3-pip
fi
# curl: the demo and the benchmark ask the store whether it is up.
if [ "$want_moto" = 1 ] || [ "$want_rgw" = 1 ]; then
    command -v curl >/dev/null 2>&1 || add curl curl
fi
# A single-node Ceph cluster with the RADOS Gateway, a second S3 store (scripts/rgwcluster.py starts
# one in a folder; no service is enabled here).
if [ "$want_rgw" = 1 ]; then
    add "Ceph RGW" radosgw ceph-mon ceph-osd ceph-common
fi
# The other FUSE tools the benchmark measures s3mount against.
if [ "$want_bench" = 1 ]; then
    add "the tools compared" s3fs rclone
fi
if [ "$want_tests" = 1 ]; then
    # The everyday tools the integration tests run through the mount, and s3fs to check that what
    # each writes reads right through the other.
    add "tools through the mount" rsync git make s3fs
    # File managers the tests open a bucket folder in (Thunar and PCManFM under Xvfb, mc and ranger
    # under tmux), and what they need: a D-Bus session, ImageMagick for real images and screenshots,
    # xwininfo to see their windows.
    add "file managers" xvfb x11-utils thunar pcmanfm dbus-x11 mc ranger tmux imagemagick
    # The shells whose completions the tests try (scripts/completions/), and man for the man page.
    add "completions" bash-completion zsh fish
    command -v man >/dev/null 2>&1 || add "man page" man-db
    # RabbitMQ, which RGW pushes bucket notifications to and AMQP mounts read them from
    # (test_notifications_amqp.py starts one of its own; no service is enabled here).
    add "AMQP notifications" rabbitmq-server
    # systemd-analyze (unit verification in the tests), mount(8).
    command -v systemd-analyze >/dev/null 2>&1 || add "service tests" systemd
    command -v mount >/dev/null 2>&1 || add "fstab tests" mount
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    # What for, group by group: "build: libfuse3-dev fuse3; Ceph RGW: radosgw ...".
    said="" last=""
    for p in "${missing[@]}"; do
        if [ "${WHY[$p]}" != "$last" ]; then said+="${said:+; }${WHY[$p]}:"; last=${WHY[$p]}; fi
        said+=" $p"
    done
    echo "setup ($label): installing from apt: $said"
    $SUDO apt-get update -qq
    # The whole set, with what they pull in, and its download, before it is fetched.
    size=$($SUDO apt-get install -y --print-uris -qq "${missing[@]}" 2>/dev/null \
        | awk 'substr($0, 1, 1) == "\047" {n++; s += $3} END {printf "%d package%s with their dependencies, %.0f MB to download", n, n == 1 ? "" : "s", s / 1e6}') || size=""
    [ -z "$size" ] || echo "setup ($label): $size"
    start=$SECONDS
    # (Without apt-utils, debconf says on stderr that it delays configuration: nothing to act on.)
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
        2> >(grep -v "^debconf: delaying package configuration" >&2)
    echo "setup ($label): apt done in $((SECONDS - start)) s"
fi

# From PyPI: moto's server (the emulator), boto3 (seeding, the tests' own S3 calls), pytest, and the
# aws CLI (scripts/notifications-setup.sh makes SNS topics and SQS queues with it; the tests run it on
# moto; the benchmark's reference upload).
pip_needed=()
if [ "$want_moto" = 1 ]; then
    { command -v moto_server >/dev/null 2>&1 && python3 -c "import moto.server" >/dev/null 2>&1; } || pip_needed+=('moto[server]')
fi
if [ "$want_boto3" = 1 ]; then
    python3 -c "import boto3" >/dev/null 2>&1 || pip_needed+=(boto3)
fi
# pytest: the tests, and scripts/smallbench.py, which takes its stores from Tests/integration/conftest.py.
if [ "$want_tests" = 1 ] || [ "$want_bench" = 1 ]; then
    python3 -c "import pytest" >/dev/null 2>&1 || pip_needed+=(pytest)
fi
if [ "$want_tests" = 1 ] || [ "$want_bench" = 1 ]; then
    command -v aws >/dev/null 2>&1 || pip_needed+=(awscli)
fi
# pika: scripts/notifications-setup-rgw.sh declares RabbitMQ's exchange and queues with it.
if [ "$want_tests" = 1 ] || [ "$want_rgw" = 1 ]; then
    python3 -c "import pika" >/dev/null 2>&1 || pip_needed+=(pika)
fi
if [ "${#pip_needed[@]}" -gt 0 ]; then
    echo "setup ($label): installing from PyPI: ${pip_needed[*]}"
    python3 -m pip install -q "${pip_needed[@]}" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages "${pip_needed[@]}"
    hash -r
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "setup: the Swift toolchain (6.x) is required and was not found on PATH" >&2
    exit 1
fi
if [ ! -e /dev/fuse ]; then
    if [ "$want_moto" = 1 ] || [ "$want_rgw" = 1 ]; then
        echo "setup: /dev/fuse is missing; FUSE mounts (the demo, the integration tests) need it" >&2
        exit 1
    fi
    echo "setup: /dev/fuse is missing: s3mount builds, but cannot mount here" >&2
fi
# (`swift --version` leaves a TemporaryDirectory.* behind in $TMPDIR: give it one of its own.)
swift_tmp=$(mktemp -d)
swift_version=$(TMPDIR="$swift_tmp" swift --version 2>/dev/null | head -1)
rm -rf "$swift_tmp"
ready="$swift_version"
[ "$want_build" = 0 ] || ready+="; fuse3 $(pkg-config --modversion fuse3)"
[ "$want_moto" = 0 ] || ready+="; moto $(python3 -c 'import moto; print(moto.__version__)')"
[ "$want_rgw" = 0 ] || ready+="; ceph $(ceph --version | awk '{print $3}')"
echo "setup ($label): ready ($ready)"
