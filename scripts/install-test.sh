#!/usr/bin/env bash
# The package works where there is no Swift: installs dist/s3mount_*.deb with apt-get, with the
# Swift toolchain's folder hidden (a private mount namespace, `unshare -m`, with an empty read-only
# tmpfs over it, and the toolchain off PATH); starts moto_server with a bucket; mounts it the ways
# fstab does (mount -t fuse.s3mount ... -o ..., and an /etc/fstab line, bind-mounted over the real
# one inside the namespace only); lists, reads and writes; unmounts; purges the package and checks
# that nothing of it is left. Root only: it installs and removes a package on this machine, and
# refuses to run if s3mount is installed already.
#   bash scripts/package.sh && bash scripts/install-test.sh [DEB]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "install-test: $*"; }
fail() { echo "install-test: FAILED: $*" >&2; exit 1; }

if [ -z "${S3MOUNT_INSTALL_TEST_INNER:-}" ]; then
    [ "$(id -u)" -eq 0 ] || fail "run as root (it installs the package and mounts)"
    DEB="${1:-$(ls -t dist/s3mount_*.deb 2>/dev/null | head -1)}"
    [ -n "$DEB" ] && [ -f "$DEB" ] || fail "no package: run scripts/package.sh first (or name the .deb)"
    if dpkg-query -W -f='${Status}' s3mount 2>/dev/null | grep -q "installed"; then
        fail "the s3mount package is installed on this machine already; this test would replace and purge it"
    fi
    [ ! -e /usr/bin/s3mount ] || fail "/usr/bin/s3mount exists and is not from the package"
    # The toolchain's root: /opt/swift for /opt/swift/usr/bin/swift.
    TOOLCHAIN=""
    if swift=$(command -v swift); then
        TOOLCHAIN=$(readlink -f "$swift"); TOOLCHAIN=${TOOLCHAIN%/usr/bin/*}
    fi
    exec unshare --mount --propagation private \
        env S3MOUNT_INSTALL_TEST_INNER=1 TOOLCHAIN="$TOOLCHAIN" bash "$0" "$(readlink -f "$DEB")"
fi

# ---- inside the private mount namespace -------------------------------------------------------
DEB="$1"
start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-install-test.XXXXXX")
moto_pid=""
installed=""
step="start"

cleanup() {
    local rc=$?
    set +e
    for mp in "$work/mnt" "$work/fstab-mnt"; do
        if mountpoint -q "$mp" 2>/dev/null; then umount "$mp" 2>/dev/null || umount -l "$mp"; fi
    done
    if [ $rc -ne 0 ]; then
        echo "install-test: FAILED during: $step" >&2
        for log in "$work"/*.log; do [ -s "$log" ] && { echo "--- $log (last lines)" >&2; tail -n 20 "$log" >&2; }; done
    fi
    # After a failure: the daemons this test's mounts started, by their PIDs.
    if [ $rc -ne 0 ]; then
        for pid in $(cat "$work/daemons" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    fi
    [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null
    if [ -n "$installed" ] && dpkg-query -W -f='${Status}' s3mount 2>/dev/null | grep -q installed; then
        echo "install-test: purging the package after the failure" >&2
        apt-get purge -y -qq s3mount >/dev/null 2>&1
    fi
    rm -rf --one-file-system "$work"
    exit $rc
}
trap cleanup EXIT

apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q "$@" > "$work/apt.log" 2>&1 \
        || { cat "$work/apt.log" >&2; fail "apt-get $*"; }
}

step="hiding the Swift toolchain"
if [ -n "$TOOLCHAIN" ]; then
    mount -t tmpfs -o ro,size=4k,mode=0755 s3mount-install-test "$TOOLCHAIN"
    PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v "^$TOOLCHAIN" | paste -sd:)
    export PATH
    hash -r
    ! command -v swift >/dev/null || fail "swift is still on PATH"
    [ -z "$(ls -A "$TOOLCHAIN")" ] || fail "$TOOLCHAIN is still visible"
    say "toolchain hidden: $TOOLCHAIN is an empty tmpfs here, swift is not on PATH"
else
    say "no Swift toolchain on this machine: nothing to hide"
fi

step="apt-get install $DEB"
say "apt-get install $(basename "$DEB")"
t=$SECONDS
installed=1
apt_get install "$DEB"
dpkg-query -W -f='${Status}' s3mount | grep -q "install ok installed" || fail "s3mount is not installed after apt-get install"
say "installed in $((SECONDS - t)) s: $(dpkg-query -W -f='${Version}, Installed-Size ${Installed-Size} KiB' s3mount)"

step="checking the installed files"
[ "$(command -v s3mount)" = /usr/bin/s3mount ] || fail "s3mount is not /usr/bin/s3mount on PATH"
if ldd /usr/bin/s3mount | grep -E "not found|swift" ; then fail "the binary needs libraries that are not installed"; fi
if [ -n "$TOOLCHAIN" ] && ldd /usr/bin/s3mount | grep -F "$TOOLCHAIN"; then fail "the binary loads from $TOOLCHAIN"; fi
version=$(s3mount --version)
[[ $version =~ ^s3mount\ [0-9.]+\ \(commit\ [0-9a-f]{12}(-dirty)?\)$ ]] || fail "s3mount --version: $version"
say "$version"
dpkg -L s3mount > "$work/files"
for f in /usr/bin/s3mount /lib/systemd/system/s3mount@.service /usr/share/man/man1/s3mount.1.gz \
         /usr/share/bash-completion/completions/s3mount /usr/share/zsh/vendor-completions/_s3mount \
         /usr/share/fish/vendor_completions.d/s3mount.fish /usr/share/doc/s3mount/copyright \
         /usr/share/doc/s3mount/changelog.gz /etc/s3mount/example.env; do
    grep -qx "$f" "$work/files" && [ -e "$f" ] || fail "$f is not installed by the package"
done
grep -q "^ExecStart=/usr/bin/s3mount " /lib/systemd/system/s3mount@.service || fail "the unit does not run /usr/bin/s3mount"
[ "$(stat -c %a /etc/s3mount)" = 700 ] && [ "$(stat -c %a /etc/s3mount/example.env)" = 600 ] \
    || fail "/etc/s3mount is not private"
dpkg-query -W -f='${Conffiles}' s3mount | grep -q "/etc/s3mount/example.env" || fail "example.env is not a conffile"
if command -v man >/dev/null; then man -w s3mount >/dev/null || fail "man s3mount finds no page"; fi

step="starting moto_server"
command -v moto_server >/dev/null || fail "moto_server missing: scripts/setup.sh installs it"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
moto_server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 300); do
    curl -s -o /dev/null "$endpoint/moto-api/" && break
    kill -0 "$moto_pid" 2>/dev/null || fail "moto_server exited"
    sleep 0.1
done
curl -s -o /dev/null "$endpoint/moto-api/" || fail "moto_server did not start"
bucket="install-test"
s3py() {
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing python3 - "$endpoint" "$bucket" "$@" <<'PY'
import sys
import boto3
from botocore.config import Config
ep, bucket, cmd = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
if cmd == "seed":
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello from S3\n")
    s3.put_object(Bucket=bucket, Key="team/plan.txt", Body=b"the plan\n")
elif cmd == "get":
    sys.stdout.write(s3.get_object(Bucket=bucket, Key=sys.argv[4])["Body"].read().decode())
PY
}
s3py seed
# fstab mounts have no environment: the credentials come from a file named in the options.
printf '[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n' > "$work/credentials"
chmod 600 "$work/credentials"
mkdir "$work/mnt" "$work/fstab-mnt"
clean_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin AWS_EC2_METADATA_DISABLED=true)

remember_daemon() {  # the daemon mount.fuse3 started for $1, to wait for (and, after a failure, stop)
    pgrep -f "^s3mount .*$1( |$)" >> "$work/daemons" || true
}
unmount_and_wait() {
    local mp=$1 pids
    pids=$(pgrep -f "^s3mount .*$mp( |$)" || true)
    umount "$mp" || fail "umount $mp"
    for _ in $(seq 300); do
        local alive=""
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && return 0
        sleep 0.1
    done
    fail "the daemon of $mp did not exit within 30 s of the unmount"
}

step="mount -t fuse.s3mount"
t=$SECONDS
opts="endpoint_url=$endpoint,force_path_style,credentials_file=$work/credentials,log_file=$work/mount.log,_netdev"
say "mount -t fuse.s3mount $bucket $work/mnt -o ${opts//$work/\$WORK}"
"${clean_env[@]}" mount -t fuse.s3mount "$bucket" "$work/mnt" -o "$opts" || fail "mount -t fuse.s3mount"
remember_daemon "$work/mnt"
[ "$(findmnt -n -o FSTYPE "$work/mnt")" = fuse.s3mount ] || fail "$work/mnt is not a fuse.s3mount mount"
step="listing, reading and writing through the mount"
[ "$(ls "$work/mnt" | tr '\n' ' ')" = "hello.txt team " ] || fail "ls: $(ls "$work/mnt" | tr '\n' ' ')"
[ "$(cat "$work/mnt/hello.txt")" = "hello from S3" ] || fail "cat hello.txt"
[ "$(cat "$work/mnt/team/plan.txt")" = "the plan" ] || fail "cat team/plan.txt"
echo "written through the mount" > "$work/mnt/team/new.txt"
[ "$(s3py get team/new.txt)" = "written through the mount" ] || fail "the file written is not in S3"
s3mount stats "$work/mnt" | grep -q '"requests"' || fail "s3mount stats"
step="umount"
unmount_and_wait "$work/mnt"
say "mounted, listed, read, wrote and unmounted in $((SECONDS - t)) s"

step="an /etc/fstab line"
t=$SECONDS
cp /etc/fstab "$work/fstab" 2>/dev/null || : > "$work/fstab"
echo "$bucket:team $work/fstab-mnt fuse.s3mount ro,noauto,$opts 0 0" >> "$work/fstab"
mount --bind "$work/fstab" /etc/fstab   # this namespace only
"${clean_env[@]}" mount "$work/fstab-mnt" || fail "mount $work/fstab-mnt (fstab)"
remember_daemon "$work/fstab-mnt"
[ "$(ls "$work/fstab-mnt" | tr '\n' ' ')" = "new.txt plan.txt " ] || fail "ls (fstab): $(ls "$work/fstab-mnt" | tr '\n' ' ')"
[ "$(cat "$work/fstab-mnt/plan.txt")" = "the plan" ] || fail "cat (fstab)"
if touch "$work/fstab-mnt/x" 2>/dev/null; then fail "the ro fstab mount took a write"; fi
unmount_and_wait "$work/fstab-mnt"
umount /etc/fstab
say "fstab line mounted read-only at BUCKET:PREFIX, read and unmounted in $((SECONDS - t)) s"

step="apt-get purge s3mount"
t=$SECONDS
apt_get purge s3mount
installed=""
if dpkg-query -W -f='${Status}' s3mount 2>/dev/null | grep -q "installed"; then fail "s3mount is still installed"; fi
# Every file of the package is gone, and every directory of it that no other package owns.
left=$(while read -r f; do
    if [ "$f" = "/." ]; then
        continue
    elif [ -d "$f" ]; then
        dpkg-query -S "$f" >/dev/null 2>&1 || echo "$f"
    elif [ -e "$f" ] || [ -L "$f" ]; then
        echo "$f"
    fi
done < "$work/files")
[ -z "$left" ] || fail "left after the purge: $left"
[ ! -e /etc/s3mount ] || fail "/etc/s3mount is left after the purge"
[ ! -e /usr/share/doc/s3mount ] || fail "/usr/share/doc/s3mount is left after the purge"
! command -v s3mount >/dev/null || fail "s3mount is still on PATH"
say "purged in $((SECONDS - t)) s: none of its $(grep -c . "$work/files") paths is left, nor /etc/s3mount"

say "passed in $((SECONDS - start)) s"
