#!/bin/sh
# Runs INSIDE the VM (see run-in-vm.sh): two network namespaces joined by a veth
# pair, a kernel WireGuard interface in each, a ping across the tunnel.
#
# Busybox sh runs its own applets before $PATH, so the real iproute2 and iputils
# tools are called by full path (/usr/bin/ip, /usr/bin/ping); `ip netns exec`
# itself execs by $PATH, where /usr/bin holds the real tools.
set -eu

IP=/usr/bin/ip
WG=/usr/bin/wg
PING=/usr/bin/ping

fail() { echo "VM-FAIL: $*"; exit 1; }

# Kernel WireGuard, not a userspace fallback: the module must be loaded.
grep -q '^wireguard ' /proc/modules || fail "wireguard module not loaded"

for ns in a b; do $IP netns add "smoke-$ns"; done
$IP link add veth-a netns smoke-a type veth peer name veth-b netns smoke-b
$IP -n smoke-a addr add 10.99.0.1/24 dev veth-a
$IP -n smoke-b addr add 10.99.0.2/24 dev veth-b

umask 077
mkdir -p /tmp/smoke
for ns in a b; do
    $WG genkey >"/tmp/smoke/$ns.key"
    $WG pubkey <"/tmp/smoke/$ns.key" >"/tmp/smoke/$ns.pub"
done

# setup NS PEER UNDERLAY_ADDR WG_ADDR PEER_UNDERLAY PEER_WG PORT PEER_PORT
setup() {
    ns=smoke-$1
    $IP -n "$ns" link set lo up
    $IP -n "$ns" link set "veth-$1" up
    $IP -n "$ns" link add wg0 type wireguard
    # Keys are read from files: never on a command line.
    $IP netns exec "$ns" $WG set wg0 listen-port "$6" private-key "/tmp/smoke/$1.key" \
        peer "$(cat "/tmp/smoke/$2.pub")" endpoint "$4:$7" allowed-ips "$5/32"
    $IP -n "$ns" addr add "$3/24" dev wg0
    $IP -n "$ns" link set wg0 up
}
setup a b 10.200.0.1 10.99.0.2 10.200.0.2 51820 51821
setup b a 10.200.0.2 10.99.0.1 10.200.0.1 51821 51820

$IP -n smoke-a -d link show wg0 | grep -q wireguard || fail "wg0 is not a kernel wireguard link"
echo "VM-PASS: kernel-wireguard-link"

$IP netns exec smoke-a $PING -c 3 -W 2 10.200.0.2 || fail "ping across the tunnel"
echo "VM-PASS: kernel-wireguard-ping"

$IP netns exec smoke-a $WG show wg0
hs=$($IP netns exec smoke-a $WG show wg0 latest-handshakes | awk '{ print $2 }')
[ -n "$hs" ] && [ "$hs" -gt 0 ] || fail "no handshake recorded (latest-handshakes: '$hs')"
rx=$($IP netns exec smoke-b $WG show wg0 transfer | awk '{ print $2 }')
[ "$rx" -gt 0 ] || fail "peer b received nothing"
echo "VM-PASS: kernel-wireguard-handshake"
