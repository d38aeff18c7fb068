//! `generate-docs` (hidden): writes the man pages and shell completions that the Debian package
//! ships, generated from the same clap definition the binary parses, so they cannot drift from
//! the real flags. `scripts/package.sh` runs it; users never need it.

use crate::CliError;
use crate::cli::Cli;
use crate::output;
use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct GenerateDocsArgs {
    /// Output directory: man pages go to DIR/man, completions to DIR/completions.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The shells whose completions the package installs, with the file name each shell's
/// completion loader expects (bash-completion and fish look the command name up; zsh wants `_name`).
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "wgmesh"),
    (Shell::Zsh, "_wgmesh"),
    (Shell::Fish, "wgmesh.fish"),
];

pub fn run(args: &GenerateDocsArgs) -> Result<(), CliError> {
    let man_dir = args.out.join("man");
    let completion_dir = args.out.join("completions");
    for dir in [&man_dir, &completion_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // wgmesh.1 plus one page per visible subcommand (wgmesh-up.1, ...); hidden ones are skipped.
    clap_mangen::generate_to(documented_command(), &man_dir)
        .with_context(|| format!("cannot write man pages to {}", man_dir.display()))?;
    for (shell, file_name) in SHELLS {
        let path = completion_dir.join(file_name);
        write_completion(shell, &path)?;
    }
    output::line(format!(
        "wrote man pages to {} and completions to {}",
        man_dir.display(),
        completion_dir.display()
    ));
    Ok(())
}

/// The CLI as users see it: clap_complete (unlike clap_mangen) offers hidden subcommands, so
/// the root is rebuilt from the visible ones (clap has no way to remove a subcommand). The root
/// has no flags of its own beyond --help and --version, which clap adds again.
fn documented_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    let mut root = clap::Command::new("wgmesh")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(full.is_subcommand_required_set())
        .args(full.get_arguments().cloned())
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        root = root.about(about.clone());
    }
    root
}

fn write_completion(shell: Shell, path: &Path) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut documented_command(), "wgmesh", &mut script);
    std::fs::write(path, script).with_context(|| format!("cannot write {}", path.display()))
}
