//! Replayable request bodies. The first attempt streams the caller's body
//! straight through while a copy of each chunk (and the trailers) is kept,
//! up to a cap; a retry's body replays the kept chunks, then goes on reading
//! the original where the previous attempt stopped.
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

/// A request body that can be sent again, up to a cap. Made by the retry
/// layer; public so that a body type can be named.
pub struct ReplayBody<B> {
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

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    /// Wraps `body`, keeping up to `cap` bytes for replay. The returned body
    /// is the first attempt's; it owns the state from the start and never
    /// waits.
    pub fn new(body: B, cap: usize) -> ReplayBody<B> {
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
        ReplayBody {
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
    pub fn replay(&self) -> Option<ReplayBody<B>> {
        if self.shared.spoiled.load(Ordering::Acquire) {
            return None;
        }
        Some(self.handle())
    }

    /// A body that shares the state but is not meant to be polled: the
    /// retry future keeps one to make the next attempt's body.
    pub(crate) fn handle(&self) -> ReplayBody<B> {
        ReplayBody {
            state: None,
            shared: Arc::clone(&self.shared),
            pos: 0,
            trailers_sent: false,
            past_cap: false,
        }
    }

    /// Whether a further attempt could still replay this body.
    pub fn is_replayable(&self) -> bool {
        !self.shared.spoiled.load(Ordering::Acquire)
    }

    /// Whether [`is_replayable`](Self::is_replayable) may still turn false
    /// before the next attempt: the original has not ended and an earlier
    /// attempt still holds the body, so it may read it past the cap (an
    /// attempt's body can outlive its response: an HTTP/1.1 client goes on
    /// sending it after an early answer).
    pub(crate) fn may_spoil(&self) -> bool {
        !self.shared.settled.load(Ordering::Acquire) && lock(&self.shared.slot).state.is_none()
    }

    /// A body for the next attempt once it is certain to replay: the body
    /// has settled, or no earlier attempt is reading it any more (the next
    /// one will be its only reader). `None` once it can no longer be
    /// replayed. Until then the task is woken when the reading attempt lets
    /// go of the body or spoils it. Without this wait an attempt could be
    /// sent whose body an earlier one spoils a moment later.
    pub(crate) fn poll_replay(&self, cx: &mut Context<'_>) -> Poll<Option<ReplayBody<B>>> {
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

impl<B> Body for ReplayBody<B>
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

impl<B> Drop for ReplayBody<B> {
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

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("cap", &self.shared.cap)
            .field("pos", &self.pos)
            .field("holds_state", &self.state.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// A body that yields the given frames, one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn chunks(parts: &[&[u8]]) -> Frames {
        Frames(
            parts
                .iter()
                .map(|p| Frame::data(Bytes::copy_from_slice(p)))
                .collect(),
        )
    }

    /// Reads up to `n` frames; the data chunks and any trailers seen.
    async fn read<B: Body<Data = Bytes> + Unpin>(
        body: &mut B,
        n: usize,
    ) -> (Vec<Bytes>, Option<HeaderMap>)
    where
        B::Error: fmt::Debug,
    {
        let mut data = Vec::new();
        let mut trailers = None;
        for _ in 0..n {
            match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => data.push(d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Some(Err(e)) => panic!("body error {e:?}"),
                None => break,
            }
        }
        (data, trailers)
    }

    fn concat(v: &[Bytes]) -> Vec<u8> {
        v.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[tokio::test]
    async fn replay_after_partial_read_never_sends_a_chunk_twice() {
        // linkerd2-proxy's bug: the retry replayed the kept first chunk,
        // then, reading on from the original, sent it again.
        let mut first = ReplayBody::new(chunks(&[b"one", b"two", b"three"]), 1024);
        let (got, _) = read(&mut first, 1).await;
        assert_eq!(got, vec![Bytes::from_static(b"one")]);
        let mut second = first.replay().unwrap();
        drop(first);
        let (got, _) = read(&mut second, 10).await;
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"one"),
                Bytes::from_static(b"two"),
                Bytes::from_static(b"three")
            ]
        );
        let mut third = second.replay().unwrap();
        drop(second);
        let (got, _) = read(&mut third, 10).await;
        assert_eq!(concat(&got), b"onetwothree");
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn a_retry_waits_until_the_previous_attempt_lets_go() {
        let mut first = ReplayBody::new(chunks(&[b"a", b"b"]), 1024);
        let _ = read(&mut first, 1).await;
        let mut second = first.replay().unwrap();
        let waker = futures_waker();
        let mut cx = Context::from_waker(&waker.0);
        assert!(Pin::new(&mut second).poll_frame(&mut cx).is_pending());
        assert!(!waker.1.load(Ordering::SeqCst));
        drop(first);
        assert!(
            waker.1.load(Ordering::SeqCst),
            "dropping the holder wakes the retry"
        );
        let (got, _) = read(&mut second, 10).await;
        assert_eq!(concat(&got), b"ab");
    }

    #[tokio::test]
    async fn trailers_are_replayed_after_the_data() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let mut frames = chunks(&[b"x", b"y"]);
        frames.0.push_back(Frame::trailers(t.clone()));
        let mut first = ReplayBody::new(frames, 1024);
        let (got, trailers) = read(&mut first, 10).await;
        assert_eq!(concat(&got), b"xy");
        assert_eq!(trailers.as_ref(), Some(&t));
        let mut second = first.replay().unwrap();
        drop(first);
        let (got, trailers) = read(&mut second, 10).await;
        assert_eq!(concat(&got), b"xy");
        assert_eq!(trailers.as_ref(), Some(&t));
        assert!(second.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_read_past_the_cap_is_not_replayable() {
        let mut first = ReplayBody::new(chunks(&[b"12345", b"67890"]), 8);
        let (got, _) = read(&mut first, 10).await;
        assert_eq!(
            concat(&got),
            b"1234567890",
            "the first attempt still gets it all"
        );
        assert!(first.replay().is_none());
        assert!(!first.is_replayable());
    }

    #[tokio::test]
    async fn a_body_over_the_cap_never_read_can_be_replayed() {
        let first = ReplayBody::new(Full::new(Bytes::from(vec![7u8; 100])), 8);
        let mut second = first.replay().unwrap();
        drop(first);
        let (got, _) = read(&mut second, 10).await;
        assert_eq!(got.concat(), vec![7u8; 100]);
    }

    #[tokio::test]
    async fn size_hint_and_end_of_stream_are_kept() {
        let first = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 1024);
        assert_eq!(first.size_hint().exact(), Some(5));
        assert!(!first.is_end_stream());
        let second = first.replay().unwrap();
        drop(first);
        assert_eq!(second.size_hint().exact(), Some(5));
        assert!(!second.is_end_stream());

        let empty = ReplayBody::new(Empty::<Bytes>::new(), 1024);
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        let again = empty.replay().unwrap();
        drop(empty);
        assert!(again.is_end_stream());
    }

    #[tokio::test]
    async fn a_failed_body_is_not_replayed() {
        struct Failing(bool);
        impl Body for Failing {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                if self.0 {
                    Poll::Ready(Some(Err(std::io::ErrorKind::BrokenPipe.into())))
                } else {
                    self.0 = true;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"a")))))
                }
            }
        }
        let mut first = ReplayBody::new(Failing(false), 1024);
        assert!(first.frame().await.unwrap().is_ok());
        assert!(first.frame().await.unwrap().is_err());
        assert!(first.replay().is_none());
    }

    #[tokio::test]
    async fn the_next_attempt_waits_while_an_earlier_one_may_still_spoil_the_body() {
        let waker = futures_waker();
        let mut cx = Context::from_waker(&waker.0);
        // Within the cap so far, not ended, held by the first attempt.
        let mut first = ReplayBody::new(chunks(&[b"ab", b"cd"]), 3);
        let handle = first.handle();
        assert!(handle.may_spoil(), "nothing read, but held");
        let _ = read(&mut first, 1).await;
        assert!(handle.may_spoil());
        assert!(handle.poll_replay(&mut cx).is_pending());
        // The holder reads past the cap: the waiting retry is woken and
        // told there is no replay.
        let _ = read(&mut first, 1).await;
        assert!(waker.1.load(Ordering::SeqCst), "spoiling wakes the retry");
        assert!(!handle.may_spoil());
        assert!(matches!(handle.poll_replay(&mut cx), Poll::Ready(None)));

        // Let go of within the cap: the next attempt is its only reader.
        let waker = futures_waker();
        let mut cx = Context::from_waker(&waker.0);
        let mut first = ReplayBody::new(chunks(&[b"ab", b"cd"]), 4);
        let handle = first.handle();
        let _ = read(&mut first, 1).await;
        assert!(handle.poll_replay(&mut cx).is_pending());
        drop(first);
        assert!(waker.1.load(Ordering::SeqCst), "letting go wakes the retry");
        assert!(!handle.may_spoil(), "no one holds it");
        let Poll::Ready(Some(mut next)) = handle.poll_replay(&mut cx) else {
            panic!("a replay once the holder let go");
        };
        let (got, _) = read(&mut next, 10).await;
        assert_eq!(concat(&got), b"abcd");
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_within_the_cap_replays_while_still_held() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = ReplayBody::new(Full::new(Bytes::from_static(b"whole")), 16);
        let handle = first.handle();
        // One frame, after which `Full` says it has ended: it is never
        // polled to its `None`, and still settles.
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"whole"));
        assert!(!handle.may_spoil());
        let Poll::Ready(Some(mut next)) = handle.poll_replay(&mut cx) else {
            panic!("a settled body replays at once");
        };
        drop(first);
        let (got, _) = read(&mut next, 10).await;
        assert_eq!(concat(&got), b"whole");
    }

    /// A waker that records being woken.
    fn futures_waker() -> (Waker, Arc<AtomicBool>) {
        struct Flag(Arc<AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(AtomicBool::new(false));
        (Waker::from(Arc::new(Flag(flag.clone()))), flag)
    }

    proptest! {
        #[test]
        fn every_replay_yields_the_original_chunks_once(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..12),
            reads in proptest::collection::vec(0usize..14, 1..5),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
                let original: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
                let mut body = ReplayBody::new(chunks(&refs), 1 << 20);
                // Attempts that read a prefix, then fail.
                for n in reads {
                    let (got, _) = read(&mut body, n).await;
                    prop_assert_eq!(&got[..], &original[..got.len()]);
                    let next = body.replay().unwrap();
                    drop(body);
                    body = next;
                }
                // The last attempt reads it all: the same chunks, in order.
                let (got, _) = read(&mut body, usize::MAX).await;
                prop_assert_eq!(got, original);
                Ok(())
            })?;
        }
    }
}
