//! NT status codes (MS-ERREF section 2.3) as the pipe transport uses them,
//! and the errno mapping of the illumos SMB server (PROTOCOL.md section 6).
//!
//! An NTSTATUS is a 32-bit value whose top two bits are the severity
//! (00 success, 01 informational, 10 warning, 11 error). The open
//! handshake's reply is one of these (PROTOCOL.md section 2); the pipe
//! operations answer with them (section 4).

use std::fmt;

/// An NT status code (MS-ERREF 2.3), as sent in the open handshake's
/// status word and returned to SMB clients.
///
/// The inner value is public: any 32-bit value is a status, known or not.
/// `Debug` prints the same as `Display`: `STATUS_BUFFER_OVERFLOW
/// (0x80000005)`, or `NT status 0xC0001234` for a code this crate has no
/// name for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtStatus(pub u32);

/// The severity of an [`NtStatus`]: its top two bits (MS-ERREF 2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// `00`: success.
    Success,
    /// `01`: success, with information (for example `STATUS_PENDING`).
    Informational,
    /// `10`: warning; the operation did something (for example
    /// `STATUS_BUFFER_OVERFLOW`: the data is returned, but not all of it).
    Warning,
    /// `11`: error.
    Error,
}

/// Declares the known statuses once: each becomes an associated constant
/// of [`NtStatus`] and a row of [`NtStatus::KNOWN`], the single table that
/// [`NtStatus::name`] (and so `Display`) reads.
macro_rules! known_statuses {
    ($( $(#[$doc:meta])* $konst:ident = $value:literal, $name:literal; )*) => {
        impl NtStatus {
            $( $(#[$doc])* pub const $konst: NtStatus = NtStatus($value); )*

            /// Every status this crate names, with its MS-ERREF name, in
            /// ascending order of value. [`NtStatus::name`] reads this table.
            pub const KNOWN: &'static [(NtStatus, &'static str)] = &[
                $( (NtStatus($value), $name), )*
            ];
        }
    };
}

known_statuses! {
    /// `STATUS_SUCCESS`: the operation succeeded (handshake reply 0).
    SUCCESS = 0x0000_0000, "STATUS_SUCCESS";
    /// `STATUS_PENDING`: the operation continues asynchronously.
    PENDING = 0x0000_0103, "STATUS_PENDING";
    /// `STATUS_BUFFER_OVERFLOW`: a warning; the data is returned but more is
    /// waiting (transceive and PEEK, PROTOCOL.md section 4).
    BUFFER_OVERFLOW = 0x8000_0005, "STATUS_BUFFER_OVERFLOW";
    /// `STATUS_INVALID_HANDLE` (EBADF, ENOTSOCK, ESTALE).
    INVALID_HANDLE = 0xC000_0008, "STATUS_INVALID_HANDLE";
    /// `STATUS_INVALID_PARAMETER` (EINVAL; short transceive input, bad WAIT lengths).
    INVALID_PARAMETER = 0xC000_000D, "STATUS_INVALID_PARAMETER";
    /// `STATUS_NO_SUCH_DEVICE` (ENODEV).
    NO_SUCH_DEVICE = 0xC000_000E, "STATUS_NO_SUCH_DEVICE";
    /// `STATUS_NO_SUCH_FILE` (ESRCH).
    NO_SUCH_FILE = 0xC000_000F, "STATUS_NO_SUCH_FILE";
    /// `STATUS_INVALID_DEVICE_REQUEST` (ENOTTY; unknown FSCTL codes).
    INVALID_DEVICE_REQUEST = 0xC000_0010, "STATUS_INVALID_DEVICE_REQUEST";
    /// `STATUS_END_OF_FILE`.
    END_OF_FILE = 0xC000_0011, "STATUS_END_OF_FILE";
    /// `STATUS_NO_MEMORY` (ENOMEM).
    NO_MEMORY = 0xC000_0017, "STATUS_NO_MEMORY";
    /// `STATUS_ACCESS_DENIED` (EPERM, EACCES, EROFS).
    ACCESS_DENIED = 0xC000_0022, "STATUS_ACCESS_DENIED";
    /// `STATUS_BUFFER_TOO_SMALL`: a PEEK output buffer under 16 bytes.
    BUFFER_TOO_SMALL = 0xC000_0023, "STATUS_BUFFER_TOO_SMALL";
    /// `STATUS_OBJECT_NAME_INVALID` (ENAMETOOLONG, EILSEQ; unsafe pipe names).
    OBJECT_NAME_INVALID = 0xC000_0033, "STATUS_OBJECT_NAME_INVALID";
    /// `STATUS_OBJECT_NAME_NOT_FOUND` (ENOENT; the pipe's connect failed).
    OBJECT_NAME_NOT_FOUND = 0xC000_0034, "STATUS_OBJECT_NAME_NOT_FOUND";
    /// `STATUS_OBJECT_NAME_COLLISION` (EEXIST).
    OBJECT_NAME_COLLISION = 0xC000_0035, "STATUS_OBJECT_NAME_COLLISION";
    /// `STATUS_OBJECT_PATH_NOT_FOUND` (ENOTDIR).
    OBJECT_PATH_NOT_FOUND = 0xC000_003A, "STATUS_OBJECT_PATH_NOT_FOUND";
    /// `STATUS_FILE_LOCK_CONFLICT` (ERANGE).
    FILE_LOCK_CONFLICT = 0xC000_0054, "STATUS_FILE_LOCK_CONFLICT";
    /// `STATUS_DISK_FULL` (ENOSPC, EDQUOT).
    DISK_FULL = 0xC000_007F, "STATUS_DISK_FULL";
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    INSUFFICIENT_RESOURCES = 0xC000_009A, "STATUS_INSUFFICIENT_RESOURCES";
    /// `STATUS_PIPE_NOT_AVAILABLE`: the handshake failed or the service is
    /// over its limit.
    PIPE_NOT_AVAILABLE = 0xC000_00AC, "STATUS_PIPE_NOT_AVAILABLE";
    /// `STATUS_INVALID_PIPE_STATE`.
    INVALID_PIPE_STATE = 0xC000_00AD, "STATUS_INVALID_PIPE_STATE";
    /// `STATUS_PIPE_BUSY`.
    PIPE_BUSY = 0xC000_00AE, "STATUS_PIPE_BUSY";
    /// `STATUS_PIPE_DISCONNECTED`.
    PIPE_DISCONNECTED = 0xC000_00B0, "STATUS_PIPE_DISCONNECTED";
    /// `STATUS_PIPE_CLOSING`.
    PIPE_CLOSING = 0xC000_00B1, "STATUS_PIPE_CLOSING";
    /// `STATUS_IO_TIMEOUT`: a pipe WAIT timed out.
    IO_TIMEOUT = 0xC000_00B5, "STATUS_IO_TIMEOUT";
    /// `STATUS_FILE_IS_A_DIRECTORY` (EISDIR).
    FILE_IS_A_DIRECTORY = 0xC000_00BA, "STATUS_FILE_IS_A_DIRECTORY";
    /// `STATUS_NOT_SUPPORTED` (ENOTSUP).
    NOT_SUPPORTED = 0xC000_00BB, "STATUS_NOT_SUPPORTED";
    /// `STATUS_NETWORK_NAME_DELETED`: the tree went away during an open.
    NETWORK_NAME_DELETED = 0xC000_00C9, "STATUS_NETWORK_NAME_DELETED";
    /// `STATUS_BAD_DEVICE_TYPE` (ENXIO).
    BAD_DEVICE_TYPE = 0xC000_00CB, "STATUS_BAD_DEVICE_TYPE";
    /// `STATUS_NOT_SAME_DEVICE` (EXDEV).
    NOT_SAME_DEVICE = 0xC000_00D4, "STATUS_NOT_SAME_DEVICE";
    /// `STATUS_PIPE_EMPTY`.
    PIPE_EMPTY = 0xC000_00D9, "STATUS_PIPE_EMPTY";
    /// `STATUS_INTERNAL_ERROR`: any errno without a row in section 6.
    INTERNAL_ERROR = 0xC000_00E5, "STATUS_INTERNAL_ERROR";
    /// `STATUS_DIRECTORY_NOT_EMPTY` (ENOTEMPTY).
    DIRECTORY_NOT_EMPTY = 0xC000_0101, "STATUS_DIRECTORY_NOT_EMPTY";
    /// `STATUS_TOO_MANY_OPENED_FILES` (ENFILE, EMFILE).
    TOO_MANY_OPENED_FILES = 0xC000_011F, "STATUS_TOO_MANY_OPENED_FILES";
    /// `STATUS_CANCELLED` (EINTR; a cancelled request).
    CANCELLED = 0xC000_0120, "STATUS_CANCELLED";
    /// `STATUS_FILE_CLOSED`.
    FILE_CLOSED = 0xC000_0128, "STATUS_FILE_CLOSED";
    /// `STATUS_PIPE_BROKEN` (EPIPE; the service closed its end).
    PIPE_BROKEN = 0xC000_014B, "STATUS_PIPE_BROKEN";
    /// `STATUS_IO_DEVICE_ERROR` (EIO).
    IO_DEVICE_ERROR = 0xC000_0185, "STATUS_IO_DEVICE_ERROR";
    /// `STATUS_PATH_NOT_COVERED` (EREMOTE).
    PATH_NOT_COVERED = 0xC000_0257, "STATUS_PATH_NOT_COVERED";
    /// `STATUS_TOO_MANY_LINKS` (EMLINK).
    TOO_MANY_LINKS = 0xC000_0265, "STATUS_TOO_MANY_LINKS";
    /// `RPC_NT_SERVER_TOO_BUSY` (its MS-ERREF name has no `STATUS_` prefix).
    RPC_NT_SERVER_TOO_BUSY = 0xC002_0018, "RPC_NT_SERVER_TOO_BUSY";
}

impl NtStatus {
    /// The 32-bit value, as sent on the wire.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// The MS-ERREF name of a known status, for example
    /// `Some("STATUS_BUFFER_OVERFLOW")`; `None` for codes not in
    /// [`NtStatus::KNOWN`].
    pub fn name(self) -> Option<&'static str> {
        Self::KNOWN
            .binary_search_by_key(&self, |&(status, _)| status)
            .ok()
            .and_then(|i| Self::KNOWN.get(i))
            .map(|&(_, name)| name)
    }

    /// The severity: the top two bits of the code.
    pub fn severity(self) -> Severity {
        match self.0 >> 30 {
            0 => Severity::Success,
            1 => Severity::Informational,
            2 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// True for success and informational codes: the `NT_SUCCESS()` test of
    /// the Windows headers (severity bits `0x`). Use `== NtStatus::SUCCESS`
    /// to test for exactly zero.
    pub fn is_success(self) -> bool {
        matches!(self.severity(), Severity::Success | Severity::Informational)
    }

    /// True for warning codes (severity `10`), such as `STATUS_BUFFER_OVERFLOW`.
    pub fn is_warning(self) -> bool {
        self.severity() == Severity::Warning
    }

    /// True for error codes (severity `11`).
    pub fn is_error(self) -> bool {
        self.severity() == Severity::Error
    }

    /// Maps an errno to a status exactly as illumos `smb_errno2status` does
    /// (PROTOCOL.md section 6): 0 is success, a listed errno its status,
    /// anything else (including negative values) `STATUS_INTERNAL_ERROR`.
    ///
    /// Pass a positive errno; io_uring reports failures as `-errno` in the
    /// completion's result, so negate it first.
    pub fn from_errno(errno: i32) -> NtStatus {
        match errno {
            0 => NtStatus::SUCCESS,
            libc::EPERM | libc::EACCES | libc::EROFS => NtStatus::ACCESS_DENIED,
            libc::ENOENT => NtStatus::OBJECT_NAME_NOT_FOUND,
            libc::ESRCH => NtStatus::NO_SUCH_FILE,
            libc::EINTR => NtStatus::CANCELLED,
            libc::EIO => NtStatus::IO_DEVICE_ERROR,
            libc::ENXIO => NtStatus::BAD_DEVICE_TYPE,
            libc::EBADF | libc::ENOTSOCK | libc::ESTALE => NtStatus::INVALID_HANDLE,
            libc::ENOMEM => NtStatus::NO_MEMORY,
            libc::EEXIST => NtStatus::OBJECT_NAME_COLLISION,
            libc::EXDEV => NtStatus::NOT_SAME_DEVICE,
            libc::ENODEV => NtStatus::NO_SUCH_DEVICE,
            libc::ENOTDIR => NtStatus::OBJECT_PATH_NOT_FOUND,
            libc::EISDIR => NtStatus::FILE_IS_A_DIRECTORY,
            libc::EINVAL => NtStatus::INVALID_PARAMETER,
            libc::ENFILE | libc::EMFILE => NtStatus::TOO_MANY_OPENED_FILES,
            libc::ENOTTY => NtStatus::INVALID_DEVICE_REQUEST,
            libc::ENOSPC | libc::EDQUOT => NtStatus::DISK_FULL,
            libc::EMLINK => NtStatus::TOO_MANY_LINKS,
            libc::EPIPE => NtStatus::PIPE_BROKEN,
            libc::ERANGE => NtStatus::FILE_LOCK_CONFLICT,
            libc::ENOTSUP => NtStatus::NOT_SUPPORTED,
            libc::EREMOTE => NtStatus::PATH_NOT_COVERED,
            libc::ENAMETOOLONG | libc::EILSEQ => NtStatus::OBJECT_NAME_INVALID,
            libc::ENOTEMPTY => NtStatus::DIRECTORY_NOT_EMPTY,
            _ => NtStatus::INTERNAL_ERROR,
        }
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.0),
            None => write!(f, "NT status 0x{:08X}", self.0),
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NtStatus {}

impl From<NtStatus> for u32 {
    fn from(s: NtStatus) -> u32 {
        s.0
    }
}

impl From<u32> for NtStatus {
    fn from(raw: u32) -> NtStatus {
        NtStatus(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        // `name` binary-searches the table.
        for pair in NtStatus::KNOWN.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{:?} !< {:?}", pair[0], pair[1]);
        }
        for &(status, name) in NtStatus::KNOWN {
            assert_eq!(status.name(), Some(name));
        }
    }

    #[test]
    fn values_from_protocol_md() {
        let expected: &[(NtStatus, u32)] = &[
            (NtStatus::SUCCESS, 0),
            (NtStatus::BUFFER_OVERFLOW, 0x8000_0005),
            (NtStatus::ACCESS_DENIED, 0xC000_0022),
            (NtStatus::OBJECT_NAME_NOT_FOUND, 0xC000_0034),
            (NtStatus::NO_SUCH_FILE, 0xC000_000F),
            (NtStatus::CANCELLED, 0xC000_0120),
            (NtStatus::IO_DEVICE_ERROR, 0xC000_0185),
            (NtStatus::BAD_DEVICE_TYPE, 0xC000_00CB),
            (NtStatus::INVALID_HANDLE, 0xC000_0008),
            (NtStatus::NO_MEMORY, 0xC000_0017),
            (NtStatus::OBJECT_NAME_COLLISION, 0xC000_0035),
            (NtStatus::NOT_SAME_DEVICE, 0xC000_00D4),
            (NtStatus::NO_SUCH_DEVICE, 0xC000_000E),
            (NtStatus::OBJECT_PATH_NOT_FOUND, 0xC000_003A),
            (NtStatus::FILE_IS_A_DIRECTORY, 0xC000_00BA),
            (NtStatus::INVALID_PARAMETER, 0xC000_000D),
            (NtStatus::TOO_MANY_OPENED_FILES, 0xC000_011F),
            (NtStatus::INVALID_DEVICE_REQUEST, 0xC000_0010),
            (NtStatus::DISK_FULL, 0xC000_007F),
            (NtStatus::TOO_MANY_LINKS, 0xC000_0265),
            (NtStatus::PIPE_BROKEN, 0xC000_014B),
            (NtStatus::FILE_LOCK_CONFLICT, 0xC000_0054),
            (NtStatus::NOT_SUPPORTED, 0xC000_00BB),
            (NtStatus::PATH_NOT_COVERED, 0xC000_0257),
            (NtStatus::OBJECT_NAME_INVALID, 0xC000_0033),
            (NtStatus::DIRECTORY_NOT_EMPTY, 0xC000_0101),
            (NtStatus::INTERNAL_ERROR, 0xC000_00E5),
            (NtStatus::PIPE_NOT_AVAILABLE, 0xC000_00AC),
            (NtStatus::NETWORK_NAME_DELETED, 0xC000_00C9),
            (NtStatus::PIPE_DISCONNECTED, 0xC000_00B0),
            (NtStatus::PIPE_EMPTY, 0xC000_00D9),
            (NtStatus::PIPE_BUSY, 0xC000_00AE),
            (NtStatus::INVALID_PIPE_STATE, 0xC000_00AD),
            (NtStatus::PIPE_CLOSING, 0xC000_00B1),
            (NtStatus::INSUFFICIENT_RESOURCES, 0xC000_009A),
            (NtStatus::FILE_CLOSED, 0xC000_0128),
            (NtStatus::END_OF_FILE, 0xC000_0011),
            (NtStatus::RPC_NT_SERVER_TOO_BUSY, 0xC002_0018),
            (NtStatus::BUFFER_TOO_SMALL, 0xC000_0023),
            (NtStatus::IO_TIMEOUT, 0xC000_00B5),
        ];
        for &(status, raw) in expected {
            assert_eq!(status.raw(), raw, "{status}");
            assert!(status.name().is_some());
        }
    }

    #[test]
    fn display_and_debug() {
        assert_eq!(
            NtStatus::BUFFER_OVERFLOW.to_string(),
            "STATUS_BUFFER_OVERFLOW (0x80000005)"
        );
        assert_eq!(NtStatus::SUCCESS.to_string(), "STATUS_SUCCESS (0x00000000)");
        assert_eq!(
            format!("{:?}", NtStatus::OBJECT_NAME_INVALID),
            "STATUS_OBJECT_NAME_INVALID (0xC0000033)"
        );
        assert_eq!(
            NtStatus::RPC_NT_SERVER_TOO_BUSY.to_string(),
            "RPC_NT_SERVER_TOO_BUSY (0xC0020018)"
        );
        assert_eq!(NtStatus(0xC000_1234).to_string(), "NT status 0xC0001234");
        assert_eq!(
            format!("{:?}", NtStatus(0xC000_1234)),
            "NT status 0xC0001234"
        );
        assert_eq!(NtStatus(0xC000_1234).name(), None);
        // Usable as a boxed error.
        let e: Box<dyn std::error::Error> = Box::new(NtStatus::PIPE_BROKEN);
        assert_eq!(e.to_string(), "STATUS_PIPE_BROKEN (0xC000014B)");
    }

    #[test]
    fn severity() {
        assert_eq!(NtStatus::SUCCESS.severity(), Severity::Success);
        assert!(NtStatus::SUCCESS.is_success());
        assert!(!NtStatus::SUCCESS.is_warning() && !NtStatus::SUCCESS.is_error());

        assert_eq!(NtStatus::PENDING.severity(), Severity::Success);
        assert_eq!(NtStatus(0x4000_0000).severity(), Severity::Informational);
        assert!(NtStatus(0x4000_0000).is_success());

        assert_eq!(NtStatus::BUFFER_OVERFLOW.severity(), Severity::Warning);
        assert!(NtStatus::BUFFER_OVERFLOW.is_warning());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_success());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_error());

        assert_eq!(NtStatus::ACCESS_DENIED.severity(), Severity::Error);
        assert!(NtStatus::ACCESS_DENIED.is_error());
        assert!(!NtStatus::ACCESS_DENIED.is_success());
        assert_eq!(NtStatus(u32::MAX).severity(), Severity::Error);
    }

    #[test]
    fn every_errno_row_of_section_6() {
        let rows: &[(i32, NtStatus)] = &[
            (0, NtStatus::SUCCESS),
            (libc::EPERM, NtStatus::ACCESS_DENIED),
            (libc::EACCES, NtStatus::ACCESS_DENIED),
            (libc::EROFS, NtStatus::ACCESS_DENIED),
            (libc::ENOENT, NtStatus::OBJECT_NAME_NOT_FOUND),
            (libc::ESRCH, NtStatus::NO_SUCH_FILE),
            (libc::EINTR, NtStatus::CANCELLED),
            (libc::EIO, NtStatus::IO_DEVICE_ERROR),
            (libc::ENXIO, NtStatus::BAD_DEVICE_TYPE),
            (libc::EBADF, NtStatus::INVALID_HANDLE),
            (libc::ENOTSOCK, NtStatus::INVALID_HANDLE),
            (libc::ESTALE, NtStatus::INVALID_HANDLE),
            (libc::ENOMEM, NtStatus::NO_MEMORY),
            (libc::EEXIST, NtStatus::OBJECT_NAME_COLLISION),
            (libc::EXDEV, NtStatus::NOT_SAME_DEVICE),
            (libc::ENODEV, NtStatus::NO_SUCH_DEVICE),
            (libc::ENOTDIR, NtStatus::OBJECT_PATH_NOT_FOUND),
            (libc::EISDIR, NtStatus::FILE_IS_A_DIRECTORY),
            (libc::EINVAL, NtStatus::INVALID_PARAMETER),
            (libc::ENFILE, NtStatus::TOO_MANY_OPENED_FILES),
            (libc::EMFILE, NtStatus::TOO_MANY_OPENED_FILES),
            (libc::ENOTTY, NtStatus::INVALID_DEVICE_REQUEST),
            (libc::ENOSPC, NtStatus::DISK_FULL),
            (libc::EDQUOT, NtStatus::DISK_FULL),
            (libc::EMLINK, NtStatus::TOO_MANY_LINKS),
            (libc::EPIPE, NtStatus::PIPE_BROKEN),
            (libc::ERANGE, NtStatus::FILE_LOCK_CONFLICT),
            (libc::ENOTSUP, NtStatus::NOT_SUPPORTED),
            (libc::EREMOTE, NtStatus::PATH_NOT_COVERED),
            (libc::ENAMETOOLONG, NtStatus::OBJECT_NAME_INVALID),
            (libc::EILSEQ, NtStatus::OBJECT_NAME_INVALID),
            (libc::ENOTEMPTY, NtStatus::DIRECTORY_NOT_EMPTY),
        ];
        for &(errno, status) in rows {
            assert_eq!(NtStatus::from_errno(errno), status, "errno {errno}");
        }
        // Anything else is INTERNAL_ERROR, including negative (io_uring
        // style) values and the extremes.
        for errno in [
            libc::EAGAIN,
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            -libc::EPIPE,
            i32::MIN,
            i32::MAX,
        ] {
            assert_eq!(
                NtStatus::from_errno(errno),
                NtStatus::INTERNAL_ERROR,
                "errno {errno}"
            );
        }
    }
}
