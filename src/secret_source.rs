//! Finding the shared secret (DESIGN.md §3): `--secret-file`, then the systemd credential, then
//! `WGMESH_SECRET`, then `--secret`.

use crate::cli::SecretArgs;
use anyhow::{Context as _, anyhow};
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use wgmesh_derive::{Secret, SecretStrength};

/// The name of the credential `LoadCredential=` provides.
pub const CREDENTIAL_NAME: &str = "wgmesh-secret";
pub const ENV_VAR: &str = "WGMESH_SECRET";

/// Where a secret came from; shown to the operator, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    File(PathBuf),
    Credential(PathBuf),
    Environment,
    Argv,
}

impl std::fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "secret file {}", path.display()),
            Self::Credential(path) => write!(f, "systemd credential {}", path.display()),
            Self::Environment => write!(f, "${ENV_VAR}"),
            Self::Argv => f.write_str("--secret"),
        }
    }
}

/// A secret plus the warnings the operator should see about it.
#[derive(Debug)]
pub struct LoadedSecret {
    pub secret: Secret,
    pub origin: SecretOrigin,
    pub warnings: Vec<String>,
}

/// Reads the environment once so the precedence logic itself is testable.
#[derive(Debug, Default)]
pub struct SecretEnv {
    pub credentials_directory: Option<PathBuf>,
    pub secret: Option<String>,
}

impl SecretEnv {
    pub fn from_process() -> Self {
        Self {
            credentials_directory: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            secret: std::env::var(ENV_VAR).ok(),
        }
    }
}

/// Applies the precedence order. Errors name the source and the problem, never the secret.
pub fn load(args: &SecretArgs, env: &SecretEnv) -> anyhow::Result<LoadedSecret> {
    let mut warnings = Vec::new();
    let (text, origin) = if let Some(path) = &args.secret_file {
        warnings.extend(loose_permissions_warning(path));
        (read_secret_file(path)?, SecretOrigin::File(path.clone()))
    } else if let Some(path) = env
        .credentials_directory
        .as_ref()
        .map(|dir| dir.join(CREDENTIAL_NAME))
        .filter(|path| path.exists())
    {
        // systemd makes credential files private to the service; nothing to check.
        (read_secret_file(&path)?, SecretOrigin::Credential(path))
    } else if let Some(text) = &env.secret {
        (text.clone(), SecretOrigin::Environment)
    } else if let Some(text) = &args.secret {
        warnings.push(
            "--secret puts the secret in the process list, visible to every user; use --secret-file or WGMESH_SECRET"
                .to_owned(),
        );
        (text.clone(), SecretOrigin::Argv)
    } else {
        return Err(anyhow!(
            "no secret given: use --secret-file PATH, the systemd credential {CREDENTIAL_NAME}, ${ENV_VAR}, or --secret (create one with `wgmesh secret`)"
        ));
    };
    let secret = Secret::parse(&text).with_context(|| format!("invalid secret from {origin}"))?;
    if secret.strength() == SecretStrength::LowEntropy {
        warnings.push(format!(
            "the secret from {origin} is not a 32-byte random token; anyone who guesses it joins the mesh (create a strong one with `wgmesh secret`)"
        ));
    }
    Ok(LoadedSecret {
        secret,
        origin,
        warnings,
    })
}

/// A secret file that group or others can read (or write) is a warning, not an error
/// (docs/decisions.md): the operator may share it on purpose, but should know that every reader
/// of the file is a member of the mesh. The identity file, which holds a private key, is refused
/// instead (`wgmesh_state`).
fn loose_permissions_warning(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "secret file {path} has permissions {mode:04o}: group or others can read or replace the secret, and whoever reads it can join the mesh; fix with chmod 600 {path}",
            path = path.display()
        )
    })
}

/// A secret is one line of about 55 bytes; anything past this is not a secret file (a wrong
/// path, a log, `/dev/zero`) and is not read into memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// Reads at most [`MAX_SECRET_FILE_BYTES`]. Pipes stay allowed (`--secret-file /dev/stdin`,
/// `<(pass show mesh)`); the cap bounds what they can send too. Errors name the path, never
/// the content.
fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read secret file {}", path.display()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(anyhow!(
            "secret file {} is larger than {} KiB ({MAX_SECRET_FILE_BYTES} bytes); a secret is one line like wgmesh://v1/<token>",
            path.display(),
            MAX_SECRET_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| anyhow!("secret file {} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "wgmesh://v1/aaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn precedence_is_file_credential_env_argv() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "secret", A);
        write(dir.path(), CREDENTIAL_NAME, B);
        let full_env = SecretEnv {
            credentials_directory: Some(dir.path().to_owned()),
            secret: Some(B.to_owned()),
        };
        let args = SecretArgs {
            secret_file: Some(file.clone()),
            secret: Some(B.to_owned()),
        };
        assert_eq!(
            load(&args, &full_env).unwrap().origin,
            SecretOrigin::File(file)
        );

        let args = SecretArgs {
            secret_file: None,
            secret: Some(A.to_owned()),
        };
        assert!(matches!(
            load(&args, &full_env).unwrap().origin,
            SecretOrigin::Credential(_)
        ));

        let env = SecretEnv {
            credentials_directory: None,
            secret: Some(B.to_owned()),
        };
        assert_eq!(load(&args, &env).unwrap().origin, SecretOrigin::Environment);

        let loaded = load(&args, &SecretEnv::default()).unwrap();
        assert_eq!(loaded.origin, SecretOrigin::Argv);
        assert!(loaded.warnings.iter().any(|w| w.contains("process list")));
    }

    #[test]
    fn credential_dir_without_the_file_falls_through() {
        let dir = tempfile::tempdir().unwrap();
        let env = SecretEnv {
            credentials_directory: Some(dir.path().to_owned()),
            secret: Some(B.to_owned()),
        };
        assert_eq!(
            load(&SecretArgs::default(), &env).unwrap().origin,
            SecretOrigin::Environment
        );
    }

    #[test]
    fn a_secret_file_others_can_read_is_loaded_with_a_warning_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "secret", A);
        let args = SecretArgs {
            secret_file: Some(file.clone()),
            secret: None,
        };
        for (mode, warned) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let loaded = load(&args, &SecretEnv::default()).unwrap();
            let warning = loaded.warnings.iter().find(|w| w.contains("permissions"));
            assert_eq!(warning.is_some(), warned, "mode {mode:o}");
            if let Some(warning) = warning {
                let path = file.display().to_string();
                assert!(
                    warning.contains(&format!("{mode:04o}"))
                        && warning.contains(&format!("chmod 600 {path}")),
                    "{warning}"
                );
                assert!(!warning.contains(A), "the warning shows the secret");
            }
        }
    }

    #[test]
    fn a_secret_file_over_the_cap_is_refused_naming_the_path_and_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        // A valid secret followed by padding: at the cap it loads, one byte over it does not.
        let padded = |len: usize| format!("{A}{}", " ".repeat(len - A.len()));
        let at_cap = write(
            dir.path(),
            "at-cap",
            &padded(MAX_SECRET_FILE_BYTES as usize),
        );
        let args = SecretArgs {
            secret_file: Some(at_cap),
            secret: None,
        };
        assert!(load(&args, &SecretEnv::default()).is_ok());
        let big = write(
            dir.path(),
            "big",
            &padded(MAX_SECRET_FILE_BYTES as usize + 1),
        );
        let args = SecretArgs {
            secret_file: Some(big.clone()),
            secret: None,
        };
        let err = format!("{:#}", load(&args, &SecretEnv::default()).unwrap_err());
        assert!(
            err.contains(&big.display().to_string()) && err.contains("larger than 4 KiB"),
            "{err}"
        );
        assert!(!err.contains(A.trim_start_matches("wgmesh://v1/")), "{err}");
    }

    #[test]
    fn errors_name_the_source_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "empty", "\n");
        let args = SecretArgs {
            secret_file: Some(empty.clone()),
            secret: None,
        };
        let err = format!("{:#}", load(&args, &SecretEnv::default()).unwrap_err());
        assert!(
            err.contains(&empty.display().to_string()) && err.contains("empty"),
            "{err}"
        );

        let missing = dir.path().join("missing");
        let args = SecretArgs {
            secret_file: Some(missing),
            secret: None,
        };
        let err = format!("{:#}", load(&args, &SecretEnv::default()).unwrap_err());
        assert!(err.contains("cannot read secret file"), "{err}");

        let err = format!(
            "{:#}",
            load(&SecretArgs::default(), &SecretEnv::default()).unwrap_err()
        );
        assert!(err.contains("no secret given"), "{err}");
    }
}
