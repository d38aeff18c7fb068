//! The daemon's configuration: what `wgmesh up` resolved from flags, environment and the reload
//! file. The daemon depends on this, not on the CLI's clap types, so it can be started (and
//! tested) without a command line.

use super::discovery::DhtMethod;
use crate::cli::{BackendChoice, DhtChoice, UpArgs, UpOptions};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use wgmesh_mesh::RoutePolicy;
use wgmesh_names::MemberName;

/// Which WireGuard implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendPreference {
    /// The kernel when it has WireGuard, else wireguard-go; an existing wireguard-go device for
    /// the interface is adopted whatever the kernel has.
    Auto,
    Kernel,
    Userspace,
}

/// The files a daemon owns, all derived from the interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPaths {
    pub state_dir: PathBuf,
    /// `<runtime-dir>/<iface>.sock`
    pub socket: PathBuf,
    /// `<runtime-dir>/<iface>.pid`
    pub pid: PathBuf,
    /// `<state-dir>/<iface>.reload`
    pub reload: PathBuf,
    /// `<runtime-dir>/<iface>.kept`: present while a kept interface outlives its daemon.
    pub kept: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub interface: String,
    pub paths: DaemonPaths,
    /// Preferred WireGuard listen port; if busy, the next free one.
    pub listen_port: u16,
    /// `None`: derived from the secret.
    pub control_port: Option<u16>,
    /// Routes this host advertises (the reload file's, else the flag's).
    pub advertised: Vec<IpNet>,
    /// Which advertised routes are accepted at start (the reload file's, else the flags').
    pub route_policy: RoutePolicy,
    /// The name announced (the reload file's, else the flag's, else the host name).
    pub name: Option<MemberName>,
    pub backend: BackendPreference,
    pub wireguard_go: PathBuf,
    pub mtu: u32,
    /// Static seeds, `HOST:PORT`.
    pub static_peers: Vec<String>,
    pub lan_discovery: bool,
    /// The DHT rendezvous, `None` when the DHT is off (`--dht none`, `--dht-bootstrap none`).
    pub dht: Option<DhtMethod>,
    /// Unparsed: `HOST:PORT,...`, or `None` for the defaults.
    pub dht_bootstrap: Option<String>,
    /// Unparsed: `HOST:PORT,...`, `none`, or `None` for the defaults.
    pub stun: Option<String>,
    pub relay: bool,
    /// Which members may relay for us at start (the reload file's, else the flag's).
    pub relays: wgmesh_mesh::RelaySetting,
    pub keep_interface: bool,
    pub metrics_listen: Option<SocketAddr>,
    /// wireguard-go logs its handshakes too (`LOG_LEVEL=verbose`): the daemon started at the
    /// `debug` or `trace` level.
    pub wireguard_go_verbose: bool,
}

/// The DHT rendezvous `--dht` and `--dht-bootstrap` ask for: absent means `mainline`;
/// `--dht-bootstrap none` is a synonym for `--dht none`, and contradicts an explicit
/// `--dht mainline|bep44`.
pub fn dht_method(options: &UpOptions) -> Result<Option<DhtMethod>, String> {
    let bootstrap_off = options
        .dht_bootstrap
        .as_deref()
        .is_some_and(|spec| spec.trim() == "none");
    let bootstrap_listed = options.dht_bootstrap.is_some() && !bootstrap_off;
    match (options.dht, bootstrap_off) {
        (Some(DhtChoice::None), _) if bootstrap_listed => {
            Err("--dht-bootstrap lists DHT nodes, but --dht none turns the DHT off".to_owned())
        }
        (Some(DhtChoice::None), _) | (None, true) => Ok(None),
        (Some(choice @ (DhtChoice::Mainline | DhtChoice::Bep44)), true) => Err(format!(
            "--dht {} needs bootstrap nodes, but --dht-bootstrap none turns the DHT off",
            match choice {
                DhtChoice::Bep44 => "bep44",
                _ => "mainline",
            }
        )),
        (Some(DhtChoice::Bep44), false) => Ok(Some(DhtMethod::Bep44)),
        (Some(DhtChoice::Mainline) | None, false) => Ok(Some(DhtMethod::Mainline)),
    }
}

impl DaemonConfig {
    /// The daemon's configuration from `wgmesh up`'s flags, with the reloadable settings as
    /// startup resolved them (reload file over flags, DESIGN.md §6).
    pub fn from_up_args(
        args: &UpArgs,
        advertised: Vec<IpNet>,
        route_policy: RoutePolicy,
        name: Option<MemberName>,
    ) -> Self {
        let location = &args.location;
        let options = &args.options;
        Self {
            interface: location.interface.clone(),
            paths: DaemonPaths {
                state_dir: location.state_dir.clone(),
                socket: location.socket_path(),
                pid: location.pid_path(),
                reload: location.reload_path(),
                kept: location.kept_path(),
            },
            listen_port: options.listen_port,
            control_port: options.control_port,
            advertised,
            route_policy,
            name,
            backend: match options.backend {
                BackendChoice::Auto => BackendPreference::Auto,
                BackendChoice::Kernel => BackendPreference::Kernel,
                BackendChoice::Userspace => BackendPreference::Userspace,
            },
            wireguard_go: options.wireguard_go.clone(),
            mtu: options.mtu,
            static_peers: options.peer.clone(),
            lan_discovery: !options.no_lan,
            // `up` checked the combination first (`dht_method`).
            dht: dht_method(options).unwrap_or(None),
            dht_bootstrap: options.dht_bootstrap.clone(),
            stun: options.stun.clone(),
            relay: options.relay,
            relays: options.relays.clone(),
            keep_interface: options.keep_interface,
            metrics_listen: options.metrics_listen,
            wireguard_go_verbose: false,
        }
    }

    /// Where wireguard-go's output goes. One that outlives us (`--keep-interface`) must not
    /// write into our closed stderr.
    pub fn wireguard_go_log(&self) -> PathBuf {
        self.paths
            .state_dir
            .join(format!("{}.wireguard-go.log", self.interface))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn up_options(flags: &[&str]) -> UpOptions {
        let mut argv = vec!["wgmesh", "up"];
        argv.extend_from_slice(flags);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Up(args) = cli.command else {
            panic!("not up");
        };
        args.options
    }

    #[test]
    fn dht_flags_pick_the_rendezvous() {
        let method = |flags: &[&str]| dht_method(&up_options(flags));
        assert_eq!(method(&[]), Ok(Some(DhtMethod::Mainline)));
        assert_eq!(
            method(&["--dht", "mainline"]),
            Ok(Some(DhtMethod::Mainline))
        );
        assert_eq!(method(&["--dht", "bep44"]), Ok(Some(DhtMethod::Bep44)));
        assert_eq!(
            method(&["--dht", "bep44", "--dht-bootstrap", "192.0.2.1:6881"]),
            Ok(Some(DhtMethod::Bep44))
        );
        assert_eq!(method(&["--dht", "none"]), Ok(None));
        // `--dht-bootstrap none` stays a synonym for `--dht none`.
        assert_eq!(method(&["--dht-bootstrap", "none"]), Ok(None));
        assert_eq!(
            method(&["--dht", "none", "--dht-bootstrap", "none"]),
            Ok(None)
        );
        let err = method(&["--dht", "bep44", "--dht-bootstrap", "none"]).unwrap_err();
        assert!(
            err.contains("--dht bep44") && err.contains("--dht-bootstrap none"),
            "{err}"
        );
        let err = method(&["--dht", "none", "--dht-bootstrap", "192.0.2.1:6881"]).unwrap_err();
        assert!(err.contains("--dht none"), "{err}");
        assert!(crate::cli::Cli::try_parse_from(["wgmesh", "up", "--dht", "kademlia"]).is_err());
    }

    #[test]
    fn up_flags_become_the_daemon_config() {
        let cli = crate::cli::Cli::try_parse_from([
            "wgmesh",
            "up",
            "--interface",
            "wgt7",
            "--state-dir",
            "/s",
            "--runtime-dir",
            "/r",
            "--no-lan",
            "--peer",
            "192.0.2.1:51821,192.0.2.2:51821",
            "--backend",
            "userspace",
            "--mtu",
            "1300",
            "--relay",
        ])
        .unwrap();
        let crate::cli::Command::Up(args) = cli.command else {
            panic!("not up");
        };
        let routes = vec!["192.168.5.0/24".parse().unwrap()];
        let config =
            DaemonConfig::from_up_args(&args, routes.clone(), RoutePolicy::default(), None);
        assert_eq!(config.interface, "wgt7");
        assert_eq!(
            config.paths,
            DaemonPaths {
                state_dir: "/s".into(),
                socket: "/r/wgt7.sock".into(),
                pid: "/r/wgt7.pid".into(),
                reload: "/s/wgt7.reload".into(),
                kept: "/r/wgt7.kept".into(),
            }
        );
        assert_eq!(config.advertised, routes);
        assert!(!config.lan_discovery && config.relay && !config.keep_interface);
        assert_eq!(config.backend, BackendPreference::Userspace);
        assert_eq!(config.mtu, 1300);
        assert_eq!(config.static_peers.len(), 2);
        assert_eq!(config.listen_port, 51820);
        assert_eq!(
            config.wireguard_go_log(),
            PathBuf::from("/s/wgt7.wireguard-go.log")
        );
    }
}
