//! A box that keeps a small value inline, seen through a `dyn` view.
//!
//! The engine stores one completion callback per request. In a
//! `Box<dyn FnOnce>` the closure lives in its own heap block: a `malloc`
//! when the request starts, a `free` when it ends, and, with thousands of
//! pipes busy, a cache miss of its own when the callback is called one
//! round trip later (the block is cold by then, and its address is only
//! known once the request's entry has been read). An [`InlineBox`] holds a
//! value of up to [`INLINE_BYTES`] bytes in place, so a callback travels
//! inside the request's entry and comes into the cache with it.
//!
//! The view is a [`View`] implementation, written in safe code where the
//! `dyn` type is known: it turns `&mut F` into `&mut T` (an unsizing
//! coercion). Storing a function that makes that coercion (instead of
//! the pointer metadata, which stable Rust cannot put back together with
//! another address) keeps this module small: the only `unsafe` here reads
//! an `F` back out of the bytes it was written into, and drops it.

use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};

/// The largest value kept inline (eight words; the storage's alignment is
/// one word).
pub(crate) const INLINE_BYTES: usize = 64;

/// Turns `&mut self` into the `dyn` view `T` (see the module docs).
pub(crate) trait View<T: ?Sized> {
    fn view(&mut self) -> &mut T;
}

/// A value of some type `F: View<T>` stored in place, used as a `T`.
pub(crate) struct InlineBox<T: ?Sized> {
    data: MaybeUninit<[usize; INLINE_BYTES / size_of::<usize>()]>,
    /// `F`'s view, for the `F` in `data`.
    view: unsafe fn(*mut u8) -> *mut T,
    /// Drops the `F` in `data`.
    drop: unsafe fn(*mut u8),
    /// Owns an `F`, which is `Send` (see [`InlineBox::new`]) but not
    /// necessarily `Sync`.
    _owns: PhantomData<*mut T>,
}

// SAFETY: `new` takes only values that are `Send`, and an `InlineBox` gives
// access to its value only through `&mut self`.
unsafe impl<T: ?Sized> Send for InlineBox<T> {}

/// # Safety
/// `p` points to a live `F`, valid for the returned pointer's use.
unsafe fn view_of<F: View<T>, T: ?Sized>(p: *mut u8) -> *mut T {
    // SAFETY: by the caller, `p` is a live, aligned `F`.
    let f = unsafe { &mut *p.cast::<F>() };
    f.view()
}

/// # Safety
/// `p` points to a live `F`, which is dropped and not used again.
unsafe fn drop_of<F>(p: *mut u8) {
    // SAFETY: by the caller.
    unsafe { std::ptr::drop_in_place(p.cast::<F>()) }
}

impl<T: ?Sized> InlineBox<T> {
    /// Stores `f` in place, or gives it back if it is larger than
    /// [`INLINE_BYTES`] or needs more than a word's alignment.
    pub(crate) fn new<F: View<T> + Send + 'static>(f: F) -> Result<Self, F> {
        if size_of::<F>() > INLINE_BYTES || align_of::<F>() > align_of::<usize>() {
            return Err(f);
        }
        let mut b = InlineBox {
            data: MaybeUninit::uninit(),
            view: view_of::<F, T>,
            drop: drop_of::<F>,
            _owns: PhantomData,
        };
        // SAFETY: `data` is large and aligned enough for `F` (checked
        // above) and holds nothing yet.
        unsafe { b.data.as_mut_ptr().cast::<F>().write(f) };
        Ok(b)
    }

    /// The stored value, as a `T`.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        let p = self.data.as_mut_ptr().cast::<u8>();
        // SAFETY: `data` holds the `F` that `view` was made for (moving the
        // box moves the bytes with it, as moving the `F` would), and the
        // result borrows `self` mutably, as `F::view` borrowed the `F`.
        unsafe { &mut *(self.view)(p) }
    }
}

impl<T: ?Sized> Drop for InlineBox<T> {
    fn drop(&mut self) {
        // SAFETY: `data` holds the live `F` that `drop` was made for, and
        // nothing uses it after this.
        unsafe { (self.drop)(self.data.as_mut_ptr().cast()) }
    }
}

impl<T: ?Sized> std::fmt::Debug for InlineBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineBox")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    type Count = dyn FnMut(usize) -> usize + Send;

    struct Adder<F>(F);
    impl<F: FnMut(usize) -> usize + Send + 'static> View<Count> for Adder<F> {
        fn view(&mut self) -> &mut Count {
            &mut self.0
        }
    }

    /// Counts its drops.
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn small_values_are_kept_inline_and_called_after_moves() {
        let drops = Arc::new(AtomicUsize::new(0));
        let guard = Dropped(drops.clone());
        let mut total = 10;
        let f = Adder(move |x| {
            let _ = &guard;
            total += x;
            total
        });
        let b = InlineBox::<Count>::new(f).ok().expect("fits");
        // Moved twice, through a Vec: the view follows the bytes.
        let mut v = vec![b];
        let mut b = v.pop().expect("one");
        assert_eq!((b.get_mut())(5), 15);
        assert_eq!((b.get_mut())(1), 16, "state kept between calls");
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once");
    }

    #[test]
    fn values_too_large_or_too_aligned_are_given_back() {
        let big = [7u64; 9];
        let r = InlineBox::<Count>::new(Adder(move |x| x + big[8] as usize));
        let f = r.expect_err("72 bytes do not fit");
        assert_eq!((f.0)(1), 8, "given back intact");

        #[repr(align(16))]
        #[derive(Clone, Copy)]
        struct Wide(u8);
        let w = Wide(3);
        let r = InlineBox::<Count>::new(Adder(move |x| {
            let w = w;
            x + w.0 as usize
        }));
        assert!(r.is_err(), "16-byte alignment does not fit");
    }

    #[test]
    fn largest_inline_value_round_trips() {
        let words = [1usize, 2, 3, 4, 5, 6, 7];
        let f = Adder(move |x| x + words.iter().sum::<usize>());
        assert_eq!(size_of_val(&f), INLINE_BYTES - 8);
        let mut b = InlineBox::<Count>::new(f).ok().expect("fits");
        assert_eq!((b.get_mut())(100), 128);
        let full = [9usize; 8];
        let f = Adder(move |x| x + full[7]);
        assert_eq!(size_of_val(&f), INLINE_BYTES);
        let mut b = InlineBox::<Count>::new(f).ok().expect("exactly fits");
        assert_eq!((b.get_mut())(1), 10);
    }
}
