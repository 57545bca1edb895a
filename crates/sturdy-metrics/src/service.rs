//! [`FailureMetrics`]: starts a flight per call, synchronously inside `call`.
//! The flight reads the workload from the call's context only when it ends,
//! so the label is the one the workload layer below settled, whatever lies
//! in between (a `Buffer` that calls it later included). The call's or
//! attempt's span (see [`crate::span`]) starts here too.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use sturdy_core::{BoxError, CallPlan, Workload, is_grpc};
use tower_service::Service;

use crate::flight::Flight;
use crate::layer::Shared;
use crate::{MethodLabel, Recorder, ResponseFuture, Scope};

/// The service built by [`FailureMetricsLayer`](crate::FailureMetricsLayer).
///
/// Errors and response-body errors are returned boxed ([`BoxError`]), with
/// the inner error unchanged inside.
pub struct FailureMetrics<S, R> {
    inner: S,
    shared: Arc<Shared<R>>,
}

impl<S, R> FailureMetrics<S, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<R>>) -> Self {
        FailureMetrics { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, R> Clone for FailureMetrics<S, R> {
    fn clone(&self) -> Self {
        FailureMetrics {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, R> fmt::Debug for FailureMetrics<S, R> {
    // The inner service is left out: a hand-written client may hold an API
    // key, and its Debug is not ours to trust.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureMetrics")
            .field("scope", &self.shared.scope)
            .field("server_label", &self.shared.server_label)
            .finish_non_exhaustive()
    }
}

impl<S, R, B, ResB> Service<http::Request<B>> for FailureMetrics<S, R>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: http_body::Body,
    R: Recorder,
{
    type Response = http::Response<crate::MetricsBody<ResB, R>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // One clock step: the flight's start and the layers below share
        // one reading.
        let _step = sturdy_core::clock::step();
        let shared = &self.shared;
        // The call scope creates the plan (and its record) when no layer
        // above did; the attempt scope only reads one.
        // One lookup of the plan, which also says whether the request
        // carries anything else (a caller's marker may be among it).
        let (ctx, grpc, others) = match shared.scope {
            Scope::Call => {
                let mut ext = std::mem::take(req.extensions_mut());
                let (plan, others) = CallPlan::in_extensions(&mut ext, req.headers());
                let found = (Some(plan.context().clone()), plan.is_grpc(), others);
                *req.extensions_mut() = ext;
                found
            }
            Scope::Attempt => match CallPlan::find(req.extensions()) {
                (Some(p), markers) => (Some(p.context().clone()), p.is_grpc(), markers.any()),
                (None, markers) => (None, is_grpc(req.headers()), markers.any()),
            },
        };
        let method = method_label(shared, &req, others);
        let server = shared.labels.server(&req, shared.server_label.as_ref());
        // Before the markers are read: an attempt's span handed down is
        // taken out of the request, which then carries its plan alone again.
        let span = crate::span::start(shared, &mut req, &server);
        let asked = match others {
            true => CallPlan::markers(req.extensions())
                .get::<Workload>()
                .copied()
                .unwrap_or_default(),
            false => Workload::default(),
        };
        let flight = Box::new(Flight::start(
            self.shared.clone(),
            method,
            server,
            asked,
            ctx,
            grpc,
            span,
        ));
        // Entered while the inner service starts the call: a layer below
        // (the retry layer's first attempt span) is its child.
        let fut = {
            let _entered = flight.span().enter();
            self.inner.call(req)
        };
        // The flight boxed first: the inner future, the largest part, is
        // moved once, into this one (BENCHMARKS.md).
        ResponseFuture::new(fut, flight)
    }
}

/// The method label: tonic's method when the request carries one (only
/// when it carries anything beside its plan: `others`), else the HTTP
/// method.
#[cfg_attr(not(feature = "grpc"), allow(unused_variables))]
fn method_label<R, B>(shared: &Shared<R>, req: &http::Request<B>, others: bool) -> MethodLabel {
    #[cfg(feature = "grpc")]
    if others && let Some(m) = req.extensions().get::<tonic::GrpcMethod<'static>>() {
        return shared.labels.grpc_method(m.service(), m.method());
    }
    shared.known.label(req.method())
}
