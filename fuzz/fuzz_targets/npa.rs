//! Samba's pipe dialect: the NPA request, reply and session-info decoders
//! and the message unframer on arbitrary bytes. Checks: no panic; whatever
//! decodes re-encodes to bytes that decode to the same value (not always
//! to the input itself: referent ids and padding bytes are read without
//! being checked, as Samba reads them); the unframer gives back exactly the framed bytes it was fed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opipe::protocol::npa::{
    frame_message, npa_message_level, MessageUnframer, NpaLevel, NpaReply, NpaRequest,
    SessionInfoTransport,
};

fuzz_target!(|data: &[u8]| {
    let _ = npa_message_level(data);
    if let Ok(req) = NpaRequest::decode(data) {
        let enc = req.encode().expect("a decoded request must encode");
        assert_eq!(NpaRequest::decode(&enc).as_ref(), Ok(&req));
    }
    if let Ok(rep) = NpaReply::decode(data) {
        assert_eq!(NpaReply::decode(&rep.encode()), Ok(rep));
    }
    for level in [NpaLevel::V7, NpaLevel::V8] {
        if let Ok(t) = SessionInfoTransport::decode(data, level) {
            let enc = t.encode(level).expect("a decoded session info must encode");
            assert_eq!(SessionInfoTransport::decode(&enc, level).as_ref(), Ok(&t));
        }
    }
    // The unframer, fed in chunks, returns the messages of a stream made
    // of the input cut into pieces.
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(seed) + 1;
    let msgs: Vec<&[u8]> = rest.chunks(piece).collect();
    let mut stream = Vec::new();
    for m in &msgs {
        stream.extend(frame_message(m).expect("short messages frame"));
    }
    let mut u = MessageUnframer::new();
    let mut got = Vec::new();
    for chunk in stream.chunks(usize::from(seed % 7) + 1) {
        u.push(chunk);
        while let Some(m) = u.next_message() {
            got.push(m);
        }
    }
    assert_eq!(u.buffered(), 0);
    assert_eq!(got.len(), msgs.len());
    for (a, b) in got.iter().zip(&msgs) {
        assert_eq!(a.as_slice(), *b);
    }
});
