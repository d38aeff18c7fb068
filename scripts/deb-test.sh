#!/usr/bin/env bash
# CI test of the Debian package (issue 12, item 5). Builds it with scripts/package.sh (lintian
# must report no error), installs it with dpkg -i and checks what an admin would: the binary and
# its version, the man page, the unit (with /usr/bin/wgmesh, passing systemd-analyze verify), the
# completions, a private /etc/wgmesh, and that nothing was enabled or started. Then dpkg -r must
# remove every file the package listed while a file the admin put in /etc/wgmesh survives, and a
# purge removes /etc/wgmesh only when it is empty.
#
# Run as root, in CI or on a machine you can spare: it installs and removes the package here
# (removal stops running wgmesh@ instances). Idempotent: a package left installed (or half-removed) by an earlier run is purged
# first; only the admin file this test writes is ever deleted from /etc/wgmesh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $(id -u) != 0 ]]; then
    echo "scripts/deb-test.sh: run as root (dpkg -i)" >&2
    exit 2
fi

config_dir=/etc/wgmesh
admin_file="$config_dir/deb-test-admin.env"
work="$(mktemp -d -t wgmesh-deb-test.XXXXXX)"
cleanup() {
    rm -f "$admin_file"
    rm -rf "$work"
}
trap cleanup EXIT

checks=0
ok() {
    checks=$((checks + 1))
    echo "deb-test: ok: $*"
}
fail() {
    echo "deb-test: FAIL: $*" >&2
    exit 1
}
package_status() { dpkg-query -W -f='${Status}' wgmesh 2>/dev/null || true; }
# Installs with the man pages and docs even where a minimal image's dpkg.cfg.d excludes them
# (docker's debian images do); a --path-include given later wins over the configured exclude.
# The directories must be included too, or dpkg has nowhere to unpack the files.
dpkg_install() {
    dpkg --path-include=/usr/share/man/man1 --path-include='/usr/share/man/man1/wgmesh*' \
        --path-include=/usr/share/doc/wgmesh --path-include='/usr/share/doc/wgmesh/*' \
        -i "$1" >"$work/dpkg.log" 2>&1 || {
        cat "$work/dpkg.log" >&2
        fail "dpkg -i $1"
    }
}
# Processes running the installed binary: the same file (device and inode), not the same path,
# since a wgmesh in a container or another mount namespace also reads /usr/bin/wgmesh.
packaged_daemons() {
    local exe
    for exe in /proc/[0-9]*/exe; do
        [[ "$exe" -ef /usr/bin/wgmesh ]] && echo "${exe%/exe}"
    done
    return 0
}
systemd_links() { find /etc/systemd/system -name 'wgmesh@*' 2>/dev/null | sort; }

deb="$("$root/scripts/package.sh" | tail -n 1)"
[[ -f "$deb" ]] || fail "scripts/package.sh printed no package path"
ok "built $deb, lintian reports no error"
# From here on only system paths: no wgmesh in ~/.cargo/bin or target/ may stand in for the
# package's.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
version="$(dpkg-deb -f "$deb" Version)"
[[ "$(basename "$deb")" == "wgmesh_${version}_$(dpkg --print-architecture).deb" ]] ||
    fail "package file name $(basename "$deb") is not wgmesh_<version>_<arch>.deb"

# --- a clean start: whatever an earlier run left behind
rm -f "$admin_file"
if [[ -n "$(package_status)" && "$(package_status)" != *not-installed* ]]; then
    echo "deb-test: purging the wgmesh package an earlier run left ($(package_status))"
    dpkg --purge wgmesh >/dev/null
fi
config_dir_existed=no
[[ -e "$config_dir" ]] && config_dir_existed=yes
links_before="$(systemd_links)"

# --- install
dpkg_install "$deb"
[[ "$(package_status)" == "install ok installed" ]] || fail "status after dpkg -i: $(package_status)"
dpkg --verify wgmesh || fail "dpkg --verify wgmesh: installed files differ from the md5sums"
ok "dpkg -i installed wgmesh $version (dpkg --verify passes)"

[[ "$(command -v wgmesh)" == /usr/bin/wgmesh ]] || fail "wgmesh is not /usr/bin/wgmesh"
[[ " $(wgmesh --version) " == *" ${version} "* || " $(wgmesh --version) " == *" v${version} "* ]] ||
    fail "wgmesh --version says '$(wgmesh --version)', the package is $version"
ok "wgmesh --version: $(wgmesh --version)"

man_page="$(man -w wgmesh)" || fail "man -w wgmesh finds no page"
[[ "$man_page" == /usr/share/man/man1/wgmesh.1.gz ]] || fail "man -w wgmesh: $man_page"
man -w wgmesh-up >/dev/null || fail "man -w wgmesh-up finds no page"
# The page renders, and documents a real flag of `up`.
MANWIDTH=100 man wgmesh-up 2>/dev/null | grep -q -- '--keep-interface' ||
    fail "man wgmesh-up does not document --keep-interface"
ok "man -w wgmesh: $man_page (and one page per subcommand)"

unit=/lib/systemd/system/wgmesh@.service
[[ -f "$unit" ]] || fail "$unit is missing"
grep -q '^ExecStart=/usr/bin/wgmesh ' "$unit" || fail "$unit does not run /usr/bin/wgmesh"
if grep -n '@[A-Z_]*@' "$unit"; then fail "$unit has an unfilled placeholder"; fi
# verify checks an instance of the template, including that ExecStart's binary exists.
mkdir -p "$work/units"
cp "$unit" "$work/units/wgmesh@debtest0.service"
if ! systemd-analyze verify "$work/units/wgmesh@debtest0.service" >"$work/verify.log" 2>&1; then
    cat "$work/verify.log" >&2
    fail "systemd-analyze verify rejects the packaged unit"
fi
if grep 'wgmesh@' "$work/verify.log" >&2; then
    fail "systemd-analyze verify complains about the packaged unit"
fi
ok "$unit runs /usr/bin/wgmesh and passes systemd-analyze verify"

for completion in /usr/share/bash-completion/completions/wgmesh \
    /usr/share/zsh/vendor-completions/_wgmesh \
    /usr/share/fish/vendor_completions.d/wgmesh.fish; do
    grep -q 'install-service' "$completion" || fail "$completion is missing or incomplete"
done
bash -c 'source /usr/share/bash-completion/completions/wgmesh && complete -p wgmesh' >/dev/null ||
    fail "the bash completion does not register for wgmesh"
ok "bash, zsh and fish completions installed (bash registers a completion)"

[[ "$(stat -c '%a %U:%G' "$config_dir")" == "700 root:root" ]] ||
    fail "$config_dir is $(stat -c '%a %U:%G' "$config_dir"), not 700 root:root"
ok "$config_dir is 0700 root:root"

# --- nothing enabled or started
mkdir -p "$work/control"
dpkg-deb -e "$deb" "$work/control"
scripts_text="$(cat "$work/control"/*inst "$work/control"/*rm 2>/dev/null | grep -v '^[[:space:]]*#' || true)"
if grep -E 'systemctl.*(enable|start|reload-or)|deb-systemd-helper.*enable|deb-systemd-invoke.*start|invoke-rc\.d' \
    <<<"$scripts_text"; then
    fail "a maintainer script enables or starts a unit"
fi
[[ "$(systemd_links)" == "$links_before" ]] ||
    fail "installing changed /etc/systemd/system: $(systemd_links)"
[[ -z "$(packaged_daemons)" ]] || fail "installing started wgmesh: $(packaged_daemons)"
if [[ -d /run/systemd/system ]]; then
    ! systemctl is-enabled --quiet wgmesh@wg0.service || fail "wgmesh@wg0 got enabled"
    ! systemctl is-active --quiet wgmesh@wg0.service || fail "wgmesh@wg0 got started"
fi
ok "nothing enabled or started (maintainer scripts, unit links, processes)"

# --- installing the same package again (the upgrade path of the scripts) keeps all of it
dpkg_install "$deb"
[[ "$(stat -c '%a' "$config_dir")" == 700 ]] || fail "reinstalling changed $config_dir"
ok "dpkg -i again (upgrade path) succeeds"

# --- dpkg -r: every file of the package goes, the admin's /etc/wgmesh stays
dpkg -L wgmesh >"$work/files"
# Which of those are directories in the package (on a merged-/usr system /lib is a symlink).
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -n 's|^\.\(/.*[^/]\)/$|\1|p' >"$work/dirs"
printf 'WGMESH_RELAY=true\n' >"$admin_file"
chmod 600 "$admin_file"
dpkg -r wgmesh >"$work/dpkg.log" 2>&1 || {
    cat "$work/dpkg.log" >&2
    fail "dpkg -r wgmesh"
}
left=()
while IFS= read -r path; do
    [[ "$path" == /. || -z "$path" ]] && continue
    if grep -qxF -- "$path" "$work/dirs"; then
        [[ -d "$path" ]] || continue
        # A directory may stay if something else lives in it or another package owns it.
        if [[ -z "$(ls -A "$path")" ]] && ! dpkg-query -S "$path" >/dev/null 2>&1; then
            left+=("$path/")
        fi
    elif [[ -e "$path" || -L "$path" ]]; then
        left+=("$path")
    fi
done <"$work/files"
((${#left[@]} == 0)) || fail "dpkg -r left files of the package: ${left[*]}"
ok "dpkg -r removed all $(wc -l <"$work/files") paths dpkg -L listed"
[[ "$(cat "$admin_file" 2>/dev/null)" == "WGMESH_RELAY=true" ]] ||
    fail "dpkg -r removed or changed the admin's $admin_file"
[[ "$(stat -c '%a' "$config_dir")" == 700 ]] || fail "dpkg -r changed $config_dir"
ok "the admin's $admin_file survives dpkg -r"

# --- purge: /etc/wgmesh goes only when empty
dpkg --purge wgmesh >/dev/null
[[ -f "$admin_file" ]] || fail "dpkg --purge removed the admin's $admin_file"
rm -f "$admin_file"
if [[ $config_dir_existed == no ]]; then
    dpkg_install "$deb"
    dpkg --purge wgmesh >/dev/null
    [[ ! -e "$config_dir" ]] || fail "dpkg --purge left the empty $config_dir"
    ok "dpkg --purge keeps a non-empty $config_dir and removes an empty one"
else
    ok "dpkg --purge keeps a non-empty $config_dir ($config_dir existed before the test)"
fi
[[ -z "$(package_status)" || "$(package_status)" == *not-installed* ]] ||
    fail "after purge the package is still $(package_status)"

echo "deb-test: $checks passed, 0 failed"
