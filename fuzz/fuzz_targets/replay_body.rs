//! The replayable request body, fed an arbitrary body (chunk sizes, empty
//! chunks, `Pending` between chunks, trailers, a failure part-way) and an
//! arbitrary series of attempts, each reading some frames and then failing
//! (being dropped), some while the next attempt is already waiting.
//!
//! Every attempt must see a prefix of the original frames, in order, no
//! chunk twice and none missing; a replay must be refused exactly when the
//! body was read past its cap or failed; a waiting retry must be woken when
//! the attempt holding the body lets go; the size hint never changes.
#![no_main]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use libfuzzer_sys::fuzz_target;
use sturdy_retry::replay::ReplayBody;

/// Reads the fuzzer's bytes as small numbers; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }
}

/// One frame of the original body, as a reader sees it.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Data(Bytes),
    Trailers(HeaderMap),
    Error,
}

#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the original body failed")
    }
}

impl std::error::Error for Broken {}

/// The caller's body: its events in order, a `Pending` before some of them.
struct Original {
    events: VecDeque<(bool, Event)>,
    exact: Option<u64>,
}

impl Body for Original {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        let Some((pending, _)) = self.events.front_mut() else {
            return Poll::Ready(None);
        };
        if std::mem::take(pending) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.events.pop_front().map(|(_, e)| match e {
            Event::Data(d) => Ok(Frame::data(d)),
            Event::Trailers(t) => Ok(Frame::trailers(t)),
            Event::Error => Err(Broken),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls until a frame, the end, or (for a body waiting on another attempt)
/// a `Pending` no wake-up will end.
fn next(body: &mut ReplayBody<Original>, flag: &Arc<Flag>) -> Option<Option<Event>> {
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        flag.0.store(false, Ordering::SeqCst);
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Some(None),
            Poll::Ready(Some(Ok(frame))) => {
                return Some(Some(match frame.into_data() {
                    Ok(d) => Event::Data(d),
                    Err(frame) => match frame.into_trailers() {
                        Ok(t) => Event::Trailers(t),
                        Err(_) => panic!("a frame that is neither data nor trailers"),
                    },
                }));
            }
            Poll::Ready(Some(Err(_))) => return Some(Some(Event::Error)),
            // The original asked to be polled again: it woke the waker.
            Poll::Pending if flag.0.load(Ordering::SeqCst) => continue,
            Poll::Pending => return None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let cap = usize::from(input.byte()) * 8 + input.below(8);

    // The original: up to 12 chunks of 0..=255 bytes, maybe trailers, maybe
    // a failure in place of the n-th frame.
    let mut events = Vec::new();
    for i in 0..input.below(13) {
        let len = usize::from(input.byte());
        let fill = input.byte();
        events.push(Event::Data(Bytes::from(vec![fill ^ i as u8; len])));
    }
    let failure_at = match input.below(4) {
        0 => Some(input.below(events.len() + 1)),
        _ => None,
    };
    if input.byte() & 1 == 1 {
        let mut t = HeaderMap::new();
        for i in 0..input.below(3) + 1 {
            let value = HeaderValue::from(u16::from(input.byte()) * 7 + i as u16);
            t.append("grpc-status", value);
        }
        events.push(Event::Trailers(t));
    }
    if let Some(at) = failure_at {
        events.truncate(at);
        events.push(Event::Error);
    }
    let exact = failure_at.is_none().then(|| {
        events
            .iter()
            .map(|e| match e {
                Event::Data(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    });
    let queued = events
        .iter()
        .map(|e| (input.byte() & 3 == 0, e.clone()))
        .collect();
    let original = Original {
        events: queued,
        exact,
    };
    let hint = original.size_hint();
    // What the first `n` data chunks weigh, to know when the cap is passed.
    let weight = |n: usize| -> usize {
        events
            .iter()
            .take(n)
            .map(|e| match e {
                Event::Data(d) => d.len(),
                _ => 0,
            })
            .sum()
    };

    let mut body = ReplayBody::new(original, cap);
    // Frames of the original read so far (by any attempt), and whether the
    // body can no longer be replayed.
    let mut furthest = 0usize;
    let mut spoiled = false;
    let mut holds_state = true;
    for attempt in 0..input.below(6) + 1 {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        assert_eq!(body.size_hint().exact(), hint.exact());
        assert_eq!(body.size_hint().lower(), hint.lower());
        let reads = input.below(events.len() + 3);
        let mut seen = Vec::new();
        let mut ended = false;
        for _ in 0..reads {
            match next(&mut body, &flag).expect("an attempt that owns the body never waits") {
                None => {
                    ended = true;
                    break;
                }
                Some(event) => {
                    let failed = event == Event::Error;
                    seen.push(event);
                    if failed {
                        break;
                    }
                }
            }
        }
        holds_state |= reads > 0;
        assert_eq!(
            seen[..],
            events[..seen.len()],
            "attempt {attempt} saw something other than a prefix of the original"
        );
        if ended {
            assert_eq!(seen.len(), events.len(), "ended early");
            assert!(body.is_end_stream(), "ended, yet not at its end");
        }
        let data_read = seen.iter().filter(|e| matches!(e, Event::Data(_))).count();
        if data_read > furthest {
            furthest = data_read;
            spoiled |= weight(furthest) > cap;
        }
        spoiled |= seen.last() == Some(&Event::Error);
        assert_eq!(body.is_replayable(), !spoiled, "attempt {attempt}");

        let Some(mut retry) = body.replay() else {
            assert!(spoiled, "a replay was refused for a replayable body");
            return;
        };
        assert!(!spoiled, "a spoiled body was replayed");
        if input.byte() & 1 == 1 && holds_state {
            // The retry starts while the failed attempt still holds the body:
            // it waits, and the failed attempt's drop wakes it.
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            assert!(
                next(&mut retry, &flag).is_none(),
                "a retry read a held body"
            );
            drop(body);
            assert!(
                flag.0.load(Ordering::SeqCst),
                "the waiting retry was not woken"
            );
            body = retry;
            // Its next read takes the body over; the frame it then reads is
            // the original's first, checked with the rest below.
            holds_state = false;
        } else {
            drop(body);
            body = retry;
            holds_state = false;
        }
    }
    // A last attempt reads everything: exactly the original, once.
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let mut seen = Vec::new();
    while let Some(event) = next(&mut body, &flag).expect("the last attempt owns the body") {
        let failed = event == Event::Error;
        seen.push(event);
        if failed {
            break;
        }
        assert!(seen.len() <= events.len(), "more frames than the original");
    }
    assert_eq!(seen, events, "the last attempt did not replay the original");
});
