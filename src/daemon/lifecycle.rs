//! Pid file, single-instance check and systemd notifications.

use anyhow::{Context as _, anyhow, bail};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The pid file of a running daemon; removed on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

pub use crate::platform::{monotonic_usec, process_alive};

/// Reads a pid file; `None` if missing or unparsable.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pid: &i32| *pid > 0)
}

/// Records that the interface outlives this daemon (`--keep-interface`), or clears the record.
/// `wgmesh down` with no daemon running removes an interface only when this record says a
/// daemon of ours left it, never one it cannot vouch for.
pub fn mark_kept_interface(path: &Path, kept: bool) {
    let result = if kept {
        // An empty marker: nothing is truncated or written, and a symlink is never followed.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(crate::platform::OPEN_NOFOLLOW)
            .open(path)
            .map(drop)
    } else {
        std::fs::remove_file(path).or_else(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(err)
            }
        })
    };
    if let Err(err) = result {
        tracing::warn!(path = %path.display(), error = %err, "cannot update the kept-interface record");
    }
}

impl PidFile {
    /// Claims `path` for this process. A live daemon holding it is an error; a stale file (its
    /// process is gone) is replaced, as is a stale control socket beside it.
    pub fn claim(path: &Path, socket: &Path, interface: &str) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            // 0700: only root talks to the daemon (the socket is 0600 too); docs/decisions.md.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create runtime directory {}", dir.display()))?;
        }
        if let Some(pid) = read_pid(path) {
            if pid != std::process::id() as i32 && process_alive(pid) {
                bail!(
                    "a wgmesh daemon (pid {pid}) already runs on interface {interface}; stop it with `wgmesh down --interface {interface}`"
                );
            }
            tracing::info!(pid, path = %path.display(), "removing stale pid file");
        }
        match std::fs::remove_file(socket) {
            Ok(()) => tracing::info!(path = %socket.display(), "removed stale control socket"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(anyhow!(err)
                    .context(format!("cannot remove stale socket {}", socket.display())));
            }
        }
        // Through an unguessable O_EXCL|O_NOFOLLOW temporary file and a rename: a symlink
        // planted in the runtime directory is never written through.
        let pid = format!("{}\n", std::process::id());
        wgmesh_state::atomic_write_mode(path, pid.as_bytes(), 0o644)
            .context("cannot write the pid file")?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// sd_notify(3) without libsystemd: one datagram to `$NOTIFY_SOCKET` (a path, or an abstract
/// name written with a leading '@'). A no-op when not started by systemd.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<std::ffi::OsString>,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            socket: std::env::var_os("NOTIFY_SOCKET"),
        }
    }

    /// Half of systemd's watchdog timeout (`$WATCHDOG_USEC`, set with `WatchdogSec=`), the
    /// interval sd_watchdog_enabled(3) advises pinging at; `None` when there is no watchdog.
    pub fn watchdog_interval(&self) -> Option<std::time::Duration> {
        self.socket.as_ref()?;
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
    }

    pub fn notify(&self, state: &str) {
        let Some(target) = &self.socket else { return };
        if let Err(err) = send_notify(target, state) {
            tracing::debug!(error = %err, "sd_notify failed");
        }
    }
}

fn send_notify(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let addr = crate::platform::unix_socket_address(target)?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_on_a_live_pid_is_refused_and_stale_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("wg0.pid");
        let sock = dir.path().join("wg0.sock");
        // A live foreign process: pid 1 always exists.
        std::fs::write(&pid, "1\n").unwrap();
        let err = PidFile::claim(&pid, &sock, "wg0").unwrap_err().to_string();
        assert!(
            err.contains("already runs") && err.contains("pid 1"),
            "{err}"
        );
        // A dead one: a pid far above pid_max.
        std::fs::write(&pid, "2147483000\n").unwrap();
        std::fs::write(&sock, "").unwrap();
        let claimed = PidFile::claim(&pid, &sock, "wg0").unwrap();
        assert_eq!(read_pid(&pid), Some(std::process::id() as i32));
        assert!(!sock.exists(), "stale socket must be removed");
        drop(claimed);
        assert!(!pid.exists());
    }

    /// Older releases wrote `<iface>.pid.tmp` and followed a symlink planted there.
    #[test]
    fn the_pid_file_is_never_written_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let pid = dir.path().join("wg0.pid");
        let sock = dir.path().join("wg0.sock");
        std::os::unix::fs::symlink(&victim, dir.path().join("wg0.pid.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".wg0.pid.tmp.1.0000000000000000"))
            .unwrap();
        let claimed = PidFile::claim(&pid, &sock, "wg0").unwrap();
        assert_eq!(read_pid(&pid), Some(std::process::id() as i32));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        drop(claimed);

        // The kept-interface marker neither truncates nor creates through a symlink.
        let kept = dir.path().join("wg0.kept");
        std::os::unix::fs::symlink(&victim, &kept).unwrap();
        mark_kept_interface(&kept, true);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let plain = dir.path().join("wg1.kept");
        mark_kept_interface(&plain, true);
        assert!(plain.is_file());
        mark_kept_interface(&plain, false);
        assert!(!plain.exists());
    }

    #[test]
    fn notify_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(path.into_os_string()),
        };
        notifier.notify("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
