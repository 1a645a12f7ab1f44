//! PeekReply::decode on arbitrary bytes; whatever decodes re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::protocol::{peek_data_room, peek_status, PeekReply};

fuzz_target!(|data: &[u8]| {
    if let Ok((reply, rest)) = PeekReply::decode(data) {
        assert!(rest.len() as u64 <= u64::from(reply.read_data_available));
        assert_eq!(reply.encode_with_data(rest), data);
    }
    // The pure status rules take any numbers.
    if let Some((a, b)) = data.split_first_chunk::<4>().map(|(a, _)| (*a, data.len())) {
        let max = u32::from_le_bytes(a);
        let _ = peek_data_room(max);
        let _ = peek_status(b, max as usize);
    }
});
