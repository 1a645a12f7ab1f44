//! Connection-oriented DCE/RPC framing (C706 chapter 12, with the
//! MS-RPCE 2.2.2 extensions): what crosses a pipe after the open
//! (PROTOCOL.md section 3).
//!
//! This is only the framing a pipe transport and a simple service need:
//! the 16-byte common header and `frag_length` framing of a byte stream
//! ([`pdu_len`], [`PduReassembler`]), request and response fragments, fault
//! PDUs, and bind / bind_ack (also alter_context / alter_context_resp).
//! No NDR, no authentication (verifiers are skipped over, never checked).
//!
//! Integers follow the data representation label `drep` of each PDU: the
//! high nibble of `drep[0]` is 1 for little-endian, 0 for big-endian
//! (C706 14.1). Decoders accept both; encoders here always write
//! little-endian ([`DREP_LE`]), the order of every Windows and illumos peer.
//!
//! UUIDs are kept as 16 bytes in the layout of a little-endian PDU (the
//! Microsoft GUID layout: first three fields little-endian, last eight
//! bytes as they are); decoders convert the UUIDs of a big-endian PDU.
//!
//! One file per part: `syntax.rs` (syntax identifiers and UUIDs),
//! `header.rs` (the common header, PDU types and flags, a PDU's body read
//! in its byte order), `reassembly.rs` (a byte stream cut into PDUs),
//! `call.rs` (request, response and fault PDUs), `bind.rs` (bind and
//! bind_ack, alter_context and its answer).

mod bind;
mod call;
mod header;
mod reassembly;
mod syntax;

pub use bind::{
    decode_bind, decode_bind_ack, encode_bind, encode_bind_ack, Bind, BindAck, ContextResult,
    PresentationContext, DEFAULT_ASSOC_GROUP_ID, MAX_SEC_ADDR_BYTES,
    REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED, REASON_NOT_SPECIFIED,
    REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED, RESULT_ACCEPTANCE, RESULT_PROVIDER_REJECTION,
    RESULT_USER_REJECTION,
};
pub use call::{
    decode_fault, decode_request, decode_response, encode_fault, encode_request,
    encode_request_into, encode_response, encode_response_filled, encoded_call_len, Fault, Request,
    Response, NCA_S_OP_RNG_ERROR, NCA_S_PROTO_ERROR, NCA_S_UNK_IF,
};
pub use header::{
    CommonHeader, COMMON_HEADER_LEN, DEFAULT_MAX_FRAG, DREP_LE, FAULT_LEN, MIN_MAX_FRAG,
    MUST_RECV_FRAG_SIZE, PFC_FIRST_FRAG, PFC_LAST_FRAG, PFC_OBJECT_UUID, PTYPE_ALTER_CONTEXT,
    PTYPE_ALTER_CONTEXT_RESP, PTYPE_BIND, PTYPE_BIND_ACK, PTYPE_BIND_NAK, PTYPE_FAULT,
    PTYPE_REQUEST, PTYPE_RESPONSE, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
};
pub use reassembly::{pdu_len, PduReassembler};
pub use syntax::{uuid, SyntaxId, NDR_SYNTAX, SRVSVC_SYNTAX};

#[cfg(test)]
mod tests {
    use super::header::Order;
    use super::*;
    use crate::protocol::error::DecodeError;
    use proptest::prelude::*;

    /// NDR64, for multi-context binds.
    const NDR64: SyntaxId = SyntaxId {
        uuid: uuid(
            0x7171_0533,
            0xbeba,
            0x4937,
            [0x83, 0x19, 0xb5, 0xdb, 0xef, 0x9c, 0xcc, 0x36],
        ),
        version: 1,
    };

    #[test]
    fn uuid_layout() {
        assert_eq!(
            NDR_SYNTAX.uuid,
            [
                0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10,
                0x48, 0x60
            ]
        );
    }

    #[test]
    fn header_little_endian() {
        let bytes = [
            5, 0, 0, 3, 0x10, 0, 0, 0, 0x18, 0x01, 0, 0, 0x78, 0x56, 0x34, 0x12,
        ];
        let h = CommonHeader::decode(&bytes).unwrap();
        assert_eq!(
            h,
            CommonHeader {
                rpc_vers: 5,
                rpc_vers_minor: 0,
                ptype: PTYPE_REQUEST,
                pfc_flags: 3,
                drep: DREP_LE,
                frag_length: 0x118,
                auth_length: 0,
                call_id: 0x1234_5678,
            }
        );
        assert!(h.is_little_endian());
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn header_big_endian() {
        let bytes = [
            5, 0, 2, 3, 0x00, 0, 0, 0, 0x01, 0x18, 0, 0x10, 0x12, 0x34, 0x56, 0x78,
        ];
        let h = CommonHeader::decode(&bytes).unwrap();
        assert_eq!(h.frag_length, 0x118);
        assert_eq!(h.auth_length, 0x10);
        assert_eq!(h.call_id, 0x1234_5678);
        assert!(!h.is_little_endian());
        assert_eq!(h.encode(), bytes);
    }

    #[test]
    fn header_errors() {
        let good = CommonHeader::new(PTYPE_REQUEST, 3, 24, 1).encode();
        for cut in 0..COMMON_HEADER_LEN {
            assert!(matches!(
                CommonHeader::decode(&good[..cut]),
                Err(DecodeError::UnexpectedEnd { .. })
            ));
        }
        let mut v4 = good;
        v4[0] = 4;
        assert!(matches!(
            CommonHeader::decode(&v4),
            Err(DecodeError::InvalidValue {
                field: "rpc_vers",
                ..
            })
        ));
        let mut drep = good;
        drep[4] = 0x20;
        assert!(matches!(
            CommonHeader::decode(&drep),
            Err(DecodeError::InvalidValue { field: "drep", .. })
        ));
    }

    #[test]
    fn pdu_len_limits() {
        let at = |ptype: u8, len: u16| CommonHeader::new(ptype, 3, len, 1).encode();
        assert_eq!(pdu_len(&[], 4280), Ok(None));
        assert_eq!(pdu_len(&at(PTYPE_REQUEST, 24)[..15], 4280), Ok(None));
        assert_eq!(pdu_len(&at(PTYPE_REQUEST, 24), 4280), Ok(Some(24)));
        assert_eq!(pdu_len(&at(PTYPE_REQUEST, 4280), 4280), Ok(Some(4280)));
        assert_eq!(
            pdu_len(&at(PTYPE_REQUEST, 4281), 4280),
            Err(DecodeError::TooLong {
                field: "frag_length",
                len: 4281,
                max: 4280
            })
        );
        assert!(matches!(
            pdu_len(&at(PTYPE_REQUEST, 23), 4280),
            Err(DecodeError::TooShort { min: 24, .. })
        ));
        assert!(matches!(
            pdu_len(&at(PTYPE_RESPONSE, 16), 4280),
            Err(DecodeError::TooShort { min: 24, .. })
        ));
        assert_eq!(pdu_len(&at(PTYPE_BIND, 16), 4280), Ok(Some(16)));
        assert!(matches!(
            pdu_len(&at(PTYPE_BIND, 15), 4280),
            Err(DecodeError::TooShort { min: 16, .. })
        ));
        assert!(matches!(
            pdu_len(&at(PTYPE_BIND, 0), 4280),
            Err(DecodeError::TooShort { .. })
        ));
        assert!(matches!(
            pdu_len(&at(PTYPE_BIND, u16::MAX), 4280),
            Err(DecodeError::TooLong { .. })
        ));
    }

    fn sample_stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut pdus = vec![encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into())];
        for (i, len) in [0usize, 1, 100, 5000].into_iter().enumerate() {
            let stub: Vec<u8> = (0..len).map(|b| b as u8).collect();
            let frags = encode_request(i as u32 + 2, 0, 15, &stub, 1000);
            let mut rest = &frags[..];
            while !rest.is_empty() {
                let n = pdu_len(rest, 1000).unwrap().unwrap();
                pdus.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
        }
        (pdus.concat(), pdus)
    }

    fn drain(r: &mut PduReassembler, got: &mut Vec<Vec<u8>>) {
        while let Some(p) = r.next_pdu() {
            got.push(p.unwrap());
        }
    }

    #[test]
    fn reassembler_split_at_every_byte() {
        let (stream, pdus) = sample_stream();
        for split in 0..=stream.len() {
            let mut r = PduReassembler::new(1000);
            let mut got = Vec::new();
            r.push(&stream[..split]);
            drain(&mut r, &mut got);
            assert!(r.buffered() < 1000);
            r.push(&stream[split..]);
            drain(&mut r, &mut got);
            assert_eq!(got, pdus, "split at {split}");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn reassembler_byte_by_byte() {
        let (stream, pdus) = sample_stream();
        let mut r = PduReassembler::new(1000);
        let mut got = Vec::new();
        for b in &stream {
            r.push(std::slice::from_ref(b));
            drain(&mut r, &mut got);
        }
        assert_eq!(got, pdus);
    }

    #[test]
    fn reassembler_hostile_frag_length() {
        // frag_length 0xFFFF against max 4280: refused from the header
        // alone; nothing behind it is kept.
        let mut r = PduReassembler::new(4280);
        let mut hostile = CommonHeader::new(PTYPE_REQUEST, 3, u16::MAX, 1)
            .encode()
            .to_vec();
        hostile.extend_from_slice(&[0xAA; 100]);
        r.push(&hostile);
        assert_eq!(r.buffered(), 0);
        assert!(matches!(
            r.next_pdu(),
            Some(Err(DecodeError::TooLong { .. }))
        ));
        assert!(r.next_pdu().is_none());
        r.push(&[0; 10_000]);
        assert_eq!(r.buffered(), 0);
        assert!(r.next_pdu().is_none());
        assert!(r.error().is_some());

        // A valid PDU, then a too-short frag_length.
        let mut r = PduReassembler::new(4280);
        let mut s = encode_request(1, 0, 0, b"abc", 4280);
        s.extend_from_slice(&CommonHeader::new(PTYPE_REQUEST, 3, 8, 2).encode());
        r.push(&s);
        assert!(matches!(r.next_pdu(), Some(Ok(_))));
        assert!(matches!(
            r.next_pdu(),
            Some(Err(DecodeError::TooShort { .. }))
        ));
        assert_eq!(r.buffered(), 0);
        assert!(r.next_pdu().is_none());

        // A bad header behind a PDU found by next_pdu.
        let mut r = PduReassembler::new(4280);
        r.push(&encode_request(1, 0, 0, b"abc", 4280));
        let mut bad = CommonHeader::new(PTYPE_REQUEST, 3, 24, 2).encode();
        bad[0] = 9;
        r.push(&bad[..8]);
        assert!(matches!(r.next_pdu(), Some(Ok(_))));
        r.push(&bad[8..]);
        assert!(matches!(
            r.next_pdu(),
            Some(Err(DecodeError::InvalidValue { .. }))
        ));
        assert!(r.next_pdu().is_none());
    }

    #[test]
    fn reassembler_many_pdus_in_one_push() {
        let one = encode_fault(1, 0, NCA_S_PROTO_ERROR);
        let stream = one.repeat(10_000);
        let mut r = PduReassembler::new(4280);
        r.push(&stream);
        let mut n = 0;
        while let Some(p) = r.next_pdu() {
            let p = p.unwrap();
            assert_eq!(p, one);
            assert_eq!(p.capacity(), one.len());
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn reassembler_bounded_while_waiting() {
        // A valid header announcing max_frag: bytes are kept only up to it.
        let mut r = PduReassembler::new(4280);
        let mut pdu = CommonHeader::new(PTYPE_REQUEST, 3, 4280, 1)
            .encode()
            .to_vec();
        pdu.resize(4280, 0);
        for chunk in pdu.chunks(1000) {
            assert!(r.buffered() <= 4280);
            r.push(chunk);
        }
        assert_eq!(r.next_pdu(), Some(Ok(pdu)));
        assert_eq!(r.buffered(), 0);
    }

    fn split_frags(frags: &[u8], max_frag: u16) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = frags;
        while !rest.is_empty() {
            let n = pdu_len(rest, max_frag).unwrap().unwrap();
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn response_fragmentation() {
        let stub: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let frags = encode_response(9, 1, &stub, DEFAULT_MAX_FRAG);
        assert_eq!(frags.len(), encoded_call_len(stub.len(), DEFAULT_MAX_FRAG));
        let parts = split_frags(&frags, DEFAULT_MAX_FRAG);
        assert_eq!(parts.len(), 3); // 4256 + 4256 + 1488
        let mut joined = Vec::new();
        let mut total = 0;
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 4280);
            total += p.len();
            let r = decode_response(p).unwrap();
            assert_eq!(r.header.call_id, 9);
            assert_eq!(r.context_id, 1);
            assert_eq!(r.header.ptype, PTYPE_RESPONSE);
            let first = r.header.pfc_flags & PFC_FIRST_FRAG != 0;
            let last = r.header.pfc_flags & PFC_LAST_FRAG != 0;
            assert_eq!(first, i == 0);
            assert_eq!(last, i == parts.len() - 1);
            assert_eq!(r.alloc_hint as usize, stub.len() - joined.len());
            if !last {
                assert_eq!(p.len(), 4280);
            }
            joined.extend_from_slice(r.stub);
        }
        assert_eq!(total, frags.len());
        assert_eq!(joined, stub);
        assert_eq!(
            encode_response_filled(9, 1, 10_000, 0xAB, 4280).len(),
            frags.len()
        );
    }

    #[test]
    fn single_fragment_and_empty() {
        let f = encode_response(1, 0, b"", 4280);
        assert_eq!(f.len(), 24);
        let r = decode_response(&f).unwrap();
        assert_eq!(r.header.pfc_flags, PFC_FIRST_FRAG | PFC_LAST_FRAG);
        assert_eq!(r.alloc_hint, 0);
        assert!(r.stub.is_empty());

        let stub = vec![1u8; 4256];
        let f = encode_request(2, 3, 4, &stub, 4280);
        assert_eq!(f.len(), 4280);
        let q = decode_request(&f).unwrap();
        assert_eq!((q.header.pfc_flags, q.context_id, q.opnum), (3, 3, 4));
        assert_eq!(q.stub, &stub[..]);
        assert_eq!(
            split_frags(&encode_request(2, 3, 4, &[1; 4257], 4280), 4280).len(),
            2
        );

        // Into a used buffer: the same bytes, the buffer's allocation kept.
        let mut buf = Vec::with_capacity(8192);
        buf.extend_from_slice(b"old contents");
        let at = buf.as_ptr();
        encode_request_into(&mut buf, 2, 3, 4, &[1; 4257], 4280);
        assert_eq!(buf, encode_request(2, 3, 4, &[1; 4257], 4280));
        assert_eq!(buf.as_ptr(), at);

        // A tiny max_frag is raised to MIN_MAX_FRAG: 8 stub bytes each.
        let f = encode_request(1, 0, 0, &[5; 20], 0);
        let parts = split_frags(&f, MIN_MAX_FRAG);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [32, 32, 28]
        );
    }

    #[test]
    fn request_big_endian_and_object() {
        // A hand-built big-endian request with an object UUID.
        let mut pdu = vec![
            5,
            0,
            PTYPE_REQUEST,
            0x83,
            0,
            0,
            0,
            0,
            0,
            44,
            0,
            0,
            0,
            0,
            0,
            7,
        ];
        pdu.extend_from_slice(&[0, 0, 0, 4, 0, 1, 0, 2]); // alloc_hint, ctx, opnum
        pdu.extend_from_slice(&[0x8a, 0x88, 0x5d, 0x04, 0x1c, 0xeb, 0x11, 0xc9]);
        pdu.extend_from_slice(&[0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60]);
        pdu.extend_from_slice(b"stub");
        let q = decode_request(&pdu).unwrap();
        assert_eq!(q.header.call_id, 7);
        assert_eq!((q.alloc_hint, q.context_id, q.opnum), (4, 1, 2));
        assert_eq!(q.object, Some(NDR_SYNTAX.uuid));
        assert_eq!(q.stub, b"stub");
        for cut in 0..pdu.len() {
            assert!(decode_request(&pdu[..cut]).is_err());
        }
        pdu.push(0);
        assert_eq!(
            decode_request(&pdu),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn request_with_auth_verifier() {
        // stub "abcd", 4 bytes auth padding, sec_trailer (pad length 4), 8 bytes credentials.
        let mut pdu = encode_request(1, 0, 0, b"abcd", 4280);
        pdu.extend_from_slice(&[0; 4]);
        pdu.extend_from_slice(&[10, 2, 4, 0, 0, 0, 0, 0]);
        pdu.extend_from_slice(&[0xCC; 8]);
        let len = pdu.len() as u16;
        pdu[8..10].copy_from_slice(&len.to_le_bytes());
        pdu[10..12].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(decode_request(&pdu).unwrap().stub, b"abcd");
        // auth_length larger than the body.
        pdu[10..12].copy_from_slice(&100u16.to_le_bytes());
        assert!(matches!(
            decode_request(&pdu),
            Err(DecodeError::TooLong {
                field: "auth_length",
                ..
            })
        ));
        // auth_pad_length larger than the stub.
        pdu[10..12].copy_from_slice(&8u16.to_le_bytes());
        pdu[24 + 8 + 2] = 200;
        assert!(matches!(
            decode_request(&pdu),
            Err(DecodeError::TooLong {
                field: "auth_pad_length",
                ..
            })
        ));
    }

    #[test]
    fn response_truncation_and_trailing() {
        let f = encode_response(3, 0, b"0123456789", 4280);
        for cut in 0..f.len() {
            assert!(decode_response(&f[..cut]).is_err(), "cut {cut}");
        }
        let mut long = f.clone();
        long.push(0);
        assert_eq!(
            decode_response(&long),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // A request is not a response, and the other way round.
        assert!(matches!(
            decode_request(&f),
            Err(DecodeError::InvalidValue { field: "ptype", .. })
        ));
        assert!(matches!(
            decode_response(&encode_request(1, 0, 0, b"", 4280)),
            Err(DecodeError::InvalidValue { field: "ptype", .. })
        ));
    }

    #[test]
    fn fault() {
        let f = encode_fault(5, 1, NCA_S_OP_RNG_ERROR);
        assert_eq!(f.len(), FAULT_LEN);
        assert_eq!(pdu_len(&f, 4280), Ok(Some(32)));
        let d = decode_fault(&f).unwrap();
        assert_eq!(
            (d.header.call_id, d.context_id, d.status),
            (5, 1, NCA_S_OP_RNG_ERROR)
        );
        assert!(decode_fault(&f[..28]).is_err());
    }

    #[test]
    fn bind_to_bind_ack() {
        let bind = encode_bind(42, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
        assert_eq!(pdu_len(&bind, 4280), Ok(Some(bind.len())));
        let b = decode_bind(&bind).unwrap();
        assert_eq!(b.header.call_id, 42);
        assert_eq!(
            b.contexts,
            [PresentationContext {
                context_id: 0,
                abstract_syntax: SRVSVC_SYNTAX,
                transfer_syntaxes: vec![NDR_SYNTAX],
            }]
        );

        let ack = encode_bind_ack(&bind, "\\PIPE\\srvsvc", DEFAULT_MAX_FRAG).unwrap();
        assert_eq!(pdu_len(&ack, 4280), Ok(Some(ack.len())));
        // 24 fixed + 2 length + 13 address + 1 padding + 4 + 24 result.
        assert_eq!(ack.len(), 68);
        let a = decode_bind_ack(&ack).unwrap();
        assert_eq!(a.header.ptype, PTYPE_BIND_ACK);
        assert_eq!(a.header.call_id, 42);
        assert_eq!(a.header.pfc_flags, PFC_FIRST_FRAG | PFC_LAST_FRAG);
        assert_eq!((a.max_xmit_frag, a.max_recv_frag), (4280, 4280));
        assert_eq!(a.assoc_group_id, DEFAULT_ASSOC_GROUP_ID);
        assert_eq!(a.sec_addr, "\\PIPE\\srvsvc");
        assert_eq!(
            a.results,
            [ContextResult {
                result: RESULT_ACCEPTANCE,
                reason: 0,
                transfer_syntax: NDR_SYNTAX
            }]
        );
        for cut in 0..ack.len() {
            assert!(decode_bind_ack(&ack[..cut]).is_err(), "cut {cut}");
        }
        for cut in 0..bind.len() {
            assert!(decode_bind(&bind[..cut]).is_err(), "cut {cut}");
            assert!(
                encode_bind_ack(&bind[..cut], "x", 4280).is_err(),
                "cut {cut}"
            );
        }
    }

    /// Builds a bind by hand in either byte order with several contexts.
    fn raw_bind(
        big: bool,
        call_id: u32,
        contexts: &[(u16, SyntaxId, &[SyntaxId])],
        max_frag: u16,
    ) -> Vec<u8> {
        let order = if big { Order::Big } else { Order::Little };
        let syntax = |out: &mut Vec<u8>, s: &SyntaxId| {
            let mut u = s.uuid;
            if big {
                u[0..4].reverse();
                u[4..6].reverse();
                u[6..8].reverse();
            }
            out.extend_from_slice(&u);
            out.extend_from_slice(&order.u32_bytes(s.version));
        };
        let mut body = Vec::new();
        body.extend_from_slice(&order.u16_bytes(max_frag));
        body.extend_from_slice(&order.u16_bytes(max_frag));
        body.extend_from_slice(&order.u32_bytes(0x99));
        body.extend_from_slice(&[contexts.len() as u8, 0, 0, 0]);
        for (id, abs, ts) in contexts {
            body.extend_from_slice(&order.u16_bytes(*id));
            body.extend_from_slice(&[ts.len() as u8, 0]);
            syntax(&mut body, abs);
            for t in *ts {
                syntax(&mut body, t);
            }
        }
        let mut h = CommonHeader::new(PTYPE_BIND, 3, (16 + body.len()) as u16, call_id);
        if big {
            h.drep = [0, 0, 0, 0];
        }
        let mut out = h.encode().to_vec();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn bind_ack_rejects_other_contexts() {
        for big in [false, true] {
            let bind = raw_bind(
                big,
                7,
                &[
                    (0, SRVSVC_SYNTAX, &[NDR_SYNTAX, NDR64]),
                    (1, SRVSVC_SYNTAX, &[NDR64]),
                    (2, SRVSVC_SYNTAX, &[]),
                ],
                2000,
            );
            let b = decode_bind(&bind).unwrap();
            assert_eq!(b.contexts[0].transfer_syntaxes, [NDR_SYNTAX, NDR64]);
            assert_eq!(b.contexts[1].context_id, 1);
            assert_eq!(b.assoc_group_id, 0x99);
            let ack = encode_bind_ack(&bind, "\\PIPE\\lsarpc", 4280).unwrap();
            let a = decode_bind_ack(&ack).unwrap();
            assert_eq!(a.header.call_id, 7);
            assert_eq!(a.assoc_group_id, 0x99);
            assert_eq!((a.max_xmit_frag, a.max_recv_frag), (2000, 2000));
            let rejected = ContextResult {
                result: RESULT_PROVIDER_REJECTION,
                reason: REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED,
                transfer_syntax: SyntaxId::default(),
            };
            assert_eq!(
                a.results,
                [
                    ContextResult {
                        result: 0,
                        reason: 0,
                        transfer_syntax: NDR_SYNTAX
                    },
                    rejected,
                    rejected
                ]
            );
        }
        // A first context without transfer syntaxes is rejected too.
        let bind = raw_bind(false, 1, &[(0, SRVSVC_SYNTAX, &[])], 4280);
        let a = decode_bind_ack(&encode_bind_ack(&bind, "x", 4280).unwrap()).unwrap();
        assert_eq!(a.results[0].result, RESULT_PROVIDER_REJECTION);
        // No context at all: an error.
        let bind = raw_bind(false, 1, &[], 4280);
        assert!(matches!(
            encode_bind_ack(&bind, "x", 4280),
            Err(DecodeError::InvalidValue {
                field: "n_context_elem",
                ..
            })
        ));
    }

    #[test]
    fn bind_ack_negotiation_and_limits() {
        // Tiny offers are raised to MUST_RECV_FRAG_SIZE; big ones capped.
        let small = raw_bind(false, 1, &[(0, SRVSVC_SYNTAX, &[NDR_SYNTAX])], 100);
        let a = decode_bind_ack(&encode_bind_ack(&small, "x", 4280).unwrap()).unwrap();
        assert_eq!(a.max_xmit_frag, MUST_RECV_FRAG_SIZE);
        let big = raw_bind(false, 1, &[(0, SRVSVC_SYNTAX, &[NDR_SYNTAX])], 65535);
        let a = decode_bind_ack(&encode_bind_ack(&big, "x", 4280).unwrap()).unwrap();
        assert_eq!(a.max_xmit_frag, 4280);
        let a = decode_bind_ack(&encode_bind_ack(&big, "x", 1000).unwrap()).unwrap();
        assert_eq!(a.max_xmit_frag, 1000);

        // A bind longer than max_frag.
        assert!(matches!(
            encode_bind_ack(&big, "x", 50),
            Err(DecodeError::TooLong { .. })
        ));
        // sec_addr limits.
        assert!(matches!(
            encode_bind_ack(&big, "a\0b", 4280),
            Err(DecodeError::EmbeddedNul { .. })
        ));
        assert!(encode_bind_ack(&big, &"s".repeat(MAX_SEC_ADDR_BYTES - 1), 4280).is_ok());
        assert!(matches!(
            encode_bind_ack(&big, &"s".repeat(MAX_SEC_ADDR_BYTES), 4280),
            Err(DecodeError::TooLong {
                field: "sec_addr",
                ..
            })
        ));
        // Empty sec_addr: length 0, no NUL.
        let a = decode_bind_ack(&encode_bind_ack(&big, "", 4280).unwrap()).unwrap();
        assert_eq!(a.sec_addr, "");
        // Not a bind.
        let req = encode_request(1, 0, 0, b"", 4280);
        assert!(matches!(
            encode_bind_ack(&req, "x", 4280),
            Err(DecodeError::InvalidValue { field: "ptype", .. })
        ));
        // Trailing bytes inside frag_length.
        let mut t = big.clone();
        t.push(0);
        let len = t.len() as u16;
        t[8..10].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            decode_bind(&t),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        // A transfer syntax count larger than the PDU.
        let mut c = big.clone();
        c[16 + 8 + 4 + 2] = 200;
        assert!(matches!(
            decode_bind(&c),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }

    #[test]
    fn alter_context() {
        let mut bind = encode_bind(3, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
        bind[2] = PTYPE_ALTER_CONTEXT;
        let ack = encode_bind_ack(&bind, "\\PIPE\\srvsvc", 4280).unwrap();
        let a = decode_bind_ack(&ack).unwrap();
        assert_eq!(a.header.ptype, PTYPE_ALTER_CONTEXT_RESP);
        assert_eq!(a.sec_addr, "");
        assert_eq!(a.results[0].transfer_syntax, NDR_SYNTAX);
    }

    #[test]
    fn bind_ack_sec_addr_checks() {
        let bind = encode_bind(1, SRVSVC_SYNTAX.into(), NDR_SYNTAX.into());
        let ack = encode_bind_ack(&bind, "ab", 4280).unwrap();
        // sec_addr "ab\0" at offset 26..29.
        let mut no_nul = ack.clone();
        no_nul[28] = b'c';
        assert!(matches!(
            decode_bind_ack(&no_nul),
            Err(DecodeError::InvalidValue {
                field: "sec_addr terminator",
                ..
            })
        ));
        let mut inner = ack.clone();
        inner[26] = 0;
        assert_eq!(
            decode_bind_ack(&inner),
            Err(DecodeError::EmbeddedNul { field: "sec_addr" })
        );
        let mut utf = ack.clone();
        utf[26] = 0xFF;
        assert_eq!(
            decode_bind_ack(&utf),
            Err(DecodeError::InvalidUtf8 { field: "sec_addr" })
        );
        let mut long = ack;
        long[24..26].copy_from_slice(&1000u16.to_le_bytes());
        assert!(matches!(
            decode_bind_ack(&long),
            Err(DecodeError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn request_round_trip(call_id: u32, ctx: u16, opnum: u16,
                              stub in proptest::collection::vec(any::<u8>(), 0..3000),
                              max_frag in 0u16..2000) {
            let frags = encode_request(call_id, ctx, opnum, &stub, max_frag);
            let limit = max_frag.max(MIN_MAX_FRAG);
            prop_assert_eq!(frags.len(), encoded_call_len(stub.len(), max_frag));
            let parts = split_frags(&frags, limit);
            let mut joined = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let q = decode_request(p).unwrap();
                prop_assert_eq!(q.header.call_id, call_id);
                prop_assert_eq!((q.context_id, q.opnum), (ctx, opnum));
                prop_assert_eq!(q.header.pfc_flags & PFC_FIRST_FRAG != 0, i == 0);
                prop_assert_eq!(q.header.pfc_flags & PFC_LAST_FRAG != 0, i + 1 == parts.len());
                prop_assert_eq!(q.alloc_hint as usize, stub.len() - joined.len());
                joined.extend_from_slice(q.stub);
            }
            prop_assert_eq!(joined, stub);
        }

        #[test]
        fn response_round_trip(call_id: u32, ctx: u16,
                               stub in proptest::collection::vec(any::<u8>(), 0..10000),
                               max_frag in prop_oneof![Just(DEFAULT_MAX_FRAG), 0u16..=u16::MAX]) {
            let frags = encode_response(call_id, ctx, &stub, max_frag);
            let mut r = PduReassembler::new(max_frag.max(MIN_MAX_FRAG));
            r.push(&frags);
            let mut joined = Vec::new();
            let mut n = 0;
            while let Some(p) = r.next_pdu() {
                let p = p.unwrap();
                prop_assert!(p.len() <= usize::from(max_frag.max(MIN_MAX_FRAG)));
                let d = decode_response(&p).unwrap();
                prop_assert_eq!(d.header.call_id, call_id);
                joined.extend_from_slice(d.stub);
                n += 1;
            }
            prop_assert!(n >= 1);
            prop_assert_eq!(joined, stub);
        }

        #[test]
        fn reassembler_random_chunks(cuts in proptest::collection::vec(0usize..7000, 0..20)) {
            let (stream, pdus) = sample_stream();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut r = PduReassembler::new(1000);
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                r.push(&stream[at..c]);
                at = c;
                drain(&mut r, &mut got);
                prop_assert!(r.buffered() < 1000);
            }
            prop_assert_eq!(got, pdus);
        }

        #[test]
        fn bind_round_trip(call_id: u32, a: [u8; 16], av: u32, t: [u8; 16], tv: u32) {
            let bind = encode_bind(call_id, (a, av), (t, tv));
            let b = decode_bind(&bind).unwrap();
            prop_assert_eq!(b.header.call_id, call_id);
            prop_assert_eq!(
                b.contexts,
                vec![PresentationContext {
                    context_id: 0,
                    abstract_syntax: SyntaxId { uuid: a, version: av },
                    transfer_syntaxes: vec![SyntaxId { uuid: t, version: tv }],
                }]
            );
            let ack = encode_bind_ack(&bind, "\\PIPE\\x", DEFAULT_MAX_FRAG).unwrap();
            let d = decode_bind_ack(&ack).unwrap();
            prop_assert_eq!(d.header.call_id, call_id);
            prop_assert_eq!(d.sec_addr.as_str(), "\\PIPE\\x");
            prop_assert_eq!(
                d.results,
                vec![ContextResult { result: 0, reason: 0, transfer_syntax: SyntaxId { uuid: t, version: tv } }]
            );
        }

        #[test]
        fn multi_context_bind_ack(big: bool, call_id: u32, n in 1usize..40, sec in "[ -~]{0,40}") {
            let ctxs: Vec<(u16, SyntaxId, &[SyntaxId])> =
                (0..n).map(|i| (i as u16, SRVSVC_SYNTAX, &[NDR_SYNTAX, NDR64][..(i + 1) % 3])).collect();
            let bind = raw_bind(big, call_id, &ctxs, 4280);
            let ack = encode_bind_ack(&bind, &sec, 4280).unwrap();
            let d = decode_bind_ack(&ack).unwrap();
            prop_assert_eq!(d.header.call_id, call_id);
            prop_assert_eq!(d.sec_addr, sec);
            prop_assert_eq!(d.results.len(), n);
            prop_assert_eq!(
                d.results[0],
                ContextResult { result: 0, reason: 0, transfer_syntax: NDR_SYNTAX }
            );
            for r in &d.results[1..] {
                prop_assert_eq!(r.result, RESULT_PROVIDER_REJECTION);
                prop_assert_eq!(r.reason, REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED);
            }
        }

        #[test]
        fn fault_round_trip(call_id: u32, ctx: u16, status: u32) {
            let f = decode_fault(&encode_fault(call_id, ctx, status)).unwrap();
            prop_assert_eq!((f.header.call_id, f.context_id, f.status), (call_id, ctx, status));
        }

        #[test]
        fn header_round_trip(vers_minor: u8, ptype: u8, flags: u8, big: bool, d1: u8, frag: u16, auth: u16, call: u32) {
            let h = CommonHeader {
                rpc_vers: 5, rpc_vers_minor: vers_minor, ptype, pfc_flags: flags,
                drep: [if big { 0x00 } else { 0x10 }, d1, 0, 0],
                frag_length: frag, auth_length: auth, call_id: call,
            };
            prop_assert_eq!(CommonHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = CommonHeader::decode(&bytes);
            let _ = pdu_len(&bytes, 4280);
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
            let _ = decode_fault(&bytes);
            let _ = decode_bind(&bytes);
            let _ = decode_bind_ack(&bytes);
            let _ = encode_bind_ack(&bytes, "\\PIPE\\x", 4280);
        }
    }
}
