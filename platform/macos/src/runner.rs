//! [`Runner`]: spawns the tools for real. Not `cfg(target_os = "macos")`: on Linux the tests run
//! it against recording fake `ifconfig`, `route`, `netstat` and `wireguard-go` scripts.
//!
//! Programs are looked up in the runner's own search path, not the child's: every child starts
//! with an empty environment (the daemon's may hold the mesh secret, since clap reads flags from
//! it), and an `execvp` without `PATH` would only search `/bin:/usr/bin`.

use crate::{CommandLine, MacosError};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where macOS keeps the tools: wg-quick puts `/usr/bin:/bin:/usr/sbin:/sbin` first for the same
/// reason (`ifconfig` and `route` are in /sbin, `netstat` in /usr/sbin, and launchd's default PATH
/// may lack them). Homebrew's wireguard-go lives in the last two.
const SYSTEM_DIRS: [&str; 4] = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];
const PACKAGE_DIRS: [&str; 2] = ["/usr/local/bin", "/opt/homebrew/bin"];

/// Runs [`CommandLine`]s: stdin null, environment cleared except `LC_ALL=C` (stable tool output,
/// as wg-quick exports) and the command's own variables.
#[derive(Debug, Clone)]
pub struct Runner {
    search_path: Vec<PathBuf>,
}

impl Runner {
    /// The system directories, then `$PATH`, then Homebrew's.
    pub fn system() -> Self {
        let from_env = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let all = SYSTEM_DIRS
            .iter()
            .map(PathBuf::from)
            .chain(from_env)
            .chain(PACKAGE_DIRS.iter().map(PathBuf::from));
        for dir in all {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        Self { search_path: dirs }
    }

    /// Looks programs up in exactly these directories, in order (tests put their fakes first).
    pub fn with_search_path(dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            search_path: dirs.into_iter().collect(),
        }
    }

    pub fn search_path(&self) -> &[PathBuf] {
        &self.search_path
    }

    /// The executable `program` names: itself if it contains a `/`, else the first executable
    /// file of that name in the search path.
    pub fn resolve(&self, program: &OsStr) -> Result<PathBuf, MacosError> {
        let as_path = Path::new(program);
        if as_path.components().count() > 1 {
            return Ok(as_path.to_owned());
        }
        self.search_path
            .iter()
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| MacosError::ProgramNotFound {
                program: program.to_string_lossy().into_owned(),
                search_path: std::env::join_paths(&self.search_path)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            })
    }

    fn command(&self, line: &CommandLine) -> Result<Command, MacosError> {
        let mut command = Command::new(self.resolve(&line.program)?);
        command
            .args(&line.args)
            .env_clear()
            .env("LC_ALL", "C")
            .envs(line.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        Ok(command)
    }

    /// Runs `line` to completion and returns its stdout; a non-zero exit is
    /// [`MacosError::Command`] with the command line and stderr.
    pub fn run(&self, line: &CommandLine) -> Result<String, MacosError> {
        self.run_checked(line, false)
    }

    /// Like [`Self::run`], for tools that report failure only on stderr: macOS `route` warns
    /// "writing to routing socket: …" and still exits 0. Anything on stderr is
    /// [`MacosError::Command`] too.
    pub fn run_quiet_on_success(&self, line: &CommandLine) -> Result<String, MacosError> {
        self.run_checked(line, true)
    }

    fn run_checked(
        &self,
        line: &CommandLine,
        stderr_is_failure: bool,
    ) -> Result<String, MacosError> {
        let spawn_error = |source| MacosError::Spawn {
            command: line.display(),
            source,
        };
        let output = self.command(line)?.output().map_err(spawn_error)?;
        let said_something = !output.stderr.trim_ascii().is_empty();
        if !output.status.success() || (stderr_is_failure && said_something) {
            return Err(MacosError::Command {
                command: line.display(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts `line` without waiting, in its own process group (Ctrl-C on the daemon's terminal
    /// does not reach it, and it can outlive the daemon), with the given output handles.
    pub fn spawn(
        &self,
        line: &CommandLine,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Child, MacosError> {
        use std::os::unix::process::CommandExt as _;
        self.command(line)?
            .process_group(0)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| MacosError::Spawn {
                command: line.display(),
                source,
            })
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn runs_a_program_found_in_the_search_path_with_a_clean_environment() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "tool",
            "echo \"$1 $LC_ALL ${HOME:-nohome} $EXTRA\"",
        );
        let runner = Runner::with_search_path([dir.path().to_owned()]);
        let mut line = CommandLine::new("tool", &["arg"]);
        line.env.push(("EXTRA".into(), "x".into()));
        assert_eq!(runner.run(&line).unwrap(), "arg C nohome x\n");
    }

    #[test]
    fn a_failing_program_reports_its_command_line_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "tool", "echo 'no such thing' >&2; exit 3");
        let runner = Runner::with_search_path([dir.path().to_owned()]);
        let err = runner
            .run(&CommandLine::new("tool", &["a", "b"]))
            .unwrap_err();
        match err {
            MacosError::Command {
                command,
                status,
                stderr,
            } => {
                assert_eq!(command, "tool a b");
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "no such thing");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_missing_or_non_executable_program_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), "").unwrap();
        let runner = Runner::with_search_path([dir.path().to_owned()]);
        for name in ["absent", "plain"] {
            let err = runner.run(&CommandLine::new(name, &[])).unwrap_err();
            assert!(
                matches!(err, MacosError::ProgramNotFound { ref program, .. } if program == name),
                "{err}"
            );
        }
    }

    #[test]
    fn the_system_search_path_starts_with_the_system_directories() {
        let runner = Runner::system();
        assert_eq!(runner.search_path()[..4], SYSTEM_DIRS.map(PathBuf::from));
    }
}
