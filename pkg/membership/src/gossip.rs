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
    /// The newcomer's control address and everyone else we know, for it.
    pub to_newcomer: (SocketAddr, Vec<GossipEntry>),
    /// The newcomer, for each other member's control address.
    pub about_newcomer: (GossipEntry, Vec<SocketAddr>),
}

pub fn about_newcomer(members: &MemberTable, newcomer: &PublicKey) -> Option<NewcomerGossip> {
    let about = members.get(newcomer).and_then(gossip_entry)?;
    let others: Vec<(SocketAddr, GossipEntry)> = members
        .iter()
        .filter(|m| m.public_key != *newcomer)
        .filter_map(|m| Some((m.control_addr?, gossip_entry(m)?)))
        .collect();
    Some(NewcomerGossip {
        to_newcomer: (
            about.control,
            others.iter().map(|(_, e)| e.clone()).collect(),
        ),
        about_newcomer: (about, others.iter().map(|(a, _)| *a).collect()),
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
