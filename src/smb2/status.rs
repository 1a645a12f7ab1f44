//! The NT statuses the SMB2 front uses beyond those of
//! [`crate::protocol::status`].

use crate::protocol::status::NtStatus;

/// `STATUS_NOT_IMPLEMENTED`.
pub const NOT_IMPLEMENTED: NtStatus = NtStatus(0xC000_0002);
/// `STATUS_INVALID_INFO_CLASS`.
pub const INVALID_INFO_CLASS: NtStatus = NtStatus(0xC000_0003);
/// `STATUS_MORE_PROCESSING_REQUIRED`: a SESSION_SETUP leg that expects another.
pub const MORE_PROCESSING_REQUIRED: NtStatus = NtStatus(0xC000_0016);
/// `STATUS_LOGON_FAILURE`.
pub const LOGON_FAILURE: NtStatus = NtStatus(0xC000_006D);
/// `STATUS_BAD_NETWORK_NAME`: a tree connect to a share other than IPC$.
pub const BAD_NETWORK_NAME: NtStatus = NtStatus(0xC000_00CC);
/// `STATUS_REQUEST_NOT_ACCEPTED`: over the session or tree limit.
pub const REQUEST_NOT_ACCEPTED: NtStatus = NtStatus(0xC000_00D0);
/// `STATUS_USER_SESSION_DELETED`: an unknown SessionId.
pub const USER_SESSION_DELETED: NtStatus = NtStatus(0xC000_0203);
/// `STATUS_NETWORK_NAME_DELETED`: an unknown TreeId.
pub const NETWORK_NAME_DELETED: NtStatus = NtStatus(0xC000_00C9);
/// `STATUS_FILE_CLOSED`: an unknown FileId.
pub const FILE_CLOSED: NtStatus = NtStatus(0xC000_0128);
/// `STATUS_FS_DRIVER_REQUIRED`: a DFS referral request to a server without DFS.
pub const FS_DRIVER_REQUIRED: NtStatus = NtStatus(0xC000_019C);
