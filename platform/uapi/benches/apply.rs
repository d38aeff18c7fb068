//! Userspace backend at scale: 1,000 new peers in one `set=1`, then steady-state reconcile.
//!
//! `cargo bench -p wgmesh-uapi --bench apply` as root with /usr/bin/wireguard-go; skips (exit 0)
//! otherwise. Figures go in platform/uapi/README.md.
#![expect(clippy::print_stdout, reason = "a bench reports on stdout")]
#![expect(clippy::unwrap_used, reason = "a bench aborts on any failure")]

use std::io::Read as _;
use std::path::Path;
use std::time::{Instant, SystemTime};
use wgmesh_device::{DesiredDevice, PeerConfig, WireguardBackend, diff_device};
use wgmesh_keys::{PresharedKey, PrivateKey};
use wgmesh_uapi::{
    ChildOutput, UserspaceBackend, UserspaceConfig, render_set_request, userspace_available,
};

const PEERS: u16 = 1_000;
const STEADY_ROUNDS: u32 = 20;

fn random_key(urandom: &mut std::fs::File) -> [u8; 32] {
    let mut out = [0u8; 32];
    urandom.read_exact(&mut out).unwrap();
    out
}

fn main() {
    if let Err(reason) = userspace_available(Path::new("/usr/bin/wireguard-go")) {
        println!("skipped: {reason}");
        return;
    }
    if !std::fs::metadata("/proc/self").is_ok_and(|_| rustix_is_root()) {
        println!("skipped: needs root");
        return;
    }
    // wireguard-go starts every peer whose keepalive is switched on and sends it a keepalive
    // right away, which makes adding peers with keepalive far slower: measure both.
    run(None);
    run(Some(25));
}

fn run(keepalive: Option<u16>) {
    println!("-- {PEERS} peers, persistent keepalive {keepalive:?}");
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    let peers = (0..PEERS)
        .map(|n| PeerConfig {
            preshared_key: Some(PresharedKey::from_bytes(random_key(&mut urandom))),
            endpoint: Some(
                // Loopback: wireguard-go sends a handshake initiation from inside the set for
                // every peer whose keepalive turns on, and this VM's egress makes sendmsg to
                // outside addresses block (see README). Loopback measures wireguard-go and us.
                format!("127.0.{}.{}:{}", n / 250, n % 250 + 1, 20_000 + n)
                    .parse()
                    .unwrap(),
            ),
            allowed_ips: vec![
                format!("10.88.{}.{}/32", n / 250, n % 250 + 1)
                    .parse()
                    .unwrap(),
                format!("fd88::{:x}/128", n + 1).parse().unwrap(),
            ],
            persistent_keepalive: keepalive,
            ..PeerConfig::new(PrivateKey::from_bytes_clamped(random_key(&mut urandom)).public_key())
        })
        .collect();
    let mut want = DesiredDevice {
        private_key: PrivateKey::from_bytes_clamped(random_key(&mut urandom)),
        listen_port: 0,
        peers,
    };

    let interface = format!(
        "wgb{}k{}",
        std::process::id() % 10_000,
        keepalive.unwrap_or(0)
    );
    let mut backend = UserspaceBackend::new(UserspaceConfig {
        output: ChildOutput::Null,
        io_timeout: std::time::Duration::from_secs(600),
        ..UserspaceConfig::new(&interface)
    });
    let started = Instant::now();
    backend.ensure_device().unwrap();
    println!(
        "start wireguard-go until its socket answers: {:?}",
        started.elapsed()
    );
    want.listen_port = backend.read().unwrap().listen_port;

    let started = Instant::now();
    let observed = backend.read().unwrap();
    let update = diff_device(&observed, &want, SystemTime::now());
    let diffed = started.elapsed();
    let request_bytes = render_set_request(&update).len();
    let started = Instant::now();
    backend.apply(&update).unwrap();
    let applied = started.elapsed();
    println!(
        "add {PEERS} peers: read+diff {diffed:?}, one set=1 of {request_bytes} bytes {applied:?}"
    );

    let mut writes = 0;
    let mut response_bytes = 0;
    let started = Instant::now();
    for _ in 0..STEADY_ROUNDS {
        let observed = backend.read().unwrap();
        let update = diff_device(&observed, &want, SystemTime::now());
        if !update.is_empty() {
            backend.apply(&update).unwrap();
            writes += 1;
        }
        response_bytes = wgmesh_uapi::render_get_response(&observed).len();
    }
    let per_round = started.elapsed() / STEADY_ROUNDS;
    println!(
        "steady state, {PEERS} peers: read+diff {per_round:?} per round (get answer ~{response_bytes} bytes), writes in {STEADY_ROUNDS} rounds: {writes}"
    );
    assert_eq!(writes, 0, "a steady mesh makes no writes");
    backend.remove_device().unwrap();
}

fn rustix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}
