//! The adaptive concurrency limit as an attempt layer of the stack, against
//! the fault server's capacity mode on loopback: 20 requests served at once
//! (50 ms each, so 400 a second), every request beyond answered `429` at
//! once, and 128 callers. With the limit, the server refuses few attempts
//! once the limit has found its capacity; without it, most.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use sturdy::Stack;
use sturdy::retry::Backoff;
use sturdy_core::BoxError;
use sturdy_faults::{Capacity, Dashboard, FaultServer};
use sturdy_rate::AdaptiveConcurrencyLayer;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const CAPACITY: usize = 20;
const SERVICE_TIME: Duration = Duration::from_millis(50);
const CONCURRENCY: usize = 128;
const CALLS: usize = 900;
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#;

fn client() -> sturdy::Client {
    sturdy::client()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a valid client")
}

struct Run {
    early: Dashboard,
    end: Dashboard,
    ok: usize,
    elapsed: Duration,
}

impl Run {
    /// Attempts the server refused over attempts it received, after the
    /// first second.
    fn refused_after_first_second(&self) -> f64 {
        let refused = self.end.over_capacity - self.early.over_capacity;
        let received = self.end.received - self.early.received;
        refused as f64 / received.max(1) as f64
    }

    fn refused(&self) -> f64 {
        self.end.over_capacity as f64 / self.end.received.max(1) as f64
    }
}

/// `calls` calls through clones of `svc`, `callers` at a time, each read
/// to its end; the server's dashboard a second in and at the end.
async fn drive<S, B>(server: &FaultServer, svc: S, callers: usize, calls: usize) -> Run
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let uri = format!("{}/v1/chat/completions", server.base_url());
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (svc, uri, next, ok) = (svc.clone(), uri.clone(), next.clone(), ok.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let req = Request::post(&uri)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY)))
                    .expect("a valid request");
                let Ok(resp) = svc.clone().oneshot(req).await else {
                    continue;
                };
                let status = resp.status();
                if resp.into_body().collect().await.is_ok() && status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = server.dashboard();
    while workers.join_next().await.is_some() {}
    Run {
        early,
        end: server.dashboard(),
        ok: ok.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

fn report(name: &str, run: &Run) {
    let capacity = CAPACITY as f64 / SERVICE_TIME.as_secs_f64();
    println!(
        "{name:<8} received {:>5}, refused {:>5.1} % (after the first second {:>5.1} %), ok {}/{CALLS}, {:.2} s, throughput {:.0} % of capacity",
        run.end.received,
        100.0 * run.refused(),
        100.0 * run.refused_after_first_second(),
        run.ok,
        run.elapsed.as_secs_f64(),
        100.0 * run.ok as f64 / run.elapsed.as_secs_f64() / capacity,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_keeps_refusals_rare_against_a_capacity_of_twenty() {
    // Retries with a tenth of the guide's backoff, so the run without the
    // limit ends in a few seconds too.
    let quick = |b: sturdy::retry::RetryPolicyBuilder| {
        b.backoff(Backoff::guide(
            Duration::from_millis(100),
            Duration::from_millis(100),
        ))
    };
    let capacity = Capacity::new(CAPACITY).service_time(SERVICE_TIME);

    let server = FaultServer::builder()
        .capacity(capacity.clone())
        .start()
        .await
        .unwrap();
    let limit = AdaptiveConcurrencyLayer::new();
    let stack = Stack::builder()
        .map_retry(quick)
        .attempt_layer(limit.clone())
        .build()
        .unwrap();
    let with = drive(&server, stack.layer(client()), CONCURRENCY, CALLS).await;
    server.shutdown().await;
    report("with", &with);
    println!("limit at the end: {} (capacity {CAPACITY})", limit.limit());
    assert_eq!(limit.in_flight(), 0, "every permit given back");

    let server = FaultServer::builder()
        .capacity(capacity)
        .start()
        .await
        .unwrap();
    let stack = Stack::builder().map_retry(quick).build().unwrap();
    let without = drive(&server, stack.layer(client()), CONCURRENCY, CALLS).await;
    server.shutdown().await;
    report("without", &without);

    assert!(
        with.refused_after_first_second() <= 0.20,
        "with the limit, {:.1} % refused after the first second",
        100.0 * with.refused_after_first_second()
    );
    assert_eq!(with.ok, CALLS, "every call succeeds with the limit");
    assert!(
        without.refused() > 2.0 * with.refused().max(0.05),
        "without the limit, {:.1} % refused; with it, {:.1} %",
        100.0 * without.refused(),
        100.0 * with.refused()
    );
}

/// A server that serves 4 at once for 200 ms and refuses the rest.
async fn four_slots() -> FaultServer {
    let capacity = Capacity::new(4).service_time(Duration::from_millis(200));
    FaultServer::builder()
        .capacity(capacity)
        .start()
        .await
        .unwrap()
}

/// Callers at once, one call each, in the burst test.
const BURST: usize = 32;

/// With the limit full, a refused attempt's retry waits in the limit's
/// queue instead of a backoff: with a backoff of an hour (beyond every
/// call's deadline, so a retry that needs one is given up at once), every
/// call still succeeds with the limit; without it, the refused calls fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_limit_is_the_backoff_of_an_overload_retry() {
    let hour = Duration::from_secs(3600);
    let never = move |b: sturdy::retry::RetryPolicyBuilder| {
        b.backoff(Backoff::guide(hour, hour)).max_delay(hour)
    };

    // Halving on overload: after a refusal the requests still in flight
    // are at least the new limit, so the limit is full at every refusal.
    let limit = AdaptiveConcurrencyLayer::builder()
        .decrease(0.5)
        .build()
        .unwrap();
    let stack = Stack::builder()
        .map_retry(never)
        .attempt_layer(limit.clone())
        .build()
        .unwrap();
    let server = four_slots().await;
    let run = drive(&server, stack.layer(client()), BURST, BURST).await;
    server.shutdown().await;
    let (ok, refused) = (run.ok, run.end.over_capacity);
    println!("with the limit: {ok}/{BURST} OK, {refused} refused");
    assert!(
        refused > 0,
        "the first burst (16 against 4) is refused in part"
    );
    assert_eq!(ok, BURST, "every refused call retried from the queue");
    assert_eq!(limit.in_flight(), 0, "every permit given back");

    let stack = Stack::builder().map_retry(never).build().unwrap();
    let server = four_slots().await;
    let run = drive(&server, stack.layer(client()), BURST, BURST).await;
    server.shutdown().await;
    let (ok, refused) = (run.ok, run.end.over_capacity);
    println!("without the limit: {ok}/{BURST} OK, {refused} refused");
    assert!(refused > 0);
    assert_eq!(
        ok as u64,
        BURST as u64 - refused,
        "without a limit, a refused call's retry needs the backoff: past the deadline, none is made"
    );
}
