//! Every decision of the retry layer, in one place: what an answer means
//! (the plan's classifier), whether to retry and when, and what the caller
//! gets when it gives up. The state machine in [`future`](crate::future)
//! only carries them out.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sturdy_core::span::{AttemptSpan, attempt_span};
use sturdy_core::{
    BodyVerdict, BoxError, CallContext, CallPlan, Deadline, FailureKind, InnerBody, Judgement,
    MAX_ERROR_BODY, Reach, RetryRefusal, Ruling, Safety, Verdict,
};
use tokio::time::Instant;
use tracing::Span;

use crate::budget::{Admission, Ticket};
use crate::head::KeptHead;
use crate::layer::Shared;
use crate::replay::{NotReplayable, ReplayBody};
use crate::{ResponseBody, RetryError};

/// The per-call retry state that is not a pinned future.
pub(crate) struct Attempts<S, B> {
    pub(crate) shared: Arc<Shared>,
    ctx: CallContext,
    /// `None` when no retry is allowed at all (max_retries 0).
    retained: Option<Box<Retained<S, B>>>,
    /// Attempts made so far, the first included.
    pub(crate) attempts: u32,
    /// Retries this call may make: the policy's, or the caller's
    /// [`MaxRetries`](sturdy_core::MaxRetries).
    max_retries: u32,
    safety: Safety,
    /// Whether the call is gRPC (its answers are judged by `grpc-status`).
    grpc: bool,
    /// The call's deadline, as the plan (or the caller) set it.
    deadline: Option<Deadline>,
    prev_delay: Duration,
    /// The retry decided on and not yet sent: its reason, and whether it
    /// may run twice on the server. Recorded in the context when the next
    /// attempt goes out, so that a call dropped during its backoff, or one
    /// whose body turned unreplayable, counts no retry it never made.
    pending: Option<(FailureKind, bool)>,
    /// Set while the retry decided on waits for room in the budget.
    waiting: Option<Ticket>,
    /// The span of the attempt in flight (created here, handed down to the
    /// attempts metrics layer in the request): the decision on its failure
    /// is an event inside it. Let go once decided, so that the span ends
    /// with the attempt, not with the backoff after it.
    span: Span,
}

/// What only a retry needs, in one allocation (the future that holds it is
/// moved whole through every layer above, so it stays small): the request
/// head to send again, the body's replay handle, the inner service that
/// sends it, and the jitter source.
pub(crate) struct Retained<S, B> {
    head: KeptHead,
    handle: ReplayBody<B>,
    /// The service's clone shared by every call of a `RetryService`.
    template: Arc<Mutex<S>>,
    /// The clone of `template` the retries go through, made at the first;
    /// boxed, as it is rare: the service (a client and the layers below,
    /// hundreds of bytes) would otherwise be copied into every call's
    /// allocation.
    service: Option<Box<S>>,
    /// Made when a first backoff is needed: the success path draws no
    /// randomness.
    rng: Option<SmallRng>,
}

impl<S, B> Retained<S, B> {
    /// Keeps `parts`, copied in place into the allocation; `plan_alone`
    /// as [`KeptHead::keep`] takes it.
    pub(crate) fn new(
        parts: &Parts,
        plan_alone: Option<CallPlan>,
        handle: ReplayBody<B>,
        template: Arc<Mutex<S>>,
    ) -> Box<Self> {
        let mut kept = Box::new(Retained {
            head: KeptHead::blank(),
            handle,
            template,
            service: None,
            rng: None,
        });
        kept.head.keep(parts, plan_alone);
        kept
    }
}

/// The failure a retry was decided on, kept through the backoff while the
/// request body may still turn unreplayable (an earlier attempt is still
/// reading it). If it does, this failure is the call's answer: the caller
/// gets the real `429` or error, not a `NotReplayable` of sturdy's making.
pub(crate) enum Kept<RB> {
    Error(BoxError),
    /// Boxed: kept only in that rare case, and the state stays small.
    Response(Box<Response<ResponseBody<RB>>>),
}

/// What a retry waiting for the budget does at the end of its wait.
pub(crate) enum Readmit {
    /// Ask again at this instant.
    Again(Instant),
    /// The deadline comes first: the call ends with the failure.
    GiveUp,
}

/// What the state machine does next.
pub(crate) enum Next<RB> {
    Return(Result<Response<ResponseBody<RB>>, BoxError>),
    /// Read a small successful answer whole before handing it over.
    Prefetch(http::response::Parts, RB),
    /// Read a small failure answer's body, whose word may change the
    /// verdict, before deciding.
    Inspect(http::response::Parts, RB, Judgement),
    /// Hold a stream until its first data line, so a failure before it is
    /// retried.
    Prime(http::response::Parts, RB),
    Drain(RB, Instant),
    Wait(Instant, Option<Kept<RB>>),
}

impl<S, B> Attempts<S, B>
where
    B: Body<Data = Bytes>,
{
    pub(crate) fn new(
        shared: Arc<Shared>,
        ctx: CallContext,
        retained: Option<Box<Retained<S, B>>>,
        max_retries: u32,
        safety: Safety,
        grpc: bool,
        deadline: Option<Deadline>,
    ) -> Self {
        Attempts {
            shared,
            ctx,
            retained,
            attempts: 1,
            max_retries,
            safety,
            grpc,
            deadline,
            prev_delay: Duration::ZERO,
            pending: None,
            waiting: None,
            span: Span::none(),
        }
    }

    /// The first attempt's span.
    pub(crate) fn in_span(mut self, span: Span) -> Self {
        self.span = span;
        self
    }

    /// The call's answer is decided: the last attempt's span is let go (it
    /// ends with its body).
    pub(crate) fn finished(&mut self) {
        self.span = Span::none();
    }

    /// The inner service a retry goes through (none when no retry is
    /// allowed).
    pub(crate) fn service(&mut self) -> Option<&mut S>
    where
        S: Clone,
    {
        self.retained.as_mut().map(|r| {
            let template = &r.template;
            &mut **r.service.get_or_insert_with(|| {
                Box::new(S::clone(
                    &template.lock().unwrap_or_else(PoisonError::into_inner),
                ))
            })
        })
    }

    pub(crate) fn on_response<RB>(&mut self, resp: Response<RB>) -> Next<RB>
    where
        RB: Body<Data = Bytes>,
    {
        let policy = &self.shared.policy;
        let judged = policy
            .classifier
            .judge_response(resp.status(), resp.headers(), self.grpc);
        if judged.failure.is_none() {
            if let Some(budget) = &self.shared.budget {
                budget.succeeded(self.attempts > 1);
            }
            return self.deliver(resp);
        }
        // A small error body may say more than the status (a quota error
        // is not a rate limit): read it before deciding.
        let body = resp.body();
        if judged.awaits_body()
            && !body.is_end_stream()
            && body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= MAX_ERROR_BODY)
        {
            let (parts, body) = resp.into_parts();
            return Next::Inspect(parts, body, judged);
        }
        self.after_failure(resp, judged)
    }

    /// The answer of a failure judged (its body read, if it was inspected):
    /// a retry, or the answer as the call's.
    fn after_failure<RB>(&mut self, resp: Response<RB>, judged: Judgement) -> Next<RB>
    where
        RB: Body<Data = Bytes>,
    {
        let kind = judged.failure.unwrap_or(FailureKind::Status(resp.status()));
        match self.decide(
            kind,
            judged.verdict,
            Reach::Acknowledged,
            judged.hints.delay(),
        ) {
            // Not drained: the connection is still sending the request (or
            // the budget may yet refuse the retry).
            Some(wake_at) if self.must_keep() => Next::Wait(
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

    /// A failure answer whose body was read whole (`data`): judged again
    /// with what the body says, then a retry or the answer, its body intact
    /// and its verdict on it for the layers above.
    pub(crate) fn on_inspected<RB>(
        &mut self,
        parts: http::response::Parts,
        body: ResponseBody<RB>,
        data: &Bytes,
        judged: Judgement,
    ) -> Next<RB>
    where
        RB: Body<Data = Bytes>,
    {
        let judged = judged.with_body(data);
        let mut resp = Response::from_parts(parts, body);
        if let (Ruling::Body, Some(kind)) = (judged.ruling, judged.failure) {
            resp.extensions_mut().insert(BodyVerdict(kind));
        }
        let kind = judged.failure.unwrap_or(FailureKind::Status(resp.status()));
        match self.decide(
            kind,
            judged.verdict,
            Reach::Acknowledged,
            judged.hints.delay(),
        ) {
            Some(wake_at) if self.must_keep() => {
                Next::Wait(wake_at, Some(Kept::Response(Box::new(resp))))
            }
            Some(wake_at) => Next::Wait(wake_at, None),
            None => Next::Return(Ok(resp)),
        }
    }

    /// Hands a final answer over: a stream that may still be retried is
    /// held until its first data line; a small answer of known length is
    /// read first; anything else as it comes.
    fn deliver<RB>(&self, resp: Response<RB>) -> Next<RB>
    where
        RB: Body<Data = Bytes>,
    {
        let body = resp.body();
        if body.is_end_stream() || self.retained.is_none() {
            return Next::Return(Ok(resp.map(ResponseBody::streaming)));
        }
        let kind = content_kind(resp.headers());
        if kind == ContentKind::EventStream && self.safety.is_repeatable() {
            let (parts, body) = resp.into_parts();
            return Next::Prime(parts, body);
        }
        let prefetch = self.shared.policy.prefetch_cap.is_some_and(|cap| {
            kind == ContentKind::Other && body.size_hint().exact().is_some_and(|n| n <= cap)
        });
        if prefetch {
            let (parts, body) = resp.into_parts();
            Next::Prefetch(parts, body)
        } else {
            Next::Return(Ok(resp.map(ResponseBody::streaming)))
        }
    }

    /// An attempt failed with `err`: a retry, or the error (with the
    /// attempt count) as the call's answer.
    pub(crate) fn on_error<RB>(&mut self, err: BoxError) -> Next<RB> {
        match self.retry_after(err, false) {
            Ok(next) => next,
            Err(err) => Next::Return(Err(RetryError::new(self.attempts, err).into())),
        }
    }

    /// The body of a response being read before it is handed over (whole,
    /// inspected, or up to a stream's first data line) failed with `err`: a
    /// retry, or `err` back to be handed to the caller inside the body. The
    /// caller never saw the response, so the attempt is judged like one
    /// whose fate is unknown.
    pub(crate) fn on_prefetch_error<RB>(&mut self, err: BoxError) -> Result<Next<RB>, BoxError> {
        self.retry_after(err, true)
    }

    fn retry_after<RB>(&mut self, err: BoxError, in_body: bool) -> Result<Next<RB>, BoxError> {
        let classifier = &self.shared.policy.classifier;
        let judged = if in_body {
            classifier.judge_body_error(&*err)
        } else {
            classifier.judge_error(&*err)
        };
        let kind = judged.failure.unwrap_or(FailureKind::Other);
        let reach = if in_body {
            Reach::Unknown
        } else {
            judged.reach
        };
        match self.decide(kind, judged.verdict, reach, None) {
            Some(wake_at) => {
                let kept = self.must_keep().then_some(Kept::Error(err));
                Ok(Next::Wait(wake_at, kept))
            }
            None => Err(err),
        }
    }

    /// Whether the request body may still turn unreplayable before the
    /// next attempt takes it.
    fn body_may_spoil(&self) -> bool {
        self.retained.as_ref().is_some_and(|r| r.handle.may_spoil())
    }

    /// Whether the failure a retry was decided on must be kept through the
    /// wait: the retry may yet not happen (its body may spoil, or the
    /// budget may not make room in time), and then it is the call's answer.
    fn must_keep(&self) -> bool {
        self.waiting.is_some() || self.body_may_spoil()
    }

    /// The instant a retry waiting for the budget must give up by: the
    /// call's deadline, or without one the budget's window after it began
    /// to wait.
    fn wait_limit(&self, ticket: &Ticket) -> Instant {
        match (self.deadline, &self.shared.policy.budget) {
            (Some(d), _) => d.instant(),
            (None, Some(b)) => ticket.since() + b.window,
            (None, None) => ticket.since(),
        }
    }

    /// At the end of the backoff: may the retry go? A retry that waits for
    /// room in the budget asks again; `None` means go.
    pub(crate) fn readmit(&mut self) -> Option<Readmit> {
        let ticket = self.waiting?;
        let Some(budget) = &self.shared.budget else {
            self.waiting = None;
            return None;
        };
        match budget.admit(Some(ticket)) {
            Admission::Now => {
                self.waiting = None;
                tracing::debug!(
                    attempt = self.attempts,
                    waited_ms = ticket.since().elapsed().as_millis() as u64,
                    "the budget made room"
                );
                None
            }
            Admission::Later(at) if at < self.wait_limit(&ticket) => Some(Readmit::Again(at)),
            Admission::Later(_) | Admission::Refused => Some(Readmit::GiveUp),
        }
    }

    /// The call's answer when the budget made no room for its retry before
    /// the deadline: the failure the retry was decided on.
    pub(crate) fn budget_refused<RB>(&mut self, kept: Option<Kept<RB>>) -> Next<RB> {
        self.waiting = None;
        self.pending = None;
        self.ctx.record_refusal(RetryRefusal::Budget);
        tracing::debug!(
            attempt = self.attempts,
            "not retrying: no room in the budget in time"
        );
        Next::Return(match kept {
            Some(Kept::Response(resp)) => Ok(*resp),
            Some(Kept::Error(err)) => Err(RetryError::new(self.attempts, err).into()),
            None => Err(RetryError::new(self.attempts, NotReplayable.into()).into()),
        })
    }

    /// The call's answer when the next attempt cannot be made because the
    /// body turned unreplayable during the backoff: the failure the retry
    /// was decided on, if it was kept.
    pub(crate) fn unreplayable<RB>(&self, kept: Option<Kept<RB>>) -> Next<RB> {
        self.ctx.record_refusal(RetryRefusal::BodyNotReplayable);
        Next::Return(match kept {
            Some(Kept::Response(resp)) => Ok(*resp),
            Some(Kept::Error(err)) => Err(RetryError::new(self.attempts, err).into()),
            None => Err(RetryError::new(self.attempts, NotReplayable.into()).into()),
        })
    }

    /// The call's answer when its deadline passed while the next attempt
    /// waited to be sent (for the body, or for the inner service): a
    /// `total` timeout, nothing sent.
    pub(crate) fn out_of_time<RB>(&self) -> Next<RB> {
        let limit = self
            .retained
            .as_ref()
            .and_then(|r| r.head.plan())
            .and_then(sturdy_core::CallPlan::deadline_limit)
            .unwrap_or_default();
        let err = limit.error(Reach::NotSent, self.ctx.workload());
        Next::Return(Err(RetryError::new(self.attempts, err.into()).into()))
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
        // The decision is an event of the attempt that failed: inside its
        // span (when it is disabled, inside the call's), which this layer
        // then lets go.
        let span = std::mem::replace(&mut self.span, Span::none());
        let _entered = span.enter();
        let policy = &self.shared.policy;
        let attempt = self.attempts;
        let ctx = &self.ctx;
        let hint_ms = hint.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let give_up = |why: Option<RetryRefusal>| {
            if let Some(why) = why {
                ctx.record_refusal(why);
            }
            tracing::debug!(
                attempt,
                reason = kind.label(),
                reach = reach.label(),
                why = why.map_or("not retryable", RetryRefusal::label),
                hint_ms,
                "not retrying"
            );
            None
        };
        if verdict != Verdict::Retryable {
            return give_up(None);
        }
        if let Some(budget) = &self.shared.budget {
            budget.failed();
        }
        if reach == Reach::Unknown && !self.safety.is_repeatable() {
            return give_up(Some(RetryRefusal::NotRepeatable));
        }
        let Some(retained) = self
            .retained
            .as_mut()
            .filter(|_| attempt <= self.max_retries)
        else {
            return give_up(Some(RetryRefusal::RetriesSpent));
        };
        if !retained.handle.is_replayable() {
            return give_up(Some(RetryRefusal::BodyNotReplayable));
        }
        // A full concurrency limit below that took this overload up makes
        // the retry wait in its queue for a permit: that wait spaces it
        // out, and a backoff on top would only leave room unused.
        let queued = hint.is_none() && ctx.overload_queued();
        let delay = match hint {
            Some(d) if d > policy.hint_cap => return give_up(Some(RetryRefusal::HintBeyondCap)),
            Some(d) => d,
            None if queued => Duration::ZERO,
            None => {
                let shared = &self.shared;
                let rng = retained.rng.get_or_insert_with(|| {
                    SmallRng::seed_from_u64(shared.seeds.fetch_add(1, Ordering::Relaxed))
                });
                let d = policy.backoff.delay(
                    attempt - 1,
                    self.prev_delay,
                    policy.max_delay,
                    rng.random(),
                );
                self.prev_delay = d;
                d
            }
        };
        let past = Instant::now()
            .checked_add(delay)
            .filter(|at| self.deadline.is_none_or(|d| *at < d.instant()));
        let Some(wake_at) = past else {
            return give_up(Some(RetryRefusal::PastDeadline));
        };
        if let Some(budget) = &self.shared.budget {
            match budget.admit(None) {
                Admission::Now => {}
                Admission::Refused => return give_up(Some(RetryRefusal::Budget)),
                Admission::Later(_) => {
                    let ticket = budget.ticket();
                    if self.wait_limit(&ticket) <= wake_at {
                        return give_up(Some(RetryRefusal::Budget));
                    }
                    // Asked again when the backoff ends.
                    self.waiting = Some(ticket);
                }
            }
        }
        let duplicated = self.safety.possibly_duplicated(reach);
        self.pending = Some((kind, duplicated));
        tracing::debug!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            hint_used = hint.is_some(),
            queued_by_limit = queued,
            reason = kind.label(),
            reach = reach.label(),
            possibly_duplicated = duplicated,
            "retrying"
        );
        Some(wake_at)
    }

    /// The next attempt's body once it is certain to replay, `None` if it
    /// cannot be (see [`ReplayBody::poll_replay`]).
    pub(crate) fn poll_replay(&self, cx: &mut Context<'_>) -> Poll<Option<ReplayBody<B>>> {
        match &self.retained {
            Some(r) => r.handle.poll_replay(cx),
            None => Poll::Ready(None),
        }
    }

    /// The next attempt's request around `body`; `None` without a kept head
    /// (never: no retry is decided without one).
    pub(crate) fn next_request<E: InnerBody>(&mut self, body: ReplayBody<B>) -> Option<Request<E>>
    where
        B: Send + 'static,
        B::Error: Into<BoxError>,
    {
        let head = &self.retained.as_ref()?.head;
        if let Some((reason, duplicated)) = self.pending.take() {
            self.ctx.record_retry(reason, duplicated);
        }
        self.attempts += 1;
        self.ctx.record_attempt();
        let body = body.reporting_sending(self.ctx.clone(), self.attempts);
        let mut req = head.request(E::from_body(body));
        // A child of the current span: the call's, whose future polls this
        // one.
        self.span = attempt_span(self.attempts - 1);
        if !self.span.is_disabled() {
            req.extensions_mut().insert(AttemptSpan(self.span.clone()));
        }
        self.ctx.arm_sending(self.attempts);
        let policy = &self.shared.policy;
        if let Some(name) = &policy.attempt_header {
            req.headers_mut()
                .insert(name.clone(), http::HeaderValue::from(self.attempts));
        }
        if let Some(name) = &policy.retry_count_header {
            req.headers_mut()
                .insert(name.clone(), http::HeaderValue::from(self.attempts - 1));
        }
        if policy.grpc_previous_attempts {
            req.headers_mut().insert(
                http::HeaderName::from_static("grpc-previous-rpc-attempts"),
                http::HeaderValue::from(self.attempts - 1),
            );
        }
        Some(req)
    }

    /// The call's deadline.
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// How long a drain may take: the policy's bound, never past the deadline.
    pub(crate) fn drain_until(&self) -> Instant {
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

/// What an answer's content type says about reading it ahead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ContentKind {
    /// Server-sent events: held until the first data line.
    EventStream,
    /// gRPC: never read ahead (committed at its head).
    Grpc,
    /// Anything else: read whole when small.
    Other,
}

/// One header lookup.
fn content_kind(headers: &http::HeaderMap) -> ContentKind {
    match sturdy_core::content_type(headers) {
        Some(v) if v.starts_with(b"text/event-stream") => ContentKind::EventStream,
        Some(v) if v.starts_with(b"application/grpc") => ContentKind::Grpc,
        _ => ContentKind::Other,
    }
}
