//! WaitRequest::decode on arbitrary bytes; whatever decodes re-encodes to
//! the same bytes up to the Boolean's value and the ignored padding byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::protocol::{PipeName, WaitRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = WaitRequest::decode(data) {
        let _ = w.timeout();
        let _ = PipeName::parse(&w.name);
        let mut canonical = data.to_vec();
        canonical[12] = u8::from(canonical[12] != 0);
        canonical[13] = 0;
        assert_eq!(w.encode(), canonical);
        assert_eq!(WaitRequest::decode(&canonical).as_ref(), Ok(&w));
    }
});
