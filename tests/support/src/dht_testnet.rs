//! `wgmesh-lab dht-testnet`: a local mainline DHT for namespace labs, where the public DHT is
//! out of reach.
//!
//! ```text
//! wgmesh-lab dht-testnet [--bind IPV4] [--nodes N]
//! ```
//!
//! Prints one `HOST:PORT` line per node (all of them are bootstrap nodes), then `READY`, and
//! serves until SIGTERM/SIGINT or until stdin is closed. Stdin is only watched when it is not
//! `/dev/null`, so `wgmesh-lab dht-testnet ... &` in a script (whose background jobs read
//! `/dev/null`) keeps running.

use futures_lite::future;
use mainline::Dht;
use mainline::async_dht::AsyncDht;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: wgmesh-lab dht-testnet [--bind IPV4] [--nodes N]";
const DEFAULT_NODES: usize = 10;
const MAX_NODES: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
struct TestnetArgs {
    bind: Ipv4Addr,
    nodes: usize,
}

fn parse_args(args: &[String]) -> Result<TestnetArgs, String> {
    let mut parsed = TestnetArgs {
        bind: Ipv4Addr::LOCALHOST,
        nodes: DEFAULT_NODES,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag {
            "--bind" => {
                let v = value()?;
                parsed.bind = v.parse().map_err(|_| {
                    format!("--bind {v:?}: not an IPv4 address (mainline is IPv4 only)")
                })?;
            }
            "--nodes" => {
                let v = value()?;
                parsed.nodes = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_NODES).contains(n))
                    .ok_or_else(|| format!("--nodes {v:?}: expected 1..={MAX_NODES}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(parsed)
}

/// Whether stdin is `/dev/null` (compared by device and inode, so any path to it counts).
fn stdin_is_dev_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        // `/dev/fd/0`: Linux and macOS both have it (`/proc` is Linux-only).
        std::fs::metadata("/dev/fd/0"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(stdin), Ok(null)) => stdin.dev() == null.dev() && stdin.ino() == null.ino(),
        // No stdin at all: nothing to watch.
        (Err(_), _) => true,
        (Ok(_), Err(_)) => false,
    }
}

/// Per-request timeout of testnet nodes: every node is local, so a missing answer means a gone
/// client, and waiting mainline's default 2 s for it only slows queries down.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long to wait for every node to know the others before reporting READY anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// A running local DHT; dropping it shuts every node down.
#[derive(Debug)]
pub struct LabTestnet {
    /// `HOST:PORT` of every node; any of them bootstraps a client.
    pub bootstrap: Vec<String>,
    nodes: Vec<AsyncDht>,
}

/// Starts `count` server-mode nodes on `bind`, each bootstrapped to all the others.
///
/// Not mainline's own `Testnet`: its nodes have an empty bootstrap list, and mainline then adds
/// every client that sends a `find_node` to the routing table (its rule for the first node of
/// a new DHT). In a lab, daemons come and go; those entries would stay, and every lookup would
/// then wait on dead clients. With a bootstrap list, nodes only add nodes that answered them,
/// as on the public DHT.
pub fn start_testnet(bind: Ipv4Addr, count: usize) -> Result<LabTestnet, String> {
    if count == 0 {
        return Err("a testnet needs at least one node".to_owned());
    }
    // Reserve the ports first so every node can list all the others before they exist.
    let sockets = (0..count)
        .map(|_| UdpSocket::bind((bind, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("cannot bind UDP on {bind}: {err}"))?;
    let addrs = sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("cannot read a local address: {err}"))?;
    drop(sockets);
    let mut nodes = Vec::with_capacity(count);
    for (i, addr) in addrs.iter().enumerate() {
        let others: Vec<&String> = addrs.iter().filter(|a| *a != addr).collect();
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| format!("unexpected local address {addr}"))?;
        let mut builder = Dht::builder();
        builder
            .server_mode()
            .bind_address(bind)
            .port(port)
            .request_timeout(REQUEST_TIMEOUT);
        if others.is_empty() {
            builder.no_bootstrap();
        } else {
            builder.bootstrap(&others);
        }
        let node = builder
            .build()
            .map_err(|err| format!("cannot start DHT node {i} on {addr}: {err}"))?;
        nodes.push(node.as_async());
    }
    // Each node asked the others for itself as it started, but the later ones did not exist
    // yet. Ask again now that all are up, for a random target: a query for the node's own id
    // would join the startup query still waiting on those early requests. The bootstrap nodes
    // answer and so enter the routing table. Then wait until each node knows the rest.
    std::thread::scope(|scope| {
        for node in &nodes {
            scope.spawn(|| future::block_on(node.find_node(mainline::Id::random())));
        }
    });
    let deadline = Instant::now() + SETTLE_LIMIT;
    // A k-bucket holds 20 nodes, so in a large testnet a node cannot know every other one.
    let want = count.saturating_sub(1).min(16);
    while Instant::now() < deadline {
        let settled = nodes
            .iter()
            .all(|n| future::block_on(n.to_bootstrap()).len() >= want);
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(LabTestnet {
        bootstrap: addrs,
        nodes,
    })
}

impl LabTestnet {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Runs the testnet until killed or until stdin reaches end of file.
pub fn run_testnet(args: &[String]) -> Result<(), String> {
    let args = parse_args(args)?;
    let testnet = start_testnet(args.bind, args.nodes)?;
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock<'_>| -> std::io::Result<()> {
        for node in &testnet.bootstrap {
            writeln!(out, "{node}")?;
        }
        writeln!(out, "READY")?;
        out.flush()
    };
    write(&mut out).map_err(|err| format!("writing to stdout: {err}"))?;
    drop(out);
    tracing::info!(nodes = args.nodes, bind = %args.bind, "DHT testnet ready");

    if stdin_is_dev_null() {
        loop {
            std::thread::park();
        }
    }
    // Block until EOF (or a read error: the parent is gone either way).
    let mut sink = [0u8; 256];
    let mut stdin = std::io::stdin().lock();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    drop(testnet);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_flags_with_defaults() {
        assert_eq!(
            parse_args(&[]).unwrap(),
            TestnetArgs {
                bind: Ipv4Addr::LOCALHOST,
                nodes: 10
            }
        );
        assert_eq!(
            parse_args(&args(&["--bind", "10.200.0.1", "--nodes=3"])).unwrap(),
            TestnetArgs {
                bind: Ipv4Addr::new(10, 200, 0, 1),
                nodes: 3
            }
        );
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(parse_args(&args(&["--bind", "::1"])).is_err());
        assert!(parse_args(&args(&["--bind"])).is_err());
        assert!(parse_args(&args(&["--nodes", "0"])).is_err());
        assert!(parse_args(&args(&["--nodes", "x"])).is_err());
        assert!(parse_args(&args(&["--port", "1"])).is_err());
    }
}
