//! The rendezvous service: one thread that owns a mainline DHT node, announces our control port
//! under the hourly infohash and streams the peers it finds to the daemon.
//!
//! mainline is blocking at the edges (its builder binds and its bootstrap list needs DNS), so all
//! of it lives on a dedicated thread; the daemon only touches the [`DhtHandle`], whose methods
//! never block except [`DhtHandle::stop`], which joins the thread.

use crate::bootstrap::{bootstrap_names, merge_bootstrap, resolve};
use crate::candidates::{MAX_CANDIDATES_PER_ROUND, candidates_from_dht};
use crate::config::{DhtConfig, DhtError, DhtStatus};
use crate::method::{AnnounceError, CandidateStream};
use crate::nodes_file;
use crate::schedule::{Due, Schedule};
use futures_lite::{StreamExt, future};
use mainline::Dht;
use mainline::async_dht::AsyncDht;
use std::cell::RefCell;
use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Starts the rendezvous thread.
#[derive(Debug)]
pub struct DhtRendezvous;

impl DhtRendezvous {
    /// Starts the rendezvous; candidate control addresses arrive on the returned receiver as
    /// soon as any DHT node reports them (deduplicated within a lookup round, so the same member
    /// comes again in the next round). The receiver may be dropped; candidates are then lost.
    pub fn start(config: DhtConfig) -> Result<(DhtHandle, mpsc::Receiver<SocketAddr>), DhtError> {
        let (tx, rx) = mpsc::channel();
        let handle = Self::start_with(config, move |addr| {
            let _ = tx.send(addr);
        })?;
        Ok((handle, rx))
    }

    /// Like [`DhtRendezvous::start`], but calls `on_candidate` on the DHT thread for each
    /// candidate (e.g. `move |a| { let _ = tokio_tx.send(a); }` with an unbounded tokio sender).
    /// It must not block for long: lookups wait for it.
    pub fn start_with(
        config: DhtConfig,
        on_candidate: impl FnMut(SocketAddr) + Send + 'static,
    ) -> Result<DhtHandle, DhtError> {
        let (commands_tx, commands_rx) = flume::unbounded();
        let status = Arc::new(Mutex::new(DhtStatus {
            method: config.rendezvous.name(),
            fast: true,
            ..DhtStatus::default()
        }));
        let worker = Worker {
            schedule: Schedule::new(config.pacing),
            config,
            commands: commands_rx,
            on_candidate: Box::new(on_candidate),
            status: Arc::clone(&status),
            dht: None,
            announce_ok: None,
            last_save: None,
            bootstrap_failures: 0,
        };
        let thread = std::thread::Builder::new()
            .name("wgmesh-dht".to_owned())
            .spawn(move || worker.run())
            .map_err(DhtError::Thread)?;
        Ok(DhtHandle {
            commands: commands_tx,
            status,
            thread: Some(thread),
        })
    }
}

#[derive(Debug)]
enum Command {
    SetFast(bool),
    SetAnnouncePort(u16),
    Reannounce,
    Stop,
}

/// Controls a running rendezvous. Dropping it stops the thread without waiting for it.
#[derive(Debug)]
pub struct DhtHandle {
    commands: flume::Sender<Command>,
    status: Arc<Mutex<DhtStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl DhtHandle {
    /// Fast pacing (a member is missing, or the daemon just started) or slow pacing (the mesh is
    /// complete and stable). Switching to fast looks up at once if the last lookup is older than
    /// the fast interval.
    pub fn set_fast(&self, fast: bool) {
        let _ = self.commands.send(Command::SetFast(fast));
    }

    /// Sets the announced control port and announces at once, even if the port is unchanged.
    pub fn set_announce_port(&self, port: u16) {
        let _ = self.commands.send(Command::SetAnnouncePort(port));
    }

    /// Announces again at once (our public address may have changed: the DHT stores the
    /// address the announce comes from).
    pub fn reannounce(&self) {
        let _ = self.commands.send(Command::Reannounce);
    }

    pub fn status(&self) -> DhtStatus {
        self.status_reader().read()
    }

    /// A reader of the status that other tasks can keep (metrics) without the handle.
    pub fn status_reader(&self) -> DhtStatusReader {
        DhtStatusReader(Arc::clone(&self.status))
    }

    /// Stops the thread and waits for it: in-flight queries are abandoned, known nodes saved.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("DHT thread panicked");
        }
    }
}

impl Drop for DhtHandle {
    fn drop(&mut self) {
        // Never join here: a drop may run on an async runtime thread.
        let _ = self.commands.send(Command::Stop);
    }
}

/// Reads the rendezvous status; stays valid (and frozen) after the rendezvous stops.
#[derive(Debug, Clone)]
pub struct DhtStatusReader(Arc<Mutex<DhtStatus>>);

impl DhtStatusReader {
    pub fn read(&self) -> DhtStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type CandidateSink = Box<dyn FnMut(SocketAddr) + Send>;

/// Delay before retrying when the DHT node could not be created (no bootstrap node resolved,
/// bind failed); doubles up to the maximum.
const BUILD_RETRY_MIN: Duration = Duration::from_secs(5);
const BUILD_RETRY_MAX: Duration = Duration::from_secs(300);
/// Known nodes are saved at most this often (and at stop).
const SAVE_INTERVAL: Duration = Duration::from_secs(15 * 60);

struct Worker {
    config: DhtConfig,
    schedule: Schedule,
    commands: flume::Receiver<Command>,
    on_candidate: CandidateSink,
    status: Arc<Mutex<DhtStatus>>,
    dht: Option<AsyncDht>,
    /// Outcome of the last announce, to log changes rather than every failure.
    announce_ok: Option<bool>,
    last_save: Option<Instant>,
    /// Failed attempts to find a bootstrap node: the first is a warning, retries are not news.
    bootstrap_failures: u32,
}

enum Flow {
    Continue,
    Stop,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

impl Worker {
    fn run(mut self) {
        if let Flow::Continue = self.start_node() {
            self.serve();
        }
        self.maybe_save(true);
        tracing::debug!("DHT rendezvous stopped");
    }

    /// Creates the DHT node, retrying with backoff until it works or a stop arrives.
    fn start_node(&mut self) -> Flow {
        let mut retry = BUILD_RETRY_MIN;
        loop {
            if let Flow::Stop = self.build() {
                return Flow::Stop;
            }
            if self.dht.is_some() {
                return Flow::Continue;
            }
            if let Flow::Stop = self.wait_commands(retry) {
                return Flow::Stop;
            }
            retry = (retry * 2).min(BUILD_RETRY_MAX);
        }
    }

    /// Announces and looks up as the schedule says until a stop arrives.
    fn serve(&mut self) {
        loop {
            let due = self.schedule.poll(unix_now());
            if due != Due::default() {
                if let Flow::Stop = self.round(due) {
                    return;
                }
                self.maybe_save(false);
            }
            let sleep = self.schedule.sleep_for(unix_now());
            if let Flow::Stop = self.wait_commands(sleep) {
                return;
            }
        }
    }

    fn apply(&mut self, command: Command) -> Flow {
        match command {
            Command::Stop => return Flow::Stop,
            Command::SetFast(fast) => {
                if fast != self.schedule.is_fast() {
                    tracing::debug!(fast, "DHT lookup pacing changed");
                }
                self.schedule.set_fast(fast);
                self.update_status(|s| s.fast = fast);
            }
            Command::Reannounce => self.schedule.reannounce_now(),
            Command::SetAnnouncePort(port) => {
                self.config.announce_port = port;
                self.schedule.reannounce_now();
            }
        }
        Flow::Continue
    }

    /// Sleeps up to `timeout`, applying commands as they come; returns early after any command
    /// so the schedule is re-evaluated.
    fn wait_commands(&mut self, timeout: Duration) -> Flow {
        match self.commands.recv_timeout(timeout) {
            Ok(command) => {
                let flow = self.apply(command);
                if let Flow::Stop = flow {
                    return flow;
                }
                while let Ok(command) = self.commands.try_recv() {
                    if let Flow::Stop = self.apply(command) {
                        return Flow::Stop;
                    }
                }
                Flow::Continue
            }
            Err(flume::RecvTimeoutError::Timeout) => Flow::Continue,
            // Every handle is gone: nobody can stop us any more, so stop now.
            Err(flume::RecvTimeoutError::Disconnected) => Flow::Stop,
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut DhtStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Resolves the bootstrap list (on a helper thread, so a hanging resolver cannot delay a
    /// stop) and creates the DHT node.
    fn build(&mut self) -> Flow {
        let saved = match &self.config.nodes_file {
            Some(path) => nodes_file::load(path).unwrap_or_else(|err| {
                tracing::warn!(%err, "ignoring saved DHT nodes");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let names = bootstrap_names(&self.config.bootstrap);
        let (tx, rx) = flume::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("wgmesh-dht-dns".to_owned())
            .spawn(move || {
                let _ = tx.send(resolve(&names));
            });
        let mut resolved = Vec::new();
        if spawned.is_ok() {
            loop {
                let dns = async { Ok(rx.recv_async().await) };
                let command = async { Err(self.commands.recv_async().await) };
                match future::block_on(future::or(dns, command)) {
                    Ok(Ok(addrs)) => {
                        resolved = addrs;
                        break;
                    }
                    Ok(Err(_)) => break,
                    Err(Ok(command)) => {
                        if let Flow::Stop = self.apply(command) {
                            return Flow::Stop;
                        }
                    }
                    Err(Err(_)) => return Flow::Stop,
                }
            }
        }
        let bootstrap = merge_bootstrap(&resolved, &saved);
        if bootstrap.is_empty() {
            if self.bootstrap_failures == 0 {
                tracing::warn!(
                    configured = ?self.config.bootstrap,
                    "no DHT bootstrap node could be resolved and none was saved; retrying with backoff"
                );
            } else {
                tracing::debug!(
                    attempt = self.bootstrap_failures + 1,
                    "DHT bootstrap still unresolved"
                );
            }
            self.bootstrap_failures += 1;
            return Flow::Continue;
        }
        let mut builder = Dht::builder();
        builder
            .bootstrap(&bootstrap)
            .request_timeout(self.config.request_timeout);
        if let Some(bind) = self.config.bind {
            builder.bind_address(*bind.ip()).port(bind.port());
        }
        match builder.build() {
            Ok(dht) => {
                let dht = dht.as_async();
                let info = future::block_on(dht.info());
                let local = info.local_addr();
                tracing::info!(%local, bootstrap = bootstrap.len(), saved = saved.len(), "DHT node started");
                self.update_status(|s| s.local_addr = Some(local));
                self.dht = Some(dht);
            }
            Err(err) => {
                tracing::warn!(%err, bind = ?self.config.bind, "cannot create the DHT node; retrying");
            }
        }
        Flow::Continue
    }

    /// Announces and looks up concurrently; returns early on a stop command.
    fn round(&mut self, due: Due) -> Flow {
        let Some(dht) = self.dht.clone() else {
            return Flow::Continue;
        };
        let port = self.config.announce_port;
        let rendezvous = self.config.rendezvous.as_ref();
        let sink = RefCell::new(RoundSink::new(
            self.on_candidate.as_mut(),
            self.config.accept_loopback,
        ));
        let announce = async {
            let hour = due.announce?;
            let result = rendezvous.announce(&dht, hour, port).await;
            // What the announce read on its way (BEP 44's current item) is as good as a lookup.
            Some(result.map(|seen| sink.borrow_mut().deliver(&seen)))
        };
        let lookup = async {
            let Some(hours) = due.lookup else {
                return false;
            };
            let mut unique: Vec<u64> = Vec::with_capacity(3);
            for hour in hours {
                if !unique.contains(&hour) {
                    unique.push(hour);
                }
            }
            let mut streams = unique.into_iter().map(|hour| rendezvous.lookup(&dht, hour));
            let (a, b, c) = (streams.next(), streams.next(), streams.next());
            future::zip(
                future::zip(drain(a, &sink), drain(b, &sink)),
                drain(c, &sink),
            )
            .await;
            true
        };
        let commands = &self.commands;
        let pending = RefCell::new(Vec::new());
        let stop = async {
            loop {
                match commands.recv_async().await {
                    Ok(Command::Stop) | Err(_) => return None,
                    Ok(other) => pending.borrow_mut().push(other),
                }
            }
        };
        // The lookup goes first: mainline runs one iterative query per target, and a get_peers
        // for this hour started after the announce would join the announce's get_value query
        // and see no peers. Started first, the announce reuses the get_peers query's nodes and
        // tokens instead of walking the DHT a second time.
        let work = async {
            let (looked_up, announced) = future::zip(lookup, announce).await;
            Some((announced, looked_up))
        };
        let outcome = future::block_on(future::or(work, stop));
        let sink = sink.into_inner();
        let (found, returned) = (sink.found(), sink.returned);
        for command in pending.into_inner() {
            if let Flow::Stop = self.apply(command) {
                return Flow::Stop;
            }
        }
        let Some((announced, looked_up)) = outcome else {
            return Flow::Stop;
        };
        if let Some(result) = announced {
            self.record_announce(result);
        }
        if looked_up && self.config.rendezvous.wants_reannounce() {
            tracing::debug!("our DHT announcement was not found; announcing again");
            self.schedule.reannounce_now();
        }
        if looked_up {
            tracing::debug!(
                found,
                returned,
                capped = found >= MAX_CANDIDATES_PER_ROUND,
                "DHT lookup round done"
            );
            self.update_status(|s| s.lookups += 1);
        }
        Flow::Continue
    }

    fn record_announce(&mut self, result: Result<(), AnnounceError>) {
        let ok = result.is_ok();
        self.schedule.announce_done(ok);
        self.update_status(|s| {
            s.announced = ok;
            if ok {
                s.announces_ok += 1;
            } else {
                s.announces_failed += 1;
            }
        });
        let changed = self.announce_ok != Some(ok);
        self.announce_ok = Some(ok);
        match result {
            Ok(()) if changed => {
                tracing::info!(
                    port = self.config.announce_port,
                    method = %self.config.rendezvous.name(),
                    "announced on the DHT"
                );
            }
            Err(err) if changed => tracing::warn!(%err, "DHT announce failed; retrying"),
            Err(err) => tracing::debug!(%err, "DHT announce failed again"),
            Ok(()) => {}
        }
    }

    fn maybe_save(&mut self, force: bool) {
        let (Some(path), Some(dht)) = (&self.config.nodes_file, &self.dht) else {
            return;
        };
        if !force && self.last_save.is_some_and(|t| t.elapsed() < SAVE_INTERVAL) {
            return;
        }
        let nodes: Vec<SocketAddrV4> = future::block_on(dht.to_bootstrap())
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if nodes.is_empty() {
            // Keep the previous file rather than replacing it with nothing.
            return;
        }
        match nodes_file::save(path, &nodes) {
            Ok(()) => {
                self.last_save = Some(Instant::now());
                tracing::debug!(path = %path.display(), nodes = nodes.len(), "saved DHT nodes");
            }
            Err(err) => {
                // Retry at the next interval, not at every round.
                self.last_save = Some(Instant::now());
                tracing::warn!(%err, "cannot save DHT nodes");
            }
        }
    }
}

/// Feeds one hour's lookup into the round's sink.
async fn drain(stream: Option<CandidateStream<'_>>, sink: &RefCell<RoundSink<'_>>) {
    let Some(mut stream) = stream else { return };
    while let Some(batch) = stream.next().await {
        sink.borrow_mut().deliver(&batch);
    }
}

/// Delivers the candidates of one lookup round ([`candidates_from_dht`]: each address once,
/// bogus ones dropped, bounded).
struct RoundSink<'a> {
    on_candidate: &'a mut dyn FnMut(SocketAddr),
    accept_loopback: bool,
    seen: HashSet<SocketAddrV4>,
    /// Peers the DHT returned this round, repeats and rejects included.
    returned: usize,
}

impl<'a> RoundSink<'a> {
    fn new(on_candidate: &'a mut dyn FnMut(SocketAddr), accept_loopback: bool) -> Self {
        Self {
            on_candidate,
            accept_loopback,
            seen: HashSet::new(),
            returned: 0,
        }
    }

    fn deliver(&mut self, batch: &[SocketAddrV4]) {
        self.returned = self.returned.saturating_add(batch.len());
        for addr in candidates_from_dht(batch, &mut self.seen, self.accept_loopback) {
            (self.on_candidate)(addr);
        }
    }

    /// Candidates delivered this round.
    fn found(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_sink_dedupes_within_a_round() {
        let mut got = Vec::new();
        {
            let mut cb = |a| got.push(a);
            let mut sink = RoundSink::new(&mut cb, false);
            let a: SocketAddrV4 = "192.0.2.1:5000".parse().unwrap();
            let b: SocketAddrV4 = "192.0.2.2:5000".parse().unwrap();
            let multicast: SocketAddrV4 = "239.1.2.3:5000".parse().unwrap();
            sink.deliver(&[a, b, multicast]);
            sink.deliver(&[b, a]);
            assert_eq!((sink.found(), sink.returned), (2, 5));
        }
        assert_eq!(
            got,
            [
                "192.0.2.1:5000".parse().unwrap(),
                "192.0.2.2:5000".parse().unwrap()
            ]
        );
    }
}
