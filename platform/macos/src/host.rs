//! [`MacosHost`]: the mesh interface's addresses, MTU and up state through `ifconfig`, the host's
//! connected networks and default gateways from `netstat -rn`, and link/address events.

use crate::commands::{self, CommandLine};
use crate::ifconfig::{InterfaceStatus, parse_ifconfig};
use crate::route_control::{EXISTS, run_route};
use crate::routes::{parse_connected_networks, parse_default_gateways, parse_netstat_routes};
use crate::{MacosError, RUN_DIR, Runner, Utun, read_utun};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use wgmesh_device::{Host, HostAddress, HostError, InterfaceConfig};

/// Looks an interface index up by name (`if_nametoindex(3)`).
pub type IndexLookup = fn(&str) -> Result<u32, nix::errno::Errno>;

/// Lists the host's interface addresses as (interface, address), as `getifaddrs(3)` does. The
/// daemon passes its one `getifaddrs` reader (`src/platform/posix.rs`, shared with Linux); tests
/// pass a fixed list.
pub type AddressLister = fn() -> Vec<(String, IpAddr)>;

fn if_nametoindex(name: &str) -> Result<u32, nix::errno::Errno> {
    nix::net::if_::if_nametoindex(name)
}

/// The commands that make `utun` look like `config` from what `ifconfig` showed (`current`), in
/// darwin.bash `cmd_up` order: addresses (`add_addr`), then `set_mtu`, then `up_if`. Only what
/// differs is changed: an address already present is not added again, an MTU already right is not
/// set (as `set_mtu` compares it first). Before those, addresses inside `config.managed` that are
/// no longer wanted are removed (wg-quick never re-addresses a live interface; we do after a
/// collision moved our IPv4).
pub fn plan_interface(
    utun: &Utun,
    current: &InterfaceStatus,
    config: &InterfaceConfig,
) -> Vec<CommandLine> {
    let wanted: Vec<IpAddr> = config.addresses.iter().map(IpNet::addr).collect();
    let stale = current.addresses.iter().filter(|address| {
        !wanted.contains(&address.addr())
            && config.managed.iter().any(|m| m.contains(&address.addr()))
    });
    let missing = config
        .addresses
        .iter()
        .filter(|address| !current.addresses.contains(address));
    let mut plan: Vec<CommandLine> = stale
        .map(|address| commands::remove_address(utun, address.addr()))
        .chain(missing.map(|address| commands::add_address(utun, *address)))
        .collect();
    if current.mtu != Some(config.mtu) {
        plan.push(commands::set_mtu(utun, config.mtu));
    }
    if !current.up {
        plan.push(commands::set_up(utun));
    }
    plan
}

/// The `route add`s that give the mesh prefixes (`config.managed`: the /16 and the /64 our
/// addresses sit in) a route through `utun`, for those `route_tables` (`netstat -rn` output)
/// does not already route through it. On Linux the address's prefix makes that route; on a
/// point-to-point utun xnu makes only a host route to the destination (`in_ifinit` sets
/// `RTF_HOST` for `IFF_POINTOPOINT`), so traffic to the other members would find no route.
/// wg-quick gets the same effect from `add_route` per AllowedIPs.
pub fn plan_prefix_routes(
    utun: &Utun,
    route_tables: &str,
    config: &InterfaceConfig,
) -> Vec<CommandLine> {
    let routed = parse_netstat_routes(route_tables, utun.as_str());
    config
        .managed
        .iter()
        .map(IpNet::trunc)
        .filter(|prefix| !routed.contains(prefix))
        .map(|prefix| commands::add_route(utun, prefix))
        .collect()
}

/// The host around the mesh interface on macOS. The interface is named by its mesh name (`wg0`);
/// each call finds the utun through `<run_dir>/<name>.name`, so a wireguard-go restarted on a new
/// utun is followed without telling the host.
#[derive(Debug, Clone)]
pub struct MacosHost {
    interface: String,
    run_dir: PathBuf,
    runner: Runner,
    index_of: IndexLookup,
    list_addresses: AddressLister,
    poll_interval: Duration,
}

impl MacosHost {
    pub fn new(interface: &str, runner: Runner, list_addresses: AddressLister) -> Self {
        Self {
            interface: interface.to_owned(),
            run_dir: PathBuf::from(RUN_DIR),
            runner,
            index_of: if_nametoindex,
            list_addresses,
            poll_interval: Duration::from_secs(5),
        }
    }

    /// Where the name file is (tests use a temporary directory).
    #[must_use]
    pub fn with_run_dir(mut self, run_dir: impl Into<PathBuf>) -> Self {
        self.run_dir = run_dir.into();
        self
    }

    /// How interface indices are found (tests have no utun to ask the kernel about).
    #[must_use]
    pub fn with_index_lookup(mut self, index_of: IndexLookup) -> Self {
        self.index_of = index_of;
        self
    }

    /// How often the polling watcher (off macOS, or when the PF_ROUTE socket fails) looks.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    pub fn utun(&self) -> Result<Utun, MacosError> {
        read_utun(&self.run_dir, &self.interface)
    }

    fn error(&self, operation: &'static str, error: &MacosError) -> HostError {
        HostError {
            interface: self.interface.clone(),
            operation,
            message: error.to_string(),
        }
    }

    /// Both route tables' text (IPv4 then IPv6); a table that cannot be read counts as empty,
    /// logged.
    fn route_tables(&self) -> String {
        let mut text = String::new();
        for ipv6 in [false, true] {
            match self.runner.run(&commands::list_routes(ipv6)) {
                Ok(table) => text.push_str(&table),
                Err(error) => tracing::warn!(%error, "cannot read the route table"),
            }
            text.push('\n');
        }
        text
    }

    /// Our utun's name for excluding it, or an impossible one when it is not known yet.
    fn own_netif(&self) -> String {
        self.utun()
            .map_or_else(|_| String::new(), |u| u.as_str().to_owned())
    }
}

impl Host for MacosHost {
    fn configure_interface(&mut self, config: &InterfaceConfig) -> Result<u32, HostError> {
        let utun = self.utun().map_err(|e| self.error("find utun", &e))?;
        let shown = self
            .runner
            .run(&commands::show_interface(&utun))
            .map_err(|e| self.error("read interface", &e))?;
        let current = parse_ifconfig(&shown, utun.as_str());
        for command in plan_interface(&utun, &current, config) {
            tracing::info!(interface = %self.interface, %utun, command = %command.display(), "configuring interface");
            self.runner
                .run(&command)
                .map_err(|e| self.error("configure interface", &e))?;
        }
        for command in plan_prefix_routes(&utun, &self.route_tables(), config) {
            run_route(&self.runner, &self.interface, &command, EXISTS)
                .map_err(|e| self.error("route the mesh prefixes", &e))?;
        }
        (self.index_of)(utun.as_str()).map_err(|errno| {
            self.error(
                "interface index",
                &MacosError::Sys {
                    interface: utun.as_str().to_owned(),
                    operation: "if_nametoindex",
                    errno,
                },
            )
        })
    }

    /// The listed addresses, leaving out our utun's (its mesh addresses are not underlay).
    fn addresses(&self) -> Vec<HostAddress> {
        HostAddress::underlay((self.list_addresses)(), &self.own_netif())
    }

    fn connected_networks(&self) -> Vec<IpNet> {
        parse_connected_networks(&self.route_tables(), &self.own_netif())
    }

    fn default_gateways(&self) -> Vec<IpAddr> {
        parse_default_gateways(&self.route_tables(), &self.own_netif())
    }

    fn watch_links_and_addresses(
        &self,
        on_change: Box<dyn FnMut() -> bool + Send>,
    ) -> Result<(), HostError> {
        #[cfg(target_os = "macos")]
        match crate::route_socket::open() {
            Ok(socket) => {
                return crate::route_socket::spawn_reader(socket, on_change).map_err(|e| {
                    self.error(
                        "watch link and address events",
                        &MacosError::Spawn {
                            command: "PF_ROUTE reader thread".to_owned(),
                            source: e,
                        },
                    )
                });
            }
            Err(error) => {
                tracing::warn!(%error, "no PF_ROUTE socket; polling ifconfig for link changes");
            }
        }
        let runner = self.runner.clone();
        let interval = self.poll_interval;
        std::thread::Builder::new()
            .name("wgmesh-ifconfig-poll".to_owned())
            .spawn(move || poll_links(&runner, interval, on_change))
            .map(drop)
            .map_err(|e| {
                self.error(
                    "watch link and address events",
                    &MacosError::Spawn {
                        command: "ifconfig poller thread".to_owned(),
                        source: e,
                    },
                )
            })
    }
}

/// Calls `on_change` whenever `ifconfig -a` prints something new, until it returns `false`.
/// A failing `ifconfig` is logged once per run of failures.
fn poll_links(runner: &Runner, interval: Duration, mut on_change: Box<dyn FnMut() -> bool + Send>) {
    let mut last: Option<String> = None;
    let mut failing = false;
    loop {
        match runner.run(&commands::show_all_interfaces()) {
            Ok(now) => {
                failing = false;
                let changed = last.as_ref().is_some_and(|before| *before != now);
                last = Some(now);
                if changed && !on_change() {
                    return;
                }
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot poll interfaces");
            }
            Err(_) => {}
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(addresses: &[&str]) -> InterfaceConfig {
        InterfaceConfig {
            interface: "wg0".to_owned(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            managed: vec![
                "10.42.0.0/16".parse().unwrap(),
                "fd42::/64".parse().unwrap(),
            ],
            mtu: 1420,
        }
    }

    fn lines(plan: &[CommandLine]) -> Vec<String> {
        plan.iter().map(CommandLine::display).collect()
    }

    #[test]
    fn the_mesh_prefixes_get_routes_through_the_utun_unless_it_has_them() {
        let utun = Utun::new("utun7").unwrap();
        let link = config(&["10.42.3.4/16", "fd42::3:4/64"]);
        // What xnu leaves after `ifconfig utun7 inet 10.42.3.4/16 10.42.3.4 alias` on a
        // point-to-point utun: a host route only; and a 10.42/16 through another interface.
        let host_route_only = "Routing tables\n\nInternet:\n\
            Destination        Gateway            Flags               Netif Expire\n\
            10.42.3.4          10.42.3.4          UH                  utun7\n\
            10.42/16           link#6             UCS                   en0\n\n\
            Internet6:\n\
            Destination        Gateway            Flags               Netif Expire\n\
            fd42::/64          fe80::1%utun7      UGcI                utun7\n";
        assert_eq!(
            lines(&plan_prefix_routes(&utun, host_route_only, &link)),
            ["route -q -n add -inet 10.42.0.0/16 -interface utun7"]
        );
        let routed = "Routing tables\n\nInternet:\n\
            Destination        Gateway            Flags               Netif Expire\n\
            10.42/16           utun7              USc                 utun7\n\
            fd42::/64          utun7              USc                 utun7\n";
        assert!(plan_prefix_routes(&utun, routed, &link).is_empty());
    }

    #[test]
    fn a_fresh_utun_gets_addresses_then_mtu_then_up() {
        let utun = Utun::new("utun7").unwrap();
        let fresh = InterfaceStatus {
            up: false,
            mtu: Some(1500),
            addresses: vec![],
        };
        assert_eq!(
            lines(&plan_interface(
                &utun,
                &fresh,
                &config(&["10.42.3.4/16", "fd42::3:4/64"])
            )),
            [
                "ifconfig utun7 inet 10.42.3.4/16 10.42.3.4 alias",
                "ifconfig utun7 inet6 fd42::3:4/64 alias",
                "ifconfig utun7 mtu 1420",
                "ifconfig utun7 up",
            ]
        );
    }

    #[test]
    fn a_configured_utun_needs_nothing_and_a_moved_address_replaces_the_stale_one() {
        let utun = Utun::new("utun7").unwrap();
        let configured = InterfaceStatus {
            up: true,
            mtu: Some(1420),
            addresses: ["10.42.3.4/16", "fe80::1/64", "fd42::3:4/64", "192.0.2.1/32"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
        };
        let same = config(&["10.42.3.4/16", "fd42::3:4/64"]);
        assert!(plan_interface(&utun, &configured, &same).is_empty());
        let moved = config(&["10.42.9.9/16", "fd42::3:4/64"]);
        assert_eq!(
            lines(&plan_interface(&utun, &configured, &moved)),
            [
                "ifconfig utun7 inet 10.42.3.4 -alias",
                "ifconfig utun7 inet 10.42.9.9/16 10.42.9.9 alias",
            ]
        );
    }
}
