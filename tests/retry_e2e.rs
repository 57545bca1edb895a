//! End-to-end retry tests: `sturdy::client()` + `RetryLayer` against the
//! real fault server on loopback, with per-call fault scripts and
//! millisecond backoff. No paused time here: real sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use sturdy::retry::{Backoff, BudgetConfig, RetryError, RetryLayer, RetryPolicy};
use sturdy::{CallContext, FailureKind, RetrySafe};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tower::{Layer, Service, ServiceExt};

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

fn chat(url: &str, call: &str, script: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header(CALL_HEADER, call)
        .header(FAULT_HEADER, script)
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

fn models(url: &str, call: &str, script: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{url}/v1/models"))
        .header(CALL_HEADER, call)
        .header(FAULT_HEADER, script)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn retries_503_503_then_succeeds_in_three_attempts() {
    let server = FaultServer::start().await.unwrap();
    let svc = RetryLayer::new(quick().build().unwrap()).layer(client());
    let mut req = chat(&server.base_url(), "c1", "503, 503, 200");
    let ctx = CallContext::attach(&mut req);
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(json.get("choices").is_some(), "{json}");
    assert_eq!(ctx.attempts(), 3);
    let dash = server.dashboard();
    assert_eq!(dash.received, 3);
    assert_eq!((dash.responded(503), dash.responded(200)), (2, 1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_429_with_retry_after_ms_waits_at_least_that_long() {
    let server = FaultServer::start().await.unwrap();
    let svc = RetryLayer::new(quick().build().unwrap()).layer(client());
    let req = chat(&server.base_url(), "c2", "429;retry-after-ms=200, 200");
    let start = Instant::now();
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .unwrap()
        .unwrap();
    let waited = start.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert_eq!(server.dashboard().received, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_400_is_returned_after_one_attempt() {
    let server = FaultServer::start().await.unwrap();
    let svc = RetryLayer::new(quick().build().unwrap()).layer(client());
    let req = chat(&server.base_url(), "c3", "400, 200");
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.dashboard().received, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_closed_post_is_not_retried_unless_marked_retry_safe() {
    let server = FaultServer::start().await.unwrap();
    let layer = RetryLayer::new(quick().build().unwrap());

    let req = chat(&server.base_url(), "c4", "close, 200");
    let err = tokio::time::timeout(BOUND, layer.layer(client()).oneshot(req))
        .await
        .unwrap()
        .unwrap_err();
    let err = err.downcast::<RetryError>().unwrap();
    assert_eq!(err.attempts(), 1);
    assert_eq!(
        err.failure().reach(),
        sturdy::Reach::Unknown,
        "{:?}",
        err.failure()
    );
    assert_eq!(server.dashboard().received, 1);

    let mut req = chat(&server.base_url(), "c5", "close, 200");
    req.extensions_mut().insert(RetrySafe);
    let ctx = CallContext::attach(&mut req);
    let resp = tokio::time::timeout(BOUND, layer.layer(client()).oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(ctx.attempts(), 2);
    assert_eq!(ctx.possibly_duplicated(), 1);
    assert_eq!(server.dashboard().received, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_port_is_retried_as_not_sent() {
    // A port nobody listens on: bind, note it, let it go.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let svc = RetryLayer::new(quick().max_retries(3).build().unwrap()).layer(client());
    let mut req = chat(&format!("http://127.0.0.1:{port}"), "c6", "200");
    let ctx = CallContext::attach(&mut req);
    let err = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .unwrap()
        .unwrap_err();
    let err = err.downcast::<RetryError>().unwrap();
    assert_eq!(
        err.attempts(),
        4,
        "a POST, retried because it was never sent"
    );
    assert_eq!(err.failure(), FailureKind::ConnectRefused);
    assert_eq!(ctx.retry_reasons(), vec![FailureKind::ConnectRefused; 3]);
    assert_eq!(ctx.possibly_duplicated(), 0);
}

#[tokio::test]
async fn a_response_reset_mid_body_is_retried_when_prefetch_allows() {
    let server = FaultServer::start().await.unwrap();
    let url = server.base_url();

    let prefetch = RetryLayer::new(quick().prefetch_up_to(64 * 1024).build().unwrap());
    let resp = tokio::time::timeout(
        BOUND,
        prefetch
            .layer(client())
            .oneshot(models(&url, "c7", "reset, 200")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.body().is_buffered());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    assert_eq!(server.dashboard().received, 2);

    // Without prefetch the caller gets the head, then a broken body.
    let bare = RetryLayer::new(quick().build().unwrap());
    let resp = tokio::time::timeout(
        BOUND,
        bare.layer(client())
            .oneshot(models(&url, "c8", "reset, 200")),
    )
    .await
    .unwrap()
    .unwrap();
    let read = tokio::time::timeout(BOUND, resp.into_body().collect())
        .await
        .unwrap();
    assert!(read.is_err());
    assert_eq!(server.dashboard().received, 3);
    server.shutdown().await;
}

/// Sends 1 000 concurrent always-503 calls; returns the attempts the
/// server received.
async fn storm(policy: RetryPolicy) -> u64 {
    let server = FaultServer::start().await.unwrap();
    let url = server.base_url();
    let svc = RetryLayer::new(policy).layer(
        sturdy::client()
            .no_proxy()
            .http2_only(true)
            .build()
            .expect("a valid client"),
    );
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let mut svc = svc.clone();
        let req = chat(&url, &format!("storm-{i}"), "503");
        let ok = ok.clone();
        // `call` rather than `oneshot`: tower's Oneshot future trips a rustc
        // limitation on `Send` with boxed-error bodies when spawned.
        let call = ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(req);
        tasks.push(tokio::spawn(async move {
            if let Ok(resp) = call.await
                && resp.status() == StatusCode::SERVICE_UNAVAILABLE
            {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(BOUND, t).await.unwrap().unwrap();
    }
    assert_eq!(
        ok.load(Ordering::Relaxed),
        1000,
        "every call ends with the 503"
    );
    let received = server.dashboard().received;
    server.shutdown().await;
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_budget_bounds_a_storm_of_503s() {
    let with_budget = storm(
        quick()
            .max_retries(5)
            .budget(BudgetConfig::default())
            .build()
            .unwrap(),
    )
    .await;
    let without = storm(quick().max_retries(5).no_budget().build().unwrap()).await;
    println!(
        "1000 calls, all 503, max_retries 5: {with_budget} attempts with the default budget, {without} without"
    );
    assert!((1000..=1300).contains(&with_budget), "{with_budget}");
    assert_eq!(without, 6000);
}
