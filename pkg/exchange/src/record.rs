//! A member's record: who it is, where it can be reached, what it routes. Bounded so that a Hello
//! carrying the largest legal record still fits one 1200-byte datagram.

use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use wgmesh_keys::PublicKey;

/// At most this many candidate endpoints per record.
pub const MAX_ENDPOINTS: usize = 8;
/// At most this many advertised subnets per record.
pub const MAX_ROUTES: usize = 32;
/// `flags` bit 0: this member offers to relay for others.
pub const FLAG_RELAY: u8 = 0b0000_0001;
/// `flags` bit 1: this member's decoder accepts extension blocks, so Hellos to it may carry
/// them. The previous release carries reserved bits unchanged and ignores them, which is what
/// makes this bit a safe way to negotiate (docs/exchange-protocol.md, "Compatibility").
pub const FLAG_EXTENSIONS: u8 = 0b0000_0010;

/// How a member learned one of its own candidate endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    /// An address of a local interface.
    Lan,
    /// The public mapping a STUN server reported.
    Stun,
    /// A source address some other member observed.
    Observed,
    /// Configured by the operator.
    Static,
}

impl EndpointKind {
    pub(crate) const fn to_wire(self) -> u8 {
        match self {
            Self::Lan => 0,
            Self::Stun => 1,
            Self::Observed => 2,
            Self::Static => 3,
        }
    }

    pub(crate) const fn from_wire(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Lan),
            1 => Some(Self::Stun),
            2 => Some(Self::Observed),
            3 => Some(Self::Static),
            _ => None,
        }
    }
}

/// One candidate WireGuard endpoint. IPv6 flow info and scope ids are not carried: a scope id
/// names an interface of the sender and means nothing to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub addr: SocketAddr,
}

/// What a member announces about itself in a Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Must equal the Hello's sender: a member speaks only for itself.
    pub public_key: PublicKey,
    /// Collision counter `n` of the mesh IPv4 derivation (0..=15).
    pub collision_counter: u8,
    pub mesh_ipv4: Ipv4Addr,
    pub mesh_ipv6: Ipv6Addr,
    /// Candidate endpoints, at most [`MAX_ENDPOINTS`].
    pub endpoints: Vec<Endpoint>,
    /// The WireGuard listen port.
    pub listen_port: u16,
    /// Advertised subnets, at most [`MAX_ROUTES`], each in canonical form (no host bits set).
    pub routes: Vec<IpNet>,
    /// Bit 0: [`FLAG_RELAY`], bit 1: [`FLAG_EXTENSIONS`]. Other bits are reserved and carried
    /// unchanged.
    pub flags: u8,
    /// Unix seconds at which the member last changed this record; newer wins.
    pub timestamp: u64,
}

impl Record {
    pub fn relay_offered(&self) -> bool {
        self.flags & FLAG_RELAY != 0
    }

    pub fn accepts_extensions(&self) -> bool {
        self.flags & FLAG_EXTENSIONS != 0
    }
}
