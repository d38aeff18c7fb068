//! Choosing the WireGuard backend and preparing the interface (Linux).

use crate::daemon::config::BackendPreference;
use anyhow::{Context as _, anyhow, bail};
use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wgmesh_device::{Host, HostError, InterfaceConfig, WireguardBackend};
use wgmesh_linux::KernelBackend;
pub use wgmesh_linux::{InterfaceRoutes, Rtnl};
use wgmesh_uapi::{ChildOutput, UserspaceBackend, UserspaceConfig};

/// Resolves a bare program name through `$PATH`, as a shell would.
pub fn resolve_program(program: &Path) -> PathBuf {
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

/// Picks the backend. `auto` prefers the kernel; an existing wireguard-go device for this
/// interface (left by `--keep-interface`) is adopted through its socket whatever the kernel has.
pub fn select_backend(
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

/// The first port from `preferred` on that no UDP socket holds (IPv4 and, where the host has
/// it, IPv6). WireGuard binds both families, so both must be free.
pub fn free_udp_port(preferred: u16) -> anyhow::Result<u16> {
    for port in preferred..=u16::MAX {
        let v4 = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
        let v6 =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).and_then(|s| {
                s.set_only_v6(true)?;
                s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())
            });
        let in_use = |err: &std::io::Error| err.kind() == std::io::ErrorKind::AddrInUse;
        match (&v4, &v6) {
            (Ok(_), Ok(())) => return Ok(port),
            (Ok(_), Err(err)) if !in_use(err) => return Ok(port),
            // Only a port in use means "try the next one"; a refusal (a sandbox without
            // AF_INET, no permission) would be the same for every port.
            (Err(err), _) if !in_use(err) => {
                bail!("cannot open a UDP socket to probe listen port {port}: {err}")
            }
            _ => {}
        }
    }
    bail!("no free UDP port at or above {preferred}")
}

/// The interface's addresses: the member's IPv4 in the /16 and IPv6 in the /64, so the kernel
/// routes the whole mesh prefixes through the interface.
pub fn interface_addresses(ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> [IpNet; 2] {
    [
        IpNet::new(ipv4.into(), 16).unwrap_or_else(|_| unreachable!("16 is a valid IPv4 prefix")),
        IpNet::new(ipv6.into(), 64).unwrap_or_else(|_| unreachable!("64 is a valid IPv6 prefix")),
    ]
}

/// Sets addresses, MTU and up state idempotently; returns the interface index.
pub fn configure_link(
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

/// IPv4 addresses of the host's interfaces that can carry mesh traffic (not loopback, not the
/// mesh interface itself), with their interface names.
pub fn lan_addresses(mesh_interface: &str) -> Vec<(String, std::net::Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name != mesh_interface)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            (!ip.is_loopback() && !ip.is_unspecified()).then_some((a.interface_name, ip))
        })
        .collect()
}

/// The networks directly connected to this host, except the mesh interface's own.
pub fn connected_networks(mesh_interface: &str) -> Vec<IpNet> {
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

/// The Linux [`Host`]: rtnetlink for the link and its addresses, `getifaddrs` for connected
/// networks, rtnetlink multicast groups for change events.
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

// ---- Sockets ----

/// Binds the control socket: all IPv4 addresses, joined to the LAN group on every interface.
///
/// Exclusively: no `SO_REUSEADDR` (and no `SO_REUSEPORT`). With either, a local user of any uid
/// could bind the same port on `127.0.0.1`, the LAN address, the group or the wildcard beside
/// the daemon and receive its datagrams (Linux delivers to the most specific, then the newest
/// socket). Multicast needs no sharing: the one socket bound to the wildcard receives the group's
/// datagrams on every interface it joined. Two daemons on one host therefore need different
/// control ports (the derived port differs per secret; `--control-port` for the rest).
pub fn bind_control(
    port: u16,
    group: Option<Ipv4Addr>,
    mesh_interface: &str,
) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    socket.bind(&addr.into()).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                err.kind(),
                format!(
                    "{err}: another process holds UDP port {port} (another wgmesh on this host? give one of them --control-port)"
                ),
            )
        } else {
            err
        }
    })?;
    if let Some(group) = group {
        socket.set_multicast_loop_v4(false)?;
        socket.set_multicast_ttl_v4(1)?;
        for (name, ip) in lan_addresses(mesh_interface) {
            if let Err(err) = socket.join_multicast_v4(&group, &ip) {
                tracing::debug!(interface = %name, error = %err, "cannot join the LAN group");
            }
        }
    }
    // Which datagrams came to the LAN group (beacons a known member need not answer).
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
        .map_err(std::io::Error::from)?;
    enlarge_receive_buffer(&socket);
    tokio::net::UdpSocket::from_std(socket.into())
}

/// The control socket's receive buffer. When a large mesh forms, every member's beacon answers,
/// Hellos and gossip arrive within a few hundred milliseconds; Linux's default buffer
/// (`net.core.rmem_default`, 208 KiB, about 200 such datagrams) overflowed at 40 nodes and the
/// lost datagrams waited for the next discovery round. Root may exceed `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 4 << 20;

fn enlarge_receive_buffer(socket: &socket2::Socket) {
    let forced = nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::RcvBufForce,
        &RECEIVE_BUFFER,
    );
    if let Err(errno) = forced {
        tracing::debug!(error = %errno, "cannot force the control socket's receive buffer; asking within rmem_max");
        if let Err(err) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::debug!(error = %err, "cannot enlarge the control socket's receive buffer");
        }
    }
}

/// Receives one datagram: its length, source, and whether it was addressed to `group`.
pub fn recv_with_destination(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
    group: Option<Ipv4Addr>,
) -> std::io::Result<(usize, SocketAddr, bool)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    use std::os::fd::AsRawFd as _;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo);
    let msg = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let to_group = group.is_some_and(|group| {
        msg.cmsgs().is_ok_and(|mut cmsgs| {
            cmsgs.any(|c| {
                matches!(c, ControlMessageOwned::Ipv4PacketInfo(info)
                    if Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)) == group)
            })
        })
    });
    let from = msg
        .address
        .map(|a| SocketAddr::from((a.ip(), a.port())))
        .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
    Ok((msg.bytes, from, to_group))
}

/// Sends multicast from the interface holding `ip` (`IP_MULTICAST_IF`).
pub fn set_multicast_interface(
    socket: &tokio::net::UdpSocket,
    ip: Ipv4Addr,
) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_multicast_if_v4(&ip)
}

/// Joins `group` on the interface holding `ip`.
pub fn join_multicast(
    socket: &tokio::net::UdpSocket,
    group: Ipv4Addr,
    ip: Ipv4Addr,
) -> std::io::Result<()> {
    socket2::SockRef::from(socket).join_multicast_v4(&group, &ip)
}

/// Kernel receive and send buffer of each relay socket. Linux's default (208 KiB) holds fewer
/// than 150 full-size WireGuard datagrams (the kernel charges each its overhead too), under 2 ms
/// at 1 Gbit/s: any scheduling hiccup of the forwarding task would drop datagrams. Buffers are
/// charged only for what is queued, and the kernel's `net.ipv4.udp_mem` bounds all of UDP; root
/// may exceed `net.core.rmem_max`.
const RELAY_SOCKET_BUFFER: usize = 2 << 20;

/// Binds a relay port facing a member at `ip`, exclusively (no `SO_REUSEADDR`/`SO_REUSEPORT`, so
/// no other local socket can bind beside it and read the pair's datagrams).
pub fn bind_relay_port(ip: std::net::IpAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, unspecified) = if ip.to_canonical().is_ipv4() {
        (Domain::IPV4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    } else {
        (Domain::IPV6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if domain == Domain::IPV6 {
        // Dual-stack, so the port number is taken in both families: the table knows a relay
        // port by its number alone.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    enlarge_relay_buffers(&socket);
    socket.bind(&unspecified.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

fn enlarge_relay_buffers(socket: &socket2::Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &RELAY_SOCKET_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(RELAY_SOCKET_BUFFER);
    }
    if setsockopt(socket, sockopt::SndBufForce, &RELAY_SOCKET_BUFFER).is_err() {
        let _ = socket.set_send_buffer_size(RELAY_SOCKET_BUFFER);
    }
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

    /// No other socket, whatever options it sets, can bind the control port beside the daemon:
    /// not the wildcard, not loopback, not the LAN group. (A local user of another uid is
    /// `tests/local_user_lab.rs`.)
    #[tokio::test]
    async fn nothing_binds_beside_the_control_socket() {
        let group = Ipv4Addr::new(239, 192, 77, 78);
        // No group membership: joining would send IGMP reports on the build host's networks.
        let control = bind_control(0, None, "none").unwrap();
        let port = control.local_addr().unwrap().port();
        for ip in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST, group] {
            let other =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            other.set_reuse_address(true).unwrap();
            other.set_reuse_port(true).unwrap();
            let err = other
                .bind(&SocketAddr::from((ip, port)).into())
                .expect_err("bound beside the control socket");
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{ip}: {err}");
        }
    }

    #[tokio::test]
    async fn a_taken_control_port_is_reported_with_the_fix() {
        let holder = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = holder.local_addr().unwrap().port();
        let err = bind_control(port, None, "none").unwrap_err().to_string();
        assert!(
            err.contains(&format!("UDP port {port}")) && err.contains("--control-port"),
            "{err}"
        );
    }
}
