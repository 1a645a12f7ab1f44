//! The SMB-server side of a pipe, for tests that talk to a pipe service
//! directly: connect with time limits, the open handshake, an echo check.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use opipe::protocol::{decode_status_word, encode_open_message, ClientAddr, NetUserInfo, NtStatus};

/// How long a test client waits for the service at most per read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A user as an SMB server would describe it; `flags` e.g.
/// `USER_FLAG_ANONYMOUS`.
pub fn named_user(account: &str, flags: u32) -> NetUserInfo {
    NetUserInfo {
        session_id: 42,
        domain: "WORKGROUP".into(),
        account: account.into(),
        posix_uid: 1000,
        workstation: "CLIENT1".into(),
        client_addr: ClientAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)),
        native_os: 0,
        logon_time: 1_700_000_000,
        numopens: 0,
        flags,
    }
}

/// Connects to a pipe socket, with [`IO_TIMEOUT`] on reads and writes.
pub fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Connects and runs the SMB-server side of the open handshake.
pub fn open_as(path: &Path, u: &NetUserInfo) -> (UnixStream, NtStatus) {
    let mut s = connect(path);
    s.write_all(&encode_open_message(u).unwrap()).unwrap();
    let mut w = [0u8; 4];
    s.read_exact(&mut w).unwrap();
    (s, decode_status_word(w))
}

/// Opens as "alice" and expects success.
pub fn open_ok(path: &Path) -> UnixStream {
    let (s, st) = open_as(path, &named_user("alice", 0));
    assert_eq!(st, NtStatus::SUCCESS);
    s
}

/// Writes `msg` and expects it back whole.
pub fn echo_once(s: &mut UnixStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// A whole, valid open message for `u` whose only fault is its magic
/// (`magic`): a service that skipped the magic check would accept it.
pub fn open_message_with_magic(u: &NetUserInfo, magic: u32) -> Vec<u8> {
    let mut msg = encode_open_message(u).unwrap();
    let head: [u8; opipe::protocol::PIPE_HEADER_LEN] =
        msg[..opipe::protocol::PIPE_HEADER_LEN].try_into().unwrap();
    let mut hdr = opipe::protocol::PipeHeader::decode(&head);
    assert_ne!(hdr.magic, magic, "the test magic must be wrong");
    hdr.magic = magic;
    msg[..opipe::protocol::PIPE_HEADER_LEN].copy_from_slice(&hdr.encode());
    msg
}
