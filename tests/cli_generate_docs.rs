//! The hidden `generate-docs` command that scripts/package.sh runs: man pages and completions
//! generated from the real CLI, with the hidden command itself left out of everything a user sees.

use std::process::Command;

fn wgmesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wgmesh"))
}

#[test]
fn generate_docs_writes_man_pages_and_completions_without_itself() {
    let out = tempfile::tempdir().unwrap();
    let status = wgmesh()
        .args(["generate-docs", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");

    let man = out.path().join("man");
    for page in ["wgmesh.1", "wgmesh-up.1", "wgmesh-install-service.1"] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is no man page: {text}");
    }
    let up = std::fs::read_to_string(man.join("wgmesh-up.1")).unwrap();
    assert!(up.contains("keep\\-interface"), "wgmesh-up.1 lacks a flag");
    assert!(
        up.contains("WGMESH_KEEP_INTERFACE"),
        "wgmesh-up.1 lacks the env variables"
    );
    assert!(!man.join("wgmesh-generate-docs.1").exists());
    let main = std::fs::read_to_string(man.join("wgmesh.1")).unwrap();
    for section in ["EXIT STATUS", "FILES", "SEE ALSO", "SUBCOMMANDS"] {
        assert!(main.contains(section), "wgmesh.1 lacks {section}");
    }
    assert_eq!(main.matches(".ds Aq").count(), 2, "one roff preamble");

    let completions = out.path().join("completions");
    for file in ["wgmesh", "_wgmesh", "wgmesh.fish"] {
        let text = std::fs::read_to_string(completions.join(file)).unwrap();
        assert!(
            text.contains("install-service"),
            "{file} misses a subcommand"
        );
        assert!(
            !text.contains("generate-docs"),
            "{file} offers the hidden command"
        );
    }
    let names: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
    assert!(!man.join("wgmesh-help.1").exists());
}

#[test]
fn generate_docs_is_not_in_help() {
    let help = wgmesh().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("install-service"));
    assert!(!text.contains("generate-docs"), "{text}");
}
