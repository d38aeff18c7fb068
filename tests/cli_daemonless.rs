//! CLI behaviour that needs no running mesh: talking to a daemon that is not there, refusing a
//! corrupt identity, the systemd unit and its installation.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

use std::path::Path;
use std::process::{Command, Output};

fn wgmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(args)
        .env_remove("WGMESH_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dirs(root: &Path) -> [String; 4] {
    [
        "--state-dir".into(),
        root.join("state").display().to_string(),
        "--runtime-dir".into(),
        root.join("run").display().to_string(),
    ]
}

#[test]
fn commands_without_a_daemon_exit_3() {
    let root = tempfile::tempdir().unwrap();
    let [a, b, c, d] = dirs(root.path());
    for command in ["status", "peers", "reload", "down"] {
        for json in [false, true] {
            let mut args = vec![command, "--interface", "wgnothere", &a, &b, &c, &d];
            if json {
                args.push("--json");
            }
            let out = wgmesh(&args);
            assert_eq!(out.status.code(), Some(3), "{command}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("no wgmesh daemon is running on interface wgnothere"),
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn a_corrupt_identity_stops_up_and_is_left_untouched() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let identity = state.join("wgcorrupt.json");
    let garbage = "{\"version\": 1, \"node_seed\": \"0011";
    std::fs::write(&identity, garbage).unwrap();
    std::fs::set_permissions(
        &identity,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let secret = root.path().join("secret");
    std::fs::write(
        &secret,
        String::from_utf8(wgmesh(&["secret"]).stdout).unwrap(),
    )
    .unwrap();
    let [a, b, c, d] = dirs(root.path());
    let out = wgmesh(&[
        "up",
        "--secret-file",
        &secret.display().to_string(),
        "--interface",
        "wgcorrupt",
        &a,
        &b,
        &c,
        &d,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&identity.display().to_string()) && err.contains("not a valid identity file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&identity).unwrap(), garbage);
}

#[test]
fn bad_flags_exit_2() {
    for args in [
        vec!["up", "--interface", "this-name-is-far-too-long"],
        vec!["up", "--mtu", "100"],
        vec!["up", "--backend", "magic"],
        vec!["status", "--interface", "a/b"],
    ] {
        let out = wgmesh(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("secret");
    std::fs::write(
        &secret,
        String::from_utf8(wgmesh(&["secret"]).stdout).unwrap(),
    )
    .unwrap();
    let [a, b, c, d] = dirs(root.path());
    let out = wgmesh(&[
        "up",
        "--secret-file",
        &secret.display().to_string(),
        "--advertise-routes",
        "10.0.0.0/8,bogus",
        &a,
        &b,
        &c,
        &d,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--advertise-routes: advertise-routes: \"bogus\" is not a CIDR"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("secret");
    std::fs::write(
        &secret,
        String::from_utf8(wgmesh(&["secret"]).stdout).unwrap(),
    )
    .unwrap();
    let units = root.path().join("units");
    let config = root.path().join("etc");
    let out = wgmesh(&[
        "install-service",
        "--secret-file",
        &secret.display().to_string(),
        "--interface",
        "wg7",
        "--unit-dir",
        &units.display().to_string(),
        "--config-dir",
        &config.display().to_string(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unit = units.join("wgmesh@.service");
    assert_eq!(report["unit"], unit.display().to_string());
    let text = std::fs::read_to_string(&unit).unwrap();
    let secret_text = std::fs::read_to_string(&secret).unwrap();
    assert!(
        !text.contains(secret_text.trim()),
        "the secret must not be in the unit"
    );
    assert!(text.contains(&format!(
        "ExecStart={} up --interface %i",
        env!("CARGO_BIN_EXE_wgmesh")
    )));
    assert!(text.contains(&format!(
        "LoadCredential=wgmesh-secret:{}/%i.secret",
        config.display()
    )));
    let credential = config.join("wg7.secret");
    assert_eq!(
        std::fs::read_to_string(&credential).unwrap().trim(),
        secret_text.trim()
    );
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&credential), 0o600);
    assert_eq!(mode(&config), 0o700);

    // systemd-analyze verify checks an instance of the template.
    let instance = units.join("wgmesh@wg7.service");
    std::fs::copy(&unit, &instance).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
        .output()
        .unwrap();
    let noise = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify failed:\n{noise}"
    );
    assert!(
        !noise.contains("wgmesh@"),
        "systemd-analyze verify complained about the unit:\n{noise}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&instance)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&security.stdout);
    eprintln!("{}", summary.lines().last().unwrap_or_default());

    // The service's own view: the credential is found through $CREDENTIALS_DIRECTORY.
    let out = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(["derive", "--json"])
        .env_remove("WGMESH_SECRET")
        .env("CREDENTIALS_DIRECTORY", root.path().join("creds"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no credential file yet");
    std::fs::create_dir_all(root.path().join("creds")).unwrap();
    std::fs::copy(&credential, root.path().join("creds/wgmesh-secret")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(["derive", "--json"])
        .env_remove("WGMESH_SECRET")
        .env("CREDENTIALS_DIRECTORY", root.path().join("creds"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let out = wgmesh(&[
        "uninstall-service",
        "--interface",
        "wg7",
        "--unit-dir",
        &units.display().to_string(),
        "--config-dir",
        &config.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!unit.exists() && !credential.exists());
}
