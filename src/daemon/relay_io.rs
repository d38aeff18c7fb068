//! The relay's data path (DESIGN.md §6, issue 14): the two UDP sockets of each relayed pair and
//! the task that forwards WireGuard's datagrams between them, so the relay only ever handles
//! ciphertext. What goes where is decided by the pure `wgmesh_relay::Allocations`; this is its
//! sockets, its clock and its tasks. The exchange task verifies the two members and calls
//! [`RelayServer::allocate`].
//!
//! One task per pair waits on both sockets and forwards with one reusable buffer. The table sits
//! behind a `std` mutex that is taken once per datagram, only around `route` (never across an
//! `.await`): an uncontended lock costs tens of nanoseconds against the microseconds of the
//! `recvfrom` and `sendto` around it.

use std::collections::HashMap;
use std::io;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wgmesh_keys::PublicKey;
use wgmesh_relay::{Admission, Allocations, Limits, PairId, PairStatus, Refused, RelayPorts, Side};

/// The largest UDP payload: no datagram is ever truncated.
const MAX_DATAGRAM: usize = 65_535;

/// Datagrams read from one socket in a row before the other socket gets its turn.
const BATCH: usize = 64;

/// Why [`RelayServer::allocate`] gave no ports.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("cannot open a relay port: {0}")]
    Bind(#[source] io::Error),
    #[error("the relay is shutting down")]
    Stopped,
}

/// The relay's forwarding side: cheap to clone, shared by the task that admits pairs and the
/// status reader.
#[derive(Debug, Clone)]
pub struct RelayServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    table: Mutex<Table>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// Wakes the expiry timer when a pair is added: its deadline may be the earliest.
    added: Notify,
}

#[derive(Debug)]
struct Table {
    allocations: Allocations,
    /// Stops each pair's forwarding task, which closes its two sockets.
    tasks: HashMap<PairId, CancellationToken>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Holders do no IO and cannot leave the table half-updated, so a poisoned lock (a panic
        // elsewhere) still guards consistent data.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the released pairs' tasks and logs each release once.
    fn close(&self, released: Vec<PairStatus>, reason: &str) {
        {
            let mut table = self.lock();
            for pair in &released {
                if let Some(stop) = table.tasks.remove(&pair.id) {
                    stop.cancel();
                }
            }
        }
        for pair in released {
            let [asker, peer] = &pair.sides;
            tracing::info!(
                asker = %asker.key.short(),
                peer = %peer.key.short(),
                asker_port = asker.port,
                peer_port = peer.port,
                asker_bytes = asker.forwarded.bytes,
                peer_bytes = peer.forwarded.bytes,
                reason,
                "relay pair released"
            );
        }
    }
}

impl RelayServer {
    /// Starts the expiry timer under `tracker`; it and every pair's task stop with `cancel`.
    pub fn start(tracker: &TaskTracker, cancel: CancellationToken, limits: Limits) -> Self {
        let shared = Arc::new(Shared {
            table: Mutex::new(Table {
                allocations: Allocations::new(limits),
                tasks: HashMap::new(),
            }),
            tracker: tracker.clone(),
            cancel,
            added: Notify::new(),
        });
        tracker.spawn(expire_idle(shared.clone()));
        Self { shared }
    }

    /// Gives two verified members a pair, or finds the one they have: the relay ports, the
    /// asker's first. A new pair gets two UDP sockets on the unspecified address, each of the
    /// address family of the member it faces, and a forwarding task.
    pub fn allocate(&self, asker: Side, peer: Side) -> Result<RelayPorts, AllocateError> {
        if self.shared.cancel.is_cancelled() {
            return Err(AllocateError::Stopped);
        }
        let now = Instant::now();
        let mut table = self.shared.lock();
        if let Admission::Existing(ports) = table.allocations.admit(now, asker, peer)? {
            return Ok(ports);
        }
        // Binding never blocks and takes microseconds; doing it under the lock means two
        // requests for one pair cannot both bind.
        let sockets = [
            crate::platform::bind_relay_port(asker.ip).map_err(AllocateError::Bind)?,
            crate::platform::bind_relay_port(peer.ip).map_err(AllocateError::Bind)?,
        ];
        let ports = RelayPorts {
            asker: sockets[0].local_addr().map_err(AllocateError::Bind)?.port(),
            peer: sockets[1].local_addr().map_err(AllocateError::Bind)?.port(),
        };
        let id = table.allocations.insert(now, asker, peer, ports)?;
        let stop = self.shared.cancel.child_token();
        table.tasks.insert(id, stop.clone());
        drop(table);
        let pair = PairTask {
            shared: self.shared.clone(),
            sockets,
            ports: [ports.asker, ports.peer],
            stop,
        };
        self.shared.tracker.spawn(pair.run());
        self.shared.added.notify_one();
        tracing::info!(
            asker = %asker.key.short(),
            asker_ip = %asker.ip,
            peer = %peer.key.short(),
            peer_ip = %peer.ip,
            asker_port = ports.asker,
            peer_port = ports.peer,
            "relay pair allocated"
        );
        Ok(ports)
    }

    /// A member left the mesh: its pairs are released and their ports closed.
    pub fn forget(&self, key: &PublicKey) {
        let released = self.shared.lock().allocations.forget(key);
        self.shared.close(released, "member left");
    }

    /// Every pair with its latched addresses and counters, for `status`.
    pub fn snapshot(&self) -> Vec<PairStatus> {
        self.shared.lock().allocations.pairs().cloned().collect()
    }
}

/// Releases idle pairs when their time comes.
async fn expire_idle(shared: Arc<Shared>) {
    loop {
        let deadline = shared.lock().allocations.next_deadline();
        let idle = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            () = shared.added.notified() => {}
            () = idle => {
                let released = shared.lock().allocations.expire(Instant::now());
                shared.close(released, "idle");
            }
        }
    }
}

/// One pair's forwarding: `sockets[i]` is the relay port `ports[i]`.
struct PairTask {
    shared: Arc<Shared>,
    sockets: [UdpSocket; 2],
    ports: [u16; 2],
    stop: CancellationToken,
}

impl PairTask {
    async fn run(self) {
        let mut buf = vec![0; MAX_DATAGRAM];
        // A send that fails (a member's port closed, its network gone) is logged once per pair
        // at debug, and the pair carries on: the member may come back at any moment.
        let mut send_failed = false;
        loop {
            let ready = tokio::select! {
                () = self.stop.cancelled() => break,
                ready = self.sockets[0].readable() => ready.map(|()| 0),
                ready = self.sockets[1].readable() => ready.map(|()| 1),
            };
            let from_side = match ready {
                Ok(side) => side,
                Err(err) => {
                    tracing::warn!(port = self.ports[0], error = %err, "relay pair cannot wait for datagrams; it stops forwarding");
                    break;
                }
            };
            let now = Instant::now();
            for _ in 0..BATCH {
                let (len, from) = match self.sockets[from_side].try_recv_from(&mut buf) {
                    Ok(received) => received,
                    // Drained; or an error the kernel queued on the socket, which reading
                    // cleared.
                    Err(_) => break,
                };
                let routed =
                    self.shared
                        .lock()
                        .allocations
                        .route(now, self.ports[from_side], from, len);
                let Ok(forward) = routed else { continue };
                let Some(out) = self.ports.iter().position(|port| *port == forward.via) else {
                    continue;
                };
                let sent = self.sockets[out].send_to(&buf[..len], forward.to).await;
                if let Err(err) = sent
                    && !send_failed
                {
                    send_failed = true;
                    tracing::debug!(port = forward.via, to = %forward.to, error = %err, "relay send failed (reported once per pair)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::time::Duration;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn side(n: u8, ip: IpAddr) -> Side {
        Side::new(key(n), ip)
    }

    /// A relay on this host, stopped (and checked to stop) at the end of each test.
    struct Lab {
        relay: RelayServer,
        tracker: TaskTracker,
        cancel: CancellationToken,
    }

    impl Lab {
        fn start(limits: Limits) -> Self {
            let tracker = TaskTracker::new();
            let cancel = CancellationToken::new();
            let relay = RelayServer::start(&tracker, cancel.clone(), limits);
            Self {
                relay,
                tracker,
                cancel,
            }
        }

        /// A pair of members 1 and 2 on loopback: their sockets and the relay port each sends
        /// to.
        async fn pair(&self) -> ((UdpSocket, SocketAddr), (UdpSocket, SocketAddr)) {
            let ports = self
                .relay
                .allocate(side(1, LOOPBACK), side(2, LOOPBACK))
                .unwrap();
            (
                (member(LOOPBACK).await, relay_at(LOOPBACK, ports.asker)),
                (member(LOOPBACK).await, relay_at(LOOPBACK, ports.peer)),
            )
        }

        /// `socket` sends to relay port `port` before the other side has spoken (so nothing is
        /// forwarded), and the relay has latched it before this returns: the relay's task reads
        /// its two sockets in no fixed order.
        async fn speak_first(&self, socket: &UdpSocket, port: SocketAddr) {
            socket.send_to(b"first", port).await.unwrap();
            let source = socket.local_addr().unwrap();
            self.wait_until("latched", |pairs| {
                pairs
                    .iter()
                    .flat_map(|pair| &pair.sides)
                    .any(|side| side.port == port.port() && side.latched == Some(source))
            })
            .await;
        }

        async fn wait_until(&self, what: &str, done: impl Fn(&[PairStatus]) -> bool) {
            for _ in 0..500 {
                if done(&self.relay.snapshot()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("not {what}: {:?}", self.relay.snapshot());
        }

        async fn stop(self) {
            self.cancel.cancel();
            self.tracker.close();
            tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
                .await
                .expect("the relay's tasks stop when cancelled");
            assert!(matches!(
                self.relay.allocate(side(1, LOOPBACK), side(2, LOOPBACK)),
                Err(AllocateError::Stopped)
            ));
        }
    }

    async fn member(ip: IpAddr) -> UdpSocket {
        UdpSocket::bind((ip, 0)).await.unwrap()
    }

    fn relay_at(ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, port)
    }

    async fn expect_datagram(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0; MAX_DATAGRAM];
        let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a datagram arrives")
            .unwrap();
        (buf[..len].to_vec(), from)
    }

    async fn expect_nothing(socket: &UdpSocket) {
        let mut buf = vec![0; MAX_DATAGRAM];
        let quiet = Duration::from_millis(200);
        if let Ok(received) = tokio::time::timeout(quiet, socket.recv_from(&mut buf)).await {
            panic!("unexpected datagram: {received:?}");
        }
    }

    /// Sends `payload` from `from` to relay port `via` and checks it comes out of the other
    /// relay port `out`, byte for byte.
    async fn relayed(
        from: &UdpSocket,
        via: SocketAddr,
        to: &UdpSocket,
        out: SocketAddr,
        payload: &[u8],
    ) {
        from.send_to(payload, via).await.unwrap();
        assert_eq!(expect_datagram(to).await, (payload.to_vec(), out));
    }

    /// Waits until nothing holds `port` any more (its relay socket is closed).
    async fn wait_closed(ip: IpAddr, port: u16) {
        for _ in 0..200 {
            if std::net::UdpSocket::bind((ip, port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("relay port {port} is still open");
    }

    #[tokio::test]
    async fn nothing_is_forwarded_until_both_sides_spoke_then_both_ways_byte_for_byte() {
        let lab = Lab::start(Limits::default());
        let ((a, port_a), (b, port_b)) = lab.pair().await;
        assert_ne!(port_a, port_b);
        a.send_to(b"from a, before b spoke", port_a).await.unwrap();
        expect_nothing(&b).await;
        relayed(&b, port_b, &a, port_a, b"from b").await;
        // From the smallest to the largest UDP payload over IPv4.
        for len in [1, 148, 1_420, 65_507] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            relayed(&a, port_a, &b, port_b, &payload).await;
            relayed(&b, port_b, &a, port_a, &payload).await;
        }
        // Asking again, from either end, finds the pair.
        let again = lab
            .relay
            .allocate(side(2, LOOPBACK), side(1, LOOPBACK))
            .unwrap();
        assert_eq!((again.asker, again.peer), (port_b.port(), port_a.port()));
        let pairs = lab.relay.snapshot();
        assert_eq!(pairs.len(), 1);
        let [side_a, side_b] = &pairs[0].sides;
        assert_eq!(side_a.latched, Some(a.local_addr().unwrap()));
        assert_eq!(side_b.latched, Some(b.local_addr().unwrap()));
        assert_eq!((side_a.forwarded.datagrams, side_a.dropped), (4, 1));
        assert_eq!((side_b.forwarded.datagrams, side_b.dropped), (5, 0));
        assert_eq!(side_a.forwarded.bytes, 1 + 148 + 1_420 + 65_507);
        lab.stop().await;
    }

    /// Loopback is all 127/8: member A is 127.0.0.2, B and a stranger are 127.0.0.1.
    #[tokio::test]
    async fn another_ip_cannot_take_a_members_place() {
        let lab = Lab::start(Limits::default());
        let a_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let ports = lab
            .relay
            .allocate(side(1, a_ip), side(2, LOOPBACK))
            .unwrap();
        let (a, port_a) = (member(a_ip).await, relay_at(LOOPBACK, ports.asker));
        let (b, port_b) = (member(LOOPBACK).await, relay_at(LOOPBACK, ports.peer));
        let stranger = member(LOOPBACK).await;
        // The stranger speaks first at A's port: not latched, nothing forwarded.
        stranger.send_to(b"stranger", port_a).await.unwrap();
        b.send_to(b"b, before a spoke", port_b).await.unwrap();
        expect_nothing(&stranger).await;
        relayed(&a, port_a, &b, port_b, b"from a").await;
        stranger.send_to(b"stranger again", port_a).await.unwrap();
        relayed(&b, port_b, &a, port_a, b"from b, to a").await;
        expect_nothing(&stranger).await;
        expect_nothing(&b).await;
        let pairs = lab.relay.snapshot();
        assert_eq!(pairs[0].sides[0].latched, Some(a.local_addr().unwrap()));
        assert_eq!(pairs[0].sides[0].dropped, 2);
        lab.stop().await;
    }

    #[tokio::test]
    async fn a_rebound_member_is_followed_and_a_closed_one_does_not_stop_the_pair() {
        let lab = Lab::start(Limits::default());
        let ((a, port_a), (b, port_b)) = lab.pair().await;
        lab.speak_first(&a, port_a).await;
        relayed(&b, port_b, &a, port_a, b"b").await;
        relayed(&a, port_a, &b, port_b, b"a").await;
        // B's socket goes away: the relay's sends to it fail or vanish.
        drop(b);
        for _ in 0..5 {
            a.send_to(b"into the void", port_a).await.unwrap();
        }
        lab.wait_until("forwarded", |pairs| {
            pairs[0].sides[0].forwarded.datagrams == 6
        })
        .await;
        // B comes back from another port, as after a NAT rebinding.
        let b = member(LOOPBACK).await;
        relayed(&b, port_b, &a, port_a, b"b, rebound").await;
        relayed(&a, port_a, &b, port_b, b"a, to the new b").await;
        lab.stop().await;
    }

    #[tokio::test]
    async fn the_ninth_pair_of_a_member_and_the_sixty_fifth_pair_are_refused() {
        let lab = Lab::start(Limits::default());
        let mut ports = std::collections::HashSet::new();
        let allocate = |a, b| lab.relay.allocate(side(a, LOOPBACK), side(b, LOOPBACK));
        for peer in 2..10 {
            let got = allocate(1, peer).unwrap();
            assert!(ports.insert(got.asker) && ports.insert(got.peer));
        }
        let ninth = allocate(1, 10).unwrap_err();
        assert!(
            matches!(ninth, AllocateError::Refused(Refused::MemberQuota { key: who, limit: 8 }) if who == key(1)),
            "{ninth}"
        );
        for n in 0..56 {
            let got = allocate(100 + 2 * n, 101 + 2 * n).unwrap();
            assert!(ports.insert(got.asker) && ports.insert(got.peer));
        }
        let full = allocate(20, 21).unwrap_err();
        assert!(
            matches!(
                full,
                AllocateError::Refused(Refused::RelayFull { limit: 64 })
            ),
            "{full}"
        );
        assert_eq!(lab.relay.snapshot().len(), 64);
        lab.stop().await;
    }

    #[tokio::test]
    async fn an_idle_pair_is_released_and_its_ports_closed() {
        let idle = Duration::from_millis(300);
        let lab = Lab::start(Limits {
            idle,
            ..Limits::default()
        });
        let ((a, port_a), (b, port_b)) = lab.pair().await;
        lab.speak_first(&a, port_a).await;
        relayed(&b, port_b, &a, port_a, b"b").await;
        relayed(&a, port_a, &b, port_b, b"a").await;
        lab.wait_until("released", <[PairStatus]>::is_empty).await;
        a.send_to(b"after release", port_a).await.unwrap();
        expect_nothing(&b).await;
        wait_closed(LOOPBACK, port_a.port()).await;
        wait_closed(LOOPBACK, port_b.port()).await;
        // Asking again gives a new pair that works.
        let ((a, port_a), (b, port_b)) = lab.pair().await;
        lab.speak_first(&a, port_a).await;
        relayed(&b, port_b, &a, port_a, b"b").await;
        lab.stop().await;
    }

    #[tokio::test]
    async fn a_pair_in_use_is_kept() {
        let idle = Duration::from_millis(800);
        let lab = Lab::start(Limits {
            idle,
            ..Limits::default()
        });
        let ((a, port_a), (b, port_b)) = lab.pair().await;
        lab.speak_first(&a, port_a).await;
        let start = Instant::now();
        while start.elapsed() < 3 * idle {
            relayed(&b, port_b, &a, port_a, b"b").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(lab.relay.snapshot().len(), 1);
        lab.stop().await;
    }

    #[tokio::test]
    async fn forgetting_a_member_closes_its_pairs_only() {
        let lab = Lab::start(Limits::default());
        let mut gone = Vec::new();
        for peer in [2, 3] {
            let ports = lab
                .relay
                .allocate(side(1, LOOPBACK), side(peer, LOOPBACK))
                .unwrap();
            gone.extend([ports.asker, ports.peer]);
        }
        let kept = lab
            .relay
            .allocate(side(4, LOOPBACK), side(5, LOOPBACK))
            .unwrap();
        lab.relay.forget(&key(1));
        let pairs = lab.relay.snapshot();
        let keys: Vec<_> = pairs
            .iter()
            .map(|pair| [pair.sides[0].key, pair.sides[1].key])
            .collect();
        assert_eq!(keys, [[key(4), key(5)]]);
        for port in gone {
            wait_closed(LOOPBACK, port).await;
        }
        let (c, port_c) = (member(LOOPBACK).await, relay_at(LOOPBACK, kept.asker));
        let (d, port_d) = (member(LOOPBACK).await, relay_at(LOOPBACK, kept.peer));
        lab.speak_first(&c, port_c).await;
        relayed(&d, port_d, &c, port_c, b"d").await;
        lab.stop().await;
    }

    /// Each relay port has the address family of the member it faces.
    #[tokio::test]
    async fn an_ipv6_member_and_an_ipv4_member() {
        let lab = Lab::start(Limits::default());
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let ports = lab.relay.allocate(side(1, v6), side(2, LOOPBACK)).unwrap();
        let (a, port_a) = (member(v6).await, relay_at(v6, ports.asker));
        let (b, port_b) = (member(LOOPBACK).await, relay_at(LOOPBACK, ports.peer));
        lab.speak_first(&a, port_a).await;
        relayed(&b, port_b, &a, port_a, b"b").await;
        relayed(&a, port_a, &b, port_b, b"a").await;
        lab.stop().await;
    }
}
