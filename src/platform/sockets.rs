//! The daemon's UDP sockets (any Unix with `IP_PKTINFO`: Linux and macOS): the control socket,
//! relay ports, and finding a free WireGuard listen port. Buffer sizes past the system limit are
//! the one OS-specific part (`super::os::force_buffer`).

use anyhow::bail;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

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

/// Binds the control socket: all IPv4 addresses, joined to the LAN group on each of
/// `lan_interfaces` (the host's IPv4 addresses, with their interface names).
///
/// Exclusively: no `SO_REUSEADDR` (and no `SO_REUSEPORT`). With either, a local user of any uid
/// could bind the same port on `127.0.0.1`, the LAN address, the group or the wildcard beside
/// the daemon and receive its datagrams (Linux delivers to the most specific, then the newest
/// socket). Multicast needs no sharing: the one socket bound to the wildcard receives the group's
/// datagrams on every interface it joined. Two daemons on one host therefore need different
/// control ports (the derived port differs per secret; `--control-port` for the rest).
///
/// On macOS this is weaker: xnu checks only the exact address for a binder that sets
/// `SO_REUSEADDR`, so a process of our own uid (root) could still bind `127.0.0.1` or the group
/// beside the wildcard, and any uid the group (its beacons are visible on the LAN anyway);
/// another uid is refused for unicast addresses. (Read from xnu's `in_pcbbind`, not tried on a
/// Mac.)
pub fn bind_control(
    port: u16,
    group: Option<Ipv4Addr>,
    lan_interfaces: &[(String, Ipv4Addr)],
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
        for (name, ip) in lan_interfaces {
            if let Err(err) = socket.join_multicast_v4(&group, ip) {
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
    if let Err(err) = super::os::force_buffer(socket, Buffer::Receive, RECEIVE_BUFFER) {
        tracing::debug!(error = %err, "cannot force the control socket's receive buffer; asking within the system limit");
        if let Err(err) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::debug!(error = %err, "cannot enlarge the control socket's receive buffer");
        }
    }
}

/// Which of a socket's kernel buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    Receive,
    Send,
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
    if super::os::force_buffer(socket, Buffer::Receive, RELAY_SOCKET_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(RELAY_SOCKET_BUFFER);
    }
    if super::os::force_buffer(socket, Buffer::Send, RELAY_SOCKET_BUFFER).is_err() {
        let _ = socket.set_send_buffer_size(RELAY_SOCKET_BUFFER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No other socket, whatever options it sets, can bind the control port beside the daemon:
    /// not the wildcard, not loopback, not the LAN group. (A local user of another uid is
    /// `tests/local_user_lab.rs`.) On macOS only the wildcard holds for the same uid (see
    /// [`bind_control`]).
    #[tokio::test]
    async fn nothing_binds_beside_the_control_socket() {
        let group = Ipv4Addr::new(239, 192, 77, 78);
        // No group membership: joining would send IGMP reports on the build host's networks.
        let control = bind_control(0, None, &[]).unwrap();
        let port = control.local_addr().unwrap().port();
        let refused: &[Ipv4Addr] = if cfg!(target_os = "macos") {
            &[Ipv4Addr::UNSPECIFIED]
        } else {
            &[Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST, group]
        };
        for &ip in refused {
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
        let err = bind_control(port, None, &[]).unwrap_err().to_string();
        assert!(
            err.contains(&format!("UDP port {port}")) && err.contains("--control-port"),
            "{err}"
        );
    }
}
