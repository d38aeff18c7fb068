//! macOS interface plumbing for the userspace backend, as command lines.
//!
//! macOS has no netlink: wg-quick's darwin backend drives `wireguard-go`, `ifconfig` and `route`,
//! and so do we. Every command is built by a pure function returning a [`CommandLine`], so the
//! sequences are unit-tested on Linux; only [`run`] is `cfg(target_os = "macos")`.
//!
//! A utun interface cannot be named: wireguard-go is started with the name `utun`, the kernel
//! picks the next free `utunN`, and wireguard-go writes the real name into the file named by
//! `WG_TUN_NAME_FILE` (tun_darwin.go does this only when the requested name is exactly `utun`;
//! wg-quick uses `/var/run/wireguard/<name>.name`). Its UAPI socket is then
//! `/var/run/wireguard/utunN.sock`.

mod routes;

pub use routes::parse_netstat_routes;

use ipnet::IpNet;
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
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
    fn new(program: impl Into<OsString>, args: &[&str]) -> Self {
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

#[derive(Debug, thiserror::Error)]
pub enum MacosError {
    #[error("{0:?} is not a utun interface name")]
    BadInterface(String),
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
}

/// A utun name as the kernel hands them out: `utun` and digits. Checked before it goes into an
/// argument list, so nothing read from a file can turn into an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utun(String);

impl Utun {
    pub fn new(name: &str) -> Result<Self, MacosError> {
        let digits = name.strip_prefix("utun").unwrap_or_default();
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MacosError::BadInterface(name.chars().take(32).collect()));
        }
        Ok(Self(name.to_owned()))
    }

    /// Reads wireguard-go's name file (`utunN` and a newline).
    pub fn from_name_file(contents: &str) -> Result<Self, MacosError> {
        Self::new(contents.trim())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `WG_TUN_NAME_FILE=<name_file> wireguard-go -f utun`: foreground, so it can be supervised
/// like on Linux. Keys are never on this command line; they go over the UAPI socket.
pub fn start_wireguard_go(wireguard_go: &Path, name_file: &Path) -> CommandLine {
    let mut command = CommandLine::new(wireguard_go.as_os_str(), &["-f", UTUN_REQUEST]);
    command
        .env
        .push((TUN_NAME_FILE_ENV.into(), name_file.as_os_str().to_owned()));
    command
}

/// `ifconfig utunN inet A/16 A alias`: utun is point-to-point, so the destination is the
/// address itself, and the prefix gives the connected route for the mesh (as wg-quick does).
pub fn add_ipv4_address(utun: &Utun, address: Ipv4Addr, prefix_len: u8) -> CommandLine {
    let with_prefix = format!("{address}/{prefix_len}");
    let address = address.to_string();
    CommandLine::new(
        "ifconfig",
        &[utun.as_str(), "inet", &with_prefix, &address, "alias"],
    )
}

/// `ifconfig utunN inet6 ADDR prefixlen 64 alias`.
pub fn add_ipv6_address(utun: &Utun, address: Ipv6Addr, prefix_len: u8) -> CommandLine {
    let address = address.to_string();
    let prefix_len = prefix_len.to_string();
    CommandLine::new(
        "ifconfig",
        &[
            utun.as_str(),
            "inet6",
            &address,
            "prefixlen",
            &prefix_len,
            "alias",
        ],
    )
}

/// `ifconfig utunN mtu M up`.
pub fn set_mtu_and_up(utun: &Utun, mtu: u32) -> CommandLine {
    let mtu = mtu.to_string();
    CommandLine::new("ifconfig", &[utun.as_str(), "mtu", &mtu, "up"])
}

/// `route -q -n add -inet NET -interface utunN` (`-inet6` for IPv6).
pub fn add_route(utun: &Utun, net: IpNet) -> CommandLine {
    route("add", utun, net)
}

/// `route -q -n delete -inet NET -interface utunN`. Routes through a utun also vanish with it.
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

/// The mesh addresses and link settings of a fresh utun, in order: addresses, then MTU and up,
/// then routes (a route via a down interface is refused).
pub fn bring_up(
    utun: &Utun,
    ipv4: (Ipv4Addr, u8),
    ipv6: (Ipv6Addr, u8),
    mtu: u32,
    routes: &[IpNet],
) -> Vec<CommandLine> {
    let mut commands = vec![
        add_ipv4_address(utun, ipv4.0, ipv4.1),
        add_ipv6_address(utun, ipv6.0, ipv6.1),
        set_mtu_and_up(utun, mtu),
    ];
    commands.extend(routes.iter().map(|net| add_route(utun, *net)));
    commands
}

/// `netstat -rn -f inet` (and `-f inet6`), to find routes through our utun.
pub fn list_routes(ipv6: bool) -> CommandLine {
    CommandLine::new(
        "netstat",
        &["-rn", "-f", if ipv6 { "inet6" } else { "inet" }],
    )
}

/// Runs a command and waits for it; a non-zero exit becomes an error with its stderr.
#[cfg(target_os = "macos")]
pub fn run(command: &CommandLine) -> Result<String, MacosError> {
    let output = std::process::Command::new(&command.program)
        .args(&command.args)
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| MacosError::Command {
            command: command.display(),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(MacosError::Command {
            command: command.display(),
            reason: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &CommandLine) -> Vec<&str> {
        std::iter::once(&command.program)
            .chain(&command.args)
            .map(|a| a.to_str().unwrap())
            .collect()
    }

    fn utun() -> Utun {
        Utun::new("utun7").unwrap()
    }

    #[test]
    fn utun_names_are_checked() {
        assert!(Utun::new("utun0").is_ok());
        assert_eq!(Utun::from_name_file("utun12\n").unwrap().as_str(), "utun12");
        for bad in [
            "utun",
            "wg0",
            "-utun1",
            "utun1 ",
            "utun1;rm",
            "utun123456",
            "",
        ] {
            assert!(Utun::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn starts_wireguard_go_with_a_name_file() {
        let command = start_wireguard_go(
            Path::new("/opt/homebrew/bin/wireguard-go"),
            Path::new("/var/run/wireguard/wg0.name"),
        );
        assert_eq!(
            args(&command),
            ["/opt/homebrew/bin/wireguard-go", "-f", "utun"]
        );
        assert_eq!(
            command.env,
            [(
                OsString::from("WG_TUN_NAME_FILE"),
                OsString::from("/var/run/wireguard/wg0.name")
            )]
        );
    }

    #[test]
    fn bring_up_sequence() {
        let commands = bring_up(
            &utun(),
            ("10.42.3.4".parse().unwrap(), 16),
            ("fd42::3:4".parse().unwrap(), 64),
            1420,
            &[
                "192.168.50.0/24".parse().unwrap(),
                "fd99::1/64".parse().unwrap(),
            ],
        );
        let lines: Vec<String> = commands.iter().map(CommandLine::display).collect();
        assert_eq!(
            lines,
            [
                "ifconfig utun7 inet 10.42.3.4/16 10.42.3.4 alias",
                "ifconfig utun7 inet6 fd42::3:4 prefixlen 64 alias",
                "ifconfig utun7 mtu 1420 up",
                "route -q -n add -inet 192.168.50.0/24 -interface utun7",
                "route -q -n add -inet6 fd99::/64 -interface utun7",
            ]
        );
    }

    #[test]
    fn delete_route_mirrors_add() {
        let net: IpNet = "172.16.0.0/12".parse().unwrap();
        assert_eq!(
            args(&delete_route(&utun(), net)),
            [
                "route",
                "-q",
                "-n",
                "delete",
                "-inet",
                "172.16.0.0/12",
                "-interface",
                "utun7"
            ]
        );
        assert_eq!(
            list_routes(false).display(),
            "netstat -rn -f inet".to_owned()
        );
    }
}
