//! The call plan and the one verdict, end to end on loopback: each fact is
//! settled once, by the layer that owns it, and every place that reports
//! it agrees — whatever is composed in between.

mod metrics_support;

use std::time::Duration;

use http_body_util::BodyExt;
use metrics_support::*;
use prometheus_client::registry::Registry;
use sturdy::metrics::{Both, FailureMetricsLayer, PrometheusRecorder, Scope, SnapshotRecorder};
use sturdy::retry::RetryPolicy;
use sturdy::timeout::WorkloadTimeoutLayer;
use sturdy::{Answer, CallContext, Reach, RetrySafe, Safety, Stack, Verdict, Workload};
use sturdy_faults::FaultServer;
use tower::{Layer, ServiceBuilder, ServiceExt};

/// Every wait in this file is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// Sends `req` through `svc` and reads the body to its end; the body's
/// outcome (it may fail: that is counted too).
async fn call<S, B>(svc: S, req: Req) -> Result<http::StatusCode, String>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Error: std::fmt::Display,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let res = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .map_err(|e| e.to_string())?;
    let status = res.status();
    tokio::time::timeout(BOUND, res.into_body().collect())
        .await
        .expect("bounded")
        .map_err(|e| e.to_string())?;
    Ok(status)
}

#[tokio::test]
async fn a_retry_policy_given_to_the_stack_keeps_the_stacks_prefetch() {
    let server = FaultServer::start().await.expect("fault server");
    let stack = Stack::builder()
        .retry_policy(RetryPolicy::builder().max_retries(2))
        .build()
        .expect("a valid stack");
    assert_eq!(
        stack.retry_policy().prefetch_cap(),
        Some(sturdy::DEFAULT_PREFETCH)
    );
    assert_eq!(stack.retry_policy().max_retries(), 2);
    // So a JSON answer cut mid-body is read before it is handed over, and
    // retried: the caller sees one clean answer.
    let svc = stack.layer(client());
    let mut req = chat(&server.base_url(), "cut", "reset, 200", false);
    req.extensions_mut().insert(RetrySafe);
    assert_eq!(call(svc, req).await, Ok(http::StatusCode::OK));
    let s = stack.recorder().snapshot();
    assert_eq!(s.count(Scope::Call, "ok", Reach::Acknowledged), 1);
    assert_eq!(s.retries().get("response_body"), Some(&1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_queue_between_the_call_metrics_and_the_workload_layer_keeps_the_classifiers_workload() {
    let server = FaultServer::start().await.expect("fault server");
    let rec = SnapshotRecorder::new();
    let workloads = WorkloadTimeoutLayer::builder()
        .classify_with(|head| {
            head.uri
                .path()
                .ends_with("/chat/completions")
                .then_some(Workload::Agentic)
        })
        .build()
        .expect("valid profiles");
    // The call metrics hand the request to a queue: the workload layer
    // settles the workload only when the queue's worker calls it.
    let svc = ServiceBuilder::new()
        .layer(FailureMetricsLayer::calls(rec.clone()))
        .buffer(8)
        .layer(workloads)
        .map_request(|r: Req| r.map(sturdy::boxed))
        .service(client());
    let req = chat(&server.base_url(), "", "", false);
    assert_eq!(call(svc, req).await, Ok(http::StatusCode::OK));
    let s = rec.snapshot();
    assert_eq!(
        s.by_workload(Scope::Call, Workload::Agentic, Reach::Acknowledged),
        1
    );
    assert_eq!(
        s.by_workload(Scope::Call, Workload::Interactive, Reach::Acknowledged),
        0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_user_classifiers_verdict_is_the_attempts_outcome_and_the_retry_reason() {
    let server = FaultServer::start().await.expect("fault server");
    let mut registry = Registry::default();
    let snap = SnapshotRecorder::new();
    // This API marks a 200 that should be tried again with
    // `x-should-retry: true`; the tables read hints only from failures, so
    // the user's classifier says so.
    let policy = quick_retry()
        .max_retries(1)
        .classifier(|a: Answer<'_>| match a {
            Answer::Response(s, h)
                if s == http::StatusCode::OK
                    && h.get("x-should-retry").is_some_and(|v| v == "true") =>
            {
                Some(Verdict::Retryable)
            }
            _ => None,
        });
    let stack = Stack::builder()
        .recorder(Both(PrometheusRecorder::new(&mut registry), snap.clone()))
        .retry_policy(policy)
        .build()
        .expect("a valid stack");
    let svc = stack.layer(client());
    let req = chat(
        &server.base_url(),
        "overloaded",
        "200;x-should-retry=true, 200",
        false,
    );
    assert_eq!(call(svc, req).await, Ok(http::StatusCode::OK));
    let text = encode(&registry);
    let attempts = |outcome: &str| {
        value(
            &text,
            "http_client_request_duration_seconds_count",
            &[("outcome", outcome)],
        )
    };
    // The first attempt failed by the user's word, and that failure is the
    // retry's reason: the same label in both places.
    assert_eq!((attempts("200"), attempts("ok")), (1.0, 1.0), "{text}");
    assert_eq!(
        value(&text, "sturdy_client_retries_total", &[("reason", "200")]),
        1.0,
        "{text}"
    );
    let s = snap.snapshot();
    assert_eq!(s.count(Scope::Attempt, "200", Reach::Acknowledged), 1);
    assert_eq!(s.retries().get("200"), Some(&1));
    server.shutdown().await;
}

#[tokio::test]
async fn possibly_duplicated_means_one_thing_in_the_context_the_snapshot_and_prometheus() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let mut registry = Registry::default();
    let snap = SnapshotRecorder::new();
    let stack = Stack::builder()
        .recorder(Both(PrometheusRecorder::new(&mut registry), snap.clone()))
        .retry_policy(quick_retry())
        .build()
        .expect("a valid stack");
    // Each request's first attempt is cut after the server read it
    // (unknown reach), the second answers.
    let marked = {
        let mut r = chat(&url, "marked", "close, 200", false);
        r.extensions_mut().insert(RetrySafe);
        r
    };
    let keyed = {
        let mut r = chat(&url, "keyed", "close, 200", false);
        r.headers_mut()
            .insert("idempotency-key", http::HeaderValue::from_static("k-1"));
        r
    };
    let get = http::Request::get(format!("{url}/v1/models"))
        .header(sturdy_faults::CALL_HEADER, "get")
        .header(sturdy_faults::FAULT_HEADER, "close, 200")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a valid request");
    let mut total = 0;
    for (mut req, duplicated) in [(marked, 1), (keyed, 0), (get, 0)] {
        let ctx = CallContext::attach(&mut req);
        let svc = stack.layer(client());
        assert_eq!(call(svc, req).await, Ok(http::StatusCode::OK));
        assert_eq!((ctx.retries(), ctx.possibly_duplicated()), (1, duplicated));
        total += duplicated;
    }
    assert_eq!(snap.snapshot().possibly_duplicated(), u64::from(total));
    let text = encode(&registry);
    assert_eq!(
        value(&text, "sturdy_client_possibly_duplicated_total", &[]),
        f64::from(total)
    );
    // The exposition says what it counts, in the words the code defines it
    // with: keyed requests are not counted.
    assert!(
        text.contains(Safety::POSSIBLY_DUPLICATED),
        "the help text is the definition:\n{text}"
    );
    assert!(Safety::POSSIBLY_DUPLICATED.contains("idempotency key"));
    server.shutdown().await;
}

/// A resolver that never answers: connecting stalls before anything is sent.
fn silent_resolver() -> impl tower::Service<
    sturdy::Name,
    Response = std::vec::IntoIter<std::net::SocketAddr>,
    Error = std::convert::Infallible,
    Future = std::future::Pending<
        Result<std::vec::IntoIter<std::net::SocketAddr>, std::convert::Infallible>,
    >,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_: sturdy::Name| std::future::pending())
}

#[tokio::test]
async fn the_stack_tells_a_timeout_before_the_connection_from_one_after_the_request_went_out() {
    let server = FaultServer::start().await.expect("fault server");
    let profile = sturdy::Profile {
        ready: Duration::from_secs(1),
        headers: Duration::from_millis(200),
        read: Duration::from_secs(5),
        total: Duration::from_secs(8),
    };
    let stack = Stack::builder()
        .profile(Workload::Interactive, profile)
        .retry_policy(quick_retry().max_retries(0))
        .build()
        .expect("a valid stack");
    // Connecting never ends: the request never left.
    let stalled = sturdy::client()
        .no_proxy()
        .resolver(silent_resolver())
        .connect_timeout(Duration::from_secs(30))
        .build()
        .expect("a valid client");
    let req = chat("http://sturdy-never-resolves.test:8080", "", "", false);
    assert!(call(stack.layer(stalled), req).await.is_err());
    // The server took the request and is slow to answer, over HTTP/1.1 and
    // HTTP/2: it was sent.
    for h2 in [false, true] {
        let client = sturdy::client()
            .no_proxy()
            .http2_only(h2)
            .build()
            .expect("a valid client");
        let req = chat(
            &server.base_url(),
            &format!("slow-{h2}"),
            "delay;ms=3000",
            false,
        );
        assert!(call(stack.layer(client), req).await.is_err());
    }
    let s = stack.recorder().snapshot();
    assert_eq!(
        s.count(Scope::Attempt, "connect_timeout", Reach::NotSent),
        1,
        "{s:?}"
    );
    assert_eq!(
        s.count(Scope::Attempt, "headers_timeout", Reach::Unknown),
        2,
        "{s:?}"
    );
    assert_eq!(server.dashboard().received, 2);
    server.shutdown().await;
}
