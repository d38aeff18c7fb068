#!/usr/bin/env bash
# The systemd lab: the wgmesh@.service unit under a real systemd (Debian bookworm, 252) running as
# PID 1 of two systemd-nspawn containers on a private bridge, with the product installed from its
# Debian package (`dpkg -i`). Each step prints PASS or FAIL; the summary line counts them and the
# script exits 1 if any step failed. Run as root. README.md ("systemd lab") lists the setup each
# step uses; docs/decisions.md explains the choices.
#
# Package to install, first found wins:
#   WGMESH_DEB=path/to/wgmesh_*.deb    a package built elsewhere
#   scripts/package.sh                 builds it (cargo-deb) into target/debian/
#   WGMESH_LAB_BINARY=path/to/wgmesh   development only: wraps a binary and systemd/wgmesh@.service
#                                      into a throwaway package, so `dpkg -i` is still what runs
# Other knobs:
#   WGMESH_LAB_CACHE      rootfs cache          (default /var/cache/wgmesh-lab)
#   WGMESH_LAB_ARTIFACTS  journals + console    (default /tmp/wgmesh-systemd-lab)
#   WGMESH_LAB_MIRROR     Debian mirror         (default http://deb.debian.org/debian)
#   WGMESH_LAB_SECURITY_MIRROR                  (default: the mirror's debian-security)
#   WGMESH_LAB_UNDERLAY   bridge /24, first three octets (default 172.31.233)
#   WGMESH_LAB_KEEP=1     leave the containers running at the end (prints how to enter them)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "systemd-lab: run as root (it boots containers)" >&2
    exit 2
fi

# ---------------------------------------------------------------------------------------------
# Rootfs: mmdebstrap, cached under a key that changes with anything that shapes the tree.
# procps is left out on purpose: ExecReload must not need /bin/kill (issue 12). Bump
# ROOTFS_RECIPE when the mmdebstrap options below change.
ROOTFS_RECIPE=3
ROOTFS_PACKAGES=(systemd systemd-sysv dbus wireguard-go wireguard-tools iproute2 iputils-ping)
MIRROR=${WGMESH_LAB_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${WGMESH_LAB_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}
CACHE=${WGMESH_LAB_CACHE:-/var/cache/wgmesh-lab}
ARTIFACTS=${WGMESH_LAB_ARTIFACTS:-/tmp/wgmesh-systemd-lab}
UNDERLAY=${WGMESH_LAB_UNDERLAY:-172.31.233}
ROUTE=192.168.77.0/24        # what node a advertises through the reload file
IFACE=wg0
UNIT=wgmesh@$IFACE.service

now() { echo "${EPOCHREALTIME}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "systemd-lab: $*"; }

rootfs_key() {
    printf '%s\n' "recipe $ROOTFS_RECIPE" "$MIRROR" "$SECURITY_MIRROR" "${ROOTFS_PACKAGES[@]}" |
        sha256sum | cut -c1-16
}

# Builds the rootfs once per key; prints its path. Concurrent runs wait on the lock.
ensure_rootfs() {
    local key dir started
    key=$(rootfs_key)
    dir=$CACHE/rootfs-$key
    mkdir -p "$CACHE"
    exec 9>"$CACHE/lock"
    flock 9
    if [[ ! -f $dir/.complete ]]; then
        started=$(now)
        log "building the bookworm rootfs (cold, once per recipe) into $dir" >&2
        rm -rf "$dir" "$dir.tmp"
        # Older recipes are never used again.
        find "$CACHE" -maxdepth 1 -name 'rootfs-*' -not -name "rootfs-$key*" -exec rm -rf {} +
        mmdebstrap --variant=minbase --mode=root --format=directory \
            --include="$(IFS=,; echo "${ROOTFS_PACKAGES[*]}")" \
            --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt=force-unsafe-io \
            --customize-hook='rm -f "$1/etc/hostname"' \
            --customize-hook='echo "wgmesh-lab recipe '"$ROOTFS_RECIPE"'" > "$1/etc/wgmesh-lab"' \
            bookworm "$dir.tmp" \
            "deb $MIRROR bookworm main" \
            "deb $MIRROR bookworm-updates main" \
            "deb $SECURITY_MIRROR bookworm-security main" >"$CACHE/mmdebstrap.log" 2>&1 || {
            tail -30 "$CACHE/mmdebstrap.log" >&2
            log "mmdebstrap failed (log: $CACHE/mmdebstrap.log)" >&2
            return 1
        }
        # force-unsafe-io skips dpkg's fsync per file (a quarter of the build time); one sync
        # before the tree is marked complete gives the same guarantee for a cache.
        sync -f "$dir.tmp"
        mv "$dir.tmp" "$dir"
        touch "$dir/.complete"
        log "rootfs built in $(since "$started") s ($(du -sh "$dir" | cut -f1))" >&2
    else
        log "rootfs cached: $dir" >&2
    fi
    flock -u 9
    echo "$dir"
}

# ---------------------------------------------------------------------------------------------
# The package under test.
find_deb() {
    if [[ -n ${WGMESH_DEB:-} ]]; then
        [[ -f $WGMESH_DEB ]] || { log "WGMESH_DEB=$WGMESH_DEB does not exist" >&2; return 1; }
        readlink -f "$WGMESH_DEB"
    elif [[ -x scripts/package.sh ]]; then
        log "building the package with scripts/package.sh" >&2
        local out deb
        # lintian is the package test's job (scripts/deb-test.sh); here only the package counts.
        # Shown after it finishes, not through `tee /dev/stderr`: when stderr is a file (a CI log),
        # tee reopens it through /proc/self/fd/2 with O_TRUNC and wipes everything logged so far.
        out=$(SKIP_LINTIAN=1 ./scripts/package.sh)
        printf '%s\n' "$out" >&2
        # The path it prints last, else the newest package cargo-deb left.
        deb=$(echo "$out" | awk 'END { print $NF }')
        [[ $deb == *.deb && -f $deb ]] || deb=$(ls -t target/debian/wgmesh_*.deb 2>/dev/null | awk 'NR == 1')
        [[ -n $deb ]] || { log "scripts/package.sh left no target/debian/wgmesh_*.deb" >&2; return 1; }
        readlink -f "$deb"
    elif [[ -n ${WGMESH_LAB_BINARY:-} ]]; then
        dev_deb "$WGMESH_LAB_BINARY"
    else
        log "no package: set WGMESH_DEB, or add scripts/package.sh, or (development) WGMESH_LAB_BINARY" >&2
        return 1
    fi
}

# Development stand-in for scripts/package.sh: the binary and the unit, nothing else.
dev_deb() {
    local bin=$1 root=$work/devdeb version
    version=$("$bin" --version | awk '{print $2}')
    mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system"
    install -m755 "$bin" "$root/usr/bin/wgmesh"
    sed 's|@BINARY@|/usr/bin/wgmesh|' systemd/wgmesh@.service >"$root/lib/systemd/system/wgmesh@.service"
    cat >"$root/DEBIAN/control" <<EOF
Package: wgmesh
Version: ${version:-0.0.0}~lab
Architecture: amd64
Maintainer: wgmesh lab <lab@invalid>
Depends: wireguard-tools, iproute2
Description: wgmesh (systemd-lab development stand-in)
EOF
    dpkg-deb -Zgzip -z1 --root-owner-group --build "$root" "$work/wgmesh_lab.deb" >&2
    echo "$work/wgmesh_lab.deb"
}

# ---------------------------------------------------------------------------------------------
# Containers.
id=$(( $$ % 10000 ))
bridge=wglab$id
declare -A MACHINE NSPAWN LEADER ADDR
NODES=(a b)
work=$(mktemp -d /tmp/wgmesh-systemd-lab.XXXXXX)
mkdir -p "$ARTIFACTS"

teardown() {
    local rc=$?
    set +e
    # Background helpers (route sampler, ping) first: they would outlive the containers.
    local job
    for job in $(jobs -p); do kill "$job" 2>/dev/null; done
    for n in "${NODES[@]}"; do
        if [[ -n ${LEADER[$n]:-} ]] && kill -0 "${LEADER[$n]}" 2>/dev/null; then
            nsenter -t "${LEADER[$n]}" -a journalctl --no-pager -o short-precise \
                >"$ARTIFACTS/node-$n.journal" 2>&1
        fi
    done
    if [[ ${WGMESH_LAB_KEEP:-} == 1 ]]; then
        for n in "${NODES[@]}"; do
            log "kept node $n: nsenter -t ${LEADER[$n]:-?} -a bash   (nspawn pid ${NSPAWN[$n]:-?})"
        done
        log "bridge $bridge; remove with: kill ${NSPAWN[*]}; ip link del $bridge"
        return $rc
    fi
    for n in "${NODES[@]}"; do
        [[ -n ${NSPAWN[$n]:-} ]] && kill -TERM "${NSPAWN[$n]}" 2>/dev/null
    done
    for n in "${NODES[@]}"; do
        local pid=${NSPAWN[$n]:-} i
        [[ -n $pid ]] || continue
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    ip link del "$bridge" 2>/dev/null
    rm -rf "$work"
    return $rc
}
trap teardown EXIT
trap 'exit 130' INT TERM

# The underlay must not overlap anything the host routes or owns.
check_underlay() {
    python3 - "$UNDERLAY.0/24" <<'EOF'
import ipaddress, json, subprocess, sys
lab = ipaddress.ip_network(sys.argv[1])
routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                                   capture_output=True, text=True, check=True).stdout)
for r in routes:
    dst = r.get("dst", "")
    if dst in ("default", "") or r.get("type") in ("broadcast", "local") and dst.startswith("127."):
        continue
    try:
        net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
    except ValueError:
        continue
    if net.version == 4 and net.overlaps(lab):
        sys.exit(f"underlay {lab} overlaps the host's route {dst}; set WGMESH_LAB_UNDERLAY")
EOF
}

in_node() { local n=$1; shift; nsenter -t "${LEADER[$n]}" -a "$@"; }
sh_node() { local n=$1; shift; nsenter -t "${LEADER[$n]}" -a sh -c "$*"; }

boot_node() {
    local n=$1 rootfs=$2 i child
    MACHINE[$n]=wgl$id$n
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn -b --volatile=overlay --register=no \
        --keep-unit --system-call-filter=bpf --bind=/dev/net/tun --network-bridge="$bridge" \
        --console=passive -D "$rootfs" -M "${MACHINE[$n]}" \
        </dev/null >"$ARTIFACTS/node-$n.nspawn" 2>&1 &
    NSPAWN[$n]=$!
    # The container's PID 1 is the child of the nspawn process that runs systemd.
    for i in $(seq 100); do
        for child in $(cat /proc/"${NSPAWN[$n]}"/task/*/children 2>/dev/null); do
            [[ $(cat /proc/"$child"/comm 2>/dev/null) == systemd ]] && LEADER[$n]=$child
        done
        [[ -n ${LEADER[$n]:-} ]] && break
        kill -0 "${NSPAWN[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z ${LEADER[$n]:-} ]]; then
        cat "$ARTIFACTS/node-$n.nspawn" >&2
        return 1
    fi
}

# Waits for both systems to finish booting, then gives each its underlay address.
settle_nodes() {
    local n i state
    for i in "${!NODES[@]}"; do
        n=${NODES[$i]}
        # systemctl cannot connect until PID 1 has made its private socket.
        wait_for 30 in_node "$n" test -S /run/systemd/private ||
            { log "node $n: systemd never opened /run/systemd/private"; return 1; }
        state=$(timeout 60 nsenter -t "${LEADER[$n]}" -a systemctl is-system-running --wait 2>&1) || true
        [[ $state == running ]] || log "node $n booted $state: $(in_node "$n" systemctl --failed --no-legend 2>&1 | tr '\n' ' ')"
        ADDR[$n]=$UNDERLAY.$((11 + i))
        in_node "$n" ip addr add "${ADDR[$n]}/24" dev host0
        in_node "$n" ip link set host0 up
    done
}

# ---------------------------------------------------------------------------------------------
# Step bookkeeping.
PASSED=() FAILED=()
KEEP_CONFIGURED=
why() { echo "    - $*"; }
note() { echo "    $*"; }
run_step() {
    local name=$1 fn=$2 started
    started=$(now)
    echo "--- step $name"
    if "$fn"; then
        echo "PASS $name ($(since "$started") s)"
        PASSED+=("$name")
    else
        echo "FAIL $name ($(since "$started") s)"
        FAILED+=("$name")
        return 1
    fi
}

# Polls a command (quietly) until it succeeds or the timeout (seconds) passes.
wait_for() {
    local timeout=$1 started
    shift
    started=$(now)
    while ! "$@" >/dev/null 2>&1; do
        if awk -v a="$started" -v b="$(now)" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
            return 1
        fi
        sleep 0.2
    done
}

prop() { in_node "$1" systemctl show -P "$2" "$UNIT"; }
status_json() { in_node "$1" wgmesh status --json 2>/dev/null; }
mesh_ip() { status_json "$1" | jq -r .mesh_ipv4; }
pubkey() { status_json "$1" | jq -r .public_key; }
has_peer() { status_json "$1" | jq -e --arg k "$2" '.peers | any(.public_key == $k)' >/dev/null; }
has_route() { in_node "$1" ip route show "$ROUTE" | grep "dev $IFACE" >/dev/null; }
advertises() { status_json "$1" | jq -e --arg r "$ROUTE" '.advertised_routes | index($r)' >/dev/null; }
pings() { in_node "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }
journal_since() { in_node "$1" journalctl -u "$UNIT" --no-pager -o cat --since "@$2"; }
# A time for journalctl --since @T (sub-second, so one step's window never holds the last one's lines).
node_clock() { in_node "$1" date +%s.%N; }
wireguard_go_pid() {
    # pgrep is procps, which the rootfs leaves out.
    sh_node "$1" 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = wireguard-go ] && echo ${p#/proc/}; done' | awk 'NR == 1'
}
show_journal() { journal_since "$1" "$2" | tail -"${3:-25}" | sed 's/^/      | /'; }
active() { [[ $(in_node "$1" systemctl is-active "$UNIT") == active ]]; }
mesh_up() { has_peer a "$KEY_B" && has_peer b "$KEY_A" && pings a "$IP_B" && pings b "$IP_A"; }

# Samples, every 0.1 s until the file $1.stop exists, whether node b has node a's route.
sample_route() {
    local out=$1 yes=0 no=0
    while [[ ! -e $out.stop && -d $work ]]; do
        if has_route b; then yes=$((yes + 1)); else no=$((no + 1)); fi
        sleep 0.1
    done
    echo "$yes $no" >"$out"
}

# ---------------------------------------------------------------------------------------------
# Steps. Node a advertises $ROUTE; node b runs the default setup throughout; node a switches to
# the --keep-interface env-file setup in step 4b.

step_environment() {
    local ok=0 v
    v=$(in_node a systemctl --version | awk 'NR == 1')
    note "container: $v; PID 1 = $(in_node a cat /proc/1/comm); $(in_node a stat -f -c 'cgroup fs %T' /sys/fs/cgroup)"
    [[ $v == "systemd 252 "* ]] || { why "expected systemd 252"; ok=1; }
    [[ $(in_node a stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]] || { why "no unified cgroup hierarchy"; ok=1; }
    # DevicePolicy= is enforced (BPF device programs): a closed policy denies /dev/net/tun,
    # DeviceAllow= lets it through.
    if in_node a systemd-run --wait -q -p DevicePolicy=closed sh -c 'exec 3<>/dev/net/tun' 2>/dev/null; then
        why "DevicePolicy=closed did not block /dev/net/tun: the sandbox would not be tested"
        ok=1
    fi
    in_node a systemd-run --wait -q -p DevicePolicy=closed -p 'DeviceAllow=/dev/net/tun rw' \
        sh -c 'exec 3<>/dev/net/tun' || { why "DeviceAllow=/dev/net/tun rw did not open it"; ok=1; }
    [[ $ok == 0 ]] && note "DevicePolicy=closed blocks /dev/net/tun, DeviceAllow= opens it"
    return $ok
}

step_install_package() {
    local n ok=0
    for n in "${NODES[@]}"; do
        cp "$DEB" "/proc/${LEADER[$n]}/root/tmp/wgmesh.deb"
        in_node "$n" dpkg -i /tmp/wgmesh.deb >"$work/dpkg-$n.log" 2>&1 || {
            sed 's/^/      | /' "$work/dpkg-$n.log"
            why "dpkg -i failed on node $n"
            ok=1
            continue
        }
        note "node $n: $(in_node "$n" wgmesh --version)"
    done
    return $ok
}

step_install_service() {
    local n ok=0 out
    in_node a wgmesh secret >"$work/secret"
    for n in "${NODES[@]}"; do
        install -m600 "$work/secret" "/proc/${LEADER[$n]}/root/root/secret"
        # install-service starts the unit itself when systemd runs; enable --now is then a no-op
        # that must still succeed.
        out=$(in_node "$n" sh -c 'umask 077; wgmesh install-service --secret-file /root/secret' 2>&1) || {
            echo "$out" | sed 's/^/      | /'
            why "install-service failed on node $n"
            ok=1
            continue
        }
        in_node "$n" systemctl enable --now "$UNIT" 2>/dev/null || { why "enable --now failed on $n"; ok=1; }
        local type state sub pid enabled
        type=$(prop "$n" Type) state=$(prop "$n" ActiveState) sub=$(prop "$n" SubState)
        pid=$(prop "$n" MainPID) enabled=$(in_node "$n" systemctl is-enabled "$UNIT" 2>&1 || true)
        note "node $n: is-active=$(in_node "$n" systemctl is-active "$UNIT") Type=$type ActiveState=$state SubState=$sub MainPID=$pid is-enabled=$enabled"
        [[ $type == notify && $state == active && $sub == running && $pid -gt 0 ]] ||
            { why "node $n is not an active Type=notify service"; ok=1; }
        [[ $enabled == enabled ]] || { why "node $n: unit not enabled"; ok=1; }
    done
    local fragment
    fragment=$(prop a FragmentPath)
    note "unit loaded from $fragment"
    # install-service uses the packaged unit rather than shadowing it with a copy in /etc, so a
    # package upgrade's unit changes take effect.
    if [[ $fragment != /lib/systemd/system/* && $fragment != /usr/lib/systemd/system/* ]]; then
        why "node a: unit loaded from $fragment, shadowing the packaged one"
        ok=1
    fi
    return $ok
}

# install-service ran under umask 077 in step 1b: the unit must still be world-readable, or
# systemd warns (issue 12).
step_unit_mode() {
    local n ok=0 path mode
    for n in "${NODES[@]}"; do
        path=$(prop "$n" FragmentPath)
        mode=$(in_node "$n" stat -c %a "$path")
        note "node $n: $path mode $mode"
        [[ $mode == 644 ]] || { why "node $n: unit file mode $mode (want 644)"; ok=1; }
    done
    return $ok
}

step_status_ping() {
    KEY_A=$(pubkey a) KEY_B=$(pubkey b) IP_A=$(mesh_ip a) IP_B=$(mesh_ip b)
    wait_for 30 mesh_up || {
        why "no mesh within 30 s: a has b=$(has_peer a "$KEY_B" && echo yes || echo no), b has a=$(has_peer b "$KEY_A" && echo yes || echo no)"
        return 1
    }
    in_node b wgmesh status | sed 's/^/      | /'
    note "$(in_node a ping -c 3 -i 0.2 -W 1 "$IP_B" | tail -2 | head -1) (a → b $IP_B)"
    note "$(in_node b ping -c 3 -i 0.2 -W 1 "$IP_A" | tail -2 | head -1) (b → a $IP_A)"
}

step_reload_good() {
    local t ok=0
    t=$(node_clock a)
    note "ExecReload: $(prop a ExecReload | sed 's/ ; ignore_errors.*//')"
    echo "advertise-routes=$ROUTE" >"/proc/${LEADER[a]}/root/var/lib/wgmesh/$IFACE.reload"
    if ! in_node a systemctl reload "$UNIT" 2>"$work/reload.err"; then
        why "systemctl reload failed: $(tr '\n' ' ' <"$work/reload.err")"
        show_journal a "$t" 6
        ok=1
        # Later steps need the route: put it in place the daemon's own way.
        note "(continuing with \`wgmesh reload\` so the later steps have the route)"
        in_node a wgmesh reload >/dev/null 2>&1 || true
    fi
    if wait_for 15 has_route b; then
        note "node b: $(in_node b ip route show "$ROUTE")"
    else
        why "node b has no route to $ROUTE within 15 s"
        ok=1
    fi
    return $ok
}

step_reload_bad() {
    local t ok=0 reload="/proc/${LEADER[a]}/root/var/lib/wgmesh/$IFACE.reload"
    t=$(node_clock a)
    printf '# lab: an invalid value\nadvertise-routes=192.168.77.0/33\n' >"$reload"
    if in_node a systemctl reload "$UNIT" 2>/dev/null; then
        why "systemctl reload succeeded for a rejected file"
        ok=1
    else
        note "systemctl reload failed, as it must"
    fi
    sleep 0.5
    if journal_since a "$t" | grep -v -e '^Reload' -e 'Control process exited' | grep -i -E 'line 2|192\.168\.77\.0/33' >/dev/null; then
        journal_since a "$t" | grep -i -E 'line 2|192\.168\.77\.0/33|reload' | sed 's/^/      | /'
    else
        why "the journal does not give the reason (line 2 or the value):"
        show_journal a "$t" 8
        ok=1
    fi
    active a || { why "unit not active after the rejected reload"; ok=1; }
    has_route b || { why "node b lost $ROUTE after a rejected reload"; ok=1; }
    advertises a || { why "node a stopped advertising $ROUTE"; ok=1; }
    # The good file again: the restart steps read it at startup.
    echo "advertise-routes=$ROUTE" >"$reload"
    return $ok
}

# Restarts node a while node b watches the route (and, with $1 = ping, pings node a every 0.1 s
# for 8 s, the restart 1 s in).
# Sets LOST, SENT, ROUTE_YES, ROUTE_NO, T_RESTART.
restart_watched() {
    local with_ping=${1:-} ping_pid started
    rm -f "$work/route" "$work/route.stop"
    sample_route "$work/route" &
    local sampler=$!
    if [[ $with_ping == ping ]]; then
        in_node b ping -n -i 0.1 -W 1 -c 80 "$IP_A" >"$work/ping" 2>&1 &
        ping_pid=$!
    fi
    sleep 1
    T_RESTART=$(node_clock a)
    started=$(now)
    in_node a systemctl restart "$UNIT" || why "systemctl restart failed"
    RESTART_SECONDS=$(since "$started")
    wait_for 20 has_peer a "$KEY_B" || true
    wait_for 20 has_route b || true
    sleep 1
    touch "$work/route.stop"
    wait "$sampler"
    read -r ROUTE_YES ROUTE_NO <"$work/route"
    if [[ $with_ping == ping ]]; then
        wait "$ping_pid" || true
        SENT=$(awk '/packets transmitted/ {print $1}' "$work/ping")
        local got
        got=$(awk '/packets transmitted/ {print $4}' "$work/ping")
        LOST=$((SENT - got))
    fi
}

step_restart_keeps_routes_default() {
    local ok=0
    restart_watched
    note "systemctl restart took ${RESTART_SECONDS} s; node b had $ROUTE in $ROUTE_YES of $((ROUTE_YES + ROUTE_NO)) samples (0.1 s apart)"
    journal_since a "$T_RESTART" | grep -i -E 'advertis|reload|adopt|wgmesh up' | sed 's/^/      | /'
    advertises a || { why "node a does not advertise $ROUTE after the restart (reload file not applied at startup)"; ok=1; }
    has_route b || { why "node b has no route to $ROUTE after the restart"; ok=1; }
    return $ok
}

step_keep_interface_restart() {
    local ok=0 out env
    out=$(in_node a wgmesh install-service --keep-interface --secret-file /root/secret 2>&1) || {
        echo "$out" | sed 's/^/      | /'
        why "install-service --keep-interface failed"
        return 1
    }
    in_node a test -f /etc/wgmesh/$IFACE.env || { why "no /etc/wgmesh/$IFACE.env written"; return 1; }
    note "/etc/wgmesh/$IFACE.env ($(in_node a stat -c %a /etc/wgmesh/$IFACE.env)): $(in_node a cat /etc/wgmesh/$IFACE.env | grep -v '^#' | tr '\n' ' ')"
    # The secret stays in the credential: no SECRET variable and no token in the env file.
    if in_node a grep -E '^[^#]*SECRET' /etc/wgmesh/$IFACE.env >/dev/null ||
        in_node a grep -F "$(sed 's|^wgmesh://v1/||' "$work/secret")" /etc/wgmesh/$IFACE.env >/dev/null; then
        why "the env file carries the secret"
        ok=1
    fi
    KEEP_CONFIGURED=1
    # The running daemon was started without the env file; this restart makes it read it.
    in_node a systemctl restart "$UNIT"
    env=$(sh_node a "tr '\\0' '\\n' </proc/$(prop a MainPID)/environ" | grep -i keep || true)
    note "daemon environment: ${env:-none with KEEP}"
    [[ -n $env ]] || { why "the daemon did not get --keep-interface from the env file"; ok=1; }
    wait_for 30 mesh_up || { why "mesh not back after the first restart"; return 1; }
    wait_for 15 has_route b || { why "node b has no $ROUTE before the measured restart"; ok=1; }
    local wg_before
    wg_before=$(wireguard_go_pid a)
    restart_watched ping
    note "systemctl restart took ${RESTART_SECONDS} s; ping b → a every 0.1 s: $LOST lost of $SENT"
    note "node b had $ROUTE in $ROUTE_YES of $((ROUTE_YES + ROUTE_NO)) samples; wireguard-go pid $wg_before → $(wireguard_go_pid a)"
    journal_since a "$T_RESTART" | head -30 | sed 's/^/      | /'
    [[ ${LOST:-1} == 0 ]] || { why "$LOST pings lost during the restart"; ok=1; }
    [[ $ROUTE_NO == 0 ]] || { why "node b lost $ROUTE during the restart ($ROUTE_NO samples)"; ok=1; }
    advertises a || { why "node a does not advertise $ROUTE after the restart"; ok=1; }
    return $ok
}

step_kill9() {
    local ok=0 main wg restarts main2 wg2 restarts2 t
    main=$(prop b MainPID) wg=$(wireguard_go_pid b) restarts=$(prop b NRestarts) t=$(node_clock b)
    sh_node b "kill -9 $main"
    wait_for 20 eval '[[ $(prop b NRestarts) -gt $restarts && $(prop b SubState) == running ]]' ||
        { why "not restarted within 20 s: $(prop b ActiveState)/$(prop b SubState)"; return 1; }
    main2=$(prop b MainPID) wg2=$(wireguard_go_pid b) restarts2=$(prop b NRestarts)
    note "MainPID $main → $main2, NRestarts $restarts → $restarts2, wireguard-go pid $wg → $wg2"
    journal_since b "$t" | grep -E 'Main process exited|adopt|Scheduled restart' | sed 's/^/      | /'
    [[ -n $wg && $wg == "$wg2" ]] || { why "wireguard-go was not adopted (pid changed)"; ok=1; }
    wait_for 15 pings b "$IP_A" || { why "no ping b → a after the restart"; ok=1; }
    [[ $ok == 0 ]] && note "tunnel still pings"
    return $ok
}

step_stop_cleans_up() {
    local ok=0 left t
    in_node b ip route show proto 77 | sed 's/^/      | before: /'
    t=$(node_clock b)
    in_node b systemctl stop "$UNIT"
    note "ActiveState=$(prop b ActiveState) Result=$(prop b Result)"
    in_node b ip link show "$IFACE" >/dev/null 2>&1 && { why "$IFACE still exists"; ok=1; }
    left=$(in_node b ip route show proto 77; in_node b ip -6 route show proto 77)
    [[ -z $left ]] || { why "routes left: $left"; ok=1; }
    # wireguard-go is asked to exit; give it a moment after the daemon.
    wait_for 3 eval '[[ -z $(wireguard_go_pid b) ]]' || { why "wireguard-go still runs 3 s after stop"; ok=1; }
    journal_since b "$t" | grep 'remains running after unit stopped' | sed 's/^/      | note: /' || true
    in_node b test -e /run/wgmesh/$IFACE.sock && { why "control socket left"; ok=1; }
    [[ $ok == 0 ]] && note "$IFACE, wgmesh's routes (proto 77), wireguard-go and the socket are gone"
    return $ok
}

step_stop_keep_interface() {
    local ok=0
    [[ $KEEP_CONFIGURED ]] || { why "node a has no --keep-interface setup (step 4b could not configure it)"; return 1; }
    in_node a systemctl stop "$UNIT"
    if in_node a ip link show "$IFACE" >/dev/null 2>&1; then
        note "after stop: $IFACE still up (by design), wireguard-go pid $(wireguard_go_pid a)"
    else
        why "$IFACE gone after stop although --keep-interface"
        ok=1
    fi
    in_node a wgmesh down >"$work/down" 2>&1 || { why "wgmesh down: $(tr '\n' ' ' <"$work/down")"; ok=1; }
    # `wgmesh down` returns once wireguard-go has closed its UAPI socket; the process itself
    # exits right after, so allow it a second to be reaped.
    if in_node a ip link show "$IFACE" >/dev/null 2>&1; then
        why "wgmesh down left $IFACE"
        ok=1
    elif ! wait_for 1 eval '[[ -z $(wireguard_go_pid a) ]]'; then
        why "wireguard-go still runs 1 s after wgmesh down"
        ok=1
    else
        note "wgmesh down removed $IFACE and wireguard-go"
    fi
    return $ok
}

step_security() {
    local line score threshold
    threshold=$(sed -n 's/^const DOCUMENTED_EXPOSURE: f64 = \([0-9.]*\);/\1/p' tests/cli_daemonless.rs)
    line=$(in_node a systemd-analyze security --no-pager "$UNIT" | grep 'Overall exposure level')
    score=$(echo "$line" | sed 's/.*: \([0-9.]*\) .*/\1/')
    note "${line# }  (threshold: offline score ${threshold} from tests/cli_daemonless.rs)"
    awk -v s="$score" -v t="$threshold" 'BEGIN { exit !(s != "" && t != "" && s + 0 <= t + 0) }' ||
        { why "online score $score worse than $threshold"; return 1; }
}

# systemd 252 keeps the failed run's Result (exit-code) when the limit refuses an automatic
# restart: Result=start-limit-hit only shows when the limit stops a manual start. So "start limit
# reached" means: "Start request repeated too quickly" in the journal, the unit failed (not
# activating/auto-restart), and no further restart a few seconds later.
step_start_limit() {
    local ok=0 t dropin burst interval restart_s deadline restarts
    t=$(node_clock b)
    dropin=/proc/${LEADER[b]}/root/etc/systemd/system/$UNIT.d
    mkdir -p "$dropin"
    printf '[Service]\nRestrictAddressFamilies=~AF_NETLINK\n' >"$dropin/50-lab-no-netlink.conf"
    in_node b systemctl daemon-reload
    in_node b systemctl start "$UNIT" 2>/dev/null && { why "start succeeded without netlink"; ok=1; }
    burst=$(prop b StartLimitBurst) interval=$(prop b StartLimitIntervalUSec) restart_s=$(prop b RestartUSec)
    restart_s=$(echo "$restart_s" | sed -n 's/^\([0-9.]*\)s$/\1/p')
    deadline=$(awk -v b="$burst" -v r="${restart_s:-2}" 'BEGIN { d = b * (r + 3) + 5; print (d > 60 ? 60 : d) }')
    note "unit: StartLimitBurst=$burst StartLimitIntervalSec=$interval RestartSec=$(prop b RestartUSec); waiting up to ${deadline} s"
    if wait_for "$deadline" eval '[[ $(prop b ActiveState) == failed ]]'; then
        restarts=$(prop b NRestarts)
        sleep 3
        note "ActiveState=$(prop b ActiveState) Result=$(prop b Result) after $restarts restarts; 3 s later NRestarts=$(prop b NRestarts)"
        [[ $(prop b ActiveState) == failed && $(prop b NRestarts) == "$restarts" ]] ||
            { why "the unit restarted again after failing"; ok=1; }
        journal_since b "$t" | grep -E 'repeated too quickly|start-limit-hit' >/dev/null ||
            { why "failed, but not through the start limit"; ok=1; }
    else
        why "no start limit within ${deadline} s: $(prop b ActiveState)/$(prop b SubState) Result=$(prop b Result) NRestarts=$(prop b NRestarts)"
        ok=1
    fi
    note "exit statuses: $(journal_since b "$t" | grep -o 'status=[0-9]*/[A-Z]*' | sort | uniq -c | tr -s ' \n' ' ')"
    journal_since b "$t" | sed 's/^[0-9T:.-]*Z *//' |
        grep -E '^wgmesh:|ERROR|WARN|panick|too quickly|start-limit' | sort | uniq -c | sed 's/^/      | /'
    journal_since b "$t" | grep 'status=1/FAILURE' >/dev/null || { why "no exit status 1"; ok=1; }
    journal_since b "$t" | grep -E 'status=101|panicked' >/dev/null && { why "the daemon panicked (101)"; ok=1; }
    journal_since b "$t" | grep -E '^(wgmesh: |.*ERROR).*netlink' >/dev/null || { why "no error line names netlink"; ok=1; }
    in_node b systemctl stop "$UNIT" 2>/dev/null || true
    rm -rf "$dropin"
    in_node b systemctl daemon-reload
    in_node b systemctl reset-failed "$UNIT" 2>/dev/null || true
    return $ok
}

# ---------------------------------------------------------------------------------------------
total_started=$(now)
check_underlay
rootfs=$(ensure_rootfs)
DEB=$(find_deb)
log "package: $DEB"

ip link add "$bridge" type bridge
# Without an IGMP querier a snooping bridge may drop the LAN beacons' group traffic.
echo 0 >"/sys/class/net/$bridge/bridge/multicast_snooping"
ip link set "$bridge" up
boot_started=$(now)
for n in "${NODES[@]}"; do boot_node "$n" "$rootfs"; done
settle_nodes
log "booted ${MACHINE[a]} and ${MACHINE[b]} on $bridge ($UNDERLAY.0/24) in $(since "$boot_started") s"

run_step "0 environment: systemd 252, cgroup2, DevicePolicy enforced" step_environment || true
base=ok
run_step "1a dpkg -i the package" step_install_package || base=
[[ $base ]] && { run_step "1b install-service, enable --now, Type=notify active" step_install_service || base=; }
[[ $base ]] && { run_step "1c unit file readable (0644) under umask 077" step_unit_mode || true; }
[[ $base ]] && { run_step "2 status shows the peer, ping over the mesh" step_status_ping || base=; }
if [[ $base ]]; then
    run_step "3a reload good: systemctl reload, route reaches the peer" step_reload_good || true
    run_step "3b reload bad: systemctl reload fails, reason in journal, still active" step_reload_bad || true
    run_step "4a restart keeps advertised routes (default setup)" step_restart_keeps_routes_default || true
    run_step "4b restart loses no ping (--keep-interface env file)" step_keep_interface_restart || true
    run_step "5 kill -9: systemd restarts, wireguard-go adopted" step_kill9 || true
    run_step "7 systemd-analyze security (online)" step_security || true
    run_step "6a stop cleans up (default setup)" step_stop_cleans_up || true
    run_step "6b stop keeps the tunnel, wgmesh down removes it (--keep-interface)" step_stop_keep_interface || true
    run_step "8 RestrictAddressFamilies=~AF_NETLINK: exit 1 naming netlink, start limit reached" step_start_limit || true
else
    echo "--- steps 3-8 not run: no mesh to test"
    FAILED+=("3-8 not run")
fi

echo
log "summary ($(since "$total_started") s total; journals in $ARTIFACTS):"
for s in "${PASSED[@]}"; do echo "  PASS $s"; done
for s in "${FAILED[@]}"; do echo "  FAIL $s"; done
echo "systemd-lab: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[[ ${#FAILED[@]} == 0 ]]
