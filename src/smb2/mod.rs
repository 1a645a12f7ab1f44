//! The SMB2 front (feature `smb2`): a pure SMB2 protocol layer for an
//! IPC$-only server. No sockets, no clocks, no panics on input: every
//! decoder checks what is left before it reads, and no allocation is sized
//! by a peer's field beyond the maximum each module states.
//!
//! * [`frame`](mod@frame): the 4-byte transport framing of SMB2 over TCP;
//! * [`header`]: the 64-byte sync/async header and compound chains;
//! * [`negotiate`], [`session`], [`file`](mod@file): the request and response bodies;
//!   [`message`] puts header and body together ([`Request`], [`Response`]);
//! * [`spnego`] and [`ntlmssp`]: the security tokens of anonymous and guest
//!   logins (no signing, no keys);
//! * [`status`]: the NT statuses the front adds;
//! * [`server`]: a sans-IO IPC$ server core over a pipe backend trait;
//! * [`front`]: the server on TCP, on the service loops, over the engine.
//!
//! DESIGN.md, "The SMB2 front", says what was learnt from real clients.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod file;
pub mod frame;
pub mod front;
pub mod header;
pub mod message;
pub mod negotiate;
pub mod ntlmssp;
pub mod server;
pub mod session;
pub mod spnego;
pub mod status;
mod wire;

pub use file::FileId;
pub use frame::{frame, Unframer};
pub use header::{split_compound, Command, Header, HeaderIds, HEADER_LEN};
pub use message::{ErrorResponse, Request, Response};
pub use negotiate::{NegotiateContext, Smb1Negotiate};
