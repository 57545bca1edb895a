//! The shared state behind every clone of one adaptive concurrency limit:
//! the limit and its controller (AIMD with slow start, one decrease per
//! round), the requests in flight, and the callers waiting for a permit, in
//! FIFO order. One mutex guards all of it, held for a few comparisons per
//! acquisition and per release, never across an await; the limit and the
//! in-flight count are mirrored in atomics for cheap gauge reads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::Config;

/// What one finished request says about the server's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Served: the limit may grow.
    Success,
    /// Refused or timed out for want of capacity: the limit shrinks.
    Overload,
    /// Says nothing about capacity (a cancellation, a quota error, a 500, a
    /// reset, a connect failure): the limit stays.
    Neutral,
}

/// A permit as handed out: its number (the order in which permits were
/// handed out) and the requests in flight with it, itself included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seq {
    n: u64,
    load: usize,
}

/// Where a waiting service sits in the queue (its slot, and the slot's
/// generation, so a stale key never touches a reused slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    index: usize,
    generation: u64,
}

/// A change of the limit, reported after the lock is let go.
pub(crate) struct Change {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) overload: bool,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    state: Mutex<State>,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    waiting: AtomicUsize,
}

struct State {
    /// The limit as a real number (additive increase adds fractions).
    window: f64,
    /// `window` floored and clamped into `[min, max]`: what admission uses.
    limit: usize,
    in_flight: usize,
    /// Permits handed out so far: the next permit's number.
    started: u64,
    /// Permits numbered below this were handed out before the last
    /// decrease: what they report was already acted on.
    recovery: u64,
    /// Doubling per round until the first overload.
    slow_start: bool,
    waiters: Waiters,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        let limit = config.initial;
        Shared {
            config,
            state: Mutex::new(State {
                window: limit as f64,
                limit,
                in_flight: 0,
                started: 0,
                recovery: 0,
                slow_start: config.slow_start,
                waiters: Waiters::default(),
            }),
            limit: AtomicUsize::new(limit),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned state is still
        // the best state there is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn mirror(&self, st: &State) {
        self.limit.store(st.limit, Ordering::Relaxed);
        self.in_flight.store(st.in_flight, Ordering::Relaxed);
        self.waiting.store(st.waiters.len, Ordering::Relaxed);
    }

    /// A permit for the service whose place in the queue is `waiting`: at
    /// once when fewer than the limit are in flight (nobody waits then:
    /// permits go to waiters as soon as there is room), else when one is
    /// handed to it, the waker registered meanwhile.
    pub(crate) fn poll_acquire(&self, waiting: &mut Option<Key>, cx: &Context<'_>) -> Poll<Seq> {
        let mut st = self.lock();
        if let Some(key) = *waiting {
            match st.waiters.poll(key, cx.waker()) {
                Some(Poll::Ready(seq)) => {
                    *waiting = None;
                    self.mirror(&st);
                    return Poll::Ready(seq);
                }
                Some(Poll::Pending) => return Poll::Pending,
                // Never: a key is removed only through its service.
                None => *waiting = None,
            }
        }
        if st.in_flight < st.limit && st.waiters.len == 0 {
            let seq = st.hand_out();
            self.mirror(&st);
            return Poll::Ready(seq);
        }
        *waiting = Some(st.waiters.push(cx.waker().clone()));
        self.mirror(&st);
        Poll::Pending
    }

    /// A permit now, whatever the limit: for a `call` made without
    /// `poll_ready` (a broken tower contract, counted rather than refused).
    pub(crate) fn acquire_now(&self) -> Seq {
        let mut st = self.lock();
        let seq = st.hand_out();
        self.mirror(&st);
        seq
    }

    /// The service that waited at `key` goes away: its place is given up,
    /// and a permit handed to it meanwhile is given back.
    pub(crate) fn cancel(&self, key: Key) {
        let mut st = self.lock();
        match st.waiters.remove(key) {
            Some(seq) => {
                self.finish(st, seq, Signal::Neutral);
            }
            None => self.mirror(&st),
        }
    }

    /// Gives permit `seq` back, with what its request said; hands the room
    /// to waiters and wakes them once the lock is let go. Returns whether
    /// the signal was an overload that leaves the limit full and above its
    /// minimum: the request's retry would wait in the queue for a permit
    /// (see `CallContext::record_overload_queued`).
    pub(crate) fn release(&self, seq: Seq, signal: Signal) -> bool {
        let st = self.lock();
        self.finish(st, seq, signal)
    }

    fn finish(&self, mut st: MutexGuard<'_, State>, seq: Seq, signal: Signal) -> bool {
        let mut wakes = Wakes::default();
        let busy = st.in_flight;
        st.in_flight = busy.saturating_sub(1);
        let change = st.learn(&self.config, seq, signal, busy);
        let more = st.grant(&mut wakes);
        let queued = signal == Signal::Overload
            && st.limit > self.config.min
            && (st.waiters.len > 0 || st.in_flight >= st.limit);
        self.mirror(&st);
        drop(st);
        wakes.wake();
        if let Some(c) = change {
            tracing::debug!(
                limit = c.to,
                previous = c.from,
                cause = if c.overload { "overload" } else { "success" },
                in_flight = self.in_flight(),
                "adaptive concurrency limit changed"
            );
        }
        if more {
            self.grant_more();
        }
        queued
    }

    /// Hands out the room left after a batch of wakes filled up.
    fn grant_more(&self) {
        loop {
            let mut wakes = Wakes::default();
            let more = {
                let mut st = self.lock();
                let more = st.grant(&mut wakes);
                self.mirror(&st);
                more
            };
            wakes.wake();
            if !more {
                return;
            }
        }
    }
}

impl State {
    /// The permit the next `hand_out` makes.
    fn next_seq(&self) -> Seq {
        Seq {
            n: self.started,
            load: self.in_flight.saturating_add(1),
        }
    }

    fn hand_out(&mut self) -> Seq {
        let seq = self.next_seq();
        self.started = self.started.saturating_add(1);
        self.in_flight = seq.load;
        seq
    }

    /// Adjusts the limit for what permit `seq` said; `busy` was the number
    /// in flight with it.
    fn learn(&mut self, config: &Config, seq: Seq, signal: Signal, busy: usize) -> Option<Change> {
        // What a request sent before the last decrease reports was sent
        // under the old limit: it says nothing about the new one.
        if seq.n < self.recovery {
            return None;
        }
        let from = self.limit;
        match signal {
            Signal::Neutral => return None,
            // Grow only a limit in use: a limit nobody reaches would
            // otherwise climb to `max` under a light load, and let the
            // next burst through unchecked.
            Signal::Success if busy.saturating_mul(2) < self.limit => return None,
            Signal::Success if self.slow_start => self.window += config.increase,
            Signal::Success => self.window += config.increase / self.window.max(1.0),
            Signal::Overload => {
                // Slow start runs ahead of what the server has shown it
                // takes (each success adds one before the round's answers
                // are in, and a round's growth goes out as one burst):
                // leaving it, the decrease starts from what was in flight
                // when the refused request was sent (TCP's FlightSize).
                if self.slow_start {
                    self.window = self.window.min(seq.load as f64);
                }
                self.window *= config.decrease;
                self.recovery = self.started;
                self.slow_start = false;
            }
        }
        self.window = self.window.clamp(config.min as f64, config.max as f64);
        // In [min, max], both usize: the cast is exact.
        self.limit = (self.window.floor() as usize).clamp(config.min, config.max);
        (self.limit != from).then_some(Change {
            from,
            to: self.limit,
            overload: signal == Signal::Overload,
        })
    }

    /// Hands permits to the longest waiters while there is room; whether
    /// room and waiters remain once `wakes` is full.
    fn grant(&mut self, wakes: &mut Wakes) -> bool {
        while self.in_flight < self.limit && self.waiters.len > 0 {
            if wakes.is_full() {
                return true;
            }
            match self.waiters.grant_front(self.next_seq()) {
                Some(waker) => {
                    self.hand_out();
                    wakes.push(waker);
                }
                None => return false,
            }
        }
        false
    }
}

/// Wakers to wake once the lock is let go; a handful at a time, on the
/// stack.
#[derive(Default)]
struct Wakes {
    wakers: [Option<Waker>; 8],
    len: usize,
}

impl Wakes {
    fn is_full(&self) -> bool {
        self.len == self.wakers.len()
    }

    fn push(&mut self, waker: Waker) {
        if let Some(slot) = self.wakers.get_mut(self.len) {
            *slot = Some(waker);
            self.len += 1;
        }
    }

    fn wake(&mut self) {
        for w in self.wakers.iter_mut().take(self.len) {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        self.len = 0;
    }
}

const NIL: usize = usize::MAX;

enum Slot {
    /// Unused; the next free slot.
    Free { next: usize },
    /// In the queue, between `prev` and `next`.
    Waiting {
        waker: Waker,
        prev: usize,
        next: usize,
    },
    /// Out of the queue, holding the permit handed to it.
    Granted(Seq),
}

struct Entry {
    generation: u64,
    slot: Slot,
}

/// The waiting services: a slab of slots (reused, so a warm queue makes no
/// allocation) threaded into a FIFO list, O(1) to push, to hand a permit
/// to the front, and to remove from anywhere.
struct Waiters {
    entries: Vec<Entry>,
    free: usize,
    head: usize,
    tail: usize,
    /// Slots in the queue (not granted ones).
    len: usize,
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            entries: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl Waiters {
    fn push(&mut self, waker: Waker) -> Key {
        let slot = Slot::Waiting {
            waker,
            prev: self.tail,
            next: NIL,
        };
        let index = match self.entries.get_mut(self.free) {
            Some(entry) => {
                let index = self.free;
                self.free = match entry.slot {
                    Slot::Free { next } => next,
                    _ => NIL,
                };
                entry.generation = entry.generation.wrapping_add(1);
                entry.slot = slot;
                index
            }
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    slot,
                });
                self.entries.len() - 1
            }
        };
        self.set_next(self.tail, index);
        if self.head == NIL {
            self.head = index;
        }
        self.tail = index;
        self.len += 1;
        Key {
            index,
            generation: self.entries[index].generation,
        }
    }

    fn entry(&mut self, key: Key) -> Option<&mut Entry> {
        self.entries
            .get_mut(key.index)
            .filter(|e| e.generation == key.generation)
    }

    /// The permit handed to `key` (its slot freed), or `Pending` with its
    /// waker updated; `None` for a key not in use.
    fn poll(&mut self, key: Key, waker: &Waker) -> Option<Poll<Seq>> {
        match &mut self.entry(key)?.slot {
            Slot::Waiting { waker: w, .. } => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
                Some(Poll::Pending)
            }
            Slot::Granted(seq) => {
                let seq = *seq;
                self.free_slot(key.index);
                Some(Poll::Ready(seq))
            }
            Slot::Free { .. } => None,
        }
    }

    /// Takes `key` out; the permit handed to it, if one was.
    fn remove(&mut self, key: Key) -> Option<Seq> {
        let granted = match &self.entry(key)?.slot {
            Slot::Waiting { prev, next, .. } => {
                let (prev, next) = (*prev, *next);
                self.unlink(prev, next);
                None
            }
            Slot::Granted(seq) => Some(*seq),
            Slot::Free { .. } => return None,
        };
        self.free_slot(key.index);
        granted
    }

    /// Hands permit `seq` to the front of the queue; its waker.
    fn grant_front(&mut self, seq: Seq) -> Option<Waker> {
        let index = self.head;
        let entry = self.entries.get_mut(index)?;
        let Slot::Waiting { next, .. } = entry.slot else {
            return None;
        };
        let Slot::Waiting { waker, .. } = std::mem::replace(&mut entry.slot, Slot::Granted(seq))
        else {
            return None;
        };
        self.unlink(NIL, next);
        Some(waker)
    }

    /// Unlinks the slot between `prev` and `next`.
    fn unlink(&mut self, prev: usize, next: usize) {
        self.set_next(prev, next);
        match self.entries.get_mut(next) {
            Some(Entry {
                slot: Slot::Waiting { prev: p, .. },
                ..
            }) => *p = prev,
            _ => self.tail = prev,
        }
        if prev == NIL {
            self.head = next;
        }
        self.len = self.len.saturating_sub(1);
    }

    fn set_next(&mut self, index: usize, to: usize) {
        if let Some(Entry {
            slot: Slot::Waiting { next, .. },
            ..
        }) = self.entries.get_mut(index)
        {
            *next = to;
        }
    }

    fn free_slot(&mut self, index: usize) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.slot = Slot::Free { next: self.free };
            self.free = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_order(w: &mut Waiters) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = w.head;
        while let Some(Entry {
            slot: Slot::Waiting { next, .. },
            ..
        }) = w.entries.get(at)
        {
            out.push(at);
            at = *next;
        }
        out
    }

    fn seq(n: u64) -> Seq {
        Seq { n, load: 1 }
    }

    #[test]
    fn the_queue_is_fifo_and_removes_from_anywhere() {
        let mut w = Waiters::default();
        let keys: Vec<Key> = (0..5).map(|_| w.push(Waker::noop().clone())).collect();
        assert_eq!(key_order(&mut w), vec![0, 1, 2, 3, 4]);
        assert_eq!(w.remove(keys[2]), None);
        assert_eq!(w.remove(keys[0]), None);
        assert_eq!(w.remove(keys[4]), None);
        assert_eq!(key_order(&mut w), vec![1, 3]);
        assert_eq!(w.len, 2);
        // A stale key does nothing, even once its slot is reused.
        let again = w.push(Waker::noop().clone());
        assert_eq!(w.remove(keys[4]), None);
        assert_eq!(w.remove(keys[2]), None);
        assert_eq!(key_order(&mut w).len(), 3);
        assert!(w.grant_front(seq(7)).is_some());
        assert_eq!(w.poll(keys[1], Waker::noop()), Some(Poll::Ready(seq(7))));
        assert_eq!(w.poll(keys[1], Waker::noop()), None, "claimed once");
        assert_eq!(w.poll(keys[3], Waker::noop()), Some(Poll::Pending));
        assert!(w.grant_front(seq(8)).is_some());
        assert_eq!(
            w.remove(keys[3]),
            Some(seq(8)),
            "a granted permit comes back"
        );
        assert!(w.grant_front(seq(9)).is_some());
        assert_eq!(w.remove(again), Some(seq(9)));
        assert_eq!((w.len, w.head, w.tail), (0, NIL, NIL));
        assert!(w.grant_front(seq(10)).is_none());
        // Every slot is free again and reused before the slab grows.
        for _ in 0..5 {
            w.push(Waker::noop().clone());
        }
        assert_eq!(w.entries.len(), 5);
    }

    fn config() -> Config {
        Config {
            min: 2,
            max: 40,
            initial: 10,
            increase: 1.0,
            decrease: 0.5,
            slow_start: false,
        }
    }

    fn state(config: &Config) -> State {
        State {
            window: config.initial as f64,
            limit: config.initial,
            in_flight: 0,
            started: 0,
            recovery: 0,
            slow_start: config.slow_start,
            waiters: Waiters::default(),
        }
    }

    #[test]
    fn one_decrease_per_round_and_growth_only_in_use() {
        let c = config();
        let mut st = state(&c);
        let seqs: Vec<Seq> = (0..10).map(|_| st.hand_out()).collect();
        // The first overload halves; the rest of its round is ignored.
        assert!(st.learn(&c, seqs[0], Signal::Overload, 10).is_some());
        assert_eq!(st.limit, 5);
        for &s in &seqs[1..] {
            assert!(st.learn(&c, s, Signal::Overload, 10).is_none());
            assert!(st.learn(&c, s, Signal::Success, 10).is_none());
        }
        // A request sent after the decrease counts.
        let s = st.hand_out();
        st.learn(&c, s, Signal::Overload, 5);
        assert_eq!(st.limit, 2, "never below min");
        let s = st.hand_out();
        st.learn(&c, s, Signal::Overload, 5);
        assert_eq!(st.limit, 2);
        // +1 per `limit` successes, and only while in use.
        let s = st.hand_out();
        st.learn(&c, s, Signal::Success, 0);
        assert_eq!(st.window, 2.0, "unused: no growth");
        st.learn(&c, s, Signal::Success, 2);
        st.learn(&c, s, Signal::Success, 2);
        assert_eq!(st.limit, 2, "2.5, then 2.9");
        st.learn(&c, s, Signal::Success, 2);
        assert_eq!(st.limit, 3);
    }

    #[test]
    fn leaving_slow_start_shrinks_from_what_was_in_flight() {
        let c = Config {
            min: 1,
            max: 1000,
            initial: 16,
            increase: 1.0,
            decrease: 0.9,
            slow_start: true,
        };
        let mut st = state(&c);
        let round: Vec<Seq> = (0..16).map(|_| st.hand_out()).collect();
        for s in round {
            st.in_flight -= 1;
            st.learn(&c, s, Signal::Success, 16);
        }
        assert_eq!(st.limit, 32, "+1 per success: doubled in a round");
        // The round's growth goes out at once; the server takes 20, and
        // refuses the 21st: sent with 21 in flight.
        let burst: Vec<Seq> = (0..32).map(|_| st.hand_out()).collect();
        assert_eq!(burst[20].load, 21);
        st.learn(&c, burst[20], Signal::Overload, 32);
        assert_eq!(st.limit, 18, "21 × 0.9, not 32 × 0.9");
        assert!(!st.slow_start);
        for &s in &burst[21..] {
            assert!(st.learn(&c, s, Signal::Overload, 32).is_none());
        }
        assert_eq!(st.limit, 18);
    }
}
