#!/usr/bin/env bash
# Keeps nightly indexers (plocate/mlocate's updatedb) out of mounted buckets: adds fuse.s3mount to
# PRUNEFS in /etc/updatedb.conf when that file exists, once. `remove` takes it out again.
#   bash scripts/prunefs.sh [add|remove]       (UPDATEDB_CONF overrides the file, for tests)
set -euo pipefail
CONF="${UPDATEDB_CONF:-/etc/updatedb.conf}"
TYPE="fuse.s3mount"
[ -f "$CONF" ] || exit 0
case "${1:-add}" in
    add)
        if grep -Eq "^[[:space:]]*PRUNEFS=.*(\"|[[:space:]])$TYPE(\"|[[:space:]])" "$CONF"; then exit 0; fi
        if grep -Eq '^[[:space:]]*PRUNEFS="' "$CONF"; then
            sed -i -E "s/^([[:space:]]*PRUNEFS=\")/\\1$TYPE /" "$CONF"
        else
            printf 'PRUNEFS="%s"\n' "$TYPE" >> "$CONF"
        fi
        echo "added $TYPE to PRUNEFS in $CONF (updatedb stays out of mounted buckets)" ;;
    remove)
        sed -i -E "/^[[:space:]]*PRUNEFS=/ s/$TYPE ?//" "$CONF" ;;
    *) echo "usage: $0 [add|remove]" >&2; exit 2 ;;
esac
