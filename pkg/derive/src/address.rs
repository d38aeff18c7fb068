//! Mesh addresses: a pure function of the network's sub-keys and a member's public key, so any
//! member can check another's claimed address.

use crate::mesh::{MeshKeys, Purpose};
use std::net::{Ipv4Addr, Ipv6Addr};
use wgmesh_keys::PublicKey;

/// The collision counter runs `0..=15`; a member re-addresses by incrementing it.
pub const MAX_COLLISION_COUNTER: u8 = 15;

/// A member's two mesh addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshAddresses {
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl MeshAddresses {
    pub fn derive(keys: &MeshKeys, public_key: &PublicKey, counter: u8) -> Self {
        Self {
            ipv4: mesh_ipv4(keys, public_key, counter),
            ipv6: mesh_ipv6(keys, public_key),
        }
    }

    /// Whether a member's claimed addresses are the ones its key and counter derive to.
    /// Counters beyond [`MAX_COLLISION_COUNTER`] are never valid.
    pub fn verify(&self, keys: &MeshKeys, public_key: &PublicKey, counter: u8) -> bool {
        counter <= MAX_COLLISION_COUNTER && *self == Self::derive(keys, public_key, counter)
    }
}

/// `h = keyed_hash(K(ipv4 host), pubkey ‖ [n])`; the host part is `h[0..2]`, with a last octet of
/// 0 moved to 1 and 255 moved to 254 so no member sits on a network or broadcast-looking address.
pub fn mesh_ipv4(keys: &MeshKeys, public_key: &PublicKey, counter: u8) -> Ipv4Addr {
    let key = keys.subkey(Purpose::Ipv4Host);
    let mut input = [0u8; 33];
    input[..32].copy_from_slice(public_key.as_bytes());
    input[32] = counter;
    let h = blake3::keyed_hash(&key, &input);
    let h = h.as_bytes();
    let fourth = match h[1] {
        0 => 1,
        255 => 254,
        other => other,
    };
    let subnet = keys.ipv4_subnet().network().octets();
    Ipv4Addr::new(subnet[0], subnet[1], h[0], fourth)
}

/// The /64 prefix followed by the first 8 bytes of `keyed_hash(K(ipv6 host), pubkey)`, with the
/// universal/local bit (0x02 of the interface identifier's first byte) cleared, as RFC 4291
/// expects of identifiers that are not derived from a globally unique MAC.
pub fn mesh_ipv6(keys: &MeshKeys, public_key: &PublicKey) -> Ipv6Addr {
    let key = keys.subkey(Purpose::Ipv6Host);
    let h = blake3::keyed_hash(&key, public_key.as_bytes());
    let mut octets = keys.ipv6_prefix().network().octets();
    octets[8..16].copy_from_slice(&h.as_bytes()[..8]);
    octets[8] &= !0x02;
    Ipv6Addr::from(octets)
}
