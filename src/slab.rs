//! A generational slab: values in reusable slots, each slot with a 24-bit
//! generation bumped on every reuse, so a stale `(index, generation)` key
//! (a completion or a handle for a value that is gone) finds nothing instead
//! of the slot's next occupant. Shared by the engine's rings and both
//! service loops.

/// Generations wrap at 24 bits (they share a u64 token with other fields).
const GEN_MASK: u32 = 0x00ff_ffff;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    /// Each slot's generation sits beside its value: a lookup checks the
    /// key and reads the value from the same cache line.
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

/// `repr(C)`: the generation first, so the check and the value's first
/// bytes share a cache line (left to itself the compiler put the
/// generation after a 208-byte value, a cache miss of its own).
#[derive(Debug)]
#[repr(C)]
struct Slot<T> {
    gen: u32,
    value: Option<T>,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Where slot `idx` is (computed only, never read: any index will do),
    /// for a prefetch ahead of a lookup.
    #[inline(always)]
    pub(crate) fn slot_ptr(&self, idx: u32) -> *const u8 {
        self.slots.as_ptr().wrapping_add(idx as usize).cast()
    }

    /// How many bytes a slot takes (see [`Slab::slot_ptr`]).
    pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot<T>>();

    /// Values stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Reserves an empty slot with a fresh generation, for a value that
    /// needs its own key before it exists; fill it with [`Slab::insert_at`].
    pub(crate) fn vacant(&mut self) -> (u32, u32) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.gen = slot.gen.wrapping_add(1) & GEN_MASK;
        (idx, slot.gen)
    }

    /// Gives back a slot reserved with [`Slab::vacant`] and never filled
    /// (its generation stays bumped, so the key it had is stale).
    pub(crate) fn release(&mut self, idx: u32) {
        // Only a reserved, unfilled slot (the caller calls this once).
        if self
            .slots
            .get(idx as usize)
            .is_some_and(|s| s.value.is_none())
        {
            self.free.push(idx);
        }
    }

    /// Fills a slot reserved with [`Slab::vacant`].
    pub(crate) fn insert_at(&mut self, idx: u32, value: T) {
        let slot = &mut self.slots[idx as usize];
        debug_assert!(slot.value.is_none());
        slot.value = Some(value);
        self.len += 1;
    }

    /// Stores `value`; returns its key.
    #[inline]
    pub(crate) fn insert(&mut self, value: T) -> (u32, u32) {
        let key = self.vacant();
        self.insert_at(key.0, value);
        key
    }

    /// The value under a key, if that key is still current (read only).
    #[inline]
    pub(crate) fn get(&self, idx: u32, gen: u32) -> Option<&T> {
        match self.slots.get(idx as usize) {
            Some(slot) if slot.gen == gen => slot.value.as_ref(),
            _ => None,
        }
    }

    /// The value under a key, if that key is still current.
    #[inline]
    pub(crate) fn get_mut(&mut self, idx: u32, gen: u32) -> Option<&mut T> {
        match self.slots.get_mut(idx as usize) {
            Some(slot) if slot.gen == gen => slot.value.as_mut(),
            _ => None,
        }
    }

    /// Removes the value under a key, if that key is still current.
    #[inline]
    pub(crate) fn remove(&mut self, idx: u32, gen: u32) -> Option<T> {
        match self.slots.get(idx as usize) {
            Some(slot) if slot.gen == gen => self.take(idx),
            _ => None,
        }
    }

    /// Drops the value in slot `idx` where it is (what `remove` would move
    /// out first, every byte of it, a cache line at a time) and frees the
    /// slot.
    pub(crate) fn discard(&mut self, idx: u32) {
        if let Some(slot) = self.slots.get_mut(idx as usize) {
            if slot.value.is_some() {
                slot.value = None;
                self.free.push(idx);
                self.len -= 1;
            }
        }
    }

    /// Removes whatever is in slot `idx`.
    pub(crate) fn take(&mut self, idx: u32) -> Option<T> {
        let v = self.slots.get_mut(idx as usize)?.value.take()?;
        self.free.push(idx);
        self.len -= 1;
        Some(v)
    }

    /// The keys of every stored value.
    pub(crate) fn keys(&self) -> Vec<(u32, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, s)| (i as u32, s.gen))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn stale_keys_find_nothing() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.remove(a.0, a.1), Some("a"));
        let b = s.insert("b");
        assert_eq!(b.0, a.0, "the slot is reused");
        assert_ne!(b.1, a.1, "with a new generation");
        assert_eq!(s.get_mut(a.0, a.1), None);
        assert_eq!(s.remove(a.0, a.1), None);
        assert_eq!(s.get_mut(b.0, b.1).map(|v| *v), Some("b"));
        let (idx, gen) = s.vacant();
        assert_eq!(s.get_mut(idx, gen), None, "reserved, not filled");
        s.insert_at(idx, "c");
        assert_eq!(s.len(), 2);
        assert_eq!(s.keys(), vec![b, (idx, gen)]);
        assert_eq!(s.take(idx), Some("c"));
        assert_eq!(s.len(), 1);
    }
}
