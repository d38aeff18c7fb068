//! Links and addresses over rtnetlink, through one shared socket.

use crate::netlink::{NetlinkSocket, Request, with_context};
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// What [`Rtnl::link`] reports about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The administrative state (`IFF_UP`), not whether a carrier is present.
    pub up: bool,
    /// The link kind (`wireguard`, `veth`, ...); `None` for links without one, such as `lo`.
    pub kind: Option<String>,
}

/// What [`Rtnl::set_addresses`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressChanges {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
}

impl AddressChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Link, address and route control over one `NETLINK_ROUTE` socket.
///
/// The socket lives in the network namespace of the thread that called [`Rtnl::new`]; create
/// it on the daemon's main thread (or, in tests, on the thread that entered the namespace).
#[derive(Debug)]
pub struct Rtnl {
    /// One request at a time: the kernel answers a dump in several datagrams and refuses to
    /// start a second dump on a socket whose first is still running (EBUSY), and replies to
    /// interleaved requests would arrive mixed on the one socket. The lock makes every request
    /// and its whole reply one unit; they are short (one round trip or one dump).
    socket: Mutex<NetlinkSocket>,
}

impl Rtnl {
    pub fn new() -> io::Result<Self> {
        let socket = NetlinkSocket::open(netlink_sys::protocols::NETLINK_ROUTE)
            .map_err(|e| with_context(e, "opening an rtnetlink socket"))?;
        Ok(Self {
            socket: Mutex::new(socket),
        })
    }

    /// Sends one request; errors keep the kernel's errno (`raw_os_error`).
    pub(crate) fn request(
        &self,
        message: RouteNetlinkMessage,
        request: Request,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        // A panic while holding the lock leaves nothing half-done that matters: stale replies
        // are told apart by their sequence number.
        let mut socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        socket.request(message, request)
    }

    /// The link called `name`, or `None` if there is none.
    pub fn link(&self, name: &str) -> io::Result<Option<LinkStatus>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(message), Request::Do(0)) {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_status(&link)),
                _ => None,
            })),
            Err(e) if is_errno(&e, &[libc::ENODEV]) => Ok(None),
            Err(e) => Err(with_context(e, format!("{name}: reading the link"))),
        }
    }

    /// The interface index of `name`, or `None` if there is no such link.
    pub fn link_index(&self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.link(name)?.map(|link| link.index))
    }

    /// Creates a link of `kind` called `name` (`NLM_F_EXCL`: fails with `AlreadyExists` if a
    /// link of that name exists). `EOPNOTSUPP` means the kernel does not know the kind.
    pub fn create_link(&self, name: &str, kind: InfoKind) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewLink(create_link_message(name, kind)),
            Request::Do(NLM_F_CREATE | NLM_F_EXCL),
        )
        .map(drop)
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(message), Request::Do(0))
            .map(drop)
            .map_err(|e| with_context(e, format!("link {index}: setting MTU {mtu}")))
    }

    /// Sets the link administratively up (like `ip link set up`).
    pub fn set_up(&self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), Request::Do(0))
            .map(drop)
            .map_err(|e| with_context(e, format!("link {index}: setting it up")))
    }

    /// Deletes the link; a link that is already gone is not an error.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(message), Request::Do(0)) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, &[libc::ENODEV, libc::ENOENT]) => Ok(()),
            Err(e) => Err(with_context(e, format!("link {index}: deleting it"))),
        }
    }

    /// The addresses on link `index` (IPv4 and IPv6, including link-local ones).
    pub fn addresses(&self, index: u32) -> io::Result<Vec<IpNet>> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                Request::Dump,
            )
            .map_err(|e| with_context(e, format!("link {index}: listing addresses")))?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(message) if message.header.index == index => {
                    address_of(message)
                }
                _ => None,
            })
            .collect())
    }

    /// Makes the addresses on link `index` match `desired`, idempotently.
    ///
    /// - Each desired address that is missing is added (`EEXIST`, a race with another writer,
    ///   counts as done). Present ones are not rewritten, so a steady state makes no writes.
    /// - An address on the link that is not desired but lies inside one of `managed` (the mesh
    ///   prefixes, e.g. the /16 and the /64) is ours and stale, e.g. left by an earlier identity
    ///   or network: it is removed. Everything else (link-local `fe80::/64`, addresses an admin
    ///   added outside the mesh prefixes) is left alone. Pass an empty `managed` to only add.
    pub fn set_addresses(
        &self,
        index: u32,
        desired: &[IpNet],
        managed: &[IpNet],
    ) -> io::Result<AddressChanges> {
        let current = self.addresses(index)?;
        let mut changes = AddressChanges::default();
        // Stale addresses go first: with `promote_secondaries` off (the kernel default), deleting
        // the primary IPv4 address of a subnet also deletes every secondary one in it, so a new
        // address added before the old one is removed (a re-address within the /16) would vanish.
        for &address in &current {
            let stale = !desired.contains(&address)
                && managed
                    .iter()
                    .any(|prefix| prefix.contains(&address.addr()));
            if !stale {
                continue;
            }
            match self.request(
                RouteNetlinkMessage::DelAddress(address_message(index, address)),
                Request::Do(0),
            ) {
                Ok(_) => changes.removed.push(address),
                Err(e) if is_errno(&e, &[libc::EADDRNOTAVAIL, libc::ENOENT, libc::ESRCH]) => {}
                Err(e) => {
                    return Err(with_context(e, format!("link {index}: removing {address}")));
                }
            }
        }
        for address in desired {
            if current.contains(address) || changes.added.contains(address) {
                continue;
            }
            match self.request(
                RouteNetlinkMessage::NewAddress(address_message(index, *address)),
                Request::Do(NLM_F_CREATE | NLM_F_EXCL),
            ) {
                Ok(_) => changes.added.push(*address),
                Err(e) if is_errno(&e, &[libc::EEXIST]) => {}
                Err(e) => {
                    return Err(with_context(e, format!("link {index}: adding {address}")));
                }
            }
        }
        Ok(changes)
    }
}

/// Whether `error` carries one of `errnos` (from the kernel's netlink answer).
pub(crate) fn is_errno(error: &io::Error, errnos: &[i32]) -> bool {
    crate::netlink::error_errno(error).is_some_and(|code| errnos.contains(&code))
}

pub(crate) fn create_link_message(name: &str, kind: InfoKind) -> LinkMessage {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    message
        .attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
    message
}

fn link_status(link: &LinkMessage) -> LinkStatus {
    let mut status = LinkStatus {
        index: link.header.index,
        name: String::new(),
        mtu: 0,
        up: link.header.flags.contains(LinkFlags::Up),
        kind: None,
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => status.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => status.mtu = *mtu,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        status.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    status
}

/// The message to add or delete `address` on link `index`. Like `ip address add`, both
/// `IFA_LOCAL` and `IFA_ADDRESS` carry the address (they differ only on point-to-point links
/// with a peer address).
pub(crate) fn address_message(index: u32, address: IpNet) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = family_of(address.addr());
    message.header.prefix_len = address.prefix_len();
    message.header.index = index;
    message
        .attributes
        .push(AddressAttribute::Local(address.addr()));
    message
        .attributes
        .push(AddressAttribute::Address(address.addr()));
    message
}

fn address_of(message: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    IpNet::new(local.or(address)?, message.header.prefix_len).ok()
}

pub(crate) fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
