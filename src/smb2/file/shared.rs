//! What every request on an open shares: the [`FileId`] that names the
//! open, and the payload limit of the codecs.

use crate::protocol::error::DecodeError;
use crate::smb2::wire::{Reader, Writer};

/// The most payload bytes of a READ, WRITE, IOCTL or QUERY_INFO buffer the
/// codec accepts (the server announces less).
pub const MAX_DATA: usize = 8 * 1024 * 1024;

/// An SMB2 FileId.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Persistent.
    pub persistent: u64,
    /// Volatile.
    pub volatile: u64,
}

impl FileId {
    /// The all-ones id of a related compound part ("the file of the part before").
    pub const RELATED: FileId = FileId {
        persistent: u64::MAX,
        volatile: u64::MAX,
    };

    pub(super) fn read(r: &mut Reader<'_>) -> Result<FileId, DecodeError> {
        Ok(FileId {
            persistent: r.u64("FileId.Persistent")?,
            volatile: r.u64("FileId.Volatile")?,
        })
    }

    pub(super) fn write(&self, w: &mut Writer) {
        w.u64(self.persistent);
        w.u64(self.volatile);
    }
}
