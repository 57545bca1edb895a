//! The `tracing` span of a call or an attempt, as the metrics layer fills
//! it in (the spans and their fields are defined in [`sturdy_core::span`]).
//!
//! The span travels in the flight, next to the outcome it ends with: it is
//! entered while the inner future and the response body are polled, gets
//! the request's fields at the start, the status when a head arrives, and
//! the outcome when the flight records it; the flight's handle is dropped
//! with the flight, at the end of the body.
//!
//! Every field comes from what the metrics already compute (method and
//! server labels, the outcome, the reach, the workload), or from the URI's
//! scheme, host, port and path: never a header value, a query, a fragment
//! or user information. Nothing here runs when the span is disabled.

use std::fmt::Write as _;

use sturdy_core::span::{AttemptSpan, attempt_span, call_span};
use sturdy_core::{Reach, Workload};
use tracing::Span;

use crate::layer::Shared;
use crate::{Outcome, ServerAddress, UNKNOWN_SERVER};

/// The span of a call or attempt about to start, its request fields
/// recorded: a call's is new; an attempt's is the one the retry layer above
/// created and handed down (taken out of the request), else new.
pub(crate) fn start<R, B>(
    shared: &Shared<R>,
    req: &mut http::Request<B>,
    server: &ServerAddress,
) -> Span {
    let span = match shared.scope {
        crate::Scope::Call => call_span(),
        // The attempt span is DEBUG: below that, not even the extension
        // map is looked at.
        crate::Scope::Attempt if !tracing::level_enabled!(tracing::Level::DEBUG) => {
            return Span::none();
        }
        crate::Scope::Attempt => match req.extensions_mut().remove::<AttemptSpan>() {
            Some(AttemptSpan(span)) => span,
            None => attempt_span(0),
        },
    };
    if !span.is_disabled() {
        let method = shared.known.label(req.method());
        span.record("http.request.method", method.as_str());
        record_server(&span, server);
        if let Some(url) = full_url(req.uri()) {
            span.record("url.full", url.as_str());
        }
    }
    span
}

/// `server.address` and `server.port` from a `host[:port]` label (an IPv6
/// host without its brackets); nothing for `unknown`.
fn record_server(span: &Span, server: &ServerAddress) {
    let label = server.as_str();
    if label == UNKNOWN_SERVER {
        return;
    }
    let (host, port) = match label.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => {
            (host, port.parse::<u16>().ok())
        }
        _ => (label, None),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    span.record("server.address", host);
    if let Some(port) = port {
        span.record("server.port", port);
    }
}

/// `scheme://host[:port]/path` of an absolute URI: the query, the fragment
/// (never in a request URI anyway) and the user information left out.
pub(crate) fn full_url(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let host = authority.host();
    let path = uri.path();
    let mut url = String::with_capacity(scheme.len() + 3 + host.len() + 6 + path.len());
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    if let Some(port) = authority.port_u16() {
        let _ = write!(url, ":{port}");
    }
    url.push_str(path);
    Some(url)
}

/// A response head arrived.
pub(crate) fn record_status(span: &Span, status: http::StatusCode) {
    if !span.is_disabled() {
        span.record("http.response.status_code", status.as_u16());
    }
}

/// The call or attempt ended with `outcome`; `attempts` for a call.
pub(crate) fn record_end(span: &Span, outcome: Outcome, workload: Workload, attempts: Option<u32>) {
    if span.is_disabled() {
        return;
    }
    let reach: Reach = outcome.reach();
    span.record("sturdy.outcome", outcome.label());
    span.record("sturdy.reach", reach.label());
    span.record("sturdy.workload", workload.label());
    if let Some(n) = attempts {
        span.record("sturdy.attempts", n);
    }
    if let Outcome::Failed(kind) = outcome {
        span.record("error.type", kind.label());
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_url_keeps_scheme_host_port_and_path_only() {
        let url = |s: &str| full_url(&s.parse::<http::Uri>().unwrap());
        assert_eq!(
            url("https://user:sk-secret@api.example.com:8443/v1/chat?key=sk-q").as_deref(),
            Some("https://api.example.com:8443/v1/chat")
        );
        assert_eq!(
            url("http://[::1]:9/x?y").as_deref(),
            Some("http://[::1]:9/x")
        );
        assert_eq!(url("http://h?only=query").as_deref(), Some("http://h/"));
        assert_eq!(url("/v1/models?key=sk").as_deref(), None);
    }
}
