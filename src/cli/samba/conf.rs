//! The `smb.conf` of a Samba daemon the CLI starts (the recipe of the
//! project's shared notes, SAMBA.md).

use std::fs;
use std::io;
use std::path::Path;

/// The `[global]` section of a Samba daemon that lives wholly in `root`
/// (every state path under it, its directories made), named
/// `netbios_name`: loopback only, no printers or NetBIOS, guest mapping
/// for anonymous logins, RPC helpers not started on demand, logging at
/// level 0 into `root/<log>` (the bench measures the daemon, not its
/// logger). Shared by smbd and samba-dcerpcd.
pub fn samba_global(root: &Path, netbios_name: &str, log: &str) -> io::Result<String> {
    for sub in [
        "lock", "state", "cache", "private", "bind-dns", "pid", "ncalrpc",
    ] {
        fs::create_dir_all(root.join(sub))?;
    }
    let p = |sub: &str| root.join(sub).display().to_string();
    Ok(format!(
        "[global]\n\
         netbios name = {netbios_name}\n\
         workgroup = OPIPEBENCH\n\
         server role = standalone server\n\
         lock directory = {lock}\n\
         state directory = {state}\n\
         cache directory = {cache}\n\
         private dir = {private}\n\
         binddns dir = {binddns}\n\
         pid directory = {pid}\n\
         ncalrpc dir = {ncalrpc}\n\
         log file = {log}\n\
         log level = 0\n\
         passdb backend = tdbsam:{passdb}\n\
         interfaces = lo\n\
         bind interfaces only = yes\n\
         disable netbios = yes\n\
         load printers = no\n\
         disable spoolss = yes\n\
         map to guest = Bad User\n\
         rpc start on demand helpers = no\n",
        lock = p("lock"),
        state = p("state"),
        cache = p("cache"),
        private = p("private"),
        binddns = p("bind-dns"),
        pid = p("pid"),
        ncalrpc = p("ncalrpc"),
        log = p(log),
        passdb = root.join("private/passdb.tdb").display(),
    ))
}

/// Writes `<dir>/smb.conf` (`text`) and creates `<dir>/stderr.log` for the
/// daemon's stderr; on failure removes `dir` (its caller's only clean-up).
pub fn prepare(dir: &Path, text: impl FnOnce() -> io::Result<String>) -> io::Result<fs::File> {
    let made = (|| {
        fs::write(dir.join("smb.conf"), text()?)?;
        fs::File::create(dir.join("stderr.log"))
    })();
    if made.is_err() {
        let _ = fs::remove_dir_all(dir);
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_path_is_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let text = samba_global(root.path(), "NAME", "x.log").unwrap();
        assert!(text.contains("netbios name = NAME\n"), "{text}");
        assert!(
            text.contains("rpc start on demand helpers = no\n"),
            "{text}"
        );
        let root_s = root.path().display().to_string();
        for line in text.lines().filter(|l| l.contains('/')) {
            assert!(line.contains(&root_s), "{line}");
        }
        assert!(root.path().join("ncalrpc").is_dir());
    }
}
