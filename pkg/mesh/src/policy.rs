//! The `accept-routes` policy: which advertised routes this host may install at all, before
//! the filter in [`crate::routes`] looks at conflicts (DESIGN.md §6).
//!
//! `none`, `all`, or a comma-separated list of prefixes a route must fall inside. `private`
//! in a list stands for the private ranges (RFC 1918, 100.64.0.0/10 and fc00::/7), which is
//! also the default. An entry `PREFIX@KEY` pins the prefix to the member whose base64 public
//! key starts with `KEY` (at least 8 characters): that prefix, anything inside it and anything
//! covering it is accepted only from that member. `true` and `false`, the values of v0.1's
//! boolean flag, mean the default and `none`.
//!
//! A minimum prefix length (default /16 for IPv4 and /48 for IPv6) keeps an insider from
//! squatting a whole private range before its owner advertises a part of it. A prefix pinned to
//! a member is exempt for that member: the operator named it.

use ipnet::IpNet;
use std::fmt;
use std::str::FromStr;
use wgmesh_keys::{KeyPrefix, KeyPrefixError, PublicKey};

/// The private ranges: the default policy, and `private` in a list.
pub const PRIVATE_RANGES: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// The default shortest IPv4 prefix accepted from members.
pub const DEFAULT_MIN_PREFIX_V4: u8 = 16;
/// The default shortest IPv6 prefix accepted from members.
pub const DEFAULT_MIN_PREFIX_V6: u8 = 48;

/// Which prefixes may be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accept {
    None,
    All,
    Within(Vec<PolicyEntry>),
}

/// One prefix of a list, possibly pinned to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    pub prefix: IpNet,
    pub pinned_to: Option<KeyPrefix>,
}

/// The whole route policy: which prefixes, and how short a route may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    pub accept: Accept,
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self {
            accept: Accept::default(),
            min_prefix_v4: DEFAULT_MIN_PREFIX_V4,
            min_prefix_v6: DEFAULT_MIN_PREFIX_V6,
        }
    }
}

impl Default for Accept {
    fn default() -> Self {
        Self::Within(private_ranges())
    }
}

fn private_ranges() -> Vec<PolicyEntry> {
    PRIVATE_RANGES
        .iter()
        .filter_map(|text| text.parse().ok())
        .map(|prefix| PolicyEntry {
            prefix,
            pinned_to: None,
        })
        .collect()
}

/// Why an `accept-routes` value was refused. Never quotes more than one item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("accept-routes is empty (use none, all, private or a list of prefixes)")]
    Empty,
    #[error("accept-routes item {0:?} is not none, all, private or a prefix (CIDR or CIDR@KEY)")]
    NotAPrefix(String),
    #[error("accept-routes item {item:?}: {error}")]
    BadKey { item: String, error: KeyPrefixError },
    #[error("accept-routes: {0} cannot be combined with other items")]
    Alone(&'static str),
    #[error("minimum route prefix {given} is longer than an {family} address ({max} bits)")]
    MinTooLong {
        given: u8,
        family: &'static str,
        max: u8,
    },
}

/// The non-empty, trimmed items of a comma-separated value.
fn list_items(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

impl FromStr for Accept {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let items = list_items(text);
        let alone = |word: &'static str, value: Accept| {
            if items.len() == 1 {
                Ok(value)
            } else {
                Err(PolicyError::Alone(word))
            }
        };
        match items
            .first()
            .map(|item| item.to_ascii_lowercase())
            .as_deref()
        {
            None => return Err(PolicyError::Empty),
            Some("none" | "false") => return alone("none", Self::None),
            Some("all") => return alone("all", Self::All),
            Some("true") => return alone("true", Self::default()),
            _ => {}
        }
        let mut entries = Vec::new();
        for item in items {
            if item.eq_ignore_ascii_case("private") {
                entries.extend(private_ranges());
                continue;
            }
            if ["none", "all", "true", "false"]
                .iter()
                .any(|word| item.eq_ignore_ascii_case(word))
            {
                return Err(PolicyError::Alone("none, all, true and false"));
            }
            let (prefix, key) = match item.split_once('@') {
                Some((prefix, key)) => (prefix, Some(key)),
                None => (item, None),
            };
            // Quoted in errors only when it is short or an address (never a pasted secret).
            let shown = || {
                if prefix.parse::<IpNet>().is_ok() || item.len() < 16 {
                    item.to_owned()
                } else {
                    format!("<{} characters>", item.len())
                }
            };
            let prefix: IpNet = prefix
                .parse()
                .map_err(|_| PolicyError::NotAPrefix(shown()))?;
            let pinned_to = key
                .map(|key| {
                    key.parse::<KeyPrefix>()
                        .map_err(|error| PolicyError::BadKey {
                            item: shown(),
                            error,
                        })
                })
                .transpose()?;
            entries.push(PolicyEntry {
                prefix: prefix.trunc(),
                pinned_to,
            });
        }
        Ok(Self::Within(entries))
    }
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::All => f.write_str("all"),
            Self::Within(entries) => {
                let items: Vec<String> = entries
                    .iter()
                    .map(|entry| match &entry.pinned_to {
                        Some(key) => format!("{}@{key}", entry.prefix),
                        None => entry.prefix.to_string(),
                    })
                    .collect();
                f.write_str(&items.join(","))
            }
        }
    }
}

/// `relays`: which members may relay for this host. `any` (the default: the choice is by
/// reachability and a keyed hash, `wgmesh_membership::relay`), `none`, or a comma-separated
/// list of key prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RelaySetting {
    #[default]
    Any,
    /// Only members whose key starts with one of these; none at all when empty.
    Only(Vec<KeyPrefix>),
}

impl FromStr for RelaySetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let items = list_items(text);
        match items.as_slice() {
            [] => Err("relays is empty (use any, none or a list of key prefixes)".to_owned()),
            [word] if word.eq_ignore_ascii_case("any") => Ok(Self::Any),
            [word] if word.eq_ignore_ascii_case("none") => Ok(Self::Only(Vec::new())),
            _ => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.parse::<KeyPrefix>()
                        .map_err(|err| format!("relays entry {}: {err}", i + 1))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Only),
        }
    }
}

impl fmt::Display for RelaySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Only(keys) if keys.is_empty() => f.write_str("none"),
            Self::Only(keys) => {
                let keys: Vec<&str> = keys.iter().map(KeyPrefix::as_str).collect();
                f.write_str(&keys.join(","))
            }
        }
    }
}

/// Parses a minimum prefix length for one family (`max` is 32 or 128).
pub fn parse_min_prefix(text: &str, family: &'static str, max: u8) -> Result<u8, String> {
    let given: u8 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a prefix length (0 to {max})"))?;
    if given > max {
        return Err(PolicyError::MinTooLong { given, family, max }.to_string());
    }
    Ok(given)
}

/// How the policy judges one route from one member, before conflicts with other members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Inside the policy; `pinned` when a prefix pinned to this very member covers it.
    Inside {
        pinned: bool,
    },
    /// Overlaps a prefix pinned to another member.
    PinnedToOther(IpNet),
    OutsidePolicy,
    /// Shorter than the minimum for its family.
    TooShort(u8),
    AcceptNone,
}

impl RoutePolicy {
    /// Judges `route` (truncated) advertised by `member`.
    pub fn judge(&self, member: &PublicKey, route: &IpNet) -> Verdict {
        let entries = match &self.accept {
            Accept::None => return Verdict::AcceptNone,
            Accept::All => &[][..],
            Accept::Within(entries) => entries.as_slice(),
        };
        let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
        let mut pinned_here = false;
        for entry in entries {
            let Some(key) = &entry.pinned_to else {
                continue;
            };
            if !overlaps(&entry.prefix, route) {
                continue;
            }
            if !key.matches(member) {
                return Verdict::PinnedToOther(entry.prefix);
            }
            pinned_here |= entry.prefix.contains(route);
        }
        if let Accept::Within(entries) = &self.accept
            && !entries.iter().any(|entry| {
                entry.prefix.contains(route)
                    && entry
                        .pinned_to
                        .as_ref()
                        .is_none_or(|key| key.matches(member))
            })
        {
            return Verdict::OutsidePolicy;
        }
        let min = match route {
            IpNet::V4(_) => self.min_prefix_v4,
            IpNet::V6(_) => self.min_prefix_v6,
        };
        if route.prefix_len() < min && !pinned_here {
            return Verdict::TooShort(min);
        }
        Verdict::Inside {
            pinned: pinned_here,
        }
    }
}

impl fmt::Display for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (shortest prefix /{} for IPv4, /{} for IPv6)",
            self.accept, self.min_prefix_v4, self.min_prefix_v6
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn pin(n: u8) -> String {
        key(n).to_base64()[..8].to_owned()
    }

    #[test]
    fn values_parse_to_policies_and_print_back() {
        assert_eq!("none".parse::<Accept>(), Ok(Accept::None));
        assert_eq!("false".parse::<Accept>(), Ok(Accept::None));
        assert_eq!("ALL".parse::<Accept>(), Ok(Accept::All));
        assert_eq!("true".parse::<Accept>(), Ok(Accept::default()));
        assert_eq!("private".parse::<Accept>(), Ok(Accept::default()));
        assert_eq!(
            Accept::default().to_string(),
            "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
        );
        let text = format!("192.168.7.9/24, 10.20.0.0/16@{}", pin(3));
        let parsed: Accept = text.parse().unwrap();
        assert_eq!(
            parsed.to_string(),
            format!("192.168.7.0/24,10.20.0.0/16@{}", pin(3))
        );
        assert_eq!(parsed.to_string().parse::<Accept>(), Ok(parsed));
    }

    #[test]
    fn bad_values_name_the_item_and_never_a_long_one() {
        assert_eq!("".parse::<Accept>(), Err(PolicyError::Empty));
        assert_eq!(
            "10.0.0.0/8,all".parse::<Accept>(),
            Err(PolicyError::Alone("none, all, true and false"))
        );
        assert_eq!(
            "none,10.0.0.0/8".parse::<Accept>(),
            Err(PolicyError::Alone("none"))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Accept>(),
            Err(PolicyError::NotAPrefix("10.0.0.0/33".to_owned()))
        );
        let secret_like = "wgmesh://v1/aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldA";
        let error = secret_like.parse::<Accept>().unwrap_err().to_string();
        assert!(!error.contains("aGVsbG8"), "{error}");
        assert!(matches!(
            "10.0.0.0/16@abc".parse::<Accept>(),
            Err(PolicyError::BadKey {
                error: KeyPrefixError::TooShort(3),
                ..
            })
        ));
        assert_eq!(parse_min_prefix("24", "IPv4", 32), Ok(24));
        assert!(
            parse_min_prefix("33", "IPv4", 32)
                .unwrap_err()
                .contains("32 bits")
        );
        assert!(parse_min_prefix("x", "IPv6", 128).is_err());
    }

    #[test]
    fn relay_settings_parse_and_print_back_and_never_echo_an_entry() {
        assert_eq!("ANY".parse(), Ok(RelaySetting::Any));
        assert_eq!("none".parse(), Ok(RelaySetting::Only(Vec::new())));
        let text = format!("{}, {}", pin(3), key(4).to_base64());
        let parsed: RelaySetting = text.parse().unwrap();
        assert_eq!(
            parsed.to_string(),
            format!("{},{}", pin(3), key(4).to_base64())
        );
        assert_eq!(parsed.to_string().parse(), Ok(parsed));
        assert!("".parse::<RelaySetting>().is_err());
        let error = "AAAAAAAA,wgmesh://v1/secretsecretsecret"
            .parse::<RelaySetting>()
            .unwrap_err();
        assert!(error.starts_with("relays entry 2:"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn the_default_accepts_private_ranges_down_to_the_minimum_length() {
        let policy = RoutePolicy::default();
        let judge = |route: &str| policy.judge(&key(1), &net(route));
        assert_eq!(judge("192.168.7.0/24"), Verdict::Inside { pinned: false });
        assert_eq!(judge("10.20.0.0/16"), Verdict::Inside { pinned: false });
        assert_eq!(
            judge("fd12:3456:789a::/48"),
            Verdict::Inside { pinned: false }
        );
        assert_eq!(judge("100.64.0.0/10"), Verdict::TooShort(16));
        assert_eq!(judge("10.0.0.0/8"), Verdict::TooShort(16));
        assert_eq!(judge("fd00::/8"), Verdict::TooShort(48));
        assert_eq!(judge("8.8.8.0/24"), Verdict::OutsidePolicy);
        assert_eq!(judge("0.0.0.0/1"), Verdict::OutsidePolicy);
        assert_eq!(judge("2001:db8::/48"), Verdict::OutsidePolicy);
        let all = RoutePolicy {
            accept: Accept::All,
            ..RoutePolicy::default()
        };
        assert_eq!(
            all.judge(&key(1), &net("8.8.8.0/24")),
            Verdict::Inside { pinned: false }
        );
        assert_eq!(
            all.judge(&key(1), &net("128.0.0.0/1")),
            Verdict::TooShort(16)
        );
        let none = RoutePolicy {
            accept: Accept::None,
            ..RoutePolicy::default()
        };
        assert_eq!(
            none.judge(&key(1), &net("10.20.0.0/16")),
            Verdict::AcceptNone
        );
    }

    #[test]
    fn a_pinned_prefix_is_only_accepted_from_its_member_which_may_go_below_the_minimum() {
        let policy = RoutePolicy {
            accept: format!("private,10.0.0.0/8@{}", pin(3)).parse().unwrap(),
            ..RoutePolicy::default()
        };
        // The pinned member: its whole /8 too, although it is shorter than /16.
        assert_eq!(
            policy.judge(&key(3), &net("10.0.0.0/8")),
            Verdict::Inside { pinned: true }
        );
        assert_eq!(
            policy.judge(&key(3), &net("10.9.0.0/16")),
            Verdict::Inside { pinned: true }
        );
        // Anyone else: nothing inside it, even through the broader unpinned entry.
        assert_eq!(
            policy.judge(&key(4), &net("10.9.0.0/16")),
            Verdict::PinnedToOther(net("10.0.0.0/8"))
        );
        assert_eq!(
            policy.judge(&key(4), &net("192.168.1.0/24")),
            Verdict::Inside { pinned: false }
        );
        // Nor anything covering it.
        let narrow = RoutePolicy {
            accept: format!("10.20.30.0/24@{}", pin(3)).parse().unwrap(),
            min_prefix_v4: 8,
            ..RoutePolicy::default()
        };
        assert_eq!(
            narrow.judge(&key(4), &net("10.20.0.0/16")),
            Verdict::PinnedToOther(net("10.20.30.0/24"))
        );
        assert_eq!(
            narrow.judge(&key(3), &net("10.20.0.0/16")),
            Verdict::OutsidePolicy
        );
    }
}
