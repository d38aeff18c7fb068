//! The offline CLI as a user runs it: `wgmesh secret` and `wgmesh derive`.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

use std::path::Path;
use std::process::{Command, Output};

const SECRET: &str = "wgmesh://v1/Xv3nq0Zb8C5mJbU1t3VZ6e9oA2yGk4HwRrLdPqSsTfE";
const SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn wgmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(args)
        .env_remove("WGMESH_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A secret file as the README says to keep it: mode 0600 (a looser one warns).
fn secret_file(dir: &Path, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("secret");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

#[test]
fn derive_json_matches_the_golden_vector() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), &format!("{SECRET}\n"));
    let out = wgmesh(&[
        "derive",
        "--secret-file",
        &file,
        "--node-seed",
        SEED,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Same values as pkg/derive/tests/golden.json: another machine prints exactly this.
    assert_eq!(
        json,
        serde_json::json!({
            "network_id": "397ed94c04f2ba4953a3784f5e125ae2056f67975d55d382d1c9854b8fa7bde1",
            "ipv4_subnet": "10.139.0.0/16",
            "ipv6_prefix": "fd9e:d6e6:719b:fab9::/64",
            "control_port": 52462,
            "lan_group": "239.192.239.45",
            "public_key": "x+TS5ZrbxPdiHCf4kflBuX5E5106202oE7aDdF0WUQw=",
            "mesh_ipv4": "10.139.104.8",
            "mesh_ipv6": "fd9e:d6e6:719b:fab9:9d94:62f3:b284:8b5a",
        })
    );
    let again = wgmesh(&[
        "derive",
        "--secret-file",
        &file,
        "--node-seed",
        SEED,
        "--json",
    ]);
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn derive_never_prints_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), SECRET);
    let text = [
        wgmesh(&[
            "derive",
            "--secret-file",
            &file,
            "--node-seed",
            SEED,
            "--json",
        ]),
        wgmesh(&["derive", "--secret-file", &file, "--node-seed", SEED]),
    ]
    .iter()
    .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
    .collect::<String>();
    // The exchange key and the secret token; the PSK and private key follow below.
    for secret in [
        "cd274525faa220fc385b496272055df4bd617e88af48f94395062de825bcaad2",
        "Xv3nq0Zb8C5mJbU1t3VZ6e9oA2yGk4HwRrLdPqSsTfE",
    ] {
        assert!(!text.contains(secret), "derive printed {secret}");
    }
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("../pkg/derive/tests/golden.json")).unwrap();
    let psk = golden[0]["preshared_key"].as_str().unwrap();
    let private = golden[0]["nodes"][1]["private_key"].as_str().unwrap();
    assert!(!text.contains(psk) && !text.contains(private));
}

#[test]
fn bad_secrets_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("", "secret is empty"),
        ("\n", "secret is empty"),
        ("http://v1/abcdefghijklmnopqrstuvwxyz", "scheme"),
        (
            "wgmesh://v7/abcdefghijklmnopqrstuvwxyz",
            "unknown version \"v7\"",
        ),
        ("wgmesh://v1/short", "at least 16"),
    ];
    for (content, needle) in cases {
        let file = secret_file(dir.path(), content);
        let out = wgmesh(&["derive", "--secret-file", &file]);
        assert_eq!(out.status.code(), Some(2), "{content:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(needle) && err.contains(&file),
            "{content:?}: {err}"
        );
    }
    let missing = dir.path().join("nope").display().to_string();
    let out = wgmesh(&["derive", "--secret-file", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
    let out = wgmesh(&["derive"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no secret given"));
    let file = secret_file(dir.path(), SECRET);
    let out = wgmesh(&["derive", "--secret-file", &file, "--node-seed", "xyz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("node seed"), "{}", stderr(&out));
}

#[test]
fn weak_and_argv_secrets_warn() {
    let out = wgmesh(&["derive", "--secret", "correct-horse-battery-staple"]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("process list"), "{err}");
    assert!(err.contains("not a 32-byte random token"), "{err}");
    assert!(
        !err.contains("correct-horse"),
        "the warning must not repeat the secret: {err}"
    );
}

#[test]
fn environment_secret_is_used() {
    let out = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(["derive", "--json"])
        .env("WGMESH_SECRET", SECRET)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.139.0.0/16"));
    assert!(
        stderr(&out).is_empty(),
        "a generated secret from the environment needs no warning"
    );
}

#[test]
fn secret_prints_a_fresh_strong_uri() {
    let a = wgmesh(&["secret"]);
    let b = wgmesh(&["secret"]);
    let a = String::from_utf8(a.stdout).unwrap();
    assert!(
        a.starts_with("wgmesh://v1/") && a.trim().len() == 12 + 43,
        "{a}"
    );
    assert_ne!(a, String::from_utf8(b.stdout).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), &a);
    let out = wgmesh(&["derive", "--secret-file", &file]);
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_route_policy_or_relay_list_exits_2_naming_the_item() {
    for (args, needle) in [
        (
            ["--accept-routes", "10.0.0.0/8@abc"],
            "a key prefix needs at least 8 characters",
        ),
        (
            ["--accept-routes", "10.0.0.0/33"],
            "is not none, all, private or a prefix",
        ),
        (["--accept-routes", "none,10.0.0.0/8"], "cannot be combined"),
        (["--accept-routes-min-v4", "33"], "33 is not in 0..=32"),
        (
            ["--relays", "short"],
            "relays entry 1: a key prefix needs at least 8",
        ),
    ] {
        let mut full = vec!["up"];
        full.extend(args);
        let out = wgmesh(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}
