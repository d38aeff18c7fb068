//! Kernel WireGuard, which the build machine lacks: boot Debian's cloud kernel under qemu
//! (`tests/vm/run-in-vm.sh`, see `tests/vm/README.md`) and run a script inside it.
//!
//! Root-only (namespaces inside the VM are fine, but the kernel cache defaults to
//! `/var/cache/wgmesh-vm`) and slow-ish, so gated by the `root-tests` feature:
//! `cargo test --test kernel_vm -- --include-ignored --nocapture` runs it by hand.

use std::path::Path;
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

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore)]
fn kernel_wireguard_smoke_in_vm() {
    let out = run_in_vm("smoke.sh", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "VM run failed: {}", out.status);
    for marker in [
        "VM-PASS: kernel-wireguard-ping",
        "VM-PASS: kernel-wireguard-handshake",
    ] {
        assert!(
            stdout.contains(marker),
            "missing {marker:?} in the VM console"
        );
    }
}
