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

    /// Bounds each connect, read and write by `timeout`.
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
        let response = self.exchange(&request)?;
        protocol::parse_errno(&response)
    }

    /// Whether a process answers on the socket: a `get` that completes with errno 0.
    pub fn is_alive(&self) -> bool {
        self.exchange("get=1\n\n")
            .is_ok_and(|response| response.ends_with("errno=0\n\n"))
    }

    /// Sends one request and reads the answer up to its blank line.
    pub fn exchange(&self, request: &str) -> Result<Zeroizing<String>, UapiError> {
        let io = |operation| {
            let socket = self.socket.clone();
            move |source| UapiError::Io {
                socket,
                operation,
                source,
            }
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(io("connect"))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(io("set timeout"))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io("set timeout"))?;
        stream.write_all(request.as_bytes()).map_err(io("write"))?;
        let mut buffer = Zeroizing::new(Vec::with_capacity(4096));
        let mut chunk = Zeroizing::new([0u8; 16 * 1024]);
        loop {
            let read = stream.read(&mut chunk[..]).map_err(io("read"))?;
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
