//! The fake inner service the adaptive-limit tests call, the answers it
//! gives, and helpers to drive a limited service; shared by the test
//! binaries that need it (each uses a part).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use sturdy_core::BoxError;
use sturdy_rate::ConcurrencyGauge;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};

pub const QUOTA: &str = r#"{"error":{"type":"insufficient_quota","code":"insufficient_quota","message":"You exceeded your current quota, please check your plan and billing details."}}"#;
pub const RATE: &str =
    r#"{"error":{"type":"requests","code":"rate_limit_exceeded","message":"Rate limit reached"}}"#;

pub type Sent = Result<Frame<Bytes>, io::Error>;

/// A response body: frames given up front, then (if any) what a channel
/// sends until it closes.
pub struct TestBody {
    frames: VecDeque<Sent>,
    rx: Option<mpsc::UnboundedReceiver<Sent>>,
    exact: Option<u64>,
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(f));
        }
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rx.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// What the fake server does with a request (its body).
pub enum Answer {
    /// After `delay`, `status` with `chunks` as the body (exact length
    /// when `exact`), and `trailers` at the end.
    Reply {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        chunks: Vec<Bytes>,
        exact: bool,
        trailers: Option<HeaderMap>,
        delay: Duration,
    },
    /// `status`, then whatever the channel sends.
    Stream(u16, mpsc::UnboundedReceiver<Sent>),
    /// An error after `delay`.
    Fail(fn() -> BoxError, Duration),
    /// Never answers.
    Hang,
}

pub fn reply(status: u16, body: &str, delay: Duration) -> Answer {
    Answer::Reply {
        status,
        headers: vec![],
        chunks: vec![Bytes::copy_from_slice(body.as_bytes())],
        exact: true,
        trailers: None,
        delay,
    }
}

pub fn ok(delay: Duration) -> Answer {
    reply(200, r#"{"choices":[]}"#, delay)
}

pub fn stream(status: u16) -> (mpsc::UnboundedSender<Sent>, Answer) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Answer::Stream(status, rx))
}

pub async fn serve(req: Request<Answer>) -> Result<Response<TestBody>, BoxError> {
    let (status, headers, body) = match req.into_body() {
        Answer::Reply {
            status,
            headers,
            chunks,
            exact,
            trailers,
            delay,
        } => {
            tokio::time::sleep(delay).await;
            let len = chunks.iter().map(|c| c.len() as u64).sum();
            let mut frames: VecDeque<Sent> =
                chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
            if let Some(t) = trailers {
                frames.push_back(Ok(Frame::trailers(t)));
            }
            let body = TestBody {
                frames,
                rx: None,
                exact: exact.then_some(len),
            };
            (status, headers, body)
        }
        Answer::Stream(status, rx) => {
            let body = TestBody {
                frames: VecDeque::new(),
                rx: Some(rx),
                exact: None,
            };
            (status, vec![], body)
        }
        Answer::Fail(err, delay) => {
            tokio::time::sleep(delay).await;
            return Err(err());
        }
        Answer::Hang => std::future::pending().await,
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status)?;
    for (name, value) in headers {
        resp.headers_mut().insert(name, value.parse()?);
    }
    Ok(resp)
}

/// The fake server: [`serve`], noting the most permits out at any call.
#[derive(Clone, Default)]
pub struct Fake {
    pub gauge: Option<ConcurrencyGauge>,
    pub most: Arc<AtomicUsize>,
}

impl Service<Request<Answer>> for Fake {
    type Response = Response<TestBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TestBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Answer>) -> Self::Future {
        if let Some(g) = &self.gauge {
            self.most.fetch_max(g.in_flight(), Ordering::SeqCst);
        }
        Box::pin(serve(req))
    }
}

pub fn fake() -> Fake {
    Fake::default()
}

pub type Svc = sturdy_rate::AdaptiveConcurrency<Fake>;

/// One call through a clone of `svc`, its body read to the end.
pub async fn call_and_read(svc: Svc, answer: Answer) -> Result<Bytes, BoxError> {
    let resp = svc.oneshot(Request::new(answer)).await?;
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// `n` calls at once, each answered by `answer()`, all read to the end.
pub async fn wave(svc: &Svc, n: usize, answer: impl Fn() -> Answer) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(call_and_read(svc.clone(), answer()));
    }
    while set.join_next().await.is_some() {}
}

#[derive(Default)]
pub struct CountingWaker(pub AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn poll_ready(svc: &mut Svc, waker: &Waker) -> Poll<Result<(), BoxError>> {
    let mut cx = Context::from_waker(waker);
    Service::<Request<Answer>>::poll_ready(svc, &mut cx)
}
