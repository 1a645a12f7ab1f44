//! What replies as `bytes::Bytes` would cost or save against `Vec<u8>`,
//! per transceive, in the shapes opipe's engine and bench use (DESIGN.md,
//! "Buffers at the API"): `cargo run --release --example bytes_replies`.
use bytes::{Bytes, BytesMut};
use std::hint::black_box;
use std::time::Instant;

/// Transceives per measurement (`BYTES_REPLIES_N` overrides).
fn n() -> usize {
    std::env::var("BYTES_REPLIES_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000)
}

fn pool_chunk(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

fn main() {
    let pool64 = pool_chunk(64);
    let pool4280 = pool_chunk(4280);
    let n = n();
    for _ in 0..2 {
        // 64 B, Vec: chunk copied into a spare (cap 4280) buffer, handed to
        // the caller, who builds its next request in it; the engine takes
        // it back as a spare after the send.
        let mut spare: Vec<u8> = Vec::with_capacity(4280);
        let t = Instant::now();
        for _ in 0..n {
            let mut reply = std::mem::take(&mut spare);
            reply.clear();
            reply.extend_from_slice(&pool64);
            let reply = black_box(reply); // the caller's
            let req = reply; // built in place
            let sent = Bytes::from(black_box(req)); // the input as Bytes
            spare = match sent.try_into_mut() {
                Ok(b) => Vec::from(b),
                Err(_) => Vec::new(),
            };
        }
        let vec64 = t.elapsed().as_nanos() as f64 / n as f64;
        // 64 B, Bytes reply: the same, the reply frozen into Bytes and the
        // caller getting its Vec back with Vec::from.
        let mut spare = BytesMut::with_capacity(4280);
        let t = Instant::now();
        for _ in 0..n {
            let mut chunk = std::mem::take(&mut spare);
            chunk.clear();
            chunk.extend_from_slice(&pool64);
            let reply: Bytes = black_box(chunk.freeze());
            let req = Vec::from(reply);
            let sent = Bytes::from(black_box(req));
            spare = sent.try_into_mut().unwrap_or_default();
        }
        let bytes64 = t.elapsed().as_nanos() as f64 / n as f64;
        // Overflow (4280 reply, max_out 1024), Vec: the reply keeps the
        // chunk, the rest is split off (alloc + copy), the caller appends
        // the rest (copy) and drops it.
        let mut spare: Vec<u8> = Vec::with_capacity(4280);
        let t = Instant::now();
        for _ in 0..n {
            let mut chunk = std::mem::take(&mut spare);
            chunk.clear();
            chunk.extend_from_slice(&pool4280);
            let rest = chunk.split_off(1024);
            let mut acc = black_box(chunk);
            let rest = black_box(rest);
            acc.extend_from_slice(&rest);
            drop(rest);
            let sent = Bytes::from(black_box(acc));
            spare = match sent.try_into_mut() {
                Ok(b) => Vec::from(b),
                Err(_) => Vec::new(),
            };
        }
        let vec_ovf = t.elapsed().as_nanos() as f64 / n as f64;
        // Overflow, Bytes: both shares are views of the chunk (no split
        // copy); the caller gathers them into a Vec of its own.
        let mut spare = BytesMut::with_capacity(4280);
        let t = Instant::now();
        for _ in 0..n {
            let mut chunk = std::mem::take(&mut spare);
            chunk.clear();
            chunk.extend_from_slice(&pool4280);
            let first = black_box(chunk.split_to(1024).freeze());
            let rest = black_box(chunk.freeze());
            let mut acc = Vec::from(first);
            acc.extend_from_slice(&rest);
            drop(rest);
            let sent = Bytes::from(black_box(acc));
            spare = sent.try_into_mut().unwrap_or_default();
        }
        let bytes_ovf = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "ns per transceive: 64 B Vec {vec64:.1} Bytes {bytes64:.1}; overflow Vec {vec_ovf:.1} Bytes {bytes_ovf:.1}"
        );
    }
}
