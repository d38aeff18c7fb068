//! Properties of the derivation that must hold for every secret and key.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

use proptest::prelude::*;
use std::sync::OnceLock;
use wgmesh_derive::{MeshAddresses, MeshKeys, NodeSeed, Secret, mesh_ipv4, mesh_ipv6};
use wgmesh_keys::PublicKey;

/// Argon2 is deliberately slow, so the per-key properties share one network.
fn mesh() -> &'static MeshKeys {
    static KEYS: OnceLock<MeshKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        MeshKeys::derive(&Secret::parse("property-test-secret-0123456789").unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ipv4_is_inside_the_subnet_and_never_0_or_255(key in any::<[u8; 32]>(), n in 0u8..=15) {
        let keys = mesh();
        let ip = mesh_ipv4(keys, &PublicKey::from_bytes(key), n);
        prop_assert!(keys.ipv4_subnet().contains(&ip));
        prop_assert_ne!(ip.octets()[3], 0);
        prop_assert_ne!(ip.octets()[3], 255);
    }

    #[test]
    fn ipv6_is_inside_the_prefix_with_ul_bit_clear(key in any::<[u8; 32]>()) {
        let keys = mesh();
        let ip = mesh_ipv6(keys, &PublicKey::from_bytes(key));
        prop_assert!(keys.ipv6_prefix().contains(&ip));
        prop_assert_eq!(ip.octets()[8] & 0x02, 0);
    }

    #[test]
    fn addresses_verify_only_for_their_own_key_and_counter(
        key in any::<[u8; 32]>(), other in any::<[u8; 32]>(), n in 0u8..=15, m in 0u8..=255
    ) {
        let keys = mesh();
        let key = PublicKey::from_bytes(key);
        let addrs = MeshAddresses::derive(keys, &key, n);
        prop_assert!(addrs.verify(keys, &key, n));
        prop_assert!(!addrs.verify(keys, &key, m.max(16)), "counter out of range must fail");
        let other = PublicKey::from_bytes(other);
        if other != key {
            let stolen = MeshAddresses::derive(keys, &other, n);
            // A different key almost never derives to the same pair; when it does not, the
            // claim must be refused.
            if stolen != addrs {
                prop_assert!(!stolen.verify(keys, &key, n));
            }
        }
    }

    #[test]
    fn node_keys_are_clamped_and_deterministic(seed in any::<[u8; 32]>()) {
        let keys = mesh();
        let seed = NodeSeed::from_bytes(seed);
        let private = keys.node_private_key(&seed);
        let bytes = private.expose_bytes();
        prop_assert_eq!(bytes[0] & 7, 0);
        prop_assert_eq!(bytes[31] & 0x80, 0);
        prop_assert_eq!(bytes[31] & 0x40, 0x40);
        prop_assert_eq!(keys.node_public_key(&seed), private.public_key());
        prop_assert_eq!(NodeSeed::from_hex(&seed.to_hex()).unwrap(), seed);
    }

    #[test]
    fn infohashes_differ_per_hour(hour in 0u64..u64::MAX) {
        let keys = mesh();
        prop_assert_eq!(keys.dht_infohash(hour), keys.dht_infohash(hour));
        prop_assert_ne!(keys.dht_infohash(hour), keys.dht_infohash(hour + 1));
    }
}

#[test]
fn dht_item_keys_are_separate_subkeys() {
    let keys = mesh();
    let items = keys.dht_item_keys();
    assert_eq!(items.signing_seed, keys.dht_item_keys().signing_seed);
    assert_ne!(items.signing_seed, items.seal);
    for other in [keys.network_id(), keys.exchange_key()] {
        assert_ne!(items.signing_seed, other);
        assert_ne!(items.seal, other);
    }
    assert_eq!(format!("{items:?}"), "DhtItemKeys(<redacted>)");
}

proptest! {
    // Each case runs Argon2 twice; a handful of secrets is enough to show determinism.
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn same_secret_same_network(token in "[A-Za-z0-9_-]{16,48}") {
        let a = MeshKeys::derive(&Secret::parse(&token).unwrap());
        let b = MeshKeys::derive(&Secret::parse(&format!("wgmesh://v1/{token}")).unwrap());
        prop_assert_eq!(a.network_id(), b.network_id());
        prop_assert_eq!(a.ipv4_subnet(), b.ipv4_subnet());
        prop_assert_eq!(a.ipv6_prefix(), b.ipv6_prefix());
        prop_assert_eq!(a.control_port(), b.control_port());
        prop_assert!((51_821..52_821).contains(&a.control_port()));
        prop_assert_eq!(&a.lan_group().octets()[..2], &[239u8, 192][..]);
        prop_assert_eq!(a.preshared_key(), b.preshared_key());
    }
}

#[test]
fn a_new_secret_gives_a_new_keypair() {
    let seed = NodeSeed::from_bytes([42; 32]);
    let a = MeshKeys::derive(&Secret::parse("first-secret-0123456789").unwrap());
    let b = MeshKeys::derive(&Secret::parse("second-secret-0123456789").unwrap());
    assert_ne!(a.node_public_key(&seed), b.node_public_key(&seed));
    assert_ne!(a.network_id(), b.network_id());
}

#[test]
fn bad_seeds_are_named() {
    assert_eq!(
        NodeSeed::from_hex("abc").unwrap_err().to_string(),
        "node seed must be 64 hex characters (32 bytes), got 3 characters"
    );
    assert!(NodeSeed::from_hex(&"zz".repeat(32)).is_err());
    assert!(
        NodeSeed::from_hex(&"+5".repeat(32)).is_err(),
        "a sign is not a hex digit"
    );
}
