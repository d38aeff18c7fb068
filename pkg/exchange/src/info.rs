//! What a member says about itself beyond its record: its software version and its name,
//! carried as Hello extensions (docs/exchange-protocol.md, "Names and versions").
//!
//! Both come from other members and end up in terminals, JSON and `/etc/hosts` lines, so they
//! are bounded and sanitised here, on the way in, whatever the sender put on the wire.

use crate::extension::{EXT_NAME, EXT_VERSION, Extension};
use std::collections::HashSet;
use wgmesh_keys::PublicKey;
use wgmesh_names::MemberName;

/// The longest version string carried (`0.2.0`, `0.2.0-rc.1+git.1a2b3c4d`, ...).
pub const MAX_VERSION_LEN: usize = 32;

/// A member's version and name. `None` is "not said".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub version: Option<String>,
    pub name: Option<MemberName>,
}

/// What a verified Hello tells about its sender's version and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerInfo {
    /// The sender's record lacks [`crate::FLAG_EXTENSIONS`]: a release from before extensions,
    /// which can say neither.
    Legacy,
    /// The sender understands extensions but sent none this time (it answered a Probe before it
    /// knew that we do too): what was known before still holds.
    NotSent,
    /// What the sender said.
    Sent(MemberInfo),
}

impl MemberInfo {
    /// Our own: `version` is sanitised like a received one.
    pub fn new(version: &str, name: Option<MemberName>) -> Self {
        Self {
            version: sanitize_version(version.as_bytes()),
            name,
        }
    }

    /// The extension fields announcing this (version first).
    pub fn to_extensions(&self) -> Vec<Extension> {
        let version = self.version.as_ref().map(|v| Extension {
            kind: EXT_VERSION,
            value: v.as_bytes().to_vec(),
        });
        let name = self.name.as_ref().map(|n| Extension {
            kind: EXT_NAME,
            value: n.as_str().as_bytes().to_vec(),
        });
        version.into_iter().chain(name).collect()
    }

    /// Reads received fields: the first of each kind counts, unknown kinds are ignored, and both
    /// values are sanitised (a name that sanitises to nothing is no name).
    pub fn from_extensions(extensions: &[Extension]) -> Self {
        let first = |kind| extensions.iter().find(|e| e.kind == kind);
        Self {
            version: first(EXT_VERSION).and_then(|e| sanitize_version(&e.value)),
            name: first(EXT_NAME).and_then(|e| MemberName::sanitize(&e.value)),
        }
    }
}

impl PeerInfo {
    /// What to keep for a member, given what was known of it before.
    pub fn merge(self, known: Option<MemberInfo>) -> MemberInfo {
        match self {
            Self::Legacy => MemberInfo::default(),
            Self::NotSent => known.unwrap_or_default(),
            Self::Sent(info) => info,
        }
    }
}

/// Bound on the members remembered as accepting extensions. Only verified members are added; a
/// forgotten one costs one more round trip before it hears our version and name again.
const MAX_EXTENSION_PEERS: usize = 4_096;

/// Which members accept extensions: those whose latest verified record has
/// [`crate::FLAG_EXTENSIONS`]. Only they are sent extension fields.
#[derive(Debug, Default)]
pub(crate) struct ExtensionPeers {
    keys: HashSet<PublicKey>,
}

impl ExtensionPeers {
    /// Notes what a member's latest verified record says.
    pub(crate) fn observe(&mut self, key: PublicKey, accepts: bool) {
        if !accepts {
            self.keys.remove(&key);
            return;
        }
        if !self.keys.contains(&key) && self.keys.len() >= MAX_EXTENSION_PEERS {
            // Any one: forgetting a member only costs it a round trip later.
            if let Some(evict) = self.keys.iter().next().copied() {
                self.keys.remove(&evict);
            }
        }
        self.keys.insert(key);
    }

    /// After its Goodbye: it may come back as an older release.
    pub(crate) fn forget(&mut self, key: &PublicKey) {
        self.keys.remove(key);
    }

    pub(crate) fn accepts(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }
}

/// Printable ASCII only (no spaces or control characters, which could rewrite a terminal), at
/// most [`MAX_VERSION_LEN`] bytes; anything else becomes `?`. `None` for nothing.
pub fn sanitize_version(bytes: &[u8]) -> Option<String> {
    let version: String = bytes
        .iter()
        .take(MAX_VERSION_LEN)
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    (!version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_versions_and_names_are_bounded_and_sanitised() {
        let extensions = [
            Extension {
                kind: 77,
                value: b"from the future".to_vec(),
            },
            Extension {
                kind: EXT_VERSION,
                value: b"0.2.0\x1b[2J\n".to_vec(),
            },
            Extension {
                kind: EXT_NAME,
                value: b"Web_1".to_vec(),
            },
            Extension {
                kind: EXT_NAME,
                value: b"second".to_vec(),
            },
        ];
        let info = MemberInfo::from_extensions(&extensions);
        assert_eq!(info.version.as_deref(), Some("0.2.0?[2J?"));
        assert_eq!(info.name.as_ref().map(MemberName::as_str), Some("web-1"));
        let long = MemberInfo::from_extensions(&[Extension {
            kind: EXT_VERSION,
            value: vec![b'9'; 255],
        }]);
        assert_eq!(long.version.map(|v| v.len()), Some(MAX_VERSION_LEN));
        let empty = MemberInfo::from_extensions(&[
            Extension {
                kind: EXT_VERSION,
                value: Vec::new(),
            },
            Extension {
                kind: EXT_NAME,
                value: b"--".to_vec(),
            },
        ]);
        assert_eq!(empty, MemberInfo::default());
    }

    #[test]
    fn extension_peers_follow_the_latest_record_and_stay_bounded() {
        let key = |n: u32| {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            PublicKey::from_bytes(bytes)
        };
        let mut peers = ExtensionPeers::default();
        peers.observe(key(1), true);
        assert!(peers.accepts(&key(1)));
        peers.observe(key(1), false);
        assert!(!peers.accepts(&key(1)), "downgraded");
        peers.observe(key(1), true);
        peers.forget(&key(1));
        assert!(!peers.accepts(&key(1)), "said goodbye");
        for n in 0..(MAX_EXTENSION_PEERS as u32 + 100) {
            peers.observe(key(n), true);
        }
        assert_eq!(peers.keys.len(), MAX_EXTENSION_PEERS);
        assert!(peers.accepts(&key(MAX_EXTENSION_PEERS as u32 + 99)));
    }

    #[test]
    fn our_info_round_trips_through_extensions() {
        let info = MemberInfo::new("0.2.0", MemberName::parse("db-1").ok());
        assert_eq!(MemberInfo::from_extensions(&info.to_extensions()), info);
        assert!(MemberInfo::default().to_extensions().is_empty());
    }

    #[test]
    fn a_hello_without_extensions_keeps_what_was_known_unless_the_sender_is_legacy() {
        let known = MemberInfo::new("0.2.0", MemberName::parse("db-1").ok());
        assert_eq!(PeerInfo::NotSent.merge(Some(known.clone())), known);
        assert_eq!(PeerInfo::NotSent.merge(None), MemberInfo::default());
        assert_eq!(
            PeerInfo::Legacy.merge(Some(known.clone())),
            MemberInfo::default()
        );
        let renamed = MemberInfo::new("0.2.1", MemberName::parse("db-2").ok());
        assert_eq!(PeerInfo::Sent(renamed.clone()).merge(Some(known)), renamed);
    }
}
