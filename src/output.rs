//! The one place that writes to stdout and stderr for the user (as opposed to logs).
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "CLI output module"
)]

/// Prints a line of command output.
pub fn line(text: impl std::fmt::Display) {
    println!("{text}");
}

/// Prints a value as pretty JSON.
pub fn json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("wgmesh: cannot render JSON: {err}"),
    }
}

/// Prints a warning for the operator (before logging is set up, or for offline commands).
pub fn warn(text: impl std::fmt::Display) {
    eprintln!("wgmesh: warning: {text}");
}

/// Prints an error chain: `wgmesh: outer: inner: root`.
pub fn error(err: &anyhow::Error) {
    eprintln!("wgmesh: {err:#}");
}
