//! The response body of both layers: one timer, ending the body with a
//! `read` timeout when it stays silent too long between frames, or with a
//! `total` one when the call's deadline comes first.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sturdy_core::{
    BoxError, Deadline, DeadlineLimit, Phase, Reach, TimeoutError, Workload, attempt_limit,
};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::grpc::timeout_error;

/// What a [`TimeoutBody`] enforces, fixed when the head arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// The longest silence between frames (the first one included), if
    /// this body enforces it.
    pub(crate) read: Option<Duration>,
    /// The call's deadline, if this body enforces it.
    pub(crate) deadline: Option<Instant>,
    /// What the deadline stands for, named in its error.
    pub(crate) deadline_limit: DeadlineLimit,
    pub(crate) workload: Option<Workload>,
    pub(crate) grpc: bool,
}

impl BodyLimits {
    /// Enforces nothing: a layer below already does.
    pub(crate) fn none() -> BodyLimits {
        BodyLimits {
            read: None,
            deadline: None,
            deadline_limit: DeadlineLimit::default(),
            workload: None,
            grpc: false,
        }
    }

    /// When the current wait ends, and whether that is the deadline; `None`
    /// when nothing is enforced.
    fn wait_until(&self) -> Option<(Instant, bool)> {
        match (self.read, self.deadline) {
            (Some(read), deadline) => Some(attempt_limit(read, deadline.map(Deadline))),
            (None, Some(d)) => Some((d, true)),
            (None, None) => None,
        }
    }

    fn error(&self, by_deadline: bool) -> BoxError {
        let err = if by_deadline {
            self.deadline_limit
                .error(Reach::Acknowledged, self.workload)
        } else {
            let read = self.read.unwrap_or_default();
            let err = TimeoutError::new(Phase::Read, read, Reach::Acknowledged);
            match self.workload {
                Some(w) => err.with_workload(w),
                None => err,
            }
        };
        timeout_error(err, self.grpc)
    }
}

pin_project! {
    /// A body's timer and the end of its current wait, boxed together: a
    /// body that never waits carries one pointer.
    struct Timer {
        #[pin]
        sleep: Sleep,
        due: Instant,
    }
}

pin_project! {
    /// The response body of [`WorkloadTimeout`](crate::WorkloadTimeout) and
    /// [`AttemptTimeout`](crate::AttemptTimeout): the inner body, ended by a
    /// `read` [`TimeoutError`] (reach `Acknowledged`) when it stays silent
    /// longer than `read`, or by a `total` one when the deadline comes
    /// first.
    ///
    /// The silence is measured from the moment the body is polled and has
    /// no frame ready, and restarts after every frame; the deadline does
    /// not move. One timer, made the first time the body has to wait; none
    /// at all for a body that is all there (a `Full`), or when a layer
    /// below enforces the same limits. A stream waits between every two
    /// frames, and each wait ends later than the last: the timer is left
    /// where it is then, and moved to the current wait's end only when it
    /// fires before it (once per `read` at most, not once per frame).
    /// The timer is boxed, so the body is `Unpin` when the inner body is:
    /// `BodyExt::frame` works on it without pinning by hand.
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        timer: Option<Pin<Box<Timer>>>,
        // Whether the current wait has its end in the timer's `due`.
        armed: bool,
        by_deadline: bool,
        limits: BodyLimits,
        timed_out: bool,
    }
}

impl<B> TimeoutBody<B> {
    pub(crate) fn new(inner: B, limits: BodyLimits) -> Self {
        TimeoutBody {
            inner,
            timer: None,
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

impl<B> Body for TimeoutBody<B>
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
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if !*this.armed {
            let Some((at, by_deadline)) = this.limits.wait_until() else {
                return Poll::Pending;
            };
            *this.by_deadline = by_deadline;
            *this.armed = true;
            match this.timer.as_mut() {
                Some(timer) => {
                    let timer = timer.as_mut().project();
                    *timer.due = at;
                    // Set for an earlier wait's end, it fires first and is
                    // moved then; set later (never, as waits only end
                    // later), it is moved now.
                    if timer.sleep.deadline() > at {
                        timer.sleep.reset(at);
                    }
                }
                None => {
                    *this.timer = Some(Box::pin(Timer {
                        sleep: sleep_until(at),
                        due: at,
                    }))
                }
            }
        }
        if let Some(timer) = this.timer.as_mut() {
            let mut timer = timer.as_mut().project();
            while timer.sleep.deadline() < *timer.due {
                ready!(timer.sleep.as_mut().poll(cx));
                // Fired at an earlier wait's end: this wait has not ended.
                timer.sleep.as_mut().reset(*timer.due);
            }
            ready!(timer.sleep.as_mut().poll(cx));
        }
        *this.timed_out = true;
        Poll::Ready(Some(Err(this.limits.error(*this.by_deadline))))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for TimeoutBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBody")
            .field("limits", &self.limits)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}
