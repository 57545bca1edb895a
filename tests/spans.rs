//! The `tracing` spans of the shipped stack, over `sturdy::client()` against
//! the fault server on loopback: one `sturdy.call` per call, one
//! `sturdy.attempt` per attempt under it, OpenTelemetry's fields, the retry
//! decisions as events of the attempt that failed, and no secret anywhere.
//!
//! The capturing subscriber of sturdy-metrics' span tests keeps every span
//! (name, parent, fields as recorded) and every event (of every target,
//! hyper's included) at TRACE, as the process's global subscriber; the
//! tests take turns.

#[path = "../crates/sturdy-metrics/tests/capture/mod.rs"]
mod capture;
mod metrics_support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics_support::{Req, chat, quick_retry};
use sturdy::{RetrySafe, Stack};
use sturdy_faults::FaultServer;
use tower::{Layer, Service, ServiceExt};

use capture::{EventRec, SpanRec, capture};

const BOUND: Duration = Duration::from_secs(10);

/// Sends `req` through `svc` and reads the whole answer; returns the
/// status, if one came.
async fn send<S, B>(svc: &mut S, req: Req) -> Option<http::StatusCode>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
{
    let fut = ServiceExt::<Req>::ready(svc)
        .await
        .expect("ready")
        .call(req);
    match tokio::time::timeout(BOUND, fut).await.expect("bounded") {
        Ok(res) => {
            let status = res.status();
            let _ = tokio::time::timeout(BOUND, res.into_body().collect())
                .await
                .expect("bounded");
            Some(status)
        }
        Err(_) => None,
    }
}

fn field<'a>(span: &'a SpanRec, name: &str) -> Option<&'a str> {
    span.fields.get(name).map(String::as_str)
}

#[tokio::test]
async fn one_call_span_and_one_attempt_span_per_attempt_with_the_retry_decisions() {
    let (capture, _turn) = capture().await;
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let port = url.rsplit(':').next().unwrap().to_owned();
    let stack = Stack::builder()
        .retry_policy(quick_retry())
        .build()
        .expect("a valid stack");
    let mut svc = stack.layer(sturdy::client().no_proxy().build().expect("a valid client"));
    let req = chat(&url, "spans", "503;retry-after-ms=1, 503, 200", false);
    assert_eq!(send(&mut svc, req).await, Some(http::StatusCode::OK));
    let store = capture.take();

    let calls: Vec<usize> = (0..store.spans.len())
        .filter(|&i| store.spans[i].name == "sturdy.call")
        .collect();
    let attempts: Vec<usize> = (0..store.spans.len())
        .filter(|&i| store.spans[i].name == "sturdy.attempt")
        .collect();
    assert_eq!(calls.len(), 1, "{:#?}", store.spans);
    assert_eq!(attempts.len(), 3, "{:#?}", store.spans);
    let call = &store.spans[calls[0]];
    assert!(call.closed, "the call span ends with the body: {call:#?}");
    assert_eq!(call.target, "sturdy");
    for (name, value) in [
        ("http.request.method", "POST"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("http.response.status_code", "200"),
        ("sturdy.outcome", "ok"),
        ("sturdy.reach", "acknowledged"),
        ("sturdy.workload", "interactive"),
        ("sturdy.attempts", "3"),
    ] {
        assert_eq!(field(call, name), Some(value), "{name}: {call:#?}");
    }
    let full = format!("{url}/v1/chat/completions");
    assert_eq!(field(call, "url.full"), Some(full.as_str()));
    assert_eq!(field(call, "error.type"), None);

    for (n, &i) in attempts.iter().enumerate() {
        let attempt = &store.spans[i];
        assert_eq!(attempt.parent, Some(calls[0]), "{attempt:#?}");
        assert!(attempt.closed, "{attempt:#?}");
        let resend = (n > 0).then(|| n.to_string());
        assert_eq!(
            field(attempt, "http.request.resend_count"),
            resend.as_deref(),
            "{attempt:#?}"
        );
        let (status, error, outcome) = match n {
            2 => ("200", None, "ok"),
            _ => ("503", Some("503"), "503"),
        };
        assert_eq!(field(attempt, "http.response.status_code"), Some(status));
        assert_eq!(field(attempt, "error.type"), error, "{attempt:#?}");
        assert_eq!(field(attempt, "sturdy.outcome"), Some(outcome));
        assert_eq!(field(attempt, "sturdy.reach"), Some("acknowledged"));
        assert_eq!(field(attempt, "sturdy.workload"), Some("interactive"));
        assert_eq!(field(attempt, "http.request.method"), Some("POST"));
        assert_eq!(field(attempt, "url.full"), Some(full.as_str()));
        assert_eq!(field(attempt, "otel.kind"), Some("client"));
    }

    // The decisions: an event inside each failed attempt's span.
    let retrying: Vec<&EventRec> = store
        .events
        .iter()
        .filter(|e| e.fields.get("message").map(String::as_str) == Some("retrying"))
        .collect();
    assert_eq!(retrying.len(), 2, "{:#?}", store.events);
    for (n, event) in retrying.iter().enumerate() {
        assert_eq!(event.span, Some(attempts[n]), "{event:#?}");
        assert_eq!(event.fields["reason"], "503");
        assert_eq!(event.fields["attempt"], (n + 1).to_string());
    }
    assert_eq!(retrying[0].fields["hint_used"], "true");
    assert_eq!(retrying[0].fields["delay_ms"], "1");
    assert_eq!(retrying[1].fields["hint_used"], "false");
    // The client's own events, below, nest in the attempts.
    assert!(
        store
            .events
            .iter()
            .any(|e| e.target.starts_with("hyper") && e.span.is_some_and(|s| attempts.contains(&s))),
        "{:#?}",
        store.events
    );
    // The metrics' own outcome events sit in the span they end.
    let outcomes = store
        .events
        .iter()
        .filter(|e| e.fields.get("message").map(String::as_str) == Some("sturdy-metrics outcome"));
    assert_eq!(
        outcomes
            .clone()
            .filter(|e| e.span == Some(calls[0]))
            .count(),
        1
    );
    for &i in &attempts {
        assert_eq!(outcomes.clone().filter(|e| e.span == Some(i)).count(), 1);
    }
    server.shutdown().await;
}

const CANARY: &str = "sk-canary";

#[tokio::test]
async fn no_secret_reaches_a_span_field_or_an_event() {
    let (capture, _turn) = capture().await;
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let stack = Stack::builder()
        .retry_policy(quick_retry())
        .build()
        .expect("a valid stack");
    let mut svc = stack.layer(sturdy::client().no_proxy().build().expect("a valid client"));

    let with_userinfo = url.replacen("http://", &format!("http://user:{CANARY}@"), 1);
    let mut answered = 0;
    for (n, (base, query)) in [
        (url.as_str(), ""),
        (url.as_str(), "?key=sk-canary"),
        (with_userinfo.as_str(), ""),
    ]
    .into_iter()
    .enumerate()
    {
        let mut req = chat(base, &format!("canary-{n}"), "503, close, 200", false);
        *req.uri_mut() = format!("{base}/v1/chat/completions{query}")
            .parse()
            .unwrap();
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer sk-canary"),
        );
        req.headers_mut()
            .insert("api-key", http::HeaderValue::from_static(CANARY));
        *req.body_mut() = Full::new(Bytes::from(format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{CANARY}"}}]}}"#
        )));
        req.extensions_mut().insert(RetrySafe);
        if send(&mut svc, req).await == Some(http::StatusCode::OK) {
            answered += 1;
        }
    }
    let store = capture.take();

    // The checks could fail: the calls went through, with retries.
    assert_eq!(answered, 3, "user information in the URI included");
    let calls = store
        .spans
        .iter()
        .filter(|s| s.name == "sturdy.call")
        .count();
    let attempts = store.spans.iter().filter(|s| s.name == "sturdy.attempt");
    assert_eq!(calls, 3);
    assert!(attempts.clone().count() >= 9, "{:#?}", store.spans);
    assert!(store.events.iter().any(|e| e.target.starts_with("sturdy")));
    for span in &store.spans {
        if let Some(url) = field(span, "url.full") {
            assert!(!url.contains(['?', '@', '#']), "{span:#?}");
        }
    }
    // sturdy's spans and events: never a secret.
    let ours: Vec<&EventRec> = store
        .events
        .iter()
        .filter(|e| e.target.starts_with("sturdy"))
        .collect();
    let text = format!("{:#?}\n{ours:#?}", store.spans);
    assert!(
        !text.contains(CANARY),
        "a secret reached a span or an event:\n{text}"
    );
    // Every event of every target: no header value, query or body either.
    // The one exception is not sturdy's: hyper-util's connection pool logs
    // its pool key, user information included (DEBUG/TRACE events of
    // `hyper_util::client::legacy`), when a URI carries one.
    for event in &store.events {
        let text = format!("{event:?}");
        let userinfo = format!("user:{CANARY}@");
        let leaked = if event.target.starts_with("hyper_util::client::legacy") {
            text.replace(&userinfo, "").contains(CANARY)
        } else {
            text.contains(CANARY)
        };
        assert!(!leaked, "a secret reached an event: {event:#?}");
    }
    server.shutdown().await;
}
