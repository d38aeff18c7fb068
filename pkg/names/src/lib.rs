//! Member names (docs/exchange-protocol.md, "Names and versions").
//!
//! A member announces a name so operators see `web1` instead of `10.42.7.19`. Names end up in
//! `/etc/hosts` lines (`wgmesh hosts`) and in terminals, and they come from other members, so
//! they follow DNS label rules: 1 to 63 bytes of `[a-z0-9-]`, no hyphen at either end.
//!
//! - [`MemberName::parse`] is for operator input (`--name`, the reload key `name=`): uppercase
//!   letters are folded, anything else outside the rules is an error that says what is wrong.
//! - [`MemberName::sanitize`] is for what the operator did not type: the system host name
//!   (`Web-01.example.com` → `web-01`) and names received from other members, which are never
//!   trusted: invalid bytes become `-`, the result is cut to the bound, and nothing usable is
//!   `None`.
//!
//! A name is not an identity (any holder of the secret can claim any name); the WireGuard key
//! is. [`resolve`] applies the rule that a name stays with the key first verified under it: a
//! later claimant is shown as `name~<key prefix>` and marked contested. `~` is outside the name
//! alphabet, so such a display name can never be mistaken for, or collide with, a real one.

mod claims;

pub use claims::{Claim, Naming, key_prefix, resolve};

use std::fmt;

/// The longest name: one DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Names that would do harm in `/etc/hosts` (a `localhost` line pointing at a member).
const RESERVED: &[&str] = &["localhost"];

/// A valid member name: 1..=63 bytes of `[a-z0-9-]`, no hyphen first or last, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberName(String);

/// Why an operator-given name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("name {name:?} is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    TooLong { name: String, len: usize },
    #[error(
        "name {name:?} contains {found:?} at position {position}; use lowercase letters, digits and '-' only"
    )]
    BadCharacter {
        name: String,
        found: char,
        position: usize,
    },
    #[error("name {0:?} must not start or end with '-'")]
    EdgeHyphen(String),
    #[error("name {0:?} is reserved")]
    Reserved(String),
}

impl MemberName {
    /// Operator input. ASCII letters are lowercased; everything else must already be valid.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let name = input.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some((position, found)) = name.chars().enumerate().find(|&(_, c)| !is_name_char(c)) {
            return Err(NameError::BadCharacter {
                name,
                found,
                position: position + 1,
            });
        }
        if name.len() > MAX_NAME_LEN {
            let len = name.len();
            return Err(NameError::TooLong { name, len });
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(NameError::EdgeHyphen(name));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(NameError::Reserved(name));
        }
        Ok(Self(name))
    }

    /// Untrusted or free-form bytes (a received name, the system host name): lowercased, every
    /// byte outside the alphabet replaced by `-`, hyphens trimmed from the ends, cut to
    /// [`MAX_NAME_LEN`]. `None` when nothing usable is left. Never panics and never
    /// allocates more than the bound.
    pub fn sanitize(input: &[u8]) -> Option<Self> {
        let mut name = String::with_capacity(MAX_NAME_LEN);
        for &byte in input {
            let c = char::from(byte.to_ascii_lowercase());
            let c = if byte.is_ascii() && is_name_char(c) {
                c
            } else {
                '-'
            };
            if c == '-' && name.is_empty() {
                continue;
            }
            if name.len() == MAX_NAME_LEN {
                break;
            }
            name.push(c);
        }
        while name.ends_with('-') {
            name.pop();
        }
        Self::parse(&name).ok()
    }

    /// The default name: the system host name's first label (`db-2.example.com` → `db-2`),
    /// sanitised. `None` if nothing usable is left (then the member announces no name).
    pub fn from_host_name(host: &str) -> Option<Self> {
        let label = host.trim().split('.').next().unwrap_or_default();
        Self::sanitize(label.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for MemberName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn operator_names_are_folded_or_refused_with_the_reason() {
        assert_eq!(MemberName::parse("Web1").unwrap().as_str(), "web1");
        assert_eq!(MemberName::parse(" db-2 ").unwrap().as_str(), "db-2");
        assert_eq!(
            MemberName::parse(&"a".repeat(63)).unwrap().as_str().len(),
            63
        );
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            ("web_1", "contains '_' at position 4"),
            ("web.example", "contains '.' at position 4"),
            ("wéb", "contains 'é' at position 2"),
            ("a b", "contains ' '"),
            ("web~1", "contains '~'"),
            ("-web", "must not start or end with '-'"),
            ("web-", "must not start or end with '-'"),
            ("LocalHost", "reserved"),
        ];
        for (input, needle) in cases {
            let err = MemberName::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
        let err = MemberName::parse(&"a".repeat(64)).unwrap_err();
        assert!(matches!(err, NameError::TooLong { len: 64, .. }), "{err}");
    }

    #[test]
    fn host_names_and_received_names_are_sanitised() {
        let host = |h| MemberName::from_host_name(h).map(|n| n.to_string());
        assert_eq!(host("Web-01.example.com").as_deref(), Some("web-01"));
        assert_eq!(host("my_host\n").as_deref(), Some("my-host"));
        assert_eq!(host("localhost"), None);
        assert_eq!(host(""), None);
        assert_eq!(host(".example"), None);
        let received = |b: &[u8]| MemberName::sanitize(b).map(|n| n.to_string());
        assert_eq!(received(b"WEB1").as_deref(), Some("web1"));
        assert_eq!(received(b"--a__b--").as_deref(), Some("a--b"));
        assert_eq!(
            received(b"a\x00\xff\x1b[31mb").as_deref(),
            Some("a----31mb")
        );
        assert_eq!(received(b"web1~ab12cd34").as_deref(), Some("web1-ab12cd34"));
        assert_eq!(received(b"\xff\xfe"), None);
        assert_eq!(received(&[b'x'; 300]).map(|n| n.len()), Some(MAX_NAME_LEN));
        // Cut at the bound, then trimmed: never a trailing hyphen.
        let mut long = vec![b'a'; 62];
        long.extend_from_slice(b"-b");
        assert_eq!(received(&long).as_deref(), Some(&*"a".repeat(62)));
    }

    proptest! {
        #[test]
        fn sanitised_names_are_always_valid(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(name) = MemberName::sanitize(&bytes) {
                prop_assert_eq!(MemberName::parse(name.as_str()), Ok(name.clone()));
                prop_assert!(name.as_str().len() <= MAX_NAME_LEN);
            }
        }

        #[test]
        fn valid_names_survive_sanitising(name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            prop_assume!(name != "localhost");
            let parsed = MemberName::parse(&name).unwrap();
            prop_assert_eq!(MemberName::sanitize(name.as_bytes()), Some(parsed));
        }
    }
}
