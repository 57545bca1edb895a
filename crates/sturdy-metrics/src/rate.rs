//! The rate control's series in Prometheus: [`PacerCollector`] and
//! [`ConcurrencyCollector`], prometheus-client `Collector`s that read
//! `sturdy-rate`'s own counts when a registry is encoded.
//!
//! Nothing is added to a request's path: the pacer and the adaptive limit
//! already keep these counts (atomics they update anyway), and a scrape
//! reads them ([`PacerLayer::stats`], [`ConcurrencyGauge`]). Names, labels
//! and help texts come from [`crate::series`] ([`series::RATE`]).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use sturdy_rate::{ConcurrencyGauge, PacerLayer, ServerStats};

use crate::series::{self, Series, SeriesKind, split_server};

/// The unit of a series with `seconds`.
static SECONDS: Unit = Unit::Seconds;

/// A pacer's server label (`host:port`, as the pacer forms it from the
/// request URI, never from a header) split as the other series split
/// theirs: `server_address` and, when there is one, `server_port`.
struct ServerLabels<'a>(&'a str);

impl EncodeLabelSet for ServerLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        let (host, port) = split_server(self.0);
        ("server_address", host).encode(encoder.encode_label())?;
        if let Some(port) = port {
            ("server_port", port).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn metric_type(s: &Series) -> MetricType {
    match s.kind {
        SeriesKind::Counter => MetricType::Counter,
        SeriesKind::Gauge => MetricType::Gauge,
        SeriesKind::Histogram => MetricType::Histogram,
    }
}

/// Writes `s`'s descriptor: its name, unit and type, and its help text
/// with a full stop, as prometheus-client writes those of registered
/// metrics.
fn describe<'s>(
    encoder: &'s mut DescriptorEncoder<'_>,
    s: &Series,
) -> Result<MetricEncoder<'s>, fmt::Error> {
    let help = format!("{}.", s.help);
    encoder.encode_descriptor(s.base, &help, s.seconds.then_some(&SECONDS), metric_type(s))
}

/// `s`, with one sample per server.
fn per_server<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    s: &Series,
    servers: &[ServerStats],
    value: impl Fn(&ServerStats) -> M,
) -> fmt::Result {
    let mut metric = describe(encoder, s)?;
    for server in servers {
        value(server).encode(metric.encode_family(&ServerLabels(&server.server))?)?;
    }
    Ok(())
}

/// Exports what a pacer did, per server, in Prometheus: attempts held
/// (`sturdy_client_pacer_held_total`), the time they spent held
/// (`sturdy_client_pacer_held_seconds_total`), attempts failed at once for
/// a reset past their deadline
/// (`sturdy_client_pacer_deadline_failures_total`) and attempts held right
/// now (`sturdy_client_pacer_holding`), each labelled `server_address` and
/// `server_port` as the other series are.
///
/// It reads [`PacerLayer::stats`] when the registry is encoded, and only
/// then: the pacer counts these anyway, so exporting them adds nothing to
/// a request's path. A server appears once the pacer has seen a request
/// for it (with zeros until it holds one); a pacer that is off
/// (`StackBuilder::pacing(false)`) exports nothing. The labels come from
/// request URIs only (at most [`sturdy_rate::MAX_SERVERS`] servers), never
/// from a header.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use prometheus_client::registry::Registry;
/// use sturdy_metrics::PacerCollector;
/// use sturdy_rate::PacerLayer;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), sturdy_core::BoxError> {
/// let pacer = PacerLayer::new(); // in a Stack: stack.pacer()
/// let mut registry = Registry::default();
/// PacerCollector::new(&pacer).register(&mut registry);
///
/// // A server that says no request is left until two seconds from now.
/// let mut svc = ServiceBuilder::new()
///     .layer(pacer.clone())
///     .service_fn(|_req: http::Request<Full<Bytes>>| async {
///         Ok::<_, sturdy_core::BoxError>(
///             http::Response::builder()
///                 .header("x-ratelimit-remaining-requests", "0")
///                 .header("x-ratelimit-reset-requests", "2s")
///                 .body(())?,
///         )
///     });
/// let req = || http::Request::post("https://api.test/v1/chat/completions")
///     .body(Full::new(Bytes::new()))
///     .unwrap();
/// svc.ready().await?.call(req()).await?;
/// svc.ready().await?.call(req()).await?; // held for two seconds
///
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry)?;
/// let labels = r#"{server_address="api.test",server_port="443"}"#;
/// assert!(text.contains(&format!("sturdy_client_pacer_held_total{labels} 1\n")));
/// assert!(text.contains(&format!("sturdy_client_pacer_held_seconds_total{labels} 2.0\n")));
/// assert!(text.contains(&format!("sturdy_client_pacer_holding{labels} 0\n")));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PacerCollector {
    pacer: PacerLayer,
}

impl PacerCollector {
    /// Reads `pacer`, which every clone of it and every service it made
    /// share (in a `Stack`: `stack.pacer()`).
    pub fn new(pacer: &PacerLayer) -> PacerCollector {
        PacerCollector {
            pacer: pacer.clone(),
        }
    }

    /// Registers it into `registry`: the same as
    /// `registry.register_collector(Box::new(self))`.
    ///
    /// ```
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let pacer = sturdy_rate::PacerLayer::new();
    /// sturdy_metrics::PacerCollector::new(&pacer).register(&mut registry);
    /// ```
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl Collector for PacerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = self.pacer.stats();
        if stats.servers.is_empty() {
            return Ok(());
        }
        let servers = &stats.servers;
        per_server(&mut encoder, &series::PACER_HELD, servers, |s| {
            ConstCounter::new(s.held)
        })?;
        per_server(&mut encoder, &series::PACER_HELD_TIME, servers, |s| {
            ConstCounter::new(s.held_time.as_secs_f64())
        })?;
        per_server(
            &mut encoder,
            &series::PACER_DEADLINE_FAILURES,
            servers,
            |s| ConstCounter::new(s.failed_deadline),
        )?;
        per_server(&mut encoder, &series::PACER_HOLDING, servers, |s| {
            ConstGauge::new(s.holding)
        })
    }
}

/// Exports an adaptive concurrency limit's gauges in Prometheus: the limit
/// now (`sturdy_client_concurrency_limit`), the attempts holding a permit
/// (`sturdy_client_concurrency_in_flight`) and the callers waiting for one
/// (`sturdy_client_concurrency_waiting`).
///
/// It reads the [`ConcurrencyGauge`] when the registry is encoded (three
/// relaxed atomic loads), and only then. The series carry no label of
/// their own: one registry holds one limit's. For several limits (one per
/// server), register each into a sub-registry with a label of yours,
/// `registry.sub_registry_with_label(("limit".into(), "openai".into()))`.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use sturdy_metrics::ConcurrencyCollector;
/// use sturdy_rate::AdaptiveConcurrencyLayer;
///
/// let limit = AdaptiveConcurrencyLayer::new();
/// // In a Stack: Stack::builder().attempt_layer(limit.clone()).
/// let mut registry = Registry::default();
/// ConcurrencyCollector::new(limit.gauge()).register(&mut registry);
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("sturdy_client_concurrency_limit 16\n"));
/// assert!(text.contains("sturdy_client_concurrency_in_flight 0\n"));
/// assert!(text.contains("sturdy_client_concurrency_waiting 0\n"));
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyCollector {
    gauge: ConcurrencyGauge,
}

impl ConcurrencyCollector {
    /// Reads `gauge` (from `AdaptiveConcurrencyLayer::gauge`).
    pub fn new(gauge: ConcurrencyGauge) -> ConcurrencyCollector {
        ConcurrencyCollector { gauge }
    }

    /// Registers it into `registry`: the same as
    /// `registry.register_collector(Box::new(self))`.
    ///
    /// ```
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let limit = sturdy_rate::AdaptiveConcurrencyLayer::new();
    /// sturdy_metrics::ConcurrencyCollector::new(limit.gauge()).register(&mut registry);
    /// ```
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl Collector for ConcurrencyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let gauges = [
            (&series::CONCURRENCY_LIMIT, self.gauge.current_limit()),
            (&series::CONCURRENCY_IN_FLIGHT, self.gauge.in_flight()),
            (&series::CONCURRENCY_WAITING, self.gauge.waiting()),
        ];
        for (s, value) in gauges {
            let value = ConstGauge::new(u64::try_from(value).unwrap_or(u64::MAX));
            value.encode(describe(&mut encoder, s)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sturdy_rate::AdaptiveConcurrencyLayer;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn a_pacer_that_saw_no_server_or_is_off_exports_nothing() {
        let mut registry = Registry::default();
        PacerCollector::new(&PacerLayer::new()).register(&mut registry);
        PacerCollector::new(&PacerLayer::off()).register(&mut registry);
        assert_eq!(text(&registry), "# EOF\n");
    }

    #[test]
    fn limits_apart_by_a_sub_registrys_label() {
        let mut registry = Registry::default();
        for (name, initial) in [("a", 3), ("b", 5)] {
            let limit = AdaptiveConcurrencyLayer::builder()
                .initial(initial)
                .build()
                .unwrap();
            ConcurrencyCollector::new(limit.gauge())
                .register(registry.sub_registry_with_label(("limit".into(), name.into())));
        }
        let out = text(&registry);
        assert!(
            out.contains("sturdy_client_concurrency_limit{limit=\"a\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("sturdy_client_concurrency_limit{limit=\"b\"} 5\n"),
            "{out}"
        );
        let mut plain = String::new();
        crate::encode_text_004(&mut plain, &registry).unwrap();
        assert!(plain.contains(
            "# HELP sturdy_client_concurrency_waiting Callers waiting for a permit of the adaptive concurrency limit.\n"
        ));
    }

    #[test]
    fn server_labels_are_split_as_the_other_series_split_theirs() {
        for (label, want) in [
            (
                "api.test:443",
                "server_address=\"api.test\",server_port=\"443\"",
            ),
            ("[::1]:8080", "server_address=\"::1\",server_port=\"8080\""),
            ("svc.test", "server_address=\"svc.test\""),
        ] {
            let mut registry = Registry::default();
            let family = prometheus_client::metrics::family::Family::<
                ServerLabelsOwned,
                prometheus_client::metrics::gauge::Gauge,
            >::default();
            family
                .get_or_create(&ServerLabelsOwned(label.into()))
                .set(1);
            registry.register("x", "x", family);
            let out = text(&registry);
            assert!(out.contains(&format!("x{{{want}}} 1\n")), "{label}: {out}");
        }
    }

    /// [`ServerLabels`] with an owned label, for a `Family`.
    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    struct ServerLabelsOwned(String);

    impl EncodeLabelSet for ServerLabelsOwned {
        fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
            ServerLabels(&self.0).encode(encoder)
        }
    }
}
