//! Presentation syntax identifiers: UUIDs in this module's 16-byte
//! layout, the interfaces and transfer syntaxes opipe names.

/// Builds a UUID in the 16-byte layout this module uses, from its textual
/// fields (`time_low-time_mid-time_hi-clock_seq-node`).
pub const fn uuid(time_low: u32, time_mid: u16, time_hi: u16, tail: [u8; 8]) -> [u8; 16] {
    let a = time_low.to_le_bytes();
    let b = time_mid.to_le_bytes();
    let c = time_hi.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], tail[0], tail[1], tail[2], tail[3],
        tail[4], tail[5], tail[6], tail[7],
    ]
}

/// The NDR transfer syntax, `8a885d04-1ceb-11c9-9fe8-08002b104860` version 2.
pub const NDR_SYNTAX: SyntaxId = SyntaxId {
    uuid: uuid(
        0x8a88_5d04,
        0x1ceb,
        0x11c9,
        [0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60],
    ),
    version: 2,
};

/// The SRVSVC interface, `4b324fc8-1670-01d3-1278-5a47bf6ee188` version 3.0.
pub const SRVSVC_SYNTAX: SyntaxId = SyntaxId {
    uuid: uuid(
        0x4b32_4fc8,
        0x1670,
        0x01d3,
        [0x12, 0x78, 0x5a, 0x47, 0xbf, 0x6e, 0xe1, 0x88],
    ),
    version: 3,
};

/// A presentation syntax identifier (`p_syntax_id_t`): an interface or
/// transfer syntax UUID and its version (for interfaces, major in the low
/// 16 bits, minor in the high 16 bits, as MS-RPCE lays it out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SyntaxId {
    /// The UUID, in little-endian PDU layout (see the module documentation).
    pub uuid: [u8; 16],
    /// The version.
    pub version: u32,
}

impl From<([u8; 16], u32)> for SyntaxId {
    fn from((uuid, version): ([u8; 16], u32)) -> Self {
        SyntaxId { uuid, version }
    }
}

impl From<SyntaxId> for ([u8; 16], u32) {
    fn from(s: SyntaxId) -> Self {
        (s.uuid, s.version)
    }
}
