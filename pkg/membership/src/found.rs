//! How a member was found: the discovery source of the address we probed it at, else our LAN
//! beacon (it sits on our LAN) or its own discovery (it contacted us first).

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wgmesh_mesh::Source;

/// At most this many probed addresses are remembered; past it, members found at new addresses
/// are reported as found by our LAN beacon or inbound. (Candidates come from the DHT too, which
/// anyone can write to.)
pub const MAX_PROBED: usize = 4_096;

#[derive(Debug, Clone, Default)]
pub struct FoundBy {
    probed: BTreeMap<IpAddr, Source>,
}

impl FoundBy {
    /// We probed `ip` because `source` named it; the first source to name an address counts.
    pub fn probed(&mut self, ip: IpAddr, source: Source) {
        if self.probed.len() >= MAX_PROBED && !self.probed.contains_key(&ip) {
            return;
        }
        self.probed.entry(ip).or_insert(source);
    }

    /// The source of a member that answered from `ip`; `lan` are the networks our LAN beacon
    /// reaches (empty without LAN discovery).
    pub fn source_of(&self, ip: IpAddr, lan: &[IpNet]) -> Source {
        self.probed.get(&ip).copied().unwrap_or_else(|| {
            if lan.iter().any(|net| net.contains(&ip)) {
                Source::Lan
            } else {
                Source::Inbound
            }
        })
    }

    pub fn len(&self) -> usize {
        self.probed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_by_address() {
        let lan: Vec<IpNet> = vec!["192.168.1.0/24".parse().unwrap()];
        let mut found = FoundBy::default();
        let seed: IpAddr = "203.0.113.5".parse().unwrap();
        found.probed(seed, Source::Static);
        found.probed(seed, Source::Gossip);
        let table = [
            ("203.0.113.5", Source::Static),
            ("192.168.1.7", Source::Lan),
            ("198.51.100.1", Source::Inbound),
        ];
        for (ip, want) in table {
            assert_eq!(found.source_of(ip.parse().unwrap(), &lan), want, "{ip}");
        }
        assert_eq!(
            found.source_of("192.168.1.7".parse().unwrap(), &[]),
            Source::Inbound
        );
    }
}
