//! The outer service's `call`: chooses the workload and profile, writes
//! `Workload`, `Deadline` and the `CallContext` into the request, and calls
//! the inner service at once when it is ready, or else hands the inner
//! service to the response future (keeping a clone for the next call).

use std::task::{Context, Poll};

use http::{Request, Response};
use sturdy_core::{BoxError, CallContext, Deadline, Profile, Profiles, Workload};
use tower_service::Service;

use super::{ResponseFuture, TotalBody};
use crate::classify::{ClassifyWorkload, PathClassifier, RequestHead};
use crate::grpc::is_grpc_request;

/// The service made by [`WorkloadTimeoutLayer`](crate::WorkloadTimeoutLayer).
///
/// It is always ready: the wait for the inner service's capacity happens in
/// the response future, on a clone of the inner service, under the request's
/// `ready` limit. (When the inner service is ready at once, `call` calls it
/// directly and no clone is made.) That is why `S: Clone` (as for tower's
/// `Retry`), and what it means for backpressure: callers do not queue in
/// `poll_ready`; each call queues inside its own future instead, and gives
/// up with a `ready_timeout` when its limit passes. The inner service's own
/// capacity (a `ConcurrencyLimit`, a `Buffer`) still bounds how many calls
/// run at once, because every clone shares it.
#[derive(Debug, Clone)]
pub struct WorkloadTimeout<S, C = PathClassifier> {
    inner: S,
    profiles: Profiles,
    classifier: C,
}

impl<S, C> WorkloadTimeout<S, C> {
    pub(crate) fn from_parts(inner: S, profiles: Profiles, classifier: C) -> Self {
        WorkloadTimeout {
            inner,
            profiles,
            classifier,
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

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, ReqB, ResB> Service<Request<ReqB>> for WorkloadTimeout<S, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: ClassifyWorkload,
{
    type Response = Response<TotalBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request<ReqB>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let callers_workload = Workload::from_extensions(req.extensions());
        let workload = callers_workload
            .or_else(|| {
                self.classifier.classify(&RequestHead {
                    method: req.method(),
                    uri: req.uri(),
                    headers: req.headers(),
                })
            })
            .unwrap_or_default();
        let profile = req
            .extensions()
            .get::<Profile>()
            .copied()
            .unwrap_or(*self.profiles.get(workload));
        if let Err(invalid) = profile.validate() {
            return ResponseFuture::invalid(invalid);
        }
        let grpc = is_grpc_request(req.headers());
        let start = tokio::time::Instant::now();
        let own = Deadline(
            start
                .checked_add(profile.total)
                .unwrap_or_else(|| far_future(start)),
        );
        // An outer layer's earlier deadline stays in force.
        let outer = Deadline::from_extensions(req.extensions());
        let deadline = match outer {
            Some(outer) if outer < own => outer,
            _ => own,
        };
        let ready_at = start
            .checked_add(profile.ready)
            .unwrap_or_else(|| far_future(start));
        let ext = req.extensions_mut();
        // A caller's own `Workload` is left as it is (no second allocation).
        if callers_workload.is_none() {
            ext.insert(workload);
        }
        // Likewise an outer deadline that stays in force.
        if outer != Some(deadline) {
            ext.insert(deadline);
        }
        // The record itself, without a clone of its `Arc`.
        ext.get_or_insert_with(CallContext::new)
            .set_workload(workload);
        let limits = super::future::Limits {
            workload,
            ready: profile.ready,
            ready_at,
            total: profile.total,
            deadline: deadline.instant(),
            grpc,
        };
        // The common case first: the inner service has capacity at once, so
        // it takes the request here, with no clone and no wait. A poll with a
        // no-op waker is fine: when the service is not ready, the very
        // service that was polled (and may hold a reservation or a
        // registration) goes to the future, which polls it again with the
        // caller's waker before calling it; `self.inner` becomes a fresh
        // clone, untouched like before. `poll_ready` is always followed by
        // `call` on the same service, as tower's contract requires.
        let mut noop = Context::from_waker(std::task::Waker::noop());
        match self.inner.poll_ready(&mut noop) {
            Poll::Ready(Ok(())) => ResponseFuture::called(self.inner.call(req), limits),
            Poll::Ready(Err(e)) => {
                let fresh = self.inner.clone();
                drop(std::mem::replace(&mut self.inner, fresh));
                ResponseFuture::failed(e, limits)
            }
            Poll::Pending => {
                let fresh = self.inner.clone();
                let polled = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::new(polled, req, limits)
            }
        }
    }
}

fn far_future(now: tokio::time::Instant) -> tokio::time::Instant {
    now + std::time::Duration::from_secs(86_400 * 365 * 30)
}
