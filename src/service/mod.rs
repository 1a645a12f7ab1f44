//! The pipe service: the process at the other end of the socket (work in progress).
