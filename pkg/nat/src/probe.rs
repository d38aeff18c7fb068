//! `StunProbe`: the sans-IO STUN client for the daemon's control socket.
//!
//! The daemon owns the socket and the clock. It asks the probe for datagrams to send, feeds back
//! every STUN datagram it receives, and reads the classification. The probe only accepts a
//! response whose transaction id it issued, to the server that answered, within
//! [`TRANSACTION_TIMEOUT_MS`]; anything else on the socket is ignored.

use std::net::{IpAddr, SocketAddr};

use crate::classify::{NatType, Observation, agreed_mapping, classify};
use crate::codec::{HEADER_LEN, binding_request, parse_binding_response};

/// Re-probe this often while nothing changes: NAT UDP mappings time out after minutes (RFC 4787
/// requires ≥ 2 min), and a changed public address should reach peers within a few minutes.
pub const REPROBE_INTERVAL_MS: u64 = 5 * 60 * 1000;
/// While some server has not answered, send again after this long ...
pub const RETRY_INTERVAL_MS: u64 = 1_000;
/// ... up to this many requests per round, then wait for the next round. Lost STUN traffic is
/// cheap to retry later; a daemon must not spray a dead server.
pub const MAX_ATTEMPTS_PER_ROUND: u32 = 4;
/// A response to any request of a round is accepted this long after the request (RFC 5389's
/// default retransmission schedule gives up after 39.5 s; we retry per round instead).
pub const TRANSACTION_TIMEOUT_MS: u64 = 10_000;
/// Observations older than this are dropped: a mapping not re-confirmed for three rounds is
/// probably gone. On a link change do not wait: call [`StunProbe::reset`] and probe at once.
pub const OBSERVATION_TTL_MS: u64 = 3 * REPROBE_INTERVAL_MS;

/// Outstanding transactions kept per server; older ones are forgotten first, so a caller that
/// calls [`StunProbe::requests`] in a loop cannot grow the probe without bound.
const MAX_PENDING_PER_SERVER: usize = 8;

/// A request we are waiting on.
#[derive(Debug, Clone, Copy)]
struct Pending {
    transaction_id: [u8; 12],
    server: SocketAddr,
    expires_at_ms: u64,
}

/// The latest observation from one server and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Seen {
    observation: Observation,
    at_ms: u64,
}

/// STUN client state for one local UDP socket (see the module docs).
#[derive(Debug, Clone)]
pub struct StunProbe {
    servers: Vec<SocketAddr>,
    local_ips: Vec<IpAddr>,
    pending: Vec<Pending>,
    seen: Vec<Seen>,
}

impl StunProbe {
    /// A probe for these servers (duplicates removed). Use two or more servers, or one server on
    /// two ports, to detect endpoint-dependent mapping (see [`crate::classify`]).
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        let mut unique: Vec<SocketAddr> = Vec::with_capacity(servers.len());
        for server in servers.into_iter().map(canonical) {
            if !unique.contains(&server) {
                unique.push(server);
            }
        }
        StunProbe {
            servers: unique,
            local_ips: Vec::new(),
            pending: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Builder form of [`StunProbe::set_local_ips`].
    pub fn with_local_ips(mut self, local_ips: Vec<IpAddr>) -> Self {
        self.set_local_ips(local_ips);
        self
    }

    /// Our own interface addresses, so a mapping equal to one of them reads as [`NatType::Open`].
    /// Without them no result is ever `Open`.
    pub fn set_local_ips(&mut self, local_ips: Vec<IpAddr>) {
        self.local_ips = local_ips.into_iter().map(canonical_ip).collect();
    }

    /// The servers probed, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// One Binding request per server, each with a fresh transaction id from `rng` (which must be
    /// unpredictable: the id is what stops an off-path sender from faking our mapping). Also
    /// forgets expired transactions and observations.
    pub fn requests(
        &mut self,
        now_ms: u64,
        mut rng: impl FnMut() -> [u8; 12],
    ) -> Vec<(SocketAddr, [u8; HEADER_LEN])> {
        self.expire(now_ms);
        let mut out = Vec::with_capacity(self.servers.len());
        for &server in &self.servers {
            let transaction_id = rng();
            let for_server = self.pending.iter().filter(|p| p.server == server).count();
            if for_server >= MAX_PENDING_PER_SERVER {
                // `pending` is in issue order, so the first match is the oldest.
                if let Some(oldest) = self.pending.iter().position(|p| p.server == server) {
                    self.pending.remove(oldest);
                }
            }
            self.pending.push(Pending {
                transaction_id,
                server,
                expires_at_ms: now_ms.saturating_add(TRANSACTION_TIMEOUT_MS),
            });
            out.push((server, binding_request(transaction_id)));
        }
        out
    }

    /// Feed a datagram received on the socket. Returns the observation if it is a Binding
    /// success response to an outstanding request sent to `from`; the transaction is then done.
    /// Everything else (other protocols, unknown or expired ids, wrong source, error responses)
    /// yields `None` and changes nothing.
    pub fn on_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now_ms: u64,
    ) -> Option<Observation> {
        let response = parse_binding_response(bytes).ok()?;
        let from = canonical(from);
        let index = self.pending.iter().position(|p| {
            p.transaction_id == response.transaction_id
                && p.server == from
                && now_ms <= p.expires_at_ms
        })?;
        self.pending.swap_remove(index);
        let observation = Observation {
            server: from,
            mapped: canonical(response.mapped),
        };
        let seen = Seen {
            observation,
            at_ms: now_ms,
        };
        match self.seen.iter_mut().find(|s| s.observation.server == from) {
            Some(slot) => *slot = seen,
            None => self.seen.push(seen),
        }
        Some(observation)
    }

    /// The latest observation per server that answered, in arrival order of first answers.
    pub fn observations(&self) -> Vec<Observation> {
        self.seen.iter().map(|s| s.observation).collect()
    }

    /// Whether every server has answered since the last [`StunProbe::reset`] (within the
    /// observation TTL): the daemon can stop retrying this round.
    pub fn all_answered(&self) -> bool {
        self.servers
            .iter()
            .all(|server| self.seen.iter().any(|s| s.observation.server == *server))
    }

    /// Whether a response from `server` is still awaited.
    pub fn is_pending(&self, server: SocketAddr) -> bool {
        let server = canonical(server);
        self.pending.iter().any(|p| p.server == server)
    }

    /// Classify the current observations; `local_port` is the port the socket is bound to.
    /// See [`crate::classify::classify`] for the rules, including the single-server caveat.
    pub fn nat_type(&self, local_port: u16) -> NatType {
        classify(&self.observations(), &self.local_ips, local_port)
    }

    /// The public address every server agrees on: the STUN candidate to advertise to peers.
    /// `None` before any answer and for endpoint-dependent (symmetric) mapping. With a single
    /// server this is that server's view even when [`StunProbe::nat_type`] says `Unknown`.
    pub fn public_endpoint(&self) -> Option<SocketAddr> {
        agreed_mapping(&self.observations())
    }

    /// Forget all observations and outstanding requests: call on a link or address change, then
    /// probe immediately, so old mappings are not mixed with new ones.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.seen.clear();
    }

    fn expire(&mut self, now_ms: u64) {
        self.pending.retain(|p| now_ms <= p.expires_at_ms);
        self.seen
            .retain(|s| now_ms.saturating_sub(s.at_ms) <= OBSERVATION_TTL_MS);
    }
}

/// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; compare them as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::binding_success_response;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    /// Deterministic "rng" for tests: 1, 2, 3, ...
    fn counter() -> impl FnMut() -> [u8; 12] {
        let mut n = 0u8;
        move || {
            n = n.wrapping_add(1);
            [n; 12]
        }
    }

    fn txid(request: &[u8; HEADER_LEN]) -> [u8; 12] {
        crate::codec::parse_binding_request(request).expect("request")
    }

    #[test]
    fn accepts_only_matching_responses() {
        let s1 = addr("198.51.100.1:3478");
        let s2 = addr("203.0.113.1:3478");
        let mut probe = StunProbe::new(vec![s1, s2, s1]);
        assert_eq!(probe.servers(), &[s1, s2]);
        let reqs = probe.requests(0, counter());
        assert_eq!(reqs.len(), 2);
        let (to1, req1) = reqs[0];
        let (to2, req2) = reqs[1];
        assert_eq!((to1, to2), (s1, s2));
        let mapped = addr("192.0.2.7:40000");

        // Right id, wrong source: ignored.
        let resp1 = binding_success_response(txid(&req1), mapped);
        assert_eq!(probe.on_datagram(s2, &resp1, 10), None);
        // Unknown id: ignored.
        assert_eq!(
            probe.on_datagram(s1, &binding_success_response([99; 12], mapped), 10),
            None
        );
        // Not STUN: ignored.
        assert_eq!(probe.on_datagram(s1, b"WGM1....", 10), None);
        assert_eq!(probe.nat_type(51821), NatType::Unknown);

        // Right id from the right server, via a dual-stack socket's mapped form.
        let v6_from = SocketAddr::new(
            IpAddr::V6(std::net::Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped()),
            3478,
        );
        let got = probe.on_datagram(v6_from, &resp1, 10);
        assert_eq!(got, Some(Observation { server: s1, mapped }));
        // A duplicate is not accepted twice.
        assert_eq!(probe.on_datagram(s1, &resp1, 11), None);
        assert!(!probe.all_answered());
        assert_eq!(probe.nat_type(51821), NatType::Unknown);
        assert_eq!(probe.public_endpoint(), Some(mapped));

        let resp2 = binding_success_response(txid(&req2), addr("192.0.2.7:40001"));
        assert!(probe.on_datagram(s2, &resp2, 20).is_some());
        assert!(probe.all_answered());
        assert_eq!(probe.nat_type(51821), NatType::EndpointDependent);
        assert_eq!(probe.public_endpoint(), None);
    }

    #[test]
    fn expired_transactions_are_refused() {
        let s1 = addr("198.51.100.1:3478");
        let mut probe = StunProbe::new(vec![s1]);
        let (_, req) = probe.requests(1_000, counter())[0];
        let resp = binding_success_response(txid(&req), addr("192.0.2.7:1"));
        assert_eq!(
            probe.on_datagram(s1, &resp, 1_000 + TRANSACTION_TIMEOUT_MS + 1),
            None
        );
        assert!(
            probe
                .on_datagram(s1, &resp, 1_000 + TRANSACTION_TIMEOUT_MS)
                .is_some()
        );
    }

    #[test]
    fn retries_keep_earlier_ids_valid_and_pending_is_bounded() {
        let s1 = addr("198.51.100.1:3478");
        let mut probe = StunProbe::new(vec![s1]);
        let mut rng = counter();
        let (_, first) = probe.requests(0, &mut rng)[0];
        for _ in 0..100 {
            probe.requests(1, &mut rng);
        }
        assert!(probe.pending.len() <= MAX_PENDING_PER_SERVER);
        // The first id was pushed out by the flood; a recent one still works.
        let resp = binding_success_response(txid(&first), addr("192.0.2.7:1"));
        assert_eq!(probe.on_datagram(s1, &resp, 2), None);

        let mut probe = StunProbe::new(vec![s1]);
        let (_, first) = probe.requests(0, &mut rng)[0];
        probe.requests(RETRY_INTERVAL_MS, &mut rng);
        assert!(probe.is_pending(s1));
        let resp = binding_success_response(txid(&first), addr("192.0.2.7:1"));
        assert!(
            probe
                .on_datagram(s1, &resp, RETRY_INTERVAL_MS + 5)
                .is_some()
        );
    }

    #[test]
    fn observations_expire_and_reset_clears() {
        let s1 = addr("198.51.100.1:3478");
        let local: IpAddr = "10.0.0.2".parse().expect("ip");
        let mut probe = StunProbe::new(vec![s1]).with_local_ips(vec![local]);
        let (_, req) = probe.requests(0, counter())[0];
        let resp = binding_success_response(txid(&req), addr("10.0.0.2:5000"));
        assert!(probe.on_datagram(s1, &resp, 5).is_some());
        assert_eq!(probe.nat_type(5000), NatType::Open);
        assert_eq!(probe.nat_type(5001), NatType::Unknown);

        probe.requests(5 + OBSERVATION_TTL_MS + 1, counter());
        assert!(probe.observations().is_empty());
        assert_eq!(probe.nat_type(5000), NatType::Unknown);

        probe.reset();
        assert!(!probe.is_pending(s1));
    }
}
