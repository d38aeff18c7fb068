//! Tests against the real kernel, each in its own network namespace. They need root (or
//! CAP_NET_ADMIN + CAP_SYS_ADMIN) and `ip`; they are ignored unless the `root-tests` feature is on
//! (`cargo test -p wgmesh-linux --features root-tests`) or ignored tests are included
//! (`-- --include-ignored`). See README.md.
//!
//! Each test creates a namespace `wgml-<pid>-<n>` with `ip netns add`, enters it on a dedicated
//! std thread (setns changes only the calling thread, so the test harness thread and every
//! other test stay where they are), opens its netlink sockets there, and inspects the result
//! with `ip -n <namespace>`. A guard deletes the namespace even when the test fails.
#![expect(
    clippy::unwrap_used,
    reason = "fixture helpers outside #[test] fns: a failed setup must fail the test"
)]

use ipnet::IpNet;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;
use wgmesh_device::{
    BackendError, DesiredDevice, DeviceOrigin, PeerConfig, RouteControl, WireguardBackend,
    diff_device,
};
use wgmesh_keys::{PresharedKey, PrivateKey};
use wgmesh_linux::{
    InterfaceRoutes, KernelBackend, Rtnl, kernel_wireguard_available, probe_kernel_wireguard,
};

/// `ip` by full path where it exists: in the kernel VM, busybox's own `ip` applet would
/// otherwise run first. `WGMESH_TEST_IP` overrides.
fn ip_binary() -> String {
    std::env::var("WGMESH_TEST_IP").unwrap_or_else(|_| {
        ["/bin/ip", "/usr/bin/ip", "/sbin/ip", "/usr/sbin/ip"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("ip")
            .to_owned()
    })
}

fn ip(args: &[&str]) -> String {
    let output = Command::new(ip_binary()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A network namespace that is deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wgml-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Self { name }
    }

    /// `ip -n <namespace> args...`
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a new thread inside the namespace; a panic in `f` fails the test.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                f()
            });
            match worker.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A veth pair `a`/`b` in the namespace, both up.
    fn veth(&self, a: &str, b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        self.ip(&["link", "set", b, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_binary())
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: --features root-tests"
)]
fn link_mtu_up_and_delete() {
    let ns = Netns::new();
    ns.veth("wgv0", "wgv1");
    ns.run(|| {
        let rtnl = Rtnl::new().unwrap();
        assert_eq!(rtnl.link("nosuchlink").unwrap(), None);
        let link = rtnl.link("wgv0").unwrap().unwrap();
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert!(!link.up);
        rtnl.set_mtu(link.index, 1380).unwrap();
        rtnl.set_up(link.index).unwrap();
        let link = rtnl.link("wgv0").unwrap().unwrap();
        assert_eq!((link.mtu, link.up), (1380, true));
    });
    let shown = ns.ip(&["link", "show", "wgv0"]);
    assert!(shown.contains("mtu 1380"), "{shown}");
    assert!(shown.contains("UP"), "{shown}");
    ns.run(|| {
        let rtnl = Rtnl::new().unwrap();
        let index = rtnl.link_index("wgv0").unwrap().unwrap();
        rtnl.delete_link(index).unwrap();
        assert_eq!(rtnl.link_index("wgv0").unwrap(), None);
        // Deleting what is gone is "already so".
        rtnl.delete_link(index).unwrap();
    });
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: --features root-tests"
)]
fn addresses_are_set_idempotently_and_stale_ones_removed() {
    let ns = Netns::new();
    ns.veth("wgv0", "wgv1");
    let desired = [net("10.77.1.2/16"), net("fd77::1:2/64")];
    let managed = [net("10.77.0.0/16"), net("fd77::/64")];
    ns.run(|| {
        let rtnl = Rtnl::new().unwrap();
        let index = rtnl.link_index("wgv0").unwrap().unwrap();
        let first = rtnl.set_addresses(index, &desired, &managed).unwrap();
        assert_eq!(first.added, desired.to_vec());
        let second = rtnl.set_addresses(index, &desired, &managed).unwrap();
        assert!(second.is_empty(), "{second:?}");
    });
    let shown = ns.ip(&["address", "show", "dev", "wgv0"]);
    assert_eq!(shown.matches("10.77.1.2/16").count(), 1, "{shown}");
    assert_eq!(shown.matches("fd77::1:2/64").count(), 1, "{shown}");

    // A stale mesh address goes; an address outside the mesh prefixes stays.
    ns.ip(&["address", "add", "10.77.9.9/16", "dev", "wgv0"]);
    ns.ip(&["address", "add", "192.168.5.1/24", "dev", "wgv0"]);
    ns.run(|| {
        let rtnl = Rtnl::new().unwrap();
        let index = rtnl.link_index("wgv0").unwrap().unwrap();
        let changes = rtnl.set_addresses(index, &desired, &managed).unwrap();
        assert_eq!(changes.removed, vec![net("10.77.9.9/16")]);
        assert!(changes.added.is_empty());
    });
    let shown = ns.ip(&["address", "show", "dev", "wgv0"]);
    assert!(!shown.contains("10.77.9.9"), "{shown}");
    assert!(shown.contains("192.168.5.1/24"), "{shown}");
    assert!(shown.contains("10.77.1.2/16"), "{shown}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: --features root-tests"
)]
fn routes_with_our_protocol_only() {
    let ns = Netns::new();
    ns.veth("wgv0", "wgv1");
    ns.ip(&["link", "set", "wgv0", "up"]);
    // Someone else's route on the same interface.
    ns.ip(&[
        "route",
        "add",
        "10.60.0.0/16",
        "dev",
        "wgv0",
        "proto",
        "static",
    ]);
    let ours = [net("10.50.0.0/16"), net("10.51.1.0/24"), net("fd50::/64")];
    ns.run(|| {
        let rtnl = Arc::new(Rtnl::new().unwrap());
        let index = rtnl.link_index("wgv0").unwrap().unwrap();
        let mut routes = InterfaceRoutes::new(rtnl, "wgv0", index);
        assert!(routes.owned_routes().unwrap().is_empty());
        for route in ours {
            routes.add_route(route).unwrap();
            // Adding again is "already so".
            routes.add_route(route).unwrap();
        }
        let mut want = ours.to_vec();
        want.sort();
        assert_eq!(routes.owned_routes().unwrap(), want);
        // Not replacing someone else's route for the same destination.
        let refused = routes.add_route(net("10.60.0.0/16")).unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::AlreadyExists,
            "{refused}"
        );
    });
    let shown = ns.ip(&["route", "show", "proto", "77"]);
    assert!(shown.contains("10.50.0.0/16 dev wgv0"), "{shown}");
    assert!(shown.contains("10.51.1.0/24 dev wgv0"), "{shown}");
    assert!(shown.contains("scope link"), "{shown}");
    assert!(!shown.contains("10.60.0.0"), "{shown}");
    let shown6 = ns.ip(&["-6", "route", "show", "proto", "77"]);
    assert!(shown6.contains("fd50::/64 dev wgv0"), "{shown6}");

    ns.run(|| {
        let rtnl = Arc::new(Rtnl::new().unwrap());
        let index = rtnl.link_index("wgv0").unwrap().unwrap();
        let mut routes = InterfaceRoutes::new(rtnl, "wgv0", index);
        for route in routes.owned_routes().unwrap() {
            routes.remove_route(route).unwrap();
        }
        // Removing a destination only a foreign route has: nothing of ours, "already so".
        routes.remove_route(net("10.60.0.0/16")).unwrap();
        routes.remove_route(net("10.50.0.0/16")).unwrap();
        assert!(routes.owned_routes().unwrap().is_empty());
    });
    assert_eq!(ns.ip(&["route", "show", "proto", "77"]).trim(), "");
    let foreign = ns.ip(&["route", "show", "10.60.0.0/16"]);
    assert!(foreign.contains("proto static"), "{foreign}");
}

fn desired_device() -> DesiredDevice {
    let peer = |n: u8| {
        let mut config = PeerConfig::new(PrivateKey::from_bytes_clamped([n; 32]).public_key());
        config.endpoint = Some(format!("192.0.2.{n}:5182{n}").parse().unwrap());
        config.allowed_ips = vec![
            net(&format!("10.88.0.{n}/32")),
            net(&format!("fd88::{n}/128")),
            net(&format!("172.16.{n}.0/24")),
        ];
        config.persistent_keepalive = (n == 2).then_some(25);
        config.preshared_key = (n == 3).then(|| PresharedKey::from_bytes([n; 32]));
        config
    };
    DesiredDevice {
        private_key: PrivateKey::from_bytes_clamped([42; 32]),
        listen_port: 51888,
        peers: vec![peer(1), peer(2), peer(3)],
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: --features root-tests"
)]
fn kernel_backend_roundtrip() {
    let ns = Netns::new();
    ns.run(|| {
        if !kernel_wireguard_available() {
            let reason = probe_kernel_wireguard().unwrap_err();
            // The backend says the same, as `Unavailable`, and leaves nothing behind.
            let mut backend = KernelBackend::open("wgmk0").unwrap();
            match backend.ensure_device() {
                Err(BackendError::Unavailable { reason: why, .. }) => {
                    assert!(why.contains("no WireGuard module"), "{why}");
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
            eprintln!("SKIPPED kernel_backend_roundtrip: {reason}");
            return;
        }
        let mut backend = KernelBackend::open("wgmk0").unwrap();
        assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Created);
        assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Adopted);
        let desired = desired_device();
        let empty = backend.read().unwrap();
        assert!(empty.peers.is_empty());
        let update = diff_device(&empty, &desired, SystemTime::now());
        assert_eq!(update.peers.len(), 3);
        backend.apply(&update).unwrap();
        let state = backend.read().unwrap();
        assert_eq!(state.listen_port, 51888);
        assert_eq!(state.private_key.as_ref(), Some(&desired.private_key));
        assert_eq!(state.peers.len(), 3);
        for wanted in &desired.peers {
            let mut wanted = wanted.clone();
            wanted.normalise();
            assert_eq!(state.peer(&wanted.public_key).unwrap().config, wanted);
        }
        let again = diff_device(&state, &desired, SystemTime::now());
        assert!(again.is_empty(), "second diff not empty: {again:?}");
        // Adopting keeps the peers.
        let mut adopted = KernelBackend::open("wgmk0").unwrap();
        assert_eq!(adopted.ensure_device().unwrap(), DeviceOrigin::Adopted);
        assert_eq!(adopted.read().unwrap().peers.len(), 3);
        backend.remove_device().unwrap();
        backend.remove_device().unwrap();
        let rtnl = Rtnl::new().unwrap();
        assert_eq!(rtnl.link_index("wgmk0").unwrap(), None);
    });
}
