//! Keeping long, silent calls alive: TCP keepalive on every socket the
//! client opens (on by default), `TCP_USER_TIMEOUT` where the OS has it,
//! and HTTP/2 PINGs (off by default) handed to hyper.
//!
//! Why keepalive is on by default: an agentic or long-context call may wait
//! minutes for its first byte, and NAT gateways and load balancers drop a
//! connection that stays silent longer than their idle limit (about 350 s
//! on one large cloud, 120 s on another). The call then hangs until `read`
//! fires, and its answer is lost. A keepalive probe every 30 s of silence
//! keeps such a mapping alive at a cost of a few empty segments; a peer that
//! vanished is noticed after three unanswered probes 10 s apart (about a
//! minute), instead of the OS default of over two hours. reqwest probes
//! after 15 s, the Anthropic SDK after 60 s; 30 s sits between them, four
//! times under the shortest idle limit reported.
//!
//! Why HTTP/2 PINGs are off by default: a PING involves the server, and
//! gRPC servers police them (grpc-go answers a client that pings more than
//! once every five minutes with `GOAWAY too_many_pings`, closing every call
//! on the connection). TCP keepalive needs nothing from the server.

use std::time::Duration;

use tokio::net::TcpStream;

use super::ClientConfigError;

/// Default silence before the first TCP keepalive probe.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default interval between unanswered TCP keepalive probes.
pub const DEFAULT_TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default number of unanswered probes before the OS drops the connection.
pub const DEFAULT_TCP_KEEPALIVE_RETRIES: u32 = 3;
/// Default wait for an HTTP/2 PING's answer, once PINGs are turned on.
pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The socket options set on every connection, fixed when the client is
/// built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SocketOptions {
    /// Silence before the first probe; `None`: keepalive off.
    pub(super) keepalive: Option<Duration>,
    pub(super) interval: Duration,
    pub(super) retries: u32,
    /// `TCP_USER_TIMEOUT`; `None`: the OS default.
    pub(super) user_timeout: Option<Duration>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            interval: DEFAULT_TCP_KEEPALIVE_INTERVAL,
            retries: DEFAULT_TCP_KEEPALIVE_RETRIES,
            user_timeout: None,
        }
    }
}

/// HTTP/2 PING settings, passed to hyper's builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Http2Pings {
    /// `None`: no PINGs.
    pub(super) interval: Option<Duration>,
    pub(super) timeout: Duration,
    pub(super) while_idle: bool,
}

impl Default for Http2Pings {
    fn default() -> Self {
        Http2Pings {
            interval: None,
            timeout: DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
            while_idle: false,
        }
    }
}

/// The OS counts keepalive times in whole seconds.
const ONE_SECOND: Duration = Duration::from_secs(1);

impl SocketOptions {
    pub(super) fn validate(&self) -> Result<(), ClientConfigError> {
        let invalid = |setting, why| Err(ClientConfigError::InvalidKeepalive { setting, why });
        if self.keepalive.is_some_and(|idle| idle < ONE_SECOND) {
            return invalid(
                "tcp_keepalive",
                "must be at least 1s: the OS counts it in seconds",
            );
        }
        if self.interval < ONE_SECOND {
            return invalid(
                "tcp_keepalive_interval",
                "must be at least 1s: the OS counts it in seconds",
            );
        }
        if self.retries == 0 {
            return invalid("tcp_keepalive_retries", "must be at least 1 probe");
        }
        if self.user_timeout.is_some_and(|t| t < super::MIN_LIMIT) {
            return invalid("tcp_user_timeout", "must be at least 1ms");
        }
        Ok(())
    }

    /// Sets the options on a fresh connection. Best effort, as `nodelay`
    /// is: an OS that refuses one still gets a working connection, and the
    /// refusal is logged.
    pub(super) fn apply(&self, stream: &TcpStream) {
        let sock = socket2::SockRef::from(stream);
        if let Some(idle) = self.keepalive {
            let params = socket2::TcpKeepalive::new().with_time(idle);
            #[cfg(any(
                target_os = "android",
                target_os = "freebsd",
                target_os = "fuchsia",
                target_os = "illumos",
                target_os = "ios",
                target_os = "linux",
                target_os = "macos",
                target_os = "netbsd",
                target_os = "windows",
            ))]
            let params = params
                .with_interval(self.interval)
                .with_retries(self.retries);
            if let Err(error) = sock.set_tcp_keepalive(&params) {
                tracing::debug!(%error, "TCP keepalive not set");
            }
        }
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        if let Some(t) = self.user_timeout
            && let Err(error) = sock.set_tcp_user_timeout(Some(t))
        {
            tracing::debug!(%error, "TCP_USER_TIMEOUT not set");
        }
    }
}

impl Http2Pings {
    pub(super) fn validate(&self) -> Result<(), ClientConfigError> {
        let invalid = |setting, why| Err(ClientConfigError::InvalidKeepalive { setting, why });
        if self.interval.is_some_and(|i| i < super::MIN_LIMIT) {
            return invalid("http2_keep_alive_interval", "must be at least 1ms");
        }
        if self.timeout < super::MIN_LIMIT {
            return invalid("http2_keep_alive_timeout", "must be at least 1ms");
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A connected loopback socket, and its peer kept open.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn the_os_reads_back_every_option_set() {
        let (stream, _peer) = connected().await;
        let options = SocketOptions {
            keepalive: Some(Duration::from_secs(42)),
            interval: Duration::from_secs(7),
            retries: 5,
            user_timeout: Some(Duration::from_millis(90_500)),
        };
        options.apply(&stream);
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(42));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(7)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 5);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(90_500))
        );
    }

    #[tokio::test]
    async fn defaults_turn_keepalive_on_and_leave_the_user_timeout_alone() {
        let (stream, _peer) = connected().await;
        SocketOptions::default().apply(&stream);
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), DEFAULT_TCP_KEEPALIVE);
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            DEFAULT_TCP_KEEPALIVE_INTERVAL
        );
        assert_eq!(
            sock.tcp_keepalive_retries().unwrap(),
            DEFAULT_TCP_KEEPALIVE_RETRIES
        );
        assert_eq!(sock.tcp_user_timeout().unwrap(), None);

        let (stream, _peer) = connected().await;
        let off = SocketOptions {
            keepalive: None,
            ..SocketOptions::default()
        };
        off.apply(&stream);
        assert!(!socket2::SockRef::from(&stream).keepalive().unwrap());
    }

    #[test]
    fn settings_the_os_cannot_take_are_refused_by_name() {
        let bad = [
            SocketOptions {
                keepalive: Some(Duration::from_millis(500)),
                ..SocketOptions::default()
            },
            SocketOptions {
                interval: Duration::ZERO,
                ..SocketOptions::default()
            },
            SocketOptions {
                retries: 0,
                ..SocketOptions::default()
            },
            SocketOptions {
                user_timeout: Some(Duration::ZERO),
                ..SocketOptions::default()
            },
        ];
        let names: Vec<String> = bad
            .iter()
            .map(|o| o.validate().unwrap_err().to_string())
            .collect();
        for (msg, name) in names.iter().zip([
            "tcp_keepalive ",
            "tcp_keepalive_interval",
            "tcp_keepalive_retries",
            "tcp_user_timeout",
        ]) {
            assert!(msg.contains(name), "{msg}");
        }
        assert!(SocketOptions::default().validate().is_ok());
        let no_keepalive = SocketOptions {
            keepalive: None,
            ..SocketOptions::default()
        };
        assert!(no_keepalive.validate().is_ok());
        let pings = Http2Pings {
            interval: Some(Duration::ZERO),
            ..Http2Pings::default()
        };
        assert!(
            pings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("http2_keep_alive_interval")
        );
    }
}
