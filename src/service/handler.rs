//! The handler interface: what serves an open pipe once the handshake
//! accepted it.
//!
//! A handler is sans-IO: it is fed the bytes the client sends, in order and
//! in arbitrary pieces, and appends its replies to an output vector. The
//! event loop does the socket work, bounds the output (a client that does
//! not read its replies stops being read) and closes the connection.

use std::fmt;

use crate::protocol::{DecodeError, EncodeError, NetUserInfo, PipeName};

use super::caller::Caller;

/// Why a handler gave up on its connection. Returning it closes the
/// connection after the output already produced has been sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
}

impl HandlerError {
    /// An error with a message for logs.
    pub fn new(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<EncodeError> for HandlerError {
    fn from(e: EncodeError) -> HandlerError {
        HandlerError::new(e.to_string())
    }
}

impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> HandlerError {
        HandlerError::new(e.to_string())
    }
}

/// Where a handler's output is cut into messages on a message-mode pipe
/// (the Samba dialect, whose every message carries a `u16` length and is
/// what an SMB client's read or transceive returns whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageBoundaries {
    /// What one call ([`Handler::on_data`] or [`Handler::resume`]) appends
    /// is one message (cut in pieces of 65535 bytes, the most a message
    /// holds, when longer). On a message-mode pipe each call gets one
    /// whole message as input.
    #[default]
    PerCall,
    /// The output is DCE/RPC PDUs: each one (by its `frag_length`) is one
    /// message, never split nor merged with the next.
    DceRpcPdus,
}

/// How much output a handler should produce per call before it stops and
/// reports a backlog (see [`Handler::has_backlog`]).
pub const OUTPUT_BATCH_BYTES: usize = 64 * 1024;

/// Serves one open pipe. Runs on the service thread that owns the
/// connection; it need not be `Send`. It should not block: every connection
/// of that thread waits while it runs. A panic in a handler closes its
/// connection (and is counted as a handler error), not the service.
///
/// Output is bounded by the service: a client that does not read its
/// replies stops being read. A handler whose replies can be much larger
/// than the requests (so that one received buffer could ask for megabytes)
/// should stop once `out` holds about [`OUTPUT_BATCH_BYTES`], keep the rest
/// of its input, and report it with [`has_backlog`](Self::has_backlog);
/// it is then called again through [`resume`](Self::resume) when the output
/// has drained, and receives nothing new meanwhile.
pub trait Handler {
    /// The client sent `data` (the next bytes of the stream; message
    /// boundaries are not preserved). Append replies to `out`.
    ///
    /// `Err` ends the connection: what `out` holds is still sent, then the
    /// connection closes.
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError>;

    /// True while the handler holds input it has not answered yet.
    fn has_backlog(&self) -> bool {
        false
    }

    /// The output drained while [`has_backlog`](Self::has_backlog) was
    /// true: append the next batch of replies to `out`.
    fn resume(&mut self, _out: &mut Vec<u8>) -> Result<(), HandlerError> {
        Ok(())
    }

    /// The connection is closing (client gone, error, or shutdown).
    fn on_close(&mut self) {}

    /// Where the output is cut into messages on a message-mode pipe
    /// (default [`MessageBoundaries::PerCall`]); ignored on a byte-stream
    /// pipe (the illumos dialect).
    fn message_boundaries(&self) -> MessageBoundaries {
        MessageBoundaries::PerCall
    }
}

impl<H: Handler + ?Sized> Handler for Box<H> {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        (**self).on_data(data, out)
    }

    fn has_backlog(&self) -> bool {
        (**self).has_backlog()
    }

    fn resume(&mut self, out: &mut Vec<u8>) -> Result<(), HandlerError> {
        (**self).resume(out)
    }

    fn on_close(&mut self) {
        (**self).on_close()
    }

    fn message_boundaries(&self) -> MessageBoundaries {
        (**self).message_boundaries()
    }
}

/// Makes a [`Handler`] for each accepted open. Shared by every service
/// thread, hence `Send + Sync`.
///
/// Closures `Fn(&PipeName, &NetUserInfo) -> H` where `H: Handler` are
/// factories:
///
/// ```
/// use opipe::service::{Handler, HandlerError};
///
/// struct Upper;
/// impl Handler for Upper {
///     fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
///         out.extend(data.iter().map(u8::to_ascii_uppercase));
///         Ok(())
///     }
/// }
/// let factory = |_pipe: &opipe::protocol::PipeName, _user: &opipe::protocol::NetUserInfo| Upper;
/// # fn takes(_: impl opipe::service::HandlerFactory) {}
/// # takes(factory);
/// ```
pub trait HandlerFactory: Send + Sync + 'static {
    /// A handler for an open of `pipe` by `user` that the policy accepted.
    fn open(&self, pipe: &PipeName, user: &NetUserInfo) -> Box<dyn Handler>;

    /// The same, with everything the open told about the caller: the
    /// dialect and, for Samba's, the whole identity (SIDs, unix token,
    /// addresses). The default calls [`open`](Self::open) with
    /// [`Caller::user`], the illumos view that both dialects have.
    fn open_caller(&self, pipe: &PipeName, caller: &Caller) -> Box<dyn Handler> {
        self.open(pipe, &caller.user)
    }
}

impl<F, H> HandlerFactory for F
where
    F: Fn(&PipeName, &NetUserInfo) -> H + Send + Sync + 'static,
    H: Handler + 'static,
{
    fn open(&self, pipe: &PipeName, user: &NetUserInfo) -> Box<dyn Handler> {
        Box::new(self(pipe, user))
    }
}

/// Writes back every byte it receives.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        out.extend_from_slice(data);
        Ok(())
    }
}

/// The factory of [`Echo`] handlers.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoFactory;

impl HandlerFactory for EchoFactory {
    fn open(&self, _pipe: &PipeName, _user: &NetUserInfo) -> Box<dyn Handler> {
        Box::new(Echo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_copies_in_order() {
        let mut h = Echo;
        let mut out = Vec::new();
        h.on_data(b"abc", &mut out).unwrap();
        h.on_data(b"", &mut out).unwrap();
        h.on_data(b"de", &mut out).unwrap();
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn closures_are_factories() {
        struct Count(usize);
        impl Handler for Count {
            fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
                self.0 += data.len();
                out.extend_from_slice(&(self.0 as u32).to_le_bytes());
                Ok(())
            }
        }
        let f = |_: &PipeName, _: &NetUserInfo| Count(0);
        let name = PipeName::parse("x").unwrap();
        let mut h = f.open(&name, &crate::service::testutil::user(0));
        let mut out = Vec::new();
        h.on_data(b"12345", &mut out).unwrap();
        assert_eq!(out, 5u32.to_le_bytes());
    }
}
