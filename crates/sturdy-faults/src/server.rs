//! The listening side: binds loopback, accepts connections and serves each
//! with hyper-util's auto builder (HTTP/1.1 and h2c prior knowledge), and runs
//! outages.
//!
//! An outage is the server's "restart" as a client sees it: the port goes
//! away and comes back, while the shared state (counts, attempt counts,
//! uploaded files, batch jobs) lives on.
//!
//! # Outages
//!
//! The listener is bound with `SO_REUSEPORT`. When an outage starts, a second
//! socket is bound to the same port but never listens: it holds the port while
//! Linux answers every SYN with a RST (the client sees `ECONNREFUSED`). The
//! listener is then closed and every open connection task aborted. When the
//! outage ends, the holder itself starts listening, so no other socket can
//! take the port in between.
//!
//! # Idle closes
//!
//! With [`FaultServerBuilder::idle_close`] on, each connection counts the
//! requests begun on it and those whose response is over (its last frame
//! handed to hyper). When bytes arrive on a connection that has served a
//! request and has none in progress, they open the next request on an idle
//! keep-alive connection: one seeded draw decides whether the read fails
//! instead, so that hyper drops the connection with the request unread.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::body::Finished;
use crate::capacity::{Capacity, Slots};
use crate::dashboard::Dashboard;
use crate::fault::{Fault, FaultParams};
use crate::jobs;
use crate::mix::Mix;
use crate::rate_limit::{RateLimit, RateLimiter};
use crate::respond::Window;
use crate::respond::{self, Shared};
use crate::spec::SpecError;

const BACKLOG: u32 = 1024;

/// Longest outage honoured; longer ones are clamped so deadlines never
/// overflow.
const MAX_OUTAGE: Duration = Duration::from_secs(24 * 60 * 60);

/// A running fault server on loopback. Dropping it aborts all of its tasks
/// and connections.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = sturdy_faults::FaultServer::start().await?;
/// assert!(server.base_url().starts_with("http://127.0.0.1:"));
/// assert_eq!(server.dashboard().received, 0);
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    outages: mpsc::Sender<OutageRequest>,
    tasks: Vec<JoinHandle<()>>,
}

/// A request to the accept loop to start (or extend) an outage.
#[derive(Debug)]
struct OutageRequest {
    len: Duration,
    refusing: oneshot::Sender<io::Result<()>>,
}

impl FaultServer {
    /// A builder: `127.0.0.1:0`, no mix, seed 0, default params, no outages.
    pub fn builder() -> FaultServerBuilder {
        FaultServerBuilder::default()
    }

    /// Starts a server on `127.0.0.1:0` that injects nothing unless a request
    /// carries a script.
    pub async fn start() -> io::Result<FaultServer> {
        FaultServer::builder().start().await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the requests of call `id` carried, in the order they came:
    /// recorded for requests with a [`RECORD_HEADER`](crate::RECORD_HEADER)
    /// and a [`CALL_HEADER`](crate::CALL_HEADER).
    pub fn received_bodies(&self, id: &str) -> Vec<crate::BodyDigest> {
        self.shared.bodies(id)
    }

    /// A snapshot of the server's counts, without going through HTTP.
    pub fn dashboard(&self) -> Dashboard {
        self.shared.recorder.snapshot()
    }

    /// Starts an outage of `len`: returns once new connections are refused
    /// and open ones dropped; the server reopens the same port by itself
    /// after `len`. During an outage, a further call extends it.
    pub async fn outage(&self, len: Duration) -> io::Result<()> {
        request_outage(&self.outages, len).await
    }

    /// Stops serving and waits for the server's tasks to end.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // A cancelled task reports a JoinError; that is the point.
            let _ = task.await;
        }
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn request_outage(outages: &mpsc::Sender<OutageRequest>, len: Duration) -> io::Result<()> {
    let gone = || io::Error::other("sturdy-faults: the server's accept loop has stopped");
    let (refusing, refused) = oneshot::channel();
    outages
        .send(OutageRequest { len, refusing })
        .await
        .map_err(|_| gone())?;
    refused.await.map_err(|_| gone())?
}

/// Configures a [`FaultServer`].
#[derive(Debug, Clone)]
pub struct FaultServerBuilder {
    listen: SocketAddr,
    mix: Mix,
    seed: u64,
    params: FaultParams,
    outages: Vec<(Duration, Duration)>,
    windows: Vec<Window>,
    idle_close: f64,
    job_duration: Duration,
    rate_limit: Option<RateLimit>,
    capacity: Option<Capacity>,
}

impl Default for FaultServerBuilder {
    fn default() -> FaultServerBuilder {
        FaultServerBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mix: Mix::none(),
            seed: 0,
            params: FaultParams::default(),
            outages: Vec::new(),
            windows: Vec::new(),
            idle_close: 0.0,
            job_duration: jobs::DEFAULT_JOB_DURATION,
            rate_limit: None,
            capacity: None,
        }
    }
}

impl FaultServerBuilder {
    /// Listens on `addr`, which must be a loopback address (port 0 picks one).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Draws faults for unscripted requests from `mix`.
    pub fn mix(mut self, mix: Mix) -> Self {
        self.mix = mix;
        self
    }

    /// Seeds the mix's random draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the defaults for fault parameters entries leave out.
    pub fn params(mut self, params: FaultParams) -> Self {
        self.params = params;
        self
    }

    /// Schedules an outage of `len` starting `start` after the server starts.
    /// May be called repeatedly; overlapping outages merge.
    pub fn outage_at(mut self, start: Duration, len: Duration) -> Self {
        self.outages.push((start, len));
        self
    }

    /// From `start` after the server starts, for `len`, every unscripted
    /// request gets `fault` (instead of a draw from the mix): a server that
    /// answers 503 to everything for a while, then recovers. Repeatable; where
    /// windows overlap, the first one given wins.
    pub fn window(mut self, start: Duration, len: Duration, fault: Fault) -> Self {
        self.windows.push(Window {
            start,
            end: start.saturating_add(len),
            fault,
        });
        self
    }

    /// With `probability` (0 to 1, a seeded draw), closes an idle keep-alive
    /// connection at the moment the next request starts to arrive on it,
    /// before reading it: the race a server's idle timeout loses against a
    /// client reusing its pooled connection. The request never reaches the
    /// server (`received` does not move; the dashboard counts `idle_close`),
    /// while the client has already sent it: it sees the connection close
    /// with its request unanswered.
    pub fn idle_close(mut self, probability: f64) -> Self {
        self.idle_close = probability;
        self
    }

    /// How long a batch job takes from creation to its end (default 10 s):
    /// `validating` for the first 10 %, `in_progress` until 80 %,
    /// `finalizing` until 100 %, then `completed` (a job whose metadata
    /// scripts `sturdy_fate` fails at 50 % or expires at 100 % instead; a
    /// cancel takes 10 %). Must not be zero.
    pub fn job_duration(mut self, duration: Duration) -> Self {
        self.job_duration = duration;
        self
    }

    /// Puts a rate limit (token buckets per requests and per tokens, with
    /// OpenAI's `x-ratelimit-*` headers and `429`s) in front of
    /// `POST /v1/chat/completions`; see [`RateLimit`]. A request whose fault
    /// replaces the answer (a non-200 status, `close`, `hostile`, scripted
    /// or drawn) gets its fault and takes nothing from the buckets; the
    /// rest (no fault, `200`, or a fault that only shapes the delivery) are
    /// admitted or refused by the limiter, and a refused one gets its `429`
    /// instead of its fault.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Serves at most [`Capacity`]'s `n` chat completions at once, each
    /// after a service time, and refuses the rest at once (`429` or `503`).
    /// It stands before the rate limiter, and like it leaves alone a
    /// request whose fault replaces the answer.
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Binds and starts serving; fails for a non-loopback address, an
    /// idle-close probability outside 0..=1, a zero job duration, or a rate
    /// limit or capacity with values out of range.
    pub async fn start(self) -> io::Result<FaultServer> {
        let invalid = |e: SpecError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        if let Some(limit) = &self.rate_limit {
            limit.validate().map_err(invalid)?;
        }
        if let Some(capacity) = &self.capacity {
            capacity.validate().map_err(invalid)?;
        }
        if !(0.0..=1.0).contains(&self.idle_close) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the idle-close probability {} is not in 0..=1",
                    self.idle_close
                ),
            ));
        }
        if self.job_duration.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the job duration must not be zero",
            ));
        }
        if !self.listen.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "sturdy-faults only listens on loopback, not {}",
                    self.listen
                ),
            ));
        }
        let listener = bind_reusable(self.listen)?.listen(BACKLOG)?;
        let addr = listener.local_addr()?;
        let mut shared = Shared::new(
            self.mix,
            StdRng::seed_from_u64(self.seed),
            self.params,
            self.windows,
            self.idle_close,
            self.job_duration,
        );
        shared.rate_limit = self.rate_limit.as_ref().map(RateLimiter::new);
        shared.capacity = self.capacity.as_ref().map(Slots::new);
        let shared = Arc::new(shared);
        let (outages, requests) = mpsc::channel(16);
        let mut tasks = vec![tokio::spawn(accept_loop(
            listener,
            addr,
            Arc::clone(&shared),
            requests,
        ))];
        if !self.outages.is_empty() {
            tasks.push(tokio::spawn(run_schedule(self.outages, outages.clone())));
        }
        Ok(FaultServer {
            addr,
            shared,
            outages,
            tasks,
        })
    }
}

/// A TCP socket bound to `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, so a
/// second one can hold the port while the first still listens.
fn bind_reusable(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    ))]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

fn deadline_after(len: Duration) -> Instant {
    Instant::now() + len.min(MAX_OUTAGE)
}

async fn run_schedule(
    mut outages: Vec<(Duration, Duration)>,
    requests: mpsc::Sender<OutageRequest>,
) {
    let started = Instant::now();
    outages.sort_by_key(|(start, _)| *start);
    for (start, len) in outages {
        let Some(at) = started.checked_add(start) else {
            return;
        };
        tokio::time::sleep_until(at).await;
        if let Err(e) = request_outage(&requests, len).await {
            tracing::warn!(error = %e, "scheduled outage failed");
            return;
        }
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<OutageRequest>,
) {
    let mut connections = JoinSet::new();
    loop {
        let outage = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(outage) = requests.recv() => break outage,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };

        let holder = match bind_reusable(addr) {
            Ok(holder) => holder,
            Err(e) => {
                let _ = outage.refusing.send(Err(e));
                continue;
            }
        };
        drop(listener);
        while connections.try_join_next().is_some() {}
        let dropped = connections.len() as u64;
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        shared.recorder.fault("outage_dropped", dropped);
        let _ = outage.refusing.send(Ok(()));

        let mut until = deadline_after(outage.len);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                Some(more) = requests.recv() => {
                    until = until.max(deadline_after(more.len));
                    let _ = more.refusing.send(Ok(()));
                }
            }
        }
        listener = match holder.listen(BACKLOG) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, %addr, "cannot listen again after an outage");
                return;
            }
        };
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    if shared.idle_close <= 0.0 {
        return serve(stream, shared, None).await;
    }
    // Requests begun and over on this connection, for the idle-close race.
    let watch = Arc::new(Watch::default());
    let io = RaceIo {
        inner: stream,
        watch: watch.clone(),
        shared: Arc::clone(&shared),
        checked: 0,
    };
    serve(io, shared, Some(watch)).await;
}

async fn serve<I>(io: I, shared: Arc<Shared>, watch: Option<Arc<Watch>>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        let finished = watch.as_ref().map(|w| {
            w.begun.fetch_add(1, Ordering::Release);
            Finished(Arc::clone(&w.over))
        });
        async move {
            let response = respond::handle(&shared, request).await?;
            Ok::<_, respond::DropConnection>(match finished {
                Some(f) => response.map(|body| body.finished_by(f)),
                None => response,
            })
        }
    });
    // HTTP/2 stream tasks need no tracking of their own: when this task is
    // aborted the h2 connection drops and hyper wakes and ends its streams
    // (pinned by the `dropping_the_server_*` tests).
    let served = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Requests begun on one connection, and those whose response is over
/// (sent, dropped, or never made).
#[derive(Debug, Default)]
struct Watch {
    begun: AtomicU64,
    over: Arc<AtomicU64>,
}

/// A served connection's socket, which fails its read (so hyper closes the
/// connection unread) when the first bytes of a request arrive on an idle
/// keep-alive connection and the server's idle-close draw says so.
struct RaceIo {
    inner: TcpStream,
    watch: Arc<Watch>,
    shared: Arc<Shared>,
    /// The `begun` count at the last draw: one draw per idle spell.
    checked: u64,
}

impl RaceIo {
    /// Whether bytes that just arrived open a request on an idle, already
    /// used connection that the draw says to close.
    fn closes_on_arrival(&mut self) -> bool {
        let watch = &self.watch;
        let begun = watch.begun.load(Ordering::Acquire);
        let idle = begun > 0 && watch.over.load(Ordering::Acquire) == begun;
        if !idle || begun == self.checked {
            return false;
        }
        self.checked = begun;
        self.shared.close_idle_now()
    }
}

impl AsyncRead for RaceIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before && self.closes_on_arrival() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "sturdy-faults: idle keep-alive connection closed",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RaceIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
