//! One whole call on samba-dcerpcd's srvsvc pipe, made the way every
//! bench pipe will (the named-pipe-auth handshake as an anonymous caller,
//! a bind to srvsvc, `NetrServerGetInfo` level 101): [`probe`] checks the
//! answer names the configured server, and gives the request and reply
//! sizes the runs then verify.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use opipe::protocol::dcerpc::{self, PFC_LAST_FRAG};
use opipe::protocol::npa::{frame_messages, NPA_REPLY_LEN};
use opipe::protocol::srvsvc::decode_netr_server_get_info_101;
use opipe::protocol::{Dialect, NpaIdentity, NpaLevel, NpaReply, NtStatus};

use super::rpcd::PIPE;
use crate::bench::exchange::{Call, BIND_CALL_ID};
use crate::bench::framed::Inbox;

/// How long the probe's handshake, bind and call may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one probe call found: the sizes every later call must have.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Bytes of the request PDU.
    pub request_bytes: usize,
    /// Bytes of the whole reply (all its fragments).
    pub reply_bytes: usize,
}

/// One anonymous open of `srvsvc` under `dir`, one bind and one
/// `NetrServerGetInfo` level 101, whose answer must name `server_name`.
pub fn probe(dir: &Path, server_name: &str) -> Result<Probe, String> {
    let path = Dialect::Samba.socket_dir(dir).join(PIPE);
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("probe call: {what}: {e}");
    let mut s = UnixStream::connect(&path).map_err(|e| fail("connect", &e))?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| fail("socket", &e))?;
    let open = NpaIdentity::anonymous()
        .to_request(NpaLevel::V7)
        .encode()
        .map_err(|e| fail("NPA request", &e))?;
    s.write_all(&open).map_err(|e| fail("NPA request", &e))?;
    let mut answer = [0u8; NPA_REPLY_LEN];
    s.read_exact(&mut answer)
        .map_err(|e| fail("NPA reply", &e))?;
    let reply = NpaReply::decode(&answer).map_err(|e| fail("NPA reply", &e))?;
    if reply.status != NtStatus::SUCCESS {
        return Err(fail("open", &reply.status));
    }
    let mut inbox = Inbox::new();
    let bind = dcerpc::encode_bind(
        BIND_CALL_ID,
        dcerpc::SRVSVC_SYNTAX.into(),
        dcerpc::NDR_SYNTAX.into(),
    );
    s.write_all(&frame_messages(&bind))
        .map_err(|e| fail("bind", &e))?;
    let ack = next_message(&mut s, &mut inbox).map_err(|e| fail("bind", &e))?;
    let ack = dcerpc::decode_bind_ack(&ack).map_err(|e| fail("bind_ack", &e))?;
    if ack.results.first().map(|r| r.result) != Some(dcerpc::RESULT_ACCEPTANCE) {
        return Err(fail("bind", &"srvsvc refused"));
    }
    let request = Call::server_info_request(server_name, 2)?;
    s.write_all(&frame_messages(&request))
        .map_err(|e| fail("NetrServerGetInfo", &e))?;
    let (mut reply_bytes, mut stub) = (0, Vec::new());
    loop {
        let msg = next_message(&mut s, &mut inbox).map_err(|e| fail("NetrServerGetInfo", &e))?;
        reply_bytes += msg.len();
        let pdu = dcerpc::decode_response(&msg).map_err(|e| fail("response", &e))?;
        stub.extend_from_slice(pdu.stub);
        if pdu.header.pfc_flags & PFC_LAST_FRAG != 0 {
            break;
        }
        if reply_bytes > 1 << 20 {
            return Err(fail("response", &"over 1 MiB"));
        }
    }
    let (info, werror) =
        decode_netr_server_get_info_101(&stub).map_err(|e| fail("SERVER_INFO_101", &e))?;
    let name = info.and_then(|i| i.server_name);
    if werror != 0 || name.as_deref() != Some(server_name) {
        return Err(format!(
            "probe call: NetrServerGetInfo answered {name:?} (WERROR {werror}), \
             expected {server_name:?}"
        ));
    }
    Ok(Probe {
        request_bytes: request.len(),
        reply_bytes,
    })
}

/// The next whole message from `s`.
fn next_message(s: &mut UnixStream, inbox: &mut Inbox) -> io::Result<Vec<u8>> {
    loop {
        if let Some(m) = inbox.next_message() {
            return Ok(inbox.bytes(m).to_vec());
        }
        let n = s.read(inbox.spare())?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        inbox.filled(n);
    }
}
