//! Dependency policy (in place of cargo-deny, which is not packaged for this build machine):
//! every crate in the build graph carries a permissive licence, and the workspace does not pull
//! in two versions of a crate unless it is listed here with the reason.

use std::collections::BTreeMap;
use std::process::Command;

/// Licences any dependency may use (SPDX ids). Copyleft licences are not on the list: wgmesh is
/// MIT OR Apache-2.0 and must stay redistributable under those terms.
const ALLOWED: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "0BSD",
    "CC0-1.0",
    "Unlicense",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "BSL-1.0",
    "MPL-2.0",
];

/// Crates allowed to appear in more than one version, each because an upstream has not moved yet.
const DUPLICATES_ALLOWED: &[&str] = &[
    // rand/getrandom 0.2 (proptest, x25519-dalek via rand_core 0.6) alongside 0.3 (our own).
    "getrandom",
    "rand",
    "rand_core",
    "rand_chacha",
    "r-efi",
    "wasi",
    "windows-sys",
    "windows-targets",
    "windows_x86_64_gnu",
    "windows_x86_64_msvc",
    "windows_aarch64_gnullvm",
    "windows_aarch64_msvc",
    "windows_i686_gnu",
    "windows_i686_gnullvm",
    "windows_i686_msvc",
    "windows_x86_64_gnullvm",
    "thiserror",
    "thiserror-impl",
    "bitflags",
    "nix",
    "syn",
    "zerocopy",
    "zerocopy-derive",
    "hashbrown",
    "linux-raw-sys",
    "rustix",
    // RustCrypto crates mid-migration: chacha20poly1305 0.10 uses 0.2, newer blake3/argon2 use 0.3.
    "cpufeatures",
    // mainline 8 (the DHT) signs with ed25519-dalek 3 on the RustCrypto 0.11 generation, while
    // x25519-dalek 2 and argon2 0.5 are still on the previous one.
    "curve25519-dalek",
    "digest",
    "block-buffer",
    "crypto-common",
];

fn satisfies(expression: &str) -> bool {
    // SPDX expressions here are flat: `A OR B`, `A AND B`, `A/B` (old style), with parentheses.
    let cleaned = expression.replace(['(', ')'], "");
    cleaned
        .split(" OR ")
        .flat_map(|alt| alt.split('/'))
        .any(|alternative| {
            alternative
                .split(" AND ")
                .all(|part| ALLOWED.contains(&part.trim()))
        })
}

#[test]
fn licences_and_duplicates() {
    let out = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        "x86_64-unknown-linux-gnu",
    ]);
    let metadata: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut bad = Vec::new();
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let version = package["version"].as_str().unwrap().to_owned();
        match package["license"].as_str() {
            Some(licence) if satisfies(licence) => {}
            other => bad.push(format!("{name} {version}: {other:?}")),
        }
        versions.entry(name).or_default().push(version);
    }
    assert!(
        bad.is_empty(),
        "dependencies with licences outside the allow-list:\n{}",
        bad.join("\n")
    );
    let duplicated: Vec<String> = versions
        .iter()
        .filter(|(name, v)| v.len() > 1 && !DUPLICATES_ALLOWED.contains(&name.as_str()))
        .map(|(name, v)| format!("{name}: {}", v.join(", ")))
        .collect();
    assert!(
        duplicated.is_empty(),
        "crates in several versions:\n{}",
        duplicated.join("\n")
    );
}

#[test]
fn licence_expressions() {
    assert!(satisfies("MIT OR Apache-2.0"));
    assert!(satisfies("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(satisfies("MIT/Apache-2.0"));
    assert!(!satisfies("LGPL-2.1-or-later"));
    assert!(!satisfies("GPL-3.0 AND MIT"));
}

/// Every `.rs` file under `dir`, recursively.
#[expect(
    clippy::unwrap_used,
    reason = "a test helper: an unreadable tree is a test failure"
)]
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// The crates under `pkg/` are pure logic (DESIGN.md §2): no async runtime, no socket. Lab
/// servers that need sockets live in `tests/support`.
#[test]
fn library_crates_under_pkg_do_no_io() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let forbidden = [
        "tokio",
        "socket2",
        "UdpSocket",
        "TcpStream",
        "TcpListener",
        "UnixStream",
        "UnixDatagram",
        "UnixListener",
    ];
    let mut offences = Vec::new();
    for entry in std::fs::read_dir(root.join("pkg")).unwrap().flatten() {
        let manifest = std::fs::read_to_string(entry.path().join("Cargo.toml")).unwrap();
        if manifest
            .lines()
            .any(|l| l.trim_start().starts_with("tokio"))
        {
            offences.push(format!("{}: depends on tokio", entry.path().display()));
        }
        for file in rust_files(&entry.path().join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for word in forbidden.iter().filter(|w| text.contains(*w)) {
                offences.push(format!("{}: uses {word}", file.display()));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// Every dependency of every workspace crate is declared once, in the root manifest's
/// `[workspace.dependencies]`, and inherited (`name.workspace = true`, or `{ workspace = true,
/// features = [...] }`): one place decides each crate's version and default features.
#[test]
fn dependencies_are_declared_once_in_the_workspace() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut offences = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let path = package["manifest_path"].as_str().unwrap();
        let manifest = std::fs::read_to_string(path).unwrap();
        offences.extend(
            not_inherited(&manifest)
                .into_iter()
                .map(|line| format!("{path}: {line}")),
        );
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// The dependency lines of `manifest` that do not inherit from the workspace.
fn not_inherited(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            let section = line.trim_matches(['[', ']']);
            in_dependencies = section != "workspace.dependencies"
                && ["dependencies", "dev-dependencies", "build-dependencies"]
                    .iter()
                    .any(|name| section == *name || section.ends_with(&format!(".{name}")));
            continue;
        }
        if !in_dependencies || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let inherited = line.contains(".workspace = true") || line.contains("{ workspace = true");
        if !inherited {
            found.push(line.to_owned());
        }
    }
    found
}

#[test]
fn the_inheritance_check_sees_a_local_declaration() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nfoo.workspace = true\n\
                    bar = { workspace = true, features = [\"a\"] }\nbaz = \"1\"\n\
                    [target.'cfg(unix)'.dev-dependencies]\nqux = { version = \"2\" }\n\
                    [workspace.dependencies]\nfoo = \"1\"\n";
    assert_eq!(
        not_inherited(manifest),
        vec!["baz = \"1\"", "qux = { version = \"2\" }"]
    );
}

/// Code that cannot fail says so once, with a reason (`#[expect(clippy::expect_used, reason =
/// "...")]`) or through an infallible constructor (`Ipv4Net::new_assert`), not by hiding the
/// panic from the lint behind a closure that calls `unreachable!` (issue 15).
#[test]
fn no_lint_workarounds_hide_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offences = Vec::new();
    for dir in ["src", "pkg", "platform", "tests", "benches", "fuzz"] {
        for file in rust_files(&root.join(dir)) {
            if file.components().any(|c| c.as_os_str() == "target") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let compact: String = text.split_whitespace().collect();
            if compact.contains(&["unwrap_or_else(|_|", "unreachable!"].concat()) {
                offences.push(file.display().to_string());
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// The operating system is chosen in one place, `src/platform` (issue 15): no other file in
/// `src/` names the Linux platform crate or the crates that wrap OS calls.
#[test]
fn only_the_platform_module_names_os_crates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let platform = root.join("src").join("platform");
    let mut offences = Vec::new();
    for file in rust_files(&root.join("src")) {
        if file.starts_with(&platform) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for name in names_os_crates(&text) {
            offences.push(format!("{}: names {name}", file.display()));
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// The OS crates `text` names as paths (`nix::`, `socket2::`, `wgmesh_linux::`, or in `use`).
fn names_os_crates(text: &str) -> Vec<&'static str> {
    ["wgmesh_linux", "wgmesh_macos", "nix", "socket2"]
        .into_iter()
        .filter(|name| {
            text.match_indices(name).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let after = &text[at + name.len()..];
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && (after.starts_with("::")
                        || after.starts_with(';')
                        || after.starts_with(" as"))
            })
        })
        .collect()
}

#[test]
fn the_os_crate_check_tells_a_crate_from_a_word_ending_in_it() {
    assert_eq!(
        names_os_crates("use std::os::unix::fs;"),
        Vec::<&str>::new()
    );
    assert_eq!(
        names_os_crates("let x = nix::unistd::getpid();"),
        vec!["nix"]
    );
    assert_eq!(names_os_crates("use socket2::SockRef;"), vec!["socket2"]);
    assert_eq!(
        names_os_crates("wgmesh_linux::Rtnl::new()"),
        vec!["wgmesh_linux"]
    );
}

/// No darwin toolchain exists here, so nothing checks by compiling that code shared with the
/// macOS build stays off Linux-only APIs: `std::os::linux` would not compile there, and `/proc`
/// does not exist there. This looks for them in every file the macOS binary builds from, outside
/// the Linux-only modules and a short list of Linux-only uses that never run on macOS.
#[test]
fn code_built_for_macos_names_no_linux_only_api() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // (file, why it may): Linux-only uses inside crates that build on both.
    let allowed = [(
        "platform/uapi/src/backend.rs",
        "the Linux UserspaceBackend's namespace check; macOS runs MacosBackend",
    )];
    let mut offences = Vec::new();
    let shared = [
        "src",
        "pkg",
        "platform/macos/src",
        "platform/uapi/src",
        "platform/dht/src",
        "tests/support/src",
    ];
    for dir in shared {
        for file in rust_files(&root.join(dir)) {
            let relative = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if relative == "src/platform/linux.rs"
                || relative.contains("/tests/")
                || allowed.iter().any(|(path, _)| *path == relative)
            {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for api in linux_only_apis(&text) {
                offences.push(format!("{relative}: names {api}"));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

/// The Linux-only APIs `text` names.
fn linux_only_apis(text: &str) -> Vec<&'static str> {
    ["std::os::linux", "\"/proc/", "\"/sys/"]
        .into_iter()
        .filter(|api| text.contains(api))
        .collect()
}

#[test]
fn the_linux_api_check_sees_abstract_sockets_and_proc() {
    assert_eq!(
        linux_only_apis("use std::os::linux::net::SocketAddrExt as _;"),
        vec!["std::os::linux"]
    );
    assert_eq!(
        linux_only_apis(r#"std::fs::read_to_string(format!("/proc/{pid}/stat"))"#),
        vec!["\"/proc/"]
    );
    assert!(linux_only_apis("use std::os::unix::net::UnixDatagram;").is_empty());
}

/// The macOS build (issue 15): `cargo tree` resolves the darwin target's dependencies without a
/// darwin toolchain, so this runs here. The binary must carry the macOS backend and nothing that
/// speaks netlink.
#[test]
fn the_macos_build_has_the_macos_backend_and_no_netlink() {
    let tree = |target: &str| {
        cargo(&[
            "tree",
            "--offline",
            "--target",
            target,
            "-e",
            "normal",
            "-p",
            "wgmesh",
        ])
    };
    let darwin = tree("aarch64-apple-darwin");
    assert!(darwin.contains("wgmesh-macos v"), "{darwin}");
    for linux_only in ["netlink", "wgmesh-linux"] {
        assert!(
            !darwin.contains(linux_only),
            "{linux_only} in the macOS tree:\n{darwin}"
        );
    }
    // The check can fail: the Linux tree has both.
    let linux = tree("x86_64-unknown-linux-gnu");
    assert!(
        linux.contains("netlink-sys v") && linux.contains("wgmesh-linux v"),
        "{linux}"
    );
}

/// Runs cargo on this workspace; its stdout, or a failure with its stderr.
fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|err| panic!("cannot run cargo: {err}"));
    assert!(
        out.status.success(),
        "cargo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
