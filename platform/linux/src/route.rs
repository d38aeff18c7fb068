//! The routes wgmesh owns, found and changed by their route protocol number.

use crate::netlink::{Request, with_context};
use crate::rtnl::{Rtnl, family_of, is_errno};
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use wgmesh_device::RouteControl;

/// The route protocol number (`rtm_protocol`, `proto` in `ip route`) on every route wgmesh
/// installs. It is how the daemon finds exactly its own routes again after a restart and how it
/// leaves everyone else's alone: [`InterfaceRoutes`] only lists and deletes routes carrying it.
///
/// Numbers up to `RTPROT_STATIC` (4) belong to the kernel; the rest are handed out in
/// `include/uapi/linux/rtnetlink.h` and iproute2's `rt_protos` (gated 8 … dhcp 16, keepalived 18,
/// babel 42, openr 99, bgp 186 … eigrp 192). 77 is in none of them, nor in Debian's
/// `/etc/iproute2/rt_protos`. `ip route show proto 77` lists wgmesh's routes; add
/// `77 wgmesh` to `/etc/iproute2/rt_protos.d/wgmesh.conf` to see the name instead.
pub const ROUTE_PROTOCOL: u8 = 77;

/// IPv6 gives a route without a metric this one (`IP6_RT_PRIO_USER`); IPv4 uses 0.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// The routes through one interface that wgmesh owns, in the main table.
#[derive(Debug, Clone)]
pub struct InterfaceRoutes {
    rtnl: Arc<Rtnl>,
    interface: String,
    index: u32,
}

impl InterfaceRoutes {
    /// Binds to the interface `interface` with index `index` (see [`Rtnl::link_index`]).
    pub fn new(rtnl: Arc<Rtnl>, interface: &str, index: u32) -> Self {
        Self {
            rtnl,
            interface: interface.to_owned(),
            index,
        }
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// Every unicast route in the main table (IPv4 and IPv6), as (destination, message).
    fn main_table_routes(&self) -> io::Result<Vec<(IpNet, RouteMessage)>> {
        let mut routes = Vec::new();
        for family in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            let mut request = RouteMessage::default();
            request.header.address_family = family_of(family);
            let replies = self
                .rtnl
                .request(RouteNetlinkMessage::GetRoute(request), Request::Dump)
                .map_err(|e| with_context(e, format!("{}: listing routes", self.interface)))?;
            for reply in replies {
                if let RouteNetlinkMessage::NewRoute(route) = reply
                    && route_table(&route) == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && route.header.kind == RouteType::Unicast
                    && let Some(destination) = destination_of(&route)
                {
                    routes.push((destination, route));
                }
            }
        }
        Ok(routes)
    }

    /// A route for exactly `route` in the main table with the metric ours would get, installed
    /// by someone else: adding ours with `NLM_F_REPLACE` would overwrite it.
    fn foreign_route_for(&self, route: IpNet) -> io::Result<Option<u8>> {
        let metric = match route {
            IpNet::V4(_) => 0,
            IpNet::V6(_) => IPV6_DEFAULT_METRIC,
        };
        Ok(self
            .main_table_routes()?
            .into_iter()
            .find(|(destination, message)| {
                *destination == route
                    && u8::from(message.header.protocol) != ROUTE_PROTOCOL
                    && route_metric(message) == metric
            })
            .map(|(_, message)| u8::from(message.header.protocol)))
    }
}

impl RouteControl for InterfaceRoutes {
    /// Routes in the main table whose output interface is ours and whose protocol is
    /// [`ROUTE_PROTOCOL`]. Routes with other protocols (kernel, static, boot, ...) are not listed,
    /// so the route diff can never remove them.
    fn owned_routes(&mut self) -> io::Result<Vec<IpNet>> {
        let mut owned: Vec<IpNet> = self
            .main_table_routes()?
            .into_iter()
            .filter(|(_, message)| {
                u8::from(message.header.protocol) == ROUTE_PROTOCOL
                    && route_oif(message) == Some(self.index)
            })
            .map(|(destination, _)| destination)
            .collect();
        owned.sort();
        owned.dedup();
        Ok(owned)
    }

    /// Adds (or replaces, `NLM_F_CREATE | NLM_F_REPLACE`) our route for `route` through our
    /// interface. Refuses, with `AlreadyExists`, to overwrite a route for the same destination
    /// and metric that someone else installed: replacing it would be touching their route.
    fn add_route(&mut self, route: IpNet) -> io::Result<()> {
        let route = route.trunc();
        if let Some(protocol) = self.foreign_route_for(route)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: adding route {route}: a route for it with protocol {protocol} exists; \
                     wgmesh does not replace routes it does not own",
                    self.interface
                ),
            ));
        }
        match self.rtnl.request(
            RouteNetlinkMessage::NewRoute(route_message(self.index, route)),
            Request::Do(NLM_F_CREATE | NLM_F_REPLACE),
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, &[libc::EEXIST]) => Ok(()),
            Err(e) => Err(with_context(
                e,
                format!("{}: adding route {route}", self.interface),
            )),
        }
    }

    /// Deletes our route for `route`. The request names our protocol and interface, so the
    /// kernel only matches a route wgmesh installed; none (`ESRCH`/`ENOENT`) is "already so".
    fn remove_route(&mut self, route: IpNet) -> io::Result<()> {
        let route = route.trunc();
        match self.rtnl.request(
            RouteNetlinkMessage::DelRoute(delete_route_message(self.index, route)),
            Request::Do(0),
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, &[libc::ESRCH, libc::ENOENT]) => Ok(()),
            Err(e) => Err(with_context(
                e,
                format!("{}: removing route {route}", self.interface),
            )),
        }
    }
    fn bind_interface(&mut self, index: u32) {
        self.index = index;
    }
}

/// `RTM_NEWROUTE` for our route to `route` via link `index`: main table, protocol
/// [`ROUTE_PROTOCOL`], unicast, scope link for IPv4 (directly reachable through the tunnel, no
/// gateway), scope universe for IPv6 (which has no link scope for routes).
pub fn route_message(index: u32, route: IpNet) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = family_of(route.addr());
    message.header.destination_prefix_length = route.prefix_len();
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    message.header.scope = match route {
        IpNet::V4(_) => RouteScope::Link,
        IpNet::V6(_) => RouteScope::Universe,
    };
    message.header.kind = RouteType::Unicast;
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            route.addr(),
        )));
    message.attributes.push(RouteAttribute::Oif(index));
    message
}

/// `RTM_DELROUTE` for our route to `route`: with the protocol set, the kernel deletes only a
/// route with that protocol (and, with `RTA_OIF`, only through our interface). Scope "nowhere"
/// is the wildcard scope for deletion, as `ip route del` sends it.
pub fn delete_route_message(index: u32, route: IpNet) -> RouteMessage {
    let mut message = route_message(index, route);
    message.header.scope = RouteScope::NoWhere;
    message
}

fn destination_of(route: &RouteMessage) -> Option<IpNet> {
    let length = route.header.destination_prefix_length;
    let address = route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
            _ => None,
        });
    let address = match (address, u8::from(route.header.address_family)) {
        (Some(address), _) => address,
        // A default route has no RTA_DST.
        (None, family) if family == libc::AF_INET as u8 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, family) if family == libc::AF_INET6 as u8 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    IpNet::new(address, length).ok()
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn route_oif(route: &RouteMessage) -> Option<u32> {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        })
}

fn route_metric(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Priority(metric) => Some(*metric),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::serialize;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn add_route_bytes_carry_protocol_77() {
        let bytes = serialize(
            RouteNetlinkMessage::NewRoute(route_message(7, net("10.1.0.0/16"))),
            Request::Do(NLM_F_CREATE | NLM_F_REPLACE),
            1,
        );
        #[rustfmt::skip]
        let expected: &[u8] = &[
            // nlmsghdr: length 44, RTM_NEWROUTE (24), REQUEST|ACK|REPLACE|CREATE, seq 1, port 0
            44, 0, 0, 0, 24, 0, 0x05, 0x05, 1, 0, 0, 0, 0, 0, 0, 0,
            // rtmsg: AF_INET, /16, src 0, tos 0, main table, proto 77, scope link, unicast, flags
            2, 16, 0, 0, 254, 77, 253, 1, 0, 0, 0, 0,
            // RTA_DST 10.1.0.0
            8, 0, 1, 0, 10, 1, 0, 0,
            // RTA_OIF 7
            8, 0, 4, 0, 7, 0, 0, 0,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn route_messages_round_trip_with_our_protocol() {
        for (route, scope) in [
            (net("10.42.0.0/16"), RouteScope::Link),
            (net("fd00:1:2::/64"), RouteScope::Universe),
        ] {
            for (message, wanted_scope) in [
                (route_message(3, route), scope),
                (delete_route_message(3, route), RouteScope::NoWhere),
            ] {
                let bytes = serialize(RouteNetlinkMessage::DelRoute(message), Request::Do(0), 9);
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
                let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(parsed)) =
                    parsed.payload
                else {
                    panic!("not a route message");
                };
                assert_eq!(u8::from(parsed.header.protocol), ROUTE_PROTOCOL);
                assert_eq!(parsed.header.table, RouteHeader::RT_TABLE_MAIN);
                assert_eq!(parsed.header.scope, wanted_scope);
                assert_eq!(destination_of(&parsed), Some(route));
                assert_eq!(route_oif(&parsed), Some(3));
            }
        }
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let mut message = RouteMessage::default();
        message.header.address_family = family_of(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(destination_of(&message), Some(net("::/0")));
    }
}
