#!/usr/bin/env bash
# Builds the Debian package target/debian/wgmesh_<version>_<arch>.deb and prints its path as the
# last line of stdout (everything else goes to stderr):
#
#   deb=$(scripts/package.sh | tail -n 1) && dpkg -i "$deb"
#
# Steps: release build of the wgmesh binary; generate the package's extra files in
# target/deb-assets/ (man pages and completions from the real CLI, the unit with @BINARY@ set to
# /usr/bin/wgmesh, a changelog, the list of linked crates); `cargo deb --no-build` with the
# [package.metadata.deb] table of Cargo.toml; lintian, failing on any error (E:).
# Installs cargo-deb (pinned) if missing: about 1.5 min on 2 cores. Needs dpkg-dev (dpkg-shlibdeps
# for the Depends line) and lintian (scripts/packages.txt). Set SKIP_LINTIAN=1 to skip lintian
# when iterating (the CI test never does).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# 3.8.0 builds with Rust 1.85+ (`--locked`: its own Cargo.lock).
cargo_deb_version="3.8.0"
# Where the unit's ExecStart points; must match the binary asset in Cargo.toml.
installed_binary="/usr/bin/wgmesh"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { echo "== package.sh: $*" >&2; }
start=$SECONDS
# Two callers at once (say, two container tests) would share target/deb-assets: one at a time.
mkdir -p "$root/target"
exec 9>"$root/target/.package.lock"
flock 9

if [[ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]]; then
    log "installing cargo-deb $cargo_deb_version"
    install_start=$SECONDS
    cargo install cargo-deb --locked --version "$cargo_deb_version" >&2
    log "cargo-deb installed in $((SECONDS - install_start))s"
fi
for tool in dpkg-shlibdeps lintian; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "$tool is missing: apt-get install dpkg-dev lintian (scripts/packages.txt)"
        exit 1
    fi
done

build_start=$SECONDS
cargo build --release --bin wgmesh >&2
target_dir="${CARGO_TARGET_DIR:-$root/target}"
binary="$target_dir/release/wgmesh"
# The package version is the crate's (e.g. path+file:///src/wgmesh#0.1.0 or ...#wgmesh@0.1.0).
pkgid="$(cargo pkgid -p wgmesh)"
version="${pkgid##*[#@]}"
log "release build took $((SECONDS - build_start))s (wgmesh $version)"

# The generated assets live at target/deb-assets (a path relative to the crate, as Cargo.toml
# lists them), whatever CARGO_TARGET_DIR says. Outside target/release on purpose: cargo-deb
# gzips man pages and the changelog only for files that are not build products.
assets="$root/target/deb-assets"
rm -rf "$assets"
mkdir -p "$assets"
"$binary" generate-docs --out "$assets" >&2

# The source unit keeps its @BINARY@ placeholder for `wgmesh install-service`; the package
# ships a copy with the installed path. Any other @PLACEHOLDER@ would break the unit: refuse.
sed "s|@BINARY@|$installed_binary|g" systemd/wgmesh@.service >"$assets/wgmesh@.service"
if grep -n '@[A-Z_]*@' "$assets/wgmesh@.service" >&2; then
    log "systemd/wgmesh@.service has a placeholder package.sh does not fill in"
    exit 1
fi

# Reproducible timestamps (file mtimes, changelog date): the commit's time, unless set.
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
    SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH
commit="$(git describe --always --dirty 2>/dev/null || echo unknown)"
maintainer="$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
# A native package's changelog.gz (Debian policy 12.7): one entry per build, pointing at the
# project's history, so it can never disagree with the version Cargo.toml says.
cat >"$assets/changelog" <<EOF
wgmesh ($version) unstable; urgency=medium

  * Built from commit $commit.
    The changes are in the project's git history and docs/decisions.md.

 -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

# The crates statically linked into the binary, with their licences (named by the copyright file).
host="$(rustc -vV | sed -n 's/^host: //p')"
{
    echo "Rust crates built into /usr/bin/wgmesh $version (name, version, licence):"
    cargo tree -p wgmesh -e normal --target "$host" --prefix none -f '{p} {l}' \
        | sed -E 's/ \([^)]*\)//; s/ \(\*\)//' | sort -u
} >"$assets/crates.txt"

deb_start=$SECONDS
# cargo-deb prints the path of the package it wrote on stdout. --fast: light compression, as
# dpkg-deb compresses the package again below.
written="$(cargo deb --no-build --fast | tail -n 1)"
arch="$(dpkg --print-architecture)"
deb="$target_dir/debian/wgmesh_${version}_${arch}.deb"
if [[ "$written" != "$deb" ]]; then
    mv -f "$written" "$deb"
fi
# cargo-deb writes no md5sums control file; add one (as dpkg-buildpackage does) so that
# `dpkg --verify wgmesh` can check the installed files.
repack="$(mktemp -d -t wgmesh-deb.XXXXXX)"
trap 'rm -rf "$repack"' EXIT
dpkg-deb -R "$deb" "$repack/root"
(cd "$repack/root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) >"$repack/md5sums"
install -m 0644 "$repack/md5sums" "$repack/root/DEBIAN/md5sums"
touch -d "@$SOURCE_DATE_EPOCH" "$repack/root/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$repack/root" "$deb" >/dev/null
log "cargo deb took $((SECONDS - deb_start))s (md5sums added)"

if [[ "${SKIP_LINTIAN:-0}" != 1 ]]; then
    lintian_start=$SECONDS
    # --fail-on error: warnings and (-I) info tags are printed but do not fail the build.
    lintian --allow-root --fail-on error --display-info "$deb" >&2
    log "lintian: no errors ($((SECONDS - lintian_start))s)"
fi
log "built $deb in $((SECONDS - start))s"
echo "$deb"
