//! The response future: an explicit state machine over one logical call.
//!
//! ```text
//! Calling ──response ok──────────────▶ (Prefetching ──▶) done
//!    │  └─retryable, allowed──▶ Draining ──▶ Waiting ──▶ Ready ──▶ Calling
//!    └──error, allowed──────────────────────▶ Waiting
//! ```
//!
//! Every decision (retry or give up) is taken in [`Attempts`], which holds
//! what the call needs beyond the state: the policy, the call's record, the
//! request head to copy, the replay handle and the jitter source (made only
//! when a first backoff is needed, so the success path draws no randomness).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use sturdy_core::{
    BoxError, CallContext, Deadline, FailureKind, InnerBody, Reach, RetrySafe, ServerHints,
    Verdict, classify_body_error, classify_error, classify_response, is_grpc, verdict_of,
};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::layer::Shared;
use crate::replay::{NotReplayable, ReplayBody};
use crate::{Outcome, RepeatUnknown, ResponseBody, RetryError, RetryPolicy};

/// What is needed to send the request again: everything but the body.
pub(crate) struct RequestHead {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
}

impl RequestHead {
    /// Copies `parts` but for their extensions, which the caller copied
    /// earlier (see [`RetryService`](crate::RetryService)'s `call`): they
    /// may lack the call's `CallContext`, which a retry puts back.
    pub(crate) fn copy(parts: &http::request::Parts, extensions: http::Extensions) -> RequestHead {
        RequestHead {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions,
        }
    }
}

/// The per-call retry state that is not a pinned future.
pub(crate) struct Attempts<B> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ctx: CallContext,
    /// `None` when no retry is allowed at all (max_retries 0).
    pub(crate) head: Option<RequestHead>,
    pub(crate) handle: Option<ReplayBody<B>>,
    /// Attempts made so far, the first included.
    pub(crate) attempts: u32,
    /// Whether a repeat after an `Unknown` failure is safe.
    pub(crate) safety: Safety,
    pub(crate) rng: Option<SmallRng>,
    pub(crate) prev_delay: Duration,
    /// The retry decided on and not yet sent: its reason, and whether it
    /// may run twice on the server. Recorded in the context when the next
    /// attempt goes out, so that a call dropped during its backoff, or one
    /// whose body turned unreplayable, counts no retry it never made.
    pub(crate) pending: Option<(FailureKind, bool)>,
}

/// The failure a retry was decided on, kept through the backoff while the
/// request body may still turn unreplayable (an earlier attempt is still
/// reading it). If it does, this failure is the call's answer: the caller
/// gets the real `429` or error, not a `NotReplayable` of sturdy's making.
enum Kept<RB> {
    Error(BoxError),
    /// Boxed: kept only in that rare case, and the state stays small.
    Response(Box<Response<ResponseBody<RB>>>),
}

/// Whether the request is safe to repeat, worked out on the first failure
/// that asks (the success path looks nothing up for a non-idempotent
/// method).
#[derive(Clone, Copy)]
pub(crate) enum Safety {
    Known {
        /// Idempotent, keyed or marked `RetrySafe`.
        safe: bool,
        /// A repeat after an `Unknown` failure may run twice on the server.
        duplicable: bool,
    },
    /// A method that is not idempotent: whether the request carries an
    /// idempotency key or is marked `RetrySafe` is read from the kept head,
    /// which holds the headers and extensions those were in.
    InHead,
}

impl Safety {
    /// From the request as the first attempt sends it, but for the
    /// attempt header (`keyed` is judged before it is added).
    pub(crate) fn of(idempotent: bool, keyed: bool, marked: bool) -> Safety {
        let (safe, duplicable) = judge(idempotent, keyed, marked);
        Safety::Known { safe, duplicable }
    }

    /// `(safe, duplicable)`, read from `head` the first time.
    fn resolve(&mut self, head: Option<&RequestHead>, policy: &RetryPolicy) -> (bool, bool) {
        let (safe, duplicable) = match *self {
            Safety::Known { safe, duplicable } => (safe, duplicable),
            Safety::InHead => {
                let (keyed, marked) = head.map_or((false, false), |h| {
                    (
                        h.headers.contains_key(&policy.idempotency_header),
                        h.extensions.get::<RetrySafe>().is_some(),
                    )
                });
                judge(false, keyed, marked)
            }
        };
        *self = Safety::Known { safe, duplicable };
        (safe, duplicable)
    }
}

/// `(safe, duplicable)`: safe when idempotent, keyed or marked
/// `RetrySafe`; with an idempotency key the server can tell a repeat.
fn judge(idempotent: bool, keyed: bool, marked: bool) -> (bool, bool) {
    (idempotent || keyed || marked, !(idempotent || keyed))
}

/// What the state machine does next.
enum Next<RB> {
    Return(Result<Response<ResponseBody<RB>>, BoxError>),
    Prefetch(http::response::Parts, RB),
    Drain(RB, Instant),
    Wait(Instant, Option<Kept<RB>>),
}

impl<B> Attempts<B>
where
    B: Body<Data = Bytes>,
{
    fn on_response<RB>(&mut self, resp: Response<RB>) -> Next<RB>
    where
        RB: Body<Data = Bytes>,
    {
        let policy = &self.shared.policy;
        let status = resp.status();
        let (table, failure) = classify_response(status, resp.headers());
        let user = policy
            .classifier
            .as_ref()
            .and_then(|c| c.classify(Outcome::Response(status, resp.headers())));
        if user.is_none() && table == Verdict::Success {
            return self.deliver(resp);
        }
        let hints = ServerHints::from_headers(resp.headers(), SystemTime::now());
        let verdict = match user {
            Some(v) => v,
            // The server's own word overrides the table, both ways.
            None if hints.forbids_retry() => Verdict::Fatal,
            None if hints.should_retry == Some(true) => Verdict::Retryable,
            None => table,
        };
        if verdict == Verdict::Success {
            return self.deliver(resp);
        }
        let kind = failure.unwrap_or(FailureKind::Status(status));
        match self.decide(kind, verdict, Reach::Acknowledged, hints.delay()) {
            // Not drained: the connection is still sending the request.
            Some(wake_at) if self.body_may_spoil() => Next::Wait(
                wake_at,
                Some(Kept::Response(Box::new(resp.map(ResponseBody::streaming)))),
            ),
            Some(wake_at) => {
                let body = resp.into_body();
                let drain = body.size_hint().exact();
                let cap = self.shared.policy.drain_cap;
                if !body.is_end_stream() && drain.is_some_and(|n| n <= cap) {
                    Next::Drain(body, wake_at)
                } else {
                    Next::Wait(wake_at, None)
                }
            }
            None => Next::Return(Ok(resp.map(ResponseBody::streaming))),
        }
    }

    /// Hands a final response over, reading it first when it is small,
    /// of known length, and not a stream.
    fn deliver<RB>(&self, resp: Response<RB>) -> Next<RB>
    where
        RB: Body<Data = Bytes>,
    {
        let prefetch = self.shared.policy.prefetch_cap.is_some_and(|cap| {
            let body = resp.body();
            !body.is_end_stream()
                && body.size_hint().exact().is_some_and(|n| n <= cap)
                && !is_grpc(resp.headers())
                && !is_event_stream(resp.headers())
                && self.head.is_some()
        });
        if prefetch {
            let (parts, body) = resp.into_parts();
            Next::Prefetch(parts, body)
        } else {
            Next::Return(Ok(resp.map(ResponseBody::streaming)))
        }
    }

    /// An attempt failed with `err`; `in_body` when it was the body of a
    /// response being prefetched (the caller never saw it, so the attempt
    /// is judged like one whose fate is unknown).
    fn on_error<RB>(&mut self, err: BoxError, in_body: bool) -> Next<RB> {
        let (kind, reach) = if in_body {
            (classify_body_error(&*err), Reach::Unknown)
        } else {
            let kind = classify_error(&*err);
            (kind, kind.reach())
        };
        let user = self
            .shared
            .policy
            .classifier
            .as_ref()
            .and_then(|c| c.classify(Outcome::Error(&*err)));
        let verdict = user.unwrap_or_else(|| verdict_of(&kind));
        match self.decide(kind, verdict, reach, None) {
            Some(wake_at) => {
                let kept = self.body_may_spoil().then_some(Kept::Error(err));
                Next::Wait(wake_at, kept)
            }
            None => Next::Return(Err(RetryError::new(self.attempts, err).into())),
        }
    }

    /// Whether the request body may still turn unreplayable before the
    /// next attempt takes it.
    fn body_may_spoil(&self) -> bool {
        self.handle.as_ref().is_some_and(ReplayBody::may_spoil)
    }

    /// The call's answer when the next attempt cannot be made because the
    /// body turned unreplayable during the backoff: the failure the retry
    /// was decided on, if it was kept.
    fn unreplayable<RB>(&self, kept: Option<Kept<RB>>) -> Next<RB> {
        Next::Return(match kept {
            Some(Kept::Response(resp)) => Ok(*resp),
            Some(Kept::Error(err)) => Err(RetryError::new(self.attempts, err).into()),
            None => Err(RetryError::new(self.attempts, NotReplayable.into()).into()),
        })
    }

    /// Whether to retry, and when: every rule in one place, in order.
    /// Records a budget refusal in the call's context, and keeps a retry as
    /// pending until the next attempt is sent.
    fn decide(
        &mut self,
        kind: FailureKind,
        verdict: Verdict,
        reach: Reach,
        hint: Option<Duration>,
    ) -> Option<Instant> {
        let policy = &self.shared.policy;
        let attempt = self.attempts;
        let give_up = |why: &'static str| {
            tracing::debug!(
                attempt,
                reason = kind.label(),
                reach = reach.label(),
                why,
                "not retrying"
            );
            None
        };
        if verdict != Verdict::Retryable {
            return give_up("not retryable");
        }
        let duplicated = match reach {
            Reach::NotSent | Reach::Acknowledged => false,
            Reach::Unknown => {
                let (safe, duplicable) = self.safety.resolve(self.head.as_ref(), policy);
                let allowed = match policy.repeat_unknown {
                    RepeatUnknown::WhenSafe => safe,
                    RepeatUnknown::Always => true,
                    RepeatUnknown::Never => false,
                };
                if !allowed {
                    return give_up("not safe to repeat");
                }
                duplicable
            }
        };
        if attempt > policy.max_retries || self.head.is_none() {
            return give_up("retries spent");
        }
        if !self.handle.as_ref().is_some_and(ReplayBody::is_replayable) {
            return give_up("body not replayable");
        }
        let delay = match hint {
            Some(d) if d > policy.hint_cap => return give_up("hint beyond cap"),
            Some(d) => d,
            None => {
                let shared = &self.shared;
                let rng = self.rng.get_or_insert_with(|| {
                    SmallRng::seed_from_u64(shared.seeds.fetch_add(1, Ordering::Relaxed))
                });
                let d = policy
                    .backoff
                    .delay(attempt - 1, self.prev_delay, policy.max_delay, rng);
                self.prev_delay = d;
                d
            }
        };
        let Some(wake_at) = Instant::now().checked_add(delay) else {
            return give_up("past deadline");
        };
        if self.deadline().is_some_and(|d| wake_at >= d.instant()) {
            return give_up("past deadline");
        }
        if let Some(budget) = &self.shared.budget
            && !budget.withdraw()
        {
            self.ctx.record_budget_refusal();
            return give_up("budget exhausted");
        }
        self.pending = Some((kind, duplicated));
        tracing::debug!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            reason = kind.label(),
            reach = reach.label(),
            possibly_duplicated = duplicated,
            "retrying"
        );
        Some(wake_at)
    }

    /// The next attempt's body once it is certain to replay, `None` if it
    /// cannot be (see [`ReplayBody::poll_replay`]).
    fn poll_replay(&self, cx: &mut Context<'_>) -> Poll<Option<ReplayBody<B>>> {
        match &self.handle {
            Some(handle) => handle.poll_replay(cx),
            None => Poll::Ready(None),
        }
    }

    /// The next attempt's request around `body`; `None` without a kept head
    /// (never: no retry is decided without one).
    fn next_request<E: InnerBody>(&mut self, body: ReplayBody<B>) -> Option<Request<E>>
    where
        B: Send + 'static,
        B::Error: Into<BoxError>,
    {
        let head = self.head.as_ref()?;
        if let Some((reason, duplicated)) = self.pending.take() {
            self.ctx.record_retry(reason, duplicated);
        }
        self.attempts += 1;
        self.ctx.record_attempt();
        let mut req = Request::new(E::from_body(body));
        *req.method_mut() = head.method.clone();
        *req.uri_mut() = head.uri.clone();
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers.clone();
        *req.extensions_mut() = head.extensions.clone();
        // The copy was taken before this layer added the context, if it did.
        req.extensions_mut().get_or_insert_with(|| self.ctx.clone());
        if let Some(name) = &self.shared.policy.attempt_header {
            req.headers_mut()
                .insert(name.clone(), http::HeaderValue::from(self.attempts));
        }
        if self.shared.policy.grpc_previous_attempts {
            req.headers_mut().insert(
                http::HeaderName::from_static("grpc-previous-rpc-attempts"),
                http::HeaderValue::from(self.attempts - 1),
            );
        }
        Some(req)
    }

    /// The call's deadline, read from the kept head when a retry is weighed
    /// (the success path looks nothing up); without a head nothing is
    /// retried, so none is needed.
    fn deadline(&self) -> Option<Deadline> {
        Deadline::from_extensions(&self.head.as_ref()?.extensions)
    }

    /// How long a drain may take: the policy's bound, never past the deadline.
    fn drain_until(&self) -> Instant {
        let now = Instant::now();
        let bound = now
            .checked_add(self.shared.policy.drain_time)
            .unwrap_or(now + Duration::from_secs(60));
        match self.deadline() {
            Some(d) if d.instant() < bound => d.instant(),
            _ => bound,
        }
    }
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

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
        Prefetching {
            head: Option<http::response::Parts>,
            #[pin]
            body: RB,
            buf: Prefetched,
        },
        Draining {
            #[pin]
            body: RB,
            #[pin]
            bound: Sleep,
            drained: u64,
            wake_at: Instant,
        },
        Waiting {
            #[pin]
            sleep: Sleep,
            kept: Option<Kept<RB>>,
        },
        Ready {
            kept: Option<Kept<RB>>,
        },
        Done,
    }
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
        service: S,
        attempts: Attempts<B>,
        _body: PhantomData<fn(E)>,
    }
}

impl<F, S, B, E, RB> ResponseFuture<F, S, B, E, RB>
where
    RB: Body,
{
    pub(crate) fn new(fut: F, service: S, attempts: Attempts<B>) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            service,
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

impl<F, S, B, E, RB> Future for ResponseFuture<F, S, B, E, RB>
where
    S: Service<Request<E>, Response = Response<RB>, Future = F>,
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
                    Err(e) => this.attempts.on_error(e.into(), false),
                },
                StateProj::Prefetching {
                    head,
                    mut body,
                    buf,
                } => loop {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => buf.push(frame, &*body),
                        Some(Err(e)) => break this.attempts.on_error(e.into(), true),
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
                StateProj::Draining {
                    mut body,
                    bound,
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
                    if !finished && bound.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    Next::Wait(*wake_at, None)
                }
                StateProj::Waiting { sleep, kept } => {
                    ready!(sleep.poll(cx));
                    let kept = kept.take();
                    this.state.set(State::Ready { kept });
                    continue;
                }
                // The body first: a ready service is not held while an
                // earlier attempt still reads the body.
                StateProj::Ready { kept } => match ready!(this.attempts.poll_replay(cx)) {
                    None => this.attempts.unreplayable(kept.take()),
                    Some(body) => match ready!(this.service.poll_ready(cx)) {
                        Err(e) => {
                            let err = RetryError::new(this.attempts.attempts, e.into());
                            Next::Return(Err(err.into()))
                        }
                        Ok(()) => match this.attempts.next_request::<E>(body) {
                            Some(req) => {
                                let fut = this.service.call(req);
                                this.state.set(State::Calling { fut });
                                continue;
                            }
                            None => this.attempts.unreplayable(kept.take()),
                        },
                    },
                },
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
            };
            match next {
                Next::Return(out) => {
                    this.state.set(State::Done);
                    return Poll::Ready(out);
                }
                Next::Prefetch(parts, body) => this.state.set(State::Prefetching {
                    head: Some(parts),
                    body,
                    buf: Prefetched::default(),
                }),
                Next::Drain(body, wake_at) => {
                    let bound = tokio::time::sleep_until(this.attempts.drain_until());
                    this.state.set(State::Draining {
                        body,
                        bound,
                        drained: 0,
                        wake_at,
                    });
                }
                Next::Wait(at, kept) => this.state.set(State::Waiting {
                    sleep: tokio::time::sleep_until(at),
                    kept,
                }),
            }
        }
    }
}

/// A prefetched body's frames, as `http_body_util`'s `Collected` keeps
/// them but without its buffer list: a body of one data frame (the common
/// case, a small JSON answer) stays that frame's `Bytes`, with no
/// allocation; only a second data frame starts a contiguous copy.
#[derive(Default)]
struct Prefetched {
    first: Option<Bytes>,
    /// `first` followed by every later data frame, once there is a second.
    joined: Option<BytesMut>,
    trailers: Option<HeaderMap>,
}

/// The most a second data frame reserves ahead from the body's size hint.
const JOIN_RESERVE_MAX: u64 = 1024 * 1024;

impl Prefetched {
    fn push<RB: Body>(&mut self, frame: Frame<Bytes>, body: &RB) {
        match frame.into_data() {
            // Empty data frames carry nothing (as in `Collected`).
            Ok(data) if data.is_empty() => {}
            Ok(data) => match (&mut self.joined, &self.first) {
                (Some(joined), _) => joined.put_slice(&data),
                (None, None) => self.first = Some(data),
                (None, Some(first)) => {
                    let ahead = body.size_hint().lower().min(JOIN_RESERVE_MAX);
                    let ahead = usize::try_from(ahead).unwrap_or(0);
                    let mut joined = BytesMut::with_capacity(
                        first.len().saturating_add(data.len()).saturating_add(ahead),
                    );
                    joined.put_slice(first);
                    joined.put_slice(&data);
                    self.first = None;
                    self.joined = Some(joined);
                }
            },
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match &mut self.trailers {
                        Some(current) => current.extend(t),
                        None => self.trailers = Some(t),
                    }
                }
            }
        }
    }

    fn finish(self) -> (Bytes, Option<HeaderMap>) {
        let data = match (self.joined, self.first) {
            (Some(joined), _) => joined.freeze(),
            (None, Some(first)) => first,
            (None, None) => Bytes::new(),
        };
        (data, self.trailers)
    }
}

fn polled_after_completion() -> BoxError {
    "retry future polled after completion".into()
}
