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

use std::io::{Read, Write};
use std::net::Ipv4Addr;

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
        std::fs::metadata("/proc/self/fd/0"),
        std::fs::metadata("/dev/null"),
    ) {
        (Ok(stdin), Ok(null)) => stdin.dev() == null.dev() && stdin.ino() == null.ino(),
        // No stdin at all: nothing to watch.
        (Err(_), _) => true,
        (Ok(_), Err(_)) => false,
    }
}

/// Runs the testnet until killed or until stdin reaches end of file.
pub fn run_testnet(args: &[String]) -> Result<(), String> {
    let args = parse_args(args)?;
    let testnet = mainline::Testnet::builder(args.nodes)
        .bind_address(args.bind)
        .build()
        .map_err(|err| {
            format!(
                "cannot start a {}-node DHT on {}: {err}",
                args.nodes, args.bind
            )
        })?;
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
