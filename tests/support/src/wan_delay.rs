//! A WAN cable with latency for test labs: `wgmesh-lab wan-delay --latency-ms MS NEAR FAR`.
//!
//! This machine's kernel has no `sch_netem`, so latency cannot be added with `tc`. Instead the
//! tool creates two TAP devices, NEAR and FAR, in its own namespace and copies every Ethernet
//! frame from one to the other after `MS` milliseconds, in both directions. The lab moves NEAR
//! into a router's namespace as its WAN interface and plugs FAR into the "internet" bridge, so
//! that router is `MS` ms from the internet each way, as a home router is tens of milliseconds
//! from its peers. Frames keep their order; nothing is dropped or reordered.
//!
//! The file descriptors stay valid when NEAR moves to another namespace (a TUN/TAP device may
//! change namespace; its queue stays attached to the process that created it). Both devices go
//! away when the tool exits. Not for production hosts.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: wgmesh-lab wan-delay --latency-ms MS NEAR FAR";

/// `TUNSETIFF`, `_IOW('T', 202, int)` in `linux/if_tun.h`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Larger than any Ethernet frame the lab sends (MTU 1500 plus the header).
const FRAME_BUFFER: usize = 2048;

/// Entry point of `wgmesh-lab wan-delay`: create both devices, print `READY`, copy until killed.
pub fn run_wan_delay(args: &[String]) -> Result<(), String> {
    let (latency, near, far) = parse_args(args)?;
    let near_tap = Arc::new(open_tap(&near)?);
    let far_tap = Arc::new(open_tap(&far)?);
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "READY")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing READY: {e}"))?;
    drop(stdout);
    let outbound = spawn_direction(Arc::clone(&near_tap), Arc::clone(&far_tap), latency);
    let inbound = spawn_direction(far_tap, near_tap, latency);
    // Each direction ends only when its device goes.
    for handle in [outbound, inbound] {
        handle
            .join()
            .map_err(|_| "a copying thread panicked".to_owned())?;
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<(Duration, String, String), String> {
    match args {
        [flag, ms, near, far] if flag == "--latency-ms" => {
            let ms: u64 = ms
                .parse()
                .map_err(|e| format!("--latency-ms {ms:?}: {e}; {USAGE}"))?;
            for name in [near, far] {
                if name.is_empty() || name.len() >= libc::IFNAMSIZ {
                    return Err(format!(
                        "interface name {name:?} must be 1 to {} bytes",
                        libc::IFNAMSIZ - 1
                    ));
                }
            }
            Ok((Duration::from_millis(ms), near.clone(), far.clone()))
        }
        _ => Err(USAGE.to_owned()),
    }
}

/// Creates TAP device `name` (no packet-information header) and returns its queue.
#[expect(
    unsafe_code,
    reason = "TUNSETIFF has no safe wrapper in std or our dependencies; a lab tool only"
)]
fn open_tap(name: &str) -> Result<File, String> {
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("/dev/net/tun: {e}"))?;
    // struct ifreq: the name (NUL-padded), then a union whose first member is the flags.
    let mut ifreq = [0u8; 40];
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    ifreq[libc::IFNAMSIZ..libc::IFNAMSIZ + 2].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
    // SAFETY: `ifreq` is a 40-byte buffer laid out as `struct ifreq`, which is what TUNSETIFF
    // reads and writes; it outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifreq.as_mut_ptr()) };
    if rc < 0 {
        return Err(format!("TUNSETIFF {name}: {}", io::Error::last_os_error()));
    }
    Ok(file)
}

/// Copies frames read from `from` to `to`, each `latency` after it was read: a reader thread
/// stamps them, a writer thread holds each until its time.
fn spawn_direction(
    from: Arc<File>,
    to: Arc<File>,
    latency: Duration,
) -> std::thread::JoinHandle<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; FRAME_BUFFER];
        // Ends when the device goes (its queue fails to read), which ends the writer too.
        while let Ok(len) = (&*from).read(&mut buf) {
            if tx
                .send((Instant::now() + latency, buf[..len].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, frame) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            // A frame the device refuses (it is down, say) is dropped, as on a wire.
            let _ = (&*to).write(&frame);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn arguments_are_checked() {
        let (latency, near, far) =
            parse_args(&args(&["--latency-ms", "25", "wan0", "wd1b"])).unwrap();
        assert_eq!(latency, Duration::from_millis(25));
        assert_eq!((near.as_str(), far.as_str()), ("wan0", "wd1b"));
        assert!(parse_args(&args(&["--latency-ms", "x", "a", "b"])).is_err());
        assert!(parse_args(&args(&["--latency-ms", "5", "a"])).is_err());
        let long = "a".repeat(16);
        let err = parse_args(&args(&["--latency-ms", "5", &long, "b"])).unwrap_err();
        assert!(err.contains("1 to 15 bytes"), "{err}");
    }
}
