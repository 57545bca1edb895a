//! `sturdy::client()`: a hyper-util legacy client whose connector runs
//! resolver → TCP → (proxy tunnel) → TLS itself, so that every failure says
//! which part failed or stalled, and whose sockets carry a write-progress
//! limit. It is the innermost service of the sturdy stack.
//!
//! Client-wide limits live here because a connector sees no request:
//! `connect` (DNS + TCP + TLS together, 10 s by default) and `write` (a
//! socket write that makes no progress, 30 s by default). Per-request limits
//! are the timeout layers' job.

mod connect;
mod io;
mod keepalive;
mod resolve;

use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sturdy_core::BoxBody;

pub use connect::{CONNECTION_ATTEMPT_DELAY, Connector};
pub use io::ClientIo;
pub use keepalive::{
    DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT, DEFAULT_TCP_KEEPALIVE, DEFAULT_TCP_KEEPALIVE_INTERVAL,
    DEFAULT_TCP_KEEPALIVE_RETRIES,
};
pub use resolve::{Resolve, TypedResolver};

use connect::TcpConnector;
use keepalive::{Http2Pings, SocketOptions};

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
    /// A TCP keepalive, `TCP_USER_TIMEOUT` or HTTP/2 PING setting the OS
    /// or hyper cannot take.
    InvalidKeepalive {
        /// The builder method's name.
        setting: &'static str,
        /// What it must be.
        why: &'static str,
    },
}

impl std::fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientConfigError::LimitTooSmall { limit, value } => write!(
                f,
                "the client's {limit} limit must be at least {MIN_LIMIT:?}, not {value:?}"
            ),
            ClientConfigError::InvalidKeepalive { setting, why } => {
                write!(f, "the client's {setting} {why}")
            }
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
    socket: SocketOptions,
    pings: Http2Pings,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientBuilder {
    /// The defaults: the system resolver, `connect` 10 s, `write` 30 s, the
    /// proxy environment variables, HTTP/1.1 and HTTP/2 (by ALPN over TLS),
    /// TCP keepalive after 30 s of silence (probes 10 s apart, three
    /// unanswered end the connection), no HTTP/2 PINGs.
    pub fn new() -> ClientBuilder {
        ClientBuilder {
            resolver: GaiResolver::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            proxy: Some(Arc::new(Matcher::from_env())),
            http2_only: false,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            socket: SocketOptions::default(),
            pings: Http2Pings::default(),
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
    /// reach the caller as a typed [`sturdy_core::DnsError`] (see
    /// [`Resolve`]).
    pub fn resolver<R2>(self, resolver: R2) -> ClientBuilder<R2> {
        ClientBuilder {
            resolver,
            connect_timeout: self.connect_timeout,
            write_timeout: self.write_timeout,
            proxy: self.proxy,
            http2_only: self.http2_only,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle_per_host: self.pool_max_idle_per_host,
            socket: self.socket,
            pings: self.pings,
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

    /// Sends a TCP keepalive probe after `idle` of silence on a connection
    /// ([`DEFAULT_TCP_KEEPALIVE`], 30 s, by default; `None` turns keepalive
    /// off). A call silent for minutes (an agentic or long-context one
    /// waiting for its first byte) otherwise loses its connection to a NAT
    /// or load balancer's idle limit. The OS counts it in whole seconds: at
    /// least 1 s, or `build` fails.
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sturdy::ClientConfigError> {
    /// let client: sturdy::Client = sturdy::client()
    ///     .tcp_keepalive(Some(Duration::from_secs(15)))
    ///     .tcp_keepalive_interval(Duration::from_secs(5))
    ///     .tcp_keepalive_retries(4)
    ///     .http2_keep_alive_interval(Some(Duration::from_secs(30)))
    ///     .build()?;
    /// assert!(sturdy::client().tcp_keepalive(Some(Duration::from_millis(500))).build().is_err());
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.socket.keepalive = idle;
        self
    }

    /// Time between unanswered keepalive probes
    /// ([`DEFAULT_TCP_KEEPALIVE_INTERVAL`], 10 s, by default; at least 1 s).
    /// Ignored where the OS does not let it be set.
    pub fn tcp_keepalive_interval(mut self, interval: Duration) -> Self {
        self.socket.interval = interval;
        self
    }

    /// Unanswered keepalive probes before the OS ends the connection
    /// ([`DEFAULT_TCP_KEEPALIVE_RETRIES`], 3, by default; at least 1).
    /// Ignored where the OS does not let it be set.
    pub fn tcp_keepalive_retries(mut self, retries: u32) -> Self {
        self.socket.retries = retries;
        self
    }

    /// Sets `TCP_USER_TIMEOUT` (Linux, Android, Fuchsia; ignored elsewhere):
    /// how long sent data may stay unacknowledged before the OS ends the
    /// connection. `None` (the default) leaves the OS's own, which retries
    /// for about 15 minutes. Once set, it also bounds how long keepalive
    /// probes may go unanswered.
    pub fn tcp_user_timeout(mut self, limit: Option<Duration>) -> Self {
        self.socket.user_timeout = limit;
        self
    }

    /// Sends an HTTP/2 PING after `interval` without a frame from the
    /// server. An unanswered PING ends the connection after
    /// [`http2_keep_alive_timeout`](Self::http2_keep_alive_timeout).
    ///
    /// `None`, the default: no PINGs. Unlike TCP keepalive, a PING involves
    /// the server, and gRPC servers police them: grpc-go, by default,
    /// answers a client that pings more than once every five minutes with
    /// `GOAWAY too_many_pings`, ending every call on the connection. Turn
    /// them on for servers that welcome them, to notice a dead peer above
    /// the TCP layer (a proxy that still holds the socket).
    pub fn http2_keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.pings.interval = interval;
        self
    }

    /// How long a PING may go unanswered
    /// ([`DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT`], 20 s, by default).
    pub fn http2_keep_alive_timeout(mut self, limit: Duration) -> Self {
        self.pings.timeout = limit;
        self
    }

    /// Whether PINGs are sent on a connection with no call open, too
    /// (`false` by default: only while a call waits).
    pub fn http2_keep_alive_while_idle(mut self, yes: bool) -> Self {
        self.pings.while_idle = yes;
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
        self.socket.validate()?;
        self.pings.validate()
    }

    /// Builds the connector alone, for use with another client; fails as
    /// [`build`](Self::build) does.
    pub fn connector(self) -> Result<Connector<R>, ClientConfigError> {
        self.validate()?;
        Ok(Connector::new(
            TcpConnector {
                resolver: TypedResolver::new(self.resolver),
                proxy: self.proxy,
                write_timeout: self.write_timeout,
                socket: self.socket,
                part: Arc::new(AtomicU8::new(0)),
            },
            self.connect_timeout,
            #[cfg(feature = "tls")]
            self.tls.unwrap_or_else(default_tls),
        ))
    }

    /// Builds the client, or says which limit cannot work. Needs a tokio
    /// runtime when it is used.
    pub fn build(self) -> Result<Client<R>, ClientConfigError>
    where
        R: Resolve,
    {
        let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2_only)
            .http2_keep_alive_interval(self.pings.interval)
            .http2_keep_alive_timeout(self.pings.timeout)
            .http2_keep_alive_while_idle(self.pings.while_idle);
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
            .field("socket", &self.socket)
            .field("http2_pings", &self.pings)
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
