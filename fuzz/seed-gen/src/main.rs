//! Writes the seed corpora for the fuzz targets from the real encoders (run from anywhere:
//! `cargo run --manifest-path fuzz/seed-gen/Cargo.toml`). Deterministic, except the two identity
//! files made by `NodeIdentity::load_or_create`, which draw a fresh node seed each run.

#[path = "../../fixture/mesh.rs"]
mod fixture;

use fixture::*;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use wgmesh_derive::{MeshKeys, NodeSeed, Secret};
use wgmesh_exchange::{
    ENTROPY_LEN, Endpoint, EndpointKind, Entropy, Exchange, ExchangeConfig, Extension,
    FLAG_EXTENSIONS, Goodbye, Gossip, GossipEntry, Hello, MAC_LEN, MemberInfo, MemberName, Message,
    MsgType, Probe, encode_message, encode_record, seal,
};
use wgmesh_state::{CachedPeer, NodeIdentity, save_peer_cache};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

fn write(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = corpus().join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn probe(id: u8) -> Message {
    Message::Probe(Probe {
        sender: public_key(id),
        timestamp: NOW / 1000,
        challenge: [0x11; 16],
        extensions: Vec::new(),
    })
}

fn hello(id: u8, challenge: [u8; 16]) -> Message {
    Message::Hello(Hello {
        sender: public_key(id),
        recipient: public_key(TARGET_ID),
        timestamp: NOW / 1000,
        echo: [0x22; 16],
        challenge,
        record: record_for(id),
        extensions: Vec::new(),
        mac: [0; MAC_LEN],
    })
}

/// A Hello as this release sends it to members that accept extensions (record flag set, version
/// and name between the record and the MAC), plus one extension no release knows yet.
fn hello_extended(id: u8) -> Message {
    let mut record = record_for(id);
    record.flags |= FLAG_EXTENSIONS;
    let info = MemberInfo::new("0.2.0", MemberName::parse("web-1").ok());
    let mut extensions = info.to_extensions();
    extensions.push(Extension {
        kind: 0x42,
        value: b"future".to_vec(),
    });
    Message::Hello(Hello {
        sender: public_key(id),
        recipient: public_key(TARGET_ID),
        timestamp: NOW / 1000,
        echo: [0x22; 16],
        challenge: [0x44; 16],
        record,
        extensions,
        mac: [0; MAC_LEN],
    })
}

/// A Probe with an extension a future release may add (this one skips it).
fn probe_extended(id: u8) -> Message {
    Message::Probe(Probe {
        sender: public_key(id),
        timestamp: NOW / 1000,
        challenge: [0x11; 16],
        extensions: vec![Extension {
            kind: 0x43,
            value: vec![1, 2, 3],
        }],
    })
}

fn goodbye(id: u8) -> Message {
    Message::Goodbye(Goodbye {
        sender: public_key(id),
        recipient: public_key(TARGET_ID),
        timestamp: NOW / 1000,
        nonce: [0x33; 16],
        extensions: Vec::new(),
        mac: [0; MAC_LEN],
    })
}

fn gossip(id: u8) -> Message {
    let mut entries = Vec::new();
    for other in [3u8, 4] {
        let mut record = record_for(other);
        record.routes.clear();
        record.endpoints.push(Endpoint {
            kind: EndpointKind::Stun,
            addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)), 4000),
        });
        entries.push(GossipEntry {
            control: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, other)), 51900),
            record,
        });
    }
    Message::Gossip(Gossip {
        sender: public_key(id),
        timestamp: NOW / 1000,
        entries,
        extensions: Vec::new(),
    })
}

fn exchange_seeds() -> Result<()> {
    let messages = [
        ("probe", probe(2)),
        ("hello", hello(2, [0x44; 16])),
        ("hello-no-challenge", hello(3, [0; 16])),
        ("goodbye", goodbye(2)),
        ("gossip", gossip(2)),
        ("hello-extensions", hello_extended(2)),
        ("probe-extension", probe_extended(2)),
    ];
    let mut plaintexts = Vec::new();
    for (name, message) in &messages {
        let bytes = encode_message(message)?;
        write("exchange_decode", &format!("{name}.bin"), &bytes)?;
        plaintexts.push((*name, message.msg_type(), bytes));
    }
    let mut record = Vec::new();
    encode_record(&record_for(2), &mut record)?;
    write("exchange_decode", "record.bin", &record)?;

    let step = |op, fix, signer, src, dt_ms, payload: &[u8], out: &mut Vec<u8>| {
        encode_step(&Step { op, fix, signer, src, dt_ms, payload }, out);
    };
    let plain = |name: &str| -> Vec<u8> {
        plaintexts
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, b)| b.clone())
            .unwrap_or_default()
    };
    // Signer index 0 is member 2 (SIGNER_IDS).
    // A member probes us; we answer with a Hello and a challenge; it answers that.
    let mut input = Vec::new();
    step(OP_SEALED, FIX_ALL, 0, 2, 10, &plain("probe"), &mut input);
    step(OP_SEALED, FIX_ALL, 0, 2, 10, &plain("hello"), &mut input);
    write("exchange_handle", "probe-then-hello", &input)?;
    // We probe; a member answers with a Hello carrying a challenge of its own; it says goodbye.
    let mut input = Vec::new();
    step(OP_PROBE, 0, 0, 0, 0, &[], &mut input);
    step(OP_SEALED, FIX_ALL, 0, 2, 10, &plain("hello"), &mut input);
    step(OP_SEALED, FIX_ALL, 0, 2, 10, &plain("goodbye"), &mut input);
    step(OP_SEALED, FIX_ALL, 0, 2, 10, &plain("goodbye"), &mut input);
    write("exchange_handle", "our-probe-hello-goodbye", &input)?;
    // Gossip, a replayed probe, a stale message, and a raw datagram sealed by hand.
    let mut input = Vec::new();
    step(OP_SEALED, FIX_TIMESTAMP | FIX_SENDER, 0, 2, 10, &plain("gossip"), &mut input);
    step(OP_SEALED, FIX_ALL, 1, 3, 10, &plain("probe"), &mut input);
    step(OP_SEALED, FIX_ALL, 1, 3, 10, &plain("probe"), &mut input);
    step(OP_TICK, 0, 0, 0, 600, &[], &mut input);
    step(OP_SEALED, 0, 0, 2, 10, &plain("probe"), &mut input);
    let sealed = seal(&mesh().exchange_key(), MsgType::Probe, &[7; 24], &plain("probe"))?;
    step(OP_RAW, 0, 0, 0x85, 10, &sealed, &mut input);
    write("exchange_handle", "gossip-replay-stale-raw", &input)?;
    // One raw sealed datagram of each type (pre-gate paths, and type-mismatch via FIX_HEADER).
    for (name, msg_type, bytes) in &plaintexts {
        let sealed = seal(&mesh().exchange_key(), *msg_type, &[9; 24], bytes)?;
        write("exchange_decode", &format!("{name}.sealed.bin"), &sealed)?;
        let mut input = Vec::new();
        step(OP_RAW, 0, 0, 4, 1, &sealed, &mut input);
        step(OP_SEALED, FIX_ALL | FIX_HEADER, 2, 4, 1, bytes, &mut input);
        write("exchange_handle", &format!("raw-{name}"), &input)?;
    }
    // The LAN beacon is no message of its own: it is the Probe `Exchange::probe` builds, sent to
    // the secret-derived multicast group and read from the same control socket. Member 2's
    // beacon exactly as it goes on the wire, our answer, its Hello; then a beacon claiming our
    // own key (another daemon of ours on the LAN, or a reflection), which must be dropped.
    let mut member2 =
        Exchange::new(mesh(), private_key(2), record_for(2), ExchangeConfig::default())?;
    let beacon = member2.probe(NOW, Entropy::from_bytes([0x5a; ENTROPY_LEN]));
    let mut input = Vec::new();
    step(OP_RAW, 0, 0, 2, 0, &beacon, &mut input);
    step(OP_SEALED, FIX_ALL, 0, 2, 10, &plain("hello"), &mut input);
    step(OP_SEALED, FIX_TIMESTAMP, 0, 7, 10, &encode_message(&probe(TARGET_ID))?, &mut input);
    write("exchange_handle", "lan-beacon", &input)?;
    Ok(())
}

/// `dht_candidates`: `flags | (count:u8 | count x compact peer)*`, count 0 = new round.
fn dht_candidate_seeds() -> Result<()> {
    fn batch(peers: &[SocketAddrV4], out: &mut Vec<u8>) {
        out.push(u8::try_from(peers.len()).unwrap_or(u8::MAX));
        for peer in peers.iter().take(255) {
            out.extend_from_slice(&peer.ip().octets());
            out.extend_from_slice(&peer.port().to_be_bytes());
        }
    }
    let peer = |a, b, c, d, port| SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port);
    // Three members behind NATs (the lab's benchmark range, documentation, private), answered by
    // two DHT nodes with overlapping lists.
    let mut input = vec![0];
    batch(&[peer(198, 18, 0, 21, 51900), peer(203, 0, 113, 5, 51900)], &mut input);
    batch(&[peer(203, 0, 113, 5, 51900), peer(10, 1, 0, 2, 51900)], &mut input);
    write("dht_candidates", "members", &input)?;
    // What a hostile DHT node may answer: nothing here is probed.
    let mut input = vec![0];
    batch(
        &[
            peer(203, 0, 113, 5, 0),
            peer(0, 0, 0, 0, 51900),
            peer(224, 0, 0, 251, 5353),
            peer(239, 255, 255, 250, 1900),
            peer(255, 255, 255, 255, 51900),
            peer(240, 0, 0, 1, 51900),
            peer(127, 0, 0, 1, 22),
        ],
        &mut input,
    );
    write("dht_candidates", "bogus", &input)?;
    // A testnet on 127.0.0.1 (accept_loopback), then a second round.
    let mut input = vec![1];
    batch(&[peer(127, 0, 0, 1, 40001), peer(127, 0, 0, 1, 40002)], &mut input);
    input.push(0);
    batch(&[peer(127, 0, 0, 1, 40002)], &mut input);
    write("dht_candidates", "loopback-two-rounds", &input)?;
    // A flood past MAX_CANDIDATES_PER_ROUND.
    let flood: Vec<SocketAddrV4> = (0..510u16)
        .map(|i| peer(198, 51, 100, (i % 250) as u8 + 1, 1000 + i))
        .collect();
    let mut input = vec![0];
    batch(&flood[..255], &mut input);
    batch(&flood[255..], &mut input);
    write("dht_candidates", "flood", &input)?;
    Ok(())
}

fn private_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wgmesh-seed-gen-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn state_seeds() -> Result<()> {
    let dir = private_dir("state")?;
    // A real identity of the fuzz mesh, and one of another mesh (a secret rotation).
    let path = dir.join("wg0.json");
    NodeIdentity::load_or_create(&path, mesh())?;
    write("identity_file", "identity.json", &fs::read(&path)?)?;
    let other = MeshKeys::derive(&Secret::parse("wgmesh://v1/another-fuzz-secret-rotated")?);
    let path = dir.join("wg1.json");
    NodeIdentity::load_or_create(&path, &other)?;
    write("identity_file", "identity-rotated.json", &fs::read(&path)?)?;
    write(
        "identity_file",
        "future-version.json",
        b"{\"version\": 2, \"node_seed\": \"\"}\n",
    )?;
    let seed = NodeSeed::from_bytes([5; 32]);
    let json = format!(
        "{{\"version\":1,\"node_seed\":\"{}\",\"public_key\":\"{}\",\"collision_counter\":3,\"network_id\":\"{}\"}}",
        seed.to_hex(),
        mesh().node_public_key(&seed).to_base64(),
        mesh().network_id().iter().map(|b| format!("{b:02x}")).collect::<String>(),
    );
    write("identity_file", "counter-3.json", json.as_bytes())?;

    let path = dir.join("wg0.peers.json");
    let peers: Vec<CachedPeer> = [2u8, 3]
        .iter()
        .map(|&id| {
            let record = record_for(id);
            CachedPeer {
                public_key: record.public_key,
                mesh_ipv4: record.mesh_ipv4,
                mesh_ipv6: record.mesh_ipv6,
                control_addr: Some(source(id)),
                endpoint: if id == 2 { Some(source(0x80 | id)) } else { None },
                last_seen_unix: NOW / 1000,
            }
        })
        .collect();
    save_peer_cache(&path, &peers)?;
    write("peer_cache", "two-peers.json", &fs::read(&path)?)?;
    save_peer_cache(&path, &[])?;
    write("peer_cache", "empty.json", &fs::read(&path)?)?;

    let path = dir.join("wg0.dht-nodes.json");
    let nodes: Vec<SocketAddrV4> = (1..=3u8)
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, i), 6881 + u16::from(i)))
        .collect();
    wgmesh_dht::nodes_file::save(&path, &nodes)?;
    write("dht_nodes_file", "three-nodes.json", &fs::read(&path)?)?;
    fs::remove_dir_all(&dir)?;
    Ok(())
}

fn stun_seeds() -> Result<()> {
    let txid = *b"wgmesh-fuzz!";
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40000);
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)), 40001);
    write("stun", "response-v4.bin", &wgmesh_nat::binding_success_response(txid, v4))?;
    write("stun", "response-v6.bin", &wgmesh_nat::binding_success_response(txid, v6))?;
    write("stun", "request.bin", &wgmesh_nat::binding_request(txid))?;
    Ok(())
}

fn text_seeds() -> Result<()> {
    write(
        "reload_file",
        "full.reload",
        b"# wgmesh reload file\nadvertise-routes = 192.168.77.0/24, fd00:77::/64\nlog-level=debug\n\
          \n# restart-only keys are reported, not applied\nlisten-port=51820\n",
    )?;
    write("reload_file", "empty-routes.reload", b"ADVERTISE-ROUTES=\n")?;
    write("secret", "uri", b"wgmesh://v1/q3Z8x1bO0mM2vF7kLrT9YwEaHc4JdNs6UgPiXoBl5eA\n")?;
    write("secret", "bare-token", b"correct-horse-battery-staple\n")?;
    write("secret", "wrong-version", b"wgmesh://v2/abcdefghijklmnopqrstuvwxyz")?;
    Ok(())
}

fn main() -> Result<()> {
    exchange_seeds()?;
    dht_candidate_seeds()?;
    state_seeds()?;
    stun_seeds()?;
    text_seeds()?;
    eprintln!("seeds written under {}", corpus().display());
    Ok(())
}
