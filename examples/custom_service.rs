//! A custom pipe service in a few lines: `greeter` answers every line the
//! client sends with a greeting naming the SMB user, upper-casing the line.
//!
//! ```text
//! cargo run --example custom_service -- DIR
//! ```
//!
//! serves `DIR/greeter` until Ctrl-C (SIGINT) or SIGTERM, then prints the
//! service counters and removes the socket.

use std::process::ExitCode;

use opipe::protocol::{NetUserInfo, PipeName};
use opipe::ring::sys::BlockedSignals;
use opipe::service::{Handler, HandlerError, Service};

/// Longest line accepted; a longer one ends the connection.
const MAX_LINE_BYTES: usize = 4096;

struct Greeter {
    account: String,
    line: Vec<u8>,
}

impl Handler for Greeter {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HandlerError> {
        for &b in data {
            if b != b'\n' {
                if self.line.len() == MAX_LINE_BYTES {
                    return Err(HandlerError::new("line too long"));
                }
                self.line.push(b);
                continue;
            }
            out.extend_from_slice(format!("hello, {}: ", self.account).as_bytes());
            out.extend(self.line.iter().map(u8::to_ascii_uppercase));
            out.push(b'\n');
            self.line.clear();
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: custom_service DIR");
        return ExitCode::from(2);
    };
    // Block the stop signals before the service threads exist.
    let signals = match BlockedSignals::block(&[libc::SIGINT, libc::SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("custom_service: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Service::builder(&dir)
        .pipe("greeter")
        .handler(|_pipe: &PipeName, user: &NetUserInfo| Greeter {
            account: if user.is_anonymous() {
                "anonymous".to_owned()
            } else {
                format!("{}\\{}", user.domain, user.account)
            },
            line: Vec::new(),
        })
        .max_opens(100)
        .start();
    let svc = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("custom_service: {e}");
            return ExitCode::FAILURE;
        }
    };
    for p in svc.socket_paths() {
        eprintln!("custom_service: serving {}; Ctrl-C stops", p.display());
    }
    let _ = signals.wait();
    let stats = svc.stats();
    if let Err(e) = svc.shutdown().and_then(|()| svc.join()) {
        eprintln!("custom_service: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("custom_service: done: {stats:?}");
    ExitCode::SUCCESS
}
