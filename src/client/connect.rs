//! The connector: resolver → TCP (Happy Eyeballs) → proxy tunnel → TLS,
//! under one `connect` limit whose timeout names the part under way.

use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use sturdy_core::{BoxError, ConnectError, ConnectPart, Phase, Reach, TimeoutError};
use tokio::net::TcpStream;
use tower_service::Service;

use super::io::{ClientIo, WriteTimeout};
use super::{Resolve, TypedResolver};

/// sturdy's connector: resolver → TCP → proxy tunnel → TLS, under one
/// `connect` limit whose timeout names the part under way, returning sockets
/// whose writes carry the `write` limit.
#[derive(Clone)]
pub struct Connector<R = GaiResolver> {
    tcp: TcpConnector<R>,
    connect_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Arc<rustls::ClientConfig>,
}

impl<R> Connector<R> {
    pub(super) fn new(
        tcp: TcpConnector<R>,
        connect_timeout: Duration,
        #[cfg(feature = "tls")] tls: Arc<rustls::ClientConfig>,
    ) -> Connector<R> {
        Connector {
            tcp,
            connect_timeout,
            #[cfg(feature = "tls")]
            tls,
        }
    }
}

impl<R> std::fmt::Debug for Connector<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .field("write_timeout", &self.tcp.write_timeout)
            .finish_non_exhaustive()
    }
}

const PART_DNS: u8 = 0;
const PART_TCP: u8 = 1;
const PART_PROXY: u8 = 2;
const PART_TLS: u8 = 3;

fn part_of(n: u8) -> ConnectPart {
    match n {
        PART_DNS => ConnectPart::Dns,
        PART_TCP => ConnectPart::Tcp,
        PART_PROXY => ConnectPart::Proxy,
        _ => ConnectPart::Tls,
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<ClientIo, ConnectError>> + Send>>;

impl<R> Service<Uri> for Connector<R>
where
    R: Resolve,
{
    type Response = ClientIo;
    type Error = ConnectError;
    // Boxed: one allocation per new connection, not per request.
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> ConnectFuture {
        // Each connection attempt gets its own record of the part under way.
        let part = Arc::new(AtomicU8::new(PART_DNS));
        let mut tcp = self.tcp.clone();
        tcp.part = part.clone();
        let limit = self.connect_timeout;
        #[cfg(feature = "tls")]
        let mut inner = hyper_rustls::HttpsConnector::from((tcp, self.tls.clone()));
        #[cfg(not(feature = "tls"))]
        let mut inner = tcp;
        Box::pin(async move {
            let connecting = async {
                poll_fn(|cx| inner.poll_ready(cx)).await.map_err(to_box)?;
                inner.call(dst).await.map_err(to_box)
            };
            match tokio::time::timeout(limit, connecting).await {
                Ok(Ok(io)) => Ok(ClientIo::new(io)),
                Ok(Err(e)) => Err(match e.downcast::<ConnectError>() {
                    Ok(typed) => *typed,
                    // Only the TLS step produces errors that are not ours.
                    Err(other) => ConnectError::new(part_of(part.load(Ordering::Acquire)), other),
                }),
                Err(_elapsed) => Err(ConnectError::new(
                    part_of(part.load(Ordering::Acquire)),
                    TimeoutError::new(Phase::Connect, limit, Reach::NotSent),
                )),
            }
        })
    }
}

/// Boxes a connector error; with the `tls` feature it already is one.
fn to_box<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}

/// The resolver → TCP → proxy part of [`Connector`]; TLS wraps it.
#[derive(Clone)]
pub(super) struct TcpConnector<R> {
    pub(super) resolver: TypedResolver<R>,
    pub(super) proxy: Option<Arc<Matcher>>,
    pub(super) write_timeout: Duration,
    pub(super) socket: super::keepalive::SocketOptions,
    pub(super) part: Arc<AtomicU8>,
}

impl<R> Service<Uri> for TcpConnector<R>
where
    R: Resolve,
{
    type Response = TcpConn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<TcpConn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Box::pin(self.clone().connect(dst))
    }
}

/// How long a connect to one address runs alone before the next address is
/// tried beside it: RFC 8305's "Connection Attempt Delay" (hyper-util's
/// `HttpConnector` uses 300 ms). A host whose first address drops SYNs (an
/// IPv6 route that goes nowhere) is then reached on its next one, instead
/// of after the whole connect limit.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first of `addrs` that answers, Happy Eyeballs style
/// (RFC 8305): addresses in the resolver's order with the two families
/// interleaved; each attempt gets [`CONNECTION_ATTEMPT_DELAY`] alone before
/// the next starts beside it, a failed one starts the next at once, and the
/// first connection made wins (the others are dropped). The caller's
/// connect limit bounds the whole race.
async fn connect_first(addrs: Vec<SocketAddr>) -> Result<TcpStream, BoxError> {
    if let [one] = addrs[..] {
        return Ok(TcpStream::connect(one).await?);
    }
    let mut queue = happy_order(addrs).into_iter();
    let start = |addr: SocketAddr| Box::pin(TcpStream::connect(addr));
    let mut racing = Vec::with_capacity(2);
    racing.extend(queue.next().map(start));
    let mut delay = Box::pin(tokio::time::sleep(CONNECTION_ATTEMPT_DELAY));
    let mut last: Option<io::Error> = None;
    poll_fn(|cx| {
        loop {
            let mut i = 0;
            while i < racing.len() {
                match racing[i].as_mut().poll(cx) {
                    Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                    Poll::Ready(Err(e)) => {
                        last = Some(e);
                        drop(racing.swap_remove(i));
                        if let Some(addr) = queue.next() {
                            racing.push(start(addr));
                            delay
                                .as_mut()
                                .reset(tokio::time::Instant::now() + CONNECTION_ATTEMPT_DELAY);
                        }
                    }
                    Poll::Pending => i += 1,
                }
            }
            if racing.is_empty() {
                let err: BoxError = match last.take() {
                    Some(e) => e.into(),
                    None => "no address to connect to".into(),
                };
                return Poll::Ready(Err(err));
            }
            if queue.as_slice().is_empty() || delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            racing.extend(queue.next().map(start));
            delay
                .as_mut()
                .reset(tokio::time::Instant::now() + CONNECTION_ATTEMPT_DELAY);
        }
    })
    .await
}

/// `addrs` in the resolver's order, but alternating between address
/// families, starting with the first address's (RFC 8305 §4).
fn happy_order(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let lead = first.is_ipv6();
    let (same, other): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv6() == lead);
    let mut out = Vec::with_capacity(same.len() + other.len());
    let (mut same, mut other) = (same.into_iter(), other.into_iter());
    loop {
        match (same.next(), other.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

impl<R> TcpConnector<R>
where
    R: Resolve,
{
    async fn connect(mut self, dst: Uri) -> Result<TcpConn, ConnectError> {
        let https = dst.scheme() == Some(&http::uri::Scheme::HTTPS);
        let intercept = self.proxy.as_ref().and_then(|m| m.intercept(&dst));
        let target = intercept.as_ref().map_or(&dst, |i| i.uri());
        let tcp_err = |e: BoxError| ConnectError::new(ConnectPart::Tcp, e);

        let host = target
            .host()
            .ok_or_else(|| tcp_err("the URI has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port =
            target
                .port_u16()
                .unwrap_or(if target.scheme() == Some(&http::uri::Scheme::HTTPS) {
                    443
                } else {
                    80
                });

        self.part.store(PART_DNS, Ordering::Release);
        let addrs: Vec<SocketAddr> = match IpAddr::from_str(host) {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let name =
                    Name::from_str(host).map_err(|e| ConnectError::new(ConnectPart::Dns, e))?;
                poll_fn(|cx| self.resolver.poll_ready(cx))
                    .await
                    .map_err(|e| ConnectError::new(ConnectPart::Dns, e))?;
                let found = self
                    .resolver
                    .call(name)
                    .await
                    .map_err(|e| ConnectError::new(ConnectPart::Dns, e))?;
                found.map(|a| SocketAddr::new(a.ip(), port)).collect()
            }
        };

        self.part.store(PART_TCP, Ordering::Release);
        let stream = connect_first(addrs).await.map_err(tcp_err)?;
        // Small request heads must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        self.socket.apply(&stream);
        let mut io = TokioIo::new(WriteTimeout::new(stream, self.write_timeout));

        let mut proxied = false;
        if let Some(intercept) = intercept.as_ref() {
            if https {
                self.part.store(PART_PROXY, Ordering::Release);
                let mut tunnel = Tunnel::new(intercept.uri().clone(), Handover(Some(io)));
                if let Some(auth) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                poll_fn(|cx| tunnel.poll_ready(cx))
                    .await
                    .map_err(|e| ConnectError::new(ConnectPart::Proxy, e))?;
                io = tunnel
                    .call(dst)
                    .await
                    .map_err(|e| ConnectError::new(ConnectPart::Proxy, e))?;
            } else {
                // Plain HTTP goes to the proxy in absolute form.
                proxied = true;
            }
        }
        self.part.store(PART_TLS, Ordering::Release);
        Ok(TcpConn { io, proxied })
    }
}

/// Hands an already-open connection to hyper-util's `Tunnel`, which expects
/// a connector.
struct Handover(Option<TokioIo<WriteTimeout<TcpStream>>>);

impl Service<Uri> for Handover {
    type Response = TokioIo<WriteTimeout<TcpStream>>;
    type Error = io::Error;
    type Future = std::future::Ready<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(
            self.0
                .take()
                .ok_or_else(|| io::Error::other("connection already handed over")),
        )
    }
}

/// A TCP connection, maybe to a proxy.
pub(super) struct TcpConn {
    io: TokioIo<WriteTimeout<TcpStream>>,
    proxied: bool,
}

impl Connection for TcpConn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

super::io::delegate_io!(TcpConn, io);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_order_alternates_families_from_the_first() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = happy_order(vec![
            a("[::1]:1"),
            a("[::2]:1"),
            a("[::3]:1"),
            a("10.0.0.1:1"),
            a("10.0.0.2:1"),
        ]);
        let want = ["[::1]:1", "10.0.0.1:1", "[::2]:1", "10.0.0.2:1", "[::3]:1"].map(a);
        assert_eq!(got, want);
        let got = happy_order(vec![a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]);
        assert_eq!(got, ["10.0.0.1:1", "[::1]:1", "10.0.0.2:1"].map(a));
        assert!(happy_order(Vec::new()).is_empty());
    }
}
