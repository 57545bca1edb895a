//! The `Service`: settles the request's safety and classifier in its plan,
//! wraps the body for replay, keeps what a retry needs, records the first
//! attempt, deposits into the budget and starts the response future, all
//! synchronously inside `call`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use sturdy_core::span::{AttemptSpan, attempt_span};
use sturdy_core::{
    BoxBody, BoxError, CallPlan, Deadline, InnerBody, MaxRetries, NotRetrySafe, RequestHead,
    RetrySafe, Safety,
};
use tower_service::Service;

use crate::attempts::{Attempts, Retained};
use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::replay::{ReplayBody, ReplayCaps};
use crate::{MAX_RETRIES_LIMIT, ResponseBody, RetryLayer, RetryPolicy};

/// Retries failed attempts of `S`. Made by [`RetryLayer`].
///
/// `E` is the request body type `S` takes; the caller's body `B` becomes
/// one through [`InnerBody`]: `BoxBody` (what `sturdy::client()` takes) or
/// `tonic::body::Body` (a tonic `Channel`, feature `grpc` of sturdy-core).
/// A client taking another body type, such as hyper-util's
/// `Client<_, Full<Bytes>>`, needs its body boxed: build it for `BoxBody`.
pub struct RetryService<S, E = BoxBody> {
    inner: S,
    // A clone of `inner`, made at the first call, that every call's future
    // shares: a retry clones it then, so a call that needs no retry clones
    // no service (a hyper-util `Client` is a dozen `Arc`s). In a `Mutex`
    // so that the future stays `Send` for a service that is not `Sync`;
    // it is locked only to clone, for a retry.
    template: Option<Arc<Mutex<S>>>,
    shared: Arc<Shared>,
    _body: PhantomData<fn(E)>,
}

impl<S, E> RetryService<S, E> {
    /// Wraps `inner` with `policy` (and a budget of its own).
    pub fn new(inner: S, policy: RetryPolicy) -> RetryService<S, E> {
        RetryLayer::<E>::new(policy).service(inner)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> RetryService<S, E> {
        RetryService {
            inner,
            template: None,
            shared,
            _body: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, E> Clone for RetryService<S, E> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            template: self.template.clone(),
            shared: Arc::clone(&self.shared),
            _body: PhantomData,
        }
    }
}

impl<S, E> fmt::Debug for RetryService<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// A random key in UUID v4 form.
fn fresh_key() -> http::HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    // Hex digits and dashes are always a valid header value.
    http::HeaderValue::from_bytes(&out).unwrap_or_else(|_| http::HeaderValue::from_static("-"))
}

impl<S, B, E, RB> Service<Request<B>> for RetryService<S, E>
where
    S: Service<Request<E>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: InnerBody,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, B, E, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let policy = &shared.policy;

        if let Some(name) = &policy.generated_key
            && !req.headers().contains_key(name)
        {
            req.headers_mut().insert(name.clone(), fresh_key());
        }
        // This layer's part of the plan: whether the request may be sent
        // again, and what judges its answers. Settled before the head is
        // kept, so every attempt carries them.
        // The plan in one lookup, the extensions taken out of the request
        // so that its head can be read beside them.
        let mut ext = std::mem::take(req.extensions_mut());
        let (mut plan, others) = CallPlan::in_extensions(&mut ext, req.headers());
        let (marked, unmarked, callers_deadline, asked_retries) = if others {
            let markers = CallPlan::markers(&ext);
            let asked = (
                markers.get::<RetrySafe>().is_some(),
                markers.get::<NotRetrySafe>().is_some(),
                markers.get::<Deadline>().copied(),
                markers.get::<MaxRetries>().map(|m| m.0),
            );
            plan = CallPlan::in_extensions(&mut ext, req.headers()).0;
            asked
        } else {
            (false, false, None, None)
        };
        let max_retries = asked_retries.map_or(policy.max_retries, |m| m.min(MAX_RETRIES_LIMIT));
        let mut safety = policy.safety(&RequestHead::of(&req), marked);
        if unmarked {
            safety = Safety::new(false, safety.is_deduplicated());
        }
        let deadline = plan.deadline().or(callers_deadline);
        let grpc = plan.is_grpc();
        plan.settle_safety(safety);
        if policy.classifier.has_user_classifier() {
            plan.set_classifier(policy.classifier.clone());
        }
        let ctx = plan.context().clone();
        // What a retry keeps of the extensions when they hold the plan
        // alone: the plan, copied here rather than looked up again.
        let plan_alone = (max_retries > 0 && !others).then(|| plan.clone());
        *req.extensions_mut() = ext;
        ctx.mark_attempts_managed();
        ctx.record_attempt();
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        if let Some(name) = &policy.attempt_header {
            req.headers_mut()
                .insert(name.clone(), http::HeaderValue::from(1u32));
        }
        if let Some(name) = &policy.retry_count_header {
            req.headers_mut()
                .insert(name.clone(), http::HeaderValue::from(0u32));
        }

        let (mut parts, body) = req.into_parts();
        let caps = ReplayCaps {
            in_memory: policy.in_memory_cap,
            streamed: policy.replay_cap,
        };
        let body = ReplayBody::with_caps(body, caps).reporting_sending(ctx.clone(), 1);
        // What a retry needs, kept before the request goes (the ready
        // service makes this call, tower's contract; a retry goes through a
        // clone of the shared template, made when the first retry is, and
        // polls it ready before it calls it).
        let retained = (max_retries > 0).then(|| {
            let inner = &self.inner;
            let template = self
                .template
                .get_or_insert_with(|| Arc::new(Mutex::new(inner.clone())));
            Retained::new(&parts, plan_alone, body.handle(), Arc::clone(template))
        });
        // The first attempt's span, handed down to the attempts metrics
        // layer (after the head was kept: a retry carries its own).
        let span = attempt_span(0);
        if !span.is_disabled() {
            parts.extensions.insert(AttemptSpan(span.clone()));
        }
        let req = Request::from_parts(parts, E::from_body(body));
        ctx.arm_sending(1);
        let attempts =
            Attempts::new(shared, ctx, retained, max_retries, safety, grpc, deadline).in_span(span);
        // The inner future made in the constructor's argument, after the
        // rest: moved once, into this one.
        ResponseFuture::new(self.inner.call(req), attempts)
    }
}
