//! How an SMB server embeds the engine: open a pipe for a session,
//! transceive, cancel one request while the pipe stays usable, then
//! disconnect the session. A small echo service runs in-process so the
//! example is self-contained:
//!
//! ```text
//! cargo run --example embed
//! ```

use std::time::Duration;

use opipe::engine::{Engine, EngineConfig, Tree};
use opipe::protocol::{NetUserInfo, NtStatus};
use opipe::service::{EchoFactory, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("opipe-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // The pipe service (normally another process, like illumos smbd).
    let service = Service::builder(&dir)
        .pipe("srvsvc")
        .handler(EchoFactory)
        .start()?;

    // The SMB server side: one engine for the whole server.
    let engine = Engine::new(EngineConfig::new(&dir))?;
    let tree = Tree::new(); // the IPC$ tree connect of this client
    let session_id = 0x1234;
    let user = NetUserInfo {
        session_id,
        account: "alice".into(),
        domain: "EXAMPLE".into(),
        ..Default::default()
    };

    // SMB2 CREATE \PIPE\srvsvc -> one linked SQE chain (connect, userinfo, status).
    let pipe = engine.open("\\PIPE\\srvsvc", user, Some(&tree)).wait()?;
    println!(
        "opened {} (file id {}, device state {:#06x})",
        pipe.info().smb_name(),
        pipe.info().file_id,
        pipe.info().device_state
    );

    // SMB2 IOCTL FSCTL_PIPE_TRANSCEIVE -> one SEND SQE; the reply is the next
    // chunk of the pipe's multishot receive.
    let reply = pipe.transceive(b"bind me".to_vec(), 4280).wait()?;
    println!(
        "transceive: {} {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.data)
    );

    // SMB2 READ with nothing to read blocks in the ring; SMB2 CANCEL ends it.
    let read = pipe.read(1024);
    let cancel = read.cancel_handle();
    std::thread::sleep(Duration::from_millis(20));
    cancel.cancel();
    assert_eq!(read.wait().unwrap_err(), NtStatus::CANCELLED);
    println!("read cancelled; the pipe is still usable:");
    let reply = pipe.transceive(b"still here".to_vec(), 4280).wait()?;
    println!(
        "transceive: {} {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.data)
    );

    // Session logoff / connection loss: every request of the session ends
    // STATUS_CANCELLED and its pipes close.
    let pending = pipe.read(1024);
    engine.disconnect_session(session_id).wait()?;
    println!(
        "after disconnect, pending read: {}",
        pending.wait().unwrap_err()
    );

    drop(pipe);
    drop(engine);
    drop(service);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
