//! The reconcile task: passes on triggers and a slow safety timer; between passes, fresh device
//! reads for `status`.
//!
//! What replaced each job of v0.1's 5 s device poll (docs/scaling.md):
//! - a dead wireguard-go: its TUN interface goes with it, and the link event (rtnetlink) triggers
//!   a pass, which restarts it; a pass that fails, or in which a step failed (a route, a peer,
//!   the peer cache on a full disk), retries after 1 s, 2 s, 4 s … up to the safety interval;
//! - a roamed peer or a host that changed networks: link and address events, and the membership
//!   core's events (a member moved, joined, left);
//! - drift (someone ran `wg set` or `ip route del`): the safety pass, every
//!   [`SAFETY_INTERVAL`], or every half `WatchdogSec=` under a systemd watchdog;
//! - handshake nudges and the end of the removal hold: their own deadlines.

use super::lifecycle::Notifier;
use super::reconcile::Reconciler;
use crate::logging;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The safety pass: catches drift no event reports (DESIGN.md §6 "a slow safety timer").
pub const SAFETY_INTERVAL: Duration = Duration::from_secs(60);
/// A failed pass is retried after this, doubling up to the safety interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The reconciler as the daemon runs it: backend chosen at run time, host and routes the OS's.
pub type DaemonReconciler = Reconciler<
    Box<dyn wgmesh_device::WireguardBackend>,
    crate::platform::OsRoutes,
    crate::platform::OsHost,
>;

pub type SharedReconciler = Arc<Mutex<DaemonReconciler>>;

pub fn lock(reconciler: &SharedReconciler) -> MutexGuard<'_, DaemonReconciler> {
    reconciler.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs until `cancel`; `refreshes` are answered between passes (see [`super::status`]).
pub async fn reconcile_loop(
    reconciler: SharedReconciler,
    mut triggers: mpsc::Receiver<()>,
    mut refreshes: mpsc::Receiver<oneshot::Sender<()>>,
    notifier: Notifier,
    metrics: Option<Arc<wgmesh_metrics::MeshMetrics>>,
    cancel: CancellationToken,
) {
    // Under a systemd watchdog the safety pass doubles as its ping, so it runs at least that
    // often.
    let safety = notifier
        .watchdog_interval()
        .map_or(SAFETY_INTERVAL, |w| w.min(SAFETY_INTERVAL));
    let mut failures = logging::RepeatLimiter::new(Duration::from_secs(60));
    let mut retry: Option<Duration> = None;
    let mut next_safety = tokio::time::Instant::now() + safety;
    loop {
        // A pending handshake nudge or the end of the removal hold (Reconciler::next_wakeup)
        // wants a pass of its own; so does a failed pass (retry).
        let wakeup = lock(&reconciler)
            .next_wakeup()
            .map(tokio::time::Instant::from_std);
        let retry_at = retry.map(|after| tokio::time::Instant::now() + after);
        let deadline = [Some(next_safety), wakeup, retry_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_safety);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => {}
            Some(()) = triggers.recv() => {}
            Some(done) = refreshes.recv() => {
                // Between passes only: a status request never waits for one.
                let worker = reconciler.clone();
                let _ = tokio::task::spawn_blocking(move || lock(&worker).refresh_snapshot()).await;
                let _ = done.send(());
                continue;
            }
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
        next_safety = tokio::time::Instant::now() + safety;
        let clean = matches!(result, Ok(Ok(_))) && !lock(&reconciler).steps_failed();
        retry = if clean {
            None
        } else {
            Some(retry.map_or(FIRST_RETRY, |r| (r * 2).min(safety)))
        };
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
