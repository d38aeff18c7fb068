#!/bin/sh
# Runs INSIDE the VM (see run-in-vm.sh and README.md): three wgmesh daemons with the
# kernel backend, one per network namespace, the namespaces joined by a bridge in the
# root namespace. They find each other by LAN multicast, and then:
#   kernel-daemon-mesh-ping  backend "kernel", a real wireguard link, IPv4 + IPv6 pings
#                            over the mesh, `wg show` lists every peer with a handshake
#   kernel-daemon-routes     a reload with advertise-routes on node 1 puts the route,
#                            proto 77, into the other nodes' tables; clearing it removes it
#   kernel-daemon-teardown   `wgmesh down` removes the link and every proto-77 route
# Needs /usr/local/bin/wgmesh (an extra binary for run-in-vm.sh).
set -eu

IP=/usr/bin/ip
WG=/usr/bin/wg
PING=/usr/bin/ping
WGMESH=/usr/local/bin/wgmesh
NODES="1 2 3"
WAIT=120 # seconds for the mesh to form: TCG is slow, and three Argon2id (64 MiB) derivations
         # run at once in it; on a loaded 2-core host that alone took 46 s
W=/tmp/mesh

mkdir -p "$W"

dump_logs() {
    for n in $NODES; do
        echo "----- wgmesh log, node $n -----"
        cat "$W/n$n.log" 2>/dev/null || true
    done
    for n in $NODES; do
        echo "----- ns$n: links, addresses, routes, wg -----"
        $IP -n "ns$n" -d link show 2>/dev/null || true
        $IP -n "ns$n" addr show 2>/dev/null || true
        $IP -n "ns$n" route show table all 2>/dev/null | grep -v '^local\|^broadcast\|^multicast' || true
        $IP -n "ns$n" -6 route show 2>/dev/null || true
        $IP netns exec "ns$n" $WG show all 2>/dev/null || true
    done
    echo "----- end of logs -----"
}
fail() {
    echo "VM-FAIL: $*"
    dump_logs
    exit 1
}

# Every command that names a daemon takes the same location flags.
loc() { echo "--interface wgm$1 --state-dir $W/state$1 --runtime-dir $W/run$1"; }
# wgmesh COMMAND NODE [ARGS...]: the CLI inside node NODE's namespace.
wgm() {
    cmd=$1 n=$2
    shift 2
    # shellcheck disable=SC2046 # loc's words are meant to split
    $IP netns exec "ns$n" $WGMESH "$cmd" $(loc "$n") "$@"
}
# The first value of a JSON string field in pretty-printed JSON: the top-level
# mesh_ipv4/mesh_ipv6 come before "peers" whatever the key order (sorted or declared).
json_str() { grep -m1 "\"$1\": *\"" | sed 's/.*"'"$1"'": *"\([^"]*\)".*/\1/'; }

grep -q '^wireguard ' /proc/modules || fail "wireguard module not loaded"

# ----------------------------------------------------------------- the LAN
$IP link add br0 type bridge
# Snooping would drop the LAN beacons: nobody here runs an IGMP querier.
echo 0 >/sys/class/net/br0/bridge/multicast_snooping
$IP link set br0 up
for n in $NODES; do
    $IP netns add "ns$n"
    $IP -n "ns$n" link set lo up
    $IP link add "veth$n" type veth peer name eth0 netns "ns$n"
    $IP link set "veth$n" master br0 up
    $IP -n "ns$n" addr add "10.77.0.$n/24" dev eth0
    $IP -n "ns$n" link set eth0 up
done
for n in $NODES; do
    [ "$n" = 1 ] || $IP netns exec ns1 $PING -c 1 -W 5 "10.77.0.$n" >/dev/null \
        || fail "underlay: ns1 cannot reach 10.77.0.$n over the bridge"
done

# ----------------------------------------------------------------- daemons
(umask 077 && $WGMESH secret >"$W/secret") || fail "wgmesh secret"
for n in $NODES; do
    mkdir -m 700 "$W/state$n" "$W/run$n"
    # Nothing outside the VM: no DHT, no STUN; LAN multicast does the discovery.
    # shellcheck disable=SC2046
    $IP netns exec "ns$n" $WGMESH up --secret-file "$W/secret" $(loc "$n") --backend kernel \
        --dht-bootstrap none --stun none --log-level debug 2>"$W/n$n.log" &
    echo $! >"$W/n$n.pid"
done

# Until every node's status lists every other node as a peer (bounded).
others=0
for n in $NODES; do others=$((others + 1)); done
others=$((others - 1))
t0=$(cut -d. -f1 /proc/uptime)
while :; do
    ready=0
    for n in $NODES; do
        kill -0 "$(cat "$W/n$n.pid")" 2>/dev/null || fail "daemon $n exited early"
        st=$(wgm status "$n" --json 2>/dev/null) || continue
        # No handshakes yet: WireGuard shakes hands on the first packet (the pings below).
        peers=$(printf '%s\n' "$st" | grep -c '"public_key"' || true) # own key + one per peer
        [ "$peers" -ge $((others + 1)) ] && ready=$((ready + 1))
    done
    [ "$ready" -gt "$others" ] && break # every node
    [ $(($(cut -d. -f1 /proc/uptime) - t0)) -lt "$WAIT" ] || fail "no full mesh after ${WAIT}s"
    sleep 1
done
echo "mesh formed after $(($(cut -d. -f1 /proc/uptime) - t0))s"

# ----------------------------------------------------------------- checks
for n in $NODES; do
    st=$(wgm status "$n" --json) || fail "status on node $n"
    printf '%s\n' "$st" | grep -q '"backend": *"kernel"' || {
        printf '%s\n' "$st"
        fail "node $n: status does not say backend kernel"
    }
    $IP -n "ns$n" -d link show "wgm$n" | grep -q wireguard || fail "node $n: wgm$n is not a kernel wireguard link"
    printf '%s\n' "$st" | json_str mesh_ipv4 >"$W/v4.$n"
    printf '%s\n' "$st" | json_str mesh_ipv6 | sed 's,/.*,,' >"$W/v6.$n"
    if [ ! -s "$W/v4.$n" ] || [ ! -s "$W/v6.$n" ]; then
        printf '%s\n' "$st"
        fail "node $n: no mesh addresses in status"
    fi
    echo "node $n: $(cat "$W/v4.$n") $(cat "$W/v6.$n")"
done
wgm status 1 || true
for a in $NODES; do
    for b in $NODES; do
        [ "$a" = "$b" ] && continue
        v4=$(cat "$W/v4.$b") v6=$(cat "$W/v6.$b")
        $IP netns exec "ns$a" $PING -c 2 -i 0.2 -W 3 "$v4" >/dev/null || fail "ping $a -> $b over mesh IPv4 $v4"
        $IP netns exec "ns$a" $PING -6 -c 2 -i 0.2 -W 3 "$v6" >/dev/null || fail "ping $a -> $b over mesh IPv6 $v6"
    done
done
$IP netns exec ns1 $WG show wgm1
for n in $NODES; do
    hs=$($IP netns exec "ns$n" $WG show "wgm$n" latest-handshakes)
    [ "$(printf '%s\n' "$hs" | grep -c .)" -eq "$others" ] || fail "node $n: wg show lists not $others peers: $hs"
    printf '%s\n' "$hs" | while read -r key t; do
        [ "$t" -gt 0 ] || { echo "node $n: peer $key: no handshake"; exit 1; }
    done || fail "node $n: a peer without a latest handshake"
done
for n in $NODES; do
    hs=$(wgm status "$n" --json | grep -c '"last_handshake_unix": *[0-9]' || true)
    [ "$hs" -eq "$others" ] || fail "node $n: status shows $hs peers with a handshake, not $others"
done
echo "VM-PASS: kernel-daemon-mesh-ping"

# ----------------------------------------------------------------- routes
ROUTE=192.168.77.0/24
# until_route NODE present|absent: polls node NODE's proto-77 routes (bounded).
until_route() {
    i=0
    while :; do
        if $IP -n "ns$1" route show proto 77 | grep -q "^$ROUTE "; then
            [ "$2" = present ] && return 0
        else
            [ "$2" = absent ] && return 0
        fi
        i=$((i + 1))
        [ "$i" -le 60 ] || return 1
        sleep 0.5
    done
}
echo "advertise-routes=$ROUTE" >"$W/state1/wgm1.reload"
wgm reload 1 || fail "reload with advertise-routes=$ROUTE rejected"
for n in $NODES; do
    [ "$n" = 1 ] && continue
    until_route "$n" present || fail "node $n: no $ROUTE proto 77 after node 1 advertised it"
    $IP -n "ns$n" route show "$ROUTE"
    $IP -n "ns$n" route show "$ROUTE" | grep "dev wgm$n" | grep -q "proto 77" || fail "node $n: $ROUTE is not on wgm$n with proto 77"
done
# The advertiser itself routes nothing of its own over the mesh.
$IP -n ns1 route show proto 77 | grep -q "^$ROUTE " && fail "node 1 routes its own $ROUTE"
echo "advertise-routes=" >"$W/state1/wgm1.reload"
wgm reload 1 || fail "reload clearing advertise-routes rejected"
for n in $NODES; do
    [ "$n" = 1 ] && continue
    until_route "$n" absent || fail "node $n: $ROUTE still there after node 1 cleared it"
done
# A bad reload file is rejected and changes nothing.
echo "advertise-routes=192.168.77.1/24" >"$W/state1/wgm1.reload"
wgm reload 1 && fail "reload with host bits set was accepted"
echo "VM-PASS: kernel-daemon-routes"

# ----------------------------------------------------------------- teardown
# Advertise again so that teardown has a route to remove on the other nodes.
echo "advertise-routes=$ROUTE" >"$W/state1/wgm1.reload"
wgm reload 1 || fail "second reload rejected"
until_route 2 present || fail "node 2: no $ROUTE after the second reload"
for n in $NODES; do
    wgm down "$n" || fail "wgmesh down on node $n"
    pid=$(cat "$W/n$n.pid")
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le 20 ] || fail "daemon $n still running after wgmesh down"
        sleep 0.5
    done
    rc=0
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "daemon $n exited with status $rc"
    $IP -n "ns$n" link show "wgm$n" >/dev/null 2>&1 && fail "node $n: wgm$n still exists after down"
    left=$($IP -n "ns$n" route show proto 77; $IP -n "ns$n" -6 route show proto 77)
    [ -z "$left" ] || fail "node $n: proto 77 routes left after down: $left"
done
echo "VM-PASS: kernel-daemon-teardown"

# The logs of a passing run, for timings and surprises (errors/warnings only).
for n in $NODES; do
    grep -i 'warn\|error' "$W/n$n.log" | sed "s/^/node $n: /" || true
done
