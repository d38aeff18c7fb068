//! Golden vectors (DESIGN.md §3). `golden.json` was generated once from this implementation and
//! reviewed by hand (see docs/derivation.md). A change that alters any value breaks every deployed
//! mesh: it needs a protocol version bump, never a regenerated file.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

use serde::Deserialize;
use wgmesh_derive::{MeshAddresses, MeshKeys, NodeSeed, Secret};

#[derive(Deserialize)]
struct Vector {
    secret: String,
    network_id: String,
    exchange_key: String,
    preshared_key: String,
    ipv4_subnet: String,
    ipv6_prefix: String,
    control_port: u16,
    lan_group: String,
    dht_infohash: Vec<(u64, String)>,
    nodes: Vec<NodeVector>,
}

#[derive(Deserialize)]
struct NodeVector {
    seed: String,
    private_key: String,
    public_key: String,
    mesh_ipv4: Vec<String>,
    mesh_ipv6: String,
}

const COUNTERS: [u8; 3] = [0, 1, 15];

fn render(secret: &str, seeds: &[&str]) -> serde_json::Value {
    let keys = MeshKeys::derive(&Secret::parse(secret).unwrap());
    let nodes: Vec<_> = seeds
        .iter()
        .map(|seed| {
            let seed = NodeSeed::from_hex(seed).unwrap();
            let public = keys.node_public_key(&seed);
            serde_json::json!({
                "seed": seed.to_hex(),
                "private_key": hex::encode(keys.node_private_key(&seed).expose_bytes()),
                "public_key": public.to_base64(),
                "mesh_ipv4": COUNTERS
                    .iter()
                    .map(|&n| MeshAddresses::derive(&keys, &public, n).ipv4.to_string())
                    .collect::<Vec<_>>(),
                "mesh_ipv6": MeshAddresses::derive(&keys, &public, 0).ipv6.to_string(),
            })
        })
        .collect();
    let hours: Vec<(u64, String)> = [0u64, 493_000, u64::MAX]
        .iter()
        .map(|&e| (e, hex::encode(keys.dht_infohash(e))))
        .collect();
    serde_json::json!({
        "secret": secret,
        "network_id": hex::encode(keys.network_id()),
        "exchange_key": hex::encode(keys.exchange_key()),
        "preshared_key": hex::encode(keys.preshared_key().expose_bytes()),
        "ipv4_subnet": keys.ipv4_subnet().to_string(),
        "ipv6_prefix": keys.ipv6_prefix().to_string(),
        "control_port": keys.control_port(),
        "lan_group": keys.lan_group().to_string(),
        "dht_infohash": hours,
        "nodes": nodes,
    })
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(include_str!("golden.json")).unwrap()
}

#[test]
fn golden_vectors_match() {
    for vector in vectors() {
        let seeds: Vec<&str> = vector.nodes.iter().map(|n| n.seed.as_str()).collect();
        let got = render(&vector.secret, &seeds);
        assert_eq!(got["network_id"], vector.network_id);
        assert_eq!(got["exchange_key"], vector.exchange_key);
        assert_eq!(got["preshared_key"], vector.preshared_key);
        assert_eq!(got["ipv4_subnet"], vector.ipv4_subnet);
        assert_eq!(got["ipv6_prefix"], vector.ipv6_prefix);
        assert_eq!(got["control_port"], vector.control_port);
        assert_eq!(got["lan_group"], vector.lan_group);
        let hashes: Vec<(u64, String)> =
            serde_json::from_value(got["dht_infohash"].clone()).unwrap();
        assert_eq!(hashes, vector.dht_infohash);
        for (got, want) in got["nodes"].as_array().unwrap().iter().zip(&vector.nodes) {
            assert_eq!(got["private_key"], want.private_key, "seed {}", want.seed);
            assert_eq!(got["public_key"], want.public_key, "seed {}", want.seed);
            assert_eq!(got["mesh_ipv6"], want.mesh_ipv6, "seed {}", want.seed);
            let v4: Vec<String> = serde_json::from_value(got["mesh_ipv4"].clone()).unwrap();
            assert_eq!(v4, want.mesh_ipv4, "seed {}", want.seed);
        }
    }
}

/// Prints vectors for new inputs. Run by hand only when adding vectors, never to replace them:
/// `cargo test -p wgmesh-derive --test golden -- --ignored --nocapture print_vectors`.
#[test]
#[ignore = "generator for golden.json, run by hand"]
fn print_vectors() {
    let out = serde_json::json!([
        render(
            "wgmesh://v1/Xv3nq0Zb8C5mJbU1t3VZ6e9oA2yGk4HwRrLdPqSsTfE",
            &[
                "0000000000000000000000000000000000000000000000000000000000000000",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ]
        ),
        render(
            "correct-horse-battery-staple",
            &["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",]
        ),
    ]);
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
