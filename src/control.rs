//! The control socket protocol: one JSON request line, one JSON response line, over
//! `<runtime-dir>/<iface>.sock` (0600, so only root talks to the daemon). Shared by the daemon
//! (server) and the `status`/`peers`/`reload`/`down` commands (clients).

use serde::{Deserialize, Serialize};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Upper bound on a request line: requests are tiny; anything longer is not a client of ours.
pub const MAX_REQUEST_BYTES: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Blocks until a reload newer than `after` has finished, then reports it.
    WaitReload {
        after: u64,
    },
    /// `wgmesh down`: stop, and remove the interface even under `--keep-interface`.
    Down,
}

/// `status --json` (DESIGN.md §5). Keys are only ever added, never renamed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusReport {
    pub interface: String,
    pub backend: String,
    pub public_key: String,
    pub mesh_ipv4: String,
    pub mesh_ipv6: String,
    pub listen_port: u16,
    pub control_port: u16,
    pub advertised_routes: Vec<String>,
    pub peers: Vec<PeerReport>,
    /// What STUN tells about the path to the internet ("disabled" with `--stun none`).
    pub nat_type: String,
    /// Our public address as STUN saw it (the control port's mapping).
    pub public_endpoint: Option<String>,
    pub pid: u32,
    pub reload: ReloadReport,
    pub reconcile: ReconcileCounters,
    /// Control-port datagrams since the daemon started.
    #[serde(default)]
    pub exchange: ExchangeCounters,
    /// This daemon's version (null from a daemon older than the field: `status` may run a newer
    /// binary than the daemon during an upgrade).
    #[serde(default)]
    pub version: Option<String>,
    /// The name this host announces to the mesh.
    #[serde(default)]
    pub name: Option<String>,
    /// Members refused because another member already holds their mesh address here (the
    /// incumbent keeps it; issue 13, docs/exchange-protocol.md "Address ownership").
    #[serde(default)]
    pub contested: Vec<ContestedReport>,
    /// The `accept-routes` policy in force (null from a daemon older than the field).
    #[serde(default)]
    pub accept_routes: Option<String>,
    /// Which members may relay for this host (`any`, `none` or key prefixes).
    #[serde(default)]
    pub relays: Option<String>,
    /// Routes members advertise that this host refused, each with why.
    #[serde(default)]
    pub refused_routes: Vec<RefusedRouteReport>,
    /// With `--relay`: the pairs this host carries (their WireGuard datagrams, end to end
    /// encrypted; issue 14).
    #[serde(default)]
    pub relay_pairs: Vec<RelayPairReport>,
}

/// A pair of members this relay carries: one relay port faces each.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayPairReport {
    pub members: [RelaySideReport; 2],
    /// Seconds since a datagram was last forwarded (or the pair was last asked for).
    pub idle_secs: u64,
}

/// One member of a relayed pair, as the relay sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelaySideReport {
    pub public_key: String,
    /// The relay port this member sends to.
    pub port: u16,
    /// Where its datagrams come from (null until it has sent one).
    pub latched: Option<String>,
    /// Datagrams and bytes forwarded from this member to the other.
    pub datagrams: u64,
    pub bytes: u64,
}

/// An advertised route this host does not install.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefusedRouteReport {
    pub public_key: String,
    pub route: String,
    /// A stable code: `outside_policy`, `shorter_than_minimum`, `held_by_incumbent`,
    /// `more_specific_of_incumbent`, `covers_protected_address`, ...
    pub reason: String,
    /// The reason in words, naming the other member or address involved.
    pub detail: String,
}

/// A member not installed because its address is taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContestedReport {
    pub public_key: String,
    pub mesh_ipv4: String,
    /// The member that holds the address here.
    pub holder: String,
}

/// What the control port received: how many datagrams cost an AEAD open, and how many were
/// dropped, by reason (`rate_limited`, `bad_aead`, `replay`, ...; only non-zero reasons).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExchangeCounters {
    pub aead_opens: u64,
    pub dropped: std::collections::BTreeMap<String, u64>,
    /// The clock offset (seconds, sender minus us) of the last message dropped as stale: a
    /// member whose clock is off shows here, not only in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_clock_offset_secs: Option<i64>,
}

/// Reconcile totals since the daemon started: a steady mesh adds runs but no writes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconcileCounters {
    pub runs: u64,
    pub device_writes: u64,
    pub route_writes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerReport {
    pub public_key: String,
    pub mesh_ipv4: String,
    pub mesh_ipv6: String,
    pub endpoint: Option<String>,
    pub last_handshake_unix: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub source: String,
    pub routes: Vec<String>,
    /// The member (public key) this peer's traffic goes through when no direct path works.
    pub relayed_via: Option<String>,
    /// The version the member announced; null for a release that does not announce one.
    #[serde(default)]
    pub version: Option<String>,
    /// The name the member announced, as this host shows it: bare, or `name~<key prefix>` when
    /// another member was verified under it first (`name_contested`). Null if it announced none.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub name_contested: bool,
}

/// The outcome of the latest reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Counts finished reloads; `wgmesh reload` waits for it to pass the value it saw.
    pub generation: u64,
    pub ok: bool,
    /// Why the file was rejected, or warnings (ignored keys, missing file).
    pub messages: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    Status(Box<StatusReport>),
    Reload(ReloadReport),
    /// The answer to [`Request::Down`]: the daemon is shutting down.
    Stopping {
        stopping_pid: u32,
    },
    Error {
        error: String,
    },
}

/// Why a client could not talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no wgmesh daemon is running on interface {interface} (no control socket at {path})")]
    NotRunning { interface: String, path: String },
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: unexpected response: {detail}")]
    Protocol { path: String, detail: String },
}

/// Sends one request and reads the response.
pub fn call(
    socket: &Path,
    interface: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let path = socket.display().to_string();
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning {
                interface: interface.to_owned(),
                path: path.clone(),
            }
        }
        _ => io(err),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|e| ClientError::Protocol {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut response = String::new();
    BufReader::new(stream)
        .read_line(&mut response)
        .map_err(io)?;
    serde_json::from_str(&response).map_err(|err| ClientError::Protocol {
        path,
        detail: err.to_string(),
    })
}
