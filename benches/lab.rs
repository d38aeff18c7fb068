//! The lab benchmark (issue 6): wgmesh in network namespaces with real wireguard-go, measured
//! side by side with Nebula and a hand-configured wireguard-go tunnel in the same run.
//!
//! `sudo ./scripts/bench.sh` runs it (with the packages it needs) and renders BENCHMARKS.md;
//! directly: `cargo bench --features root-tests --bench lab`. Every scenario writes one JSON row
//! per measure to `$WGMESH_BENCH_OUT` (default `target/bench/lab.json`): the raw samples, the
//! target, and the tool's version; `scripts/bench-report.py` turns them into the table.
//! `WGMESH_BENCH_REPS` (default 5) sets the repetitions, `WGMESH_BENCH_ONLY` (comma-separated
//! scenario names: convergence, others, join, routes, restart, idle, dataplane, scale) a subset.
//! `scale` is the sweep of issue 11 (25 to 100 nodes); it runs only when asked for or when no
//! subset is given, and has its own knobs (`ScaleConfig`).
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "a bench aborts on any failure and reports as it goes"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Lab, Node, run, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any single formation may take before the bench gives up on it.
const GIVE_UP: Duration = Duration::from_secs(120);
/// Listen port of the hand-made wireguard-go baseline (wgmesh's default is 51820).
const BASELINE_PORT: &str = "51999";
/// Nebula's and tinc's underlay ports.
const NEBULA_PORT: u16 = 4242;
const TINC_PORT: u16 = 655;

fn main() {
    if String::from_utf8_lossy(&run("id", &["-u"]).stdout).trim() != "0" {
        println!("skipped: the lab bench needs root (network namespaces)");
        return;
    }
    let reps: usize = std::env::var("WGMESH_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only: Option<Vec<String>> = std::env::var("WGMESH_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == name));
    let out_path = std::env::var_os("WGMESH_BENCH_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/lab.json"),
        PathBuf::from,
    );
    let mut report = Report {
        only: only.clone(),
        ..Report::default()
    };
    report.versions.insert("wgmesh".into(), wgmesh_version());
    report
        .versions
        .insert("wireguard-go".into(), package_version("wireguard-go"));
    report
        .versions
        .insert("nebula".into(), package_version("nebula"));
    report
        .versions
        .insert("tinc".into(), package_version("tinc"));
    report
        .versions
        .insert("iperf3".into(), package_version("iperf3"));

    // 25 mesh hosts, 5 joiners, and one host for the DHT testnet, on one bridge; more hosts
    // when the scale sweep asks for a larger mesh (the bridge's /24 holds up to 254).
    let scale = wanted("scale").then(ScaleConfig::from_env);
    let hosts = scale
        .as_ref()
        .and_then(|s| s.sizes.iter().copied().max())
        .unwrap_or(0)
        .max(31);
    assert!(hosts <= 254, "the lab's LAN is one /24: at most 254 hosts");
    let tuning = KernelTuning::raise(
        std::env::var("WGMESH_BENCH_BACKLOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
    );
    for (key, path) in [
        (
            "net.core.netdev_max_backlog",
            "/proc/sys/net/core/netdev_max_backlog",
        ),
        (
            "net.ipv4.neigh.default.gc_thresh3",
            "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
        ),
    ] {
        report
            .versions
            .insert(key.into(), KernelTuning::value(path));
    }
    let mut lab = Lab::new(hosts);
    let dht_host = 30;
    if wanted("convergence") {
        convergence(&mut lab, dht_host, reps, &mut report, wanted("others"));
    }
    if wanted("join") || wanted("routes") || wanted("restart") || wanted("idle") {
        steady_mesh_scenarios(&mut lab, reps, &mut report, &wanted);
    }
    if wanted("dataplane") {
        data_plane(&mut lab, reps, &mut report);
    }
    if let Some(scale) = &scale {
        scale_sweep(&mut lab, scale, &mut report);
    }
    drop(lab);
    if wanted("relay") {
        relay_path(reps, &mut report);
        direct_after_learning(&mut report);
    }
    drop(tuning);
    report.write(&out_path);
    println!("wrote {}", out_path.display());
}

#[derive(Default)]
struct Report {
    rows: Vec<Value>,
    versions: BTreeMap<String, String>,
    /// `WGMESH_BENCH_ONLY`, when set: the report script does not let a subset replace the
    /// whole table.
    only: Option<Vec<String>>,
}

impl Report {
    /// One measure: `samples` in `unit`, with an optional target on the median.
    fn row(&mut self, id: &str, scenario: &str, case: &str, unit: &str, samples: &[f64]) {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{scenario:<22} {case:<48} min {:>10.3} median {:>10.3} max {:>10.3} {unit}  ({} samples)",
            sorted.first().copied().unwrap_or(f64::NAN),
            median(&sorted),
            sorted.last().copied().unwrap_or(f64::NAN),
            sorted.len()
        );
        self.rows.push(json!({
            "id": id, "scenario": scenario, "case": case, "unit": unit, "samples": samples,
        }));
    }

    fn write(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let doc = json!({
            "machine": machine(),
            "versions": self.versions,
            "only": self.only,
            "rows": self.rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = String::from_utf8_lossy(&run("uname", &["-r"]).stdout)
        .trim()
        .to_owned();
    json!({"cpu": cpu, "cores": cores, "memory_gib": mem_kib / 1024 / 1024, "kernel": kernel})
}

/// `0.1.0 (git 1234abc)`: the version and the commit measured.
fn wgmesh_version() -> String {
    let out = run(common::wgmesh_bin(), &["--version"]);
    let version = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .unwrap_or("?")
        .to_owned();
    let commit = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match commit {
        Some(commit) => format!("{version} (git {commit})"),
        None => version,
    }
}

fn package_version(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "not installed".into(),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        )
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Reachability

/// Whether `from` reaches every address in `targets` with one echo each (fping: one process
/// for all targets, exit 0 only if every target answered).
fn reaches_all(ns: &str, targets: &[String], timeout_ms: u32) -> bool {
    if targets.is_empty() {
        return true;
    }
    let timeout = timeout_ms.to_string();
    let mut args = vec![
        "netns", "exec", ns, "fping", "-q", "-c", "1", "-i", "1", "-t", &timeout,
    ];
    args.extend(targets.iter().map(String::as_str));
    Command::new("ip")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `done` for every item in parallel, every `poll`, until it holds for each; returns,
/// measured from `since`, when the last one first did. Panics after [`GIVE_UP`], naming `what`.
fn slowest<T: Sync>(
    since: Instant,
    items: &[T],
    poll: Duration,
    what: impl Fn(&T) -> String + Sync,
    done: impl Fn(&T) -> bool + Sync,
) -> Duration {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| {
                let (what, done) = (&what, &done);
                scope.spawn(move || {
                    while !done(item) {
                        assert!(
                            since.elapsed() < GIVE_UP,
                            "{} within {GIVE_UP:?}",
                            what(item)
                        );
                        std::thread::sleep(poll);
                    }
                    since.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap_or_default()
    })
}

/// Polls from every `(namespace, targets)` pair in parallel until each reaches all of its
/// targets; returns, measured from `since`, when the last one first did.
fn time_until_all_reach(since: Instant, probes: &[(String, Vec<String>)]) -> Duration {
    slowest(
        since,
        probes,
        Duration::from_millis(50),
        |(ns, targets)| format!("{ns} did not reach {targets:?}"),
        |(ns, targets)| reaches_all(ns, targets, 300),
    )
}

/// The mesh IPv4 and IPv6 of a started node, as soon as its control socket answers.
fn mesh_addresses(node: &Node) -> [String; 2] {
    let mut found = None;
    wait_until(GIVE_UP, "the daemon's status", || {
        found = node.status().and_then(|s| {
            Some([
                s["mesh_ipv4"].as_str()?.to_owned(),
                s["mesh_ipv6"].as_str()?.to_owned(),
            ])
        });
        found.is_some()
    });
    found.unwrap()
}

/// Every node pinging every other node's mesh IPv4 and IPv6.
fn mesh_probes(nodes: &[&Node]) -> Vec<(String, Vec<String>)> {
    let addresses: Vec<[String; 2]> = nodes.iter().map(|n| mesh_addresses(n)).collect();
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let targets = addresses
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, a)| a.iter().cloned())
                .collect();
            (node.ns.clone(), targets)
        })
        .collect()
}

/// Stops the nodes' daemons and removes their state, so the next start forms from nothing
/// (new keys, no peer cache).
fn reset(nodes: &mut [Node]) {
    common::stop_daemons(nodes.iter_mut().collect());
    for node in nodes.iter() {
        let _ = std::fs::remove_dir_all(node.state_dir());
    }
}

// ---------------------------------------------------------------------------------------------
// Convergence

fn convergence(
    lab: &mut Lab,
    dht_host: usize,
    reps: usize,
    report: &mut Report,
    with_others: bool,
) {
    let mut dht = DhtTestnet::start(&lab.nodes[dht_host]);
    let dht_flags = vec![
        "--no-lan".to_owned(),
        "--stun".to_owned(),
        "none".to_owned(),
        "--dht-bootstrap".to_owned(),
        dht.bootstrap.join(","),
    ];
    let lan_flags = vec![
        "--dht-bootstrap".to_owned(),
        "none".to_owned(),
        "--stun".to_owned(),
        "none".to_owned(),
    ];
    let mut others: Vec<OverlayLab> = if with_others {
        Tool::ALL.iter().map(|t| OverlayLab::new(*t, 10)).collect()
    } else {
        Vec::new()
    };
    let sizes: Vec<usize> = std::env::var("WGMESH_BENCH_SIZES").ok().map_or_else(
        || vec![3, 10, 25],
        |v| v.split(',').filter_map(|n| n.parse().ok()).collect(),
    );
    for n in sizes {
        let mut lan = Vec::new();
        let mut over_dht = Vec::new();
        let mut other_samples = vec![Vec::new(); others.len()];
        for rep in 0..reps {
            lan.push(form(lab, n, &lan_flags));
            over_dht.push(form(lab, n, &dht_flags));
            if n == 10 {
                for (other, samples) in others.iter_mut().zip(&mut other_samples) {
                    samples.push(other.form());
                }
            }
            eprintln!(
                "convergence N={n} rep {rep}: LAN {:.2}s DHT {:.2}s",
                lan[rep], over_dht[rep]
            );
        }
        report.row(
            &format!("convergence_lan_{n}"),
            "convergence",
            &format!("wgmesh, LAN discovery, N={n}"),
            "s",
            &lan,
        );
        report.row(
            &format!("convergence_dht_{n}"),
            "convergence",
            &format!("wgmesh, DHT only (local testnet), N={n}"),
            "s",
            &over_dht,
        );
        for (other, samples) in others.iter().zip(&other_samples) {
            if samples.is_empty() {
                continue;
            }
            report.row(
                &format!("convergence_{}_{n}", other.tool.id()),
                "convergence",
                &format!("{}, N={n}", other.tool.setup()),
                "s",
                samples,
            );
        }
    }
    dht.stop();
}

/// Starts the first `n` nodes at once with `flags` and returns the seconds until every node
/// pings every other over mesh IPv4 and IPv6.
fn form(lab: &mut Lab, n: usize, flags: &[String]) -> f64 {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let since = Instant::now();
    for node in &mut lab.nodes[..n] {
        node.start(&flags);
    }
    let nodes: Vec<&Node> = lab.nodes[..n].iter().collect();
    let probes = mesh_probes(&nodes);
    let took = time_until_all_reach(since, &probes);
    if let Some(dir) = std::env::var_os("WGMESH_BENCH_SLOW_LOGS")
        && took > Duration::from_secs(3)
    {
        let dir = PathBuf::from(dir).join(format!("n{n}-{}", since.elapsed().as_millis()));
        std::fs::create_dir_all(&dir).unwrap();
        for node in &lab.nodes[..n] {
            let _ = std::fs::copy(node.log_path(), dir.join(format!("node{}.log", node.index)));
        }
        eprintln!("slow formation ({took:?}): logs in {}", dir.display());
    }
    for node in &lab.nodes[..n] {
        let _ = std::fs::remove_file(node.log_path());
    }
    reset(&mut lab.nodes[..n]);
    secs(took)
}

/// `wgmesh-lab dht-testnet` in one namespace of the lab.
struct DhtTestnet {
    child: Child,
    bootstrap: Vec<String>,
}

impl DhtTestnet {
    fn start(host: &Node) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                env!("CARGO_BIN_EXE_wgmesh-lab"),
                "dht-testnet",
                "--bind",
                &host.lan_ip,
                "--nodes",
                "10",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut bootstrap = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.trim() == "READY" {
                break;
            }
            bootstrap.push(line.trim().to_owned());
        }
        assert!(!bootstrap.is_empty(), "dht-testnet printed no nodes");
        // Keep draining so the testnet never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, bootstrap }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Nebula and tinc, side by side

/// The other mesh tools, set up as their documentation says, each on its own bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// Node 1 is the lighthouse, every node's config names it in the static host map, the
    /// firewall passes everything; a CA and a certificate per node from `nebula-cert`.
    Nebula,
    /// tinc 1.0 in router mode: an RSA key per node, every node's host file (address, subnet,
    /// public key) on every node, every node connecting to node 1.
    Tinc,
}

impl Tool {
    const ALL: [Self; 2] = [Self::Nebula, Self::Tinc];

    fn id(self) -> &'static str {
        match self {
            Self::Nebula => "nebula",
            Self::Tinc => "tinc",
        }
    }

    fn setup(self) -> &'static str {
        match self {
            Self::Nebula => "Nebula, lighthouse + static host map",
            Self::Tinc => "tinc 1.0, router mode, all ConnectTo node 1",
        }
    }
}

/// One of the other tools on `n` hosts of its own lab.
struct OverlayLab {
    tool: Tool,
    lab: Lab,
    dir: PathBuf,
    children: Vec<Child>,
    overlay_ips: Vec<String>,
}

impl OverlayLab {
    fn new(tool: Tool, n: usize) -> Self {
        let lab = Lab::new(n);
        let dir = lab.dir.path().join(tool.id());
        std::fs::create_dir_all(&dir).unwrap();
        let mut overlay = Self {
            tool,
            lab,
            dir,
            children: Vec::new(),
            overlay_ips: Vec::new(),
        };
        match tool {
            Tool::Nebula => overlay.configure_nebula(),
            Tool::Tinc => overlay.configure_tinc(),
        }
        overlay
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn configure_nebula(&mut self) {
        let dir = self.dir.clone();
        let d = |f: &str| dir.join(f).display().to_string();
        run(
            "nebula-cert",
            &[
                "ca",
                "-name",
                "wgmesh-bench",
                "-out-crt",
                &d("ca.crt"),
                "-out-key",
                &d("ca.key"),
            ],
        );
        let lighthouse_lan = &self.lab.nodes[0].lan_ip;
        for i in 1..=self.lab.nodes.len() {
            let name = format!("n{i}");
            let ip = format!("10.77.0.{i}");
            run(
                "nebula-cert",
                &[
                    "sign",
                    "-ca-crt",
                    &d("ca.crt"),
                    "-ca-key",
                    &d("ca.key"),
                    "-name",
                    &name,
                    "-ip",
                    &format!("{ip}/24"),
                    "-out-crt",
                    &d(&format!("{name}.crt")),
                    "-out-key",
                    &d(&format!("{name}.key")),
                ],
            );
            let lighthouse = i == 1;
            let config = format!(
                "pki:\n  ca: {ca}\n  cert: {crt}\n  key: {key}\n\
                 static_host_map:\n  \"10.77.0.1\": [\"{lighthouse_lan}:{NEBULA_PORT}\"]\n\
                 lighthouse:\n  am_lighthouse: {lighthouse}\n  interval: 60\n  hosts: [{hosts}]\n\
                 listen:\n  host: 0.0.0.0\n  port: {NEBULA_PORT}\n\
                 punchy:\n  punch: true\n\
                 tun:\n  dev: nb{id}x{i}\n  mtu: 1300\n\
                 logging:\n  level: warning\n\
                 firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n\
                 \x20 inbound:\n    - port: any\n      proto: any\n      host: any\n",
                ca = d("ca.crt"),
                crt = d(&format!("{name}.crt")),
                key = d(&format!("{name}.key")),
                hosts = if lighthouse { "" } else { "\"10.77.0.1\"" },
                id = self.lab.id,
            );
            std::fs::write(self.dir.join(format!("{name}.yml")), config).unwrap();
            self.overlay_ips.push(ip);
        }
    }

    fn configure_tinc(&mut self) {
        let n = self.lab.nodes.len();
        for i in 1..=n {
            let node_dir = self.dir.join(format!("n{i}"));
            std::fs::create_dir_all(node_dir.join("hosts")).unwrap();
            let ip = format!("10.78.0.{i}");
            let connect = if i == 1 { "" } else { "ConnectTo = n1\n" };
            std::fs::write(
                node_dir.join("tinc.conf"),
                format!(
                    "Name = n{i}\nInterface = tc{}x{i}\nMode = router\nAddressFamily = ipv4\n\
                     Port = {TINC_PORT}\n{connect}",
                    self.lab.id
                ),
            )
            .unwrap();
            std::fs::write(
                node_dir.join("hosts").join(format!("n{i}")),
                format!(
                    "Address = {}\nSubnet = {ip}/32\nPort = {TINC_PORT}\n",
                    self.lab.nodes[i - 1].lan_ip
                ),
            )
            .unwrap();
            let up = node_dir.join("tinc-up");
            std::fs::write(
                &up,
                format!(
                    "#!/bin/sh\nip addr add {ip}/24 dev $INTERFACE\nip link set $INTERFACE up\n"
                ),
            )
            .unwrap();
            std::fs::set_permissions(&up, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            // Writes rsa_key.priv and appends the public key to hosts/n{i}.
            let keygen = Command::new("tincd")
                .arg("-c")
                .arg(&node_dir)
                .args(["-K", "2048"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(keygen.success(), "tincd -K for n{i}");
            self.overlay_ips.push(ip);
        }
        // Every node knows every host file.
        for i in 1..=n {
            let host = std::fs::read(self.dir.join(format!("n{i}/hosts/n{i}"))).unwrap();
            for j in (1..=n).filter(|j| *j != i) {
                std::fs::write(self.dir.join(format!("n{j}/hosts/n{i}")), &host).unwrap();
            }
        }
    }

    fn command(&self, i: usize) -> Vec<String> {
        match self.tool {
            Tool::Nebula => vec![
                "nebula".into(),
                "-config".into(),
                self.path(&format!("n{i}.yml")),
            ],
            Tool::Tinc => {
                let node_dir = self.path(&format!("n{i}"));
                vec![
                    "tincd".into(),
                    "-c".into(),
                    node_dir.clone(),
                    "-D".into(),
                    format!("--pidfile={node_dir}/tinc.pid"),
                ]
            }
        }
    }

    fn start(&mut self) {
        for (i, node) in self.lab.nodes.iter().enumerate() {
            let log = std::fs::File::create(self.dir.join(format!("n{}.log", i + 1))).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", &node.ns])
                .args(self.command(i + 1))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.children.push(child);
        }
    }

    fn probes(&self) -> Vec<(String, Vec<String>)> {
        self.lab
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let targets = self
                    .overlay_ips
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, ip)| ip.clone())
                    .collect();
                (node.ns.clone(), targets)
            })
            .collect()
    }

    /// Starts every node at once; seconds until every node pings every other overlay IPv4.
    fn form(&mut self) -> f64 {
        let since = Instant::now();
        self.start();
        let took = time_until_all_reach(since, &self.probes());
        self.stop();
        secs(took)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for mut child in self.children.drain(..) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OverlayLab {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// A steady 10-node mesh: join, route propagation, restart disruption, idle footprint

fn steady_mesh_scenarios(
    lab: &mut Lab,
    reps: usize,
    report: &mut Report,
    wanted: &dyn Fn(&str) -> bool,
) {
    let flags = [
        "--keep-interface",
        "--dht-bootstrap",
        "none",
        "--stun",
        "none",
    ];
    let since = Instant::now();
    for node in &mut lab.nodes[..10] {
        node.start(&flags);
    }
    let ten: Vec<&Node> = lab.nodes[..10].iter().collect();
    let probes = mesh_probes(&ten);
    let formed = time_until_all_reach(since, &probes);
    eprintln!("steady mesh of 10 formed in {formed:?}");

    if wanted("join") {
        join(lab, reps, &flags, report);
    }
    if wanted("routes") {
        route_propagation(lab, reps, report);
    }
    if wanted("restart") {
        restart_disruption(lab, reps, &flags, report);
    }
    if wanted("idle") {
        idle_footprint(lab, report, wanted("others"));
    }
    reset(&mut lab.nodes[..10]);
}

/// A new node (fresh identity) joins the running 10-node mesh: seconds until it pings all ten
/// and all ten ping it, over IPv4 and IPv6.
fn join(lab: &mut Lab, reps: usize, flags: &[&str], report: &mut Report) {
    let mut samples = Vec::new();
    for rep in 0..reps {
        let joiner = 25 + rep;
        // Without --keep-interface: the joiner says Goodbye when it leaves again.
        let flags: Vec<&str> = flags
            .iter()
            .copied()
            .filter(|f| *f != "--keep-interface")
            .collect();
        let since = Instant::now();
        lab.nodes[joiner].start(&flags);
        let mut nodes: Vec<&Node> = lab.nodes[..10].iter().collect();
        nodes.push(&lab.nodes[joiner]);
        let took = time_until_all_reach(since, &mesh_probes(&nodes));
        eprintln!("join rep {rep}: {took:?}");
        samples.push(secs(took));
        reset(std::slice::from_mut(&mut lab.nodes[joiner]));
        // The others drop the leaver on its Goodbye; wait so the next join starts from ten.
        wait_until(GIVE_UP, "the mesh to forget the joiner", || {
            lab.nodes[..10].iter().all(|n| n.peer_count() == Some(9))
        });
    }
    report.row(
        "join_10",
        "join",
        "wgmesh, new node into a 10-node mesh, LAN",
        "s",
        &samples,
    );
}

/// `wgmesh reload` with a new route on node 1: seconds until the other nine have it in their
/// routing tables.
fn route_propagation(lab: &Lab, reps: usize, report: &mut Report) {
    let origin = &lab.nodes[0];
    let mut samples = Vec::new();
    for rep in 0..reps {
        let route = format!("10.201.{rep}.0/24");
        std::fs::write(origin.reload_path(), format!("advertise-routes={route}\n")).unwrap();
        let since = Instant::now();
        let out = origin.wgmesh(&["reload"]);
        assert!(
            out.status.success(),
            "reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let took = slowest(
            since,
            &lab.nodes[1..10],
            Duration::from_millis(20),
            |node| format!("route {route} never reached node {}", node.index),
            |node| {
                node.routes(&["proto", "77"])
                    .lines()
                    .any(|l| l.starts_with(route.as_str()))
            },
        );
        eprintln!("route propagation rep {rep}: {took:?}");
        samples.push(secs(took));
    }
    std::fs::write(origin.reload_path(), "advertise-routes=\n").unwrap();
    let _ = origin.wgmesh(&["reload"]);
    report.row(
        "routes_10",
        "route propagation",
        "wgmesh, reload on 1 node until 9 others route it",
        "s",
        &samples,
    );
}

/// Graceful `--keep-interface` restart of node 2 while node 1 pings it every 100 ms.
fn restart_disruption(lab: &mut Lab, reps: usize, flags: &[&str], report: &mut Report) {
    let mut lost = Vec::new();
    for rep in 0..reps {
        let [target, _] = mesh_addresses(&lab.nodes[1]);
        let pinger = Command::new("ip")
            .args(["netns", "exec", &lab.nodes[0].ns, "ping", "-n", "-q"])
            .args(["-i", "0.1", "-c", "50", "-W", "1", &target])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        lab.nodes[1].terminate();
        lab.nodes[1].start(flags);
        let out = pinger.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (sent, received) = ping_counts(&text);
        eprintln!("restart rep {rep}: {sent} sent, {received} received");
        lost.push((sent - received) as f64);
        wait_until(GIVE_UP, "the restarted node to see the mesh", || {
            lab.nodes[1].peer_count() == Some(9)
        });
    }
    report.row(
        "restart_lost",
        "restart disruption",
        "wgmesh, --keep-interface restart, pings every 100 ms (50 sent)",
        "lost",
        &lost,
    );
}

fn ping_counts(summary: &str) -> (u64, u64) {
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default();
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// What `/proc` says of one process (all threads).
#[derive(Debug, Clone, Default)]
struct ProcSample {
    rss_kib: u64,
    cpu_ticks: u64,
    /// Per thread: a thread's counter goes with it when it exits, so deltas are taken per
    /// thread id (a thread that exits inside the window loses its last switches).
    voluntary_switches: BTreeMap<u32, u64>,
}

impl ProcSample {
    /// Voluntary context switches since `before`, over the threads alive now.
    fn switches_since(&self, before: &Self) -> u64 {
        self.voluntary_switches
            .iter()
            .map(|(tid, now)| {
                now.saturating_sub(before.voluntary_switches.get(tid).copied().unwrap_or(0))
            })
            .sum()
    }
}

fn proc_sample(pid: u32) -> ProcSample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_ticks = ticks(14).unwrap_or(0) + ticks(15).unwrap_or(0);
    let voluntary_switches = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| {
                    let tid = t.file_name().to_str()?.parse().ok()?;
                    let s = std::fs::read_to_string(t.path().join("status")).ok()?;
                    Some((tid, field(&s, "voluntary_ctxt_switches:")))
                })
                .collect()
        })
        .unwrap_or_default();
    ProcSample {
        rss_kib: field(&status, "VmRSS:"),
        cpu_ticks,
        voluntary_switches,
    }
}

fn wireguard_go_pid(interface: &str) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("wireguard-go -f {interface}$")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Per process over the same window: RSS at the end (MiB), CPU % and voluntary context switches
/// (wakeups) per minute.
fn footprint(pids: &[u32], window: Duration, during: impl FnOnce()) -> [Vec<f64>; 3] {
    let before: Vec<ProcSample> = pids.iter().map(|p| proc_sample(*p)).collect();
    let since = Instant::now();
    during();
    let elapsed = since.elapsed().max(window);
    let after: Vec<ProcSample> = pids.iter().map(|p| proc_sample(*p)).collect();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let minutes = elapsed.as_secs_f64() / 60.0;
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for (b, a) in before.iter().zip(&after) {
        out[0].push(a.rss_kib as f64 / 1024.0);
        out[1].push(
            a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / ticks_per_sec / elapsed.as_secs_f64()
                * 100.0,
        );
        out[2].push(a.switches_since(b) as f64 / minutes);
    }
    out
}

/// The steady 10-node wgmesh mesh and steady 10-node Nebula and tinc meshes, measured over the
/// same 60 s.
fn idle_footprint(lab: &Lab, report: &mut Report, with_others: bool) {
    let window = Duration::from_secs(
        std::env::var("WGMESH_BENCH_IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let mut others: Vec<OverlayLab> = if with_others {
        Tool::ALL
            .iter()
            .map(|tool| {
                let mut other = OverlayLab::new(*tool, 10);
                other.start();
                let probes = other.probes();
                time_until_all_reach(Instant::now(), &probes);
                other
            })
            .collect()
    } else {
        Vec::new()
    };
    // Let all settle after forming (wgmesh paces down; the others' handshakes finish).
    std::thread::sleep(Duration::from_secs(10));
    let daemons: Vec<u32> = lab.nodes[..10]
        .iter()
        .map(|n| n.daemon_pid().unwrap())
        .collect();
    let wireguard_go: Vec<u32> = lab.nodes[..10]
        .iter()
        .map(|n| wireguard_go_pid(&n.interface).unwrap())
        .collect();
    let mut all = daemons.clone();
    all.extend(&wireguard_go);
    let mut parts = vec![
        ("wgmesh", "wgmesh daemon".to_owned(), 0..10),
        ("wggo", "wireguard-go under wgmesh".to_owned(), 10..20),
    ];
    for other in &others {
        let pids = other.pids();
        parts.push((
            other.tool.id(),
            other.tool.setup().to_owned(),
            all.len()..all.len() + pids.len(),
        ));
        all.extend(pids);
    }
    let [rss, cpu, wakeups] = footprint(&all, window, || std::thread::sleep(window));
    let case_window = window.as_secs();
    for (id, what, range) in parts {
        if range.is_empty() {
            continue;
        }
        report.row(
            &format!("idle_rss_{id}"),
            "idle footprint",
            &format!("{what}: RSS, steady 10-node mesh"),
            "MiB",
            &rss[range.clone()],
        );
        report.row(
            &format!("idle_cpu_{id}"),
            "idle footprint",
            &format!("{what}: CPU over {case_window} s"),
            "%",
            &cpu[range.clone()],
        );
        report.row(
            &format!("idle_wakeups_{id}"),
            "idle footprint",
            &format!("{what}: wakeups (voluntary switches)"),
            "/min",
            &wakeups[range],
        );
    }
    // Both parts of wgmesh's userspace data plane together, per host, against Nebula.
    let sum = |v: &[f64]| -> Vec<f64> { (0..10).map(|i| v[i] + v[i + 10]).collect() };
    report.row(
        "idle_rss_wgmesh_total",
        "idle footprint",
        "wgmesh + wireguard-go: RSS per host",
        "MiB",
        &sum(&rss),
    );
    report.row(
        "idle_cpu_wgmesh_total",
        "idle footprint",
        "wgmesh + wireguard-go: CPU per host",
        "%",
        &sum(&cpu),
    );
    for other in &mut others {
        other.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Data plane

/// iperf3 between hosts 1 and 2: over the tunnel wgmesh made, and over a wireguard-go tunnel
/// configured by hand with `wg` in the same two namespaces, alternating, in the same run.
fn data_plane(lab: &mut Lab, reps: usize, report: &mut Report) {
    let flags = ["--dht-bootstrap", "none", "--stun", "none"];
    let (a, b) = (0, 1);
    lab.nodes[a].start(&flags);
    lab.nodes[b].start(&flags);
    let pair: Vec<&Node> = vec![&lab.nodes[a], &lab.nodes[b]];
    time_until_all_reach(Instant::now(), &mesh_probes(&pair));
    let [mesh_b, _] = mesh_addresses(&lab.nodes[b]);
    let baseline = Baseline::new(&lab.nodes[a], &lab.nodes[b], &lab.id);
    let seconds = std::env::var("WGMESH_BENCH_IPERF_SECS").unwrap_or_else(|_| "5".into());
    let mut via_wgmesh = Vec::new();
    let mut via_baseline = Vec::new();
    for rep in 0..reps {
        via_wgmesh.push(iperf(&lab.nodes[a], &lab.nodes[b], &mesh_b, &seconds));
        via_baseline.push(iperf(
            &lab.nodes[a],
            &lab.nodes[b],
            &baseline.far_ip,
            &seconds,
        ));
        eprintln!(
            "iperf3 rep {rep}: wgmesh {:.0} Mbit/s, hand-made {:.0} Mbit/s",
            via_wgmesh[rep], via_baseline[rep]
        );
    }
    drop(baseline);
    report.row(
        "iperf_wgmesh",
        "data plane",
        &format!("iperf3 TCP {seconds} s over the wgmesh tunnel (wireguard-go)"),
        "Mbit/s",
        &via_wgmesh,
    );
    report.row(
        "iperf_baseline",
        "data plane",
        &format!("iperf3 TCP {seconds} s over a hand-made wireguard-go tunnel"),
        "Mbit/s",
        &via_baseline,
    );
    reset(&mut lab.nodes[..2]);
}

// ---------------------------------------------------------------------------------------------
// Relay (issue 14, item 4)

/// Two hosts behind port-randomising NAT routers (the NAT lab: they can only meet through a
/// relay) and a public member started with `--relay`, which carries their WireGuard datagrams
/// end to end. Measured alternately in each repetition: iperf3 and ping from h1 to h2 (through
/// the relay) and from h1 to the relay itself (direct, through the same NAT), and the relay
/// daemon's CPU time while it forwards the iperf3 run.
fn relay_path(reps: usize, report: &mut Report) {
    use common::nat::{NatLab, NatMode};
    let mut lab = NatLab::new(&[NatMode::Random, NatMode::Random]);
    let bootstrap = lab.start_dht(10).join(",");
    let stun = lab.start_stun().join(",");
    let flags = ["--no-lan", "--dht-bootstrap", &bootstrap, "--stun", &stun];
    let begin = Instant::now();
    let mut relay_flags = flags.to_vec();
    relay_flags.push("--relay");
    lab.relay.start(&relay_flags);
    for host in &mut lab.hosts {
        host.start(&flags);
    }
    lab.wait_for_full_mesh(Duration::from_secs(120));
    let ips = lab.mesh_ips();
    let (relay_ip, h2_ip) = (ips[0].0.clone(), ips[2].0.clone());
    wait_until(
        Duration::from_secs(120),
        "h1 to ping h2 through the relay",
        || lab.hosts[0].ping(&h2_ip) && lab.hosts[1].ping(&ips[1].0),
    );
    let formed = begin.elapsed().as_secs_f64();
    eprintln!("relay: h1 and h2 ping through the relay {formed:.1} s after the first start");
    let seconds = std::env::var("WGMESH_BENCH_IPERF_SECS").unwrap_or_else(|_| "5".into());
    let Some(relay_pid) = lab.relay.daemon_pid() else {
        panic!("the relay's daemon is not running");
    };
    let (mut relayed, mut direct, mut cpu_per_100) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rtt_relayed, mut rtt_direct) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let cpu_before = process_cpu_seconds(relay_pid);
        let wall_before = Instant::now();
        let mbits = iperf(&lab.hosts[0], &lab.hosts[1], &h2_ip, &seconds);
        let cpu = process_cpu_seconds(relay_pid) - cpu_before;
        let share = cpu / wall_before.elapsed().as_secs_f64() * 100.0;
        relayed.push(mbits);
        cpu_per_100.push(share / mbits * 100.0);
        direct.push(iperf(&lab.hosts[0], &lab.relay, &relay_ip, &seconds));
        rtt_relayed.push(ping_rtt_ms(&lab.hosts[0], &h2_ip));
        rtt_direct.push(ping_rtt_ms(&lab.hosts[0], &relay_ip));
        eprintln!(
            "relay rep {rep}: through the relay {:.0} Mbit/s ({:.1} % of a core on the relay), direct {:.0} Mbit/s; rtt {:.3} / {:.3} ms",
            relayed[rep], share, direct[rep], rtt_relayed[rep], rtt_direct[rep]
        );
    }
    report.row(
        "relay_ping_after",
        "relay",
        "two hosts behind random-port NATs ping through the relay (from the first start)",
        "s",
        &[formed],
    );
    report.row(
        "iperf_relayed",
        "relay",
        &format!("iperf3 TCP {seconds} s, h1 to h2 through the relay (end to end, wireguard-go)"),
        "Mbit/s",
        &relayed,
    );
    report.row(
        "iperf_relay_direct",
        "relay",
        &format!("iperf3 TCP {seconds} s, h1 to the relay, direct through the same NAT"),
        "Mbit/s",
        &direct,
    );
    report.row(
        "relay_cpu_per_100_mbit",
        "relay",
        "relay daemon CPU while forwarding, per 100 Mbit/s relayed",
        "% of a core",
        &cpu_per_100,
    );
    report.row(
        "rtt_relayed",
        "relay",
        "ping h1 to h2 through the relay (mean of 20)",
        "ms",
        &rtt_relayed,
    );
    report.row(
        "rtt_relay_direct",
        "relay",
        "ping h1 to the relay, direct (mean of 20)",
        "ms",
        &rtt_direct,
    );
}

/// Two hosts behind port-keeping NAT routers and a relay: how long from the moment both hold
/// each other (by any path) until both hold each other directly and ping (issue 14's goal: at
/// most 10 s), polled every 100 ms.
fn direct_after_learning(report: &mut Report) {
    use common::nat::{NatLab, NatMode};
    let mut lab = NatLab::new(&[NatMode::PortPreserving, NatMode::PortPreserving]);
    let bootstrap = lab.start_dht(10).join(",");
    let stun = lab.start_stun().join(",");
    let flags = ["--no-lan", "--dht-bootstrap", &bootstrap, "--stun", &stun];
    let mut relay_flags = flags.to_vec();
    relay_flags.push("--relay");
    lab.relay.start(&relay_flags);
    for host in &mut lab.hosts {
        host.start(&flags);
    }
    let begin = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "both hosts to answer status",
        || lab.hosts.iter().all(|h| h.status().is_some()),
    );
    let key = |node: &Node| node.status_ok()["public_key"].clone();
    let (k1, k2) = (key(&lab.hosts[0]), key(&lab.hosts[1]));
    let held = |node: &Node, other: &Value| -> Option<bool> {
        let status = node.status()?;
        let peer = status["peers"]
            .as_array()?
            .iter()
            .find(|p| p["public_key"] == *other)?
            .clone();
        Some(peer["relayed_via"].is_null())
    };
    let mut learned = None;
    let direct = loop {
        assert!(
            begin.elapsed() < Duration::from_secs(180),
            "no direct path in 180 s"
        );
        let (a, b) = (held(&lab.hosts[0], &k2), held(&lab.hosts[1], &k1));
        if a.is_some() && b.is_some() && learned.is_none() {
            learned = Some(Instant::now());
        }
        if let (Some(true), Some(true), Some(at)) = (a, b, learned) {
            let ips = lab.mesh_ips();
            if lab.hosts[0].ping(&ips[2].0) && lab.hosts[1].ping(&ips[1].0) {
                break at.elapsed().as_secs_f64();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("direct: h1 and h2 direct {direct:.2} s after both held each other");
    report.row(
        "direct_after_learning_pp",
        "relay",
        "port-keeping NATs, relay present: from both holding each other to both direct (and ping)",
        "s",
        &[direct],
    );
}

/// User and system CPU seconds of a process so far (`/proc/PID/stat`, in clock ticks of 10 ms).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The mean round-trip time of 20 pings, in ms.
fn ping_rtt_ms(from: &Node, ip: &str) -> f64 {
    let out = from.exec("ping", &["-c", "20", "-i", "0.2", "-q", ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.split_once(" = ").filter(|(k, _)| k.contains("rtt")))
        .and_then(|(_, values)| values.split('/').nth(1)?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Mbit/s received in one `iperf3` TCP run from `client` to a one-off server on `server_ip`.
/// A run that fails or reports no result (iperf3 prints its error in the JSON) is retried with
/// a fresh server, up to five times.
fn iperf(client: &Node, server: &Node, server_ip: &str, seconds: &str) -> f64 {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let mut daemon = Command::new("ip")
            .args([
                "netns", "exec", &server.ns, "iperf3", "-s", "-1", "-B", server_ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let out = client.exec("iperf3", &["-c", server_ip, "-t", seconds, "-J"]);
        let _ = daemon.kill();
        let _ = daemon.wait();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = doc["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e6;
        }
        let failure = doc["error"].as_str().unwrap_or("no result").to_owned();
        eprintln!("iperf3 to {server_ip}: {failure}; retrying");
        failures.push(failure);
    }
    panic!("iperf3 to {server_ip} failed five times: {failures:?}");
}

/// Two wireguard-go interfaces, configured with `wg` as an operator would by hand.
struct Baseline {
    near: (String, String),
    far: (String, String),
    far_ip: String,
}

impl Baseline {
    fn new(near: &Node, far: &Node, lab_id: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let names = [format!("wgh{lab_id}a"), format!("wgh{lab_id}b")];
        let ips = ["10.99.0.1", "10.99.0.2"];
        let keys: Vec<(PathBuf, String)> = (0..2)
            .map(|i| {
                let private = run("wg", &["genkey"]).stdout;
                let path = dir.path().join(format!("key{i}"));
                std::fs::write(&path, &private).unwrap();
                let mut pubkey = Command::new("wg")
                    .arg("pubkey")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                use std::io::Write as _;
                pubkey.stdin.take().unwrap().write_all(&private).unwrap();
                let public = pubkey.wait_with_output().unwrap().stdout;
                (path, String::from_utf8_lossy(&public).trim().to_owned())
            })
            .collect();
        let hosts = [near, far];
        for i in 0..2 {
            let (node, other) = (hosts[i], hosts[1 - i]);
            let name = &names[i];
            let ok = node.exec("wireguard-go", &[name]).status.success();
            assert!(ok, "wireguard-go {name} did not start");
            let endpoint = format!("{}:{BASELINE_PORT}", other.lan_ip);
            let allowed = format!("{}/32", ips[1 - i]);
            let key = keys[i].0.display().to_string();
            let out = node.exec(
                "wg",
                &[
                    "set",
                    name,
                    "private-key",
                    &key,
                    "listen-port",
                    BASELINE_PORT,
                    "peer",
                    &keys[1 - i].1,
                    "endpoint",
                    &endpoint,
                    "allowed-ips",
                    &allowed,
                ],
            );
            assert!(
                out.status.success(),
                "wg set: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let cidr = format!("{}/24", ips[i]);
            for args in [
                vec!["addr", "add", &cidr, "dev", name],
                vec!["link", "set", name, "mtu", "1420", "up"],
            ] {
                let out = node.exec("ip", &args);
                assert!(out.status.success(), "ip {args:?}");
            }
        }
        Self {
            near: (near.ns.clone(), names[0].clone()),
            far: (far.ns.clone(), names[1].clone()),
            far_ip: ips[1].into(),
        }
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        for (ns, name) in [&self.near, &self.far] {
            let _ = Command::new("ip")
                .args(["-n", ns, "link", "del", name])
                .status();
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scale (issue 11, item 4): formation of 25 to 100 nodes with the LAN setup, steady-state control
// traffic, receive-buffer overflows, idle wakeups

/// The scale sweep's knobs, from the environment.
struct ScaleConfig {
    /// `WGMESH_BENCH_SCALE_SIZES` (default 25,50,75,100): the mesh sizes formed.
    sizes: Vec<usize>,
    /// `WGMESH_BENCH_STEADY_SIZES` (default 25,100): the sizes whose steady state is measured
    /// (those also in `sizes`).
    steady_sizes: Vec<usize>,
    /// `WGMESH_BENCH_SCALE_REPS` (default 1): formations per size. A formation of 100 with its
    /// steady window takes minutes, hence fewer than the other scenarios' repetitions.
    reps: usize,
    /// `WGMESH_BENCH_SETTLE_SECS` (default 30): wait after formation before a steady window.
    settle: Duration,
    /// `WGMESH_BENCH_IDLE_SECS` (default 60): one steady window.
    window: Duration,
    /// `WGMESH_BENCH_SCALE_GIVE_UP` (default 120 s, four times the target at 100): a formation still short then is recorded as
    /// taking that long, with the number of nodes short.
    give_up: Duration,
    /// `WGMESH_BENCH_PINGS` (default 30): random pairs pinged after each formation.
    pings: usize,
    /// `WGMESH_BENCH_IDLE_RUNS` (default 1; 0 skips them): the idle-wakeup row's three windows
    /// before the sweep.
    idle_runs: bool,
}

impl ScaleConfig {
    fn from_env() -> Self {
        let list = |name: &str, default: &[usize]| -> Vec<usize> {
            std::env::var(name).ok().map_or_else(
                || default.to_vec(),
                |v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
            )
        };
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            sizes: list("WGMESH_BENCH_SCALE_SIZES", &[25, 50, 75, 100]),
            steady_sizes: list("WGMESH_BENCH_STEADY_SIZES", &[25, 100]),
            reps: usize::try_from(number("WGMESH_BENCH_SCALE_REPS", 1)).unwrap(),
            settle: Duration::from_secs(number("WGMESH_BENCH_SETTLE_SECS", 30)),
            window: Duration::from_secs(number("WGMESH_BENCH_IDLE_SECS", 60)),
            give_up: Duration::from_secs(number("WGMESH_BENCH_SCALE_GIVE_UP", 120)),
            pings: usize::try_from(number("WGMESH_BENCH_PINGS", 30)).unwrap(),
            idle_runs: number("WGMESH_BENCH_IDLE_RUNS", 1) != 0,
        }
    }
}

/// The LAN setup of every convergence row: multicast discovery on, and everything else at its
/// default except the two sources that need the internet, which this lab has not.
const LAN_FLAGS: [&str; 4] = ["--dht-bootstrap", "none", "--stun", "none"];

/// The idle-wakeup row (a steady 10-node mesh, three consecutive windows), then for each size:
/// formation, sampled pings, `RcvbufErrors`, and at the steady sizes one steady window.
fn scale_sweep(lab: &mut Lab, config: &ScaleConfig, report: &mut Report) {
    // Every node shares the lab's secret, so one derivation gives every node's control port.
    let control_port: u16 = common::derive(&lab.nodes[0].secret_file)["control_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap();
    if config.idle_runs {
        idle_wakeup_runs(lab, config, control_port, report);
    }
    for &n in &config.sizes {
        let mut took = Vec::new();
        let mut short = Vec::new();
        let mut failed = Vec::new();
        let mut rcvbuf = Vec::new();
        let mut control_drops = Vec::new();
        let mut steady = SteadyWindow::default();
        for rep in 0..config.reps {
            let formed = form_by_handshakes(&mut lab.nodes[..n], control_port, config);
            eprintln!(
                "scale N={n} rep {rep}: {:.1}s ({} nodes short), RcvbufErrors {} ({} at control sockets), {}/{} pings failed",
                secs(formed.took),
                formed.short,
                formed.rcvbuf_errors,
                formed.control_socket_drops,
                formed.failed_pings,
                config.pings
            );
            took.push(secs(formed.took));
            short.push(formed.short as f64);
            failed.push(formed.failed_pings as f64);
            rcvbuf.push(formed.rcvbuf_errors as f64);
            control_drops.push(formed.control_socket_drops as f64);
            if config.steady_sizes.contains(&n) {
                std::thread::sleep(config.settle);
                let window = steady_window(&lab.nodes[..n], config.window);
                eprintln!(
                    "scale N={n} rep {rep}: steady sent/node/min median {:.1} max {:.1}, wakeups/min median {:.0}",
                    median_of(&window.sent),
                    window.sent.iter().copied().fold(0.0, f64::max),
                    median_of(&window.wakeups)
                );
                steady.extend(window);
            }
            reset(&mut lab.nodes[..n]);
        }
        report.row(
            &format!("scale_converge_{n}"),
            "scale",
            &format!("wgmesh, LAN, N={n}: until every node has N−1 handshakes"),
            "s",
            &took,
        );
        if short.iter().any(|s| *s > 0.0) {
            report.row(
                &format!("scale_short_{n}"),
                "scale",
                &format!(
                    "N={n}: nodes short of N−1 handshakes after {} s (gave up)",
                    config.give_up.as_secs()
                ),
                "nodes",
                &short,
            );
        }
        report.row(
            &format!("scale_pings_{n}"),
            "scale",
            &format!(
                "N={n}: pings failed right after, of {} random pairs (mesh IPv4)",
                config.pings
            ),
            "failed",
            &failed,
        );
        report.row(
            &format!("scale_rcvbuf_{n}"),
            "scale",
            &format!("N={n}: UDP RcvbufErrors during formation, sum over nodes"),
            "errors",
            &rcvbuf,
        );
        report.row(
            &format!("scale_control_drops_{n}"),
            "scale",
            &format!("N={n}: drops at the daemons' control sockets (/proc/net/udp), sum"),
            "errors",
            &control_drops,
        );
        if !steady.sent.is_empty() {
            steady.report(report, n);
        }
    }
}

/// A steady 10-node mesh, three consecutive windows: the median daemon's wakeups in each (the
/// row's samples are the three windows), the busiest daemon's, and the window's control traffic.
fn idle_wakeup_runs(lab: &mut Lab, config: &ScaleConfig, control_port: u16, report: &mut Report) {
    let n = 10;
    let formed = form_by_handshakes(&mut lab.nodes[..n], control_port, config);
    eprintln!("idle wakeups: 10-node mesh formed in {:?}", formed.took);
    std::thread::sleep(config.settle);
    let mut medians = Vec::new();
    let mut busiest = Vec::new();
    let mut steady = SteadyWindow::default();
    for run in 0..3 {
        let window = steady_window(&lab.nodes[..n], config.window);
        let worst = window.wakeups.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "idle wakeups window {run}: median daemon {:.0}/min, busiest {worst:.0}/min",
            median_of(&window.wakeups)
        );
        medians.push(median_of(&window.wakeups));
        busiest.push(worst);
        if run == 0 {
            steady.extend(window);
        }
    }
    reset(&mut lab.nodes[..n]);
    let minutes = config.window.as_secs();
    report.row(
        "idle_wakeups_runs_10",
        "idle footprint",
        &format!(
            "wgmesh daemon: wakeups, steady 10-node mesh, median daemon of each of 3 consecutive {minutes} s windows"
        ),
        "/min",
        &medians,
    );
    report.row(
        "idle_wakeups_runs_10_max",
        "idle footprint",
        "wgmesh daemon: wakeups, the busiest daemon of each of the same 3 windows",
        "/min",
        &busiest,
    );
    steady.report(report, n);
}

fn median_of(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    median(&sorted)
}

/// One formation of the scale sweep.
struct Formation {
    /// From the first daemon's start until the last node listed N−1 handshakes (or the give-up).
    took: Duration,
    /// Nodes that had not when the bench gave up (0 when the mesh formed).
    short: usize,
    /// `RcvbufErrors` of `/proc/net/snmp` (UDP over IPv4), after minus before, summed over the
    /// nodes' namespaces.
    rcvbuf_errors: u64,
    /// The drops column of the control sockets in `/proc/net/udp`, summed over the nodes: the
    /// share of the namespace's drops that the daemon's socket took (the rest are wireguard-go's).
    /// The sockets are made during formation, so these count from zero.
    control_socket_drops: u64,
    /// Of the sampled pairs, how many did not answer one ping.
    failed_pings: usize,
}

/// Starts the nodes at once with [`LAN_FLAGS`] and fresh state, and times them until every
/// node's `wg show <iface> latest-handshakes` lists N−1 peers with a nonzero handshake, polled
/// once a second. Each namespace gets the control-traffic counters first; the daemons are left
/// running for a steady window.
fn form_by_handshakes(nodes: &mut [Node], control_port: u16, config: &ScaleConfig) -> Formation {
    let n = nodes.len();
    for node in nodes.iter() {
        count_control_datagrams(node, control_port);
    }
    let before: Vec<u64> = nodes.iter().map(|n| udp_rcvbuf_errors(&n.ns)).collect();
    let since = Instant::now();
    // WGMESH_BENCH_METRICS: each daemon also serves metrics on its namespace's loopback, and a
    // short formation prints the exchange's drop counters summed over the nodes.
    let metrics = std::env::var_os("WGMESH_BENCH_METRICS").is_some();
    let mut flags = LAN_FLAGS.to_vec();
    if metrics {
        flags.extend(["--metrics-listen", "127.0.0.1:9977"]);
    }
    for node in nodes.iter_mut() {
        node.start_direct(&flags);
    }
    let done: Vec<Option<Duration>> = std::thread::scope(|scope| {
        if std::env::var_os("WGMESH_BENCH_TRACE").is_some() {
            let nodes = &*nodes;
            scope.spawn(move || trace_formation(nodes, since, config.give_up));
        }
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    loop {
                        if handshaken_peers(&node.interface) >= n - 1 {
                            return Some(since.elapsed());
                        }
                        if since.elapsed() >= config.give_up {
                            return None;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let short = done.iter().filter(|d| d.is_none()).count();
    if let Some(dir) = std::env::var_os("WGMESH_BENCH_SLOW_LOGS")
        && short > 0
    {
        let dir = PathBuf::from(dir).join(format!("scale-n{n}-{}", since.elapsed().as_millis()));
        std::fs::create_dir_all(&dir).unwrap();
        for node in nodes.iter() {
            let _ = std::fs::copy(node.log_path(), dir.join(format!("node{}.log", node.index)));
        }
        eprintln!("formation short: logs in {}", dir.display());
    }
    if metrics {
        let mut drops: BTreeMap<String, f64> = BTreeMap::new();
        for node in nodes.iter() {
            let out = node.exec("curl", &["-s", "http://127.0.0.1:9977/metrics"]);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.starts_with("wgmesh_exchange_dropped")
                    || line.starts_with("wgmesh_exchange_aead")
                {
                    if let Some((name, value)) = line.rsplit_once(' ') {
                        *drops.entry(name.to_owned()).or_default() +=
                            value.parse::<f64>().unwrap_or(0.0);
                    }
                }
            }
        }
        for (name, value) in drops.iter().filter(|(_, v)| **v > 0.0) {
            eprintln!("N={n}: {name} {value} (sum over nodes)");
        }
    }
    let converged: Vec<f64> = done.iter().flatten().map(|d| secs(*d)).collect();
    eprintln!(
        "N={n}: {} nodes converged, the median one at {:.1}s, the last at {:.1}s",
        converged.len(),
        median_of(&converged),
        converged.iter().copied().fold(0.0, f64::max)
    );
    // A node without a daemon makes every other node one handshake short: say why it is gone.
    for node in nodes.iter_mut() {
        let exited = node
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten());
        if let Some(status) = exited {
            let log = node.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "N={n}: node {} has no daemon ({status}); the end of its log:\n{}",
                node.index,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    for (node, _) in nodes.iter().zip(&done).filter(|(_, d)| d.is_none()) {
        eprintln!(
            "N={n}: node {} has {} of {} peers with a handshake after {:?} ({} configured, {} members in status)",
            node.index,
            handshaken_peers(&node.interface),
            n - 1,
            config.give_up,
            configured_peers(&node.interface),
            node.peer_count()
                .map_or_else(|| "?".into(), |c| c.to_string()),
        );
    }
    let took = done
        .iter()
        .map(|d| d.unwrap_or(config.give_up))
        .max()
        .unwrap_or_default();
    let after: Vec<u64> = nodes.iter().map(|n| udp_rcvbuf_errors(&n.ns)).collect();
    let rcvbuf_errors = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    let control_socket_drops = nodes
        .iter()
        .map(|n| udp_socket_drops(&n.ns, control_port))
        .sum();
    let formation_sent: u64 = nodes.iter().map(|n| control_datagrams_sent(n).0).sum();
    eprintln!(
        "N={n}: {:.1} control datagrams sent per node until formed",
        formation_sent as f64 / n as f64
    );
    if let Some(status) = nodes[0].status() {
        assert_eq!(
            status["control_port"].as_u64(),
            Some(u64::from(control_port)),
            "the daemons' control port is not the derived one"
        );
    }
    let failed_pings = sampled_pings(nodes, config.pings);
    Formation {
        took,
        short,
        rcvbuf_errors,
        control_socket_drops,
        failed_pings,
    }
}

/// Peers with a nonzero latest handshake. `wg` reaches wireguard-go through its UAPI socket,
/// a path in the shared file system, so it runs without `ip netns exec` (cheaper, with a hundred
/// nodes polled every second, and the same answer).
fn handshaken_peers(interface: &str) -> usize {
    let Ok(out) = Command::new("wg")
        .args(["show", interface, "latest-handshakes"])
        .stderr(Stdio::null())
        .output()
    else {
        return 0;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|t| t != 0)
        })
        .count()
}

/// With `WGMESH_BENCH_TRACE` set: every 2 s of a formation, the lowest and the median node's
/// handshaken and configured peers, until all have N−1 handshakes or the give-up.
fn trace_formation(nodes: &[Node], since: Instant, give_up: Duration) {
    let n = nodes.len();
    while since.elapsed() < give_up {
        std::thread::sleep(Duration::from_secs(2));
        let mut shaken: Vec<f64> = nodes
            .iter()
            .map(|node| handshaken_peers(&node.interface) as f64)
            .collect();
        let mut configured: Vec<f64> = nodes
            .iter()
            .map(|node| configured_peers(&node.interface) as f64)
            .collect();
        shaken.sort_by(f64::total_cmp);
        configured.sort_by(f64::total_cmp);
        eprintln!(
            "N={n} +{:.0}s: handshaken min {} median {}, configured min {} median {}",
            secs(since.elapsed()),
            shaken[0],
            median(&shaken),
            configured[0],
            median(&configured)
        );
        if shaken[0] as usize >= n - 1 {
            return;
        }
    }
}

/// Peers configured on the interface, with or without a handshake.
fn configured_peers(interface: &str) -> usize {
    Command::new("wg")
        .args(["show", interface, "peers"])
        .stderr(Stdio::null())
        .output()
        .map_or(0, |out| {
            String::from_utf8_lossy(&out.stdout).lines().count()
        })
}

/// `RcvbufErrors` of the UDP (IPv4) line of `/proc/net/snmp` in a namespace: datagrams the
/// kernel dropped because a socket's receive buffer was full.
fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let out = run("ip", &["netns", "exec", ns, "cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("{ns}: no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap()
}

/// The `drops` column of the IPv4 UDP socket bound to `port` in a namespace's `/proc/net/udp`
/// (0 when there is none).
fn udp_socket_drops(ns: &str, port: u16) -> u64 {
    let out = run("ip", &["netns", "exec", ns, "cat", "/proc/net/udp"]);
    let local = format!(":{port:04X}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&local))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// The nftables table that counts the daemon's control datagrams, independently of the daemon:
/// on the output hook, UDP from the control port, all of them and those to a multicast group.
const CONTROL_COUNTERS: &str = "wgmesh_bench";

/// (Re)creates the counters in the node's namespace, at zero.
fn count_control_datagrams(node: &Node, control_port: u16) {
    use std::io::Write as _;
    let ruleset = format!(
        "table inet {CONTROL_COUNTERS}\n\
         delete table inet {CONTROL_COUNTERS}\n\
         table inet {CONTROL_COUNTERS} {{\n\
         \x20 counter sent {{ }}\n\
         \x20 counter sent_multicast {{ }}\n\
         \x20 chain output {{\n\
         \x20   type filter hook output priority 0; policy accept;\n\
         \x20   udp sport {control_port} counter name \"sent\"\n\
         \x20   udp sport {control_port} ip daddr 224.0.0.0/4 counter name \"sent_multicast\"\n\
         \x20 }}\n\
         }}\n"
    );
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &node.ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    let out = nft.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft in {}: {}",
        node.ns,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (all, multicast) control datagrams the node's namespace sent since the counters were made.
fn control_datagrams_sent(node: &Node) -> (u64, u64) {
    let out = node.exec("nft", &["-j", "list", "table", "inet", CONTROL_COUNTERS]);
    assert!(out.status.success(), "nft list in {}", node.ns);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packets = |name: &str| -> u64 {
        doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|o| {
                let c = o.get("counter")?;
                (c["name"] == name).then(|| c["packets"].as_u64())?
            })
            .unwrap()
    };
    (packets("sent"), packets("sent_multicast"))
}

/// Per node, per minute, over one window of a steady mesh.
#[derive(Default)]
struct SteadyWindow {
    /// Control datagrams sent (nftables, not the daemon's own counters).
    sent: Vec<f64>,
    multicast: Vec<f64>,
    unicast: Vec<f64>,
    /// The daemon's voluntary context switches, summed over its threads.
    wakeups: Vec<f64>,
}

impl SteadyWindow {
    fn extend(&mut self, other: Self) {
        self.sent.extend(other.sent);
        self.multicast.extend(other.multicast);
        self.unicast.extend(other.unicast);
        self.wakeups.extend(other.wakeups);
    }

    fn report(&self, report: &mut Report, n: usize) {
        for (id, what, samples) in [
            ("sent", "control datagrams sent per node", &self.sent),
            (
                "sent_multicast",
                "of them to the LAN group",
                &self.multicast,
            ),
            ("sent_unicast", "of them unicast", &self.unicast),
        ] {
            report.row(
                &format!("scale_{id}_{n}"),
                "steady state",
                &format!("N={n}: {what} (nftables, output hook)"),
                "/node/min",
                samples,
            );
        }
        report.row(
            &format!("scale_wakeups_{n}"),
            "steady state",
            &format!("N={n}: daemon wakeups (voluntary switches)"),
            "/min",
            &self.wakeups,
        );
    }
}

/// Reads every node's counters and daemon, waits `window`, reads them again; each node's
/// figures are over its own interval between the two reads.
fn steady_window(nodes: &[Node], window: Duration) -> SteadyWindow {
    let read = |node: &Node| {
        let pid = node.daemon_pid().unwrap();
        (
            Instant::now(),
            control_datagrams_sent(node),
            proc_sample(pid),
        )
    };
    let before: Vec<_> = nodes.iter().map(read).collect();
    std::thread::sleep(window);
    let after: Vec<_> = nodes.iter().map(read).collect();
    let mut out = SteadyWindow::default();
    for ((t0, (all0, mc0), p0), (t1, (all1, mc1), p1)) in before.iter().zip(&after) {
        let minutes = (*t1 - *t0).as_secs_f64() / 60.0;
        let all = all1.saturating_sub(*all0) as f64;
        let multicast = mc1.saturating_sub(*mc0) as f64;
        out.sent.push(all / minutes);
        out.multicast.push(multicast / minutes);
        out.unicast.push((all - multicast) / minutes);
        out.wakeups.push(p1.switches_since(p0) as f64 / minutes);
    }
    out
}

/// Pings `count` random ordered pairs of distinct nodes once each (`ping -c1 -W1`, mesh IPv4),
/// all at once; returns how many did not answer.
fn sampled_pings(nodes: &[Node], count: usize) -> usize {
    // splitmix64, seeded from the clock: the pairs differ per run, and no crate is needed.
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut next = |bound: usize| -> usize {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % bound as u64) as usize
    };
    let pairs: Vec<(usize, usize)> = (0..count)
        .map(|_| {
            let from = next(nodes.len());
            let to = (from + 1 + next(nodes.len() - 1)) % nodes.len();
            (from, to)
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|&(from, to)| {
                scope.spawn(move || {
                    // An overloaded daemon may not answer its status for minutes: that pair
                    // counts as failed rather than stopping the sweep.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let v4 = loop {
                        if let Some(v4) = nodes[to].status().and_then(|s| {
                            s["mesh_ipv4"].as_str().map(str::to_owned)
                        }) {
                            break v4;
                        }
                        if Instant::now() >= deadline {
                            eprintln!("ping node {} -> node {}: the target's daemon did not answer its status in 10 s", from + 1, to + 1);
                            return false;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    };
                    let ok = nodes[from].ping(&v4);
                    if !ok {
                        eprintln!("ping node {} -> node {} ({v4}) failed", from + 1, to + 1);
                    }
                    ok
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| !ok)
            .count()
    })
}

/// Kernel-wide settings sized for the hosts the lab emulates, for the lab's run; each previous
/// value comes back on drop. Real hosts each have their own; here every namespace shares one
/// kernel's:
/// - `net.core.netdev_max_backlog`, the per-CPU input backlog: a beacon flooded by the bridge
///   to 100 ports is 100 packets on these 2 CPUs' backlogs of 1,000. With the default, an
///   N = 100 formation lost 22,644 packets there (softnet_stat) before any socket saw them.
/// - `net.ipv{4,6}.neigh.default.gc_thresh{1,2,3}`, the neighbour table's limits, which count
///   the entries of all namespaces together: N hosts that each know the other N − 1 need N²
///   entries, over the default hard limit of 1,024 from N = 33 on. Past it the kernel logs
///   "neighbor table overflow!" and a send that needs a new entry (the first datagram to a
///   host, or to the LAN group) fails with `ENOBUFS`, which UDP reports as success: at
///   N = 50 the hosts that came up last sent every beacon into the void and formed nothing.
struct KernelTuning {
    previous: Vec<(String, String)>,
}

impl KernelTuning {
    fn raise(backlog: u64) -> Self {
        let mut wanted = vec![("/proc/sys/net/core/netdev_max_backlog".to_owned(), backlog)];
        for family in ["ipv4", "ipv6"] {
            for (name, value) in [
                ("gc_thresh1", 16_384),
                ("gc_thresh2", 32_768),
                ("gc_thresh3", 65_536),
            ] {
                wanted.push((
                    format!("/proc/sys/net/{family}/neigh/default/{name}"),
                    value,
                ));
            }
        }
        let mut previous = Vec::new();
        for (path, value) in wanted {
            let Ok(old) = std::fs::read_to_string(&path) else {
                continue;
            };
            // Only ever raised: a machine tuned higher keeps its setting.
            if old.trim().parse::<u64>().is_ok_and(|old| old >= value) {
                continue;
            }
            match std::fs::write(&path, value.to_string()) {
                Ok(()) => previous.push((path, old.trim().to_owned())),
                Err(err) => eprintln!("cannot set {path}: {err}"),
            }
        }
        Self { previous }
    }

    /// The setting in force for `path` (for the report).
    fn value(path: &str) -> String {
        std::fs::read_to_string(path).map_or_else(|_| "?".into(), |v| v.trim().to_owned())
    }
}

impl Drop for KernelTuning {
    fn drop(&mut self) {
        // gc_thresh1 ≤ gc_thresh2 ≤ gc_thresh3 is not enforced, but restore in reverse anyway.
        for (path, old) in self.previous.iter().rev() {
            let _ = std::fs::write(path, old);
        }
    }
}
