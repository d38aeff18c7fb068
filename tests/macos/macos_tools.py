#!/usr/bin/env python3
"""macOS's `ifconfig`, `route` and `netstat`, as far as wgmesh's macOS backend runs them, played
on Linux with iproute2, for `tests/macos_lab.rs`: a daemon built with the macOS platform module
(`--cfg wgmesh_check_macos`) drives a real wireguard-go and a real kernel through these.

Usage: macos_tools.py LOG TOOL ARGS...  (each tool is a two-line wrapper that passes its log).

What they print follows macOS's formats (`ifconfig` blocks with `flags=` and hex netmasks,
`netstat -rn` tables with BSD's abbreviated destinations, `link#N` gateways and flag letters),
and `route` fails as macOS's does: a warning on stderr and exit status 0. Every call is
appended to LOG as one line, `TOOL ARGS...`, so the test can check what the daemon ran.
"""

import ipaddress
import json
import subprocess
import sys

IP = "/usr/bin/ip" if subprocess.run(["test", "-x", "/usr/bin/ip"]).returncode == 0 else "/sbin/ip"


def ip(*args):
    return subprocess.run([IP, *args], capture_output=True, text=True)


def ip_json(*args):
    out = ip("-j", *args)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


def fail(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)


# ---- ifconfig -----------------------------------------------------------------------------

def interface_block(link, addresses):
    name = link["ifname"]
    up = "UP" in link.get("flags", [])
    flags = 0x8051 if up else 0x8050
    names = ("UP," if up else "") + "POINTOPOINT,RUNNING,MULTICAST"
    lines = [f"{name}: flags={flags:x}<{names}> mtu {link.get('mtu', 1500)}"]
    for a in addresses:
        if a["family"] == "inet":
            mask = (0xFFFFFFFF << (32 - a["prefixlen"])) & 0xFFFFFFFF
            lines.append(f"\tinet {a['local']} --> {a['local']} netmask 0x{mask:08x}")
        elif a["family"] == "inet6":
            scope = f"%{name}" if a["local"].startswith("fe80") else ""
            lines.append(f"\tinet6 {a['local']}{scope} prefixlen {a['prefixlen']}")
    return "\n".join(lines)


def show(name=None):
    args = ["addr", "show"] + (["dev", name] if name else [])
    entries = ip_json(*args)
    if name and not entries:
        fail(f"ifconfig: interface {name} does not exist")
    for entry in entries:
        print(interface_block(entry, entry.get("addr_info", [])))


def prefix_of(name, address):
    for entry in ip_json("addr", "show", "dev", name):
        for a in entry.get("addr_info", []):
            if a["local"] == address:
                return a["prefixlen"]
    fail(f"ifconfig: ioctl (SIOCDIFADDR): Can't assign requested address")


def ifconfig(args):
    if args == ["-a"]:
        return show()
    if len(args) == 1:
        return show(args[0])
    name, rest = args[0], args[1:]
    if rest[0] in ("inet", "inet6"):
        family = "-4" if rest[0] == "inet" else "-6"
        address = rest[1]
        if rest[-1] == "-alias":
            out = ip(family, "addr", "del", f"{address}/{prefix_of(name, address)}", "dev", name)
        elif rest[-1] == "alias" and family == "-4":
            # `inet A/16 A alias` on a point-to-point utun: xnu makes a host route to the
            # destination only (`in_ifinit` sets RTF_HOST for IFF_POINTOPOINT), no /16.
            out = ip(family, "addr", "add", address, "dev", name, "noprefixroute")
        elif rest[-1] == "alias":
            out = ip(family, "addr", "add", address, "dev", name)
        else:
            fail(f"macos_tools: unsupported ifconfig {' '.join(args)}", 2)
    elif rest[0] == "mtu":
        out = ip("link", "set", "dev", name, "mtu", rest[1])
    elif rest == ["up"]:
        out = ip("link", "set", "dev", name, "up")
    else:
        fail(f"macos_tools: unsupported ifconfig {' '.join(args)}", 2)
    if out.returncode != 0:
        fail(f"ifconfig: {out.stderr.strip()}")


# ---- route --------------------------------------------------------------------------------

def route_failed(reason):
    """What macOS route(8) does when the kernel refuses: `warn("writing to routing socket")` on
    stderr (its report line goes to stdout, which -q silences), and exit status 0 all the same."""
    print(f"route: writing to routing socket: {reason}", file=sys.stderr)
    sys.exit(0)


def route(args):
    # route -q -n add|delete -inet|-inet6 NET -interface UTUN
    words = [a for a in args if a not in ("-q", "-n")]
    if len(words) != 5 or words[3] != "-interface":
        fail(f"macos_tools: unsupported route {' '.join(args)}", 2)
    verb, family, net, _, name = words
    family = "-4" if family == "-inet" else "-6"
    if verb == "add":
        out = ip(family, "route", "add", net, "dev", name)
        if out.returncode != 0:
            route_failed("File exists" if "File exists" in out.stderr else out.stderr.strip())
    elif verb == "delete":
        out = ip(family, "route", "del", net, "dev", name)
        if out.returncode != 0:
            route_failed("No such process")
    else:
        fail(f"macos_tools: unsupported route {' '.join(args)}", 2)


# ---- netstat ------------------------------------------------------------------------------

def bsd_destination(dst, family):
    """How BSD netstat names a destination: `default`, a host without a prefix, a network with
    its trailing zero octets dropped (`10.1/16`)."""
    if dst == "default":
        return "default"
    net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/{32 if family == 4 else 128}", strict=False)
    host = net.prefixlen == net.max_prefixlen
    if family == 6:
        return str(net.network_address) if host else f"{net.network_address}/{net.prefixlen}"
    octets = str(net.network_address).split(".")
    if host:
        return ".".join(octets)
    while len(octets) > 1 and octets[-1] == "0":
        octets.pop()
    return f"{'.'.join(octets)}/{net.prefixlen}"


def netstat(args):
    if args[:2] != ["-rn", "-f"] or args[2] not in ("inet", "inet6"):
        fail(f"macos_tools: unsupported netstat {' '.join(args)}", 2)
    family = 4 if args[2] == "inet" else 6
    index = {link["ifname"]: link["ifindex"] for link in ip_json("link", "show")}
    title = "Internet:" if family == 4 else "Internet6:"
    print("Routing tables\n")
    print(title)
    print(f"{'Destination':<40}{'Gateway':<40}{'Flags':<20}{'Netif':>6} Expire")
    for r in ip_json(f"-{family}", "route", "show", "table", "main"):
        if r.get("type", "unicast") != "unicast":
            continue
        dev = r.get("dev", "")
        host = "/" not in r["dst"] and r["dst"] != "default"
        if "gateway" in r:
            gateway, flags = r["gateway"], "UGSc"
        elif r.get("protocol") == "kernel":
            gateway, flags = f"link#{index.get(dev, 0)}", "UCS"
        else:
            # `route add -interface`: the interface's own link address, printed as its name.
            gateway, flags = dev, "USc"
        if host:
            flags += "H"
        print(f"{bsd_destination(r['dst'], family):<40}{gateway:<40}{flags:<20}{dev:>6}")


def main():
    log, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(log, "a") as f:
        f.write(" ".join([tool, *args]) + "\n")
    {"ifconfig": ifconfig, "route": route, "netstat": netstat}[tool](args)


if __name__ == "__main__":
    main()
