#!/usr/bin/env bash
# Boot Debian's cloud kernel under qemu (TCG) with a throw-away initramfs and run
# one test script inside it. The build machine has no WireGuard module; Debian's
# kernel package does, so this is how we test against kernel WireGuard.
#
#   tests/vm/run-in-vm.sh SCRIPT [EXTRA_FILE...]
#
# SCRIPT runs as /test.sh under busybox sh, as root, in a fresh VM with the
# wireguard and veth modules loaded. Each EXTRA_FILE (usually an ELF binary such
# as target/debug/wgmesh) is copied to /usr/local/bin/<basename>, together with
# the shared libraries `ldd` lists for it. Exit status: 0 only if the VM printed
# "VM-RESULT: PASS". See tests/vm/README.md for the conventions inside the VM.
#
# Environment:
#   WGMESH_VM_CACHE           kernel cache dir   (default /var/cache/wgmesh-vm, or
#                                                 ~/.cache/wgmesh-vm if that is not writable)
#   WGMESH_VM_KERNEL_PKG      kernel package     (default: what linux-image-cloud-amd64 depends on)
#   WGMESH_VM_MODULES         modules to ship, deps resolved from modules.dep
#                                                (default "wireguard veth bridge tun")
#   WGMESH_VM_TIMEOUT         whole-qemu timeout, seconds (default 300)
#   WGMESH_VM_SCRIPT_TIMEOUT  SCRIPT timeout inside the VM, seconds (default 240)
#   WGMESH_VM_MEM / WGMESH_VM_SMP  guest RAM in MiB (1024) / vCPUs (2)
#   WGMESH_VM_LOG             also copy the console log here (default: only the work dir,
#                                                which is removed)
#   WGMESH_VM_KEEP=1          keep the work dir (initramfs, init, console log)
set -euo pipefail

die() { echo "run-in-vm: $*" >&2; exit 2; }
log() { echo "run-in-vm: $*" >&2; }

[[ $# -ge 1 ]] || die "usage: $0 SCRIPT [EXTRA_FILE...]"
script=$1; shift
[[ -f $script ]] || die "no such script: $script"
for extra in "$@"; do [[ -f $extra ]] || die "no such file: $extra"; done

for tool in qemu-system-x86_64 apt-cache apt-get dpkg depmod cpio gzip ldd busybox flock timeout; do
    command -v "$tool" >/dev/null || die "missing host tool: $tool"
done
# Real tools shipped into the VM (they shadow the busybox applets of the same name).
ip_bin=$(command -v ip || true);     [[ -n $ip_bin ]]   || die "missing host tool: ip (apt-get install iproute2)"
wg_bin=$(command -v wg || true);     [[ -n $wg_bin ]]   || die "missing host tool: wg (apt-get install wireguard-tools)"
ping_bin=$(command -v ping || true); [[ -n $ping_bin ]] || die "missing host tool: ping (apt-get install iputils-ping)"
busybox_bin=$(command -v busybox)
# The initramfs has no libc for busybox, so it must be busybox-static's binary.
if ldd "$busybox_bin" >/dev/null 2>&1; then die "$busybox_bin is dynamic; apt-get install busybox-static"; fi

modules=${WGMESH_VM_MODULES:-wireguard veth bridge tun}
qemu_timeout=${WGMESH_VM_TIMEOUT:-300}
script_timeout=${WGMESH_VM_SCRIPT_TIMEOUT:-240}

# ---------------------------------------------------------------- kernel cache
cache=${WGMESH_VM_CACHE:-/var/cache/wgmesh-vm}
if ! mkdir -p "$cache" 2>/dev/null || [[ ! -w $cache ]]; then
    [[ -z ${WGMESH_VM_CACHE:-} ]] || die "cache dir $cache is not writable"
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/wgmesh-vm
    mkdir -p "$cache"
fi

# Cache layout: $cache/<package>_<version>/ holds the extracted .deb with
# modules.dep generated; ".ready" marks a complete extraction.
kpkg=${WGMESH_VM_KERNEL_PKG:-}
if [[ -z $kpkg ]]; then
    kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1 || true)
fi
kver_deb=
if [[ -n $kpkg ]]; then
    kver_deb=$(apt-cache show --no-all-versions "$kpkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n1 || true)
fi
if [[ -n $kpkg && -n $kver_deb ]]; then
    kdir=$cache/${kpkg}_${kver_deb}
else
    # No apt metadata (offline, foreign host): fall back to the newest cached kernel.
    kdir=$(ls -d "$cache"/linux-image-*/ 2>/dev/null | sort -V | tail -n1 || true)
    kdir=${kdir%/}
    [[ -n $kdir && -e $kdir/.ready ]] || die "cannot resolve linux-image-cloud-amd64 and no cached kernel in $cache"
    log "apt metadata unavailable, using cached $(basename "$kdir")"
fi

(
    # Serialise concurrent runs filling the cache; extract to a temp dir, then rename.
    flock 9
    if [[ ! -e $kdir/.ready ]]; then
        deb=$(ls "$cache/${kpkg}_${kver_deb//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
        if [[ -z $deb ]]; then
            log "downloading $kpkg $kver_deb into $cache"
            (cd "$cache" && apt-get download -q "$kpkg=$kver_deb" 2>&1 | { grep -v 'couldn.t be accessed by user' >&2 || true; }) \
                || die "apt-get download $kpkg=$kver_deb failed"
            deb=$(ls "$cache/${kpkg}_${kver_deb//:/%3a}_"*.deb | head -n1)
        fi
        tmp=$(mktemp -d "$cache/.extract.XXXXXX")
        dpkg -x "$deb" "$tmp"
        kv=$(ls "$tmp/lib/modules" | head -n1)
        [[ -n $kv && -f $tmp/boot/vmlinuz-$kv ]] || die "unexpected layout in $deb"
        # The .deb ships no modules.dep; modprobe needs it to resolve dependencies.
        depmod -b "$tmp" "$kv"
        touch "$tmp/.ready"
        rm -rf "$kdir"
        mv "$tmp" "$kdir"
    fi
) 9>"$cache/.lock"

kver=$(ls "$kdir/lib/modules" | head -n1)
vmlinuz=$kdir/boot/vmlinuz-$kver
[[ -f $vmlinuz ]] || die "no kernel image in $kdir"

# ------------------------------------------------------------------ initramfs
work=$(mktemp -d "${TMPDIR:-/tmp}/wgmesh-vm.XXXXXX")
cleanup() {
    # On an interrupted run, stop qemu (timeout forwards the signal to it).
    if [[ -f $work/qemu.pid ]]; then
        kill "$(cat "$work/qemu.pid")" 2>/dev/null || true
        wait || true # for the console pipeline to drain before its files go
    fi
    if [[ ${WGMESH_VM_KEEP:-0} == 1 ]]; then log "kept work dir $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
root=$work/root

# Merged-/usr layout, everything executable in /usr/bin:
#   /bin, /sbin, /usr/sbin -> /usr/bin    /lib -> usr/lib    /lib64 -> usr/lib64
mkdir -p "$root"/{usr/bin,usr/lib,usr/lib64,usr/local/bin,etc,proc,sys,dev,run,tmp,var,root}
ln -s usr/bin "$root/bin"; ln -s usr/bin "$root/sbin"; ln -s bin "$root/usr/sbin"
ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
ln -s ../run "$root/var/run"

# Copy an ELF file's shared libraries (and its dynamic loader) to the same paths.
copy_libs() {
    local lib
    # "name => /path (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"; static binaries print nothing useful.
    for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true); do
        [[ -e $root$lib ]] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
is_elf() { [[ $(head -c4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]]; }

# Real tools first, so the busybox applet links below do not replace them.
for bin in "$ip_bin" "$wg_bin" "$ping_bin"; do
    cp -L "$bin" "$root/usr/bin/"
    copy_libs "$bin"
done
for extra in "$@"; do
    cp -L "$extra" "$root/usr/local/bin/"
    chmod +x "$root/usr/local/bin/$(basename "$extra")"
    if is_elf "$extra"; then copy_libs "$extra"; fi
done

cp "$busybox_bin" "$root/usr/bin/busybox"
for applet in $(busybox --list); do
    [[ -e $root/usr/bin/$applet ]] || ln -s busybox "$root/usr/bin/$applet"
done

# Kernel modules: the requested ones plus their dependencies from modules.dep.
mdir=lib/modules/$kver
mkdir -p "$root/usr/$mdir"
cp "$kdir/$mdir"/modules.{order,builtin,builtin.modinfo} "$root/usr/$mdir/"
declare -A want=()
resolve() {
    local line path dep
    line=$(grep -E "(^|/)$1\.ko(\.[a-z]+)?:" "$kdir/$mdir/modules.dep" | head -n1 || true)
    if [[ -z $line ]]; then
        grep -qE "(^|/)$1\.ko" "$kdir/$mdir/modules.builtin" || die "module $1 not found in $kver"
        return 0
    fi
    path=${line%%:*}
    [[ -n ${want[$path]:-} ]] && return 0
    want[$path]=1
    for dep in ${line#*:}; do
        dep=$(basename "$dep"); resolve "${dep%%.ko*}"
    done
}
for m in $modules; do resolve "${m//-/_}"; done
for path in "${!want[@]}"; do
    mkdir -p "$root/usr/$mdir/$(dirname "$path")"
    cp "$kdir/$mdir/$path" "$root/usr/$mdir/$path"
done
depmod -b "$root/usr" "$kver"

cp "$script" "$root/test.sh"
chmod +x "$root/test.sh"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
printf 'hosts: files\n' >"$root/etc/nsswitch.conf"

cat >"$root/init" <<EOF
#!/bin/sh
# WG_COLOR_MODE: the console is a tty, keep escape codes out of the log.
export PATH=/usr/local/bin:/usr/bin HOME=/root TERM=dumb WG_COLOR_MODE=never
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns /run/wireguard /dev/pts
mount -t devpts devpts /dev/pts 2>/dev/null || true
/usr/bin/ip link set lo up
echo "VM-KERNEL: \$(uname -r)"
rc=0
for m in wireguard veth; do modprobe \$m || { echo "VM-ERROR: modprobe \$m failed"; rc=1; }; done
if [ \$rc -eq 0 ]; then
    cd /root
    timeout $script_timeout /bin/sh /test.sh </dev/null || rc=\$?
fi
[ \$rc -eq 143 ] && echo "VM-ERROR: /test.sh timed out after ${script_timeout}s"
echo "VM-UPTIME: \$(cut -d' ' -f1 /proc/uptime)"
if [ \$rc -eq 0 ]; then echo "VM-RESULT: PASS"; else echo "VM-RESULT: FAIL rc=\$rc"; fi
sync
poweroff -f
EOF
chmod +x "$root/init"

initrd=$work/initrd.gz
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -H newc -o --quiet -R 0:0 | gzip -1) >"$initrd"

# ---------------------------------------------------------------------- boot
console=$work/console.log
log "kernel $kver ($(basename "$kdir")), initramfs $(du -h "$initrd" | cut -f1), script $script${*:+, extra: $*}"
start=$EPOCHREALTIME
elapsed() { awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
# The pipeline runs in the background so that a SIGTERM/SIGINT to this script is
# handled at once (bash defers traps until a foreground command finishes).
{
    # -accel tcg: /dev/kvm exists on the build machine but nested KVM fails.
    timeout -k 5 "$qemu_timeout" qemu-system-x86_64 \
        -accel tcg -cpu max -m "${WGMESH_VM_MEM:-1024}" -smp "${WGMESH_VM_SMP:-2}" \
        -nographic -no-reboot -nodefaults -serial stdio -monitor none -display none \
        -kernel "$vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 quiet panic=-1" </dev/null &
    echo $! >"$work/qemu.pid"
    rc=0; wait $! || rc=$?
    echo "$rc" >"$work/qemu.rc"
} 2>&1 |
    # Strip SeaBIOS's terminal resets and escape codes so markers start their lines.
    sed -u -e 's/\x1bc//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\r$//' |
    while IFS= read -r line; do
        printf '%s\n' "$line"
        printf '%s\n' "$line" >>"$console"
        case $line in
            VM-PASS:* | VM-RESULT:*) echo "run-in-vm: [+$(elapsed)s since qemu start] $line" >&2 ;;
        esac
    done &
wait $! || true
rm -f "$work/qemu.pid"
qemu_rc=$(cat "$work/qemu.rc" 2>/dev/null || echo "?")
total=$(elapsed)
[[ -z ${WGMESH_VM_LOG:-} ]] || cp "$console" "$WGMESH_VM_LOG"

[[ $qemu_rc == 124 ]] && log "qemu timed out after ${qemu_timeout}s"
if grep -qx 'VM-RESULT: PASS' "$console" 2>/dev/null; then
    log "PASS: kernel $kver, ${total}s from qemu start to exit"
    exit 0
fi
log "FAIL: kernel $kver, ${total}s, qemu exit $qemu_rc, result: $(grep -m1 '^VM-RESULT:' "$console" 2>/dev/null || echo none)"
exit 1
