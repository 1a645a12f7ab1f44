//! Which event loop serves the connections: io_uring (the default) or the
//! epoll fallback for machines where io_uring is switched off.

use crate::ring::bufring::BufRing;
use crate::ring::{new_ring, probe_features, RingError};

pub use crate::ring::{Backend, BackendChoice};

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
