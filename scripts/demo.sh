#!/usr/bin/env bash
# The main job: build wgmesh, start three daemons in network namespaces on one bridge with
# nothing but a shared secret, print the mesh and an all-pairs ping matrix, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
    echo "scripts/demo.sh: run as root (it creates network namespaces)" >&2
    exit 2
fi
./scripts/prereqs.sh
cargo build --release --quiet
bin=$PWD/target/release/wgmesh
nodes=${WGMESH_DEMO_NODES:-3}
tag="wgd$$"
work=$(mktemp -d)
bridge="${tag}br"

cleanup() {
    for i in $(seq 1 "$nodes"); do
        ip netns exec "${tag}n$i" "$bin" down --interface "${tag}w$i" \
            --state-dir "$work/n$i/state" --runtime-dir "$work/n$i/run" >/dev/null 2>&1 || true
        ip netns del "${tag}n$i" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip link add "$bridge" type bridge
echo 0 > "/sys/class/net/$bridge/bridge/multicast_snooping"
ip link set "$bridge" up
"$bin" secret > "$work/secret"
chmod 600 "$work/secret"
for i in $(seq 1 "$nodes"); do
    ns="${tag}n$i"
    ip netns add "$ns"
    ip link add "${tag}v$i" type veth peer name eth0 netns "$ns"
    ip link set "${tag}v$i" master "$bridge" up
    ip -n "$ns" addr add "192.168.150.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    mkdir -p "$work/n$i"
done

echo "starting $nodes daemons with one shared secret and no other configuration..."
start=$(date +%s.%N)
for i in $(seq 1 "$nodes"); do
    # The namespaces share this host's name, so each node gets its own (--name).
    ip netns exec "${tag}n$i" "$bin" up --secret-file "$work/secret" --interface "${tag}w$i" \
        --name "node$i" --state-dir "$work/n$i/state" --runtime-dir "$work/n$i/run" \
        >"$work/n$i/log" 2>&1 &
done

status() { ip netns exec "${tag}n$1" "$bin" status --json --interface "${tag}w$1" \
    --state-dir "$work/n$1/state" --runtime-dir "$work/n$1/run" 2>/dev/null; }
field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\).*/\1/p"; }

for _ in $(seq 1 300); do
    complete=1
    for i in $(seq 1 "$nodes"); do
        peers=$(status "$i" | grep -c '"public_key"' || true)
        # The node's own key plus one line per peer.
        [[ $peers -eq $nodes ]] || complete=0
    done
    [[ $complete -eq 1 ]] && break
    sleep 0.1
done
if [[ $complete -ne 1 ]]; then
    echo "the mesh did not form; daemon logs:" >&2
    tail -n 20 "$work"/n*/log >&2
    exit 1
fi

declare -a v4 v6
printf '\n%-6s %-16s %-40s %-10s %s\n' NODE "MESH IPV4" "MESH IPV6" BACKEND "PUBLIC KEY"
for i in $(seq 1 "$nodes"); do
    s=$(status "$i")
    v4[i]=$(field mesh_ipv4 <<<"$s")
    v6[i]=$(field mesh_ipv6 <<<"$s")
    printf '%-6s %-16s %-40s %-10s %s\n' "node$i" "${v4[i]}" "${v6[i]}" "$(field backend <<<"$s")" "$(field public_key <<<"$s")"
done

failures=0
printf '\nping matrix over the mesh (IPv4 / IPv6):\n%-8s' ""
for j in $(seq 1 "$nodes"); do printf '%-10s' "node$j"; done
echo
for i in $(seq 1 "$nodes"); do
    printf '%-8s' "node$i"
    for j in $(seq 1 "$nodes"); do
        if [[ $i == "$j" ]]; then printf '%-10s' "-"; continue; fi
        a=fail; b=fail
        for _ in 1 2 3; do ip netns exec "${tag}n$i" ping -c1 -W1 "${v4[j]}" >/dev/null 2>&1 && { a=ok; break; }; done
        for _ in 1 2 3; do ip netns exec "${tag}n$i" ping -6 -c1 -W1 "${v6[j]}" >/dev/null 2>&1 && { b=ok; break; }; done
        [[ $a == ok && $b == ok ]] || failures=$((failures + 1))
        printf '%-10s' "$a/$b"
    done
    echo
done
elapsed=$(printf "%.1f" "$(echo "$(date +%s.%N) - $start" | bc)")

echo
echo "node1 sees:"
ip netns exec "${tag}n1" "$bin" peers --interface "${tag}w1" --state-dir "$work/n1/state" --runtime-dir "$work/n1/run"
echo
if [[ $failures -eq 0 ]]; then
    echo "RESULT: PASS - $nodes-node mesh formed from one secret; all pairs ping over IPv4 and IPv6 (${elapsed}s from start)"
else
    echo "RESULT: FAIL - $failures pairs could not ping" >&2
    exit 1
fi
