//! Every series sturdy exports, in one table: the Prometheus recorder
//! registers from it, the `metrics`-facade recorder describes from it, the
//! rate control's collectors encode from it, and README's metrics
//! reference is rendered from it ([`markdown_table`]), so a name, a label
//! list or a help text exists once.
//!
//! Names follow OpenTelemetry's HTTP-client conventions where one applies
//! (`http_client_request_duration_seconds`, one record per physical
//! attempt, with `http_request_method`, `server_address`, `server_port`,
//! `http_response_status_code` and `error_type`) and Prometheus naming
//! rules otherwise: a unit suffix, `_total` on counters, and no name whose
//! sum over its labels mixes two kinds of thing (calls and attempts never
//! share a name).

use std::fmt::Write as _;

/// What kind of Prometheus metric a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A monotonic counter (exposed with `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A histogram (exposed as `_bucket`, `_sum`, `_count`).
    Histogram,
}

impl SeriesKind {
    /// `counter`, `gauge` or `histogram`.
    pub const fn label(self) -> &'static str {
        match self {
            SeriesKind::Counter => "counter",
            SeriesKind::Gauge => "gauge",
            SeriesKind::Histogram => "histogram",
        }
    }
}

/// One exported series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    /// The name as registered: no `_total`, no unit suffix.
    pub base: &'static str,
    /// Whether the name carries `_seconds`.
    pub seconds: bool,
    /// Counter, gauge or histogram.
    pub kind: SeriesKind,
    /// Its labels, in order (an optional label is marked `?`).
    pub labels: &'static [&'static str],
    /// The help text: what one increment or record is.
    pub help: &'static str,
    /// The question an operator answers with it.
    pub question: &'static str,
}

impl Series {
    /// The name as scraped: `http_client_request_duration_seconds`,
    /// `sturdy_client_retries_total`.
    pub fn name(&self) -> String {
        let mut name = self.base.to_owned();
        if self.seconds {
            name.push_str("_seconds");
        }
        if self.kind == SeriesKind::Counter {
            name.push_str("_total");
        }
        name
    }
}

/// The labels of both duration histograms.
const OUTCOME_LABELS: &[&str] = &[
    "http_request_method",
    "rpc_method?",
    "server_address",
    "server_port?",
    "http_response_status_code?",
    "error_type?",
    "reach",
    "workload",
];

const TIMING_LABELS: &[&str] = &[
    "http_request_method",
    "rpc_method?",
    "server_address",
    "server_port?",
    "workload",
];

/// One record per physical attempt (OpenTelemetry's
/// `http.client.request.duration`).
pub const ATTEMPT_DURATION: Series = Series {
    base: "http_client_request_duration",
    seconds: true,
    kind: SeriesKind::Histogram,
    labels: OUTCOME_LABELS,
    help: "Duration of each HTTP request attempt sent (a retry is a new record), to the end of its response body; error_type is sturdy's failure label, reach how far the attempt got",
    question: "How do requests to the server fail and how long do they take, one record per attempt: the view an OpenTelemetry dashboard expects, and the server's dashboard at best",
};

/// One record per logical call, retries included.
pub const CALL_DURATION: Series = Series {
    base: "sturdy_client_call_duration",
    seconds: true,
    kind: SeriesKind::Histogram,
    labels: OUTCOME_LABELS,
    help: "Duration of each logical call, retries and backoff included, to the end of its response body, by the call's final outcome",
    question: "What did the caller see after retries: the failure ratio and latency users feel",
};

/// Calls begun.
pub const CALLS_STARTED: Series = Series {
    base: "sturdy_client_calls_started",
    seconds: false,
    kind: SeriesKind::Counter,
    labels: &[],
    help: "Logical calls begun (each ends once, in sturdy_client_call_duration_seconds)",
    question: "Is every call accounted for: started minus ended is in flight",
};

/// Attempts begun.
pub const ATTEMPTS_STARTED: Series = Series {
    base: "sturdy_client_attempts_started",
    seconds: false,
    kind: SeriesKind::Counter,
    labels: &[],
    help: "Attempts begun (each ends once, in http_client_request_duration_seconds)",
    question: "Is every attempt accounted for: started minus ended is in flight",
};

/// Calls in flight.
pub const CALLS_IN_FLIGHT: Series = Series {
    base: "sturdy_client_calls_in_flight",
    seconds: false,
    kind: SeriesKind::Gauge,
    labels: &[],
    help: "Logical calls begun and not yet ended",
    question: "How many calls wait right now (a stuck server shows here before it shows anywhere else)",
};

/// Attempts in flight.
pub const ATTEMPTS_IN_FLIGHT: Series = Series {
    base: "sturdy_client_attempts_in_flight",
    seconds: false,
    kind: SeriesKind::Gauge,
    labels: &[],
    help: "Attempts begun and not yet ended",
    question: "How many requests are on the wire right now",
};

/// Call time to head.
pub const CALL_TIME_TO_HEAD: Series = Series {
    base: "sturdy_client_call_time_to_head",
    seconds: true,
    kind: SeriesKind::Histogram,
    labels: TIMING_LABELS,
    help: "Time from the start of a logical call to the response head it returned",
    question: "How long until the caller has an answer's status",
};

/// Attempt time to head.
pub const ATTEMPT_TIME_TO_HEAD: Series = Series {
    base: "sturdy_client_attempt_time_to_head",
    seconds: true,
    kind: SeriesKind::Histogram,
    labels: TIMING_LABELS,
    help: "Time from sending an attempt to its response head",
    question: "How long the server takes to start answering (queueing, prompt processing)",
};

/// Call time to first frame.
pub const CALL_TIME_TO_FIRST_FRAME: Series = Series {
    base: "sturdy_client_call_time_to_first_frame",
    seconds: true,
    kind: SeriesKind::Histogram,
    labels: TIMING_LABELS,
    help: "Time from the start of a logical call to the first response body frame with data (time to first token for a stream)",
    question: "Time to first token as users feel it, retries included",
};

/// Attempt time to first frame.
pub const ATTEMPT_TIME_TO_FIRST_FRAME: Series = Series {
    base: "sturdy_client_attempt_time_to_first_frame",
    seconds: true,
    kind: SeriesKind::Histogram,
    labels: TIMING_LABELS,
    help: "Time from sending an attempt to the first response body frame with data",
    question: "Time to first token per attempt",
};

/// Retries taken.
pub const RETRIES: Series = Series {
    base: "sturdy_client_retries",
    seconds: false,
    kind: SeriesKind::Counter,
    labels: &["workload", "reason"],
    help: "Retries taken (attempts after a call's first), by the failure that caused them",
    question: "What the retries are spent on",
};

/// Retries refused.
pub const RETRY_REFUSALS: Series = Series {
    base: "sturdy_client_retry_refusals",
    seconds: false,
    kind: SeriesKind::Counter,
    labels: &["workload", "reason"],
    help: "Retries a failure called for and the retry layer did not make, by reason: budget, body_not_replayable, not_repeatable, retries_spent, past_deadline, hint_beyond_cap",
    question: "Is the retry budget exhausted (reason=budget): the storm guard is acting",
};

/// Possibly duplicated requests.
pub const POSSIBLY_DUPLICATED: Series = Series {
    base: "sturdy_client_possibly_duplicated",
    seconds: false,
    kind: SeriesKind::Counter,
    labels: &["workload"],
    help: sturdy_core::Safety::POSSIBLY_DUPLICATED,
    question: "How often a retry may have made the server do the work twice",
};

/// Attempts per call.
pub const CALL_ATTEMPTS: Series = Series {
    base: "sturdy_client_call_attempts",
    seconds: false,
    kind: SeriesKind::Histogram,
    labels: &["workload"],
    help: "Attempts each ended logical call made (1 for a call without a retry), as counted by the retry layer",
    question: "Retries per call (sum/count - 1), and how many calls needed three attempts or more",
};

/// The labels of the pacer's series: the server, as the other series
/// split it.
const SERVER_LABELS: &[&str] = &["server_address", "server_port?"];

/// Attempts the pacer held ([`PacerCollector`](crate::PacerCollector)).
pub const PACER_HELD: Series = Series {
    base: "sturdy_client_pacer_held",
    seconds: false,
    kind: SeriesKind::Counter,
    labels: SERVER_LABELS,
    help: "Attempts the pacer held because the server's rate-limit headers said no room was left, each counted once however long it waited",
    question: "Is the client waiting on the server's rate limits, and for which server",
};

/// Time attempts spent held by the pacer.
pub const PACER_HELD_TIME: Series = Series {
    base: "sturdy_client_pacer_held",
    seconds: true,
    kind: SeriesKind::Counter,
    labels: SERVER_LABELS,
    help: "Time attempts spent held by the pacer, added when each hold ends (its attempt sent, failed or dropped)",
    question: "How much latency the server's rate limits add: held seconds over held attempts is the mean hold",
};

/// Attempts the pacer failed for their deadline.
pub const PACER_DEADLINE_FAILURES: Series = Series {
    base: "sturdy_client_pacer_deadline_failures",
    seconds: false,
    kind: SeriesKind::Counter,
    labels: SERVER_LABELS,
    help: "Attempts the pacer failed at once, never sent, because the server's rate limit resets after the call's deadline (error_type rate_limit_hold)",
    question: "Are calls failing because the server's rate limit leaves no room within their deadlines",
};

/// Attempts held right now.
pub const PACER_HOLDING: Series = Series {
    base: "sturdy_client_pacer_holding",
    seconds: false,
    kind: SeriesKind::Gauge,
    labels: SERVER_LABELS,
    help: "Attempts the pacer holds right now, waiting for the server's rate limit to reset",
    question: "How many attempts wait on a rate-limit reset at this moment",
};

/// The adaptive concurrency limit
/// ([`ConcurrencyCollector`](crate::ConcurrencyCollector)).
pub const CONCURRENCY_LIMIT: Series = Series {
    base: "sturdy_client_concurrency_limit",
    seconds: false,
    kind: SeriesKind::Gauge,
    labels: &[],
    help: "The adaptive concurrency limit now: the most attempts it lets in flight at once",
    question: "What capacity the limit has learned the server has; a drop is the server refusing under load",
};

/// Attempts holding a permit of the adaptive limit.
pub const CONCURRENCY_IN_FLIGHT: Series = Series {
    base: "sturdy_client_concurrency_in_flight",
    seconds: false,
    kind: SeriesKind::Gauge,
    labels: &[],
    help: "Attempts holding a permit of the adaptive concurrency limit (until their response body ends)",
    question: "How close the client runs to its limit",
};

/// Callers waiting for a permit of the adaptive limit.
pub const CONCURRENCY_WAITING: Series = Series {
    base: "sturdy_client_concurrency_waiting",
    seconds: false,
    kind: SeriesKind::Gauge,
    labels: &[],
    help: "Callers waiting for a permit of the adaptive concurrency limit",
    question: "Is the limit queueing callers (a wait longer than the profile's ready fails as ready_timeout)",
};

/// The series the recorders ([`PrometheusRecorder`](crate::PrometheusRecorder),
/// the `metrics` facade's) write, per call and attempt.
pub const RECORDED: [Series; 14] = [
    ATTEMPT_DURATION,
    CALL_DURATION,
    CALLS_STARTED,
    ATTEMPTS_STARTED,
    CALLS_IN_FLIGHT,
    ATTEMPTS_IN_FLIGHT,
    CALL_TIME_TO_HEAD,
    ATTEMPT_TIME_TO_HEAD,
    CALL_TIME_TO_FIRST_FRAME,
    ATTEMPT_TIME_TO_FIRST_FRAME,
    RETRIES,
    RETRY_REFUSALS,
    POSSIBLY_DUPLICATED,
    CALL_ATTEMPTS,
];

/// The rate control's series, read from the pacer and the adaptive limit
/// when a registry is encoded ([`PacerCollector`](crate::PacerCollector),
/// [`ConcurrencyCollector`](crate::ConcurrencyCollector)).
pub const RATE: [Series; 7] = [
    PACER_HELD,
    PACER_HELD_TIME,
    PACER_DEADLINE_FAILURES,
    PACER_HOLDING,
    CONCURRENCY_LIMIT,
    CONCURRENCY_IN_FLIGHT,
    CONCURRENCY_WAITING,
];

/// Every series, in the order of README's table: [`RECORDED`], then
/// [`RATE`] (made from the two, so no list of names is kept twice).
pub const SERIES: [Series; RECORDED.len() + RATE.len()] = {
    let mut all = [RECORDED[0]; RECORDED.len() + RATE.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < RECORDED.len() {
            RECORDED[i]
        } else {
            RATE[i - RECORDED.len()]
        };
        i += 1;
    }
    all
};

/// Buckets of [`CALL_ATTEMPTS`].
pub const CALL_ATTEMPTS_BUCKETS: [f64; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 10.0];

/// README's metrics reference: one row per series, with its type, labels,
/// help text and the question it answers.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| series | type | labels | one record is | answers |\n|---|---|---|---|---|\n",
    );
    for s in SERIES {
        let labels = if s.labels.is_empty() {
            "—".to_owned()
        } else {
            s.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            s.name(),
            s.kind.label(),
            labels,
            s.help.replace('|', "\\|"),
            s.question.replace('|', "\\|"),
        );
    }
    out
}

/// `host` and `port` of a `host:port` label (`[v6]:port` without its
/// brackets); a label without a port is all host.
pub(crate) fn split_server(label: &str) -> (&str, Option<&str>) {
    let (host, port) = match label.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.starts_with('[')) =>
        {
            (host, Some(port))
        }
        _ => (label, None),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (host, port)
}

/// `http_request_method` and `rpc_method`: a gRPC method (`service/method`,
/// never a valid HTTP method token) is sent as a POST.
pub(crate) fn split_method(label: &str) -> (&str, Option<&str>) {
    if label.contains('/') {
        ("POST", Some(label))
    } else {
        (label, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_labels_split_into_address_and_port() {
        assert_eq!(
            split_server("api.example:443"),
            ("api.example", Some("443"))
        );
        assert_eq!(split_server("[::1]:8080"), ("::1", Some("8080")));
        assert_eq!(split_server("::1"), ("::1", None));
        assert_eq!(split_server("unknown"), ("unknown", None));
        assert_eq!(split_server("host:"), ("host:", None));
        assert_eq!(split_method("POST"), ("POST", None));
        assert_eq!(
            split_method("grpc.health.v1.Health/Check"),
            ("POST", Some("grpc.health.v1.Health/Check"))
        );
    }

    #[test]
    fn names_follow_the_prometheus_rules_and_never_repeat() {
        let names: Vec<String> = SERIES.iter().map(Series::name).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(n), "{n} twice");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{n}"
            );
        }
        let parts: Vec<Series> = RECORDED.iter().chain(&RATE).copied().collect();
        assert_eq!(parts, SERIES, "SERIES is RECORDED, then RATE");
        for s in SERIES {
            assert_eq!(s.name().ends_with("_total"), s.kind == SeriesKind::Counter);
            assert!(!s.help.is_empty() && !s.question.is_empty());
        }
    }
}
