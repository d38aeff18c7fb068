//! NAT classification from STUN observations (RFC 4787 mapping behaviour only).
//!
//! What matters for hole punching is whether the NAT reuses one public mapping for every
//! destination (endpoint-independent: a peer can send to the address a STUN server saw) or
//! allocates a new one per destination (endpoint-dependent, "symmetric": the STUN-seen port is
//! useless to a peer). Filtering behaviour is not probed; hole punching copes with it by having
//! both sides send.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One STUN server's view of our address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Observation {
    /// The server that answered (the address we sent the request to).
    pub server: SocketAddr,
    /// Our address as that server saw it.
    pub mapped: SocketAddr,
}

/// How our control socket's address is translated on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatType {
    /// No usable observation, or one server with a rewritten port (which cannot tell
    /// endpoint-independent from endpoint-dependent mapping).
    Unknown,
    /// The mapped address is one of our own addresses with our own port: no NAT.
    Open,
    /// All servers saw the same mapping, so peers can reach it. With a single server this is
    /// assumed only when the port was preserved (see [`classify`]).
    EndpointIndependent {
        /// The public port equals our local port.
        port_preserved: bool,
    },
    /// Different servers saw different mappings: a symmetric NAT, or several uplinks.
    EndpointDependent,
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatType::Unknown => "unknown",
            NatType::Open => "open",
            NatType::EndpointIndependent {
                port_preserved: true,
            } => "port-preserving NAT",
            NatType::EndpointIndependent {
                port_preserved: false,
            } => "endpoint-independent NAT",
            NatType::EndpointDependent => "symmetric NAT",
        })
    }
}

/// Classify the observations of one local socket bound to `local_port` on a host owning
/// `local_ips`.
///
/// - Only one address family is judged: IPv4 if any IPv4 observation exists (that is where NATs
///   live), otherwise IPv6.
/// - Two or more distinct mappings → [`NatType::EndpointDependent`].
/// - One mapping equal to a local IP and `local_port` → [`NatType::Open`].
/// - One mapping seen by two or more servers → [`NatType::EndpointIndependent`]. Servers are
///   told apart by IP *and* port, so one server on two ports detects a NAT that maps per
///   destination port, but not one that maps per destination IP only.
/// - One mapping from a single server: a preserved port is taken as endpoint-independent (a
///   port-preserving NAT keeps the port towards other destinations too unless it collides),
///   otherwise [`NatType::Unknown`].
pub fn classify(observations: &[Observation], local_ips: &[IpAddr], local_port: u16) -> NatType {
    let family = judged_family(observations);
    let mut mapping = None;
    let mut servers = 0usize;
    for obs in observations.iter().filter(|o| o.mapped.is_ipv4() == family) {
        servers += 1;
        match mapping {
            None => mapping = Some(obs.mapped),
            Some(m) if m != obs.mapped => return NatType::EndpointDependent,
            Some(_) => {}
        }
    }
    let Some(mapped) = mapping else {
        return NatType::Unknown;
    };
    let port_preserved = mapped.port() == local_port;
    if port_preserved && local_ips.contains(&mapped.ip()) {
        NatType::Open
    } else if servers >= 2 || port_preserved {
        NatType::EndpointIndependent { port_preserved }
    } else {
        NatType::Unknown
    }
}

/// The mapping every judged observation agrees on, if there is one: what to advertise as our
/// STUN candidate. Unlike [`classify`] this also answers for a single server with a rewritten
/// port, since that mapping is still the best guess a peer can try.
pub fn agreed_mapping(observations: &[Observation]) -> Option<SocketAddr> {
    let family = judged_family(observations);
    let mut judged = observations.iter().filter(|o| o.mapped.is_ipv4() == family);
    let first = judged.next()?.mapped;
    judged.all(|o| o.mapped == first).then_some(first)
}

/// `true` (IPv4) if any observation is IPv4.
fn judged_family(observations: &[Observation]) -> bool {
    observations.iter().any(|o| o.mapped.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(server: &str, mapped: &str) -> Observation {
        Observation {
            server: server.parse().expect("server addr"),
            mapped: mapped.parse().expect("mapped addr"),
        }
    }

    const LOCAL_PORT: u16 = 51821;

    #[test]
    fn classification_table() {
        let local_ips: Vec<IpAddr> = vec!["192.168.1.10".parse().expect("ip")];
        let s1 = "198.51.100.1:3478";
        let s2 = "203.0.113.1:3478";
        let s1b = "198.51.100.1:3479";
        let cases: Vec<(&str, Vec<Observation>, NatType, Option<&str>)> = vec![
            ("nothing", vec![], NatType::Unknown, None),
            (
                "mapped is local",
                vec![obs(s1, "192.168.1.10:51821"), obs(s2, "192.168.1.10:51821")],
                NatType::Open,
                Some("192.168.1.10:51821"),
            ),
            (
                "one server, local address",
                vec![obs(s1, "192.168.1.10:51821")],
                NatType::Open,
                Some("192.168.1.10:51821"),
            ),
            (
                "two servers, same mapping, port kept",
                vec![obs(s1, "192.0.2.7:51821"), obs(s2, "192.0.2.7:51821")],
                NatType::EndpointIndependent {
                    port_preserved: true,
                },
                Some("192.0.2.7:51821"),
            ),
            (
                "two servers, same mapping, port rewritten",
                vec![obs(s1, "192.0.2.7:40000"), obs(s2, "192.0.2.7:40000")],
                NatType::EndpointIndependent {
                    port_preserved: false,
                },
                Some("192.0.2.7:40000"),
            ),
            (
                "two servers, different ports",
                vec![obs(s1, "192.0.2.7:40000"), obs(s2, "192.0.2.7:40001")],
                NatType::EndpointDependent,
                None,
            ),
            (
                "one server on two ports, different ports",
                vec![obs(s1, "192.0.2.7:40000"), obs(s1b, "192.0.2.7:40002")],
                NatType::EndpointDependent,
                None,
            ),
            (
                "two servers, different public IPs",
                vec![obs(s1, "192.0.2.7:51821"), obs(s2, "192.0.2.8:51821")],
                NatType::EndpointDependent,
                None,
            ),
            (
                "one server, port kept",
                vec![obs(s1, "192.0.2.7:51821")],
                NatType::EndpointIndependent {
                    port_preserved: true,
                },
                Some("192.0.2.7:51821"),
            ),
            (
                "one server, port rewritten: cannot tell",
                vec![obs(s1, "192.0.2.7:40000")],
                NatType::Unknown,
                Some("192.0.2.7:40000"),
            ),
            (
                "IPv6 open alongside IPv4 NAT: IPv4 judged",
                vec![
                    obs("[2001:db8::1]:3478", "[2001:db8::10]:51821"),
                    obs(s1, "192.0.2.7:40000"),
                    obs(s2, "192.0.2.7:40001"),
                ],
                NatType::EndpointDependent,
                None,
            ),
            (
                "IPv6 only",
                vec![
                    obs("[2001:db8::1]:3478", "[2001:db8::10]:51821"),
                    obs("[2001:db8::2]:3478", "[2001:db8::10]:51821"),
                ],
                NatType::EndpointIndependent {
                    port_preserved: true,
                },
                Some("[2001:db8::10]:51821"),
            ),
        ];
        for (name, observations, want, endpoint) in cases {
            assert_eq!(
                classify(&observations, &local_ips, LOCAL_PORT),
                want,
                "{name}"
            );
            let endpoint = endpoint.map(|e| e.parse::<SocketAddr>().expect("endpoint"));
            assert_eq!(agreed_mapping(&observations), endpoint, "{name}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(NatType::Open.to_string(), "open");
        assert_eq!(NatType::Unknown.to_string(), "unknown");
        assert_eq!(NatType::EndpointDependent.to_string(), "symmetric NAT");
        assert_eq!(
            NatType::EndpointIndependent {
                port_preserved: true
            }
            .to_string(),
            "port-preserving NAT"
        );
        assert_eq!(
            NatType::EndpointIndependent {
                port_preserved: false
            }
            .to_string(),
            "endpoint-independent NAT"
        );
    }
}
