//! One transceive on one pipe, round-trip latency: opipe's engine (blocking
//! `wait`, and a ring-thread callback chain) next to a blocking std socket
//! doing the same write + read (the seed's model), against the same
//! in-process echo service.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use opipe::engine::{Engine, EngineConfig, RingContext, Transfer};
use opipe::protocol::{decode_status_word, encode_open_message, NetUserInfo, NtStatus};
use opipe::service::{EchoFactory, Service};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let _svc = Service::builder(dir.path())
        .pipe("echo")
        .handler(EchoFactory)
        .start()
        .unwrap();
    let engine = match Engine::new(EngineConfig::new(dir.path())) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let user = NetUserInfo {
        session_id: 1,
        account: "bench".into(),
        ..Default::default()
    };
    let pipe = engine.open("echo", user.clone(), None).wait().unwrap();
    let msg = vec![0x5au8; 64];

    let mut g = c.benchmark_group("transceive_64B_one_pipe");
    g.bench_function("uring_wait", |b| {
        b.iter(|| {
            let t = pipe.transceive(msg.clone(), 4280).wait().unwrap();
            assert_eq!(t.data.len(), 64);
        })
    });

    // Ring-thread loop: `iters` transceives chained by callbacks, timed as a whole.
    g.bench_function("uring_callback_chain", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = mpsc::channel();
            let start = Instant::now();
            fn step(
                ctx: &mut RingContext<'_>,
                id: opipe::engine::PipeId,
                msg: Vec<u8>,
                left: u64,
                tx: mpsc::Sender<Instant>,
            ) {
                if left == 0 {
                    let _ = tx.send(Instant::now());
                    return;
                }
                let m2 = msg.clone();
                ctx.transceive_with(id, msg, 4280, move |ctx, r: Result<Transfer, NtStatus>| {
                    assert_eq!(r.unwrap().data.len(), 64);
                    step(ctx, id, m2, left - 1, tx)
                });
            }
            let id = pipe.id();
            let (m, tx2) = (msg.clone(), tx.clone());
            pipe.transceive_with(msg.clone(), 4280, move |ctx, r| {
                assert_eq!(r.unwrap().data.len(), 64);
                step(ctx, id, m, iters.saturating_sub(1), tx2)
            });
            let end = rx.recv_timeout(Duration::from_secs(60)).unwrap();
            end - start
        })
    });

    // The seed's model: a blocking socket, write then read, same service.
    let mut s = UnixStream::connect(dir.path().join("echo")).unwrap();
    s.write_all(&encode_open_message(&user).unwrap()).unwrap();
    let mut w = [0u8; 4];
    s.read_exact(&mut w).unwrap();
    assert_eq!(decode_status_word(w), NtStatus::SUCCESS);
    let mut buf = vec![0u8; 4280];
    g.bench_function("blocking_socket", |b| {
        b.iter(|| {
            s.write_all(&msg).unwrap();
            let n = s.read(&mut buf).unwrap();
            assert_eq!(n, 64);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
