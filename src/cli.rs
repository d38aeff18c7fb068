//! Command-line flags (DESIGN.md §5).

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
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
    /// Run the daemon in the foreground.
    Up(Box<UpArgs>),
    /// Show the running daemon's identity and peers.
    Status(QueryArgs),
    /// List the running daemon's peers.
    Peers(QueryArgs),
    /// Re-read the reload file (SIGHUP) and report whether it was applied.
    Reload(QueryArgs),
    /// Stop the running daemon and wait until it is gone.
    Down(QueryArgs),
    /// Print /etc/hosts lines for the mesh: each member's mesh IPv4 and IPv6 and its name.
    Hosts(QueryArgs),
    /// Install the systemd unit and store the secret as a credential.
    InstallService(Box<InstallArgs>),
    /// Remove the systemd unit and the stored credential.
    UninstallService(UninstallArgs),
    /// Write man pages and shell completions (used to build the Debian package).
    #[command(hide = true)]
    GenerateDocs(crate::commands::generate::GenerateDocsArgs),
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

/// Which daemon and files a command concerns. The variables let an ops script point every
/// command at one daemon; the systemd unit passes all three on its command line, which wins.
#[derive(Debug, Args, Clone)]
pub struct Location {
    /// WireGuard interface name.
    #[arg(
        long,
        short = 'i',
        env = "WGMESH_INTERFACE",
        default_value = "wg0",
        value_parser = parse_interface
    )]
    pub interface: String,
    /// Where the identity, reload file and peer cache live.
    #[arg(
        long,
        env = "WGMESH_STATE_DIR",
        default_value = crate::platform::DEFAULT_STATE_DIR,
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// Where the control socket and pid file live.
    #[arg(
        long,
        env = "WGMESH_RUNTIME_DIR",
        default_value = crate::platform::DEFAULT_RUNTIME_DIR,
        value_name = "DIR"
    )]
    pub runtime_dir: PathBuf,
}

impl Location {
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join(format!("{}.sock", self.interface))
    }

    pub fn pid_path(&self) -> PathBuf {
        self.runtime_dir.join(format!("{}.pid", self.interface))
    }

    pub fn reload_path(&self) -> PathBuf {
        self.state_dir.join(format!("{}.reload", self.interface))
    }

    /// Present while an interface left up by `--keep-interface` outlives its daemon.
    pub fn kept_path(&self) -> PathBuf {
        self.runtime_dir.join(format!("{}.kept", self.interface))
    }
}

/// Linux interface names: 1-15 bytes, no '/', whitespace or ':' (IFNAMSIZ and dev_valid_name).
fn parse_interface(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "interface name {name:?} must be 1 to 15 characters"
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name {name:?} may not contain '/', ':' or whitespace"
        ));
    }
    Ok(name.to_owned())
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Auto,
    Kernel,
    Userspace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DhtChoice {
    Mainline,
    Bep44,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub options: UpOptions,
}

/// Every `up` flag but the secret and the file locations. Each can also come from a `WGMESH_*`
/// environment variable (the systemd unit reads them from `/etc/wgmesh/<iface>.env`, which
/// `install-service` writes from the same flags); a flag on the command line wins over the
/// variable. The secret never comes from here (DESIGN.md §3 has its sources).
#[derive(Debug, Args, Clone)]
pub struct UpOptions {
    /// WireGuard listen port; if busy, the next free port is taken and logged.
    #[arg(long, env = "WGMESH_LISTEN_PORT", default_value_t = 51820)]
    pub listen_port: u16,
    /// Exchange-protocol port (default: derived from the secret).
    #[arg(long, env = "WGMESH_CONTROL_PORT")]
    pub control_port: Option<u16>,
    /// Subnets this host routes for the mesh, comma-separated CIDRs. The reload file's
    /// `advertise-routes`, when present, wins over this.
    #[arg(
        long,
        env = "WGMESH_ADVERTISE_ROUTES",
        value_name = "CIDR,...",
        default_value = ""
    )]
    pub advertise_routes: String,
    /// Which routes other members advertise are installed: none, all, or a list of prefixes a
    /// route must fall inside (private = RFC 1918, 100.64.0.0/10 and fc00::/7). PREFIX@KEY pins a
    /// prefix to the member whose base64 key starts with KEY (8 characters or more). true and
    /// false mean private and none. The reload file's accept-routes, when present, wins.
    #[arg(
        long,
        env = "WGMESH_ACCEPT_ROUTES",
        default_value = "private",
        value_parser = parse_accept,
        value_name = "POLICY"
    )]
    pub accept_routes: wgmesh_mesh::Accept,
    /// The shortest IPv4 prefix accepted from members (a pinned prefix is exempt).
    #[arg(
        long,
        env = "WGMESH_ACCEPT_ROUTES_MIN_V4",
        default_value_t = wgmesh_mesh::policy::DEFAULT_MIN_PREFIX_V4,
        value_parser = clap::value_parser!(u8).range(0..=32),
        value_name = "BITS"
    )]
    pub accept_routes_min_v4: u8,
    /// The shortest IPv6 prefix accepted from members (a pinned prefix is exempt).
    #[arg(
        long,
        env = "WGMESH_ACCEPT_ROUTES_MIN_V6",
        default_value_t = wgmesh_mesh::policy::DEFAULT_MIN_PREFIX_V6,
        value_parser = clap::value_parser!(u8).range(0..=128),
        value_name = "BITS"
    )]
    pub accept_routes_min_v6: u8,
    /// error, warn, info, debug or trace. The reload file's `log-level`, when present, wins.
    #[arg(long, env = "WGMESH_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, env = "WGMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[arg(long, env = "WGMESH_BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The wireguard-go binary for the userspace backend.
    #[arg(
        long,
        env = "WGMESH_WIREGUARD_GO",
        default_value = "wireguard-go",
        value_name = "PATH"
    )]
    pub wireguard_go: PathBuf,
    #[arg(
        long,
        env = "WGMESH_MTU",
        default_value_t = 1420,
        value_parser = clap::value_parser!(u32).range(1280..=65535)
    )]
    pub mtu: u32,
    /// Static seeds: other members' control addresses, HOST:PORT, comma-separated.
    #[arg(
        long,
        env = "WGMESH_PEER",
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    pub peer: Vec<String>,
    /// Do not discover members by LAN multicast.
    #[arg(long, env = "WGMESH_NO_LAN")]
    pub no_lan: bool,
    /// How members meet on the BitTorrent DHT: `mainline` (BEP 5 announces, the default),
    /// `bep44` (a signed, sealed hourly item) or `none`.
    #[arg(
        long,
        env = "WGMESH_DHT",
        value_enum,
        value_name = "mainline|bep44|none"
    )]
    pub dht: Option<DhtChoice>,
    /// DHT bootstrap nodes, or `none` (the same as `--dht none`).
    #[arg(long, env = "WGMESH_DHT_BOOTSTRAP", value_name = "HOST:PORT,...|none")]
    pub dht_bootstrap: Option<String>,
    /// STUN servers, or `none`.
    #[arg(long, env = "WGMESH_STUN", value_name = "HOST:PORT,...|none")]
    pub stun: Option<String>,
    /// Offer to relay for members that cannot reach each other directly.
    #[arg(long, env = "WGMESH_RELAY")]
    pub relay: bool,
    /// Which members may relay for this host: any (chosen by reachability and a keyed hash,
    /// never by key order), none, or a list of base64 key prefixes (8 characters or more). The
    /// reload file's relays, when present, wins.
    #[arg(
        long,
        env = "WGMESH_RELAYS",
        default_value = "any",
        value_parser = parse_relays,
        value_name = "any|none|KEY,..."
    )]
    pub relays: wgmesh_mesh::RelaySetting,
    /// Leave the interface and peers in place on exit, so a restart does not drop tunnels.
    #[arg(long, env = "WGMESH_KEEP_INTERFACE")]
    pub keep_interface: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9586 (off by default; an
    /// address other than loopback is logged as a warning).
    #[arg(long, env = "WGMESH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The name announced to the mesh (lowercase letters, digits, '-'; at most 63). Default:
    /// the system host name. The reload key `name=` overrides it.
    #[arg(long, env = "WGMESH_NAME", value_name = "NAME")]
    pub name: Option<wgmesh_names::MemberName>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub location: Location,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    #[arg(long, short = 'i', default_value = "wg0", value_parser = parse_interface)]
    pub interface: String,
    /// Where unit files (systemd) or job files (launchd, macOS) go.
    #[arg(long, default_value = crate::platform::DEFAULT_SERVICE_DIR, value_name = "DIR")]
    pub unit_dir: PathBuf,
    /// Where the secret is stored as a credential file (0600).
    #[arg(long, default_value = crate::platform::DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config_dir: PathBuf,
    /// Path of the wgmesh binary the unit runs.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// `up` flags for the service: those given here are written to `<config-dir>/<iface>.env`
    /// (0600), which the unit reads.
    #[command(
        flatten,
        next_help_heading = "Daemon options (written to the env file)"
    )]
    pub up: UpOptions,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[arg(long, short = 'i', default_value = "wg0", value_parser = parse_interface)]
    pub interface: String,
    #[arg(long, default_value = crate::platform::DEFAULT_SERVICE_DIR, value_name = "DIR")]
    pub unit_dir: PathBuf,
    #[arg(long, default_value = crate::platform::DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl UpOptions {
    /// The `up` options as clap defines them: flag names and environment variables, for the
    /// env file `install-service` writes and for logging where a value came from.
    pub fn definitions() -> clap::Command {
        <Self as Args>::augment_args(clap::Command::new("up"))
    }
}

/// Where the value of the `up` option `id` came from, as an operator would look for it:
/// `--flag`, `WGMESH_FLAG` (environment, e.g. the unit's env file) or `default`.
pub fn value_origin(matches: &ArgMatches, id: &str) -> String {
    let definitions = UpOptions::definitions();
    let arg = definitions.get_arguments().find(|arg| arg.get_id() == id);
    match (matches.value_source(id), arg) {
        (Some(ValueSource::CommandLine), Some(arg)) => {
            format!("--{}", arg.get_long().unwrap_or(id))
        }
        (Some(ValueSource::EnvVariable), Some(arg)) => arg
            .get_env()
            .map_or_else(|| id.to_owned(), |env| env.to_string_lossy().into_owned()),
        _ => "default".to_owned(),
    }
}

/// The `WGMESH_*` variables that are set but lose to a flag given on the command line (the
/// systemd unit's `--interface %i`, for one), each as a sentence for the log: a variable that
/// silently changed nothing would be a setting accepted and ignored.
pub fn overridden_variables(matches: &ArgMatches) -> Vec<String> {
    let up = <Cli as clap::CommandFactory>::command();
    let Some(up) = up.find_subcommand("up") else {
        return Vec::new();
    };
    up.get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            std::env::var_os(&env)?;
            let long = arg.get_long().unwrap_or(arg.get_id().as_str());
            Some(format!(
                "{env} is set, but --{long} on the command line wins"
            ))
        })
        .collect()
}

fn parse_accept(text: &str) -> Result<wgmesh_mesh::Accept, String> {
    text.parse()
        .map_err(|err: wgmesh_mesh::policy::PolicyError| err.to_string())
}

fn parse_relays(text: &str) -> Result<wgmesh_mesh::RelaySetting, String> {
    text.parse()
}
