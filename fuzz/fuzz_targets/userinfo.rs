//! NetUserInfo::decode on arbitrary bytes; whatever decodes must re-encode
//! to exactly the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::protocol::NetUserInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(ui) = NetUserInfo::decode(data) {
        let enc = ui.encode().expect("a decoded userinfo must encode");
        assert_eq!(enc.len(), ui.encoded_len());
        assert_eq!(enc, data, "decode/encode is not a round trip");
        assert_eq!(NetUserInfo::decode(&enc).as_ref(), Ok(&ui));
    }
});
