//! The response body every answer is sent with: a planned list of steps
//! (send these bytes, pause, fail) played back as the peer reads.
//!
//! Faults that act mid-body (stall, slow, reset) are just plans with pauses or
//! a failure in them. No task is spawned: when the connection goes away the
//! body is dropped with it, pending pause included.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::capacity::Slot;

/// One step of a body's plan.
#[derive(Debug)]
pub(crate) enum Step {
    /// Yield these bytes as one data frame.
    Data(Bytes),
    /// Wait this long before the next step.
    Pause(Duration),
    /// Yield an error, which makes hyper abort the connection (HTTP/1) or
    /// reset the stream (HTTP/2).
    Fail,
}

/// The error a `reset` body yields.
#[derive(Debug)]
pub(crate) struct InjectedReset;

impl fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sturdy-faults: injected reset mid-body")
    }
}

impl std::error::Error for InjectedReset {}

/// A response body that plays back a list of [`Step`]s.
pub(crate) struct PlannedBody {
    steps: VecDeque<Step>,
    pause: Option<Pin<Box<Sleep>>>,
    /// Bytes still to announce as an exact size hint, when the length is known.
    remaining: Option<u64>,
    /// Counts the response as over: when its last step is taken, or when
    /// the body is dropped before that.
    finished: Option<Finished>,
    /// The capacity-mode slot its request holds, freed at the same moment.
    slot: Option<Slot>,
}

/// Adds one to a counter when dropped: the end of one request's life on its
/// connection, whether its response was sent, dropped or never made.
#[derive(Debug)]
pub(crate) struct Finished(pub(crate) std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

impl PlannedBody {
    /// A body of `steps`; `length`, when given, is announced as the exact size
    /// (and so as `content-length`) even if the plan fails before reaching it.
    pub(crate) fn new(steps: Vec<Step>, length: Option<u64>) -> PlannedBody {
        PlannedBody {
            steps: steps.into(),
            pause: None,
            remaining: length,
            finished: None,
            slot: None,
        }
    }

    /// The same body, holding its request's capacity-mode `slot` until its
    /// last step is taken or it is dropped.
    pub(crate) fn holding(mut self, slot: Slot) -> PlannedBody {
        self.slot = Some(slot);
        self
    }

    /// The same body, counting its end with `finished`.
    pub(crate) fn finished_by(mut self, finished: Finished) -> PlannedBody {
        self.finished = Some(finished);
        self
    }

    /// An empty body (for 204 and 304).
    pub(crate) fn empty() -> PlannedBody {
        PlannedBody::new(Vec::new(), Some(0))
    }
}

impl Body for PlannedBody {
    type Data = Bytes;
    type Error = InjectedReset;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InjectedReset>>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            let step = this.steps.pop_front();
            if this.steps.is_empty() {
                // The response is over once its last frame leaves: counted
                // now, before a peer can have read it and sent another.
                this.finished = None;
                this.slot = None;
            }
            match step {
                None => return Poll::Ready(None),
                Some(Step::Data(bytes)) => {
                    if let Some(remaining) = this.remaining.as_mut() {
                        *remaining = remaining.saturating_sub(bytes.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Step::Pause(duration)) => {
                    this.pause = Some(Box::pin(tokio::time::sleep(duration)));
                }
                Some(Step::Fail) => {
                    this.steps.clear();
                    this.finished = None;
                    this.slot = None;
                    return Poll::Ready(Some(Err(InjectedReset)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.pause.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(remaining) => SizeHint::with_exact(remaining),
            None => SizeHint::default(),
        }
    }
}
