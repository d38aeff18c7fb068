//! `install-service` / `uninstall-service`: the systemd unit (Linux) or the launchd job (macOS),
//! with the secret stored as a credential file (DESIGN.md §5) — never in the unit or job, never
//! on a command line.

use crate::cli::{InstallArgs, UninstallArgs, UpOptions};
use crate::platform::ServiceManager;
use crate::{CliError, output, secret_source};
use anyhow::{Context as _, anyhow, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use wgmesh_state::{atomic_write, atomic_write_mode, ensure_private_dir};

/// The unit template; `@BINARY@` becomes the installed binary's path.
pub const UNIT_TEMPLATE: &str = include_str!("../../systemd/wgmesh@.service");
pub const UNIT_NAME: &str = "wgmesh@.service";

pub fn render_unit(binary: &Path, config_dir: &Path) -> String {
    UNIT_TEMPLATE
        .replace("@BINARY@", &binary.display().to_string())
        .replace("/etc/wgmesh/%i.", &format!("{}/%i.", config_dir.display()))
}

fn credential_path(config_dir: &Path, interface: &str) -> PathBuf {
    config_dir.join(format!("{interface}.secret"))
}

fn env_file_path(config_dir: &Path, interface: &str) -> PathBuf {
    config_dir.join(format!("{interface}.env"))
}

/// The `up` flags given to `install-service` on its command line, as `(WGMESH_*, value)` pairs
/// (a list flag's values joined by commas). Flags taken from `install-service`'s own environment
/// or defaults are left out: the service says what the operator asked for.
fn flag_environment(matches: &ArgMatches) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for arg in UpOptions::definitions().get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|value| value.to_string_lossy().into_owned())
            .collect();
        let value = values.join(",");
        if value.chars().any(char::is_control) {
            bail!("--{long}: a value for the service may not contain control characters");
        }
        pairs.push((env.to_string_lossy().into_owned(), value));
    }
    Ok(pairs)
}

/// The env file for those flags, one `WGMESH_*="value"` line each, in the quoting systemd's
/// `EnvironmentFile=` and a POSIX shell both read. `None` if no flag was given.
pub fn render_env_file(matches: &ArgMatches) -> anyhow::Result<Option<String>> {
    let mut text = String::new();
    for (name, value) in flag_environment(matches)? {
        let quoted: String = value
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '"' | '\\' | '$' | '`').then_some('\\');
                escape.into_iter().chain([c])
            })
            .collect();
        text.push_str(&format!("{name}=\"{quoted}\"\n"));
    }
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "# wgmesh up flags for this interface, written by `wgmesh install-service`.\n\
         # Edit and `systemctl restart`; the secret never goes here.\n{text}"
    )))
}

/// The config directory holds the secret, so it must be 0700. A directory we own that is only
/// too open (`mkdir /etc/wgmesh` under umask 022 makes 0755) is tightened, and we say so; one
/// owned by someone else is refused by [`ensure_private_dir`] with the `chmod` that fixes it.
fn prepare_config_dir(dir: &Path) -> anyhow::Result<()> {
    let ours_and_open = |meta: &std::fs::Metadata| {
        meta.is_dir() && meta.uid() == crate::platform::effective_uid() && meta.mode() & 0o077 != 0
    };
    if let Some(meta) = std::fs::symlink_metadata(dir).ok().filter(ours_and_open) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot tighten {} to 0700", dir.display()))?;
        output::warn(format!(
            "{}: permissions were {:04o}; tightened to 0700 (it holds the secret)",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    ensure_private_dir(dir)?;
    Ok(())
}

/// Where the unit goes when `--unit-dir` is left alone: the administrator's unit directory.
const ADMIN_UNIT_DIR: &str = "/etc/systemd/system";

/// Where the Debian package installs the unit (`/lib` on a merged-/usr system is `/usr/lib`).
const VENDOR_UNIT_DIRS: &[&str] = &["/lib/systemd/system", "/usr/lib/systemd/system"];

/// Puts the unit in place and returns the path systemd will load it from. A packaged unit that
/// already says exactly this is used as it is: a copy in `/etc/systemd/system` would shadow it,
/// and the unit a package upgrade brings would never take effect. Such a copy, left by an
/// earlier `install-service`, is removed for the same reason; an edited one is the
/// administrator's and stays (with a warning). Anything else (another binary, another config
/// dir, no package) is written to `unit_dir`.
fn place_unit(unit_dir: &Path, vendor_dirs: &[&str], unit: &str) -> anyhow::Result<PathBuf> {
    let admin_path = unit_dir.join(UNIT_NAME);
    let packaged = vendor_dirs
        .iter()
        .map(|dir| Path::new(dir).join(UNIT_NAME))
        .find(|path| std::fs::read_to_string(path).is_ok_and(|text| text == unit));
    if let Some(packaged) = packaged {
        return match std::fs::read_to_string(&admin_path) {
            Ok(text) if text == unit => {
                std::fs::remove_file(&admin_path)
                    .with_context(|| format!("cannot remove {}", admin_path.display()))?;
                Ok(packaged)
            }
            Ok(_) => {
                output::warn(format!(
                    "{} differs from the packaged {} and shadows it; left as it is",
                    admin_path.display(),
                    packaged.display()
                ));
                Ok(admin_path)
            }
            Err(_) => Ok(packaged),
        };
    }
    std::fs::create_dir_all(unit_dir)
        .with_context(|| format!("cannot create {}", unit_dir.display()))?;
    write_public_file(&admin_path, unit)?;
    Ok(admin_path)
}

/// Writes a file world-readable whatever the caller's umask (systemd warns about a unit it
/// cannot read as other users, and `systemctl cat` fails for them), atomically and never
/// through a symlink.
fn write_public_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    atomic_write_mode(path, contents.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Symlinks followed before a path is called a loop (Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// The unit runs `binary` as root, so whoever can replace it, or rename any directory on the
/// way to it, gets root. Like sshd's `StrictModes`, every path component from `/` to the file
/// (symlinks followed, each link and each directory it leads through checked too) must be owned
/// by root (or by the user running this, who is root whenever the unit goes where systemd runs
/// it) and not writable by group or others. A directory with the sticky bit (like `/tmp`) may
/// be writable by others: they cannot rename or remove entries they do not own.
pub fn check_binary_is_root_only(binary: &Path) -> anyhow::Result<()> {
    // The fixes name no group: root's is `root` on Linux and `wheel` on macOS.
    let refuse = |component: &Path, problem: String, fix: String| {
        anyhow!(
            "refusing to install {binary}: {component} {problem}, so someone other than root could replace what the root service runs; {fix}, or install wgmesh where only root can write (`install -o root -m 0755 wgmesh /usr/local/bin/wgmesh`) and pass --binary",
            binary = binary.display(),
            component = component.display(),
        )
    };
    let me = crate::platform::effective_uid();
    let check = |component: &Path, meta: &std::fs::Metadata| -> anyhow::Result<()> {
        if meta.uid() != 0 && meta.uid() != me {
            return Err(refuse(
                component,
                format!("is owned by uid {}", meta.uid()),
                format!("fix with `chown root {}`", component.display()),
            ));
        }
        let sticky_dir = meta.is_dir() && meta.mode() & 0o1000 != 0;
        if !meta.file_type().is_symlink() && meta.mode() & 0o022 != 0 && !sticky_dir {
            return Err(refuse(
                component,
                format!(
                    "is writable by group or others (mode {:04o})",
                    meta.mode() & 0o7777
                ),
                format!("fix with `chmod go-w {}`", component.display()),
            ));
        }
        Ok(())
    };
    let absolute = if binary.is_absolute() {
        binary.to_owned()
    } else {
        std::env::current_dir()
            .context("cannot find the current directory")?
            .join(binary)
    };
    let look = |path: &Path| {
        std::fs::symlink_metadata(path).with_context(|| format!("cannot check {}", path.display()))
    };
    // Resolve like the kernel, one component at a time: `current` is always a real directory
    // (never a symlink) that passed the check.
    let mut current = PathBuf::from("/");
    check(&current, &look(&current)?)?;
    let mut pending = VecDeque::new();
    prepend(&mut pending, &absolute);
    let mut hops = 0;
    let mut last = None;
    while let Some(component) = pending.pop_front() {
        match component.to_str() {
            Some("/") => {
                current = PathBuf::from("/");
                last = None;
            }
            Some(".") => last = None,
            Some("..") => {
                current.pop();
                last = None;
            }
            _ => {
                let next = current.join(&component);
                let meta = look(&next)?;
                check(&next, &meta)?;
                if meta.file_type().is_symlink() {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        bail!("{}: too many levels of symbolic links", binary.display());
                    }
                    let target = std::fs::read_link(&next)
                        .with_context(|| format!("cannot check {}", next.display()))?;
                    prepend(&mut pending, &target);
                    last = None;
                } else {
                    last = Some(meta);
                    current = next;
                }
            }
        }
    }
    if !last.is_some_and(|meta| meta.is_file()) {
        bail!("{}: not a regular file", binary.display());
    }
    Ok(())
}

/// Puts the components of `path` before what is still to be resolved.
fn prepend(pending: &mut VecDeque<OsString>, path: &Path) {
    for component in path.components().rev() {
        pending.push_front(component.as_os_str().to_owned());
    }
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    service_tool("systemctl", args)
}

/// Runs the service manager's tool (`systemctl`, `launchctl`); a non-zero exit is an error.
fn service_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        return Err(anyhow!("{program} {} failed ({status})", args.join(" ")));
    }
    Ok(())
}

pub fn install(args: &InstallArgs, matches: &ArgMatches) -> Result<(), CliError> {
    match crate::platform::SERVICE_MANAGER {
        ServiceManager::Systemd => install_systemd(args, matches),
        ServiceManager::Launchd => install_launchd(args, matches),
    }
}

pub fn uninstall(args: &UninstallArgs) -> Result<(), CliError> {
    match crate::platform::SERVICE_MANAGER {
        ServiceManager::Systemd => uninstall_systemd(args),
        ServiceManager::Launchd => uninstall_launchd(args),
    }
}

/// Checks the binary, prepares the config directory and stores the secret as the credential
/// file (0600); returns the binary and the credential's path.
fn store_secret(args: &InstallArgs) -> Result<(PathBuf, PathBuf), CliError> {
    let loaded = secret_source::load(&args.secret, &secret_source::SecretEnv::from_process())
        .map_err(CliError::usage)?;
    for warning in &loaded.warnings {
        output::warn(warning);
    }
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot find the wgmesh binary")?,
    };
    check_binary_is_root_only(&binary).map_err(CliError::usage)?;
    prepare_config_dir(&args.config_dir)?;
    let credential = credential_path(&args.config_dir, &args.interface);
    let mut text = loaded.secret.expose_uri();
    text.push('\n');
    atomic_write(&credential, text.as_bytes())?;
    Ok((binary, credential))
}

fn install_systemd(args: &InstallArgs, matches: &ArgMatches) -> Result<(), CliError> {
    let env_text = render_env_file(matches).map_err(CliError::usage)?;
    let (binary, credential) = store_secret(args)?;
    // Re-running install-service without flags keeps the flags an earlier run wrote.
    let env_file = env_file_path(&args.config_dir, &args.interface);
    if let Some(env_text) = &env_text {
        atomic_write(&env_file, env_text.as_bytes())?;
    }
    let unit = render_unit(&binary, &args.config_dir);
    let vendor_dirs: &[&str] = if args.unit_dir == Path::new(ADMIN_UNIT_DIR) {
        VENDOR_UNIT_DIRS
    } else {
        &[]
    };
    let unit_path = place_unit(&args.unit_dir, vendor_dirs, &unit)?;
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
            "env_file": env_text.is_some().then(|| env_file.display().to_string()),
            "instance": instance,
            "started": started,
        }));
    } else {
        output::line(format!(
            "unit {} and the secret as credential {} (0600)",
            unit_path.display(),
            credential.display()
        ));
        if env_text.is_some() {
            output::line(format!(
                "daemon flags written to {} (0600)",
                env_file.display()
            ));
        }
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

fn uninstall_systemd(args: &UninstallArgs) -> Result<(), CliError> {
    let instance = format!("wgmesh@{}.service", args.interface);
    if systemd_running() {
        // Stopping may fail if it never ran; removal goes on regardless.
        let _ = systemctl(&["disable", "--now", &instance]);
    }
    let credential = credential_path(&args.config_dir, &args.interface);
    let env_file = env_file_path(&args.config_dir, &args.interface);
    let removed = remove_files(&[credential, env_file, args.unit_dir.join(UNIT_NAME)])?;
    if systemd_running() {
        systemctl(&["daemon-reload"])?;
    }
    report_removed(args.json, removed);
    Ok(())
}

fn launchd_running() -> bool {
    Path::new("/bin/launchctl").is_file()
}

fn launchctl(args: &[&str]) -> anyhow::Result<()> {
    service_tool("launchctl", args)
}

/// Writes the launchd job of `interface` into `job_dir` (root-owned 0644, as launchd requires)
/// and returns its path and label. The `up` flags go into its `EnvironmentVariables`; the secret
/// stays in the credential file the job names.
fn place_launchd_job(
    job_dir: &Path,
    interface: &str,
    binary: &Path,
    credential: &Path,
    environment: &[(String, String)],
) -> anyhow::Result<(PathBuf, String)> {
    let label = crate::platform::launchd_label(interface)?;
    let job = crate::platform::launchd_plist(interface, binary, credential, environment)?;
    std::fs::create_dir_all(job_dir)
        .with_context(|| format!("cannot create {}", job_dir.display()))?;
    let path = job_dir.join(format!("{label}.plist"));
    write_public_file(&path, &job)?;
    Ok((path, label))
}

fn install_launchd(args: &InstallArgs, matches: &ArgMatches) -> Result<(), CliError> {
    let environment = flag_environment(matches).map_err(CliError::usage)?;
    let (binary, credential) = store_secret(args)?;
    let (job, label) = place_launchd_job(
        &args.unit_dir,
        &args.interface,
        &binary,
        &credential,
        &environment,
    )?;
    let started = launchd_running();
    if started {
        // The job's stderr goes there, and launchd does not create the directory.
        let log_dir = crate::platform::LAUNCHD_LOG_DIR;
        std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {log_dir}"))?;
        // A job loaded earlier keeps its old definition until it is booted out.
        let _ = launchctl(&["bootout", &format!("system/{label}")]);
        launchctl(&["bootstrap", "system", &job.display().to_string()])?;
    }
    if args.json {
        output::json(&serde_json::json!({
            "unit": job.display().to_string(),
            "credential": credential.display().to_string(),
            "env_file": null,
            "instance": label,
            "started": started,
        }));
    } else {
        output::line(format!(
            "launchd job {} and the secret as credential {} (0600)",
            job.display(),
            credential.display()
        ));
        if started {
            output::line(format!("started {label}"));
        } else {
            output::line(format!(
                "launchd is not running here; on the target run: launchctl bootstrap system {}",
                job.display()
            ));
        }
    }
    Ok(())
}

fn uninstall_launchd(args: &UninstallArgs) -> Result<(), CliError> {
    let label = crate::platform::launchd_label(&args.interface)?;
    if launchd_running() {
        // Stopping may fail if it never ran; removal goes on regardless.
        let _ = launchctl(&["bootout", &format!("system/{label}")]);
    }
    let job = args.unit_dir.join(format!("{label}.plist"));
    let credential = credential_path(&args.config_dir, &args.interface);
    let removed = remove_files(&[credential, job])?;
    report_removed(args.json, removed);
    Ok(())
}

/// Removes each file that exists; returns the ones removed.
fn remove_files(paths: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(anyhow!(err).context(format!("cannot remove {}", path.display())));
            }
        }
    }
    Ok(removed)
}

fn report_removed(json: bool, removed: Vec<String>) {
    if json {
        output::json(&serde_json::json!({ "removed": removed }));
    } else if removed.is_empty() {
        output::line("nothing to remove");
    } else {
        for path in removed {
            output::line(format!("removed {path}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packaged_unit_that_says_the_same_is_not_shadowed() {
        let root = tempfile::tempdir().unwrap();
        let (admin, vendor) = (root.path().join("etc"), root.path().join("lib"));
        std::fs::create_dir_all(&vendor).unwrap();
        let unit = render_unit(Path::new("/usr/bin/wgmesh"), Path::new("/etc/wgmesh"));
        let vendor_text = vendor.display().to_string();
        let vendor_dirs: &[&str] = &[&vendor_text];

        // No package: the unit is written for the administrator.
        assert_eq!(
            place_unit(&admin, vendor_dirs, &unit).unwrap(),
            admin.join(UNIT_NAME)
        );
        // The package brings the same unit: the earlier copy goes, the packaged one is used.
        std::fs::write(vendor.join(UNIT_NAME), &unit).unwrap();
        assert_eq!(
            place_unit(&admin, vendor_dirs, &unit).unwrap(),
            vendor.join(UNIT_NAME)
        );
        assert!(!admin.join(UNIT_NAME).exists());
        // Another binary: a unit of our own, which must shadow the packaged one.
        let other = render_unit(Path::new("/opt/wgmesh"), Path::new("/etc/wgmesh"));
        assert_eq!(
            place_unit(&admin, vendor_dirs, &other).unwrap(),
            admin.join(UNIT_NAME)
        );
        assert_eq!(
            std::fs::read_to_string(admin.join(UNIT_NAME)).unwrap(),
            other
        );
        // An administrator's edited copy is never removed, and it is what systemd loads.
        std::fs::write(admin.join(UNIT_NAME), "# edited\n").unwrap();
        assert_eq!(
            place_unit(&admin, vendor_dirs, &unit).unwrap(),
            admin.join(UNIT_NAME)
        );
        assert_eq!(
            std::fs::read_to_string(admin.join(UNIT_NAME)).unwrap(),
            "# edited\n"
        );
    }

    #[test]
    fn the_launchd_job_names_the_credential_and_carries_the_flags() {
        let root = tempfile::tempdir().unwrap();
        let (path, label) = place_launchd_job(
            root.path(),
            "wg7",
            Path::new("/usr/local/bin/wgmesh"),
            Path::new("/usr/local/etc/wgmesh/wg7.secret"),
            &[("WGMESH_DHT".to_owned(), "bep44".to_owned())],
        )
        .unwrap();
        assert_eq!(label, "com.wgmesh.wgmesh.wg7");
        assert_eq!(path, root.path().join("com.wgmesh.wgmesh.wg7.plist"));
        let job = std::fs::read_to_string(&path).unwrap();
        assert!(job.contains("<string>--secret-file</string>\n\t\t<string>/usr/local/etc/wgmesh/wg7.secret</string>"), "{job}");
        assert!(
            job.contains("<key>WGMESH_DHT</key>\n\t\t<string>bep44</string>"),
            "{job}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        assert!(
            place_launchd_job(root.path(), "a/b", Path::new("/b"), Path::new("/s"), &[]).is_err()
        );
    }
}
