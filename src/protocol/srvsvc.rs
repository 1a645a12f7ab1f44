//! Two SRVSVC calls (MS-SRVS), NDR stubs only: enough to check a real RPC
//! server end to end through a pipe (tests, `bench --target samba-rpcd`).
//!
//! * `NetrServerGetInfo` (opnum 21) at level 101: the server's name,
//!   version, type and comment (MS-SRVS 3.1.4.17, 2.2.4.41).
//! * `NetrShareEnumAll` (opnum 15) at level 1: share names, types and
//!   comments (MS-SRVS 3.1.4.8, 2.2.4.23).
//!
//! Requests are encoded as Samba's `rpcclient` sends them, and the
//! responses too for a service that answers them
//! ([`encode_netr_server_get_info_101_response`],
//! [`encode_netr_share_enum_all_1_response`]); responses are
//! decoded with the bounds of `protocol/ndr.rs` (every count checked against
//! a maximum and the input left).

use super::error::{DecodeError, EncodeError};
use super::ndr::{NdrReader, NdrWriter};

/// `NetrShareEnumAll`.
pub const OPNUM_NETR_SHARE_ENUM_ALL: u16 = 15;
/// `NetrServerGetInfo`.
pub const OPNUM_NETR_SERVER_GET_INFO: u16 = 21;
/// Longest name or comment accepted, in UTF-16 units.
pub const MAX_SRVSVC_STRING_UNITS: usize = 1024;
/// Most shares accepted in one `NetrShareEnumAll` answer.
pub const MAX_SHARES: usize = 4096;

/// `SERVER_INFO_101`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServerInfo101 {
    /// Platform id (500 for NT).
    pub platform_id: u32,
    /// The server's NetBIOS name.
    pub server_name: Option<String>,
    /// Major version.
    pub version_major: u32,
    /// Minor version.
    pub version_minor: u32,
    /// `SV_TYPE_*` bits.
    pub server_type: u32,
    /// The server's comment (Samba: "Samba" and its version).
    pub comment: Option<String>,
}

/// `SHARE_INFO_1`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ShareInfo1 {
    /// The share's name.
    pub name: Option<String>,
    /// `STYPE_*` (0 disk, 3 IPC, with 0x80000000 for hidden ones).
    pub share_type: u32,
    /// The share's comment.
    pub comment: Option<String>,
}

fn server_unc(w: &mut NdrWriter, server_unc: Option<&str>) -> Result<(), EncodeError> {
    w.unique_ptr(server_unc.is_some());
    if let Some(unc) = server_unc {
        w.string_utf16("server_unc", unc, MAX_SRVSVC_STRING_UNITS)?;
    }
    Ok(())
}

fn opt_string(
    r: &mut NdrReader<'_>,
    present: bool,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    if present {
        r.string_utf16(field, MAX_SRVSVC_STRING_UNITS).map(Some)
    } else {
        Ok(None)
    }
}

fn finish(r: &NdrReader<'_>) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        count => Err(DecodeError::TrailingBytes { count }),
    }
}

/// The request stub of `NetrServerGetInfo(server_unc, level)`.
pub fn encode_netr_server_get_info(
    server_unc_name: Option<&str>,
    level: u32,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = NdrWriter::new(0);
    server_unc(&mut w, server_unc_name)?;
    w.u32(level);
    Ok(w.into_bytes())
}

/// The response stub of `NetrServerGetInfo` at level 101: the info (None
/// when the server sent a NULL pointer) and the `WERROR`.
pub fn decode_netr_server_get_info_101(
    stub: &[u8],
) -> Result<(Option<ServerInfo101>, u32), DecodeError> {
    let mut r = NdrReader::new(stub);
    let level = r.u32("info level")?;
    if level != 101 {
        return Err(DecodeError::InvalidValue {
            field: "info level",
            value: u64::from(level),
        });
    }
    let info = if r.unique_ptr("info101")? {
        let platform_id = r.u32("platform_id")?;
        let has_name = r.unique_ptr("server_name")?;
        let version_major = r.u32("version_major")?;
        let version_minor = r.u32("version_minor")?;
        let server_type = r.u32("server_type")?;
        let has_comment = r.unique_ptr("comment")?;
        let server_name = opt_string(&mut r, has_name, "server_name")?;
        let comment = opt_string(&mut r, has_comment, "comment")?;
        Some(ServerInfo101 {
            platform_id,
            server_name,
            version_major,
            version_minor,
            server_type,
            comment,
        })
    } else {
        None
    };
    let werror = r.u32("result")?;
    finish(&r)?;
    Ok((info, werror))
}

/// `WERR_INVALID_LEVEL`.
pub const WERR_INVALID_LEVEL: u32 = 124;

fn opt_utf16(
    w: &mut NdrWriter,
    field: &'static str,
    s: &Option<String>,
) -> Result<(), EncodeError> {
    if let Some(s) = s {
        w.string_utf16(field, s, MAX_SRVSVC_STRING_UNITS)?;
    }
    Ok(())
}

/// The response stub of `NetrServerGetInfo` at level 101 (`info` None: a
/// NULL info pointer, as sent with an error), what
/// [`decode_netr_server_get_info_101`] reads.
pub fn encode_netr_server_get_info_101_response(
    info: Option<&ServerInfo101>,
    werror: u32,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = NdrWriter::new(0);
    w.u32(101);
    w.unique_ptr(info.is_some());
    if let Some(i) = info {
        w.u32(i.platform_id);
        w.unique_ptr(i.server_name.is_some());
        w.u32(i.version_major);
        w.u32(i.version_minor);
        w.u32(i.server_type);
        w.unique_ptr(i.comment.is_some());
        opt_utf16(&mut w, "server_name", &i.server_name)?;
        opt_utf16(&mut w, "comment", &i.comment)?;
    }
    w.u32(werror);
    Ok(w.into_bytes())
}

/// The response stub of `NetrShareEnumAll` at level 1 listing `shares`
/// (`totalentries` = their count, no resume handle), what
/// [`decode_netr_share_enum_all_1`] reads.
pub fn encode_netr_share_enum_all_1_response(
    shares: &[ShareInfo1],
    werror: u32,
) -> Result<Vec<u8>, EncodeError> {
    if shares.len() > MAX_SHARES {
        return Err(EncodeError::MessageTooLong {
            len: shares.len(),
            max: MAX_SHARES,
        });
    }
    let count = shares.len() as u32;
    let mut w = NdrWriter::new(0);
    w.u32(1);
    w.u32(1);
    w.unique_ptr(true); // ctr1
    w.u32(count);
    w.unique_ptr(true); // ctr1.array
    w.u32(count); // conformance
    for sh in shares {
        w.unique_ptr(sh.name.is_some());
        w.u32(sh.share_type);
        w.unique_ptr(sh.comment.is_some());
    }
    for sh in shares {
        opt_utf16(&mut w, "share.name", &sh.name)?;
        opt_utf16(&mut w, "share.comment", &sh.comment)?;
    }
    w.u32(count); // totalentries
    w.unique_ptr(false); // resume_handle
    w.u32(werror);
    Ok(w.into_bytes())
}

/// The request stub of `NetrShareEnumAll(server_unc, level 1, max_buffer
/// 0xFFFFFFFF, resume_handle 0)`.
pub fn encode_netr_share_enum_all_1(server_unc_name: Option<&str>) -> Result<Vec<u8>, EncodeError> {
    let mut w = NdrWriter::new(0);
    server_unc(&mut w, server_unc_name)?;
    // info_ctr: level, the union's discriminant, a pointer to an empty ctr1.
    w.u32(1);
    w.u32(1);
    w.unique_ptr(true);
    w.u32(0); // ctr1.count
    w.unique_ptr(false); // ctr1.array
    w.u32(0xFFFF_FFFF); // max_buffer
    w.unique_ptr(true); // resume_handle
    w.u32(0);
    Ok(w.into_bytes())
}

/// The answer of `NetrShareEnumAll` at level 1.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ShareEnum1 {
    /// The shares.
    pub shares: Vec<ShareInfo1>,
    /// `totalentries`.
    pub total_entries: u32,
    /// The resume handle, if sent.
    pub resume_handle: Option<u32>,
    /// The `WERROR`.
    pub werror: u32,
}

/// The response stub of `NetrShareEnumAll` at level 1.
pub fn decode_netr_share_enum_all_1(stub: &[u8]) -> Result<ShareEnum1, DecodeError> {
    let mut r = NdrReader::new(stub);
    let level = r.u32("info_ctr.level")?;
    let switch = r.u32("info_ctr.ctr")?;
    if level != 1 || switch != 1 {
        return Err(DecodeError::InvalidValue {
            field: "info_ctr.level",
            value: u64::from(level),
        });
    }
    let mut shares = Vec::new();
    if r.unique_ptr("ctr1")? {
        let count = r.u32("ctr1.count")?;
        if r.unique_ptr("ctr1.array")? {
            // Each SHARE_INFO_1 is at least 12 bytes of scalars.
            let n = r.count("ctr1.array", MAX_SHARES, 12)?;
            if n as u64 != u64::from(count) {
                return Err(DecodeError::LengthMismatch {
                    field: "ctr1.array",
                    declared: n as u64,
                    expected: u64::from(count),
                });
            }
            let mut present = Vec::with_capacity(n);
            for _ in 0..n {
                let has_name = r.unique_ptr("share.name")?;
                let share_type = r.u32("share.type")?;
                let has_comment = r.unique_ptr("share.comment")?;
                present.push((has_name, share_type, has_comment));
            }
            for (has_name, share_type, has_comment) in present {
                let name = opt_string(&mut r, has_name, "share.name")?;
                let comment = opt_string(&mut r, has_comment, "share.comment")?;
                shares.push(ShareInfo1 {
                    name,
                    share_type,
                    comment,
                });
            }
        } else if count != 0 {
            return Err(DecodeError::LengthMismatch {
                field: "ctr1.count",
                declared: u64::from(count),
                expected: 0,
            });
        }
    }
    let total_entries = r.u32("totalentries")?;
    let resume_handle = if r.unique_ptr("resume_handle")? {
        Some(r.u32("resume_handle")?)
    } else {
        None
    };
    let werror = r.u32("result")?;
    finish(&r)?;
    Ok(ShareEnum1 {
        shares,
        total_entries,
        resume_handle,
        werror,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_info_request_layout() {
        let stub = encode_netr_server_get_info(Some("\\\\S"), 101).unwrap();
        let mut want = vec![0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
        want.extend_from_slice(&[b'\\', 0, b'\\', 0, b'S', 0, 0, 0]);
        want.extend_from_slice(&101u32.to_le_bytes());
        assert_eq!(stub, want);
    }

    fn info101_response(name: &str, comment: &str) -> Vec<u8> {
        let mut w = NdrWriter::new(0);
        w.u32(101);
        w.unique_ptr(true);
        w.u32(500);
        w.unique_ptr(true);
        w.u32(6);
        w.u32(1);
        w.u32(0x9a03);
        w.unique_ptr(true);
        w.string_utf16("n", name, 100).unwrap();
        w.string_utf16("c", comment, 100).unwrap();
        w.u32(0);
        w.into_bytes()
    }

    #[test]
    fn get_info_response_decodes_and_refuses_damage() {
        let stub = info101_response("TESTSRV", "Samba 4");
        let (info, werr) = decode_netr_server_get_info_101(&stub).unwrap();
        let info = info.unwrap();
        assert_eq!(info.server_name.as_deref(), Some("TESTSRV"));
        assert_eq!(info.comment.as_deref(), Some("Samba 4"));
        assert_eq!((info.platform_id, info.version_major, werr), (500, 6, 0));
        for cut in 0..stub.len() {
            assert!(decode_netr_server_get_info_101(&stub[..cut]).is_err());
        }
        let mut long = stub.clone();
        long.push(0);
        assert!(decode_netr_server_get_info_101(&long).is_err());
    }

    #[test]
    fn encoded_responses_decode() {
        let info = ServerInfo101 {
            platform_id: 500,
            server_name: Some("OPIPE".into()),
            version_major: 10,
            version_minor: 0,
            server_type: 0x9003,
            comment: Some("opipe".into()),
        };
        let stub = encode_netr_server_get_info_101_response(Some(&info), 0).unwrap();
        assert_eq!(stub, info101_with(&info));
        assert_eq!(
            decode_netr_server_get_info_101(&stub).unwrap(),
            (Some(info), 0)
        );
        let none = encode_netr_server_get_info_101_response(None, WERR_INVALID_LEVEL).unwrap();
        assert_eq!(
            decode_netr_server_get_info_101(&none).unwrap(),
            (None, WERR_INVALID_LEVEL)
        );
        let shares = vec![
            ShareInfo1 {
                name: Some("tmp".into()),
                share_type: 0,
                comment: Some(String::new()),
            },
            ShareInfo1 {
                name: Some("IPC$".into()),
                share_type: 0x8000_0003,
                comment: None,
            },
        ];
        let stub = encode_netr_share_enum_all_1_response(&shares, 0).unwrap();
        let e = decode_netr_share_enum_all_1(&stub).unwrap();
        assert_eq!(e.shares, shares);
        assert_eq!((e.total_entries, e.resume_handle, e.werror), (2, None, 0));
    }

    /// The level-101 answer written field by field, as the test above
    /// does for a fixed one.
    fn info101_with(i: &ServerInfo101) -> Vec<u8> {
        let mut w = NdrWriter::new(0);
        w.u32(101);
        w.unique_ptr(true);
        w.u32(i.platform_id);
        w.unique_ptr(true);
        w.u32(i.version_major);
        w.u32(i.version_minor);
        w.u32(i.server_type);
        w.unique_ptr(true);
        w.string_utf16("n", i.server_name.as_deref().unwrap(), 100)
            .unwrap();
        w.string_utf16("c", i.comment.as_deref().unwrap(), 100)
            .unwrap();
        w.u32(0);
        w.into_bytes()
    }

    #[test]
    fn share_enum_response_decodes() {
        let mut w = NdrWriter::new(0);
        w.u32(1);
        w.u32(1);
        w.unique_ptr(true);
        w.u32(2);
        w.unique_ptr(true);
        w.u32(2);
        for _ in 0..2 {
            w.unique_ptr(true);
            w.u32(0);
            w.unique_ptr(true);
        }
        for (n, c) in [("tmp", ""), ("IPC$", "IPC Service")] {
            w.string_utf16("n", n, 100).unwrap();
            w.string_utf16("c", c, 100).unwrap();
        }
        w.u32(2);
        w.unique_ptr(false);
        w.u32(0);
        let stub = w.into_bytes();
        let e = decode_netr_share_enum_all_1(&stub).unwrap();
        let names: Vec<_> = e.shares.iter().filter_map(|s| s.name.as_deref()).collect();
        assert_eq!(names, ["tmp", "IPC$"]);
        assert_eq!((e.total_entries, e.resume_handle, e.werror), (2, None, 0));
        for cut in 0..stub.len() {
            assert!(decode_netr_share_enum_all_1(&stub[..cut]).is_err());
        }
    }
}
