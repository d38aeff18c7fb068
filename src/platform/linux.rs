//! Linux: the kernel (rtnetlink, generic netlink) and wireguard-go backends, the link and its
//! addresses through rtnetlink, default gateways from `/proc`, and forced socket buffers.

use crate::daemon::config::BackendPreference;
use anyhow::{Context as _, anyhow, bail};
use ipnet::IpNet;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wgmesh_device::{Host, HostAddress, HostError, InterfaceConfig, WireguardBackend};
use wgmesh_linux::KernelBackend;
use wgmesh_linux::{InterfaceRoutes, Rtnl};
use wgmesh_uapi::{ChildOutput, UserspaceBackend, UserspaceConfig};

/// The host's [`Host`] implementation.
pub type OsHost = LinuxHost;
/// The host's [`wgmesh_device::RouteControl`] implementation: routes with wgmesh's protocol number.
pub type OsRoutes = InterfaceRoutes;

/// Default `--state-dir` and `--runtime-dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wgmesh";
pub const DEFAULT_RUNTIME_DIR: &str = "/run/wgmesh";
/// Default `install-service --unit-dir` and `--config-dir`.
pub const DEFAULT_SERVICE_DIR: &str = "/etc/systemd/system";
pub const DEFAULT_CONFIG_DIR: &str = "/etc/wgmesh";
/// What runs the daemon as a service (`install-service`).
pub const SERVICE_MANAGER: super::ServiceManager = super::ServiceManager::Systemd;

/// The OS handles the daemon's interface setup shares: one rtnetlink socket.
#[derive(Debug)]
pub struct Platform {
    rtnl: Arc<Rtnl>,
}

impl Platform {
    pub fn open() -> anyhow::Result<Self> {
        Ok(Self {
            rtnl: Arc::new(Rtnl::new().context("cannot open rtnetlink")?),
        })
    }

    /// Picks the backend. `auto` prefers the kernel; an existing wireguard-go device for this
    /// interface (left by `--keep-interface`) is adopted through its socket whatever the
    /// kernel has.
    pub fn select_backend(
        &self,
        choice: BackendPreference,
        interface: &str,
        wireguard_go: &Path,
        child_output: ChildOutput,
        verbose: bool,
    ) -> anyhow::Result<Box<dyn WireguardBackend>> {
        select_backend(
            choice,
            interface,
            wireguard_go,
            child_output,
            verbose,
            &self.rtnl,
        )
    }

    pub fn host(&self, interface: &str) -> OsHost {
        LinuxHost::new(self.rtnl.clone(), interface)
    }

    /// The route control of the link `link` configured, whose index is `index` (from
    /// [`Host::configure_interface`]).
    pub fn routes(&self, link: &InterfaceConfig, index: u32) -> OsRoutes {
        InterfaceRoutes::new(self.rtnl.clone(), &link.interface, index)
    }
}

/// Sets a socket buffer past `net.core.rmem_max`/`wmem_max` (`SO_RCVBUFFORCE`, needs
/// `CAP_NET_ADMIN`); the caller falls back to the plain option.
pub fn force_buffer(
    socket: &socket2::Socket,
    buffer: super::Buffer,
    size: usize,
) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    match buffer {
        super::Buffer::Receive => setsockopt(socket, sockopt::RcvBufForce, &size),
        super::Buffer::Send => setsockopt(socket, sockopt::SndBufForce, &size),
    }
    .map_err(std::io::Error::from)
}

fn select_backend(
    choice: BackendPreference,
    interface: &str,
    wireguard_go: &Path,
    child_output: ChildOutput,
    verbose: bool,
    rtnl: &Arc<Rtnl>,
) -> anyhow::Result<Box<dyn WireguardBackend>> {
    let wireguard_go = resolve_program(wireguard_go);
    let userspace = || {
        let mut config = UserspaceConfig::new(interface);
        config.wireguard_go = wireguard_go.clone();
        config.output = child_output.clone();
        if verbose {
            "verbose".clone_into(&mut config.log_level);
        }
        Box::new(UserspaceBackend::new(config)) as Box<dyn WireguardBackend>
    };
    let kernel =
        || Box::new(KernelBackend::new(interface, rtnl.clone())) as Box<dyn WireguardBackend>;
    match choice {
        BackendPreference::Kernel => {
            wgmesh_linux::probe_kernel_wireguard().map_err(|reason| {
                anyhow!("--backend kernel: kernel WireGuard is unavailable: {reason}")
            })?;
            Ok(kernel())
        }
        BackendPreference::Userspace => {
            wgmesh_uapi::userspace_available(&wireguard_go).map_err(|reason| {
                anyhow!("--backend userspace: wireguard-go cannot run: {reason}")
            })?;
            Ok(userspace())
        }
        BackendPreference::Auto => {
            let existing_userspace = UserspaceConfig::new(interface)
                .socket_dir
                .join(format!("{interface}.sock"));
            if existing_userspace.exists()
                && wgmesh_uapi::userspace_available(&wireguard_go).is_ok()
            {
                let backend = userspace();
                return Ok(backend);
            }
            match wgmesh_linux::probe_kernel_wireguard() {
                Ok(()) => Ok(kernel()),
                Err(reason) => {
                    wgmesh_uapi::userspace_available(&wireguard_go).map_err(|userspace_reason| {
                        anyhow!(
                            "no WireGuard backend: kernel: {reason}; userspace: {userspace_reason} (install wireguard-go or load the wireguard module)"
                        )
                    })?;
                    tracing::info!(%reason, wireguard_go = %wireguard_go.display(), "kernel WireGuard unavailable; using wireguard-go");
                    Ok(userspace())
                }
            }
        }
    }
}

/// Sets addresses, MTU and up state idempotently; returns the interface index.
fn configure_link(
    rtnl: &Rtnl,
    interface: &str,
    addresses: &[IpNet],
    managed: &[IpNet],
    mtu: u32,
) -> anyhow::Result<u32> {
    let link = rtnl
        .link(interface)
        .with_context(|| format!("{interface}: cannot read the link"))?
        .ok_or_else(|| anyhow!("{interface}: the link disappeared"))?;
    let changes = rtnl
        .set_addresses(link.index, addresses, managed)
        .with_context(|| format!("{interface}: cannot set addresses"))?;
    if !changes.is_empty() {
        tracing::info!(added = ?changes.added, removed = ?changes.removed, "interface addresses set");
    }
    if link.mtu != mtu {
        rtnl.set_mtu(link.index, mtu)
            .with_context(|| format!("{interface}: cannot set MTU {mtu}"))?;
    }
    if !link.up {
        rtnl.set_up(link.index)
            .with_context(|| format!("{interface}: cannot bring the link up"))?;
    }
    Ok(link.index)
}

/// Deletes an interface that `--keep-interface` left up after its daemon stopped (`wgmesh down`
/// with no daemon running). Routes through it go with it, and wireguard-go exits when its TUN
/// device is deleted. `Ok(false)` if the interface is already gone.
pub fn remove_kept_interface(interface: &str) -> anyhow::Result<bool> {
    let rtnl = Rtnl::new().context("cannot open rtnetlink")?;
    let Some(index) = rtnl
        .link_index(interface)
        .with_context(|| format!("cannot look up interface {interface}"))?
    else {
        return Ok(false);
    };
    rtnl.delete_link(index)
        .with_context(|| format!("cannot delete interface {interface}"))?;
    wait_for_wireguard_go_exit(interface)?;
    Ok(true)
}

/// wireguard-go notices its TUN device is gone a moment after the delete and stops listening on
/// its UAPI socket as it exits (a stale socket file nobody listens on counts as gone). `wgmesh
/// down` returns only once that happened, so a script that runs `wgmesh down && wgmesh up` never
/// finds the old process still holding the name.
fn wait_for_wireguard_go_exit(interface: &str) -> anyhow::Result<()> {
    const GRACE: Duration = Duration::from_secs(5);
    let socket = UserspaceConfig::new(interface)
        .socket_dir
        .join(format!("{interface}.sock"));
    let deadline = Instant::now() + GRACE;
    while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        if Instant::now() > deadline {
            bail!(
                "deleted interface {interface}, but wireguard-go still holds {} after {} s",
                socket.display(),
                GRACE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Next hops of the default routes in `/proc/net/route` (tab-separated; addresses as the
/// kernel prints a `__be32` with `%08X`, so their native-endian bytes are the address).
pub fn ipv4_default_gateways(table: &str) -> Vec<std::net::IpAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u32::from_str_radix(fields.get(i)?, 16).ok();
            let (destination, gateway, mask) = (hex(1)?, hex(2)?, hex(7)?);
            (destination == 0 && mask == 0 && gateway != 0)
                .then(|| std::net::IpAddr::V4(std::net::Ipv4Addr::from(gateway.to_ne_bytes())))
        })
        .collect()
}

/// Next hops of the default routes in `/proc/net/ipv6_route` (destination, its prefix length,
/// source, its prefix length, next hop, ...; addresses as 32 hex digits in network order).
pub fn ipv6_default_gateways(table: &str) -> Vec<std::net::IpAddr> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u128::from_str_radix(fields.get(i)?, 16).ok();
            let (destination, length, next_hop) = (hex(0)?, hex(1)?, hex(4)?);
            (destination == 0 && length == 0 && next_hop != 0)
                .then(|| std::net::IpAddr::V6(std::net::Ipv6Addr::from(next_hop)))
        })
        .collect()
}

/// The Linux [`Host`]: rtnetlink for the link and its addresses, `getifaddrs` for the host's
/// addresses and connected networks, rtnetlink multicast groups for change events.
#[derive(Debug)]
pub struct LinuxHost {
    rtnl: Arc<Rtnl>,
    interface: String,
}

impl LinuxHost {
    pub fn new(rtnl: Arc<Rtnl>, interface: &str) -> Self {
        Self {
            rtnl,
            interface: interface.to_owned(),
        }
    }

    /// `{:#}`: an `anyhow` error shows its whole chain.
    fn error(&self, operation: &'static str, err: &dyn std::fmt::Display) -> HostError {
        HostError {
            interface: self.interface.clone(),
            operation,
            message: format!("{err:#}"),
        }
    }
}

impl Host for LinuxHost {
    fn configure_interface(&mut self, config: &InterfaceConfig) -> Result<u32, HostError> {
        let index = configure_link(
            &self.rtnl,
            &config.interface,
            &config.addresses,
            &config.managed,
            config.mtu,
        )
        .map_err(|err| self.error("link setup", &err))?;
        Ok(index)
    }

    fn addresses(&self) -> Vec<HostAddress> {
        HostAddress::underlay(super::interface_ips(), &self.interface)
    }

    fn connected_networks(&self) -> Vec<IpNet> {
        connected_networks(&self.interface)
    }

    fn default_gateways(&self) -> Vec<std::net::IpAddr> {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let mut gateways = ipv4_default_gateways(&read("/proc/net/route"));
        gateways.extend(ipv6_default_gateways(&read("/proc/net/ipv6_route")));
        gateways
    }

    fn watch_links_and_addresses(
        &self,
        on_change: Box<dyn FnMut() -> bool + Send>,
    ) -> Result<(), HostError> {
        wgmesh_linux::watch_links_and_addresses(on_change)
            .map(drop)
            .map_err(|err| self.error("watch link and address events", &err))
    }
}

/// The networks directly connected to this host, except the mesh interface's own.
fn connected_networks(mesh_interface: &str) -> Vec<IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut nets = Vec::new();
    for ifaddr in addrs {
        if ifaddr.interface_name == mesh_interface {
            continue;
        }
        let (Some(addr), Some(mask)) = (ifaddr.address, ifaddr.netmask) else {
            continue;
        };
        let net = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            ipnet::Ipv4Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V4)
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            ipnet::Ipv6Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V6)
        } else {
            None
        };
        if let Some(net) = net.map(|n| n.trunc()) {
            // Loopback and link-local are not routes anyone advertises into a mesh.
            if !net.addr().is_loopback() && !nets.contains(&net) {
                nets.push(net);
            }
        }
    }
    nets
}

/// Whether process `pid` has exited and waits for its parent to reap it (state `Z` in
/// `/proc/<pid>/stat`): it still answers signal 0, but it is gone.
pub fn process_is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The address of a Unix datagram socket named as `$NOTIFY_SOCKET` names it: a path, or `@name`
/// for Linux's abstract namespace.
pub fn unix_socket_address(target: &std::ffi::OsStr) -> std::io::Result<UnixSocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::ffi::OsStrExt as _;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => UnixSocketAddr::from_abstract_name(name),
        None => UnixSocketAddr::from_pathname(target),
    }
}

/// Resolves a bare program name through `$PATH`, as a shell would.
fn resolve_program(program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        return program.to_owned();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| program.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gateways_come_from_the_kernel_route_tables() {
        // As a little-endian host prints them: 192.168.0.1 is 0100A8C0.
        let native = |ip: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(ip));
        let v4 = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t{}\t00000000\t0001\t0\t0\t100\t{}\t0\t0\t0\n",
            native([192, 168, 0, 1]),
            native([192, 168, 0, 0]),
            native([255, 255, 255, 0]),
        );
        assert_eq!(
            ipv4_default_gateways(&v4),
            vec!["192.168.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(
            ipv6_default_gateways(v6),
            vec!["fe80::1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(ipv4_default_gateways("garbage\nmore garbage\n").is_empty());
    }
}
