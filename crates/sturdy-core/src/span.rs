//! The `tracing` spans of a call and of its attempts, defined once so that
//! the layer that creates a span and the layer that fills it in agree on
//! its fields.
//!
//! - [`call_span`] (`sturdy.call`, INFO) is created by the metrics layer
//!   `FailureMetricsLayer::calls()`, once per logical call.
//! - [`attempt_span`] (`sturdy.attempt`, DEBUG) is created by the retry
//!   layer, once per attempt, and handed down in the attempt's request as
//!   an [`AttemptSpan`] extension to `FailureMetricsLayer::attempts()`,
//!   which enters it while the attempt runs and records what it sees. The
//!   retry layer keeps a handle, so that its decision on a failed attempt
//!   (retry or give up, why, after how long) is an event inside that
//!   attempt's span. Without a retry layer above, the metrics layer
//!   creates the attempt span itself.
//!
//! Span names are static (`tracing` has no dynamic names): OpenTelemetry's
//! suggested name, the HTTP method, is the `http.request.method` field.
//! Both spans have the target [`TARGET`] and declare the same fields, all
//! empty until recorded, with OpenTelemetry's names where one exists:
//!
//! | field | when |
//! |---|---|
//! | `http.request.method` | at the start: the method, `_OTHER` outside the known set |
//! | `server.address`, `server.port` | at the start: the metrics' server label, split |
//! | `url.full` | at the start, for an absolute URI: `scheme://host[:port]/path`, never a query, a fragment or user information |
//! | `http.request.resend_count` | attempts after the first: 1 on the second |
//! | `http.response.status_code` | when a response head arrives |
//! | `error.type` | at the end, on failure: the failure label the metrics use (`503`, `connect_refused`, `timeout_headers`, `cancelled`...) |
//! | `sturdy.outcome` | at the end: `ok` or the failure label |
//! | `sturdy.reach` | at the end: `not_sent`, `unknown` or `acknowledged` |
//! | `sturdy.workload` | at the end: the workload the call was timed as |
//! | `sturdy.attempts` | call span, at the end: the attempts made |
//! | `otel.kind` | `client` on attempts (`tracing-opentelemetry`'s span kind) |
//! | `otel.status_code` | `ERROR` on failure (`tracing-opentelemetry`'s span status) |
//!
//! No header value, query string, user information or body ever reaches a
//! field.
//!
//! When no subscriber wants a span, creating it is a static level check
//! and a cached callsite check, and gives a disabled span that every
//! record and enter skips; the layers then build no field value and insert
//! no extension.

use tracing::Span;
use tracing::field::Empty;

/// The target of sturdy's spans (filter with `sturdy=debug`, for example).
pub const TARGET: &str = "sturdy";

/// The name of the span of a logical call.
pub const CALL_SPAN: &str = "sturdy.call";

/// The name of the span of one attempt.
pub const ATTEMPT_SPAN: &str = "sturdy.attempt";

/// The span of the attempt a request is, handed down by the layer that
/// created it (the retry layer) to the layer that fills it in and enters it
/// (the attempts metrics layer), which takes it out of the request.
/// Inserted only when the span is enabled.
#[derive(Debug, Clone)]
pub struct AttemptSpan(pub Span);

/// A new `sturdy.call` span (INFO), a child of the current span, with every
/// field empty.
pub fn call_span() -> Span {
    tracing::info_span!(
        target: "sturdy",
        "sturdy.call",
        "http.request.method" = Empty,
        "server.address" = Empty,
        "server.port" = Empty,
        "url.full" = Empty,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        "sturdy.outcome" = Empty,
        "sturdy.reach" = Empty,
        "sturdy.workload" = Empty,
        "sturdy.attempts" = Empty,
        "otel.status_code" = Empty,
    )
}

/// A new `sturdy.attempt` span (DEBUG), a child of the current span, for
/// the attempt that is the `resend_count`-th resend of the request (0 for
/// the first attempt, whose `http.request.resend_count` stays empty).
pub fn attempt_span(resend_count: u32) -> Span {
    let span = tracing::debug_span!(
        target: "sturdy",
        "sturdy.attempt",
        "http.request.method" = Empty,
        "server.address" = Empty,
        "server.port" = Empty,
        "url.full" = Empty,
        "http.request.resend_count" = Empty,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        "sturdy.outcome" = Empty,
        "sturdy.reach" = Empty,
        "sturdy.workload" = Empty,
        "otel.kind" = "client",
        "otel.status_code" = Empty,
    );
    if resend_count > 0 && !span.is_disabled() {
        span.record("http.request.resend_count", resend_count);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_subscriber_the_spans_are_disabled() {
        assert!(call_span().is_disabled());
        assert!(attempt_span(1).is_disabled());
    }
}
