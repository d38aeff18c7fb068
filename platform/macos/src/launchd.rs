//! The launchd job that runs wgmesh for one interface, as a pure renderer and a checked-in
//! template (`launchd/com.wgmesh.wgmesh.plist`, rendered for `wg0`).
//!
//! The secret never appears in the job: only the path of the file holding it. launchd starts the
//! daemon at boot (`RunAtLoad`) and restarts it when it fails (`KeepAlive` with `SuccessfulExit`
//! false, like the systemd unit's `Restart=on-failure`): `wgmesh down`, after which the daemon
//! exits 0, stays down. launchd cannot exempt exit status 2 (a configuration error) as the unit's
//! `RestartPreventExitStatus=2` does; it retries at most every 10 s (its `ThrottleInterval`). launchd does not
//! create the log directory; the installer must.

use crate::MacosError;
use std::path::Path;

/// Labels are `com.wgmesh.wgmesh.<interface>`: one job per interface, and launchd labels must be
/// unique.
pub const LAUNCHD_LABEL_PREFIX: &str = "com.wgmesh.wgmesh";
/// Where the jobs' stderr goes (Homebrew's prefix for /var/log).
pub const LOG_DIR: &str = "/usr/local/var/log/wgmesh";

/// The job label for `interface`.
pub fn launchd_label(interface: &str) -> Result<String, MacosError> {
    check_interface(interface)?;
    Ok(format!("{LAUNCHD_LABEL_PREFIX}.{interface}"))
}

/// wg-quick's rule for interface names (`[a-zA-Z0-9_=+.-]{1,15}`), without `=` and `+`, which
/// have no business in a label or a file name.
fn check_interface(interface: &str) -> Result<(), MacosError> {
    let valid = (1..=15).contains(&interface.len())
        && interface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(MacosError::BadInterfaceName(
            interface.chars().take(32).collect(),
        ))
    }
}

/// Escapes text for an XML element.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The launchd property list for `wgmesh up --interface <interface> --secret-file <secret_file>`,
/// with `environment` (the `WGMESH_*` variables of the `up` flags `install-service` was given;
/// never the secret) as its `EnvironmentVariables`.
pub fn launchd_plist(
    interface: &str,
    binary: &Path,
    secret_file: &Path,
    environment: &[(String, String)],
) -> Result<String, MacosError> {
    let label = launchd_label(interface)?;
    let arguments = [
        binary.to_string_lossy().as_ref(),
        "up",
        "--interface",
        interface,
        "--secret-file",
        secret_file.to_string_lossy().as_ref(),
    ]
    .iter()
    .map(|argument| format!("\t\t<string>{}</string>\n", xml(argument)))
    .collect::<String>();
    let environment = if environment.is_empty() {
        String::new()
    } else {
        let pairs: String = environment
            .iter()
            .map(|(name, value)| {
                format!(
                    "\t\t<key>{}</key>\n\t\t<string>{}</string>\n",
                    xml(name),
                    xml(value)
                )
            })
            .collect();
        format!("\t<key>EnvironmentVariables</key>\n\t<dict>\n{pairs}\t</dict>\n")
    };
    let log = format!("{LOG_DIR}/{interface}.log");
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{label}</string>
	<key>ProgramArguments</key>
	<array>
{arguments}	</array>
{environment}	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>StandardErrorPath</key>
	<string>{log}</string>
</dict>
</plist>
"#,
        label = xml(&label),
        log = xml(&log),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_template_is_the_rendering_for_wg0() {
        let rendered = launchd_plist(
            "wg0",
            Path::new("/usr/local/bin/wgmesh"),
            Path::new("/usr/local/etc/wgmesh/wg0.secret"),
            &[],
        )
        .unwrap();
        let checked_in = include_str!("../launchd/com.wgmesh.wgmesh.plist");
        assert_eq!(rendered, checked_in);
        // Restarted only after a failure: `wgmesh down` (exit 0) stays down.
        let keep_alive = rendered.split("<key>KeepAlive</key>").nth(1).unwrap();
        let keep_alive = &keep_alive[..keep_alive.find("</dict>").unwrap()];
        let words: Vec<&str> = keep_alive.split_whitespace().collect();
        assert_eq!(words, ["<dict>", "<key>SuccessfulExit</key>", "<false/>"]);
    }

    #[test]
    fn values_are_escaped_and_bad_interface_names_refused() {
        let plist = launchd_plist(
            "wg-1",
            Path::new("/opt/<x>&co/wgmesh"),
            Path::new("/etc/wg'1\".secret"),
            &[("WGMESH_PEER".to_owned(), "a&b:1".to_owned())],
        )
        .unwrap();
        assert!(plist.contains(
            "\t<key>EnvironmentVariables</key>\n\t<dict>\n\t\t<key>WGMESH_PEER</key>\n\t\t<string>a&amp;b:1</string>\n\t</dict>\n\t<key>RunAtLoad</key>"
        ));
        assert!(plist.contains("<string>/opt/&lt;x&gt;&amp;co/wgmesh</string>"));
        assert!(plist.contains("<string>/etc/wg&apos;1&quot;.secret</string>"));
        assert!(plist.contains("<string>com.wgmesh.wgmesh.wg-1</string>"));
        for bad in [
            "",
            "wg0 ",
            "a/b",
            "<wg>",
            "sixteen-chars-xx",
            "wg=0",
            "wg\n0",
        ] {
            assert!(
                matches!(
                    launchd_plist(bad, Path::new("/b"), Path::new("/s"), &[]),
                    Err(MacosError::BadInterfaceName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(launchd_label("a.b_c-D9").is_ok());
    }
}
