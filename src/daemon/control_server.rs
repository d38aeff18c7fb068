//! The daemon's side of the control socket.

use crate::control::{MAX_REQUEST_BYTES, ReloadReport, Request, Response};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// How long `wait_reload` waits before answering with the current state anyway.
const RELOAD_WAIT: Duration = Duration::from_secs(15);

/// Answers status requests; implemented by the daemon (it needs a device read).
pub trait StatusSource: Clone + Send + Sync + 'static {
    fn status(&self) -> impl std::future::Future<Output = Response> + Send;
}

pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context as _;
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict control socket {}", path.display()))?;
    Ok(listener)
}

pub async fn serve<S: StatusSource>(
    listener: UnixListener,
    status: S,
    reloads: watch::Receiver<ReloadReport>,
    teardown: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let status = status.clone();
                    let reloads = reloads.clone();
                    let teardown = teardown.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = handle(stream, status, reloads, &teardown) => {}
                        }
                    });
                }
                Err(err) => tracing::debug!(error = %err, "control socket accept failed"),
            },
        }
    }
}

async fn handle<S: StatusSource>(
    stream: UnixStream,
    status: S,
    mut reloads: watch::Receiver<ReloadReport>,
    teardown: &Notify,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES as u64));
    let response = match reader.read_line(&mut line).await {
        Err(err) => Response::Error {
            error: format!("cannot read request: {err}"),
        },
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Err(err) => Response::Error {
                error: format!("invalid request: {err}"),
            },
            Ok(Request::Status) => status.status().await,
            Ok(Request::Down) => {
                // notify_one keeps the permit if the signal loop is busy with a reload.
                teardown.notify_one();
                Response::Stopping {
                    stopping_pid: std::process::id(),
                }
            }
            Ok(Request::WaitReload { after }) => {
                let waited =
                    tokio::time::timeout(RELOAD_WAIT, reloads.wait_for(|r| r.generation > after))
                        .await;
                match waited {
                    Ok(Ok(report)) => Response::Reload(report.clone()),
                    _ => Response::Error {
                        error: "timed out waiting for the reload to finish".to_owned(),
                    },
                }
            }
        },
    };
    let mut text =
        serde_json::to_string(&response).unwrap_or_else(|_| "{\"error\":\"internal\"}".to_owned());
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}
