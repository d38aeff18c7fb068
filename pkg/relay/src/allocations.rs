//! The relay's table of pairs: admission, routing of each datagram, expiry.
//!
//! A pair is created in two steps because the relay ports come from the kernel: [`admit`]
//! checks the quotas, the shell binds the two sockets, [`insert`] records the ports it got.
//!
//! [`admit`]: Allocations::admit
//! [`insert`]: Allocations::insert

use crate::{Limits, Side};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use wgmesh_keys::PublicKey;

/// A pair's identity at this relay; never reused, so a late signal about a released pair cannot
/// hit a newer one that got the same ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairId(u64);

/// A pair's two relay ports as one member sees them: `asker` is the port facing that member
/// (its WireGuard endpoint for the other member is `relay:asker`), `peer` the port facing the
/// other member (the other member's endpoint for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPorts {
    pub asker: u16,
    pub peer: u16,
}

/// What [`Allocations::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The two members already have a pair here: its ports, the asker's first.
    Existing(RelayPorts),
    /// The quotas leave room: bind two sockets and [`Allocations::insert`] their ports.
    New,
}

/// Why a pair is not allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{} asked to be relayed to itself", .key.short())]
    SamePeer { key: PublicKey },
    #[error("{} is already in {limit} relayed pairs at this relay", .key.short())]
    MemberQuota { key: PublicKey, limit: usize },
    #[error("this relay already forwards for {limit} pairs")]
    RelayFull { limit: usize },
    /// [`Allocations::insert`] for two members that already have a pair (another insert came
    /// between `admit` and this one).
    #[error("{} and {} already have a relayed pair", .asker.short(), .peer.short())]
    PairExists { asker: PublicKey, peer: PublicKey },
    /// [`Allocations::insert`] with a port another pair holds (or both ports the same).
    #[error("relay port {port} is already allocated")]
    PortInUse { port: u16 },
}

/// Where a datagram goes: out of relay port `via`, to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub via: u16,
    pub to: SocketAddr,
}

/// Why a datagram is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// No pair holds this port (released, or never allocated).
    UnknownPort,
    /// The source is not the IP the control plane verified for the member this port faces.
    Stranger,
    /// The far member has sent nothing yet, so there is no address to send to. Guessing one
    /// (the address it reached the control plane from, say) is not an option: an unsolicited
    /// datagram to a NAT's public port creates a conntrack entry that later breaks hole
    /// punching between the two members.
    FarSideSilent,
}

/// Datagrams and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub datagrams: u64,
    pub bytes: u64,
}

/// One end of a pair, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideStatus {
    pub key: PublicKey,
    /// The underlay IP the control plane verified; the only source this side's port accepts.
    pub ip: IpAddr,
    /// The relay port facing this member.
    pub port: u16,
    /// Where the other member's datagrams go: the latest source of this member's datagrams.
    pub latched: Option<SocketAddr>,
    /// Received from this member and forwarded to the other.
    pub forwarded: Traffic,
    /// Datagrams that arrived at this side's port and were not forwarded.
    pub dropped: u64,
}

/// A relayed pair, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairStatus {
    pub id: PairId,
    /// In the order of the request that created the pair: the asker first.
    pub sides: [SideStatus; 2],
    /// When the pair last forwarded a datagram (or was created or asked for again); it is
    /// released once idle for [`Limits::idle`].
    pub last_use: Instant,
}

impl PairStatus {
    /// The pair's ports as `asker` sees them (`asker` is one of the two sides).
    fn ports_for(&self, asker: &PublicKey) -> RelayPorts {
        let [first, second] = &self.sides;
        let (near, far) = if first.key == *asker {
            (first, second)
        } else {
            (second, first)
        };
        RelayPorts {
            asker: near.port,
            peer: far.port,
        }
    }

    fn has(&self, key: &PublicKey) -> bool {
        self.sides.iter().any(|side| side.key == *key)
    }

    fn joins(&self, a: &PublicKey, b: &PublicKey) -> bool {
        self.has(a) && self.has(b)
    }

    /// Takes the control plane's latest verification of a side. A new IP drops the latch: the
    /// old address is no longer the member's, and nothing goes out until it sends from the new.
    fn verified(&mut self, side: Side) {
        let ip = side.ip.to_canonical();
        for end in self.sides.iter_mut().filter(|end| end.key == side.key) {
            if end.ip != ip {
                end.ip = ip;
                end.latched = None;
            }
        }
    }
}

/// The relay's pairs. Pure: the caller passes the time and does all IO.
#[derive(Debug)]
pub struct Allocations {
    limits: Limits,
    pairs: BTreeMap<PairId, PairStatus>,
    /// Every allocated relay port: its pair and which side (index into `sides`) it faces. Looked
    /// up for every datagram.
    ports: HashMap<u16, (PairId, usize)>,
    next_id: u64,
}

impl Allocations {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pairs: BTreeMap::new(),
            ports: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A verified member asks for a pair with `peer`. If the two already have one (whichever
    /// asked first), its ports, the asker's first; the request refreshes the sides' IPs and the
    /// pair's idle clock. Otherwise the quotas decide, and [`Admission::New`] asks the caller to
    /// bind two sockets and [`insert`](Self::insert) their ports.
    pub fn admit(&mut self, now: Instant, asker: Side, peer: Side) -> Result<Admission, Refused> {
        if asker.key == peer.key {
            return Err(Refused::SamePeer { key: asker.key });
        }
        if let Some(pair) = self
            .pairs
            .values_mut()
            .find(|pair| pair.joins(&asker.key, &peer.key))
        {
            pair.verified(asker);
            pair.verified(peer);
            pair.last_use = pair.last_use.max(now);
            return Ok(Admission::Existing(pair.ports_for(&asker.key)));
        }
        self.check_room(&asker.key, &peer.key)?;
        Ok(Admission::New)
    }

    /// Records a new pair on the two relay ports the caller bound after [`admit`](Self::admit)
    /// returned [`Admission::New`]. Checks again (a pair or another allocation may have come in
    /// between); on an error the caller closes the two sockets.
    pub fn insert(
        &mut self,
        now: Instant,
        asker: Side,
        peer: Side,
        ports: RelayPorts,
    ) -> Result<PairId, Refused> {
        if asker.key == peer.key {
            return Err(Refused::SamePeer { key: asker.key });
        }
        if self
            .pairs
            .values()
            .any(|pair| pair.joins(&asker.key, &peer.key))
        {
            return Err(Refused::PairExists {
                asker: asker.key,
                peer: peer.key,
            });
        }
        self.check_room(&asker.key, &peer.key)?;
        if ports.asker == ports.peer {
            return Err(Refused::PortInUse { port: ports.peer });
        }
        if let Some(port) = [ports.asker, ports.peer]
            .into_iter()
            .find(|port| self.ports.contains_key(port))
        {
            return Err(Refused::PortInUse { port });
        }
        let id = PairId(self.next_id);
        self.next_id += 1;
        let side = |side: Side, port| SideStatus {
            key: side.key,
            ip: side.ip.to_canonical(),
            port,
            latched: None,
            forwarded: Traffic::default(),
            dropped: 0,
        };
        self.ports.insert(ports.asker, (id, 0));
        self.ports.insert(ports.peer, (id, 1));
        self.pairs.insert(
            id,
            PairStatus {
                id,
                sides: [side(asker, ports.asker), side(peer, ports.peer)],
                last_use: now,
            },
        );
        Ok(id)
    }

    fn check_room(&self, asker: &PublicKey, peer: &PublicKey) -> Result<(), Refused> {
        for key in [asker, peer] {
            let limit = self.limits.per_member;
            if self.pairs.values().filter(|pair| pair.has(key)).count() >= limit {
                return Err(Refused::MemberQuota { key: *key, limit });
            }
        }
        if self.pairs.len() >= self.limits.pairs {
            return Err(Refused::RelayFull {
                limit: self.limits.pairs,
            });
        }
        Ok(())
    }

    /// A datagram of `len` bytes arrived on relay port `port` from `from`: where to send it, or
    /// why it is dropped.
    ///
    /// Only the IP the control plane verified for the side this port faces is accepted; the
    /// source port is latched (the latest source from that IP is where the other side's
    /// datagrams go), so a NAT rebinding is followed at the next datagram. Until the far side
    /// has sent something, there is nowhere to send ([`Dropped::FarSideSilent`]). A forwarded
    /// datagram is counted and keeps the pair from expiring.
    pub fn route(
        &mut self,
        now: Instant,
        port: u16,
        from: SocketAddr,
        len: usize,
    ) -> Result<Forward, Dropped> {
        let Some(&(id, half)) = self.ports.get(&port) else {
            return Err(Dropped::UnknownPort);
        };
        let Some(pair) = self.pairs.get_mut(&id) else {
            return Err(Dropped::UnknownPort);
        };
        // A socket bound to `[::]` reports IPv4 sources as IPv4-mapped IPv6.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let [first, second] = &mut pair.sides;
        let (near, far) = if half == 0 {
            (first, second)
        } else {
            (second, first)
        };
        if from.ip() != near.ip {
            near.dropped += 1;
            return Err(Dropped::Stranger);
        }
        near.latched = Some(from);
        let Some(to) = far.latched else {
            near.dropped += 1;
            return Err(Dropped::FarSideSilent);
        };
        near.forwarded.datagrams += 1;
        near.forwarded.bytes += len as u64;
        pair.last_use = pair.last_use.max(now);
        Ok(Forward { via: far.port, to })
    }

    /// Releases the pairs idle for [`Limits::idle`] and returns them with their final counters;
    /// the caller closes their sockets.
    pub fn expire(&mut self, now: Instant) -> Vec<PairStatus> {
        let idle = self.limits.idle;
        self.release_where(|pair| now.saturating_duration_since(pair.last_use) >= idle)
    }

    /// A member left the relay's mesh: releases its pairs and returns them.
    pub fn forget(&mut self, key: &PublicKey) -> Vec<PairStatus> {
        self.release_where(|pair| pair.has(key))
    }

    fn release_where(&mut self, mut release: impl FnMut(&PairStatus) -> bool) -> Vec<PairStatus> {
        let mut released = Vec::new();
        self.pairs.retain(|_, pair| {
            let gone = release(pair);
            if gone {
                released.push(pair.clone());
            }
            !gone
        });
        for pair in &released {
            for side in &pair.sides {
                self.ports.remove(&side.port);
            }
        }
        released
    }

    /// When [`expire`](Self::expire) next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pairs
            .values()
            .filter_map(|pair| pair.last_use.checked_add(self.limits.idle))
            .min()
    }

    /// The pairs, oldest first.
    pub fn pairs(&self) -> impl Iterator<Item = &PairStatus> {
        self.pairs.values()
    }
}

#[cfg(test)]
mod tests;
