#!/usr/bin/env bash
# Measures what systemd/s3mount@.service may take away from the daemon and still mount: the
# capability bounding set (the daemon and fusermount3 run under capsh with every capability
# dropped but the ones named), and the system calls it makes (strace -f through a mount, browse,
# write, chmod, rename, delete and unmount), each checked against the unit's SystemCallFilter
# groups. Needs root, moto_server, and a built daemon (default .build/debug/s3mount).
#   bash scripts/unit-hardening.sh [PATH-TO-S3MOUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-$PWD/.build/debug/s3mount}
UNIT=systemd/s3mount@.service
for tool in capsh strace; do
    command -v "$tool" >/dev/null || { apt-get install -y -qq libcap2-bin strace >/dev/null; break; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-hardening.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
trap 'fusermount3 -uz "$work/mnt" 2>/dev/null || true; kill $moto 2>/dev/null || true; rm -rf --one-file-system "$work"' EXIT
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true AWS_REGION=us-east-1
ep="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -s "$ep" >/dev/null && break; sleep 0.1; done
curl -s -X PUT "$ep/hard" >/dev/null
mkdir "$work/mnt" "$work/spool"
chmod 700 "$work/spool"

# The workload a service's mount sees; fails on the first step that fails.
workload() {
    local m=$work/mnt
    mkdir "$m/d" && echo hello >"$m/d/a.txt" && ls -la "$m" "$m/d" >/dev/null && cat "$m/d/a.txt" >/dev/null \
        && chmod 600 "$m/d/a.txt" && mv "$m/d/a.txt" "$m/d/b.txt" && rm "$m/d/b.txt" && rmdir "$m/d" \
        && "$BIN" stats "$m" >/dev/null
}

# mount, workload, unmount, with only the capabilities in $1 (comma-separated, or "none").
try_caps() {
    local keep=$1 drop
    drop=$(capsh --print | sed -n 's/^Bounding set =//p' | tr ',' '\n' | grep -v -x -F -e "${keep//,/$'\n'}" | paste -sd, -)
    local wrap=(capsh --drop="$drop" --)
    if "${wrap[@]}" -c "$BIN hard $work/mnt --endpoint-url $ep --force-path-style --spool-dir $work/spool --allow-other --log-file $work/caps.log" 2>"$work/err"; then
        if workload && "${wrap[@]}" -c "fusermount3 -u $work/mnt"; then echo "  $keep: mounts, serves, unmounts"; return 0; fi
        fusermount3 -uz "$work/mnt" 2>/dev/null || true
        echo "  $keep: mounts, but the workload or the unmount failed"
        return 1
    fi
    echo "  $keep: no mount ($(tail -1 "$work/err"))"
    return 1
}

echo "== capability bounding set (the unit: $(sed -n 's/^CapabilityBoundingSet=//p' $UNIT))"
try_caps none || true
try_caps cap_sys_admin

echo "== system calls made through a mount's life (strace -f), against the unit's SystemCallFilter"
strace -f -qq -o "$work/trace" "$BIN" hard "$work/mnt" -f --endpoint-url "$ep" --force-path-style --spool-dir "$work/spool" \
    --log-file "$work/strace.log" &
tracer=$!
for _ in $(seq 200); do mountpoint -q "$work/mnt" && break; sleep 0.05; done
workload
fusermount3 -u "$work/mnt"
wait $tracer || true
grep -oE '^[0-9]+ +[a-z_0-9]+\(' "$work/trace" | awk '{print $2}' | tr -d '(' | sort -u >"$work/used"
groups=$(sed -n 's/^SystemCallFilter=//p' $UNIT)
# A group lists system calls and other groups (@basic-io, ...): expanded until only calls are left.
expand() {
    systemd-analyze syscall-filter "$1" | sed -n '2,$p' | tr -d ' ' | grep -v '^#' | while read -r item; do
        case $item in @*) expand "$item" ;; ?*) echo "$item" ;; esac
    done
}
allowed=$(for g in $groups; do expand "$g"; done | sort -u)
missing=$(comm -23 "$work/used" <(echo "$allowed") || true)
echo "  $(wc -l <"$work/used") distinct system calls; outside $groups: ${missing:-none}"
[ -z "$missing" ]
