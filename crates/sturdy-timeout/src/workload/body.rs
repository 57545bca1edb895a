//! The outer response body: `total` goes on while the body streams.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sturdy_core::{BoxError, Phase, Reach, TimeoutError, Workload};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::grpc::timeout_error;

pin_project! {
    /// The response body of [`WorkloadTimeout`](crate::WorkloadTimeout): the
    /// inner body, ended by a `total` [`TimeoutError`] (reach
    /// `Acknowledged`) if it is still running at the call's deadline.
    ///
    /// Its timer is made the first time the inner body has no frame ready,
    /// so a body that is all there (a `Full`) never makes one.
    pub struct TotalBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<Sleep>,
        deadline: Instant,
        total: Duration,
        workload: Workload,
        grpc: bool,
        timed_out: bool,
    }
}

impl<B> TotalBody<B> {
    pub(crate) fn new(
        inner: B,
        deadline: Instant,
        total: Duration,
        workload: Workload,
        grpc: bool,
    ) -> Self {
        TotalBody {
            inner,
            sleep: None,
            deadline,
            total,
            workload,
            grpc,
            timed_out: false,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for TotalBody<B>
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
            Poll::Ready(frame) => return Poll::Ready(frame.map(|r| r.map_err(Into::into))),
            Poll::Pending => {}
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(*this.deadline)));
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        *this.timed_out = true;
        let err = TimeoutError::new(Phase::Total, *this.total, Reach::Acknowledged)
            .with_workload(*this.workload);
        Poll::Ready(Some(Err(timeout_error(err, *this.grpc))))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for TotalBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotalBody")
            .field("workload", &self.workload)
            .field("total", &self.total)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}
