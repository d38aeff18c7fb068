//! Structured logs on stderr (journald captures them), text or JSON, with a level that a reload
//! can change.

use crate::cli::LogFormat;
use anyhow::Context as _;
use std::io::IsTerminal as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, reload};

/// Changes the log level of the running process.
#[derive(Debug, Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl LogHandle {
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        let filter = filter(level)?;
        self.0.reload(filter).context("cannot change the log level")
    }
}

fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    if !wgmesh_reload::LOG_LEVELS.contains(&level) {
        anyhow::bail!(
            "invalid log level {level:?}: use one of {}",
            wgmesh_reload::LOG_LEVELS.join(", ")
        );
    }
    Ok(EnvFilter::new(level))
}

pub fn init(level: &str, format: LogFormat) -> anyhow::Result<LogHandle> {
    let (filter, handle) = reload::Layer::new(filter(level)?);
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .context("cannot set up logging")?;
    Ok(LogHandle(handle))
}

/// Rate-limits a repeated failure: the first occurrence logs, then at most one line per
/// `interval` that says how many were suppressed. Keyed by a short string (peer key, route).
#[derive(Debug)]
pub struct RepeatLimiter {
    interval: std::time::Duration,
    seen: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

impl RepeatLimiter {
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            seen: std::collections::HashMap::new(),
        }
    }

    /// Returns `Some(suppressed)` when this occurrence should be logged.
    pub fn should_log(&mut self, key: &str, now: std::time::Instant) -> Option<u64> {
        match self.seen.get_mut(key) {
            None => {
                self.seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
            Some((last, suppressed)) if now.duration_since(*last) >= self.interval => {
                let count = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(count)
            }
            Some((_, suppressed)) => {
                *suppressed += 1;
                None
            }
        }
    }

    /// Forgets a key once the failure has cleared, so a new failure logs at once.
    pub fn clear(&mut self, key: &str) {
        self.seen.remove(key);
    }

    /// Whether `key` has been seen (and not cleared).
    pub fn tracks(&self, key: &str) -> bool {
        self.seen.contains_key(key)
    }

    /// How many keys are tracked: callers keying by something a peer controls bound it.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn repeats_are_suppressed_then_summarised() {
        let mut limiter = RepeatLimiter::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(limiter.should_log("peer", start), Some(0));
        for i in 1..=10 {
            assert_eq!(
                limiter.should_log("peer", start + Duration::from_secs(i * 5)),
                None
            );
        }
        assert_eq!(limiter.should_log("other", start), Some(0));
        assert_eq!(
            limiter.should_log("peer", start + Duration::from_secs(61)),
            Some(10)
        );
        limiter.clear("peer");
        assert_eq!(
            limiter.should_log("peer", start + Duration::from_secs(62)),
            Some(0)
        );
    }
}
