//! PipeName::parse on arbitrary strings: never panics, and anything it
//! accepts is one safe path component of at most 31 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::protocol::{NtStatus, PipeName, MAX_PIPE_NAME_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match PipeName::parse(path) {
        Ok(name) => {
            let s = name.as_str();
            assert!(!s.is_empty() && s.len() <= MAX_PIPE_NAME_BYTES);
            assert!(s != "." && s != "..");
            assert!(!s.contains(['/', '\\', '\0']));
            assert_eq!(name.smb_name(), format!("\\{s}"));
        }
        Err(e) => assert_eq!(e, NtStatus::OBJECT_NAME_INVALID),
    }
});
