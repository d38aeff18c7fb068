//! The supervised wireguard-go process, as both userspace backends (Linux here, macOS in
//! `wgmesh-macos`) run it: where its output goes, reaping it, and stopping it.

use crate::backend::ChildOutput;
use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

impl ChildOutput {
    /// wireguard-go's stdout and stderr: pipes for [`forward_output`], nothing, or one
    /// file opened for appending (0600).
    pub fn stdio(&self) -> std::io::Result<(Stdio, Stdio)> {
        match self {
            Self::Log => Ok((Stdio::piped(), Stdio::piped())),
            Self::Null => Ok((Stdio::null(), Stdio::null())),
            Self::File(path) => {
                use std::os::unix::fs::OpenOptionsExt as _;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)?;
                let copy = file.try_clone()?;
                Ok((Stdio::from(file), Stdio::from(copy)))
            }
        }
    }
}

/// Copies a spawned wireguard-go's piped output ([`ChildOutput::Log`]) into the log, one event
/// per line, on small threads that end at EOF.
pub fn forward_output(interface: &str, child: &mut std::process::Child) {
    if let Some(stdout) = child.stdout.take() {
        forward_lines(interface, stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        forward_lines(interface, stderr);
    }
}

fn forward_lines(interface: &str, stream: impl Read + Send + 'static) {
    let interface = interface.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("wg-go-log-{interface}"))
        .spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                // At LOG_LEVEL=error what it prints is an error, except the boxed banner about
                // kernel support that it prints at every start regardless; at `verbose` (the
                // daemon at debug level) its other lines are `DEBUG:` lines.
                if line.starts_with("ERROR") {
                    tracing::warn!(target: "wireguard_go", interface = %interface, "{line}");
                } else {
                    tracing::debug!(target: "wireguard_go", interface = %interface, "{line}");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot forward wireguard-go output");
    }
}

/// Reaps `child` if it has exited (and forgets it); returns whether it had.
pub fn reap_if_exited(child: &mut Option<Child>, interface: &str) -> bool {
    let Some(running) = child.as_mut() else {
        return false;
    };
    match running.try_wait() {
        Ok(Some(status)) => {
            tracing::warn!(interface = %interface, %status, "wireguard-go exited");
            *child = None;
            true
        }
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(interface = %interface, %error, "cannot poll wireguard-go");
            false
        }
    }
}

/// Stops `child`: SIGTERM, up to `timeout` for it to exit, then SIGKILL; reaps it either way.
/// The error is the final wait's.
pub fn stop(mut child: Child, interface: &str, timeout: Duration) -> std::io::Result<()> {
    if child.try_wait().ok().flatten().is_some() {
        return Ok(());
    }
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH: it exited between the check and the signal; the wait below reaps it.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!(interface = %interface, "wireguard-go ignored SIGTERM; killing it");
    let _ = child.kill();
    child.wait().map(drop)
}
