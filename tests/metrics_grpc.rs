//! sturdy-metrics around a real tonic `Channel` talking to a real
//! tonic-health server on loopback: the method is `service/method` from
//! tonic's `GrpcMethod`, the server address is the configured label (tonic
//! requests carry no authority above the `Channel`), an OK call is read
//! from the trailers, a Trailers-Only error from the headers, and a stream
//! the caller drops is cancelled with reach acknowledged.

use std::time::Duration;

use prometheus_client::registry::Registry;
use sturdy::Reach;
use sturdy::metrics::{Both, FailureMetricsLayer, PrometheusRecorder, Scope, SnapshotRecorder};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const BOUND: Duration = Duration::from_secs(10);

async fn health_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("sturdy.Up", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Served with hyper directly (tonic's router feature is not enabled
    // for the workspace's tests): h2c, one task per connection.
    let task = tokio::spawn(async move {
        let _keep = reporter;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let mut service = service.clone();
                        async move {
                            tower::Service::call(&mut service, req.map(tonic::body::Body::new))
                                .await
                        }
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
            });
        }
    });
    (addr, task)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn grpc_calls_are_labelled_by_method_and_judged_by_grpc_status() {
    let (addr, task) = health_server().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(BOUND)
        .connect()
        .await
        .expect("connect");
    let mut registry = Registry::default();
    let snap = SnapshotRecorder::new();
    let rec = Both(PrometheusRecorder::new(&mut registry), snap.clone());
    let svc = tower::ServiceBuilder::new()
        .layer(
            FailureMetricsLayer::attempts(rec)
                .server_label("health.internal:50051")
                .unwrap(),
        )
        .service(channel);
    let mut client = HealthClient::new(svc);

    // OK: the grpc-status arrives in the trailers.
    let up = tokio::time::timeout(BOUND, client.check(check("sturdy.Up")))
        .await
        .expect("bounded")
        .expect("serving");
    assert_eq!(up.into_inner().status, 1);
    // NOT_FOUND: a Trailers-Only response, judged at the head.
    let missing = tokio::time::timeout(BOUND, client.check(check("sturdy.Missing")))
        .await
        .expect("bounded")
        .expect_err("unknown service");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // A server stream the caller drops after its first message.
    let mut watch = tokio::time::timeout(BOUND, client.watch(check("sturdy.Up")))
        .await
        .expect("bounded")
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(BOUND, watch.message())
        .await
        .expect("bounded")
        .expect("a message");
    assert!(first.is_some());
    drop(watch);

    let s = snap.snapshot();
    assert_eq!(
        s.count(Scope::Attempt, "ok", Reach::Acknowledged),
        1,
        "{s:?}"
    );
    assert_eq!(
        s.count(Scope::Attempt, "grpc_not_found", Reach::Acknowledged),
        1,
        "{s:?}"
    );
    assert_eq!(
        s.count(Scope::Attempt, "cancelled", Reach::Acknowledged),
        1,
        "{s:?}"
    );
    assert_eq!(s.in_flight(Scope::Attempt), 0);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for (method, error) in [
        ("grpc.health.v1.Health/Check", ""),
        (
            "grpc.health.v1.Health/Check",
            "error_type=\"grpc_not_found\",",
        ),
        ("grpc.health.v1.Health/Watch", "error_type=\"cancelled\","),
    ] {
        // A gRPC call is an HTTP POST; its method goes in rpc_method.
        let line = format!(
            "http_client_request_duration_seconds_count{{http_request_method=\"POST\",rpc_method=\"{method}\",server_address=\"health.internal\",server_port=\"50051\",http_response_status_code=\"200\",{error}reach=\"acknowledged\",workload=\"interactive\"}} 1\n"
        );
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    task.abort();
}
