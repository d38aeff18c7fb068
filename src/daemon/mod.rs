//! `wgmesh up`: the daemon (DESIGN.md §6). This module wires the parts together in the startup
//! order the design fixes; each part lives in its own module.

mod control_server;
mod discovery;
mod exchange_io;
mod lifecycle;
mod metrics;
mod nat;
mod platform;
mod reconcile;
mod reload;
mod state;

pub use lifecycle::{mark_kept_interface, process_alive, read_pid};
pub use platform::remove_kept_interface;

use crate::cli::{UpArgs, value_origin};
use crate::control::{ReloadReport, Response};
use crate::{CliError, logging, secret_source};
use anyhow::Context as _;
use discovery::{CacheDiscovery, DhtLink, Discovery, LanDiscovery, StaticDiscovery};
use exchange_io::{Command, ExchangeTask};
use lifecycle::{Notifier, PidFile};
use reconcile::{LinkConfig, Reconciler};
use state::{NodeInfo, OwnAddresses, Shared};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wgmesh_derive::{MeshAddresses, MeshKeys};
use wgmesh_device::{DeviceOrigin, DeviceUpdate};
use wgmesh_exchange::{Exchange, ExchangeConfig};
use wgmesh_mesh::DeviceSettings;
use wgmesh_state::{NodeIdentity, ensure_private_dir, identity_path};

/// Reconcile timer (DESIGN.md §6 default).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

/// After adopting a device, peers and routes we have not yet re-verified are kept this long, so
/// a `--keep-interface` restart does not drop tunnels while discovery catches up.
const ADOPTION_GRACE: Duration = Duration::from_secs(30);

/// STUN servers used when `--stun` is not given (public, well known; `--stun none` disables).
const DEFAULT_STUN_SERVERS: &[&str] = &["stun.l.google.com:19302", "stun.cloudflare.com:3478"];

/// Keepalive for peers behind a router (the interval wg-quick users know from `PersistentKeepalive`).
const NAT_KEEPALIVE_SECS: u16 = 25;

type SharedReconciler = Arc<Mutex<Reconciler>>;

fn lock(reconciler: &SharedReconciler) -> std::sync::MutexGuard<'_, Reconciler> {
    reconciler.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn run(args: UpArgs, matches: &clap::ArgMatches) -> Result<(), CliError> {
    let options = &args.options;
    let log = logging::init(&options.log_level, options.log_format).map_err(CliError::usage)?;
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
    let (identity, created) = NodeIdentity::load_or_create(
        &identity_path(&location.state_dir, &location.interface),
        &keys,
    )?;
    tracing::info!(path = %identity.path().display(), public_key = %identity.public_key, created, "node identity");
    let pid_file = PidFile::claim(
        &location.pid_path(),
        &location.socket_path(),
        &location.interface,
    )?;
    // From here this daemon owns the interface, kept or not.
    mark_kept_interface(&location.kept_path(), false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let startup = Startup {
        advertised,
        name,
        reload: startup_report,
    };
    let result = runtime.block_on(daemon(args, keys, identity, startup, log));
    drop(pid_file);
    result.map_err(CliError::from)
}

/// The reloadable settings as startup resolved them (reload file over flags, DESIGN.md §6),
/// and what reading the reload file reported.
struct Startup {
    advertised: Vec<ipnet::IpNet>,
    name: Option<wgmesh_names::MemberName>,
    reload: ReloadReport,
}

async fn daemon(
    args: UpArgs,
    keys: MeshKeys,
    identity: NodeIdentity,
    startup: Startup,
    log: logging::LogHandle,
) -> anyhow::Result<()> {
    let Startup {
        advertised,
        name,
        reload: startup_report,
    } = startup;
    let UpArgs {
        location, options, ..
    } = args;
    let interface = location.interface.clone();
    // Before anything touches the interface: a taken metrics address changes nothing.
    let metrics_listener = options.metrics_listen.map(metrics::bind).transpose()?;
    let notifier = Notifier::from_env();
    let addresses = MeshAddresses::derive(&keys, &identity.public_key, identity.collision_counter);
    let private_key = keys.node_private_key(&identity.seed);
    let mesh_prefixes = vec![
        ipnet::IpNet::V4(keys.ipv4_subnet()),
        ipnet::IpNet::V6(keys.ipv6_prefix()),
    ];

    // Create or adopt the interface, then key and port.
    let rtnl = Arc::new(wgmesh_linux::Rtnl::new().context("cannot open rtnetlink")?);
    // A wireguard-go that outlives us (--keep-interface) must not write into our closed stderr.
    let child_output = if options.keep_interface {
        let log = location
            .state_dir
            .join(format!("{interface}.wireguard-go.log"));
        wgmesh_uapi::ChildOutput::File(log)
    } else {
        wgmesh_uapi::ChildOutput::Log
    };
    let mut backend = platform::select_backend(
        options.backend,
        &interface,
        &options.wireguard_go,
        child_output,
        &rtnl,
    )?;
    // wireguard-go takes a moment to come up; keep the runtime free meanwhile.
    let (origin, mut backend) = tokio::task::spawn_blocking(move || {
        backend.ensure_device().map(|origin| (origin, backend))
    })
    .await
    .context("interface setup panicked")?
    .context("cannot create the WireGuard interface")?;
    let kind = backend.kind();
    tracing::info!(%interface, backend = %kind, adopted = (origin == DeviceOrigin::Adopted), "WireGuard interface ready");
    let current = backend
        .read()
        .context("cannot read the WireGuard interface")?;
    let listen_port = if origin == DeviceOrigin::Adopted && current.listen_port != 0 {
        current.listen_port
    } else {
        let port = platform::free_udp_port(options.listen_port)?;
        if port != options.listen_port {
            tracing::warn!(
                requested = options.listen_port,
                using = port,
                "listen port busy; using the next free one"
            );
        }
        port
    };
    let mut setup = DeviceUpdate::default();
    if current.private_key.as_ref() != Some(&private_key) {
        setup.private_key = Some(private_key.clone());
    }
    if current.listen_port != listen_port {
        setup.listen_port = Some(listen_port);
    }
    if !setup.is_empty() {
        backend
            .apply(&setup)
            .context("cannot set the interface key and port")?;
    }

    // Addresses, MTU, up.
    let link = LinkConfig {
        interface: interface.clone(),
        addresses: platform::interface_addresses(addresses.ipv4, addresses.ipv6).to_vec(),
        managed: mesh_prefixes.clone(),
        mtu: options.mtu,
    };
    let index =
        platform::configure_link(&rtnl, &interface, &link.addresses, &link.managed, link.mtu)?;
    let routes = wgmesh_linux::InterfaceRoutes::new(rtnl.clone(), &interface, index);
    if options.relay {
        platform::enable_relay_forwarding(&interface)?;
        tracing::info!(%interface, "relaying for members without a direct path (IPv4 forwarding on this interface)");
    }

    let control_port = options.control_port.unwrap_or_else(|| keys.control_port());
    let node = NodeInfo {
        interface: interface.clone(),
        backend: kind,
        public_key: identity.public_key,
        listen_port,
        control_port,
        mesh_prefixes,
        accept_routes: options.accept_routes,
        relay: options.relay,
    };
    let own = OwnAddresses {
        ipv4: addresses.ipv4,
        ipv6: addresses.ipv6,
        collision_counter: identity.collision_counter,
    };
    let shared = Shared::new(own, advertised.clone());
    shared.lock().own_name = name;
    let settings = DeviceSettings {
        private_key: private_key.clone(),
        listen_port,
        preshared_key: keys.preshared_key(),
        persistent_keepalive: NAT_KEEPALIVE_SECS,
    };
    let reconciler: SharedReconciler = Arc::new(Mutex::new(Reconciler::new(
        backend,
        rtnl.clone(),
        routes,
        link,
        settings,
        shared.clone(),
        node.clone(),
    )));
    if origin == DeviceOrigin::Adopted {
        lock(&reconciler).hold_removals(ADOPTION_GRACE);
    }

    // Control socket.
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (reload_tx, reload_rx) = watch::channel(startup_report);
    let listener = control_server::bind(&location.socket_path())?;
    let status = StatusHandle {
        node: node.clone(),
        shared: shared.clone(),
        reconciler: reconciler.clone(),
        reloads: reload_rx.clone(),
    };
    let teardown = Arc::new(tokio::sync::Notify::new());
    tracker.spawn(control_server::serve(
        listener,
        status,
        reload_rx,
        teardown.clone(),
        cancel.clone(),
    ));

    // Discovery and the exchange protocol.
    let group = keys.lan_group();
    let socket =
        exchange_io::bind_control(control_port, (!options.no_lan).then_some(group), &interface)
            .with_context(|| format!("cannot bind control port {control_port}"))?;
    let record = exchange_io::own_record(&node, &shared.lock());
    let mut exchange = Exchange::new(&keys, private_key, record, ExchangeConfig::default())
        .context("cannot build our exchange record")?;
    exchange.set_info(exchange_io::own_info(&shared.lock()));
    let mut discovery: Vec<Box<dyn Discovery>> = Vec::new();
    let cache_path = wgmesh_state::peer_cache_path(&location.state_dir, &interface);
    let cached = match wgmesh_state::load_peer_cache(&cache_path) {
        Ok(wgmesh_state::CacheLoad::Loaded(peers)) => peers,
        Ok(wgmesh_state::CacheLoad::Missing) => Vec::new(),
        Ok(wgmesh_state::CacheLoad::MovedAside { to, reason }) => {
            tracing::warn!(path = %cache_path.display(), moved_to = %to.display(), %reason, "unreadable peer cache moved aside");
            Vec::new()
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the peer cache; starting without it");
            Vec::new()
        }
    };
    let cached_addrs: Vec<SocketAddr> = cached.iter().filter_map(|c| c.control_addr).collect();
    if !cached_addrs.is_empty() {
        tracing::info!(peers = cached_addrs.len(), "probing cached peers first");
        discovery.push(Box::new(CacheDiscovery::new(cached_addrs)));
    }
    lock(&reconciler).set_peer_cache(cache_path, cached);
    if !options.no_lan {
        discovery.push(Box::new(LanDiscovery::new(SocketAddr::from((
            group,
            control_port,
        )))));
    }
    if !options.peer.is_empty() {
        discovery.push(Box::new(StaticDiscovery::new(options.peer.clone())));
    }
    let stun_servers = nat::server_list(options.stun.as_deref(), DEFAULT_STUN_SERVERS);
    let (dht, dht_candidates) = match nat::server_list(options.dht_bootstrap.as_deref(), &[]) {
        None => (None, None),
        Some(bootstrap) => {
            let nodes_file = location
                .state_dir
                .join(format!("{interface}.dht-nodes.json"));
            match DhtLink::start(&keys, control_port, bootstrap, nodes_file) {
                Ok((link, rx)) => (Some(link), Some(rx)),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start the DHT; continuing without it");
                    (None, None)
                }
            }
        }
    };
    let (link_tx, link_events) = mpsc::channel(1);
    if let Err(err) = wgmesh_linux::watch_links_and_addresses(move || {
        // Coalesced: one pending notice is enough, the receiver re-reads everything.
        !matches!(
            link_tx.try_send(()),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }) {
        tracing::warn!(error = %err, "no link/address events; noticing network changes by polling");
    }
    let (command_tx, command_rx) = mpsc::channel(8);
    let (reconcile_tx, reconcile_rx) = mpsc::channel(1);
    let task = ExchangeTask::new(exchange_io::ExchangeParts {
        socket,
        exchange,
        shared: shared.clone(),
        node: node.clone(),
        discovery,
        commands: command_rx,
        reconcile: reconcile_tx.clone(),
        identity,
        keys: keys.clone(),
        nat: nat::NatWatch::new(&interface, control_port, stun_servers.clone()),
        lan_group: (!options.no_lan).then_some(group),
        dht,
        dht_candidates,
        link_events,
    })
    .context("cannot seed the membership core")?;
    if let Some(servers) = stun_servers {
        let commands = command_tx.clone();
        tokio::spawn(async move {
            let resolved = nat::resolve(servers).await;
            let _ = commands.send(Command::StunServers(resolved)).await;
        });
    }
    let dht_status = task.dht_status();
    tracker.spawn(task.run(cancel.clone()));

    // Metrics (off unless --metrics-listen).
    let metrics = metrics_listener.map(|listener| {
        let last_pass = state::LastPassCell::default();
        lock(&reconciler).publish_passes(last_pass.clone());
        let view = metrics::DaemonView {
            node: node.clone(),
            shared: shared.clone(),
            last_pass,
            dht: dht_status,
        };
        let metrics = Arc::new(wgmesh_metrics::MeshMetrics::new(
            env!("CARGO_PKG_VERSION"),
            view,
        ));
        tracker.spawn(metrics::serve(listener, metrics.clone(), cancel.clone()));
        metrics
    });

    // Reconcile loop.
    tracker.spawn(reconcile_loop(
        reconciler.clone(),
        reconcile_rx,
        notifier.clone(),
        metrics,
        cancel.clone(),
    ));
    notifier.notify("READY=1\nSTATUS=mesh running");
    let name = shared.lock().own_name.as_ref().map(ToString::to_string);
    tracing::info!(%interface, mesh_ipv4 = %own.ipv4, mesh_ipv6 = %own.ipv6, listen_port, control_port, name = name.unwrap_or_default(), version = crate::VERSION, "wgmesh up");

    let reload_ctx = reload::ReloadContext {
        path: location.reload_path(),
        shared: shared.clone(),
        node: node.clone(),
        log,
        announce: command_tx.clone(),
        reconcile: reconcile_tx,
        reports: reload_tx,
        notifier: notifier.clone(),
    };
    let stop = wait_for_signals(&reload_ctx, &teardown).await;
    // `wgmesh down` removes everything; a signal (`systemctl stop`, Ctrl-C) keeps the interface
    // if asked to, so that a restart does not drop tunnels.
    let keep = options.keep_interface && stop == Stop::Signal;

    // Shutdown: cancel, drain, goodbye, routes, interface.
    notifier.notify("STOPPING=1");
    tracing::info!("shutting down");
    // With --keep-interface the tunnels stay up for the next run: no goodbye, or peers would
    // drop us.
    if !keep {
        let (done_tx, done_rx) = oneshot::channel();
        if command_tx.send(Command::Goodbye(done_tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), done_rx).await;
        }
    }
    cancel.cancel();
    tracker.close();
    let force = tokio::spawn(async {
        // A second signal forces exit while the drain runs.
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    let reconciler_for_exit = reconciler.clone();
    tokio::task::spawn_blocking(move || lock(&reconciler_for_exit).shutdown(keep))
        .await
        .ok();
    force.abort();
    let _ = std::fs::remove_file(location.socket_path());
    lifecycle::mark_kept_interface(&location.kept_path(), keep);
    tracing::info!("stopped");
    Ok(())
}

/// What ended the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// `wgmesh down` over the control socket.
    Down,
}

/// Waits for SIGINT/SIGTERM or `wgmesh down`, handling SIGHUP reloads meanwhile.
async fn wait_for_signals(reload: &reload::ReloadContext, down: &tokio::sync::Notify) -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return Stop::Signal;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => reload.reload().await,
            _ = term.recv() => return Stop::Signal,
            _ = int.recv() => return Stop::Signal,
            () = down.notified() => return Stop::Down,
        }
    }
}

async fn reconcile_loop(
    reconciler: SharedReconciler,
    mut triggers: mpsc::Receiver<()>,
    notifier: Notifier,
    metrics: Option<Arc<wgmesh_metrics::MeshMetrics>>,
    cancel: CancellationToken,
) {
    let mut timer = tokio::time::interval(RECONCILE_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = logging::RepeatLimiter::new(Duration::from_secs(60));
    loop {
        // A pending handshake nudge (see Reconciler::next_wakeup) wants a pass of its own.
        let wakeup = lock(&reconciler).next_wakeup();
        let nudge = async {
            match wakeup {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = timer.tick() => {}
            Some(()) = triggers.recv() => {}
            () = nudge => {}
        }
        let worker = reconciler.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut reconciler = lock(&worker);
            let start = std::time::Instant::now();
            let outcome = reconciler.run_once();
            (outcome, start.elapsed())
        })
        .await
        .map(|(outcome, took)| {
            if let Some(metrics) = &metrics {
                metrics.observe_reconcile(took);
            }
            outcome
        });
        match result {
            Ok(Ok(_)) => {
                failures.clear("reconcile");
                notifier.notify("WATCHDOG=1");
            }
            // A device that keeps failing (wireguard-go waiting out its restart backoff) fails
            // every pass: the first failure and then one line a minute.
            Ok(Err(err)) => {
                if let Some(suppressed) =
                    failures.should_log("reconcile", std::time::Instant::now())
                {
                    tracing::warn!(error = format!("{err:#}"), suppressed, "reconcile failed");
                }
            }
            Err(err) => tracing::error!(error = %err, "reconcile task panicked"),
        }
    }
}

#[derive(Clone)]
struct StatusHandle {
    node: NodeInfo,
    shared: Shared,
    reconciler: SharedReconciler,
    reloads: watch::Receiver<ReloadReport>,
}

impl control_server::StatusSource for StatusHandle {
    async fn status(&self) -> Response {
        let worker = self.reconciler.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut reconciler = lock(&worker);
            (reconciler.read_device(), reconciler.stats)
        });
        let (device, counters) = read.await.unwrap_or_default();
        let reload = self.reloads.borrow().clone();
        let report = state::status_report(
            &self.node,
            &self.shared.lock(),
            device.as_ref(),
            reload,
            counters,
        );
        Response::Status(Box::new(report))
    }
}
