//! A box that keeps a small function in place and calls it once.
//!
//! The engine stores one completion callback per request. In a
//! `Box<dyn FnOnce>` the closure lives in its own heap block: a `malloc`
//! when the request starts, a `free` when it ends, and, with thousands of
//! pipes busy, a cache miss of its own when the callback is called one
//! round trip later (the block is cold by then, and its address is only
//! known once the request's entry has been read). An [`InlineOnce`] holds a
//! function of up to [`INLINE_BYTES`] bytes in place, so a callback travels
//! inside the request's entry and comes into the cache with it.
//!
//! It stores, beside the bytes, two plain function pointers made for the
//! stored type when it was stored: one that moves the function out of the
//! bytes and calls it, one that drops it uncalled. So a call is one
//! indirect call, with no `Option` to check and clear inside the function
//! and no drop to run after it (an earlier version called a `dyn FnMut`
//! view of an `Option<F>`, then dropped the emptied `Option`: three
//! indirect calls and a copy of the closure; perf/README.md, session 14).
//! The only `unsafe` here reads the function back out of the bytes it was
//! written into, or drops it there.

use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};

/// The largest function kept inline (eight words; the storage's alignment
/// is one word).
pub(crate) const INLINE_BYTES: usize = 64;

/// A function `FnOnce(&mut C, A)` of some type stored in place.
pub(crate) struct InlineOnce<C: ?Sized, A> {
    data: MaybeUninit<[usize; INLINE_BYTES / size_of::<usize>()]>,
    /// Moves the stored function out of `data` and calls it.
    call: unsafe fn(*mut u8, &mut C, A),
    /// Drops the stored function uncalled.
    drop: unsafe fn(*mut u8),
    /// Owns a function that is `Send` (see [`InlineOnce::new`]) but not
    /// necessarily `Sync`.
    _owns: PhantomData<*mut u8>,
}

// SAFETY: `new` takes only functions that are `Send`, and an `InlineOnce`
// gives no access to its function but by value (`call`).
unsafe impl<C: ?Sized, A> Send for InlineOnce<C, A> {}

/// # Safety
/// `p` points to a live, aligned `F`, which is moved out and not used again.
unsafe fn call_of<F, C, A>(p: *mut u8, c: &mut C, a: A)
where
    F: FnOnce(&mut C, A),
    C: ?Sized,
{
    // SAFETY: by the caller.
    let f = unsafe { p.cast::<F>().read() };
    f(c, a)
}

/// # Safety
/// `p` points to a live `F`, which is dropped and not used again.
unsafe fn drop_of<F>(p: *mut u8) {
    // SAFETY: by the caller.
    unsafe { std::ptr::drop_in_place(p.cast::<F>()) }
}

impl<C: ?Sized, A> InlineOnce<C, A> {
    /// Stores `f` in place, or gives it back if it is larger than
    /// [`INLINE_BYTES`] or needs more than a word's alignment.
    pub(crate) fn new<F>(f: F) -> Result<Self, F>
    where
        F: FnOnce(&mut C, A) + Send + 'static,
    {
        if size_of::<F>() > INLINE_BYTES || align_of::<F>() > align_of::<usize>() {
            return Err(f);
        }
        let mut b = InlineOnce {
            data: MaybeUninit::uninit(),
            call: call_of::<F, C, A>,
            drop: drop_of::<F>,
            _owns: PhantomData,
        };
        // SAFETY: `data` is large and aligned enough for `F` (checked
        // above) and holds nothing yet.
        unsafe { b.data.as_mut_ptr().cast::<F>().write(f) };
        Ok(b)
    }

    /// Calls the stored function (its only call: the box is consumed).
    #[inline(always)]
    pub(crate) fn call(mut self, c: &mut C, a: A) {
        // The function leaves the bytes in `call_of`: from then on the box
        // has nothing to drop, not even if the function panics (then the
        // unwind drops the box, with `drop` a no-op). On return the box is
        // forgotten: no call at all.
        self.drop = forget_of;
        let p = self.data.as_mut_ptr().cast::<u8>();
        // SAFETY: `data` holds the live function that `call` was made for
        // (moving the box moves the bytes with it, as moving the function
        // would), and it is moved out once: the box no longer drops it.
        unsafe { (self.call)(p, c, a) };
        std::mem::forget(self);
    }
}

/// The `drop` of a box whose function was moved out: nothing to do.
unsafe fn forget_of(_: *mut u8) {}

impl<C: ?Sized, A> Drop for InlineOnce<C, A> {
    fn drop(&mut self) {
        // SAFETY: `data` holds the live function that `drop` was made for
        // (a called box is never dropped), and nothing uses it after this.
        unsafe { (self.drop)(self.data.as_mut_ptr().cast()) }
    }
}

impl<C: ?Sized, A> std::fmt::Debug for InlineOnce<C, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineOnce")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    type Once = InlineOnce<Vec<usize>, usize>;

    /// Counts its drops.
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn small_functions_are_kept_inline_and_called_once_after_moves() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(drops.clone());
        let base = 10;
        let b = Once::new(move |out: &mut Vec<usize>, x| {
            let _ = &guard;
            out.push(base + x);
        })
        .ok()
        .expect("fits");
        // Moved twice, through a Vec: the call follows the bytes.
        let mut v = vec![b];
        let b = v.pop().expect("one");
        let mut out = Vec::new();
        b.call(&mut out, 5);
        assert_eq!(out, [15]);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the captures are dropped once, when the call ends"
        );
    }

    #[test]
    fn an_uncalled_function_is_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(drops.clone());
        let b = Once::new(move |_: &mut Vec<usize>, _| {
            let _ = &guard;
            unreachable!("never called");
        })
        .ok()
        .expect("fits");
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once");
    }

    #[test]
    fn a_panicking_call_drops_its_captures_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(drops.clone());
        let b = Once::new(move |_: &mut Vec<usize>, x| {
            let _ = &guard;
            assert_ne!(x, 7, "the test's panic");
        })
        .ok()
        .expect("fits");
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.call(&mut Vec::new(), 7)));
        assert!(r.is_err(), "the call panicked");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "dropped once, by the unwind"
        );
    }

    #[test]
    fn functions_too_large_or_too_aligned_are_given_back() {
        let big = [7usize; 9];
        let r = Once::new(move |out: &mut Vec<usize>, x| out.push(x + big[8]));
        let f = r.expect_err("72 bytes do not fit");
        let mut out = Vec::new();
        f(&mut out, 1);
        assert_eq!(out, [8], "given back intact");

        #[repr(align(16))]
        #[derive(Clone, Copy)]
        struct Wide(u8);
        let w = Wide(3);
        let r = Once::new(move |out: &mut Vec<usize>, x| {
            let w = w;
            out.push(x + w.0 as usize)
        });
        assert!(r.is_err(), "16-byte alignment does not fit");
    }

    #[test]
    fn largest_inline_function_round_trips() {
        let full = [9usize; 8];
        let f = move |out: &mut Vec<usize>, x: usize| out.push(x + full.iter().sum::<usize>());
        assert_eq!(size_of_val(&f), INLINE_BYTES);
        let b = Once::new(f).ok().expect("exactly fits");
        let mut out = Vec::new();
        b.call(&mut out, 1);
        assert_eq!(out, [73]);
    }
}
