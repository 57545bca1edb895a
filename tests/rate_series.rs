//! The rate control's Prometheus series, scraped as a user would, after
//! real traffic through the `Stack` and `sturdy::client()` to the fault
//! server on loopback: the pacer's counts per server against its rate-limit
//! mode, the adaptive limit's gauges against its capacity mode, and every
//! sample's name and labels as the series table lists them.

mod metrics_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics_support::{client, encode, hold_past_deadline, plain_chat, value};
use prometheus_client::registry::Registry;
use sturdy::Stack;
use sturdy::metrics::series::{self, Series, SeriesKind};
use sturdy::metrics::{ConcurrencyCollector, PacerCollector, PrometheusRecorder};
use sturdy::rate::AdaptiveConcurrencyLayer;
use sturdy_faults::{Capacity, FaultServer, RateLimit};
use tower::{Layer, Service, ServiceExt};

/// `calls` calls through clones of `svc`, `concurrency` at a time, each
/// read to its end; how many succeeded.
async fn drive<S, B>(svc: S, url: &str, calls: usize, concurrency: usize) -> usize
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (svc, url, next, ok) = (svc.clone(), url.to_owned(), next.clone(), ok.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let Ok(resp) = svc.clone().oneshot(plain_chat(&url)).await else {
                    continue;
                };
                let status = resp.status();
                if resp.into_body().collect().await.is_ok() && status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    ok.load(Ordering::Relaxed)
}

/// Encodes `registry` every 2 ms until told to stop; the largest value of
/// each of `gauges` (summed over its samples) any scrape saw.
fn scrape_while_running(
    registry: Arc<Registry>,
    gauges: &'static [&'static str],
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<f64>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut max = vec![0.0f64; gauges.len()];
            while !stop.load(Ordering::Relaxed) {
                let text = encode(&registry);
                for (m, g) in max.iter_mut().zip(gauges) {
                    *m = m.max(value(&text, g, &[]));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            max
        }
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pacers_series_are_its_stats_by_server() {
    let server = FaultServer::builder()
        .rate_limit(RateLimit::per_second(40.0))
        .start()
        .await
        .expect("fault server");
    let url = server.base_url();
    let port = server.addr().port().to_string();
    let mut registry = Registry::default();
    let stack = Stack::builder()
        .recorder(PrometheusRecorder::new(&mut registry))
        .build()
        .expect("a stack");
    PacerCollector::new(stack.pacer()).register(&mut registry);
    let registry = Arc::new(registry);
    assert!(
        !encode(&registry).contains("sturdy_client_pacer"),
        "no server seen yet: no pacer series"
    );

    let (stop, scraper) = scrape_while_running(registry.clone(), &["sturdy_client_pacer_holding"]);
    let ok = drive(stack.layer(client()), &url, 120, 24).await;
    stop.store(true, Ordering::Relaxed);
    let max_holding = scraper.await.expect("the scraper")[0];
    assert_eq!(ok, 120, "every paced call succeeds");

    let stats = stack.pacer().stats();
    let text = encode(&registry);
    let at = [("server_address", "127.0.0.1"), ("server_port", &*port)];
    let held = value(&text, "sturdy_client_pacer_held_total", &at);
    assert!(held > 0.0, "the pacer held attempts\n{text}");
    assert_eq!(held, stats.held() as f64, "{text}");
    assert_eq!(
        value(&text, "sturdy_client_pacer_held_total", &[]),
        held,
        "one server, one sample"
    );
    let held_time: Duration = stats.servers.iter().map(|s| s.held_time).sum();
    let held_seconds = value(&text, "sturdy_client_pacer_held_seconds_total", &at);
    assert!(held_seconds > 0.0, "{text}");
    assert_eq!(held_seconds, held_time.as_secs_f64(), "{text}");
    assert_eq!(
        value(&text, "sturdy_client_pacer_deadline_failures_total", &at),
        0.0
    );
    assert_eq!(value(&text, "sturdy_client_pacer_holding", &at), 0.0);
    assert!(
        max_holding > 0.0,
        "a scrape during the run saw attempts held right now"
    );
    // The unit and the type, as registered metrics carry them.
    assert!(text.contains("# UNIT sturdy_client_pacer_held_seconds seconds\n"));
    assert!(text.contains("# TYPE sturdy_client_pacer_held counter\n"));
    assert!(text.contains("# TYPE sturdy_client_pacer_holding gauge\n"));
    // The text format 0.0.4 (`promtool check metrics`) names the samples.
    let mut plain = String::new();
    sturdy::metrics::encode_text_004(&mut plain, &registry).expect("encoding");
    assert!(plain.contains("# TYPE sturdy_client_pacer_held_seconds_total counter\n"));
    assert!(plain.contains("# TYPE sturdy_client_pacer_deadline_failures_total counter\n"));
    assert!(!text.contains(&format!(":{port}")), "host and port apart");
    server.shutdown().await;
}

#[tokio::test]
async fn a_hold_past_the_deadline_counts_as_a_deadline_failure() {
    let (server, stack) = hold_past_deadline().await;
    let url = server.base_url();
    let mut registry = Registry::default();
    PacerCollector::new(stack.pacer()).register(&mut registry);
    let svc = stack.layer(client());
    let first = svc
        .clone()
        .oneshot(plain_chat(&url))
        .await
        .expect("the first call");
    first.into_body().collect().await.expect("its body");
    let err = svc
        .clone()
        .oneshot(plain_chat(&url))
        .await
        .expect_err("no room in time");
    assert_eq!(sturdy::classify_error(&*err).label(), "rate_limit_hold");
    let text = encode(&registry);
    let failed = value(&text, "sturdy_client_pacer_deadline_failures_total", &[]);
    assert_eq!(failed, 1.0, "{text}");
    assert_eq!(failed, stack.pacer().stats().failed_deadline() as f64);
    assert_eq!(value(&text, "sturdy_client_pacer_held_total", &[]), 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limits_gauges_are_read_at_each_scrape() {
    // 6 served at once, 20 ms each; the rest refused with a 429 at once.
    let server = FaultServer::builder()
        .capacity(Capacity::new(6).service_time(Duration::from_millis(20)))
        .start()
        .await
        .expect("fault server");
    let url = server.base_url();
    let limit = AdaptiveConcurrencyLayer::new();
    let gauge = limit.gauge();
    let mut registry = Registry::default();
    ConcurrencyCollector::new(limit.gauge()).register(&mut registry);
    let stack = Stack::builder()
        .attempt_layer(limit.clone())
        .build()
        .expect("a stack");
    let registry = Arc::new(registry);
    let before = encode(&registry);
    assert_eq!(value(&before, "sturdy_client_concurrency_limit", &[]), 16.0);

    let (stop, scraper) = scrape_while_running(
        registry.clone(),
        &[
            "sturdy_client_concurrency_in_flight",
            "sturdy_client_concurrency_waiting",
        ],
    );
    drive(stack.layer(client()), &url, 300, 48).await;
    stop.store(true, Ordering::Relaxed);
    let max = scraper.await.expect("the scraper");
    let text = encode(&registry);
    let now = value(&text, "sturdy_client_concurrency_limit", &[]);
    assert_eq!(now, gauge.current_limit() as f64, "{text}");
    assert!(
        now < 16.0,
        "the limit shrank against a capacity of 6: {now}"
    );
    assert_eq!(
        value(&text, "sturdy_client_concurrency_in_flight", &[]),
        0.0
    );
    assert_eq!(value(&text, "sturdy_client_concurrency_waiting", &[]), 0.0);
    assert!(max[0] > 0.0, "a scrape during the run saw permits held");
    assert!(max[1] > 0.0, "a scrape during the run saw callers waiting");
    assert!(text.contains("# TYPE sturdy_client_concurrency_limit gauge\n"));
    server.shutdown().await;
}

/// The series of the table a sample belongs to, and the label names it may
/// carry beyond the table's (`le` on a histogram's buckets).
fn series_of(sample: &str) -> Option<(Series, &'static [&'static str])> {
    series::SERIES.into_iter().find_map(|s| {
        let name = s.name();
        if sample == name {
            return Some((s, &[][..]));
        }
        if s.kind != SeriesKind::Histogram {
            return None;
        }
        match sample.strip_prefix(&*name)? {
            "_bucket" => Some((s, &["le"][..])),
            "_sum" | "_count" => Some((s, &[][..])),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_is_named_and_labelled_as_the_series_table_says() {
    // Both limits at once: the pacer holds by the headers, the adaptive
    // limit shrinks on the 429s of the capacity.
    let server = FaultServer::builder()
        .rate_limit(RateLimit::per_second(60.0))
        .capacity(Capacity::new(8).service_time(Duration::from_millis(10)))
        .start()
        .await
        .expect("fault server");
    let url = server.base_url();
    let mut registry = Registry::default();
    let limit = AdaptiveConcurrencyLayer::new();
    let stack = Stack::builder()
        .recorder(PrometheusRecorder::new(&mut registry))
        .attempt_layer(limit.clone())
        .build()
        .expect("a stack");
    PacerCollector::new(stack.pacer()).register(&mut registry);
    ConcurrencyCollector::new(limit.gauge()).register(&mut registry);
    drive(stack.layer(client()), &url, 120, 24).await;
    assert!(stack.pacer().stats().held() > 0, "the pacer held attempts");

    let text = encode(&registry);
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let name = &line[..name_end];
        let (s, extra) =
            series_of(name).unwrap_or_else(|| panic!("{name} is not in the series table\n{text}"));
        seen.insert(s.name());
        let labels = line[name_end..]
            .strip_prefix('{')
            .and_then(|r| r.rsplit_once("} "))
            .map_or("", |(l, _)| l);
        let names: BTreeSet<&str> = labels
            .split("\",")
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
            .collect();
        for label in &names {
            assert!(
                extra.contains(label) || s.labels.iter().any(|l| l.trim_end_matches('?') == *label),
                "{name}: label {label} is not in the table's {:?}",
                s.labels
            );
        }
        for required in s.labels.iter().filter(|l| !l.ends_with('?')) {
            assert!(
                names.contains(required),
                "{name}: no {required} label in {line}"
            );
        }
    }
    for s in series::RATE {
        assert!(
            seen.contains(&s.name()),
            "{} not exported\n{text}",
            s.name()
        );
        let family = s.name();
        let family = family.strip_suffix("_total").unwrap_or(&family);
        assert!(
            text.contains(&format!("# HELP {family} {}.\n", s.help)),
            "{family}: help as in the table"
        );
    }
    server.shutdown().await;
}
