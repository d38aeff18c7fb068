//! Secret and key hygiene on a running mesh (issue 7, item 4): with debug logging, reloads, status
//! queries and deliberately failing commands, no key material appears in any process's command
//! line, in the environment of the daemons and their wireguard-go, in logs, in `status`/`derive`
//! output or in error messages; and a running node keeps its files private.
//! Needs root; run with `--features root-tests`.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use common::{Lab, Node, wait_until};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use wgmesh_derive::{MeshKeys, NodeSeed, Secret};

const FORMATION: Duration = Duration::from_secs(60);

/// Standard base64 with padding (WireGuard's key format) and base64url without (the secret's).
fn base64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(table[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        bits = bits << 6 | u32::from(value(c));
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// Every encoding of `bytes` a leak could take, under `name`.
fn encodings(name: &str, bytes: &[u8]) -> Vec<(String, String)> {
    vec![
        (format!("{name} (hex)"), hex(bytes)),
        (format!("{name} (HEX)"), hex(bytes).to_uppercase()),
        (format!("{name} (base64)"), base64(bytes, false)),
        (format!("{name} (base64url)"), base64(bytes, true)),
    ]
}

fn identity_seed(node: &Node) -> NodeSeed {
    let path = node.state_dir().join(format!("{}.json", node.interface));
    let identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    NodeSeed::from_hex(identity["node_seed"].as_str().unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Output of a command that must fail, for the scan.
fn failing(what: &str, out: &std::process::Output) -> (String, String) {
    assert!(!out.status.success(), "{what} should have failed");
    (
        format!("output of {what}"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wireguard_go_pids(interface: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("wireguard-go -f {interface}$")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: run with --features root-tests"
)]
fn a_running_mesh_leaks_no_key_material_and_keeps_its_files_private() {
    let mut lab = Lab::new(3);
    let secret_file = lab.nodes[0].secret_file.clone();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.start_all(&[
        "--log-level",
        "debug",
        "--advertise-routes",
        "192.168.56.0/24",
    ]);
    lab.wait_for_full_mesh(FORMATION);

    let uri = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_owned();
    let token = uri.trim_start_matches("wgmesh://v1/").to_owned();
    let keys = MeshKeys::derive(&Secret::parse(&uri).unwrap());
    let mut forbidden: Vec<(String, String)> = vec![
        ("the secret URI".into(), uri.clone()),
        ("the secret token".into(), token.clone()),
    ];
    forbidden.extend(encodings("the secret's bytes", &base64url_decode(&token)));
    forbidden.extend(encodings("the exchange key", &keys.exchange_key()));
    forbidden.extend(encodings("the PSK", keys.preshared_key().expose_bytes()));
    for node in &lab.nodes {
        let seed = identity_seed(node);
        let private = keys.node_private_key(&seed);
        let name = format!("node {}", node.index);
        forbidden.extend(encodings(
            &format!("{name}'s private key"),
            private.expose_bytes(),
        ));
        forbidden.push((format!("{name}'s node seed"), seed.to_hex()));
    }

    let mut haystacks: Vec<(String, String)> = Vec::new();
    // Reloads: to trace and back, one that names a non-reloadable key (with the secret as its
    // value: the report must not echo it), one rejected outright.
    let node = &lab.nodes[0];
    for (content, ok) in [
        (
            "log-level=trace\nadvertise-routes=192.168.57.0/24\n".to_owned(),
            true,
        ),
        (format!("secret={uri}\nlog-level=debug\n"), true),
        (format!("log-level=debug\nbogus={token}\n"), false),
    ] {
        std::fs::write(node.reload_path(), content).unwrap();
        let out = node.wgmesh(&["reload"]);
        assert_eq!(out.status.success(), ok, "reload");
        // Let the daemon log a while at each level.
        std::thread::sleep(Duration::from_secs(2));
        haystacks.push(("output of `reload`".into(), {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }));
    }
    for node in &lab.nodes {
        for command in [&["status", "--json"][..], &["peers", "--json"], &["status"]] {
            let out = node.wgmesh(command);
            assert!(out.status.success());
            haystacks.push((
                format!("node {} `{}`", node.index, command.join(" ")),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            ));
        }
        let seed = identity_seed(node).to_hex();
        let derive = node.exec(
            common::wgmesh_bin(),
            &[
                "derive",
                "--json",
                "--secret-file",
                &secret_file.display().to_string(),
                "--node-seed",
                &seed,
            ],
        );
        haystacks.push((
            format!("node {} `derive --json --node-seed`", node.index),
            String::from_utf8_lossy(&derive.stdout).into_owned(),
        ));
    }

    // Commands that fail on purpose, each with key material close at hand.
    let scratch = lab.dir.path().join("failing");
    std::fs::create_dir_all(&scratch).unwrap();
    let bad_secret = scratch.join("bad-secret");
    std::fs::write(&bad_secret, format!("{} {}", &token[..20], &token[20..])).unwrap();
    let node = &lab.nodes[2];
    let up = |secret: &Path, state: &Path| {
        node.exec(
            common::wgmesh_bin(),
            &[
                "up",
                "--secret-file",
                &secret.display().to_string(),
                "--interface",
                &format!("{}f", node.interface),
                "--state-dir",
                &state.display().to_string(),
                "--runtime-dir",
                &scratch.join("run").display().to_string(),
            ],
        )
    };
    let state = scratch.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    haystacks.push(failing(
        "`up` with a malformed secret",
        &up(&bad_secret, &state),
    ));
    haystacks.push(failing(
        "`up` with a directory as secret file",
        &up(&scratch, &state),
    ));
    // A copy of node 3's identity with its public key edited, then one readable by others.
    let identity_text =
        std::fs::read_to_string(node.state_dir().join(format!("{}.json", node.interface))).unwrap();
    let copy = state.join(format!("{}f.json", node.interface));
    let mut edited: serde_json::Value = serde_json::from_str(&identity_text).unwrap();
    edited["public_key"] =
        serde_json::json!(wgmesh_keys::PublicKey::from_bytes([7; 32]).to_base64());
    std::fs::write(&copy, edited.to_string()).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    haystacks.push(failing(
        "`up` with an edited identity",
        &up(&secret_file, &state),
    ));
    std::fs::write(&copy, &identity_text).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    haystacks.push(failing(
        "`up` with a world-readable identity",
        &up(&secret_file, &state),
    ));
    std::fs::write(&copy, &identity_text[..identity_text.len() / 2]).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    haystacks.push(failing(
        "`up` with a truncated identity",
        &up(&secret_file, &state),
    ));
    let loose_secret = scratch.join("loose-secret");
    std::fs::write(&loose_secret, &uri).unwrap();
    std::fs::set_permissions(&loose_secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = node.exec(
        common::wgmesh_bin(),
        &[
            "derive",
            "--secret-file",
            &loose_secret.display().to_string(),
        ],
    );
    let warned = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        warned.contains("chmod 600"),
        "no warning for a loose secret file"
    );
    haystacks.push(("output of `derive` with a loose secret file".into(), warned));

    // Every process's command line; the environment of every daemon and its wireguard-go.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            haystacks.push((
                format!("{}/cmdline", entry.path().display()),
                String::from_utf8_lossy(&bytes).replace('\0', " "),
            ));
        }
    }
    let mut environments = 0;
    for node in &lab.nodes {
        let mut pids = wireguard_go_pids(&node.interface);
        assert!(!pids.is_empty(), "node {}: no wireguard-go", node.index);
        pids.push(node.daemon_pid().unwrap().to_string());
        for pid in pids {
            let path = format!("/proc/{pid}/environ");
            let bytes = std::fs::read(&path).unwrap();
            environments += 1;
            haystacks.push((path, String::from_utf8_lossy(&bytes).replace('\0', " ")));
        }
    }
    assert!(environments >= 6);
    for node in &lab.nodes {
        haystacks.push((format!("node {} log", node.index), node.log()));
    }
    assert!(
        lab.nodes.iter().all(|n| n.log().contains("DEBUG")),
        "debug logging was not on"
    );
    // At debug the daemon runs wireguard-go verbosely, so its lines (each peer it creates, the
    // handshakes) are in the scanned logs too.
    assert!(
        lab.nodes
            .iter()
            .all(|n| n.log().contains("UAPI: Created") && n.log().contains("handshake")),
        "wireguard-go's verbose log is not in the daemon's"
    );

    // Canaries: the scan finds what the files that may hold key material do hold, and the
    // base64 here is WireGuard's.
    let seed = identity_seed(&lab.nodes[0]);
    let private = keys.node_private_key(&seed);
    assert_eq!(
        base64(private.expose_bytes(), false),
        wgmesh_keys::PublicKey::from_bytes(*private.expose_bytes()).to_base64()
    );
    for canary in [
        std::fs::read_to_string(&secret_file).unwrap(),
        identity_text.clone(),
    ] {
        assert!(
            forbidden.iter().any(|(_, v)| canary.contains(v.as_str())),
            "the scan would miss key material"
        );
    }

    let mut leaks = Vec::new();
    for (place, text) in &haystacks {
        for (item, value) in &forbidden {
            if text.contains(value.as_str()) {
                leaks.push(format!("{item} in {place}"));
            }
        }
    }
    // Only names, never the values: a failing test must not leak what it protects.
    assert!(leaks.is_empty(), "key material leaked: {leaks:#?}");

    // File modes on a running node (DESIGN.md §4).
    for node in &lab.nodes {
        let cache = node
            .state_dir()
            .join(format!("{}.peers.json", node.interface));
        wait_until(FORMATION, "peer cache written", || cache.exists());
        let expected = [
            (node.state_dir(), 0o700),
            (
                node.state_dir().join(format!("{}.json", node.interface)),
                0o600,
            ),
            (cache, 0o600),
            (node.runtime_dir(), 0o700),
            (
                node.runtime_dir().join(format!("{}.sock", node.interface)),
                0o600,
            ),
        ];
        for (path, want) in expected {
            assert_eq!(
                mode(&path),
                want,
                "node {}: {} is {:04o}",
                node.index,
                path.display(),
                mode(&path)
            );
        }
    }
}
