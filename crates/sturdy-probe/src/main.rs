//! sturdy-probe: the main job. Sends chat completions through
//! `sturdy::client()` + `sturdy::Stack` and prints what the layers saw,
//! beside what the server's dashboard counted and, with `--server-metrics`,
//! what its own Prometheus metrics say.
//!
//! Exit codes: 0 when the run completed (whatever the faults), 2 on a usage
//! error, 1 on an internal failure.

#![forbid(unsafe_code)]

mod batch;
mod config;
mod exposition;
mod load;
mod scrape;
mod serve;
mod summary;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use prometheus_client::registry::Registry;
use sturdy::metrics::{
    Both, ConcurrencyCollector, PacerCollector, PrometheusRecorder, Report, ServerCounts,
    SnapshotRecorder,
};
use sturdy::retry::{Backoff, RetryPolicy};
use sturdy::{Profile, Profiles, Stack, Workload};
use sturdy_faults::{FaultParams, FaultServer};
use tower::Layer;

use config::{Args, Config, Target};
use load::{RequestPlan, Tally};
use scrape::Scraper;
use summary::{Server, ServerMetricsReport, Summary, Tallies};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let config = match Config::from_args(args, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("sturdy-probe: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sturdy-probe: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sturdy-probe: {message}");
            ExitCode::from(1)
        }
    }
}

/// The demo's time scale: the guide's limits divided so that every timeout
/// fires within a one-minute run.
fn demo_profiles() -> Profiles {
    let mut profiles = Profiles::default();
    for w in Workload::ALL {
        let p = Profile::for_workload(w);
        *profiles.get_mut(w) = Profile {
            ready: p.ready / 100,
            headers: Duration::from_millis(250),
            read: Duration::from_millis(250),
            total: p.total / 30,
        };
    }
    profiles
}

/// Backoff and hint cap scaled by 1/100 like the profiles' `ready`.
fn demo_retry() -> sturdy::retry::RetryPolicyBuilder {
    RetryPolicy::builder()
        .backoff(Backoff::guide(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .max_delay(Duration::from_millis(600))
        .hint_cap(config::EMBEDDED_HINT)
}

async fn run(config: Config) -> Result<(), String> {
    let (profiles, retry, hint_cap) = match config.target {
        Target::Embedded { .. } => (demo_profiles(), demo_retry(), config::EMBEDDED_HINT),
        Target::Remote { .. } => (
            Profiles::default(),
            RetryPolicy::builder(),
            Duration::from_secs(120),
        ),
    };

    if let Some(cap) = config.batch {
        let stack = Stack::builder().profiles(profiles).retry_policy(retry);
        return batch::run(&config, cap, stack).await;
    }

    let mut server = None;
    let (base, authorization, client) = match &config.target {
        Target::Embedded { mix, seed } => {
            let params = FaultParams {
                delay_ms: 2500,
                stall_ms: 2500,
                slow_ms: 5,
                chunks: 8,
                retry_after_ms: None,
            };
            let mut builder = FaultServer::builder()
                .mix(mix.clone())
                .seed(*seed)
                .params(params)
                .outage_at(Duration::from_millis(1500), Duration::from_millis(150));
            if let Some(limit) = &config.rate_limit {
                builder = builder.rate_limit(limit.clone());
            }
            if let Some(capacity) = &config.capacity {
                builder = builder.capacity(capacity.clone());
            }
            let s = builder
                .start()
                .await
                .map_err(|e| format!("starting the embedded fault server: {e}"))?;
            let base = format!("{}/v1", s.base_url());
            server = Some(s);
            // Loopback only: no proxy may stand in between.
            (base, None, sturdy::client().no_proxy().build())
        }
        Target::Remote {
            base,
            api_key,
            key_header,
        } => {
            let auth = match api_key {
                Some(key) => {
                    // `Authorization` takes a scheme; the others the key alone.
                    let value = if key_header == http::header::AUTHORIZATION {
                        format!("Bearer {}", key.0)
                    } else {
                        key.0.clone()
                    };
                    let mut value = http::HeaderValue::from_str(&value).map_err(|_| {
                        "the API key holds characters a header cannot carry".to_owned()
                    })?;
                    value.set_sensitive(true);
                    Some((key_header.clone(), value))
                }
                None => None,
            };
            (base.clone(), auth, sturdy::client().build())
        }
    };
    let client = client.map_err(|e| e.to_string())?;

    let mut registry = Registry::default();
    let prometheus = PrometheusRecorder::new(&mut registry);
    let snapshot = SnapshotRecorder::new();
    let builder = Stack::builder()
        .profiles(profiles)
        .retry_policy(retry)
        .recorder(Both(prometheus, snapshot.clone()));
    // --adaptive: the adaptive concurrency limit at the attempt position.
    let limit = config
        .adaptive
        .then(sturdy::rate::AdaptiveConcurrencyLayer::new);
    let (service, pacer) = match &limit {
        Some(limit) => {
            let stack = builder
                .attempt_layer(limit.clone())
                .build()
                .map_err(|e| e.to_string())?;
            (boxed_service(stack.layer(client)), stack.pacer().clone())
        }
        None => {
            let stack = builder.build().map_err(|e| e.to_string())?;
            (boxed_service(stack.layer(client)), stack.pacer().clone())
        }
    };

    // The pacer's and the adaptive limit's series, read at each scrape.
    PacerCollector::new(&pacer).register(&mut registry);
    if let Some(limit) = &limit {
        ConcurrencyCollector::new(limit.gauge()).register(&mut registry);
    }

    let registry = Arc::new(registry);
    let metrics_task = match config.metrics_listen {
        Some(addr) => {
            let (bound, task) = serve::metrics(addr, registry.clone())
                .await
                .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
            eprintln!("sturdy-probe: live metrics at http://{bound}/metrics");
            Some(task)
        }
        None => None,
    };

    if !config.json {
        print_header(&config, &profiles, hint_cap, &base);
    }

    // The server's own count before the run; a failure is reported, and the
    // run goes on without the figures.
    let scraper = match &config.server_metrics {
        Some(sm) => Some(Scraper::new(
            sm,
            &base,
            authorization.as_ref(),
            server.is_some(),
        )?),
        None => None,
    };
    let scraped_before = match &scraper {
        Some(scraper) => {
            let before = scraper.scrape().await;
            if let Err(e) = &before {
                eprintln!(
                    "sturdy-probe: scraping the server's metrics before the run failed: {e}; \
                     the run goes on without them"
                );
            }
            Some(before)
        }
        None => None,
    };

    let plan = Arc::new(RequestPlan {
        url: format!("{base}/chat/completions"),
        model: config.model.clone(),
        workload: config.workload,
        authorization,
        max_tokens: if server.is_some() { 16 } else { 1 },
        token_field: config.token_field.name(),
        hint_cap,
        total: profiles.get(config.workload).total,
    });
    let tally = Arc::new(Tally::new());
    let bar = progress_bar(&config);
    let ticker = {
        let (bar, tally, snapshot) = (bar.clone(), tally.clone(), snapshot.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(tally.done.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "ok {}  retries {}  failed {}",
                    tally.succeeded.load(Ordering::Relaxed),
                    snapshot.snapshot().retries_total(),
                    tally.failed.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let streams = |i| config.streams(i);
    let outcome = load::run(
        service,
        plan,
        config.requests,
        config.concurrency,
        streams,
        tally.clone(),
    )
    .await;
    ticker.abort();
    bar.finish_and_clear();
    // Served until the report is out (and --metrics-linger after it).
    let metrics_task = AbortOnDrop(metrics_task);
    outcome?;

    let scraped = match (&scraper, scraped_before) {
        (Some(scraper), Some(before)) => {
            let failed_before = before.is_err();
            let scraped = scraper.after(before).await;
            if let (Err(e), false) = (&scraped, failed_before) {
                eprintln!("sturdy-probe: {e}");
            }
            Some(scraped)
        }
        _ => None,
    };

    let snap = snapshot.snapshot();
    let dashboard = server.as_ref().map(FaultServer::dashboard);
    let mut report = Report::new(&snap);
    if let Some(d) = &dashboard {
        report = report.with_server(ServerCounts {
            received: d.received,
            responded: d.responded.clone(),
        });
    }
    let tallies = Tallies {
        calls: tally.done.load(Ordering::Relaxed),
        succeeded: tally.succeeded.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        unrecoverable: tally.unrecoverable.load(Ordering::Relaxed),
    };
    let mut summary = Summary::new(
        &tallies,
        &snap,
        &tally.ttft(),
        dashboard.map(|d| Server {
            received: d.received,
            responded: d.responded,
        }),
    );
    if let (Some(scraper), Some(scraped)) = (&scraper, scraped) {
        summary.server_metrics = Some(ServerMetricsReport::new(
            scraper.series().to_owned(),
            scraper.filter(),
            scraped,
            &summary.by_reach,
        ));
    }
    if config.json {
        let json =
            serde_json::to_string_pretty(&summary).map_err(|e| format!("encoding JSON: {e}"))?;
        println!("{json}");
    } else {
        print!("{}", summary.text(&report));
        let paced = pacer.stats();
        for server in paced
            .servers
            .iter()
            .filter(|s| s.held > 0 || s.failed_deadline > 0)
        {
            println!(
                "pacing ({}): {} attempts held by the server's rate-limit headers, {:.1} s in all; {} failed as their reset was past the deadline",
                server.server,
                server.held,
                server.held_time.as_secs_f64(),
                server.failed_deadline
            );
        }
        if let Some(limit) = &limit {
            println!(
                "adaptive concurrency: limit {} at the end (of at most {} callers)",
                limit.limit(),
                config.concurrency
            );
        }
    }
    if metrics_task.0.is_some() && !config.metrics_linger.is_zero() {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::time::sleep(config.metrics_linger).await;
    }
    drop(metrics_task);
    if let Some(s) = server {
        s.shutdown().await;
    }
    Ok(())
}

/// One service type with or without `--adaptive` (the probe is no
/// benchmark: a box per call is fine here).
type ProbeService = tower::util::BoxCloneService<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    http::Response<http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, sturdy::BoxError>>,
    sturdy::BoxError,
>;

fn boxed_service<S, B>(svc: S) -> ProbeService
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Error: Into<sturdy::BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<sturdy::BoxError>,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    tower::util::BoxCloneService::new(
        svc.map_response(|r: http::Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into),
    )
}

/// Aborts the metrics server when dropped, whichever way `run` returns.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn progress_bar(config: &Config) -> ProgressBar {
    if config.json || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.requests);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} calls  {msg}") {
        bar.set_style(style);
    }
    bar
}

fn print_header(config: &Config, profiles: &Profiles, hint_cap: Duration, base: &str) {
    let p = profiles.get(config.workload);
    match &config.target {
        Target::Embedded { mix, seed } => {
            println!("sturdy-probe: embedded fault server at {base}");
            println!("  mix: {mix} (seed {seed}); an outage of 150 ms at 1.5 s");
            println!(
                "  demo scale: {} profile total {:?}, headers {:?}, read {:?}, ready {:?}; \
                 backoff 10 ms * 2^n + up to 10 ms, hint cap {:?} (the guide's numbers, scaled down)",
                config.workload, p.total, p.headers, p.read, p.ready, hint_cap
            );
        }
        Target::Remote { api_key, .. } => {
            println!("sturdy-probe: {base} (model {})", config.model);
            println!(
                "  API key: {}",
                if api_key.is_some() {
                    "from the environment"
                } else {
                    "none found; sending without one"
                }
            );
            println!(
                "  profile {}: total {:?}, headers {:?}, read {:?}, ready {:?}; hint cap {:?}",
                config.workload, p.total, p.headers, p.read, p.ready, hint_cap
            );
        }
    }
    println!(
        "  {} calls at concurrency {}, every call marked RetrySafe\n",
        config.requests, config.concurrency
    );
}
