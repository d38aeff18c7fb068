//! The reload file `<state-dir>/<iface>.reload` (DESIGN.md §7).
//!
//! `KEY=VALUE` per line, `#` comments, blank lines ignored, keys case-insensitive. Parsing is
//! all-or-nothing: the result is either a complete [`ReloadFile`] or the first error with its line
//! number, so a daemon can never apply half an edit.

use ipnet::IpNet;
use std::str::FromStr;
use wgmesh_mesh::policy::{Accept, PolicyError, RelaySetting, parse_min_prefix};
use wgmesh_names::{MemberName, NameError};

/// Keys that may change while the daemon runs.
const RELOADABLE: &[&str] = &[
    "advertise-routes",
    "log-level",
    "name",
    "accept-routes",
    "accept-routes-min-v4",
    "accept-routes-min-v6",
    "relays",
];

/// Keys `wgmesh up` knows that need a restart to change. Reported and ignored.
const RESTART_ONLY: &[&str] = &[
    "secret",
    "secret-file",
    "interface",
    "listen-port",
    "control-port",
    "state-dir",
    "runtime-dir",
    "log-format",
    "backend",
    "wireguard-go",
    "mtu",
    "peer",
    "no-lan",
    "dht-bootstrap",
    "stun",
    "relay",
    "keep-interface",
    "metrics-listen",
];

/// Log levels accepted by `log-level` (and `--log-level`).
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Upper bound on advertised routes: each becomes an allowed IP on every other member and must
/// fit in one exchange record.
pub const MAX_ADVERTISED_ROUTES: usize = 32;

/// A parsed, valid reload file. `None` fields were not present and keep their current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadFile {
    /// `Some(vec![])` clears the advertised routes.
    pub advertise_routes: Option<Vec<IpNet>>,
    pub log_level: Option<String>,
    /// The name announced to the mesh. `Some(None)` (an empty value) goes back to the default,
    /// the system host name.
    pub name: Option<Option<MemberName>>,
    /// Which advertised routes to accept (`wgmesh_mesh::policy`).
    pub accept_routes: Option<Accept>,
    /// The shortest IPv4 prefix accepted from members.
    pub accept_routes_min_v4: Option<u8>,
    /// The shortest IPv6 prefix accepted from members.
    pub accept_routes_min_v6: Option<u8>,
    /// Which members may relay for this host.
    pub relays: Option<RelaySetting>,
    /// Known keys that were ignored because they need a restart: `(line, key)`.
    pub ignored: Vec<(usize, String)>,
}

/// Text from the file of this many characters or more could be a pasted secret (the shortest
/// token `wgmesh` accepts has 16, checked by a test), so errors show only its
/// length. Errors, logs and `status` carry these messages.
const SHOWN_BELOW: usize = 16;

/// A piece of the file as an error shows it: quoted if short enough that it cannot be a secret,
/// otherwise only its length.
fn shown(text: &str) -> String {
    let len = text.chars().count();
    if len < SHOWN_BELOW {
        format!("{text:?}")
    } else {
        format!("<{len} characters, not shown>")
    }
}

/// A route item as an error shows it: also in full when it starts with an IP address (an
/// IPv6 CIDR is up to 43 characters), which is never a secret.
fn shown_route(item: &str) -> String {
    let address = item.split_once('/').map_or(item, |(address, _)| address);
    if address.parse::<std::net::IpAddr>().is_ok() {
        format!("{item:?}")
    } else {
        shown(item)
    }
}

/// " (did you mean KEY?)" for a key a typo away from a known one: only known names are shown.
fn suggestion(key: &str) -> String {
    RELOADABLE
        .iter()
        .chain(RESTART_ONLY)
        .find(|known| edit_distance(key, known) <= 2)
        .map(|known| format!(" (did you mean {known}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, for the suggestion above; keys are short.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Why a reload file was rejected. Always names the line. Never shows a whole line, and shows
/// a key or value only if it cannot be a secret ([`shown`]): an operator who pastes the secret
/// into the file must not find it in the logs or in `status`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReloadError {
    #[error("line {line}: expected KEY=VALUE (the line's text is not shown: it may be a secret)")]
    NotKeyValue { line: usize },
    /// `key` is as [`shown`] shows it, with a suggestion if it is close to a known key.
    #[error("line {line}: unknown key {key} (reloadable keys: {})", RELOADABLE.join(", "))]
    UnknownKey { line: usize, key: String },
    #[error("line {line}: key {key} appears twice (first on line {first})")]
    Duplicate {
        line: usize,
        key: String,
        first: usize,
    },
    /// `value` is as [`shown_route`] shows it.
    #[error(
        "line {line}: advertise-routes: {value} is not a CIDR (like 192.168.1.0/24 or fd00::/64)"
    )]
    BadCidr { line: usize, value: String },
    #[error("line {line}: advertise-routes: {value} has host bits set; did you mean {network}?")]
    HostBits {
        line: usize,
        value: String,
        network: String,
    },
    #[error("line {line}: advertise-routes: at most {MAX_ADVERTISED_ROUTES} routes, found {count}")]
    TooManyRoutes { line: usize, count: usize },
    /// `value` is as [`shown`] shows it.
    #[error("line {line}: log-level: {value} is not one of {}", LOG_LEVELS.join(", "))]
    BadLogLevel { line: usize, value: String },
    #[error("line {line}: name: {source}")]
    BadName { line: usize, source: NameError },
    #[error("line {line}: {source}")]
    BadPolicy { line: usize, source: PolicyError },
    #[error("line {line}: {message}")]
    BadRelays { line: usize, message: String },
    #[error("line {line}: {key}: {message}")]
    BadMinPrefix {
        line: usize,
        key: &'static str,
        message: String,
    },
}

impl ReloadError {
    pub fn line(&self) -> usize {
        match self {
            Self::NotKeyValue { line, .. }
            | Self::UnknownKey { line, .. }
            | Self::Duplicate { line, .. }
            | Self::BadCidr { line, .. }
            | Self::HostBits { line, .. }
            | Self::TooManyRoutes { line, .. }
            | Self::BadLogLevel { line, .. }
            | Self::BadName { line, .. }
            | Self::BadPolicy { line, .. }
            | Self::BadRelays { line, .. }
            | Self::BadMinPrefix { line, .. } => *line,
        }
    }
}

impl FromStr for ReloadFile {
    type Err = ReloadError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut file = Self::default();
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if content.is_empty() {
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(ReloadError::NotKeyValue { line });
            };
            let key = key.trim().to_ascii_lowercase().replace('_', "-");
            let value = value.trim();
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                return Err(ReloadError::Duplicate {
                    line,
                    key: shown(&key),
                    first: *first,
                });
            }
            seen.push((key.clone(), line));
            match key.as_str() {
                "advertise-routes" => file.advertise_routes = Some(parse_routes(line, value)?),
                "log-level" => {
                    let level = value.to_ascii_lowercase();
                    if !LOG_LEVELS.contains(&level.as_str()) {
                        return Err(ReloadError::BadLogLevel {
                            line,
                            value: shown(value),
                        });
                    }
                    file.log_level = Some(level);
                }
                "name" if value.is_empty() => file.name = Some(None),
                "name" => {
                    let name = MemberName::parse(value)
                        .map_err(|source| ReloadError::BadName { line, source })?;
                    file.name = Some(Some(name));
                }
                "accept-routes" => {
                    let policy = value
                        .parse()
                        .map_err(|source| ReloadError::BadPolicy { line, source })?;
                    file.accept_routes = Some(policy);
                }
                "relays" => {
                    let relays = value
                        .parse()
                        .map_err(|message| ReloadError::BadRelays { line, message })?;
                    file.relays = Some(relays);
                }
                "accept-routes-min-v4" => {
                    let min = parse_min(line, "accept-routes-min-v4", value, "IPv4", 32)?;
                    file.accept_routes_min_v4 = Some(min);
                }
                "accept-routes-min-v6" => {
                    let min = parse_min(line, "accept-routes-min-v6", value, "IPv6", 128)?;
                    file.accept_routes_min_v6 = Some(min);
                }
                known if RESTART_ONLY.contains(&known) => file.ignored.push((line, key)),
                _ => {
                    return Err(ReloadError::UnknownKey {
                        line,
                        key: format!("{}{}", shown(&key), suggestion(&key)),
                    });
                }
            }
        }
        Ok(file)
    }
}

/// A minimum prefix length for `key`; the error quotes the value only when it cannot be a secret.
fn parse_min(
    line: usize,
    key: &'static str,
    value: &str,
    family: &'static str,
    max: u8,
) -> Result<u8, ReloadError> {
    parse_min_prefix(value, family, max).map_err(|message| ReloadError::BadMinPrefix {
        line,
        key,
        message: if value.len() < SHOWN_BELOW {
            message
        } else {
            format!("{} is not a prefix length", shown(value))
        },
    })
}

fn parse_routes(line: usize, value: &str) -> Result<Vec<IpNet>, ReloadError> {
    let mut routes = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net: IpNet = item.parse().map_err(|_| ReloadError::BadCidr {
            line,
            value: shown_route(item),
        })?;
        if net.trunc() != net {
            return Err(ReloadError::HostBits {
                line,
                value: item.to_owned(),
                network: net.trunc().to_string(),
            });
        }
        if !routes.contains(&net) {
            routes.push(net);
        }
    }
    if routes.len() > MAX_ADVERTISED_ROUTES {
        return Err(ReloadError::TooManyRoutes {
            line,
            count: routes.len(),
        });
    }
    Ok(routes)
}

/// Parses a comma-separated CIDR list as `--advertise-routes` takes it, with the same rules.
pub fn parse_route_list(value: &str) -> Result<Vec<IpNet>, ReloadError> {
    parse_routes(0, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<ReloadFile, ReloadError> {
        text.parse()
    }

    #[test]
    fn full_file_with_comments_case_and_ignored_keys() {
        let file = parse(
            "# routes for the lab\n\nADVERTISE-ROUTES = 192.168.77.0/24, fd00:77::/64 # two\nLog_Level=DEBUG\nlisten-port=1\n",
        )
        .unwrap();
        assert_eq!(
            file.advertise_routes,
            Some(vec![
                "192.168.77.0/24".parse().unwrap(),
                "fd00:77::/64".parse().unwrap()
            ])
        );
        assert_eq!(file.log_level.as_deref(), Some("debug"));
        assert_eq!(file.ignored, vec![(5, "listen-port".to_owned())]);
    }

    #[test]
    fn name_is_reloadable_and_an_empty_value_restores_the_default() {
        let name = |text: &str| parse(text).unwrap().name;
        assert_eq!(
            name("NAME = Web-1\n"),
            Some(Some(MemberName::parse("web-1").unwrap()))
        );
        assert_eq!(name("name=\n"), Some(None));
        assert_eq!(name("log-level=info\n"), None);
    }

    #[test]
    fn the_route_policy_is_reloadable_and_bad_values_name_their_line() {
        let file = parse(
            "accept-routes = private, 10.20.0.0/16@AQEBAQEB\naccept-routes-min-v4 = 20\naccept-routes-min-v6=56\n",
        )
        .unwrap();
        assert_eq!(
            file.accept_routes.map(|a| a.to_string()).as_deref(),
            Some(
                "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7,10.20.0.0/16@AQEBAQEB"
            )
        );
        assert_eq!(file.accept_routes_min_v4, Some(20));
        assert_eq!(file.accept_routes_min_v6, Some(56));
        assert_eq!(
            parse("accept-routes=none").unwrap().accept_routes,
            Some(Accept::None)
        );
        assert_eq!(
            parse("relays=AQEBAQEB")
                .unwrap()
                .relays
                .map(|r| r.to_string()),
            Some("AQEBAQEB".to_owned())
        );
        for (text, needle) in [
            ("\naccept-routes=10.0.0.0/8@short", "at least 8 characters"),
            ("\naccept-routes=", "accept-routes is empty"),
            ("\naccept-routes-min-v4=33", "longer than an IPv4 address"),
            ("\naccept-routes-min-v6=-1", "not a prefix length"),
            (
                "\nrelays=short",
                "relays entry 1: a key prefix needs at least 8",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line(), 2, "{err}");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn empty_value_clears_and_missing_key_keeps() {
        assert_eq!(
            parse("advertise-routes=").unwrap().advertise_routes,
            Some(vec![])
        );
        assert_eq!(parse("# nothing\n").unwrap(), ReloadFile::default());
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "log-level=info\nadvertise-routes=10.0.0.0/33",
                2,
                "not a CIDR",
            ),
            ("\n\nadvertise-routes=192.168.1.1/24", 3, "host bits"),
            ("frobnicate=1", 1, "unknown key \"frobnicate\""),
            ("advertise-routes", 1, "expected KEY=VALUE"),
            ("log-level=loud", 1, "log-level"),
            ("log-level=info\nlog-level=warn", 2, "appears twice"),
            ("# x\nname=web_1", 2, "name: name \"web_1\" contains '_'"),
            ("name=-web", 1, "must not start or end with '-'"),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line(), *line, "{err}");
            let message = err.to_string();
            assert!(message.starts_with(&format!("line {line}:")), "{message}");
            assert!(message.contains(needle), "{message} lacks {needle}");
        }
    }

    /// A secret pasted into the reload file, alone on a line or as a key or value, never
    /// appears in the error (which goes to the log, `wgmesh reload` and `status`).
    #[test]
    fn errors_never_show_text_that_could_be_a_secret() {
        let secrets = [
            "wgmesh://v1/Q2hhbmdlTWVBbmRLZWVwTWVTZWNyZXQtMDEyMzQ1Ng",
            "Q2hhbmdlTWVBbmRLZWVwTWVTZWNyZXQtMDEyMzQ1Ng",
            "sixteen-chars-ok",
            "dead:beef:cafe:babe",
        ];
        for secret in secrets {
            let lines = [
                secret.to_owned(),
                format!("  {secret}  # pasted"),
                format!("{secret}=1"),
                format!("{secret}="),
                format!("advertise-routes={secret}"),
                format!("advertise-routes=10.0.0.0/8,{secret}"),
                format!("log-level={secret}"),
            ];
            for line in lines {
                let text = format!("log-level=info\n{line}\n");
                let err = parse(&text).unwrap_err();
                assert_eq!(err.line(), 2, "{err}");
                let message = err.to_string();
                for needle in [secret.to_owned(), secret.to_ascii_lowercase()] {
                    assert!(!message.contains(&needle), "{line:?} -> {message}");
                }
            }
        }
        // What cannot be a secret is still shown: a short typo, an address, a near-miss key.
        let shown = |text: &str| parse(text).unwrap_err().to_string();
        assert!(shown("advertise-routes=bogus").contains("\"bogus\" is not a CIDR"));
        assert!(
            shown("advertise-routes=fd00:1234:5678:9abc:def0::/129")
                .contains("\"fd00:1234:5678:9abc:def0::/129\" is not a CIDR")
        );
        assert!(shown("log-level=loud").contains("\"loud\""));
        let typo = shown("advertize-routes=10.0.0.0/8");
        assert!(
            typo.contains("<16 characters, not shown>")
                && typo.contains("did you mean advertise-routes?"),
            "{typo}"
        );
        assert!(shown("frobnicate=1").contains("unknown key \"frobnicate\""));
    }

    #[test]
    fn the_shown_limit_is_below_the_shortest_secret() {
        // Anything shown is too short to be accepted as a secret.
        assert!(wgmesh_derive::Secret::parse(&"a".repeat(SHOWN_BELOW - 1)).is_err());
        assert!(wgmesh_derive::Secret::parse(&"a".repeat(SHOWN_BELOW)).is_ok());
    }

    #[test]
    fn too_many_routes_are_refused() {
        let many: Vec<String> = (0..=MAX_ADVERTISED_ROUTES)
            .map(|i| format!("10.{i}.0.0/16"))
            .collect();
        let err = parse(&format!("advertise-routes={}", many.join(","))).unwrap_err();
        assert!(matches!(
            err,
            ReloadError::TooManyRoutes { line: 1, count: 33 }
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn rendered_routes_parse_back(routes in proptest::collection::vec((any::<[u8; 4]>(), 8u8..=32), 0..10)) {
            let mut nets: Vec<IpNet> = routes.iter().map(|(o, l)| IpNet::new((*o).into(), *l).unwrap().trunc()).collect();
            nets.dedup();
            let mut unique = Vec::new();
            for n in nets { if !unique.contains(&n) { unique.push(n); } }
            let text = format!("advertise-routes={}", unique.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
            prop_assert_eq!(parse(&text).unwrap().advertise_routes, Some(unique));
        }
    }
}
