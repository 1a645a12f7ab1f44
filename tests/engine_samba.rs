//! The engine in Samba's pipe dialect against the real thing: a standalone
//! `samba-dcerpcd` in a temp dir (tests/common/samba.rs). Skipped, loudly,
//! only where Samba is not installed.

mod common;

use std::time::Duration;

use common::samba::SambaRpcd;
use opipe::engine::{BackendChoice, Dialect, Engine, EngineConfig, FileType, OpenOptions};
use opipe::protocol::npa::NpaIdentity;
use opipe::protocol::NtStatus;

const NETBIOS_NAME: &str = "TESTSRV";

fn engine(rpcd: &SambaRpcd, backend: BackendChoice) -> Option<Engine> {
    let mut cfg = EngineConfig::new(&rpcd.ncalrpc_dir);
    cfg.dialect = Dialect::Samba;
    cfg.backend = backend;
    cfg.open_timeout = Duration::from_secs(10);
    common::start_engine(cfg)
}

#[test]
fn opens_srvsvc_on_both_backends_and_a_missing_pipe_is_not_found() {
    let Some(rpcd) = SambaRpcd::start(NETBIOS_NAME) else {
        return;
    };
    let logs = rpcd.logs();
    common::bounded(Duration::from_secs(60), move || {
        for backend in [BackendChoice::IoUring, BackendChoice::Epoll] {
            let Some(e) = engine(&rpcd, backend) else {
                continue;
            };
            // Mapped from the NetUserInfo, then an explicit anonymous one.
            let pipe = e
                .open("\\PIPE\\SRVSVC", common::user(3), None)
                .wait()
                .unwrap_or_else(|s| panic!("{backend:?}: open: {s}\n{logs}"));
            let info = pipe.info();
            assert_eq!(info.name.as_str(), "srvsvc");
            assert_eq!(info.session_id, 3);
            assert_eq!(info.file_type, FileType::MessagePipe);
            assert_eq!(info.device_state, 0x05ff);
            assert_eq!(info.allocation_size, 4096, "Samba's, not illumos' 4280");
            pipe.close().wait().expect("close");
            let anon = OpenOptions {
                identity: Some(NpaIdentity::anonymous()),
            };
            let pipe = e
                .open_with("srvsvc", common::user(4), anon, None)
                .wait()
                .unwrap_or_else(|s| panic!("{backend:?}: anonymous open: {s}"));
            drop(pipe);
            let missing = e.open("\\PIPE\\nosuchpipe", common::user(5), None).wait();
            assert_eq!(
                missing.err(),
                Some(NtStatus::OBJECT_NAME_NOT_FOUND),
                "{backend:?}"
            );
        }
    });
}
