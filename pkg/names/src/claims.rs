//! Who keeps a name that two members claim: the key first verified under it.
//!
//! Key order must not decide (keys can be ground to win, as for IPv4 collisions in DESIGN.md
//! §3), and neither may the newest claim (an insider could take over `db1` by announcing it).
//! So the member this host verified first under a name keeps it for as long as it is a member
//! and keeps the name; everyone else claiming it is shown as `name~<key prefix>` and marked
//! contested. This host's own name is its own first. Each host decides from what it verified, so
//! two hosts can disagree about a contest; neither ever shows a contested name bare.

use crate::MemberName;
use std::collections::{BTreeMap, HashMap};
use wgmesh_keys::PublicKey;

/// A member's claim to a name.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub key: PublicKey,
    pub name: &'a MemberName,
    /// When this host first verified the member under this name, as a sequence number (lower is
    /// earlier). Renaming starts a new claim.
    pub order: u64,
}

/// How a member is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// The name the member claims.
    pub name: MemberName,
    /// Another member holds the name; this one is shown with its key prefix.
    pub contested: bool,
    display: String,
}

impl Naming {
    /// `name`, or `name~<key prefix>` when contested.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// The first 8 hex digits of a key: short, and in an alphabet that is safe in host files.
pub fn key_prefix(key: &PublicKey) -> String {
    key.as_bytes()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Names every claimant. `own` (this host) always keeps its own name. Among the others the
/// lowest `order` keeps a name; equal orders (which a correct caller never produces) leave the
/// name to nobody, so a tie can never show a contested name bare.
pub fn resolve<'a>(
    own: Option<(PublicKey, &MemberName)>,
    claims: impl IntoIterator<Item = Claim<'a>>,
) -> BTreeMap<PublicKey, Naming> {
    let claims: Vec<Claim<'a>> = claims.into_iter().collect();
    // Per name: the winning key, or None for a tie.
    let mut owners: HashMap<&MemberName, (Option<PublicKey>, u64)> = HashMap::new();
    for claim in &claims {
        owners
            .entry(claim.name)
            .and_modify(|(owner, order)| {
                if claim.order < *order {
                    *owner = Some(claim.key);
                    *order = claim.order;
                } else if claim.order == *order && *owner != Some(claim.key) {
                    *owner = None;
                }
            })
            .or_insert((Some(claim.key), claim.order));
    }
    let mut named = BTreeMap::new();
    if let Some((key, name)) = own {
        owners.insert(name, (Some(key), 0));
        named.insert(key, naming(name, &key, false));
    }
    for claim in &claims {
        if own.is_some_and(|(key, _)| key == claim.key) {
            continue;
        }
        let owner = owners.get(claim.name).and_then(|(owner, _)| *owner);
        let contested = owner != Some(claim.key);
        named.insert(claim.key, naming(claim.name, &claim.key, contested));
    }
    named
}

fn naming(name: &MemberName, key: &PublicKey, contested: bool) -> Naming {
    let display = if contested {
        format!("{name}~{}", key_prefix(key))
    } else {
        name.to_string()
    };
    Naming {
        name: name.clone(),
        contested,
        display,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn name(s: &str) -> MemberName {
        MemberName::parse(s).unwrap()
    }

    fn shown(named: &BTreeMap<PublicKey, Naming>, n: u8) -> (&str, bool) {
        let naming = &named[&key(n)];
        (naming.display(), naming.contested)
    }

    #[test]
    fn the_first_verified_key_keeps_a_name_whatever_the_key_order() {
        let web = name("web1");
        // Key 9 was verified first; key 1 (lower) claims the same name later.
        let named = resolve(
            None,
            [
                Claim {
                    key: key(1),
                    name: &web,
                    order: 7,
                },
                Claim {
                    key: key(9),
                    name: &web,
                    order: 3,
                },
            ],
        );
        assert_eq!(shown(&named, 9), ("web1", false));
        assert_eq!(shown(&named, 1), ("web1~01010101", true));
        assert_eq!(
            named[&key(1)].name,
            web,
            "the claimed name is kept as claimed"
        );
    }

    #[test]
    fn our_own_name_is_ours_and_distinct_names_are_uncontested() {
        let (web, db) = (name("web1"), name("db1"));
        let named = resolve(
            Some((key(5), &web)),
            [
                Claim {
                    key: key(2),
                    name: &web,
                    order: 0,
                },
                Claim {
                    key: key(3),
                    name: &db,
                    order: 1,
                },
            ],
        );
        assert_eq!(shown(&named, 5), ("web1", false));
        assert_eq!(shown(&named, 2), ("web1~02020202", true));
        assert_eq!(shown(&named, 3), ("db1", false));
    }

    #[test]
    fn when_the_holder_leaves_the_next_earliest_claim_takes_the_name() {
        let web = name("web1");
        let claims = [
            Claim {
                key: key(1),
                name: &web,
                order: 1,
            },
            Claim {
                key: key(2),
                name: &web,
                order: 2,
            },
            Claim {
                key: key(3),
                name: &web,
                order: 3,
            },
        ];
        let named = resolve(None, claims[1..].iter().copied());
        assert_eq!(shown(&named, 2), ("web1", false));
        assert_eq!(shown(&named, 3), ("web1~03030303", true));
    }

    #[test]
    fn a_tie_leaves_the_name_to_nobody() {
        let web = name("web1");
        let named = resolve(
            None,
            [
                Claim {
                    key: key(1),
                    name: &web,
                    order: 4,
                },
                Claim {
                    key: key(2),
                    name: &web,
                    order: 4,
                },
            ],
        );
        assert!(
            named
                .values()
                .all(|n| n.contested && n.display().contains('~'))
        );
    }
}
