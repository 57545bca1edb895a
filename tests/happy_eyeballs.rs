//! A host with several addresses, the first of which drops SYNs (an IPv6
//! route that goes nowhere, a dead replica left in DNS): `sturdy::client()`
//! races the next address after `CONNECTION_ATTEMPT_DELAY` (RFC 8305)
//! instead of spending the whole connect limit on the first. Every address
//! here is on loopback (Linux answers all of 127.0.0.0/8; a resolver gives
//! IPs and the URI the port, so the addresses differ in their IP); the
//! stalled one is a listener whose backlog is full, and the names come from
//! a resolver that answers from a list.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::dns::Name;
use sturdy::{FailureKind, Reach, classify_error};
use sturdy_faults::FaultServer;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

mod metrics_support;
use metrics_support::{ResolveFuture, Resolved};

/// A resolver that answers every name with `addrs`, in that order.
fn listing(
    addrs: Vec<SocketAddr>,
) -> impl tower::Service<Name, Response = Resolved, Error = std::io::Error, Future = ResolveFuture>
+ Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_name: Name| -> ResolveFuture {
        let addrs = addrs.clone();
        Box::pin(async move { Ok(addrs.into_iter()) })
    })
}

/// A listener on `ip:port` that never accepts, its backlog filled so that
/// further connects hang (Linux drops their SYNs). Keep both values alive.
async fn stalled_listener(ip: &str, port: u16) -> (TcpListener, Vec<TcpStream>, SocketAddr) {
    let socket = TcpSocket::new_v4().expect("a socket");
    let at = SocketAddr::new(ip.parse().expect("an IP"), port);
    socket.bind(at).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("its address");
    let mut held = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("connect error while filling the backlog: {e}"),
            Err(_) => return (listener, held, addr),
        }
    }
    panic!("the backlog never filled after {} connections", held.len());
}

/// `ip:port`, where nobody listens.
fn nobody(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("an IP"), port)
}

/// The fault server's address.
fn address_of(server: &FaultServer) -> SocketAddr {
    server
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
}

fn get(url: &str) -> http::Request<sturdy::BoxBody> {
    http::Request::get(url)
        .body(sturdy::boxed(Empty::<Bytes>::new()))
        .expect("a valid request")
}

#[tokio::test]
async fn an_address_that_drops_syns_is_raced_by_the_next() {
    let server = FaultServer::start().await.expect("fault server");
    let good = address_of(&server);
    let (_listener, _held, stalled) = stalled_listener("127.0.0.2", good.port()).await;
    // Tried one after the other, the first address would take the whole
    // 5 s limit and the call would fail with `connect_timeout`.
    let client = sturdy::client()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .resolver(listing(vec![stalled, good]))
        .build()
        .expect("a valid client");
    let url = format!("http://api.sturdy-test.invalid:{}/v1/models", good.port());
    let resp = client.request(get(&url)).await.expect("the next address");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.expect("the body");
    assert_eq!(server.dashboard().received, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_address_moves_on_to_the_next_at_once() {
    let server = FaultServer::start().await.expect("fault server");
    let good = address_of(&server);
    let refused = nobody("127.0.0.3", good.port());
    let client = sturdy::client()
        .no_proxy()
        .resolver(listing(vec![refused, good]))
        .build()
        .expect("a valid client");
    let url = format!("http://api.sturdy-test.invalid:{}/v1/models", good.port());
    let resp = client.request(get(&url)).await.expect("the next address");
    assert_eq!(resp.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn when_every_address_fails_the_last_failure_is_the_answer() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("address").port()
    }; // dropped: nobody listens there now
    let addrs = ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map(|ip| nobody(ip, port));
    let client = sturdy::client()
        .no_proxy()
        .resolver(listing(addrs.to_vec()))
        .build()
        .expect("a valid client");
    let err = client
        .request(get(&format!(
            "http://api.sturdy-test.invalid:{port}/v1/models"
        )))
        .await
        .expect_err("nobody listens");
    let kind = classify_error(&err);
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::ConnectRefused, Reach::NotSent)
    );
}

#[tokio::test]
async fn when_every_address_stalls_the_connect_limit_names_tcp() {
    let (_l1, _h1, first) = stalled_listener("127.0.0.2", 0).await;
    let (_l2, _h2, second) = stalled_listener("127.0.0.3", first.port()).await;
    let client = sturdy::client()
        .no_proxy()
        .connect_timeout(Duration::from_millis(600))
        .resolver(listing(vec![first, second]))
        .build()
        .expect("a valid client");
    let url = format!("http://api.sturdy-test.invalid:{}/v1/models", first.port());
    let err = tokio::time::timeout(Duration::from_secs(10), client.request(get(&url)))
        .await
        .expect("the connect limit fires")
        .expect_err("nothing answers");
    let kind = classify_error(&err);
    assert_eq!(
        (kind, kind.reach()),
        (FailureKind::ConnectTimeout, Reach::NotSent)
    );
    assert!(format!("{err:?}").contains("Tcp"), "{err:?}");
}
