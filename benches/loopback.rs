//! Client cost on loopback: N small JSON POSTs to `/v1/chat/completions` at
//! concurrency 32 through the bare `sturdy::client()`, tower's `Timeout` +
//! `Retry` (a minimal status policy) over it, and the full `Stack` over it.
//! The fault server (no faults) runs as its own process — this binary
//! re-started with `--serve-faults` — so only the client's cost is counted.
//! The `*_openai_headers` variants run against a second one
//! (`--serve-faults --openai-headers`) whose every answer carries OpenAI's
//! six `x-ratelimit-*` headers, as OpenAI's API does, from a rate limit it
//! never reaches.
//!
//! ```sh
//! # interleaved rounds: median throughput and client CPU per call, ratios to bare
//! # (run directly, the binary needs --bench for the full defaults)
//! cargo bench -p sturdy-tower --bench loopback -- --calls 20000 --rounds 5
//! # instructions per call under callgrind, (Ir(N2) - Ir(N1)) / (N2 - N1) per variant
//! cargo bench -p sturdy-tower --bench loopback -- --callgrind --n1 1000 --n2 3000
//! # the same, 3 interleaved rounds (variant order rotated), medians and the
//! # spread of each ratio; --only keeps bare and the variants named
//! cargo bench -p sturdy-tower --bench loopback -- --callgrind --repeat 3 --only stack,retry
//! # the sizes of each variant's response future and body
//! cargo bench -p sturdy-tower --bench loopback -- --sizes
//! # one variant once (start a server with --serve-faults, or let it start one)
//! valgrind --tool=callgrind --trace-children=no target/release/deps/loopback-HASH \
//!     --variant stack --calls 3000 --server http://127.0.0.1:PORT
//! # (an *_openai_headers variant takes --headers-server instead)
//! ```
//!
//! The client runs on a current-thread tokio runtime (one core), the server
//! on another current-thread runtime in its own process (the other core).

#[allow(dead_code)]
#[path = "overhead.rs"]
mod overhead;

use std::io::{BufRead, BufReader, Read};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use overhead::{StatusPolicy, arg_value, median};
use prometheus_client::registry::Registry;
use sturdy::Stack;
use sturdy::metrics::{FailureMetricsLayer, PrometheusRecorder};
use sturdy::retry::{RetryLayer, RetryPolicy};
use sturdy::timeout::{AttemptTimeoutLayer, WorkloadTimeoutLayer};
use sturdy_core::BoxError;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const VARIANTS: [&str; 19] = [
    "bare",
    "plan_only",
    "workload_timeout",
    "attempt_timeout",
    "attempt_timeout_capture",
    "retry",
    "metrics_attempts",
    "stack",
    "stack_prometheus",
    "stack_no_pacing",
    "stack_no_retries",
    "stack_no_budget",
    "tower_timeout_retry",
    "nested_6",
    "nested_6_state",
    "bare_openai_headers",
    "stack_openai_headers",
    "bare_stream",
    "stack_stream",
];

/// The variants whose calls ask for a streamed answer (`"stream": true`)
/// of 64 SSE events ([`STREAM_FAULT`]), each its own body frame: what the
/// layers cost per frame of a chat stream.
const STREAM_SUFFIX: &str = "_stream";
/// SSE events per streamed answer: the per-call script asks the fault
/// server for 64 (`chunks`).
const STREAM_FAULT: &str = "200;chunks=64";
/// Marks a streaming variant's URI (the fault server routes by path and
/// ignores the query): [`request`] then sends the streaming body.
const STREAM_QUERY: &str = "?bench=stream";

/// The variants run against the second server, whose every answer carries
/// OpenAI's six `x-ratelimit-*` headers.
const HEADERS_SUFFIX: &str = "_openai_headers";

/// The two fault servers' base URLs: one that answers plainly, and one
/// whose answers carry OpenAI's rate-limit headers (a rate limit it never
/// reaches), as every answer of OpenAI's API does.
struct Servers {
    plain: String,
    headers: String,
}

impl Servers {
    fn base_for(&self, variant: &str) -> &str {
        if variant.ends_with(HEADERS_SUFFIX) {
            &self.headers
        } else {
            &self.plain
        }
    }
}
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#;
const STREAM_BODY: &[u8] =
    br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":64,"stream":true}"#;
const CONCURRENCY: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |flag: &str, default: u64| -> u64 {
        arg_value(&args, flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if args.iter().any(|a| a == "--serve-faults") {
        serve_faults(args.iter().any(|a| a == "--openai-headers"));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.iter().any(|a| a == "--sizes") {
        // What each variant moves: its response future and response body.
        let rt = runtime();
        println!("{:<24} {:>12} {:>12}", "variant", "future B", "body B");
        for name in VARIANTS {
            rt.block_on(with_variant(name, "http://127.0.0.1:1", Sizes(name)));
        }
        return;
    }
    let server = |flag: &str, headers: bool| match arg_value(&args, flag) {
        Some(url) => (None, url),
        None => match spawn_server(headers) {
            Ok((child, url)) => (Some(child), url),
            Err(e) => {
                eprintln!("cannot start the fault server: {e}");
                std::process::exit(1);
            }
        },
    };
    // One variant run once needs only its own server.
    let variant = arg_value(&args, "--variant");
    let needs = |headers: bool| {
        variant
            .as_deref()
            .is_none_or(|v| v.ends_with(HEADERS_SUFFIX) == headers)
    };
    let (plain_server, plain) = match needs(false) {
        true => server("--server", false),
        false => (None, String::new()),
    };
    let (headers_server, headers) = match needs(true) {
        true => server("--headers-server", true),
        false => (None, String::new()),
    };
    let servers = Servers { plain, headers };
    if let Some(variant) = variant {
        let calls = num("--calls", 3000);
        let rt = runtime();
        rt.block_on(async {
            with_variant(&variant, servers.base_for(&variant), RunOnce { calls }).await;
        });
    } else if args.iter().any(|a| a == "--callgrind") {
        let only = arg_value(&args, "--only");
        let chosen: Vec<&'static str> = VARIANTS
            .into_iter()
            .filter(|v| {
                *v == "bare"
                    || only
                        .as_deref()
                        .is_none_or(|o| o.split(',').any(|x| x == *v))
            })
            .collect();
        let repeat = num("--repeat", 1).max(1) as usize;
        callgrind(
            &servers,
            &chosen,
            num("--n1", 1000),
            num("--n2", 3000),
            repeat,
        );
    } else if args.iter().any(|a| a == "--bench") {
        rounds(
            &servers,
            num("--calls", 20_000),
            num("--rounds", 5) as usize,
        );
    } else {
        // `cargo test --benches` passes no --bench: a short smoke run.
        rounds(&servers, num("--calls", 300), num("--rounds", 1) as usize);
    }
    drop((plain_server, headers_server));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The server process: a fault server with no faults on 127.0.0.1:0 (with
/// `headers`, OpenAI's `x-ratelimit-*` headers on every answer, from
/// buckets of requests and tokens too large to run dry); prints its URL,
/// then serves until its stdin closes (the bench has ended).
fn serve_faults(headers: bool) {
    let rt = runtime();
    rt.block_on(async {
        let mut builder = sturdy_faults::FaultServer::builder();
        if headers {
            builder = builder.rate_limit(
                sturdy_faults::RateLimit::per_second(1e9)
                    .burst(1_000_000_000)
                    .tokens_per_minute(1e12)
                    .token_burst(1_000_000_000_000),
            );
        }
        let server = match builder.start().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fault server: {e}");
                return;
            }
        };
        println!("{}", server.base_url());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = tx.send(());
        });
        let _ = rx.await;
        server.shutdown().await;
    });
}

/// The server child; killed (and reaped) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(headers: bool) -> Result<(Server, String), BoxError> {
    let exe = std::env::current_exe()?;
    let mut child = Server(
        Command::new(exe)
            .arg("--serve-faults")
            .args(headers.then_some("--openai-headers"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().to_string();
    if !url.starts_with("http://127.0.0.1:") {
        return Err(format!("unexpected server output {url:?}").into());
    }
    Ok((child, url))
}

fn request(uri: &str) -> Request<Full<Bytes>> {
    let req = Request::post(uri).header("content-type", "application/json");
    if uri.ends_with(STREAM_QUERY) {
        req.header(sturdy_faults::FAULT_HEADER, STREAM_FAULT)
            .body(Full::new(Bytes::from_static(STREAM_BODY)))
    } else {
        req.body(Full::new(Bytes::from_static(BODY)))
    }
    .expect("a valid request")
}

/// `calls` calls at concurrency 32 through clones of `svc`, each read to
/// the end of its body; panics on a failed call (the server injects none).
async fn drive<S, B>(svc: &S, uri: &str, calls: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let left = Arc::new(AtomicU64::new(calls));
    let workers = (0..CONCURRENCY).map(|_| {
        let mut svc = svc.clone();
        let left = Arc::clone(&left);
        async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let resp = svc
                    .ready()
                    .await
                    .expect("ready")
                    .call(request(uri))
                    .await
                    .expect("the call succeeds");
                assert_eq!(resp.status(), 200);
                let mut body = pin!(resp.into_body());
                while let Some(frame) = body.frame().await {
                    std::hint::black_box(frame.expect("the body is read to its end"));
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
}

/// Something done with one variant's service.
trait Visit {
    async fn visit<S, B>(self, svc: S, uri: &str) -> Sample
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
        B: Body,
        B::Error: std::fmt::Debug;
}

/// Builds variant `name` over a fresh `sturdy::client()` and visits it.
async fn with_variant<V: Visit>(name: &str, base: &str, v: V) -> Sample {
    let query = match name.ends_with(STREAM_SUFFIX) {
        true => STREAM_QUERY,
        false => "",
    };
    let uri = format!("{base}/v1/chat/completions{query}");
    let client = sturdy::client().build().expect("a valid client");
    match name {
        "bare" | "bare_openai_headers" | "bare_stream" => {
            let svc = ServiceBuilder::new()
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .service(client);
            v.visit(svc, &uri).await
        }
        // Not a layer: the floor under every layer that makes the call's
        // plan (the workload timeout, the retry layer, the call metrics):
        // the request's extension map, the boxed plan and its shared
        // context, made for each request and dropped with it.
        "plan_only" => {
            let svc = ServiceBuilder::new()
                .map_request(|mut r: Request<Full<Bytes>>| {
                    std::hint::black_box(sturdy::CallPlan::of_request(&mut r));
                    r.map(sturdy::boxed)
                })
                .service(client);
            v.visit(svc, &uri).await
        }
        // Not sturdy: six layers that only wrap the future and the body of
        // the one below, as each of the `Stack`'s six does, and do nothing
        // else: what nesting alone costs, apart from any layer's work; and
        // the same with 160 bytes of state in each future (about the mean
        // of the `Stack`'s layers' own, `--sizes`), moved as each layer's
        // future is moved into the next.
        "nested_6" => v.visit(nested::<0>(client), &uri).await,
        "nested_6_state" => v.visit(nested::<20>(client), &uri).await,
        "tower_timeout_retry" => {
            let svc = ServiceBuilder::new()
                .retry(StatusPolicy(5))
                .timeout(Duration::from_secs(60))
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .service(client);
            v.visit(svc, &uri).await
        }
        "workload_timeout" => {
            let svc = ServiceBuilder::new()
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .layer(WorkloadTimeoutLayer::new())
                .service(client);
            v.visit(svc, &uri).await
        }
        "attempt_timeout" => {
            let svc = ServiceBuilder::new()
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .layer(AttemptTimeoutLayer::new())
                .service(client);
            v.visit(svc, &uri).await
        }
        // With hyper-util's connection capture, which tells a connect
        // timeout from a headers timeout when no retry layer's body does.
        "attempt_timeout_capture" => {
            let attempt = AttemptTimeoutLayer::builder()
                .capture_connection(true)
                .build()
                .expect("the default profiles are valid");
            let svc = ServiceBuilder::new()
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .layer(attempt)
                .service(client);
            v.visit(svc, &uri).await
        }
        "retry" => {
            let svc = RetryLayer::new(RetryPolicy::default()).layer(client);
            v.visit(svc, &uri).await
        }
        "metrics_attempts" => {
            let mut registry = Registry::default();
            let svc = ServiceBuilder::new()
                .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
                .layer(FailureMetricsLayer::attempts(PrometheusRecorder::new(
                    &mut registry,
                )))
                .service(client);
            v.visit(svc, &uri).await
        }
        "stack" | "stack_openai_headers" | "stack_stream" => {
            let stack = Stack::builder()
                .build()
                .expect("the default stack is valid");
            v.visit(stack.layer(client), &uri).await
        }
        "stack_prometheus" => {
            let mut registry = Registry::default();
            let stack = Stack::builder()
                .recorder(PrometheusRecorder::new(&mut registry))
                .build()
                .expect("the default stack is valid");
            v.visit(stack.layer(client), &uri).await
        }
        // The default stack less one part, each: what that part costs in
        // the stack (its layers stay; only their work is turned off).
        "stack_no_pacing" => {
            let stack = Stack::builder()
                .pacing(false)
                .build()
                .expect("the stack is valid");
            v.visit(stack.layer(client), &uri).await
        }
        "stack_no_retries" => {
            let stack = Stack::builder()
                .max_retries(0)
                .build()
                .expect("the stack is valid");
            v.visit(stack.layer(client), &uri).await
        }
        "stack_no_budget" => {
            let stack = Stack::builder()
                .no_budget()
                .build()
                .expect("the stack is valid");
            v.visit(stack.layer(client), &uri).await
        }
        other => panic!("unknown variant {other:?}; one of {VARIANTS:?}"),
    }
}

/// `client` under six [`pass::Pass`] layers whose futures hold `WORDS`
/// words of state each.
fn nested<const WORDS: usize>(
    client: sturdy::Client,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl Body<Data = Bytes, Error = impl std::fmt::Debug>>,
    Error = impl std::fmt::Debug,
> + Clone {
    use pass::Pass;
    ServiceBuilder::new()
        .layer(tower::layer::layer_fn(Pass::<_, WORDS>))
        .layer(tower::layer::layer_fn(Pass::<_, WORDS>))
        .layer(tower::layer::layer_fn(Pass::<_, WORDS>))
        .layer(tower::layer::layer_fn(Pass::<_, WORDS>))
        .layer(tower::layer::layer_fn(Pass::<_, WORDS>))
        .layer(tower::layer::layer_fn(Pass::<_, WORDS>))
        .map_request(|r: Request<Full<Bytes>>| r.map(sturdy::boxed))
        .service(client)
}

/// Prints the sizes of a variant's response future and body.
struct Sizes(&'static str);

impl Visit for Sizes {
    async fn visit<S, B>(self, _svc: S, _uri: &str) -> Sample
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
        B: Body,
        B::Error: std::fmt::Debug,
    {
        println!(
            "{:<24} {:>12} {:>12}",
            self.0,
            std::mem::size_of::<S::Future>(),
            std::mem::size_of::<B>()
        );
        Sample::default()
    }
}

/// 200 warm-up calls (connections opened), then `calls` calls.
struct RunOnce {
    calls: u64,
}

#[derive(Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    cpu_ticks: u64,
    cpu_ns: u64,
}

impl Visit for RunOnce {
    async fn visit<S, B>(self, svc: S, uri: &str) -> Sample
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
        B: Body,
        B::Error: std::fmt::Debug,
    {
        drive(&svc, uri, 200).await;
        let cpu = cpu_ticks();
        let ns = cpu_ns();
        let start = Instant::now();
        drive(&svc, uri, self.calls).await;
        Sample {
            wall: start.elapsed(),
            cpu_ticks: cpu_ticks().saturating_sub(cpu),
            cpu_ns: cpu_ns().saturating_sub(ns),
        }
    }
}

/// utime + stime of this process, in clock ticks (/proc/self/stat fields
/// 14 and 15). The server is another process: its time is not here.
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name may hold spaces: count fields after its ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// On-CPU nanoseconds of this process's live threads (the first field of
/// each /proc/self/task/*/schedstat): the same CPU time as `cpu_ticks`, at
/// nanosecond rather than 10 ms resolution.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `rounds` rounds of every variant in rotated order, `calls` calls each;
/// medians of throughput and CPU per call, and their ratios to bare.
fn rounds(servers: &Servers, calls: u64, rounds: usize) {
    let tck = clock_ticks_per_sec();
    let rt = runtime();
    let mut thr: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut cpu_ns: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let i = (k + round) % VARIANTS.len();
            let url = servers.base_for(VARIANTS[i]);
            let s = rt.block_on(with_variant(VARIANTS[i], url, RunOnce { calls }));
            thr[i].push(calls as f64 / s.wall.as_secs_f64());
            cpu[i].push(s.cpu_ticks as f64 / tck / calls as f64 * 1e6);
            cpu_ns[i].push(s.cpu_ns as f64 / calls as f64 / 1e3);
        }
    }
    let thr: Vec<f64> = thr.iter_mut().map(|v| median(v)).collect();
    let cpu: Vec<f64> = cpu.iter_mut().map(|v| median(v)).collect();
    let cpu_ns: Vec<f64> = cpu_ns.iter_mut().map(|v| median(v)).collect();
    println!(
        "loopback: {rounds} rounds x {calls} calls per variant at concurrency {CONCURRENCY}, order rotated; medians"
    );
    println!(
        "client CPU: utime+stime from /proc/self/stat (10 ms ticks), and the sum of /proc/self/task/*/schedstat (ns)"
    );
    println!(
        "{:<22} {:>10} {:>7} {:>11} {:>7} {:>11} {:>7}",
        "variant", "calls/s", "x bare", "stat µs/call", "x bare", "sched µs/call", "x bare"
    );
    for (i, name) in VARIANTS.iter().enumerate() {
        println!(
            "{name:<22} {:>10.0} {:>7.3} {:>11.2} {:>7.3} {:>11.2} {:>7.3}",
            thr[i],
            thr[i] / thr[0],
            cpu[i],
            cpu[i] / cpu[0],
            cpu_ns[i],
            cpu_ns[i] / cpu_ns[0]
        );
    }
}

/// Instructions and allocations per call of `variants` (`bare` first):
/// this binary under callgrind (server excluded: it is another process,
/// not traced) with N1 and N2 calls, (X(N2) - X(N1)) / (N2 - N1); `repeat`
/// rounds, each in a rotated order and each ratio taken to the same
/// round's `bare`: the medians, and the spread of the ratios.
fn callgrind(servers: &Servers, variants: &[&'static str], n1: u64, n2: u64, repeat: usize) {
    // rounds[r][i]: variant i in round r.
    let mut rounds: Vec<Vec<overhead::PerCall>> = Vec::new();
    for r in 0..repeat {
        let mut round = vec![None; variants.len()];
        for k in 0..variants.len() {
            let i = (k + r) % variants.len();
            let args = [
                "--server",
                &servers.plain,
                "--headers-server",
                &servers.headers,
            ];
            match overhead::callgrind_per_call("loopback", variants[i], n1, n2, &args) {
                Ok(pc) => round[i] = Some(pc),
                Err(e) => {
                    eprintln!("{e}");
                    return;
                }
            }
        }
        rounds.push(round.into_iter().flatten().collect());
    }
    println!(
        "loopback instructions and allocations per call (callgrind, client process only, (X({n2}) - X({n1})) / {}), {repeat} round(s), medians:",
        n2 - n1
    );
    println!(
        "{:<22} {:>12} {:>8} {:>15} {:>10} {:>10}",
        "variant", "Ir/call", "x bare", "x bare min-max", "allocs", "- bare"
    );
    let med = |mut v: Vec<f64>| -> f64 { median(&mut v) };
    let bare_allocs = med(rounds.iter().map(|r| r[0].allocs).collect());
    for (i, name) in variants.iter().enumerate() {
        let ir = med(rounds.iter().map(|r| r[i].ir).collect());
        let ratios: Vec<f64> = rounds.iter().map(|r| r[i].ir / r[0].ir).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        let ratio = med(ratios);
        let allocs = med(rounds.iter().map(|r| r[i].allocs).collect());
        println!(
            "{name:<22} {ir:>12.0} {ratio:>8.3} {:>15} {allocs:>10.1} {:>10.1}",
            format!("{lo:.3}-{hi:.3}"),
            allocs - bare_allocs
        );
    }
}

/// A layer that does nothing but nest: its service hands the request on,
/// its future wraps the inner future beside `WORDS` words of state, its
/// body wraps the inner body (the `nested_6` and `nested_6_state`
/// variants).
mod pass {
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use http::{Request, Response};
    use http_body::{Body, Frame, SizeHint};
    use tower::Service;

    /// The service: calls the inner one.
    #[derive(Clone)]
    pub struct Pass<S, const WORDS: usize>(pub S);

    impl<S, B, RB, const WORDS: usize> Service<Request<B>> for Pass<S, WORDS>
    where
        S: Service<Request<B>, Response = Response<RB>>,
    {
        type Response = Response<PassBody<RB>>;
        type Error = S::Error;
        type Future = PassFuture<S::Future, WORDS>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, req: Request<B>) -> Self::Future {
            // State the optimiser cannot drop, made from the request as a
            // layer's would be.
            let word = req.headers().len() as u64;
            PassFuture {
                inner: self.0.call(req),
                state: std::hint::black_box([word; WORDS]),
            }
        }
    }

    /// The response future: the inner one's answer, its body wrapped.
    pub struct PassFuture<F, const WORDS: usize> {
        inner: F,
        state: [u64; WORDS],
    }

    impl<F, RB, E, const WORDS: usize> std::future::Future for PassFuture<F, WORDS>
    where
        F: std::future::Future<Output = Result<Response<RB>, E>>,
    {
        type Output = Result<Response<PassBody<RB>>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            // SAFETY: `inner` is pinned structurally and never moved out;
            // `state` is not pinned.
            let this = unsafe { self.get_unchecked_mut() };
            std::hint::black_box(&this.state);
            let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
            let resp = ready!(inner.poll(cx))?;
            Poll::Ready(Ok(resp.map(PassBody)))
        }
    }

    /// The response body: the inner one's frames, passed on.
    pub struct PassBody<B>(B);

    impl<B: Body> Body for PassBody<B> {
        type Data = B::Data;
        type Error = B::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
            // SAFETY: structural pinning of the only field.
            unsafe { self.map_unchecked_mut(|s| &mut s.0) }.poll_frame(cx)
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.0.size_hint()
        }
    }
}
