//! A transceive's request bytes between its start and its end: ready to
//! send, or held by the driver's send in flight.

use crate::ring::{HeldSend, OpDriver, SendBuf};

/// A transceive's request bytes: ready to send (or sent), or read by a
/// held send in flight ([`OpDriver::push_send_held`]: the bytes stay in
/// the op entry, and the send takes no driver slot).
pub(super) enum Input {
    Ready(SendBuf),
    Held(HeldSend),
}

impl Default for Input {
    fn default() -> Input {
        Input::Ready(SendBuf::default())
    }
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Ready(b) => b,
            Input::Held(h) => h,
        }
    }
}

impl Input {
    /// The bytes, to be sent (by a slot's op) or recycled: never while a
    /// held send reads them (then nothing is taken).
    pub(super) fn take_ready(&mut self) -> SendBuf {
        match self {
            Input::Ready(b) => std::mem::take(b),
            Input::Held(_) => {
                debug_assert!(false, "the bytes of a send in flight taken");
                SendBuf::default()
            }
        }
    }

    /// After a held send's final completion: its bytes back from the
    /// driver (still held if the driver says the kernel reads them).
    pub(super) fn settle<D: OpDriver>(&mut self, drv: &mut D) {
        if let Input::Held(_) = self {
            let Input::Held(h) = std::mem::take(self) else {
                return;
            };
            *self = match drv.take_back(h) {
                Ok(b) => Input::Ready(b),
                Err(h) => {
                    debug_assert!(false, "a held send given back before its completion");
                    Input::Held(h)
                }
            };
        }
    }
}
