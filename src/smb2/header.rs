//! The 64-byte SMB2 header (MS-SMB2 2.2.1), sync and async forms, and
//! compound chains (NextCommand).

use super::wire::{Reader, Writer};
use crate::protocol::error::DecodeError;
use crate::protocol::status::NtStatus;

/// Bytes of an SMB2 header.
pub const HEADER_LEN: usize = 64;
/// `0xFE 'S' 'M' 'B'`.
pub const PROTOCOL_ID: [u8; 4] = [0xFE, b'S', b'M', b'B'];
/// The SMB1 protocol id, `0xFF 'S' 'M' 'B'`.
pub const SMB1_PROTOCOL_ID: [u8; 4] = [0xFF, b'S', b'M', b'B'];

/// Flags: a response.
pub const FLAGS_SERVER_TO_REDIR: u32 = 0x0000_0001;
/// Flags: the async form of the header (AsyncId instead of tree and process id).
pub const FLAGS_ASYNC_COMMAND: u32 = 0x0000_0002;
/// Flags: a related compound part (inherits ids from the one before).
pub const FLAGS_RELATED_OPERATIONS: u32 = 0x0000_0004;
/// Flags: signed.
pub const FLAGS_SIGNED: u32 = 0x0000_0008;
/// Flags: the priority bits (3.1.1).
pub const FLAGS_PRIORITY_MASK: u32 = 0x0000_0070;
/// Flags: a DFS operation.
pub const FLAGS_DFS_OPERATIONS: u32 = 0x1000_0000;
/// Flags: a replay.
pub const FLAGS_REPLAY_OPERATION: u32 = 0x2000_0000;

/// The most parts a compound chain may have here.
pub const MAX_COMPOUND_PARTS: usize = 64;

/// The SMB2 commands (MS-SMB2 2.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum Command {
    Negotiate = 0x00,
    SessionSetup = 0x01,
    Logoff = 0x02,
    TreeConnect = 0x03,
    TreeDisconnect = 0x04,
    Create = 0x05,
    Close = 0x06,
    Flush = 0x07,
    Read = 0x08,
    Write = 0x09,
    Lock = 0x0A,
    Ioctl = 0x0B,
    Cancel = 0x0C,
    Echo = 0x0D,
    QueryDirectory = 0x0E,
    ChangeNotify = 0x0F,
    QueryInfo = 0x10,
    SetInfo = 0x11,
    OplockBreak = 0x12,
}

impl Command {
    /// The command with this code, if it is one.
    pub fn from_u16(v: u16) -> Option<Command> {
        use Command::*;
        Some(match v {
            0x00 => Negotiate,
            0x01 => SessionSetup,
            0x02 => Logoff,
            0x03 => TreeConnect,
            0x04 => TreeDisconnect,
            0x05 => Create,
            0x06 => Close,
            0x07 => Flush,
            0x08 => Read,
            0x09 => Write,
            0x0A => Lock,
            0x0B => Ioctl,
            0x0C => Cancel,
            0x0D => Echo,
            0x0E => QueryDirectory,
            0x0F => ChangeNotify,
            0x10 => QueryInfo,
            0x11 => SetInfo,
            0x12 => OplockBreak,
            _ => return None,
        })
    }
}

/// The part of the header that differs between the sync and async forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderIds {
    /// Sync: Reserved (process id) and TreeId.
    Sync {
        /// The Reserved field, a process id in practice.
        process_id: u32,
        /// The tree.
        tree_id: u32,
    },
    /// Async (`FLAGS_ASYNC_COMMAND` set): the AsyncId.
    Async {
        /// The id of the pending request.
        async_id: u64,
    },
}

/// An SMB2 header. `flags` never holds `FLAGS_ASYNC_COMMAND` on its own:
/// the form is `ids`; the encoder sets the bit from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// CreditCharge.
    pub credit_charge: u16,
    /// Status in responses; ChannelSequence/Reserved in requests (3.x),
    /// read and written as it is.
    pub status: NtStatus,
    /// The command code (kept raw: an unknown one still needs an error
    /// response with the same code).
    pub command: u16,
    /// CreditRequest (requests) or CreditResponse (responses).
    pub credits: u16,
    /// Flags, without `FLAGS_ASYNC_COMMAND`.
    pub flags: u32,
    /// NextCommand: the offset of the next compound part, 0 for the last.
    pub next_command: u32,
    /// MessageId.
    pub message_id: u64,
    /// Sync or async ids.
    pub ids: HeaderIds,
    /// SessionId.
    pub session_id: u64,
    /// Signature.
    pub signature: [u8; 16],
}

impl Header {
    /// A sync request header for `command` with everything else zero.
    pub fn request(command: Command) -> Header {
        Header {
            credit_charge: 0,
            status: NtStatus(0),
            command: command as u16,
            credits: 0,
            flags: 0,
            next_command: 0,
            message_id: 0,
            ids: HeaderIds::Sync {
                process_id: 0,
                tree_id: 0,
            },
            session_id: 0,
            signature: [0; 16],
        }
    }

    /// The command, when it is a known one.
    pub fn command(&self) -> Option<Command> {
        Command::from_u16(self.command)
    }

    /// Whether the header is a response's.
    pub fn is_response(&self) -> bool {
        self.flags & FLAGS_SERVER_TO_REDIR != 0
    }

    /// Whether this part is related to the one before it.
    pub fn is_related(&self) -> bool {
        self.flags & FLAGS_RELATED_OPERATIONS != 0
    }

    /// The TreeId (0 in the async form).
    pub fn tree_id(&self) -> u32 {
        match self.ids {
            HeaderIds::Sync { tree_id, .. } => tree_id,
            HeaderIds::Async { .. } => 0,
        }
    }

    /// The AsyncId, in the async form.
    pub fn async_id(&self) -> Option<u64> {
        match self.ids {
            HeaderIds::Async { async_id } => Some(async_id),
            HeaderIds::Sync { .. } => None,
        }
    }

    /// Decodes the header at the start of `msg`.
    pub fn decode(msg: &[u8]) -> Result<Header, DecodeError> {
        let mut r = Reader::at(msg, 0);
        let id = r.take("ProtocolId", 4)?;
        if id != PROTOCOL_ID {
            return Err(DecodeError::InvalidValue {
                field: "ProtocolId",
                value: u64::from(u32::from_be_bytes([id[0], id[1], id[2], id[3]])),
            });
        }
        r.structure_size(64)?;
        let credit_charge = r.u16("CreditCharge")?;
        let status = NtStatus(r.u32("Status")?);
        let command = r.u16("Command")?;
        let credits = r.u16("CreditRequest/CreditResponse")?;
        let raw_flags = r.u32("Flags")?;
        let next_command = r.u32("NextCommand")?;
        let message_id = r.u64("MessageId")?;
        let ids = if raw_flags & FLAGS_ASYNC_COMMAND != 0 {
            HeaderIds::Async {
                async_id: r.u64("AsyncId")?,
            }
        } else {
            HeaderIds::Sync {
                process_id: r.u32("Reserved")?,
                tree_id: r.u32("TreeId")?,
            }
        };
        let session_id = r.u64("SessionId")?;
        let signature = r.bytes16("Signature")?;
        Ok(Header {
            credit_charge,
            status,
            command,
            credits,
            flags: raw_flags & !FLAGS_ASYNC_COMMAND,
            next_command,
            message_id,
            ids,
            session_id,
            signature,
        })
    }

    /// Appends the 64 header bytes.
    pub(crate) fn write(&self, w: &mut Writer) {
        w.bytes(&PROTOCOL_ID);
        w.u16(64);
        w.u16(self.credit_charge);
        w.u32(self.status.0);
        w.u16(self.command);
        w.u16(self.credits);
        let mut flags = self.flags & !FLAGS_ASYNC_COMMAND;
        if let HeaderIds::Async { .. } = self.ids {
            flags |= FLAGS_ASYNC_COMMAND;
        }
        w.u32(flags);
        w.u32(self.next_command);
        w.u64(self.message_id);
        match self.ids {
            HeaderIds::Sync {
                process_id,
                tree_id,
            } => {
                w.u32(process_id);
                w.u32(tree_id);
            }
            HeaderIds::Async { async_id } => w.u64(async_id),
        }
        w.u64(self.session_id);
        w.bytes(&self.signature);
    }

    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut w = Writer::new();
        self.write(&mut w);
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&w.buf);
        out
    }
}

/// Splits a message into its compound parts, each starting at its header
/// and ending where the next starts (the last at the end of the message).
/// Every NextCommand must be a multiple of 8, at least a header long, and
/// inside the message; at most [`MAX_COMPOUND_PARTS`] parts.
pub fn split_compound(msg: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    let mut parts = Vec::new();
    let mut rest = msg;
    loop {
        if parts.len() == MAX_COMPOUND_PARTS {
            return Err(DecodeError::TooLong {
                field: "compound chain",
                len: parts.len() as u64 + 1,
                max: MAX_COMPOUND_PARTS as u64,
            });
        }
        let header = Header::decode(rest)?;
        let next = header.next_command as usize;
        if next == 0 {
            parts.push(rest);
            return Ok(parts);
        }
        if next < HEADER_LEN || next % 8 != 0 {
            return Err(DecodeError::InvalidValue {
                field: "NextCommand",
                value: u64::from(header.next_command),
            });
        }
        if next > rest.len() {
            return Err(DecodeError::UnexpectedEnd {
                field: "NextCommand",
                needed: next,
                remaining: rest.len(),
            });
        }
        let (part, tail) = rest.split_at(next);
        parts.push(part);
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_and_async_round_trip() {
        let mut h = Header::request(Command::Read);
        h.ids = HeaderIds::Sync {
            process_id: 0xFEFF,
            tree_id: 7,
        };
        h.message_id = 9;
        assert_eq!(Header::decode(&h.encode()), Ok(h.clone()));
        h.ids = HeaderIds::Async { async_id: 0x55 };
        let b = h.encode();
        assert_eq!(u32::from_le_bytes([b[16], b[17], b[18], b[19]]), 2);
        assert_eq!(Header::decode(&b), Ok(h));
    }

    #[test]
    fn refuses_bad_headers() {
        let h = Header::request(Command::Echo).encode();
        assert!(Header::decode(&h[..63]).is_err());
        let mut bad = h;
        bad[0] = 0xFF;
        assert!(Header::decode(&bad).is_err());
        let mut bad = h;
        bad[4] = 65;
        assert!(Header::decode(&bad).is_err());
    }

    #[test]
    fn compound_chain() {
        let mut a = Header::request(Command::Echo);
        a.next_command = 72;
        let mut msg = a.encode().to_vec();
        msg.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
        let b = Header::request(Command::Echo);
        msg.extend_from_slice(&b.encode());
        msg.extend_from_slice(&[4, 0, 0, 0]);
        let parts = split_compound(&msg).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 72);
        assert_eq!(parts[1].len(), 68);
        // Misaligned, short and past-the-end NextCommand values.
        for bad in [60u32, 70, 200] {
            let mut m = msg.clone();
            m[20..24].copy_from_slice(&bad.to_le_bytes());
            assert!(split_compound(&m).is_err(), "{bad}");
        }
    }

    #[test]
    fn compound_chain_is_bounded() {
        let mut h = Header::request(Command::Echo);
        h.next_command = 64;
        let mut msg = Vec::new();
        for _ in 0..MAX_COMPOUND_PARTS + 1 {
            msg.extend_from_slice(&h.encode());
        }
        h.next_command = 0;
        msg.extend_from_slice(&h.encode());
        assert!(matches!(
            split_compound(&msg),
            Err(DecodeError::TooLong { .. })
        ));
    }
}
