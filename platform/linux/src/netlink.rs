//! A blocking netlink socket: send one request, collect the replies up to the ack or the end of
//! the dump, and turn netlink errors into `io::Error`s that keep the errno.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};
use std::fmt;
use std::io;
use std::time::Duration;

/// A reply that takes longer than this means the kernel is not answering; fail rather than hang
/// the reconcile loop forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One netlink socket of one protocol (`NETLINK_ROUTE` or `NETLINK_GENERIC`), bound to the
/// network namespace of the thread that opened it.
pub(crate) struct NetlinkSocket {
    socket: Socket,
    sequence: u32,
}

impl fmt::Debug for NetlinkSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetlinkSocket")
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

/// Whether a request is a dump (ends with `NLMSG_DONE`) or a single operation (ends with an ack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Dump,
    /// Extra `NLM_F_*` flags, e.g. `NLM_F_CREATE | NLM_F_EXCL`.
    Do(u16),
}

impl NetlinkSocket {
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(REPLY_TIMEOUT),
        )?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Sends `payload` and returns the inner messages of the reply. A netlink error becomes an
    /// `io::Error` carrying the kernel's errno (`raw_os_error()` is set).
    pub(crate) fn request<I>(&mut self, payload: I, request: Request) -> io::Result<Vec<I>>
    where
        I: NetlinkSerializable + NetlinkDeserializable + fmt::Debug,
        I::Error: fmt::Display,
    {
        self.exchange(payload, request).1
    }

    /// Like [`Self::request`], but hands the request back, so that the caller can scrub key
    /// material from it.
    pub(crate) fn exchange<I>(&mut self, payload: I, request: Request) -> (I, io::Result<Vec<I>>)
    where
        I: NetlinkSerializable + NetlinkDeserializable + fmt::Debug,
        I::Error: fmt::Display,
    {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let (mut bytes, payload) = serialize_returning(payload, request, sequence);
        let sent = self.socket.send(&bytes, 0);
        // The request may carry a private key or a preshared key.
        bytes.fill(0);
        if let Err(e) = sent {
            return (payload, Err(e));
        }
        let mut replies = Vec::new();
        loop {
            let (mut buffer, _) = match self.socket.recv_from_full() {
                Ok(received) => received,
                Err(e) => return (payload, Err(e)),
            };
            let outcome = parse_replies::<I>(&buffer, sequence, request, &mut replies);
            // Replies may carry key material too (a GET_DEVICE dump).
            buffer.fill(0);
            match outcome {
                Ok(true) => return (payload, Ok(replies)),
                Ok(false) => {}
                Err(e) => return (payload, Err(e)),
            }
        }
    }
}

/// Builds the bytes of one request message.
#[cfg(test)]
pub(crate) fn serialize<I>(payload: I, request: Request, sequence: u32) -> Vec<u8>
where
    I: NetlinkSerializable + fmt::Debug,
{
    serialize_returning(payload, request, sequence).0
}

fn serialize_returning<I>(payload: I, request: Request, sequence: u32) -> (Vec<u8>, I)
where
    I: NetlinkSerializable + fmt::Debug,
{
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST
        | match request {
            Request::Dump => NLM_F_DUMP,
            Request::Do(flags) => NLM_F_ACK | flags,
        };
    header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    match message.into_parts().1 {
        NetlinkPayload::InnerMessage(payload) => (bytes, payload),
        // finalize() and serialize() leave the payload as it was.
        _ => unreachable!("the payload of a request is its inner message"),
    }
}

/// Parses one datagram of replies into `replies`; returns whether the exchange is over.
fn parse_replies<I>(
    buffer: &[u8],
    sequence: u32,
    request: Request,
    replies: &mut Vec<I>,
) -> io::Result<bool>
where
    I: NetlinkDeserializable + fmt::Debug,
    I::Error: fmt::Display,
{
    let mut offset = 0;
    while offset < buffer.len() {
        let rest = &buffer[offset..];
        let length = NetlinkBuffer::new_checked(rest)
            .map_err(|e| invalid(format!("malformed netlink reply: {e}")))?
            .length() as usize;
        if length == 0 || length > rest.len() {
            return Err(invalid(format!(
                "netlink reply length {length} is out of bounds"
            )));
        }
        let message = NetlinkMessage::<I>::deserialize(&rest[..length])
            .map_err(|e| invalid(format!("cannot parse netlink reply: {e}")))?;
        // Messages are 4-byte aligned inside a datagram.
        offset += (length + 3) & !3;
        if message.header.sequence_number != sequence {
            // A late reply to an earlier request that timed out; not ours.
            continue;
        }
        match message.payload {
            NetlinkPayload::InnerMessage(inner) => replies.push(inner),
            NetlinkPayload::Error(error) => {
                return match error.code {
                    None => Ok(true),
                    Some(code) => Err(io::Error::from_raw_os_error(code.get().abs())),
                };
            }
            NetlinkPayload::Done(done) => {
                if done.code < 0 {
                    return Err(io::Error::from_raw_os_error(done.code.abs()));
                }
                if request == Request::Dump {
                    return Ok(true);
                }
            }
            NetlinkPayload::Overrun(_) => {
                return Err(invalid(
                    "netlink reply overran the socket buffer".to_owned(),
                ));
            }
            _ => {}
        }
    }
    Ok(false)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// An io error with what we were doing when it happened. The `io::ErrorKind` is kept, so callers
/// can still match on `AlreadyExists`, `NotFound`, `PermissionDenied`, ...; the original error
/// (with its raw errno) stays reachable through [`NetlinkError::errno`]. It is part of the
/// message rather than the error's source: `io::Error` reports its payload's source as its own,
/// so an error chain printed with `{:#}` would otherwise name the cause twice.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {cause}")]
pub struct NetlinkError {
    pub context: String,
    pub cause: io::Error,
}

impl NetlinkError {
    /// The kernel errno this error came from, if any.
    pub fn errno(&self) -> Option<i32> {
        self.cause.raw_os_error()
    }
}

/// Wraps `source` with `context`, keeping its kind.
pub(crate) fn with_context(source: io::Error, context: impl Into<String>) -> io::Error {
    io::Error::new(
        source.kind(),
        NetlinkError {
            context: context.into(),
            cause: source,
        },
    )
}

/// The kernel errno of an error made by [`with_context`] (or a raw one).
pub fn error_errno(error: &io::Error) -> Option<i32> {
    error.raw_os_error().or_else(|| {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NetlinkError>())
            .and_then(NetlinkError::errno)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage, NLM_F_MULTIPART};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::LinkMessage;
    use std::num::NonZeroI32;

    fn reply(payload: NetlinkPayload<RouteNetlinkMessage>, sequence: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        header.flags = NLM_F_MULTIPART;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn link(index: u32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(message))
    }

    #[test]
    fn dump_collects_until_done_and_skips_stale_replies() {
        let mut datagram = reply(link(1), 7);
        datagram.extend(reply(link(99), 6)); // a late answer to an earlier request
        datagram.extend(reply(link(2), 7));
        let mut replies = Vec::new();
        assert!(!parse_replies(&datagram, 7, Request::Dump, &mut replies).unwrap());
        let done = reply(NetlinkPayload::Done(DoneMessage::default()), 7);
        assert!(parse_replies(&done, 7, Request::Dump, &mut replies).unwrap());
        let indexes: Vec<u32> = replies
            .iter()
            .map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => l.header.index,
                _ => 0,
            })
            .collect();
        assert_eq!(indexes, [1, 2]);
    }

    #[test]
    fn errors_keep_the_errno() {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::EEXIST);
        let bytes = reply(NetlinkPayload::Error(error), 3);
        let mut replies: Vec<RouteNetlinkMessage> = Vec::new();
        let error = parse_replies(&bytes, 3, Request::Do(0), &mut replies).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        let wrapped = with_context(error, "adding 10.0.0.1/16");
        assert_eq!(wrapped.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(error_errno(&wrapped), Some(libc::EEXIST));
        assert!(
            wrapped.to_string().starts_with("adding 10.0.0.1/16: "),
            "{wrapped}"
        );
        // Printed as a chain (as the CLI prints errors), the cause appears once.
        let chain = format!("{:#}", anyhow::Error::from(wrapped));
        assert_eq!(chain.matches("os error").count(), 1, "{chain}");

        let ack = reply(NetlinkPayload::Error(ErrorMessage::default()), 4);
        assert!(parse_replies(&ack, 4, Request::Do(0), &mut replies).unwrap());
    }
}
