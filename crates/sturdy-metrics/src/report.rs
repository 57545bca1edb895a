//! [`Report`]: the client's story beside the server's. Built from a
//! [`Snapshot`] and, optionally, the server's own counts; printed as a table
//! or serialised as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sturdy_core::Reach;

use crate::{Scope, Snapshot, Timing};

/// What a server (or its dashboard) says it saw. sturdy-faults' `Dashboard`
/// converts into this field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounts {
    /// Requests the server received.
    pub received: u64,
    /// Responses it sent, by status code (`"200"`, `"503"`...).
    pub responded: BTreeMap<String, u64>,
}

/// Counts by reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachCounts {
    /// Never left the client.
    pub not_sent: u64,
    /// Sent, no response head: the server may or may not have seen it.
    pub unknown: u64,
    /// A response head arrived (successes included).
    pub acknowledged: u64,
}

/// One row of the outcome table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCount {
    /// `ok`, a status, or a failure label.
    pub outcome: String,
    /// `not_sent`, `unknown` or `acknowledged`.
    pub reach: String,
    /// How many.
    pub count: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// One scope's part of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopeReport {
    /// Started.
    pub started: u64,
    /// Ended.
    pub finished: u64,
    /// Started and not ended when the snapshot was taken.
    pub in_flight: u64,
    /// Ended with `ok`.
    pub ok: u64,
    /// Ended with a failure.
    pub failed: u64,
    /// Ended, by reach.
    pub by_reach: ReachCounts,
    /// Ended, by outcome and reach.
    pub outcomes: Vec<OutcomeCount>,
    /// To the end of the body.
    pub latency: Percentiles,
    /// To the response head.
    pub time_to_head: Percentiles,
    /// To the first body frame (time to first token for streams).
    pub time_to_first_frame: Percentiles,
}

/// The dashboard gap: what the server could and could not have seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardGap {
    /// Which scope the counts come from: `attempt` when an `attempts()`
    /// layer recorded anything, else `call`.
    pub basis: String,
    /// Never reached the server (all of them failures).
    pub never_reached: u64,
    /// Sent without a response head: may or may not be on its dashboard.
    pub maybe_seen: u64,
    /// Acknowledged by the server.
    pub acknowledged: u64,
    /// Failed attempts in all.
    pub failed: u64,
    /// The server's own counts, when given.
    pub server: Option<ServerCounts>,
    /// Server received minus acknowledged: how many of the `maybe_seen`
    /// attempts the server did see (when its counts are given).
    pub server_saw_of_maybe: Option<i64>,
    /// The gap in one sentence.
    pub summary: String,
}

/// The client's counts beside the server's.
///
/// ```
/// use sturdy_metrics::{Report, ServerCounts, SnapshotRecorder};
/// let recorder = SnapshotRecorder::new();
/// let report = Report::new(&recorder.snapshot()).with_server(ServerCounts::default());
/// let json = serde_json::to_string(&report).unwrap();
/// assert!(json.contains("\"dashboard_gap\""));
/// println!("{report}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Logical calls.
    pub calls: ScopeReport,
    /// Attempts.
    pub attempts: ScopeReport,
    /// Retries taken, by reason.
    pub retries: BTreeMap<String, u64>,
    /// Retries taken in all.
    pub retries_total: u64,
    /// Retries the budget refused.
    pub budget_refusals: u64,
    /// Retries refused, by reason (`budget`, `body_not_replayable`,
    /// `retries_spent`, ...).
    pub retry_refusals: BTreeMap<String, u64>,
    /// Retries that may have sent a request twice.
    pub possibly_duplicated: u64,
    /// What the server could not see.
    pub dashboard_gap: DashboardGap,
}

impl Percentiles {
    /// The percentiles of a histogram of microseconds (as a [`Snapshot`]
    /// keeps them); all zero when it is empty.
    pub fn from_micros(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

fn percentiles(s: &Snapshot, scope: Scope, timing: Timing) -> Percentiles {
    Percentiles::from_micros(s.latency(scope, timing))
}

fn scope_report(s: &Snapshot, scope: Scope) -> ScopeReport {
    ScopeReport {
        started: s.started(scope),
        finished: s.finished(scope),
        in_flight: s.in_flight(scope),
        ok: s.count(scope, "ok", Reach::Acknowledged),
        failed: s.failed(scope),
        by_reach: ReachCounts {
            not_sent: s.by_reach(scope, Reach::NotSent),
            unknown: s.by_reach(scope, Reach::Unknown),
            acknowledged: s.by_reach(scope, Reach::Acknowledged),
        },
        outcomes: s
            .outcomes(scope)
            .map(|(o, r, n)| OutcomeCount {
                outcome: o.to_owned(),
                reach: r.label().to_owned(),
                count: n,
            })
            .collect(),
        latency: percentiles(s, scope, Timing::Total),
        time_to_head: percentiles(s, scope, Timing::Head),
        time_to_first_frame: percentiles(s, scope, Timing::FirstFrame),
    }
}

impl Report {
    /// The report of a snapshot, without server counts.
    pub fn new(snapshot: &Snapshot) -> Report {
        let calls = scope_report(snapshot, Scope::Call);
        let attempts = scope_report(snapshot, Scope::Attempt);
        let mut report = Report {
            calls,
            attempts,
            retries: snapshot
                .retries()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            retries_total: snapshot.retries_total(),
            budget_refusals: snapshot.budget_refusals(),
            retry_refusals: snapshot
                .refusals()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            possibly_duplicated: snapshot.possibly_duplicated(),
            dashboard_gap: DashboardGap::default(),
        };
        report.dashboard_gap = report.gap(None);
        report
    }

    /// Adds the server's own counts to the dashboard gap.
    pub fn with_server(mut self, server: ServerCounts) -> Report {
        self.dashboard_gap = self.gap(Some(server));
        self
    }

    fn gap(&self, server: Option<ServerCounts>) -> DashboardGap {
        let (basis, s) = if self.attempts.started > 0 {
            ("attempt", &self.attempts)
        } else {
            ("call", &self.calls)
        };
        let noun = if basis == "attempt" {
            "attempts"
        } else {
            "calls"
        };
        let r = s.by_reach;
        let mut summary = format!(
            "{} of {} failed {noun} never reached the server and cannot be on its dashboard; \
             {} more may or may not have reached it; it acknowledged {}.",
            r.not_sent, s.failed, r.unknown, r.acknowledged
        );
        let server_saw_of_maybe = server.as_ref().map(|sc| {
            let saw = i64::try_from(sc.received).unwrap_or(i64::MAX)
                - i64::try_from(r.acknowledged).unwrap_or(i64::MAX);
            summary.push_str(&format!(
                " The server counted {} requests: {saw} of the {} sent without a response head reached it.",
                sc.received, r.unknown
            ));
            saw
        });
        DashboardGap {
            basis: basis.to_owned(),
            never_reached: r.not_sent,
            maybe_seen: r.unknown,
            acknowledged: r.acknowledged,
            failed: s.failed,
            server,
            server_saw_of_maybe,
            summary,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        // Plain data with string keys: serialisation cannot fail; an empty
        // object is the honest fallback if it ever did.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

fn write_scope(f: &mut fmt::Formatter<'_>, name: &str, s: &ScopeReport) -> fmt::Result {
    writeln!(
        f,
        "{name}: {} started, {} ended ({} ok, {} failed), {} in flight",
        s.started, s.finished, s.ok, s.failed, s.in_flight
    )?;
    writeln!(
        f,
        "  by reach: not_sent {}  unknown {}  acknowledged {}",
        s.by_reach.not_sent, s.by_reach.unknown, s.by_reach.acknowledged
    )?;
    writeln!(f, "  {:<20} {:<13} {:>10}", "outcome", "reach", "count")?;
    for row in &s.outcomes {
        writeln!(
            f,
            "  {:<20} {:<13} {:>10}",
            row.outcome, row.reach, row.count
        )?;
    }
    writeln!(
        f,
        "  {:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "latency (ms)", "n", "p50", "p90", "p99", "max"
    )?;
    for (label, p) in [
        ("total", &s.latency),
        ("to head", &s.time_to_head),
        ("to first frame", &s.time_to_first_frame),
    ] {
        writeln!(
            f,
            "  {:<16} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            label, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        )?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scope(f, "calls", &self.calls)?;
        write_scope(f, "attempts", &self.attempts)?;
        write!(f, "retries: {}", self.retries_total)?;
        for (reason, n) in &self.retries {
            write!(f, "  {reason} {n}")?;
        }
        writeln!(f)?;
        write!(f, "retries refused:")?;
        for (reason, n) in &self.retry_refusals {
            write!(f, "  {reason} {n}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "budget refusals: {}  possibly duplicated: {}",
            self.budget_refusals, self.possibly_duplicated
        )?;
        let g = &self.dashboard_gap;
        writeln!(f, "dashboard gap ({}s):", g.basis)?;
        writeln!(f, "  never reached the server  {:>10}", g.never_reached)?;
        writeln!(f, "  may or may not have       {:>10}", g.maybe_seen)?;
        writeln!(f, "  acknowledged              {:>10}", g.acknowledged)?;
        if let Some(server) = &g.server {
            writeln!(f, "  server received           {:>10}", server.received)?;
            for (status, n) in &server.responded {
                writeln!(f, "  server responded {status:<8} {n:>10}")?;
            }
        }
        writeln!(f, "{}", g.summary)
    }
}
