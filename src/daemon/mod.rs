//! `wgmesh up`: the daemon (DESIGN.md §6). [`run`] resolves the configuration (flags, the
//! reload file, the secret, the identity) into a [`config::DaemonConfig`]; [`running::Daemon`]
//! starts the parts in the order the design fixes, runs until a signal and shuts down. Each part
//! lives in its own module.

pub(crate) mod config;
mod control_server;
mod discovery;
mod exchange_io;
mod lifecycle;
mod metrics;
mod nat;
mod reconcile;
mod reconcile_loop;
mod relay_io;
mod reload;
mod running;
mod state;
mod status;

pub use crate::platform::remove_kept_interface;
pub use lifecycle::{mark_kept_interface, process_alive, read_pid};

use crate::cli::{UpArgs, overridden_variables, value_origin};
use crate::control::ReloadReport;
use crate::{CliError, logging, secret_source};
use anyhow::Context as _;
use config::DaemonConfig;
use lifecycle::PidFile;
use running::Daemon;
use wgmesh_derive::MeshKeys;
use wgmesh_state::{NodeIdentity, ensure_private_dir, identity_path};

pub fn run(args: UpArgs, matches: &clap::ArgMatches) -> Result<(), CliError> {
    let options = &args.options;
    let log = logging::init(&options.log_level, options.log_format).map_err(CliError::usage)?;
    config::dht_method(options).map_err(|err| CliError::usage(anyhow::anyhow!("{err}")))?;
    for overridden in overridden_variables(matches) {
        tracing::warn!("{overridden}");
    }
    let loaded = secret_source::load(&args.secret, &secret_source::SecretEnv::from_process())
        .map_err(CliError::usage)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    tracing::debug!(origin = %loaded.origin, "secret loaded");
    let flag_routes =
        wgmesh_reload::parse_route_list(&options.advertise_routes).map_err(|err| {
            CliError::usage(anyhow::anyhow!(
                "{}: {}",
                value_origin(matches, "advertise_routes"),
                err.to_string()
                    .trim_start_matches("line 0: ")
                    .trim_start_matches("advertise-routes: ")
            ))
        })?;
    config::dht_method(options).map_err(|err| CliError::usage(anyhow::anyhow!("{err}")))?;
    let location = &args.location;
    ensure_private_dir(&location.state_dir)?;
    // Reloadable settings: the reload file wins over flags, so what ops scripts last wrote
    // survives a restart (DESIGN.md §6).
    let reload_path = location.reload_path();
    let (reload_file, startup_report) = reload::at_startup(&reload_path);
    let from_file = format!("reload file {}", reload_path.display());
    let log_level = reload_file.as_ref().and_then(|file| file.log_level.clone());
    let level_source = match &log_level {
        Some(level) => {
            log.set_level(level)?;
            from_file.clone()
        }
        None => value_origin(matches, "log_level"),
    };
    let level = log_level.as_deref().unwrap_or(&options.log_level);
    tracing::info!(key = "log-level", value = %level, source = %level_source, "configuration");
    // `name=` with no value in the file means the system host name, like no --name.
    let file_name = reload_file.as_ref().and_then(|file| file.name.clone());
    let name_source = if file_name.is_some() {
        from_file.clone()
    } else {
        value_origin(matches, "name")
    };
    let name = file_name
        .unwrap_or_else(|| options.name.clone())
        .or_else(exchange_io::default_name);
    let shown = name.as_ref().map(ToString::to_string).unwrap_or_default();
    tracing::info!(key = "name", value = %shown, source = %name_source, "configuration");
    let route_policy = startup_route_policy(reload_file.as_ref(), options, matches, &from_file);
    let file_relays = reload_file.as_ref().and_then(|file| file.relays.clone());
    let relays_source = if file_relays.is_some() {
        from_file.clone()
    } else {
        value_origin(matches, "relays")
    };
    let relays = file_relays.unwrap_or_else(|| options.relays.clone());
    tracing::info!(key = "relays", value = %relays, source = %relays_source, "configuration");
    let file_routes = reload_file.and_then(|file| file.advertise_routes);
    let routes_source = if file_routes.is_some() {
        from_file
    } else {
        value_origin(matches, "advertise_routes")
    };
    let advertised = file_routes.unwrap_or(flag_routes);
    tracing::info!(key = "advertise-routes", value = ?advertised, source = %routes_source, "configuration");
    let keys = MeshKeys::derive(&loaded.secret);
    drop(loaded);
    let mut config = DaemonConfig::from_up_args(&args, advertised, route_policy, name);
    config.wireguard_go_verbose = matches!(level, "debug" | "trace");
    config.relays = relays;
    drop(args);
    let (identity, created) = NodeIdentity::load_or_create(
        &identity_path(&config.paths.state_dir, &config.interface),
        &keys,
    )?;
    tracing::info!(path = %identity.path().display(), public_key = %identity.public_key, created, "node identity");
    let pid_file = PidFile::claim(&config.paths.pid, &config.paths.socket, &config.interface)?;
    // From here this daemon owns the interface, kept or not.
    mark_kept_interface(&config.paths.kept, false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(daemon(config, keys, identity, startup_report, log));
    drop(pid_file);
    result.map_err(CliError::from)
}

/// Start, run until a signal or `wgmesh down`, shut down (DESIGN.md §6).
async fn daemon(
    config: DaemonConfig,
    keys: MeshKeys,
    identity: NodeIdentity,
    reload_report: ReloadReport,
    log: logging::LogHandle,
) -> anyhow::Result<()> {
    let daemon = Daemon::start(config, keys, identity, reload_report, log).await?;
    let stop = daemon.run_until_signal().await;
    daemon.shutdown(stop).await;
    Ok(())
}

/// The route policy at start: each of its reload-file keys over the matching flag (DESIGN.md
/// §6), every part logged with where it came from.
fn startup_route_policy(
    file: Option<&wgmesh_reload::ReloadFile>,
    options: &crate::cli::UpOptions,
    matches: &clap::ArgMatches,
    from_file: &str,
) -> wgmesh_mesh::RoutePolicy {
    let source = |in_file: bool, id: &str| {
        if in_file {
            from_file.to_owned()
        } else {
            value_origin(matches, id)
        }
    };
    let accept = file.and_then(|f| f.accept_routes.clone());
    let min_v4 = file.and_then(|f| f.accept_routes_min_v4);
    let min_v6 = file.and_then(|f| f.accept_routes_min_v6);
    let policy = wgmesh_mesh::RoutePolicy {
        accept: accept
            .clone()
            .unwrap_or_else(|| options.accept_routes.clone()),
        min_prefix_v4: min_v4.unwrap_or(options.accept_routes_min_v4),
        min_prefix_v6: min_v6.unwrap_or(options.accept_routes_min_v6),
    };
    tracing::info!(key = "accept-routes", value = %policy.accept, source = %source(accept.is_some(), "accept_routes"), "configuration");
    tracing::info!(key = "accept-routes-min-v4", value = policy.min_prefix_v4, source = %source(min_v4.is_some(), "accept_routes_min_v4"), "configuration");
    tracing::info!(key = "accept-routes-min-v6", value = policy.min_prefix_v6, source = %source(min_v6.is_some(), "accept_routes_min_v6"), "configuration");
    policy
}
