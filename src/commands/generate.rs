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
    // wgmesh.1 again, with the sections clap knows nothing about.
    let main_page = man_dir.join("wgmesh.1");
    std::fs::write(&main_page, main_man_page()?)
        .with_context(|| format!("cannot write {}", main_page.display()))?;
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

/// Exit codes, environment, files and related pages (DESIGN.md §3-5), in roff.
const MAIN_PAGE_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
0
Success.
.TP
1
Runtime failure (the message says what failed).
.TP
2
Invalid usage or input: flags, secret, reload file.
.TP
3
No daemon is running on the interface (status, peers, reload, down).
.SH ENVIRONMENT
.TP
WGMESH_SECRET
The shared secret, used when neither \fB\-\-secret\-file\fR nor a systemd credential is given.
.TP
WGMESH_*
Each flag of \fBwgmesh up\fR but the secret flags, e.g. \fBWGMESH_KEEP_INTERFACE\fR; \fBwgmesh\-up\fR(1) names them.
.TP
CREDENTIALS_DIRECTORY
Set by systemd; its file \fIwgmesh\-secret\fR holds the secret (\fBLoadCredential=\fR).
.SH FILES
.TP
/etc/wgmesh/\fIIFACE\fR.secret
The secret stored by \fBwgmesh install\-service\fR (0600), handed to the unit as a credential.
.TP
/etc/wgmesh/\fIIFACE\fR.env
Flags for \fBwgmesh up\fR as \fBWGMESH_*\fR variables (0600), written by \fBwgmesh install\-service\fR and read by the unit.
.TP
/var/lib/wgmesh/\fIIFACE\fR.json
The node identity (seed and public key). Keep it to keep the node's key and mesh addresses.
.TP
/var/lib/wgmesh/\fIIFACE\fR.reload
The reload file: \fBadvertise\-routes=\fR and \fBlog\-level=\fR, applied at start and by \fBwgmesh reload\fR.
.TP
/var/lib/wgmesh/\fIIFACE\fR.peers.json
The peer cache.
.TP
/run/wgmesh/\fIIFACE\fR.sock, /run/wgmesh/\fIIFACE\fR.pid
The running daemon's control socket and pid file.
.TP
/lib/systemd/system/wgmesh@.service
The unit template: \fBsystemctl enable \-\-now wgmesh@wg0\fR.
.SH "SEE ALSO"
\fBwgmesh\-up\fR(1), \fBwgmesh\-status\fR(1), \fBwgmesh\-install\-service\fR(1),
\fBsystemctl\fR(1), \fBwg\fR(8), /usr/share/doc/wgmesh/README.md
"#;

/// wgmesh.1: clap_mangen's sections, then [`MAIN_PAGE_SECTIONS`] before the version.
fn main_man_page() -> std::io::Result<Vec<u8>> {
    let mut root = documented_command().disable_help_subcommand(true);
    root.build();
    let man = clap_mangen::Man::new(root);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(MAIN_PAGE_SECTIONS.as_bytes());
    man.render_version_section(&mut page)?;
    // Each render_* call starts with roff's two-line quote-string preamble; keep only the first.
    let text = String::from_utf8_lossy(&page);
    let body = text.replace(ROFF_PREAMBLE, "");
    Ok(format!("{ROFF_PREAMBLE}{body}").into_bytes())
}

/// What the roff crate writes at the top of every document it renders.
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

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
