//! Anti-entropy: every [`DIGEST_INTERVAL`] a node sends one random member a digest of its member
//! table, and the two repair only where they differ. This replaces probing every member every
//! minute (a cost that grew with N) as the way a member that missed a join, a route change or a
//! healed partition catches up.
//!
//! The digest splits members into [`BUCKETS`] by the first nibble of their key and hashes each
//! bucket: what every member agrees on about a member (key, addresses, collision counter, routes,
//! relay offer), never what differs by vantage point (endpoints, last seen). A receiver whose
//! buckets differ answers with the entries of those buckets (at most [`MAX_REPAIR_ENTRIES`]) and,
//! unless the digest was itself an answer, with its own digest, so the sender sends its side too.
//! Each side probes the members it lacks and those the other heard from more recently.

use std::time::Duration;
use wgmesh_keys::PublicKey;
use wgmesh_mesh::{Member, MemberTable};

/// One digest sent per node per interval, to one member chosen at random.
pub const DIGEST_INTERVAL: Duration = Duration::from_secs(30);
/// Buckets per digest.
pub const BUCKETS: usize = 16;
/// A repair sends at most this many entries (two gossip datagrams), however many differ: a
/// digest can never make a node send more than that, and repeated rounds finish the job.
pub const MAX_REPAIR_ENTRIES: usize = 2 * wgmesh_exchange::MAX_GOSSIP_ENTRIES;
/// Encoded length: flags, member count, bucket hashes.
pub const DIGEST_LEN: usize = 1 + 2 + 4 * BUCKETS;

const FLAG_ANSWER: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// This digest answers another (it is not answered again).
    pub answer: bool,
    /// Members in the table, the sender included (saturating).
    pub members: u16,
    pub buckets: [u32; BUCKETS],
}

/// The bucket a member falls in.
pub fn bucket_of(key: &PublicKey) -> usize {
    usize::from(key.as_bytes()[0] >> 4)
}

/// What every member agrees on about one member.
fn member_hash(member: &Member) -> u32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(member.public_key.as_bytes());
    hasher.update(&member.mesh_ipv4.octets());
    hasher.update(&member.mesh_ipv6.octets());
    hasher.update(&[member.collision_counter, u8::from(member.relay_offered)]);
    let mut routes: Vec<String> = member.routes.iter().map(ToString::to_string).collect();
    routes.sort_unstable();
    for route in routes {
        hasher.update(route.as_bytes());
        hasher.update(b",");
    }
    let bytes = hasher.finalize();
    let b = bytes.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Digest {
    /// The digest of `members` plus ourselves (`own`, as the others hold us).
    pub fn of(own: &Member, members: &MemberTable, answer: bool) -> Self {
        let mut buckets = [0u32; BUCKETS];
        let mut count = 0usize;
        for member in std::iter::once(own).chain(members.iter()) {
            // XOR: order-independent, and a member's contribution cancels when it leaves.
            buckets[bucket_of(&member.public_key)] ^= member_hash(member);
            count += 1;
        }
        Self {
            answer,
            members: u16::try_from(count).unwrap_or(u16::MAX),
            buckets,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DIGEST_LEN);
        out.push(if self.answer { FLAG_ANSWER } else { 0 });
        out.extend_from_slice(&self.members.to_be_bytes());
        for bucket in self.buckets {
            out.extend_from_slice(&bucket.to_be_bytes());
        }
        out
    }

    /// `None` for anything but exactly [`DIGEST_LEN`] bytes (unknown flag bits are ignored, for
    /// later releases).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != DIGEST_LEN {
            return None;
        }
        let mut buckets = [0u32; BUCKETS];
        for (i, chunk) in bytes[3..].chunks_exact(4).enumerate() {
            buckets[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(Self {
            answer: bytes[0] & FLAG_ANSWER != 0,
            members: u16::from_be_bytes([bytes[1], bytes[2]]),
            buckets,
        })
    }

    /// The buckets where `self` and `other` differ.
    pub fn differing(&self, other: &Self) -> Vec<usize> {
        (0..BUCKETS)
            .filter(|&i| self.buckets[i] != other.buckets[i])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use wgmesh_mesh::Source;

    fn member(n: u8) -> Member {
        let mut key = [n; 32];
        key[0] = n.wrapping_mul(17);
        Member {
            public_key: PublicKey::from_bytes(key),
            mesh_ipv4: Ipv4Addr::new(10, 0, 0, n),
            mesh_ipv6: format!("fd00::{n}")
                .parse()
                .unwrap_or(std::net::Ipv6Addr::LOCALHOST),
            collision_counter: 0,
            endpoint: None,
            control_addr: None,
            routes: Vec::new(),
            source: Source::Lan,
            relay_offered: false,
            last_seen_ms: u64::from(n),
            moved_at_ms: 0,
            relay_via: None,
            relay_endpoint: None,
            name: None,
            version: None,
            name_claim: 0,
        }
    }

    fn table(members: &[Member]) -> MemberTable {
        let mut table = MemberTable::default();
        for m in members {
            table.upsert(m.clone());
        }
        table
    }

    #[test]
    fn equal_views_agree_whatever_the_vantage_point() {
        let (a, b, c) = (member(1), member(2), member(3));
        let mut b_seen_late = b.clone();
        b_seen_late.last_seen_ms = 99_999;
        b_seen_late.endpoint = Some(std::net::SocketAddr::from(([192, 0, 2, 7], 51_820)));
        let at_a = Digest::of(&a, &table(&[b.clone(), c.clone()]), false);
        let at_c = Digest::of(&c, &table(&[a.clone(), b_seen_late]), false);
        assert_eq!(at_a.buckets, at_c.buckets);
        assert_eq!(at_a.members, 3);
        assert!(at_a.differing(&at_c).is_empty());
    }

    #[test]
    fn a_missing_member_or_a_stale_route_shows_in_its_bucket_only() {
        let (a, b, c) = (member(1), member(2), member(3));
        let full = Digest::of(&a, &table(&[b.clone(), c.clone()]), false);
        let missing = Digest::of(&a, &table(std::slice::from_ref(&b)), false);
        assert_eq!(full.differing(&missing), vec![bucket_of(&c.public_key)]);
        let mut routed = c.clone();
        routed.routes = vec![ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
            std::net::Ipv4Addr::new(192, 168, 7, 0),
            24,
        ))];
        let stale = Digest::of(&a, &table(&[b, routed]), false);
        assert_eq!(full.differing(&stale), vec![bucket_of(&c.public_key)]);
    }

    #[test]
    fn encoding_round_trips_and_refuses_other_lengths() {
        let digest = Digest::of(&member(1), &table(&[member(2)]), true);
        let bytes = digest.encode();
        assert_eq!(bytes.len(), DIGEST_LEN);
        assert_eq!(Digest::decode(&bytes), Some(digest));
        assert_eq!(Digest::decode(&bytes[1..]), None);
        assert_eq!(Digest::decode(&[bytes.clone(), vec![0]].concat()), None);
    }
}
