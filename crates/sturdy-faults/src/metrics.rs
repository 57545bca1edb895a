//! `GET /metrics`: the server's requests as a Prometheus counter, in the
//! text exposition format 0.0.4, the way a provider exports per-deployment
//! metrics.
//!
//! ```text
//! # HELP sturdy_faults_requests_total ...
//! # TYPE sturdy_faults_requests_total counter
//! sturdy_faults_requests_total{route="chat_completions",code="200"} 41
//! sturdy_faults_requests_total{route="chat_completions",code="503"} 3
//! sturdy_faults_requests_total{route="chat_completions",code="none"} 1
//! ```
//!
//! A request is counted once, when it is over: with the status of the
//! response head the server produced for it (a `reset` counts as the `200`
//! whose head it sent, as on the dashboard), or `code="none"` when it was
//! dropped without one (an injected `close`, a body that failed to arrive,
//! a handler dropped with its connection). So at any quiescent moment the
//! counter's sum equals the dashboard's `received`; while requests are in
//! progress it trails it by those.

use std::collections::BTreeMap;
use std::fmt::Write;

/// The counter's name.
pub(crate) const REQUESTS: &str = "sturdy_faults_requests_total";

/// The `Content-Type` of the exposition.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label: a fixed set, whatever paths peers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Route {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/models` and below.
    Models,
    /// `/v1/files` and below.
    Files,
    /// `/v1/batches` and below.
    Batches,
    /// Any other path.
    Other,
}

impl Route {
    /// The route of a request for `path` (whatever its method).
    pub(crate) fn of(path: &str) -> Route {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if path == "/v1/chat/completions" {
            Route::ChatCompletions
        } else if under("/v1/models") {
            Route::Models
        } else if under("/v1/files") {
            Route::Files
        } else if under("/v1/batches") {
            Route::Batches
        } else {
            Route::Other
        }
    }

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Models => "models",
            Route::Files => "files",
            Route::Batches => "batches",
            Route::Other => "other",
        }
    }
}

/// The exposition of `requests` (by route and status answered, `None` for
/// none). Label values come from fixed sets and status numbers, so none
/// needs escaping.
pub(crate) fn render(requests: &BTreeMap<(Route, Option<u16>), u64>) -> String {
    let mut text = format!(
        "# HELP {REQUESTS} Requests received (the dashboard's received), by route and by the \
         status answered; code=\"none\": dropped without an answer.\n\
         # TYPE {REQUESTS} counter\n"
    );
    for ((route, code), n) in requests {
        let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        let _ = writeln!(
            text,
            "{REQUESTS}{{route=\"{}\",code=\"{code}\"}} {n}",
            route.label()
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_fixed_set() {
        for (path, route) in [
            ("/v1/chat/completions", Route::ChatCompletions),
            ("/v1/chat/completions/x", Route::Other),
            ("/v1/models", Route::Models),
            ("/v1/models/gpt", Route::Models),
            ("/v1/modelsx", Route::Other),
            ("/v1/files", Route::Files),
            ("/v1/files/file-1/content", Route::Files),
            ("/v1/batches", Route::Batches),
            ("/v1/batches/batch_1/cancel", Route::Batches),
            ("/", Route::Other),
            ("/dashboard", Route::Other),
        ] {
            assert_eq!(Route::of(path), route, "{path}");
        }
    }

    #[test]
    fn render_writes_one_sample_per_route_and_code() {
        let mut requests = BTreeMap::new();
        requests.insert((Route::ChatCompletions, Some(200)), 4);
        requests.insert((Route::ChatCompletions, None), 1);
        requests.insert((Route::Batches, Some(503)), 2);
        let text = render(&requests);
        assert!(text.starts_with("# HELP sturdy_faults_requests_total "));
        assert!(text.contains("\n# TYPE sturdy_faults_requests_total counter\n"));
        assert!(
            text.contains(
                "sturdy_faults_requests_total{route=\"chat_completions\",code=\"200\"} 4\n"
            )
        );
        assert!(text.contains(
            "sturdy_faults_requests_total{route=\"chat_completions\",code=\"none\"} 1\n"
        ));
        assert!(text.contains("sturdy_faults_requests_total{route=\"batches\",code=\"503\"} 2\n"));
        assert_eq!(text.lines().count(), 5);
        // Nothing counted yet: the family alone.
        assert_eq!(render(&BTreeMap::new()).lines().count(), 2);
    }
}
