//! The SMB-server side of the pipe transport (work in progress).
