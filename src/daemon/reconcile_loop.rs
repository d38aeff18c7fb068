//! The reconcile task: passes on a timer, on triggers (discovery, reloads, link events) and when
//! a handshake nudge is due; between passes, fresh device reads for `status`.

use super::lifecycle::Notifier;
use super::platform::LinuxHost;
use super::reconcile::Reconciler;
use crate::logging;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Reconcile timer (DESIGN.md §6 default).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

/// The reconciler as the daemon runs it on Linux: backend chosen at run time.
pub type DaemonReconciler =
    Reconciler<Box<dyn wgmesh_device::WireguardBackend>, wgmesh_linux::InterfaceRoutes, LinuxHost>;

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
