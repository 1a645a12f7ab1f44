//! Turning one CQE of an operation into its [`Completion`]: a multishot
//! receive's chunk (found through the driver's compact `multi` table, the
//! op's slot untouched, its bytes lent in the pool buffer until the next
//! reap) or an op's final completion with its resources handed back, a
//! pooled receive's bytes copied out of the pool buffer (which goes back
//! at once).

use io_uring::{cqueue, types};

use super::bufring::{BufRing, Lent};
use super::op::{Completion, Op, Token};
use super::sys::prefetch;
use crate::slab::Slab;

/// An operation the kernel may still be using, and the token its
/// completion carries.
pub(super) struct Slot {
    pub(super) token: u64,
    pub(super) op: Op,
    /// A `Timer`'s duration as the kernel reads it, boxed so the pointer
    /// in its SQE stays valid until the final completion.
    pub(super) _ts: Option<Box<types::Timespec>>,
}

/// [`Token`] kinds of the driver's SQEs.
pub(super) const KIND_OP: u8 = 0;
pub(super) const KIND_CANCEL: u8 = 1;
pub(super) const KIND_WAKE: u8 = 2;
/// A held send (`Driver::push_send_held`): index and generation are its
/// token's, and `Driver::held` holds the token.
pub(super) const KIND_HELD: u8 = 3;

/// No held send under this index (`Driver::held`): no token is all ones.
pub(super) const NOT_HELD: u64 = u64::MAX;

/// The token of the held send `ud` names while it is in flight (its
/// record in `held` is there, of the same generation); `None` once its
/// final completion was reaped, or for a stale `ud`.
#[inline(always)]
pub(super) fn held_token(held: &[u64], ud: Token) -> Option<u64> {
    match held.get(ud.index() as usize) {
        Some(&t) if t != NOT_HELD && Token::from_raw(t).gen() == ud.gen() => Some(t),
        _ => None,
    }
}

/// Starts fetching what each of `batch`'s CQEs will look up (its entry in
/// the multishot table, or its op's slot), for the whole batch at once:
/// with many busy pipes each lookup is a cache miss, and these overlap
/// instead of being waited for one CQE at a time.
pub(super) fn prefetch_lookups(
    batch: &[cqueue::Entry],
    slots: &Slab<Slot>,
    multi: &[(u64, u64)],
    held: &[u64],
) {
    for cqe in batch {
        let ud = Token::from_raw(cqe.user_data());
        if ud.kind() == KIND_HELD {
            prefetch(held.as_ptr().wrapping_add(ud.index() as usize));
            continue;
        }
        if ud.kind() != KIND_OP {
            continue;
        }
        if cqueue::more(cqe.flags()) {
            prefetch(multi.as_ptr().wrapping_add(ud.index() as usize));
        } else {
            prefetch(slots.slot_ptr(ud.index()));
        }
    }
}

/// Calls `f` with the token each of `batch`'s CQEs will be handed out
/// with. The entries it reads were prefetched by `prefetch_lookups`: the
/// first read waits, the batch's others arrive meanwhile.
pub(super) fn tokens(
    batch: &[cqueue::Entry],
    slots: &Slab<Slot>,
    multi: &[(u64, u64)],
    held: &[u64],
    f: &mut dyn FnMut(u64),
) {
    for cqe in batch {
        let ud = Token::from_raw(cqe.user_data());
        if ud.kind() == KIND_HELD {
            if let Some(t) = held_token(held, ud) {
                f(t);
            }
            continue;
        }
        if ud.kind() != KIND_OP {
            continue;
        }
        if cqueue::more(cqe.flags()) {
            match multi.get(ud.index() as usize) {
                Some(&(live, token)) if live == ud.raw() => f(token),
                _ => {}
            }
        } else if let Some(slot) = slots.get(ud.index(), ud.gen()) {
            f(slot.token);
        }
    }
}

/// No multishot receive in this slot (`Driver::multi`): no SQE's
/// user_data is all ones (its kind would be 255).
pub(super) const NOT_MULTI: u64 = u64::MAX;

/// What the driver's `reap_one` needs besides the CQE.
pub(super) struct Reaped<'a> {
    pub(super) slots: &'a mut Slab<Slot>,
    pub(super) multi: &'a mut Vec<(u64, u64)>,
    pub(super) pool: Option<&'a mut BufRing>,
    pub(super) spare: &'a mut Vec<Vec<u8>>,
    /// Where a chunk's lent pool buffer is noted (see `Op::Chunk`).
    pub(super) lent: &'a mut Option<Lent>,
}

impl Reaped<'_> {
    /// The completion of one CQE of the op `ud` names: a multishot
    /// receive's chunk (the op stays), or the op's final completion with
    /// its resources handed back. `None`: a stale or unknown slot.
    #[inline(always)]
    pub(super) fn op(&mut self, ud: Token, cqe: &cqueue::Entry) -> Option<Completion> {
        let (index, gen) = (ud.index(), ud.gen());
        let mut result = cqe.result();
        if cqueue::more(cqe.flags()) {
            // A multishot receive's chunk: the op stays armed. Its token
            // comes from `multi`: the slot is not touched.
            let token = match self.multi.get(index as usize) {
                Some(&(live, token)) if live == ud.raw() => token,
                _ => {
                    // Nobody to give it to: the pool buffer goes back.
                    if let Some(pool) = self.pool.as_deref_mut() {
                        pool.discard(cqe.flags());
                    }
                    return None;
                }
            };
            // The bytes stay in the pool buffer, lent to the core until the
            // next reap (`Driver::reap_one` gives it back): the core copies
            // each share once, straight to where it goes.
            // A positive result without a buffer to lend is an error.
            match self.pool.as_deref_mut() {
                Some(pool) if result > 0 => match pool.lend(cqe.flags(), result as usize) {
                    Ok(lent) => *self.lent = Some(lent),
                    Err(_) => result = -libc::EIO,
                },
                Some(pool) => pool.discard(cqe.flags()),
                None if result > 0 => result = -libc::EIO,
                None => {}
            }
            return Some(Completion {
                token,
                result,
                flags: cqe.flags(),
                op: Op::Chunk,
                more: true,
            });
        }
        let Slot { token, mut op, .. } = self.slots.remove(index, gen)?;
        if matches!(op, Op::RecvMulti { .. }) {
            if let Some(m) = self.multi.get_mut(index as usize) {
                *m = (NOT_MULTI, 0);
            }
        }
        // A pooled receive's bytes; a multishot receive's final completion
        // may still carry a chunk too.
        if let (Op::RecvPooled { data, .. } | Op::RecvMulti { data, .. }, Some(pool)) =
            (&mut op, self.pool.as_deref_mut())
        {
            copy_out(pool, self.spare, cqe.flags(), &mut result, data);
        }
        if let Op::Recv { buf, .. } = &mut op {
            if result > 0 {
                let n = (result as usize).min(buf.capacity() - buf.len());
                // SAFETY: the kernel initialised `n` bytes of spare
                // capacity starting at `buf.len()` (the pointer given in
                // build_sqe), and `n` is bounded by the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
            }
        }
        Some(Completion {
            token,
            result,
            flags: cqe.flags(),
            op,
            more: false,
        })
    }
}

/// Copies a pooled receive's `*result` bytes out of the pool buffer the
/// completion `flags` name and gives the buffer back at once (the guard
/// returns it on drop); a completion without bytes just releases any buffer
/// it names. A buffer id the pool does not know turns `*result` into `-EIO`.
/// An unallocated `data` takes one of the `spare` buffers first, so a
/// pooled receive (one-shot, or a multishot receive's final completion)
/// costs no allocation once finished requests have given theirs back.
fn copy_out(
    pool: &mut BufRing,
    spare: &mut Vec<Vec<u8>>,
    flags: u32,
    result: &mut i32,
    data: &mut Vec<u8>,
) {
    if *result > 0 {
        if data.capacity() == 0 {
            if let Some(buf) = spare.pop() {
                *data = buf;
            }
        }
        match pool.take(flags, *result as usize) {
            Ok(b) => data.extend_from_slice(&b),
            Err(_) => *result = -libc::EIO,
        }
    } else {
        pool.discard(flags);
    }
}
