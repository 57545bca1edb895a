//! Invalid configuration is a typed error when a layer, the stack or the
//! client is built, never a panic at request time; values at the very edge
//! of their range build and serve real calls; a bad profile carried by one
//! request fails that request with a typed error, recorded once.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sturdy::metrics::{FailureMetricsLayer, Scope, SnapshotRecorder};
use sturdy::retry::{Backoff, BudgetConfig, MAX_RETRIES_LIMIT, RetryConfigError, RetryPolicy};
use sturdy::timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
use sturdy::{InvalidProfile, Profile, Reach, Stack, StackError, Workload};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tower::{Layer, ServiceExt};

const SECRET: &str = "sk-sturdy-canary";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_zero_phase_is_refused_by_both_timeout_layers_and_the_stack() {
    for phase in ["ready", "headers", "read", "total"] {
        let mut p = Profile::for_workload(Workload::Batch);
        match phase {
            "ready" => p.ready = Duration::ZERO,
            "headers" => p.headers = Duration::ZERO,
            "read" => p.read = Duration::ZERO,
            _ => p.total = Duration::ZERO,
        }
        let want = InvalidProfile { phase };
        let workload = WorkloadTimeoutLayer::builder()
            .profile(Workload::Batch, p)
            .build();
        assert_eq!(workload.unwrap_err(), want);
        let attempt = AttemptTimeoutLayer::builder()
            .profile(Workload::Batch, p)
            .build();
        assert_eq!(attempt.unwrap_err(), want);
        match Stack::builder().profile(Workload::Batch, p).build() {
            Err(StackError::Profile(e)) => assert_eq!(e, want),
            other => panic!("{phase}: {other:?}"),
        }
    }
}

#[test]
fn every_bad_retry_value_is_refused_by_the_stack() {
    let b = RetryPolicy::builder;
    let budget = |window, ratio| BudgetConfig {
        window: Duration::from_secs(window),
        min_per_sec: 10,
        retry_ratio: ratio,
        ..BudgetConfig::default()
    };
    let cases = [
        (
            b().backoff(Backoff::guide(Duration::ZERO, ms(1))),
            RetryConfigError::ZeroBase,
        ),
        (
            b().backoff(Backoff::guide(ms(10), ms(1))).max_delay(ms(9)),
            RetryConfigError::CapBelowBase,
        ),
        (
            b().backoff(Backoff::guide(ms(10), ms(100)))
                .max_delay(ms(50)),
            RetryConfigError::JitterAboveCap,
        ),
        (b().hint_cap(Duration::ZERO), RetryConfigError::ZeroHintCap),
        (b().budget(budget(10, 11.0)), RetryConfigError::BudgetRatio),
        (b().budget(budget(10, -0.5)), RetryConfigError::BudgetRatio),
        (
            b().budget(budget(10, f32::INFINITY)),
            RetryConfigError::BudgetRatio,
        ),
        (b().budget(budget(0, 0.2)), RetryConfigError::BudgetWindow),
        (b().replay_cap(0), RetryConfigError::ZeroReplayCap),
        (
            b().max_retries(MAX_RETRIES_LIMIT + 1),
            RetryConfigError::TooManyRetries(MAX_RETRIES_LIMIT + 1),
        ),
        (
            b().drain(1, Duration::ZERO),
            RetryConfigError::ZeroDrainTime,
        ),
        (
            b().attempt_header("no spaces allowed"),
            RetryConfigError::InvalidHeaderName,
        ),
    ];
    for (retry, want) in cases {
        match Stack::builder().retry_policy(retry).build() {
            Err(StackError::Retry(e)) => {
                assert_eq!(e, want);
                let shown = StackError::Retry(e).to_string();
                assert!(shown.starts_with("invalid stack: "), "{shown}");
            }
            other => panic!("{want:?}: {other:?}"),
        }
    }
    // The stack's own shortcut reaches the same check.
    assert!(matches!(
        Stack::builder().max_retries(1_000).build(),
        Err(StackError::Retry(RetryConfigError::TooManyRetries(1_000)))
    ));
}

#[test]
fn a_server_label_that_is_not_host_and_port_is_refused_without_repeating_it() {
    for label in [
        format!("user:{SECRET}@api.example"),
        "api.example/v1".to_owned(),
        String::new(),
    ] {
        let err = Stack::grpc_builder()
            .server_label(label.clone())
            .build()
            .expect_err(&label);
        assert!(matches!(err, StackError::ServerLabel(_)), "{err:?}");
        assert!(!format!("{err} {err:?}").contains(SECRET));
        let layer = FailureMetricsLayer::calls(SnapshotRecorder::new());
        assert!(layer.server_label(&label).is_err());
    }
    assert!(
        Stack::grpc_builder()
            .server_label("api.example:443")
            .build()
            .is_ok()
    );
}

#[test]
fn client_limits_below_a_millisecond_are_refused() {
    for (connect, write) in [
        (Duration::ZERO, Duration::from_secs(1)),
        (Duration::from_secs(1), Duration::ZERO),
        (Duration::from_nanos(999_999), Duration::from_secs(1)),
    ] {
        let err = sturdy::client()
            .connect_timeout(connect)
            .write_timeout(write)
            .build()
            .expect_err("a limit below MIN_LIMIT");
        assert!(
            matches!(err, sturdy::ClientConfigError::LimitTooSmall { .. }),
            "{err:?}"
        );
    }
}

mod metrics_support;

/// A scripted chat completion carrying an API key that must never show.
fn scripted(url: &str, call: &str, script: &str) -> http::Request<Full<Bytes>> {
    let mut req = metrics_support::chat(url, call, script, false);
    req.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_str(&format!("Bearer {SECRET}")).expect("a valid value"),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_at_the_edge_of_their_range_build_and_serve() {
    let server = FaultServer::start().await.expect("fault server");
    let url = server.base_url();
    // Every number at the end of its documented range, at once.
    let retry = RetryPolicy::builder()
        .max_retries(MAX_RETRIES_LIMIT)
        .backoff(Backoff::guide(ms(2), ms(2)))
        .max_delay(ms(2))
        .hint_cap(Duration::from_nanos(1))
        .replay_cap(1)
        .replay_in_memory_up_to(1)
        .budget(BudgetConfig {
            window: Duration::from_secs(60),
            min_per_sec: 1_000_000,
            retry_ratio: 10.0,
            burst: 1_000_000,
            patient: true,
        });
    let stack = Stack::builder()
        .retry_policy(retry)
        .server_label("127.0.0.1:1")
        .build()
        .expect("edge values are valid");
    let client = sturdy::client()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("a valid client");
    let svc = stack.layer(client);
    // The request body is over both 1-byte replay caps, and the first attempt
    // sent it: its 503 cannot be retried and is the answer.
    let resp = svc
        .clone()
        .oneshot(scripted(&url, "edge-1", "503, 200"))
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 503);
    let _ = resp.into_body().collect().await;
    // A body within the cap (empty) is replayed up to the limit.
    let req = http::Request::get(format!("{url}/v1/models"))
        .header(CALL_HEADER, "edge-2")
        .header(FAULT_HEADER, "503, 503, 200")
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let resp = svc.oneshot(req).await.expect("an answer");
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    let s = stack.recorder().snapshot();
    assert_eq!(s.started(Scope::Call), 2);
    assert_eq!(s.started(Scope::Attempt), 4);
    assert_eq!(s.in_flight(Scope::Attempt), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_profile_on_one_request_fails_that_request_with_a_typed_error() {
    let server = FaultServer::start().await.expect("fault server");
    let stack = Stack::builder().build().expect("a valid stack");
    let svc = stack.layer(sturdy::client().no_proxy().build().expect("a valid client"));
    let mut req = scripted(&server.base_url(), "bad-profile", "200");
    let mut profile = Profile::for_workload(Workload::Interactive);
    profile.read = Duration::ZERO;
    req.extensions_mut().insert(profile);
    let err = svc.clone().oneshot(req).await.expect_err("refused");
    let invalid = err
        .downcast_ref::<InvalidProfile>()
        .expect("the typed error itself");
    assert_eq!(invalid.phase, "read");
    assert!(!format!("{err} {err:?}").contains(SECRET));
    // Recorded once, and nothing was sent.
    let s = stack.recorder().snapshot();
    assert_eq!(s.started(Scope::Call), 1);
    assert_eq!(s.in_flight(Scope::Call), 0);
    assert_eq!(s.by_reach(Scope::Call, Reach::NotSent), 1);
    assert_eq!(server.dashboard().received, 0);
    // The next, well-formed request is served as usual.
    let resp = svc
        .oneshot(scripted(&server.base_url(), "fine", "200"))
        .await
        .expect("an answer");
    assert_eq!(resp.status(), 200);
    server.shutdown().await;
}
