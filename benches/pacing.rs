//! Pacing by the server's rate-limit headers: 2 000 calls at concurrency
//! 64 against the fault server's rate-limit mode (a token bucket of 50
//! requests per second, OpenAI-style `x-ratelimit-*` headers on every
//! answer, `retry-after` on its 429s), through the `Stack` with and without
//! the pacer (`StackBuilder::pacing`), in interleaved rounds. Prints the share of attempts answered
//! 429, the calls that succeeded, the attempts per call and the calls per
//! second beside the server's rate.
//!
//! ```sh
//! cargo bench -p sturdy-tower --bench pacing -- --bench
//! cargo bench -p sturdy-tower --bench pacing -- --bench --calls 2000 --rps 50 --rounds 2
//! cargo bench -p sturdy-tower --bench pacing -- --bench --paced-only
//! ```

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use sturdy::Stack;
use sturdy_faults::{FaultServer, RateLimit};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#;

struct Run {
    calls: u64,
    ok: u64,
    attempts: u64,
    too_many: u64,
    seconds: f64,
    held: u64,
}

async fn run(paced: bool, calls: u64, concurrency: u64, rps: f64) -> Result<Run, sturdy::BoxError> {
    let server = FaultServer::builder()
        .rate_limit(RateLimit::per_second(rps))
        .start()
        .await?;
    let uri = format!("{}/v1/chat/completions", server.base_url());
    let client = sturdy::client().no_proxy().build()?;
    let stack = Stack::builder().pacing(paced).build()?;
    let started = Instant::now();
    let ok = drive(stack.layer(client), &uri, calls, concurrency).await;
    let seconds = started.elapsed().as_secs_f64();
    let d = server.dashboard();
    server.shutdown().await;
    Ok(Run {
        calls,
        ok,
        attempts: d.received,
        too_many: d.too_many_requests,
        seconds,
        held: stack.pacer().stats().held(),
    })
}

async fn drive<S, B>(svc: S, uri: &str, calls: u64, concurrency: u64) -> u64
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<sturdy::BoxError> + Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (svc, uri, next) = (svc.clone(), uri.to_owned(), next.clone());
        workers.spawn(async move {
            let mut ok = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls {
                let Ok(req) = Request::post(&uri)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY)))
                else {
                    continue;
                };
                if let Ok(resp) = svc.clone().oneshot(req).await
                    && resp.status() == 200
                    && resp.into_body().collect().await.is_ok()
                {
                    ok += 1;
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(r) = workers.join_next().await {
        ok += r.unwrap_or(0);
    }
    ok
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
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    // `cargo test --benches` runs a short smoke run.
    let full = args.iter().any(|a| a == "--bench");
    let calls = arg("--calls").unwrap_or(if full { 2000.0 } else { 60.0 }) as u64;
    let rps = arg("--rps").unwrap_or(50.0);
    let rounds = arg("--rounds").unwrap_or(1.0) as u32;
    let concurrency = 64;
    let Some(rt) = support::two_worker_runtime() else {
        return;
    };
    println!(
        "pacing: {calls} calls at concurrency {concurrency}, server bucket {rps} requests/s (burst one second's worth), x-ratelimit-* headers on every answer"
    );
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>10} {:>9} {:>10} {:>8}",
        "client", "ok", "attempts", "429s", "429 share", "att/call", "calls/s", "held"
    );
    for round in 0..rounds {
        let modes: &[bool] = if args.iter().any(|a| a == "--paced-only") {
            &[true]
        } else {
            &[true, false]
        };
        for &paced in modes {
            match rt.block_on(run(paced, calls, concurrency, rps)) {
                Ok(r) => println!(
                    "{:<10} {:>6} {:>9} {:>9} {:>9.1}% {:>9.3} {:>10.1} {:>8}",
                    if paced { "paced" } else { "not paced" },
                    r.ok,
                    r.attempts,
                    r.too_many,
                    100.0 * r.too_many as f64 / r.attempts.max(1) as f64,
                    r.attempts as f64 / r.calls as f64,
                    r.ok as f64 / r.seconds,
                    r.held
                ),
                Err(e) => println!("round {round}: {e}"),
            }
        }
    }
}
