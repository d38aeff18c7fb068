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

/// Who is told what when `newcomer` joined (or moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewcomerGossip {
    /// The newcomer's control address and some others we know, for it.
    pub to_newcomer: (SocketAddr, Vec<GossipEntry>),
    /// The newcomer, for every other member's control address (the caller picks a few).
    pub about_newcomer: (GossipEntry, Vec<SocketAddr>),
}

/// What to tell when `newcomer` joined (or moved): `to_newcomer` entries about others for it
/// (`sample(items, keep)` keeps `keep` random elements of `items`), and every other member's
/// control address, to pick from. Entries are built only for the members picked: building one
/// for every member at every join made forming a mesh cubic in its size.
pub fn about_newcomer(
    members: &MemberTable,
    newcomer: &PublicKey,
    to_newcomer: usize,
    sample: impl FnOnce(&mut Vec<&Member>, usize),
) -> Option<NewcomerGossip> {
    let about = members.get(newcomer).and_then(gossip_entry)?;
    let eligible: Vec<&Member> = members
        .iter()
        .filter(|m| m.public_key != *newcomer && m.control_addr.is_some() && m.endpoint.is_some())
        .collect();
    let others = eligible.iter().filter_map(|m| m.control_addr).collect();
    let mut picked = eligible;
    sample(&mut picked, to_newcomer);
    Some(NewcomerGossip {
        to_newcomer: (
            about.control,
            picked.into_iter().filter_map(gossip_entry).collect(),
        ),
        about_newcomer: (about, others),
    })
}

/// Whether gossip from `sender`, arriving from `from`, is to be acted on: only from a verified
/// member at the address we know it by (the secret gate alone is not membership).
pub fn from_member(members: &MemberTable, sender: &PublicKey, from: SocketAddr) -> bool {
    members
        .get(sender)
        .is_some_and(|m| m.control_addr.map(|a| a.ip()) == Some(from.ip()))
}

/// The control addresses worth probing in received gossip: members we do not know, and known
/// ones named at a new address (they moved).
pub fn worth_probing(members: &MemberTable, entries: &[GossipEntry]) -> Vec<SocketAddr> {
    entries
        .iter()
        .filter(|e| {
            members
                .get(&e.record.public_key)
                .is_none_or(|m| m.control_addr != Some(e.control))
        })
        .map(|e| e.control)
        .collect()
}
