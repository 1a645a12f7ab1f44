//! The plain data an engine hands out: pipe ids, what an open reported,
//! a transfer's data and status, and the tree an open belongs to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::protocol::npa::{NpaReply, FILE_TYPE_BYTE_MODE};
use crate::protocol::{fsctl, NtStatus, PipeName};

/// Identifies an open pipe inside its engine (ring, slot, generation).
/// Plain data: a stale id is answered with `STATUS_INVALID_HANDLE`, it can
/// never reach another pipe's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeId {
    pub(super) ring: usize,
    pub(super) index: u32,
    pub(super) gen: u32,
}

/// What the seed fills in for an opened pipe (`smb_opipe_open`, getattr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    /// The normalised flat name (`srvsvc`).
    pub name: PipeName,
    /// SMB session the pipe belongs to.
    pub session_id: u64,
    /// A file id unique per pipe (per engine).
    pub file_id: u64,
    /// Always "message pipe".
    pub file_type: FileType,
    /// 0x05ff: message read mode, message type, unlimited instances.
    pub device_state: u16,
    /// Always "opened".
    pub action: OpenAction,
    /// DOS attributes: NORMAL (0x80).
    pub dos_attributes: u32,
    /// Allocation size: 4280.
    pub allocation_size: u64,
    /// End of file: 0.
    pub size: u64,
    /// Link count: 1.
    pub links: u32,
}

/// File type of an opened pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// `SMB_FTYPE_MESG_PIPE`.
    MessagePipe,
    /// A byte-mode pipe (a Samba-dialect service may answer so).
    BytePipe,
}

/// Action taken by an open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAction {
    /// `SMB_OACT_OPENED`.
    Opened,
}

/// `FILE_ATTRIBUTE_NORMAL`.
pub const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
/// Device state of every pipe: `SMB_PIPE_READMODE_MESSAGE | SMB_PIPE_TYPE_MESSAGE | SMB_PIPE_UNLIMITED_INSTANCES`.
pub const PIPE_DEVICE_STATE: u16 = 0x05ff;

impl OpenInfo {
    pub(super) fn new(name: PipeName, file_id: u64, session_id: u64) -> OpenInfo {
        OpenInfo {
            name,
            session_id,
            file_id,
            file_type: FileType::MessagePipe,
            device_state: PIPE_DEVICE_STATE,
            action: OpenAction::Opened,
            dos_attributes: FILE_ATTRIBUTE_NORMAL,
            allocation_size: fsctl::SMB_PIPE_MAX_MSGSIZE as u64,
            size: 0,
            links: 1,
        }
    }

    /// A Samba-dialect open: the file type, device state and allocation
    /// size are the ones the service's NPA reply gave.
    pub(super) fn apply_npa_reply(&mut self, reply: &NpaReply) {
        self.file_type = if reply.file_type == FILE_TYPE_BYTE_MODE {
            FileType::BytePipe
        } else {
            FileType::MessagePipe
        };
        self.device_state = reply.device_state;
        self.allocation_size = reply.allocation_size;
    }

    /// The name as the seed's getname reports it: `\` + flat name.
    pub fn smb_name(&self) -> String {
        self.name.smb_name()
    }
}

/// Data and status of a transceive, read or FSCTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// `STATUS_SUCCESS`, or `STATUS_BUFFER_OVERFLOW` (a warning: the data is
    /// valid and more is waiting to be read).
    pub status: NtStatus,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A tree connect (share connection) as the SMB server sees it. An open
/// that completes after its tree was disconnected fails with
/// `STATUS_NETWORK_NAME_DELETED` and its socket is closed.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    disconnected: Arc<AtomicBool>,
}

impl Tree {
    /// A connected tree.
    pub fn new() -> Tree {
        Tree::default()
    }
    /// Marks the tree disconnected.
    pub fn disconnect(&self) {
        self.disconnected.store(true, Ordering::SeqCst);
    }
    /// Whether the tree is still connected.
    pub fn is_connected(&self) -> bool {
        !self.disconnected.load(Ordering::SeqCst)
    }
}
