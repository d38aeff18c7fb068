//! A blocking client for one wireguard-go UAPI socket.

use crate::protocol::{self, MAX_RESPONSE_LEN, UapiError};
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wgmesh_device::{DeviceState, DeviceUpdate};
use zeroize::Zeroizing;

/// Where wireguard-go puts `<interface>.sock` (`/var/run/wireguard` on Linux and macOS).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/wireguard";

/// Default bound on each read and write. A `set` with thousands of peers takes wireguard-go tens
/// of milliseconds; a socket silent for this long belongs to a hung process.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra time a `set` may take per peer it touches, on top of the base timeout. wireguard-go
/// sends a handshake initiation from inside the set for each peer whose keepalive turns on, and
/// that `sendmsg` can block on a slow egress path (measured here: 10–30 ms per peer).
pub const SET_TIMEOUT_PER_PEER: Duration = Duration::from_millis(50);

/// Talks to `<socket_dir>/<interface>.sock`, one request per connection (wireguard-go serves
/// several per connection, but a fresh connection per request leaves no state to go stale).
#[derive(Debug, Clone)]
pub struct UapiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl UapiClient {
    pub fn new(socket_dir: &Path, interface: &str) -> Self {
        Self {
            socket: socket_path(socket_dir, interface),
            timeout: DEFAULT_IO_TIMEOUT,
        }
    }

    /// Bounds each exchange (writing the request and reading the whole answer) by `timeout`.
    /// Connecting to a Unix socket does not wait unless its backlog is full.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Reads the device (`get=1`), normalised.
    pub fn get(&self) -> Result<DeviceState, UapiError> {
        let response = self.exchange("get=1\n\n")?;
        protocol::parse_get_response(&response)
    }

    /// Applies `update` in one `set=1` request. wireguard-go applies lines as it reads them, so
    /// on an error the lines before the bad one have taken effect; the next reconcile's diff
    /// finishes the job.
    pub fn set(&self, update: &DeviceUpdate) -> Result<(), UapiError> {
        let request = protocol::render_set_request(update);
        let peers = u32::try_from(update.peers.len()).unwrap_or(u32::MAX);
        let timeout = self
            .timeout
            .saturating_add(SET_TIMEOUT_PER_PEER.saturating_mul(peers));
        let response = self.exchange_with_timeout(&request, timeout)?;
        protocol::parse_errno(&response)
    }

    /// Whether a process answers on the socket: a `get` that completes with errno 0.
    pub fn is_alive(&self) -> bool {
        self.exchange("get=1\n\n")
            .is_ok_and(|response| response.ends_with("errno=0\n\n"))
    }

    /// Sends one request and reads the answer up to its blank line.
    pub fn exchange(&self, request: &str) -> Result<Zeroizing<String>, UapiError> {
        self.exchange_with_timeout(request, self.timeout)
    }

    fn exchange_with_timeout(
        &self,
        request: &str,
        timeout: Duration,
    ) -> Result<Zeroizing<String>, UapiError> {
        let io = |operation| {
            let socket = self.socket.clone();
            move |source| UapiError::Io {
                socket,
                operation,
                source,
            }
        };
        let deadline = std::time::Instant::now() + timeout;
        let mut stream = UnixStream::connect(&self.socket).map_err(io("connect"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("set timeout"))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(io("set timeout"))?;
        stream.write_all(request.as_bytes()).map_err(io("write"))?;
        let mut buffer = Zeroizing::new(Vec::with_capacity(4096));
        let mut chunk = Zeroizing::new([0u8; 16 * 1024]);
        loop {
            // A total deadline, not a per-read one: a trickling peer cannot stretch it.
            let remaining = deadline
                .checked_duration_since(std::time::Instant::now())
                .filter(|left| !left.is_zero())
                .ok_or_else(|| io("read")(std::io::ErrorKind::TimedOut.into()))?;
            stream
                .set_read_timeout(Some(remaining))
                .map_err(io("set timeout"))?;
            let read = stream.read(&mut chunk[..]).map_err(|e| {
                // A read timeout surfaces as EAGAIN; say what it means.
                let e = if e.kind() == std::io::ErrorKind::WouldBlock {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no complete answer within {timeout:?}"),
                    )
                } else {
                    e
                };
                io("read")(e)
            })?;
            if read == 0 {
                break;
            }
            // Only the tail can complete a "\n\n" that was not there before.
            let scan_from = buffer.len().saturating_sub(1);
            buffer.extend_from_slice(&chunk[..read]);
            if buffer.len() > MAX_RESPONSE_LEN {
                return Err(UapiError::TooLarge);
            }
            if buffer[scan_from..].windows(2).any(|w| w == b"\n\n") {
                break;
            }
        }
        let text = std::str::from_utf8(&buffer).map_err(|_| UapiError::Malformed {
            line: 0,
            key: String::new(),
            reason: "response is not UTF-8",
        })?;
        Ok(Zeroizing::new(text.to_owned()))
    }
}

/// `<socket_dir>/<interface>.sock`.
pub fn socket_path(socket_dir: &Path, interface: &str) -> PathBuf {
    socket_dir.join(format!("{interface}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;
    use std::os::unix::net::UnixListener;

    /// Serves one connection: reads the request up to its blank line, answers `reply`.
    fn serve_once(dir: &Path, reply: &'static str) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(socket_path(dir, "wgtest0")).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\n" {
                    break;
                }
                request.push_str(&line);
            }
            (&stream).write_all(reply.as_bytes()).unwrap();
            request
        })
    }

    #[test]
    fn get_reads_up_to_the_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        // The server keeps the connection open after answering, as wireguard-go does.
        let server = serve_once(dir.path(), "listen_port=4242\nerrno=0\n\n");
        let client = UapiClient::new(dir.path(), "wgtest0");
        let state = client.get().unwrap();
        assert_eq!(state.listen_port, 4242);
        assert_eq!(server.join().unwrap(), "get=1\n");
    }

    #[test]
    fn set_reports_errno() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve_once(dir.path(), "errno=-22\n\n");
        let client = UapiClient::new(dir.path(), "wgtest0");
        let update = DeviceUpdate {
            listen_port: Some(1),
            ..DeviceUpdate::default()
        };
        let err = client.set(&update).unwrap_err();
        assert!(matches!(err, UapiError::Errno { errno: -22 }), "{err}");
        assert_eq!(server.join().unwrap(), "set=1\nlisten_port=1\n");
    }

    #[test]
    fn silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let _listener = UnixListener::bind(socket_path(dir.path(), "wgtest0")).unwrap();
        let client =
            UapiClient::new(dir.path(), "wgtest0").with_timeout(Duration::from_millis(100));
        let err = client.get().unwrap_err();
        assert!(
            matches!(
                err,
                UapiError::Io {
                    operation: "read",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!client.is_alive());
    }

    #[test]
    fn missing_socket_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let client = UapiClient::new(dir.path(), "wgtest0");
        let err = client.get().unwrap_err();
        assert!(
            matches!(
                err,
                UapiError::Io {
                    operation: "connect",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("wgtest0.sock"), "{err}");
    }
}
