//! `install-service` / `uninstall-service`: the systemd unit, with the secret stored as a
//! credential file (DESIGN.md §5) — never in the unit, never on a command line.

use crate::cli::{InstallArgs, UninstallArgs};
use crate::{CliError, output, secret_source};
use anyhow::{Context as _, anyhow};
use std::path::{Path, PathBuf};
use wgmesh_state::{atomic_write, ensure_private_dir};

/// The unit template; `@BINARY@` becomes the installed binary's path.
pub const UNIT_TEMPLATE: &str = include_str!("../../systemd/wgmesh@.service");
pub const UNIT_NAME: &str = "wgmesh@.service";

pub fn render_unit(binary: &Path, config_dir: &Path) -> String {
    UNIT_TEMPLATE
        .replace("@BINARY@", &binary.display().to_string())
        .replace(
            "/etc/wgmesh/%i.secret",
            &format!("{}/%i.secret", config_dir.display()),
        )
}

fn credential_path(config_dir: &Path, interface: &str) -> PathBuf {
    config_dir.join(format!("{interface}.secret"))
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("systemctl")
        .args(args)
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        return Err(anyhow!("systemctl {} failed ({status})", args.join(" ")));
    }
    Ok(())
}

pub fn install(args: &InstallArgs) -> Result<(), CliError> {
    let loaded = secret_source::load(&args.secret, &secret_source::SecretEnv::from_process())
        .map_err(CliError::usage)?;
    for warning in &loaded.warnings {
        output::warn(warning);
    }
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot find the wgmesh binary")?,
    };
    ensure_private_dir(&args.config_dir)?;
    let credential = credential_path(&args.config_dir, &args.interface);
    let mut text = loaded.secret.expose_uri();
    text.push('\n');
    atomic_write(&credential, text.as_bytes())?;
    std::fs::create_dir_all(&args.unit_dir)
        .with_context(|| format!("cannot create {}", args.unit_dir.display()))?;
    let unit_path = args.unit_dir.join(UNIT_NAME);
    std::fs::write(&unit_path, render_unit(&binary, &args.config_dir))
        .with_context(|| format!("cannot write {}", unit_path.display()))?;
    let instance = format!("wgmesh@{}.service", args.interface);
    let started = systemd_running();
    if started {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", &instance])?;
    }
    if args.json {
        output::json(&serde_json::json!({
            "unit": unit_path.display().to_string(),
            "credential": credential.display().to_string(),
            "instance": instance,
            "started": started,
        }));
    } else {
        output::line(format!(
            "installed {} and the secret as credential {} (0600)",
            unit_path.display(),
            credential.display()
        ));
        if started {
            output::line(format!("started {instance}"));
        } else {
            output::line(format!(
                "systemd is not running here; on the target run: systemctl daemon-reload && systemctl enable --now {instance}"
            ));
        }
    }
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> Result<(), CliError> {
    let instance = format!("wgmesh@{}.service", args.interface);
    if systemd_running() {
        // Stopping may fail if it never ran; removal goes on regardless.
        let _ = systemctl(&["disable", "--now", &instance]);
    }
    let credential = credential_path(&args.config_dir, &args.interface);
    let mut removed = Vec::new();
    for path in [credential, args.unit_dir.join(UNIT_NAME)] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(anyhow!(err)
                    .context(format!("cannot remove {}", path.display()))
                    .into());
            }
        }
    }
    if systemd_running() {
        systemctl(&["daemon-reload"])?;
    }
    if args.json {
        output::json(&serde_json::json!({ "removed": removed }));
    } else if removed.is_empty() {
        output::line("nothing to remove");
    } else {
        for path in removed {
            output::line(format!("removed {path}"));
        }
    }
    Ok(())
}
