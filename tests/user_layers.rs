//! The user's own layers inside the stack, against the real fault server on
//! loopback: an attempt layer runs once per attempt (the retry's re-sent
//! copies included), a call layer once per call; tower-http's `TraceLayer`
//! and an auth-refresh layer compose at either place; and a stack without
//! them keeps its old names.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header::AUTHORIZATION};
use http_body_util::{BodyExt, Full};
use sturdy::metrics::Scope;
use sturdy::retry::{Backoff, RetryPolicy};
use sturdy::{BoxBody, RetrySafe, Stack};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tower::util::MapRequestLayer;
use tower::{Layer, Service, ServiceExt};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

fn client() -> sturdy::Client {
    sturdy::client()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a valid client")
}

/// A millisecond-scale policy: 1 ms · 2^n + up to 1 ms.
fn quick() -> sturdy::retry::RetryPolicyBuilder {
    RetryPolicy::builder().backoff(Backoff::guide(
        Duration::from_millis(1),
        Duration::from_millis(1),
    ))
}

/// A chat completion the fault server answers by `script`, one entry per
/// attempt; marked safe to send again.
fn chat(url: &str, call: &str, script: &str) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header(CALL_HEADER, call)
        .header(FAULT_HEADER, script)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .expect("a valid request");
    req.extensions_mut().insert(RetrySafe);
    req
}

/// Counts the requests that pass, whatever their type.
#[derive(Clone)]
struct CountLayer(Arc<AtomicUsize>);

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    seen: Arc<AtomicUsize>,
}

impl<S> Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            seen: Arc::clone(&self.0),
        }
    }
}

impl<S: Service<Req>, Req> Service<Req> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}

/// Sends `req` through `svc` and reads the whole answer: status and body.
async fn call<S, B>(svc: S, req: Request<Full<Bytes>>) -> (http::StatusCode, Bytes)
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let answer = async {
        let resp = svc.oneshot(req).await.expect("an answer");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("a body");
        (status, body.to_bytes())
    };
    tokio::time::timeout(BOUND, answer).await.expect("bounded")
}

#[tokio::test]
async fn an_attempt_layer_sees_every_attempt_and_a_call_layer_sees_the_call_once() {
    let server = FaultServer::start().await.expect("fault server");
    let attempts = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let stack = Stack::builder()
        .retry_policy(quick())
        .attempt_layer(CountLayer(Arc::clone(&attempts)))
        .call_layer(CountLayer(Arc::clone(&calls)))
        .build()
        .expect("a valid stack");
    let svc = stack.layer(client());

    let (status, body) = call(svc, chat(&server.base_url(), "c1", "503, 503, 200")).await;
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "one per attempt");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one per call");
    // The stack's own metrics agree: the layers sit inside them.
    let s = stack.recorder().snapshot();
    assert_eq!(s.finished(Scope::Attempt), 3);
    assert_eq!(s.finished(Scope::Call), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn layers_added_twice_run_in_the_order_added_the_first_outermost() {
    let server = FaultServer::start().await.expect("fault server");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mark = |name: &'static str| {
        let order = Arc::clone(&order);
        MapRequestLayer::new(move |req: Request<BoxBody>| {
            order.lock().expect("not poisoned").push(name);
            req
        })
    };
    let stack = Stack::builder()
        .retry_policy(quick())
        .attempt_layer(mark("first"))
        .attempt_layer(mark("second"))
        .build()
        .expect("a valid stack");

    let (status, _) = call(
        stack.layer(client()),
        chat(&server.base_url(), "c1", "503, 200"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        *order.lock().expect("not poisoned"),
        ["first", "second", "first", "second"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn trace_layer_composes_at_both_places_and_the_call_survives_retries() {
    let server = FaultServer::start().await.expect("fault server");
    let requests = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (r, f) = (Arc::clone(&requests), Arc::clone(&failures));
    // tower-http's stock layer, its body type and all; the callbacks only
    // count what it saw.
    let attempt_trace = TraceLayer::new_for_http()
        .on_request(move |_: &Request<BoxBody>, _: &tracing::Span| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .on_failure(
            move |_: ServerErrorsFailureClass, _: Duration, _: &tracing::Span| {
                f.fetch_add(1, Ordering::SeqCst);
            },
        );
    let stack = Stack::builder()
        .retry_policy(quick())
        .call_layer(TraceLayer::new_for_http())
        .attempt_layer(attempt_trace)
        .build()
        .expect("a valid stack");
    let svc = stack.layer(client());

    // Stored, cloned and spawned like the default stack's service.
    let task = tokio::spawn(call(
        svc.clone(),
        chat(&server.base_url(), "c1", "503, 503, 200"),
    ));
    let (status, body) = task.await.expect("the task");
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    assert_eq!(requests.load(Ordering::SeqCst), 3, "a span per attempt");
    assert_eq!(failures.load(Ordering::SeqCst), 2, "the two 503s");

    // A streamed answer through both trace layers, read to its end.
    let mut req = chat(&server.base_url(), "c2", "503, 200");
    *req.body_mut() = Full::new(Bytes::from_static(
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    ));
    let (status, body) = call(svc, req).await;
    assert_eq!(status, 200);
    assert!(body.ends_with(b"data: [DONE]\n\n"), "{body:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_layer_that_wraps_the_request_body_is_boxed_again_under_it() {
    let server = FaultServer::start().await.expect("fault server");
    // A layer that changes the request body's type (here: a size limit),
    // then the documented map back to the inner client's `BoxBody`.
    let stack = Stack::builder()
        .retry_policy(quick())
        .attempt_layer(MapRequestLayer::new(|req: Request<BoxBody>| {
            req.map(|body| http_body_util::Limited::new(body, 1 << 20))
        }))
        .attempt_layer(MapRequestLayer::new(
            |req: Request<http_body_util::Limited<BoxBody>>| req.map(sturdy::boxed),
        ))
        .build()
        .expect("a valid stack");

    let (status, body) = call(
        stack.layer(client()),
        chat(&server.base_url(), "c1", "503, 200"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    assert_eq!(server.dashboard().received, 2);
    server.shutdown().await;
}

/// Every request's `authorization` values as it leaves for the wire, under
/// the whole stack.
type Seen = Arc<Mutex<Vec<Vec<HeaderValue>>>>;

#[tokio::test]
async fn an_auth_refresh_layer_stamps_a_fresh_token_on_every_attempt() {
    let server = FaultServer::start().await.expect("fault server");
    // The "refresh": a new token each time one is asked for.
    let issued = Arc::new(AtomicUsize::new(0));
    let refresh = MapRequestLayer::new(move |mut req: Request<BoxBody>| {
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = HeaderValue::try_from(format!("Bearer t{n}")).expect("a valid header");
        // Appended, not inserted: an earlier attempt's token, were it
        // carried over to the retry's copy, would show on the wire.
        req.headers_mut().append(AUTHORIZATION, token);
        req
    });
    let seen: Seen = Arc::default();
    let wire = {
        let seen = Arc::clone(&seen);
        MapRequestLayer::new(move |req: Request<BoxBody>| {
            let tokens = req.headers().get_all(AUTHORIZATION).iter().cloned();
            seen.lock().expect("not poisoned").push(tokens.collect());
            req
        })
        .layer(client())
    };
    let stack = Stack::builder()
        .retry_policy(quick())
        .attempt_layer(refresh)
        .build()
        .expect("a valid stack");

    let (status, _) = call(
        stack.layer(wire),
        chat(&server.base_url(), "c1", "503, 503, 200"),
    )
    .await;
    assert_eq!(status, 200);
    let seen: Vec<_> = seen
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|tokens| {
            let tokens: Vec<_> = tokens.iter().map(|t| t.to_str().unwrap_or("?")).collect();
            tokens.join(" | ")
        })
        .collect();
    // Every attempt the server received carried one token, each one fresh.
    assert_eq!(seen, ["Bearer t1", "Bearer t2", "Bearer t3"]);
    assert_eq!(server.dashboard().received, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stack_without_user_layers_keeps_its_names() {
    // Compile-time checks: these lines are the test.
    let builder: sturdy::StackBuilder = Stack::builder();
    let stack: Stack = builder.build().expect("a valid stack");
    let svc: sturdy::StackService<sturdy::Client> = stack.layer(client());
    // Spelled out: the user's layers leave no trace when unused.
    type Attempts = sturdy::metrics::FailureMetrics<
        sturdy::rate::Pacer<sturdy::timeout::AttemptTimeout<sturdy::Client>>,
        sturdy::metrics::SnapshotRecorder,
    >;
    type Workload = sturdy::timeout::WorkloadTimeout<
        sturdy::retry::RetryService<Attempts, BoxBody>,
        sturdy::timeout::PathClassifier,
    >;
    let _: sturdy::metrics::FailureMetrics<Workload, sturdy::metrics::SnapshotRecorder> = svc;

    // With a layer, the names take it as a parameter.
    type Counting = tower_layer::Stack<CountLayer, tower_layer::Identity>;
    let stack: Stack<_, _, _, tower_layer::Identity, Counting> = Stack::builder()
        .attempt_layer(CountLayer(Arc::default()))
        .build()
        .expect("a valid stack");
    let _: sturdy::StackService<
        sturdy::Client,
        sturdy::metrics::SnapshotRecorder,
        sturdy::timeout::PathClassifier,
        BoxBody,
        tower_layer::Identity,
        Counting,
    > = stack.layer(client());
}
