//! Helpers for the chaos lab: a seeded RNG, daemons under a skewed clock, state-file checks,
//! process and RSS probes, tmpfs mounts, and the leftover check every scenario ends with.
#![allow(
    dead_code,
    reason = "the soak and the CI scenarios use different parts"
)]
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "test harness: a failure is a test failure, and the seed goes to the test output"
)]

use crate::common::{Lab, Node, wait_until};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// libfaketime as Debian installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// xorshift64*: reproducible choices from a printed seed (`WGMESH_CHAOS_SEED` replays a run).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn from_env(what: &str) -> Self {
        let seed = std::env::var("WGMESH_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed} (replay with WGMESH_CHAOS_SEED={seed})");
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Starts `wgmesh up` like [`Node::start`], with the daemon's wall clock shifted by
/// `skew_secs` through libfaketime. Monotonic time stays real (timers, rate limits), and
/// wireguard-go (Go, no libc clock, and started with a cleared environment) is not affected.
pub fn start_skewed(node: &mut Node, skew_secs: i64, extra: &[&str]) {
    let skew = format!("{skew_secs:+}");
    node.start_with_env(
        extra,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", &skew),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
}

pub fn identity_path(node: &Node) -> PathBuf {
    node.state_dir().join(format!("{}.json", node.interface))
}

pub fn cache_path(node: &Node) -> PathBuf {
    node.state_dir()
        .join(format!("{}.peers.json", node.interface))
}

/// The identity file's bytes (the node's private seed: compared, never printed).
pub fn identity_bytes(node: &Node) -> Vec<u8> {
    std::fs::read(identity_path(node)).unwrap()
}

/// The public keys in the peer cache, if it is a valid cache file.
pub fn cached_keys(node: &Node) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(cache_path(node)).ok()?;
    let cache: serde_json::Value = serde_json::from_str(&text).ok()?;
    if cache["version"] != 1 {
        return None;
    }
    cache["peers"]
        .as_array()?
        .iter()
        .map(|p| {
            p["mesh_ipv4"].as_str()?;
            p["public_key"].as_str().map(str::to_owned)
        })
        .collect()
}

/// Asserts the peer cache is valid and names exactly the public keys of `others`.
pub fn assert_cache_names(node: &Node, others: &[&Node]) {
    let want: BTreeSet<String> = others.iter().map(|n| public_key(n)).collect();
    wait_until(
        Duration::from_secs(30),
        &format!("node {}'s peer cache to name the others", node.index),
        || cached_keys(node).is_some_and(|keys| want.is_subset(&keys)),
    );
}

pub fn public_key(node: &Node) -> String {
    node.status_ok()["public_key"].as_str().unwrap().to_owned()
}

/// Files in the state directory whose name says they are a temporary of an atomic write.
pub fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Command lines of all processes, as (pid, argv).
fn processes() -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !argv.is_empty() {
            found.push((pid, argv));
        }
    }
    found
}

/// Pids of `wireguard-go -f <interface>`.
pub fn wireguard_go_pids(interface: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, argv)| {
            argv.first().is_some_and(|a| a.ends_with("wireguard-go"))
                && argv.iter().any(|a| a == interface)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Pids of any process (wgmesh, wireguard-go, `ip netns exec`) naming one of the lab's
/// interfaces, namespaces or its directory in its command line.
pub fn lab_processes(footprint: &Footprint) -> Vec<(u32, String)> {
    let me = std::process::id();
    processes()
        .into_iter()
        .filter(|(pid, _)| *pid != me)
        .filter(|(_, argv)| {
            argv.iter().any(|a| {
                footprint.interfaces.iter().any(|i| a == i)
                    || footprint.namespaces.iter().any(|n| a == n)
                    || a.starts_with(&footprint.dir)
            })
        })
        .map(|(pid, argv)| (pid, argv.join(" ")))
        .collect()
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Asserts no daemon log of the lab mentions a panic.
pub fn assert_no_panics(lab: &Lab) {
    for node in &lab.nodes {
        let log = node.log();
        assert!(
            !log.contains("panicked"),
            "node {} panicked:\n{log}",
            node.index
        );
    }
}

/// SIGKILL of one process.
pub fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// Every name and path a lab can leave behind, captured before it is torn down.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub bridge: String,
    pub namespaces: Vec<String>,
    pub interfaces: Vec<String>,
    pub veths: Vec<String>,
    pub dir: String,
}

impl Footprint {
    pub fn of(lab: &Lab) -> Self {
        Self {
            bridge: lab.bridge.clone(),
            namespaces: lab.nodes.iter().map(|n| n.ns.clone()).collect(),
            interfaces: lab.nodes.iter().map(|n| n.interface.clone()).collect(),
            veths: lab
                .nodes
                .iter()
                .map(|n| format!("wgv{}x{}", lab.id, n.index))
                .collect(),
            dir: lab.dir.path().display().to_string(),
        }
    }
}

/// Stops every running daemon with `wgmesh down` and checks each cleaned up after itself:
/// no interface, no wgmesh route (`proto 77`), no pid file or control socket, no wireguard-go
/// and no UAPI socket for its interface.
pub fn stop_all_and_check(lab: &mut Lab) {
    for node in &mut lab.nodes {
        node.stop();
    }
    for node in &lab.nodes {
        let i = &node.interface;
        wait_until(
            Duration::from_secs(10),
            &format!("wireguard-go of node {} to exit", node.index),
            || wireguard_go_pids(i).is_empty(),
        );
        let links = String::from_utf8_lossy(&node.exec("ip", &["-o", "link"]).stdout).into_owned();
        assert!(!links.contains(i.as_str()), "node {}: {links}", node.index);
        for family in ["-4", "-6"] {
            let routes = String::from_utf8_lossy(
                &node
                    .exec("ip", &[family, "route", "show", "proto", "77"])
                    .stdout,
            )
            .into_owned();
            assert!(
                routes.trim().is_empty(),
                "node {} left routes: {routes}",
                node.index
            );
        }
        for file in [format!("{i}.sock"), format!("{i}.pid")] {
            let path = node.runtime_dir().join(&file);
            assert!(
                !path.exists(),
                "node {} left {}",
                node.index,
                path.display()
            );
        }
        let uapi = format!("/var/run/wireguard/{i}.sock");
        assert!(
            !Path::new(&uapi).exists(),
            "node {} left {uapi}",
            node.index
        );
    }
}

/// After the lab is dropped: no namespace, link, UAPI socket or process of it is left.
pub fn assert_no_leftovers(footprint: &Footprint) {
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for ns in &footprint.namespaces {
        assert!(
            !netns
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} left: {netns}"
        );
    }
    // The kernel dismantles a deleted namespace (and the veth pairs into it) asynchronously.
    let root_links = || {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "link"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let left = |links: &str| -> Vec<String> {
        std::iter::once(&footprint.bridge)
            .chain(&footprint.veths)
            .chain(&footprint.interfaces)
            .filter(|name| {
                links.contains(&format!(" {name}:")) || links.contains(&format!(" {name}@"))
            })
            .cloned()
            .collect()
    };
    let settled = std::time::Instant::now() + Duration::from_secs(15);
    while !left(&root_links()).is_empty() && std::time::Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(200));
    }
    let links = left(&root_links());
    assert!(links.is_empty(), "links left: {links:?}");
    let routes = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["route", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !routes.contains(&footprint.bridge),
        "route via {} left: {routes}",
        footprint.bridge
    );
    for interface in &footprint.interfaces {
        let uapi = format!("/var/run/wireguard/{interface}.sock");
        assert!(!Path::new(&uapi).exists(), "{uapi} left");
    }
    let procs = lab_processes(footprint);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    assert!(
        !Path::new(&footprint.dir).exists(),
        "{} left",
        footprint.dir
    );
}

/// A tmpfs mounted for a test, unmounted on drop (also after a failed assert).
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "256k") at `at`, mode 0700, hiding what was there.
    pub fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        crate::common::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                &at.display().to_string(),
            ],
        );
        Self(at.to_owned())
    }

    /// Writes zeros into `<mount>/filler` until the filesystem is full.
    pub fn fill(&self) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = [0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    assert_eq!(err.raw_os_error(), Some(28), "{err}");
                    break;
                }
            }
        }
    }

    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", &self.0.display().to_string()])
            .status();
    }
}
