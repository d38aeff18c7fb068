//! How a member was found: the discovery source of the address we probed it at, else our LAN
//! beacon (it sits on our LAN) or its own discovery (it contacted us first).

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use wgmesh_mesh::Source;

/// At most this many probed addresses are remembered. (Candidates come from the DHT too, which
/// anyone can write to: a poisoned DHT adds up to 256 a round.) Past it, entries not probed for
/// [`PROBED_TTL_MS`] are forgotten, then the oldest one a third party named (gossip, the DHT);
/// if every entry is the operator's or the LAN's and fresh, a new address is not remembered
/// (its member is reported as found by our LAN beacon or inbound).
pub const MAX_PROBED: usize = 4_096;
/// A probed address is remembered this long after its last probe (a member answers within
/// seconds; discovery probes its sources again long before this).
pub const PROBED_TTL_MS: u64 = 600_000;

#[derive(Debug, Clone, Default)]
pub struct FoundBy {
    /// The source that first named each address, and when it was last probed (wall ms).
    probed: BTreeMap<IpAddr, (Source, u64)>,
}

impl FoundBy {
    /// We probed `ip` at `now_ms` because `source` named it; the first source to name an
    /// address counts.
    pub fn probed(&mut self, ip: IpAddr, source: Source, now_ms: u64) {
        if let Some((_, at)) = self.probed.get_mut(&ip) {
            *at = (*at).max(now_ms);
            return;
        }
        if self.probed.len() >= MAX_PROBED {
            self.probed
                .retain(|_, (_, at)| now_ms.saturating_sub(*at) < PROBED_TTL_MS);
        }
        if self.probed.len() >= MAX_PROBED {
            let oldest_named_by_others = self
                .probed
                .iter()
                .filter(|(_, (source, _))| matches!(source, Source::Gossip | Source::Dht))
                .min_by_key(|(_, (_, at))| *at)
                .map(|(ip, _)| *ip);
            match oldest_named_by_others {
                Some(oldest) => self.probed.remove(&oldest),
                None => return,
            };
        }
        self.probed.insert(ip, (source, now_ms));
    }

    /// The source of a member that answered from `ip`; `lan` are the networks our LAN beacon
    /// reaches (empty without LAN discovery).
    pub fn source_of(&self, ip: IpAddr, lan: &[IpNet]) -> Source {
        self.probed.get(&ip).map(|(s, _)| *s).unwrap_or_else(|| {
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
        found.probed(seed, Source::Static, 0);
        found.probed(seed, Source::Gossip, 1);
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

    #[test]
    fn the_table_is_pruned_and_third_party_names_go_first() {
        let mut found = FoundBy::default();
        let seed: IpAddr = "203.0.113.5".parse().unwrap();
        found.probed(seed, Source::Static, 0);
        for n in 0..(MAX_PROBED as u32 * 2) {
            found.probed(
                IpAddr::from((0x0a00_0000 + n).to_be_bytes()),
                Source::Dht,
                1,
            );
        }
        assert_eq!(found.len(), MAX_PROBED);
        assert_eq!(found.source_of(seed, &[]), Source::Static, "a poisoned DHT");
        // Later, stale entries are forgotten: new sources are remembered again.
        let late: IpAddr = "198.51.100.1".parse().unwrap();
        found.probed(late, Source::Static, PROBED_TTL_MS + 10);
        assert_eq!(found.source_of(late, &[]), Source::Static);
        assert!(found.len() < MAX_PROBED);
    }
}
