//! Criterion benches of the pure protocol codecs: the open handshake
//! (pipe header, netuserinfo XDR, status word), DCE/RPC framing and
//! reassembly, and the PEEK/WAIT structures.
//!
//! `cargo bench --bench codecs` (add `-- <filter>` to run a subset).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opipe::protocol::dcerpc::{self, DEFAULT_MAX_FRAG};
use opipe::protocol::{
    decode_open_message, decode_status_word, encode_open_message, encode_status_word, ClientAddr,
    NetUserInfo, NtStatus, PduReassembler, PeekReply, PipeHeader, WaitRequest, PIPE_HEADER_LEN,
    PIPE_STATE_CONNECTED,
};

/// A typical domain user opening `\PIPE\srvsvc`.
fn user() -> NetUserInfo {
    NetUserInfo {
        session_id: 0x0000_1234_5678_9abc,
        domain: "EXAMPLE".into(),
        account: "alice.smith".into(),
        posix_uid: 2_000_123,
        workstation: "WS-0042".into(),
        client_addr: ClientAddr::V4(Ipv4Addr::new(192, 168, 1, 42)),
        native_os: 7,
        logon_time: 1_700_000_000,
        numopens: 3,
        flags: 0,
    }
}

fn open_handshake(c: &mut Criterion) {
    let ui = user();
    let msg = encode_open_message(&ui).expect("encodes");
    let body = msg[PIPE_HEADER_LEN..].to_vec();
    let mut g = c.benchmark_group("open");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("encode_open_message", |b| {
        b.iter(|| encode_open_message(black_box(&ui)))
    });
    g.bench_function("userinfo_encode_into_reused", |b| {
        let mut out = Vec::with_capacity(msg.len());
        b.iter(|| {
            out.clear();
            black_box(&ui).encode_into(&mut out)
        })
    });
    g.bench_function("decode_open_message", |b| {
        b.iter(|| decode_open_message(black_box(&msg)))
    });
    g.bench_function("userinfo_decode", |b| {
        b.iter(|| NetUserInfo::decode(black_box(&body)))
    });
    g.finish();

    let mut g = c.benchmark_group("header");
    let header = PipeHeader::new(body.len() as u32).encode();
    g.bench_function("pipe_header_encode", |b| {
        b.iter(|| PipeHeader::new(black_box(body.len() as u32)).encode())
    });
    g.bench_function("pipe_header_decode_check", |b| {
        b.iter(|| PipeHeader::decode(black_box(&header)).check())
    });
    g.bench_function("status_word_round_trip", |b| {
        b.iter(|| decode_status_word(encode_status_word(black_box(NtStatus::SUCCESS))))
    });
    g.finish();
}

fn dcerpc_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("dcerpc");
    for stub_len in [40usize, 4256, 65_152] {
        let stub = vec![0xa5u8; stub_len];
        let wire = dcerpc::encoded_call_len(stub_len, DEFAULT_MAX_FRAG);
        g.throughput(Throughput::Bytes(wire as u64));
        g.bench_function(format!("encode_request/{wire}B"), |b| {
            b.iter(|| {
                dcerpc::encode_request(black_box(7), 0, 15, black_box(&stub), DEFAULT_MAX_FRAG)
            })
        });
        let response = dcerpc::encode_response(7, 0, &stub, DEFAULT_MAX_FRAG);
        g.bench_function(format!("decode_response_fragments/{wire}B"), |b| {
            b.iter(|| {
                let mut at = 0;
                let mut stub_bytes = 0;
                while at < response.len() {
                    let len = dcerpc::pdu_len(&response[at..], DEFAULT_MAX_FRAG)
                        .expect("valid")
                        .expect("whole header");
                    let pdu = dcerpc::decode_response(&response[at..at + len]).expect("valid");
                    stub_bytes += pdu.stub.len();
                    at += len;
                }
                black_box(stub_bytes)
            })
        });
    }

    // A stream of 64 small request PDUs arriving in 4 KiB reads.
    let stream: Vec<u8> = (0..64u32)
        .flat_map(|i| dcerpc::encode_request(i, 0, 15, &[0x5a; 40], DEFAULT_MAX_FRAG))
        .collect();
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("reassemble_64x64B_in_4KiB_reads", |b| {
        b.iter_batched(
            || PduReassembler::new(DEFAULT_MAX_FRAG),
            |mut r| {
                let mut pdus = 0;
                for chunk in stream.chunks(4096) {
                    r.push(black_box(chunk));
                    while let Some(pdu) = r.next_pdu() {
                        pdus += pdu.expect("valid").len();
                    }
                }
                pdus
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn fsctl_structures(c: &mut Criterion) {
    let mut g = c.benchmark_group("fsctl");
    let peek = PeekReply {
        named_pipe_state: PIPE_STATE_CONNECTED,
        read_data_available: 64,
        number_of_messages: 0,
        message_length: 0,
    };
    let data = [0x11u8; 64];
    let peek_bytes = peek.encode_with_data(&data);
    g.bench_function("peek_reply_encode_with_64B", |b| {
        b.iter(|| black_box(&peek).encode_with_data(black_box(&data)))
    });
    g.bench_function("peek_reply_decode", |b| {
        b.iter(|| PeekReply::decode(black_box(&peek_bytes)))
    });
    let wait = WaitRequest {
        timeout_100ns: 50_000_000,
        timeout_specified: true,
        name: "srvsvc".into(),
    };
    let wait_bytes = wait.encode();
    g.bench_function("wait_request_encode", |b| {
        b.iter(|| black_box(&wait).encode())
    });
    g.bench_function("wait_request_decode", |b| {
        b.iter(|| WaitRequest::decode(black_box(&wait_bytes)))
    });
    g.finish();
}

criterion_group!(benches, open_handshake, dcerpc_framing, fsctl_structures);
criterion_main!(benches);
