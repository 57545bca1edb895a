//! Retry storms: 1 000 concurrent callers, each making one call that starts
//! while an in-process fault server answers every request with a failure
//! for a window, then recovers. For each client — no retries, naive retries
//! (tower's `Retry`: 5xx/429/errors, `max_retries` 5, exponential backoff
//! with jitter, no budget, no hints), sturdy's defaults (the full `Stack`)
//! and, to separate the budget's effect from the hints', the `Stack`
//! without its budget — it reports the attempts per call the server answered during
//! the window, the callers that got a 200 and how long after the window that
//! took, and, for 429s with `retry-after`, the shortest wait before a
//! call's next attempt.
//!
//! ```sh
//! cargo bench -p sturdy-tower --bench storm
//! cargo bench -p sturdy-tower --bench storm -- --callers 1000 --scale 0.1
//! ```
//!
//! To keep the run short, the backoff of both retrying clients is the
//! guide's formula (base 1 s, up to 1 s of jitter) scaled by `--scale`
//! (default 0.1: base 100 ms, jitter up to 100 ms). The server's own
//! `retry-after` is never scaled; neither is sturdy's retry budget.
//!
//! Scenarios (window start and length after the server starts):
//! - `outage-503`: 503 for 4 s — longer than the naive client's five
//!   backoffs, so a full outage for everyone;
//! - `outage-503-30s`: 503 for 30 s (sturdy's two budgets only): the
//!   storm guard over a long outage;
//! - `blip-503`: 503 for 1 s — retries straddle the recovery;
//! - `429-retry-after`: 429 with `retry-after: 1` for 2 s.

mod support;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use sturdy::Stack;
use sturdy::retry::Backoff;
use sturdy_core::{BoxBody, BoxError};
use sturdy_faults::{Fault, FaultServer};
use tokio::time::Instant;
use tower::retry::Policy;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const CALL: &str = "x-bench-call";
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#;
/// Callers start this long after the window opens.
const LAUNCH: Duration = Duration::from_millis(100);
const WINDOW_START: Duration = Duration::from_millis(300);

/// One attempt as seen just above the client: which call, when it was sent,
/// when its head (or error) came back, and the status (0 for an error).
#[derive(Clone, Copy)]
struct Attempt {
    call: u32,
    sent: Instant,
    answered: Instant,
    status: u16,
    retry_after: Option<Duration>,
}

type Log = Arc<Mutex<Vec<Attempt>>>;

/// The client, wrapped so that every attempt is logged (below any retry).
fn logged(
    client: sturdy::Client,
    log: Log,
) -> impl Service<
    Request<BoxBody>,
    Response = Response<hyper::body::Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<BoxBody>| {
        let client = client.clone();
        let log = Arc::clone(&log);
        async move {
            let call = req
                .headers()
                .get(CALL)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(u32::MAX);
            let sent = Instant::now();
            let result = client.request(req).await;
            let answered = Instant::now();
            let (status, retry_after) = match &result {
                Ok(r) => (
                    r.status().as_u16(),
                    r.headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(Duration::from_secs),
                ),
                Err(_) => (0, None),
            };
            if let Ok(mut l) = log.lock() {
                l.push(Attempt {
                    call,
                    sent,
                    answered,
                    status,
                    retry_after,
                });
            }
            result
        }
    })
}

/// Naive retries: 5xx, 429 and errors, up to 5 times, `base · 2^n +
/// uniform(0, jitter)`; no budget, no server hints.
#[derive(Clone)]
struct Naive {
    left: u32,
    n: u32,
    base: Duration,
    jitter: Duration,
    rng: u64,
}

impl Naive {
    fn uniform(&mut self) -> f64 {
        // xorshift64*: enough for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<B, E> Policy<Request<Full<Bytes>>, Response<B>, E> for Naive {
    type Future = Pin<Box<tokio::time::Sleep>>;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Self::Future> {
        let failed = match result {
            Ok(r) => r.status().is_server_error() || r.status() == 429,
            Err(_) => true,
        };
        if !failed || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let delay =
            self.base.mul_f64(2f64.powi(self.n as i32)) + self.jitter.mul_f64(self.uniform());
        self.n += 1;
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        // Called before every attempt of a call: give each its own jitter
        // stream, or every caller would retry in lockstep.
        self.rng = SEEDS
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            | 1;
        let mut r = Request::new(req.body().clone());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.headers_mut() = req.headers().clone();
        Some(r)
    }
}

static SEEDS: AtomicU64 = AtomicU64::new(0x1234_5678_9abc_def1);

/// How one caller's call ended.
#[derive(Clone, Copy)]
struct Ended {
    ok: bool,
    at: Instant,
}

async fn one_call<S, B>(svc: S, uri: String, call: u32) -> Ended
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .header(CALL, call)
        .body(Full::new(Bytes::from_static(BODY)));
    let failed = Ended {
        ok: false,
        at: Instant::now(),
    };
    let Ok(req) = req else { return failed };
    let resp = match svc.oneshot(req).await {
        Ok(resp) => resp,
        Err(_) => {
            return Ended {
                ok: false,
                at: Instant::now(),
            };
        }
    };
    // Read to the end; a failed body read counts as a failure.
    let ok = resp.status() == 200;
    let ok = ok && resp.into_body().collect().await.is_ok();
    Ended {
        ok,
        at: Instant::now(),
    }
}

/// Starts `callers` calls at once through clones of `svc`; their endings.
async fn storm<S, B>(svc: S, uri: &str, callers: u32) -> Vec<Ended>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut set = tokio::task::JoinSet::new();
    for call in 0..callers {
        set.spawn(one_call(svc.clone(), uri.to_string(), call));
    }
    let mut out = Vec::with_capacity(callers as usize);
    while let Some(r) = set.join_next().await {
        if let Ok(e) = r {
            out.push(e);
        }
    }
    out
}

struct Scenario {
    name: &'static str,
    fault: &'static str,
    len: Duration,
}

struct Row {
    variant: &'static str,
    in_window: f64,
    total: f64,
    server_received: u64,
    ok: usize,
    t99: Option<Duration>,
    first_ok: Option<Duration>,
    last_end: Duration,
    min_gap_after_hint: Option<(Duration, Duration)>,
    early: usize,
}

async fn run(
    scenario: &Scenario,
    variant: &'static str,
    callers: u32,
    scale: f64,
) -> Result<Row, BoxError> {
    let fault: Fault = scenario.fault.parse()?;
    let before_start = Instant::now();
    let server = FaultServer::builder()
        .window(WINDOW_START, scenario.len, fault)
        .start()
        .await?;
    let window_end = before_start + WINDOW_START + scenario.len;
    let uri = format!("{}/v1/chat/completions", server.base_url());
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let client = sturdy::client().build().expect("a valid client");
    let svc = logged(client, Arc::clone(&log));
    let base = Duration::from_secs(1).mul_f64(scale);
    let launch = before_start + WINDOW_START + LAUNCH;
    tokio::time::sleep_until(launch).await;
    let ends = match variant {
        "no_retries" => {
            let s = ServiceBuilder::new()
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .service(svc);
            storm(s, &uri, callers).await
        }
        "naive" => {
            let policy = Naive {
                left: 5,
                n: 0,
                base,
                jitter: base,
                rng: 1,
            };
            let s = ServiceBuilder::new()
                .retry(policy)
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .service(svc);
            storm(s, &uri, callers).await
        }
        "sturdy" => {
            let stack = Stack::builder()
                .map_retry(|r| r.backoff(Backoff::guide(base, base)))
                .build()?;
            storm(stack.layer(svc), &uri, callers).await
        }
        "sturdy_impatient" => {
            // The budget as it was (tower's TpsBudget rules): no pacing,
            // a retry beyond the cap refused at once.
            let stack = Stack::builder()
                .map_retry(|r| r.backoff(Backoff::guide(base, base)))
                .budget(sturdy::retry::BudgetConfig::default().impatient())
                .build()?;
            storm(stack.layer(svc), &uri, callers).await
        }
        "sturdy_no_budget" => {
            let stack = Stack::builder()
                .map_retry(|r| r.backoff(Backoff::guide(base, base)))
                .no_budget()
                .build()?;
            storm(stack.layer(svc), &uri, callers).await
        }
        other => return Err(format!("unknown variant {other}").into()),
    };
    let dashboard = server.dashboard();
    server.shutdown().await;

    let fault_status: u16 = scenario.fault[..3].parse()?;
    let mut attempts = log.lock().map(|l| l.clone()).unwrap_or_default();
    // Attempts the server answered with the window's failure.
    let in_window = attempts.iter().filter(|a| a.status == fault_status).count();
    let total = attempts.len();

    let after = |t: Instant| t.saturating_duration_since(window_end);
    let mut ok_times: Vec<Duration> = ends.iter().filter(|e| e.ok).map(|e| after(e.at)).collect();
    ok_times.sort();
    let need = (callers as usize * 99).div_ceil(100);
    let t99 = ok_times
        .get(need.saturating_sub(1))
        .copied()
        .filter(|_| ok_times.len() >= need);
    let first_ok = ends
        .iter()
        .filter(|e| e.ok && e.at >= window_end)
        .map(|e| after(e.at))
        .min();
    let last_end = ends
        .iter()
        .map(|e| e.at.saturating_duration_since(launch))
        .max()
        .unwrap_or_default();

    // The wait before each call's next attempt after an answer that carried
    // a retry-after hint.
    attempts.sort_by_key(|a| (a.call, a.sent));
    let mut min_gap: Option<(Duration, Duration)> = None;
    let mut early = 0;
    for w in attempts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.call != b.call {
            continue;
        }
        if let Some(hint) = a.retry_after {
            let gap = b.sent.saturating_duration_since(a.answered);
            if gap < hint {
                early += 1;
            }
            if min_gap.is_none_or(|(g, _)| gap < g) {
                min_gap = Some((gap, hint));
            }
        }
    }
    Ok(Row {
        variant,
        in_window: in_window as f64 / callers as f64,
        total: total as f64 / callers as f64,
        server_received: dashboard.received,
        ok: ok_times.len(),
        t99,
        first_ok,
        last_end,
        min_gap_after_hint: min_gap,
        early,
    })
}

fn ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
        None => "never".to_string(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    // `cargo bench` passes --bench; `cargo test --benches` does not: then a
    // short smoke run.
    let full = args.iter().any(|a| a == "--bench");
    let callers: u32 = arg("--callers")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1000 } else { 50 });
    let scale: f64 = arg("--scale")
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0 && *s <= 1.0)
        .unwrap_or(0.1);
    let only = arg("--scenario").or_else(|| (!full).then(|| "blip-503".to_string()));
    let scenarios = [
        Scenario {
            name: "outage-503",
            fault: "503",
            len: Duration::from_secs(4),
        },
        Scenario {
            name: "outage-503-30s",
            fault: "503",
            len: Duration::from_secs(30),
        },
        Scenario {
            name: "blip-503",
            fault: "503",
            len: Duration::from_secs(1),
        },
        Scenario {
            name: "429-retry-after",
            fault: "429;retry-after=1",
            len: Duration::from_secs(2),
        },
    ];
    let Some(rt) = support::two_worker_runtime() else {
        return;
    };
    println!(
        "retry storms: {callers} callers start together {} ms into the window; backoff scaled by {scale} (base {:.0} ms, jitter up to {:.0} ms); retry-after and sturdy's budget unscaled",
        LAUNCH.as_millis(),
        1000.0 * scale,
        1000.0 * scale
    );
    for sc in &scenarios {
        if only.as_deref().is_some_and(|o| o != sc.name) {
            continue;
        }
        println!(
            "\n{}: every request answered `{}` for {:.1} s",
            sc.name,
            sc.fault,
            sc.len.as_secs_f64()
        );
        println!(
            "{:<16} {:>10} {:>9} {:>9} {:>6} {:>10} {:>11} {:>10} {:>24}",
            "client",
            "att/call@w",
            "att/call",
            "srv recv",
            "ok",
            "99% ok +",
            "first ok +",
            "last end",
            "min wait/hint"
        );
        // The long outage: sturdy's two budgets only (each run lasts it).
        let variants: &[&'static str] = if sc.len > Duration::from_secs(10) {
            &["sturdy", "sturdy_impatient"]
        } else {
            &[
                "no_retries",
                "naive",
                "sturdy",
                "sturdy_impatient",
                "sturdy_no_budget",
            ]
        };
        for &variant in variants {
            match rt.block_on(run(sc, variant, callers, scale)) {
                Ok(r) => {
                    let gap = match r.min_gap_after_hint {
                        Some((g, h)) => format!(
                            "{:.1}/{:.0} ms ({} early)",
                            g.as_secs_f64() * 1e3,
                            h.as_secs_f64() * 1e3,
                            r.early
                        ),
                        None => "-".to_string(),
                    };
                    println!(
                        "{:<16} {:>10.3} {:>9.3} {:>9} {:>6} {:>10} {:>11} {:>10} {:>24}",
                        r.variant,
                        r.in_window,
                        r.total,
                        r.server_received,
                        r.ok,
                        ms(r.t99),
                        ms(r.first_ok),
                        format!("{:.0} ms", r.last_end.as_secs_f64() * 1e3),
                        gap
                    );
                }
                Err(e) => println!("{variant:<16} failed: {e}"),
            }
        }
    }
    println!(
        "\natt/call@w: attempts answered with the window's failure per caller; att/call: all attempts per caller; srv recv: requests on the server's dashboard;\nok: callers that got a 200; 99% ok +, first ok +: after the window's end; last end: the slowest caller, from the launch;\nmin wait/hint: shortest wait before a call's next attempt after an answer with retry-after, and the hint (early: attempts sent before it)"
    );
}
