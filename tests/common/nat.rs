//! A NAT lab: hosts behind real Linux NAT routers (nftables masquerade), a public relay host and a
//! `pub` namespace for the lab DHT and STUN servers, all on one "internet" bridge.
//!
//! ```text
//!   root ns: bridge wni<id> = "internet" 198.18.0.0/24 (benchmark range: looks public; no host IP)
//!     ├─ pub   198.18.0.1, 198.18.0.2   wgmesh-lab dht-testnet / stun-server
//!     ├─ relay 198.18.0.10              a Node that can run `wgmesh up --relay`
//!     └─ natK  wan0 198.18.0.(20+K)     masquerade (PortPreserving or Random), ip_forward=1
//!          └─ lan0 bridge 10.K.0.1/24
//!               └─ hK 10.K.0.2, default via 10.K.0.1   (a roaming host J gets 10.K.0.(100+J))
//! ```
//!
//! Routers and hosts are numbered from 1, as in their names and addresses (`hosts[K - 1]` is hK).
//! Names carry the same per-lab id as `Lab`'s, with their own prefixes, so NAT labs, plain labs
//! and parallel tests never collide. Everything is torn down on drop, even after a failed assert.

use super::{NEXT_LAB, Node, run, wgmesh_bin};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `pub` namespace's addresses: the DHT testnet and STUN servers bind the first.
pub const PUB_IP: &str = "198.18.0.1";
pub const PUB_IP2: &str = "198.18.0.2";
pub const RELAY_IP: &str = "198.18.0.10";
/// What `NatLab::start_stun` serves (two ports, so a client can tell a symmetric NAT).
pub const STUN_SERVERS: [&str; 2] = ["198.18.0.1:3478", "198.18.0.1:3479"];
/// How long a lab helper may take to print `READY`.
const HELPER_READY: Duration = Duration::from_secs(30);

pub fn lab_tool_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wgmesh-lab")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMode {
    /// `masquerade`: Linux keeps the source port when it is free, and one mapping serves every
    /// destination (endpoint-independent mapping; a "port-restricted cone" to hole punching).
    PortPreserving,
    /// `masquerade random`: a random port per connection, so each destination sees a different
    /// mapping (a symmetric NAT: STUN's answer is useless to peers; needs the relay).
    Random,
    /// `masquerade` out, and every UDP datagram arriving on the WAN forwarded to the router's
    /// own host (10.K.0.2, a "DMZ host"): endpoint-independent mapping *and* filtering, a full
    /// cone. Anyone who knows the host's public address and port reaches it.
    FullCone,
}

impl NatMode {
    fn masquerade(self) -> &'static str {
        match self {
            Self::PortPreserving | Self::FullCone => "masquerade",
            Self::Random => "masquerade random",
        }
    }
}

#[derive(Debug)]
pub struct Router {
    pub index: usize,
    pub ns: String,
    pub mode: NatMode,
    /// The public address every host behind it is seen from.
    pub wan_ip: String,
    /// The LAN gateway, 10.K.0.1.
    pub lan_ip: String,
}

/// A process spawned by the lab (DHT testnet, STUN server, a test's observer), killed on drop.
struct Helper {
    name: String,
    child: Child,
    stderr_log: PathBuf,
}

pub struct NatLab {
    pub id: String,
    pub bridge: String,
    pub pub_ns: String,
    pub relay: Node,
    pub routers: Vec<Router>,
    /// `hosts[K - 1]` is hK; its `lan_ip` is its current underlay address (updated by `roam`).
    pub hosts: Vec<Node>,
    /// The router each host is behind now (1-based, like the names).
    behind: Vec<usize>,
    helpers: Vec<Helper>,
    /// Every namespace created so far, for the teardown.
    namespaces: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl NatLab {
    /// One host behind each router; `modes[K - 1]` is router K's NAT. No daemons yet; all nodes
    /// share one secret.
    pub fn new(modes: &[NatMode]) -> Self {
        Self::with_wan_latency(modes, None)
    }

    /// As [`Self::new`], with each router's WAN link `latency` long each way (so two routers
    /// are twice that apart), through `wgmesh-lab wan-delay`: this kernel has no `sch_netem`.
    /// Without latency two routers are some 50 µs apart, and datagrams both hosts send "at
    /// once" cannot cross on the wire as they do between real sites.
    pub fn with_wan_latency(modes: &[NatMode], latency: Option<Duration>) -> Self {
        assert!(!modes.is_empty() && modes.len() <= 50, "1..=50 routers");
        let id = format!(
            "{}{}",
            std::process::id() % 1000,
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, run(wgmesh_bin(), &["secret"]).stdout).unwrap();
        // As operators keep it (a secret file others can read makes every daemon warn).
        std::fs::set_permissions(
            &secret_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let relay_dir = dir.path().join("relay");
        std::fs::create_dir_all(&relay_dir).unwrap();
        let bridge = format!("wni{id}");
        let mut lab = Self {
            id: id.clone(),
            bridge: bridge.clone(),
            pub_ns: format!("wnp{id}"),
            relay: Node {
                index: 0,
                ns: format!("wnr{id}"),
                interface: format!("wnm{id}r"),
                lan_ip: RELAY_IP.to_owned(),
                dir: relay_dir,
                secret_file: secret_file.clone(),
                child: None,
            },
            routers: Vec::new(),
            hosts: Vec::new(),
            behind: Vec::new(),
            helpers: Vec::new(),
            namespaces: Vec::new(),
            dir,
        };
        // From here on a failed step drops `lab`, which removes whatever exists.
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["link", "set", &bridge, "up"]);

        let pub_ns = lab.pub_ns.clone();
        lab.add_internet_ns(&pub_ns, "p", &[PUB_IP, PUB_IP2], None);
        let relay_ns = lab.relay.ns.clone();
        lab.add_internet_ns(&relay_ns, "r", &[RELAY_IP], None);

        for (i, &mode) in modes.iter().enumerate() {
            lab.add_router(i + 1, mode, latency);
        }
        for k in 1..=modes.len() {
            lab.add_host(k, &secret_file);
        }
        lab
    }

    /// Router K's or host K's 1-based number to a checked index.
    fn slot(&self, k: usize) -> usize {
        assert!(
            (1..=self.routers.len()).contains(&k),
            "no router/host {k} (numbered from 1)"
        );
        k - 1
    }

    /// A namespace with `wan0` on the internet bridge and the given /24 addresses; `wan0` is a
    /// veth, or with `latency` a TAP device that `wgmesh-lab wan-delay` delays.
    fn add_internet_ns(&mut self, ns: &str, tag: &str, ips: &[&str], latency: Option<Duration>) {
        self.namespaces.push(ns.to_owned());
        run("ip", &["netns", "add", ns]);
        let outer = format!("wnv{}{tag}", self.id);
        match latency {
            None => run(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", "wan0", "netns", ns,
                ],
            ),
            Some(latency) => {
                let near = format!("wnw{}{tag}", self.id);
                let ms = latency.as_millis().to_string();
                let args = ["wan-delay", "--latency-ms", &ms, &near, &outer];
                self.spawn_ready("", &format!("wan-delay-{tag}"), lab_tool_bin(), &args);
                run("ip", &["link", "set", &near, "netns", ns]);
                run("ip", &["-n", ns, "link", "set", &near, "name", "wan0"])
            }
        };
        run("ip", &["link", "set", &outer, "master", &self.bridge, "up"]);
        for ip in ips {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "wan0"],
            );
        }
        run("ip", &["-n", ns, "link", "set", "wan0", "up"]);
        run("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }

    fn add_router(&mut self, k: usize, mode: NatMode, latency: Option<Duration>) {
        let ns = format!("wnn{}x{k}", self.id);
        let wan_ip = format!("198.18.0.{}", 20 + k);
        let lan_ip = format!("10.{k}.0.1");
        self.add_internet_ns(&ns, &format!("n{k}"), &[&wan_ip], latency);
        // The LAN is a bridge, so a roaming host can plug a second cable into it.
        run("ip", &["-n", &ns, "link", "add", "lan0", "type", "bridge"]);
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{lan_ip}/24"),
                "dev",
                "lan0",
            ],
        );
        run("ip", &["-n", &ns, "link", "set", "lan0", "up"]);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        // Masquerade out of the WAN; inbound is forwarded only for flows the LAN started (the
        // conntrack entry a NAT mapping is), so unsolicited traffic never reaches a host. The
        // router itself drops unsolicited WAN traffic too, as home routers do: accepting it would
        // confirm a conntrack entry for the probe's address pair, and the host's own later flow to
        // that peer would then clash with it and be given a random port.
        let rules = Self::router_rules(k, mode);
        self.nft(&ns, &format!("nat{k}"), &rules);
        self.routers.push(Router {
            index: k,
            ns,
            mode,
            wan_ip,
            lan_ip,
        });
    }

    /// Router K's nftables ruleset for `mode` (one table, replaced whole by [`Self::set_mode`]).
    fn router_rules(k: usize, mode: NatMode) -> String {
        // A full cone forwards all inbound UDP to its home host (before the filter below sees
        // it, so the forward chain accepts it as a DNAT'd flow).
        let full_cone = if mode == NatMode::FullCone {
            format!(
                "chain prerouting {{
                    type nat hook prerouting priority dstnat; policy accept;
                    iifname \"wan0\" meta l4proto udp dnat to {}
                }}",
                Self::host_ip(k, k)
            )
        } else {
            String::new()
        };
        format!(
            "table ip wgmesh_nat {{
                {full_cone}
                chain postrouting {{
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname \"wan0\" {}
                }}
                chain forward {{
                    type filter hook forward priority filter; policy accept;
                    iifname \"wan0\" ct state established,related accept
                    iifname \"wan0\" ct status dnat accept
                    iifname \"wan0\" drop
                }}
                chain input {{
                    type filter hook input priority filter; policy accept;
                    iifname \"wan0\" ct state established,related accept
                    iifname \"wan0\" icmp type echo-request accept
                    iifname \"wan0\" drop
                }}
            }}\n",
            mode.masquerade()
        )
    }

    /// Switches router K to another NAT mode mid-run, as a reconfigured (or rebooted) router
    /// would: its table is replaced in one `nft -f` and its conntrack table flushed (`conntrack
    /// -F`), so every flow, old ones too, gets the new mode's mapping from its next datagram.
    pub fn set_mode(&mut self, k: usize, mode: NatMode) {
        let slot = self.slot(k);
        let ns = self.routers[slot].ns.clone();
        let rules = format!(
            "delete table ip wgmesh_nat\n{}",
            Self::router_rules(k, mode)
        );
        self.nft(&ns, &format!("nat{k}-mode"), &rules);
        run("ip", &["netns", "exec", &ns, "conntrack", "-F"]);
        self.routers[slot].mode = mode;
    }

    /// Makes router K accept unsolicited datagrams addressed to itself (its input chain left
    /// empty, as a plain `masquerade` router has it): a peer's probe that arrives before our
    /// host has sent to that peer then confirms a conntrack entry for the pair of public
    /// addresses, and the host's own later flow to that peer clashes with it and is given a
    /// random port (issue 14's "conntrack clash"). Until [`Self::set_mode`].
    pub fn accept_unsolicited(&self, k: usize) {
        let ns = &self.routers[self.slot(k)].ns;
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "flush",
                "chain",
                "ip",
                "wgmesh_nat",
                "input",
            ],
        );
    }

    /// Loads an nftables ruleset into `ns` (through a file: `run` has no stdin).
    fn nft(&self, ns: &str, name: &str, rules: &str) {
        let path = self.dir.path().join(format!("{name}.nft"));
        std::fs::write(&path, rules).unwrap();
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "-f",
                &path.display().to_string(),
            ],
        );
    }

    fn add_host(&mut self, k: usize, secret_file: &std::path::Path) {
        let ns = format!("wnh{}x{k}", self.id);
        self.namespaces.push(ns.clone());
        run("ip", &["netns", "add", &ns]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let dir = self.dir.path().join(format!("host{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        self.hosts.push(Node {
            index: k,
            ns,
            interface: format!("wnm{}x{k}", self.id),
            lan_ip: String::new(),
            dir,
            secret_file: secret_file.to_owned(),
            child: None,
        });
        self.behind.push(k);
        self.plug(k, k);
        let ip = Self::host_ip(k, k);
        let ns = &self.hosts[k - 1].ns;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &format!("eth{k}"),
            ],
        );
        run(
            "ip",
            &[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.{k}.0.1"),
            ],
        );
        self.hosts[k - 1].lan_ip = ip;
    }

    /// Host K's address on router J's LAN: .2 at home, .(100+K) when visiting.
    fn host_ip(k: usize, j: usize) -> String {
        if k == j {
            format!("10.{j}.0.2")
        } else {
            format!("10.{j}.0.{}", 100 + k)
        }
    }

    /// A cable from host K (`ethJ`, up, no address) into router J's LAN bridge (`hK`), unless
    /// it is already there.
    fn plug(&self, k: usize, j: usize) {
        let host_ns = &self.hosts[k - 1].ns;
        let host_link = format!("eth{j}");
        let exists = Command::new("ip")
            .args(["-n", host_ns, "link", "show", &host_link])
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            let router_ns = &self.routers[j - 1].ns;
            let router_link = format!("h{k}");
            run(
                "ip",
                &[
                    "-n",
                    router_ns,
                    "link",
                    "add",
                    &router_link,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &host_link,
                    "netns",
                    host_ns,
                ],
            );
            run(
                "ip",
                &[
                    "-n",
                    router_ns,
                    "link",
                    "set",
                    &router_link,
                    "master",
                    "lan0",
                    "up",
                ],
            );
        }
        run("ip", &["-n", host_ns, "link", "set", &host_link, "up"]);
    }

    /// The router host K is behind now.
    pub fn router_of(&self, host: usize) -> &Router {
        &self.routers[self.behind[self.slot(host)] - 1]
    }

    /// Moves host K's underlay behind router J, as a laptop changing networks would, without
    /// touching its daemon: the old cable goes down with its address (and so its default route),
    /// the new one gets 10.J.0.x and a default route via 10.J.0.1. An internet block on the
    /// host moves with it.
    pub fn roam(&mut self, host: usize, to_router: usize) {
        let (k, j) = (host, to_router);
        self.slot(j);
        let from = self.behind[self.slot(k)];
        assert_ne!(from, j, "host {k} is already behind router {j}");
        let blocked = self.is_blocked(k);
        if blocked {
            self.unblock_internet(k);
        }
        self.plug(k, j);
        let ns = self.hosts[k - 1].ns.clone();
        let old_link = format!("eth{from}");
        let new_link = format!("eth{j}");
        let ip = Self::host_ip(k, j);
        run("ip", &["-n", &ns, "addr", "flush", "dev", &old_link]);
        run("ip", &["-n", &ns, "link", "set", &old_link, "down"]);
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &new_link,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "replace",
                "default",
                "via",
                &format!("10.{j}.0.1"),
            ],
        );
        self.hosts[k - 1].lan_ip = ip;
        self.behind[k - 1] = j;
        if blocked {
            self.block_internet(k);
        }
    }

    fn block_table(host: usize) -> String {
        format!("wgmesh_block_h{host}")
    }

    fn is_blocked(&self, host: usize) -> bool {
        let router = self.router_of(host);
        Command::new("ip")
            .args(["netns", "exec", &router.ns, "nft", "list", "table", "ip"])
            .arg(Self::block_table(host))
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Host K's router drops what the host sends to `pub` (the DHT and STUN servers); the relay
    /// and the other routers stay reachable. For "only one host reaches the DHT".
    pub fn block_internet(&self, host: usize) {
        let router = self.router_of(host);
        let rules = format!(
            "table ip {} {{
                chain forward {{
                    type filter hook forward priority filter - 1; policy accept;
                    ip saddr {} ip daddr {{ {PUB_IP}, {PUB_IP2} }} drop
                }}
            }}\n",
            Self::block_table(host),
            self.hosts[self.slot(host)].lan_ip
        );
        self.nft(&router.ns, &format!("block{host}"), &rules);
    }

    pub fn unblock_internet(&self, host: usize) {
        let router = self.router_of(host);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &router.ns,
                "nft",
                "delete",
                "table",
                "ip",
                &Self::block_table(host),
            ],
        );
    }

    /// Spawns `program args` in namespace `ns` (the root namespace if empty), waits until it prints `READY` on stdout, and
    /// returns the non-empty lines it printed before. The process is killed when the lab drops;
    /// its stderr goes to `<lab dir>/<name>.stderr` (printed if a test fails).
    pub fn spawn_ready(
        &mut self,
        ns: &str,
        name: &str,
        program: &str,
        args: &[&str],
    ) -> Vec<String> {
        let stderr_log = self.dir.path().join(format!("{name}.stderr"));
        let mut command = if ns.is_empty() {
            Command::new(program)
        } else {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, program]);
            command
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        self.helpers.push(Helper {
            name: name.to_owned(),
            child,
            stderr_log: stderr_log.clone(),
        });
        // A thread drains stdout for the process's whole life, so it never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + HELPER_READY;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "READY" => return lines,
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => lines.push(line.trim().to_owned()),
                Err(e) => panic!(
                    "{name} did not print READY ({e}); stdout so far: {lines:?}; stderr:\n{}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                ),
            }
        }
    }

    /// Starts `wgmesh-lab dht-testnet` with `nodes` nodes in `pub`; returns the bootstrap
    /// `HOST:PORT`s it printed.
    pub fn start_dht(&mut self, nodes: usize) -> Vec<String> {
        let ns = self.pub_ns.clone();
        let n = nodes.to_string();
        let addrs = self.spawn_ready(
            &ns,
            "dht-testnet",
            lab_tool_bin(),
            &["dht-testnet", "--bind", PUB_IP, "--nodes", &n],
        );
        assert!(!addrs.is_empty(), "dht-testnet printed no bootstrap nodes");
        addrs
    }

    /// Starts `wgmesh-lab stun-server` on both `STUN_SERVERS` in `pub`; returns them.
    pub fn start_stun(&mut self) -> Vec<String> {
        let ns = self.pub_ns.clone();
        let [a, b] = STUN_SERVERS;
        self.spawn_ready(
            &ns,
            "stun-server",
            lab_tool_bin(),
            &["stun-server", "--bind", a, "--bind", b],
        );
        STUN_SERVERS.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The relay, then the hosts.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.relay).chain(&self.hosts)
    }

    fn running(&self) -> Vec<&Node> {
        self.nodes().filter(|n| n.child.is_some()).collect()
    }

    /// Waits until every running node (relay included) lists every other running node.
    pub fn wait_for_full_mesh(&self, timeout: Duration) -> Duration {
        super::wait_for_full_mesh(&self.running(), timeout)
    }

    /// Mesh IPv4 and IPv6 of each running node, from its status.
    pub fn mesh_ips(&self) -> Vec<(String, String)> {
        super::mesh_ips(&self.running())
    }

    /// Whether every running node pings every other over mesh IPv4 and IPv6 (in parallel).
    pub fn all_pairs_ping(&self) -> bool {
        super::all_pairs_ping(&self.running())
    }

    pub fn dump_logs(&self) -> String {
        let daemons: String = self
            .nodes()
            .filter(|n| n.log_path().exists())
            .map(|n| format!("--- {} log:\n{}\n", n.ns, n.log()))
            .collect();
        let helpers: String = self
            .helpers
            .iter()
            .map(|h| {
                format!(
                    "--- {} stderr:\n{}\n",
                    h.name,
                    std::fs::read_to_string(&h.stderr_log).unwrap_or_default()
                )
            })
            .collect();
        // Each router's UDP mappings: a clash shows as a flow whose reply port differs from
        // its source port.
        let routers: String = self
            .routers
            .iter()
            .map(|r| {
                let out = Command::new("ip")
                    .args(["netns", "exec", &r.ns, "conntrack", "-L", "-p", "udp"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                format!("--- {} conntrack:\n{out}\n", r.ns)
            })
            .collect();
        daemons + &helpers + &routers
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("NAT lab {} failed; logs:\n{}", self.id, self.dump_logs());
            for node in self.nodes().filter(|n| n.child.is_some()) {
                eprintln!("--- {} status: {:?}", node.ns, node.status());
            }
        }
        for helper in &mut self.helpers {
            // The child is `ip netns exec`, which execs the helper: the same pid.
            let _ = helper.child.kill();
            let _ = helper.child.wait();
        }
        super::stop_daemons(
            std::iter::once(&mut self.relay)
                .chain(&mut self.hosts)
                .collect(),
        );
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
