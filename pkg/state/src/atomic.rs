//! Atomic, private file writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A state-file failure, always with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: permissions {mode:04o} are too open; expected {expected:04o} (fix with chmod {expected:o} {path})"
    )]
    LoosePermissions {
        path: PathBuf,
        mode: u32,
        expected: u32,
    },
    #[error(
        "{path}: not a valid identity file: {reason}; move it aside to create a new identity (this changes the node's key and addresses)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: identity file format version {found} is not supported (this wgmesh reads version {supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error(
        "{path}: identity belongs to another network or was edited: its public key {stored} does not match the key derived from its seed and this secret ({derived}); move it aside to create a new identity"
    )]
    KeyMismatch {
        path: PathBuf,
        stored: String,
        derived: String,
    },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing. An existing directory that others can
/// read or write is refused: the identity inside it is the node's private key.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StateError> {
    match fs::metadata(dir) {
        Ok(meta) => check_mode(dir, meta.permissions().mode(), 0o700),
        Err(err) if err.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir)),
        Err(err) => Err(io_error(dir)(err)),
    }
}

/// Refuses a mode with any group/other bits beyond what `expected` allows.
pub(crate) fn check_mode(path: &Path, mode: u32, expected: u32) -> Result<(), StateError> {
    let mode = mode & 0o777;
    if mode & 0o077 & !expected != 0 {
        return Err(StateError::LoosePermissions {
            path: path.to_owned(),
            mode,
            expected,
        });
    }
    Ok(())
}

/// Writes `contents` to `path` with mode 0600 so that a reader sees either the old or the new
/// file, never a torn one: write a temporary sibling, fsync it, rename it over, fsync the dir.
pub fn atomic_write(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    atomic_write_mode(path, contents, 0o600)
}

/// [`atomic_write`] with another file mode, set exactly (whatever the umask), for files others
/// may read, like a pid file or a systemd unit.
///
/// The temporary sibling is created with `O_CREAT|O_EXCL|O_NOFOLLOW` under a name nobody can
/// guess ([`temp_name`]): a symlink, FIFO or file planted in the directory beforehand is never
/// opened, followed or written through. The final `rename` replaces a symlink at `path` itself,
/// never its target.
pub fn atomic_write_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_orphaned_temps(dir, &name);
    // Errors name the file being written, not its temporary sibling.
    let (tmp, mut file) = create_temp(dir, &name, mode).map_err(io_error(path))?;
    let result = (|| {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_error(path))?;
        file.write_all(contents).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))?;
        fs::rename(&tmp, path).map_err(io_error(path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates a new file at `path` with `mode` (under the umask), or fails: `O_CREAT|O_EXCL` never
/// opens anything that already exists there, and `O_NOFOLLOW` never follows a symlink, dangling
/// or not (both mean `EEXIST` or `ELOOP`; the symlink's target is untouched).
pub fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Random hex digits in a temporary name: 64 bits, so a planted name is never hit.
const TEMP_RANDOM_DIGITS: usize = 16;

/// `.<name>.tmp.<pid>.<16 random hex digits>`. The pid lets a later writer tell an orphan (its
/// writer is gone) from a write in progress; the random part, from the OS generator, makes the
/// name unpredictable, so nobody can prepare a symlink or a FIFO under it. Older releases used
/// `.<name>.tmp.<pid>`, which anyone could guess.
fn temp_name(name: &str) -> io::Result<String> {
    let mut random = [0u8; TEMP_RANDOM_DIGITS / 2];
    getrandom::fill(&mut random).map_err(io::Error::from)?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(".{name}.tmp.{}.{hex}", std::process::id()))
}

fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    // A collision of 64 random bits means someone is reading our random numbers; retry a
    // few times rather than ever opening what is there.
    let mut last = None;
    for _ in 0..4 {
        let tmp = dir.join(temp_name(name)?);
        match create_new_file(&tmp, mode) {
            Ok(file) => return Ok((tmp, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

/// The writer's pid in a temporary name of `name`: `.<name>.tmp.<pid>.<random hex>`, or the
/// older `.<name>.tmp.<pid>`; `None` for anything else.
fn temp_writer(file_name: &str, name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(&format!(".{name}.tmp."))?;
    let pid = match rest.split_once('.') {
        Some((pid, random))
            if random.len() == TEMP_RANDOM_DIGITS
                && random.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            pid
        }
        Some(_) => return None,
        None => rest,
    };
    pid.parse().ok()
}

/// Whether process `pid` exists (signal 0 delivers nothing; `EPERM` means another user's).
/// Any Unix, unlike looking in `/proc`, which macOS does not have.
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes temporary siblings of `name` whose writer is gone (a process killed between creating
/// its temporary file and the rename), so they do not pile up in the state directory. Removal
/// is `unlink`, which removes a symlink itself and never touches what it points to.
fn remove_orphaned_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| temp_writer(n, name)) else {
            continue;
        };
        if pid != std::process::id() && !process_exists(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_private_and_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        atomic_write(&path, b"first").unwrap();
        atomic_write(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn orphaned_temporary_files_are_removed_and_errors_name_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        // No process has pid u32::MAX - 1 (pid_max is at most 2^22).
        let orphan = dir.path().join(format!(".f.json.tmp.{}", u32::MAX - 1));
        let new_orphan = dir
            .path()
            .join(format!(".f.json.tmp.{}.00112233445566ff", u32::MAX - 1));
        let unrelated = dir.path().join(".g.json.tmp.1");
        // A writer that exited (and was reaped), and one that is alive (pid 1 always is).
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        exited.wait().unwrap();
        let exited_orphan = dir.path().join(format!(".f.json.tmp.{}", exited.id()));
        let live_writer = dir.path().join(".f.json.tmp.1.00112233445566ff");
        for file in [&orphan, &new_orphan, &exited_orphan, &live_writer] {
            fs::write(file, b"half").unwrap();
        }
        fs::write(&unrelated, b"other").unwrap();
        atomic_write(&path, b"whole").unwrap();
        assert!(!orphan.exists(), "orphaned temporary file kept");
        assert!(!new_orphan.exists(), "orphaned temporary file kept");
        assert!(!exited_orphan.exists(), "an exited writer's file kept");
        assert!(live_writer.exists(), "a live writer's file removed");
        assert!(unrelated.exists(), "another file's temporary file removed");

        let missing = dir.path().join("no-such-dir").join("f.json");
        let err = atomic_write(&missing, b"x").unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
    }

    /// A symlink planted at the name an older release used for its temporary file (anyone
    /// could predict it: `.<name>.tmp.<pid>`), or at a guess of the new form, is never opened
    /// or followed: its target keeps its contents. Orphaned ones are unlinked, not followed.
    #[test]
    fn symlinks_planted_at_temporary_names_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("f.json");
        let pid = std::process::id();
        let dead = u32::MAX - 1;
        let planted = [
            format!(".f.json.tmp.{pid}"),
            format!(".f.json.tmp.{pid}.0000000000000000"),
            format!(".f.json.tmp.{dead}"),
            format!(".f.json.tmp.{dead}.0123456789abcdef"),
        ];
        for name in &planted {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        atomic_write(&path, b"whole").unwrap();
        atomic_write(&path, b"again").unwrap();
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"precious",
            "a symlink was followed"
        );
        assert_eq!(fs::read(&path).unwrap(), b"again");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // The dead writer's links are removed as orphans: the links, not their target.
        for name in &planted[2..] {
            assert!(
                fs::symlink_metadata(dir.path().join(name)).is_err(),
                "{name} kept"
            );
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn new_files_are_never_opened_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new_file(&link, 0o600).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A dangling symlink does not create its target either.
        let nowhere = dir.path().join("nowhere");
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
        assert!(create_new_file(&dangling, 0o600).is_err());
        assert!(!nowhere.exists());
        // An existing file is not reopened.
        assert!(create_new_file(&victim, 0o600).is_err());
    }

    #[test]
    fn temporary_names_are_unpredictable_and_their_writer_is_known() {
        let pid = std::process::id();
        let a = temp_name("f.json").unwrap();
        let b = temp_name("f.json").unwrap();
        assert_ne!(a, b);
        let prefix = format!(".f.json.tmp.{pid}.");
        assert!(a.starts_with(&prefix), "{a}");
        assert_eq!(a.len(), prefix.len() + TEMP_RANDOM_DIGITS, "{a}");
        assert_eq!(temp_writer(&a, "f.json"), Some(pid));
        assert_eq!(temp_writer(".f.json.tmp.42", "f.json"), Some(42));
        assert_eq!(
            temp_writer(".f.json.tmp.42.0123456789ABCDEF", "f.json"),
            Some(42)
        );
        for other in [
            ".f.json.tmp.42.xyz",
            ".f.json.tmp.42.0123456789abcdefg",
            ".g.json.tmp.42",
            ".f.json.tmp.",
            "f.json",
        ] {
            assert_eq!(temp_writer(other, "f.json"), None, "{other}");
        }
    }

    #[test]
    fn private_dir_is_created_0700_and_loose_dirs_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("0755") && err.contains(&dir.display().to_string()),
            "{err}"
        );
    }
}
