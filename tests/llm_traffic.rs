//! LLM traffic as it really fails, on loopback against the fault server:
//! long prompts, streams that die before their first token, quota errors,
//! the overload family, errors inside a stream.

mod metrics_support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use metrics_support::*;
use prometheus_client::registry::Registry;
use sturdy::metrics::{Both, PrometheusRecorder, Scope, SnapshotRecorder};
use sturdy::{Profile, Reach, RetryRefusal, RetrySafe, Stack, Workload};
use sturdy_faults::{BodyDigest, CALL_HEADER, FAULT_HEADER, FaultServer, RECORD_HEADER};
use tower::{Layer, ServiceExt};

/// Every wait in this file is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// The stack with millisecond backoff and `read` at 300 ms (10x under the
/// stalls that must trip it).
fn stack(
    recorder: Both<PrometheusRecorder, SnapshotRecorder>,
) -> Stack<Both<PrometheusRecorder, SnapshotRecorder>> {
    let profile = Profile {
        ready: Duration::from_secs(1),
        headers: Duration::from_secs(5),
        read: Duration::from_millis(300),
        total: Duration::from_secs(8),
    };
    Stack::builder()
        .profiles(sturdy::Profiles::default())
        .profile(Workload::Interactive, profile)
        .profile(Workload::LongContext, profile)
        .recorder(recorder)
        .retry_policy(quick_retry())
        .build()
        .expect("a valid stack")
}

fn recorders() -> (
    Registry,
    SnapshotRecorder,
    Both<PrometheusRecorder, SnapshotRecorder>,
) {
    let mut registry = Registry::default();
    let snap = SnapshotRecorder::new();
    let both = Both(PrometheusRecorder::new(&mut registry), snap.clone());
    (registry, snap, both)
}

/// Reads a body to its end: the bytes, and the error that ended it early.
async fn read_all<B>(body: B) -> (Vec<u8>, Option<String>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(BOUND, body.frame())
            .await
            .expect("bounded")
        {
            None => return (seen, None),
            Some(Err(e)) => return (seen, Some(e.to_string())),
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    seen.extend_from_slice(d);
                }
            }
        }
    }
}

fn retry_safe(mut req: Req) -> Req {
    req.extensions_mut().insert(RetrySafe);
    req
}

#[tokio::test]
async fn a_one_megabyte_long_context_prompt_is_replayed_byte_for_byte() {
    let server = FaultServer::start().await.expect("fault server");
    let (_registry, snap, rec) = recorders();
    let svc = stack(rec).layer(client());
    // A long prompt: ~1 MB of JSON.
    let filler = "x".repeat(1 << 20);
    let prompt = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    let mut req = http::Request::post(format!("{}/v1/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .header(CALL_HEADER, "long")
        .header(FAULT_HEADER, "503, 200")
        .header(RECORD_HEADER, "1")
        .body(Full::new(Bytes::from(prompt.clone())))
        .expect("a valid request");
    req.extensions_mut().insert(Workload::LongContext);
    req.extensions_mut().insert(RetrySafe);
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    let _ = read_all(resp.into_body()).await;
    let sent = BodyDigest::of(prompt.as_bytes());
    assert_eq!(server.received_bodies("long"), vec![sent, sent]);
    let s = snap.snapshot();
    assert_eq!(s.started(Scope::Attempt), 2);
    assert_eq!(s.count(Scope::Call, "ok", Reach::Acknowledged), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_streamed_body_past_the_replay_cap_shows_why_it_was_not_retried() {
    let server = FaultServer::start().await.expect("fault server");
    let (registry, snap, rec) = recorders();
    let stack = Stack::builder()
        .recorder(rec)
        .retry_policy(quick_retry().replay_cap(1024))
        .build()
        .expect("a valid stack");
    let svc = stack.layer(client());
    // A body of unknown length: 8 chunks of 1 KiB, past the 1 KiB cap.
    let chunks = (0..8).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![b' '; 1024])))
    });
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let mut req = http::Request::post(format!("{}/v1/chat/completions", server.base_url()))
        .header(CALL_HEADER, "streamed")
        .header(FAULT_HEADER, "503, 200")
        .body(body)
        .expect("a valid request");
    req.extensions_mut().insert(RetrySafe);
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .expect("an answer");
    assert_eq!(
        resp.status(),
        503,
        "the 503 is the answer: the body is gone"
    );
    let _ = read_all(resp.into_body()).await;
    let s = snap.snapshot();
    assert_eq!(s.started(Scope::Attempt), 1);
    assert_eq!(s.retry_refusals(RetryRefusal::BodyNotReplayable), 1);
    let text = encode(&registry);
    assert_eq!(
        value(
            &text,
            "sturdy_client_retry_refusals_total",
            &[("reason", "body_not_replayable")]
        ),
        1.0,
        "{text}"
    );
    assert!(
        sturdy::metrics::Report::new(&s)
            .to_string()
            .contains("body_not_replayable 1")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_dies_before_its_first_token_is_retried_and_the_caller_sees_one_clean_stream()
{
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let (_registry, snap, rec) = recorders();
    let svc = stack(rec).layer(client());
    for (id, script) in [
        // Reset after the head, before any event.
        ("reset-early", "reset;at=0, 200"),
        // Silent past `read` (300 ms) after the head.
        ("stall-early", "stall;at=0;ms=3000, 200"),
    ] {
        let req = retry_safe(chat(&url, id, script, true));
        let resp = tokio::time::timeout(BOUND, svc.clone().oneshot(req))
            .await
            .expect("bounded")
            .expect("an answer");
        assert_eq!(resp.status(), 200);
        let (seen, err) = read_all(resp.into_body()).await;
        assert_eq!(err, None, "{id}: one clean stream");
        let text = String::from_utf8_lossy(&seen);
        assert!(text.ends_with("data: [DONE]\n\n"), "{id}: {text}");
        assert_eq!(text.matches("chat.completion.chunk").count(), 5, "{id}");
    }
    let s = snap.snapshot();
    assert_eq!(s.started(Scope::Attempt), 4);
    assert_eq!(s.count(Scope::Call, "ok", Reach::Acknowledged), 2);
    assert_eq!(s.retries().get("response_body"), Some(&1), "{s:?}");
    assert_eq!(s.retries().get("read_timeout"), Some(&1), "{s:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_after_its_first_token_is_never_retried() {
    let server = FaultServer::start().await.expect("fault server");
    let (_registry, snap, rec) = recorders();
    let svc = stack(rec).layer(client());
    let req = retry_safe(chat(&server.base_url(), "late", "reset;at=2, 200", true));
    let resp = tokio::time::timeout(BOUND, svc.oneshot(req))
        .await
        .expect("bounded")
        .expect("the head");
    let (seen, err) = read_all(resp.into_body()).await;
    assert!(err.is_some(), "the caller sees the cut");
    assert_eq!(
        String::from_utf8_lossy(&seen)
            .matches("chat.completion.chunk")
            .count(),
        2
    );
    let s = snap.snapshot();
    assert_eq!(s.started(Scope::Attempt), 1);
    assert_eq!(
        s.count(Scope::Call, "response_body", Reach::Acknowledged),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_dropped_after_its_done_line_is_complete_and_one_dropped_before_is_cancelled() {
    use http_body_util::BodyExt;
    let server = FaultServer::start().await.expect("fault server");
    let (_registry, snap, rec) = recorders();
    let svc = stack(rec).layer(client());
    for (id, stop_at_done) in [("done", true), ("early", false)] {
        let req = retry_safe(chat(&server.base_url(), id, "200;chunks=3", true));
        let resp = tokio::time::timeout(BOUND, svc.clone().oneshot(req))
            .await
            .expect("bounded")
            .expect("the head");
        // As OpenAI clients do: read until `data: [DONE]`, then let go.
        let mut body = resp.into_body();
        let mut seen = Vec::new();
        while let Some(frame) = tokio::time::timeout(BOUND, body.frame())
            .await
            .expect("bounded")
        {
            if let Some(data) = frame.expect("a clean stream").data_ref() {
                seen.extend_from_slice(data);
            }
            let done = String::from_utf8_lossy(&seen).contains("[DONE]");
            if done || (!stop_at_done && !seen.is_empty()) {
                break;
            }
        }
        drop(body);
    }
    let s = snap.snapshot();
    for scope in Scope::ALL {
        assert_eq!(s.count(scope, "ok", Reach::Acknowledged), 1, "{scope}");
        assert_eq!(
            s.count(scope, "cancelled", Reach::Acknowledged),
            1,
            "{scope}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_quota_error_is_one_attempt_with_its_own_label_and_a_rate_limit_is_retried() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let (registry, snap, rec) = recorders();
    let svc = stack(rec).layer(client());

    let resp = tokio::time::timeout(
        BOUND,
        svc.clone().oneshot(retry_safe(chat(
            &url,
            "quota",
            "429;quota=true, 200",
            false,
        ))),
    )
    .await
    .expect("bounded")
    .expect("an answer");
    assert_eq!(resp.status(), 429);
    let (body, _) = read_all(resp.into_body()).await;
    assert!(
        String::from_utf8_lossy(&body).contains("insufficient_quota"),
        "the caller gets the answer with its body intact"
    );
    let s = snap.snapshot();
    assert_eq!(s.started(Scope::Attempt), 1);
    for scope in Scope::ALL {
        assert_eq!(
            s.count(scope, "insufficient_quota", Reach::Acknowledged),
            1,
            "{scope}"
        );
    }

    let resp = tokio::time::timeout(
        BOUND,
        svc.oneshot(retry_safe(chat(&url, "limited", "429, 200", false))),
    )
    .await
    .expect("bounded")
    .expect("an answer");
    assert_eq!(resp.status(), 200);
    let _ = read_all(resp.into_body()).await;
    let s = snap.snapshot();
    assert_eq!(s.started(Scope::Attempt), 3);
    assert_eq!(s.retries().get("429"), Some(&1));
    let text = encode(&registry);
    assert_eq!(
        value(
            &text,
            "http_client_request_duration_seconds_count",
            &[("outcome", "insufficient_quota")]
        ),
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_overload_family_is_retried_and_not_implemented_is_not() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let (_registry, snap, rec) = recorders();
    let svc = stack(rec).layer(client());
    for (id, script, status, attempts) in [
        ("overloaded", "529, 200", 200, 2),
        ("cloudflare", "522, 200", 200, 2),
        ("conflict", "409, 200", 200, 2),
        ("unsupported", "501, 200", 501, 1),
    ] {
        let before = snap.snapshot().started(Scope::Attempt);
        let resp = tokio::time::timeout(BOUND, svc.clone().oneshot(chat(&url, id, script, false)))
            .await
            .expect("bounded")
            .expect("an answer");
        assert_eq!(resp.status().as_u16(), status, "{id}");
        let _ = read_all(resp.into_body()).await;
        assert_eq!(
            snap.snapshot().started(Scope::Attempt) - before,
            attempts,
            "{id}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_error_event_inside_a_stream_fails_the_call_with_a_recorded_label() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    let (_registry, snap, rec) = recorders();
    let svc = stack(rec).layer(client());
    for (id, script) in [
        ("midstream", "streamerr;at=2"),
        ("midstream-quota", "streamerr;at=1;quota=true"),
    ] {
        let resp = tokio::time::timeout(
            BOUND,
            svc.clone()
                .oneshot(retry_safe(chat(&url, id, script, true))),
        )
        .await
        .expect("bounded")
        .expect("the head");
        assert_eq!(resp.status(), 200);
        let (seen, err) = read_all(resp.into_body()).await;
        assert_eq!(err, None);
        assert!(String::from_utf8_lossy(&seen).contains("\"error\""));
    }
    let s = snap.snapshot();
    for scope in Scope::ALL {
        assert_eq!(
            s.count(scope, "stream_error", Reach::Acknowledged),
            1,
            "{scope}"
        );
        assert_eq!(
            s.count(scope, "insufficient_quota", Reach::Acknowledged),
            1,
            "{scope}"
        );
        assert_eq!(s.count(scope, "ok", Reach::Acknowledged), 0, "{scope}");
    }
    server.shutdown().await;
}
