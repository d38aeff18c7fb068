//! The relay extensions: how a member asks a relay to carry its WireGuard datagrams to another
//! member, and how the relay answers (docs/exchange-protocol.md, "Relaying").
//!
//! They ride in Gossip messages, so they are sealed under the exchange key and accepted only
//! from a verified member at its own control address, like all gossip. Relaying is TURN-style:
//! the relay allocates one UDP port per member of the pair and forwards datagrams between the
//! two, so the WireGuard session stays end to end and the relay sees only ciphertext.
//!
//! - [`EXT_RELAY_ASK`] (member → relay): `peer key (32)`: carry my traffic to and from `peer`.
//!   Asked again while relayed, it keeps the allocation alive.
//! - [`EXT_RELAY_GRANT`] (relay → member): `peer key (32) | port (2, big-endian) | role (1)`:
//!   send WireGuard datagrams for `peer` to this port of the relay. Role 0 answers the member's
//!   own ask; role 1 offers the pair to the other member (its ask may not have come yet), with
//!   the asker's gossip entry in the same message so it knows whom the port leads to.
//! - [`EXT_RELAY_REFUSED`] (relay → member): `peer key (32) | reason (1)`.
//! - [`EXT_PUNCH`] (member → member, through the relayed tunnel), a [`Punch`]: empty, "probe my
//!   direct address now" (go); `1 | nonce (8)`, a ping to time the relayed path; `2 | nonce
//!   (8)`, its pong.
//!
//! None of them has [`crate::EXT_CRITICAL`] set: the previous release skips them (and relays at
//! the IP layer instead, which this release no longer does).

use wgmesh_keys::PublicKey;

/// Extension kind (Gossip only): a relay ask, [`RelayAsk`].
pub const EXT_RELAY_ASK: u8 = 5;
/// Extension kind (Gossip only): a relay grant, [`RelayGrant`].
pub const EXT_RELAY_GRANT: u8 = 6;
/// Extension kind (Gossip only): a refused ask, [`RelayRefused`].
pub const EXT_RELAY_REFUSED: u8 = 7;
/// Extension kind (Gossip only): "call me maybe", a [`Punch`]. The end of a relayed pair that
/// leads its direct attempts times the relayed path with a ping, then sends "go" through the
/// tunnel and probes the other's direct address half a round trip later; the other probes as
/// "go" arrives, so both NATs see their host's outbound datagram before the other's arrives.
pub const EXT_PUNCH: u8 = 8;

const KEY_LEN: usize = 32;

/// "Carry my traffic to and from `peer`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAsk {
    pub peer: PublicKey,
}

/// Whom a grant goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRole {
    /// It answers the member's own ask.
    Answer,
    /// The other member asked: the pair is offered to this one.
    Offer,
}

/// "Send WireGuard datagrams for `peer` to my `port`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayGrant {
    pub peer: PublicKey,
    pub port: u16,
    pub role: GrantRole,
}

/// Why a relay refused an ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// This member does not relay.
    NotARelay,
    /// The relay does not reach the peer directly (or does not know it).
    PeerUnknown,
    /// The asker is in as many pairs as the relay allows one member.
    MemberQuota,
    /// The relay carries as many pairs as it allows.
    RelayFull,
    /// Any other reason (a code this release does not know, or a local failure).
    Other,
}

impl RefusalReason {
    const fn to_wire(self) -> u8 {
        match self {
            Self::NotARelay => 1,
            Self::PeerUnknown => 2,
            Self::MemberQuota => 3,
            Self::RelayFull => 4,
            Self::Other => 0,
        }
    }

    const fn from_wire(byte: u8) -> Self {
        match byte {
            1 => Self::NotARelay,
            2 => Self::PeerUnknown,
            3 => Self::MemberQuota,
            4 => Self::RelayFull,
            _ => Self::Other,
        }
    }
}

/// "I will not carry your traffic to `peer`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRefused {
    pub peer: PublicKey,
    pub reason: RefusalReason,
}

/// The value of [`EXT_PUNCH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Punch {
    /// "Probe my direct address now" (the empty value).
    Go,
    /// "Answer at once": times the relayed path.
    Ping(u64),
    /// The answer to [`Punch::Ping`] with the same nonce.
    Pong(u64),
}

impl Punch {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Go => Vec::new(),
            Self::Ping(nonce) => [&[1][..], &nonce.to_be_bytes()].concat(),
            Self::Pong(nonce) => [&[2][..], &nonce.to_be_bytes()].concat(),
        }
    }

    /// `None` unless the value is empty or a known kind with exactly a nonce.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let Some((&kind, nonce)) = value.split_first() else {
            return Some(Self::Go);
        };
        let nonce = u64::from_be_bytes(nonce.try_into().ok()?);
        match kind {
            1 => Some(Self::Ping(nonce)),
            2 => Some(Self::Pong(nonce)),
            _ => None,
        }
    }
}

fn key_at(value: &[u8]) -> Option<PublicKey> {
    let bytes: [u8; KEY_LEN] = value.get(..KEY_LEN)?.try_into().ok()?;
    Some(PublicKey::from_bytes(bytes))
}

impl RelayAsk {
    pub fn encode(&self) -> Vec<u8> {
        self.peer.as_bytes().to_vec()
    }

    /// `None` unless the value is exactly one key.
    pub fn decode(value: &[u8]) -> Option<Self> {
        (value.len() == KEY_LEN).then(|| key_at(value).map(|peer| Self { peer }))?
    }
}

impl RelayGrant {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.peer.as_bytes().to_vec();
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(match self.role {
            GrantRole::Answer => 0,
            GrantRole::Offer => 1,
        });
        out
    }

    /// `None` unless the value has the exact length, a known role and a port other than 0.
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() != KEY_LEN + 3 {
            return None;
        }
        let peer = key_at(value)?;
        let port = u16::from_be_bytes([value[KEY_LEN], value[KEY_LEN + 1]]);
        let role = match value[KEY_LEN + 2] {
            0 => GrantRole::Answer,
            1 => GrantRole::Offer,
            _ => return None,
        };
        (port != 0).then_some(Self { peer, port, role })
    }
}

impl RelayRefused {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.peer.as_bytes().to_vec();
        out.push(self.reason.to_wire());
        out
    }

    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() != KEY_LEN + 1 {
            return None;
        }
        Some(Self {
            peer: key_at(value)?,
            reason: RefusalReason::from_wire(value[KEY_LEN]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_round_trips_and_a_wrong_length_is_refused() {
        let peer = PublicKey::from_bytes([7; 32]);
        let ask = RelayAsk { peer };
        assert_eq!(RelayAsk::decode(&ask.encode()), Some(ask));
        for role in [GrantRole::Answer, GrantRole::Offer] {
            let grant = RelayGrant {
                peer,
                port: 40_001,
                role,
            };
            assert_eq!(RelayGrant::decode(&grant.encode()), Some(grant));
        }
        let refused = RelayRefused {
            peer,
            reason: RefusalReason::RelayFull,
        };
        assert_eq!(RelayRefused::decode(&refused.encode()), Some(refused));
        let grant = RelayGrant {
            peer,
            port: 1,
            role: GrantRole::Offer,
        }
        .encode();
        for value in [&grant[..34], &[&grant[..], &[0]].concat()[..], &[][..]] {
            assert_eq!(RelayGrant::decode(value), None);
        }
        assert_eq!(RelayAsk::decode(&[7; 33]), None);
        // Port 0 and an unknown role are refused; an unknown reason is "other".
        let mut zero = grant.clone();
        zero[32..34].copy_from_slice(&[0, 0]);
        assert_eq!(RelayGrant::decode(&zero), None);
        let mut role = grant;
        role[34] = 9;
        assert_eq!(RelayGrant::decode(&role), None);
        for punch in [Punch::Go, Punch::Ping(u64::MAX), Punch::Pong(3)] {
            assert_eq!(Punch::decode(&punch.encode()), Some(punch));
        }
        assert_eq!(Punch::encode(&Punch::Go), Vec::<u8>::new());
        for bad in [&[1u8][..], &[2, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], &[3; 9][..]] {
            assert_eq!(Punch::decode(bad), None, "{bad:?}");
        }
        let mut reason = refused.encode();
        reason[32] = 200;
        assert_eq!(
            RelayRefused::decode(&reason).map(|r| r.reason),
            Some(RefusalReason::Other)
        );
    }
}
