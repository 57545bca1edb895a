//! Outages: connections refused (ECONNREFUSED) for their length, open ones
//! dropped, then served again on the same port.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sturdy_faults::FaultServer;
use tokio::net::TcpStream;

async fn assert_refused(addr: SocketAddr) {
    match within(TcpStream::connect(addr)).await {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("connected to {addr} during an outage"),
    }
}

/// Retries `GET /v1/models` until it succeeds; returns when it did.
async fn wait_until_served(client: &HttpClient, server: &FaultServer) -> Instant {
    within(async {
        loop {
            if let Ok(reply) = exchange(client, get(&server.base_url(), "/v1/models")).await
                && reply.status == StatusCode::OK
            {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
}

#[tokio::test]
async fn outage_refuses_then_serves_on_the_same_port_and_drops_open_connections() {
    let server = FaultServer::start().await.unwrap();
    let addr = server.addr();

    // An open keep-alive connection with one exchange behind it.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let request = Request::get("/v1/models")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    within(response.into_body().collect()).await.unwrap();
    assert!(!driver.is_finished(), "the connection is kept alive");

    let len = Duration::from_millis(1000);
    let started = Instant::now();
    within(server.outage(len)).await.unwrap();

    assert_refused(addr).await;
    let client = client();
    let during = exchange(&client, get(&server.base_url(), "/v1/models")).await;
    assert!(during.is_err_and(|e| e.is_connect()));
    // The open connection was dropped by the server.
    within(driver).await.unwrap().ok();
    assert!(sender.is_closed());

    let served = wait_until_served(&client, &server).await;
    assert!(
        served - started >= len,
        "served after {:?}",
        served - started
    );
    assert_eq!(server.addr(), addr);
    assert_eq!(
        server.dashboard(),
        dashboard(2, &[(200, 2)], &[("outage_dropped", 1)])
    );
}

#[tokio::test]
async fn scheduled_outage_starts_and_ends_by_itself() {
    let start = Duration::from_millis(200);
    let len = Duration::from_millis(1500);
    let began = Instant::now();
    let server = FaultServer::builder()
        .outage_at(start, len)
        .start()
        .await
        .unwrap();
    let client = client();
    let before = ok_exchange(&client, get(&server.base_url(), "/v1/models")).await;
    assert_eq!(before.status, StatusCode::OK);
    // The client keeps that connection idle in its pool until the outage.

    tokio::time::sleep_until((began + start + len / 2).into()).await;
    assert_refused(server.addr()).await;

    let served = wait_until_served(&client, &server).await;
    assert!(
        served - began >= start + len,
        "served after {:?}",
        served - began
    );
    assert_eq!(
        server.dashboard(),
        dashboard(2, &[(200, 2)], &[("outage_dropped", 1)])
    );
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback() {
    let err = FaultServer::builder()
        .listen("0.0.0.0:0".parse().unwrap())
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn dropping_the_server_ends_its_tasks_and_stalled_streams() {
    let runtime = tokio::runtime::Handle::current();
    let server = FaultServer::start().await.unwrap();
    let addr = server.addr();
    let client = h2_client();
    let response = within(client.request(scripted(
        &server.base_url(),
        true,
        "stalled",
        "stall;ms=8000",
    )))
    .await
    .unwrap();
    let mut body = response.into_body();
    let first = within(body.frame()).await.unwrap().unwrap();
    assert!(first.is_data());
    assert!(runtime.metrics().num_alive_tasks() > 0);

    drop(server);
    // The stalled stream ends long before its pause would have.
    let ended = within(body.frame()).await;
    assert!(!matches!(ended, Some(Ok(_))), "stream went on: {ended:?}");
    drop(body);
    drop(client);
    // Well under the 8 s pause: no stream task waits it out.
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        while runtime.metrics().num_alive_tasks() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "{} tasks outlived the server",
        runtime.metrics().num_alive_tasks()
    );
    assert_refused(addr).await;
}

#[tokio::test]
async fn dropping_the_server_ends_delayed_h2_requests() {
    let runtime = tokio::runtime::Handle::current();
    let server = FaultServer::start().await.unwrap();
    let client = h2_client();
    let pending = tokio::spawn(client.request(scripted(
        &server.base_url(),
        true,
        "delayed",
        "delay;ms=8000",
    )));
    within(async {
        while server.dashboard().faults("delay") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    drop(server);
    let result = within(pending).await.unwrap();
    assert!(result.is_err());
    drop(client);
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        while runtime.metrics().num_alive_tasks() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "{} tasks outlived the server",
        runtime.metrics().num_alive_tasks()
    );
}

#[tokio::test]
async fn a_window_answers_its_fault_then_the_server_recovers() {
    // 503 for everything unscripted during the first 300 ms, then healthy;
    // a scripted call inside the window still follows its script.
    let server = FaultServer::builder()
        .window(
            Duration::ZERO,
            Duration::from_millis(300),
            "503;retry-after=1".parse().unwrap(),
        )
        .start()
        .await
        .unwrap();
    let client = client();
    let base = server.base_url();
    let first = exchange(&client, chat(&base, r#"{"model":"m"}"#, &[]))
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.header("retry-after"), Some("1"));
    let scripted_ok = exchange(&client, scripted(&base, false, "w-1", "200"))
        .await
        .unwrap();
    assert_eq!(scripted_ok.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = exchange(&client, chat(&base, r#"{"model":"m"}"#, &[]))
        .await
        .unwrap();
    assert_eq!(after.status, StatusCode::OK);
    let d = server.dashboard();
    assert_eq!(
        (
            d.received,
            d.responded(503),
            d.responded(200),
            d.faults("status")
        ),
        (3, 1, 2, 1)
    );
}
