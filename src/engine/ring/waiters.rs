//! The requests waiting for a pipe's multishot chunks, in order. Almost
//! always one (a transceive's reply), so the first waits inline in the
//! pipe entry and only later ones go to a queue: a reply arriving at one
//! of many busy pipes costs no look at a queue buffer elsewhere in memory.

use std::collections::VecDeque;

/// First-come-first-served request keys; `first` is `None` only when the
/// whole list is empty.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    first: Option<(u32, u32)>,
    rest: VecDeque<(u32, u32)>,
}

impl Waiters {
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn push_back(&mut self, key: (u32, u32)) {
        if self.first.is_none() {
            debug_assert!(self.rest.is_empty());
            self.first = Some(key);
        } else {
            self.rest.push_back(key);
        }
    }

    /// Puts `key` back in front (a waiter taken off that could not be
    /// served yet).
    pub(super) fn push_front(&mut self, key: (u32, u32)) {
        if let Some(first) = self.first.replace(key) {
            self.rest.push_front(first);
        }
    }

    /// The first waiter, left in place.
    pub(super) fn front(&self) -> Option<&(u32, u32)> {
        self.first.as_ref()
    }

    pub(super) fn pop_front(&mut self) -> Option<(u32, u32)> {
        let first = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(first)
    }

    /// Removes `key` wherever it waits; false if it does not. Every
    /// finished request asks, and almost always finds the list empty (a
    /// reply took its waiter off) or `key` first: those answers are
    /// inlined, the queue's search is not.
    #[inline(always)]
    pub(super) fn remove(&mut self, key: (u32, u32)) -> bool {
        if self.first == Some(key) {
            self.pop_front();
            return true;
        }
        !self.rest.is_empty() && self.remove_queued(key)
    }

    #[inline(never)]
    fn remove_queued(&mut self, key: (u32, u32)) -> bool {
        match self.rest.iter().position(|k| *k == key) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }
}

impl IntoIterator for Waiters {
    type Item = (u32, u32);
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<(u32, u32)>,
        std::collections::vec_deque::IntoIter<(u32, u32)>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_through_the_inline_first_and_removal_anywhere() {
        let mut w = Waiters::default();
        assert!(w.is_empty());
        assert_eq!(w.pop_front(), None);
        for k in 1..=4 {
            w.push_back((k, 0));
        }
        assert!(!w.is_empty());
        assert!(w.remove((3, 0)), "from the queue");
        assert!(!w.remove((3, 0)), "only once");
        assert!(w.remove((1, 0)), "the first: the next moves up");
        assert_eq!(w.first, Some((2, 0)));
        assert_eq!(w.pop_front(), Some((2, 0)));
        w.push_back((5, 0));
        assert_eq!(w.pop_front(), Some((4, 0)));
        assert_eq!(w.pop_front(), Some((5, 0)));
        assert!(w.is_empty() && w.rest.is_empty());
        w.push_back((6, 0));
        w.push_back((7, 0));
        assert_eq!(w.into_iter().collect::<Vec<_>>(), vec![(6, 0), (7, 0)]);
    }

    #[test]
    fn push_front_puts_a_waiter_back_before_the_others() {
        let mut w = Waiters::default();
        w.push_front((1, 0));
        assert_eq!(w.first, Some((1, 0)));
        w.push_back((2, 0));
        let k = w.pop_front().unwrap();
        w.push_front(k);
        w.push_front((0, 0));
        assert_eq!(w.into_iter().collect::<Vec<_>>(), [(0, 0), (1, 0), (2, 0)]);
    }

    #[test]
    fn one_waiter_never_touches_the_queue() {
        let mut w = Waiters::default();
        for k in 0..100 {
            w.push_back((k, 1));
            assert_eq!(w.pop_front(), Some((k, 1)));
        }
        assert_eq!(w.rest.capacity(), 0, "no queue buffer was allocated");
    }
}
