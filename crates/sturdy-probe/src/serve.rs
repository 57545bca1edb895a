//! `--metrics-listen`: live Prometheus metrics at `/metrics` while the probe
//! runs: OpenMetrics for a scraper that asks for it, else Prometheus's text
//! format 0.0.4.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Binds `addr` and serves `registry` until the returned task is aborted.
pub async fn metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let registry = registry.clone();
            connections.spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    async move {
                        let openmetrics =
                            req.headers().get_all(http::header::ACCEPT).iter().any(|v| {
                                v.to_str()
                                    .is_ok_and(|v| v.contains("application/openmetrics-text"))
                            });
                        Ok::<_, std::convert::Infallible>(answer(
                            req.uri().path(),
                            openmetrics,
                            &registry,
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

/// `/metrics` in OpenMetrics when the scraper asks for it (Prometheus
/// does), else in the text format 0.0.4 (`curl`, `promtool check metrics`).
fn answer(path: &str, openmetrics: bool, registry: &Registry) -> http::Response<Full<Bytes>> {
    let mut text = String::new();
    let (status, body, kind) = match path {
        "/metrics" => {
            let (encoded, kind) = if openmetrics {
                (
                    prometheus_client::encoding::text::encode(&mut text, registry),
                    sturdy::metrics::OPENMETRICS,
                )
            } else {
                (
                    sturdy::metrics::encode_text_004(&mut text, registry),
                    sturdy::metrics::TEXT_004,
                )
            };
            match encoded {
                Ok(()) => (200, text, kind),
                Err(e) => (500, format!("encoding failed: {e}\n"), "text/plain"),
            }
        }
        _ => (404, "try /metrics\n".to_owned(), "text/plain"),
    };
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_the_registry_at_metrics_and_404_elsewhere() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("probe_test_calls", "calls in this test", counter.clone());
        counter.inc_by(3);
        let (addr, task) = metrics("127.0.0.1:0".parse().unwrap(), Arc::new(registry))
            .await
            .unwrap();
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<http_body_util::Empty<Bytes>>();
        let get = |path: &str| {
            let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
            client.get(uri)
        };
        let resp = get("/metrics").await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("probe_test_calls_total 3"), "{text}");
        // Text format 0.0.4 for a plain scraper: HELP and TYPE name the
        // counter's samples, no OpenMetrics-only lines.
        assert!(
            text.contains("# TYPE probe_test_calls_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let om = http::Request::get(format!("http://{addr}/metrics"))
            .header(
                http::header::ACCEPT,
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = client.request(om).await.unwrap();
        assert_eq!(
            resp.headers()[http::header::CONTENT_TYPE],
            sturdy::metrics::OPENMETRICS
        );
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("# TYPE probe_test_calls counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(get("/").await.unwrap().status(), 404);
        task.abort();
    }
}
