//! One module per subcommand.

mod derive;
mod query;
pub mod service;

use crate::cli::{Cli, Command};
use crate::{CliError, daemon, output};
use wgmesh_derive::Secret;

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Secret => {
            let secret = Secret::generate()?;
            output::line(secret.expose_uri());
            Ok(())
        }
        Command::Derive(args) => derive::run(&args),
        Command::Up(args) => daemon::run(*args),
        Command::Status(args) => query::status(&args),
        Command::Peers(args) => query::peers(&args),
        Command::Reload(args) => query::reload(&args),
        Command::Down(args) => query::down(&args),
        Command::Hosts(args) => query::hosts(&args),
        Command::InstallService(args) => service::install(&args),
        Command::UninstallService(args) => service::uninstall(&args),
    }
}
