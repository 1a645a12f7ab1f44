//! `max_out` 0 means one thing on every backend and receive path (issue 12
//! item 10): the input is sent, then `STATUS_PIPE_BROKEN`, as the seed's
//! zero-length read (taken for the end of the stream) gives. The reply
//! stays in the stream for the next read.

mod common;

use std::time::Duration;

use common::*;
use opipe::engine::{BackendChoice, EngineConfig};
use opipe::protocol::NtStatus;

#[test]
fn zero_max_out_is_pipe_broken_on_both_backends_and_receive_paths() {
    bounded(Duration::from_secs(30), || {
        for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
            for multishot in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let _svc = Scripted::spawn(dir.path(), "zero", Handshake::Accept, echo());
                let mut cfg = EngineConfig::new(dir.path());
                cfg.backend = backend;
                cfg.multishot = multishot;
                let Some(eng) = start_engine(cfg) else {
                    continue;
                };
                let pipe = eng.open("zero", user(1), None).wait().unwrap();
                let what = format!("{backend} multishot={multishot}");
                let r = pipe.transceive(b"ping".to_vec(), 0).wait();
                assert_eq!(r.unwrap_err(), NtStatus::PIPE_BROKEN, "{what}");
                assert_eq!(
                    pipe.read(0).wait().unwrap_err(),
                    NtStatus::PIPE_BROKEN,
                    "{what}"
                );
                // The input was sent: its echo is the next read's.
                assert_eq!(pipe.read(100).wait().unwrap(), b"ping", "{what}");
            }
        }
    });
}
