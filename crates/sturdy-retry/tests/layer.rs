//! Unit tests of the retry layer around fake inner services, on paused
//! tokio time: exact delays, no sockets.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use sturdy_core::{
    Answer, BoxBody, BoxError, CallContext, Deadline, FailureKind, RetrySafe, STATUS_TABLE, Verdict,
};
use sturdy_retry::{
    Backoff, BudgetConfig, RetryConfigError, RetryError, RetryLayer, RetryPolicy, RetrySafeRule,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// What the fake inner service does on one attempt.
#[derive(Clone)]
enum Reply {
    Status(u16, Vec<(&'static str, &'static str)>),
    /// A head with an exact length of 10 whose body fails after 5 bytes.
    BrokenBody,
    Error(io::ErrorKind),
    /// HTTP/2 REFUSED_STREAM: the server did not process the request.
    Refused,
}

fn status(code: u16) -> Reply {
    Reply::Status(code, vec![])
}

fn with(code: u16, headers: &[(&'static str, &'static str)]) -> Reply {
    Reply::Status(code, headers.to_vec())
}

/// A body of declared length 10 that fails after 5 bytes.
struct Broken(bool);

impl Body for Broken {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.0 {
            Poll::Ready(Some(Err(
                io::Error::from(io::ErrorKind::ConnectionReset).into()
            )))
        } else {
            self.0 = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"hello")))))
        }
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(10)
    }
}

type FakeBody = http_body_util::Either<Full<Bytes>, Broken>;

/// A fake inner service answering from a script (the last entry repeats),
/// recording every request body it read.
#[derive(Clone)]
struct Fake {
    script: Arc<Mutex<VecDeque<Reply>>>,
    bodies: Arc<Mutex<Vec<(Bytes, HeaderMap)>>>,
}

impl Fake {
    fn new(script: Vec<Reply>) -> Fake {
        Fake {
            script: Arc::new(Mutex::new(script.into())),
            bodies: Arc::default(),
        }
    }

    fn attempts(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

impl Service<Request<BoxBody>> for Fake {
    type Response = Response<FakeBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<FakeBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        let reply = {
            let mut s = self.script.lock().unwrap();
            if s.len() > 1 {
                s.pop_front().unwrap()
            } else {
                s.front().cloned().unwrap()
            }
        };
        let bodies = self.bodies.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            bodies.lock().unwrap().push((bytes, parts.headers));
            match reply {
                Reply::Status(code, headers) => {
                    let mut resp = Response::builder().status(code);
                    for (k, v) in headers {
                        resp = resp.header(k, v);
                    }
                    Ok(resp
                        .body(FakeBody::Left(Full::new(Bytes::from_static(b"answer"))))
                        .unwrap())
                }
                Reply::BrokenBody => Ok(Response::new(FakeBody::Right(Broken(false)))),
                Reply::Error(kind) => Err(io::Error::from(kind).into()),
                Reply::Refused => Err(h2::Error::from(h2::Reason::REFUSED_STREAM).into()),
            }
        })
    }
}

/// Millisecond backoff (10 ms · 2^n, no jitter worth speaking of).
fn quick() -> sturdy_retry::RetryPolicyBuilder {
    RetryPolicy::builder()
        .backoff(Backoff::guide(
            Duration::from_millis(10),
            Duration::from_nanos(1),
        ))
        .no_budget()
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://127.0.0.1/x")
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap()
}

/// A gRPC call, as tonic sends it: its answers are judged by grpc-status.
fn grpc_call() -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap()
}

fn post() -> Request<Full<Bytes>> {
    Request::post("http://127.0.0.1/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
        .unwrap()
}

async fn send(
    policy: RetryPolicy,
    fake: &Fake,
    req: Request<Full<Bytes>>,
) -> Result<Response<sturdy_retry::ResponseBody<FakeBody>>, BoxError> {
    RetryLayer::new(policy)
        .layer(fake.clone())
        .oneshot(req)
        .await
}

#[tokio::test(start_paused = true)]
async fn each_status_in_the_table_is_retried_or_not_as_the_table_says() {
    for rule in STATUS_TABLE {
        let fake = Fake::new(vec![status(rule.code), status(200)]);
        let resp = send(quick().max_retries(1).build().unwrap(), &fake, get())
            .await
            .unwrap();
        match rule.verdict {
            Verdict::Retryable => {
                assert_eq!(fake.attempts(), 2, "{} should be retried", rule.code);
                assert_eq!(resp.status(), 200);
            }
            _ => {
                assert_eq!(fake.attempts(), 1, "{} must not be retried", rule.code);
                assert_eq!(resp.status().as_u16(), rule.code);
            }
        }
    }
    // Statuses outside the table: never retried.
    for code in [201, 302, 418, 506, 525] {
        let fake = Fake::new(vec![status(code), status(200)]);
        let resp = send(quick().build().unwrap(), &fake, get()).await.unwrap();
        assert_eq!((fake.attempts(), resp.status().as_u16()), (1, code));
    }
}

#[tokio::test(start_paused = true)]
async fn retries_503_then_succeeds_and_records_the_call() {
    let fake = Fake::new(vec![status(503), status(503), status(200)]);
    let mut req = post();
    let ctx = CallContext::attach(&mut req);
    let resp = send(quick().build().unwrap(), &fake, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.attempts(), 3);
    assert_eq!(ctx.attempts(), 3);
    let s503 = FailureKind::Status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ctx.retry_reasons(), vec![s503, s503]);
    assert_eq!(ctx.possibly_duplicated(), 0);
    // Every attempt sent the same body.
    for (body, _) in fake.bodies.lock().unwrap().iter() {
        assert_eq!(&body[..], b"{\"model\":\"m\"}");
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"answer");
}

#[tokio::test(start_paused = true)]
async fn when_retries_are_spent_the_last_response_is_returned() {
    let fake = Fake::new(vec![status(503)]);
    let resp = send(quick().max_retries(3).build().unwrap(), &fake, get())
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(fake.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_default_backoff_waits_the_guides_delays() {
    // base 1 s, ×2, + up to 1 s jitter: 1..2, 2..3, 4..5 s.
    let fake = Fake::new(vec![status(503), status(503), status(503), status(200)]);
    let start = Instant::now();
    let policy = RetryPolicy::builder().no_budget().seed(3).build().unwrap();
    let resp = send(policy, &fake, get()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited <= Duration::from_secs(10),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn each_hint_sets_the_delay() {
    let cases: [(&[(&str, &str)], Duration); 4] = [
        (&[("retry-after-ms", "1500")], Duration::from_millis(1500)),
        (&[("retry-after", "3")], Duration::from_secs(3)),
        // retry-after-ms wins over retry-after.
        (
            &[("retry-after", "3"), ("retry-after-ms", "250")],
            Duration::from_millis(250),
        ),
        (
            &[
                ("content-type", "application/grpc"),
                ("grpc-status", "14"),
                ("grpc-retry-pushback-ms", "700"),
            ],
            Duration::from_millis(700),
        ),
    ];
    for (headers, want) in cases {
        let grpc = headers.iter().any(|h| h.0 == "grpc-status");
        let (code, req) = if grpc {
            (200, grpc_call())
        } else {
            (429, get())
        };
        let fake = Fake::new(vec![with(code, headers), status(200)]);
        let start = Instant::now();
        let resp = send(quick().build().unwrap(), &fake, req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(fake.attempts(), 2);
        assert_eq!(start.elapsed(), want, "{headers:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hint_beyond_the_cap_returns_the_response_at_once() {
    let fake = Fake::new(vec![with(503, &[("retry-after", "121")]), status(200)]);
    let start = Instant::now();
    let resp = send(quick().build().unwrap(), &fake, get()).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (503, 1));
    assert_eq!(start.elapsed(), Duration::ZERO);
    // A smaller cap applies too.
    let fake = Fake::new(vec![with(429, &[("retry-after-ms", "600")]), status(200)]);
    let policy = quick()
        .hint_cap(Duration::from_millis(500))
        .build()
        .unwrap();
    let resp = send(policy, &fake, get()).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (429, 1));
}

#[tokio::test(start_paused = true)]
async fn a_hint_ending_past_the_deadline_returns_the_response_at_once() {
    let fake = Fake::new(vec![with(503, &[("retry-after", "2")]), status(200)]);
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(1)));
    let start = Instant::now();
    let resp = send(quick().build().unwrap(), &fake, req).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (503, 1));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_closer_than_the_next_delay_returns_at_once() {
    // Default backoff: the first retry waits at least 1 s.
    let fake = Fake::new(vec![status(503), status(200)]);
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(900)));
    let start = Instant::now();
    let policy = RetryPolicy::builder().no_budget().build().unwrap();
    let resp = send(policy, &fake, req).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (503, 1));
    assert_eq!(start.elapsed(), Duration::ZERO);
    // The same for an error: the last error comes back at once.
    let fake = Fake::new(vec![Reply::Error(io::ErrorKind::ConnectionRefused)]);
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(900)));
    let policy = RetryPolicy::builder().no_budget().build().unwrap();
    let err = send(policy, &fake, req).await.unwrap_err();
    let err = err.downcast::<RetryError>().unwrap();
    assert_eq!(err.attempts(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_far_enough_lets_retries_run() {
    let fake = Fake::new(vec![status(503), status(503), status(200)]);
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(10)));
    let policy = RetryPolicy::builder().no_budget().build().unwrap();
    let resp = send(policy, &fake, req).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (200, 3));
}

#[tokio::test(start_paused = true)]
async fn x_should_retry_false_on_503_stops_and_true_on_400_retries() {
    let fake = Fake::new(vec![with(503, &[("x-should-retry", "false")]), status(200)]);
    let resp = send(quick().build().unwrap(), &fake, get()).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (503, 1));

    let fake = Fake::new(vec![with(400, &[("x-should-retry", "true")]), status(200)]);
    let resp = send(quick().build().unwrap(), &fake, get()).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (200, 2));
}

#[tokio::test(start_paused = true)]
async fn a_negative_grpc_pushback_stops() {
    let headers: &[(&str, &str)] = &[
        ("content-type", "application/grpc"),
        ("grpc-status", "14"),
        ("grpc-retry-pushback-ms", "-1"),
    ];
    let fake = Fake::new(vec![with(200, headers), status(200)]);
    let resp = send(quick().build().unwrap(), &fake, grpc_call())
        .await
        .unwrap();
    assert_eq!(fake.attempts(), 1);
    assert_eq!(resp.headers()["grpc-status"], "14");
}

#[tokio::test(start_paused = true)]
async fn a_grpc_call_is_committed_once_a_normal_head_arrives() {
    // Trailers-Only UNAVAILABLE is retried...
    let unavailable: &[(&str, &str)] =
        &[("content-type", "application/grpc"), ("grpc-status", "14")];
    let fake = Fake::new(vec![with(200, unavailable), status(200)]);
    send(quick().build().unwrap(), &fake, grpc_call())
        .await
        .unwrap();
    assert_eq!(fake.attempts(), 2);
    // ...a head without grpc-status is handed over: the outcome is in the
    // trailers, after the caller has the response.
    let fake = Fake::new(vec![
        with(200, &[("content-type", "application/grpc")]),
        status(200),
    ]);
    send(quick().build().unwrap(), &fake, grpc_call())
        .await
        .unwrap();
    assert_eq!(fake.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_refuses_when_empty_and_refills() {
    // No share of calls, 1 retry per second over 1 s: one retry in reserve.
    let budget = BudgetConfig {
        window: Duration::from_secs(1),
        min_per_sec: 1,
        retry_ratio: 0.0,
        ..BudgetConfig::default()
    }
    .impatient();
    let policy = quick().budget(budget).build().unwrap();
    let layer = RetryLayer::new(policy);
    let fake = Fake::new(vec![status(503)]);
    let svc = layer.layer(fake.clone());

    let mut req = get();
    let ctx = CallContext::attach(&mut req);
    let resp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        (ctx.attempts(), ctx.retries(), ctx.budget_refusals()),
        (2, 1, 1)
    );

    // Another clone shares the same, now empty, budget.
    let mut req = get();
    let ctx = CallContext::attach(&mut req);
    svc.clone().oneshot(req).await.unwrap();
    assert_eq!((ctx.attempts(), ctx.budget_refusals()), (1, 1));

    // The spent retry leaves the window: the budget has one again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut req = get();
    let ctx = CallContext::attach(&mut req);
    svc.clone().oneshot(req).await.unwrap();
    assert_eq!((ctx.attempts(), ctx.retries()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn not_sent_failures_are_retried_even_for_a_post() {
    let fake = Fake::new(vec![
        Reply::Error(io::ErrorKind::ConnectionRefused),
        status(200),
    ]);
    let mut req = post();
    let ctx = CallContext::attach(&mut req);
    let resp = send(quick().build().unwrap(), &fake, req).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (200, 2));
    assert_eq!(ctx.retry_reasons(), vec![FailureKind::ConnectRefused]);
    assert_eq!(ctx.possibly_duplicated(), 0);
}

#[tokio::test(start_paused = true)]
async fn unknown_failures_are_retried_only_when_safe_to_repeat() {
    let reset = || {
        Fake::new(vec![
            Reply::Error(io::ErrorKind::ConnectionReset),
            status(200),
        ])
    };

    // A plain POST: not retried, the error comes back with the count.
    let fake = reset();
    let err = send(quick().build().unwrap(), &fake, post())
        .await
        .unwrap_err();
    let err = err.downcast::<RetryError>().unwrap();
    assert_eq!((err.attempts(), err.failure()), (1, FailureKind::Reset));
    let source = std::error::Error::source(&*err).unwrap();
    assert_eq!(
        source.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::ConnectionReset
    );
    assert_eq!(fake.attempts(), 1);

    // A GET: idempotent.
    let fake = reset();
    send(quick().build().unwrap(), &fake, get()).await.unwrap();
    assert_eq!(fake.attempts(), 2);

    // A POST marked RetrySafe: retried, counted as possibly duplicated.
    let fake = reset();
    let mut req = post();
    req.extensions_mut().insert(RetrySafe);
    let ctx = CallContext::attach(&mut req);
    send(quick().build().unwrap(), &fake, req).await.unwrap();
    assert_eq!((fake.attempts(), ctx.possibly_duplicated()), (2, 1));

    // A POST with an idempotency key: retried; the server can tell.
    let fake = reset();
    let mut req = post();
    req.headers_mut()
        .insert("idempotency-key", "k1".parse().unwrap());
    let ctx = CallContext::attach(&mut req);
    send(quick().build().unwrap(), &fake, req).await.unwrap();
    assert_eq!((fake.attempts(), ctx.possibly_duplicated()), (2, 0));

    // The switch: never (even a GET), always (even a POST).
    let fake = reset();
    let never = quick().retry_safe(RetrySafeRule::Never).build().unwrap();
    assert!(send(never, &fake, get()).await.is_err());
    assert_eq!(fake.attempts(), 1);
    let fake = reset();
    let always = quick().retry_safe(RetrySafeRule::All).build().unwrap();
    send(always, &fake, post()).await.unwrap();
    assert_eq!(fake.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn spent_retries_on_errors_return_the_last_error_with_the_count() {
    let fake = Fake::new(vec![Reply::Error(io::ErrorKind::ConnectionRefused)]);
    let err = send(quick().max_retries(5).build().unwrap(), &fake, post())
        .await
        .unwrap_err();
    let err = err.downcast::<RetryError>().unwrap();
    assert_eq!(err.attempts(), 6);
    assert!(err.to_string().contains("6 attempts"), "{err}");
    assert_eq!(
        sturdy_core::classify_error(&*err),
        FailureKind::ConnectRefused
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_body_over_the_cap_read_by_the_first_attempt_is_not_retried() {
    // Over both caps: the body streams, and past the cap it is gone.
    let fake = Fake::new(vec![status(503), status(200)]);
    let policy = quick()
        .replay_cap(3)
        .replay_in_memory_up_to(3)
        .build()
        .unwrap();
    let resp = send(policy, &fake, get()).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (503, 1));
}

#[tokio::test(start_paused = true)]
async fn a_body_all_in_memory_is_replayed_whole_whatever_the_streamed_cap() {
    // A long prompt: 1 MiB of JSON in a `Full`, far over the streamed cap.
    let prompt = Bytes::from(vec![b'x'; 1 << 20]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0));
    let (s, c) = (seen.clone(), calls.clone());
    let inner = tower::service_fn(move |req: Request<BoxBody>| {
        let (s, c) = (s.clone(), c.clone());
        async move {
            let n = {
                let mut n = c.lock().unwrap();
                *n += 1;
                *n
            };
            let body = req.into_body().collect().await?.to_bytes();
            s.lock().unwrap().push(body);
            let status = if n == 1 { 503 } else { 200 };
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        }
    });
    let req = Request::post("http://127.0.0.1/v1/chat/completions")
        .body(Full::new(prompt.clone()))
        .unwrap();
    let policy = quick().replay_cap(1024).build().unwrap();
    let resp = RetryLayer::new(policy)
        .layer(inner)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|b| *b == prompt), "byte-identical, twice");
    // Kept by reference: the very bytes the caller gave, not a copy.
    assert!(seen.iter().all(|b| b.as_ptr() == prompt.as_ptr()));
}

#[tokio::test(start_paused = true)]
async fn a_response_cut_mid_body_is_retried_when_prefetch_allows() {
    let fake = Fake::new(vec![Reply::BrokenBody, status(200)]);
    let policy = quick().prefetch_up_to(1024).build().unwrap();
    let resp = send(policy, &fake, get()).await.unwrap();
    assert_eq!(fake.attempts(), 2);
    assert!(resp.body().is_buffered());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"answer");

    // Without prefetch the caller gets the broken body: nothing is retried.
    let fake = Fake::new(vec![Reply::BrokenBody, status(200)]);
    let resp = send(quick().build().unwrap(), &fake, get()).await.unwrap();
    assert_eq!(fake.attempts(), 1);
    assert!(resp.into_body().collect().await.is_err());

    // A POST cut mid-body is not safe to repeat unless marked: the caller
    // gets it as it would have without prefetch, the head, the bytes that
    // came and the failure, and the call's record says one attempt.
    let fake = Fake::new(vec![Reply::BrokenBody, status(200)]);
    let policy = quick().prefetch_up_to(1024).build().unwrap();
    let mut req = post();
    let ctx = CallContext::attach(&mut req);
    let resp = send(policy, &fake, req).await.unwrap();
    assert_eq!(
        (resp.status().as_u16(), fake.attempts(), ctx.attempts()),
        (200, 1, 1)
    );
    let mut body = resp.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "hello"
    );
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(
        sturdy_core::classify_body_error(&*err),
        FailureKind::ResponseBody
    );
}

#[tokio::test(start_paused = true)]
async fn prefetch_skips_event_streams_and_large_bodies() {
    let sse: &[(&str, &str)] = &[("content-type", "text/event-stream")];
    let fake = Fake::new(vec![with(200, sse)]);
    let policy = quick().prefetch_up_to(1024).build().unwrap();
    let resp = send(policy, &fake, get()).await.unwrap();
    assert!(!resp.body().is_buffered());
    let fake = Fake::new(vec![status(200)]);
    let policy = quick().prefetch_up_to(3).build().unwrap();
    let resp = send(policy, &fake, get()).await.unwrap();
    assert!(!resp.body().is_buffered());
}

#[tokio::test(start_paused = true)]
async fn a_small_error_body_is_drained_before_the_retry() {
    /// A body of declared length 4 that records being read to its end.
    struct Watched(Arc<Mutex<bool>>, bool);
    impl Body for Watched {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.1 {
                *self.0.lock().unwrap() = true;
                Poll::Ready(None)
            } else {
                self.1 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"oops")))))
            }
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(4)
        }
    }
    let drained = Arc::new(Mutex::new(false));
    let seen_at_retry = Arc::new(Mutex::new(None));
    let calls = Arc::new(Mutex::new(0));
    let (d, s, c) = (drained.clone(), seen_at_retry.clone(), calls.clone());
    let inner = tower::service_fn(move |_req: Request<BoxBody>| {
        let mut n = c.lock().unwrap();
        *n += 1;
        let first = *n == 1;
        if !first {
            *s.lock().unwrap() = Some(*d.lock().unwrap());
        }
        let d = d.clone();
        async move {
            let status = if first { 503 } else { 200 };
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(Watched(d, false))
                    .unwrap(),
            )
        }
    });
    let svc = RetryLayer::new(quick().build().unwrap()).layer(inner);
    let resp = svc.oneshot(get()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(*seen_at_retry.lock().unwrap(), Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_user_classifier_overrides_the_table() {
    let policy = quick()
        .classifier(|o: Answer<'_>| match o {
            Answer::Response(s, _) if s == StatusCode::CONFLICT => Some(Verdict::Retryable),
            Answer::Response(s, _) if s == StatusCode::SERVICE_UNAVAILABLE => Some(Verdict::Fatal),
            Answer::Error(_) => Some(Verdict::Fatal),
            _ => None,
        })
        .build()
        .unwrap();
    let fake = Fake::new(vec![status(409), status(200)]);
    send(policy.clone(), &fake, get()).await.unwrap();
    assert_eq!(fake.attempts(), 2);
    let fake = Fake::new(vec![status(503), status(200)]);
    send(policy.clone(), &fake, get()).await.unwrap();
    assert_eq!(fake.attempts(), 1);
    let fake = Fake::new(vec![
        Reply::Error(io::ErrorKind::ConnectionRefused),
        status(200),
    ]);
    assert!(send(policy, &fake, get()).await.is_err());
    assert_eq!(fake.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_header_counts_attempts() {
    let fake = Fake::new(vec![status(503), status(503), status(200)]);
    let policy = quick().attempt_header("x-retry-attempt").build().unwrap();
    send(policy, &fake, get()).await.unwrap();
    let seen: Vec<String> = fake
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|(_, h)| h["x-retry-attempt"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["1", "2", "3"]);
}

#[tokio::test(start_paused = true)]
async fn max_retries_zero_makes_one_attempt() {
    let fake = Fake::new(vec![status(503), status(200)]);
    let resp = send(quick().max_retries(0).build().unwrap(), &fake, get())
        .await
        .unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (503, 1));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_leaves_nothing_running() {
    let fake = Fake::new(vec![status(503), status(200)]);
    let svc = RetryLayer::new(RetryPolicy::default()).layer(fake.clone());
    let call = svc.oneshot(get());
    // Dropped while waiting for the backoff: no second attempt ever comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(fake.attempts(), 1);
    assert_eq!(Arc::strong_count(&fake.script), 1);
}

#[tokio::test(start_paused = true)]
async fn an_http2_refused_stream_is_retried_as_not_sent() {
    let fake = Fake::new(vec![Reply::Refused, status(200)]);
    let mut req = post();
    let ctx = CallContext::attach(&mut req);
    let resp = send(quick().build().unwrap(), &fake, req).await.unwrap();
    assert_eq!((resp.status().as_u16(), fake.attempts()), (200, 2));
    assert_eq!(ctx.retry_reasons(), vec![FailureKind::RefusedStream]);
    assert_eq!(ctx.possibly_duplicated(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_previous_attempts_is_sent_on_retries_only() {
    let fake = Fake::new(vec![status(503), status(503), status(200)]);
    let policy = quick().grpc_previous_attempts(true).build().unwrap();
    send(policy, &fake, get()).await.unwrap();
    let seen: Vec<Option<String>> = fake
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|(_, h)| {
            h.get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(seen, [None, Some("1".into()), Some("2".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_generated_idempotency_key_is_the_same_on_every_attempt_and_makes_a_post_safe() {
    let fake = Fake::new(vec![
        Reply::Error(io::ErrorKind::ConnectionReset),
        status(503),
        status(200),
    ]);
    let policy = quick()
        .generate_idempotency_key("idempotency-key")
        .build()
        .unwrap();
    let mut req = post();
    let ctx = CallContext::attach(&mut req);
    send(policy.clone(), &fake, req).await.unwrap();
    let keys: Vec<String> = fake
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|(_, h)| h["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k == &keys[0]));
    assert_eq!(keys[0].len(), 36);
    assert_eq!(&keys[0][14..15], "4", "UUID v4 form: {}", keys[0]);
    assert_eq!(ctx.possibly_duplicated(), 0);
    // Another call gets another key; a caller's own key is kept.
    let fake2 = Fake::new(vec![status(200)]);
    send(policy.clone(), &fake2, post()).await.unwrap();
    assert_ne!(
        fake2.bodies.lock().unwrap()[0].1["idempotency-key"],
        keys[0].as_str()
    );
    let fake3 = Fake::new(vec![status(200)]);
    let mut req = post();
    req.headers_mut()
        .insert("idempotency-key", "mine".parse().unwrap());
    send(policy, &fake3, req).await.unwrap();
    assert_eq!(fake3.bodies.lock().unwrap()[0].1["idempotency-key"], "mine");
}

#[test]
fn invalid_configurations_are_errors() {
    let b = RetryPolicy::builder;
    assert_eq!(
        b().max_retries(101).build().unwrap_err(),
        RetryConfigError::TooManyRetries(101)
    );
    assert!(b().max_retries(100).build().is_ok());
    assert_eq!(
        b().backoff(Backoff::guide(Duration::ZERO, Duration::ZERO))
            .build()
            .unwrap_err(),
        RetryConfigError::ZeroBase
    );
    assert_eq!(
        b().max_delay(Duration::from_millis(999))
            .build()
            .unwrap_err(),
        RetryConfigError::CapBelowBase
    );
    assert_eq!(
        b().hint_cap(Duration::ZERO).build().unwrap_err(),
        RetryConfigError::ZeroHintCap
    );
    let budget = |window: u64, ratio: f32, min_per_sec: u32| BudgetConfig {
        window: Duration::from_secs(window),
        min_per_sec,
        retry_ratio: ratio,
        ..BudgetConfig::default()
    };
    for (cfg, want) in [
        (budget(0, 0.2, 10), RetryConfigError::BudgetWindow),
        (budget(61, 0.2, 10), RetryConfigError::BudgetWindow),
        (budget(10, f32::NAN, 10), RetryConfigError::BudgetRatio),
        (budget(10, -0.1, 10), RetryConfigError::BudgetRatio),
        (budget(10, 10.5, 10), RetryConfigError::BudgetRatio),
        (budget(10, 0.2, u32::MAX), RetryConfigError::BudgetFloor),
        (
            BudgetConfig {
                burst: 0,
                ..budget(10, 0.2, 10)
            },
            RetryConfigError::BudgetBurst,
        ),
    ] {
        assert_eq!(b().budget(cfg).build().unwrap_err(), want, "{cfg:?}");
    }
    assert!(b().budget(budget(60, 10.0, 0)).build().is_ok());
    assert_eq!(
        b().idempotency_header("bad header").build().unwrap_err(),
        RetryConfigError::InvalidHeaderName
    );
    assert_eq!(
        b().attempt_header("").build().unwrap_err(),
        RetryConfigError::InvalidHeaderName
    );
    assert_eq!(
        b().drain(1024, Duration::ZERO).build().unwrap_err(),
        RetryConfigError::ZeroDrainTime
    );
    assert!(b().drain(0, Duration::ZERO).build().is_ok());
    assert_eq!(
        b().replay_cap(0).build().unwrap_err(),
        RetryConfigError::ZeroReplayCap
    );
    assert!(b().replay_cap(1).build().is_ok());
    let jitter = |ms| Backoff::guide(Duration::from_millis(10), Duration::from_millis(ms));
    assert_eq!(
        b().backoff(jitter(1001))
            .max_delay(Duration::from_secs(1))
            .build()
            .unwrap_err(),
        RetryConfigError::JitterAboveCap
    );
    assert!(
        b().backoff(jitter(1000))
            .max_delay(Duration::from_secs(1))
            .build()
            .is_ok()
    );
    for m in [0.0, 0.99, 100.5, f64::NAN, f64::INFINITY] {
        let grpc = Backoff::GrpcStyle {
            base: Duration::from_secs(1),
            multiplier: m,
        };
        assert!(
            matches!(
                b().backoff(grpc).build().unwrap_err(),
                RetryConfigError::InvalidFactor(_)
            ),
            "{m}"
        );
    }
    // Every error says what to change.
    for e in [
        RetryConfigError::ZeroReplayCap,
        RetryConfigError::JitterAboveCap,
        RetryConfigError::TooManyRetries(101),
    ] {
        assert!(e.to_string().len() > 20, "{e}");
    }
}

#[test]
fn debug_output_never_shows_header_values() {
    let mut h = HeaderMap::new();
    h.insert("authorization", "Bearer sk-secret".parse().unwrap());
    let o = Answer::Response(StatusCode::OK, &h);
    assert!(!format!("{o:?}").contains("sk-secret"));
    let policy = RetryPolicy::default();
    assert!(format!("{policy:?}").contains("max_retries: 5"));
    let _ = Method::GET;
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_is_retried_when_the_failed_attempt_never_read_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0u32));
    let (s, c) = (seen.clone(), calls.clone());
    let inner = tower::service_fn(move |req: Request<BoxBody>| {
        let (s, c) = (s.clone(), c.clone());
        async move {
            let first = {
                let mut n = c.lock().unwrap();
                *n += 1;
                *n == 1
            };
            if first {
                // Refused before a byte of the body was read.
                return Err::<Response<Full<Bytes>>, BoxError>(
                    io::Error::from(io::ErrorKind::ConnectionRefused).into(),
                );
            }
            let body = req.into_body().collect().await?.to_bytes();
            s.lock().unwrap().push(body);
            Ok(Response::new(Full::new(Bytes::new())))
        }
    });
    let policy = quick()
        .replay_cap(3)
        .replay_in_memory_up_to(3)
        .build()
        .unwrap();
    let resp = RetryLayer::new(policy)
        .layer(inner)
        .oneshot(post())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Bytes::from_static(b"{\"model\":\"m\"}")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_carries_the_callers_extensions_and_the_one_call_context() {
    #[derive(Clone, PartialEq, Debug)]
    struct Marker(u32);
    // Per attempt: the marker seen, and the attempts its context had counted.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0));
    let (s, c) = (seen.clone(), calls.clone());
    let inner = tower::service_fn(move |req: Request<BoxBody>| {
        let mut n = c.lock().unwrap();
        *n += 1;
        let status = if *n == 1 { 503 } else { 200 };
        let ctx = CallContext::from_extensions(req.extensions()).map(|c| c.attempts());
        s.lock()
            .unwrap()
            .push((req.extensions().get::<Marker>().cloned(), ctx));
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(b"x")))
                    .unwrap(),
            )
        }
    });
    // No context on the request: the layer adds it, and the retry must get
    // the same one back (it counts both attempts) next to the caller's own.
    let mut req = get();
    req.extensions_mut().insert(Marker(7));
    let svc = RetryLayer::new(quick().build().unwrap()).layer(inner);
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(Some(Marker(7)), Some(1)), (Some(Marker(7)), Some(2))]
    );

    // With a context already there, the retry keeps that one.
    let calls = Arc::new(Mutex::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, c) = (seen.clone(), calls.clone());
    let inner = tower::service_fn(move |req: Request<BoxBody>| {
        let mut n = c.lock().unwrap();
        *n += 1;
        let status = if *n == 1 { 503 } else { 200 };
        s.lock()
            .unwrap()
            .push(CallContext::from_extensions(req.extensions()));
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        }
    });
    let mut req = get();
    let ctx = CallContext::attach(&mut req);
    let svc = RetryLayer::new(quick().build().unwrap()).layer(inner);
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(ctx.attempts(), 2);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|c| c.as_ref().is_some_and(|c| c.attempts() == 2))
    );
}

/// A body of the given frames with an exact length, for prefetch tests.
struct Frames(VecDeque<Frame<Bytes>>, u64);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let next = self.0.pop_front();
        if let Some(d) = next.as_ref().and_then(Frame::data_ref) {
            self.1 -= d.len() as u64;
        }
        Poll::Ready(next.map(Ok))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.1)
    }
}

async fn prefetched(frames: Vec<Frame<Bytes>>) -> (bool, Bytes, Option<HeaderMap>) {
    let len = frames
        .iter()
        .filter_map(Frame::data_ref)
        .map(|d| d.len() as u64)
        .sum();
    let body = Arc::new(Mutex::new(Some(Frames(frames.into(), len))));
    let inner = tower::service_fn(move |_req: Request<BoxBody>| {
        let body = body.lock().unwrap().take().unwrap();
        async move { Ok::<_, BoxError>(Response::new(body)) }
    });
    let policy = quick().prefetch_up_to(1024).build().unwrap();
    let resp = RetryLayer::new(policy)
        .layer(inner)
        .oneshot(get())
        .await
        .unwrap();
    let buffered = resp.body().is_buffered();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (buffered, collected.to_bytes(), trailers)
}

#[tokio::test(start_paused = true)]
async fn prefetch_hands_over_one_frame_many_frames_and_trailers_whole() {
    let data = |s: &'static [u8]| Frame::data(Bytes::from_static(s));
    let trailers = |k: &'static str, v: &'static str| {
        let mut t = HeaderMap::new();
        t.insert(k, v.parse().unwrap());
        Frame::trailers(t)
    };

    let one = prefetched(vec![data(b"{\"ok\":true}")]).await;
    assert_eq!(one, (true, Bytes::from_static(b"{\"ok\":true}"), None));

    // Empty frames are skipped; later frames join the first, in order.
    let many = prefetched(vec![data(b"ab"), data(b""), data(b"cd"), data(b"e")]).await;
    assert_eq!(many, (true, Bytes::from_static(b"abcde"), None));

    // Trailers frames merge, as `Collected` merges them.
    let (buffered, bytes, got) = prefetched(vec![
        data(b"ab"),
        trailers("x-one", "1"),
        trailers("x-two", "2"),
    ])
    .await;
    assert!(buffered);
    assert_eq!(&bytes[..], b"ab");
    let got = got.unwrap();
    assert_eq!(
        (got["x-one"].as_bytes(), got["x-two"].as_bytes()),
        (&b"1"[..], &b"2"[..])
    );

    // Only trailers: an empty body, the trailers kept.
    let (_, bytes, got) = prefetched(vec![trailers("x-one", "1")]).await;
    assert!(bytes.is_empty());
    assert_eq!(got.unwrap()["x-one"].as_bytes(), b"1");
}

#[tokio::test(start_paused = true)]
async fn an_attempt_header_named_like_the_idempotency_header_does_not_make_a_post_safe() {
    // The layer's own attempt count is not a key the caller gave: a plain
    // POST stays unsafe to repeat after an unknown failure.
    let fake = Fake::new(vec![
        Reply::Error(io::ErrorKind::ConnectionReset),
        status(200),
    ]);
    let policy = quick().attempt_header("idempotency-key").build().unwrap();
    let err = send(policy, &fake, post()).await.unwrap_err();
    assert_eq!(err.downcast::<RetryError>().unwrap().attempts(), 1);
    assert_eq!(fake.attempts(), 1);
}

/// A request body of `n` four-byte chunks, all ready at once.
fn chunked_post(n: usize) -> Request<BoxBody> {
    let frames = (0..n).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abcd"))));
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    Request::post("http://127.0.0.1/upload")
        .extension(RetrySafe)
        .body(sturdy_core::boxed(body))
        .unwrap()
}

/// An inner service whose first attempt fails at once with a reset while
/// a task it leaves behind goes on reading the request body, a chunk every
/// `pace` (an HTTP/1.1 connection still sending it); later attempts read
/// the body and answer 200. Counts its calls.
fn reading_on_after_failure(
    pace: Duration,
    calls: Arc<Mutex<u32>>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
) -> impl Service<
    Request<BoxBody>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send,
> + Clone {
    tower::service_fn(move |req: Request<BoxBody>| {
        let (calls, bodies) = (calls.clone(), bodies.clone());
        async move {
            let first = {
                let mut n = calls.lock().unwrap();
                *n += 1;
                *n == 1
            };
            if first {
                let mut body = req.into_body();
                tokio::spawn(async move {
                    while let Some(Ok(_)) = body.frame().await {
                        tokio::time::sleep(pace).await;
                    }
                });
                return Err(io::Error::from(io::ErrorKind::ConnectionReset).into());
            }
            let body = req.into_body().collect().await?.to_bytes();
            bodies.lock().unwrap().push(body);
            Ok(Response::new(Full::new(Bytes::new())))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_body_spoiled_during_the_backoff_returns_the_failure_the_retry_was_for() {
    let calls = Arc::new(Mutex::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    // 5 chunks of 4 bytes against a 10-byte cap: the third chunk, read
    // 40 ms after the failure, spoils the body; the backoff is 10 ms, and
    // the retry waits for the reading attempt rather than race it.
    let inner = reading_on_after_failure(Duration::from_millis(20), calls.clone(), bodies.clone());
    let policy = quick().replay_cap(10).build().unwrap();
    let mut req = chunked_post(5);
    let ctx = CallContext::attach(&mut req);
    let err = RetryLayer::new(policy)
        .layer(inner)
        .oneshot(req)
        .await
        .unwrap_err();
    let retry = err.downcast_ref::<RetryError>().expect("a RetryError");
    assert_eq!(retry.attempts(), 1);
    assert_eq!(retry.failure(), FailureKind::Reset, "{retry:?}");
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!((ctx.attempts(), ctx.retries()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_earlier_attempt_to_finish_reading_the_body() {
    let calls = Arc::new(Mutex::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    // 2 chunks within a 10-byte cap, read 30 ms apart; the backoff is 10 ms.
    let inner = reading_on_after_failure(Duration::from_millis(30), calls.clone(), bodies.clone());
    let policy = quick().replay_cap(10).build().unwrap();
    let started = Instant::now();
    let resp = RetryLayer::new(policy)
        .layer(inner)
        .oneshot(chunked_post(2))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        bodies.lock().unwrap().as_slice(),
        [Bytes::from_static(b"abcdabcd")]
    );
    // The second attempt went out once the first let go of the body.
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_counted_when_it_is_sent_not_when_it_is_decided() {
    let fake = Fake::new(vec![status(503), status(200)]);
    let policy = quick()
        .backoff(Backoff::guide(
            Duration::from_secs(1),
            Duration::from_nanos(1),
        ))
        .build()
        .unwrap();
    let mut req = get();
    let ctx = CallContext::attach(&mut req);
    let svc = RetryLayer::new(policy).layer(fake.clone());
    // The caller gives up during the 1 s backoff.
    let gave_up = tokio::time::timeout(Duration::from_millis(500), svc.oneshot(req)).await;
    assert!(gave_up.is_err());
    assert_eq!((ctx.attempts(), ctx.retries()), (1, 0));
}

/// A patient budget with one token and no floor: the second failing call
/// must wait for room.
fn one_token() -> BudgetConfig {
    BudgetConfig {
        window: Duration::from_secs(10),
        min_per_sec: 0,
        retry_ratio: 1.0,
        burst: 1,
        patient: true,
    }
}

#[tokio::test(start_paused = true)]
async fn a_patient_budget_holds_a_retry_until_another_retry_succeeds() {
    let policy = quick().budget(one_token()).build().unwrap();
    let svc = RetryLayer::new(policy).layer(Fake::new(vec![status(503), status(503), status(200)]));
    let started = Instant::now();
    let call = |svc: sturdy_retry::RetryService<Fake>| async move {
        let mut req = get();
        let ctx = CallContext::attach(&mut req);
        let resp = svc.oneshot(req).await.unwrap();
        (
            resp.status(),
            ctx.attempts(),
            ctx.budget_refusals(),
            started.elapsed(),
        )
    };
    let (a, b) = tokio::join!(call(svc.clone()), call(svc.clone()));
    // One retried at once with the token; the other waited for its
    // success, then went: nobody was refused.
    let (first, second) = if a.3 <= b.3 { (a, b) } else { (b, a) };
    assert_eq!((first.0, first.1, first.2), (StatusCode::OK, 2, 0));
    assert_eq!((second.0, second.1, second.2), (StatusCode::OK, 2, 0));
    assert!(second.3 >= first.3, "{first:?} {second:?}");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_retry_gives_up_at_the_deadline_with_the_failure() {
    let policy = quick().budget(one_token()).build().unwrap();
    let fake = Fake::new(vec![status(503)]);
    let svc = RetryLayer::new(policy).layer(fake.clone());
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let ctx = CallContext::attach(&mut req);
    let started = Instant::now();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    // The token went to the first retry; the second waited, in vain, up to
    // the deadline (checked at most a second apart).
    assert_eq!((ctx.attempts(), ctx.budget_refusals()), (2, 1));
    assert_eq!(fake.attempts(), 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_a_waiting_retry_gives_up_after_the_window() {
    let policy = quick().budget(one_token()).build().unwrap();
    let fake = Fake::new(vec![status(503)]);
    let svc = RetryLayer::new(policy).layer(fake.clone());
    let mut req = get();
    let ctx = CallContext::attach(&mut req);
    let started = Instant::now();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(ctx.budget_refusals(), 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited <= Duration::from_secs(10),
        "{waited:?}"
    );
}
