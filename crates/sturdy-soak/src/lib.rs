//! The soak: a long run of chat completions through `sturdy::client()` and
//! the full [`Stack`], against an in-process fault server that uses every
//! fault it has (statuses with and without hints, resets, closes, delays,
//! stalls, slow bodies, hostile heads), outages, windows in which it fails
//! everything, idle keep-alive connections closed as they are reused, and
//! callers that give up at random points (before the head, mid-body, during
//! a backoff). Afterwards it checks that nothing was lost:
//!
//! - no panic, anywhere in the process;
//! - every call and every attempt recorded exactly once (the attempts the
//!   metrics saw are the requests the client was handed);
//! - every retry counted was sent: retries = attempts − calls;
//! - nothing left in flight, in the snapshot and in Prometheus;
//! - the server received at least what the client saw acknowledged and at
//!   most what it sent;
//! - resident memory at the end within 10 % of its value at a checkpoint
//!   early in the run;
//! - no tokio task left once the client is dropped and the server stopped.
//!
//! `cargo run --release -p sturdy-soak` runs the full 200 000 calls; the
//! test suite runs the same code on a few thousand.
//!
//! ```no_run
//! let report = sturdy_soak::soak(&sturdy_soak::SoakConfig::short(2_000))?;
//! println!("{report}");
//! assert!(report.passed());
//! # Ok::<(), String>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use prometheus_client::registry::Registry;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sturdy::metrics::{Both, PrometheusRecorder, Report, Scope, ServerCounts, SnapshotRecorder};
use sturdy::retry::{Backoff, RetryPolicy};
use sturdy::{BoxBody, BoxError, Profile, Profiles, Reach, RetrySafe, Stack, Workload};
use sturdy_faults::{Dashboard, Fault, FaultParams, FaultServer, Mix};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

/// The fault mix of the soak's server: every kind of fault it has, about
/// one attempt in five.
pub const SOAK_MIX: &str = "503=0.03,503;retry-after-ms=20=0.02,429;retry-after-ms=40=0.02,\
429=0.01,500=0.01,502=0.01,504=0.01,408=0.005,400=0.003,503;retry-after-ms=5000=0.002,\
reset=0.02,close=0.02,delay;ms=1000=0.01,stall;ms=1000=0.01,slow;ms=2=0.02,\
hostile;headers=0=0.005,hostile=0.005";

/// Chance that the server closes an idle connection as it is reused.
pub const IDLE_CLOSE: f64 = 0.02;

/// Every workload's profile in the soak: the guide's limits scaled down so
/// that delays (1 s) and stalls (1 s) trip `headers` and `read`.
pub const PROFILE: Profile = Profile {
    ready: Duration::from_millis(200),
    headers: Duration::from_millis(200),
    read: Duration::from_millis(200),
    total: Duration::from_secs(2),
};

/// An outage each time this many more calls have ended (half as many in a
/// run shorter than twice this): by count, not by clock, so that a run
/// meets its outages however fast the machine is. Connections are refused,
/// open ones dropped.
pub const OUTAGE_EVERY: u64 = 20_000;
/// How long each outage lasts.
pub const OUTAGE_LEN: Duration = Duration::from_millis(100);
/// A window of 503s for everything, `WINDOW_LEN` long, every `WINDOW_EVERY`
/// (from 1 s after the server starts, for ten minutes).
pub const WINDOW_EVERY: Duration = Duration::from_secs(5);
/// How long each 503 window lasts.
pub const WINDOW_LEN: Duration = Duration::from_millis(250);

/// The longest any one call may take before the soak calls it stuck: far
/// past the 2 s deadline every call carries.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);

/// The most resident memory may grow between the checkpoint and the end.
pub const MEMORY_GROWTH_LIMIT: f64 = 0.10;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Calls in all.
    pub calls: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// After this many calls, resident memory is read for the growth check.
    pub checkpoint: u64,
    /// Seed of the server's mix and of the callers' choices.
    pub seed: u64,
    /// The runtime's worker threads.
    pub worker_threads: usize,
    /// Speak HTTP/2 (h2c, many calls per connection) instead of HTTP/1.1.
    pub http2: bool,
}

impl SoakConfig {
    /// The full soak: 200 000 calls at concurrency 64, memory read after
    /// the first 20 000.
    pub fn full() -> SoakConfig {
        SoakConfig {
            calls: 200_000,
            concurrency: 64,
            checkpoint: 20_000,
            seed: 7,
            worker_threads: 2,
            http2: false,
        }
    }

    /// The same run on `calls` calls. Memory is read half-way: a run this
    /// short is still warming up (pool, allocator) after its first tenth.
    pub fn short(calls: u64) -> SoakConfig {
        SoakConfig {
            calls,
            checkpoint: calls / 2,
            ..SoakConfig::full()
        }
    }

    /// Calls between two outages.
    pub fn outage_every(&self) -> u64 {
        OUTAGE_EVERY.min(self.calls / 2).max(1)
    }

    fn validate(&self) -> Result<(), String> {
        if self.calls == 0 || self.concurrency == 0 || self.worker_threads == 0 {
            return Err("calls, concurrency and worker threads must be at least 1".into());
        }
        if self.checkpoint == 0 || self.checkpoint >= self.calls {
            return Err(format!(
                "the memory checkpoint ({}) must fall inside the run (1 to {})",
                self.checkpoint,
                self.calls - 1
            ));
        }
        Ok(())
    }
}

impl Default for SoakConfig {
    fn default() -> Self {
        SoakConfig::full()
    }
}

/// How a caller ends its call: most wait for the whole answer; the others
/// give up at a random point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Reads the whole body.
    Complete,
    /// Drops the call after up to 50 ms: before the head, mostly.
    Early,
    /// Drops the call after up to 500 ms: during retries and backoffs.
    Late,
    /// Takes the head, drops the body unread.
    HeadOnly,
    /// Reads one body frame, then drops the body.
    FirstFrame,
    /// Drops the call's future before ever polling it.
    Unpolled,
}

impl Ending {
    fn draw(rng: &mut SmallRng) -> Ending {
        match rng.random_range(0..100) {
            0..70 => Ending::Complete,
            70..80 => Ending::Early,
            80..90 => Ending::Late,
            90..94 => Ending::HeadOnly,
            94..99 => Ending::FirstFrame,
            _ => Ending::Unpolled,
        }
    }
}

/// One check and its verdict.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// The numbers behind the verdict.
    pub detail: String,
}

/// Resident memory at one point of the run.
#[derive(Debug, Clone, Copy)]
pub struct MemorySample {
    /// Calls ended by then.
    pub calls: u64,
    /// Resident set size, in bytes.
    pub bytes: u64,
}

/// What a soak saw, and its checks.
#[derive(Debug)]
pub struct SoakReport {
    /// What was run.
    pub config: SoakConfig,
    /// Wall time of the calls (teardown excluded).
    pub elapsed: Duration,
    /// The client's metrics, at the end.
    pub snapshot: sturdy::metrics::Snapshot,
    /// The server's own counts, at the end.
    pub dashboard: Dashboard,
    /// Requests handed to the client (one per attempt).
    pub client_requests: u64,
    /// Callers that gave up before their call ended by itself.
    pub given_up: u64,
    /// Calls still running after [`STUCK_AFTER`] (dropped then).
    pub stuck: u64,
    /// Panics anywhere in the process during the run, worker tasks included.
    pub panics: u64,
    /// Whether Prometheus showed nothing in flight at the end.
    pub prometheus_idle: bool,
    /// Resident memory through the run (empty where it cannot be read).
    pub memory: Vec<MemorySample>,
    /// Resident memory at the checkpoint.
    pub memory_at_checkpoint: Option<u64>,
    /// Resident memory when the last call ended.
    pub memory_at_end: Option<u64>,
    /// Resident memory once the client and the server were gone.
    pub memory_after_teardown: Option<u64>,
    /// Tokio tasks still alive after the teardown.
    pub tasks_left: usize,
    /// How long the tasks took to end after the teardown.
    pub teardown: Duration,
}

impl SoakReport {
    /// Every check, in order.
    pub fn checks(&self) -> Vec<Check> {
        let s = &self.snapshot;
        let d = &self.dashboard;
        let calls = self.config.calls;
        let attempts = s.started(Scope::Attempt);
        let not_sent = s.by_reach(Scope::Attempt, Reach::NotSent);
        let acknowledged = s.by_reach(Scope::Attempt, Reach::Acknowledged);
        let sent = attempts.saturating_sub(not_sent);
        let mut checks = vec![
            Check {
                name: "no panic",
                passed: self.panics == 0,
                detail: format!("{} panics", self.panics),
            },
            Check {
                name: "every call recorded exactly once",
                passed: s.started(Scope::Call) == calls && s.finished(Scope::Call) == calls,
                detail: format!(
                    "{calls} calls made, {} started, {} ended",
                    s.started(Scope::Call),
                    s.finished(Scope::Call)
                ),
            },
            Check {
                name: "every attempt recorded exactly once",
                passed: attempts == self.client_requests
                    && s.finished(Scope::Attempt) == attempts
                    && s.call_attempts() == attempts,
                detail: format!(
                    "{} requests handed to the client, {attempts} attempts started, {} ended, {} counted by the calls",
                    self.client_requests,
                    s.finished(Scope::Attempt),
                    s.call_attempts()
                ),
            },
            Check {
                name: "every retry counted was sent",
                passed: s.retries_total() == attempts.saturating_sub(s.started(Scope::Call)),
                detail: format!(
                    "{} retries counted, {attempts} attempts - {} calls = {}",
                    s.retries_total(),
                    s.started(Scope::Call),
                    attempts.saturating_sub(s.started(Scope::Call))
                ),
            },
            Check {
                name: "in flight back to 0",
                passed: s.in_flight(Scope::Call) == 0
                    && s.in_flight(Scope::Attempt) == 0
                    && self.prometheus_idle,
                detail: format!(
                    "calls {}, attempts {}, Prometheus gauges at 0: {}",
                    s.in_flight(Scope::Call),
                    s.in_flight(Scope::Attempt),
                    self.prometheus_idle
                ),
            },
            Check {
                name: "server received between acknowledged and attempts - not_sent",
                passed: acknowledged <= d.received && d.received <= sent,
                detail: format!(
                    "{acknowledged} <= {} <= {attempts} - {not_sent} = {sent}",
                    d.received
                ),
            },
            Check {
                name: "no call outlived its deadline",
                passed: self.stuck == 0,
                detail: format!("{} calls still running after {STUCK_AFTER:?}", self.stuck),
            },
        ];
        let (passed, detail) = match (self.memory_at_checkpoint, self.memory_at_end) {
            (Some(at), Some(end)) => (
                growth(at, end) <= MEMORY_GROWTH_LIMIT,
                format!(
                    "{} after {} calls, {} at the end ({:+.1} %)",
                    mib(at),
                    self.config.checkpoint,
                    mib(end),
                    growth(at, end) * 100.0
                ),
            ),
            _ => (
                false,
                "resident memory cannot be read here (/proc/self/status)".into(),
            ),
        };
        let memory = Check {
            name: "resident memory at the end within 10 % of the checkpoint",
            passed,
            detail,
        };
        checks.push(memory);
        checks.push(Check {
            name: "no tokio task left after the teardown",
            passed: self.tasks_left == 0,
            detail: format!(
                "{} alive, {} ms after the client was dropped and the server stopped",
                self.tasks_left,
                self.teardown.as_millis()
            ),
        });
        let faults = [
            "status", "delay", "stall", "slow", "reset", "close", "hostile",
        ];
        // One HTTP/2 connection carries every call at once: it is seldom
        // idle, so a short HTTP/2 run may see no idle close.
        let idle_close = (!self.config.http2).then_some("idle_close");
        let missing: Vec<&str> = faults
            .iter()
            .copied()
            .chain(idle_close)
            .filter(|f| d.faults(f) == 0)
            .chain((s.count_outcome(Scope::Attempt, "connect_refused") == 0).then_some("outage"))
            .chain(
                Reach::ALL
                    .iter()
                    .filter(|r| s.count(Scope::Call, "cancelled", **r) == 0)
                    .map(|r| r.label()),
            )
            .collect();
        checks.push(Check {
            name: "every fault, an outage and a give-up at every reach happened",
            passed: missing.is_empty(),
            detail: if missing.is_empty() {
                "all seen".into()
            } else {
                format!("never seen: {}", missing.join(", "))
            },
        });
        checks
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks().iter().all(|c| c.passed)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn growth(from: u64, to: u64) -> f64 {
    if from == 0 {
        return 0.0;
    }
    to as f64 / from as f64 - 1.0
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "sturdy-soak: {} calls at concurrency {} over {} on {} worker threads, seed {}",
            c.calls,
            c.concurrency,
            if c.http2 { "HTTP/2" } else { "HTTP/1.1" },
            c.worker_threads,
            c.seed
        )?;
        writeln!(
            f,
            "time scale: headers/read {:?}, total {:?}; outage {:?} after every {} calls; 503 window {:?} every {:?}; idle close {}",
            PROFILE.headers,
            PROFILE.total,
            OUTAGE_LEN,
            c.outage_every(),
            WINDOW_LEN,
            WINDOW_EVERY,
            IDLE_CLOSE
        )?;
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "ran {:.1} s ({:.0} calls/s); {} callers gave up on purpose",
            secs,
            c.calls as f64 / secs.max(1e-9),
            self.given_up
        )?;
        writeln!(f)?;
        let server = ServerCounts {
            received: self.dashboard.received,
            responded: self.dashboard.responded.clone(),
        };
        writeln!(f, "{}", Report::new(&self.snapshot).with_server(server))?;
        writeln!(f, "server faults: {:?}", self.dashboard.faults)?;
        if !self.memory.is_empty() {
            let samples: Vec<String> = self
                .memory
                .iter()
                .map(|m| format!("{}: {}", m.calls, mib(m.bytes)))
                .collect();
            writeln!(f, "resident memory: {}", samples.join(", "))?;
        }
        if let Some(after) = self.memory_after_teardown {
            writeln!(f, "resident memory after the teardown: {}", mib(after))?;
        }
        writeln!(f)?;
        for check in self.checks() {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            writeln!(f, "{mark} {}: {}", check.name, check.detail)?;
        }
        Ok(())
    }
}

/// Resident set size of this process, from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts every panic in the process while it lives, then restores the hook
/// that was there before.
struct PanicCounter {
    previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync>,
    at_start: u64,
}

impl PanicCounter {
    fn install() -> PanicCounter {
        let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
            Arc::from(std::panic::take_hook());
        let chained = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            chained(info);
        }));
        PanicCounter {
            previous,
            at_start: PANICS.load(Ordering::SeqCst),
        }
    }

    fn count(&self) -> u64 {
        PANICS.load(Ordering::SeqCst) - self.at_start
    }
}

impl Drop for PanicCounter {
    fn drop(&mut self) {
        let previous = self.previous.clone();
        std::panic::set_hook(Box::new(move |info| previous(info)));
    }
}

type Soaked = BoxCloneService<Request<Full<Bytes>>, http::Response<BoxBody>, BoxError>;

/// Runs a soak on a runtime of its own and reports; `Err` only when it
/// could not start (a bad config, no loopback socket).
pub fn soak(config: &SoakConfig) -> Result<SoakReport, String> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let panics = PanicCounter::install();
    let mut report = runtime.block_on(run(config.clone()))?;
    report.panics += panics.count();
    Ok(report)
}

fn server_builder(seed: u64) -> Result<sturdy_faults::FaultServerBuilder, String> {
    let mix: Mix = SOAK_MIX.parse().map_err(|e| format!("the soak mix: {e}"))?;
    let mut builder = FaultServer::builder()
        .mix(mix)
        .seed(seed)
        .params(FaultParams {
            chunks: 6,
            ..FaultParams::default()
        })
        .idle_close(IDLE_CLOSE);
    let mut start = Duration::from_secs(1);
    while start < Duration::from_secs(600) {
        builder = builder.window(start, WINDOW_LEN, Fault::status(503));
        start += WINDOW_EVERY;
    }
    Ok(builder)
}

async fn run(config: SoakConfig) -> Result<SoakReport, String> {
    let server = Arc::new(
        server_builder(config.seed)?
            .start()
            .await
            .map_err(|e| format!("starting the fault server: {e}"))?,
    );
    let uri: http::Uri = format!("{}/v1/chat/completions", server.base_url())
        .parse()
        .map_err(|e| format!("the fault server's address: {e}"))?;

    let mut registry = Registry::default();
    let prometheus = PrometheusRecorder::new(&mut registry);
    let snapshot = SnapshotRecorder::new();
    let stack = build_stack(Both(prometheus, snapshot.clone()))?;

    // Every request the client is handed: one per attempt.
    let client_requests = Arc::new(AtomicU64::new(0));
    let client = sturdy::client()
        .no_proxy()
        .http2_only(config.http2)
        .build()
        .map_err(|e| e.to_string())?;
    let counted = {
        let n = client_requests.clone();
        ServiceExt::<Request<BoxBody>>::map_request(client, move |req: Request<BoxBody>| {
            n.fetch_add(1, Ordering::Relaxed);
            req
        })
    };
    let svc: Soaked = BoxCloneService::new(ServiceExt::<Request<Full<Bytes>>>::map_response(
        stack.layer(counted),
        |r| r.map(sturdy::boxed),
    ));

    let shared = Arc::new(Driver {
        outage_due: tokio::sync::Notify::new(),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        given_up: AtomicU64::new(0),
        stuck: AtomicU64::new(0),
        memory: Mutex::new(Vec::new()),
        checkpoint_memory: Mutex::new(None),
        uri,
        config: config.clone(),
    });
    let outages = tokio::spawn({
        let (server, shared) = (server.clone(), shared.clone());
        async move {
            loop {
                shared.outage_due.notified().await;
                if server.outage(OUTAGE_LEN).await.is_err() {
                    return;
                }
            }
        }
    });
    let started = Instant::now();
    let mut workers = Vec::with_capacity(config.concurrency);
    for worker in 0..config.concurrency {
        let (svc, shared) = (svc.clone(), shared.clone());
        let seed = config.seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        workers.push(tokio::spawn(async move {
            shared.work(svc, SmallRng::seed_from_u64(seed)).await;
        }));
    }
    let mut worker_panics = 0;
    for w in workers {
        if w.await.is_err() {
            worker_panics += 1;
        }
    }
    let elapsed = started.elapsed();
    let memory_at_end = resident_bytes();

    let snapshot = snapshot.snapshot();
    let dashboard = server.dashboard();
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    let prometheus_idle = text.contains("sturdy_client_calls_in_flight 0\n")
        && text.contains("sturdy_client_attempts_in_flight 0\n");

    // Teardown: the client (every clone), the stack, the outage task, the
    // server; then every task the run started must end.
    drop(svc);
    drop(stack);
    outages.abort();
    let _ = outages.await;
    let teardown_start = Instant::now();
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown().await;
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut tasks_left = metrics.num_alive_tasks();
    while tasks_left > 0 && teardown_start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        tasks_left = metrics.num_alive_tasks();
    }
    let teardown = teardown_start.elapsed();

    let memory = shared
        .memory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let memory_at_checkpoint = *shared
        .checkpoint_memory
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Ok(SoakReport {
        config,
        elapsed,
        snapshot,
        dashboard,
        client_requests: client_requests.load(Ordering::Relaxed),
        given_up: shared.given_up.load(Ordering::Relaxed),
        stuck: shared.stuck.load(Ordering::Relaxed),
        panics: worker_panics,
        prometheus_idle,
        memory,
        memory_at_checkpoint,
        memory_at_end,
        memory_after_teardown: resident_bytes(),
        tasks_left,
        teardown,
    })
}

fn build_stack<R>(recorder: R) -> Result<Stack<R>, String>
where
    R: sturdy::metrics::Recorder + Clone,
{
    let mut profiles = Profiles::default();
    for w in Workload::ALL {
        *profiles.get_mut(w) = PROFILE;
    }
    Stack::builder()
        .profiles(profiles)
        .retry_policy(
            RetryPolicy::builder()
                .backoff(Backoff::guide(
                    Duration::from_millis(5),
                    Duration::from_millis(5),
                ))
                .max_delay(Duration::from_millis(200))
                .hint_cap(Duration::from_millis(500)),
        )
        .recorder(recorder)
        .build()
        .map_err(|e| e.to_string())
}

/// What the callers share.
struct Driver {
    /// Wakes the outage task when another `outage_every` calls have ended.
    outage_due: tokio::sync::Notify,
    next: AtomicU64,
    done: AtomicU64,
    given_up: AtomicU64,
    stuck: AtomicU64,
    memory: Mutex<Vec<MemorySample>>,
    checkpoint_memory: Mutex<Option<u64>>,
    uri: http::Uri,
    config: SoakConfig,
}

impl Driver {
    async fn work(&self, mut svc: Soaked, mut rng: SmallRng) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.config.calls {
                return;
            }
            let req = self.request(i, &mut rng);
            let ending = Ending::draw(&mut rng);
            let limit = match ending {
                Ending::Early => Duration::from_micros(rng.random_range(0..50_000)),
                Ending::Late => Duration::from_micros(rng.random_range(0..500_000)),
                _ => STUCK_AFTER,
            };
            let call = async {
                let fut = svc.ready().await?.call(req);
                if ending == Ending::Unpolled {
                    drop(fut);
                    return Ok(());
                }
                let resp = fut.await?;
                let mut body = resp.into_body();
                match ending {
                    Ending::HeadOnly => drop(body),
                    Ending::FirstFrame => drop(body.frame().await),
                    _ => drop(body.collect().await),
                }
                Ok::<_, BoxError>(())
            };
            let ended_by_itself = tokio::time::timeout(limit, call).await.is_ok();
            if !ended_by_itself {
                if limit == STUCK_AFTER {
                    self.stuck.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.given_up.fetch_add(1, Ordering::Relaxed);
                }
            }
            if matches!(
                ending,
                Ending::HeadOnly | Ending::FirstFrame | Ending::Unpolled
            ) {
                self.given_up.fetch_add(1, Ordering::Relaxed);
            }
            self.ended();
        }
    }

    fn request(&self, i: u64, rng: &mut SmallRng) -> Request<Full<Bytes>> {
        let stream = rng.random_range(0..4) == 0;
        let body = format!(
            r#"{{"model":"sturdy-soak","stream":{stream},"max_tokens":8,"messages":[{{"role":"user","content":"soak call {i}"}}]}}"#
        );
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if rng.random_bool(0.5) {
            req.extensions_mut().insert(RetrySafe);
        }
        let workload = match rng.random_range(0..10) {
            0..7 => Workload::Interactive,
            7 => Workload::Agentic,
            8 => Workload::LongContext,
            _ => Workload::Batch,
        };
        req.extensions_mut().insert(workload);
        req
    }

    /// Counts a call's end; calls for an outage every `outage_every` calls;
    /// reads resident memory at every tenth of the run and at the
    /// checkpoint.
    fn ended(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done < self.config.calls && done.is_multiple_of(self.config.outage_every()) {
            self.outage_due.notify_one();
        }
        let tenth = (self.config.calls / 10).max(1);
        let at_checkpoint = done == self.config.checkpoint;
        if (done.is_multiple_of(tenth) || at_checkpoint)
            && let Some(bytes) = resident_bytes()
        {
            if at_checkpoint {
                *self
                    .checkpoint_memory
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(bytes);
            }
            if done.is_multiple_of(tenth) {
                self.memory
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(MemorySample { calls: done, bytes });
            }
        }
    }
}
