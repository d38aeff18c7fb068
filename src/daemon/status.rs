//! `wgmesh status` from the published snapshot: never from the reconciler, which can be busy for
//! seconds (a wireguard-go restart).

use super::control_server::StatusSource;
use super::relay_io::RelayServer;
use super::state::{self, LastPassCell, NodeInfo, Shared};
use crate::control::{RelayPairReport, RelaySideReport};
use crate::control::{ReloadReport, Response};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The relay's pairs as `status` shows them.
fn relay_pairs(pairs: &[wgmesh_relay::PairStatus], now: Instant) -> Vec<RelayPairReport> {
    pairs
        .iter()
        .map(|pair| RelayPairReport {
            members: pair.sides.clone().map(|side| RelaySideReport {
                public_key: side.key.to_base64(),
                port: side.port,
                latched: side.latched.map(|a| a.to_string()),
                datagrams: side.forwarded.datagrams,
                bytes: side.forwarded.bytes,
            }),
            idle_secs: now.saturating_duration_since(pair.last_use).as_secs(),
        })
        .collect()
}

/// How long `status` waits for a device read newer than the last pass before it answers with
/// the last pass. A pass in progress (a wireguard-go restart takes seconds) is not waited for.
const STATUS_REFRESH_WAIT: Duration = Duration::from_millis(500);

/// Answers `status` from the published snapshot ([`LastPassCell`]) and the member
/// table; never from the reconciler.
#[derive(Clone)]
pub struct StatusHandle {
    pub node: NodeInfo,
    pub shared: Shared,
    pub last_pass: LastPassCell,
    /// Asks the reconcile loop for a fresh device read when it is idle.
    pub refresh: mpsc::Sender<oneshot::Sender<()>>,
    pub reloads: watch::Receiver<ReloadReport>,
    /// With `--relay`: the pairs it carries.
    pub relay: Option<RelayServer>,
}

impl StatusSource for StatusHandle {
    async fn status(&self) -> Response {
        let (done_tx, done_rx) = oneshot::channel();
        if self.refresh.try_send(done_tx).is_ok() {
            let _ = tokio::time::timeout(STATUS_REFRESH_WAIT, done_rx).await;
        }
        let pass = self.last_pass.read();
        let reload = self.reloads.borrow().clone();
        let mut report = state::status_report(
            &self.node,
            &self.shared.lock(),
            pass.device.as_ref(),
            reload,
            pass.stats,
        );
        if let Some(relay) = &self.relay {
            report.relay_pairs = relay_pairs(&relay.snapshot(), Instant::now());
        }
        Response::Status(Box::new(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ReconcileCounters, StatusReport};
    use state::OwnAddresses;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Instant;
    use wgmesh_device::{BackendKind, DeviceState, PeerConfig, PeerState};
    use wgmesh_keys::PublicKey;
    use wgmesh_mesh::{Member, Source};

    fn handle(refresh: mpsc::Sender<oneshot::Sender<()>>) -> StatusHandle {
        let own = OwnAddresses {
            ipv4: Ipv4Addr::new(10, 1, 0, 1),
            ipv6: Ipv6Addr::LOCALHOST,
            collision_counter: 0,
        };
        let shared = Shared::new(own, Vec::new());
        shared.lock().members.upsert(Member {
            public_key: PublicKey::from_bytes([2; 32]),
            mesh_ipv4: Ipv4Addr::new(10, 1, 0, 2),
            mesh_ipv6: Ipv6Addr::LOCALHOST,
            collision_counter: 0,
            endpoint: None,
            control_addr: None,
            routes: Vec::new(),
            source: Source::Lan,
            relay_offered: false,
            last_seen_ms: 0,
            moved_at_ms: 0,
            relay_via: None,
            relay_endpoint: None,
            name: None,
            version: None,
            name_claim: 0,
        });
        StatusHandle {
            node: NodeInfo {
                interface: "wgtest0".to_owned(),
                backend: BackendKind::Userspace,
                public_key: PublicKey::from_bytes([1; 32]),
                listen_port: 51820,
                control_port: 51900,
                mesh_prefixes: Vec::new(),
                relay: false,
            },
            shared,
            last_pass: LastPassCell::default(),
            refresh,
            reloads: watch::channel(ReloadReport::default()).1,
            relay: None,
        }
    }

    fn device(rx_bytes: u64) -> DeviceState {
        let mut peer = PeerState::new(PeerConfig::new(PublicKey::from_bytes([2; 32])));
        peer.rx_bytes = rx_bytes;
        DeviceState {
            peers: vec![peer],
            ..DeviceState::default()
        }
    }

    async fn report(handle: &StatusHandle) -> StatusReport {
        match handle.status().await {
            Response::Status(report) => *report,
            other => panic!("not a status: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_busy_reconciler_delays_status_by_the_refresh_wait_at_most() {
        // The loop is mid-pass: nobody answers the refresh request.
        let (refresh, _busy) = mpsc::channel(1);
        let handle = handle(refresh);
        let stats = ReconcileCounters {
            runs: 3,
            device_writes: 1,
            route_writes: 0,
        };
        handle.last_pass.publish(&device(10), stats);
        let start = Instant::now();
        let first = report(&handle).await;
        let took = start.elapsed();
        assert!(took < STATUS_REFRESH_WAIT * 3, "{took:?}");
        assert_eq!(first.reconcile, stats);
        assert_eq!(first.peers[0].rx_bytes, 10, "the last pass's read");
        // A second request while the first is still queued does not wait at all.
        let start = Instant::now();
        let _ = report(&handle).await;
        assert!(start.elapsed() < STATUS_REFRESH_WAIT);
    }

    #[tokio::test]
    async fn an_idle_reconciler_reads_the_device_again_first() {
        let (refresh, mut requests) = mpsc::channel::<oneshot::Sender<()>>(1);
        let handle = handle(refresh);
        handle
            .last_pass
            .publish(&device(10), ReconcileCounters::default());
        let cell = handle.last_pass.clone();
        tokio::spawn(async move {
            while let Some(done) = requests.recv().await {
                cell.publish_device(&device(99));
                let _ = done.send(());
            }
        });
        let report = report(&handle).await;
        assert_eq!(report.peers[0].rx_bytes, 99);
    }
}
