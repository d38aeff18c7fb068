//! Every tool invocation as a pure function returning a [`CommandLine`].
//!
//! The shapes follow wg-quick's darwin backend (wireguard-tools `src/wg-quick/darwin.bash`); each
//! builder names the function it mirrors. None of these commands carries a key: keys only ever
//! reach wireguard-go over its UAPI socket.

use crate::Utun;
use ipnet::IpNet;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;

/// The name that asks wireguard-go for "the next free utun".
pub const UTUN_REQUEST: &str = "utun";
/// The environment variable through which wireguard-go reports the utun it got.
pub const TUN_NAME_FILE_ENV: &str = "WG_TUN_NAME_FILE";

/// A program, its arguments and extra environment: what to spawn, without spawning it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

impl CommandLine {
    pub fn new(program: impl Into<OsString>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
        }
    }

    /// `program arg…` for logs and error messages; none of these commands carry secrets.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `WG_TUN_NAME_FILE=<name_file> wireguard-go -f utun` (darwin.bash `add_if`, which runs it
/// without `-f`: we keep it in the foreground so it is supervised like on Linux).
pub fn start_wireguard_go(wireguard_go: &Path, name_file: &Path) -> CommandLine {
    let mut command = CommandLine::new(wireguard_go.as_os_str(), &["-f", UTUN_REQUEST]);
    command
        .env
        .push((TUN_NAME_FILE_ENV.into(), name_file.as_os_str().to_owned()));
    command
}

/// `ifconfig utunN` (read by darwin.bash `set_mtu` for the current MTU; we also read the
/// addresses and the UP flag from it).
pub fn show_interface(utun: &Utun) -> CommandLine {
    CommandLine::new("ifconfig", &[utun.as_str()])
}

/// `ifconfig -a`: every interface, for the polling watcher.
pub fn show_all_interfaces() -> CommandLine {
    CommandLine::new("ifconfig", &["-a"])
}

/// darwin.bash `add_addr`: `ifconfig utunN inet A/16 A alias` (utun is point-to-point, so the
/// destination is the address itself and the prefix gives the mesh its connected route) and
/// `ifconfig utunN inet6 A/64 alias`.
pub fn add_address(utun: &Utun, address: IpNet) -> CommandLine {
    match address {
        IpNet::V4(net) => {
            let with_prefix = net.to_string();
            let address = net.addr().to_string();
            CommandLine::new(
                "ifconfig",
                &[utun.as_str(), "inet", &with_prefix, &address, "alias"],
            )
        }
        IpNet::V6(net) => {
            let with_prefix = net.to_string();
            CommandLine::new("ifconfig", &[utun.as_str(), "inet6", &with_prefix, "alias"])
        }
    }
}

/// `ifconfig utunN inet|inet6 A -alias`: a stale mesh address (wg-quick never removes one; we
/// do after a collision moved our IPv4).
pub fn remove_address(utun: &Utun, address: IpAddr) -> CommandLine {
    let family = if address.is_ipv4() { "inet" } else { "inet6" };
    let address = address.to_string();
    CommandLine::new("ifconfig", &[utun.as_str(), family, &address, "-alias"])
}

/// darwin.bash `set_mtu`: `ifconfig utunN mtu M`.
pub fn set_mtu(utun: &Utun, mtu: u32) -> CommandLine {
    let mtu = mtu.to_string();
    CommandLine::new("ifconfig", &[utun.as_str(), "mtu", &mtu])
}

/// darwin.bash `up_if`: `ifconfig utunN up`.
pub fn set_up(utun: &Utun) -> CommandLine {
    CommandLine::new("ifconfig", &[utun.as_str(), "up"])
}

/// darwin.bash `add_route`: `route -q -n add -inet NET -interface utunN` (`-inet6` for IPv6).
pub fn add_route(utun: &Utun, net: IpNet) -> CommandLine {
    route("add", utun, net)
}

/// `route -q -n delete -inet NET -interface utunN`. darwin.bash `del_routes` deletes by
/// destination alone; naming the interface keeps us off a same-prefix route through another.
pub fn delete_route(utun: &Utun, net: IpNet) -> CommandLine {
    route("delete", utun, net)
}

fn route(verb: &str, utun: &Utun, net: IpNet) -> CommandLine {
    let family = match net {
        IpNet::V4(_) => "-inet",
        IpNet::V6(_) => "-inet6",
    };
    let net = net.trunc().to_string();
    CommandLine::new(
        "route",
        &["-q", "-n", verb, family, &net, "-interface", utun.as_str()],
    )
}

/// `netstat -rn -f inet` (or `-f inet6`), as darwin.bash `del_routes` and `collect_gateways`
/// read the tables (they write `-nr`).
pub fn list_routes(ipv6: bool) -> CommandLine {
    CommandLine::new(
        "netstat",
        &["-rn", "-f", if ipv6 { "inet6" } else { "inet" }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utun() -> Utun {
        Utun::new("utun7").unwrap()
    }

    #[test]
    fn starts_wireguard_go_with_a_name_file() {
        let command = start_wireguard_go(
            Path::new("/opt/homebrew/bin/wireguard-go"),
            Path::new("/var/run/wireguard/wg0.name"),
        );
        assert_eq!(command.display(), "/opt/homebrew/bin/wireguard-go -f utun");
        assert_eq!(
            command.env,
            [(
                OsString::from("WG_TUN_NAME_FILE"),
                OsString::from("/var/run/wireguard/wg0.name")
            )]
        );
    }

    #[test]
    fn interface_commands_have_wg_quicks_shapes() {
        let lines: Vec<String> = [
            add_address(&utun(), "10.42.3.4/16".parse().unwrap()),
            add_address(&utun(), "fd42::3:4/64".parse().unwrap()),
            remove_address(&utun(), "10.42.9.9".parse().unwrap()),
            set_mtu(&utun(), 1420),
            set_up(&utun()),
            add_route(&utun(), "192.168.50.7/24".parse().unwrap()),
            delete_route(&utun(), "fd99::1/64".parse().unwrap()),
            list_routes(true),
        ]
        .iter()
        .map(CommandLine::display)
        .collect();
        assert_eq!(
            lines,
            [
                "ifconfig utun7 inet 10.42.3.4/16 10.42.3.4 alias",
                "ifconfig utun7 inet6 fd42::3:4/64 alias",
                "ifconfig utun7 inet 10.42.9.9 -alias",
                "ifconfig utun7 mtu 1420",
                "ifconfig utun7 up",
                "route -q -n add -inet 192.168.50.0/24 -interface utun7",
                "route -q -n delete -inet6 fd99::/64 -interface utun7",
                "netstat -rn -f inet6",
            ]
        );
    }
}
