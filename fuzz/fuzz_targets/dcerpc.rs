//! DCE/RPC framing: pdu_len, the reassembler fed in random chunks (its
//! output must equal framing the stream in one go, and it must stay
//! bounded), and every PDU decoder plus encode_bind_ack on each PDU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::protocol::dcerpc::{
    decode_bind, decode_bind_ack, decode_fault, decode_request, decode_response, encode_bind_ack,
    pdu_len, PduReassembler,
};

fuzz_target!(|data: &[u8]| {
    // First two bytes: max_frag; the next one seeds the chunk sizes.
    let Some((&[m0, m1, seed], stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let max_frag = u16::from_le_bytes([m0, m1]);

    // Reference: frame the whole stream at once.
    let mut expected = Vec::new();
    let mut rest = stream;
    let mut expected_err = None;
    loop {
        match pdu_len(rest, max_frag) {
            Ok(Some(n)) if n <= rest.len() => {
                assert!(n >= 16 && n <= usize::from(max_frag));
                expected.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
            Ok(_) => break,
            Err(e) => {
                expected_err = Some(e);
                break;
            }
        }
    }

    // The reassembler, fed in chunks of 1..=64 bytes.
    let mut r = PduReassembler::new(max_frag);
    let mut got = Vec::new();
    let mut got_err = None;
    let mut at = 0;
    let mut x = seed;
    while at < stream.len() {
        x = x.wrapping_mul(37).wrapping_add(11);
        let n = (usize::from(x % 64) + 1).min(stream.len() - at);
        r.push(&stream[at..at + n]);
        at += n;
        assert!(r.buffered() < usize::from(max_frag).max(16) + n);
        while let Some(p) = r.next_pdu() {
            match p {
                Ok(p) => got.push(p),
                Err(e) => got_err = Some(e),
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(got_err, expected_err);

    for pdu in &got {
        let _ = decode_request(pdu);
        let _ = decode_response(pdu);
        let _ = decode_fault(pdu);
        let _ = decode_bind_ack(pdu);
        if decode_bind(pdu).is_ok() {
            if let Ok(ack) = encode_bind_ack(pdu, "\\PIPE\\srvsvc", max_frag) {
                let a = decode_bind_ack(&ack).expect("our bind_ack must decode");
                assert_eq!(pdu_len(&ack, u16::MAX), Ok(Some(ack.len())));
                assert!(!a.results.is_empty());
            }
        }
    }
    // And the decoders on the raw input too.
    let _ = decode_bind(stream);
    let _ = decode_bind_ack(stream);
    let _ = decode_request(stream);
});
