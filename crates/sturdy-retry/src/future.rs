//! The response future: an explicit state machine over one logical call.
//!
//! ```text
//! Calling ──response ok──────────────▶ (Prefetching ──▶) done
//!    │  └─retryable, allowed──▶ Draining ──▶ Waiting ──▶ Ready ──▶ Calling
//!    └──error, allowed──────────────────────▶ Waiting
//! ```
//!
//! Every decision (retry or give up) is taken in
//! [`Attempts`](crate::attempts::Attempts); this file only carries them
//! out. One timer serves every wait of the future: the drain's bound, the
//! backoff, then the call's deadline while the next attempt waits for its
//! body or for the inner service — so no wait here outlives the deadline.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use sturdy_core::{BoxError, InnerBody, Judgement, SseScan};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::attempts::{Attempts, Kept, Next, Readmit};
use crate::prefetch::Prefetched;
use crate::{ResponseBody, RetryError};

pin_project! {
    #[project = StateProj]
    enum State<F, RB>
    where
        RB: Body,
    {
        Calling {
            #[pin]
            fut: F,
        },
        // Reading a small answer whole before it is handed over.
        Prefetching {
            head: Option<http::response::Parts>,
            #[pin]
            body: RB,
            buf: Prefetched,
        },
        // Reading a failure's error body (inspect), or a stream up to its
        // first data line (prime), before deciding or handing it over. The
        // body is boxed: what is left of it goes to the caller.
        ReadingAhead {
            head: Option<http::response::Parts>,
            body: Option<Pin<Box<RB>>>,
            buf: Prefetched,
            purpose: Purpose,
        },
        Draining {
            #[pin]
            body: RB,
            drained: u64,
            wake_at: Instant,
        },
        Waiting {
            kept: Option<Kept<RB>>,
        },
        Ready {
            kept: Option<Kept<RB>>,
            // Whether the timer is set for the call's deadline.
            bounded: bool,
        },
        Done,
    }
}

/// Why an answer is read ahead.
enum Purpose {
    /// A failure whose error body may change the verdict.
    Inspect(Judgement),
    /// A stream, held until its first data line (boxed: the scanner keeps
    /// a line buffer, and the future stays small).
    Prime(Box<SseScan>),
}

pin_project! {
    /// The response future of [`RetryService`](crate::RetryService): `F` is
    /// the inner service's future, `S` the inner service (kept for
    /// retries), `B` the caller's request body, `E` the inner service's
    /// request body, `RB` its response body.
    pub struct ResponseFuture<F, S, B, E, RB>
    where
        RB: Body,
    {
        #[pin]
        state: State<F, RB>,
        // Boxed: set only on the way to a retry, and the future is moved
        // whole through every layer above.
        sleep: Option<Pin<Box<Sleep>>>,
        attempts: Attempts<S, B>,
        _body: PhantomData<fn(E)>,
    }
}

impl<F, S, B, E, RB> ResponseFuture<F, S, B, E, RB>
where
    RB: Body,
{
    #[inline(always)]
    pub(crate) fn new(fut: F, attempts: Attempts<S, B>) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            sleep: None,
            attempts,
            _body: PhantomData,
        }
    }
}

impl<F, S, B, E, RB> fmt::Debug for ResponseFuture<F, S, B, E, RB>
where
    RB: Body,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts.attempts)
            .finish_non_exhaustive()
    }
}

/// Sets the one timer to `at`.
fn set(sleep: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match sleep {
        Some(s) => s.as_mut().reset(at),
        None => *sleep = Some(Box::pin(sleep_until(at))),
    }
}

/// Whether the timer has fired (registering the task's waker if not).
fn fired(sleep: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    sleep
        .as_mut()
        .is_some_and(|s| s.as_mut().poll(cx).is_ready())
}

impl<F, S, B, E, RB> Future for ResponseFuture<F, S, B, E, RB>
where
    S: Service<Request<E>, Response = Response<RB>, Future = F> + Clone,
    F: Future<Output = Result<Response<RB>, S::Error>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: InnerBody,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling { fut } => match ready!(fut.poll(cx)) {
                    Ok(resp) => this.attempts.on_response(resp),
                    Err(e) => this.attempts.on_error(e.into()),
                },
                StateProj::Prefetching {
                    head,
                    mut body,
                    buf,
                } => loop {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => buf.push(frame, &*body),
                        Some(Err(e)) => break read_failed(this.attempts, head, buf, e.into()),
                        None => match head.take() {
                            Some(parts) => {
                                let (data, trailers) = std::mem::take(buf).finish();
                                let body = ResponseBody::buffered(data, trailers);
                                break Next::Return(Ok(Response::from_parts(parts, body)));
                            }
                            None => break Next::Return(Err(polled_after_completion())),
                        },
                    }
                },
                StateProj::ReadingAhead {
                    head,
                    body,
                    buf,
                    purpose,
                } => loop {
                    let Some(reading) = body.as_mut() else {
                        break Next::Return(Err(polled_after_completion()));
                    };
                    let frame = match reading.as_mut().poll_frame(cx) {
                        Poll::Ready(frame) => frame,
                        // An error body is read within the drain's bound;
                        // past it, the verdict is the head's.
                        Poll::Pending if matches!(purpose, Purpose::Inspect(_)) => {
                            if !fired(this.sleep, cx) {
                                return Poll::Pending;
                            }
                            break read_ahead_done(this.attempts, head, body, buf, purpose);
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    match frame {
                        Some(Ok(frame)) => {
                            if let (Purpose::Prime(scan), Some(data)) =
                                (&mut *purpose, frame.data_ref())
                            {
                                scan.feed(data);
                            }
                            let first_data =
                                matches!(purpose, Purpose::Prime(scan) if scan.saw_data());
                            buf.push(frame, &**reading);
                            if first_data {
                                break read_ahead_done(this.attempts, head, body, buf, purpose);
                            }
                        }
                        Some(Err(e)) => break read_failed(this.attempts, head, buf, e.into()),
                        None => break read_ahead_done(this.attempts, head, body, buf, purpose),
                    }
                },
                StateProj::Draining {
                    mut body,
                    drained,
                    wake_at,
                } => {
                    let cap = this.attempts.shared.policy.drain_cap;
                    let finished = loop {
                        match body.as_mut().poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                if let Some(d) = frame.data_ref() {
                                    *drained += d.len() as u64;
                                }
                                if *drained > cap {
                                    break true;
                                }
                            }
                            Poll::Ready(_) => break true,
                            Poll::Pending => break false,
                        }
                    };
                    if !finished && !fired(this.sleep, cx) {
                        return Poll::Pending;
                    }
                    Next::Wait(*wake_at, None)
                }
                StateProj::Waiting { kept } => {
                    if !fired(this.sleep, cx) {
                        return Poll::Pending;
                    }
                    match this.attempts.readmit() {
                        // Still no room in the budget: ask again later.
                        Some(Readmit::Again(at)) => {
                            set(this.sleep, at);
                            continue;
                        }
                        Some(Readmit::GiveUp) => this.attempts.budget_refused(kept.take()),
                        None => {
                            let kept = kept.take();
                            let bounded = match this.attempts.deadline() {
                                Some(d) => {
                                    set(this.sleep, d.instant());
                                    true
                                }
                                None => false,
                            };
                            this.state.set(State::Ready { kept, bounded });
                            continue;
                        }
                    }
                }
                // The body first: a ready service is not held while an
                // earlier attempt still reads the body.
                StateProj::Ready { kept, bounded } => match this.attempts.poll_replay(cx) {
                    Poll::Pending => {
                        if *bounded && fired(this.sleep, cx) {
                            this.attempts.out_of_time()
                        } else {
                            return Poll::Pending;
                        }
                    }
                    Poll::Ready(None) => this.attempts.unreplayable(kept.take()),
                    Poll::Ready(Some(body)) => {
                        let ready = match this.attempts.service() {
                            Some(service) => service.poll_ready(cx),
                            // Never: no retry is decided without a service.
                            None => Poll::Ready(Ok(())),
                        };
                        match ready {
                            Poll::Pending => {
                                if *bounded && fired(this.sleep, cx) {
                                    this.attempts.out_of_time()
                                } else {
                                    return Poll::Pending;
                                }
                            }
                            Poll::Ready(Err(e)) => {
                                let err = RetryError::new(this.attempts.attempts, e.into());
                                Next::Return(Err(err.into()))
                            }
                            Poll::Ready(Ok(())) => {
                                let req = this.attempts.next_request::<E>(body);
                                match (req, this.attempts.service()) {
                                    (Some(req), Some(service)) => {
                                        let fut = service.call(req);
                                        this.state.set(State::Calling { fut });
                                        continue;
                                    }
                                    _ => this.attempts.unreplayable(kept.take()),
                                }
                            }
                        }
                    }
                },
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
            };
            match next {
                Next::Return(out) => {
                    this.attempts.finished();
                    this.state.set(State::Done);
                    return Poll::Ready(out);
                }
                Next::Prefetch(parts, body) => this.state.set(State::Prefetching {
                    head: Some(parts),
                    body,
                    buf: Prefetched::default(),
                }),
                Next::Inspect(parts, body, judged) => {
                    set(this.sleep, this.attempts.drain_until());
                    this.state.set(State::ReadingAhead {
                        head: Some(parts),
                        body: Some(Box::pin(body)),
                        buf: Prefetched::default(),
                        purpose: Purpose::Inspect(judged),
                    });
                }
                Next::Prime(parts, body) => this.state.set(State::ReadingAhead {
                    head: Some(parts),
                    body: Some(Box::pin(body)),
                    buf: Prefetched::default(),
                    purpose: Purpose::Prime(Box::default()),
                }),
                Next::Drain(body, wake_at) => {
                    set(this.sleep, this.attempts.drain_until());
                    this.state.set(State::Draining {
                        body,
                        drained: 0,
                        wake_at,
                    });
                }
                Next::Wait(at, kept) => {
                    set(this.sleep, at);
                    this.state.set(State::Waiting { kept });
                }
            }
        }
    }
}

/// The body of an answer read ahead failed with `err`: a retry, or the
/// answer as the caller would have seen it without reading ahead (the
/// head, the bytes that came, then the failure).
fn read_failed<S, B, RB>(
    attempts: &mut Attempts<S, B>,
    head: &mut Option<http::response::Parts>,
    buf: &mut Prefetched,
    err: BoxError,
) -> Next<RB>
where
    B: Body<Data = Bytes>,
{
    match attempts.on_prefetch_error(err) {
        Ok(retry) => retry,
        Err(err) => match head.take() {
            Some(parts) => {
                let (data, _) = std::mem::take(buf).finish();
                let body = ResponseBody::failed(data, err);
                Next::Return(Ok(Response::from_parts(parts, body)))
            }
            None => Next::Return(Err(err)),
        },
    }
}

/// An answer read ahead as far as it needed: a stream that reached its
/// first data line (or ended) is the caller's, what came first then the
/// rest; an error body read whole (or cut short by its bound) is judged
/// with what it says.
fn read_ahead_done<S, B, RB>(
    attempts: &mut Attempts<S, B>,
    head: &mut Option<http::response::Parts>,
    body: &mut Option<Pin<Box<RB>>>,
    buf: &mut Prefetched,
    purpose: &mut Purpose,
) -> Next<RB>
where
    B: Body<Data = Bytes>,
    RB: Body<Data = Bytes>,
{
    let (Some(parts), Some(rest)) = (head.take(), body.take()) else {
        return Next::Return(Err(polled_after_completion()));
    };
    let (data, _) = std::mem::take(buf).finish();
    let answer = ResponseBody::primed(data.clone(), rest);
    match purpose {
        Purpose::Inspect(judged) => attempts.on_inspected(parts, answer, &data, *judged),
        Purpose::Prime(_) => Next::Return(Ok(Response::from_parts(parts, answer))),
    }
}

fn polled_after_completion() -> BoxError {
    "retry future polled after completion".into()
}
