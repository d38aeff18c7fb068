//! The challenges we issued and not yet saw answered, each with the address it was sent to
//! (issue 13, return routability): an answer proves that its source address is reachable only
//! if that is where its challenge went.
//!
//! Three tables, so that no sender can push out the challenges of another kind: those in our own
//! Probes (we decide how many), those in our answers to members' Probes, and those in our
//! answers to strangers' Probes (anyone holding the secret can make any number of those).

use crate::codec::CHALLENGE_LEN;
use std::collections::HashMap;
use std::net::SocketAddr;
use wgmesh_keys::PublicKey;

type Token = [u8; CHALLENGE_LEN];

/// The source address a datagram from `addr` is compared under: an IPv4-mapped IPv6 address
/// (a dual-stack socket's view of an IPv4 peer) is that IPv4 address.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Which table a challenge is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issuer {
    /// In our own Probe, to an address or the LAN group: any member may answer.
    OwnProbe,
    /// In our Hello answering a verified member's Probe (or Hello).
    ToMember,
    /// In our Hello answering anyone else.
    ToStranger,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    expires_ms: u64,
    /// The member it was issued to, when known (answering its Probe). Challenges in our own
    /// Probes go to an address, not a key, and any member may answer them.
    peer: Option<PublicKey>,
    /// Where it was sent (canonical).
    to: SocketAddr,
}

/// A live challenge that a sender may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answerable {
    pub(crate) issuer: Issuer,
    /// Open to any member (in our own Probe).
    pub(crate) open: bool,
    /// It was sent to a multicast group: no one answer's source was its destination.
    pub(crate) to_group: bool,
    /// The answer comes from the address the challenge was sent to.
    pub(crate) routable: bool,
}

/// One table of outstanding challenges. A challenge bound to one member is consumed by its
/// valid answer, as is one sent to a unicast address (one host listens there); one sent to the
/// LAN group stays answerable by every member until it expires, each member once (the replay
/// cache remembers who answered).
#[derive(Debug)]
struct Table {
    capacity: usize,
    outstanding: HashMap<Token, Outstanding>,
    /// Destinations of live challenges and when the last one sent there expires: an answer from
    /// one of them is expected, so the rate limiter lets it through (see `Exchange`). At most
    /// `capacity` entries.
    destinations: HashMap<SocketAddr, u64>,
}

impl Table {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            outstanding: HashMap::new(),
            destinations: HashMap::new(),
        }
    }

    /// When full of live challenges the one closest to expiry is forgotten: its handshake fails
    /// and is retried, but memory stays bounded.
    fn issue(&mut self, now_ms: u64, token: Token, challenge: Outstanding) {
        if self.outstanding.len() >= self.capacity {
            self.outstanding.retain(|_, c| c.expires_ms > now_ms);
            if self.outstanding.len() >= self.capacity {
                let oldest = self
                    .outstanding
                    .iter()
                    .min_by_key(|(_, c)| c.expires_ms)
                    .map(|(token, _)| *token);
                if let Some(oldest) = oldest {
                    self.outstanding.remove(&oldest);
                }
            }
        }
        if self.destinations.len() >= self.capacity
            && !self.destinations.contains_key(&challenge.to)
        {
            self.destinations.retain(|_, expires| *expires > now_ms);
            if self.destinations.len() >= self.capacity {
                // Only the limiter's exemption is lost; the challenge itself is kept.
                let oldest = self
                    .destinations
                    .iter()
                    .min_by_key(|(_, expires)| **expires)
                    .map(|(addr, _)| *addr);
                if let Some(oldest) = oldest {
                    self.destinations.remove(&oldest);
                }
            }
        }
        let expires = self.destinations.entry(challenge.to).or_insert(0);
        *expires = (*expires).max(challenge.expires_ms);
        self.outstanding.insert(token, challenge);
    }
}

/// The three tables (see the module documentation).
#[derive(Debug)]
pub(crate) struct Challenges {
    lifetime_ms: u64,
    own: Table,
    to_members: Table,
    to_strangers: Table,
}

impl Challenges {
    /// Each table holds at most `capacity` challenges.
    pub(crate) fn new(capacity: usize, lifetime_ms: u64) -> Self {
        Self {
            lifetime_ms,
            own: Table::new(capacity),
            to_members: Table::new(capacity),
            to_strangers: Table::new(capacity),
        }
    }

    fn table(&self, issuer: Issuer) -> &Table {
        match issuer {
            Issuer::OwnProbe => &self.own,
            Issuer::ToMember => &self.to_members,
            Issuer::ToStranger => &self.to_strangers,
        }
    }

    fn table_mut(&mut self, issuer: Issuer) -> &mut Table {
        match issuer {
            Issuer::OwnProbe => &mut self.own,
            Issuer::ToMember => &mut self.to_members,
            Issuer::ToStranger => &mut self.to_strangers,
        }
    }

    /// Remembers a challenge sent to `to`: in our own Probe (`peer` is `None`), or in a Hello to
    /// `peer`.
    pub(crate) fn issue(
        &mut self,
        now_ms: u64,
        issuer: Issuer,
        token: Token,
        peer: Option<PublicKey>,
        to: SocketAddr,
    ) {
        let challenge = Outstanding {
            expires_ms: now_ms.saturating_add(self.lifetime_ms),
            peer,
            to: canonical(to),
        };
        self.table_mut(issuer).issue(now_ms, token, challenge);
    }

    /// Whether `token` is a live challenge that `sender` may answer, and whether an answer from
    /// `from` comes from where it was sent.
    pub(crate) fn answerable(
        &self,
        now_ms: u64,
        token: &Token,
        sender: &PublicKey,
        from: SocketAddr,
    ) -> Option<Answerable> {
        [Issuer::OwnProbe, Issuer::ToMember, Issuer::ToStranger]
            .into_iter()
            .find_map(|issuer| {
                let c = self.table(issuer).outstanding.get(token)?;
                let live = c.expires_ms > now_ms && c.peer.as_ref().is_none_or(|p| p == sender);
                live.then(|| Answerable {
                    issuer,
                    open: c.peer.is_none(),
                    to_group: c.to.ip().is_multicast(),
                    routable: c.to == canonical(from),
                })
            })
    }

    /// Whether a challenge of ours sent to `from`, in our own Probe or to a member, may still
    /// be answered: its answer is awaited. (Not one sent to a stranger: its handshake is the
    /// strangers' share, and anyone can make us send one anywhere.)
    pub(crate) fn awaits_answer_from(&self, now_ms: u64, from: SocketAddr) -> bool {
        let from = canonical(from);
        [&self.own, &self.to_members]
            .into_iter()
            .any(|table| table.destinations.get(&from).is_some_and(|e| *e > now_ms))
    }

    pub(crate) fn consume(&mut self, issuer: Issuer, token: &Token) {
        self.table_mut(issuer).outstanding.remove(token);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.own.outstanding.len()
            + self.to_members.outstanding.len()
            + self.to_strangers.outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: PublicKey = PublicKey::from_bytes([1; 32]);
    const K2: PublicKey = PublicKey::from_bytes([2; 32]);

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 51900))
    }

    #[test]
    fn challenges_expire_bind_and_are_bounded() {
        let mut challenges = Challenges::new(2, 30_000);
        challenges.issue(0, Issuer::OwnProbe, [1; 16], None, addr(1));
        challenges.issue(0, Issuer::ToStranger, [2; 16], Some(K1), addr(2));
        assert!(
            challenges
                .answerable(29_999, &[1; 16], &K2, addr(1))
                .is_some()
        );
        assert!(
            challenges
                .answerable(30_000, &[1; 16], &K2, addr(1))
                .is_none()
        );
        assert!(challenges.answerable(0, &[2; 16], &K1, addr(2)).is_some());
        assert!(challenges.answerable(0, &[2; 16], &K2, addr(2)).is_none());
        challenges.issue(10, Issuer::OwnProbe, [3; 16], None, addr(3));
        challenges.issue(10, Issuer::OwnProbe, [4; 16], None, addr(4));
        assert_eq!(challenges.len(), 3, "two of ours, one to a stranger");
        challenges.consume(Issuer::OwnProbe, &[3; 16]);
        assert!(challenges.answerable(10, &[3; 16], &K1, addr(3)).is_none());
    }

    #[test]
    fn an_answer_is_routable_only_from_where_its_challenge_went() {
        let mut challenges = Challenges::new(8, 30_000);
        challenges.issue(0, Issuer::OwnProbe, [1; 16], None, addr(1));
        let group = SocketAddr::from(([239, 192, 1, 2], 51900));
        challenges.issue(0, Issuer::OwnProbe, [2; 16], None, group);
        let at = |token, from| challenges.answerable(0, &[token; 16], &K1, from);
        assert!(at(1, addr(1)).is_some_and(|a| a.routable && a.open && !a.to_group));
        assert!(at(1, addr(9)).is_some_and(|a| !a.routable));
        let mapped = SocketAddr::new(
            std::net::Ipv4Addr::new(192, 0, 2, 1)
                .to_ipv6_mapped()
                .into(),
            51900,
        );
        assert!(at(1, mapped).is_some_and(|a| a.routable), "v4-mapped is v4");
        assert!(at(2, addr(1)).is_some_and(|a| !a.routable && a.to_group));
        assert!(challenges.awaits_answer_from(0, addr(1)));
        assert!(!challenges.awaits_answer_from(0, addr(9)));
        assert!(!challenges.awaits_answer_from(30_000, addr(1)));
    }

    #[test]
    fn strangers_cannot_push_out_our_own_challenges() {
        let mut challenges = Challenges::new(4, 30_000);
        challenges.issue(0, Issuer::OwnProbe, [1; 16], None, addr(1));
        challenges.issue(0, Issuer::ToMember, [2; 16], Some(K1), addr(2));
        for n in 0..1_000u32 {
            let mut token = [9u8; 16];
            token[..4].copy_from_slice(&n.to_le_bytes());
            challenges.issue(1, Issuer::ToStranger, token, Some(K2), addr(3));
        }
        assert!(challenges.answerable(2, &[1; 16], &K2, addr(1)).is_some());
        assert!(challenges.answerable(2, &[2; 16], &K1, addr(2)).is_some());
    }
}
