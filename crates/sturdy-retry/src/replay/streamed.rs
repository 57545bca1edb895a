//! Replayable streamed bodies (any body not all in memory). The first
//! attempt streams the caller's body straight through while a copy of each
//! chunk (and the trailers) is kept, up to a cap; a retry's body replays the
//! kept chunks, then goes on reading the original where the previous attempt
//! stopped.
//!
//! The state (kept chunks plus the rest of the original body) has a single
//! owner at a time: the body that is being polled. A retry's body takes it
//! on its first poll and waits, without panicking, while an earlier attempt
//! still holds it (hyper's HTTP/2 client may keep a body in a task of its
//! own for a while); dropping a body gives the state back and wakes the
//! waiter. No lock is taken per frame, only on hand-over.
//!
//! Each body counts the chunks it has replayed, so a chunk is never sent
//! twice (linkerd2-proxy's bug, where a retry re-sent the first chunk after
//! catching up with the original, is pinned by a test below).

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use sturdy_core::BoxError;

/// A streamed request body that can be sent again, up to a cap.
pub(super) struct Streamed<B> {
    /// The state, while this body owns it.
    state: Option<State<B>>,
    shared: Arc<Shared<B>>,
    /// Kept chunks already sent by this body.
    pos: usize,
    trailers_sent: bool,
    /// This body read past the cap: it streams the original, keeping nothing.
    past_cap: bool,
}

struct Shared<B> {
    slot: Mutex<Slot<B>>,
    size_hint: SizeHint,
    cap: usize,
    /// Set once the body cannot be replayed (read past the cap, or failed).
    spoiled: AtomicBool,
    /// Set once replayability can no longer change: the original ended
    /// within the cap, or the body is spoiled.
    settled: AtomicBool,
}

struct Slot<B> {
    state: Option<State<B>>,
    waiter: Option<Waker>,
}

struct State<B> {
    kept: Vec<Bytes>,
    kept_len: usize,
    trailers: Option<HeaderMap>,
    /// The rest of the original body; `None` once it has ended.
    rest: Option<Pin<Box<B>>>,
    read_any: bool,
    spoiled: bool,
}

/// A replayed body was asked for after the original could no longer be
/// replayed (the retry layer never does this).
#[derive(Debug)]
pub struct NotReplayable;

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body cannot be replayed")
    }
}

impl StdError for NotReplayable {}

impl<B> Streamed<B>
where
    B: Body<Data = Bytes>,
{
    /// Wraps `body`, keeping up to `cap` bytes for replay. The returned body
    /// is the first attempt's; it owns the state from the start and never
    /// waits.
    pub(super) fn new(body: B, cap: usize) -> Streamed<B> {
        let size_hint = body.size_hint();
        let end = body.is_end_stream();
        let state = State {
            kept: Vec::new(),
            kept_len: 0,
            trailers: None,
            rest: if end { None } else { Some(Box::pin(body)) },
            read_any: false,
            spoiled: false,
        };
        Streamed {
            state: Some(state),
            shared: Arc::new(Shared {
                slot: Mutex::new(Slot {
                    state: None,
                    waiter: None,
                }),
                size_hint,
                cap,
                spoiled: AtomicBool::new(false),
                settled: AtomicBool::new(end),
            }),
            pos: 0,
            trailers_sent: false,
            past_cap: false,
        }
    }

    /// A body for the next attempt, or `None` when the body can no longer
    /// be replayed (it was read past the cap, or it failed).
    pub(super) fn replay(&self) -> Option<Streamed<B>> {
        if self.shared.spoiled.load(Ordering::Acquire) {
            return None;
        }
        Some(self.handle())
    }

    /// A body that shares the state but is not meant to be polled: the
    /// retry future keeps one to make the next attempt's body.
    pub(super) fn handle(&self) -> Streamed<B> {
        Streamed {
            state: None,
            shared: Arc::clone(&self.shared),
            pos: 0,
            trailers_sent: false,
            past_cap: false,
        }
    }

    /// Whether a further attempt could still replay this body.
    pub(super) fn is_replayable(&self) -> bool {
        !self.shared.spoiled.load(Ordering::Acquire)
    }

    /// Whether [`is_replayable`](Self::is_replayable) may still turn false
    /// before the next attempt: the original has not ended and an earlier
    /// attempt still holds the body, so it may read it past the cap (an
    /// attempt's body can outlive its response: an HTTP/1.1 client goes on
    /// sending it after an early answer).
    pub(super) fn may_spoil(&self) -> bool {
        !self.shared.settled.load(Ordering::Acquire) && lock(&self.shared.slot).state.is_none()
    }

    /// A body for the next attempt once it is certain to replay: the body
    /// has settled, or no earlier attempt is reading it any more (the next
    /// one will be its only reader). `None` once it can no longer be
    /// replayed. Until then the task is woken when the reading attempt lets
    /// go of the body or spoils it. Without this wait an attempt could be
    /// sent whose body an earlier one spoils a moment later.
    pub(super) fn poll_replay(&self, cx: &mut Context<'_>) -> Poll<Option<Streamed<B>>> {
        if self.shared.settled.load(Ordering::Acquire) {
            return Poll::Ready(self.replay());
        }
        let mut slot = lock(&self.shared.slot);
        // Checked again under the lock `spoil` takes to wake us: the holder
        // may have spoiled the body, and let go of it, since the check above.
        if self.shared.spoiled.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if slot.state.is_some() {
            // Back in the slot unspoiled: the next attempt will be its only
            // reader.
            drop(slot);
            return Poll::Ready(Some(self.handle()));
        }
        slot.waiter = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<B> Shared<B> {
    /// Records that replayability can no longer change.
    fn settle(&self) {
        self.settled.store(true, Ordering::Release);
    }

    /// Marks the body unreplayable and wakes whoever waits for it.
    fn spoil(&self) {
        self.spoiled.store(true, Ordering::Release);
        self.settle();
        let waiter = lock(&self.slot).waiter.take();
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the slot consistent: it is only
    // ever swapped whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B> Body for Streamed<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.state.is_none() {
            let mut slot = lock(&this.shared.slot);
            match slot.state.take() {
                Some(s) => this.state = Some(s),
                None => {
                    // An earlier attempt still holds it; its drop wakes us.
                    slot.waiter = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let Some(state) = this.state.as_mut() else {
            return Poll::Pending;
        };
        if state.spoiled && !this.past_cap {
            return Poll::Ready(Some(Err(NotReplayable.into())));
        }
        if let Some(chunk) = state.kept.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if let Some(rest) = state.rest.as_mut() {
            match rest.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    // A body that says it has ended is often never polled
                    // to its `None`: what this frame leaves is all there is.
                    if rest.is_end_stream() {
                        this.shared.settle();
                    }
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            state.read_any = true;
                            if !this.past_cap {
                                if state.kept_len.saturating_add(data.len()) > this.shared.cap {
                                    // From here on this attempt streams the
                                    // original alone; no later one can replay.
                                    state.spoiled = true;
                                    state.kept = Vec::new();
                                    state.kept_len = 0;
                                    this.past_cap = true;
                                    this.shared.spoil();
                                } else {
                                    state.kept_len += data.len();
                                    state.kept.push(data.clone());
                                    this.pos = state.kept.len();
                                }
                            }
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Err(frame) => frame,
                    };
                    if let Some(t) = frame.trailers_ref() {
                        state.trailers = Some(t.clone());
                        this.trailers_sent = true;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    state.rest = None;
                    state.spoiled = true;
                    this.past_cap = true;
                    this.shared.spoil();
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    state.rest = None;
                    this.shared.settle();
                }
            }
        }
        if !this.trailers_sent
            && let Some(t) = &state.trailers
        {
            this.trailers_sent = true;
            return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        let ended = |state: &State<B>, pos: usize, trailers_sent: bool| {
            pos >= state.kept.len()
                && state.rest.as_ref().is_none_or(|r| r.is_end_stream())
                && (trailers_sent || state.trailers.is_none())
        };
        match &self.state {
            Some(state) => ended(state, self.pos, self.trailers_sent),
            None => lock(&self.shared.slot)
                .state
                .as_ref()
                .is_some_and(|s| ended(s, 0, false)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.shared.size_hint
    }
}

impl<B> Drop for Streamed<B> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let waiter = {
                let mut slot = lock(&self.shared.slot);
                slot.state = Some(state);
                slot.waiter.take()
            };
            if let Some(w) = waiter {
                w.wake();
            }
        }
    }
}

impl<B> fmt::Debug for Streamed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("cap", &self.shared.cap)
            .field("pos", &self.pos)
            .field("holds_state", &self.state.is_some())
            .finish()
    }
}
