//! [`FailureMetricsLayer`]: the layer's configuration, shared by every
//! service it builds.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::dimensions::{KnownMethods, LabelCache};
use crate::{FailureMetrics, Recorder, Scope, ServerAddress};

/// Records one outcome per logical call ([`FailureMetricsLayer::calls`]) or
/// per attempt ([`FailureMetricsLayer::attempts`]) into a [`Recorder`].
///
/// In sturdy's stack, `calls()` is outermost and `attempts()` sits under the
/// retry layer:
///
/// ```text
/// FailureMetricsLayer::calls(r)      one outcome per call; creates the CallContext
/// WorkloadTimeoutLayer
/// RetryLayer
/// FailureMetricsLayer::attempts(r)   one outcome per attempt, with its reach
/// AttemptTimeoutLayer
/// client
/// ```
///
/// The layer is a small `Clone` config; every service it builds shares one
/// `Arc` of it.
pub struct FailureMetricsLayer<R> {
    scope: Scope,
    recorder: Arc<R>,
    server_label: Option<ServerAddress>,
    known: KnownMethods,
    labels: Arc<LabelCache>,
}

/// A server label that is not `host[:port]` (or holds user information).
/// It does not repeat the label, which may hold a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidServerLabel;

impl fmt::Display for InvalidServerLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the server label must be host[:port], without user information")
    }
}

impl std::error::Error for InvalidServerLabel {}

/// What every service built by one `layer()` call shares: one `Arc`
/// increment per call gives a flight everything it records with.
pub(crate) struct Shared<R> {
    pub(crate) scope: Scope,
    pub(crate) recorder: Arc<R>,
    pub(crate) server_label: Option<ServerAddress>,
    pub(crate) known: KnownMethods,
    pub(crate) labels: Arc<LabelCache>,
}

impl<R: Recorder> FailureMetricsLayer<R> {
    /// One outcome per logical call. Creates the call's `CallContext` when
    /// the request carries none, and reads workload, attempts, retries,
    /// budget refusals and possibly-duplicated retries from it when the
    /// call ends.
    pub fn calls(recorder: R) -> Self {
        Self::new(Scope::Call, recorder)
    }

    /// One outcome per attempt; place it under the retry layer.
    pub fn attempts(recorder: R) -> Self {
        Self::new(Scope::Attempt, recorder)
    }

    fn new(scope: Scope, recorder: R) -> Self {
        FailureMetricsLayer {
            scope,
            recorder: Arc::new(recorder),
            server_label: None,
            known: KnownMethods::default(),
            labels: Arc::default(),
        }
    }

    /// The server address recorded when neither the URI's authority nor the
    /// `Host` header gives one (a tonic `Channel` sees only a path). It must
    /// parse as `host[:port]`; anything else, user information included, is
    /// an error that does not repeat the label (it may hold a secret).
    ///
    /// ```
    /// use sturdy_metrics::{FailureMetricsLayer, SnapshotRecorder};
    /// let layer = FailureMetricsLayer::calls(SnapshotRecorder::new());
    /// assert!(layer.clone().server_label("api.example:443").is_ok());
    /// assert!(layer.server_label("user:key@api.example").is_err());
    /// ```
    pub fn server_label(mut self, label: &str) -> Result<Self, InvalidServerLabel> {
        self.server_label = Some(parse_server_label(label)?);
        Ok(self)
    }

    /// The HTTP methods recorded as themselves; any other is `_OTHER`.
    /// Defaults to the nine standard methods. gRPC requests are labelled
    /// `service/method` from tonic's `GrpcMethod` instead (feature `grpc`).
    pub fn known_methods(mut self, methods: impl IntoIterator<Item = http::Method>) -> Self {
        self.known = KnownMethods::new(methods);
        self
    }

    /// The scope this layer records.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The recorder.
    pub fn recorder(&self) -> &R {
        &self.recorder
    }
}

fn parse_server_label(label: &str) -> Result<ServerAddress, InvalidServerLabel> {
    let address = label
        .parse::<http::uri::Authority>()
        .ok()
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
        .ok_or(InvalidServerLabel)?;
    Ok(ServerAddress::shared(Arc::from(address.as_str())))
}

impl<R> Clone for FailureMetricsLayer<R> {
    fn clone(&self) -> Self {
        FailureMetricsLayer {
            scope: self.scope,
            recorder: self.recorder.clone(),
            server_label: self.server_label.clone(),
            known: self.known.clone(),
            labels: self.labels.clone(),
        }
    }
}

impl<R> fmt::Debug for FailureMetricsLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureMetricsLayer")
            .field("scope", &self.scope)
            .field("server_label", &self.server_label)
            .field("known_methods", &self.known.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S, R: Recorder> Layer<S> for FailureMetricsLayer<R> {
    type Service = FailureMetrics<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        FailureMetrics::new(
            inner,
            Arc::new(Shared {
                scope: self.scope,
                recorder: self.recorder.clone(),
                server_label: self.server_label.clone(),
                known: self.known.clone(),
                labels: self.labels.clone(),
            }),
        )
    }
}
