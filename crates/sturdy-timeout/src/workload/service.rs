//! The outer service's `call`: chooses the workload and profile, writes
//! `Workload`, `Deadline` and the `CallContext` into the request, and hands a
//! clone of the inner service to the response future.

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
/// `ready` limit. That is why `S: Clone` (as for tower's `Retry`), and what
/// it means for backpressure: callers do not queue in `poll_ready`; each
/// call queues inside its own future instead, and gives up with a
/// `ready_timeout` when its limit passes. The inner service's own capacity
/// (a `ConcurrencyLimit`, a `Buffer`) still bounds how many calls run at
/// once, because every clone shares it.
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
        let workload = Workload::from_extensions(req.extensions())
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
        let deadline = match Deadline::from_extensions(req.extensions()) {
            Some(outer) if outer < own => outer,
            _ => own,
        };
        let ready_at = start
            .checked_add(profile.ready)
            .unwrap_or_else(|| far_future(start));
        let ext = req.extensions_mut();
        // A caller's own `Workload` is left as it is (no second allocation).
        if ext.get::<Workload>() != Some(&workload) {
            ext.insert(workload);
        }
        ext.insert(deadline);
        CallContext::get_or_insert(ext).set_workload(workload);
        ResponseFuture::new(
            self.inner.clone(),
            req,
            super::future::Limits {
                workload,
                ready: profile.ready,
                ready_at,
                total: profile.total,
                deadline: deadline.instant(),
                grpc,
            },
        )
    }
}

fn far_future(now: tokio::time::Instant) -> tokio::time::Instant {
    now + std::time::Duration::from_secs(86_400 * 365 * 30)
}
