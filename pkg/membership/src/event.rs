//! What the core asks of its shell: datagrams to send and events to act on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{Member, MemberChange, Source};
use wgmesh_names::MemberName;

/// A datagram to send from the control socket. A multicast `dst` (the LAN group) is sent once
/// per LAN interface by the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Why the core wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerReason {
    /// A discovery source is due to be polled.
    Discovery(Source),
    /// The failure detector's next probe, retry or verdict.
    Liveness,
    /// The next anti-entropy digest.
    Digest,
    /// The DHT's pace is due for review.
    DhtReview,
    /// A member has not yet answered the announcement of our new record.
    Announce,
    /// A repeated probe (hole punching, a probe through a tunnel).
    Punch,
    /// A second-hand member's time to answer directly ran out.
    Relay,
}

/// What happened to an IPv4 collision (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collision {
    /// The other member re-addresses itself; it is not installed until it has.
    OtherMoves,
    /// We move to this collision counter: the shell persists it, derives the new addresses and
    /// hands the new record back through [`crate::Membership::handle_readdressed`].
    WeMove { counter: u8 },
    /// No counter left: we keep the address.
    Exhausted,
    /// We are not yet the incumbent but moved within the cooldown: we keep the address for now
    /// and the claimant is not installed.
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member proved itself (joined, changed, or was only refreshed). The shell mirrors
    /// `member` into the table the reconciler reads.
    Member {
        member: Box<Member>,
        change: MemberChange,
        from: SocketAddr,
    },
    /// A member announced a different name from the one it had.
    Renamed {
        key: PublicKey,
        old: Option<MemberName>,
        new: Option<MemberName>,
    },
    /// A relayed member answered directly: it is no longer relayed.
    DirectPath {
        key: PublicKey,
        relay: PublicKey,
        from: SocketAddr,
    },
    /// A member reached directly stopped answering there (it is a suspect) and a relay granted
    /// the pair a port: it is relayed from now on (`Event::Member` carries the new path).
    DirectPathLost { key: PublicKey, relay: PublicKey },
    /// A member heard of by gossip did not answer directly: it is on trial through `relay`,
    /// which granted the pair a port (`member.relay_endpoint`). The shell installs `member` as
    /// its own WireGuard peer with that endpoint and its own /32 and /128 only (it has no
    /// routes), so that its proof can come through the tunnel end to end; it becomes a member
    /// ([`Event::Member`]) only with that proof, or is withdrawn ([`Event::RelayUnproven`]).
    Relayed {
        member: Box<Member>,
        relay: PublicKey,
    },
    /// A member heard of by gossip did not answer directly and no member offers to relay (or
    /// the relay refused the pair).
    Unreachable { key: PublicKey },
    /// We relay, and the member `asker` (at `asker_ip`) asks us to carry its WireGuard traffic
    /// to and from `peer` (which we reach at `peer_ip`). The shell allocates a port for each
    /// and answers with [`crate::Membership::relay_allocated`].
    RelayAsked {
        asker: PublicKey,
        asker_ip: IpAddr,
        peer: PublicKey,
        peer_ip: IpAddr,
    },
    /// A relayed trial ([`Event::Relayed`]) brought no proof of key possession in time: the
    /// shell removes what it installed for it.
    RelayUnproven { key: PublicKey, mesh_ipv4: Ipv4Addr },
    /// A member answered none of our failure detector's probes: suspected. It stays a member
    /// (tunnel and routes) until [`crate::liveness::SUSPECT_TIMEOUT`] passes without an answer.
    Suspect { key: PublicKey, mesh_ipv4: Ipv4Addr },
    /// A suspect answered again.
    Cleared { key: PublicKey },
    /// A suspect stayed silent: removed.
    Failed { key: PublicKey, mesh_ipv4: Ipv4Addr },
    /// A member (or a relayed trial) was removed to keep the member table within its cap
    /// (it was a suspect, or a newcomer refused while on trial): the shell removes it too.
    Evicted { key: PublicKey, mesh_ipv4: Ipv4Addr },
    /// A member said goodbye.
    Left {
        key: PublicKey,
        mesh_ipv4: Option<Ipv4Addr>,
    },
    /// A verified member claims an address another member already holds here: it is not
    /// installed (reported once per member until it re-addresses).
    Contested {
        key: PublicKey,
        holder: PublicKey,
        mesh_ipv4: Ipv4Addr,
    },
    /// A member claims our IPv4.
    Collision {
        peer: PublicKey,
        mesh_ipv4: Ipv4Addr,
        outcome: Collision,
    },
    /// A datagram under the mesh key with a timestamp outside the window (a wrong clock).
    ClockSkew { from: SocketAddr, offset_secs: i64 },
    /// Poll this discovery source and hand its candidates to
    /// [`crate::Membership::handle_candidates`].
    PollDiscovery(Source),
    /// Set the DHT's lookup pace.
    DhtFast(bool),
}
