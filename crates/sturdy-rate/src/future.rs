//! The pacer's response future: a hold (a timer inside the future, no
//! task), then the inner call, then the answer's headers read into the
//! server's view.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use sturdy_core::{BoxError, Deadline, PacerError};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::RateLimitHeaders;
use crate::pacer::beyond_deadline;
use crate::state::{Need, Server};

pin_project! {
    /// The response future of [`Pacer`](crate::Pacer): the attempt's hold,
    /// if it has one, then the inner service's future. An attempt that is
    /// not held costs no timer and no allocation.
    pub struct ResponseFuture<F, S, B> {
        #[pin]
        state: State<F, S, B>,
        // Boxed: set only while the pacer holds the attempt, and this
        // future is moved whole through every layer above.
        sleep: Option<Pin<Box<Sleep>>>,
        reservation: Option<Reservation>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B> {
        Called {
            #[pin]
            fut: F,
        },
        Held {
            holding: Option<Box<Holding<S, B>>>,
        },
        Failed {
            err: Option<PacerError>,
        },
    }
}

/// A held attempt: the service made ready for it, its request, and what it
/// will take once it goes.
pub(crate) struct Holding<S, B> {
    svc: S,
    req: Request<B>,
    need: Need,
    deadline: Option<Deadline>,
    guard: HoldGuard,
}

impl<S, B> Holding<S, B> {
    pub(crate) fn new(
        svc: S,
        req: Request<B>,
        server: Arc<Server>,
        need: Need,
        deadline: Option<Deadline>,
        since: Instant,
    ) -> Box<Holding<S, B>> {
        Box::new(Holding {
            svc,
            req,
            need,
            deadline,
            guard: HoldGuard { server, since },
        })
    }
}

/// Ends a hold in the server's counts however it ends: sent, failed, or
/// dropped.
struct HoldGuard {
    server: Arc<Server>,
    since: Instant,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.server.hold_ended(self.since.elapsed());
    }
}

/// What a sent attempt took from its server's view, given back when its
/// answer comes (with the answer's headers read), when it fails, or when
/// it is dropped.
pub(crate) struct Reservation {
    server: Arc<Server>,
    need: Need,
    open: bool,
}

impl Reservation {
    /// The answer's head came, now.
    /// The clocks are read only when the answer names a rate-limit field.
    fn answered(mut self, headers: &HeaderMap) {
        let mut arrived = None;
        let rl = RateLimitHeaders::read(headers, || {
            arrived = Some(Instant::now());
            SystemTime::now()
        });
        let said = rl.filter(|rl| !rl.is_empty()).zip(arrived);
        self.server
            .answer(self.need, said.as_ref().map(|(rl, arrived)| (rl, *arrived)));
        self.open = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.open {
            self.server.answer(self.need, None);
        }
    }
}

impl<F, S, B> ResponseFuture<F, S, B> {
    /// An attempt to a server the pacer does not track.
    pub(crate) fn unpaced(fut: F) -> Self {
        ResponseFuture {
            state: State::Called { fut },
            sleep: None,
            reservation: None,
        }
    }

    /// An attempt that went at once, having taken `need`.
    pub(crate) fn sent(fut: F, server: Arc<Server>, need: Need) -> Self {
        ResponseFuture {
            state: State::Called { fut },
            sleep: None,
            reservation: Some(Reservation {
                server,
                need,
                open: true,
            }),
        }
    }

    /// An attempt held until `until`.
    pub(crate) fn held(holding: Box<Holding<S, B>>, until: Instant) -> Self {
        ResponseFuture {
            state: State::Held {
                holding: Some(holding),
            },
            sleep: Some(Box::pin(sleep_until(until))),
            reservation: None,
        }
    }

    /// An attempt refused at once.
    pub(crate) fn failed(err: PacerError) -> Self {
        ResponseFuture {
            state: State::Failed { err: Some(err) },
            sleep: None,
            reservation: None,
        }
    }
}

impl<F, S, B, RB, E> Future for ResponseFuture<F, S, B>
where
    F: Future<Output = Result<Response<RB>, E>>,
    S: Service<Request<B>, Response = Response<RB>, Error = E, Future = F>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { fut } => {
                    // The answer is read where it lies and handed on
                    // whole: the response is moved once, not taken apart
                    // and rebuilt.
                    let res = ready!(fut.poll(cx)).map_err(Into::into);
                    let reservation = this.reservation.take();
                    if let (Ok(resp), Some(r)) = (&res, reservation) {
                        r.answered(resp.headers());
                    }
                    return Poll::Ready(res);
                }
                StateProj::Held { holding } => {
                    if let Some(sleep) = this.sleep.as_mut() {
                        ready!(sleep.as_mut().poll(cx));
                    }
                    let Some(h) = holding.as_mut() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let now = Instant::now();
                    let server = &h.guard.server;
                    if let Some(until) = server.admit_again(h.need, now) {
                        // A newer answer said the quota is still spent.
                        if let Some(err) = beyond_deadline(&server.label, until, h.deadline, now) {
                            server.failed_for_deadline();
                            holding.take();
                            *this.sleep = None;
                            this.state.set(State::Failed { err: None });
                            return Poll::Ready(Err(err.into()));
                        }
                        tracing::debug!(
                            server = &*server.label,
                            wait_ms = until.saturating_duration_since(now).as_millis() as u64,
                            "holding an attempt again: the server's rate limit is still spent"
                        );
                        match this.sleep.as_mut() {
                            Some(sleep) => sleep.as_mut().reset(until),
                            None => *this.sleep = Some(Box::pin(sleep_until(until))),
                        }
                        continue;
                    }
                    let Some(held) = holding.take() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let Holding {
                        mut svc,
                        req,
                        need,
                        guard,
                        ..
                    } = *held;
                    let server = Arc::clone(&guard.server);
                    drop(guard);
                    *this.reservation = Some(Reservation {
                        server,
                        need,
                        open: true,
                    });
                    *this.sleep = None;
                    let fut = svc.call(req);
                    this.state.set(State::Called { fut });
                }
                StateProj::Failed { err } => {
                    return Poll::Ready(Err(match err.take() {
                        Some(e) => e.into(),
                        None => polled_after_completion(),
                    }));
                }
            }
        }
    }
}

fn polled_after_completion() -> BoxError {
    "sturdy-rate: a pacer's response future was polled after it completed".into()
}

impl<F, S, B> fmt::Debug for ResponseFuture<F, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Held { .. } => "held",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
