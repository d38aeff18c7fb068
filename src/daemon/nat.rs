//! NAT awareness on the control socket: STUN rounds (RFC 5389 via `wgmesh-nat`) and noticing
//! that the host's own addresses changed (roaming), which calls for a new round at once.

use super::state::now_ms;
use crate::platform::lan_addresses;
use std::net::{IpAddr, SocketAddr};
use tokio::time::{Duration, Instant};
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

#[derive(Debug)]
pub struct NatWatch {
    interface: String,
    /// The configured STUN servers (`HOST:PORT`), kept to resolve again if DNS failed at start
    /// (a host often boots before its network is up).
    servers: Vec<String>,
    control_port: u16,
    probe: Option<StunProbe>,
    next_stun: Option<Instant>,
    attempts: u32,
    addresses: Vec<IpAddr>,
    next_address_check: Instant,
    view: NatView,
}

impl NatWatch {
    pub fn new(interface: &str, control_port: u16, servers: Option<Vec<String>>) -> Self {
        let addresses = local_ips(interface);
        let stun_enabled = servers.is_some();
        Self {
            interface: interface.to_owned(),
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
        self.probe = Some(StunProbe::new(servers).with_local_ips(self.addresses.clone()));
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

    /// Whether the host's addresses changed since the last look (checked every
    /// [`ADDRESS_CHECK`], and shortly after link events); if so, STUN starts over at once.
    pub fn addresses_changed(&mut self, now: Instant) -> bool {
        if now < self.next_address_check {
            return false;
        }
        self.next_address_check = now + ADDRESS_CHECK;
        let current = local_ips(&self.interface);
        if current == self.addresses {
            return false;
        }
        self.addresses = current;
        if let Some(probe) = self.probe.as_mut() {
            probe.reset();
            probe.set_local_ips(self.addresses.clone());
            self.next_stun = Some(now);
            self.attempts = 0;
        }
        true
    }

    pub fn view(&self) -> &NatView {
        &self.view
    }
}

fn local_ips(interface: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = lan_addresses(interface)
        .into_iter()
        .map(|(_, ip)| IpAddr::V4(ip))
        .collect();
    ips.sort();
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
