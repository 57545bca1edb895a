//! Adaptive concurrency: a limit on the requests in flight that learns the
//! server's capacity from its answers ([`AdaptiveConcurrencyLayer`]).
//!
//! # The algorithm: AIMD with slow start, one decrease per round
//!
//! The limit `L` is a real number, floored for admission and kept within
//! `[min, max]`:
//!
//! - **slow start**: until the first overload, each success adds 1 (the
//!   limit doubles per round trip), so a server with room for hundreds is
//!   found in a few round trips, not hundreds. Slow start runs ahead of
//!   what the server has shown it takes (a round's growth goes out as one
//!   burst), so the first decrease starts from the requests in flight when
//!   the refused one was sent, not from the limit (TCP's FlightSize);
//! - **additive increase**: after it, each success adds `increase / L`
//!   (`+1` per `L` successes: about `+1` per round trip);
//! - **multiplicative decrease**: an overload multiplies `L` by `decrease`
//!   (0.9), at most **once per round**. A round ends when a request sent
//!   after the last decrease comes back: an overload reported by a request
//!   sent before it was sent under the old, higher limit, and was already
//!   acted on (its success does not grow the limit either). So a burst
//!   of 100 simultaneous `503`s shrinks the limit
//!   once, not 100 times (0.9¹⁰⁰ would take any limit to `min`), while a
//!   server that keeps refusing what is sent under the new limit makes it
//!   shrink again at the next answer, as fast as refusals come back. This
//!   is TCP's rule for one congestion response per window (RFC 6582's
//!   recovery point), counted in requests rather than timed, so it needs
//!   no clock and no round-trip estimate;
//! - a success grows the limit only while the limit is in use (at least
//!   half of it in flight): a limit nobody reaches would otherwise climb
//!   to `max` under a light load and let the next burst through
//!   unchecked.
//!
//! Why 0.9 and not TCP's 0.5: a concurrency limit sits right at the
//! server's capacity, and after a decrease it takes `(1 - β)·L` round
//! trips to climb back. With 0.5 the limit spends most of its time far
//! below capacity; with 0.9 it stays within 10 % of it, at the cost of a
//! refusal at each crest of the sawtooth (one every few round trips).
//! Refusals that come back at once make the rounds short, so 0.9 still
//! collapses quickly when the capacity really drops. Measured against a
//! server that serves 20 requests at once, 50 ms each, and refuses the
//! rest (`benches/adaptive.rs` in sturdy's repository, 128 callers): after
//! the first second ×0.9 keeps the limit at 19.2 on average, 1.5 % of
//! attempts refused and 93 % of the capacity used; ×0.5 keeps it at 14.7,
//! 0.5 % refused and 74 % used; ×0.95 uses 95 % and has 2.3 % refused.
//!
//! # What counts
//!
//! | answer | signal |
//! |---|---|
//! | a success (by the call's [`Classifier`]) | grow |
//! | `429` (unless its small body says `insufficient_quota`), `503`, `529` | shrink |
//! | gRPC `RESOURCE_EXHAUSTED`, `UNAVAILABLE` | shrink |
//! | a timeout after the request was sent: `headers_timeout`, `read_timeout`, `write_timeout`, `total_timeout` (reach not `not_sent`) | shrink |
//! | a quota error, any other failure (`500`, `502`, `504`, resets, connect failures, `ready_timeout`), a cancellation | nothing |
//!
//! See [`is_overload`]. A quota error is no overload: the account is out of
//! credit, and fewer requests in flight would not change that. Other 5xx
//! and resets say a request failed, not that the server lacked room for
//! it. Timeouts before sending (`connect_timeout`, `ready_timeout`) say
//! nothing about the server's capacity for requests; a `ready_timeout` is
//! often this very limit's queue, and shrinking on it would feed on
//! itself.
//!
//! A `429`'s body is read as it passes (up to
//! [`MAX_ERROR_BODY`](sturdy_core::MAX_ERROR_BODY) bytes) and judged at its
//! end with [`classify_error_body`](sturdy_core::classify_error_body), the
//! reading [`Judgement::with_body`](sturdy_core::Judgement::with_body)
//! does. A `429` whose body is dropped before its end, or is larger, counts
//! as overload.
//!
//! # Permits
//!
//! `poll_ready` takes a permit when fewer than `L` requests are in flight,
//! and is `Pending` otherwise: callers wait in FIFO order, each woken when
//! a permit is handed to it. The permit is held from `call` until the
//! response body ends, fails or is dropped (a stream counts while it is
//! open); an error, or a response future dropped before its response,
//! gives it back at once. When `L` grows, waiters are let in at once; when
//! it shrinks, nobody is cut off: new requests wait until the requests in
//! flight fall below it.
//!
//! # Retries wait in the queue, not in a backoff
//!
//! When an overload leaves the limit full (requests in flight at the new
//! limit, or callers waiting) and above its minimum, the permit tells the
//! call's [`CallContext`](sturdy_core::CallContext)
//! ([`record_overload_queued`](sturdy_core::CallContext::record_overload_queued)),
//! and sturdy's retry layer sends that attempt's retry without a backoff:
//! it waits for a permit like any other request, which spaces it out as
//! a backoff would, without leaving room unused. A server's `retry-after`
//! is still honoured and the retry budget still applies; with room under
//! the limit, or at its floor, the retry keeps its backoff. Measured on the
//! server above: over a whole run of 2 000 calls, 91.9 % of the capacity
//! used and a 0.6 s p99, against 70.5 % and 2.1 s when refused calls sat
//! out a 1–2 s backoff at the end.
//!
//! In sturdy's [`Stack`](https://docs.rs/sturdy-tower), put it at the
//! attempt position (`StackBuilder::attempt_layer`): every attempt, the
//! retries included, goes through the limit, and the wait for a permit is
//! the `ready` phase the workload timeout bounds (a call that waits longer
//! fails with `ready_timeout`, not sent).

mod body;
mod future;
mod state;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use sturdy_core::{BoxError, CallPlan, Classifier, FailureKind, GrpcCode, Reach};
use tower_layer::Layer;
use tower_service::Service;

pub use body::AdaptiveBody;
pub use future::ResponseFuture;

use future::Permit;
use state::{Key, Seq, Shared};

/// The default lower bound of the limit.
pub const DEFAULT_MIN_LIMIT: usize = 1;

/// The default upper bound of the limit: far above what one client's rate
/// limits let through to any provider, yet a bound on the sockets and
/// memory a runaway limit could take.
pub const DEFAULT_MAX_LIMIT: usize = 1000;

/// The default starting limit: a modest concurrency that LLM APIs accept
/// from one client on their lowest tiers; slow start finds more room in a
/// few round trips when there is some.
pub const DEFAULT_INITIAL_LIMIT: usize = 16;

/// The default additive increase: `+1` per round trip (`+1/L` per success).
pub const DEFAULT_INCREASE: f64 = 1.0;

/// The default multiplicative decrease: `×0.9`, at most once per round.
pub const DEFAULT_DECREASE: f64 = 0.9;

/// Whether a failure says the server lacked capacity for the request: the
/// signals that shrink an adaptive limit (see [the table](self)).
///
/// ```
/// use sturdy_core::{FailureKind, Reach};
/// use sturdy_rate::is_overload;
/// let status = |code| FailureKind::Status(http::StatusCode::from_u16(code).unwrap());
/// assert!(is_overload(&status(503)));
/// assert!(is_overload(&status(429)));
/// assert!(!is_overload(&status(500)));
/// assert!(!is_overload(&FailureKind::QuotaExhausted));
/// assert!(is_overload(&FailureKind::HeadersTimeout));
/// assert!(!is_overload(&FailureKind::TotalTimeout(Reach::NotSent)));
/// ```
pub fn is_overload(kind: &FailureKind) -> bool {
    match kind {
        FailureKind::Status(s) => matches!(s.as_u16(), 429 | 503 | 529),
        FailureKind::Grpc(code) => {
            matches!(code, GrpcCode::ResourceExhausted | GrpcCode::Unavailable)
        }
        FailureKind::HeadersTimeout | FailureKind::ReadTimeout | FailureKind::WriteTimeout => true,
        FailureKind::TotalTimeout(reach) => *reach != Reach::NotSent,
        _ => false,
    }
}

/// The limit's settings, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Config {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) initial: usize,
    pub(crate) increase: f64,
    pub(crate) decrease: f64,
    pub(crate) slow_start: bool,
}

/// An invalid [`AdaptiveConcurrencyBuilder`] setting.
///
/// ```
/// use sturdy_rate::{AdaptiveConcurrencyLayer, LimitConfigError};
/// let err = AdaptiveConcurrencyLayer::builder().min(10).max(5).build().unwrap_err();
/// assert_eq!(err, LimitConfigError::MinAboveMax { min: 10, max: 5 });
/// assert!(AdaptiveConcurrencyLayer::builder().decrease(f64::NAN).build().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LimitConfigError {
    /// `min` is 0: a limit of 0 admits nothing, so nothing could ever make
    /// it grow again.
    ZeroMin,
    /// `min` is above `max`.
    MinAboveMax {
        /// The lower bound given.
        min: usize,
        /// The upper bound given.
        max: usize,
    },
    /// The decrease factor is not strictly between 0 and 1 (or is NaN).
    Decrease(f64),
    /// The increase is not a finite number above 0.
    Increase(f64),
}

impl fmt::Display for LimitConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitConfigError::ZeroMin => {
                f.write_str("the minimum concurrency limit must be 1 or more")
            }
            LimitConfigError::MinAboveMax { min, max } => {
                write!(
                    f,
                    "the minimum concurrency limit {min} is above the maximum {max}"
                )
            }
            LimitConfigError::Decrease(d) => {
                write!(f, "the decrease factor {d} is not strictly between 0 and 1")
            }
            LimitConfigError::Increase(i) => {
                write!(f, "the increase {i} is not a finite number above 0")
            }
        }
    }
}

impl std::error::Error for LimitConfigError {}

/// Builds an [`AdaptiveConcurrencyLayer`].
///
/// ```
/// use sturdy_rate::AdaptiveConcurrencyLayer;
/// let layer = AdaptiveConcurrencyLayer::builder()
///     .min(2)
///     .max(64)
///     .initial(8)
///     .decrease(0.8)
///     .build()
///     .unwrap();
/// assert_eq!(layer.limit(), 8);
/// // An initial limit outside [min, max] is clamped into it.
/// let layer = AdaptiveConcurrencyLayer::builder().max(4).build().unwrap();
/// assert_eq!(layer.limit(), 4);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AdaptiveConcurrencyBuilder {
    min: usize,
    max: usize,
    initial: usize,
    increase: f64,
    decrease: f64,
    slow_start: bool,
}

impl Default for AdaptiveConcurrencyBuilder {
    fn default() -> Self {
        AdaptiveConcurrencyBuilder {
            min: DEFAULT_MIN_LIMIT,
            max: DEFAULT_MAX_LIMIT,
            initial: DEFAULT_INITIAL_LIMIT,
            increase: DEFAULT_INCREASE,
            decrease: DEFAULT_DECREASE,
            slow_start: true,
        }
    }
}

impl AdaptiveConcurrencyBuilder {
    /// The lowest the limit goes (default [`DEFAULT_MIN_LIMIT`]; at least 1).
    pub fn min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest the limit goes (default [`DEFAULT_MAX_LIMIT`]).
    pub fn max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The starting limit (default [`DEFAULT_INITIAL_LIMIT`]), clamped into
    /// `[min, max]`.
    pub fn initial(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// What the limit grows by per round trip after slow start: `increase /
    /// L` per success (default [`DEFAULT_INCREASE`]); finite and above 0.
    pub fn increase(mut self, increase: f64) -> Self {
        self.increase = increase;
        self
    }

    /// The factor the limit is multiplied by on overload, at most once per
    /// round (default [`DEFAULT_DECREASE`]); strictly between 0 and 1.
    pub fn decrease(mut self, decrease: f64) -> Self {
        self.decrease = decrease;
        self
    }

    /// Whether the limit doubles per round trip until the first overload
    /// (default `true`); without, it grows additively from the start.
    pub fn slow_start(mut self, on: bool) -> Self {
        self.slow_start = on;
        self
    }

    /// The layer, or what is wrong with the settings.
    pub fn build(self) -> Result<AdaptiveConcurrencyLayer, LimitConfigError> {
        if self.min == 0 {
            return Err(LimitConfigError::ZeroMin);
        }
        if self.min > self.max {
            return Err(LimitConfigError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if !(self.decrease > 0.0 && self.decrease < 1.0) {
            return Err(LimitConfigError::Decrease(self.decrease));
        }
        if !(self.increase.is_finite() && self.increase > 0.0) {
            return Err(LimitConfigError::Increase(self.increase));
        }
        let config = Config {
            min: self.min,
            max: self.max,
            initial: self.initial.clamp(self.min, self.max),
            increase: self.increase,
            decrease: self.decrease,
            slow_start: self.slow_start,
        };
        Ok(AdaptiveConcurrencyLayer {
            shared: Arc::new(Shared::new(config)),
        })
    }
}

/// A [`Layer`] that limits the requests in flight to a limit it adapts to
/// the server's answers: see [the module](self) for the algorithm and the
/// signals.
///
/// One layer is one limit: every service it makes, and every clone of
/// them, share it (an `Arc`). Clones of the layer share it too; build
/// another layer for another server.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use sturdy_rate::AdaptiveConcurrencyLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sturdy_core::BoxError> {
/// let limit = AdaptiveConcurrencyLayer::new();
/// let gauge = limit.gauge();
/// let svc = ServiceBuilder::new()
///     .layer(limit)
///     .service_fn(|_req: http::Request<()>| async {
///         Ok::<_, sturdy_core::BoxError>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
///     });
/// let resp = svc.oneshot(http::Request::new(())).await?;
/// assert_eq!(gauge.in_flight(), 1, "held until the body is over");
/// resp.into_body().collect().await?;
/// assert_eq!(gauge.in_flight(), 0);
/// assert_eq!(gauge.current_limit(), 16);
/// # Ok(()) }
/// ```
///
/// In sturdy's stack, it goes at the attempt position:
/// `sturdy::Stack::builder().attempt_layer(AdaptiveConcurrencyLayer::new())`.
#[derive(Clone)]
pub struct AdaptiveConcurrencyLayer {
    shared: Arc<Shared>,
}

impl AdaptiveConcurrencyLayer {
    /// A limit with the defaults: from [`DEFAULT_INITIAL_LIMIT`] within
    /// `[DEFAULT_MIN_LIMIT, DEFAULT_MAX_LIMIT]`, `+1` per round trip,
    /// `×0.9` on overload, slow start.
    pub fn new() -> AdaptiveConcurrencyLayer {
        let config = Config {
            min: DEFAULT_MIN_LIMIT,
            max: DEFAULT_MAX_LIMIT,
            initial: DEFAULT_INITIAL_LIMIT,
            increase: DEFAULT_INCREASE,
            decrease: DEFAULT_DECREASE,
            slow_start: true,
        };
        AdaptiveConcurrencyLayer {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// A builder, with the defaults.
    pub fn builder() -> AdaptiveConcurrencyBuilder {
        AdaptiveConcurrencyBuilder::default()
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// The requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// The services waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting()
    }

    /// A handle that reads the limit's gauges, for a metrics exporter
    /// (`sturdy_metrics::ConcurrencyCollector` exports them to Prometheus).
    pub fn gauge(&self) -> ConcurrencyGauge {
        ConcurrencyGauge {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Default for AdaptiveConcurrencyLayer {
    fn default() -> Self {
        AdaptiveConcurrencyLayer::new()
    }
}

impl fmt::Debug for AdaptiveConcurrencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S> Layer<S> for AdaptiveConcurrencyLayer {
    type Service = AdaptiveConcurrency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveConcurrency {
            inner,
            shared: Arc::clone(&self.shared),
            reserved: None,
            waiting: None,
        }
    }
}

/// Reads an adaptive limit's gauges: each read is one relaxed atomic load.
///
/// ```
/// let layer = sturdy_rate::AdaptiveConcurrencyLayer::new();
/// let gauge = layer.gauge();
/// assert_eq!((gauge.current_limit(), gauge.in_flight(), gauge.waiting()), (16, 0, 0));
/// ```
#[derive(Clone)]
pub struct ConcurrencyGauge {
    shared: Arc<Shared>,
}

impl ConcurrencyGauge {
    /// The current limit.
    pub fn current_limit(&self) -> usize {
        self.shared.limit()
    }

    /// The requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// The services waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting()
    }
}

impl fmt::Debug for ConcurrencyGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyGauge")
            .field("limit", &self.current_limit())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// The service made by [`AdaptiveConcurrencyLayer`]: `poll_ready` waits
/// for a permit under the shared limit, `call` hands it to the request,
/// which holds it until its response body is over.
///
/// A clone starts without a permit or a place in the queue; dropping a
/// service gives both back. A `call` made without a successful
/// `poll_ready` (against tower's contract) is let through and counted,
/// rather than refused.
///
/// ```
/// use std::task::{Context, Poll};
/// use sturdy_rate::AdaptiveConcurrencyLayer;
/// use tower::{Layer, Service};
///
/// let layer = AdaptiveConcurrencyLayer::builder().initial(1).build().unwrap();
/// let inner = tower::service_fn(|_: http::Request<()>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// });
/// let mut a = layer.layer(inner);
/// let mut b = a.clone();
/// let mut cx = Context::from_waker(std::task::Waker::noop());
/// assert!(Service::<http::Request<()>>::poll_ready(&mut a, &mut cx).is_ready());
/// assert!(Service::<http::Request<()>>::poll_ready(&mut b, &mut cx).is_pending());
/// assert_eq!((a.in_flight(), layer.waiting()), (1, 1));
/// drop(a); // its permit goes to b
/// assert!(Service::<http::Request<()>>::poll_ready(&mut b, &mut cx).is_ready());
/// ```
pub struct AdaptiveConcurrency<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The permit `poll_ready` took, for the next `call`.
    reserved: Option<Seq>,
    /// Its place in the queue while it waits.
    waiting: Option<Key>,
}

impl<S> AdaptiveConcurrency<S> {
    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// The requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// A handle that reads the limit's gauges.
    pub fn gauge(&self) -> ConcurrencyGauge {
        ConcurrencyGauge {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Clone> Clone for AdaptiveConcurrency<S> {
    fn clone(&self) -> Self {
        AdaptiveConcurrency {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            reserved: None,
            waiting: None,
        }
    }
}

impl<S> Drop for AdaptiveConcurrency<S> {
    fn drop(&mut self) {
        if let Some(key) = self.waiting.take() {
            self.shared.cancel(key);
        }
        if let Some(seq) = self.reserved.take() {
            let _ = self.shared.release(seq, state::Signal::Neutral);
        }
    }
}

impl<S> fmt::Debug for AdaptiveConcurrency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("holds_permit", &self.reserved.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> Service<Request<B>> for AdaptiveConcurrency<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body,
    RB::Error: Into<BoxError>,
{
    type Response = Response<AdaptiveBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.reserved.is_none() {
            match self.shared.poll_acquire(&mut self.waiting, cx) {
                Poll::Ready(seq) => self.reserved = Some(seq),
                Poll::Pending => return Poll::Pending,
            }
        }
        // The permit is kept while the inner service gets ready.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let seq = match self.reserved.take() {
            Some(seq) => seq,
            None => self.shared.acquire_now(),
        };
        // The classifier the retry layer settled (a user's, or the
        // tables), whether the call is gRPC, and the attempt this is.
        let (classifier, grpc, attempt) = match CallPlan::from_extensions(req.extensions()) {
            Some(plan) => {
                let ctx = plan.context();
                let attempt = (ctx.clone(), ctx.attempts());
                (plan.classifier().clone(), plan.is_grpc(), Some(attempt))
            }
            None => (
                Classifier::tables(),
                sturdy_core::is_grpc(req.headers()),
                None,
            ),
        };
        let permit = Permit::new(Arc::clone(&self.shared), seq, attempt);
        ResponseFuture::new(self.inner.call(req), permit, classifier, grpc)
    }
}
