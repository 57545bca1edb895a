//! The `Stack`'s pacer against the fault server's rate-limit mode over
//! loopback: it holds attempts while the server's `x-ratelimit-*` headers
//! say no room is left, and a hold that would outlive the call's deadline
//! fails at once, never sent.

mod metrics_support;

use std::time::Duration;

use http_body_util::BodyExt;
use metrics_support::{client, hold_past_deadline, plain_chat};
use sturdy::Stack;
use sturdy_faults::{FaultServer, RateLimit};
use tower::{Layer, ServiceExt};

async fn burst(paced: bool) -> (u64, u64, u64, u64) {
    let server = FaultServer::builder()
        .rate_limit(RateLimit::per_second(40.0))
        .start()
        .await
        .expect("fault server");
    let stack = Stack::builder().pacing(paced).build().expect("a stack");
    let svc = stack.layer(client());
    let url = server.base_url();
    let calls = (0..120).map(|_| {
        let svc = svc.clone();
        let req = plain_chat(&url);
        async move {
            match svc.oneshot(req).await {
                Ok(resp) if resp.status() == 200 => resp.into_body().collect().await.is_ok(),
                _ => false,
            }
        }
    });
    // 24 at a time, like a worker pool.
    let mut ok = 0;
    let calls: Vec<_> = calls.collect();
    let mut calls = calls.into_iter();
    loop {
        let batch: Vec<_> = calls.by_ref().take(24).collect();
        if batch.is_empty() {
            break;
        }
        ok += futures_util::future::join_all(batch)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count() as u64;
    }
    let d = server.dashboard();
    server.shutdown().await;
    (
        ok,
        d.received,
        d.too_many_requests,
        stack.pacer().stats().held(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_calls_mostly_avoid_the_429s_the_unpaced_ones_get() {
    let (ok, received, refused, held) = burst(true).await;
    let (ok_unpaced, received_unpaced, refused_unpaced, held_unpaced) = burst(false).await;
    eprintln!(
        "paced: {ok} ok, {refused}/{received} attempts 429, {held} held; \
         not paced: {ok_unpaced} ok, {refused_unpaced}/{received_unpaced} attempts 429"
    );
    assert_eq!(ok, 120, "every paced call succeeds");
    assert!(held > 0, "the pacer held attempts");
    assert_eq!(held_unpaced, 0);
    let share = refused as f64 / received as f64;
    let share_unpaced = refused_unpaced as f64 / received_unpaced as f64;
    assert!(share < 0.2, "paced 429 share {share:.2}");
    assert!(share < share_unpaced, "{share:.2} vs {share_unpaced:.2}");
}

#[tokio::test]
async fn a_reset_beyond_the_deadline_fails_at_once_and_sends_nothing() {
    let (server, stack) = hold_past_deadline().await;
    let svc = stack.layer(client());
    let url = server.base_url();
    let first = svc
        .clone()
        .oneshot(plain_chat(&url))
        .await
        .expect("the first call");
    assert_eq!(first.status(), 200);
    first.into_body().collect().await.expect("its body");
    let started = tokio::time::Instant::now();
    let err = svc
        .clone()
        .oneshot(plain_chat(&url))
        .await
        .expect_err("no room in time");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "failed at once"
    );
    let kind = sturdy::classify_error(&*err);
    assert_eq!(kind.label(), "rate_limit_hold", "{err}");
    assert_eq!(kind.reach(), sturdy::Reach::NotSent);
    assert_eq!(
        server.dashboard().received,
        1,
        "the second call was never sent"
    );
    let stats = stack.pacer().stats();
    assert_eq!(stats.failed_deadline(), 1);
    let snapshot = stack.recorder().snapshot();
    assert_eq!(
        snapshot.count(
            sturdy::metrics::Scope::Call,
            "rate_limit_hold",
            sturdy::Reach::NotSent
        ),
        1
    );
    server.shutdown().await;
}
