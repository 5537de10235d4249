#!/usr/bin/env bash
# Builds the Debian package dist/s3mount_VERSION_ARCH.deb with dpkg-deb, then checks it with
# lintian. The binary is the release build of scripts/build-release.sh (Swift libraries linked
# statically), stripped; Depends: the Debian packages of the libraries it links, found by
# dpkg-shlibdeps, and fuse3 (fusermount3, and mount.fuse3 for fstab's fuse.s3mount).
#   bash scripts/package.sh                 # build, package, lintian
#   SKIP_BUILD=1 bash scripts/package.sh    # package the .build/release/s3mount already built
#   OUT=/some/dir bash scripts/package.sh   # where the .deb goes (default: dist/)
# Install it on any Debian 12 (bookworm) machine, no Swift needed: sudo apt install ./s3mount_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="${OUT:-$ROOT/dist}"
start=$SECONDS

need=()
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v strip >/dev/null || need+=(binutils)
[ -n "${SKIP_LINTIAN:-}" ] || command -v lintian >/dev/null || need+=(lintian)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "package: needs ${need[*]}: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "package: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${SKIP_BUILD:-}" ]; then
    bash scripts/build-release.sh
fi
BIN=.build/release/s3mount
[ -x "$BIN" ] || { echo "package: $BIN is missing: run scripts/build-release.sh" >&2; exit 1; }
if ldd "$BIN" | grep -q "/opt/swift\|libswiftCore\|libFoundation"; then
    echo "package: $BIN loads Swift libraries from the toolchain; build it with scripts/build-release.sh" >&2
    exit 1
fi
# "s3mount 0.1.0 (commit ...)"
VERSION=$("$BIN" --version | awk '{print $2}')
ARCH=$(dpkg --print-architecture)
DEB="s3mount_${VERSION}_${ARCH}.deb"
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "package: unexpected version \"$VERSION\"" >&2; exit 1; }
grep -q "^s3mount ($VERSION)" packaging/deb/changelog \
    || { echo "package: packaging/deb/changelog has no entry for $VERSION" >&2; exit 1; }

stage=$(mktemp -d "${TMPDIR:-/tmp}/s3mount-package.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
umask 022

echo "package: staging $DEB"
install -D -m 0755 "$BIN" "$root/usr/bin/s3mount"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/bin/s3mount"

# The unit runs the binary where the package puts it (scripts/install.sh: /usr/local/bin), and
# names the guides the package installs besides the man page (a source install has none).
install -d "$root/lib/systemd/system"
sed -e 's|/usr/local/bin/s3mount|/usr/bin/s3mount|g' \
    -e 's|^Documentation=man:s3mount(1)$|& file:/usr/share/doc/s3mount/CONFIGURATION.md.gz|' \
    systemd/s3mount@.service > "$root/lib/systemd/system/s3mount@.service"
chmod 0644 "$root/lib/systemd/system/s3mount@.service"
grep -q "ExecStart=/usr/bin/s3mount " "$root/lib/systemd/system/s3mount@.service"
grep -q "^Documentation=man:s3mount(1) file:" "$root/lib/systemd/system/s3mount@.service"

# The example configuration: a conffile, private like the NAME.env files made from it.
install -d -m 0700 "$root/etc/s3mount"
install -m 0600 systemd/example.env "$root/etc/s3mount/example.env"

install -d "$root/usr/share/man/man1"
gzip -9n < docs/s3mount.1 > "$root/usr/share/man/man1/s3mount.1.gz"
install -D -m 0644 scripts/completions/s3mount.bash "$root/usr/share/bash-completion/completions/s3mount"
install -D -m 0644 scripts/completions/_s3mount "$root/usr/share/zsh/vendor-completions/_s3mount"
install -D -m 0644 scripts/completions/s3mount.fish "$root/usr/share/fish/vendor_completions.d/s3mount.fish"
install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/s3mount"

doc="$root/usr/share/doc/s3mount"
install -d "$doc"
install -m 0644 README.md docs/CONFIGURATION.md docs/SEMANTICS.md docs/TROUBLESHOOTING.md docs/ARCHITECTURE.md "$doc/"
install -m 0644 packaging/deb/copyright "$doc/copyright"
# A native package: its Debian changelog is changelog.gz (Policy 12.7).
gzip -9n < packaging/deb/changelog > "$doc/changelog.gz"
# Like dh_compress: documentation over 4 KiB is compressed.
find "$doc" -name '*.md' -size +4k -exec gzip -9n {} +
# Every file the unit's Documentation= names is in the package.
for f in $(sed -n 's/^Documentation=//p' "$root/lib/systemd/system/s3mount@.service" | tr ' ' '\n' | sed -n 's|^file:||p'); do
    [ -f "$root$f" ] || { echo "package: the unit's Documentation= names $f, which the package does not install" >&2; exit 1; }
done

# Depends: the packages of the libraries the binary links, with the versions their symbols need.
mkdir -p "$stage/shlibs/debian"
printf 'Source: s3mount\n\nPackage: s3mount\nArchitecture: any\n' > "$stage/shlibs/debian/control"
shlibs=$(cd "$stage/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/s3mount" 2>"$stage/shlibdeps.err") \
    || { cat "$stage/shlibdeps.err" >&2; exit 1; }
DEPENDS="${shlibs#shlibs:Depends=}, fuse3"
INSTALLED_SIZE=$(du -sk --apparent-size "$root" | cut -f1)

install -d -m 0755 "$root/DEBIAN"
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@INSTALLED_SIZE@|$INSTALLED_SIZE|" \
    -e "s|@DEPENDS@|$DEPENDS|" packaging/deb/control.in > "$root/DEBIAN/control"
echo /etc/s3mount/example.env > "$root/DEBIAN/conffiles"
install -m 0755 packaging/deb/postinst packaging/deb/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$OUT"
dpkg-deb --root-owner-group -Zxz --build "$root" "$OUT/$DEB" >/dev/null
echo "package: $OUT/$DEB: $(du -h "$OUT/$DEB" | cut -f1) ($(stat -c %s "$OUT/$DEB") bytes), installed size ${INSTALLED_SIZE} KiB"
echo "package: Depends: $DEPENDS"

if [ -n "${SKIP_LINTIAN:-}" ]; then
    echo "package: lintian skipped (SKIP_LINTIAN)"
else
    # Overrides, with the reason for each, travel in the package (packaging/deb/lintian-overrides).
    # (lintian warns that it runs as root, on stderr: not about the package.)
    echo "package: lintian --pedantic $OUT/$DEB"
    # (TMPDIR: lintian leaves mldbm-elf-* files in it.)
    TMPDIR="$stage" lintian --fail-on error,warning,info,pedantic --display-info --pedantic "$OUT/$DEB" \
        2> >(grep -v "running with root privileges" >&2)
    echo "package: lintian: no errors, warnings, info or pedantic tags (overridden: $(grep -c '^s3mount:' packaging/deb/lintian-overrides))"
fi
echo "package: done in $((SECONDS - start)) s"
