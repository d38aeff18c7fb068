//! The macOS platform module carrying a real mesh, on Linux (issue 15). No Mac exists here, so
//! the daemon is built with `--cfg wgmesh_check_macos` (which makes `src/platform` pick
//! `macos.rs`) and run in network namespaces where macOS's tools are played by
//! `tests/macos/macos_tools.py` over iproute2, and wireguard-go (the real one, Debian's) writes
//! the utun name file as it does on darwin. Everything of ours is the macOS code path: the
//! utun name-file handshake, UAPI on `utunN.sock`, `ifconfig` addresses and MTU, routes owned
//! through the utun with `route`, connected networks and gateways from `netstat`, link changes
//! by polling `ifconfig -a`, and teardown. What this cannot show is that macOS's own tools and
//! kernel behave as the fakes do (README "macOS").
//!
//! Needs root; run with `--features root-tests` (scripts/test.sh does).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::{Lab, Node, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FORMATION: Duration = Duration::from_secs(60);

/// The daemon built against the macOS platform module, in its own target directory (as
/// `scripts/test.sh`'s clippy and unit-test runs of that module).
fn macos_wgmesh() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("macos-check");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--bin", "wgmesh"])
        .env("RUSTFLAGS", "--cfg wgmesh_check_macos")
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot build the macOS-module daemon:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug").join("wgmesh")
}

fn program(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!path.is_empty(), "{name} is not installed");
    path
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// One node's macOS: its utun name, the fake tools, the launcher and the tools' call log.
struct Mac {
    utun: String,
    launcher: PathBuf,
    wireguard_go: PathBuf,
    log: PathBuf,
}

impl Mac {
    /// The utun number is unique in the lab: wireguard-go's sockets in `/var/run/wireguard` are
    /// shared by every namespace.
    fn new(node: &Node, lab_id: &str) -> Self {
        let dir = node.dir.join("macos");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.join("tools.log");
        std::fs::write(&log, "").unwrap();
        let utun = format!("utun{lab_id}{}", node.index);
        let python = program("python3");
        let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/macos/macos_tools.py");
        // The runner gives each tool an empty environment: everything is spelled out here.
        for tool in ["ifconfig", "route", "netstat"] {
            write_executable(
                &bin.join(tool),
                &format!(
                    "#!/bin/sh\nexec {python} {} {} {tool} \"$@\"\n",
                    tools.display(),
                    log.display()
                ),
            );
        }
        // darwin's wireguard-go asks the kernel for the next free utun and writes its name to
        // $WG_TUN_NAME_FILE; Linux's takes the name it is given.
        let wireguard_go = bin.join("wireguard-go");
        write_executable(
            &wireguard_go,
            &format!(
                "#!/bin/sh\necho \"wireguard-go $* WG_TUN_NAME_FILE=$WG_TUN_NAME_FILE\" >> {log}\n\
                 [ \"$1 $2\" = '-f utun' ] || exit 64\n\
                 echo {utun} > \"$WG_TUN_NAME_FILE\"\nexec {real} -f {utun}\n",
                log = log.display(),
                real = program("wireguard-go"),
            ),
        );
        // In the node's own mount namespace (`ip netns exec` makes one, a slave of the host's):
        // macOS's tool names are ours wherever the runner looks first, and on $PATH otherwise.
        let launcher = dir.join("launch");
        write_executable(
            &launcher,
            &format!(
                "#!/bin/sh\nset -e\nfor tool in ifconfig route netstat; do\n\
                 \tfor dir in /usr/bin /bin /usr/sbin /sbin; do\n\
                 \t\tif [ -e \"$dir/$tool\" ]; then mount --bind {bin}/$tool \"$dir/$tool\"; fi\n\
                 \tdone\ndone\nPATH={bin}:$PATH exec \"$@\"\n",
                bin = bin.display()
            ),
        );
        Self {
            utun,
            launcher,
            wireguard_go,
            log,
        }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn calls_starting(&self, prefix: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect()
    }
}

impl Drop for Mac {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-f", &format!("wireguard-go -f {}$", self.utun)])
            .status();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.utun));
    }
}

/// `ip -4|-6 route show` in the node's namespace.
fn routes(node: &Node, family: &str) -> String {
    String::from_utf8_lossy(&node.exec("ip", &[family, "route", "show"]).stdout).into_owned()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn the_macos_platform_module_carries_a_mesh_with_a_linux_member() {
    let binary = macos_wgmesh();
    let mut lab = Lab::new(3);
    let macs: Vec<Mac> = lab.nodes[..2]
        .iter()
        .map(|node| Mac::new(node, &lab.id))
        .collect();
    let start = Instant::now();
    for (i, mac) in macs.iter().enumerate() {
        let advertised = format!("10.231.{}.0/24", i + 1);
        lab.nodes[i].start_through(
            &mac.launcher,
            binary.to_str().unwrap(),
            &[
                "--wireguard-go",
                mac.wireguard_go.to_str().unwrap(),
                "--advertise-routes",
                &advertised,
                // Not wireguard-go's 1420, so `set_mtu` has something to do.
                "--mtu",
                "1380",
            ],
        );
    }
    lab.nodes[2].start(&["--advertise-routes", "10.231.3.0/24,fd31::/64"]);
    lab.wait_for_full_mesh(FORMATION);
    wait_until(FORMATION, "all pairs to ping over IPv4 and IPv6", || {
        lab.all_pairs_ping()
    });
    eprintln!(
        "2 macOS-module members and 1 Linux member: all-pairs ping (v4+v6) {:?} after start",
        start.elapsed()
    );

    for (mac, node) in macs.iter().zip(&lab.nodes) {
        let status = node.status_ok();
        let (v4, v6) = (
            status["mesh_ipv4"].as_str().unwrap().to_owned(),
            status["mesh_ipv6"].as_str().unwrap().to_owned(),
        );
        // wg-quick darwin.bash `cmd_up` order: add_if (wireguard-go with the name file),
        // add_addr per address, set_mtu, up_if.
        let started = mac.calls_starting("wireguard-go");
        assert_eq!(started.len(), 1, "{started:?}");
        assert!(
            started[0].starts_with("wireguard-go -f utun WG_TUN_NAME_FILE=/var/run/wireguard/"),
            "{started:?}"
        );
        let utun = &mac.utun;
        let configured: Vec<String> = mac
            .calls_starting(&format!("ifconfig {utun} "))
            .into_iter()
            .collect();
        assert_eq!(
            configured,
            [
                format!("ifconfig {utun} inet {v4}/16 {v4} alias"),
                format!("ifconfig {utun} inet6 {v6}/64 alias"),
                format!("ifconfig {utun} mtu 1380"),
                format!("ifconfig {utun} up"),
            ],
            "node {}",
            node.index
        );
        // The kernel agrees: the utun holds the mesh addresses.
        let link = node.exec("ip", &["addr", "show", "dev", utun]);
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(
            link.contains(&format!("inet {v4}/16"))
                && link.contains(&format!("inet6 {v6}/64"))
                && link.contains("mtu 1380")
                && link.contains(",UP,"),
            "{link}"
        );
        // A utun gets no network route from its address: the mesh /16 went in through `route`
        // (the /64 came with the IPv6 address, as on macOS).
        let prefix = format!("{}.0.0/16", v4.rsplitn(3, '.').nth(2).unwrap());
        assert!(
            mac.calls()
                .contains(&format!("route -q -n add -inet {prefix} -interface {utun}")),
            "{:?}",
            mac.calls()
        );
        // Routes from the others went in through `route` and the utun; none from ourselves.
        for (other, net, family) in [
            (3, "10.231.3.0/24", "-inet"),
            (3, "fd31::/64", "-inet6"),
            (if node.index == 1 { 2 } else { 1 }, "", "-inet"),
        ] {
            let net = if net.is_empty() {
                format!("10.231.{other}.0/24")
            } else {
                net.to_owned()
            };
            let add = format!("route -q -n add {family} {net} -interface {utun}");
            wait_until(
                FORMATION,
                &format!("node {} to add {net}", node.index),
                || mac.calls().contains(&add),
            );
            let table = routes(node, if family == "-inet" { "-4" } else { "-6" });
            assert!(
                table.contains(&format!("{net} dev {utun}")),
                "node {}: {net} not through {utun}:\n{table}",
                node.index
            );
        }
        let own = format!("10.231.{}.0/24", node.index);
        assert!(
            !mac.calls()
                .iter()
                .any(|c| c.starts_with("route") && c.contains(&own)),
            "node {} routed its own advertisement",
            node.index
        );
        // The others reach us at our underlay address, never at the utun's mesh address (the
        // host leaves out its utun by the name in the name file, not by the mesh name `wgm…`).
        for other in &lab.nodes {
            if other.index == node.index {
                continue;
            }
            let status = other.status_ok();
            let peer = status["peers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["mesh_ipv4"] == v4.as_str())
                .unwrap()
                .clone();
            let text = peer.to_string();
            assert!(
                !text.contains(&format!("\"{v4}:")),
                "node {} announced its mesh address as an endpoint: {text}",
                node.index
            );
            assert!(
                peer["endpoint"]
                    .as_str()
                    .is_some_and(|e| e.starts_with(&node.lan_ip)),
                "{text}"
            );
        }
    }
    // The Linux member installed both macOS members' routes on its own interface.
    let linux = &lab.nodes[2];
    let table = routes(linux, "-4");
    for i in 1..=2 {
        assert!(
            table.contains(&format!("10.231.{i}.0/24 dev {}", linux.interface)),
            "{table}"
        );
    }

    // A route withdrawn by its owner leaves the macOS members' tables through `route delete`.
    lab.nodes[2].stop();
    lab.nodes[2].start(&["--advertise-routes", "10.231.3.0/24"]);
    for (mac, node) in macs.iter().zip(&lab.nodes) {
        let delete = format!(
            "route -q -n delete -inet6 fd31::/64 -interface {}",
            mac.utun
        );
        wait_until(
            FORMATION,
            &format!("node {} to delete fd31::/64", node.index),
            || mac.calls().contains(&delete),
        );
        assert!(!routes(node, "-6").contains("fd31::/64"));
    }

    // Stopping a macOS member (SIGTERM, as launchd stops a job) takes its utun, its routes and
    // wireguard-go's files with it.
    let mac = &macs[0];
    lab.nodes[0].terminate();
    let node = &lab.nodes[0];
    let gone = node.exec("ip", &["link", "show", "dev", &mac.utun]);
    assert!(!gone.status.success(), "{} left behind", mac.utun);
    assert!(
        !routes(node, "-4").contains("10.231."),
        "{}",
        routes(node, "-4")
    );
    let name_file = format!("/var/run/wireguard/{}.name", node.interface);
    assert!(!Path::new(&name_file).exists(), "{name_file} left behind");
    assert!(!Path::new(&format!("/var/run/wireguard/{}.sock", mac.utun)).exists());
}
