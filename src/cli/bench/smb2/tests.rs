//! The load client and the smbd runner against the real thing: Debian's
//! smbd in front of an in-process pipe service (Samba dialect, srvsvc).
//! Skipped, loudly, where smbd is not installed.

use std::net::SocketAddr;
use std::time::Duration;

use opipe::protocol::Dialect;
use opipe::service::{Service, ServiceHandle, SrvsvcFactory};

use super::client::{Connection, Target};
use super::runner::{self, RunPlan};
use crate::bench::daemon::{private_dir, Cleanup};
use crate::bench::sys;
use crate::samba::smbd::{self, Smbd};

const NAME: &str = "UNITSVC";

fn require_smbd(test: &str) -> bool {
    if smbd::installed() {
        return true;
    }
    eprintln!(
        "SKIPPED: samba not installed ({} missing); {test} did not run. Install: \
         apt-get install --no-install-recommends samba smbclient samba-common-bin",
        smbd::SMBD
    );
    false
}

/// A pipe service and smbd in front of it; the directory removed at the end.
struct Rig {
    smbd: Option<Smbd>,
    _service: ServiceHandle,
    dir: std::path::PathBuf,
}

impl Rig {
    fn start(cleanup: &Cleanup) -> Rig {
        let dir = private_dir("opipe-unit-pipes").unwrap();
        let service = Service::builder(&dir)
            .dialect(Dialect::Samba)
            .pipe("srvsvc")
            .handler(SrvsvcFactory::new(NAME))
            .start()
            .unwrap();
        let smbd = Smbd::start(&dir, cleanup).unwrap();
        Rig {
            smbd: Some(smbd),
            _service: service,
            dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.smbd.as_ref().unwrap().addr
    }

    fn pgid(&self) -> u32 {
        self.smbd.as_ref().unwrap().pgid()
    }

    /// Stops smbd; checks no process of its group is left.
    fn stop(&mut self) {
        let pgid = self.pgid();
        drop(self.smbd.take());
        assert!(
            !sys::group_alive(pgid),
            "smbd's group {pgid} outlived its guard"
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.smbd.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn four_connections_through_smbd_make_100_verified_calls_each() {
    if !require_smbd("four_connections_through_smbd_make_100_verified_calls_each") {
        return;
    }
    let cleanup = Cleanup::default();
    let mut rig = Rig::start(&cleanup);
    let target = Target {
        addr: rig.addr(),
        server_name: NAME.into(),
    };
    let done = rt().block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let target = target.clone();
                tokio::spawn(async move {
                    let mut c = Connection::open(&target).await?;
                    let n = c.negotiated();
                    for _ in 0..100 {
                        c.call().await?;
                    }
                    Ok::<_, super::client::ClientError>(n)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(tokio::time::timeout(Duration::from_secs(60), t).await);
        }
        out
    });
    for r in done {
        let n = r
            .expect("bounded")
            .expect("joined")
            .unwrap_or_else(|e| panic!("{e}{}", rig.smbd.as_ref().unwrap().daemon.log_tail()));
        // smbd picks the highest dialect offered (its SessionFlags for an
        // anonymous login are 0: it maps anonymous to guest internally
        // and sets neither IS_NULL nor IS_GUEST).
        assert_eq!(n.dialect, 0x0311, "{n:?}");
    }
    rig.stop();
}

#[test]
fn a_reply_naming_another_server_is_an_error() {
    if !require_smbd("a_reply_naming_another_server_is_an_error") {
        return;
    }
    let cleanup = Cleanup::default();
    let mut rig = Rig::start(&cleanup);
    let target = Target {
        addr: rig.addr(),
        server_name: "SOMEONE-ELSE".into(),
    };
    let err = rt().block_on(async {
        let mut c = Connection::open(&target).await.unwrap();
        c.call().await.unwrap_err()
    });
    assert!(
        err.to_string().contains(r#"server name Some("UNITSVC")"#),
        "{err}"
    );
    rig.stop();
}

#[test]
fn a_run_measures_smbd_s_processes_and_leaves_none() {
    if !require_smbd("a_run_measures_smbd_s_processes_and_leaves_none") {
        return;
    }
    let cleanup = Cleanup::default();
    let mut rig = Rig::start(&cleanup);
    let plan = RunPlan {
        target: Target {
            addr: rig.addr(),
            server_name: NAME.into(),
        },
        connections: 3,
        duration: Duration::from_millis(300),
        stall: Duration::from_secs(20),
        server_pgid: rig.pgid(),
        service_pid: None,
    };
    let m = runner::run(&plan).unwrap();
    assert_eq!(m.connected, 3);
    assert_eq!(m.recorded.errors, 0, "{:?}", m.recorded.error_samples);
    assert!(m.recorded.transceives > 10, "{}", m.recorded.transceives);
    // The parent smbd and one per connection, at least.
    assert!(m.server_processes > 3, "{}", m.server_processes);
    assert!(m.server_cpu > Duration::ZERO);
    assert!(m.elapsed >= Duration::from_millis(300));
    rig.stop();
}

/// opipe's own SMB2 core (`opipe::smb2::server`, what `opipe smb2` is
/// built on) on a blocking loopback TCP server, its pipes answered at once
/// by the srvsvc handler of the pipe service: the load client must work
/// against it as against smbd.
mod core {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::task::Poll;

    use opipe::protocol::{NetUserInfo, NtStatus, PipeName};
    use opipe::service::{Handler, HandlerFactory, SrvsvcFactory};
    use opipe::smb2::server::{
        Connection as Core, OpId, PipeBackend, PipeData, PipeRef, ServerConfig,
    };

    use super::*;

    struct Pipes {
        factory: SrvsvcFactory,
        open: HashMap<u64, Box<dyn Handler>>,
        next: u64,
    }

    impl PipeBackend for Pipes {
        fn open(
            &mut self,
            _: OpId,
            name: &str,
            user: &NetUserInfo,
        ) -> Poll<Result<PipeRef, NtStatus>> {
            let Ok(pipe) = PipeName::parse(name) else {
                return Poll::Ready(Err(NtStatus::OBJECT_NAME_NOT_FOUND));
            };
            self.next += 1;
            self.open.insert(self.next, self.factory.open(&pipe, user));
            Poll::Ready(Ok(PipeRef(self.next)))
        }

        fn transceive(
            &mut self,
            _: OpId,
            pipe: PipeRef,
            input: Vec<u8>,
            _max_out: usize,
        ) -> Poll<Result<PipeData, NtStatus>> {
            let Some(h) = self.open.get_mut(&pipe.0) else {
                return Poll::Ready(Err(NtStatus::INVALID_HANDLE));
            };
            let mut out = Vec::new();
            Poll::Ready(match h.on_data(&input, &mut out) {
                Ok(()) => Ok(PipeData::ok(out)),
                Err(_) => Err(NtStatus::PIPE_BROKEN),
            })
        }

        fn peek(&mut self, _: OpId, _: PipeRef, _: usize) -> Poll<Result<PipeData, NtStatus>> {
            Poll::Ready(Err(NtStatus::NOT_SUPPORTED))
        }

        fn wait(&mut self, _: OpId, _: &[u8]) -> Poll<Result<(), NtStatus>> {
            Poll::Ready(Ok(()))
        }

        fn read(&mut self, _: OpId, _: PipeRef, _: usize) -> Poll<Result<PipeData, NtStatus>> {
            Poll::Ready(Err(NtStatus::NOT_SUPPORTED))
        }

        fn write(&mut self, _: OpId, _: PipeRef, _: Vec<u8>) -> Poll<Result<usize, NtStatus>> {
            Poll::Ready(Err(NtStatus::NOT_SUPPORTED))
        }

        fn cancel(&mut self, _: OpId) {}

        fn close(&mut self, pipe: PipeRef) {
            self.open.remove(&pipe.0);
        }

        fn logoff(&mut self, _: u64) {}
    }

    /// Serves `connections` connections, one thread each, then ends.
    fn serve(connections: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for seed in 0..connections as u64 {
                let (mut s, peer) = l.accept().unwrap();
                std::thread::spawn(move || {
                    let mut core = Core::new(ServerConfig::default(), peer, seed);
                    let mut pipes = Pipes {
                        factory: SrvsvcFactory::new(NAME),
                        open: HashMap::new(),
                        next: 0,
                    };
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let r = core.receive(&buf[..n], 0, &mut pipes);
                        if s.write_all(&core.take_output()).is_err() || r.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn the_client_works_against_opipe_s_own_smb2_core() {
        let target = Target {
            addr: serve(2),
            server_name: NAME.into(),
        };
        let out = rt().block_on(async {
            let mut flags = Vec::new();
            for _ in 0..2 {
                let mut c =
                    tokio::time::timeout(Duration::from_secs(20), Connection::open(&target))
                        .await
                        .expect("bounded")
                        .unwrap_or_else(|e| panic!("{e}"));
                for _ in 0..50 {
                    c.call().await.unwrap_or_else(|e| panic!("{e}"));
                }
                flags.push(c.negotiated());
            }
            flags
        });
        for n in out {
            assert_eq!(n.dialect, 0x0311, "{n:?}");
        }
    }
}
