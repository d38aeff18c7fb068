//! Command-line flags (DESIGN.md §5).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "wgmesh",
    version,
    about = "Share a secret, get a WireGuard mesh."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new secret URI (wgmesh://v1/...).
    Secret,
    /// Print the network parameters a secret derives to (offline).
    Derive(DeriveArgs),
}

/// Where the shared secret comes from. First found wins: --secret-file, the systemd credential,
/// WGMESH_SECRET, --secret.
#[derive(Debug, Args, Clone, Default)]
pub struct SecretArgs {
    /// File holding the secret URI or token.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// The secret itself. Visible to every user in `ps`; prefer --secret-file.
    #[arg(long, value_name = "URI")]
    pub secret: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeriveArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Also derive a node's key and mesh addresses from this 32-byte seed (64 hex characters).
    #[arg(long, value_name = "HEX")]
    pub node_seed: Option<String>,
    /// Collision counter for the node's IPv4 address (0-15).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=15))]
    pub collision_counter: u8,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
