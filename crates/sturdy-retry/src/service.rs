//! The `Service`: wraps the request body for replay, records the first
//! attempt, deposits into the budget and starts the response future, all
//! synchronously inside `call`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use sturdy_core::{BoxBody, BoxError, CallContext, InnerBody, RetrySafe};
use tower_service::Service;

use crate::future::{Attempts, RequestHead, ResponseFuture, Safety};
use crate::layer::Shared;
use crate::replay::ReplayBody;
use crate::{ResponseBody, RetryLayer, RetryPolicy};

/// Retries failed attempts of `S`. Made by [`RetryLayer`].
pub struct RetryService<S, E = BoxBody> {
    inner: S,
    shared: Arc<Shared>,
    _body: PhantomData<fn(E)>,
}

impl<S, E> RetryService<S, E> {
    /// Wraps `inner` with `policy` (and a budget of its own).
    pub fn new(inner: S, policy: RetryPolicy) -> RetryService<S, E> {
        tower_layer::Layer::layer(&RetryLayer::<E>::new(policy), inner)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> RetryService<S, E> {
        RetryService {
            inner,
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

/// Methods that are safe to repeat by definition (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service makes this call; the future keeps it for retries.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let policy = &shared.policy;

        let (mut parts, body) = req.into_parts();
        // The extensions a retry needs, copied before the context goes in:
        // when this layer is the one adding it (no sturdy layer above), the
        // success path then clones no map and boxes no context, and a retry
        // puts the same context back (`Attempts::next_request`).
        let extensions = (policy.max_retries != 0).then(|| parts.extensions.clone());
        let ctx = CallContext::get_or_insert(&mut parts.extensions);
        ctx.record_attempt();
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        if let Some(name) = &policy.generated_key
            && !parts.headers.contains_key(name)
        {
            parts.headers.insert(name.clone(), fresh_key());
        }
        let idempotent = is_idempotent(&parts.method);
        // Safety only matters once an attempt fails: for a method that is not
        // idempotent the key and the mark are read from the kept head then,
        // unless there is no head, or the attempt header (added below, and
        // so in the head) is the idempotency header itself.
        let safety = if idempotent {
            Safety::of(true, false, false)
        } else if extensions.is_none()
            || policy.attempt_header.as_ref() == Some(&policy.idempotency_header)
        {
            let keyed = parts.headers.contains_key(&policy.idempotency_header);
            let marked = parts.extensions.get::<RetrySafe>().is_some();
            Safety::of(false, keyed, marked)
        } else {
            Safety::InHead
        };
        if let Some(name) = &policy.attempt_header {
            parts
                .headers
                .insert(name.clone(), http::HeaderValue::from(1u32));
        }

        let body = ReplayBody::new(body, policy.replay_cap);
        let (head, handle) = match extensions {
            None => (None, None),
            Some(extensions) => (
                Some(RequestHead::copy(&parts, extensions)),
                Some(body.handle()),
            ),
        };
        let req = Request::from_parts(parts, E::from_body(body));
        let fut = service.call(req);
        let attempts = Attempts {
            shared,
            ctx,
            head,
            handle,
            attempts: 1,
            safety,
            rng: None,
            prev_delay: std::time::Duration::ZERO,
            pending: None,
        };
        ResponseFuture::new(fut, service, attempts)
    }
}
