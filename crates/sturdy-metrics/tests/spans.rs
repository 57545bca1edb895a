//! The spans of the layer over fake inner services: which span each scope
//! makes (or adopts from the retry layer above), what it records and when,
//! when it ends, and that an inner service's events nest in it.
//!
//! Captured by the binary's global subscriber (`capture/mod.rs`); the
//! tests take turns.

mod capture;

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use sturdy_core::span::{AttemptSpan, attempt_span};
use sturdy_metrics::{FailureMetricsLayer, SnapshotRecorder};
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceExt};

use capture::{SpanRec, Store, capture};

/// A response body fed frame by frame from a channel.
struct ChanBody(mpsc::Receiver<Result<Frame<Bytes>, io::Error>>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx)
    }
}

const SECRET: &str = "sk-unit-canary";

fn req() -> http::Request<Empty<Bytes>> {
    http::Request::post("http://user:sk-unit-canary@127.0.0.1:9/v1/chat?key=sk-unit-canary")
        .header("authorization", "Bearer sk-unit-canary")
        .header("api-key", SECRET)
        .body(Empty::new())
        .unwrap()
}

fn named<'a>(store: &'a Store, name: &str) -> Vec<(usize, &'a SpanRec)> {
    store
        .spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == name)
        .collect()
}

fn field<'a>(span: &'a SpanRec, name: &str) -> Option<&'a str> {
    span.fields.get(name).map(String::as_str)
}

fn no_secret(store: &Store) {
    let text = format!("{:#?}\n{:#?}", store.spans, store.events);
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn the_call_span_is_entered_while_polled_and_ends_with_the_body() {
    let (capture, _turn) = capture().await;
    let (tx, rx) = mpsc::channel(4);
    let body = Mutex::new(Some(ChanBody(rx)));
    let inner = tower::service_fn(move |_req: http::Request<Empty<Bytes>>| {
        let body = body.lock().unwrap().take().unwrap();
        async move {
            tracing::info!("inside the inner future");
            Ok::<_, io::Error>(http::Response::new(body))
        }
    });
    let svc = FailureMetricsLayer::calls(SnapshotRecorder::new()).layer(inner);
    let res = svc.oneshot(req()).await.unwrap();
    {
        let store = capture.0.lock().unwrap();
        let calls: Vec<_> = store
            .spans
            .iter()
            .filter(|s| s.name == "sturdy.call")
            .collect();
        assert_eq!(calls.len(), 1);
        assert!(!calls[0].closed, "open until the body ends");
        assert_eq!(field(calls[0], "http.response.status_code"), Some("200"));
        assert_eq!(field(calls[0], "sturdy.outcome"), None);
    }
    tx.send(Ok(Frame::data(Bytes::from_static(b"hi"))))
        .await
        .unwrap();
    drop(tx);
    res.into_body().collect().await.unwrap();

    let store = capture.take();
    let calls = named(&store, "sturdy.call");
    let (index, call) = calls[0];
    assert!(call.closed);
    for (name, value) in [
        ("http.request.method", "POST"),
        ("server.address", "127.0.0.1"),
        ("server.port", "9"),
        ("url.full", "http://127.0.0.1:9/v1/chat"),
        ("sturdy.outcome", "ok"),
        ("sturdy.reach", "acknowledged"),
        ("sturdy.workload", "interactive"),
        ("sturdy.attempts", "1"),
    ] {
        assert_eq!(field(call, name), Some(value), "{name}: {call:#?}");
    }
    assert_eq!(field(call, "error.type"), None);
    let inside = store
        .events
        .iter()
        .find(|e| e.fields.get("message").map(String::as_str) == Some("inside the inner future"))
        .unwrap();
    assert_eq!(
        (inside.span, inside.target.as_str()),
        (Some(index), "spans")
    );
    assert_eq!(call.target, "sturdy");
    no_secret(&store);
}

#[tokio::test]
async fn an_attempt_span_of_its_own_records_the_failure_and_nests_in_the_call() {
    let (capture, _turn) = capture().await;
    let inner = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Err::<http::Response<Empty<Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
    });
    let rec = SnapshotRecorder::new();
    let svc = FailureMetricsLayer::calls(rec.clone())
        .layer(FailureMetricsLayer::attempts(rec).layer(inner));
    assert!(svc.oneshot(req()).await.is_err());

    let store = capture.take();
    let calls = named(&store, "sturdy.call");
    let attempts = named(&store, "sturdy.attempt");
    assert_eq!((calls.len(), attempts.len()), (1, 1), "{:#?}", store.spans);
    let (attempt, call) = (attempts[0].1, calls[0].1);
    assert_eq!(attempt.parent, Some(calls[0].0));
    for span in [attempt, call] {
        assert!(span.closed);
        assert_eq!(field(span, "error.type"), Some("connect_refused"));
        assert_eq!(field(span, "sturdy.reach"), Some("not_sent"));
        assert_eq!(field(span, "otel.status_code"), Some("ERROR"));
        assert_eq!(field(span, "http.response.status_code"), None);
    }
    assert_eq!(field(attempt, "otel.kind"), Some("client"));
    assert_eq!(field(attempt, "http.request.resend_count"), None);
    no_secret(&store);
}

#[tokio::test]
async fn the_attempt_scope_adopts_the_span_handed_down_and_takes_it_out_of_the_request() {
    let (capture, _turn) = capture().await;
    let inner = tower::service_fn(|req: http::Request<Empty<Bytes>>| async move {
        assert!(req.extensions().get::<AttemptSpan>().is_none());
        Ok::<_, io::Error>(
            http::Response::builder()
                .status(503)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
    });
    let svc = FailureMetricsLayer::attempts(SnapshotRecorder::new()).layer(inner);
    let mut req = req();
    let span = attempt_span(2);
    req.extensions_mut().insert(AttemptSpan(span.clone()));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    drop(res);
    {
        let store = capture.0.lock().unwrap();
        let attempts: Vec<_> = store
            .spans
            .iter()
            .filter(|s| s.name == "sturdy.attempt")
            .collect();
        assert_eq!(attempts.len(), 1, "no second span");
        assert!(!attempts[0].closed, "the layer above still holds it");
    }
    drop(span);
    let store = capture.take();
    let (_, attempt) = named(&store, "sturdy.attempt")[0];
    assert!(attempt.closed);
    for (name, value) in [
        ("http.request.resend_count", "2"),
        ("http.response.status_code", "503"),
        ("error.type", "503"),
        ("sturdy.reach", "acknowledged"),
        ("url.full", "http://127.0.0.1:9/v1/chat"),
    ] {
        assert_eq!(field(attempt, name), Some(value), "{name}: {attempt:#?}");
    }
    no_secret(&store);
}

#[tokio::test]
async fn a_future_dropped_unpolled_ends_its_span_as_cancelled_not_sent() {
    let (capture, _turn) = capture().await;
    let inner = tower::service_fn(|_req: http::Request<Empty<Bytes>>| async {
        Ok::<_, io::Error>(http::Response::new(Empty::<Bytes>::new()))
    });
    let mut svc = FailureMetricsLayer::calls(SnapshotRecorder::new()).layer(inner);
    let fut = svc.ready().await.unwrap().call(req());
    drop(fut);
    let store = capture.take();
    let (_, call) = named(&store, "sturdy.call")[0];
    assert!(call.closed);
    assert_eq!(field(call, "error.type"), Some("cancelled"));
    assert_eq!(field(call, "sturdy.reach"), Some("not_sent"));
}
