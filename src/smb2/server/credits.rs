//! The command sequence window (MS-SMB2 3.3.1.1): which MessageIds a client
//! may use next. Every id is granted once (by the credits of a response)
//! and may be used once; a request whose id was used before, or was never
//! granted, ends the connection.
//!
//! The window is `[low, limit)`: every id below `low` is used, `limit` is
//! one past the highest id granted. The ids inside it that are used already
//! (a client may use its ids out of order) are marked in `used`, one flag
//! per id from `low`. The span `limit - low` is bounded (a client that
//! never uses one of its ids stops being granted more once the span
//! reaches the bound), so the flags take bounded memory.

use std::collections::VecDeque;

/// Why a MessageId is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SeqError {
    /// At or past `limit`: never granted (or overflowing).
    OutsideWindow,
    /// Granted, and already used by an earlier request.
    Reused,
}

impl SeqError {
    pub(super) fn reason(self) -> &'static str {
        match self {
            SeqError::OutsideWindow => "MessageId outside the credit window",
            SeqError::Reused => "MessageId used twice",
        }
    }
}

#[derive(Debug)]
pub(super) struct SeqWindow {
    low: u64,
    limit: u64,
    /// `used[i]`: id `low + i` was used. Never longer than `limit - low`;
    /// its front is always false (used ids at the front are dropped).
    used: VecDeque<bool>,
    /// How many flags in `used` are set.
    used_count: u64,
}

impl SeqWindow {
    /// A new connection: id 0 is granted (for the NEGOTIATE).
    pub(super) fn new() -> SeqWindow {
        SeqWindow {
            low: 0,
            limit: 1,
            used: VecDeque::new(),
            used_count: 0,
        }
    }

    /// Whether any id was used yet.
    pub(super) fn any_used(&self) -> bool {
        self.low > 0 || self.used_count > 0
    }

    /// Uses ids `id .. id + charge` (a multi-credit request uses `charge`
    /// ids). All of them must be granted and unused; nothing is marked
    /// otherwise.
    pub(super) fn consume(&mut self, id: u64, charge: u64) -> Result<(), SeqError> {
        let end = id.checked_add(charge).ok_or(SeqError::OutsideWindow)?;
        if end > self.limit {
            return Err(SeqError::OutsideWindow);
        }
        if id < self.low {
            // Every id below `low` was used.
            return Err(SeqError::Reused);
        }
        let first = (id - self.low) as usize;
        let last = (end - self.low) as usize;
        if (first..last).any(|i| self.used.get(i).copied().unwrap_or(false)) {
            return Err(SeqError::Reused);
        }
        if self.used.len() < last {
            self.used.resize(last, false);
        }
        for i in first..last {
            self.used[i] = true;
        }
        self.used_count += charge;
        while self.used.front() == Some(&true) {
            self.used.pop_front();
            self.low += 1;
            self.used_count -= 1;
        }
        Ok(())
    }

    /// Ids granted and not used yet: the credits the client holds.
    pub(super) fn outstanding(&self) -> u64 {
        self.limit - self.low - self.used_count
    }

    /// Grants up to `asked` (at least one asked) more ids, keeping the
    /// client's credits at most `max_credits` and the window's span at most
    /// `max_span`; a client left with no credit at all always gets one.
    /// Returns the number granted.
    pub(super) fn grant(&mut self, asked: u16, max_credits: u16, max_span: u64) -> u16 {
        let outstanding = self.outstanding();
        let room = u64::from(max_credits).saturating_sub(outstanding);
        let span_room = max_span.saturating_sub(self.limit - self.low);
        let mut g = u64::from(asked.max(1)).min(room).min(span_room);
        if g == 0 && outstanding == 0 {
            g = 1;
        }
        self.limit += g;
        g as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_granted_id_is_used_once() {
        let mut w = SeqWindow::new();
        assert!(!w.any_used());
        assert_eq!(w.consume(0, 1), Ok(()));
        assert!(w.any_used());
        assert_eq!(w.consume(0, 1), Err(SeqError::Reused));
        assert_eq!(w.consume(1, 1), Err(SeqError::OutsideWindow));
        assert_eq!(w.grant(10, 512, 2048), 10);
        assert_eq!(w.outstanding(), 10);
        // Out of order: 5, then 3 again is fine, 5 again is not.
        assert_eq!(w.consume(5, 1), Ok(()));
        assert_eq!(w.consume(5, 1), Err(SeqError::Reused));
        assert_eq!(w.consume(3, 1), Ok(()));
        assert_eq!(w.consume(3, 1), Err(SeqError::Reused));
        // A multi-credit request over a used id is refused whole.
        assert_eq!(w.consume(4, 2), Err(SeqError::Reused));
        assert_eq!(w.outstanding(), 8);
        assert_eq!(w.consume(1, 2), Ok(()));
        assert_eq!(w.consume(4, 1), Ok(()));
        // 1..=5 used: the window slid to 6.
        assert_eq!(w.low, 6);
        assert!(w.used.is_empty());
        assert_eq!(w.consume(11, 1), Err(SeqError::OutsideWindow));
        assert_eq!(w.consume(u64::MAX, 2), Err(SeqError::OutsideWindow));
    }

    #[test]
    fn credits_are_capped_and_a_hole_bounds_the_span() {
        let mut w = SeqWindow::new();
        w.consume(0, 1).unwrap();
        assert_eq!(w.grant(1000, 16, 64), 16);
        assert_eq!(w.grant(1000, 16, 64), 0);
        // The client never uses id 1 and keeps going with the rest.
        for next in 2..202 {
            if w.consume(next, 1).is_err() {
                break;
            }
            w.grant(1, 16, 64);
        }
        assert!(w.limit - w.low <= 64, "span {}", w.limit - w.low);
        assert!(w.used.len() <= 64);
        // Id 1 is still there to use; then the window slides on.
        assert_eq!(w.consume(1, 1), Ok(()));
        assert!(w.grant(1, 16, 64) >= 1);
    }

    #[test]
    fn a_client_without_credits_gets_one() {
        let mut w = SeqWindow::new();
        w.consume(0, 1).unwrap();
        assert_eq!(w.outstanding(), 0);
        assert_eq!(w.grant(0, 0, 0), 1);
        assert_eq!(w.consume(1, 1), Ok(()));
    }
}
