//! Measures one rendezvous member against a testnet (`wgmesh-lab dht-testnet`): time to the
//! first candidate and, run under `strace -f -c -e trace=sendto,sendmsg`, datagrams sent.
//!
//! ```text
//! dht_traffic BOOTSTRAP[,BOOTSTRAP...] ANNOUNCE_PORT fast|slow SECONDS [DHT_PORT]
//! ```
//!
//! With `DHT_PORT` fixed, an nftables counter on `udp sport DHT_PORT` counts exactly what this
//! member sends, without strace slowing it down.
//!
//! Prints `first <ms> <addr>` for the first candidate other than itself, then `lookups <n>` at
//! the end. Start two (different ports) to see each other.

use std::io::Write;
use std::time::{Duration, Instant};
use wgmesh_dht::{DhtConfig, DhtRendezvous};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bootstrap, port, mode, seconds, dht_port) = match args.as_slice() {
        [b, p, m, s] => (b, p, m, s, "0"),
        [b, p, m, s, d] => (b, p, m, s, d.as_str()),
        _ => {
            return Err(
                "usage: dht_traffic BOOTSTRAP[,..] ANNOUNCE_PORT fast|slow SECONDS [DHT_PORT]"
                    .to_owned(),
            );
        }
    };
    let port: u16 = port.parse().map_err(|e| format!("port: {e}"))?;
    let seconds: u64 = seconds.parse().map_err(|e| format!("seconds: {e}"))?;
    let mut config = DhtConfig::new(
        |hour| {
            let mut h = [0x5a; 20];
            h[..8].copy_from_slice(&hour.to_be_bytes());
            h
        },
        port,
    );
    config.bootstrap = bootstrap.split(',').map(str::to_owned).collect();
    config.bind = Some(
        format!("127.0.0.1:{dht_port}")
            .parse()
            .map_err(|e| format!("bind: {e}"))?,
    );
    config.accept_loopback = true;
    let (handle, candidates) = DhtRendezvous::start(config).map_err(|e| e.to_string())?;
    handle.set_fast(mode == "fast");
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut out = std::io::stdout();
    let mut first = false;
    while Instant::now() < end {
        if let Ok(addr) = candidates.recv_timeout(Duration::from_millis(100))
            && addr.port() != port
            && !first
        {
            first = true;
            let _ = writeln!(out, "first {} {addr}", start.elapsed().as_millis());
        }
    }
    let _ = writeln!(out, "lookups {}", handle.status().lookups);
    handle.stop();
    Ok(())
}
