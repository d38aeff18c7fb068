//! A running daemon: start (DESIGN.md §6 order), run until a signal or `wgmesh down`, shut down.

use super::config::DaemonConfig;
use super::discovery::{CacheDiscovery, DhtDiscovery, Discovery, LanDiscovery, StaticDiscovery};
use super::exchange_io::{self, Command, ExchangeTask};
use super::lifecycle::{self, Notifier};
use super::reconcile::Reconciler;
use super::reconcile_loop::{SharedReconciler, lock, reconcile_loop};
use super::relay_io::RelayServer;
use super::state::{NodeInfo, OwnAddresses, Shared};
use super::status::StatusHandle;
use super::{control_server, metrics, nat, reload};
use crate::control::ReloadReport;
use crate::logging;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wgmesh_derive::{MeshAddresses, MeshKeys};
use wgmesh_device::{DeviceOrigin, DeviceUpdate, Host as _, InterfaceConfig};
use wgmesh_exchange::{Exchange, ExchangeConfig};
use wgmesh_mesh::{DeviceSettings, Protected, ProtectedKind};
use wgmesh_state::NodeIdentity;

/// After adopting a device, peers and routes we have not yet re-verified are kept this long, so
/// a `--keep-interface` restart does not drop tunnels while discovery catches up.
const ADOPTION_GRACE: Duration = Duration::from_secs(30);

/// STUN servers used when `--stun` is not given (public, well known; `--stun none` disables).
const DEFAULT_STUN_SERVERS: &[&str] = &["stun.l.google.com:19302", "stun.cloudflare.com:3478"];

/// Keepalive for peers behind a router (the interval wg-quick users know from `PersistentKeepalive`).
const NAT_KEEPALIVE_SECS: u16 = 25;

/// The WireGuard interface as startup left it: created or adopted, keyed, addressed and up.
struct Interface {
    backend: Box<dyn wgmesh_device::WireguardBackend>,
    origin: DeviceOrigin,
    /// The reconciler's: it configures the interface.
    host: crate::platform::OsHost,
    /// The exchange task's: it reads the host's addresses and networks.
    observer: crate::platform::OsHost,
    routes: crate::platform::OsRoutes,
    link: InterfaceConfig,
    listen_port: u16,
}

/// A running daemon: what `run_until_signal` and `shutdown` need.
pub struct Daemon {
    config: DaemonConfig,
    reconciler: SharedReconciler,
    notifier: Notifier,
    cancel: CancellationToken,
    tracker: TaskTracker,
    commands: mpsc::Sender<Command>,
    reload: reload::ReloadContext,
    /// Notified by `wgmesh down`.
    teardown: Arc<tokio::sync::Notify>,
}

impl Daemon {
    /// Brings the node up in the order DESIGN.md §6 fixes: interface, key and port, addresses,
    /// control socket, discovery and the exchange, metrics, the reconcile loop, `READY=1`.
    pub async fn start(
        config: DaemonConfig,
        keys: MeshKeys,
        identity: NodeIdentity,
        reload_report: ReloadReport,
        log: logging::LogHandle,
    ) -> anyhow::Result<Self> {
        let interface = config.interface.clone();
        // Before anything touches the interface: a taken metrics address changes nothing.
        let metrics_listener = config.metrics_listen.map(metrics::bind).transpose()?;
        let notifier = Notifier::from_env();
        let addresses =
            MeshAddresses::derive(&keys, &identity.public_key, identity.collision_counter);
        let private_key = keys.node_private_key(&identity.seed);
        let mesh_prefixes = vec![
            ipnet::IpNet::V4(keys.ipv4_subnet()),
            ipnet::IpNet::V6(keys.ipv6_prefix()),
        ];
        let Interface {
            backend,
            origin,
            host,
            observer,
            routes,
            link,
            listen_port,
        } = setup_interface(&config, &private_key, &addresses, &mesh_prefixes).await?;
        let kind = backend.kind();

        let control_port = config.control_port.unwrap_or_else(|| keys.control_port());
        let node = NodeInfo {
            interface: interface.clone(),
            backend: kind,
            public_key: identity.public_key,
            listen_port,
            control_port,
            mesh_prefixes,
            relay: config.relay,
        };
        let own = OwnAddresses {
            ipv4: addresses.ipv4,
            ipv6: addresses.ipv6,
            collision_counter: identity.collision_counter,
        };
        let shared = Shared::new(own, config.advertised.clone());
        shared.lock().own_name.clone_from(&config.name);
        shared.lock().route_policy.clone_from(&config.route_policy);
        shared.lock().relays.clone_from(&config.relays);
        let settings = DeviceSettings {
            private_key: private_key.clone(),
            listen_port,
            preshared_key: keys.preshared_key(),
            persistent_keepalive: NAT_KEEPALIVE_SECS,
        };
        let mut reconciler = Reconciler::new(
            backend,
            routes,
            host,
            link,
            settings,
            shared.clone(),
            node.clone(),
        );
        if origin == DeviceOrigin::Adopted {
            reconciler.hold_removals(ADOPTION_GRACE);
        }
        let last_pass = reconciler.last_pass();

        // Control socket.
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        // `--relay`: the relayed pairs' ports and forwarding (end to end, TURN-style).
        let relay = config.relay.then(|| {
            tracing::info!("relaying for members without a direct path (their WireGuard datagrams, end to end encrypted)");
            RelayServer::start(&tracker, cancel.clone(), wgmesh_relay::Limits::default())
        });
        let (reload_tx, reload_rx) = watch::channel(reload_report);
        let listener = control_server::bind(&config.paths.socket)?;
        let (refresh_tx, refresh_rx) = mpsc::channel(1);
        let status = StatusHandle {
            node: node.clone(),
            shared: shared.clone(),
            last_pass: last_pass.clone(),
            refresh: refresh_tx,
            reloads: reload_rx.clone(),
            relay: relay.clone(),
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
        let lan_group = config.lan_discovery.then_some(group);
        let underlay = observer.addresses();
        shared.lock().underlay.clone_from(&underlay);
        let socket = crate::platform::bind_control(
            control_port,
            lan_group,
            &exchange_io::lan_ipv4(&underlay),
        )
        .with_context(|| format!("cannot bind control port {control_port}"))?;
        let record = exchange_io::own_record(&node, &shared.lock());
        let mut exchange = Exchange::new(&keys, private_key, record, ExchangeConfig::default())
            .context("cannot build our exchange record")?;
        exchange.set_info(exchange_io::own_info(&shared.lock()));
        let cache_path = wgmesh_state::peer_cache_path(&config.paths.state_dir, &interface);
        let cached = load_peer_cache(&cache_path);
        let cached_peers_empty = cached.is_empty();
        let mut discovery =
            discovery_sources(&config, &cached, SocketAddr::from((group, control_port)));
        reconciler.set_peer_cache(cache_path, cached);
        let stun_servers = nat::server_list(config.stun.as_deref(), DEFAULT_STUN_SERVERS);
        // Routes from members must never cover the configured servers: resolve them for the
        // route filter (off the runtime: DNS blocks).
        let guarded: Vec<(String, ProtectedKind)> = stun_servers
            .iter()
            .flatten()
            .map(|s| (s.clone(), ProtectedKind::Stun))
            .chain(
                nat::server_list(config.dht_bootstrap.as_deref(), &[])
                    .into_iter()
                    .flatten()
                    .map(|s| (s, ProtectedKind::Dht)),
            )
            .chain(
                config
                    .static_peers
                    .iter()
                    .map(|s| (s.clone(), ProtectedKind::Seed)),
            )
            .collect();
        tokio::spawn({
            let shared = shared.clone();
            async move {
                let servers = resolve_guarded(guarded).await;
                shared.lock().servers = servers;
            }
        });
        let mut dht_status = None;
        if let Some(method) = config.dht {
            let bootstrap =
                nat::server_list(config.dht_bootstrap.as_deref(), &[]).unwrap_or_default();
            let nodes_file = config
                .paths
                .state_dir
                .join(format!("{interface}.dht-nodes.json"));
            match DhtDiscovery::start(method, &keys, control_port, bootstrap, nodes_file) {
                Ok(dht) => {
                    dht_status = dht.status_reader();
                    discovery.push(Box::new(dht));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start the DHT; continuing without it");
                }
            }
        }
        let (link_tx, link_events) = mpsc::channel(1);
        let (reconcile_tx, reconcile_rx) = mpsc::channel(1);
        let link_reconcile = reconcile_tx.clone();
        if let Err(err) = reconciler.host.watch_links_and_addresses(Box::new(move || {
            // Coalesced: one pending notice is enough, the receivers re-read everything. The
            // reconciler hears of it too: a wireguard-go that died took its TUN link with it,
            // and a roamed host's routes and endpoints need a pass.
            let _ = link_reconcile.try_send(());
            !matches!(
                link_tx.try_send(()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        })) {
            tracing::warn!(error = %err, "no link/address events; noticing network changes by the safety pass");
        }
        let (command_tx, command_rx) = mpsc::channel(8);
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
            host: Box::new(observer),
            nat: nat::NatWatch::new(control_port, stun_servers.clone(), underlay),
            lan_group,
            link_events,
            // Our address served in a mesh before: the peer cache names members we met there.
            established: !cached_peers_empty,
            relays: exchange_io::relay_allow_list(&config.relays),
            relay,
        })
        .context("cannot seed the membership core")?;
        if let Some(servers) = stun_servers {
            let commands = command_tx.clone();
            tokio::spawn(async move {
                let resolved = nat::resolve(servers).await;
                let _ = commands.send(Command::StunServers(resolved)).await;
            });
        }
        tracker.spawn(task.run(cancel.clone()));

        // Metrics (off unless --metrics-listen).
        let metrics = metrics_listener.map(|listener| {
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
        let reconciler: SharedReconciler = Arc::new(Mutex::new(reconciler));
        tracker.spawn(reconcile_loop(
            reconciler.clone(),
            reconcile_rx,
            refresh_rx,
            notifier.clone(),
            metrics,
            cancel.clone(),
        ));
        notifier.notify("READY=1\nSTATUS=mesh running");
        let name = config.name.as_ref().map(ToString::to_string);
        tracing::info!(%interface, mesh_ipv4 = %own.ipv4, mesh_ipv6 = %own.ipv6, listen_port, control_port, name = name.unwrap_or_default(), version = crate::VERSION, "wgmesh up");

        let reload = reload::ReloadContext {
            path: config.paths.reload.clone(),
            shared,
            node,
            log,
            announce: command_tx.clone(),
            reconcile: reconcile_tx,
            reports: reload_tx,
            notifier: notifier.clone(),
        };
        Ok(Self {
            config,
            reconciler,
            notifier,
            cancel,
            tracker,
            commands: command_tx,
            reload,
            teardown,
        })
    }

    /// Serves until SIGINT/SIGTERM or `wgmesh down`, handling SIGHUP reloads meanwhile.
    pub async fn run_until_signal(&self) -> Stop {
        wait_for_signals(&self.reload, &self.teardown).await
    }

    /// Cancel → tasks drain → goodbye → routes → interface → files → `STOPPING=1`.
    pub async fn shutdown(self, stop: Stop) {
        // `wgmesh down` removes everything; a signal (`systemctl stop`, Ctrl-C) keeps the
        // interface if asked to, so that a restart does not drop tunnels.
        let keep = self.config.keep_interface && stop == Stop::Signal;
        self.notifier.notify("STOPPING=1");
        tracing::info!("shutting down");
        // With --keep-interface the tunnels stay up for the next run: no goodbye, or peers would
        // drop us.
        if !keep {
            let (done_tx, done_rx) = oneshot::channel();
            if self.commands.send(Command::Goodbye(done_tx)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), done_rx).await;
            }
        }
        self.cancel.cancel();
        self.tracker.close();
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
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        let reconciler = self.reconciler.clone();
        tokio::task::spawn_blocking(move || lock(&reconciler).shutdown(keep))
            .await
            .ok();
        force.abort();
        let _ = std::fs::remove_file(&self.config.paths.socket);
        lifecycle::mark_kept_interface(&self.config.paths.kept, keep);
        tracing::info!("stopped");
    }
}

/// Creates or adopts the interface, then sets key and port, addresses, MTU and up state.
async fn setup_interface(
    config: &DaemonConfig,
    private_key: &wgmesh_keys::PrivateKey,
    addresses: &MeshAddresses,
    mesh_prefixes: &[ipnet::IpNet],
) -> anyhow::Result<Interface> {
    let interface = &config.interface;
    let platform = crate::platform::Platform::open()?;
    // A wireguard-go that outlives us (--keep-interface) must not write into our closed stderr.
    let child_output = if config.keep_interface {
        wgmesh_uapi::ChildOutput::File(config.wireguard_go_log())
    } else {
        wgmesh_uapi::ChildOutput::Log
    };
    let mut backend = platform.select_backend(
        config.backend,
        interface,
        &config.wireguard_go,
        child_output,
        config.wireguard_go_verbose,
    )?;
    // wireguard-go takes a moment to come up; keep the runtime free meanwhile.
    let (origin, mut backend) = tokio::task::spawn_blocking(move || {
        backend.ensure_device().map(|origin| (origin, backend))
    })
    .await
    .context("interface setup panicked")?
    .context("cannot create the WireGuard interface")?;
    tracing::info!(%interface, backend = %backend.kind(), adopted = (origin == DeviceOrigin::Adopted), "WireGuard interface ready");
    let current = backend
        .read()
        .context("cannot read the WireGuard interface")?;
    let listen_port = if origin == DeviceOrigin::Adopted && current.listen_port != 0 {
        current.listen_port
    } else {
        let port = crate::platform::free_udp_port(config.listen_port)?;
        if port != config.listen_port {
            tracing::warn!(
                requested = config.listen_port,
                using = port,
                "listen port busy; using the next free one"
            );
        }
        port
    };
    let mut setup = DeviceUpdate::default();
    if current.private_key.as_ref() != Some(private_key) {
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
    let link = InterfaceConfig {
        interface: interface.clone(),
        addresses: crate::platform::interface_addresses(addresses.ipv4, addresses.ipv6).to_vec(),
        managed: mesh_prefixes.to_vec(),
        mtu: config.mtu,
    };
    let mut host = platform.host(interface);
    let index = host.configure_interface(&link)?;
    let routes = platform.routes(&link, index);
    Ok(Interface {
        backend,
        origin,
        host,
        observer: platform.host(interface),
        routes,
        link,
        listen_port,
    })
}

/// The peer cache as last written; an unreadable one is moved aside and ignored.
fn load_peer_cache(path: &std::path::Path) -> Vec<wgmesh_state::CachedPeer> {
    match wgmesh_state::load_peer_cache(path) {
        Ok(wgmesh_state::CacheLoad::Loaded(peers)) => peers,
        Ok(wgmesh_state::CacheLoad::Missing) => Vec::new(),
        Ok(wgmesh_state::CacheLoad::MovedAside { to, reason }) => {
            tracing::warn!(path = %path.display(), moved_to = %to.display(), %reason, "unreadable peer cache moved aside");
            Vec::new()
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the peer cache; starting without it");
            Vec::new()
        }
    }
}

/// The discovery sources the configuration enables: the peer cache first, then the LAN, then
/// static seeds. (The DHT is a task of its own.)
fn discovery_sources(
    config: &DaemonConfig,
    cached: &[wgmesh_state::CachedPeer],
    lan_group: SocketAddr,
) -> Vec<Box<dyn Discovery>> {
    let mut discovery: Vec<Box<dyn Discovery>> = Vec::new();
    let cached_addrs: Vec<SocketAddr> = cached.iter().filter_map(|c| c.control_addr).collect();
    if !cached_addrs.is_empty() {
        tracing::info!(peers = cached_addrs.len(), "probing cached peers first");
        discovery.push(Box::new(CacheDiscovery::new(cached_addrs)));
    }
    if config.lan_discovery {
        discovery.push(Box::new(LanDiscovery::new(lan_group)));
    }
    if !config.static_peers.is_empty() {
        discovery.push(Box::new(StaticDiscovery::new(config.static_peers.clone())));
    }
    discovery
}

/// What ended the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
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

/// Every address of each configured server, for the route filter. Unresolvable ones are
/// skipped (discovery and STUN log them).
async fn resolve_guarded(servers: Vec<(String, ProtectedKind)>) -> Vec<Protected> {
    tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs as _;
        servers
            .iter()
            .flat_map(|(server, what)| {
                let addrs: Vec<SocketAddr> = server
                    .to_socket_addrs()
                    .map(Iterator::collect)
                    .unwrap_or_default();
                addrs.into_iter().map(|addr| Protected {
                    addr: addr.ip(),
                    what: *what,
                })
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}
