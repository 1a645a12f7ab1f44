//! The pipe protocol, pure: no sockets, no clocks, no allocation sized by
//! an unchecked length.
//!
//! One module per concern, each citing the section of `PROTOCOL.md` (and
//! of the external specification) it implements:
//!
//! * [`status`]: NT status codes and the errno mapping (sections 2, 4, 6).
//! * [`error`]: [`DecodeError`] and [`EncodeError`], shared by every codec.
//! * [`name`]: SMB pipe path to flat pipe name, with the safety rule
//!   (section 1).
//! * [`header`]: the open handshake's 8-byte header and status word
//!   (section 2).
//! * [`userinfo`]: the netuserinfo XDR message and the whole open message
//!   (section 2).
//! * [`fsctl`]: PEEK, WAIT and TRANSCEIVE structures and status rules
//!   (section 4, MS-FSCC).
//! * [`dialect`]: a pipe's dialect (illumos or Samba): handshake, framing,
//!   socket path.
//! * [`npa`]: Samba's pipe dialect: the named-pipe-auth handshake (levels
//!   7 and 8, with the NDR session info it carries) and the `u16` message
//!   framing (`SAMBA.md`).
//! * [`dcerpc`]: connection-oriented DCE/RPC framing, fragments, bind and
//!   bind_ack (section 3, C706 chapter 12).
//!
//! External specifications cited in this layer:
//! [C706](https://pubs.opengroup.org/onlinepubs/9629399/) (DCE 1.1 RPC),
//! [MS-RPCE](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-rpce/),
//! [MS-FSCC](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-fscc/),
//! [MS-ERREF](https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-erref/),
//! [RFC 4506](https://www.rfc-editor.org/rfc/rfc4506) (XDR).
//!
//! Every decoder here is bounded and total: it checks each length against
//! its maximum and the remaining input before using it, refuses truncated
//! input and (for whole messages) trailing bytes, and never panics.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dcerpc;
pub mod dialect;
pub mod error;
pub mod fsctl;
pub mod header;
pub mod name;
mod ndr;
pub mod npa;
pub mod srvsvc;
pub mod status;
pub mod userinfo;
mod xdr;

pub use dcerpc::{
    decode_bind, decode_bind_ack, decode_fault, decode_request, decode_response, encode_bind,
    encode_bind_ack, encode_fault, encode_request, encode_response, encode_response_filled,
    encoded_call_len, pdu_len, Bind, BindAck, CommonHeader, ContextResult, Fault, PduReassembler,
    PresentationContext, Request, Response, SyntaxId,
};
pub use dialect::{Dialect, UnknownDialect, SAMBA_NP_DIR};
pub use error::{DecodeError, EncodeError};
pub use fsctl::{
    peek_data_room, peek_status, transceive_status, PeekReply, WaitRequest, FSCTL_PIPE_PEEK,
    FSCTL_PIPE_TRANSCEIVE, FSCTL_PIPE_WAIT, MAX_WAIT_NAME_BYTES, PEEK_HEADER_LEN,
    PIPE_STATE_CLOSING, PIPE_STATE_CONNECTED, SMB_PIPE_MAX_MSGSIZE,
};
pub use header::{
    decode_status_word, encode_status_word, PipeHeader, MAX_UILEN, PIPE_HEADER_LEN, PIPE_MAGIC,
    STATUS_WORD_LEN,
};
pub use name::{PipeName, MAX_PIPE_NAME_BYTES};
pub use npa::{
    frame_header, frame_message, npa_message_len, npa_message_level, read_npa_message,
    unframe_message, DomSid, FramedReader, IdentityError, IdentityKind, MessageUnframer,
    NpaIdentity, NpaLevel, NpaReply, NpaRequest, SecurityToken, SessionInfo, SessionInfoTransport,
    UnixInfo, UnixToken, UserInfo,
};
pub use status::{NtStatus, Severity};
pub use userinfo::{
    decode_open_message, encode_open_message, ClientAddr, NetUserInfo, MAX_USERINFO_STRING_BYTES,
    USER_FLAG_ADMIN, USER_FLAG_ANONYMOUS, USER_FLAG_BACKUP_OPERATOR, USER_FLAG_GUEST,
    USER_FLAG_POWER_USER,
};
