//! The requests on an open: CREATE (MS-SMB2 2.2.13, 2.2.14), CLOSE (2.2.15,
//! 2.2.16), READ (2.2.19, 2.2.20), WRITE (2.2.21, 2.2.22), IOCTL (2.2.31,
//! 2.2.32), QUERY_INFO (2.2.37, 2.2.38) and SET_INFO (2.2.39, 2.2.40).
//!
//! One module per message pair: `create` (CREATE and
//! CLOSE), `read_write`, `ioctl` and `info` (QUERY_INFO and SET_INFO);
//! `shared` holds the [`FileId`] and the payload limit. Every type is
//! re-exported here.

mod create;
mod info;
mod ioctl;
mod read_write;
mod shared;

pub use create::{
    CloseRequest, CloseResponse, CreateRequest, CreateResponse, MAX_CREATE_CONTEXTS,
    MAX_CREATE_NAME,
};
pub use info::{QueryInfoRequest, QueryInfoResponse, SetInfoRequest};
pub use ioctl::{
    IoctlRequest, IoctlResponse, FSCTL_PIPE_PEEK, FSCTL_PIPE_TRANSCEIVE, FSCTL_PIPE_WAIT,
    IOCTL_IS_FSCTL,
};
pub use read_write::{ReadRequest, ReadResponse, WriteRequest, WriteResponse};
pub use shared::{FileId, MAX_DATA};
