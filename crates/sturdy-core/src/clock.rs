//! One clock reading shared by the layers of one synchronous step.
//!
//! A request passes through every layer of a stack in one synchronous
//! `call`, and its response head and body back up through every layer in
//! one `poll`. Each layer that times something (the two metrics scopes, the
//! workload and attempt timeouts, the retry budget) would read the clock in
//! that same step, microseconds apart: nine reads per call in the `Stack`.
//! [`step`] opens a step on this thread: the first [`now`] inside it
//! reads the clock and every later one, at any depth, gets that reading.
//! Outside a step, [`now`] reads the clock.
//!
//! A step ends when the guard [`step`] returned is dropped, at the end of
//! the `call` or `poll` that opened it (or as it unwinds), so a reading
//! never outlives the synchronous code that took it: a layer reached later,
//! through a queue such as `tower::buffer::Buffer` or on a retry, is
//! outside it and reads the clock afresh.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sturdy_core::clock;
//! let (a, b) = {
//!     let _step = clock::step();
//!     (clock::now(), clock::now())
//! };
//! assert_eq!(a, b);
//! // Outside a step every reading is the clock's own.
//! assert!(clock::now() >= b);
//! # }
//! ```

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

/// The state of this thread's step: none open, open and not read yet, or
/// open with its reading.
#[derive(Clone, Copy)]
enum State {
    Closed,
    Open,
    Read(Instant),
}

thread_local! {
    static STEP: Cell<State> = const { Cell::new(State::Closed) };
}

/// Opens a step on this thread, until the guard is dropped: every [`now`]
/// until then gets the same reading (taken at the first). Inside an open
/// step it opens nothing, and its guard closes nothing: the step is the
/// outer one's.
#[inline]
pub fn step() -> Step {
    let opened = STEP.with(|s| match s.get() {
        State::Closed => {
            s.set(State::Open);
            true
        }
        _ => false,
    });
    Step {
        opened,
        _this_thread: PhantomData,
    }
}

/// The guard of a step opened by [`step`]; the step ends when it drops.
///
/// Made and dropped inside one `call` or `poll`: held across an `.await`,
/// it would hand its reading to whatever else this thread runs meanwhile.
/// It cannot leave its thread (it is not `Send`), so a `Send` future
/// cannot hold it across an `.await`.
#[must_use = "the step ends when this guard is dropped"]
#[derive(Debug)]
pub struct Step {
    opened: bool,
    _this_thread: PhantomData<*const ()>,
}

impl Drop for Step {
    #[inline]
    fn drop(&mut self) {
        if self.opened {
            STEP.with(|s| s.set(State::Closed));
        }
    }
}

/// The current step's reading, else the clock's (tokio's, so that a paused
/// test clock applies).
#[inline]
pub fn now() -> Instant {
    STEP.with(|s| match s.get() {
        State::Read(at) => at,
        State::Open => {
            let at = Instant::now();
            s.set(State::Read(at));
            at
        }
        State::Closed => Instant::now(),
    })
}

/// `at` + `limit`; when that overflows, roughly thirty years after `at`
/// (tokio's own choice for "never"): what every limit counted from an
/// instant comes to, so that a `Duration::MAX` limit means "no limit", not
/// a panic.
///
/// ```
/// use std::time::Duration;
/// use sturdy_core::clock;
/// let at = tokio::time::Instant::now();
/// assert_eq!(clock::later(at, Duration::from_secs(5)), at + Duration::from_secs(5));
/// assert!(clock::later(at, Duration::MAX) > at + Duration::from_secs(86_400 * 365));
/// ```
#[inline]
pub fn later(at: Instant, limit: Duration) -> Instant {
    at.checked_add(limit)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_shares_its_first_reading_and_ends_with_its_guard() {
        let outer = {
            let _step = step();
            let first = now();
            // A nested step belongs to the outer one, and its guard
            // closes nothing.
            {
                let _nested = step();
                assert_eq!(now(), first);
            }
            assert_eq!(now(), first);
            first
        };
        tokio::time::advance(Duration::from_secs(1)).await;
        // Closed: the clock again, and a new step reads it afresh.
        assert_eq!(now(), outer + Duration::from_secs(1));
        let _step = step();
        assert_eq!(now(), outer + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_not_read_reads_nothing_and_an_unwinding_step_closes() {
        let start = now();
        drop(step());
        tokio::time::advance(Duration::from_secs(2)).await;
        {
            let _step = step();
            assert_eq!(now(), start + Duration::from_secs(2));
        }
        let unwound = std::panic::catch_unwind(|| {
            let _step = step();
            now();
            panic!("a layer panicked mid-step");
        });
        assert!(unwound.is_err());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(now(), start + Duration::from_secs(5));
    }
}
