//! One module per subcommand.

mod derive;
pub mod generate;
mod query;
pub mod service;

use crate::cli::{Cli, Command};
use crate::{CliError, daemon, output};
use wgmesh_derive::Secret;

pub fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<(), CliError> {
    // The subcommand's own matches (clap always has them for the parsed subcommand).
    let sub = matches
        .subcommand()
        .map_or(matches, |(_, sub_matches)| sub_matches);
    match cli.command {
        Command::Secret => {
            let secret = Secret::generate()?;
            output::line(secret.expose_uri());
            Ok(())
        }
        Command::Derive(args) => derive::run(&args),
        Command::Up(args) => daemon::run(*args, sub),
        Command::Status(args) => query::status(&args),
        Command::Peers(args) => query::peers(&args),
        Command::Reload(args) => query::reload(&args),
        Command::Down(args) => query::down(&args),
        Command::Hosts(args) => query::hosts(&args),
        Command::InstallService(args) => service::install(&args, sub),
        Command::UninstallService(args) => service::uninstall(&args),
        Command::GenerateDocs(args) => generate::run(&args),
    }
}
