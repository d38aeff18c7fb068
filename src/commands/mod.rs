//! One module per subcommand.

mod derive;

use crate::cli::{Cli, Command};
use crate::{CliError, output};
use wgmesh_derive::Secret;

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Secret => {
            let secret = Secret::generate()?;
            output::line(secret.expose_uri());
            Ok(())
        }
        Command::Derive(args) => derive::run(&args),
    }
}
