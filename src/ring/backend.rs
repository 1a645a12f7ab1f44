//! The one backend resolution of the crate: which I/O backend an engine
//! or a service runs on. [`resolve`] probes io_uring for everything either
//! side needs and falls back to epoll, with the reason, where it is refused.

use super::bufring::BufRing;
use super::setup::{io_uring_available, new_ring, RingError};

pub use super::op::Backend;

/// The backend an engine or a service is asked to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the kernel grants a ring with everything needed, else
    /// epoll, with the reason logged once. The default.
    #[default]
    Auto,
    /// io_uring or nothing: start-up fails with a plain-words error where
    /// io_uring is refused.
    IoUring,
    /// epoll, without touching io_uring at all.
    Epoll,
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io-uring",
            BackendChoice::Epoll => "epoll",
        })
    }
}

/// Parses `auto`, `io-uring` (or `io_uring`, `uring`) and `epoll`.
impl std::str::FromStr for BackendChoice {
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

/// Asks the kernel for what the io_uring engine and service need: a ring
/// (through [`new_ring`], so a refusal comes back as
/// [`RingError::Unavailable`]), every required opcode, and a provided-buffer
/// ring. Everything is torn down again before returning.
pub(crate) fn probe_io_uring() -> Result<(), RingError> {
    io_uring_available()?;
    let (ring, _flags) = new_ring(8, 16)?;
    let mut bufs = BufRing::new(&ring, 0, 1, 64).map_err(RingError::Io)?;
    bufs.unregister(&ring).map_err(RingError::Io)?;
    Ok(())
}

/// Resolves a choice: the backend, plus, for `Auto` falling back to epoll,
/// why io_uring was refused. Explicit choices probe nothing.
pub fn resolve(choice: BackendChoice) -> (Backend, Option<RingError>) {
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
