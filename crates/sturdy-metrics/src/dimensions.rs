//! The dimensions an outcome is recorded under, and how they are read from a
//! request without ever touching a path, a query or a header value other than
//! `Host`'s authority.
//!
//! Every label is either a `&'static str` or an `Arc<str>` built once and then
//! shared, so recording an outcome clones at most two reference counts.

use std::fmt;
use std::sync::Arc;

use crate::slots::Slots;

use sturdy_core::{FailureKind, Reach, Workload};

/// Which of the layer's two positions recorded an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One outcome per logical call (`FailureMetricsLayer::calls`).
    Call,
    /// One outcome per attempt (`FailureMetricsLayer::attempts`).
    Attempt,
}

impl Scope {
    /// Both scopes.
    pub const ALL: [Scope; 2] = [Scope::Call, Scope::Attempt];

    /// The label: `call` or `attempt`.
    pub const fn label(self) -> &'static str {
        match self {
            Scope::Call => "call",
            Scope::Attempt => "attempt",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The label recorded for methods outside the known set.
pub const OTHER_METHOD: &str = "_OTHER";

/// The label recorded when no server address can be found.
pub const UNKNOWN_SERVER: &str = "unknown";

/// A method label: a known HTTP method, `_OTHER`, or a gRPC `service/method`.
///
/// Cloning is a reference-count increment at most.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MethodLabel(Label);

/// A `host:port` label. Never holds a path, a query or user information.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServerAddress(Label);

#[derive(Clone)]
enum Label {
    Static(&'static str),
    Shared(Arc<str>),
}

// By text: a fixed label and a shared one with the same text are the same
// label (one series, not two).
impl PartialEq for Label {
    fn eq(&self, other: &Label) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Label {}

impl std::hash::Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Label {
    fn as_str(&self) -> &str {
        match self {
            Label::Static(s) => s,
            Label::Shared(s) => s,
        }
    }
}

impl MethodLabel {
    /// The label as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// A fixed label (for custom recorders and tests; the layer builds its
    /// own).
    pub const fn from_static(s: &'static str) -> MethodLabel {
        MethodLabel(Label::Static(s))
    }

    pub(crate) fn shared(s: Arc<str>) -> MethodLabel {
        MethodLabel(Label::Shared(s))
    }
}

impl ServerAddress {
    /// The label as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// A fixed label (for custom recorders and tests; the layer builds its
    /// own).
    pub const fn from_static(s: &'static str) -> ServerAddress {
        ServerAddress(Label::Static(s))
    }

    /// `unknown`.
    pub const fn unknown() -> ServerAddress {
        ServerAddress(Label::Static(UNKNOWN_SERVER))
    }

    pub(crate) fn shared(s: Arc<str>) -> ServerAddress {
        ServerAddress(Label::Shared(s))
    }
}

impl fmt::Debug for MethodLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MethodLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl prometheus_client::encoding::EncodeLabelValue for MethodLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

impl prometheus_client::encoding::EncodeLabelValue for ServerAddress {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Everything an outcome is recorded under, apart from the outcome itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dimensions {
    /// Call or attempt.
    pub scope: Scope,
    /// The workload: from the `CallContext`, else the `Workload` extension,
    /// else the default (`interactive`).
    pub workload: Workload,
    /// The request method.
    pub method: MethodLabel,
    /// The server's `host:port`.
    pub server: ServerAddress,
}

/// How a call or an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A successful response, read to its end.
    Ok,
    /// A failure, with its reach.
    Failed(FailureKind),
}

impl Outcome {
    /// `ok`, or the failure's label (`503`, `connect_refused`, `cancelled`...).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(kind) => kind.label(),
        }
    }

    /// How far it got: `acknowledged` for a success.
    pub fn reach(&self) -> Reach {
        match self {
            Outcome::Ok => Reach::Acknowledged,
            Outcome::Failed(kind) => kind.reach(),
        }
    }

    /// Whether this is a success.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The standard HTTP methods, which are their own label.
const STANDARD_METHODS: [http::Method; 9] = [
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::HEAD,
    http::Method::OPTIONS,
    http::Method::PATCH,
    http::Method::CONNECT,
    http::Method::TRACE,
];

/// The set of methods recorded as themselves; anything else is `_OTHER`.
#[derive(Clone)]
pub(crate) struct KnownMethods(Arc<[(http::Method, MethodLabel)]>);

impl Default for KnownMethods {
    fn default() -> Self {
        KnownMethods(
            STANDARD_METHODS
                .iter()
                .map(|m| (m.clone(), MethodLabel::from_static(standard_label(m))))
                .collect(),
        )
    }
}

fn standard_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => OTHER_METHOD,
    }
}

impl KnownMethods {
    pub(crate) fn new(methods: impl IntoIterator<Item = http::Method>) -> KnownMethods {
        let mut list: Vec<(http::Method, MethodLabel)> = Vec::new();
        for m in methods {
            if list.iter().any(|(k, _)| *k == m) {
                continue;
            }
            let label = match standard_label(&m) {
                OTHER_METHOD => MethodLabel::shared(Arc::from(m.as_str())),
                s => MethodLabel::from_static(s),
            };
            list.push((m, label));
        }
        KnownMethods(list.into())
    }

    pub(crate) fn label(&self, method: &http::Method) -> MethodLabel {
        self.0
            .iter()
            .find(|(m, _)| m == method)
            .map_or(MethodLabel::from_static(OTHER_METHOD), |(_, l)| l.clone())
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, l)| l.as_str())
    }
}

/// Labels built from request data, interned per layer so that a client
/// talking to one server (or one gRPC method) builds each label once and
/// then only clones an `Arc`. Shared by every clone of the service (tower's
/// `Retry` clones its inner service per call), and read on every call by
/// both metrics scopes: without a lock (see [`Slots`]).
#[derive(Default)]
pub(crate) struct LabelCache {
    servers: Slots<Arc<str>>,
    /// The labels of the URI authorities seen, so that a repeated authority
    /// costs a compare of its bytes instead of a parse. Only authorities
    /// without user information are kept (never a secret).
    authorities: Slots<AuthorityLabel>,
    #[cfg(feature = "grpc")]
    grpc: Slots<Arc<str>>,
}

/// A URI authority (`host[:port]`, no user information) and the scheme's
/// default port, with the label they give.
struct AuthorityLabel {
    authority: Box<str>,
    default_port: Option<u16>,
    label: Arc<str>,
}

fn intern(
    list: &Slots<Arc<str>>,
    matches: impl Fn(&str) -> bool,
    build: impl FnOnce() -> String,
) -> Arc<str> {
    if let Some(hit) = list.iter().find(|s| matches(s)) {
        return hit.clone();
    }
    let built: Arc<str> = build().into();
    match list.find_or_push(|s| matches(s), built.clone()) {
        Some(kept) => kept.clone(),
        None => built,
    }
}

impl LabelCache {
    /// `host:port` from the URI, else from the `Host` header, else `fallback`.
    pub(crate) fn server<B>(
        &self,
        req: &http::Request<B>,
        fallback: Option<&ServerAddress>,
    ) -> ServerAddress {
        let uri = req.uri();
        if let Some(authority) = uri.authority() {
            let text = authority.as_str();
            let implied = default_port(uri.scheme_str());
            if let Some(hit) = self
                .authorities
                .iter()
                .find(|a| a.default_port == implied && *a.authority == *text)
            {
                return ServerAddress::shared(hit.label.clone());
            }
            let host = authority.host();
            if !host.is_empty() {
                let port = authority.port_u16().or(implied);
                let label = self.intern_server(host, port);
                if !text.contains('@') {
                    self.remember_authority(text, implied, &label);
                }
                return label;
            }
        }
        // The Host header's value, parsed as an authority: user information
        // and anything that is not host[:port] is rejected, never copied.
        let from_header = req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<http::uri::Authority>().ok())
            .filter(|a| !a.as_str().contains('@') && !a.host().is_empty());
        if let Some(auth) = from_header {
            let port = auth.port_u16().or_else(|| default_port(uri.scheme_str()));
            return self.intern_server(auth.host(), port);
        }
        fallback.cloned().unwrap_or_else(ServerAddress::unknown)
    }

    fn remember_authority(&self, text: &str, implied: Option<u16>, label: &ServerAddress) {
        let Label::Shared(shared) = &label.0 else {
            return;
        };
        self.authorities.find_or_push(
            |a| a.default_port == implied && *a.authority == *text,
            AuthorityLabel {
                authority: text.into(),
                default_port: implied,
                label: shared.clone(),
            },
        );
    }

    fn intern_server(&self, host: &str, port: Option<u16>) -> ServerAddress {
        ServerAddress::shared(intern(
            &self.servers,
            |s| same_address(s, host, port),
            || match port {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            },
        ))
    }

    /// `service/method` of a tonic request, interned.
    #[cfg(feature = "grpc")]
    pub(crate) fn grpc_method(&self, service: &str, method: &str) -> MethodLabel {
        MethodLabel::shared(intern(
            &self.grpc,
            |s| {
                s.len() == service.len() + 1 + method.len()
                    && s.starts_with(service)
                    && s.ends_with(method)
                    && s.as_bytes().get(service.len()) == Some(&b'/')
            },
            || format!("{service}/{method}"),
        ))
    }
}

fn default_port(scheme: Option<&str>) -> Option<u16> {
    match scheme {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    }
}

/// Whether `label` is `host:port` (or `host` when there is no port).
fn same_address(label: &str, host: &str, port: Option<u16>) -> bool {
    let Some(rest) = label.strip_prefix(host) else {
        return false;
    };
    match port {
        None => rest.is_empty(),
        Some(p) => rest
            .strip_prefix(':')
            .and_then(|digits| digits.parse::<u16>().ok())
            .is_some_and(|q| q == p && rest.len() > 1 && !rest[1..].starts_with('0')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::SLOTS;

    fn server_of(req: &http::Request<()>, fallback: Option<&str>) -> String {
        let fallback = fallback.map(|s| ServerAddress::shared(s.into()));
        LabelCache::default()
            .server(req, fallback.as_ref())
            .as_str()
            .to_owned()
    }

    #[test]
    fn server_address_is_host_and_port_never_path_query_or_userinfo() {
        let req = http::Request::get("https://user:pw@api.example.com/v1/chat?key=secret")
            .body(())
            .unwrap();
        assert_eq!(server_of(&req, None), "api.example.com:443");
        let req = http::Request::get("http://127.0.0.1:8080/x")
            .body(())
            .unwrap();
        assert_eq!(server_of(&req, None), "127.0.0.1:8080");
        let req = http::Request::get("http://[::1]:9/x").body(()).unwrap();
        assert_eq!(server_of(&req, None), "[::1]:9");
    }

    #[test]
    fn server_address_falls_back_to_host_header_then_label_then_unknown() {
        let req = http::Request::get("/v1/models")
            .header("host", "models.example:8443")
            .body(())
            .unwrap();
        assert_eq!(server_of(&req, Some("cfg:1")), "models.example:8443");
        let req = http::Request::get("/v1/models")
            .header("host", "u:sk-secret@evil")
            .body(())
            .unwrap();
        assert_eq!(server_of(&req, Some("cfg:1")), "cfg:1");
        let req = http::Request::get("/v1/models").body(()).unwrap();
        assert_eq!(server_of(&req, Some("cfg:1")), "cfg:1");
        assert_eq!(server_of(&req, None), "unknown");
    }

    #[test]
    fn interned_server_labels_are_reused_and_distinct_ports_are_not_confused() {
        let cache = LabelCache::default();
        let a = http::Request::get("http://h:80/").body(()).unwrap();
        let b = http::Request::get("http://h:8080/").body(()).unwrap();
        let x = cache.server(&a, None);
        let y = cache.server(&b, None);
        let z = cache.server(&a, None);
        assert_eq!((x.as_str(), y.as_str()), ("h:80", "h:8080"));
        assert_eq!(x, z);
        assert_eq!(cache.servers.iter().count(), 2);
        assert!(!same_address("h:080", "h", Some(80)));
        assert!(!same_address("hh:80", "h", Some(80)));
    }

    #[test]
    fn a_repeated_authority_reuses_its_label_and_the_scheme_decides_the_default_port() {
        let cache = LabelCache::default();
        let get = |uri: &str| {
            let req = http::Request::get(uri).body(()).unwrap();
            cache.server(&req, None)
        };
        let first = get("http://h/a");
        let again = get("http://h/b?q=1");
        let tls = get("https://h/a");
        assert_eq!((first.as_str(), tls.as_str()), ("h:80", "h:443"));
        assert_eq!(again, first);
        let (ServerAddress(Label::Shared(x)), ServerAddress(Label::Shared(y))) = (&first, &again)
        else {
            panic!("interned labels are shared");
        };
        assert!(Arc::ptr_eq(x, y));
        // `h:80` spelled out is another authority with the same label.
        assert_eq!(get("http://h:80/").as_str(), "h:80");
        assert_eq!(cache.authorities.iter().count(), 3);
        assert_eq!(cache.servers.iter().count(), 2);
    }

    #[test]
    fn the_cache_is_bounded_and_racing_writers_agree_on_one_label() {
        let cache = LabelCache::default();
        for i in 0..SLOTS + 8 {
            let req = http::Request::get(format!("http://h{i}:1/"))
                .body(())
                .unwrap();
            // Past the limit a label is still right, only not remembered.
            assert_eq!(cache.server(&req, None).as_str(), format!("h{i}:1"));
        }
        assert_eq!(cache.authorities.iter().count(), SLOTS);
        assert_eq!(cache.servers.iter().count(), SLOTS);

        let cache = LabelCache::default();
        let labels: Vec<ServerAddress> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let req = http::Request::get("http://racing:7/").body(()).unwrap();
                        cache.server(&req, None)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let ServerAddress(Label::Shared(first)) = &labels[0] else {
            panic!("interned labels are shared");
        };
        for label in &labels {
            let ServerAddress(Label::Shared(l)) = label else {
                panic!("interned labels are shared");
            };
            assert!(Arc::ptr_eq(first, l));
        }
        assert_eq!(cache.servers.iter().count(), 1);
    }

    #[test]
    fn an_authority_with_user_information_is_never_remembered() {
        let cache = LabelCache::default();
        for _ in 0..2 {
            let req = http::Request::get("https://user:sk-secret@h:8443/")
                .body(())
                .unwrap();
            assert_eq!(cache.server(&req, None).as_str(), "h:8443");
        }
        assert_eq!(cache.authorities.iter().count(), 0);
    }

    #[test]
    fn unknown_methods_become_other_and_known_ones_are_themselves() {
        let known = KnownMethods::default();
        assert_eq!(known.label(&http::Method::POST).as_str(), "POST");
        let odd = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(known.label(&odd).as_str(), OTHER_METHOD);
        let custom = KnownMethods::new([http::Method::GET, odd.clone()]);
        assert_eq!(custom.label(&odd).as_str(), "PURGE");
        assert_eq!(custom.label(&http::Method::POST).as_str(), OTHER_METHOD);
        assert_eq!(custom.names().collect::<Vec<_>>(), ["GET", "PURGE"]);
    }

    #[test]
    fn outcomes_label_and_reach() {
        assert_eq!(
            (Outcome::Ok.label(), Outcome::Ok.reach()),
            ("ok", Reach::Acknowledged)
        );
        let f = Outcome::Failed(FailureKind::ConnectRefused);
        assert_eq!((f.label(), f.reach()), ("connect_refused", Reach::NotSent));
    }
}
