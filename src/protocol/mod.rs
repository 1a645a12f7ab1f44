//! The pipe protocol, pure: no sockets, no clocks, no allocation sized by
//! an unchecked length.
