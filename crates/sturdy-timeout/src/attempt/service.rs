//! The attempt service's `call`: reads the limits from the request's plan
//! (else from this layer's own profiles), sets `grpc-timeout` for gRPC, and
//! arms the `headers` limit.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use sturdy_core::{
    BoxError, CallPlan, Deadline, DeadlineLimit, Profile, Workload, attempt_limit, is_grpc,
};
use tower_service::Service;

use super::ResponseFuture;
use super::future::Sent;
use super::layer::OwnLimits;
use crate::TimeoutBody;
use crate::body::BodyLimits;

/// The service made by [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer).
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    // Shared, not copied: every retry clones this service.
    own: Arc<OwnLimits>,
    capture_connection: bool,
}

/// What an attempt enforces, fixed when it is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptLimits {
    pub(crate) workload: Option<Workload>,
    pub(crate) headers: Duration,
    pub(crate) read: Duration,
    pub(crate) total: Duration,
    pub(crate) deadline: Option<Deadline>,
    /// What the deadline stands for.
    pub(crate) deadline_limit: DeadlineLimit,
    pub(crate) grpc: bool,
}

impl AttemptLimits {
    /// What the attempt's body enforces: `read`, and the deadline.
    pub(crate) fn body(&self) -> BodyLimits {
        BodyLimits {
            read: Some(self.read),
            deadline: self.deadline.map(|d| d.instant()),
            deadline_limit: self.deadline_limit,
            workload: self.workload,
            grpc: self.grpc,
        }
    }
}

impl<S> AttemptTimeout<S> {
    pub(crate) fn from_parts(inner: S, own: Arc<OwnLimits>, capture_connection: bool) -> Self {
        AttemptTimeout {
            inner,
            own,
            capture_connection,
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

impl<S, ReqB, ResB> Service<Request<ReqB>> for AttemptTimeout<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TimeoutBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // The plan, when a layer above made one; none is made here (used
        // alone, nothing above reads one, and making it costs allocations
        // on every attempt): this layer's own configuration stands in.
        let (settled, deadline, grpc, plan_limit, workload, ctx) =
            match CallPlan::from_extensions(req.extensions()) {
                Some(plan) => {
                    let ctx = plan.context();
                    ctx.mark_phases_enforced();
                    (
                        plan.profile().copied(),
                        plan.deadline(),
                        plan.is_grpc(),
                        plan.deadline_limit(),
                        plan.workload(),
                        Some(ctx.clone()),
                    )
                }
                None => (None, None, is_grpc(req.headers()), None, None, None),
            };
        let ext = req.extensions();
        // The workload layer's profile when it settled one; else this
        // layer's own, checked when it was built, or the caller's.
        let (workload, profile) = match settled {
            Some(p) => (workload, self.own.cap(workload, p)),
            None => {
                let w = Workload::from_extensions(ext).unwrap_or_default();
                match ext.get::<Profile>() {
                    Some(own) => match own.validate() {
                        Ok(()) => (Some(w), *own),
                        Err(invalid) => return ResponseFuture::invalid(invalid),
                    },
                    None => (Some(w), *self.own.profiles.get(w)),
                }
            }
        };
        // The settled deadline; else (this layer used without a workload
        // layer) the caller's, from a marker or a gRPC `grpc-timeout`.
        let (deadline, deadline_limit) = match (deadline, plan_limit) {
            (Some(d), Some(limit)) => (Some(d), limit),
            _ => match Deadline::from_extensions(ext) {
                Some(d) => (Some(d), callers_limit(d)),
                None => match grpc.then(|| callers_grpc_timeout(req.headers())).flatten() {
                    Some(t) => (Some(Deadline::after(t)), callers_limit_of(t)),
                    None => (None, DeadlineLimit::profile(profile.total)),
                },
            },
        };
        let limits = AttemptLimits {
            workload,
            headers: profile.headers,
            read: profile.read,
            total: profile.total,
            deadline,
            deadline_limit,
            grpc,
        };
        if limits.grpc {
            set_grpc_timeout(req.headers_mut(), &limits);
        }
        // Whether anything was sent when a timeout fires: the retry layer's
        // bodies tell when a connection takes them up; without one, ask
        // hyper-util (when told to), else nobody knows.
        let tracked = ctx.and_then(|ctx| {
            let attempt = ctx.attempts();
            ctx.was_sending(attempt).map(|_| (ctx, attempt))
        });
        let sent = if let Some((ctx, attempt)) = tracked {
            Sent::Tracked(ctx, attempt)
        } else if self.capture_connection {
            Sent::Captured(hyper_util::client::legacy::connect::capture_connection(
                &mut req,
            ))
        } else {
            Sent::Unknown
        };
        let (headers_at, by_deadline) = attempt_limit(profile.headers, deadline);
        ResponseFuture::new(self.inner.call(req), headers_at, by_deadline, limits, sent)
    }
}

/// A deadline the caller set, `limit` from now.
fn callers_limit_of(limit: Duration) -> DeadlineLimit {
    DeadlineLimit {
        limit,
        callers: true,
    }
}

/// A deadline the caller set as an instant.
fn callers_limit(d: Deadline) -> DeadlineLimit {
    callers_limit_of(d.remaining())
}

/// The caller's own `grpc-timeout`, when it parses.
fn callers_grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(crate::grpc_timeout::HEADER)?;
    crate::grpc_timeout::parse(v.as_bytes())
}

/// Sets `grpc-timeout` to the smaller of the remaining deadline and the
/// attempt's `headers` and `total` limits: what is left, never a caller's
/// original budget afresh (a caller's own `grpc-timeout` is already in the
/// deadline).
fn set_grpc_timeout(headers: &mut http::HeaderMap, limits: &AttemptLimits) {
    use crate::grpc_timeout;
    let mut limit = limits.headers.min(limits.total);
    if let Some(d) = limits.deadline {
        limit = limit.min(d.remaining());
    }
    headers.insert(grpc_timeout::HEADER, grpc_timeout::encode(limit));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(headers: u64, deadline: Option<Deadline>) -> AttemptLimits {
        AttemptLimits {
            workload: Some(Workload::Interactive),
            headers: Duration::from_millis(headers),
            read: Duration::from_secs(60),
            total: Duration::from_secs(60),
            deadline,
            deadline_limit: DeadlineLimit::profile(Duration::from_secs(60)),
            grpc: true,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn header(h: &http::HeaderMap) -> Duration {
        crate::grpc_timeout::parse(h.get("grpc-timeout").unwrap().as_bytes()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_timeout_is_the_smaller_of_deadline_and_own_limit() {
        let mut h = http::HeaderMap::new();
        set_grpc_timeout(&mut h, &limits(500, None));
        assert_eq!(header(&h), Duration::from_millis(500));

        let mut h = http::HeaderMap::new();
        let d = Deadline::after(Duration::from_millis(200));
        set_grpc_timeout(&mut h, &limits(500, Some(d)));
        assert_eq!(header(&h), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_callers_grpc_timeout_is_read_as_a_deadline_and_the_header_always_replaced() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(callers_grpc_timeout(&h), Some(ms(100)));
        // The header sent is what is left of the deadline made from it.
        let d = Deadline::after(ms(100));
        tokio::time::advance(ms(30)).await;
        set_grpc_timeout(&mut h, &limits(500, Some(d)));
        assert_eq!(header(&h), ms(70));

        for bad in ["soon", "123456789S", ""] {
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(callers_grpc_timeout(&h), None, "{bad:?}");
            set_grpc_timeout(&mut h, &limits(500, None));
            assert_eq!(header(&h), ms(500));
        }
    }
}
