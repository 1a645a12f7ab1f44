//! A raw SMB2 client for tests, over any transport: the header ids a
//! client keeps, the requests the tests send (negotiate, anonymous NTLMSSP
//! session setup, tree connect, create, transceive, read), the login and
//! open sequences, and the real clients (`smbclient`, `rpcclient`) run
//! with a time bound.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use opipe::protocol::NtStatus;
use opipe::smb2::file::{
    CreateRequest, FileId, IoctlRequest, ReadRequest, FSCTL_PIPE_TRANSCEIVE, IOCTL_IS_FSCTL,
};
use opipe::smb2::negotiate::{NegotiateContext, NegotiateRequest, HASH_SHA512};
use opipe::smb2::ntlmssp;
use opipe::smb2::session::{SessionSetupRequest, TreeConnectRequest};
use opipe::smb2::spnego::{NegTokenInit, NegTokenResp, SpnegoToken, OID_NTLMSSP};
use opipe::smb2::status;
use opipe::smb2::{Command, Header, HeaderIds, Request, Response};

pub use super::smbd::{RPCCLIENT, SMBCLIENT};

/// How long a real client may run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The ids a client puts in its requests' headers.
#[derive(Debug, Default)]
pub struct Ids {
    /// The next message id.
    pub mid: u64,
    pub session_id: u64,
    pub tree_id: u32,
}

impl Ids {
    /// A request header for `cmd` with the next message id (64 credits
    /// asked, a sync header on the current tree).
    pub fn header(&mut self, cmd: Command) -> Header {
        let mut h = Header::request(cmd);
        h.message_id = self.mid;
        self.mid += 1;
        h.credits = 64;
        h.session_id = self.session_id;
        h.ids = HeaderIds::Sync {
            process_id: 0xFEFF,
            tree_id: self.tree_id,
        };
        h
    }
}

/// A client that sends one request and gets its one response back, over
/// whatever carries it (a TCP socket, the sans-IO core in memory).
pub trait Smb2Call {
    fn ids(&mut self) -> &mut Ids;
    fn call(&mut self, req: Request) -> (Header, Response);
}

/// NEGOTIATE offering `dialects` (SHA-512 preauth, signing enabled).
pub fn negotiate(client_guid: [u8; 16], dialects: &[u16]) -> Request {
    Request::Negotiate(NegotiateRequest {
        security_mode: 1,
        capabilities: 0x44,
        client_guid,
        dialects: dialects.to_vec(),
        contexts: vec![NegotiateContext::PreauthIntegrity {
            hash_algorithms: vec![HASH_SHA512],
            salt: vec![0; 32],
        }],
        client_start_time: 0,
    })
}

pub fn session_setup(tok: SpnegoToken) -> Request {
    Request::SessionSetup(SessionSetupRequest {
        flags: 0,
        security_mode: 1,
        capabilities: 0,
        channel: 0,
        previous_session_id: 0,
        security_buffer: tok.encode().unwrap(),
    })
}

pub fn tree_connect(path: &str) -> Request {
    Request::TreeConnect(TreeConnectRequest {
        flags: 0,
        path: path.into(),
    })
}

/// CREATE of pipe `name` (read/write, open existing).
pub fn create(name: &str) -> CreateRequest {
    CreateRequest {
        security_flags: 0,
        requested_oplock_level: 0,
        impersonation_level: 2,
        smb_create_flags: 0,
        desired_access: 0x0012_019f,
        file_attributes: 0,
        share_access: 3,
        create_disposition: 1,
        create_options: 0,
        name: name.into(),
        create_contexts: vec![],
    }
}

/// FSCTL_PIPE_TRANSCEIVE of `input`, at most `max_out` bytes back.
pub fn transceive(file_id: FileId, input: &[u8], max_out: u32) -> Request {
    Request::Ioctl(IoctlRequest {
        ctl_code: FSCTL_PIPE_TRANSCEIVE,
        file_id,
        max_input_response: 0,
        max_output_response: max_out,
        flags: IOCTL_IS_FSCTL,
        input: input.to_vec(),
        output: vec![],
    })
}

pub fn read(file_id: FileId, length: u32) -> Request {
    Request::Read(ReadRequest {
        padding: 0x50,
        flags: 0,
        length,
        offset: 0,
        file_id,
        minimum_count: 0,
        channel: 0,
        remaining_bytes: 0,
    })
}

/// Sends `negotiate` (which must succeed), logs in anonymously with
/// NTLMSSP in SPNEGO and connects to `tree` (e.g. `\\srv\IPC$`); the
/// session and tree ids are kept in `c`'s [`Ids`].
pub fn login<C: Smb2Call>(c: &mut C, negotiate: Request, tree: &str) {
    let (h, _) = c.call(negotiate);
    assert_eq!(h.status, NtStatus(0));
    let neg = ntlmssp::Negotiate {
        flags: ntlmssp::NEGOTIATE_UNICODE | ntlmssp::NEGOTIATE_NTLM,
        domain: vec![],
        workstation: vec![],
        version: None,
    };
    let tok = SpnegoToken::Init(NegTokenInit {
        mech_types: vec![OID_NTLMSSP.to_vec()],
        mech_token: Some(neg.encode().unwrap()),
        ..Default::default()
    });
    let (h, _) = c.call(session_setup(tok));
    assert_eq!(h.status, status::MORE_PROCESSING_REQUIRED);
    c.ids().session_id = h.session_id;
    let auth = ntlmssp::Authenticate::anonymous(ntlmssp::NEGOTIATE_UNICODE);
    let tok = SpnegoToken::Resp(NegTokenResp {
        response_token: Some(auth.encode().unwrap()),
        ..Default::default()
    });
    let (h, _) = c.call(session_setup(tok));
    assert_eq!(h.status, NtStatus(0));
    let (h, _) = c.call(tree_connect(tree));
    assert_eq!(h.status, NtStatus(0));
    c.ids().tree_id = h.tree_id();
}

/// Opens pipe `name`; panics unless the create succeeds.
pub fn open<C: Smb2Call>(c: &mut C, name: &str) -> FileId {
    match c.call(Request::Create(create(name))) {
        (h, Response::Create(r)) if h.status == NtStatus(0) => r.file_id,
        other => panic!("create {name}: {other:?}"),
    }
}

/// True when `smbclient` and `rpcclient` are installed; else says loudly
/// that the test is skipped.
pub fn clients_installed() -> bool {
    if Path::new(SMBCLIENT).exists() && Path::new(RPCCLIENT).exists() {
        return true;
    }
    eprintln!("SKIPPED: smbclient/rpcclient not installed; install smbclient");
    false
}

/// `smbclient -L //127.0.0.1 -p <port> -N` (a guest listing the shares)
/// with `options` (e.g. `--option=client min protocol=NT1`), through
/// [`run_client`].
pub fn smbclient_list(port: &str, options: &[&str]) -> (Option<i32>, String) {
    let mut argv = vec![SMBCLIENT, "-L", "//127.0.0.1", "-p", port, "-N"];
    argv.extend_from_slice(options);
    run_client(&argv)
}

/// `rpcclient -U% -p <port> 127.0.0.1 -c <commands>` (anonymous), through
/// [`run_client`].
pub fn rpcclient(port: &str, commands: &str) -> (Option<i32>, String) {
    run_client(&[RPCCLIENT, "-U%", "-p", port, "127.0.0.1", "-c", commands])
}

/// Runs a client to completion in its own process group, for at most
/// [`CLIENT_TIMEOUT`] (then the group is killed and the code is `None`);
/// returns (exit code, stdout and stderr as they interleaved).
pub fn run_client(argv: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let err = out.try_clone().unwrap();
    let mut child = Proc::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) has no memory-safety preconditions; the group
            // id is our own child's pid (process_group(0)), not yet reaped.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.wait();
    (code, std::fs::read_to_string(&out_path).unwrap_or_default())
}
