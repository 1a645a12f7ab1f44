//! Which event loop serves the connections: io_uring (the default) or the
//! epoll fallback for machines where io_uring is switched off.

use std::fmt;
use std::str::FromStr;

use crate::ring::bufring::BufRing;
use crate::ring::{new_ring, probe_features, RingError};

/// The backend a service is asked to use ([`ServiceBuilder::backend`]).
///
/// [`ServiceBuilder::backend`]: super::ServiceBuilder::backend
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the kernel grants a ring with everything the loop
    /// needs, else epoll (with one line on stderr saying why).
    #[default]
    Auto,
    /// io_uring or nothing: start fails with [`ServiceError::Ring`] where
    /// io_uring is unavailable.
    ///
    /// [`ServiceError::Ring`]: super::ServiceError::Ring
    IoUring,
    /// epoll, without touching io_uring at all.
    Epoll,
}

/// The backend a running service uses ([`ServiceHandle::backend`]).
///
/// [`ServiceHandle::backend`]: super::ServiceHandle::backend
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One io_uring per service thread (multishot accept and receive on a
    /// provided-buffer ring).
    IoUring,
    /// One level-triggered epoll instance per service thread.
    Epoll,
}

impl Backend {
    /// The backend's name: `io_uring` or `epoll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io-uring",
            BackendChoice::Epoll => "epoll",
        })
    }
}

/// Parses `auto`, `io-uring` (or `io_uring`, `uring`) and `epoll`.
impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "io-uring" | "io_uring" | "uring" => Ok(BackendChoice::IoUring),
            "epoll" => Ok(BackendChoice::Epoll),
            _ => Err(format!(
                "unknown backend {s:?} (expected auto, io-uring or epoll)"
            )),
        }
    }
}

/// Asks the kernel for what the io_uring loop needs: a ring (through
/// [`new_ring`], so a refusal comes back as [`RingError::Unavailable`]),
/// every required opcode, and a provided-buffer ring. Everything is torn
/// down again before returning.
pub(crate) fn probe_io_uring() -> Result<(), RingError> {
    let (ring, _flags) = new_ring(8, 16)?;
    probe_features(&ring)?;
    let mut bufs = BufRing::new(&ring, 0, 1, 64).map_err(RingError::Io)?;
    bufs.unregister(&ring).map_err(RingError::Io)?;
    Ok(())
}

/// Resolves a choice: `Ok(backend)`, plus, for `Auto` falling back, why.
pub(crate) fn resolve(choice: BackendChoice) -> (Backend, Option<RingError>) {
    match choice {
        BackendChoice::IoUring => (Backend::IoUring, None),
        BackendChoice::Epoll => (Backend::Epoll, None),
        BackendChoice::Auto => match probe_io_uring() {
            Ok(()) => (Backend::IoUring, None),
            Err(e) => (Backend::Epoll, Some(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for c in [
            BackendChoice::Auto,
            BackendChoice::IoUring,
            BackendChoice::Epoll,
        ] {
            assert_eq!(c.to_string().parse::<BackendChoice>(), Ok(c));
        }
        assert_eq!("io_uring".parse(), Ok(BackendChoice::IoUring));
        assert!("kqueue".parse::<BackendChoice>().is_err());
        assert_eq!(Backend::IoUring.to_string(), "io_uring");
        assert_eq!(Backend::Epoll.to_string(), "epoll");
        assert_eq!(BackendChoice::default(), BackendChoice::Auto);
    }

    #[test]
    fn explicit_choices_need_no_probe() {
        assert_eq!(resolve(BackendChoice::Epoll).0, Backend::Epoll);
        assert_eq!(resolve(BackendChoice::IoUring).0, Backend::IoUring);
        let (b, why) = resolve(BackendChoice::Auto);
        // Auto falls back exactly when the probe fails.
        assert_eq!(b == Backend::Epoll, why.is_some());
    }
}
