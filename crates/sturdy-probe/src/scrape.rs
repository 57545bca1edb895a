//! `--server-metrics`: the server's own count of the run, scraped from its
//! Prometheus endpoint before and after the run, to set beside the client's
//! attempts by reach.
//!
//! A scrape is one `GET` through a plain `sturdy::client()` (no stack: no
//! retry layer, no metrics of its own), bounded by [`SCRAPE_TIMEOUT`] in
//! all; within it, a request that gets no answer at all (a refused
//! connection, say) is tried up to [`TRIES`] times. A scrape that fails
//! never fails the run: the report says why and leaves the figures out.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Empty, Limited};

use crate::config::{MetricsAt, ServerMetrics};
use crate::exposition::{self, LabelFilter, Sum};

/// The bound on one scrape, answer read in full.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Tries of a scrape that gets no answer, [`RETRY_PAUSE`] apart.
pub const TRIES: u32 = 3;

/// The pause between tries.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The largest exposition read.
const MAX_EXPOSITION: usize = 64 * 1024 * 1024;

/// The text format first, OpenMetrics next: the reader takes both.
const ACCEPT: &str = "text/plain;version=0.0.4;q=0.9,\
application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

/// Scrapes one server's metrics endpoint and sums one counter.
pub struct Scraper {
    client: sturdy::Client,
    url: Uri,
    /// The API key header, sent only to the calls' own origin.
    key: Option<(HeaderName, HeaderValue)>,
    series: String,
    filter: LabelFilter,
    wait: Duration,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("series", &self.series)
            .field("filter", &self.filter)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Whether `a` and `b` have the same scheme, host and port (a missing port
/// being the scheme's default).
pub fn same_origin(a: &Uri, b: &Uri) -> bool {
    fn origin(u: &Uri) -> Option<(String, String, u16)> {
        let scheme = u.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        Some((
            scheme,
            u.host()?.to_ascii_lowercase(),
            u.port_u16().unwrap_or(default),
        ))
    }
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// The whole error chain in one line (never a header value: these are
/// transport errors).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl Scraper {
    /// A scraper for `config`: a path is resolved against `base`, the calls'
    /// base URL; `key`, the header the calls carry the API key in, goes
    /// along only when the endpoint has `base`'s scheme, host and port.
    /// `no_proxy` ignores the environment's proxies (as the embedded run's
    /// calls do).
    pub fn new(
        config: &ServerMetrics,
        base: &str,
        key: Option<&(HeaderName, HeaderValue)>,
        no_proxy: bool,
    ) -> Result<Scraper, String> {
        let base: Uri = base
            .parse()
            .map_err(|e| format!("the base URL does not parse: {e}"))?;
        let url = match &config.at {
            MetricsAt::Url(url) => url.clone(),
            MetricsAt::Path(path) => {
                let (Some(scheme), Some(authority)) = (base.scheme_str(), base.authority()) else {
                    return Err("the base URL has no scheme and host".into());
                };
                format!("{scheme}://{authority}{path}")
                    .parse()
                    .map_err(|e| format!("--server-metrics {path:?}: {e}"))?
            }
        };
        let key = key.filter(|_| same_origin(&url, &base)).cloned();
        let builder = sturdy::client();
        let builder = if no_proxy {
            builder.no_proxy()
        } else {
            builder
        };
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Scraper {
            client,
            url,
            key,
            series: config.series.clone(),
            filter: config.filter.clone(),
            wait: config.wait,
        })
    }

    /// The counter's name.
    pub fn series(&self) -> &str {
        &self.series
    }

    /// The filter, when one was given.
    pub fn filter(&self) -> Option<String> {
        (self.filter != LabelFilter::default()).then(|| self.filter.to_string())
    }

    /// Scrapes once and sums the counter.
    pub async fn scrape(&self) -> Result<Sum, String> {
        match tokio::time::timeout(SCRAPE_TIMEOUT, self.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no whole answer within {SCRAPE_TIMEOUT:?}")),
        }
    }

    /// The scrape after the run (after `--server-metrics-wait`), paired
    /// with the one before; an error says which failed and why.
    pub async fn after(&self, before: Result<Sum, String>) -> Result<(Sum, Sum), String> {
        let before = before.map_err(|e| format!("the scrape before the run failed: {e}"))?;
        tokio::time::sleep(self.wait).await;
        let after = self
            .scrape()
            .await
            .map_err(|e| format!("the scrape after the run failed: {e}"))?;
        Ok((before, after))
    }

    fn request(&self) -> Result<http::Request<sturdy::BoxBody>, String> {
        let mut builder = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, ACCEPT)
            .header(http::header::USER_AGENT, "sturdy-probe");
        if let Some((name, value)) = &self.key {
            builder = builder.header(name, value.clone());
        }
        builder
            .body(sturdy::core::boxed(Empty::<Bytes>::new()))
            .map_err(|e| format!("building the request: {e}"))
    }

    async fn fetch(&self) -> Result<Sum, String> {
        let mut tries = 0;
        let response = loop {
            tries += 1;
            match self.client.request(self.request()?).await {
                Ok(response) => break response,
                Err(_) if tries < TRIES => tokio::time::sleep(RETRY_PAUSE).await,
                Err(e) => return Err(format!("no answer ({tries} tries): {}", describe(&e))),
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_EXPOSITION)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {}", describe(&*e)))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        Ok(exposition::sum(&text, &self.series, &self.filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn the_key_goes_to_the_calls_own_origin_only() {
        let base = uri("https://api.example.test/inference/v1");
        for same in [
            "https://api.example.test/v1/accounts/a/metrics",
            "https://API.example.test:443/metrics",
        ] {
            assert!(same_origin(&uri(same), &base), "{same}");
        }
        for other in [
            "http://api.example.test/metrics",
            "https://api.example.test:8443/metrics",
            "https://metrics.example.test/metrics",
            "https://api.example.test.evil.test/metrics",
        ] {
            assert!(!same_origin(&uri(other), &base), "{other}");
        }
    }

    #[test]
    fn a_path_resolves_against_the_base_and_keeps_the_key_there() {
        let config = ServerMetrics {
            at: MetricsAt::Path("/metrics?x=1".into()),
            series: "s".into(),
            filter: LabelFilter::default(),
            wait: Duration::ZERO,
        };
        let key = (
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-canary"),
        );
        let s = Scraper::new(&config, "http://127.0.0.1:9/v1", Some(&key), true).unwrap();
        assert_eq!(s.url, uri("http://127.0.0.1:9/metrics?x=1"));
        assert!(s.key.is_some());
        assert!(!format!("{s:?}").contains("sk-canary"));
        let elsewhere = ServerMetrics {
            at: MetricsAt::Url(uri("http://127.0.0.2:9/metrics")),
            ..config
        };
        let s = Scraper::new(&elsewhere, "http://127.0.0.1:9/v1", Some(&key), true).unwrap();
        assert!(s.key.is_none());
    }
}
