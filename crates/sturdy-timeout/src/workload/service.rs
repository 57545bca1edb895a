//! The outer service's `call`: chooses the workload and profile, settles
//! them and the deadline in the request's plan, and calls the inner service
//! at once when it is ready, or else hands the inner service to the
//! response future (keeping a clone for the next call).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use sturdy_core::{
    BoxError, CallPlan, Deadline, DeadlineLimit, Profile, Profiles, RequestHead, Workload,
};
use tower_service::Service;

use super::ResponseFuture;
use super::future::Limits;
use crate::classify::{ClassifyWorkload, PathClassifier};
use crate::{TimeoutBody, grpc_timeout};

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
    profiles: Arc<Profiles>,
    classifier: C,
    default_workload: Workload,
}

impl<S, C> WorkloadTimeout<S, C> {
    pub(crate) fn from_parts(
        inner: S,
        profiles: Profiles,
        classifier: C,
        default_workload: Workload,
    ) -> Self {
        WorkloadTimeout {
            inner,
            profiles: Arc::new(profiles),
            classifier,
            default_workload,
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
    type Response = Response<TimeoutBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request<ReqB>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // The plan in one lookup, the extensions taken out of the request
        // so that its headers can be read beside them.
        let mut ext = std::mem::take(req.extensions_mut());
        let (mut plan, others) = CallPlan::in_extensions(&mut ext, req.headers());
        // The caller's markers, when the request carries more than its plan.
        let (asked, own_profile, callers_deadline) = if others {
            let markers = CallPlan::markers(&ext);
            let asked = (
                markers.get::<Workload>().copied(),
                markers.get::<Profile>().copied(),
                markers.get::<Deadline>().copied(),
            );
            plan = CallPlan::in_extensions(&mut ext, req.headers()).0;
            asked
        } else {
            (None, None, None)
        };
        // The caller's word first, then a workload an outer layer settled,
        // then the classifier, then the default.
        let workload = asked
            .or(plan.workload())
            .or_else(|| self.classifier.classify(&RequestHead::of(&req)))
            .unwrap_or(self.default_workload);
        // The table's profiles were checked when the layer was built; only
        // a caller's own is checked per request.
        let profile = match own_profile {
            Some(own) => match own.validate() {
                Ok(()) => own,
                Err(invalid) => return ResponseFuture::invalid(invalid),
            },
            None => *self.profiles.get(workload),
        };
        let start = sturdy_core::clock::now();
        let at = |limit: std::time::Duration| Deadline(sturdy_core::clock::later(start, limit));
        let grpc = plan.is_grpc();
        // The profile's own deadline, unless the caller's comes first: a
        // `Deadline` marker, an outer layer's, or a gRPC caller's
        // `grpc-timeout` (tonic's `Request::set_timeout`), which then caps
        // every attempt, not just the first.
        let mut deadline = at(profile.total);
        let mut limit = DeadlineLimit::profile(profile.total);
        let outer = plan.deadline().map(|d| (d, plan.deadline_limit()));
        let mut earlier = |d: Deadline, stands_for: Option<DeadlineLimit>| {
            if d < deadline {
                deadline = d;
                limit = stands_for.unwrap_or(DeadlineLimit {
                    limit: d.0.saturating_duration_since(start),
                    callers: true,
                });
            }
        };
        if let Some(d) = callers_deadline {
            earlier(d, None);
        }
        if let Some((d, outer)) = outer {
            earlier(d, outer);
        }
        if grpc {
            let sent = req.headers().get(grpc_timeout::HEADER);
            if let Some(t) = sent.and_then(|v| grpc_timeout::parse(v.as_bytes())) {
                let callers = DeadlineLimit {
                    limit: t,
                    callers: true,
                };
                earlier(at(t), Some(callers));
            }
        }
        plan.settle_workload(workload, profile, deadline, limit);
        let ctx = plan.context().clone();
        *req.extensions_mut() = ext;
        let limits = Limits {
            workload,
            profile,
            start,
            deadline: deadline.instant(),
            deadline_limit: limit,
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
            Poll::Ready(Ok(())) => ResponseFuture::called(self.inner.call(req), limits, ctx),
            Poll::Ready(Err(e)) => {
                let fresh = self.inner.clone();
                drop(std::mem::replace(&mut self.inner, fresh));
                ResponseFuture::failed(e, limits, ctx)
            }
            Poll::Pending => {
                let fresh = self.inner.clone();
                let polled = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::new(polled, req, limits, ctx)
            }
        }
    }
}
