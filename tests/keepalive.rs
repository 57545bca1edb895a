//! Long, silent calls keep their connections: `sturdy::client()` turns TCP
//! keepalive on by default, as the OS itself reports for a connection
//! whose call is waiting; and, when asked, sends HTTP/2 PINGs that a real
//! peer sees while a call is silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

mod h2_support;

use h2_support::{
    ACK, END_HEADERS, END_STREAM, HEADERS, PING, STATUS_200, accept_preface, frame, read_frame,
};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

fn get(url: &str) -> Request<sturdy::BoxBody> {
    Request::get(url)
        .body(sturdy::boxed(Empty::<Bytes>::new()))
        .expect("a valid request")
}

/// The kernel's timer on a client connection, from `/proc/net/tcp`: which
/// one (`0` none, `1` retransmit, `2` keepalive) and in how many clock
/// ticks (1/100 s) it fires.
#[cfg(target_os = "linux")]
fn kernel_timer(local_port: u16, remote_port: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let established = f.get(3) == Some(&"01");
        if !established || port(f[1])? != local_port || port(f[2])? != remote_port {
            return None;
        }
        let (which, when) = f[5].split_once(':')?;
        Some((
            u8::from_str_radix(which, 16).ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    })
}

/// Opens a call from `client` to a server that reads the request and
/// never answers; returns the kernel's timer on the client's connection
/// once nothing is left in flight.
#[cfg(target_os = "linux")]
async fn timer_of_a_silent_call(client: sturdy::Client) -> (u8, u64) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let call = tokio::spawn(client.oneshot(get(&format!("http://{addr}/v1/agent"))));
    let (mut sock, peer) = tokio::time::timeout(BOUND, listener.accept())
        .await
        .expect("bounded")
        .expect("a connection");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut buf = [0u8; 512];
        let n = sock.read(&mut buf).await.expect("the request");
        assert!(n > 0, "the request head");
        head.extend_from_slice(&buf[..n]);
    }
    // The request is acknowledged at once on loopback; wait out the
    // retransmit timer that covered it.
    let timer = tokio::time::timeout(BOUND, async {
        loop {
            match kernel_timer(peer.port(), addr.port()) {
                Some((1, _)) | None => tokio::time::sleep(Duration::from_millis(5)).await,
                Some(timer) => return timer,
            }
        }
    })
    .await
    .expect("the connection, idle, in /proc/net/tcp");
    call.abort();
    drop(sock);
    timer
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn keepalive_is_on_by_default_as_the_os_sees_it() {
    const TICKS_PER_SECOND: u64 = 100;
    let base = || sturdy::client().no_proxy();

    // The default: a keepalive timer, due 30 s after the connection opened.
    let (which, when) = timer_of_a_silent_call(base().build().unwrap()).await;
    assert_eq!(which, 2, "the keepalive timer");
    let default = sturdy::DEFAULT_TCP_KEEPALIVE.as_secs() * TICKS_PER_SECOND;
    assert!(
        when <= default && when > default - 10 * TICKS_PER_SECOND,
        "{when}"
    );

    // A shorter idle time, as configured.
    let client = base()
        .tcp_keepalive(Some(Duration::from_secs(5)))
        .build()
        .unwrap();
    let (which, when) = timer_of_a_silent_call(client).await;
    assert_eq!(which, 2);
    assert!(when <= 5 * TICKS_PER_SECOND, "{when}");

    // Off: no timer at all on an idle connection.
    let client = base().tcp_keepalive(None).build().unwrap();
    assert_eq!(timer_of_a_silent_call(client).await.0, 0);
}

/// A raw HTTP/2 peer that answers each PING and holds its one request
/// until it has seen `answer_after` PINGs, or `give_up` has passed;
/// returns its URL and the PINGs it saw.
async fn pinged_peer(answer_after: usize, give_up: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/v1/agent",
        listener.local_addr().expect("address")
    );
    let pings = Arc::new(AtomicUsize::new(0));
    let seen = pings.clone();
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let _ = serve_pinged(&mut sock, &seen, answer_after, give_up).await;
    });
    (url, pings)
}

async fn serve_pinged(
    sock: &mut TcpStream,
    pings: &AtomicUsize,
    answer_after: usize,
    give_up: Duration,
) -> std::io::Result<()> {
    accept_preface(sock).await?;
    let deadline = tokio::time::Instant::now() + give_up;
    let mut request = None;
    loop {
        // Frames arrive whole on loopback: a read cut by the deadline
        // loses nothing that matters here.
        let next = tokio::time::timeout_at(deadline, read_frame(sock)).await;
        let Ok(f) = next else { break };
        let f = f?;
        match f.kind {
            HEADERS if f.flags & END_STREAM != 0 => request = Some(f.stream),
            PING if f.flags & ACK == 0 => {
                sock.write_all(&frame(PING, ACK, 0, &f.payload)).await?;
                if pings.fetch_add(1, Ordering::SeqCst) + 1 >= answer_after && request.is_some() {
                    break;
                }
            }
            _ => {}
        }
    }
    if let Some(stream) = request {
        let end = END_HEADERS | END_STREAM;
        sock.write_all(&frame(HEADERS, end, stream, &[STATUS_200]))
            .await?;
        sock.flush().await?;
    }
    // Hold the connection until the client lets go.
    while read_frame(sock).await.is_ok() {}
    Ok(())
}

#[tokio::test]
async fn http2_pings_reach_the_peer_while_a_call_is_silent() {
    let (url, pings) = pinged_peer(3, BOUND).await;
    let client = sturdy::client()
        .no_proxy()
        .http2_only(true)
        .http2_keep_alive_interval(Some(Duration::from_millis(100)))
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(BOUND, client.oneshot(get(&url)))
        .await
        .expect("bounded")
        .expect("answered once PINGed");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.expect("the body");
    assert!(pings.load(Ordering::SeqCst) >= 3);
    // The peer answered because of the PINGs, not because it gave up.
    assert!(started.elapsed() < BOUND / 2, "{:?}", started.elapsed());
}

#[tokio::test]
async fn http2_pings_are_off_by_default() {
    let (url, pings) = pinged_peer(1, Duration::from_millis(600)).await;
    let client = sturdy::client()
        .no_proxy()
        .http2_only(true)
        .build()
        .unwrap();
    let resp = tokio::time::timeout(BOUND, client.oneshot(get(&url)))
        .await
        .expect("bounded")
        .expect("answered when the peer gave up waiting");
    assert_eq!(resp.status(), 200);
    assert_eq!(pings.load(Ordering::SeqCst), 0);
}
