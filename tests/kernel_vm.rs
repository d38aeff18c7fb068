//! Kernel WireGuard, which the build machine lacks: boot Debian's cloud kernel under qemu
//! (`tests/vm/run-in-vm.sh`, see `tests/vm/README.md`) and run a script inside it.
//!
//! Root-only (namespaces inside the VM are fine, but the kernel cache defaults to
//! `/var/cache/wgmesh-vm`) and slow-ish, so gated by the `root-tests` feature:
//! `cargo test --test kernel_vm -- --include-ignored --nocapture` runs it by hand.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `tests/vm/<script>` in a fresh VM; each of `extra` is copied to `/usr/local/bin/`
/// inside it (with its shared libraries). Pass `Path::new(env!("CARGO_BIN_EXE_wgmesh"))`
/// to test the daemon itself.
fn run_in_vm(script: &str, extra: &[&Path]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("bash")
        .arg(root.join("tests/vm/run-in-vm.sh"))
        .arg(root.join("tests/vm").join(script))
        .args(extra)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tests/vm/run-in-vm.sh: {e}"))
}

/// Prints the console (stdout) and the harness's timings (stderr), then asserts that the run
/// passed and printed every one of `markers`.
#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the VM console is the test's log (shown with --nocapture or on failure)"
)]
fn assert_vm_passed(out: &Output, markers: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "VM run failed: {}", out.status);
    for marker in markers {
        assert!(
            stdout.lines().any(|line| line == *marker),
            "missing {marker:?} in the VM console"
        );
    }
}

/// Builds the `wgmesh-linux` root test binary (`platform/linux/tests/root.rs`, with the
/// `root-tests` feature) and returns its path, taken from cargo's JSON messages: the
/// `compiler-artifact` whose target is the `root` test.
fn build_linux_root_tests() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "wgmesh-linux",
            "--features",
            "root-tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    assert!(
        out.status.success(),
        "cargo test -p wgmesh-linux --no-run failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut found = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == "root"
                && msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k == "test"))
        })
        .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from));
    let exe = found
        .next()
        .unwrap_or_else(|| panic!("no executable for the `root` test target in:\n{stdout}"));
    assert!(
        found.next().is_none(),
        "more than one `root` test executable"
    );
    assert!(exe.is_file(), "{} does not exist", exe.display());
    exe
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore)]
fn kernel_wireguard_smoke_in_vm() {
    let out = run_in_vm("smoke.sh", &[]);
    assert_vm_passed(
        &out,
        &[
            "VM-PASS: kernel-wireguard-ping",
            "VM-PASS: kernel-wireguard-handshake",
        ],
    );
}

/// Three `wgmesh up --backend kernel` daemons in namespaces on one bridge: LAN discovery,
/// mesh pings over IPv4 and IPv6, advertised routes via reload, teardown (`tests/vm/daemon.sh`).
#[test]
#[cfg_attr(not(feature = "root-tests"), ignore)]
fn kernel_daemon_mesh_in_vm() {
    let out = run_in_vm("daemon.sh", &[Path::new(env!("CARGO_BIN_EXE_wgmesh"))]);
    assert_vm_passed(
        &out,
        &[
            "VM-PASS: kernel-daemon-mesh-ping",
            "VM-PASS: kernel-daemon-routes",
            "VM-PASS: kernel-daemon-teardown",
        ],
    );
}

/// `wgmesh-linux`'s root tests against a kernel with WireGuard, so that
/// `kernel_backend_roundtrip` runs instead of skipping (`tests/vm/linux-roundtrip.sh`).
#[test]
#[cfg_attr(not(feature = "root-tests"), ignore)]
fn kernel_backend_roundtrip_in_vm() {
    let exe = build_linux_root_tests();
    let out = run_in_vm("linux-roundtrip.sh", &[&exe]);
    assert_vm_passed(&out, &["VM-PASS: kernel-backend-roundtrip"]);
}
