//! sturdy-metrics in sturdy's full preset stack, against the fault server
//! (the canary through this stack is in `metrics_canary.rs`):
//!
//! ```text
//! FailureMetricsLayer::calls → WorkloadTimeoutLayer → RetryLayer
//!   → FailureMetricsLayer::attempts → AttemptTimeoutLayer → sturdy::client()
//! ```
//!
//! exactly once under chaos, with real timeouts (headers, read, total)
//!   and real retries, callers dropping at random points.

mod metrics_support;

use std::time::Duration;

use metrics_support::{
    Rng, chat, encode, end_at_random, full_stack, refused_addr, server_counts, value,
};
use prometheus_client::registry::Registry;
use sturdy::metrics::{Both, PrometheusRecorder, Report, Scope, SnapshotRecorder};
use sturdy::{Reach, RetrySafe};
use sturdy_faults::{FaultServer, Mix};
use tower::{Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_chaos_with_real_timeouts_and_retries() {
    const CALLS: u64 = 1200;
    const CONCURRENCY: u64 = 40;
    // delay 3000 / stall 3000 trip the 300 ms headers / read limits (10x).
    let mix: Mix =
        "503=0.1,429=0.04,reset=0.05,close=0.05,delay;ms=3000=0.06,stall;ms=3000=0.06,slow;ms=1=0.05"
            .parse()
            .expect("mix");
    let server = FaultServer::builder()
        .mix(mix)
        .seed(7)
        .start()
        .await
        .expect("fault server");
    let url = server.base_url();
    let refused = format!("http://{}", refused_addr().await);
    let mut registry = Registry::default();
    let snap = SnapshotRecorder::new();
    let svc = full_stack(Both(PrometheusRecorder::new(&mut registry), snap.clone()));
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let mut svc = svc.clone();
        let (url, refused) = (url.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (worker + 1));
            for _ in 0..CALLS / CONCURRENCY {
                let target = if rng.below(20) == 0 { &refused } else { &url };
                let mut req = chat(target, "", "", rng.below(2) == 0);
                if rng.below(2) == 0 {
                    req.extensions_mut().insert(RetrySafe);
                }
                let fut = svc.ready().await.expect("ready").call(req);
                end_at_random(fut, &mut rng, 15).await;
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
        Report::new(&s).with_server(server_counts(&server.dashboard()))
    );
    for scope in Scope::ALL {
        assert_eq!(s.in_flight(scope), 0, "{scope}: {s:?}");
        assert_eq!(s.started(scope), s.finished(scope), "{scope}");
    }
    assert_eq!(s.started(Scope::Call), CALLS);
    assert!(
        s.count(Scope::Attempt, "headers_timeout", Reach::Unknown) > 0,
        "{s:?}"
    );
    assert!(
        s.count(Scope::Attempt, "read_timeout", Reach::Acknowledged) > 0,
        "{s:?}"
    );
    assert!(s.retries_total() > 0);
    let text = encode(&registry);
    for scope in ["call", "attempt"] {
        assert_eq!(
            value(&text, &format!("sturdy_client_{scope}s_in_flight"), &[]),
            0.0
        );
    }
    let d = server.dashboard();
    let sent = s.started(Scope::Attempt) - s.by_reach(Scope::Attempt, Reach::NotSent);
    assert!(d.received <= sent, "{} > {sent}", d.received);
    assert!(d.received >= s.by_reach(Scope::Attempt, Reach::Acknowledged));
    server.shutdown().await;
}
