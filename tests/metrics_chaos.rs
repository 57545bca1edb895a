//! Exactly once, under chaos: thousands of calls against a fault server
//! drawing random faults from a seeded mix, with callers that give up at
//! random points — before the head, mid-body, during a retry's backoff.
//! Afterwards nothing is in flight and every started call and attempt has
//! exactly one recorded outcome, in the snapshot and in Prometheus.

mod metrics_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_support::*;
use prometheus_client::registry::Registry;
use sturdy::metrics::{Both, PrometheusRecorder, Scope, SnapshotRecorder};
use sturdy::{CallContext, Reach, RetrySafe};
use sturdy_faults::{FaultServer, Mix};
use tower::{Service, ServiceExt};

const CALLS: u64 = 3000;
const CONCURRENCY: u64 = 40;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_started_call_and_attempt_is_recorded_once_and_nothing_stays_in_flight() {
    let mix: Mix = "503=0.12,429=0.05,500=0.03,reset=0.06,close=0.05,delay;ms=15=0.06,stall;ms=15=0.06,slow;ms=1=0.05"
        .parse()
        .expect("mix");
    let server = FaultServer::builder()
        .mix(mix)
        .seed(42)
        .start()
        .await
        .expect("fault server");
    let url = server.base_url();
    let refused = format!("http://{}", refused_addr().await);
    let mut registry = Registry::default();
    let snap = SnapshotRecorder::new();
    let rec = Both(PrometheusRecorder::new(&mut registry), snap.clone());
    // Type-erased, so that the spawned tasks do not name the client's body
    // type (rustc cannot prove `Send` through its `dyn Error` lifetime).
    let svc = tower::util::BoxCloneService::new(stack(
        rec,
        2,
        sturdy::client().no_proxy().build().expect("a valid client"),
    ));
    let dropped_after_a_retry = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let mut svc = svc.clone();
        let (url, refused) = (url.clone(), refused.clone());
        let dropped_after_a_retry = dropped_after_a_retry.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker + 1));
            for _ in 0..CALLS / CONCURRENCY {
                let target = if rng.below(20) == 0 { &refused } else { &url };
                let mut req = chat(target, "", "", rng.below(2) == 0);
                if rng.below(2) == 0 {
                    req.extensions_mut().insert(RetrySafe);
                }
                // Our own context: calls() keeps it, so we can look inside.
                let ctx = CallContext::attach(&mut req);
                let fut = svc.ready().await.expect("ready").call(req);
                // Give up at a random moment before the head (or during a
                // backoff, once a retry has started), or end it later.
                if end_at_random(fut, &mut rng, 12).await && ctx.retries() > 0 {
                    dropped_after_a_retry.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("the run is bounded")
            .expect("no worker panicked");
    }
    let s = snap.snapshot();
    println!(
        "{}",
        sturdy::metrics::Report::new(&s).with_server(server_counts(&server.dashboard()))
    );
    for scope in Scope::ALL {
        assert_eq!(s.in_flight(scope), 0, "{scope}: {s:?}");
        assert_eq!(s.started(scope), s.finished(scope), "{scope}: {s:?}");
    }
    assert_eq!(s.started(Scope::Call), CALLS);
    assert!(s.started(Scope::Attempt) > CALLS, "retries happened");
    // The drops really happened, at every point.
    assert!(
        s.count(Scope::Call, "cancelled", Reach::Acknowledged) > 0,
        "{s:?}"
    );
    assert!(
        s.count(Scope::Call, "cancelled", Reach::Unknown) > 0,
        "{s:?}"
    );
    assert!(
        s.count(Scope::Attempt, "cancelled", Reach::Acknowledged) > 0,
        "{s:?}"
    );
    assert!(
        dropped_after_a_retry.load(Ordering::Relaxed) > 0,
        "no caller gave up after a retry"
    );
    assert!(s.by_reach(Scope::Attempt, Reach::NotSent) > 0);
    assert!(
        s.count(Scope::Attempt, "response_body", Reach::Acknowledged) > 0,
        "{s:?}"
    );

    let text = encode(&registry);
    for scope in ["call", "attempt"] {
        assert_eq!(
            value(&text, &format!("sturdy_client_{scope}s_in_flight"), &[]),
            0.0,
            "{scope}"
        );
    }
    assert_eq!(
        value(&text, "sturdy_client_calls_started_total", &[]),
        value(&text, "sturdy_client_call_duration_seconds_count", &[])
    );
    assert_eq!(
        value(&text, "sturdy_client_attempts_started_total", &[]),
        value(&text, "http_client_request_duration_seconds_count", &[])
    );
    assert_eq!(
        value(&text, "sturdy_client_call_duration_seconds_count", &[]),
        CALLS as f64
    );

    // Reconciliation holds under chaos too.
    let d = server.dashboard();
    let sent = s.started(Scope::Attempt) - s.by_reach(Scope::Attempt, Reach::NotSent);
    assert!(d.received <= sent, "{} > {sent}", d.received);
    assert!(d.received >= s.by_reach(Scope::Attempt, Reach::Acknowledged));
    server.shutdown().await;
}
