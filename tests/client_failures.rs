//! `sturdy::client()` against real loopback conditions: every client-side
//! failure kind is produced for real and classified with its label and reach.
//! Only loopback addresses; DNS failures come from a resolver that fails.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sturdy::{FailureKind, Name, Reach, classify_error};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

type Resolved = std::vec::IntoIter<SocketAddr>;
type ResolveFuture = Pin<Box<dyn Future<Output = Result<Resolved, std::io::Error>> + Send>>;

fn get(url: &str) -> http::Request<sturdy::BoxBody> {
    http::Request::get(url)
        .body(sturdy::boxed(Full::new(Bytes::new())))
        .unwrap()
}

/// A resolver that fails every lookup, without sending anything anywhere.
fn failing_resolver()
-> impl tower::Service<Name, Response = Resolved, Error = std::io::Error, Future = ResolveFuture>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_name: Name| -> ResolveFuture {
        Box::pin(async { Err(std::io::Error::other("no such host (test resolver)")) })
    })
}

/// A resolver that never answers.
fn stalling_resolver()
-> impl tower::Service<Name, Response = Resolved, Error = std::io::Error, Future = ResolveFuture>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(|_name: Name| -> ResolveFuture { Box::pin(std::future::pending()) })
}

async fn expect_failure(
    client_result: Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
) -> FailureKind {
    match client_result {
        Ok(resp) => panic!("expected a failure, got {}", resp.status()),
        Err(e) => classify_error(&e),
    }
}

#[tokio::test]
async fn dns_failure_is_typed_and_not_sent() {
    let client = sturdy::client()
        .no_proxy()
        .resolver(failing_resolver())
        .build()
        .expect("a valid client");
    let err = client
        .request(get("http://sturdy-test.invalid/v1/models"))
        .await
        .unwrap_err();
    let kind = classify_error(&err);
    assert_eq!((kind, kind.reach()), (FailureKind::Dns, Reach::NotSent));
    // The typed DnsError names the host and sits in the source chain.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut found = None;
    while let Some(e) = cur {
        if let Some(dns) = e.downcast_ref::<sturdy::DnsError>() {
            found = Some(dns.host().to_owned());
        }
        cur = e.source();
    }
    assert_eq!(found.as_deref(), Some("sturdy-test.invalid"));
}

#[tokio::test]
async fn refused_port_is_connect_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let kind = expect_failure(client.request(get(&format!("http://{addr}/"))).await).await;
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::ConnectRefused, Reach::NotSent)
    );
}

#[tokio::test]
async fn stalling_resolver_is_a_connect_timeout_naming_dns() {
    let client = sturdy::client()
        .no_proxy()
        .connect_timeout(Duration::from_millis(100))
        .resolver(stalling_resolver())
        .build()
        .expect("a valid client");
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(get("http://stall.invalid/")),
    )
    .await
    .expect("the connect limit must fire")
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    let kind = classify_error(&err);
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::ConnectTimeout, Reach::NotSent)
    );
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut part = None;
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<sturdy::ConnectError>() {
            part = Some((c.part(), c.is_timeout(), c.to_string()));
        }
        cur = e.source();
    }
    assert_eq!(
        part,
        Some((
            sturdy::ConnectPart::Dns,
            true,
            "connect timed out during dns".to_owned()
        ))
    );
}

#[tokio::test]
async fn full_backlog_is_a_connect_timeout_naming_tcp() {
    // A listener that never accepts, with the smallest backlog: once its
    // queue is full, Linux drops further SYNs and connects hang.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut stalled = false;
    for _ in 0..64 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("unexpected connect error while filling the backlog: {e}"),
            Err(_) => {
                stalled = true;
                break;
            }
        }
    }
    assert!(
        stalled,
        "the backlog never filled after {} connections",
        held.len()
    );
    let client = sturdy::client()
        .no_proxy()
        .connect_timeout(Duration::from_millis(100))
        .build()
        .expect("a valid client");
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(get(&format!("http://{addr}/"))),
    )
    .await
    .expect("the connect limit must fire")
    .unwrap_err();
    let kind = classify_error(&err);
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::ConnectTimeout, Reach::NotSent)
    );
    assert!(format!("{:?}", err).contains("Tcp"), "{err:?}");
    drop(listener);
}

#[tokio::test]
async fn stalled_socket_write_is_a_write_timeout() {
    // A server that accepts and never reads: the socket buffers fill up and
    // the client's writes stop making progress.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sock);
    });
    let client = sturdy::client()
        .no_proxy()
        .write_timeout(Duration::from_millis(200))
        .build()
        .expect("a valid client");
    let body = Bytes::from(vec![b'x'; 64 * 1024 * 1024]);
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .body(sturdy::boxed(Full::new(body)))
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("the write limit must fire")
        .unwrap_err();
    let kind = classify_error(&err);
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::WriteTimeout, Reach::Unknown),
        "{err:?}"
    );
    server.abort();
}

#[tokio::test]
async fn a_reading_server_does_not_trip_the_write_limit() {
    // The limit is on progress, not on the whole body: a large body that the
    // server keeps reading goes through, however long it takes in all.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let mut head = Vec::new();
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            if head.len() < 4096 {
                head.extend_from_slice(&buf[..n.min(4096)]);
            }
            total += n;
            if total >= 8 * 1024 * 1024 {
                break;
            }
        }
        use tokio::io::AsyncWriteExt;
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        total
    });
    let client = sturdy::client()
        .no_proxy()
        .write_timeout(Duration::from_millis(500))
        .build()
        .expect("a valid client");
    let req = http::Request::post(format!("http://{addr}/upload"))
        .body(sturdy::boxed(Full::new(Bytes::from(vec![
            b'y';
            8 * 1024 * 1024
        ]))))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    assert!(server.await.unwrap() >= 8 * 1024 * 1024);
}

#[tokio::test]
async fn limits_below_a_millisecond_are_refused_and_debug_hides_the_proxy() {
    let matcher = sturdy::ProxyMatcher::builder()
        .http("http://user:sk-sturdy-canary@127.0.0.1:9")
        .build();
    let b = sturdy::client()
        .connect_timeout(Duration::ZERO)
        .write_timeout(Duration::from_secs(1))
        .proxy(matcher);
    let shown = format!("{b:?}");
    assert!(!shown.contains("sk-sturdy-canary"), "{shown}");
    let err = b.build().expect_err("a zero connect limit");
    assert_eq!(
        err,
        sturdy::ClientConfigError::LimitTooSmall {
            limit: "connect",
            value: Duration::ZERO
        }
    );
    assert!(!format!("{err} {err:?}").contains("sk-sturdy-canary"));
    let err = sturdy::client()
        .write_timeout(Duration::from_micros(999))
        .connector()
        .expect_err("a sub-millisecond write limit");
    assert!(err.to_string().contains("write limit"), "{err}");
    // The smallest limit accepted builds.
    assert!(
        sturdy::client()
            .connect_timeout(sturdy::MIN_LIMIT)
            .write_timeout(sturdy::MIN_LIMIT)
            .build()
            .is_ok()
    );
}

// ---- against the fault server ----

use sturdy_faults::{CALL_HEADER, FAULT_HEADER, FaultServer};

fn scripted(url: &str, call: &str, script: &str, stream: bool) -> http::Request<sturdy::BoxBody> {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
    );
    http::Request::post(url)
        .header("content-type", "application/json")
        .header(CALL_HEADER, call)
        .header(FAULT_HEADER, script)
        .body(sturdy::boxed(Full::new(Bytes::from(body))))
        .unwrap()
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_a_tls_failure() {
    let server = FaultServer::start().await.unwrap();
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let url = format!("https://{}/v1/models", server.addr());
    let err = tokio::time::timeout(Duration::from_secs(10), client.request(get(&url)))
        .await
        .unwrap()
        .unwrap_err();
    let kind = classify_error(&err);
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::Tls, Reach::NotSent),
        "{err:?}"
    );
    // The server read garbage, never a request head.
    assert_eq!(server.dashboard().received, 0);
}

#[tokio::test]
async fn fault_close_is_unknown() {
    let server = FaultServer::start().await.unwrap();
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let url = format!("{}/v1/chat/completions", server.base_url());
    let err = client
        .request(scripted(&url, "close-1", "close", false))
        .await
        .unwrap_err();
    let kind = classify_error(&err);
    assert_eq!(kind.reach(), Reach::Unknown, "{err:?}");
    assert_eq!(kind, FailureKind::Reset, "{err:?}");
    let d = server.dashboard();
    assert_eq!(
        (
            d.received,
            d.faults("close"),
            d.responded.values().sum::<u64>()
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn fault_reset_mid_body_is_a_response_body_failure() {
    let server = FaultServer::start().await.unwrap();
    let client = sturdy::client().no_proxy().build().expect("a valid client");
    let url = format!("{}/v1/chat/completions", server.base_url());
    for (call, stream) in [("reset-json", false), ("reset-sse", true)] {
        let resp = client
            .request(scripted(&url, call, "reset", stream))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut received = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => received += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => break e,
                None => panic!("{call}: the body ended cleanly after {received} bytes"),
            }
        };
        assert!(received > 0, "{call}: some bytes arrive before the reset");
        let kind = sturdy::core::classify_body_error(&err);
        assert_eq!(
            (kind, kind.reach()),
            (FailureKind::ResponseBody, Reach::Acknowledged),
            "{call}"
        );
    }
    let d = server.dashboard();
    assert_eq!((d.received, d.responded(200), d.faults("reset")), (2, 2, 2));
}

#[tokio::test]
async fn http2_only_clients_speak_h2c_to_the_fault_server() {
    let server = FaultServer::start().await.unwrap();
    let client = sturdy::client()
        .no_proxy()
        .http2_only(true)
        .build()
        .expect("a valid client");
    let resp = client
        .request(get(&format!("{}/v1/models", server.base_url())))
        .await
        .unwrap();
    assert_eq!(
        (resp.status(), resp.version()),
        (http::StatusCode::OK, http::Version::HTTP_2)
    );
}

#[tokio::test]
async fn plain_http_goes_through_a_configured_proxy_in_absolute_form() {
    // The fault server stands in as the proxy: it receives the request in
    // absolute form and serves its path. The destination host is never
    // resolved: the connector only talks to the proxy.
    let proxy = FaultServer::start().await.unwrap();
    let matcher = sturdy::ProxyMatcher::builder()
        .http(proxy.base_url())
        .build();
    let client = sturdy::client()
        .proxy(matcher)
        .resolver(failing_resolver())
        .build()
        .expect("a valid client");
    let resp = client
        .request(get("http://api.sturdy.invalid/v1/models"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(proxy.dashboard().received, 1);
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel_then_tls() {
    // A minimal CONNECT proxy on loopback that tunnels to the fault server.
    // TLS to that plain-HTTP server then fails: proof that the handshake ran
    // inside the tunnel, and that the failure names TLS, not the proxy.
    use tokio::io::AsyncWriteExt;
    let upstream = FaultServer::start().await.unwrap();
    let upstream_addr = upstream.addr();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let proxy = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if sock.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        sock.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .unwrap();
        let mut up = tokio::net::TcpStream::connect(upstream_addr).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
        String::from_utf8_lossy(&head).into_owned()
    });
    let matcher = sturdy::ProxyMatcher::builder()
        .https(format!("http://{proxy_addr}"))
        .build();
    let client = sturdy::client()
        .proxy(matcher)
        .resolver(failing_resolver())
        .build()
        .expect("a valid client");
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(get("https://api.sturdy.invalid/v1/models")),
    )
    .await
    .unwrap()
    .unwrap_err();
    let kind = classify_error(&err);
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::Tls, Reach::NotSent),
        "{err:?}"
    );
    let head = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .unwrap()
        .unwrap();
    assert!(
        head.starts_with("CONNECT api.sturdy.invalid:443 HTTP/1.1\r\n"),
        "{head}"
    );
}
