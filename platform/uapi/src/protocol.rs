//! The wireguard-go UAPI text protocol, without IO.
//!
//! The protocol (<https://www.wireguard.com/xplatform/>) is `key=value` lines ending with a blank
//! line. A `set=1` request carries device keys, then one block per peer starting at `public_key`;
//! the answer is `errno=N`. A `get=1` answer lists the same keys plus counters and ends with
//! `errno=0`. wireguard-go answers errors with a negative errno (`errno=-22` for EINVAL).
//!
//! Keys travel as lowercase hex. The rendered request and the read response hold the private key,
//! so they live in [`Zeroizing`] buffers, and no error message ever quotes a value — only the line
//! number and the key name.

use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::{Duration, SystemTime};
use wgmesh_device::{DeviceState, DeviceUpdate, PeerConfig, PeerState};
use wgmesh_keys::{KEY_LEN, PresharedKey, PrivateKey, PublicKey};
use zeroize::{Zeroize, Zeroizing};

/// The largest response accepted. A peer takes roughly 300 bytes plus 20 per allowed IP, so this
/// leaves room for tens of thousands of peers while bounding what a misbehaving socket can make
/// us buffer and parse.
pub const MAX_RESPONSE_LEN: usize = 32 * 1024 * 1024;

/// Longest key name quoted in an error, so errors stay small on hostile input.
const MAX_QUOTED_KEY: usize = 40;

/// Why a UAPI exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// The device answered with a non-zero errno (wireguard-go sends it negated).
    #[error("wireguard-go rejected the request: errno={errno} ({})", describe_errno(*errno))]
    Errno { errno: i64 },
    /// The response broke the protocol. Values are never quoted: they may be keys.
    #[error("malformed UAPI response, line {line} (`{key}`): {reason}")]
    Malformed {
        line: usize,
        key: String,
        reason: &'static str,
    },
    /// The response ended without its `errno=` line.
    #[error("UAPI response ended without an errno line")]
    MissingErrno,
    #[error("UAPI response exceeds {MAX_RESPONSE_LEN} bytes")]
    TooLarge,
    #[error("UAPI socket {}: {operation}: {source}", socket.display())]
    Io {
        socket: std::path::PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
}

fn describe_errno(errno: i64) -> String {
    match i32::try_from(errno.unsigned_abs()) {
        Ok(code) if code != 0 => std::io::Error::from_raw_os_error(code).to_string(),
        _ => "unknown error".to_owned(),
    }
}

/// Renders the `set=1` request that applies `update`, blank line included.
///
/// Within a peer block the order matters to wireguard-go, which applies lines as it reads them:
/// `remove` ends the block, and `replace_allowed_ips` must come before the `allowed_ip` lines.
pub fn render_set_request(update: &DeviceUpdate) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(64 + update.peers.len() * 256));
    out.push_str("set=1\n");
    if let Some(key) = &update.private_key {
        let hex = Zeroizing::new(key.expose_hex());
        line(&mut out, "private_key", hex.as_str());
    }
    if let Some(port) = update.listen_port {
        line(&mut out, "listen_port", port);
    }
    for peer in &update.peers {
        line(&mut out, "public_key", peer.public_key.to_hex());
        if peer.remove {
            out.push_str("remove=true\n");
            continue;
        }
        if let Some(psk) = &peer.preshared_key {
            let hex = Zeroizing::new(psk.expose_hex());
            line(&mut out, "preshared_key", hex.as_str());
        }
        if let Some(endpoint) = peer.endpoint {
            // `SocketAddr`'s Display brackets IPv6 (`[2001:db8::1]:51820`), as wireguard-go wants.
            line(&mut out, "endpoint", endpoint);
        }
        if let Some(keepalive) = peer.persistent_keepalive {
            line(&mut out, "persistent_keepalive_interval", keepalive);
        }
        if peer.replace_allowed_ips {
            out.push_str("replace_allowed_ips=true\n");
        }
        for net in &peer.allowed_ips {
            line(&mut out, "allowed_ip", net);
        }
    }
    out.push('\n');
    out
}

/// Renders a state as wireguard-go answers `get=1`. The inverse of [`parse_get_response`], used
/// by tests and by fake UAPI servers.
pub fn render_get_response(state: &DeviceState) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    if let Some(key) = &state.private_key {
        let hex = Zeroizing::new(key.expose_hex());
        line(&mut out, "private_key", hex.as_str());
    }
    line(&mut out, "listen_port", state.listen_port);
    for peer in &state.peers {
        let config = &peer.config;
        line(&mut out, "public_key", config.public_key.to_hex());
        let psk = Zeroizing::new(
            config
                .preshared_key
                .as_ref()
                .map_or_else(|| "0".repeat(2 * KEY_LEN), PresharedKey::expose_hex),
        );
        line(&mut out, "preshared_key", psk.as_str());
        out.push_str("protocol_version=1\n");
        if let Some(endpoint) = config.endpoint {
            line(&mut out, "endpoint", endpoint);
        }
        let since_epoch = peer
            .last_handshake
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .unwrap_or_default();
        line(&mut out, "last_handshake_time_sec", since_epoch.as_secs());
        line(
            &mut out,
            "last_handshake_time_nsec",
            since_epoch.subsec_nanos(),
        );
        line(&mut out, "tx_bytes", peer.tx_bytes);
        line(&mut out, "rx_bytes", peer.rx_bytes);
        line(
            &mut out,
            "persistent_keepalive_interval",
            config.persistent_keepalive.unwrap_or(0),
        );
        for net in &config.allowed_ips {
            line(&mut out, "allowed_ip", net);
        }
    }
    out.push_str("errno=0\n\n");
    out
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

/// Parses the answer to a `set=1` request (`errno=N` and a blank line).
pub fn parse_errno(text: &str) -> Result<(), UapiError> {
    if text.len() > MAX_RESPONSE_LEN {
        return Err(UapiError::TooLarge);
    }
    let mut lines = text.split('\n').enumerate();
    for (index, raw) in lines.by_ref() {
        if raw.is_empty() {
            continue;
        }
        let (key, value) = split_line(index + 1, raw)?;
        if key != "errno" {
            return Err(malformed(
                index + 1,
                key,
                "expected only errno in a set response",
            ));
        }
        check_errno(index + 1, value)?;
        return expect_end(lines);
    }
    Err(UapiError::MissingErrno)
}

/// Parses a `get=1` answer into a normalised [`DeviceState`].
///
/// Unknown keys (`protocol_version`, `fwmark`, anything newer) are ignored. The work is linear in
/// the input, which is capped at [`MAX_RESPONSE_LEN`]; no input makes it panic.
pub fn parse_get_response(text: &str) -> Result<DeviceState, UapiError> {
    if text.len() > MAX_RESPONSE_LEN {
        return Err(UapiError::TooLarge);
    }
    let mut state = DeviceState::default();
    let mut handshake: Option<Handshake> = None;
    let mut lines = text.split('\n').enumerate();
    for (index, raw) in lines.by_ref() {
        let number = index + 1;
        if raw.is_empty() {
            // The blank line ends the response; errno must have come before it.
            break;
        }
        let (key, value) = split_line(number, raw)?;
        match key {
            "errno" => {
                finish_peer(&mut state, handshake.take(), number)?;
                check_errno(number, value)?;
                expect_end(lines)?;
                state.normalise();
                return Ok(state);
            }
            "private_key" => {
                let mut bytes = decode_key(number, key, value)?;
                state.private_key =
                    (bytes != [0; KEY_LEN]).then(|| PrivateKey::from_bytes_clamped(bytes));
                bytes.zeroize();
            }
            "listen_port" => state.listen_port = number_value(number, key, value)?,
            "public_key" => {
                finish_peer(&mut state, handshake.take(), number)?;
                let key = PublicKey::from_bytes(decode_key(number, key, value)?);
                state.peers.push(PeerState::new(PeerConfig::new(key)));
                handshake = Some(Handshake::default());
            }
            "preshared_key"
            | "endpoint"
            | "last_handshake_time_sec"
            | "last_handshake_time_nsec"
            | "rx_bytes"
            | "tx_bytes"
            | "persistent_keepalive_interval"
            | "allowed_ip" => {
                let (Some(peer), Some(handshake)) = (state.peers.last_mut(), handshake.as_mut())
                else {
                    return Err(malformed(number, key, "peer key before any public_key"));
                };
                peer_line(peer, handshake, number, key, value)?;
            }
            _ => {}
        }
    }
    Err(UapiError::MissingErrno)
}

/// The two halves of a peer's last handshake time, joined when the peer block ends.
#[derive(Default)]
struct Handshake {
    sec: u64,
    nsec: u32,
}

fn peer_line(
    peer: &mut PeerState,
    handshake: &mut Handshake,
    number: usize,
    key: &str,
    value: &str,
) -> Result<(), UapiError> {
    match key {
        "preshared_key" => {
            let mut bytes = decode_key(number, key, value)?;
            peer.config.preshared_key =
                (bytes != [0; KEY_LEN]).then(|| PresharedKey::from_bytes(bytes));
            bytes.zeroize();
        }
        "endpoint" => peer.config.endpoint = Some(parse_endpoint(number, value)?),
        "last_handshake_time_sec" => handshake.sec = number_value(number, key, value)?,
        "last_handshake_time_nsec" => {
            let nsec: u32 = number_value(number, key, value)?;
            if nsec >= 1_000_000_000 {
                return Err(malformed(number, key, "nanoseconds out of range"));
            }
            handshake.nsec = nsec;
        }
        "rx_bytes" => peer.rx_bytes = number_value(number, key, value)?,
        "tx_bytes" => peer.tx_bytes = number_value(number, key, value)?,
        "persistent_keepalive_interval" => {
            let seconds: u16 = number_value(number, key, value)?;
            peer.config.persistent_keepalive = (seconds != 0).then_some(seconds);
        }
        "allowed_ip" => {
            let net: IpNet = value
                .parse()
                .map_err(|_| malformed(number, key, "not an IP prefix"))?;
            peer.config.allowed_ips.push(net);
        }
        _ => {}
    }
    Ok(())
}

/// Stores the handshake time of the peer whose block just ended. 0 s and 0 ns means "never".
fn finish_peer(
    state: &mut DeviceState,
    handshake: Option<Handshake>,
    number: usize,
) -> Result<(), UapiError> {
    let (Some(handshake), Some(peer)) = (handshake, state.peers.last_mut()) else {
        return Ok(());
    };
    if handshake.sec == 0 && handshake.nsec == 0 {
        return Ok(());
    }
    let since_epoch = Duration::new(handshake.sec, handshake.nsec);
    peer.last_handshake = Some(
        SystemTime::UNIX_EPOCH
            .checked_add(since_epoch)
            .ok_or_else(|| malformed(number, "last_handshake_time_sec", "time out of range"))?,
    );
    Ok(())
}

fn split_line(number: usize, raw: &str) -> Result<(&str, &str), UapiError> {
    raw.split_once('=')
        .ok_or_else(|| malformed(number, "", "expected key=value"))
}

fn check_errno(number: usize, value: &str) -> Result<(), UapiError> {
    let errno: i64 = number_value(number, "errno", value)?;
    if errno == 0 {
        Ok(())
    } else {
        Err(UapiError::Errno { errno })
    }
}

/// After `errno=`, only the terminating blank line (or nothing, if the caller stripped it).
fn expect_end<'a>(rest: impl Iterator<Item = (usize, &'a str)>) -> Result<(), UapiError> {
    for (index, raw) in rest {
        if !raw.is_empty() {
            let key = raw.split_once('=').map_or("", |(key, _)| key);
            return Err(malformed(index + 1, key, "data after errno"));
        }
    }
    Ok(())
}

fn number_value<T: std::str::FromStr>(
    number: usize,
    key: &str,
    value: &str,
) -> Result<T, UapiError> {
    // `FromStr` for integers accepts a leading `+`; wireguard-go never sends one, and rejecting
    // it keeps render → parse a bijection.
    if value.starts_with('+') {
        return Err(malformed(number, key, "not a number"));
    }
    value
        .parse()
        .map_err(|_| malformed(number, key, "not a number in range"))
}

fn decode_key(number: usize, key: &str, value: &str) -> Result<[u8; KEY_LEN], UapiError> {
    let mut bytes = [0; KEY_LEN];
    hex::decode_to_slice(value, &mut bytes)
        .map_err(|_| malformed(number, key, "not a 32-byte hex key"))?;
    Ok(bytes)
}

/// wireguard-go prints endpoints with Go's `net.UDPAddr` syntax. Rust parses the same forms
/// except an IPv6 zone (`[fe80::1%eth0]:51820`); a zone that is not numeric is dropped, so the
/// diff sees a different endpoint and at worst rewrites it.
fn parse_endpoint(number: usize, value: &str) -> Result<SocketAddr, UapiError> {
    if let Ok(endpoint) = value.parse() {
        return Ok(endpoint);
    }
    let bad = || malformed(number, "endpoint", "not an IP:port endpoint");
    let inner = value.strip_prefix('[').ok_or_else(bad)?;
    let (host, port) = inner.split_once("]:").ok_or_else(bad)?;
    let (address, zone) = host.split_once('%').ok_or_else(bad)?;
    let address = address.parse().map_err(|_| bad())?;
    let port = port.parse().map_err(|_| bad())?;
    let scope = zone.parse().unwrap_or(0);
    Ok(SocketAddr::V6(SocketAddrV6::new(address, port, 0, scope)))
}

fn malformed(line: usize, key: &str, reason: &'static str) -> UapiError {
    // Quote only what looks like a protocol key name: a line may be garbage holding a key's hex.
    let printable = !key.is_empty()
        && key.len() <= MAX_QUOTED_KEY
        && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let key = if printable { key } else { "<unrecognised>" };
    UapiError::Malformed {
        line,
        key: key.to_owned(),
        reason,
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
