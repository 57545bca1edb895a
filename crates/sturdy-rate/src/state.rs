//! What the pacer knows about each server, shared by every clone of a
//! layer's services: a read-locked map from `host:port` to one small,
//! briefly locked view per server.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use http::Uri;
use tokio::time::Instant;

use crate::RateLimitHeaders;
use crate::stats::{PacerStats, ServerStats};

/// The dimensions a pacer tracks, in [`RateLimitHeaders::dimensions`]
/// order: requests, tokens, input tokens, output tokens.
pub(crate) const DIMS: usize = 4;

/// What one attempt takes from each dimension.
pub(crate) type Need = [u64; DIMS];

/// A server's identity: its host, ASCII case ignored, and port (0 when the
/// URI has none and its scheme gives no default).
trait Key {
    fn host(&self) -> &str;
    fn port(&self) -> u16;
}

impl Hash for dyn Key + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.host().bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
        state.write_u16(self.port());
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.port() == other.port() && self.host().eq_ignore_ascii_case(other.host())
    }
}

impl Eq for dyn Key + '_ {}

/// A key as the map holds it.
struct OwnedKey {
    host: Box<str>,
    port: u16,
}

impl Key for OwnedKey {
    fn host(&self) -> &str {
        &self.host
    }
    fn port(&self) -> u16 {
        self.port
    }
}

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn Key).hash(state);
    }
}

impl PartialEq for OwnedKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn Key) == (other as &dyn Key)
    }
}

impl Eq for OwnedKey {}

impl<'a> Borrow<dyn Key + 'a> for OwnedKey {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

/// A key borrowed from a request URI: a lookup allocates nothing.
struct LookupKey<'a> {
    host: &'a str,
    port: u16,
}

impl Key for LookupKey<'_> {
    fn host(&self) -> &str {
        self.host
    }
    fn port(&self) -> u16 {
        self.port
    }
}

/// The server a request is for: the URI's host and port (the scheme's
/// default when it gives none), never its user-info; `None` for a URI
/// without an authority.
fn key_of(uri: &Uri) -> Option<LookupKey<'_>> {
    let authority = uri.authority()?;
    let port = authority.port_u16().unwrap_or_else(|| implied_port(uri));
    Some(LookupKey {
        host: authority.host(),
        port,
    })
}

/// The port a URI's scheme implies (0 for none or another scheme).
fn implied_port(uri: &Uri) -> u16 {
    match uri.scheme().map(http::uri::Scheme::as_str) {
        Some(s) if s.eq_ignore_ascii_case("https") => 443,
        Some(s) if s.eq_ignore_ascii_case("http") => 80,
        _ => 0,
    }
}

/// The server a service's last attempt went to, kept in the service (see
/// [`Shared::server_via`]). Its `Debug` shows the server's label only: the
/// authority's text may hold user information.
#[derive(Clone)]
pub(crate) struct LastServer {
    implied: u16,
    authority: Arc<str>,
    server: Arc<Server>,
}

impl std::fmt::Debug for LastServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LastServer")
            .field(&self.server.label)
            .finish()
    }
}

/// How much earlier an answer's reset may fall than the known one before
/// the answer is taken for one that was overtaken (arrival times jitter).
const STALE_SLACK: Duration = Duration::from_millis(5);

/// One dimension of a server's view.
#[derive(Debug, Clone, Copy, Default)]
struct Dim {
    /// What the last answer said is left, less what was sent since; `None`
    /// when unknown (never said, or gone stale).
    remaining: Option<u64>,
    /// When the server said the quota resets.
    reset_at: Option<Instant>,
    /// The window's whole quota, when said.
    limit: Option<u64>,
    /// How long the last answer said the quota takes to come back.
    period: Option<Duration>,
    /// What the attempts sent and not yet answered take.
    in_flight: u64,
    /// What the attempts sent since the last answer took: the server's
    /// reset did not count them.
    sent_since: u64,
}

/// What the pacer knows of one server.
#[derive(Default)]
struct View {
    dims: [Dim; DIMS],
}

impl View {
    /// Whether an attempt that takes `need` may go now: if so, takes it
    /// (`None`); if not, the instant the server said its quota comes back.
    ///
    /// A dimension holds an attempt when its remaining count is known and
    /// below the need, unless the need exceeds the whole limit (waiting
    /// could never make room: the server decides). A reset instant that has
    /// passed brings the whole limit back, less the attempts sent since the
    /// last answer (its reset did not count them) or in flight, for
    /// another such period (so the attempts held until the reset do not all
    /// go at once); without a known limit the remaining count is unknown
    /// again.
    fn admit(&mut self, need: &Need, now: Instant) -> Option<Instant> {
        self.admit_at(need, Some(now))
    }

    /// Whether any dimension waits for a reset: only then does admitting
    /// need the time.
    fn awaits_reset(&self) -> bool {
        self.dims.iter().any(|d| d.reset_at.is_some())
    }

    /// [`admit`](Self::admit), with the time read only when a dimension
    /// awaits a reset (`now` may be `None` otherwise).
    fn admit_at(&mut self, need: &Need, now: Option<Instant>) -> Option<Instant> {
        let mut until: Option<Instant> = None;
        for (d, &n) in self.dims.iter_mut().zip(need) {
            if let Some(now) = now
                && d.reset_at.is_some_and(|at| at <= now)
            {
                match (d.limit, d.period) {
                    // The quota is back whole: as much of it as the
                    // attempts in flight leave may go, and the rest waits
                    // as long again (or for the next answer's word).
                    (Some(limit), Some(period)) if !period.is_zero() => {
                        let taken = d.sent_since.max(d.in_flight);
                        d.remaining = Some(limit.saturating_sub(taken));
                        d.reset_at = Some(now + period);
                    }
                    _ => {
                        d.remaining = None;
                        d.reset_at = None;
                    }
                }
            }
            if let (Some(left), Some(at)) = (d.remaining, d.reset_at)
                && left < n
                && d.limit.is_none_or(|limit| n <= limit)
            {
                until = until.max(Some(at));
            }
        }
        if until.is_none() {
            for (d, &n) in self.dims.iter_mut().zip(need) {
                d.remaining = d.remaining.map(|left| left.saturating_sub(n));
                d.in_flight = d.in_flight.saturating_add(n);
                d.sent_since = d.sent_since.saturating_add(n);
            }
        }
        until
    }

    /// An attempt that took `need` has ended.
    fn release(&mut self, need: &Need) {
        for (d, &n) in self.dims.iter_mut().zip(need) {
            d.in_flight = d.in_flight.saturating_sub(n);
        }
    }

    /// An answer came at `arrived` with these headers: every dimension it
    /// gives both a remaining count and a reset for is taken from it, less
    /// what the attempts still in flight take (the server may not have
    /// counted them yet). The others are left as they were.
    fn answer(&mut self, rl: &RateLimitHeaders, arrived: Instant) {
        for (d, q) in self.dims.iter_mut().zip(rl.dimensions()) {
            if let (Some(left), Some(reset)) = (q.remaining, q.reset) {
                let left = left.saturating_sub(d.in_flight);
                let at = arrived + reset;
                // An answer overtaken by a newer one: it says more is left
                // and comes back sooner than what is known. A quota's
                // return only moves later as it is spent, so it is stale.
                if let (Some(known), Some(known_at)) = (d.remaining, d.reset_at)
                    && left > known
                    && at + STALE_SLACK < known_at
                {
                    continue;
                }
                d.remaining = Some(left);
                d.reset_at = Some(at);
                d.limit = q.limit;
                d.period = Some(reset);
                d.sent_since = 0;
            }
        }
    }
}

/// One server: its label, its view, and its counts.
pub(crate) struct Server {
    /// `host:port`.
    pub(crate) label: Arc<str>,
    view: Mutex<View>,
    held: AtomicU64,
    held_nanos: AtomicU64,
    failed_deadline: AtomicU64,
    holding: AtomicU64,
}

impl Server {
    fn new(label: Arc<str>) -> Server {
        Server {
            label,
            view: Mutex::default(),
            held: AtomicU64::new(0),
            held_nanos: AtomicU64::new(0),
            failed_deadline: AtomicU64::new(0),
            holding: AtomicU64::new(0),
        }
    }

    /// The view, locked only for the few instructions of a decision.
    /// Nothing panics while it is held, so a poisoned lock is still sound.
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Under one lock: `need_of` makes the attempt's need, told whether the
    /// server has ever said anything about tokens (only then is a
    /// request's token count worth estimating); then [`View::admit`].
    /// `clock` is read only when the server's view awaits a reset (a server
    /// that never sent rate-limit headers costs no clock read); an attempt
    /// that must wait gets the instant it waits until and the one it was
    /// judged at.
    pub(crate) fn admit(
        &self,
        need_of: impl FnOnce(bool) -> Need,
        clock: impl FnOnce() -> Instant,
    ) -> (Need, Option<(Instant, Instant)>) {
        let mut view = self.view();
        let tracks_tokens = view.dims[1..]
            .iter()
            .any(|d| d.limit.is_some() || d.period.is_some());
        let need = need_of(tracks_tokens);
        let now = view.awaits_reset().then(clock);
        let until = view.admit_at(&need, now);
        // A wait is only ever for a reset, so the time was read.
        (need, until.zip(now))
    }

    /// [`View::admit`] for an attempt whose need is known (one that waited).
    pub(crate) fn admit_again(&self, need: &Need, now: Instant) -> Option<Instant> {
        self.view().admit(need, now)
    }

    /// See [`View::release`] and [`View::answer`]: one lock for both.
    /// `said`: what the answer's headers said, and when it arrived.
    pub(crate) fn answer(&self, need: &Need, said: Option<(&RateLimitHeaders, Instant)>) {
        let mut view = self.view();
        view.release(need);
        if let Some((rl, arrived)) = said {
            view.answer(rl, arrived);
        }
    }

    pub(crate) fn hold_started(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
        self.holding.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hold_ended(&self, held: Duration) {
        let nanos = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX);
        self.held_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.holding.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn failed_for_deadline(&self) {
        self.failed_deadline.fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> ServerStats {
        ServerStats {
            server: self.label.to_string(),
            held: self.held.load(Ordering::Relaxed),
            held_time: Duration::from_nanos(self.held_nanos.load(Ordering::Relaxed)),
            failed_deadline: self.failed_deadline.load(Ordering::Relaxed),
            holding: self.holding.load(Ordering::Relaxed),
            in_flight: self.view().dims[0].in_flight,
        }
    }
}

/// Every server a pacer has seen, shared by the layer and its services.
pub(crate) struct Shared {
    servers: RwLock<HashMap<OwnedKey, Arc<Server>>>,
    max_servers: usize,
}

/// Only how many servers: what the pacer knows of each came from their
/// headers, and [`Shared::stats`] is the way to look.
impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers = self
            .servers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Shared")
            .field("servers", &servers)
            .field("max_servers", &self.max_servers)
            .finish()
    }
}

impl Shared {
    pub(crate) fn new(max_servers: usize) -> Shared {
        Shared {
            servers: RwLock::default(),
            max_servers,
        }
    }

    /// The server a request URI is for, added on first sight; `None` for a
    /// URI without an authority, or a new server once `max_servers` are
    /// known (it is then not paced). A known server costs a read lock, a
    /// hash of its host and an `Arc` clone; a new one allocates once.
    pub(crate) fn server(&self, uri: &Uri) -> Option<Arc<Server>> {
        if self.max_servers == 0 {
            return None;
        }
        let key = key_of(uri)?;
        let read = self.servers.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = read.get(&key as &dyn Key) {
            return Some(Arc::clone(s));
        }
        if read.len() >= self.max_servers {
            return None;
        }
        drop(read);
        let mut write = self.servers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = write.get(&key as &dyn Key) {
            return Some(Arc::clone(s));
        }
        if write.len() >= self.max_servers {
            return None;
        }
        let host = key.host.to_ascii_lowercase();
        let label: Arc<str> = if key.port == 0 {
            host.as_str().into()
        } else {
            format!("{host}:{}", key.port).into()
        };
        let server = Arc::new(Server::new(label));
        write.insert(
            OwnedKey {
                host: host.into_boxed_str(),
                port: key.port,
            },
            Arc::clone(&server),
        );
        Some(server)
    }

    /// [`server`](Self::server), through `last`: the server the same
    /// service's previous attempt went to. A run of attempts to one server
    /// (the usual case: a client per API) then costs a comparison of the
    /// authority's text and an `Arc` clone, not a hash and a lock.
    pub(crate) fn server_via(
        &self,
        uri: &Uri,
        last: &mut Option<LastServer>,
    ) -> Option<Arc<Server>> {
        if self.max_servers == 0 {
            return None;
        }
        let authority = uri.authority()?.as_str();
        let implied = implied_port(uri);
        if let Some(l) = last.as_ref()
            && l.implied == implied
            && *l.authority == *authority
        {
            return Some(Arc::clone(&l.server));
        }
        let server = self.server(uri)?;
        *last = Some(LastServer {
            implied,
            authority: authority.into(),
            server: Arc::clone(&server),
        });
        Some(server)
    }

    pub(crate) fn stats(&self) -> PacerStats {
        let servers: Vec<Arc<Server>> = self
            .servers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut servers: Vec<ServerStats> = servers.iter().map(|s| s.stats()).collect();
        servers.sort_by(|a, b| a.server.cmp(&b.server));
        PacerStats { servers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn servers_are_host_and_port_without_user_info_or_case() {
        let shared = Shared::new(8);
        let a = shared.server(&uri("https://api.test/v1/chat")).unwrap();
        assert_eq!(&*a.label, "api.test:443");
        for same in [
            "https://API.Test:443/x",
            "https://user:secret@api.test/v1",
            "http://api.test:443/",
        ] {
            let s = shared.server(&uri(same)).unwrap();
            assert!(Arc::ptr_eq(&a, &s), "{same}");
        }
        let plain = shared.server(&uri("http://api.test/")).unwrap();
        assert_eq!(&*plain.label, "api.test:80");
        let v6 = shared.server(&uri("http://[::1]:8080/")).unwrap();
        assert_eq!(&*v6.label, "[::1]:8080");
        let odd = shared.server(&uri("grpc+x://svc.test/")).unwrap();
        assert_eq!(&*odd.label, "svc.test");
        assert!(shared.server(&uri("/relative")).is_none());
        let labels: Vec<String> = shared
            .stats()
            .servers
            .into_iter()
            .map(|s| s.server)
            .collect();
        assert_eq!(
            labels,
            ["[::1]:8080", "api.test:443", "api.test:80", "svc.test"]
        );
        assert!(!labels.iter().any(|l| l.contains("secret")));
    }

    #[test]
    fn past_the_cap_new_servers_are_not_tracked() {
        let shared = Shared::new(2);
        assert!(shared.server(&uri("http://a.test/")).is_some());
        assert!(shared.server(&uri("http://b.test/")).is_some());
        assert!(shared.server(&uri("http://c.test/")).is_none());
        assert!(shared.server(&uri("http://a.test/")).is_some());
    }

    fn said(remaining: u64, reset: Duration, limit: Option<u64>) -> RateLimitHeaders {
        RateLimitHeaders {
            requests: Quota {
                limit,
                remaining: Some(remaining),
                reset: Some(reset),
            },
            ..RateLimitHeaders::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_admits_takes_releases_and_forgets() {
        let mut v = View::default();
        let one = [1, 0, 0, 0];
        let now = Instant::now();
        // Nothing known: everything goes.
        assert_eq!(v.admit(&one, now), None);
        assert_eq!(v.dims[0].in_flight, 1);
        // The answer said 2 left; one other attempt is still in flight.
        assert_eq!(v.admit(&one, now), None);
        v.release(&one);
        v.answer(&said(2, Duration::from_secs(5), Some(10)), now);
        assert_eq!(v.dims[0].remaining, Some(1));
        assert_eq!(v.admit(&one, now), None);
        let reset = now + Duration::from_secs(5);
        assert_eq!(v.admit(&one, now), Some(reset));
        // Once the reset has passed, the whole limit is back, less what
        // was sent since the answer or is still in flight (2 here), for
        // another period.
        assert_eq!(v.admit(&one, reset), None);
        assert_eq!(v.dims[0].remaining, Some(7));
        assert_eq!(v.dims[0].reset_at, Some(reset + Duration::from_secs(5)));
        // A need larger than the whole limit is never held.
        assert_eq!(v.admit(&[11, 0, 0, 0], reset), None);
        // Without a limit, a passed reset leaves the count unknown.
        let later = reset + Duration::from_secs(1);
        v.answer(&said(0, Duration::from_secs(1), None), later);
        let after = later + Duration::from_secs(1);
        assert_eq!(v.admit(&one, after), None);
        assert_eq!(v.dims[0].remaining, None);
        // An answer without a reset changes nothing.
        let mut partial = said(0, Duration::ZERO, None);
        partial.requests.reset = None;
        v.answer(&partial, after);
        assert_eq!(v.dims[0].remaining, None);
    }
}
