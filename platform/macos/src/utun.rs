//! The kernel's name for our interface (`utunN`) and where wireguard-go reports it.

use crate::MacosError;
use std::path::{Path, PathBuf};

/// A utun name as the kernel hands them out: `utun` and digits. Checked before it goes into an
/// argument list, so nothing read from a file can turn into an option.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Utun(String);

impl Utun {
    pub fn new(name: &str) -> Result<Self, MacosError> {
        let digits = name.strip_prefix("utun").unwrap_or_default();
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MacosError::BadInterface(name.chars().take(32).collect()));
        }
        Ok(Self(name.to_owned()))
    }

    /// Reads wireguard-go's name file (`utunN` and a newline).
    pub fn from_name_file(contents: &str) -> Result<Self, MacosError> {
        Self::new(contents.trim())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Utun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<run_dir>/<interface>.name`, as wg-quick's `add_if` sets `WG_TUN_NAME_FILE`.
pub fn name_file_path(run_dir: &Path, interface: &str) -> PathBuf {
    run_dir.join(format!("{interface}.name"))
}

/// The utun wireguard-go reported for the mesh interface `interface` (wg-quick's
/// `get_real_interface`). Errors keep the path and the io error's errno.
pub fn read_utun(run_dir: &Path, interface: &str) -> Result<Utun, MacosError> {
    let path = name_file_path(run_dir, interface);
    let contents = std::fs::read_to_string(&path).map_err(|source| MacosError::File {
        interface: interface.to_owned(),
        operation: "read utun name from",
        path: path.clone(),
        source,
    })?;
    Utun::from_name_file(&contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utun_names_are_checked() {
        assert!(Utun::new("utun0").is_ok());
        assert_eq!(Utun::from_name_file("utun12\n").unwrap().as_str(), "utun12");
        for bad in [
            "utun",
            "wg0",
            "-utun1",
            "utun1 ",
            "utun1;rm",
            "utun123456",
            "",
        ] {
            assert!(Utun::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_the_name_file_and_reports_a_missing_one_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_utun(dir.path(), "wg0").unwrap_err();
        assert!(
            matches!(&err, MacosError::File { path, source, .. }
                if path.ends_with("wg0.name") && source.raw_os_error() == Some(2)),
            "{err}"
        );
        std::fs::write(dir.path().join("wg0.name"), "utun4\n").unwrap();
        assert_eq!(read_utun(dir.path(), "wg0").unwrap().as_str(), "utun4");
        std::fs::write(dir.path().join("wg0.name"), "-f\n").unwrap();
        assert!(read_utun(dir.path(), "wg0").is_err());
    }
}
