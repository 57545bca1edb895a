//! An append-only list read without a lock: the metrics layers' interned
//! labels and the [`SnapshotRecorder`](crate::SnapshotRecorder)'s counts by
//! label.

use std::sync::OnceLock;

/// Most entries a list keeps: labels a service interns (past that a new
/// label is built per call: still correct, just an allocation), keys a
/// recorder counts without a lock (past that, under one).
pub(crate) const SLOTS: usize = 32;

/// An append-only list of up to [`SLOTS`] entries, read without a
/// lock: a slot is set once and never changed, so a reader scans the set
/// slots with one atomic load each. A writer takes the first free slot; of
/// two writers racing for one slot, the second waits for the first to
/// finish setting it and then goes on to the next. A full list keeps what
/// it has.
pub(crate) struct Slots<T>([OnceLock<T>; SLOTS]);

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots(std::array::from_fn(|_| OnceLock::new()))
    }
}

impl<T> Slots<T> {
    /// The entries set so far, in the order they were added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map_while(OnceLock::get)
    }

    /// The entry that is `same`, else `value` added; `None` when the list
    /// is full.
    pub(crate) fn find_or_push(&self, same: impl Fn(&T) -> bool, mut value: T) -> Option<&T> {
        for slot in &self.0 {
            if let Some(entry) = slot.get() {
                if same(entry) {
                    return Some(entry);
                }
                continue;
            }
            match slot.set(value) {
                Ok(()) => return slot.get(),
                Err(back) => {
                    // Another writer set this slot first.
                    if let Some(entry) = slot.get().filter(|e| same(e)) {
                        return Some(entry);
                    }
                    value = back;
                }
            }
        }
        None
    }
}
