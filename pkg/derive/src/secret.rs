//! The shared secret: `wgmesh://v1/<token>` or a bare token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

const SCHEME: &str = "wgmesh://";
const VERSION: &str = "v1";
/// Tokens shorter than this are refused outright: they are guessable.
pub const MIN_TOKEN_LEN: usize = 16;
const GENERATED_BYTES: usize = 32;

/// Why a secret was refused. Never carries the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret is empty")]
    Empty,
    #[error("secret has scheme {found:?}, expected \"wgmesh://\"")]
    WrongScheme { found: String },
    #[error("secret has unknown version {found:?}; this wgmesh understands \"v1\"")]
    UnknownVersion { found: String },
    #[error("secret token is {len} characters; at least {MIN_TOKEN_LEN} are required")]
    TooShort { len: usize },
    #[error("secret token contains whitespace or control characters")]
    BadCharacter,
}

/// How much a token can be trusted to be unguessable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretStrength {
    /// The token is base64url of 32 bytes, as `wgmesh secret` makes it.
    Generated,
    /// Anything else that passed the length check: it works, but the operator should be warned.
    LowEntropy,
}

/// A parsed secret token. Zeroized on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret {
    token: String,
}

impl Secret {
    /// Parses a secret URI or a bare token. Surrounding whitespace (a trailing newline in a
    /// secret file) is ignored.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let token = match text.find("://") {
            Some(end) => {
                let scheme = &text[..end + 3];
                if scheme != SCHEME {
                    return Err(SecretError::WrongScheme {
                        found: scheme.to_owned(),
                    });
                }
                let rest = &text[end + 3..];
                let (version, token) = rest.split_once('/').unwrap_or((rest, ""));
                if version != VERSION {
                    return Err(SecretError::UnknownVersion {
                        found: version.to_owned(),
                    });
                }
                token
            }
            None => text,
        };
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SecretError::BadCharacter);
        }
        let len = token.chars().count();
        if len < MIN_TOKEN_LEN {
            return Err(SecretError::TooShort { len });
        }
        Ok(Self {
            token: token.to_owned(),
        })
    }

    /// A new secret from the OS random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; GENERATED_BYTES];
        getrandom::fill(&mut bytes)?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        bytes.zeroize();
        Ok(Self { token })
    }

    /// The canonical URI form, for `wgmesh secret` and for credential files.
    pub fn expose_uri(&self) -> String {
        format!("{SCHEME}{VERSION}/{}", self.token)
    }

    /// The key material: the token's UTF-8 bytes.
    pub(crate) fn key_material(&self) -> &[u8] {
        self.token.as_bytes()
    }

    pub fn strength(&self) -> SecretStrength {
        match URL_SAFE_NO_PAD.decode(&self.token) {
            Ok(bytes) if bytes.len() == GENERATED_BYTES && !looks_patterned(&bytes) => {
                SecretStrength::Generated
            }
            _ => SecretStrength::LowEntropy,
        }
    }
}

/// Catches tokens that decode to 32 bytes but were clearly typed, not drawn (all one byte,
/// few distinct values). 32 random bytes have ~28 distinct values; fewer than 12 is absurd.
fn looks_patterned(bytes: &[u8]) -> bool {
    let mut seen = [false; 256];
    for &b in bytes {
        seen[usize::from(b)] = true;
    }
    seen.iter().filter(|&&s| s).count() < 12
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_and_bare_token_are_the_same_secret() {
        let uri = Secret::parse("wgmesh://v1/abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let bare = Secret::parse("  abcdefghijklmnopqrstuvwxyz").unwrap();
        assert_eq!(uri.key_material(), bare.key_material());
    }

    #[test]
    fn bad_secrets_name_the_problem() {
        assert_eq!(Secret::parse("").unwrap_err(), SecretError::Empty);
        assert_eq!(Secret::parse(" \n").unwrap_err(), SecretError::Empty);
        assert_eq!(
            Secret::parse("https://v1/abcdefghijklmnopqrstuvwxyz").unwrap_err(),
            SecretError::WrongScheme {
                found: "https://".into()
            }
        );
        assert_eq!(
            Secret::parse("wgmesh://v2/abcdefghijklmnopqrstuvwxyz").unwrap_err(),
            SecretError::UnknownVersion { found: "v2".into() }
        );
        assert_eq!(
            Secret::parse("wgmesh://v1/short").unwrap_err(),
            SecretError::TooShort { len: 5 }
        );
        assert_eq!(
            Secret::parse("wgmesh://v1").unwrap_err(),
            SecretError::TooShort { len: 0 }
        );
        assert_eq!(
            Secret::parse("tooshort").unwrap_err(),
            SecretError::TooShort { len: 8 }
        );
        assert_eq!(
            Secret::parse("abcdefgh ijklmnopqrst").unwrap_err(),
            SecretError::BadCharacter
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_token() {
        let token = "wgmesh://v9/verysecretverysecret";
        let err = Secret::parse(token).unwrap_err().to_string();
        assert!(!err.contains("verysecret"), "{err}");
        let secret = Secret::parse("verysecretverysecret").unwrap();
        assert!(!format!("{secret:?}").contains("verysecret"));
    }

    #[test]
    fn generated_secrets_are_strong_and_distinct() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_eq!(a.strength(), SecretStrength::Generated);
        assert_ne!(a.expose_uri(), b.expose_uri());
        let reparsed = Secret::parse(&a.expose_uri()).unwrap();
        assert_eq!(reparsed.key_material(), a.key_material());
        assert_eq!(a.expose_uri().len(), "wgmesh://v1/".len() + 43);
    }

    #[test]
    fn typed_secrets_are_low_entropy() {
        let typed = Secret::parse("correct-horse-battery-staple").unwrap();
        assert_eq!(typed.strength(), SecretStrength::LowEntropy);
        // 43 characters that decode to 32 bytes but are one repeated value.
        let patterned = Secret::parse(&"A".repeat(43)).unwrap();
        assert_eq!(patterned.strength(), SecretStrength::LowEntropy);
    }
}
