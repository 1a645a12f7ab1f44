//! The SMB2 front's decoders on arbitrary bytes: the unframer, compound
//! splitting, request and response decoding, SPNEGO, NTLMSSP and the SMB1
//! negotiate. Checks: no panic; whatever decodes encodes again, and that
//! encoding decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::smb2::ntlmssp::{Authenticate, Challenge, Negotiate};
use opipe::smb2::spnego::SpnegoToken;
use opipe::smb2::{split_compound, Request, Response, Smb1Negotiate, Unframer};

fuzz_target!(|data: &[u8]| {
    let mut u = Unframer::new(1 << 20);
    u.push(data);
    while let Ok(Some(_)) = u.next_message() {}

    let _ = Smb1Negotiate::decode(data);
    if let Ok(parts) = split_compound(data) {
        for part in parts {
            if let Ok((h, req)) = Request::decode(part) {
                if !matches!(req, Request::Other(_)) {
                    let enc = req.encode(&h).expect("a decoded request encodes");
                    assert_eq!(Request::decode(&enc).expect("re-decodes"), (h, req));
                }
            }
            if let Ok((h, resp)) = Response::decode(part) {
                let enc = resp.encode(&h).expect("a decoded response encodes");
                assert_eq!(Response::decode(&enc).expect("re-decodes"), (h, resp));
            }
        }
    }
    if let Ok(t) = SpnegoToken::decode(data) {
        let enc = t.encode().expect("a decoded token encodes");
        assert_eq!(SpnegoToken::decode(&enc).expect("re-decodes"), t);
    }
    if let Ok(m) = Negotiate::decode(data) {
        assert_eq!(Negotiate::decode(&m.encode().expect("encodes")), Ok(m));
    }
    if let Ok(m) = Challenge::decode(data) {
        assert_eq!(Challenge::decode(&m.encode().expect("encodes")), Ok(m));
    }
    if let Ok(m) = Authenticate::decode(data) {
        assert_eq!(Authenticate::decode(&m.encode().expect("encodes")), Ok(m));
    }
});
