//! What every Unix gives the daemon, through `nix`.

/// `open(2)` flags the daemon passes through `OpenOptionsExt::custom_flags`.
pub const OPEN_NOFOLLOW: i32 = nix::libc::O_NOFOLLOW;
pub const OPEN_NONBLOCK: i32 = nix::libc::O_NONBLOCK;

/// Whether a process with this pid is alive (signal 0 probes without delivering anything). A
/// process we may not signal (`EPERM`, another user's) is alive too: only `ESRCH` means gone.
pub fn process_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// A signal the command line sends a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGHUP`: read the reload file again.
    Reload,
    /// `SIGTERM`: stop.
    Stop,
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: i32, signal: Signal) -> std::io::Result<()> {
    let signal = match signal {
        Signal::Reload => nix::sys::signal::Signal::SIGHUP,
        Signal::Stop => nix::sys::signal::Signal::SIGTERM,
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(std::io::Error::from)
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The system host name, if it has one.
pub fn host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
}

/// CLOCK_MONOTONIC in microseconds (systemd's `MONOTONIC_USEC=`); 0 if unreadable.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// Whether a send failed only because a queue was full for a moment (`ENOBUFS`).
pub fn is_no_buffer_space(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(nix::libc::ENOBUFS)
}

/// Every interface address of the host as (interface, address), through `getifaddrs(3)`; empty,
/// logged, if it fails. Both OS hosts filter it (`wgmesh_device::HostAddress::underlay`).
pub fn interface_ips() -> Vec<(String, std::net::IpAddr)> {
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs,
        Err(errno) => {
            tracing::warn!(%errno, "cannot list the host's addresses (getifaddrs)");
            return Vec::new();
        }
    };
    addrs
        .filter_map(|entry| {
            let address = entry.address?;
            let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
                (Some(v4), _) => std::net::IpAddr::V4(v4.ip()),
                (_, Some(v6)) => std::net::IpAddr::V6(v6.ip()),
                _ => return None,
            };
            Some((entry.interface_name, ip))
        })
        .collect()
}
