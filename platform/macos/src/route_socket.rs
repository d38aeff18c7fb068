//! PF_ROUTE messages: a pure parser, and on macOS the socket that feeds it.
//!
//! Layouts are xnu's (`bsd/net/route.h`, `bsd/net/if.h`), native-endian, in bytes:
//!
//! - every message starts `u16 msglen, u8 version (RTM_VERSION = 5), u8 type`;
//! - `rt_msghdr` (RTM_ADD, RTM_DELETE, RTM_CHANGE, …): `u16 index` at 4, `i32 flags` at 8,
//!   `i32 addrs` at 12, pid, seq, errno, use, inits, then `rt_metrics` (14 × u32); 92 bytes;
//! - `if_msghdr` (RTM_IFINFO): `i32 addrs` at 4, `i32 flags` (IFF_*) at 8, `u16 index` at 12,
//!   then `if_data` (96 bytes); 112 bytes;
//! - `ifa_msghdr` (RTM_NEWADDR, RTM_DELADDR): `i32 addrs` at 4, `i32 flags` at 8, `u16 index` at
//!   12, `i32 metric` at 16; 20 bytes.
//!
//! After the header come the sockaddrs named by the `addrs` bitmask (RTA_DST, RTA_GATEWAY,
//! RTA_NETMASK, RTA_GENMASK, RTA_IFP, RTA_IFA, RTA_AUTHOR, RTA_BRD, in bit order), each
//! `u8 sa_len, u8 sa_family, …`, and each padded to a multiple of 4 bytes (rtsock.c's
//! `ROUNDUP32`: a zero `sa_len` still takes 4). Netmasks may be truncated (`sa_len` 5 for a /8) and
//! carry family 0.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const RTM_VERSION: u8 = 5;
pub const RTM_ADD: u8 = 0x1;
pub const RTM_DELETE: u8 = 0x2;
pub const RTM_CHANGE: u8 = 0x3;
pub const RTM_NEWADDR: u8 = 0xc;
pub const RTM_DELADDR: u8 = 0xd;
pub const RTM_IFINFO: u8 = 0xe;

pub const RTA_DST: i32 = 0x1;
pub const RTA_GATEWAY: i32 = 0x2;
pub const RTA_NETMASK: i32 = 0x4;
pub const RTA_IFP: i32 = 0x10;
pub const RTA_IFA: i32 = 0x20;
/// RTAX_MAX: eight sockaddr slots.
const RTAX_MAX: usize = 8;

pub const RT_MSGHDR_LEN: usize = 92;
pub const IF_MSGHDR_LEN: usize = 112;
pub const IFA_MSGHDR_LEN: usize = 20;

/// `IFF_UP` in `ifm_flags`.
pub const IFF_UP: i32 = 0x1;
/// `IFF_RUNNING`.
pub const IFF_RUNNING: i32 = 0x40;

/// The address families that appear in sockaddrs (macOS values).
const AF_INET: u8 = 2;
const AF_LINK: u8 = 18;
const AF_INET6: u8 = 30;

/// Which change a route message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteEventKind {
    Add,
    Delete,
    Change,
}

/// One parsed PF_ROUTE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    /// RTM_IFINFO: an interface's flags changed (up/down, created).
    Link { index: u16, up: bool, running: bool },
    /// RTM_NEWADDR / RTM_DELADDR. `address` is the RTA_IFA sockaddr, with the RTA_NETMASK prefix
    /// when present; `interface` the RTA_IFP link name.
    Address {
        added: bool,
        index: u16,
        address: Option<IpNet>,
        interface: Option<String>,
    },
    /// RTM_ADD / RTM_DELETE / RTM_CHANGE.
    Route {
        kind: RouteEventKind,
        index: u16,
        destination: Option<IpNet>,
        gateway: Option<IpAddr>,
    },
    /// Any other type (RTM_GET, RTM_MISS, RTM_NEWMADDR, …).
    Other { message_type: u8 },
}

impl RouteEvent {
    /// Whether the daemon should re-read links and addresses.
    pub fn is_link_or_address(&self) -> bool {
        matches!(self, Self::Link { .. } | Self::Address { .. })
    }
}

/// A message that does not parse; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteMessageError {
    #[error("route message of {len} bytes is shorter than its {need}-byte header")]
    Short { len: usize, need: usize },
    #[error("route message declares {declared} bytes but {available} were read")]
    Length { declared: usize, available: usize },
    #[error("route message version {0}, expected {RTM_VERSION}")]
    Version(u8),
    #[error("sockaddr for address bit {bit:#x} at offset {offset} runs past the message end")]
    Sockaddr { bit: i32, offset: usize },
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn i32_at(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one message: the first `msglen` bytes of `buf` (a read from a routing socket returns
/// exactly one). Bytes after it are ignored.
pub fn parse_route_message(buf: &[u8]) -> Result<RouteEvent, RouteMessageError> {
    let short = |need| RouteMessageError::Short {
        len: buf.len(),
        need,
    };
    let declared = usize::from(u16_at(buf, 0).ok_or(short(4))?);
    let (&version, &message_type) = (buf.get(2).ok_or(short(4))?, buf.get(3).ok_or(short(4))?);
    if declared > buf.len() || declared < 4 {
        return Err(RouteMessageError::Length {
            declared,
            available: buf.len(),
        });
    }
    if version != RTM_VERSION {
        return Err(RouteMessageError::Version(version));
    }
    let message = &buf[..declared];
    let header = |need: usize| {
        if message.len() < need {
            Err(RouteMessageError::Short {
                len: message.len(),
                need,
            })
        } else {
            Ok(())
        }
    };
    match message_type {
        RTM_ADD | RTM_DELETE | RTM_CHANGE => {
            header(RT_MSGHDR_LEN)?;
            let index = u16_at(message, 4).unwrap_or_default();
            let addrs = i32_at(message, 12).unwrap_or_default();
            let slots = sockaddrs(message, RT_MSGHDR_LEN, addrs)?;
            let kind = match message_type {
                RTM_ADD => RouteEventKind::Add,
                RTM_DELETE => RouteEventKind::Delete,
                _ => RouteEventKind::Change,
            };
            let destination = slots[0].and_then(ip_of);
            let prefix = prefix_of(slots[2], destination);
            Ok(RouteEvent::Route {
                kind,
                index,
                destination: destination.and_then(|d| net(d, prefix)),
                gateway: slots[1].and_then(ip_of),
            })
        }
        RTM_NEWADDR | RTM_DELADDR => {
            header(IFA_MSGHDR_LEN)?;
            let addrs = i32_at(message, 4).unwrap_or_default();
            let index = u16_at(message, 12).unwrap_or_default();
            let slots = sockaddrs(message, IFA_MSGHDR_LEN, addrs)?;
            let address = slots[5].and_then(ip_of);
            let prefix = prefix_of(slots[2], address);
            Ok(RouteEvent::Address {
                added: message_type == RTM_NEWADDR,
                index,
                address: address.and_then(|a| net(a, prefix)),
                interface: slots[4].and_then(link_name),
            })
        }
        RTM_IFINFO => {
            header(IF_MSGHDR_LEN)?;
            let flags = i32_at(message, 8).unwrap_or_default();
            Ok(RouteEvent::Link {
                index: u16_at(message, 12).unwrap_or_default(),
                up: flags & IFF_UP != 0,
                running: flags & IFF_RUNNING != 0,
            })
        }
        other => Ok(RouteEvent::Other {
            message_type: other,
        }),
    }
}

/// The sockaddrs after the header, by RTAX slot; each is the bytes of its `sa_len`.
fn sockaddrs(
    message: &[u8],
    start: usize,
    addrs: i32,
) -> Result<[Option<&[u8]>; RTAX_MAX], RouteMessageError> {
    let mut slots = [None; RTAX_MAX];
    let mut offset = start;
    for (slot, entry) in slots.iter_mut().enumerate() {
        let bit = 1 << slot;
        if addrs & bit == 0 {
            continue;
        }
        let overrun = RouteMessageError::Sockaddr { bit, offset };
        let sa_len = usize::from(*message.get(offset).ok_or(overrun.clone())?);
        let bytes = message.get(offset..offset + sa_len).ok_or(overrun)?;
        *entry = Some(bytes);
        // ROUNDUP32: to a multiple of 4, and 4 for an empty sockaddr.
        offset += if sa_len == 0 {
            4
        } else {
            sa_len.div_ceil(4) * 4
        };
    }
    Ok(slots)
}

/// The address of an AF_INET (`sin_addr` at 4) or AF_INET6 (`sin6_addr` at 8) sockaddr.
fn ip_of(sa: &[u8]) -> Option<IpAddr> {
    match *sa.get(1)? {
        AF_INET => {
            let octets: [u8; 4] = sa.get(4..8)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        AF_INET6 => {
            let octets: [u8; 16] = sa.get(8..24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// The prefix length of a netmask sockaddr for an address of `address`'s family: the mask bytes
/// start where the address would (4 or 8), and bytes beyond a truncated `sa_len` are zero.
/// Without a netmask the route is a host route.
fn prefix_of(mask: Option<&[u8]>, address: Option<IpAddr>) -> u8 {
    let (start, width) = match address {
        Some(IpAddr::V4(_)) => (4, 4),
        Some(IpAddr::V6(_)) => (8, 16),
        None => return 0,
    };
    let Some(mask) = mask else {
        return u8::try_from(width * 8).unwrap_or(u8::MAX);
    };
    let mut ones = 0u8;
    for i in 0..width {
        let byte = mask.get(start + i).copied().unwrap_or(0);
        ones += u8::try_from(byte.leading_ones()).unwrap_or(0);
        if byte != 0xff {
            break;
        }
    }
    ones
}

fn net(address: IpAddr, prefix: u8) -> Option<IpNet> {
    IpNet::new(address, prefix).ok()
}

/// The interface name of an AF_LINK `sockaddr_dl`: `sdl_nlen` at 5, the name from 8.
fn link_name(sa: &[u8]) -> Option<String> {
    if *sa.get(1)? != AF_LINK {
        return None;
    }
    let nlen = usize::from(*sa.get(5)?);
    let name = sa.get(8..8 + nlen)?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// Opens a PF_ROUTE socket (macOS only; the one syscall of this module).
#[cfg(target_os = "macos")]
pub(crate) fn open() -> Result<std::os::fd::OwnedFd, crate::MacosError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(AddressFamily::Route, SockType::Raw, SockFlag::empty(), None).map_err(|errno| {
        crate::MacosError::Sys {
            interface: String::new(),
            operation: "socket(PF_ROUTE)",
            errno,
        }
    })
}

/// Reads `socket` on a thread and calls `on_change` after each link or address message, until
/// it returns `false`.
#[cfg(target_os = "macos")]
pub(crate) fn spawn_reader(
    socket: std::os::fd::OwnedFd,
    mut on_change: Box<dyn FnMut() -> bool + Send>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    std::thread::Builder::new()
        .name("wgmesh-route-socket".to_owned())
        .spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                let notify = match nix::unistd::read(socket.as_raw_fd(), &mut buf) {
                    Ok(read) => match parse_route_message(&buf[..read]) {
                        Ok(event) => event.is_link_or_address(),
                        Err(error) => {
                            tracing::debug!(%error, "unparsed PF_ROUTE message");
                            false
                        }
                    },
                    Err(nix::errno::Errno::EINTR) => false,
                    // ENOBUFS: messages were dropped; the receiver re-reads everything.
                    Err(nix::errno::Errno::ENOBUFS) => true,
                    Err(errno) => {
                        tracing::warn!(%errno, "PF_ROUTE socket failed; the safety pass notices changes");
                        return;
                    }
                };
                if notify && !on_change() {
                    return;
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
#[path = "route_socket_tests.rs"]
mod tests;
