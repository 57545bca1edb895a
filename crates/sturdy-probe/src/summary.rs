//! What the probe prints: the `--json` object (its field names are a
//! contract for scripts) and the text report around sturdy-metrics'
//! `Report`.

use std::collections::BTreeMap;

use serde::Serialize;
use sturdy::Reach;
use sturdy::metrics::{Percentiles, Report, Scope, Snapshot, Timing};

use crate::exposition::Sum;

/// The `--json` object.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Calls made.
    pub calls: u64,
    /// Calls that got a success status and their whole body.
    pub succeeded: u64,
    /// Calls that did not.
    pub failed: u64,
    /// Failed calls no client could safely recover: a stream cut after
    /// output began, a status the table never retries, a server hint beyond
    /// what the call could wait.
    pub unrecoverable: u64,
    /// Attempts sent (or tried).
    pub attempts: u64,
    /// Retries taken.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_refusals: u64,
    /// Retries that may have sent a request twice.
    pub possibly_duplicated: u64,
    /// Attempts by reach; sums to `attempts`.
    pub by_reach: ByReach,
    /// Calls by outcome label.
    pub call_outcomes: BTreeMap<String, u64>,
    /// Attempts by outcome label.
    pub attempt_outcomes: BTreeMap<String, u64>,
    /// Call latency, send to end of body.
    pub latency_ms: Latency,
    /// Time to first token of streamed calls.
    pub ttft_ms: Latency,
    /// The embedded server's own counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
    /// The server's own metrics (`--server-metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_metrics: Option<ServerMetricsReport>,
}

/// `--server-metrics`: the growth of the server's counter during the run,
/// beside the client's attempts by reach.
#[derive(Debug, Serialize)]
pub struct ServerMetricsReport {
    /// The counter summed.
    pub series: String,
    /// The label filter, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The figures, or why there are none.
    #[serde(flatten)]
    pub figures: ServerFigures,
}

/// The figures of [`ServerMetricsReport`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ServerFigures {
    /// Both scrapes worked.
    Scraped {
        /// The sum before the run.
        before: f64,
        /// The sum after it.
        after: f64,
        /// `after - before`.
        delta: f64,
        /// Samples that matched in the scrape after the run.
        matched_samples: u64,
        /// Attempts that reached the server for sure (a response head).
        client_acknowledged: u64,
        /// Attempts sent without a response head: they may have reached it.
        client_unknown: u64,
        /// Whether `client_acknowledged <= delta <= client_acknowledged +
        /// client_unknown`.
        within_reach_bounds: bool,
    },
    /// A scrape failed.
    Failed {
        /// Why.
        error: String,
    },
}

impl ServerMetricsReport {
    /// The report for `series` (filtered by `filter`) from the two scrapes'
    /// sums, against `reach`.
    pub fn new(
        series: String,
        filter: Option<String>,
        scrapes: Result<(Sum, Sum), String>,
        reach: &ByReach,
    ) -> ServerMetricsReport {
        let figures = match scrapes {
            Ok((before, after)) => {
                let delta = after.total - before.total;
                let (low, high) = (reach.acknowledged, reach.acknowledged + reach.unknown);
                ServerFigures::Scraped {
                    before: before.total,
                    after: after.total,
                    delta,
                    matched_samples: after.matched,
                    client_acknowledged: reach.acknowledged,
                    client_unknown: reach.unknown,
                    within_reach_bounds: low as f64 <= delta && delta <= high as f64,
                }
            }
            Err(error) => ServerFigures::Failed { error },
        };
        ServerMetricsReport {
            series,
            filter,
            figures,
        }
    }

    /// The report's lines.
    fn text(&self) -> String {
        let name = match &self.filter {
            Some(filter) => format!("{}{{{filter}}}", self.series),
            None => self.series.clone(),
        };
        match &self.figures {
            ServerFigures::Failed { error } => {
                format!("server metrics ({name}): not available: {error}\n")
            }
            ServerFigures::Scraped {
                before,
                after,
                delta,
                matched_samples,
                client_acknowledged: low,
                client_unknown,
                within_reach_bounds,
            } => {
                let high = low + client_unknown;
                let mut out = format!(
                    "server metrics ({name}): {delta:+} during the run \
                     ({before} before, {after} after; {matched_samples} samples matched)\n"
                );
                let verdict = if *within_reach_bounds {
                    "agrees".to_owned()
                } else if *delta < 0.0 {
                    "outside the reach bounds: the counter went down (did the server restart?)"
                        .to_owned()
                } else if *delta > high as f64 {
                    format!(
                        "outside the reach bounds: more than the {high} attempts that may have \
                         reached it (other traffic on the series? narrow it with \
                         --server-metrics-filter)"
                    )
                } else {
                    format!(
                        "outside the reach bounds: fewer than the {low} attempts it acknowledged \
                         (metrics published late? try --server-metrics-wait)"
                    )
                };
                out.push_str(&format!(
                    "  against the client's attempts: {low} reached the server for sure \
                     (acknowledged), {high} may have (acknowledged + unknown): {verdict}\n"
                ));
                if *matched_samples == 0 {
                    out.push_str("  (no sample matched the series and filter)\n");
                }
                out
            }
        }
    }
}

/// Attempts by reach.
#[derive(Debug, Serialize)]
pub struct ByReach {
    /// Never left the client.
    pub not_sent: u64,
    /// Sent, no response head.
    pub unknown: u64,
    /// Got a response head.
    pub acknowledged: u64,
}

/// Percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// A server's dashboard.
#[derive(Debug, Serialize)]
pub struct Server {
    /// Requests received.
    pub received: u64,
    /// Responses by status.
    pub responded: BTreeMap<String, u64>,
}

/// Live counts of the run, as the load saw them.
#[derive(Debug)]
pub struct Tallies {
    /// Calls made.
    pub calls: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Failed beyond any safe recovery.
    pub unrecoverable: u64,
}

fn outcomes(s: &Snapshot, scope: Scope) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (label, _reach, n) in s.outcomes(scope) {
        *out.entry(label.to_owned()).or_insert(0) += n;
    }
    out
}

/// Percentiles of a histogram in microseconds, rounded to 0.1 ms.
pub fn latency(h: &hdrhistogram::Histogram<u64>) -> Latency {
    let p = Percentiles::from_micros(h);
    let round = |ms: f64| (ms * 10.0).round() / 10.0;
    Latency {
        p50: round(p.p50_ms),
        p90: round(p.p90_ms),
        p99: round(p.p99_ms),
        max: round(p.max_ms),
    }
}

impl Summary {
    /// Puts the run's counts, the snapshot and the server's dashboard
    /// together.
    pub fn new(
        t: &Tallies,
        s: &Snapshot,
        ttft: &hdrhistogram::Histogram<u64>,
        server: Option<Server>,
    ) -> Summary {
        Summary {
            calls: t.calls,
            succeeded: t.succeeded,
            failed: t.failed,
            unrecoverable: t.unrecoverable,
            attempts: s.finished(Scope::Attempt),
            retries: s.retries_total(),
            budget_refusals: s.budget_refusals(),
            possibly_duplicated: s.possibly_duplicated(),
            by_reach: ByReach {
                not_sent: s.by_reach(Scope::Attempt, Reach::NotSent),
                unknown: s.by_reach(Scope::Attempt, Reach::Unknown),
                acknowledged: s.by_reach(Scope::Attempt, Reach::Acknowledged),
            },
            call_outcomes: outcomes(s, Scope::Call),
            attempt_outcomes: outcomes(s, Scope::Attempt),
            latency_ms: latency(s.latency(Scope::Call, Timing::Total)),
            ttft_ms: latency(ttft),
            server,
            server_metrics: None,
        }
    }

    /// The text report: the metrics report, then the probe's own lines.
    pub fn text(&self, report: &Report) -> String {
        use std::fmt::Write;
        let mut out = format!("{report}\n");
        if let Some(server_metrics) = &self.server_metrics {
            out.push_str(&server_metrics.text());
            out.push('\n');
        }
        let recoverable = self.calls - self.unrecoverable;
        let rate = if recoverable == 0 {
            1.0
        } else {
            self.succeeded as f64 / recoverable as f64
        };
        let _ = writeln!(
            out,
            "calls: {} succeeded, {} failed ({} beyond any safe recovery); success rate among recoverable calls: {:.2}%",
            self.succeeded,
            self.failed,
            self.unrecoverable,
            rate * 100.0
        );
        let _ = writeln!(
            out,
            "time to first token (streamed calls): p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            self.ttft_ms.p50, self.ttft_ms.p90, self.ttft_ms.p99, self.ttft_ms.max
        );
        if let Some(server) = &self.server {
            let failed_attempts =
                self.attempts - self.attempt_outcomes.get("ok").copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "client attempts {} (failed {}) | server dashboard received {}",
                self.attempts, failed_attempts, server.received
            );
            let _ = writeln!(
                out,
                "{} failed attempts never reached the server: its dashboard cannot show them \
                 ({} more were sent without an answer; the server saw {} of those).",
                self.by_reach.not_sent,
                self.by_reach.unknown,
                server.received.saturating_sub(self.by_reach.acknowledged)
            );
        }
        out
    }
}
