//! Responses with an arbitrary status code and arbitrary header bytes (any
//! names, any values hyper would accept, repeated or not, as many as the
//! input holds), judged by sturdy-core's classification and hints, then
//! answered by a hand-written service behind the whole `Stack` on paused
//! time.
//!
//! Classification and hints must never panic and must follow their tables;
//! a repeated or oversized hint is garbage; the stack must record the call
//! and each of its attempts exactly once, retry only what the rules allow,
//! and never more than its limit.
#![no_main]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use sturdy::core::{
    MAX_HINT, MAX_HINT_VALUE_LEN, classify_grpc, classify_grpc_code, classify_response,
    classify_status, is_grpc, is_grpc_answer,
};
use sturdy::metrics::{Report, Scope};
use sturdy::retry::{Backoff, RetryPolicy};
use sturdy::{
    BoxBody, Classifier, FailureKind, GrpcCode, Reach, RetrySafe, ServerHints, Stack, Verdict,
};
use tower::{Layer, ServiceExt};

const MAX_RETRIES: u32 = 2;

/// Header names worth hitting often; anything else comes from the input.
const NAMES: [&str; 8] = [
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "grpc-retry-pushback-ms",
    "grpc-status",
    "content-type",
    "content-length",
    "x-other",
];

/// The answer's head, and whether the call is gRPC (the request's
/// content type; the answer is judged by the call's kind).
fn head(data: &[u8]) -> Option<(StatusCode, HeaderMap, bool)> {
    let (code, mut rest) = data.split_first_chunk::<2>()?;
    let code = u16::from_le_bytes(*code);
    let grpc_call = code >= 0x8000;
    let status = StatusCode::from_u16(code % 1000).ok()?;
    let mut headers = HeaderMap::new();
    while let Some((&tag, tail)) = rest.split_first() {
        let (name, tail) = match NAMES.get(usize::from(tag)) {
            Some(name) => (HeaderName::from_static(name), tail),
            None => {
                let (&len, tail) = tail.split_first()?;
                let (bytes, tail) = tail.split_at(usize::from(len % 16).min(tail.len()));
                match HeaderName::from_bytes(bytes) {
                    Ok(name) => (name, tail),
                    Err(_) => {
                        rest = tail;
                        continue;
                    }
                }
            }
        };
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        // Lengths past the hint limit, to reach the "oversized" rule.
        let len = usize::from(len) % (MAX_HINT_VALUE_LEN + 16);
        let (value, tail) = tail.split_at(len.min(tail.len()));
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
        rest = tail;
    }
    Some((status, headers, grpc_call))
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fuzz_target!(|data: &[u8]| {
    let Some((status, headers, grpc_call)) = head(data) else {
        return;
    };

    // The tables.
    let (verdict, failure) = classify_response(status, &headers);
    let grpc_head = is_grpc_answer(status, &headers);
    assert_eq!(grpc_head, is_grpc(&headers) && status == StatusCode::OK);
    if grpc_head {
        match (GrpcCode::from_headers(&headers), failure) {
            (None, None) => assert_eq!(verdict, Verdict::Success),
            (Some(code), Some(FailureKind::Grpc(got))) => {
                assert_eq!(code, got);
                assert_eq!(verdict, classify_grpc(code));
            }
            (Some(code), None) => assert_eq!(classify_grpc(code), Verdict::Success),
            (code, other) => panic!("grpc-status {code:?} classified as {other:?}"),
        }
    } else {
        assert_eq!(verdict, classify_status(status));
        match failure {
            None => assert_eq!(verdict, Verdict::Success),
            Some(kind) => assert_eq!(kind, FailureKind::Status(status)),
        }
    }
    if let Some(kind) = failure {
        assert_eq!(kind.reach(), Reach::Acknowledged);
        assert!(is_label(kind.label()), "{:?}", kind.label());
    }

    // The hints: bounded, and garbage when repeated or oversized.
    let hints = ServerHints::from_headers(&headers, SystemTime::now());
    if let Some(delay) = hints.delay() {
        assert!(delay <= MAX_HINT);
    }
    let ambiguous = |name: &str| {
        let values: Vec<_> = headers.get_all(name).iter().collect();
        values.len() > 1 || values.first().is_some_and(|v| v.len() > MAX_HINT_VALUE_LEN)
    };
    for (name, read) in [
        ("retry-after", hints.retry_after.is_some()),
        ("retry-after-ms", hints.retry_after_ms.is_some()),
        ("x-should-retry", hints.should_retry.is_some()),
        ("grpc-status", hints.grpc_status.is_some()),
    ] {
        assert!(!(ambiguous(name) && read), "an ambiguous {name} was read");
    }
    if ambiguous("grpc-retry-pushback-ms") {
        assert!(hints.forbids_retry());
    }

    // The whole stack, around a service that always gives this answer.
    RUNTIME.with(|rt| {
        if let Some(rt) = rt {
            rt.block_on(through_the_stack(status, headers, grpc_call, hints));
        }
    });
});

thread_local! {
    /// One paused-time runtime for every input: its clock only moves forward.
    static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .ok();
}

async fn through_the_stack(
    status: StatusCode,
    headers: HeaderMap,
    grpc_call: bool,
    hints: ServerHints,
) {
    // A gRPC answer is judged by its grpc-status only in a gRPC call.
    let judged = Classifier::tables().judge_response(status, &headers, grpc_call);
    let (verdict, failure) = (judged.verdict, judged.failure);
    let grpc_head = grpc_call && is_grpc_answer(status, &headers);
    let answered = Arc::new(AtomicU32::new(0));
    let inner = tower::service_fn({
        let answered = answered.clone();
        let headers = headers.clone();
        move |_req: http::Request<BoxBody>| {
            answered.fetch_add(1, Ordering::Relaxed);
            let mut resp = http::Response::new(Full::new(Bytes::from_static(b"{\"x\":1}")));
            *resp.status_mut() = status;
            *resp.headers_mut() = headers.clone();
            async move { Ok::<_, Infallible>(resp) }
        }
    });
    let stack = Stack::builder()
        .retry_policy(
            RetryPolicy::builder()
                .max_retries(MAX_RETRIES)
                .backoff(Backoff::guide(
                    Duration::from_millis(5),
                    Duration::from_millis(5),
                ))
                .hint_cap(Duration::from_secs(1))
                .no_budget(),
        )
        .build()
        .expect("a valid stack");
    let svc = stack.layer(inner);
    let mut req = http::Request::post("http://fuzz.test/v1/chat/completions")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a valid request");
    if grpc_call {
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
    }
    req.extensions_mut().insert(RetrySafe);
    let resp = svc.oneshot(req).await.expect("an answer, never an error");
    assert_eq!(resp.status(), status);
    let _ = resp.into_body().collect().await;

    let attempts = answered.load(Ordering::Relaxed);
    assert!((1..=MAX_RETRIES + 1).contains(&attempts), "{attempts}");
    let not_retried = verdict == Verdict::Success
            || hints.forbids_retry()
            || (verdict == Verdict::Fatal && hints.should_retry != Some(true))
            // An HTTP-date hint shrinks while time passes: leave a second of slack.
            || hints.delay().is_some_and(|d| d > Duration::from_secs(2));
    if not_retried {
        assert_eq!(attempts, 1, "retried what the rules do not retry");
    }

    let s = stack.recorder().snapshot();
    for scope in Scope::ALL {
        assert_eq!(s.started(scope), s.finished(scope), "{scope}");
        assert_eq!(s.in_flight(scope), 0);
    }
    assert_eq!(s.started(Scope::Call), 1);
    assert_eq!(s.started(Scope::Attempt), u64::from(attempts));
    assert_eq!(s.call_attempts(), u64::from(attempts));
    assert_eq!(s.retries_total(), u64::from(attempts - 1));
    let (outcome, reach, _) = s.outcomes(Scope::Call).next().expect("one outcome");
    assert_eq!(reach, Reach::Acknowledged);
    assert!(is_label(outcome), "{outcome:?}");
    // A gRPC answer ends with the head's grpc-status (the body brings no
    // trailers); any other response with what its head amounts to.
    let expected = if grpc_head {
        GrpcCode::from_headers(&headers).map_or("grpc_unknown", |code| {
            classify_grpc_code(code).1.map_or("ok", |k| k.label())
        })
    } else {
        failure.map_or("ok", |k| k.label())
    };
    assert_eq!(outcome, expected);
    let _ = Report::new(&s).to_string();
}
