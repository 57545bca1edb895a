//! Serving sturdy's metrics to Prometheus: calls go through the stack with a
//! `PrometheusRecorder`, and a tiny HTTP server exposes `/metrics`. The
//! example scrapes itself once and prints what a Prometheus server would
//! collect, then exits.
//!
//! Run: `cargo run --example prometheus`

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use sturdy::metrics::PrometheusRecorder;
use sturdy::{RetrySafe, Stack};
use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), sturdy::BoxError> {
    let server = FaultServer::start().await?;
    let mut registry = Registry::default();
    let stack = Stack::builder()
        .recorder(PrometheusRecorder::new(&mut registry))
        .build()?;
    let service = stack.layer(sturdy::client().no_proxy().build()?);

    // Some traffic: a clean call, one retried after a 429, one refused for good.
    for (call, script) in [
        ("a", "200"),
        ("b", "429;retry-after-ms=20, 200"),
        ("c", "400"),
    ] {
        let mut req = http::Request::post(format!("{}/v1/chat/completions", server.base_url()))
            .header(CALL_HEADER, call)
            .header(FAULT_HEADER, script)
            .body(Full::new(Bytes::from_static(
                br#"{"model":"demo","messages":[]}"#,
            )))?;
        req.extensions_mut().insert(RetrySafe);
        let resp = service.clone().oneshot(req).await?;
        resp.into_body().collect().await?;
    }

    // /metrics, served the way an exporter would.
    let registry = Arc::new(registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let exporter = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let mut text = String::new();
                    let encoded = prometheus_client::encoding::text::encode(&mut text, &registry);
                    async move { encoded.map(|()| http::Response::new(Full::new(Bytes::from(text)))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    println!("serving http://{addr}/metrics; scraping it once:\n");

    let scraper = sturdy::client().no_proxy().build()?;
    let scrape = http::Request::get(format!("http://{addr}/metrics"))
        .body(sturdy::boxed(Full::new(Bytes::new())))?;
    let text = scraper
        .request(scrape)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    for line in String::from_utf8_lossy(&text).lines() {
        if line.starts_with("sturdy_client_call_duration_seconds_count")
            || line.starts_with("sturdy_client_retries_total")
            || line.starts_with("# HELP sturdy_client_call_duration")
        {
            println!("{line}");
        }
    }
    exporter.abort();
    Ok(())
}
