//! `sturdy-faults`: runs the fault server on loopback until killed.
//!
//! The first line of stdout is `listening on http://127.0.0.1:PORT`, so a
//! parent process can read the port when it asked for port 0.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use sturdy_faults::{Capacity, Fault, FaultParams, FaultServer, Mix, RateLimit};

/// A fault-injecting OpenAI-compatible HTTP server (HTTP/1.1 and h2c) on
/// loopback.
///
/// Serves POST /v1/chat/completions (JSON or SSE), GET /v1/models,
/// POST /v1/files (multipart: file, purpose), GET /v1/files/{id} and
/// GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches/{id},
/// POST /v1/batches/{id}/cancel, GET /v1/batches?limit=N&after=ID,
/// GET /dashboard (its counts as JSON) and GET /metrics (Prometheus text:
/// sturdy_faults_requests_total by route and code, the status answered or
/// `none` when dropped unanswered; it sums to the dashboard's received).
/// The dashboard and /metrics are never faulted nor counted. Batch jobs run for --job-seconds, in memory; metadata
/// `"sturdy_fate": "failed"` or `"expired"` scripts their ending. A request
/// may script its own faults with `x-sturdy-call: ID` and
/// `x-sturdy-fault: 503;retry-after-ms=200, 503, 200`; other requests draw
/// from --mix. A `close` does the request's work (creates the batch, stores
/// the file), then drops the connection unanswered. --rate-limit and
/// --capacity put a provider's limits in front of chat completions (429s
/// and 503s counted on the dashboard and /metrics like any answer).
#[derive(Debug, Parser)]
#[command(name = "sturdy-faults", version)]
struct Args {
    /// Address to listen on; must be loopback. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_loopback)]
    listen: SocketAddr,

    /// Random fault mix for unscripted requests, e.g.
    /// "503=0.05,429=0.05,reset=0.02,close=0.02,delay=0.02,stall=0.02".
    /// Each key is a fault entry (it may carry ";k=v" params), each value a
    /// probability; they must add up to at most 1. Without it, nothing is
    /// injected.
    #[arg(long)]
    mix: Option<Mix>,

    /// Seed for the mix's random draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Default milliseconds for `delay` entries without `ms`.
    #[arg(long)]
    delay_ms: Option<u64>,

    /// Default milliseconds for `stall` entries without `ms`.
    #[arg(long)]
    stall_ms: Option<u64>,

    /// Default milliseconds between chunks for `slow` entries without `ms`.
    #[arg(long)]
    slow_ms: Option<u64>,

    /// SSE chunks per streamed answer (default 5).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    chunks: Option<u16>,

    /// Add `retry-after-ms: N` to 429/503 answers drawn from the mix that
    /// carry no hint of their own.
    #[arg(long)]
    retry_after_ms: Option<u64>,

    /// Schedule an outage START_MS:LEN_MS after startup: connections are
    /// refused and open ones dropped for LEN_MS. Repeatable.
    #[arg(long, value_name = "START_MS:LEN_MS")]
    outage: Vec<OutageSpec>,

    /// From START_MS after startup, for LEN_MS, answer every unscripted
    /// request with ENTRY (a fault entry such as `503` or
    /// `429;retry-after=2`) instead of drawing from the mix. Repeatable.
    #[arg(long, value_name = "START_MS:LEN_MS:ENTRY")]
    window: Vec<WindowSpec>,

    /// Chance (0 to 1) of closing an idle keep-alive connection just as the
    /// next request arrives on it, unread: the stale-connection race.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    idle_close: f64,

    /// How long a batch job takes, in seconds (may be fractional, e.g. 0.4):
    /// validating for the first 10 %, in_progress until 80 %, finalizing
    /// until 100 %, then completed with an output file. A job with metadata
    /// `"sturdy_fate": "failed"` fails at 50 %, `"expired"` expires at 100 %;
    /// a cancel takes 10 %. Must be above zero. Default 10.
    #[arg(long, value_name = "SECS", value_parser = parse_job_seconds)]
    job_seconds: Option<Duration>,

    /// Rate-limit POST /v1/chat/completions with token buckets, as OpenAI's
    /// organisation limits, e.g. "rps=50,burst=50,tpm=100000,headers=true".
    /// Keys: rps=N or rpm=N (requests per second or per minute, exactly one;
    /// above 0); burst=N (the requests bucket's capacity; default one
    /// second's worth, rounded up, at least 1); tpm=N (tokens per minute;
    /// no token limit without it); token-burst=N (the token bucket's
    /// capacity; default one second's worth); headers=true|false (send
    /// x-ratelimit-{limit,remaining,reset}-{requests,tokens}, default true);
    /// retry-after=true|false (send retry-after-ms and retry-after on a 429,
    /// default true). A request's tokens are the server's estimate: body
    /// bytes / 4 plus its max_completion_tokens or max_tokens; one estimated
    /// above the token burst gets a 429 "Request too large". A bucket
    /// without room answers 429 rate_limit_exceeded and takes nothing.
    /// Requests whose fault (scripted or drawn) replaces the answer (a
    /// non-200 status, close, hostile) get it and bypass the limiter.
    #[arg(long, value_name = "SPEC")]
    rate_limit: Option<RateLimit>,

    /// Serve at most n chat completions at once, e.g.
    /// "n=20,over=429,service-ms=50": a request holds its slot from arrival
    /// until its response body is sent; beyond n it is refused at once with
    /// over=429 (default) or over=503, an "overloaded" error without
    /// rate-limit headers or retry-after. Each served chat completion waits
    /// service-ms (default 50) before its answer. Stands before
    /// --rate-limit; requests whose fault replaces the answer bypass it.
    #[arg(long, value_name = "SPEC")]
    capacity: Option<Capacity>,
}

fn parse_job_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>().map(Duration::try_from_secs_f64) {
        Ok(Ok(duration)) if !duration.is_zero() => Ok(duration),
        _ => Err(format!("{text:?} is not a number of seconds above zero")),
    }
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a probability in 0..=1")),
    }
}

fn parse_loopback(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("not an IP:PORT address: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address; sturdy-faults only listens on loopback"
        ));
    }
    Ok(addr)
}

/// One `--outage START_MS:LEN_MS`.
#[derive(Debug, Clone, Copy)]
struct OutageSpec {
    start: Duration,
    len: Duration,
}

impl FromStr for OutageSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<OutageSpec, String> {
        let (start, len) = text
            .split_once(':')
            .ok_or_else(|| format!("expected START_MS:LEN_MS, got {text:?}"))?;
        let ms = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("bad milliseconds {part:?}: {e}"))
        };
        Ok(OutageSpec {
            start: ms(start)?,
            len: ms(len)?,
        })
    }
}

/// One `--window START_MS:LEN_MS:ENTRY`.
#[derive(Debug, Clone)]
struct WindowSpec {
    span: OutageSpec,
    fault: Fault,
}

impl FromStr for WindowSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<WindowSpec, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(start), Some(len), Some(entry)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("expected START_MS:LEN_MS:ENTRY, got {text:?}"));
        };
        Ok(WindowSpec {
            span: format!("{start}:{len}").parse()?,
            fault: entry
                .parse()
                .map_err(|e| format!("bad fault entry {entry:?}: {e}"))?,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sturdy-faults: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let defaults = FaultParams::default();
    let params = FaultParams {
        delay_ms: args.delay_ms.unwrap_or(defaults.delay_ms),
        stall_ms: args.stall_ms.unwrap_or(defaults.stall_ms),
        slow_ms: args.slow_ms.unwrap_or(defaults.slow_ms),
        chunks: args.chunks.map_or(defaults.chunks, usize::from),
        retry_after_ms: args.retry_after_ms,
    };
    let mut builder = FaultServer::builder()
        .listen(args.listen)
        .mix(args.mix.unwrap_or_else(Mix::none))
        .seed(args.seed)
        .params(params)
        .idle_close(args.idle_close);
    if let Some(duration) = args.job_seconds {
        builder = builder.job_duration(duration);
    }
    for outage in &args.outage {
        builder = builder.outage_at(outage.start, outage.len);
    }
    for w in &args.window {
        builder = builder.window(w.span.start, w.span.len, w.fault.clone());
    }
    if let Some(limit) = args.rate_limit {
        builder = builder.rate_limit(limit);
    }
    if let Some(capacity) = args.capacity {
        builder = builder.capacity(capacity);
    }
    let server = match builder.start().await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("sturdy-faults: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };

    let mut stdout = std::io::stdout().lock();
    let announced =
        writeln!(stdout, "listening on {}", server.base_url()).and_then(|()| stdout.flush());
    drop(stdout);
    if let Err(e) = announced {
        eprintln!("sturdy-faults: cannot write to stdout: {e}");
        return ExitCode::FAILURE;
    }

    wait_for_signal().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
