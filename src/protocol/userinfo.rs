//! The user information sent when a pipe is opened: illumos
//! `smb_netuserinfo_t` in XDR, current layout (PROTOCOL.md section 2), and
//! the whole open message (header + userinfo).
//!
//! Wire layout (RFC 4506, big-endian, 4-byte units):
//!
//! | # | field | XDR type |
//! |---|---|---|
//! | 1 | session_id | unsigned hyper |
//! | 2 | domain_len | unsigned int (a `u16`, `strlen(domain) + 1`) |
//! | 3 | domain | string |
//! | 4 | account_len | unsigned int (a `u16`, `strlen(account) + 1`) |
//! | 5 | account | string |
//! | 6 | posix_uid | unsigned int |
//! | 7 | workstation_len | unsigned int (a `u16`, `strlen(workstation) + 1`) |
//! | 8 | workstation | string |
//! | 9 | ipaddr | int family, then an unsigned int (family 2) or 16 chars as ints |
//! | 10 | native_os | int |
//! | 11 | logon_time | hyper |
//! | 12 | numopens | unsigned int |
//! | 13 | flags | unsigned int |
//!
//! The `*_len` fields are not sent by opipe's callers: the encoder derives
//! them from the strings, and the decoder requires each to be at most
//! `0xFFFF` (it is a `u16` in C) and exactly `strlen + 1` (what illumos
//! `smb_user_netinfo_init` sends), so a decoded value re-encodes to the
//! same bytes. Strings never contain NUL (a C peer would cut them there).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::{DecodeError, EncodeError};
use super::header::{PipeHeader, MAX_UILEN, PIPE_HEADER_LEN};
use super::xdr::{self, XdrReader};

/// `flags` bit: anonymous (null session) user.
pub const USER_FLAG_ANONYMOUS: u32 = 0x1;
/// `flags` bit: guest user.
pub const USER_FLAG_GUEST: u32 = 0x2;
/// `flags` bit: member of Power Users.
pub const USER_FLAG_POWER_USER: u32 = 0x4;
/// `flags` bit: member of Backup Operators.
pub const USER_FLAG_BACKUP_OPERATOR: u32 = 0x8;
/// `flags` bit: member of Administrators.
pub const USER_FLAG_ADMIN: u32 = 0x10;

/// Longest `domain`, `account` or `workstation` string, in bytes, that
/// opipe encodes or accepts.
///
/// 1024 covers every real value with room to spare: a Windows account or
/// domain name is at most 256 UTF-16 units (at most 768 bytes of UTF-8), a
/// DNS domain 255 bytes, a NetBIOS name 15, an IPv6 address in text 45. It
/// is also small enough that any userinfo opipe can encode fits in
/// [`MAX_UILEN`] (see [`MAX_USERINFO_ENCODED_LEN`]), so a service never
/// drops an open that opipe built.
pub const MAX_USERINFO_STRING_BYTES: usize = 1024;

/// `ipaddr` family for IPv4 (`AF_INET` on illumos and Linux).
pub const FAMILY_INET: i32 = 2;
/// `ipaddr` family for IPv6 as illumos numbers it (`AF_INET6` is 26 on
/// illumos, unlike Linux's 10).
pub const FAMILY_INET6_ILLUMOS: i32 = 26;

/// Encoded size of everything but the three strings' bytes and padding,
/// with the larger (non-IPv4) address form.
const FIXED_LEN_MAX: usize = 8 + 3 * (4 + 4) + 4 + (4 + 16 * 4) + 4 + 8 + 4 + 4;

/// The largest encoding of a userinfo whose strings are within
/// [`MAX_USERINFO_STRING_BYTES`].
pub const MAX_USERINFO_ENCODED_LEN: usize =
    FIXED_LEN_MAX + 3 * (MAX_USERINFO_STRING_BYTES + xdr::pad_len(MAX_USERINFO_STRING_BYTES));

const _: () = assert!(MAX_USERINFO_ENCODED_LEN <= MAX_UILEN as usize);
const _: () = assert!(MAX_USERINFO_STRING_BYTES < 0xFFFF);

/// The client's address (`smb_inaddr_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAddr {
    /// Family 2: the address travels as the sender's in-memory `u32`
    /// (little-endian sender: 192.168.1.2 is `02 01 a8 c0`).
    V4(Ipv4Addr),
    /// Family 26 (illumos `AF_INET6`): 16 bytes in network order, each sent
    /// as a sign-extended `char`.
    V6(Ipv6Addr),
    /// Any other family (0 when unknown): 16 bytes sent like IPv6. `family`
    /// must not be 2 or 26 (those have their own variants).
    Other {
        /// The address family as sent.
        family: i32,
        /// The 16 address bytes.
        bytes: [u8; 16],
    },
}

impl ClientAddr {
    /// The family number sent on the wire.
    pub fn family(&self) -> i32 {
        match self {
            ClientAddr::V4(_) => FAMILY_INET,
            ClientAddr::V6(_) => FAMILY_INET6_ILLUMOS,
            ClientAddr::Other { family, .. } => *family,
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            ClientAddr::V4(_) => 4 + 4,
            _ => 4 + 16 * 4,
        }
    }
}

impl Default for ClientAddr {
    /// `0.0.0.0`.
    fn default() -> Self {
        ClientAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// The user behind a pipe open (illumos `smb_netuserinfo_t`, PROTOCOL.md
/// section 2), as the SMB server sends it to the pipe service.
///
/// `Default` is an empty user: session 0, empty strings, uid 0, address
/// `0.0.0.0`, no flags.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NetUserInfo {
    /// SMB session id.
    pub session_id: u64,
    /// The user's domain.
    pub domain: String,
    /// The user's account name.
    pub account: String,
    /// The POSIX uid the user maps to.
    pub posix_uid: u32,
    /// The client's NetBIOS name, or its IP address as text.
    pub workstation: String,
    /// The client's address.
    pub client_addr: ClientAddr,
    /// The client's native OS code.
    pub native_os: i32,
    /// Logon time (seconds since the epoch in illumos).
    pub logon_time: i64,
    /// Files the session has open.
    pub numopens: u32,
    /// `USER_FLAG_*` bits.
    pub flags: u32,
}

impl NetUserInfo {
    /// The exact length of [`NetUserInfo::encode`]'s output (what the header's
    /// `uilen` announces).
    pub fn encoded_len(&self) -> usize {
        8 + 4
            + xdr::string_len(self.domain.len())
            + 4
            + xdr::string_len(self.account.len())
            + 4
            + 4
            + xdr::string_len(self.workstation.len())
            + self.client_addr.encoded_len()
            + 4
            + 8
            + 4
            + 4
    }

    fn strings(&self) -> [(&'static str, &str); 3] {
        [
            ("domain", &self.domain),
            ("account", &self.account),
            ("workstation", &self.workstation),
        ]
    }

    /// Checks what the wire cannot carry faithfully: strings over
    /// [`MAX_USERINFO_STRING_BYTES`] or with a NUL, and `ClientAddr::Other`
    /// with family 2 or 26.
    fn validate(&self) -> Result<(), EncodeError> {
        for (field, s) in self.strings() {
            if s.len() > MAX_USERINFO_STRING_BYTES {
                return Err(EncodeError::StringTooLong {
                    field,
                    len: s.len(),
                    max: MAX_USERINFO_STRING_BYTES,
                });
            }
            if s.contains('\0') {
                return Err(EncodeError::EmbeddedNul { field });
            }
        }
        if let ClientAddr::Other { family, .. } = self.client_addr {
            if family == FAMILY_INET || family == FAMILY_INET6_ILLUMOS {
                return Err(EncodeError::NonCanonical {
                    field: "ipaddr family",
                    value: i64::from(family),
                });
            }
        }
        Ok(())
    }

    /// The XDR encoding (current illumos layout).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the XDR encoding to `out`. On error `out` is left unchanged.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.validate()?;
        out.reserve(self.encoded_len());
        xdr::put_u64(out, self.session_id);
        put_string_with_len(out, &self.domain);
        put_string_with_len(out, &self.account);
        xdr::put_u32(out, self.posix_uid);
        put_string_with_len(out, &self.workstation);
        xdr::put_i32(out, self.client_addr.family());
        match self.client_addr {
            ClientAddr::V4(a) => xdr::put_u32(out, u32::from_le_bytes(a.octets())),
            ClientAddr::V6(a) => put_chars(out, &a.octets()),
            ClientAddr::Other { bytes, .. } => put_chars(out, &bytes),
        }
        xdr::put_i32(out, self.native_os);
        xdr::put_i64(out, self.logon_time);
        xdr::put_u32(out, self.numopens);
        xdr::put_u32(out, self.flags);
        Ok(())
    }

    /// Decodes a whole XDR userinfo: `buf` must hold exactly one, nothing
    /// after it. Bounded: each string's length is checked against
    /// [`MAX_USERINFO_STRING_BYTES`] and the remaining input before it is
    /// read; the three strings are the only allocations.
    pub fn decode(buf: &[u8]) -> Result<NetUserInfo, DecodeError> {
        let mut r = XdrReader::new(buf);
        let session_id = r.u64("session_id")?;
        let domain = string_with_len(&mut r, "domain_len", "domain")?;
        let account = string_with_len(&mut r, "account_len", "account")?;
        let posix_uid = r.u32("posix_uid")?;
        let workstation = string_with_len(&mut r, "workstation_len", "workstation")?;
        let client_addr = match r.i32("ipaddr family")? {
            FAMILY_INET => ClientAddr::V4(Ipv4Addr::from(r.u32("ipaddr")?.to_le_bytes())),
            FAMILY_INET6_ILLUMOS => ClientAddr::V6(Ipv6Addr::from(read_chars(&mut r)?)),
            family => ClientAddr::Other {
                family,
                bytes: read_chars(&mut r)?,
            },
        };
        let native_os = r.i32("native_os")?;
        let logon_time = r.i64("logon_time")?;
        let numopens = r.u32("numopens")?;
        let flags = r.u32("flags")?;
        r.finish()?;
        Ok(NetUserInfo {
            session_id,
            domain: domain.to_owned(),
            account: account.to_owned(),
            posix_uid,
            workstation: workstation.to_owned(),
            client_addr,
            native_os,
            logon_time,
            numopens,
            flags,
        })
    }

    /// True when the anonymous flag is set.
    pub fn is_anonymous(&self) -> bool {
        self.flags & USER_FLAG_ANONYMOUS != 0
    }
}

/// A `*_len` word (`strlen + 1`) and the string. The caller has validated
/// the string, so its length is far below `u16::MAX`.
fn put_string_with_len(out: &mut Vec<u8>, s: &str) {
    xdr::put_u32(out, (s.len() + 1) as u32);
    xdr::put_string(out, s);
}

/// Sixteen `char`s, each an XDR `int` holding the sign-extended byte (a
/// signed `char` in C: 0xfe is sent as -2).
fn put_chars(out: &mut Vec<u8>, bytes: &[u8; 16]) {
    for &b in bytes {
        xdr::put_i32(out, i32::from(i8::from_ne_bytes([b])));
    }
}

/// Reads the sixteen `char`s of a non-IPv4 address; each must be a
/// sign-extended byte (-128..=127).
fn read_chars(r: &mut XdrReader<'_>) -> Result<[u8; 16], DecodeError> {
    let mut bytes = [0u8; 16];
    for b in &mut bytes {
        let v = r.i32("ipaddr")?;
        let c = i8::try_from(v).map_err(|_| DecodeError::InvalidValue {
            field: "ipaddr",
            value: u64::from(v as u32),
        })?;
        *b = c.to_ne_bytes()[0];
    }
    Ok(bytes)
}

/// A `*_len` word followed by its string; the word must be a `u16` equal to
/// the string's length plus one.
fn string_with_len<'a>(
    r: &mut XdrReader<'a>,
    len_field: &'static str,
    field: &'static str,
) -> Result<&'a str, DecodeError> {
    let declared = r.u32(len_field)?;
    if declared > 0xFFFF {
        return Err(DecodeError::InvalidValue {
            field: len_field,
            value: u64::from(declared),
        });
    }
    let s = r.string(field, MAX_USERINFO_STRING_BYTES)?;
    let expected = s.len() as u64 + 1;
    if u64::from(declared) != expected {
        return Err(DecodeError::LengthMismatch {
            field: len_field,
            declared: u64::from(declared),
            expected,
        });
    }
    Ok(s)
}

/// The whole open message an SMB server sends after `connect`: the 8-byte
/// [`PipeHeader`] with the exact `uilen`, then the XDR userinfo
/// (PROTOCOL.md section 2).
pub fn encode_open_message(ui: &NetUserInfo) -> Result<Vec<u8>, EncodeError> {
    let uilen = ui.encoded_len();
    let uilen_u32 = match u32::try_from(uilen) {
        Ok(n) if n <= MAX_UILEN => n,
        _ => {
            return Err(EncodeError::MessageTooLong {
                len: uilen,
                max: MAX_UILEN as usize,
            })
        }
    };
    let mut out = Vec::with_capacity(PIPE_HEADER_LEN + uilen);
    out.extend_from_slice(&PipeHeader::new(uilen_u32).encode());
    ui.encode_into(&mut out)?;
    debug_assert_eq!(out.len(), PIPE_HEADER_LEN + uilen);
    Ok(out)
}

/// Decodes a whole open message as a service reads it: the header must pass
/// [`PipeHeader::check`], and exactly `uilen` bytes of valid userinfo must
/// follow (fewer is `UnexpectedEnd`, more is `TrailingBytes`).
pub fn decode_open_message(buf: &[u8]) -> Result<NetUserInfo, DecodeError> {
    let (header, body) =
        buf.split_first_chunk::<PIPE_HEADER_LEN>()
            .ok_or(DecodeError::UnexpectedEnd {
                field: "pipe header",
                needed: PIPE_HEADER_LEN,
                remaining: buf.len(),
            })?;
    let header = PipeHeader::decode(header);
    header.check()?;
    // `check` bounds uilen by MAX_UILEN, so this fits in usize.
    let uilen = header.uilen as usize;
    if body.len() < uilen {
        return Err(DecodeError::UnexpectedEnd {
            field: "userinfo",
            needed: uilen,
            remaining: body.len(),
        });
    }
    if body.len() > uilen {
        return Err(DecodeError::TrailingBytes {
            count: body.len() - uilen,
        });
    }
    NetUserInfo::decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same encoding, built field by field with the xdr-codec crate's
    /// encoder (never its decoder: see KERNEL-NOTES.md).
    fn reference(ui: &NetUserInfo) -> Vec<u8> {
        use xdr_codec::Pack;
        let mut out: Vec<u8> = Vec::new();
        ui.session_id.pack(&mut out).unwrap();
        for (i, s) in [&ui.domain, &ui.account, &ui.workstation]
            .into_iter()
            .enumerate()
        {
            (s.len() as u32 + 1).pack(&mut out).unwrap();
            s.as_str().pack(&mut out).unwrap();
            if i == 1 {
                ui.posix_uid.pack(&mut out).unwrap();
            }
        }
        ui.client_addr.family().pack(&mut out).unwrap();
        let chars = match ui.client_addr {
            ClientAddr::V4(a) => {
                // The in-memory u32 of a little-endian sender.
                u32::from_le_bytes(a.octets()).pack(&mut out).unwrap();
                None
            }
            ClientAddr::V6(a) => Some(a.octets()),
            ClientAddr::Other { bytes, .. } => Some(bytes),
        };
        for b in chars.into_iter().flatten() {
            i32::from(b as i8).pack(&mut out).unwrap();
        }
        ui.native_os.pack(&mut out).unwrap();
        ui.logon_time.pack(&mut out).unwrap();
        ui.numopens.pack(&mut out).unwrap();
        ui.flags.pack(&mut out).unwrap();
        out
    }

    fn golden_v4() -> NetUserInfo {
        NetUserInfo {
            session_id: 0x0102_0304_0506_0708,
            domain: "WORKGROUP".into(),
            account: "alice".into(),
            posix_uid: 1001,
            workstation: "PC1".into(),
            client_addr: ClientAddr::V4(Ipv4Addr::new(192, 168, 1, 2)),
            native_os: 2,
            logon_time: 1_700_000_000,
            numopens: 3,
            flags: USER_FLAG_POWER_USER | USER_FLAG_ADMIN,
        }
    }

    /// Worked out by hand from RFC 4506 and the field table.
    #[rustfmt::skip]
    const GOLDEN_V4: [u8; 88] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // session_id (hyper)
        0x00, 0x00, 0x00, 0x0a,                         // domain_len = 9 + 1
        0x00, 0x00, 0x00, 0x09,                         // domain: length 9
        b'W', b'O', b'R', b'K', b'G', b'R', b'O', b'U', //   "WORKGROUP"
        b'P', 0x00, 0x00, 0x00,                         //   + 3 bytes padding
        0x00, 0x00, 0x00, 0x06,                         // account_len = 5 + 1
        0x00, 0x00, 0x00, 0x05,                         // account: length 5
        b'a', b'l', b'i', b'c', b'e', 0x00, 0x00, 0x00, //   "alice" + 3 padding
        0x00, 0x00, 0x03, 0xe9,                         // posix_uid = 1001
        0x00, 0x00, 0x00, 0x04,                         // workstation_len = 3 + 1
        0x00, 0x00, 0x00, 0x03,                         // workstation: length 3
        b'P', b'C', b'1', 0x00,                         //   "PC1" + 1 padding
        0x00, 0x00, 0x00, 0x02,                         // ipaddr family = AF_INET
        0x02, 0x01, 0xa8, 0xc0,                         // 192.168.1.2 as LE in-memory u32
        0x00, 0x00, 0x00, 0x02,                         // native_os = 2
        0x00, 0x00, 0x00, 0x00, 0x65, 0x53, 0xf1, 0x00, // logon_time = 1700000000
        0x00, 0x00, 0x00, 0x03,                         // numopens = 3
        0x00, 0x00, 0x00, 0x14,                         // flags = POWER_USER | ADMIN
    ];

    fn golden_v6() -> NetUserInfo {
        NetUserInfo {
            session_id: 0,
            domain: String::new(),
            account: String::new(),
            posix_uid: 60001,
            workstation: String::new(),
            client_addr: ClientAddr::V6("fe80::1".parse().unwrap()),
            native_os: -1,
            logon_time: -1,
            numopens: 0,
            flags: USER_FLAG_ANONYMOUS,
        }
    }

    /// Worked out by hand: empty strings, family 26, bytes >= 0x80.
    #[rustfmt::skip]
    const GOLDEN_V6: [u8; 124] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // session_id = 0
        0x00, 0x00, 0x00, 0x01,                         // domain_len = 0 + 1
        0x00, 0x00, 0x00, 0x00,                         // domain: "" (no bytes, no padding)
        0x00, 0x00, 0x00, 0x01,                         // account_len = 0 + 1
        0x00, 0x00, 0x00, 0x00,                         // account: ""
        0x00, 0x00, 0xea, 0x61,                         // posix_uid = 60001
        0x00, 0x00, 0x00, 0x01,                         // workstation_len = 0 + 1
        0x00, 0x00, 0x00, 0x00,                         // workstation: ""
        0x00, 0x00, 0x00, 0x1a,                         // ipaddr family = 26 (illumos AF_INET6)
        0xff, 0xff, 0xff, 0xfe,                         // char 0xfe, sign-extended
        0xff, 0xff, 0xff, 0x80,                         // char 0x80, sign-extended
        0x00, 0x00, 0x00, 0x00,                         // chars 2..=14: 0
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01,                         // char 15: 0x01
        0xff, 0xff, 0xff, 0xff,                         // native_os = -1
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // logon_time = -1
        0x00, 0x00, 0x00, 0x00,                         // numopens = 0
        0x00, 0x00, 0x00, 0x01,                         // flags = ANONYMOUS
    ];

    #[test]
    fn golden_ipv4() {
        let ui = golden_v4();
        assert_eq!(ui.encoded_len(), GOLDEN_V4.len());
        assert_eq!(ui.encode().unwrap(), GOLDEN_V4);
        assert_eq!(NetUserInfo::decode(&GOLDEN_V4), Ok(ui.clone()));
        assert_eq!(reference(&ui), GOLDEN_V4);
        assert!(!ui.is_anonymous());
    }

    #[test]
    fn golden_non_ipv4() {
        let ui = golden_v6();
        assert_eq!(ui.encoded_len(), GOLDEN_V6.len());
        assert_eq!(ui.encode().unwrap(), GOLDEN_V6);
        assert_eq!(NetUserInfo::decode(&GOLDEN_V6), Ok(ui.clone()));
        assert_eq!(reference(&ui), GOLDEN_V6);
        assert!(ui.is_anonymous());
    }

    #[test]
    fn other_family_round_trips() {
        let mut ui = golden_v4();
        ui.client_addr = ClientAddr::Other {
            family: 0,
            bytes: [0xfe; 16],
        };
        let enc = ui.encode().unwrap();
        assert_eq!(enc, reference(&ui));
        assert_eq!(NetUserInfo::decode(&enc), Ok(ui));
    }

    #[test]
    fn default_is_empty_v4() {
        let ui = NetUserInfo::default();
        assert_eq!(ui.client_addr, ClientAddr::V4(Ipv4Addr::UNSPECIFIED));
        let enc = ui.encode().unwrap();
        assert_eq!(enc.len(), 64);
        assert_eq!(enc, reference(&ui));
        assert_eq!(NetUserInfo::decode(&enc), Ok(ui));
    }

    fn assert_every_truncation_refused(enc: &[u8]) {
        for cut in 0..enc.len() {
            let r = NetUserInfo::decode(&enc[..cut]);
            assert!(
                matches!(r, Err(DecodeError::UnexpectedEnd { .. })),
                "prefix of {cut} bytes: {r:?}"
            );
        }
    }

    #[test]
    fn every_truncation_refused() {
        assert_every_truncation_refused(&GOLDEN_V4);
        assert_every_truncation_refused(&GOLDEN_V6);
    }

    #[test]
    fn trailing_bytes_refused() {
        for extra in [&[0u8][..], &[0, 0, 0, 0], &[1, 2, 3, 4, 5]] {
            let mut enc = GOLDEN_V4.to_vec();
            enc.extend_from_slice(extra);
            assert_eq!(
                NetUserInfo::decode(&enc),
                Err(DecodeError::TrailingBytes { count: extra.len() })
            );
        }
    }

    /// Offsets into GOLDEN_V4.
    const DOMAIN_LEN_AT: usize = 8;
    const DOMAIN_AT: usize = 12;
    const DOMAIN_PAD_AT: usize = 25;

    fn patched(at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut enc = GOLDEN_V4.to_vec();
        enc[at..at + bytes.len()].copy_from_slice(bytes);
        enc
    }

    #[test]
    fn len_fields_checked() {
        // Not strlen + 1.
        assert_eq!(
            NetUserInfo::decode(&patched(DOMAIN_LEN_AT, &[0, 0, 0, 9])),
            Err(DecodeError::LengthMismatch {
                field: "domain_len",
                declared: 9,
                expected: 10
            })
        );
        // Not a u16.
        assert_eq!(
            NetUserInfo::decode(&patched(DOMAIN_LEN_AT, &[0, 1, 0, 10])),
            Err(DecodeError::InvalidValue {
                field: "domain_len",
                value: 0x1_000a
            })
        );
    }

    #[test]
    fn string_errors() {
        assert_eq!(
            NetUserInfo::decode(&patched(DOMAIN_PAD_AT, &[0, 7])),
            Err(DecodeError::NonZeroPadding { field: "domain" })
        );
        assert_eq!(
            NetUserInfo::decode(&patched(DOMAIN_AT + 4, &[0xC3, 0x28])),
            Err(DecodeError::InvalidUtf8 { field: "domain" })
        );
        assert_eq!(
            NetUserInfo::decode(&patched(DOMAIN_AT + 4, &[0])),
            Err(DecodeError::EmbeddedNul { field: "domain" })
        );
        // A hostile length is refused by the maximum, not by allocating.
        assert_eq!(
            NetUserInfo::decode(&patched(DOMAIN_AT, &[0xFF, 0xFF, 0xFF, 0xFF])),
            Err(DecodeError::TooLong {
                field: "domain",
                len: 0xFFFF_FFFF,
                max: MAX_USERINFO_STRING_BYTES as u64
            })
        );
        // Within the maximum but beyond the input.
        assert_eq!(
            NetUserInfo::decode(&patched(DOMAIN_AT, &[0, 0, 4, 0])),
            Err(DecodeError::UnexpectedEnd {
                field: "domain",
                needed: 1024,
                remaining: GOLDEN_V4.len() - DOMAIN_AT - 4
            })
        );
    }

    #[test]
    fn ipaddr_chars_must_be_sign_extended_bytes() {
        let at = 40; // first char of GOLDEN_V6's address
        for (bytes, ok) in [
            ([0xff, 0xff, 0xff, 0x80], true),
            ([0x00, 0x00, 0x00, 0x7f], true),
            ([0x00, 0x00, 0x00, 0x80], false), // 128: an unsigned char
            ([0x00, 0x00, 0x00, 0xfe], false),
            ([0xff, 0xff, 0xff, 0x7f], false), // -129
            ([0x00, 0x01, 0x00, 0x00], false),
        ] {
            let mut enc = GOLDEN_V6.to_vec();
            enc[at..at + 4].copy_from_slice(&bytes);
            let r = NetUserInfo::decode(&enc);
            if ok {
                assert!(r.is_ok(), "{bytes:02x?}: {r:?}");
            } else {
                assert!(
                    matches!(
                        r,
                        Err(DecodeError::InvalidValue {
                            field: "ipaddr",
                            ..
                        })
                    ),
                    "{bytes:02x?}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn encoder_limits() {
        let mut ui = golden_v4();
        ui.account = "a".repeat(MAX_USERINFO_STRING_BYTES);
        let enc = ui.encode().unwrap();
        assert_eq!(NetUserInfo::decode(&enc), Ok(ui.clone()));

        ui.account.push('b');
        assert_eq!(
            ui.encode(),
            Err(EncodeError::StringTooLong {
                field: "account",
                len: 1025,
                max: 1024
            })
        );
        // A decoder refuses the same length.
        let mut long = enc.clone();
        long[28..32].copy_from_slice(&1026u32.to_be_bytes()); // account_len
        long[32..36].copy_from_slice(&1025u32.to_be_bytes()); // account length
        assert!(matches!(
            NetUserInfo::decode(&long),
            Err(DecodeError::TooLong {
                field: "account",
                ..
            })
        ));

        let mut ui = golden_v4();
        ui.workstation = "a\0b".into();
        assert_eq!(
            ui.encode(),
            Err(EncodeError::EmbeddedNul {
                field: "workstation"
            })
        );
        for family in [FAMILY_INET, FAMILY_INET6_ILLUMOS] {
            let mut ui = golden_v4();
            ui.client_addr = ClientAddr::Other {
                family,
                bytes: [0; 16],
            };
            assert!(matches!(ui.encode(), Err(EncodeError::NonCanonical { .. })));
        }
        // encode_into leaves the buffer alone on error.
        let mut out = vec![1, 2, 3];
        assert!(ui.encode_into(&mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn largest_userinfo_fits_in_uilen() {
        let ui = NetUserInfo {
            domain: "d".repeat(MAX_USERINFO_STRING_BYTES),
            account: "a".repeat(MAX_USERINFO_STRING_BYTES),
            workstation: "w".repeat(MAX_USERINFO_STRING_BYTES),
            client_addr: ClientAddr::V6(Ipv6Addr::LOCALHOST),
            ..NetUserInfo::default()
        };
        assert_eq!(ui.encoded_len(), MAX_USERINFO_ENCODED_LEN);
        let msg = encode_open_message(&ui).unwrap();
        assert_eq!(msg.len(), PIPE_HEADER_LEN + MAX_USERINFO_ENCODED_LEN);
        assert_eq!(decode_open_message(&msg), Ok(ui));
    }

    #[test]
    fn open_message() {
        let ui = golden_v4();
        let msg = encode_open_message(&ui).unwrap();
        assert_eq!(&msg[..8], &[0x45, 0x50, 0x49, 0x50, 88, 0, 0, 0]);
        assert_eq!(&msg[8..], GOLDEN_V4);
        assert_eq!(decode_open_message(&msg), Ok(ui));

        for cut in 0..msg.len() {
            assert!(
                matches!(
                    decode_open_message(&msg[..cut]),
                    Err(DecodeError::UnexpectedEnd { .. })
                ),
                "cut {cut}"
            );
        }
        let mut long = msg.clone();
        long.push(0);
        assert_eq!(
            decode_open_message(&long),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        let mut bad = msg.clone();
        bad[0] = 0;
        assert!(matches!(
            decode_open_message(&bad),
            Err(DecodeError::InvalidValue { field: "magic", .. })
        ));
        let mut big = msg;
        big[4..8].copy_from_slice(&8193u32.to_le_bytes());
        assert!(matches!(
            decode_open_message(&big),
            Err(DecodeError::TooLong { field: "uilen", .. })
        ));
    }

    fn string_strategy() -> impl Strategy<Value = String> {
        prop_oneof!["[^\\x00]{0,40}", "[a-zA-Z0-9.-]{0,20}", Just(String::new()),]
    }

    fn addr_strategy() -> impl Strategy<Value = ClientAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| ClientAddr::V4(Ipv4Addr::from(o))),
            any::<[u8; 16]>().prop_map(|o| ClientAddr::V6(Ipv6Addr::from(o))),
            (any::<i32>(), any::<[u8; 16]>())
                .prop_filter("families 2 and 26 have their own variants", |(f, _)| {
                    *f != FAMILY_INET && *f != FAMILY_INET6_ILLUMOS
                })
                .prop_map(|(family, bytes)| ClientAddr::Other { family, bytes }),
        ]
    }

    prop_compose! {
        fn userinfo_strategy()(
            session_id: u64,
            domain in string_strategy(),
            account in string_strategy(),
            posix_uid: u32,
            workstation in string_strategy(),
            client_addr in addr_strategy(),
            native_os: i32,
            logon_time: i64,
            numopens: u32,
            flags: u32,
        ) -> NetUserInfo {
            NetUserInfo {
                session_id, domain, account, posix_uid, workstation,
                client_addr, native_os, logon_time, numopens, flags,
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(ui in userinfo_strategy()) {
            let enc = ui.encode().unwrap();
            prop_assert_eq!(enc.len(), ui.encoded_len());
            prop_assert_eq!(NetUserInfo::decode(&enc), Ok(ui.clone()));
            let msg = encode_open_message(&ui).unwrap();
            prop_assert_eq!(decode_open_message(&msg), Ok(ui));
        }

        #[test]
        fn matches_xdr_codec(ui in userinfo_strategy()) {
            prop_assert_eq!(ui.encode().unwrap(), reference(&ui));
        }

        #[test]
        fn truncations_refused(ui in userinfo_strategy(), frac in 0.0f64..1.0) {
            let enc = ui.encode().unwrap();
            let cut = ((enc.len() as f64) * frac) as usize;
            prop_assert!(NetUserInfo::decode(&enc[..cut.min(enc.len() - 1)]).is_err());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ui) = NetUserInfo::decode(&bytes) {
                // Whatever decodes re-encodes to the same bytes.
                prop_assert_eq!(ui.encode().unwrap(), bytes);
            }
        }
    }
}
