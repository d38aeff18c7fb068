//! SIGHUP: re-read the reload file and apply it all-or-nothing (DESIGN.md §7).

use super::exchange_io::{Command, default_name, own_record};
use super::lifecycle::{Notifier, monotonic_usec};
use super::state::{NodeInfo, Shared};
use crate::control::ReloadReport;
use crate::logging::LogHandle;
use std::io::Read as _;
use std::path::{Path, PathBuf};
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
        let read = tokio::task::spawn_blocking({
            let path = self.path.clone();
            move || load(&path)
        })
        .await
        .unwrap_or_else(|err| Err(format!("reading the reload file failed: {err}")));
        let file = match read {
            Ok(Loaded::Missing(message)) => {
                tracing::warn!("{message}");
                return (true, vec![message]);
            }
            Ok(Loaded::File(file)) => file,
            Err(reason) => {
                let message = format!("{reason}; nothing changed");
                tracing::error!("{message}");
                return (false, vec![message]);
            }
        };
        // Validated as a whole; from here on every change is one that cannot fail halfway.
        let mut messages = Vec::new();
        for message in ignored_keys(&self.path, &file) {
            tracing::warn!("{message}");
            messages.push(message);
        }
        if let Some(level) = &file.log_level {
            if let Err(err) = self.log.set_level(level) {
                return (false, vec![format!("{err:#}")]);
            }
            tracing::info!(%level, "log level changed");
        }
        let mut announce = false;
        if let Some(routes) = file.advertise_routes {
            let changed = {
                let mut state = self.shared.lock();
                let changed = state.advertised != routes;
                state.advertised.clone_from(&routes);
                changed
            };
            if changed {
                tracing::info!(routes = ?routes, "advertised routes changed");
                announce = true;
            }
        }
        if let Some(name) = file.name {
            // An empty `name=` goes back to the system host name.
            let name = name.or_else(default_name);
            let mut state = self.shared.lock();
            if state.own_name != name {
                tracing::info!(
                    name = name.as_ref().map(ToString::to_string).unwrap_or_default(),
                    "announced name changed"
                );
                state.own_name = name;
                announce = true;
            }
        }
        if file.accept_routes.is_some()
            || file.accept_routes_min_v4.is_some()
            || file.accept_routes_min_v6.is_some()
        {
            let mut state = self.shared.lock();
            let mut policy = state.route_policy.clone();
            if let Some(accept) = file.accept_routes {
                policy.accept = accept;
            }
            policy.min_prefix_v4 = file.accept_routes_min_v4.unwrap_or(policy.min_prefix_v4);
            policy.min_prefix_v6 = file.accept_routes_min_v6.unwrap_or(policy.min_prefix_v6);
            if policy != state.route_policy {
                tracing::info!(policy = %policy, "accept-routes changed");
                state.route_policy = policy;
            }
        }
        if let Some(relays) = file.relays {
            let changed = {
                let mut state = self.shared.lock();
                let changed = state.relays != relays;
                state.relays.clone_from(&relays);
                changed
            };
            if changed {
                tracing::info!(relays = %relays, "relays changed");
                let _ = self.announce.send(Command::SetRelays(relays)).await;
            }
        }
        if announce {
            // The exchange task takes our name from the shared state along with the record.
            let record = own_record(&self.node, &self.shared.lock());
            let _ = self
                .announce
                .send(Command::Announce(Box::new(record)))
                .await;
        }
        let _ = self.reconcile.try_send(());
        (true, messages)
    }
}

/// What reading the reload file found.
pub enum Loaded {
    /// No file: a warning saying so.
    Missing(String),
    File(ReloadFile),
}

/// Reads and parses the reload file as a whole. The error names the file and what is wrong
/// with it (with the line, for a bad key or value).
pub fn load(path: &Path) -> Result<Loaded, String> {
    let shown = path.display();
    match read_reload_file(path) {
        Ok(None) => Ok(Loaded::Missing(format!(
            "reload file {shown} does not exist; nothing changed"
        ))),
        Ok(Some(text)) => text
            .parse()
            .map(Loaded::File)
            .map_err(|err| format!("reload file {shown}: {err}")),
        Err(reason) => Err(format!("cannot read reload file {shown}: {reason}")),
    }
}

/// One warning per known key the reload file may not set (DESIGN.md §7: reported, ignored).
fn ignored_keys(path: &Path, file: &ReloadFile) -> Vec<String> {
    file.ignored
        .iter()
        .map(|(line, key)| {
            format!(
                "reload file {}: line {line}: {key} cannot be set here; use the flag or the env file, and restart",
                path.display()
            )
        })
        .collect()
}

/// The reload file at startup (DESIGN.md §6): what ops scripts last wrote is applied before
/// READY, so a restart, a crash or a reboot does not make the host advertise nothing. A
/// rejected file does not stop the daemon (that would drop every tunnel for a typo): it starts
/// with the flag values, logs why, and `status` shows the rejection until a good reload.
pub fn at_startup(path: &Path) -> (Option<ReloadFile>, ReloadReport) {
    let (file, ok, messages) = match load(path) {
        Ok(Loaded::Missing(_)) => (None, true, Vec::new()),
        Ok(Loaded::File(file)) => {
            let messages = ignored_keys(path, &file);
            for message in &messages {
                tracing::warn!("{message}");
            }
            (Some(file), true, messages)
        }
        Err(reason) => {
            let message = format!("{reason}; starting with the flag values");
            tracing::error!("{message}");
            (None, false, vec![message])
        }
    };
    let report = ReloadReport {
        generation: 0,
        ok,
        messages,
    };
    (file, report)
}

/// A reload file is a few lines; anything bigger is a mistake (or `/dev/zero`), not a config.
const MAX_RELOAD_FILE_BYTES: u64 = 64 * 1024;

/// Reads the reload file: `Ok(None)` if there is none. Only a regular file of at most
/// [`MAX_RELOAD_FILE_BYTES`] of UTF-8 is read: a FIFO would block the reader until someone
/// writes to it (with no reload ever answered), and a device could be read forever. A symlink
/// to a regular file is fine (configuration management installs those).
fn read_reload_file(path: &Path) -> Result<Option<String>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    if let Some(reason) = not_regular(&meta) {
        return Err(reason.to_owned());
    }
    let file = match open_regular(path) {
        Ok(file) => file,
        // Removed between the two looks: as if it had never been there.
        Err(OpenError::Missing) => return Ok(None),
        Err(OpenError::Refused(reason)) => return Err(reason),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RELOAD_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_RELOAD_FILE_BYTES {
        return Err(format!(
            "it is larger than {} KiB",
            MAX_RELOAD_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map(Some).map_err(|err| {
        format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        )
    })
}

/// Why a path is not a file we read, or `None` for a regular file.
fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let file_type = meta.file_type();
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("it is a directory, not a regular file")
    } else {
        Some("it is not a regular file (a FIFO, socket or device)")
    }
}

enum OpenError {
    Missing,
    Refused(String),
}

/// Opens `path` for reading and checks, on the open descriptor, that it is a regular file. The
/// path may have been swapped for a FIFO since the caller looked at it: `O_NONBLOCK` makes that
/// open return at once instead of waiting for a writer (a plain open of a FIFO blocks before
/// any check could run), and the `fstat` then refuses it. On a regular file `O_NONBLOCK` changes
/// nothing.
fn open_regular(path: &Path) -> Result<std::fs::File, OpenError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::platform::OPEN_NONBLOCK)
        .open(path)
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => OpenError::Missing,
            _ => OpenError::Refused(err.to_string()),
        })?;
    let meta = file
        .metadata()
        .map_err(|err| OpenError::Refused(err.to_string()))?;
    match not_regular(&meta) {
        Some(reason) => Err(OpenError::Refused(reason.to_owned())),
        None => Ok(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_utf8_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.reload");
        assert_eq!(read_reload_file(&path), Ok(None));
        std::fs::write(&path, "log-level=debug\n").unwrap();
        assert_eq!(
            read_reload_file(&path),
            Ok(Some("log-level=debug\n".to_owned()))
        );
        std::fs::write(&path, b"log-level=\xff\n").unwrap();
        let err = read_reload_file(&path).unwrap_err();
        assert!(
            err.contains("not UTF-8") && err.contains("offset 10"),
            "{err}"
        );
        std::fs::write(&path, vec![b'#'; MAX_RELOAD_FILE_BYTES as usize + 1]).unwrap();
        assert!(
            read_reload_file(&path)
                .unwrap_err()
                .contains("larger than 64 KiB")
        );
        std::fs::write(&path, vec![b'#'; MAX_RELOAD_FILE_BYTES as usize]).unwrap();
        assert!(read_reload_file(&path).unwrap().is_some());
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(read_reload_file(&path).unwrap_err().contains("directory"));
    }

    /// The file swapped for a FIFO after the first look (which saw a regular file): the open
    /// itself must not wait for a writer. Without `O_NONBLOCK` this open blocks forever.
    #[test]
    fn opening_a_fifo_returns_at_once_with_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.reload");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_regular(&fifo).err().map(|err| match err {
                OpenError::Missing => "missing".to_owned(),
                OpenError::Refused(reason) => reason,
            }));
        });
        let result = rx.recv_timeout(std::time::Duration::from_secs(5));
        if result.is_err() {
            // Release the blocked reader before failing.
            let _ = std::fs::OpenOptions::new().write(true).open(&path);
        }
        let err = result
            .expect("opening a FIFO blocked")
            .expect("a FIFO was accepted");
        assert!(err.contains("not a regular file"), "{err}");
        // A symlink to a regular file stays allowed.
        let target = dir.path().join("target.reload");
        std::fs::write(&target, "log-level=warn\n").unwrap();
        let link = dir.path().join("link.reload");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            read_reload_file(&link),
            Ok(Some("log-level=warn\n".to_owned()))
        );
    }

    /// A FIFO in place of the file would block the reader until someone writes into it.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.reload");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        if !made.is_ok_and(|s| s.success()) {
            return;
        }
        let err = read_reload_file(&path).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        // A device (read forever) likewise, through a symlink.
        let link = dir.path().join("zero.reload");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(
            read_reload_file(&link)
                .unwrap_err()
                .contains("not a regular file")
        );
    }
}
