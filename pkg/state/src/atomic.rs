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
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    remove_orphaned_temps(dir, &name);
    // Errors name the file being written, not its temporary sibling.
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
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

/// Removes `.<name>.tmp.<pid>` files whose writer is gone (a process killed between creating
/// its temporary file and the rename), so they do not pile up in the state directory.
fn remove_orphaned_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
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
        let unrelated = dir.path().join(".g.json.tmp.1");
        fs::write(&orphan, b"half").unwrap();
        fs::write(&unrelated, b"other").unwrap();
        atomic_write(&path, b"whole").unwrap();
        assert!(!orphan.exists(), "orphaned temporary file kept");
        assert!(unrelated.exists(), "another file's temporary file removed");

        let missing = dir.path().join("no-such-dir").join("f.json");
        let err = atomic_write(&missing, b"x").unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
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
