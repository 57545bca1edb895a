//! The pacer: [`PacerLayer`] and its service [`Pacer`].

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use sturdy_core::{BoxError, CallPlan, Deadline, PacerError};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::{Holding, ResponseFuture};
use crate::state::{LastServer, Need, Shared};
use crate::stats::PacerStats;

/// How many servers a pacer tracks at most; requests to further servers go
/// unpaced.
pub const MAX_SERVERS: usize = 1024;

/// The tokens a request will take, as the caller knows it: a request
/// extension the pacer reads instead of its own estimate (the body's size
/// in bytes over four). Counted against the `tokens` and `input_tokens`
/// dimensions; set it to the prompt's tokens plus `max_tokens` to be
/// precise. It counts as at least 1 and at most 2³² − 1 (4 294 967 295).
///
/// ```
/// use sturdy_rate::TokenEstimate;
/// let mut req = http::Request::post("https://api.test/v1/chat/completions").body(()).unwrap();
/// req.extensions_mut().insert(TokenEstimate(1_200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenEstimate(pub u64);

/// Paces new attempts by the rate-limit headers servers send (see
/// [`RateLimitHeaders`](crate::RateLimitHeaders)).
///
/// After every response head it updates that server's view: per dimension
/// (requests, tokens, input tokens, output tokens) what is left and when it
/// resets, as of the answer's arrival. Before an attempt goes, it takes
/// what the attempt needs from that view (one request; the
/// [`TokenEstimate`], else the request body's size hint over four, at least
/// one token), so that attempts sent between two answers count down: of
/// 64 concurrent attempts against a remaining count of 1, one goes. When a
/// dimension has too little left, the attempt is **held** until that
/// dimension's reset instant, then looked at again (by then the count is
/// unknown, so it goes, unless a newer answer said otherwise).
///
/// A hold never outlives the call: when the reset comes at or after the
/// call's [`Deadline`] (the one settled in its
/// [`CallPlan`](sturdy_core::CallPlan), else a `Deadline` extension), the
/// attempt fails at once with [`PacerError::ResetBeyondDeadline`], which
/// [`classify_error`](sturdy_core::classify_error) labels
/// `rate_limit_hold`, reach `NotSent`, never retried.
///
/// Place it per attempt: below the retry layer (then a retry is paced too,
/// and a 429's headers pace the next attempt) and above the attempt
/// timeout layer (then a hold does not count against an attempt's
/// `headers` limit; the call's deadline bounds it anyway).
///
/// All clones of the layer and its services share one view per server
/// (`host:port` of the request URI, never its user-info; at most
/// [`MAX_SERVERS`]); [`stats`](PacerLayer::stats) tells what it did.
/// Until a server's answers name a rate-limit field, its attempts are only
/// counted in and out, with atomic adds: no lock is shared by the
/// attempts of every clone.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use sturdy_rate::PacerLayer;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), sturdy_core::BoxError> {
/// let pacer = PacerLayer::new();
/// // A fake server: no requests left, room again in two seconds.
/// let mut svc = ServiceBuilder::new()
///     .layer(pacer.clone())
///     .service_fn(|_req: http::Request<Full<Bytes>>| async {
///         Ok::<_, sturdy_core::BoxError>(
///             http::Response::builder()
///                 .header("x-ratelimit-remaining-requests", "0")
///                 .header("x-ratelimit-reset-requests", "2s")
///                 .body(())?,
///         )
///     });
/// let req = || http::Request::post("https://api.test/v1/chat/completions")
///     .body(Full::new(Bytes::from_static(b"{}")))
///     .unwrap();
/// svc.ready().await?.call(req()).await?;
/// // The next attempt waits for the reset.
/// let start = tokio::time::Instant::now();
/// svc.ready().await?.call(req()).await?;
/// assert_eq!(start.elapsed(), Duration::from_secs(2));
/// let stats = pacer.stats();
/// let server = stats.server("api.test:443").unwrap();
/// assert_eq!((server.held, server.held_time), (1, Duration::from_secs(2)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PacerLayer {
    shared: Arc<Shared>,
}

impl PacerLayer {
    /// A pacer with nothing known yet.
    pub fn new() -> PacerLayer {
        PacerLayer {
            shared: Arc::new(Shared::new(MAX_SERVERS)),
        }
    }

    /// A pacer that paces nothing: every attempt goes through at once (one
    /// branch). What `StackBuilder::pacing(false)` puts in the stack.
    pub fn off() -> PacerLayer {
        PacerLayer {
            shared: Arc::new(Shared::new(0)),
        }
    }

    /// What every service of this layer did so far, per server
    /// (`sturdy_metrics::PacerCollector` exports it to Prometheus).
    pub fn stats(&self) -> PacerStats {
        self.shared.stats()
    }
}

impl Default for PacerLayer {
    fn default() -> Self {
        PacerLayer::new()
    }
}

impl<S> Layer<S> for PacerLayer {
    type Service = Pacer<S>;

    fn layer(&self, inner: S) -> Pacer<S> {
        Pacer {
            inner,
            shared: Arc::clone(&self.shared),
            last: None,
        }
    }
}

/// The service made by [`PacerLayer`]; see there.
///
/// It needs a `Clone` inner service: a held attempt takes the service that
/// was made ready for it along, and leaves a clone in its place. So a
/// service whose readiness reserves capacity (a concurrency limit's permit,
/// a buffer's slot) keeps that reservation through the hold, as it would
/// above the pacer: held attempts count against it.
#[derive(Debug, Clone)]
pub struct Pacer<S> {
    inner: S,
    shared: Arc<Shared>,
    // The server of this service's last attempt: the next one to the same
    // server skips the shared map.
    last: Option<LastServer>,
}

impl<S> Pacer<S> {
    /// A pacer of its own (sharing nothing with any layer) around `inner`.
    pub fn new(inner: S) -> Pacer<S> {
        PacerLayer::new().layer(inner)
    }

    /// What this service and every clone of it (and of its layer) did so
    /// far, per server.
    pub fn stats(&self) -> PacerStats {
        self.shared.stats()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What an attempt of `req` takes: one request; its tokens (the caller's
/// [`TokenEstimate`], else a quarter of the body's size hint, rounded up;
/// at least one, at most [`Need::MAX_TOKENS`]) from `tokens` and
/// `input_tokens`; and one output token.
fn need_of<B: Body>(req: &Request<B>, tokens_tracked: bool) -> Need {
    Need::tokens(match req.extensions().get::<TokenEstimate>() {
        Some(TokenEstimate(n)) => *n,
        // Asking the body its size is not free of meaning: sturdy's retry
        // bodies take it as a connection taking the request up (what tells
        // a timeout before the connection from one after). So only when the
        // server counts tokens at all.
        None if tokens_tracked => req.body().size_hint().lower().div_ceil(4),
        None => 1,
    })
}

/// The call's deadline: the one settled in its plan, else the caller's
/// `Deadline` extension.
fn deadline_of<B>(req: &Request<B>) -> Option<Deadline> {
    let ext = req.extensions();
    CallPlan::from_extensions(ext)
        .and_then(CallPlan::deadline)
        .or_else(|| Deadline::from_extensions(ext))
}

impl<S, B, RB> Service<Request<B>> for Pacer<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(server) = self.shared.server_via(req.uri(), &mut self.last) else {
            return ResponseFuture::unpaced(self.inner.call(req));
        };
        let (need, until) = server.admit(|tokens| need_of(&req, tokens), Instant::now);
        let Some((until, now)) = until else {
            return ResponseFuture::sent(self.inner.call(req), server, need);
        };
        let deadline = deadline_of(&req);
        if let Some(err) = beyond_deadline(&server.label, until, deadline, now) {
            server.failed_for_deadline();
            return ResponseFuture::failed(err);
        }
        server.hold_started();
        tracing::debug!(
            server = &*server.label,
            wait_ms = until.saturating_duration_since(now).as_millis() as u64,
            "holding an attempt until the server's rate limit resets"
        );
        // The service made ready for this request goes with it; a clone
        // stays for the next `poll_ready`.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::held(Holding::new(svc, req, server, need, deadline, now), until)
    }
}

/// The error for a hold until `until` that would reach `deadline`, if it
/// would.
pub(crate) fn beyond_deadline(
    server: &Arc<str>,
    until: Instant,
    deadline: Option<Deadline>,
    now: Instant,
) -> Option<PacerError> {
    let d = deadline?.instant();
    (until >= d).then(|| {
        let wait = until.saturating_duration_since(now);
        let left = d.saturating_duration_since(now);
        tracing::debug!(
            server = &**server,
            wait_ms = wait.as_millis() as u64,
            left_ms = left.as_millis() as u64,
            "failing an attempt: the server's rate limit resets after the call's deadline"
        );
        PacerError::reset_beyond_deadline(Arc::clone(server), wait, left)
    })
}
