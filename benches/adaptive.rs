//! Adaptive concurrency against a fixed capacity: an in-process fault
//! server in capacity mode serves at most `--capacity` chat completions at
//! once (default 20), each for `--service-ms` (default 50 ms: 400 a second),
//! and answers every request beyond at once with a `429` (no rate-limit
//! headers, no `retry-after`). `--calls` calls (default 2 000) are made by
//! `--concurrency` callers (default 128) through sturdy's `Stack` with its
//! defaults (retries on: 5, the guide's backoff, the budget), without and
//! with `sturdy_rate::AdaptiveConcurrencyLayer` at the attempt position.
//!
//! ```sh
//! cargo bench -p sturdy-tower --bench adaptive -- --bench
//! cargo bench -p sturdy-tower --bench adaptive -- --bench --calls 4000 --concurrency 256
//! cargo bench -p sturdy-tower --bench adaptive -- --bench --variants aimd,aimd_x0.8,aimd_x0.95
//! cargo bench -p sturdy-tower --bench adaptive -- --bench --backoff-ms 100
//! ```
//!
//! For each client it prints the share of attempts the server refused
//! (over all, and after the first second, when the limit has found the
//! capacity), the calls that succeeded, the throughput (calls completed per
//! second over the capacity, over the whole run and in the steady state:
//! from the first second until the last call is taken up), the median and
//! 99th percentile call time, and the limit (averaged over the steady
//! state, and at the end). The limit is run with its defaults (decrease ×0.9) and, for
//! comparison, with TCP's ×0.5 and without slow start.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use sturdy::Stack;
use sturdy::retry::Backoff;
use sturdy_core::BoxError;
use sturdy_faults::{Capacity, Dashboard, FaultServer};
use sturdy_rate::{AdaptiveConcurrencyLayer, ConcurrencyGauge};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#;
const WARMUP: Duration = Duration::from_secs(1);

struct Setup {
    calls: usize,
    concurrency: usize,
    capacity: usize,
    service_time: Duration,
    /// The retry backoff's base and jitter, when not the stack's default.
    backoff: Option<Duration>,
}

impl Setup {
    /// Requests the server can serve per second.
    fn rate(&self) -> f64 {
        self.capacity as f64 / self.service_time.as_secs_f64()
    }
}

/// One call's end: when, how long it took, whether it got a 200.
#[derive(Clone, Copy)]
struct Ended {
    at: Duration,
    took: Duration,
    ok: bool,
}

struct Row {
    name: String,
    early: Dashboard,
    end: Dashboard,
    ends: Vec<Ended>,
    elapsed: Duration,
    /// When the last call was taken up by a caller: until then, all the
    /// callers had calls to make (the steady state).
    last_taken: Duration,
    /// The limit's gauges averaged over the steady state after the first
    /// second, and its value at the end.
    gauges: Option<Gauges>,
}

#[derive(Default, Clone, Copy)]
struct Gauges {
    limit: f64,
    in_flight: f64,
    end: usize,
}

async fn one_call<S, B>(svc: S, uri: &str) -> bool
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    let Ok(req) = Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
    else {
        return false;
    };
    let resp = match svc.oneshot(req).await {
        Ok(resp) => resp,
        Err(_) => return false,
    };
    resp.status() == 200 && resp.into_body().collect().await.is_ok()
}

async fn drive<S, B>(
    setup: &Setup,
    svc: S,
    name: &str,
    gauge: Option<ConcurrencyGauge>,
) -> Result<Row, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let server = FaultServer::builder()
        .capacity(Capacity::new(setup.capacity).service_time(setup.service_time))
        .start()
        .await?;
    let uri = format!("{}/v1/chat/completions", server.base_url());
    let left = Arc::new(Mutex::new(setup.calls));
    let last_taken = Arc::new(Mutex::new(Duration::ZERO));
    let ends = Arc::new(Mutex::new(Vec::with_capacity(setup.calls)));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..setup.concurrency {
        let (svc, uri, left, ends) = (svc.clone(), uri.clone(), left.clone(), ends.clone());
        let last_taken = last_taken.clone();
        workers.spawn(async move {
            loop {
                match left.lock() {
                    Ok(mut n) if *n > 0 => {
                        *n -= 1;
                        if *n == 0
                            && let Ok(mut t) = last_taken.lock()
                        {
                            *t = start.elapsed();
                        }
                    }
                    _ => return,
                }
                let began = Instant::now();
                let ok = one_call(svc.clone(), &uri).await;
                let end = Ended {
                    at: start.elapsed(),
                    took: began.elapsed(),
                    ok,
                };
                if let Ok(mut e) = ends.lock() {
                    e.push(end);
                }
            }
        });
    }
    tokio::time::sleep(WARMUP).await;
    let early = server.dashboard();
    // The limit's gauges, sampled every millisecond until the last call is
    // taken up.
    let sampler = gauge.map(|g| {
        let left = left.clone();
        tokio::spawn(async move {
            let (mut n, mut limit, mut in_flight) = (0u64, 0usize, 0usize);
            while left.lock().is_ok_and(|l| *l > 0) {
                n += 1;
                limit += g.current_limit();
                in_flight += g.in_flight();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let avg = |sum: usize| sum as f64 / n.max(1) as f64;
            (avg(limit), avg(in_flight), g)
        })
    });
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let gauges = match sampler {
        Some(s) => s.await.ok().map(|(limit, in_flight, g)| Gauges {
            limit,
            in_flight,
            end: g.current_limit(),
        }),
        None => None,
    };
    let end = server.dashboard();
    server.shutdown().await;
    let ends = ends.lock().map(|e| e.clone()).unwrap_or_default();
    let last_taken = last_taken.lock().map(|t| *t).unwrap_or(elapsed);
    Ok(Row {
        name: name.to_string(),
        early,
        end,
        ends,
        elapsed,
        last_taken,
        gauges,
    })
}

/// The stack's builder: its defaults, but for `--backoff-ms`.
fn stack(setup: &Setup) -> sturdy::StackBuilder {
    match setup.backoff {
        Some(b) => Stack::builder().map_retry(|r| r.backoff(Backoff::guide(b, b))),
        None => Stack::builder(),
    }
}

async fn run(setup: &Setup, variant: &str) -> Result<Row, BoxError> {
    let client = sturdy::client().no_proxy().build()?;
    let limit = match variant {
        "without" => None,
        "aimd" => Some(AdaptiveConcurrencyLayer::new()),
        "aimd_no_ss" => Some(
            AdaptiveConcurrencyLayer::builder()
                .slow_start(false)
                .build()?,
        ),
        other => match other.strip_prefix("aimd_x").map(str::parse::<f64>) {
            Some(Ok(decrease)) => Some(
                AdaptiveConcurrencyLayer::builder()
                    .decrease(decrease)
                    .build()?,
            ),
            _ => return Err(format!("unknown variant {other}").into()),
        },
    };
    match limit {
        None => {
            let stack = stack(setup).build()?;
            drive(setup, stack.layer(client), variant, None).await
        }
        Some(limit) => {
            let stack = stack(setup).attempt_layer(limit.clone()).build()?;
            drive(setup, stack.layer(client), variant, Some(limit.gauge())).await
        }
    }
}

fn share(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn print(setup: &Setup, r: &Row) {
    let ok = r.ends.iter().filter(|e| e.ok).count();
    let throughput = 100.0 * ok as f64 / r.elapsed.as_secs_f64() / setup.rate();
    // Steady: from the first second until the last call was taken up.
    let steady = r.last_taken.saturating_sub(WARMUP).as_secs_f64();
    let ok_steady = r
        .ends
        .iter()
        .filter(|e| e.ok && e.at >= WARMUP && e.at <= r.last_taken)
        .count();
    let throughput_steady = if steady > 0.0 {
        format!("{:.1} %", 100.0 * ok_steady as f64 / steady / setup.rate())
    } else {
        "-".to_string()
    };
    let mut took: Vec<Duration> = r.ends.iter().map(|e| e.took).collect();
    took.sort();
    let pct = |p: usize| {
        took.get((took.len() * p / 100).min(took.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let gauges = r.gauges.map_or("-".to_string(), |g| {
        format!("{:.1}/{:.1}/{}", g.limit, g.in_flight, g.end)
    });
    println!(
        "{:<11} {:>9} {:>9} {:>11} {:>10} {:>9} {:>10} {:>6.2} {:>7.0} {:>7.0} {:>16}",
        r.name,
        r.end.received,
        format!("{:.1} %", share(r.end.over_capacity, r.end.received)),
        format!(
            "{:.1} %",
            share(
                r.end.over_capacity - r.early.over_capacity,
                r.end.received - r.early.received
            )
        ),
        format!("{ok}/{}", setup.calls),
        format!("{throughput:.1} %"),
        throughput_steady,
        r.elapsed.as_secs_f64(),
        pct(50),
        pct(99),
        gauges,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a
    // short smoke run.
    let full = args.iter().any(|a| a == "--bench");
    let setup = Setup {
        calls: arg("--calls").unwrap_or(if full { 2000 } else { 200 }),
        concurrency: arg("--concurrency").unwrap_or(128).max(1),
        capacity: arg("--capacity").unwrap_or(20).clamp(1, 1_000_000),
        service_time: Duration::from_millis(arg("--service-ms").unwrap_or(50).min(60_000) as u64),
        backoff: arg("--backoff-ms").map(|ms| Duration::from_millis(ms.min(60_000) as u64)),
    };
    let variants: Vec<String> = match args.iter().position(|a| a == "--variants") {
        Some(i) => args
            .get(i + 1)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        None if full => ["without", "aimd", "aimd_x0.5", "aimd_no_ss"]
            .map(String::from)
            .to_vec(),
        None => ["without", "aimd"].map(String::from).to_vec(),
    };
    let Some(rt) = support::two_worker_runtime() else {
        return;
    };
    println!(
        "adaptive concurrency: {} calls by {} callers; the server serves {} at once for {} ms each ({:.0}/s) and answers 429 beyond; sturdy's Stack with its defaults (retries on{})",
        setup.calls,
        setup.concurrency,
        setup.capacity,
        setup.service_time.as_millis(),
        setup.rate(),
        setup.backoff.map_or(String::new(), |b| format!(
            "; backoff base and jitter {} ms",
            b.as_millis()
        )),
    );
    println!(
        "{:<11} {:>9} {:>9} {:>11} {:>10} {:>9} {:>10} {:>6} {:>7} {:>7} {:>16}",
        "client",
        "attempts",
        "refused",
        "refused@1s+",
        "ok",
        "thru",
        "thru@1s+",
        "secs",
        "p50 ms",
        "p99 ms",
        "limit avg/in/end"
    );
    for variant in &variants {
        match rt.block_on(run(&setup, variant)) {
            Ok(row) => print(&setup, &row),
            Err(e) => println!("{variant:<11} failed: {e}"),
        }
    }
    println!(
        "\nattempts: requests on the server's dashboard; refused: the share it answered 429 (over capacity), over all and after the first second;\nok: calls that got a 200; thru: calls that got a 200 per second over the capacity, over the whole run (its tail included: the last\ncalls refused wait out their backoff, 1 s or more, with nothing else left to do) and in the steady state (from the first second\nuntil the last call was taken up, all callers busy); p50/p99: call time, waits for a permit and retries included;\nlimit avg/in/end: the adaptive limit and the permits out, averaged over the steady state, and the limit at the end"
    );
}
