//! Link and address change notifications (rtnetlink multicast groups), so the daemon reacts to a
//! host changing networks at once instead of polling.

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;

/// `RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR`
/// (linux/rtnetlink.h). Routes too: a new network is only usable once its default route is.
const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100;

/// Subscribes in the calling thread's network namespace, then waits on a dedicated thread and
/// calls `on_change` after every batch of link or address messages. Returning `false` stops the
/// watch (checked after the next message). The content is not parsed: the caller re-reads what
/// it needs, which also covers messages lost to a full socket buffer (`ENOBUFS`).
pub fn watch_links_and_addresses(
    mut on_change: impl FnMut() -> bool + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, GROUPS))?;
    std::thread::Builder::new().name("wgmesh-netlink-events".to_owned()).spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match socket.recv(&mut &mut buf[..], 0) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // ENOBUFS: events were dropped; the caller re-reads state anyway.
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "link/address event socket failed; falling back to polling");
                    return;
                }
            }
            if !on_change() {
                return;
            }
        }
    })
}
