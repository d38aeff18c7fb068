//! The macOS backend, host and routes driven through up → reconcile → route change → down
//! against recording fake `ifconfig`, `route`, `netstat` and `wireguard-go` scripts, with this
//! test serving the UAPI socket. Plain `cargo test`, no root, no Mac.
//!
//! The expected command sequences come from wg-quick's darwin backend (wireguard-tools
//! `src/wg-quick/darwin.bash`; function names and line numbers of the copy at commit 0282e86),
//! not from this crate. Where we deliberately differ, the comment says so. Across the board we
//! do not do what wg-quick does for a full tunnel: no DNS (`set_dns`), no default-route split
//! (`add_route` for `*/0`), no endpoint routes (`set_endpoint_direct_route`) and no
//! `route monitor` daemon (`monitor_daemon`); wgmesh only routes member networks.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers abort the test on any failure"
)]

use ipnet::IpNet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wgmesh_device::{
    DeviceOrigin, DeviceUpdate, Host as _, InterfaceConfig, PeerUpdate, RouteChange, RouteControl,
    WireguardBackend as _, diff_routes,
};
use wgmesh_macos::{MacosBackend, MacosBackendConfig, MacosHost, MacosRoutes, Runner};

const FRESH_UTUN7: &str = "utun7: flags=8010<POINTOPOINT,MULTICAST> mtu 1500\n";
const CONFIGURED_UTUN7: &str = "\
utun7: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1420
\tinet 10.42.3.4 --> 10.42.3.4 netmask 0xffff0000
\tinet6 fe80::5c1:2ff:fe03:405%utun7 prefixlen 64 scopeid 0x14
\tinet6 fd42::3:4 prefixlen 64
";
const INET_BEFORE: &str = "Routing tables

Internet:
Destination        Gateway            Flags               Netif Expire
default            192.168.1.1        UGScg                 en0
127                127.0.0.1          UCS                   lo0
192.168.1          link#6             UCS                   en0      !
";
const INET_AFTER: &str = "Routing tables

Internet:
Destination        Gateway            Flags               Netif Expire
default            192.168.1.1        UGScg                 en0
10.42/16           utun7              USc                 utun7
10.42.3.4          10.42.3.4          UH                  utun7
127                127.0.0.1          UCS                   lo0
192.168.1          link#6             UCS                   en0      !
192.168.50/24      utun7              USc                 utun7
";
const INET6_BEFORE: &str = "Routing tables

Internet6:
Destination                             Gateway                                 Flags               Netif Expire
::1                                     ::1                                     UHL                   lo0
";
const INET6_AFTER: &str = "Routing tables

Internet6:
Destination                             Gateway                                 Flags               Netif Expire
::1                                     ::1                                     UHL                   lo0
fd42::/64                               fe80::5c1:2ff:fe03:405%utun7            UGcI                utun7
fd99::/64                               utun7                                   USc                 utun7
fe80::%utun7/64                         fe80::5c1:2ff:fe03:405%utun7            UcI                 utun7
";

/// A temporary world: fake tools in `bin`, their log, the state they print, the run directory.
struct Lab {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    state: PathBuf,
    log: PathBuf,
    run_dir: PathBuf,
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let lab = Self {
            bin: root.join("bin"),
            state: root.join("state"),
            log: root.join("log"),
            run_dir: root.join("run"),
            _dir: dir,
        };
        std::fs::create_dir_all(&lab.bin).unwrap();
        std::fs::create_dir_all(&lab.state).unwrap();
        std::fs::write(&lab.log, "").unwrap();
        // Each fake records its argv; `ifconfig IFACE` and `netstat -rn -f FAMILY` print what
        // the test (playing the kernel) put in the state directory; `route` fails with the text
        // of `route-fail` when that file exists, on stderr and with exit status 0, as macOS
        // route(8) does (`newroute(); exit(0);`).
        lab.tool(
            "ifconfig",
            r#"echo "ifconfig $*" >> "$LOG"
if [ $# -eq 1 ]; then cat "$STATE/ifconfig-$1"; fi"#,
        );
        lab.tool(
            "netstat",
            r#"echo "netstat $*" >> "$LOG"
cat "$STATE/netstat-$3""#,
        );
        lab.tool(
            "route",
            r#"echo "route $*" >> "$LOG"
if [ -f "$STATE/route-fail" ]; then cat "$STATE/route-fail" >&2; fi"#,
        );
        // Writes its utun to the name file as tun_darwin.go does, then serves until SIGTERM
        // (the test serves the UAPI socket for it).
        lab.tool(
            "wireguard-go",
            r#"echo "wireguard-go $* WG_TUN_NAME_FILE=$WG_TUN_NAME_FILE" >> "$LOG"
trap 'echo "wireguard-go: SIGTERM" >> "$LOG"; exit 0' TERM
echo utun7 > "$WG_TUN_NAME_FILE"
while :; do sleep 0.05; done"#,
        );
        lab
    }

    /// The children get an empty environment, so the paths are written into the script.
    fn tool(&self, name: &str, body: &str) {
        let script = format!(
            "#!/bin/sh\nPATH=/usr/bin:/bin\nLOG='{}'\nSTATE='{}'\n{body}\n",
            self.log.display(),
            self.state.display()
        );
        let path = self.bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The fakes first, then the real PATH (for `sh` itself).
    fn runner(&self) -> Runner {
        let path = std::env::var_os("PATH").unwrap_or_default();
        Runner::with_search_path(
            std::iter::once(self.bin.clone()).chain(std::env::split_paths(&path)),
        )
    }

    /// The kernel's side: what `ifconfig utun7` and `netstat` show from now on.
    fn kernel(&self, ifconfig: &str, inet: &str, inet6: &str) {
        std::fs::write(self.state.join("ifconfig-utun7"), ifconfig).unwrap();
        std::fs::write(self.state.join("netstat-inet"), inet).unwrap();
        std::fs::write(self.state.join("netstat-inet6"), inet6).unwrap();
    }

    /// Log lines recorded since the last call.
    fn take_log(&self, seen: &mut usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let new = lines[*seen..].to_vec();
        *seen = lines.len();
        new
    }
}

/// Reads one UAPI request and answers it (`get`: a canned device; `set`: errno 0, recorded).
fn answer(stream: &std::os::unix::net::UnixStream, log: &Mutex<Vec<String>>) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\n" {
            break;
        }
        request.push_str(&line);
    }
    let reply = if request.starts_with("get=1") {
        "listen_port=51820\nerrno=0\n\n"
    } else {
        "errno=0\n\n"
    };
    let _ = (&mut &*stream).write_all(reply.as_bytes());
    if !request.starts_with("get=1") {
        log.lock().unwrap().push(request);
    }
}

/// A minimal wireguard-go UAPI: binds `<run_dir>/utun7.sock` once the name file exists (as the
/// real one does after creating the utun; again after a restart), answers `get` with a canned device and `set` with
/// errno 0, and records every request.
struct Uapi {
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Uapi {
    fn serve(run_dir: &Path) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (name_file, socket) = (run_dir.join("wg0.name"), run_dir.join("utun7.sock"));
        let (log, done) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            // A restarted wireguard-go gets a fresh socket: the backend removes the old one.
            while !done.load(Ordering::Relaxed) {
                if !name_file.exists() {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let listener = UnixListener::bind(&socket).unwrap();
                listener.set_nonblocking(true).unwrap();
                while !done.load(Ordering::Relaxed) && socket.exists() {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    answer(&stream, &log);
                }
            }
        });
        Self { requests, stop }
    }

    fn sets(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Drop for Uapi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What `getifaddrs` shows on this pretend Mac: Wi-Fi, our utun, loopback.
fn host_interface_addresses() -> Vec<(String, std::net::IpAddr)> {
    [
        ("lo0", "127.0.0.1"),
        ("en0", "192.168.1.20"),
        ("en0", "fe80::1c2:3ff:fe04:506"),
        ("utun7", "10.42.3.4"),
        ("utun7", "fd42::3:4"),
    ]
    .iter()
    .map(|(name, ip)| ((*name).to_owned(), ip.parse().unwrap()))
    .collect()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn apply_routes(routes: &mut MacosRoutes, desired: &[IpNet]) {
    let owned = routes.owned_routes().unwrap();
    for change in diff_routes(&owned, desired) {
        match change {
            RouteChange::Add(net) => routes.add_route(net).unwrap(),
            RouteChange::Remove(net) => routes.remove_route(net).unwrap(),
        }
    }
}

#[test]
fn up_reconcile_route_change_and_down_run_wg_quicks_commands() {
    let lab = Lab::new();
    let uapi = Uapi::serve(&lab.run_dir);
    let mut config = MacosBackendConfig::new("wg0");
    config.run_dir = lab.run_dir.clone();
    let mut backend = MacosBackend::new(config, lab.runner());
    let mut host = MacosHost::new("wg0", lab.runner(), host_interface_addresses)
        .with_run_dir(&lab.run_dir)
        .with_index_lookup(|_| Ok(20));
    let link = InterfaceConfig {
        interface: "wg0".to_owned(),
        addresses: nets(&["10.42.3.4/16", "fd42::3:4/64"]),
        managed: nets(&["10.42.0.0/16", "fd42::/64"]),
        mtu: 1420,
    };
    let mut routes = MacosRoutes::new("wg0", lab.runner())
        .with_run_dir(&lab.run_dir)
        .with_interface_prefixes(&link.managed);
    let key = wgmesh_keys::PrivateKey::from_bytes_clamped([7; 32]);
    let peer = wgmesh_keys::PrivateKey::from_bytes_clamped([9; 32]).public_key();
    let mut seen = 0;

    // ---- up ----
    lab.kernel(FRESH_UTUN7, INET_BEFORE, INET6_BEFORE);
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Created);
    assert_eq!(backend.utun().unwrap().as_str(), "utun7");
    // darwin.bash `set_config` (l. 372) hands the key to `wg addconf`; we write it over UAPI.
    backend
        .apply(&DeviceUpdate {
            private_key: Some(key.clone()),
            listen_port: Some(51820),
            peers: vec![],
        })
        .unwrap();
    assert_eq!(host.configure_interface(&link).unwrap(), 20);
    apply_routes(&mut routes, &nets(&["192.168.50.0/24", "fd99::/64"]));
    let name_file = lab.run_dir.join("wg0.name");
    assert_eq!(
        lab.take_log(&mut seen),
        [
            // `add_if` (l. 124-128): WG_TUN_NAME_FILE=/var/run/wireguard/$INTERFACE.name
            // wireguard-go utun. We add -f: a foreground child we supervise.
            format!(
                "wireguard-go -f utun WG_TUN_NAME_FILE={}",
                name_file.display()
            ),
            // `set_mtu` (l. 189) reads `ifconfig $REAL_INTERFACE` for the current MTU; we also
            // read the addresses and UP flag from it, to be idempotent.
            "ifconfig utun7".to_owned(),
            // `add_addr` (l. 165-171), once per address.
            "ifconfig utun7 inet 10.42.3.4/16 10.42.3.4 alias".to_owned(),
            "ifconfig utun7 inet6 fd42::3:4/64 alias".to_owned(),
            // `set_mtu` with MTU set (l. 176-178; we skip it when l. 189-190's comparison finds
            // the MTU right), then `up_if` (l. 161-163).
            "ifconfig utun7 mtu 1420".to_owned(),
            "ifconfig utun7 up".to_owned(),
            // Not wg-quick's: a point-to-point utun gets only a host route from its address, so
            // the mesh prefixes get routes through it (wg-quick has them from `add_route` per
            // AllowedIPs, l. 367, when the config lists the mesh's network).
            "netstat -rn -f inet".to_owned(),
            "netstat -rn -f inet6".to_owned(),
            "route -q -n add -inet 10.42.0.0/16 -interface utun7".to_owned(),
            "route -q -n add -inet6 fd42::/64 -interface utun7".to_owned(),
            // `add_route` (l. 367) asks `route -n get` before adding; we read the tables the
            // way `del_routes` does (l. 136, 143) and add what is missing.
            "netstat -rn -f inet".to_owned(),
            "netstat -rn -f inet6".to_owned(),
            "route -q -n add -inet 192.168.50.0/24 -interface utun7".to_owned(),
            "route -q -n add -inet6 fd99::/64 -interface utun7".to_owned(),
        ]
    );
    // The host's own addresses leave out our utun, found by the name file (not `wg0`, which no
    // interface is called on a Mac), and loopback and link-local.
    let own: Vec<String> = host
        .addresses()
        .iter()
        .map(|a| format!("{} {}", a.interface, a.ip))
        .collect();
    assert_eq!(own, ["en0 192.168.1.20"]);
    let sets = uapi.sets();
    assert_eq!(sets.len(), 1);
    assert!(sets[0].contains(&format!("private_key={}", hex_of(&key))));

    // ---- reconcile: the kernel now shows what we set; nothing is added again ----
    lab.kernel(CONFIGURED_UTUN7, INET_AFTER, INET6_AFTER);
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Adopted);
    assert_eq!(backend.read().unwrap().listen_port, 51820);
    let mut add_peer = PeerUpdate::new(peer);
    add_peer.allowed_ips = nets(&["10.42.7.8/32"]);
    backend
        .apply(&DeviceUpdate {
            peers: vec![add_peer],
            ..DeviceUpdate::default()
        })
        .unwrap();
    host.configure_interface(&link).unwrap();
    apply_routes(&mut routes, &nets(&["192.168.50.0/24", "fd99::/64"]));
    assert_eq!(
        lab.take_log(&mut seen),
        [
            // `set_mtu`'s read (l. 189); its comparison (l. 190) finds nothing to change, and
            // we do the same for addresses, the UP flag and the mesh prefixes' routes
            // (wg-quick never reconfigures a live interface; a daemon does, so it must not add
            // twice). The prefix routes are not the route control's: it leaves 10.42/16 alone.
            "ifconfig utun7",
            "netstat -rn -f inet",
            "netstat -rn -f inet6",
            "netstat -rn -f inet",
            "netstat -rn -f inet6",
        ]
    );
    assert_eq!(
        uapi.sets(),
        [format!(
            "set=1\npublic_key={}\nallowed_ip=10.42.7.8/32\n",
            peer.to_hex()
        )]
    );

    // ---- route change: fd99::/64 goes, 10.77.0.0/16 comes ----
    apply_routes(&mut routes, &nets(&["192.168.50.0/24", "10.77.0.0/16"]));
    assert_eq!(
        lab.take_log(&mut seen),
        [
            "netstat -rn -f inet",
            "netstat -rn -f inet6",
            // `del_routes` (l. 145) runs `route -q -n delete -inet6 DEST`; we name the
            // interface too, to stay off a same-prefix route through another one.
            "route -q -n delete -inet6 fd99::/64 -interface utun7",
            // `add_route` (l. 367).
            "route -q -n add -inet 10.77.0.0/16 -interface utun7",
        ]
    );

    // ---- down ----
    backend.remove_device().unwrap();
    // `cmd_down` (l. 474-482) only runs `del_if` (l. 156-159): remove the socket and the name
    // file; wireguard-go exits, the utun and its routes go with it. wg-quick's wireguard-go
    // notices the unlinked socket; ours is our child and gets SIGTERM first.
    assert_eq!(lab.take_log(&mut seen), ["wireguard-go: SIGTERM"]);
    assert!(!name_file.exists());
    assert!(!lab.run_dir.join("utun7.sock").exists());
    assert!(backend.utun().is_none());

    // No key ever appeared on a command line.
    let log = std::fs::read_to_string(&lab.log).unwrap();
    assert!(!log.contains(&hex_of(&key)));
}

fn hex_of(key: &wgmesh_keys::PrivateKey) -> String {
    key.expose_hex()
}

#[test]
fn route_errors_that_mean_already_so_are_success_and_others_fail_despite_exit_0() {
    let lab = Lab::new();
    std::fs::create_dir_all(&lab.run_dir).unwrap();
    std::fs::write(lab.run_dir.join("wg0.name"), "utun7\n").unwrap();
    let mut routes = MacosRoutes::new("wg0", lab.runner()).with_run_dir(&lab.run_dir);
    let net: IpNet = "192.168.50.0/24".parse().unwrap();
    let fail = lab.state.join("route-fail");
    std::fs::write(&fail, "route: writing to routing socket: File exists\n").unwrap();
    routes.add_route(net).unwrap();
    std::fs::write(&fail, "route: writing to routing socket: No such process\n").unwrap();
    routes.remove_route(net).unwrap();
    std::fs::write(&fail, "delete net 192.168.50.0: not in table\n").unwrap();
    routes.remove_route(net).unwrap();
    std::fs::write(
        &fail,
        "route: writing to routing socket: Network is unreachable\n",
    )
    .unwrap();
    let err = routes.add_route(net).unwrap_err();
    assert!(err.to_string().contains("Network is unreachable"), "{err}");
    assert!(
        err.to_string()
            .contains("route -q -n add -inet 192.168.50.0/24 -interface utun7"),
        "{err}"
    );
}

#[test]
fn a_running_wireguard_go_is_adopted_and_survives_detach() {
    let lab = Lab::new();
    let _uapi = Uapi::serve(&lab.run_dir);
    let config = || {
        let mut config = MacosBackendConfig::new("wg0");
        config.run_dir = lab.run_dir.clone();
        config
    };
    let mut first = MacosBackend::new(config(), lab.runner());
    assert_eq!(first.ensure_device().unwrap(), DeviceOrigin::Created);
    let pid = first.child_pid().unwrap();
    first.detach();
    drop(first);
    let mut second = MacosBackend::new(config(), lab.runner());
    assert_eq!(second.ensure_device().unwrap(), DeviceOrigin::Adopted);
    assert_eq!(second.utun().unwrap().as_str(), "utun7");
    let mut seen = 0;
    let log = lab.take_log(&mut seen);
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("wireguard-go -f"))
            .count(),
        1,
        "{log:?}"
    );
    // Clean up the detached fake (ours, by pid).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_wireguard_go_that_never_reports_its_utun_times_out_with_the_name_file() {
    let lab = Lab::new();
    lab.tool("wireguard-go", "while :; do sleep 0.05; done");
    let mut config = MacosBackendConfig::new("wg0");
    config.run_dir = lab.run_dir.clone();
    config.start_timeout = Duration::from_millis(300);
    let mut backend = MacosBackend::new(config, lab.runner());
    let err = backend.ensure_device().unwrap_err().to_string();
    assert!(err.contains("wg0.name") && err.contains("300ms"), "{err}");
    assert!(backend.child_pid().is_none());
}

/// A wireguard-go that keeps dying is restarted at once the first time, then only after a
/// growing wait, as on Linux (`wgmesh_uapi::child::RestartBackoff`): the daemon neither spins
/// on a broken binary nor floods the log.
#[test]
fn a_wireguard_go_that_keeps_dying_is_restarted_with_back_off() {
    let lab = Lab::new();
    let _uapi = Uapi::serve(&lab.run_dir);
    let mut config = MacosBackendConfig::new("wg0");
    config.run_dir = lab.run_dir.clone();
    let mut backend = MacosBackend::new(config, lab.runner());
    let kill = |backend: &MacosBackend| {
        let pid = backend.child_pid().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Until the process is a zombie, the backend would rightly see it running (and the
        // fake socket answering) and keep it.
        let stat = format!("/proc/{pid}/stat");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z "))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Created);
    kill(&backend);
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Restarted);
    assert_eq!(backend.utun().unwrap().as_str(), "utun7");
    kill(&backend);
    let err = backend.ensure_device().unwrap_err().to_string();
    assert!(
        err.contains("exited 2 times in a row") && err.contains("next start in 2 s"),
        "{err}"
    );
    // Looking again before the wait is over starts nothing.
    assert!(backend.ensure_device().is_err());
    let mut seen = 0;
    let starts = lab
        .take_log(&mut seen)
        .iter()
        .filter(|l| l.starts_with("wireguard-go -f"))
        .count();
    assert_eq!(starts, 2, "the third start waits for its back-off");
    // After the wait it starts again.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Restarted);
    backend.remove_device().unwrap();
}
