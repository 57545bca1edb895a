//! `--batch`: one batch job, submitted once and waited for through restarts
//! and bursts of errors, with a progress bar of its request counts.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sturdy::Stack;
use sturdy::batch::{BatchClient, NewBatch, PollSchedule, RequestCounts};
use sturdy_faults::{Fault, FaultServer};
use tower::Layer;

use crate::config::{Config, Target};

/// How long the embedded job runs, and the restarts and errors around it.
const JOB: Duration = Duration::from_secs(12);
const RESTARTS: [(Duration, Duration); 2] = [
    (Duration::from_secs(3), Duration::from_secs(2)),
    (Duration::from_secs(7), Duration::from_secs(2)),
];
const BURST: (Duration, Duration) = (Duration::from_millis(5500), Duration::from_secs(1));

/// The `batch` object of `--json`.
#[derive(Debug, Serialize)]
struct Report {
    id: String,
    status: String,
    polls: u32,
    failures_waited_through: u32,
    seconds: f64,
    request_counts: RequestCounts,
    output_file_id: Option<String>,
}

#[derive(Serialize)]
struct Json {
    batch: Report,
}

/// Runs the batch job through the stack `stack` builds (scaled down for the
/// embedded demo): the client marks every request the `Batch` workload and
/// never lets the stack repeat a submission blindly.
pub async fn run(
    config: &Config,
    cap: Duration,
    stack: sturdy::StackBuilder,
) -> Result<(), String> {
    let mut server = None;
    let (base, key) = match &config.target {
        Target::Embedded { .. } => {
            let (start, len) = BURST;
            let mut builder =
                FaultServer::builder()
                    .job_duration(JOB)
                    .window(start, len, Fault::status(503));
            for (at, len) in RESTARTS {
                builder = builder.outage_at(at, len);
            }
            let s = builder
                .start()
                .await
                .map_err(|e| format!("starting the embedded fault server: {e}"))?;
            let base = format!("{}/v1", s.base_url());
            server = Some(s);
            (base, None)
        }
        Target::Remote {
            base,
            api_key,
            key_header,
        } => {
            let key = api_key.as_ref().map(|k| {
                if key_header == http::header::AUTHORIZATION {
                    (key_header.clone(), format!("Bearer {}", k.0))
                } else {
                    (key_header.clone(), k.0.clone())
                }
            });
            (base.clone(), key)
        }
    };
    let client = match server {
        // Loopback only: no proxy may stand in between.
        Some(_) => sturdy::client().no_proxy().build(),
        None => sturdy::client().build(),
    }
    .map_err(|e| e.to_string())?;
    let stack: Stack = stack.build().map_err(|e| e.to_string())?;
    let service = stack.layer(client);
    let mut batches = BatchClient::new(service, &base).poll_schedule(PollSchedule {
        first: Duration::from_secs(1).min(cap),
        cap,
        growth: 1.5,
    });
    if let Some((name, value)) = &key {
        batches = batches.key_header(name.clone(), value);
    }

    if !config.json {
        match &server {
            Some(_) => println!(
                "sturdy-probe --batch: embedded fault server at {base}; a job of {JOB:?}, \
                 restarts of 2 s at 3 s and 7 s, 503s from 5.5 s to 6.5 s; polls every 1 s up to {cap:?}"
            ),
            None => println!(
                "sturdy-probe --batch: {base} (model {}): a two-request batch; polls up to every {cap:?}",
                config.model
            ),
        }
    }

    let started = Instant::now();
    let input = input_file(&config.model, config.token_field.name());
    let file = batches
        .upload("sturdy-probe.jsonl", input)
        .await
        .map_err(|e| format!("uploading the input file: {e}"))?;
    let job = batches
        .submit(NewBatch::new(&file.id, "/v1/chat/completions"))
        .await
        .map_err(|e| format!("submitting the batch: {e}"))?;
    let bar = bar(config.json);
    let waited = batches
        .wait_with(&job.id, |b| {
            let counts = b.request_counts.unwrap_or_default();
            bar.set_length(counts.total.max(1));
            bar.set_position(counts.completed + counts.failed);
            bar.set_message(format!("{:?}", b.status));
        })
        .await
        .map_err(|e| format!("waiting for {}: {e}", job.id))?;
    bar.finish_and_clear();

    let batch = &waited.batch;
    let status = serde_json::to_value(batch.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", batch.status));
    let report = Report {
        id: batch.id.clone(),
        status,
        polls: waited.stats.polls,
        failures_waited_through: waited.stats.failures_waited_through,
        seconds: started.elapsed().as_secs_f64(),
        request_counts: batch.request_counts.unwrap_or_default(),
        output_file_id: batch.output_file_id.clone(),
    };
    if config.json {
        let json = serde_json::to_string_pretty(&Json { batch: report })
            .map_err(|e| format!("encoding JSON: {e}"))?;
        println!("{json}");
    } else {
        println!(
            "batch {}: {} after {:.1} s; {} polls, {} failures waited through; \
             requests {} done of {} ({} failed); output {}",
            report.id,
            report.status,
            report.seconds,
            report.polls,
            report.failures_waited_through,
            report.request_counts.completed,
            report.request_counts.total,
            report.request_counts.failed,
            report.output_file_id.as_deref().unwrap_or("none"),
        );
        for (status, time) in &waited.stats.time_in {
            println!("  seen {status:?} for {:.1} s", time.as_secs_f64());
        }
        println!(
            "{}",
            sturdy::metrics::Report::new(&stack.recorder().snapshot())
        );
    }
    if let Some(s) = server {
        s.shutdown().await;
    }
    Ok(())
}

/// Two chat requests of one token each: the smallest batch worth waiting
/// for.
fn input_file(model: &str, token_field: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=2 {
        let mut body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "say ok"}],
        });
        body[token_field] = 1.into();
        let line = serde_json::json!({
            "custom_id": format!("sturdy-probe-{i}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn bar(json: bool) -> ProgressBar {
    if json || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} requests  {msg}") {
        bar.set_style(style);
    }
    bar
}
