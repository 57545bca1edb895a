//! Replayable request bodies: what lets the retry layer send a request
//! again.
//!
//! - A body all in memory — `Full<Bytes>`, `String`, `Empty<Bytes>`, or
//!   the `Left` of an `Either<Full<Bytes>, BoxBody>` (for callers whose
//!   bodies are sometimes in memory, sometimes streamed) — is kept whole,
//!   by reference (a `Bytes` refcount, no copy), up to the
//!   in-memory cap (16 MiB by default: long-context prompts are 100 KB to
//!   several MB of JSON). Every attempt sends the same bytes; nothing is
//!   shared but them, nothing is locked.
//! - Any other body streams through the first attempt while a copy of each
//!   chunk is kept, up to the streamed cap; a retry replays the kept chunks,
//!   then goes on reading the original where the previous attempt stopped
//!   (see the `streamed` module). Past the cap, it can no longer be
//!   replayed.
//!
//! Each attempt's body also tells the call's context when a connection
//! takes it up (see [`CallContext::record_sending`]), so that a timeout can
//! tell "nothing was sent" from "sent, no answer".

mod streamed;

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use sturdy_core::{BoxBody, BoxError, CallContext};

pub use streamed::NotReplayable;
use streamed::Streamed;

/// How much of a request body is kept so it can be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCaps {
    /// A body all in memory up to this many bytes is kept whole, by
    /// reference.
    pub in_memory: usize,
    /// Of any other body, this many bytes are kept as it streams.
    pub streamed: usize,
}

/// A request body that can be sent again, up to a cap. Made by the retry
/// layer; public so that a body type can be named.
pub struct ReplayBody<B> {
    kind: Kind<B>,
    /// The call and attempt this body tells when a connection takes it up.
    sending: Option<(CallContext, u32)>,
}

enum Kind<B> {
    /// All in memory: the bytes, and whether this attempt sent them.
    Whole {
        bytes: Bytes,
        sent: bool,
    },
    Streamed(Streamed<B>),
}

/// The bytes of a body that is all in memory, or the body back.
fn whole<B: Body<Data = Bytes> + 'static>(body: B) -> Result<Bytes, B> {
    let mut slot = Some(body);
    let any = &mut slot as &mut dyn Any;
    if let Some(Some(full)) = any.downcast_mut::<Option<Full<Bytes>>>() {
        return Ok(bytes_of(full));
    }
    if let Some(Some(Either::Left(full))) =
        any.downcast_mut::<Option<Either<Full<Bytes>, BoxBody>>>()
    {
        return Ok(bytes_of(full));
    }
    if let Some(s) = any.downcast_mut::<Option<String>>() {
        return Ok(Bytes::from(s.take().unwrap_or_default()));
    }
    if any.is::<Option<Empty<Bytes>>>() {
        return Ok(Bytes::new());
    }
    match slot {
        Some(body) => Err(body),
        None => Ok(Bytes::new()),
    }
}

/// A `Full`'s bytes: it yields its one frame at once, whatever the context.
fn bytes_of(full: &mut Full<Bytes>) -> Bytes {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(full).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + 'static,
{
    /// Wraps `body`, keeping up to `cap` bytes of it for replay (both
    /// caps). The returned body is the first attempt's.
    pub fn new(body: B, cap: usize) -> ReplayBody<B> {
        ReplayBody::with_caps(
            body,
            ReplayCaps {
                in_memory: cap,
                streamed: cap,
            },
        )
    }

    /// Wraps `body` under `caps`: whole when it is all in memory and within
    /// `caps.in_memory`, else streamed under `caps.streamed`.
    pub fn with_caps(body: B, caps: ReplayCaps) -> ReplayBody<B> {
        let kind = match body.size_hint().exact() {
            Some(len) if len <= caps.in_memory as u64 => match whole(body) {
                Ok(bytes) => Kind::Whole { bytes, sent: false },
                Err(body) => Kind::Streamed(Streamed::new(body, caps.streamed)),
            },
            _ => Kind::Streamed(Streamed::new(body, caps.streamed)),
        };
        ReplayBody {
            kind,
            sending: None,
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    /// A body for the next attempt, or `None` when the body can no longer
    /// be replayed (it was read past the cap, or it failed).
    pub fn replay(&self) -> Option<ReplayBody<B>> {
        let kind = match &self.kind {
            Kind::Whole { bytes, .. } => Kind::Whole {
                bytes: bytes.clone(),
                sent: false,
            },
            Kind::Streamed(s) => Kind::Streamed(s.replay()?),
        };
        Some(ReplayBody {
            kind,
            sending: None,
        })
    }

    /// A body that shares the state but is not meant to be polled: the
    /// retry future keeps one to make the next attempt's body.
    pub(crate) fn handle(&self) -> ReplayBody<B> {
        ReplayBody {
            kind: match &self.kind {
                Kind::Whole { bytes, .. } => Kind::Whole {
                    bytes: bytes.clone(),
                    sent: false,
                },
                Kind::Streamed(s) => Kind::Streamed(s.handle()),
            },
            sending: None,
        }
    }

    /// This body, telling `ctx` (once armed: see
    /// [`CallContext::arm_sending`]) when a connection takes up `attempt`'s
    /// request: the first time it is asked for a frame, its length or its
    /// end.
    pub(crate) fn reporting_sending(mut self, ctx: CallContext, attempt: u32) -> Self {
        self.sending = Some((ctx, attempt));
        self
    }

    fn taken_up(&self) {
        if let Some((ctx, attempt)) = &self.sending {
            ctx.record_sending(*attempt);
        }
    }

    /// Whether the body is kept whole, by reference.
    pub fn is_whole(&self) -> bool {
        matches!(self.kind, Kind::Whole { .. })
    }

    /// Whether a further attempt could still replay this body.
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Whole { .. } => true,
            Kind::Streamed(s) => s.is_replayable(),
        }
    }

    /// Whether [`is_replayable`](Self::is_replayable) may still turn false
    /// before the next attempt (see the streamed body).
    pub(crate) fn may_spoil(&self) -> bool {
        match &self.kind {
            Kind::Whole { .. } => false,
            Kind::Streamed(s) => s.may_spoil(),
        }
    }

    /// A body for the next attempt once it is certain to replay; `None`
    /// once it can no longer be (see the streamed body).
    pub(crate) fn poll_replay(&self, cx: &mut Context<'_>) -> Poll<Option<ReplayBody<B>>> {
        let kind = match &self.kind {
            Kind::Whole { bytes, .. } => Kind::Whole {
                bytes: bytes.clone(),
                sent: false,
            },
            Kind::Streamed(s) => match s.poll_replay(cx) {
                Poll::Ready(Some(s)) => Kind::Streamed(s),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Some(ReplayBody {
            kind,
            sending: None,
        }))
    }
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
        self.taken_up();
        match &mut self.kind {
            Kind::Whole { bytes, sent } => {
                let first = !std::mem::replace(sent, true);
                Poll::Ready((first && !bytes.is_empty()).then(|| Ok(Frame::data(bytes.clone()))))
            }
            Kind::Streamed(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.taken_up();
        match &self.kind {
            Kind::Whole { bytes, sent } => *sent || bytes.is_empty(),
            Kind::Streamed(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.taken_up();
        match &self.kind {
            Kind::Whole { bytes, sent } => {
                SizeHint::with_exact(if *sent { 0 } else { bytes.len() as u64 })
            }
            Kind::Streamed(s) => s.size_hint(),
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Whole { bytes, .. } => f
                .debug_struct("ReplayBody")
                .field("whole", &bytes.len())
                .finish(),
            Kind::Streamed(s) => fmt::Debug::fmt(s, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http_body_util::{BodyExt, Empty, Full};
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Waker;

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

    #[tokio::test]
    async fn an_either_is_whole_on_its_left_and_streamed_on_its_right() {
        let caps = ReplayCaps {
            in_memory: 1 << 20,
            streamed: 4,
        };
        let left: Either<Full<Bytes>, BoxBody> =
            Either::Left(Full::new(Bytes::from(vec![7u8; 1000])));
        let body = ReplayBody::with_caps(left, caps);
        assert!(body.is_whole(), "kept by reference, past the streamed cap");
        let right: Either<Full<Bytes>, BoxBody> =
            Either::Right(sturdy_core::boxed(Full::new(Bytes::from_static(b"abc"))));
        assert!(!ReplayBody::with_caps(right, caps).is_whole());
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
