//! The open message as a service reads it: 8-byte header, check, then
//! exactly `uilen` bytes of userinfo. Both the whole-message decoder and the
//! step-by-step path a service takes must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::protocol::{
    decode_open_message, encode_open_message, NetUserInfo, PipeHeader, PIPE_HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let whole = decode_open_message(data);

    // Step by step, as a service reading a socket does.
    let stepwise = (|| {
        let (head, body) = data.split_first_chunk::<PIPE_HEADER_LEN>()?;
        let header = PipeHeader::decode(head);
        header.check().ok()?;
        let body = body.get(..header.uilen as usize)?;
        NetUserInfo::decode(body)
            .ok()
            .map(|ui| (ui, PIPE_HEADER_LEN + body.len()))
    })();

    match (&whole, stepwise) {
        (Ok(ui), Some((ui2, used))) => {
            assert_eq!(ui, &ui2);
            assert_eq!(used, data.len());
            assert_eq!(encode_open_message(ui).unwrap(), data);
        }
        (Ok(_), None) => panic!("whole decode accepted what the stepwise one refused"),
        (Err(_), Some((_, used))) => {
            // Only trailing bytes may make the whole-message decoder refuse.
            assert!(used < data.len());
        }
        (Err(_), None) => {}
    }
});
