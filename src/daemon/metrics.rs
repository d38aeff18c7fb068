//! `--metrics-listen ADDR`: Prometheus metrics over a minimal HTTP/1.1 task. What is exposed,
//! its encoding and the HTTP exchange live in `wgmesh_metrics`; this module binds the socket,
//! moves bytes within the bounds that crate sets, and builds each scrape's snapshot from the
//! same state `wgmesh status` reports.

use super::state::{self, LastPassCell, NodeInfo, Shared};
use crate::control::{PeerReport, ReloadReport};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wgmesh_exchange::DropReason;
use wgmesh_metrics::http::{self, RequestError, Response};
use wgmesh_metrics::{DhtTotals, MeshMetrics, MeshSnapshot, PeerSample, ReconcileTotals};

/// Binds the metrics socket. Called first thing at startup, so a taken or refused address
/// stops the daemon before it touches the interface.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    if !is_loopback(addr) {
        tracing::warn!(
            address = %addr,
            "metrics served on {addr}, which is not a loopback address: whoever reaches it sees \
             the members (key prefixes) and their traffic; prefer 127.0.0.1 or a firewall"
        );
    }
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot serve metrics on {addr} (--metrics-listen)"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot serve metrics on {addr} (--metrics-listen)"))?;
    Ok(listener)
}

/// Whether only this host can reach `addr` (IPv4-mapped loopback included).
fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Serves `GET /metrics` until cancelled: one request per connection, at most
/// [`http::MAX_CONNECTIONS`] at a time, each bounded in size and time.
pub async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<MeshMetrics>,
    cancel: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "cannot serve metrics");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "serving Prometheus metrics at http://{addr}/metrics");
    }
    let slots = Arc::new(Semaphore::new(http::MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    let mut failures = crate::logging::RepeatLimiter::new(std::time::Duration::from_secs(60));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, mostly: say so once a minute and back off a little.
                if let Some(suppressed) = failures.should_log("accept", std::time::Instant::now()) {
                    tracing::warn!(error = %err, suppressed, "metrics: cannot accept a connection");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Busy: close at once rather than queue (a scraper retries at its next interval).
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let cancel = cancel.clone();
        connections.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = answer(stream, &metrics) => {}
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

async fn answer(mut stream: TcpStream, metrics: &MeshMetrics) {
    let mut received = Vec::with_capacity(1024);
    let response =
        match tokio::time::timeout(http::READ_TIMEOUT, read_head(&mut stream, &mut received)).await
        {
            Ok(Ok(Some(request))) => http::respond(&request, |format| metrics.encode(format)),
            // Closed (or failed) before a whole head: nobody to answer.
            Ok(Ok(None)) => return,
            Ok(Err(err)) => Response::refused(&err),
            Err(_elapsed) => Response::timed_out(),
        };
    let _ = tokio::time::timeout(http::WRITE_TIMEOUT, async {
        stream.write_all(&response.to_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    // Closing with unread input (a refused oversized head, a body) makes the kernel send a
    // reset, which can destroy the response before the client reads it: take what is left
    // first, bounded in bytes and time ("lingering close").
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// How long, and how many bytes, a closing connection's leftover input is read and dropped.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Reads until a whole request head arrived; `parse_request` refuses it past its size bound.
async fn read_head(
    stream: &mut TcpStream,
    received: &mut Vec<u8>,
) -> Result<Option<http::Request>, RequestError> {
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        received.extend_from_slice(&chunk[..n]);
        if let Some(request) = http::parse_request(received)? {
            return Ok(Some(request));
        }
    }
}

/// Builds a scrape's snapshot from the member table, the last reconcile pass and the DHT
/// status: copies under short locks, never the reconciler's own lock.
#[derive(Debug)]
pub struct DaemonView {
    pub node: NodeInfo,
    pub shared: Shared,
    pub last_pass: LastPassCell,
    pub dht: Option<wgmesh_dht::DhtStatusReader>,
}

impl wgmesh_metrics::SnapshotSource for DaemonView {
    fn snapshot(&self) -> MeshSnapshot {
        let pass = self.last_pass.read();
        let state = self.shared.lock();
        // The report `wgmesh status` prints, so both always agree.
        let report = state::status_report(
            &self.node,
            &state,
            pass.device.as_ref(),
            ReloadReport::default(),
            pass.stats,
        );
        let exchange_drops = DropReason::ALL
            .iter()
            .map(|&reason| (reason.as_str(), state.exchange.get(reason)))
            .collect();
        let exchange_aead_opens = state.exchange.aead_opens();
        drop(state);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        MeshSnapshot {
            members: report.peers.len() as u64,
            peers: report.peers.iter().map(|p| peer_sample(p, now)).collect(),
            exchange_drops,
            exchange_aead_opens,
            reconcile: ReconcileTotals {
                device_writes: pass.stats.device_writes,
                route_writes: pass.stats.route_writes,
            },
            dht: self.dht.as_ref().map(|dht| {
                let status = dht.read();
                DhtTotals {
                    lookups: status.lookups,
                    announces_ok: status.announces_ok,
                    announces_failed: status.announces_failed,
                }
            }),
            relayed_peers: report
                .peers
                .iter()
                .filter(|p| p.relayed_via.is_some())
                .count() as u64,
            relay_offered: self.node.relay,
        }
    }
}

/// One `status` peer as metrics label it: the key prefix the status table prints.
fn peer_sample(peer: &PeerReport, now_unix: u64) -> PeerSample {
    PeerSample {
        peer: peer.public_key.chars().take(8).collect(),
        // As status shows it: a contested name carries the key prefix, so two peers never
        // share a label set.
        name: peer.name.clone(),
        handshake_age_seconds: peer
            .last_handshake_unix
            .map(|then| now_unix.saturating_sub(then) as f64),
        rx_bytes: peer.rx_bytes,
        tx_bytes: peer.tx_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Empty;

    impl wgmesh_metrics::SnapshotSource for Empty {
        fn snapshot(&self) -> MeshSnapshot {
            MeshSnapshot::default()
        }
    }

    async fn start() -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let metrics = Arc::new(MeshMetrics::new("test", Empty));
        let task = tokio::spawn(serve(listener, metrics, cancel.clone()));
        (addr, cancel, task)
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_refuses_the_rest_and_stops_when_cancelled() {
        let (addr, cancel, task) = start().await;
        let got = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("\r\n\r\n# HELP wgmesh_build_info "), "{got}");
        assert!(got.contains("\nwgmesh_build_info{version=\"test\"} 1\n"));
        let got = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 404 "), "{got}");
        let got = exchange(addr, b"\x00\x01\x02\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(http::MAX_REQUEST_HEAD + 2048, b'a');
        let got = exchange(addr, &huge).await;
        assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
        cancel.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// Slow clients cost a slot for [`http::READ_TIMEOUT`] at most, and a full house turns
    /// newcomers away at once instead of queueing them.
    #[tokio::test]
    async fn silent_clients_time_out_and_connections_are_bounded() {
        let (addr, cancel, _task) = start().await;
        let mut silent = Vec::new();
        for _ in 0..http::MAX_CONNECTIONS {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server take them all before the next one arrives.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        // Closed unanswered: an end of stream or a reset, depending on timing.
        let mut turned_away = TcpStream::connect(addr).await.unwrap();
        let _ = turned_away
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await;
        let mut response = Vec::new();
        let _ = turned_away.read_to_end(&mut response).await;
        assert!(
            response.is_empty(),
            "a connection over the bound was served"
        );
        assert!(started.elapsed() < http::READ_TIMEOUT);
        for mut stream in silent {
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.unwrap();
            assert!(
                String::from_utf8_lossy(&response).starts_with("HTTP/1.1 408 "),
                "{response:?}"
            );
        }
        let waited = started.elapsed();
        assert!(waited >= http::READ_TIMEOUT - std::time::Duration::from_millis(300));
        assert!(waited < http::READ_TIMEOUT * 2, "{waited:?}");
        // The slots are free again.
        let got = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        cancel.cancel();
    }

    fn report(key: &str, handshake: Option<u64>) -> PeerReport {
        PeerReport {
            public_key: key.to_owned(),
            mesh_ipv4: "10.1.2.3".to_owned(),
            mesh_ipv6: "fd00::1".to_owned(),
            endpoint: None,
            last_handshake_unix: handshake,
            rx_bytes: 10,
            tx_bytes: 20,
            source: "lan".to_owned(),
            routes: vec![],
            relayed_via: None,
            version: None,
            name: Some("web~AbCdEfGh".to_owned()),
            name_contested: true,
        }
    }

    #[test]
    fn a_peer_is_labelled_by_the_key_prefix_status_prints() {
        let sample = peer_sample(
            &report("AbCdEfGh+/ijklmnopqrstuvwxyz0123456789ABCDE=", Some(1_000)),
            1_042,
        );
        assert_eq!(sample.peer, "AbCdEfGh");
        assert_eq!(sample.name.as_deref(), Some("web~AbCdEfGh"));
        assert_eq!(sample.handshake_age_seconds, Some(42.0));
        assert_eq!((sample.rx_bytes, sample.tx_bytes), (10, 20));
        assert_eq!(
            peer_sample(&report("x", None), 5).handshake_age_seconds,
            None
        );
        // A handshake "in the future" (clock stepped back) is age 0, not a wrap-around.
        assert_eq!(
            peer_sample(&report("x", Some(10)), 5).handshake_age_seconds,
            Some(0.0)
        );
    }

    #[test]
    fn only_loopback_addresses_go_unwarned() {
        for quiet in [
            "127.0.0.1:9586",
            "127.8.9.10:1",
            "[::1]:9586",
            "[::ffff:127.0.0.1]:9586",
        ] {
            assert!(is_loopback(quiet.parse().unwrap()), "{quiet}");
        }
        for loud in [
            "0.0.0.0:9586",
            "[::]:9586",
            "192.168.1.2:9586",
            "[fd00::1]:9586",
        ] {
            assert!(!is_loopback(loud.parse().unwrap()), "{loud}");
        }
    }

    #[test]
    fn a_taken_address_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("cannot serve metrics on {addr}")),
            "{err:#}"
        );
    }
}
