//! Closing a pipe closes its socket: the service sees the end of the stream
//! at once, on every backend and buffer mode, whatever the ring did with
//! the descriptor meanwhile (io_uring: the socket sits in the ring's table
//! of registered files, which holds the file open until it is taken out).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opipe::engine::{BackendChoice, BufferMode, EngineConfig};

const T: Duration = Duration::from_secs(60);

/// Echoes until the client's end of the stream, then reports it on `ended`.
fn echo_until_eof(ended: mpsc::Sender<()>) -> ConnFn {
    let ended = Arc::new(Mutex::new(ended));
    Arc::new(move |mut s: UnixStream| {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ended.lock().unwrap().send(());
    })
}

#[test]
fn a_closed_pipes_socket_closes_at_the_service() {
    bounded(T, || {
        const PIPES: usize = 40;
        for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
            for mode in [BufferMode::Plain, BufferMode::Registered] {
                let dir = tempfile::tempdir().unwrap();
                let (tx, ended) = mpsc::channel();
                let _svc = Scripted::spawn(dir.path(), "srvsvc", Handshake::Accept, {
                    echo_until_eof(tx)
                });
                let mut cfg = EngineConfig::new(dir.path());
                cfg.backend = backend;
                cfg.buffers = mode;
                cfg.reg_slots = 64;
                let Some(eng) = start_engine(cfg) else {
                    continue;
                };
                // Twice over: the second round's sockets reuse the first
                // round's descriptor numbers (and registered slots).
                for round in 0..2 {
                    let pipes: Vec<_> = (0..PIPES)
                        .map(|i| {
                            eng.open("\\PIPE\\srvsvc", user(i as u64 + 1), None)
                                .wait()
                                .expect("open")
                        })
                        .collect();
                    for (i, p) in pipes.iter().enumerate() {
                        let msg = format!("{backend:?} {mode:?} round {round} pipe {i}");
                        let t = p
                            .transceive(msg.clone().into_bytes(), 4280)
                            .wait()
                            .expect("transceive");
                        assert_eq!(t.data, msg.as_bytes(), "{backend:?} {mode:?}");
                    }
                    for p in pipes {
                        p.close().wait().expect("close");
                    }
                    for i in 0..PIPES {
                        ended
                            .recv_timeout(Duration::from_secs(10))
                            .unwrap_or_else(|_| {
                                panic!(
                                    "{backend:?} {mode:?} round {round}: only {i} of {PIPES} \
                                 closed pipes reached the service as closed"
                                )
                            });
                    }
                }
            }
        }
    });
}
