//! The bootstrap list: configured names (or mainline's public routers), resolved to IPv4, plus
//! the nodes saved by the last run.

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};

/// The names to resolve: the configured list, or mainline's public routers when it is empty.
pub(crate) fn bootstrap_names(configured: &[String]) -> Vec<String> {
    if configured.is_empty() {
        mainline::DEFAULT_BOOTSTRAP_NODES
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        configured.to_vec()
    }
}

/// Resolves `HOST:PORT` names to IPv4 addresses (mainline speaks IPv4 only); failures are logged
/// and skipped.
pub(crate) fn resolve(names: &[String]) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for name in names {
        match name.to_socket_addrs() {
            Ok(addrs) => {
                let before = out.len();
                out.extend(addrs.filter_map(|a| match a {
                    SocketAddr::V4(v4) => Some(v4),
                    SocketAddr::V6(_) => None,
                }));
                if out.len() == before {
                    tracing::debug!(%name, "DHT bootstrap node has no IPv4 address");
                }
            }
            Err(err) => tracing::debug!(%name, %err, "cannot resolve DHT bootstrap node"),
        }
    }
    out
}

/// Resolved bootstrap nodes followed by saved nodes, without duplicates.
pub(crate) fn merge_bootstrap(resolved: &[SocketAddrV4], saved: &[SocketAddrV4]) -> Vec<String> {
    let mut seen = HashSet::new();
    resolved
        .iter()
        .chain(saved)
        .filter(|a| seen.insert(**a))
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bootstrap_means_public_routers() {
        let names = bootstrap_names(&[]);
        assert_eq!(names.len(), mainline::DEFAULT_BOOTSTRAP_NODES.len());
        assert!(names.iter().any(|n| n.starts_with("router.bittorrent.com")));
        let own = vec!["10.200.0.1:4000".to_owned()];
        assert_eq!(bootstrap_names(&own), own);
    }

    #[test]
    fn resolve_skips_bad_names_and_keeps_ipv4() {
        let names = vec![
            "127.0.0.1:6881".to_owned(),
            "not a host name:1".to_owned(),
            "[::1]:6881".to_owned(),
            "no-port".to_owned(),
        ];
        assert_eq!(resolve(&names), vec!["127.0.0.1:6881".parse().unwrap()]);
    }

    #[test]
    fn saved_nodes_extend_the_bootstrap_list() {
        let a: SocketAddrV4 = "192.0.2.1:6881".parse().unwrap();
        let b: SocketAddrV4 = "192.0.2.2:6881".parse().unwrap();
        assert_eq!(
            merge_bootstrap(&[a], &[b, a]),
            vec!["192.0.2.1:6881", "192.0.2.2:6881"]
        );
        assert!(merge_bootstrap(&[], &[]).is_empty());
    }
}
