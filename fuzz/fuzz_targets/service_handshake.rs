//! The service side of the open handshake, as the pipe service runs it: the
//! sans-IO `Handshake` fed the input in random chunks, then the `DceRpc`
//! handler fed whatever followed. Checks: no panic; a completed handshake
//! consumed exactly header + uilen bytes and its user re-encodes to those
//! bytes; a finished handshake stays finished; the handler's output is a
//! sequence of well-formed PDUs and stays bounded per input byte.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use opipe::protocol::dcerpc::pdu_len;
use opipe::protocol::{encode_open_message, PipeName};
use opipe::service::dcerpc::DceRpc;
use opipe::service::handler::Handler;
use opipe::service::handshake::{Handshake, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let chunk = usize::from(seed % 61) + 1;
    let mut hs = Handshake::new();
    let mut pos = 0;
    let mut after: &[u8] = &[];
    while pos < stream.len() {
        let end = (pos + chunk).min(stream.len());
        match hs.feed(&stream[pos..end]) {
            Step::NeedMore => {
                assert!(!hs.is_finished());
                pos = end;
            }
            Step::Complete { user, consumed } => {
                assert!(consumed <= end - pos);
                let used = pos + consumed;
                let again = encode_open_message(&user).expect("a decoded user re-encodes");
                assert_eq!(&again[..], &stream[..used], "round trip of the open message");
                assert!(hs.is_finished());
                assert_eq!(hs.feed(b"more"), Step::NeedMore);
                after = &stream[used..];
                break;
            }
            Step::Failed(_) => {
                assert!(hs.is_finished());
                return;
            }
        }
    }
    // What follows a good open goes to the DCE/RPC handler.
    let pipe = PipeName::parse("\\PIPE\\srvsvc").expect("valid name");
    let mut h = DceRpc::new(&pipe, Arc::from(vec![0x11u8; 100]));
    let mut out = Vec::new();
    let mut fed = 0usize;
    for piece in after.chunks(chunk) {
        fed += piece.len();
        if h.on_data(piece, &mut out).is_err() {
            break;
        }
        while h.has_backlog() {
            let before = out.len();
            if h.resume(&mut out).is_err() || out.len() == before {
                break;
            }
        }
        // Replies are bounded by the requests that asked for them: a
        // request PDU is at least 24 bytes and gets at most ~4 fragments of
        // 100 stub bytes here; a bind at most one bind_ack.
        assert!(out.len() <= 64 + fed * 32, "output {} for {} input bytes", out.len(), fed);
    }
    let mut rest = &out[..];
    while !rest.is_empty() {
        let n = pdu_len(rest, u16::MAX).expect("handler output is framed").expect("whole header");
        assert!(n <= rest.len(), "handler output ends inside a PDU");
        rest = &rest[n..];
    }
});
