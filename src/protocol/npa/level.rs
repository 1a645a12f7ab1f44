//! The levels of the named-pipe-auth handshake this crate speaks (7 and 8).

use std::fmt;

/// A level of the handshake that this crate speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpaLevel {
    /// Level 7: Samba 4.17.9 to 4.19.
    V7,
    /// Level 8: Samba 4.20 and later (the token carries claims and device
    /// SIDs; `auth_user_info.authenticated` became `user_flags`).
    V8,
}

impl NpaLevel {
    /// The number on the wire.
    pub const fn as_u32(self) -> u32 {
        match self {
            NpaLevel::V7 => 7,
            NpaLevel::V8 => 8,
        }
    }

    /// The level with this number, if this crate speaks it.
    pub const fn from_u32(level: u32) -> Option<NpaLevel> {
        match level {
            7 => Some(NpaLevel::V7),
            8 => Some(NpaLevel::V8),
            _ => None,
        }
    }

    /// The other level (for the one retry after `STATUS_INVALID_LEVEL`).
    pub const fn other(self) -> NpaLevel {
        match self {
            NpaLevel::V7 => NpaLevel::V8,
            NpaLevel::V8 => NpaLevel::V7,
        }
    }
}

impl fmt::Display for NpaLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}
