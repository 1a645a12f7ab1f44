//! Real SMB clients against the sans-IO SMB2 core: a plain blocking TCP
//! loop of this test drives `Connection`, and a blocking backend of this
//! test opens each pipe on a standalone `samba-dcerpcd` with Samba's NPA
//! handshake (the identity mapped by `NpaIdentity::from_net_user_info`).
//! Debian's `smbclient -L` (guest) and `rpcclient -U% -c srvinfo`
//! (anonymous) must list the shares and print the server name, exit 0.
//! Skipped, loudly, where Samba or the clients are not installed. (The
//! io_uring transport and the engine come later; only the core is under
//! test here.)
#![cfg(feature = "smb2")]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::samba::SambaRpcd;
use common::smb2::{clients_installed, rpcclient, smbclient_list};
use opipe::protocol::npa::{
    frame_message, read_npa_message, FramedReader, NpaIdentity, NpaLevel, NpaReply, NPA_REPLY_LEN,
};
use opipe::protocol::{NetUserInfo, NtStatus, USER_FLAG_ANONYMOUS, USER_FLAG_GUEST};
use opipe::smb2::server::{Connection, OpId, PipeBackend, PipeData, PipeRef, ServerConfig};

fn now_filetime() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(d.subsec_nanos() / 100)
}

/// Pipes on `samba-dcerpcd`'s `np/` sockets, blocking.
struct NpaBackend {
    np_dir: PathBuf,
    next: u64,
    pipes: HashMap<u64, (UnixStream, Vec<u8>)>,
    opened: Arc<Mutex<Vec<(String, NetUserInfo)>>>,
}

impl NpaBackend {
    fn recv(s: &mut UnixStream) -> Result<Vec<u8>, NtStatus> {
        match FramedReader::new(&mut *s).read_message() {
            Ok(Some(m)) => Ok(m),
            _ => Err(NtStatus::PIPE_BROKEN),
        }
    }
}

impl PipeBackend for NpaBackend {
    fn open(
        &mut self,
        _op: OpId,
        name: &str,
        user: &NetUserInfo,
    ) -> Poll<Result<PipeRef, NtStatus>> {
        self.opened
            .lock()
            .unwrap()
            .push((name.to_owned(), user.clone()));
        let path = self.np_dir.join(name.to_ascii_lowercase());
        let Ok(mut s) = UnixStream::connect(&path) else {
            return Poll::Ready(Err(NtStatus::OBJECT_NAME_NOT_FOUND));
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = NpaIdentity::from_net_user_info(user).to_request(NpaLevel::V7);
        let ok = req
            .encode()
            .ok()
            .and_then(|b| s.write_all(&b).ok())
            .and_then(|()| read_npa_message(&mut s, NPA_REPLY_LEN).ok())
            .and_then(|raw| NpaReply::decode(&raw).ok())
            .is_some_and(|r| r.status == NtStatus(0));
        if !ok {
            return Poll::Ready(Err(NtStatus::PIPE_NOT_AVAILABLE));
        }
        self.next += 1;
        self.pipes.insert(self.next, (s, Vec::new()));
        Poll::Ready(Ok(PipeRef(self.next)))
    }

    fn transceive(
        &mut self,
        _op: OpId,
        pipe: PipeRef,
        input: Vec<u8>,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        let Some((s, rest)) = self.pipes.get_mut(&pipe.0) else {
            return Poll::Ready(Err(NtStatus::INVALID_HANDLE));
        };
        let Ok(framed) = frame_message(&input) else {
            return Poll::Ready(Err(NtStatus::INVALID_PARAMETER));
        };
        if s.write_all(&framed).is_err() {
            return Poll::Ready(Err(NtStatus::PIPE_BROKEN));
        }
        let mut msg = match Self::recv(s) {
            Ok(m) => m,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if msg.len() > max_out {
            *rest = msg.split_off(max_out);
            return Poll::Ready(Ok(PipeData {
                status: NtStatus::BUFFER_OVERFLOW,
                data: msg,
            }));
        }
        Poll::Ready(Ok(PipeData::ok(msg)))
    }

    fn peek(&mut self, _: OpId, _: PipeRef, _: usize) -> Poll<Result<PipeData, NtStatus>> {
        Poll::Ready(Err(NtStatus::NOT_SUPPORTED))
    }

    fn wait(&mut self, _: OpId, _: &[u8]) -> Poll<Result<(), NtStatus>> {
        Poll::Ready(Ok(()))
    }

    fn read(
        &mut self,
        _op: OpId,
        pipe: PipeRef,
        max_out: usize,
    ) -> Poll<Result<PipeData, NtStatus>> {
        let Some((s, rest)) = self.pipes.get_mut(&pipe.0) else {
            return Poll::Ready(Err(NtStatus::INVALID_HANDLE));
        };
        let mut msg = if rest.is_empty() {
            match Self::recv(s) {
                Ok(m) => m,
                Err(e) => return Poll::Ready(Err(e)),
            }
        } else {
            std::mem::take(rest)
        };
        if msg.len() > max_out {
            *rest = msg.split_off(max_out);
            return Poll::Ready(Ok(PipeData {
                status: NtStatus::BUFFER_OVERFLOW,
                data: msg,
            }));
        }
        Poll::Ready(Ok(PipeData::ok(msg)))
    }

    fn write(&mut self, _op: OpId, pipe: PipeRef, data: Vec<u8>) -> Poll<Result<usize, NtStatus>> {
        let Some((s, _)) = self.pipes.get_mut(&pipe.0) else {
            return Poll::Ready(Err(NtStatus::INVALID_HANDLE));
        };
        match frame_message(&data).map(|f| s.write_all(&f)) {
            Ok(Ok(())) => Poll::Ready(Ok(data.len())),
            _ => Poll::Ready(Err(NtStatus::PIPE_BROKEN)),
        }
    }

    fn cancel(&mut self, _op: OpId) {}

    fn close(&mut self, pipe: PipeRef) {
        self.pipes.remove(&pipe.0);
    }

    fn logoff(&mut self, _session_id: u64) {}
}

/// A TCP listener on 127.0.0.1 that serves each connection with the core
/// on a thread of its own; stopped and joined on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    opened: Arc<Mutex<Vec<(String, NetUserInfo)>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(np_dir: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (st, op, er, dir) = (
            stop.clone(),
            opened.clone(),
            errors.clone(),
            np_dir.to_owned(),
        );
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            let mut seed = 1;
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, peer)) => {
                        seed += 1;
                        let backend = NpaBackend {
                            np_dir: dir.clone(),
                            next: 0,
                            pipes: HashMap::new(),
                            opened: op.clone(),
                        };
                        let (st, er) = (st.clone(), er.clone());
                        conns.push(std::thread::spawn(move || {
                            serve(sock, peer, seed, backend, &st, &er)
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
            opened,
            errors,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut sock: TcpStream,
    peer: std::net::SocketAddr,
    seed: u64,
    mut backend: NpaBackend,
    stop: &AtomicBool,
    errors: &Mutex<Vec<String>>,
) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let mut conn = Connection::new(ServerConfig::default(), peer, seed);
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        if let Err(e) = conn.receive(&buf[..n], now_filetime(), &mut backend) {
            errors.lock().unwrap().push(format!("{e:?}"));
        }
        if sock.write_all(&conn.take_output()).is_err() || conn.is_closed() {
            break;
        }
    }
    conn.shutdown(&mut backend);
}

#[test]
fn smbclient_and_rpcclient_through_the_core() {
    if !clients_installed() {
        return;
    }
    let Some(rpcd) = SambaRpcd::start("OPIPESMB2") else {
        return;
    };
    let server = Server::start(&rpcd.ncalrpc_dir.join("np"));
    let port = server.port.to_string();

    let (code, listing) = smbclient_list(&port, &[]);
    assert_eq!(
        code,
        Some(0),
        "smbclient -L:\n{listing}\n{:?}",
        server.errors.lock().unwrap()
    );
    assert!(
        listing.contains("IPC$") && listing.contains("tmp"),
        "smbclient -L:\n{listing}"
    );

    let (code, out) = rpcclient(&port, "srvinfo");
    assert_eq!(
        code,
        Some(0),
        "rpcclient:\n{out}\n{:?}",
        server.errors.lock().unwrap()
    );
    assert!(out.contains("OPIPESMB2"), "rpcclient srvinfo:\n{out}");

    let opened = server.opened.lock().unwrap().clone();
    assert_eq!(opened.len(), 2, "{opened:?}");
    assert!(opened.iter().all(|(name, _)| name == "srvsvc"));
    // smbclient -N logs in as guest, rpcclient -U% anonymously.
    assert_eq!(opened[0].1.flags, USER_FLAG_GUEST);
    assert_eq!(opened[1].1.flags, USER_FLAG_ANONYMOUS);
    assert_ne!(opened[0].1.session_id, opened[1].1.session_id);
    assert!(server.errors.lock().unwrap().is_empty());
    eprintln!("smbclient and rpcclient exited 0 through the sans-IO core:\n{listing}\n{out}");

    // smbclient opening with the SMB1 multi-protocol negotiate: answered
    // with the SMB2 upgrade (0x02FF), then SMB2 as before.
    let (code, nt1) = smbclient_list(&port, &["--option=client min protocol=NT1"]);
    assert_eq!(code, Some(0), "smbclient -L (NT1 first):\n{nt1}");
    assert!(
        nt1.contains("IPC$") && nt1.contains("tmp"),
        "smbclient -L (NT1 first):\n{nt1}"
    );

    // More of rpcclient on one session: srvsvc and lsarpc, several opens.
    let cmds = "srvinfo;netshareenumall;lsaquery;enumprivs;getusername;netsharegetinfo IPC$";
    let (code, out) = rpcclient(&port, cmds);
    assert_eq!(code, Some(0), "rpcclient {cmds}:\n{out}");
    for want in [
        "OPIPESMB2",
        "netname: tmp",
        "netname: IPC$",
        "Domain Name: OPIPETEST",
        "SeBackupPrivilege",
        "Account Name: Anonymous Logon",
        "type:\t0x80000003",
    ] {
        assert!(
            out.contains(want),
            "rpcclient {cmds}: no {want:?} in\n{out}"
        );
    }
    let opened = server.opened.lock().unwrap().clone();
    assert_eq!(opened[2].0, "srvsvc", "the NT1-first smbclient's open");
    assert_eq!(opened[2].1.flags, USER_FLAG_GUEST);
    assert!(
        opened[3..].iter().any(|(name, _)| name == "lsarpc"),
        "{opened:?}"
    );
    assert!(opened[3..]
        .iter()
        .all(|(_, u)| u.session_id == opened[3].1.session_id));
    assert!(server.errors.lock().unwrap().is_empty());
}

/// Many clients at once, each on its own connection and session.
#[test]
fn concurrent_rpcclients_through_the_core() {
    const CLIENTS: usize = 32;
    if !clients_installed() {
        return;
    }
    let Some(rpcd) = SambaRpcd::start("OPIPEMANY") else {
        return;
    };
    let server = Server::start(&rpcd.ncalrpc_dir.join("np"));
    let port = server.port.to_string();
    let start = Instant::now();
    let runs: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let port = port.clone();
            std::thread::spawn(move || rpcclient(&port, "srvinfo"))
        })
        .collect();
    for r in runs {
        let (code, out) = r.join().unwrap();
        assert_eq!(code, Some(0), "rpcclient:\n{out}");
        assert!(out.contains("OPIPEMANY"), "rpcclient:\n{out}");
    }
    let opened = server.opened.lock().unwrap().clone();
    assert_eq!(opened.len(), CLIENTS);
    let mut sessions: Vec<u64> = opened.iter().map(|(_, u)| u.session_id).collect();
    sessions.sort_unstable();
    sessions.dedup();
    assert_eq!(sessions.len(), CLIENTS, "one session id per client");
    assert!(server.errors.lock().unwrap().is_empty());
    eprintln!(
        "{CLIENTS} concurrent rpcclient srvinfo through the core: {:?}",
        start.elapsed()
    );
}
