//! SIGHUP: re-read the reload file and apply it all-or-nothing (DESIGN.md §7).

use super::exchange_io::{Command, own_record};
use super::lifecycle::{Notifier, monotonic_usec};
use super::state::{NodeInfo, Shared};
use crate::control::ReloadReport;
use crate::logging::LogHandle;
use std::path::PathBuf;
use tokio::sync::{mpsc, watch};
use wgmesh_reload::ReloadFile;

pub struct ReloadContext {
    pub path: PathBuf,
    pub shared: Shared,
    pub node: NodeInfo,
    pub log: LogHandle,
    pub announce: mpsc::Sender<Command>,
    pub reconcile: mpsc::Sender<()>,
    pub reports: watch::Sender<ReloadReport>,
    pub notifier: Notifier,
}

impl ReloadContext {
    pub async fn reload(&self) {
        self.notifier
            .notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        let (ok, messages) = self.apply().await;
        let generation = self.reports.borrow().generation + 1;
        self.reports.send_replace(ReloadReport {
            generation,
            ok,
            messages,
        });
        self.notifier.notify("READY=1");
    }

    async fn apply(&self) -> (bool, Vec<String>) {
        let path = self.path.display();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let message = format!("reload file {path} does not exist; nothing changed");
                tracing::warn!("{message}");
                return (true, vec![message]);
            }
            Err(err) => {
                let message = format!("cannot read reload file {path}: {err}; nothing changed");
                tracing::error!("{message}");
                return (false, vec![message]);
            }
        };
        let file: ReloadFile = match text.parse() {
            Ok(file) => file,
            Err(err) => {
                let message = format!("reload file {path}: {err}; nothing changed");
                tracing::error!("{message}");
                return (false, vec![message]);
            }
        };
        // Validated as a whole; from here on every change is one that cannot fail halfway.
        let mut messages = Vec::new();
        for (line, key) in &file.ignored {
            let message = format!(
                "reload file {path}: line {line}: {key} cannot change while running; restart to apply it"
            );
            tracing::warn!("{message}");
            messages.push(message);
        }
        if let Some(level) = &file.log_level {
            if let Err(err) = self.log.set_level(level) {
                return (false, vec![format!("{err:#}")]);
            }
            tracing::info!(%level, "log level changed");
        }
        if let Some(routes) = file.advertise_routes {
            let changed = {
                let mut state = self.shared.lock();
                let changed = state.advertised != routes;
                state.advertised.clone_from(&routes);
                changed
            };
            if changed {
                tracing::info!(routes = ?routes, "advertised routes changed");
                let record = own_record(&self.node, &self.shared.lock());
                let _ = self
                    .announce
                    .send(Command::Announce(Box::new(record)))
                    .await;
            }
        }
        let _ = self.reconcile.try_send(());
        (true, messages)
    }
}
