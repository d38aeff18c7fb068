//! The userspace backend against Debian's real wireguard-go.
//!
//! Tests that create devices need root, /dev/net/tun and /usr/bin/wireguard-go, and run only with
//! `--features root-tests`. /var/run/wireguard is shared by every network namespace and every
//! concurrent test run, so each test takes a unique interface name.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers abort the test on any failure"
)]

use base64::Engine as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};
use wgmesh_device::{DesiredDevice, DeviceOrigin, PeerConfig, WireguardBackend, diff_device};
use wgmesh_keys::{PresharedKey, PrivateKey, PublicKey};
use wgmesh_uapi::{
    ChildOutput, UserspaceBackend, UserspaceConfig, UserspaceUnavailable, userspace_available,
};

/// `wgu<pid % 1000><n>`: at most 3 + 3 + 4 characters, well under IFNAMSIZ (15).
fn interface_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "wgu{}x{}",
        std::process::id() % 1000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn backend(interface: &str) -> UserspaceBackend {
    UserspaceBackend::new(UserspaceConfig {
        output: ChildOutput::Null,
        ..UserspaceConfig::new(interface)
    })
}

fn random_key() -> [u8; 32] {
    use std::io::Read as _;
    let mut out = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut out)
        .unwrap();
    out
}

fn desired(peers: usize) -> DesiredDevice {
    let peers = (0..peers)
        .map(|i| {
            let endpoint: SocketAddr = if i % 2 == 0 {
                format!("192.0.2.{}:51820", i % 250 + 1).parse().unwrap()
            } else {
                format!("[2001:db8::{:x}]:51820", i + 1).parse().unwrap()
            };
            let n = u16::try_from(i).unwrap();
            PeerConfig {
                preshared_key: Some(PresharedKey::from_bytes(random_key())),
                endpoint: Some(endpoint),
                allowed_ips: vec![
                    format!("10.77.{}.{}/32", n / 250, n % 250 + 1)
                        .parse()
                        .unwrap(),
                    format!("fd77::{:x}/128", n + 1).parse().unwrap(),
                ],
                persistent_keepalive: (i % 3 == 0).then_some(25),
                ..PeerConfig::new(PrivateKey::from_bytes_clamped(random_key()).public_key())
            }
        })
        .collect();
    DesiredDevice {
        private_key: PrivateKey::from_bytes_clamped(random_key()),
        listen_port: 0,
        peers,
    }
}

/// observe → diff → apply, then asserts a second diff is empty.
fn reconcile(backend: &mut UserspaceBackend, want: &DesiredDevice) {
    let now = SystemTime::now();
    let observed = backend.read().unwrap();
    backend.apply(&diff_device(&observed, want, now)).unwrap();
    let observed = backend.read().unwrap();
    let second = diff_device(&observed, want, now);
    assert!(second.is_empty(), "second diff not empty: {second:?}");
}

fn link_exists(interface: &str) -> bool {
    std::fs::read_to_string("/proc/self/net/dev")
        .unwrap()
        .lines()
        .any(|row| row.split(':').next().is_some_and(|n| n.trim() == interface))
}

fn wg_show(interface: &str, what: &str) -> String {
    let out = std::process::Command::new("wg")
        .args(["show", interface, what])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn process_running(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie has state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim()
            .starts_with('Z')
    })
}

fn socket(interface: &str) -> std::path::PathBuf {
    Path::new("/var/run/wireguard").join(format!("{interface}.sock"))
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn create_apply_read_back() {
    let interface = interface_name();
    let mut backend = backend(&interface);
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Created);
    let mut want = desired(3);
    want.listen_port = 0;
    // Port 0 lets wireguard-go pick; read it back so the diff can converge.
    want.listen_port = backend.read().unwrap().listen_port;
    reconcile(&mut backend, &want);
    // What an operator would check.
    let peers = wg_show(&interface, "peers");
    for peer in &want.peers {
        assert!(peers.contains(&peer.public_key.to_base64()), "{peers}");
    }
    assert_eq!(
        wg_show(&interface, "public-key").trim(),
        want.private_key.public_key().to_base64()
    );
    // Calling ensure_device again keeps the running device.
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Adopted);
    assert_eq!(backend.read().unwrap().peers.len(), 3);
    backend.remove_device().unwrap();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn adopts_a_running_device_without_flushing_it() {
    let interface = interface_name();
    let mut first = backend(&interface);
    assert_eq!(first.ensure_device().unwrap(), DeviceOrigin::Created);
    let mut want = desired(3);
    want.listen_port = first.read().unwrap().listen_port;
    reconcile(&mut first, &want);
    let pid = first.child_pid().unwrap();
    // The daemon exits with --keep-interface.
    first.detach();
    drop(first);
    assert!(process_running(pid));

    let mut second = backend(&interface);
    assert_eq!(second.ensure_device().unwrap(), DeviceOrigin::Adopted);
    assert_eq!(second.child_pid(), None);
    let observed = second.read().unwrap();
    assert_eq!(observed.peers.len(), 3);
    assert!(diff_device(&observed, &want, SystemTime::now()).is_empty());

    // Removing an adopted device: unlinking its socket makes wireguard-go exit.
    second.remove_device().unwrap();
    assert!(!link_exists(&interface));
    assert!(!socket(&interface).exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while process_running(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_running(pid), "adopted wireguard-go still runs");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn restarts_a_killed_process_and_restores_peers() {
    let interface = interface_name();
    let mut backend = backend(&interface);
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Created);
    let mut want = desired(3);
    want.listen_port = backend.read().unwrap().listen_port;
    reconcile(&mut backend, &want);

    let pid = backend.child_pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Give the kernel a moment to deliver it; try_wait then sees the exit.
    std::thread::sleep(Duration::from_millis(100));
    assert!(backend.read().is_err(), "a dead process cannot answer");

    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Restarted);
    assert_ne!(backend.child_pid(), Some(pid));
    assert!(backend.read().unwrap().peers.is_empty());
    reconcile(&mut backend, &want);
    assert_eq!(backend.read().unwrap().peers.len(), 3);
    backend.remove_device().unwrap();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn remove_leaves_no_process_socket_or_link() {
    let interface = interface_name();
    let mut backend = backend(&interface);
    backend.ensure_device().unwrap();
    let mut want = desired(1);
    want.listen_port = backend.read().unwrap().listen_port;
    reconcile(&mut backend, &want);
    let pid = backend.child_pid().unwrap();
    assert!(link_exists(&interface));
    assert!(socket(&interface).exists());

    backend.remove_device().unwrap();
    assert!(!process_running(pid));
    assert!(!socket(&interface).exists());
    assert!(!link_exists(&interface));
    // Removing twice is fine; creating again works.
    backend.remove_device().unwrap();
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Created);
    drop(backend);
    // Dropping a non-detached backend stops its process.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while link_exists(&interface) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!link_exists(&interface));
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn stale_socket_is_replaced() {
    let interface = interface_name();
    std::fs::create_dir_all("/var/run/wireguard").unwrap();
    std::fs::write(socket(&interface), b"").unwrap();
    let mut backend = backend(&interface);
    assert_eq!(backend.ensure_device().unwrap(), DeviceOrigin::Created);
    backend.remove_device().unwrap();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn keys_never_reach_argv_or_environment() {
    let interface = interface_name();
    let mut backend = backend(&interface);
    backend.ensure_device().unwrap();
    let mut want = desired(2);
    want.listen_port = backend.read().unwrap().listen_port;
    reconcile(&mut backend, &want);
    let pid = backend.child_pid().unwrap();

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut secrets = vec![
        want.private_key.expose_hex(),
        b64.encode(want.private_key.expose_bytes()),
    ];
    for peer in &want.peers {
        let psk = peer.preshared_key.as_ref().unwrap();
        secrets.push(psk.expose_hex());
        secrets.push(b64.encode(psk.expose_bytes()));
    }
    let mut scanned = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        scanned += 1;
        let text = String::from_utf8_lossy(&cmdline);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a key is in {:?}",
                entry.path()
            );
        }
    }
    assert!(scanned > 1);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for secret in &secrets {
        assert!(!environ.contains(secret.as_str()));
    }
    // Only what we chose to pass.
    assert_eq!(environ.trim_end_matches('\0'), "LOG_LEVEL=error");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cmdline),
        format!("/usr/bin/wireguard-go\0-f\0{interface}\0")
    );
    backend.remove_device().unwrap();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn process_runs_in_its_own_process_group() {
    let interface = interface_name();
    let mut backend = backend(&interface);
    backend.ensure_device().unwrap();
    let pid = backend.child_pid().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after "comm)": state ppid pgrp ...
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[2],
        pid.to_string(),
        "pgrp should be the child's own pid"
    );
    backend.remove_device().unwrap();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root and wireguard-go")]
fn child_output_can_go_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let interface = interface_name();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("wireguard-go.log");
    let mut backend = UserspaceBackend::new(UserspaceConfig {
        output: ChildOutput::File(log.clone()),
        log_level: "verbose".to_owned(),
        ..UserspaceConfig::new(&interface)
    });
    backend.ensure_device().unwrap();
    backend.remove_device().unwrap();
    let metadata = std::fs::metadata(&log).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("UAPI listener started"), "{text}");
}

#[test]
fn failing_binary_is_reported() {
    let interface = interface_name();
    let mut backend = UserspaceBackend::new(UserspaceConfig {
        wireguard_go: "/bin/false".into(),
        output: ChildOutput::Null,
        socket_dir: tempfile::tempdir().unwrap().keep(),
        ..UserspaceConfig::new(&interface)
    });
    let err = backend.ensure_device().unwrap_err();
    assert!(err.to_string().contains("exited"), "{err}");
}

#[test]
fn availability_checks() {
    let missing = userspace_available(Path::new("/nonexistent/wireguard-go")).unwrap_err();
    // The io error keeps its errno, and the message names the path.
    assert!(
        matches!(&missing, UserspaceUnavailable::Binary { source, .. } if source.raw_os_error() == Some(2)),
        "{missing:?}"
    );
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/wireguard-go: "),
        "{missing}"
    );
    let not_executable = tempfile::NamedTempFile::new().unwrap();
    let err = userspace_available(not_executable.path()).unwrap_err();
    assert!(
        matches!(&err, UserspaceUnavailable::NotExecutable { path } if path == not_executable.path()),
        "{err:?}"
    );
    assert!(err.to_string().contains("not an executable"), "{err}");
    if Path::new("/usr/bin/wireguard-go").exists() && Path::new("/dev/net/tun").exists() {
        userspace_available(Path::new("/usr/bin/wireguard-go")).unwrap();
    }
}

#[test]
fn public_key_is_not_secret_but_distinct() {
    // Sanity for the helpers above: generated keys differ.
    let a = PublicKey::from_bytes(random_key());
    let b = PublicKey::from_bytes(random_key());
    assert_ne!(a, b);
}
