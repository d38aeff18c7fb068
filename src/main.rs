//! `wgmesh`: the command-line entry point. Parses flags and hands off to the command modules;
//! the logic lives in the crates under `pkg/` and `platform/`.

mod cli;
mod commands;
mod control;
mod daemon;
mod logging;
mod output;
mod platform;
mod secret_source;

use clap::{CommandFactory as _, FromArgMatches as _};
use std::process::ExitCode;

/// This build's version, as `--version`, `status` and the exchange protocol show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit codes (DESIGN.md §5).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_RUNNING: u8 = 3;
}

/// An error that carries the exit code the CLI contract assigns to it.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::USAGE,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> Self {
        Self {
            code: exit::FAILURE,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    // The matches are kept beside the typed flags: they say where each value came from (command
    // line, environment or default), which `up` logs and `install-service` writes out.
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    match commands::run(cli, &matches) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            output::error(&err.error);
            ExitCode::from(err.code)
        }
    }
}
