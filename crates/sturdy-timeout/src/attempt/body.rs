//! The attempt's response body: `read` between frames (or the deadline).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sturdy_core::{BoxError, Phase, Reach, TimeoutError, attempt_limit};
use tokio::time::{Sleep, sleep_until};

use super::service::AttemptLimits;
use crate::grpc::timeout_error;

pin_project! {
    /// The response body of [`AttemptTimeout`](crate::AttemptTimeout): the
    /// inner body, ended by a `read` [`TimeoutError`] (reach
    /// `Acknowledged`) when it stays silent longer than `read`, or by a
    /// `total` one when the deadline comes first.
    ///
    /// The silence is measured from the moment the body is polled and has
    /// no frame ready, and restarts after every frame. One timer, made the
    /// first time the body has to wait and moved with `reset` after that.
    pub struct ReadBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<Sleep>,
        // Whether `sleep` is set for the current wait.
        armed: bool,
        by_deadline: bool,
        limits: AttemptLimits,
        timed_out: bool,
    }
}

impl<B> ReadBody<B> {
    pub(crate) fn new(inner: B, limits: AttemptLimits) -> Self {
        ReadBody {
            inner,
            sleep: None,
            armed: false,
            by_deadline: false,
            limits,
            timed_out: false,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for ReadBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.armed = false;
                return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        if !*this.armed {
            let (at, by_deadline) = attempt_limit(this.limits.read, this.limits.deadline);
            *this.by_deadline = by_deadline;
            *this.armed = true;
            match this.sleep.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(at),
                None => this.sleep.set(Some(sleep_until(at))),
            }
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        *this.timed_out = true;
        let limits = this.limits;
        let err = if *this.by_deadline {
            TimeoutError::new(Phase::Total, limits.total, Reach::Acknowledged)
        } else {
            TimeoutError::new(Phase::Read, limits.read, Reach::Acknowledged)
        };
        Poll::Ready(Some(Err(timeout_error(
            err.with_workload(limits.workload),
            limits.grpc,
        ))))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for ReadBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBody")
            .field("limits", &self.limits)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}
