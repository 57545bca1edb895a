//! `sturdy::client()`: a hyper-util legacy client whose connector runs
//! resolver → TCP → (proxy tunnel) → TLS itself, so that every failure says
//! which part failed or stalled, and whose sockets carry a write-progress
//! limit. It is the innermost service of the sturdy stack.
//!
//! Client-wide limits live here because a connector sees no request:
//! `connect` (DNS + TCP + TLS together, 10 s by default) and `write` (a
//! socket write that makes no progress, 30 s by default). Per-request limits
//! are the timeout layers' job.

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
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sturdy_core::{
    BoxBody, BoxError, ConnectError, ConnectPart, Phase, Reach, TimeoutError, TypedResolver,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

/// The client `sturdy::client()` builds: hyper-util's legacy client over
/// sturdy's [`Connector`], taking the inner-edge [`BoxBody`] as its request
/// body. It is `Clone` (clones share one connection pool) and a
/// `tower::Service<http::Request<BoxBody>>`.
pub type Client<R = GaiResolver> = hyper_util::client::legacy::Client<Connector<R>, BoxBody>;

/// Default limit on DNS + TCP + TLS together (the guide's `connect`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on a socket write that makes no progress (the guide's `write`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The smallest `connect` or `write` limit [`ClientBuilder::build`] accepts;
/// a smaller one (zero included) is a [`ClientConfigError`].
pub const MIN_LIMIT: Duration = Duration::from_millis(1);

/// A client configuration that cannot work, found when the client is
/// built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientConfigError {
    /// A `connect` or `write` limit below [`MIN_LIMIT`]: every connection
    /// or write would time out at once.
    LimitTooSmall {
        /// `connect` or `write`.
        limit: &'static str,
        /// The value given.
        value: Duration,
    },
}

impl std::fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientConfigError::LimitTooSmall { limit, value } => write!(
                f,
                "the client's {limit} limit must be at least {MIN_LIMIT:?}, not {value:?}"
            ),
        }
    }
}

impl std::error::Error for ClientConfigError {}

/// Starts building a [`Client`] with the guide's client-wide limits.
///
/// ```
/// use std::time::Duration;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sturdy::ClientConfigError> {
/// let client: sturdy::Client = sturdy::client()
///     .connect_timeout(Duration::from_secs(5))
///     .write_timeout(Duration::from_secs(30))
///     .build()?;
/// // A limit that would fire at once is refused here, not at request time.
/// assert!(sturdy::client().connect_timeout(Duration::ZERO).build().is_err());
/// # drop(client);
/// # Ok(()) }
/// ```
pub fn client() -> ClientBuilder {
    ClientBuilder::new()
}

/// Builder for [`Client`]; see [`client()`].
#[derive(Clone)]
pub struct ClientBuilder<R = GaiResolver> {
    resolver: R,
    connect_timeout: Duration,
    write_timeout: Duration,
    proxy: Option<Arc<Matcher>>,
    http2_only: bool,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientBuilder {
    /// The defaults: the system resolver, `connect` 10 s, `write` 30 s, the
    /// proxy environment variables, HTTP/1.1 and HTTP/2 (by ALPN over TLS).
    pub fn new() -> ClientBuilder {
        ClientBuilder {
            resolver: GaiResolver::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            proxy: Some(Arc::new(Matcher::from_env())),
            http2_only: false,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

impl<R> ClientBuilder<R> {
    /// Limits DNS + TCP + TLS together. Below [`MIN_LIMIT`], `build` fails.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Limits how long one socket write may make no progress. Below
    /// [`MIN_LIMIT`], `build` fails.
    pub fn write_timeout(mut self, limit: Duration) -> Self {
        self.write_timeout = limit;
        self
    }

    /// Resolves host names with `resolver` (any `tower::Service<Name>`
    /// answering socket addresses) instead of the system's. Its failures
    /// reach the caller as a typed [`sturdy_core::DnsError`].
    pub fn resolver<R2>(self, resolver: R2) -> ClientBuilder<R2> {
        ClientBuilder {
            resolver,
            connect_timeout: self.connect_timeout,
            write_timeout: self.write_timeout,
            proxy: self.proxy,
            http2_only: self.http2_only,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle_per_host: self.pool_max_idle_per_host,
            #[cfg(feature = "tls")]
            tls: self.tls,
        }
    }

    /// Routes requests through proxies as `matcher` says. By default the
    /// builder reads `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
    /// (either case) when it is created. HTTPS destinations are tunnelled
    /// with CONNECT; plain HTTP requests go to the proxy in absolute form.
    pub fn proxy(mut self, matcher: Matcher) -> Self {
        self.proxy = Some(Arc::new(matcher));
        self
    }

    /// Ignores every proxy setting, the environment's included.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = None;
        self
    }

    /// Speaks only HTTP/2 (prior knowledge over plain TCP, `h2c`).
    pub fn http2_only(mut self, yes: bool) -> Self {
        self.http2_only = yes;
        self
    }

    /// How long an idle pooled connection is kept (`None`: forever).
    pub fn pool_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.pool_idle_timeout = idle;
        self
    }

    /// At most this many idle connections are kept per host.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Uses this rustls configuration for HTTPS instead of the default
    /// (ring, the webpki roots, ALPN `h2` then `http/1.1`).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(Arc::new(config));
        self
    }

    fn validate(&self) -> Result<(), ClientConfigError> {
        for (limit, value) in [
            ("connect", self.connect_timeout),
            ("write", self.write_timeout),
        ] {
            if value < MIN_LIMIT {
                return Err(ClientConfigError::LimitTooSmall { limit, value });
            }
        }
        Ok(())
    }

    /// Builds the connector alone, for use with another client; fails as
    /// [`build`](Self::build) does.
    pub fn connector(self) -> Result<Connector<R>, ClientConfigError> {
        self.validate()?;
        Ok(Connector {
            tcp: TcpConnector {
                resolver: TypedResolver::new(self.resolver),
                proxy: self.proxy,
                write_timeout: self.write_timeout,
                part: Arc::new(AtomicU8::new(0)),
            },
            connect_timeout: self.connect_timeout,
            #[cfg(feature = "tls")]
            tls: self.tls.unwrap_or_else(default_tls),
        })
    }

    /// Builds the client, or says which limit cannot work. Needs a tokio
    /// runtime when it is used.
    pub fn build(self) -> Result<Client<R>, ClientConfigError>
    where
        R: Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = SocketAddr>,
        R::Error: Into<BoxError>,
        R::Future: Send,
    {
        let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2_only);
        Ok(b.build(self.connector()?))
    }
}

impl<R> std::fmt::Debug for ClientBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The proxy matcher may hold credentials: say only whether it is set.
        f.debug_struct("ClientBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("proxy", &self.proxy.is_some())
            .field("http2_only", &self.http2_only)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
fn default_tls() -> Arc<rustls::ClientConfig> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // ring supports every safe default version: this cannot fail, but
        // fall back to rustls's own default rather than panic if it did.
        .unwrap_or_else(|_| rustls::ClientConfig::builder());
    let mut config = builder.with_webpki_roots().with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

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
    R: Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send,
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
struct TcpConnector<R> {
    resolver: TypedResolver<R>,
    proxy: Option<Arc<Matcher>>,
    write_timeout: Duration,
    part: Arc<AtomicU8>,
}

impl<R> Service<Uri> for TcpConnector<R>
where
    R: Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send,
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
    R: Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send,
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
struct TcpConn {
    io: TokioIo<WriteTimeout<TcpStream>>,
    proxied: bool,
}

impl Connection for TcpConn {
    fn connected(&self) -> Connected {
        let c = Connected::new().proxy(self.proxied);
        match self.io.inner().inner.peer_addr() {
            Ok(peer) => c.extra(PeerAddr(peer)),
            Err(_) => c,
        }
    }
}

/// The peer address of a connection, as a connection extra (see hyper-util's
/// `Connected::extra`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

macro_rules! delegate_io {
    ($ty:ty, $field:ident) => {
        impl Read for $ty {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: ReadBufCursor<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.$field).poll_read(cx, buf)
            }
        }

        impl Write for $ty {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.$field).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$field.is_write_vectored()
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.$field).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}

delegate_io!(TcpConn, io);

#[cfg(feature = "tls")]
type Stream = hyper_rustls::MaybeHttpsStream<TcpConn>;
#[cfg(not(feature = "tls"))]
type Stream = TcpConn;

/// A connection made by [`Connector`]: plain or TLS, maybe through a proxy,
/// its writes under the client's `write` limit.
pub struct ClientIo {
    stream: Stream,
}

impl ClientIo {
    fn new(stream: Stream) -> ClientIo {
        ClientIo { stream }
    }
}

impl std::fmt::Debug for ClientIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIo").finish_non_exhaustive()
    }
}

delegate_io!(ClientIo, stream);

impl Connection for ClientIo {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}

/// A socket whose writes fail with a `write` [`TimeoutError`] (inside an
/// `io::Error` of kind `TimedOut`) once one makes no progress for the limit.
/// The timer is armed only while a write is pending.
struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    // Boxed once per connection so the wrapper is Unpin, as hyper-util's
    // `Tunnel` and hyper-rustls require.
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// Checks the limit for an operation that returned `Pending`.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            let at = tokio::time::Instant::now() + self.limit;
            self.sleep.as_mut().reset(at);
            self.armed = true;
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                let err = TimeoutError::new(Phase::Write, self.limit, Reach::Unknown);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, err)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        out: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match out {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(out, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(out, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(out, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(out, cx)
    }
}

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
