//! The supervised wireguard-go process, as both userspace backends (Linux here, macOS in
//! `wgmesh-macos`) run it: where its output goes, reaping it, stopping it, and spacing out the
//! restarts of one that keeps exiting.

use crate::backend::ChildOutput;
use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A process that lived at least this long before exiting is restarted at once.
const STABLE_RUN: Duration = Duration::from_secs(60);
/// Upper bound on the wait before restarting a process that keeps exiting.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Restarts of a wireguard-go that keeps exiting soon after it starts (a crash loop, a broken
/// binary, something killing it) are spaced out: at once, then 2 s, 4 s, ... up to
/// [`MAX_RESTART_DELAY`], so the daemon neither spins on it nor floods the log. Time is passed
/// in so the schedule is testable.
#[derive(Debug, Default, Clone)]
pub struct RestartBackoff {
    /// When the running (or last) process was started.
    last_start: Option<Instant>,
    /// Consecutive exits within [`STABLE_RUN`] of a start.
    quick_exits: u32,
    /// Set when an exit was noticed: no restart before this.
    restart_at: Option<Instant>,
}

impl RestartBackoff {
    /// A process was (re)started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.last_start = Some(now);
        self.restart_at = None;
    }

    /// Before replacing a process that exited: `Ok` to start it now, or how long is left to
    /// wait. The first look at an exit that must wait is logged (once, not on every look).
    pub fn may_restart(&mut self, interface: &str, now: Instant) -> Result<(), RestartWait> {
        let noticed = self.restart_at.is_none();
        let remaining = self.remaining(now);
        if remaining.is_zero() {
            return Ok(());
        }
        if noticed {
            tracing::warn!(
                %interface,
                quick_exits = self.quick_exits,
                delay_secs = remaining.as_secs(),
                "wireguard-go keeps exiting soon after it starts ({} times in a row); restarting it in {} s",
                self.quick_exits,
                remaining.as_secs()
            );
        }
        Err(RestartWait {
            quick_exits: self.quick_exits,
            remaining,
        })
    }

    /// Called on every look at a dead device; returns the delay still to wait (zero: restart
    /// now). The first look at a given exit decides the delay.
    fn remaining(&mut self, now: Instant) -> Duration {
        let at = *self.restart_at.get_or_insert_with(|| {
            let quick = self
                .last_start
                .is_some_and(|t| now.saturating_duration_since(t) < STABLE_RUN);
            self.quick_exits = if quick { self.quick_exits + 1 } else { 0 };
            now + restart_delay(self.quick_exits)
        });
        at.saturating_duration_since(now)
    }
}

/// None for the first quick exit (or one after a stable run), then 2 s doubling per further
/// quick exit, capped.
fn restart_delay(quick_exits: u32) -> Duration {
    if quick_exits <= 1 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (quick_exits - 1).min(16)).min(MAX_RESTART_DELAY)
}

/// Why a dead wireguard-go is not restarted yet ([`RestartBackoff::may_restart`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "it exited {quick_exits} times in a row soon after starting; next start in {} s",
    remaining.as_secs().max(1)
)]
pub struct RestartWait {
    pub quick_exits: u32,
    pub remaining: Duration,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_while_the_process_keeps_exiting_and_reset_after_a_stable_run() {
        let t0 = Instant::now();
        let mut backoff = RestartBackoff::default();
        backoff.started(t0);
        // The first exit restarts at once, even a quick one.
        let t = t0 + Duration::from_secs(1);
        assert_eq!(backoff.remaining(t), Duration::ZERO);
        backoff.started(t);
        // Quick exits: 2 s, then 4 s, 8 s, 16 s, then capped.
        let mut now = t;
        for expected in [2, 4, 8, 16, 30, 30] {
            now += Duration::from_secs(1);
            assert_eq!(backoff.remaining(now), Duration::from_secs(expected));
            // Looking again does not push the restart further out.
            assert_eq!(
                backoff.remaining(now + Duration::from_secs(1)),
                Duration::from_secs(expected - 1)
            );
            now += Duration::from_secs(expected);
            assert_eq!(backoff.remaining(now), Duration::ZERO);
            backoff.started(now);
        }
        // A process that ran for a while is restarted at once, and the count starts over.
        now += STABLE_RUN;
        assert_eq!(backoff.remaining(now), Duration::ZERO);
        assert_eq!(backoff.quick_exits, 0);
    }

    #[test]
    fn restart_delays_are_bounded() {
        assert_eq!(restart_delay(0), Duration::ZERO);
        assert_eq!(restart_delay(1), Duration::ZERO);
        assert_eq!(restart_delay(2), Duration::from_secs(2));
        assert_eq!(restart_delay(u32::MAX), MAX_RESTART_DELAY);
    }
}
