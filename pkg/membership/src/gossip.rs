//! In-mesh gossip (DESIGN.md §8): a newcomer hears of everyone we know, and everyone hears of
//! the newcomer, so a mesh converges even where each member found only one other.

use std::net::SocketAddr;

/// How many members each member tells about a newcomer (or a member that moved). Each member
/// that then verifies it tells as many again, so news reaches all N in about log₄ N hops.
pub const FANOUT: usize = 4;
use wgmesh_exchange::{Endpoint, EndpointKind, GossipEntry, Record};
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{Member, MemberTable};

/// What we know of `member`, as a gossip entry: only members with a known control address and
/// endpoint are worth passing on.
pub fn gossip_entry(member: &Member) -> Option<GossipEntry> {
    let control = member.control_addr?;
    let endpoint = member.endpoint?;
    Some(GossipEntry {
        control,
        record: Record {
            public_key: member.public_key,
            collision_counter: member.collision_counter,
            mesh_ipv4: member.mesh_ipv4,
            mesh_ipv6: member.mesh_ipv6,
            endpoints: vec![Endpoint {
                kind: EndpointKind::Observed,
                addr: endpoint,
            }],
            listen_port: endpoint.port(),
            routes: Vec::new(),
            flags: if member.relay_offered {
                wgmesh_exchange::FLAG_RELAY
            } else {
                0
            },
            timestamp: member.last_seen_ms / 1000,
        },
    })
}

/// Members other than a newcomer that gossip can pass on ([`MemberTable::reachable`] without
/// the newcomer), by position in key order, without building a list: a mesh forming at once
/// looks here at every join, and a scan of the table each time made that cubic in its size.
#[derive(Debug)]
pub struct Others<'a> {
    members: &'a MemberTable,
    keys: &'a [PublicKey],
    /// The newcomer's position in `keys`, if it is there.
    skip: Option<usize>,
}

impl<'a> Others<'a> {
    pub fn new(members: &'a MemberTable, newcomer: &PublicKey) -> Self {
        let keys = members.reachable();
        Self {
            members,
            keys,
            skip: keys.binary_search(newcomer).ok(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len() - usize::from(self.skip.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The member at `position` (below [`Self::len`]).
    pub fn get(&self, position: usize) -> Option<&'a Member> {
        let index = match self.skip {
            Some(skip) if position >= skip => position + 1,
            _ => position,
        };
        self.members.get(self.keys.get(index)?)
    }
}

/// `keep` distinct positions below `len`, uniformly at random (`below(n)` draws from `0..n`):
/// a partial Fisher–Yates shuffle of `0..len` that records only the positions it moves, so it
/// costs `keep` draws and not `len` writes. All of them, in order, when `len <= keep`.
pub fn sample_positions(
    len: usize,
    keep: usize,
    mut below: impl FnMut(usize) -> usize,
) -> Vec<usize> {
    if len <= keep {
        return (0..len).collect();
    }
    // Positions whose value is no longer their own index.
    let mut moved: Vec<(usize, usize)> = Vec::with_capacity(keep);
    let value_at = |moved: &[(usize, usize)], position: usize| {
        moved
            .iter()
            .rev()
            .find(|(p, _)| *p == position)
            .map_or(position, |(_, v)| *v)
    };
    let mut picked = Vec::with_capacity(keep);
    for i in 0..keep {
        let j = i + below(len - i);
        let (at_i, at_j) = (value_at(&moved, i), value_at(&moved, j));
        // Swap: position i is final from here on (later swaps only touch positions above it).
        moved.push((j, at_i));
        picked.push(at_j);
    }
    picked
}

/// Whether gossip from `sender`, arriving from `from`, is to be acted on: only from a verified
/// member at the address we know it by, or from its own mesh address (through its tunnel, which
/// WireGuard authenticates) (the secret gate alone is not membership).
pub fn from_member(members: &MemberTable, sender: &PublicKey, from: SocketAddr) -> bool {
    members.get(sender).is_some_and(|m| {
        m.control_addr.map(|a| a.ip()) == Some(from.ip())
            || from.ip() == std::net::IpAddr::V4(m.mesh_ipv4)
    })
}

/// The control addresses worth probing in received gossip: members we do not know, and known
/// ones named at a new address (they moved).
pub fn worth_probing(members: &MemberTable, entries: &[GossipEntry]) -> Vec<SocketAddr> {
    entries
        .iter()
        .filter(|e| {
            // A relayed member's direct address waits for its coordinated attempt
            // (crate::direct).
            members
                .get(&e.record.public_key)
                .is_none_or(|m| m.relay_via.is_none() && m.control_addr != Some(e.control))
        })
        .map(|e| e.control)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shuffle it stands in for: swap each of the first `keep` places with a random later
    /// one, keep the first `keep`.
    fn shuffled(len: usize, keep: usize, mut below: impl FnMut(usize) -> usize) -> Vec<usize> {
        let mut items: Vec<usize> = (0..len).collect();
        if len <= keep {
            return items;
        }
        for i in 0..keep {
            let j = i + below(len - i);
            items.swap(i, j);
        }
        items.truncate(keep);
        items
    }

    #[test]
    fn sampled_positions_are_the_partial_shuffle_of_the_whole_list() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut draws = Vec::new();
        for len in [0, 1, 3, 4, 5, 17, 1_000] {
            for keep in [0, 1, 4, 16] {
                draws.clear();
                let mut below = |n: usize| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let draw = (state % n as u64) as usize;
                    draws.push(draw);
                    draw
                };
                let picked = sample_positions(len, keep, &mut below);
                let mut replay = draws.iter().copied();
                let expected = shuffled(len, keep, |_| replay.next().unwrap());
                assert_eq!(picked, expected, "{keep} of {len}");
                let mut distinct = picked.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), keep.min(len), "{keep} of {len}");
                assert!(picked.iter().all(|&p| p < len));
            }
        }
    }
}
