//! Samba's own daemons as the CLI runs them, for `opipe bench`:
//!
//! * [`rpcd`]: `samba-dcerpcd`, Samba's RPC server, as the pipe service
//!   (`--target samba-rpcd`, behind the pipe bench's engines and behind
//!   both SMB servers of `--smb2`);
//! * [`smbd`]: Samba's SMB server, the one `--smb2` measures `opipe smb2`
//!   against;
//! * [`conf`]: the `smb.conf` both are started with (every state path in a
//!   private temporary directory, loopback only);
//! * [`probe`]: one whole srvsvc call on samba-dcerpcd's pipe, to check it
//!   and to learn the sizes of the call the bench repeats.
//!
//! Each daemon runs in its own process group (both fork: smbd one process
//! per connection, samba-dcerpcd its `rpcd_*` workers) under a
//! [`Daemon`](crate::bench::daemon::Daemon) guard, which stops the group by
//! its id and removes the directory, and which lists both in the bench's
//! [`Cleanup`](crate::bench::daemon::Cleanup) for its signal thread.

pub mod conf;
pub mod probe;
pub mod rpcd;
pub mod smbd;
