//! The pacer around a fake inner service, on paused time (holds are
//! instant). Each request carries, as an extension, the answer the fake
//! gives it: its headers, how long it takes, or an error.
//!
//! Still to come: a loopback test against sturdy-faults' rate-limit mode
//! (being written beside this), with the pacer in a whole stack over real
//! HTTP, counting the 429s it saves at concurrency 64.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use sturdy_core::{
    BoxError, CallPlan, Deadline, DeadlineLimit, FailureKind, PacerError, Profile, Reach, Workload,
    classify_error,
};
use sturdy_rate::{PacerLayer, TokenEstimate};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// What the fake answers to one request.
#[derive(Debug, Clone, Default)]
struct Answer {
    headers: Vec<(&'static str, &'static str)>,
    delay: Duration,
    fail: bool,
}

fn answer(headers: &[(&'static str, &'static str)]) -> Answer {
    Answer {
        headers: headers.to_vec(),
        ..Answer::default()
    }
}

const NONE: Answer = Answer {
    headers: Vec::new(),
    delay: Duration::ZERO,
    fail: false,
};

/// When each request reached the fake (since the test's start), and to
/// which authority.
#[derive(Clone)]
struct Log {
    start: Instant,
    sent: Arc<Mutex<Vec<(String, Duration)>>>,
}

impl Log {
    fn new() -> Log {
        Log {
            start: Instant::now(),
            sent: Arc::default(),
        }
    }

    fn times(&self) -> Vec<Duration> {
        self.sent.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

type Req = Request<Full<Bytes>>;

fn fake(
    log: &Log,
) -> impl Service<Req, Response = Response<()>, Error = BoxError, Future: Send> + Clone + Send + 'static
{
    let log = log.clone();
    tower::service_fn(move |req: Req| {
        let log = log.clone();
        async move {
            let at = log.start.elapsed();
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            log.sent.lock().unwrap().push((authority, at));
            let a = req
                .extensions()
                .get::<Answer>()
                .cloned()
                .unwrap_or_default();
            tokio::time::sleep(a.delay).await;
            if a.fail {
                return Err(BoxError::from(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                )));
            }
            let mut resp = Response::builder();
            for (name, value) in a.headers {
                resp = resp.header(name, value);
            }
            Ok(resp.body(())?)
        }
    })
}

fn req(uri: &str, a: Answer) -> Req {
    let mut req = Request::post(uri)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    req.extensions_mut().insert(a);
    req
}

fn with_body(uri: &str, bytes: usize, a: Answer) -> Req {
    let mut req = Request::post(uri)
        .body(Full::new(Bytes::from(vec![b'x'; bytes])))
        .unwrap();
    req.extensions_mut().insert(a);
    req
}

const API: &str = "https://api.test/v1/chat/completions";

fn spent(reset: &'static str) -> Answer {
    answer(&[
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", reset),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_spent_quota_holds_the_next_attempt_until_the_reset() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    svc.clone().oneshot(req(API, spent("2s"))).await.unwrap();
    let start = Instant::now();
    svc.clone().oneshot(req(API, NONE)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(log.times(), [Duration::ZERO, Duration::from_secs(2)]);
    // Once the reset has passed, nothing is known: the next one goes at once.
    let start = Instant::now();
    svc.clone().oneshot(req(API, NONE)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn ten_concurrent_attempts_against_three_remaining_send_three_and_hold_seven() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    svc.clone()
        .oneshot(req(
            API,
            answer(&[
                ("x-ratelimit-remaining-requests", "3"),
                ("x-ratelimit-reset-requests", "2s"),
            ]),
        ))
        .await
        .unwrap();
    let slow = Answer {
        delay: Duration::from_millis(100),
        ..NONE
    };
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot(req(API, slow.clone()))))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.count(), 1 + 3, "three sent, seven held");
    let stats = layer.stats();
    let server = stats.server("api.test:443").unwrap();
    assert_eq!((server.held, server.holding, server.in_flight), (7, 7, 3));
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let times = log.times();
    assert_eq!(times[1..4], [Duration::ZERO; 3]);
    assert_eq!(times[4..], [Duration::from_secs(2); 7]);
    let server = layer.stats().servers.remove(0);
    assert_eq!((server.held, server.holding, server.in_flight), (7, 0, 0));
    assert_eq!(server.held_time, Duration::from_secs(14));
}

#[tokio::test(start_paused = true)]
async fn a_reset_beyond_the_deadline_fails_at_once_with_a_typed_error_not_sent() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    svc.clone().oneshot(req(API, spent("0.5h"))).await.unwrap();

    // The caller's Deadline extension.
    let mut r = req(API, NONE);
    r.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(1)));
    let start = Instant::now();
    let err = svc.clone().oneshot(r).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "failed at once");
    let kind = classify_error(&*err);
    assert_eq!(kind, FailureKind::RateLimitHold);
    assert_eq!(
        (kind.label(), kind.reach()),
        ("rate_limit_hold", Reach::NotSent)
    );
    let pacer = err.downcast_ref::<PacerError>().unwrap();
    assert_eq!(pacer.server(), "api.test:443");
    assert_eq!(pacer.wait(), Duration::from_secs(1800));
    let shown = err.to_string();
    assert!(
        !shown.contains("0.5h") && !shown.contains("ratelimit"),
        "{shown}"
    );

    // The deadline a workload layer settled in the plan.
    let mut r = req(API, NONE);
    let profile = Profile::for_workload(Workload::Interactive);
    CallPlan::of_request(&mut r).settle_workload(
        Workload::Interactive,
        profile,
        Deadline::after(Duration::from_secs(60)),
        DeadlineLimit::profile(profile.total),
    );
    let err = svc.clone().oneshot(r).await.unwrap_err();
    assert_eq!(classify_error(&*err), FailureKind::RateLimitHold);

    assert_eq!(log.count(), 1, "nothing was sent");
    let stats = layer.stats();
    let server = stats.server("api.test:443").unwrap();
    assert_eq!((server.failed_deadline, server.held), (2, 0));

    // A reset before the deadline is held for.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    svc.clone().oneshot(req(API, spent("2s"))).await.unwrap();
    let mut r = req(API, NONE);
    r.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(3)));
    let start = Instant::now();
    svc.clone().oneshot(r).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    // A reset exactly at the deadline is not.
    svc.clone().oneshot(req(API, spent("2s"))).await.unwrap();
    let mut r = req(API, NONE);
    r.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    assert!(svc.clone().oneshot(r).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn garbage_headers_never_hold() {
    let log = Log::new();
    let svc = PacerLayer::new().layer(fake(&log));
    for garbage in [
        answer(&[
            ("x-ratelimit-remaining-requests", "zero"),
            ("x-ratelimit-reset-requests", "2s"),
        ]),
        answer(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "-2s"),
        ]),
        answer(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "soon"),
        ]),
        answer(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
        ]),
        answer(&[("x-ratelimit-remaining-requests", "0")]),
        answer(&[("ratelimit", "limit=0, reset=30")]),
        answer(&[("ratelimit", r#""default";r=0;t=30,"#)]),
        answer(&[("ratelimit", r#""default";r=-1;t=30"#)]),
        answer(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            (
                "anthropic-ratelimit-requests-reset",
                "Wed, 02 Dec 2026 10:00:30 GMT",
            ),
        ]),
        answer(&[
            (
                "x-ratelimit-remaining-requests",
                "00000000000000000000000000000000000000000000000000000000000000000",
            ),
            ("x-ratelimit-reset-requests", "2s"),
        ]),
    ] {
        svc.clone()
            .oneshot(req(API, garbage.clone()))
            .await
            .unwrap();
        let start = Instant::now();
        svc.clone().oneshot(req(API, NONE)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "{garbage:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_view_is_per_server() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    svc.clone()
        .oneshot(req("https://a.test/v1", spent("5s")))
        .await
        .unwrap();
    let start = Instant::now();
    for other in [
        "https://b.test/v1",
        "https://a.test:8443/v1",
        "http://a.test/v1",
        "https://a.test.example/v1",
    ] {
        svc.clone().oneshot(req(other, NONE)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "{other}");
    }
    // The same server, however its URI spells it.
    svc.clone()
        .oneshot(req("https://user:secret@A.TEST:443/v2", NONE))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let stats = layer.stats();
    assert_eq!(stats.held(), 1);
    assert_eq!(stats.server("a.test:443").unwrap().held, 1);
    assert_eq!(stats.server("b.test:443").unwrap().held, 0);
    assert!(!format!("{stats:?}").contains("secret"));
    // The layer's Debug tells only how many servers it knows.
    assert_eq!(
        format!("{layer:?}"),
        "PacerLayer { shared: Shared { servers: 5, max_servers: 1024 } }"
    );
}

#[tokio::test(start_paused = true)]
async fn stats_count_holds_and_time_held() {
    let log = Log::new();
    let layer = PacerLayer::new();
    // Services made from one layer, and their clones, share one view.
    let one = layer.layer(fake(&log));
    let two = layer.layer(fake(&log));
    one.clone().oneshot(req(API, spent("3s"))).await.unwrap();
    two.clone().oneshot(req(API, NONE)).await.unwrap();
    two.clone().oneshot(req(API, spent("250ms"))).await.unwrap();
    let mut r = req(API, NONE);
    r.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(10)));
    one.clone().oneshot(r).await.unwrap_err();
    let stats = one.stats();
    assert_eq!(stats, two.stats());
    assert_eq!(stats, layer.stats());
    let server = stats.server("api.test:443").unwrap();
    assert_eq!(server.held, 1);
    assert_eq!(server.held_time, Duration::from_secs(3));
    assert_eq!(server.failed_deadline, 1);
    assert_eq!((server.holding, server.in_flight), (0, 0));
    assert_eq!(stats.failed_deadline(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_held_future_leaves_nothing_behind() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    svc.clone().oneshot(req(API, spent("2s"))).await.unwrap();
    let held = svc.clone().oneshot(req(API, NONE));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), held)
            .await
            .is_err()
    );
    let stats = layer.stats();
    let server = stats.server("api.test:443").unwrap();
    assert_eq!((server.held, server.holding), (1, 0));
    assert_eq!(server.held_time, Duration::from_millis(500));
    assert_eq!(server.in_flight, 0);
    assert_eq!(log.count(), 1, "the dropped attempt was never sent");
    // A dropped attempt in flight gives back what it took.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow = Answer {
        delay: Duration::from_secs(10),
        ..NONE
    };
    let sent = svc.clone().oneshot(req(API, slow));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sent)
            .await
            .is_err()
    );
    assert_eq!(layer.stats().servers[0].in_flight, 0);
    // And the next attempt goes at once.
    let start = Instant::now();
    svc.clone().oneshot(req(API, NONE)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_answer_counts_the_attempts_still_in_flight() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    let ten = answer(&[
        ("x-ratelimit-remaining-requests", "10"),
        ("x-ratelimit-reset-requests", "10s"),
    ]);
    svc.clone().oneshot(req(API, ten)).await.unwrap();
    // Still in flight when the next answer comes: the server may not have
    // counted it.
    let slow = Answer {
        delay: Duration::from_secs(5),
        ..NONE
    };
    let pending = tokio::spawn(svc.clone().oneshot(req(API, slow)));
    tokio::task::yield_now().await;
    let one_left = Answer {
        delay: Duration::from_millis(100),
        ..answer(&[
            ("x-ratelimit-remaining-requests", "1"),
            ("x-ratelimit-reset-requests", "10s"),
        ])
    };
    svc.clone().oneshot(req(API, one_left)).await.unwrap();
    let start = Instant::now();
    svc.clone().oneshot(req(API, NONE)).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(10),
        "the one left was the one in flight"
    );
    pending.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_newer_answer_holds_a_waking_attempt_again() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    // Two answers: the first says the quota is back in 1 s; the second,
    // later, in 2 s from its arrival at 0.8 s.
    let later = Answer {
        delay: Duration::from_millis(800),
        ..spent("2s")
    };
    let second = tokio::spawn(svc.clone().oneshot(req(API, later)));
    tokio::task::yield_now().await;
    svc.clone().oneshot(req(API, spent("1s"))).await.unwrap();
    let start = Instant::now();
    svc.clone().oneshot(req(API, NONE)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(2800));
    second.await.unwrap().unwrap();
    let stats = layer.stats();
    let server = stats.server("api.test:443").unwrap();
    assert_eq!(
        (server.held, server.held_time),
        (1, Duration::from_millis(2800))
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_hold_by_the_body_estimate_or_the_callers() {
    let log = Log::new();
    let svc = PacerLayer::new().layer(fake(&log));
    let tokens = || {
        answer(&[
            ("x-ratelimit-limit-tokens", "1000"),
            ("x-ratelimit-remaining-tokens", "100"),
            ("x-ratelimit-reset-tokens", "3s"),
        ])
    };
    // 800 bytes: some 200 tokens, more than the 100 left.
    svc.clone().oneshot(req(API, tokens())).await.unwrap();
    let start = Instant::now();
    svc.clone()
        .oneshot(with_body(API, 800, NONE))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    // The caller's own estimate wins over the body's.
    svc.clone().oneshot(req(API, tokens())).await.unwrap();
    let mut r = with_body(API, 800, NONE);
    r.extensions_mut().insert(TokenEstimate(50));
    let start = Instant::now();
    svc.clone().oneshot(r).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // 50 left now: 60 tokens wait.
    let mut r = req(API, NONE);
    r.extensions_mut().insert(TokenEstimate(60));
    svc.clone().oneshot(r).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    // More than the whole limit: waiting cannot help, the server decides.
    svc.clone().oneshot(req(API, tokens())).await.unwrap();
    let start = Instant::now();
    svc.clone()
        .oneshot(with_body(API, 8000, NONE))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn anthropic_and_ietf_answers_pace_too() {
    let log = Log::new();
    let svc = PacerLayer::new().layer(fake(&log));
    for spent in [
        answer(&[("ratelimit", r#""default";r=0;t=4"#)]),
        answer(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "4")]),
        answer(&[
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            // Far enough ahead that the test's wall clock does not matter.
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2999-01-01T00:00:00Z",
            ),
        ]),
    ] {
        svc.clone().oneshot(req(API, spent.clone())).await.unwrap();
        let start = Instant::now();
        svc.clone().oneshot(req(API, NONE)).await.unwrap();
        let held = start.elapsed();
        if spent.headers[0].0.starts_with("anthropic") {
            assert_eq!(held, sturdy_rate::MAX_RESET);
        } else {
            assert_eq!(held, Duration::from_secs(4), "{spent:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn errors_pass_through_and_give_back_what_they_took() {
    let log = Log::new();
    let layer = PacerLayer::new();
    let svc = layer.layer(fake(&log));
    let failing = Answer { fail: true, ..NONE };
    let err = svc.clone().oneshot(req(API, failing)).await.unwrap_err();
    assert_eq!(classify_error(&*err), FailureKind::Reset);
    assert_eq!(layer.stats().servers[0].in_flight, 0);
    // A URI without an authority is not paced, and not tracked.
    svc.clone().oneshot(req("/v1/chat", NONE)).await.unwrap();
    assert_eq!(layer.stats().servers.len(), 1);
}
