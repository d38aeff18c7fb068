//! A network-namespace lab: N hosts on one bridge, each running a real `wgmesh up` (with the
//! userspace backend unless a test says otherwise). Names carry a per-lab id so parallel tests
//! and leftover labs never collide; everything is torn down on drop, even after a failed assert.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the lab"
)]
#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "test harness: a failure is a test failure, and logs go to the test output"
)]

pub mod nat;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Writes `seed` as `node`'s identity (counter 0), as a fresh start would have: a lab that needs
/// a chosen key (two that collide, one ground lower than another) plants it before `start`.
pub fn plant_identity(node: &Node, keys: &wgmesh_derive::MeshKeys, seed: &wgmesh_derive::NodeSeed) {
    use std::os::unix::fs::PermissionsExt as _;
    let state = node.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = state.join(format!("{}.json", node.interface));
    let network_id: String = keys
        .network_id()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let identity = serde_json::json!({
        "version": 1,
        "node_seed": seed.to_hex(),
        "public_key": keys.node_public_key(seed).to_base64(),
        "collision_counter": 0,
        "network_id": network_id,
    });
    std::fs::write(&path, identity.to_string()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn wgmesh_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wgmesh")
}

/// `wgmesh derive --json` for a secret file: the network every node of a lab derives.
pub fn derive(secret_file: &Path) -> Value {
    let out = run(
        wgmesh_bin(),
        &[
            "derive",
            "--json",
            "--secret-file",
            &secret_file.display().to_string(),
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every node's control address, as `--peer` seeds.
pub fn seeds(nodes: &[Node]) -> String {
    let port = nodes
        .first()
        .map(|n| derive(&n.secret_file)["control_port"].clone())
        .unwrap_or_default();
    nodes
        .iter()
        .map(|n| format!("{}:{port}", n.lan_ip))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a command, panicking with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `check` until it holds or `timeout` passes; returns the time it took.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

pub struct Node {
    pub index: usize,
    pub ns: String,
    pub interface: String,
    pub lan_ip: String,
    pub dir: PathBuf,
    pub secret_file: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    pub fn reload_path(&self) -> PathBuf {
        self.state_dir().join(format!("{}.reload", self.interface))
    }

    fn location(&self) -> Vec<String> {
        vec![
            "--interface".into(),
            self.interface.clone(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            "--runtime-dir".into(),
            self.runtime_dir().display().to_string(),
        ]
    }

    /// Starts `wgmesh up` in the node's namespace with the lab secret and `extra` flags.
    pub fn start(&mut self, extra: &[&str]) {
        self.launch(wgmesh_bin(), extra, &[]);
    }

    /// Like [`Node::start`], with `WGMESH_*` variables set as an env file would set them.
    pub fn start_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        self.launch(wgmesh_bin(), extra, env);
    }

    /// Like [`Node::start`], with another wgmesh binary (the upgrade lab runs the previous
    /// release next to this one).
    pub fn start_with(&mut self, binary: &str, extra: &[&str]) {
        self.launch(binary, extra, &[]);
    }

    /// Like [`Node::start`], with another binary run through `wrapper` (a program that sets
    /// something up in the namespace, then execs its arguments, so the pid stays the daemon's).
    pub fn start_through(&mut self, wrapper: &Path, binary: &str, extra: &[&str]) {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns])
            .arg(wrapper)
            .arg(binary)
            .args(self.up_args(extra));
        self.spawn(command);
    }

    fn launch(&mut self, binary: &str, extra: &[&str], env: &[(&str, &str)]) {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.ns.clone(),
            binary.into(),
        ];
        args.extend(self.up_args(extra));
        let mut command = Command::new("ip");
        command.args(&args).envs(env.iter().copied());
        self.spawn(command);
    }

    /// `up` with the lab secret, the userspace backend, this node's paths and `extra`.
    fn up_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "up".into(),
            "--secret-file".into(),
            self.secret_file.display().to_string(),
            "--backend".into(),
            "userspace".into(),
        ];
        args.extend(self.location());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    fn spawn(&mut self, mut command: Command) {
        assert!(self.child.is_none(), "node {} already running", self.index);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// [`Self::start`], but through `nsenter --net`, which only joins the network namespace:
    /// `ip netns exec` also makes a mount namespace and remounts `/sys` (the daemon reads
    /// neither), and on a loaded 2-core machine 100 starts that way took 4.4 s. For the scale
    /// bench, whose clock runs from the first start.
    pub fn start_direct(&mut self, extra: &[&str]) {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .arg(wgmesh_bin())
            .args(self.up_args(extra));
        self.spawn(command);
    }

    /// Runs a wgmesh subcommand against this node's daemon.
    pub fn wgmesh(&self, command: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.ns.clone(),
            wgmesh_bin().into(),
        ];
        args.extend(command.iter().map(|s| (*s).to_owned()));
        args.extend(self.location());
        Command::new("ip").args(&args).output().unwrap()
    }

    pub fn status(&self) -> Option<Value> {
        let out = self.wgmesh(&["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// How many peers the daemon's status lists (None while it does not answer).
    pub fn peer_count(&self) -> Option<usize> {
        self.status()
            .and_then(|s| s["peers"].as_array().map(Vec::len))
    }

    /// The daemon's status; a query that fails is asked again twice (a loaded machine can make
    /// one miss the client's deadline), then the test fails with the daemon's log.
    pub fn status_ok(&self) -> Value {
        (0..3)
            .find_map(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                self.status()
            })
            .unwrap_or_else(|| panic!("node {} has no status; log:\n{}", self.index, self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.ns, program];
        full.extend_from_slice(args);
        Command::new("ip").args(&full).output().unwrap()
    }

    pub fn ping(&self, ip: &str) -> bool {
        self.exec("ping", &["-c", "1", "-W", "1", ip])
            .status
            .success()
    }

    /// `ip route show proto 77` (wgmesh's routes) plus all routes, as text.
    pub fn routes(&self, args: &[&str]) -> String {
        let mut full = vec!["route", "show"];
        full.extend_from_slice(args);
        String::from_utf8_lossy(&self.exec("ip", &full).stdout).into_owned()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's own pid (the child is `ip netns exec`, which execs wgmesh: same pid).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, as `systemctl stop` sends it (a `--keep-interface` daemon leaves the interface
    /// up), then reap the child.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// `wgmesh down` (which removes the interface even under `--keep-interface`), then reap the
    /// child.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            let out = self.wgmesh(&["down"]);
            assert!(
                out.status.success(),
                "down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

pub struct Lab {
    pub id: String,
    pub bridge: String,
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Creates `n` namespaces on one bridge (no daemons yet). All share `secret` unless a node's
    /// secret file is replaced.
    pub fn new(n: usize) -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 1000,
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        let secret = run(wgmesh_bin(), &["secret"]).stdout;
        std::fs::write(&secret_file, secret).unwrap();
        // As operators keep it (a secret file others can read makes every daemon warn).
        std::fs::set_permissions(
            &secret_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let bridge = format!("wgb{id}");
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        let mut lab = Self {
            id: id.clone(),
            bridge: bridge.clone(),
            nodes: Vec::new(),
            dir,
        };
        // Without an IGMP querier a snooping bridge may drop the LAN beacons' group traffic.
        std::fs::write(
            format!("/sys/class/net/{bridge}/bridge/multicast_snooping"),
            "0",
        )
        .unwrap();
        run("ip", &["link", "set", &bridge, "up"]);
        for i in 1..=n {
            lab.add_node(i, &secret_file);
        }
        lab
    }

    fn add_node(&mut self, i: usize, secret_file: &Path) {
        let ns = format!("wgn{}x{i}", self.id);
        let veth = format!("wgv{}x{i}", self.id);
        run("ip", &["netns", "add", &ns]);
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        run("ip", &["link", "set", &veth, "master", &self.bridge, "up"]);
        let lan_ip = format!("192.168.150.{i}");
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{lan_ip}/24"),
                "dev",
                "eth0",
            ],
        );
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let dir = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        self.nodes.push(Node {
            index: i,
            ns,
            interface: format!("wgm{}x{i}", self.id),
            lan_ip,
            dir,
            secret_file: secret_file.to_owned(),
            child: None,
        });
    }

    pub fn start_all(&mut self, extra: &[&str]) {
        for node in &mut self.nodes {
            node.start(extra);
        }
    }

    fn running(&self) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.child.is_some()).collect()
    }

    /// Waits until every running node's status lists every other running node.
    pub fn wait_for_full_mesh(&self, timeout: Duration) -> Duration {
        wait_for_full_mesh(&self.running(), timeout)
    }

    /// Mesh IPv4 and IPv6 of each running node, from its status.
    pub fn mesh_ips(&self) -> Vec<(String, String)> {
        mesh_ips(&self.running())
    }

    /// Whether every running node pings every other over mesh IPv4 and IPv6 (in parallel).
    pub fn all_pairs_ping(&self) -> bool {
        all_pairs_ping(&self.running())
    }

    pub fn dump_logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} log:\n{}\n", n.index, n.log()))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lab {} failed; daemon logs:\n{}", self.id, self.dump_logs());
            for node in &self.nodes {
                eprintln!("--- node {} status: {:?}", node.index, node.status());
            }
        }
        stop_daemons(self.nodes.iter_mut().collect());
        for node in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &node.ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Waits until every node's status lists every other node.
pub fn wait_for_full_mesh(nodes: &[&Node], timeout: Duration) -> Duration {
    wait_until(timeout, "every running node to list every other", || {
        nodes
            .iter()
            .all(|n| n.peer_count() == Some(nodes.len() - 1))
    })
}

/// Mesh IPv4 and IPv6 of each node, from its status.
pub fn mesh_ips(nodes: &[&Node]) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|n| {
            let s = n.status_ok();
            (
                s["mesh_ipv4"].as_str().unwrap().to_owned(),
                s["mesh_ipv6"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Whether every node pings every other over mesh IPv4 and IPv6 (in parallel).
pub fn all_pairs_ping(nodes: &[&Node]) -> bool {
    let ips = mesh_ips(nodes);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            for (j, (v4, v6)) in ips.iter().enumerate() {
                if i != j {
                    handles.push(scope.spawn(move || node.ping(v4) && node.ping(v6)));
                }
            }
        }
        handles.into_iter().all(|h| h.join().unwrap_or(false))
    })
}

/// SIGTERM to every daemon, then up to 5 s for each to exit before SIGKILL; then whatever a
/// daemon can leave behind (a wireguard-go kept by --keep-interface or orphaned by SIGKILL, its
/// socket).
pub fn stop_daemons(nodes: Vec<&mut Node>) {
    for node in &nodes {
        if let Some(pid) = node.daemon_pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for node in nodes {
        if let Some(mut child) = node.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("pkill")
            .args(["-f", &format!("wireguard-go -f {}$", node.interface)])
            .status();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", node.interface));
    }
}
