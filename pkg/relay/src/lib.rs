//! The data path of a wgmesh relay, without IO: which relay port a datagram leaves from, and to
//! whom.
//!
//! Two members that cannot reach each other directly (both behind endpoint-dependent NAT, so no
//! hole can be punched) talk through a member that offers to relay (DESIGN.md §6). The relay must
//! not be able to read their traffic, so it forwards WireGuard's UDP datagrams untouched, as a
//! TURN server does (RFC 8656): for each relayed pair (A, B) it opens two UDP ports on itself,
//! `port_a` facing A and `port_b` facing B. A's WireGuard endpoint for B is `relay:port_a`, B's
//! endpoint for A is `relay:port_b`; what arrives at `port_a` from A leaves from `port_b` to B,
//! and the other way round. The WireGuard session stays end to end between A and B, the relay
//! holds none of their allowed IPs and needs no IP forwarding. Ports per pair rather than a
//! header naming the destination, because neither the kernel module nor wireguard-go lets us add
//! framing on WireGuard's own socket.
//!
//! [`Allocations`] is the relay's table of pairs: admission and quotas ([`Allocations::admit`]),
//! where a datagram goes ([`Allocations::route`]), idle expiry ([`Allocations::expire`]). The
//! daemon's IO shell (`src/daemon/relay_io.rs`) owns the sockets and the clock: it feeds in each
//! datagram's relay port and source and sends where it is told.
//!
//! **Who may send.** The relay's control plane verifies both members (key possession) and hands
//! over the underlay IP each one reached it from ([`Side`]). A relay port accepts datagrams only
//! from that IP; the source *port* is learnt from the traffic (latched), because a NAT may
//! rebind it at any time. Like TURN's permissions, which are per IP too, this does not stop
//! another host behind A's public IP from taking over A's latch: it then receives B's datagrams,
//! which it can neither read nor forge (WireGuard authenticates every one), until A sends again.

mod allocations;

pub use allocations::{
    Admission, Allocations, Dropped, Forward, PairId, PairStatus, Refused, RelayPorts, SideStatus,
    Traffic,
};

use std::net::IpAddr;
use std::time::Duration;
use wgmesh_keys::PublicKey;

/// Pairs one member may be in at one relay. A member relayed to more peers than this has a
/// network problem a relay should not hide, and one member must not take the relay's whole
/// [`MAX_PAIRS`].
pub const MAX_ALLOCATIONS_PER_MEMBER: usize = 8;

/// Pairs one relay forwards for. Each pair costs two UDP sockets (with their kernel buffers) and
/// a forwarding task.
pub const MAX_PAIRS: usize = 64;

/// A pair that forwarded no datagram for this long is released. WireGuard's persistent
/// keepalive (25 s in wgmesh) keeps a pair in use far more often than this, so only a pair whose
/// members stopped using it, or never both started, expires.
pub const IDLE_RELEASE: Duration = Duration::from_secs(120);

/// The relay's quotas and idle timeout; [`Limits::default`] is the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pairs one member may be in.
    pub per_member: usize,
    /// Pairs in all.
    pub pairs: usize,
    /// A pair with no forwarded datagram for this long is released.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_member: MAX_ALLOCATIONS_PER_MEMBER,
            pairs: MAX_PAIRS,
            idle: IDLE_RELEASE,
        }
    }
}

/// One end of a relayed pair as the relay's control plane verified it: the member's WireGuard
/// key and the underlay IP it reached the relay from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub key: PublicKey,
    pub ip: IpAddr,
}

impl Side {
    pub fn new(key: PublicKey, ip: IpAddr) -> Self {
        Self { key, ip }
    }
}
