//! NAT awareness on the control socket: STUN rounds (RFC 5389 via `wgmesh-nat`) and noticing
//! that the host's own addresses changed (roaming), which calls for a new round at once.

use super::state::now_ms;
use std::net::{IpAddr, SocketAddr};
use tokio::time::{Duration, Instant};
use wgmesh_device::HostAddress;
use wgmesh_nat::{
    MAX_ATTEMPTS_PER_ROUND, NatType, REPROBE_INTERVAL_MS, RETRY_INTERVAL_MS, StunProbe,
};

/// How often the host's addresses are compared with the last look when no link or address event
/// said so: rtnetlink events trigger the check at once; this poll only backs them up.
pub const ADDRESS_CHECK: Duration = Duration::from_secs(60);
/// How long a burst of link events is given to settle.
const EVENT_SETTLE: Duration = Duration::from_millis(300);

/// What changed after a STUN answer or an address change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatView {
    pub nat_type: String,
    pub public_endpoint: Option<SocketAddr>,
}

/// STUN rounds, and when to look at the host's addresses again. The addresses are read by the
/// caller (from its [`wgmesh_device::Host`]) and handed in: this holds no OS handle.
#[derive(Debug)]
pub struct NatWatch {
    /// The configured STUN servers (`HOST:PORT`), kept to resolve again if DNS failed at start
    /// (a host often boots before its network is up).
    servers: Vec<String>,
    control_port: u16,
    probe: Option<StunProbe>,
    next_stun: Option<Instant>,
    attempts: u32,
    addresses: Vec<HostAddress>,
    next_address_check: Instant,
    view: NatView,
}

impl NatWatch {
    /// `addresses`: the host's, as its `Host` reports them at start.
    pub fn new(
        control_port: u16,
        servers: Option<Vec<String>>,
        addresses: Vec<HostAddress>,
    ) -> Self {
        let stun_enabled = servers.is_some();
        Self {
            servers: servers.unwrap_or_default(),
            control_port,
            probe: None,
            next_stun: None,
            attempts: 0,
            addresses,
            next_address_check: Instant::now() + ADDRESS_CHECK,
            view: NatView {
                nat_type: if stun_enabled { "unknown" } else { "disabled" }.to_owned(),
                public_endpoint: None,
            },
        }
    }

    /// The STUN servers, once resolved; starts a round at once.
    pub fn set_servers(&mut self, servers: Vec<SocketAddr>) {
        if servers.is_empty() {
            return;
        }
        self.probe = Some(StunProbe::new(servers).with_local_ips(local_ips(&self.addresses)));
        self.next_stun = Some(Instant::now());
        self.attempts = 0;
    }

    /// The server names to resolve, if STUN is on but no server has resolved yet.
    pub fn unresolved(&self) -> Option<Vec<String>> {
        (self.probe.is_none() && !self.servers.is_empty()).then(|| self.servers.clone())
    }

    pub fn next_deadline(&self) -> Instant {
        self.next_stun
            .map_or(self.next_address_check, |t| t.min(self.next_address_check))
    }

    /// STUN requests due now (sent from the control socket).
    pub fn due_requests(&mut self, now: Instant) -> Vec<(SocketAddr, [u8; 20])> {
        let (Some(probe), Some(at)) = (self.probe.as_mut(), self.next_stun) else {
            return Vec::new();
        };
        if at > now {
            return Vec::new();
        }
        let requests = probe.requests(now_ms(), transaction_id);
        self.attempts += 1;
        let wait = if probe.all_answered() || self.attempts >= MAX_ATTEMPTS_PER_ROUND {
            self.attempts = 0;
            REPROBE_INTERVAL_MS
        } else {
            RETRY_INTERVAL_MS
        };
        self.next_stun = Some(now + Duration::from_millis(wait));
        requests
    }

    /// Feeds a STUN datagram; returns the new view when it changed.
    pub fn on_stun(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<NatView> {
        let probe = self.probe.as_mut()?;
        probe.on_datagram(from, datagram, now_ms())?;
        if probe.all_answered() {
            self.attempts = 0;
        }
        let view = NatView {
            nat_type: probe.nat_type(self.control_port).to_string(),
            public_endpoint: match probe.nat_type(self.control_port) {
                // A mapping that depends on the destination is useless to anyone else.
                NatType::EndpointDependent => None,
                _ => probe.public_endpoint(),
            },
        };
        (view != self.view).then(|| {
            self.view = view.clone();
            view
        })
    }

    /// A link, address or route changed: look again shortly. Such changes come in bursts (an
    /// address, then its routes, then the default route); acting on the first message would
    /// announce a network that cannot route yet.
    pub fn link_event(&mut self, now: Instant) {
        self.next_address_check = self.next_address_check.min(now + EVENT_SETTLE);
    }

    /// Whether it is time to look at the host's addresses (every [`ADDRESS_CHECK`], and shortly
    /// after link events); the caller then reads them and hands them to [`Self::addresses_read`].
    pub fn address_check_due(&mut self, now: Instant) -> bool {
        if now < self.next_address_check {
            return false;
        }
        self.next_address_check = now + ADDRESS_CHECK;
        true
    }

    /// The host's addresses as just read; whether they changed since the last look. If they did,
    /// STUN starts over at once from the new addresses.
    pub fn addresses_read(&mut self, now: Instant, current: &[HostAddress]) -> bool {
        if current == self.addresses {
            return false;
        }
        current.clone_into(&mut self.addresses);
        if let Some(probe) = self.probe.as_mut() {
            probe.reset();
            probe.set_local_ips(local_ips(&self.addresses));
            self.next_stun = Some(now);
            self.attempts = 0;
        }
        true
    }

    pub fn view(&self) -> &NatView {
        &self.view
    }
}

/// The IPv4 addresses STUN compares its answer with (the control socket is IPv4).
fn local_ips(addresses: &[HostAddress]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = addresses
        .iter()
        .map(|a| a.ip)
        .filter(IpAddr::is_ipv4)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn transaction_id() -> [u8; 12] {
    let mut id = [0u8; 12];
    // A failed OS random source leaves a zero id: the request still works, it is only guessable.
    let _ = getrandom::fill(&mut id);
    id
}

/// Resolves `HOST:PORT` servers off the runtime (DNS is blocking). Unresolvable ones are skipped.
pub async fn resolve(servers: Vec<String>) -> Vec<SocketAddr> {
    tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs as _;
        servers
            .iter()
            .filter_map(|s| match s.to_socket_addrs() {
                Ok(mut addrs) => addrs.find(SocketAddr::is_ipv4),
                Err(err) => {
                    tracing::info!(server = %s, error = %err, "cannot resolve server");
                    None
                }
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// `--stun`/`--dht-bootstrap` values: absent → the defaults, `none` → disabled.
pub fn server_list(spec: Option<&str>, defaults: &[&str]) -> Option<Vec<String>> {
    match spec.map(str::trim) {
        None => Some(defaults.iter().map(|s| (*s).to_owned()).collect()),
        Some("none") => None,
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(interface: &str, ip: &str) -> HostAddress {
        HostAddress {
            interface: interface.to_owned(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn addresses_are_looked_at_on_schedule_and_a_change_restarts_stun() {
        let home = vec![address("eth0", "192.168.1.20")];
        let mut watch = NatWatch::new(
            51821,
            Some(vec!["stun.example:3478".to_owned()]),
            home.clone(),
        );
        watch.set_servers(vec!["192.0.2.1:3478".parse().unwrap()]);
        let start = Instant::now();
        assert_eq!(
            watch.due_requests(start).len(),
            1,
            "a round starts when servers resolve"
        );
        assert!(
            watch.due_requests(start).is_empty(),
            "then waits for its retry"
        );

        // Not before the periodic check, unless a link event brings it forward.
        assert!(!watch.address_check_due(start));
        watch.link_event(start);
        assert!(!watch.address_check_due(start));
        assert!(watch.address_check_due(start + EVENT_SETTLE));
        assert!(
            !watch.address_check_due(start + EVENT_SETTLE),
            "once per look"
        );
        assert!(watch.address_check_due(start + EVENT_SETTLE + ADDRESS_CHECK));

        // The same addresses change nothing; new ones (a laptop on another network) do, and
        // STUN starts over at once.
        let later = start + Duration::from_secs(1);
        assert!(!watch.addresses_read(later, &home));
        let cafe = vec![address("eth0", "10.1.2.3"), address("eth0", "2001:db8::3")];
        assert!(watch.addresses_read(later, &cafe));
        assert_eq!(
            watch.due_requests(later).len(),
            1,
            "STUN starts over at once"
        );
        assert!(!watch.addresses_read(later, &cafe));
        // An IPv6-only change is a change too (WireGuard's pinned source addresses go stale).
        assert!(watch.addresses_read(later, &cafe[..1]));
    }

    #[test]
    fn stun_compares_its_answer_with_the_ipv4_addresses_only() {
        let addresses = [
            address("eth1", "10.1.2.3"),
            address("eth0", "2001:db8::3"),
            address("eth0", "192.168.1.20"),
            address("eth2", "10.1.2.3"),
        ];
        assert_eq!(
            local_ips(&addresses),
            ["10.1.2.3", "192.168.1.20"].map(|ip| ip.parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn server_lists() {
        assert_eq!(server_list(Some("none"), &["a:1"]), None);
        assert_eq!(server_list(None, &["a:1"]), Some(vec!["a:1".to_owned()]));
        assert_eq!(
            server_list(Some("b:2, c:3,"), &["a:1"]),
            Some(vec!["b:2".to_owned(), "c:3".to_owned()])
        );
    }
}
