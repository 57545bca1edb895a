//! Hostile response heads: thousands of headers, `retry-after` given twice
//! with values that disagree, non-ASCII and oversized hint values. Nothing
//! panics, work stays bounded, and sturdy does what its docs say:
//!
//! - a hint header given twice, longer than `MAX_HINT_VALUE_LEN` or not text
//!   is ignored, and the status table and backoff decide;
//! - a head hyper will not parse (over 100 headers on HTTP/1, over 16 KiB on
//!   HTTP/2) fails the attempt as `malformed_response`, reach `unknown`:
//!   repeated only where a repeat is safe, recorded once.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use sturdy::core::MAX_HINT_VALUE_LEN;
use sturdy::metrics::Scope;
use sturdy::retry::RetryError;
use sturdy::{BoxBody, CallContext, FailureKind, Reach, RetrySafe, ServerHints, Stack};
use sturdy_faults::FaultServer;
use tower::{Layer, ServiceExt};

const BOUND: Duration = Duration::from_secs(30);

mod metrics_support;

/// A scripted, non-streamed chat completion.
fn chat(url: &str, call: &str, script: &str) -> Request<Full<Bytes>> {
    metrics_support::chat(url, call, script, false)
}

/// Millisecond backoff, and a hint cap that any hint in the hostile head
/// (1 s or 3600 s, were either read) exceeds: reading one would end the call
/// with its 503 at once.
fn stack() -> Stack {
    Stack::builder()
        .retry_policy(metrics_support::quick_retry().hint_cap(Duration::from_millis(500)))
        .build()
        .expect("a valid stack")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_and_garbage_hints_over_the_wire_are_ignored() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();

    // What the head looks like to a plain client.
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let req = chat(&url, "look", "hostile;headers=0").map(sturdy::boxed);
    let resp = client.request(req).await.expect("a response");
    assert_eq!(resp.status(), 503);
    let h = resp.headers();
    assert_eq!(h.get_all("retry-after").iter().count(), 2);
    assert!(h["x-should-retry"].len() > MAX_HINT_VALUE_LEN);
    assert!(h["retry-after-ms"].to_str().is_err(), "not text");
    assert_eq!(
        ServerHints::from_headers(h, SystemTime::now()),
        ServerHints::default(),
        "every hint in it is garbage"
    );

    // Through the stack: the 503 is retried with sturdy's own backoff.
    let stack = stack();
    let svc = stack.layer(client);
    let mut req = chat(&url, "retry", "hostile;headers=0, 200");
    let ctx = CallContext::attach(&mut req);
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .expect("a response");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.expect("the body");
    assert_eq!(
        ctx.retry_reasons(),
        vec![FailureKind::Status(http::StatusCode::SERVICE_UNAVAILABLE)]
    );
    assert_eq!(server.dashboard().faults("hostile"), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_headers_are_a_malformed_response_on_http1_and_http2() {
    for http2 in [false, true] {
        let server = FaultServer::start().await.expect("fault server");
        let url = server.base_url();
        let stack = stack();
        let client = sturdy::client()
            .no_proxy()
            .http2_only(http2)
            .build()
            .expect("a valid client");
        let svc = stack.layer(client);

        // Not safe to repeat: the server saw it, and what it said is unknown.
        let req = chat(&url, "plain", "hostile, 200");
        let err = tokio::time::timeout(BOUND, svc.clone().oneshot(req))
            .await
            .expect("bounded")
            .expect_err("an unreadable head");
        let retry = err.downcast_ref::<RetryError>().expect("a retry error");
        // HTTP/1: hyper's parser gives up past 100 headers; HTTP/2: the
        // header block is over h2's 16 KiB, and h2 closes the connection.
        let kind = retry.failure();
        assert_eq!(kind, FailureKind::MalformedResponse, "h2: {http2}");
        assert_eq!((retry.attempts(), kind.reach()), (1, Reach::Unknown));

        // Marked safe: repeated, and the repeat is answered.
        let mut req = chat(&url, "safe", "hostile, 200");
        req.extensions_mut().insert(RetrySafe);
        let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
            .await
            .expect("bounded")
            .expect("the repeat's answer");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("the body");

        let s = stack.recorder().snapshot();
        assert_eq!(s.started(Scope::Call), 2);
        assert_eq!(s.started(Scope::Attempt), 3);
        assert_eq!(s.count(Scope::Call, kind.label(), Reach::Unknown), 1);
        assert_eq!(s.count(Scope::Attempt, kind.label(), Reach::Unknown), 2);
        for scope in Scope::ALL {
            assert_eq!(s.in_flight(scope), 0, "{scope}");
        }
        // The server produced both hostile heads; none reached a caller.
        let d = server.dashboard();
        assert_eq!((d.received, d.responded(503)), (3, 2), "h2: {http2}");
        server.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_hand_written_service_with_a_monstrous_head_is_judged_by_the_table() {
    // No client limits here: ten thousand headers, five thousand of them
    // `retry-after`, and megabyte values, straight from a service.
    let megabyte = HeaderValue::from_str(&"9".repeat(1 << 20)).expect("a valid value");
    let mut head = http::HeaderMap::new();
    for i in 0..5_000 {
        let name = HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).expect("a name");
        head.append(name, HeaderValue::from_static("junk"));
        head.append("retry-after", HeaderValue::from_static("3600"));
    }
    head.insert("retry-after-ms", megabyte.clone());
    head.insert("x-should-retry", megabyte);
    let head = Arc::new(head);
    let answered = Arc::new(AtomicU32::new(0));
    let inner = tower::service_fn({
        let (head, answered) = (head.clone(), answered.clone());
        move |_req: Request<BoxBody>| {
            let n = answered.fetch_add(1, Ordering::Relaxed);
            let mut resp = http::Response::new(Full::new(Bytes::from_static(b"{}")));
            if n == 0 {
                *resp.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                *resp.headers_mut() = (*head).clone();
            }
            async move { Ok::<_, Infallible>(resp) }
        }
    });
    let stack = stack();
    let mut req = Request::post("http://in-memory.test/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a valid request");
    let ctx = CallContext::attach(&mut req);
    let resp = stack.layer(inner).oneshot(req).await.expect("a response");
    assert_eq!(resp.status(), 200);
    // Retried after the table's backoff: no hint was honoured.
    assert_eq!(answered.load(Ordering::Relaxed), 2);
    assert_eq!(
        ctx.retry_reasons(),
        vec![FailureKind::Status(http::StatusCode::TOO_MANY_REQUESTS)]
    );
    let s = stack.recorder().snapshot();
    assert_eq!((s.started(Scope::Call), s.started(Scope::Attempt)), (1, 2));
    assert_eq!(s.count(Scope::Attempt, "429", Reach::Acknowledged), 1);
}
