//! [`Stack`]: sturdy's request flow as one `Layer`, with the guide's
//! defaults.
//!
//! ```text
//! FailureMetricsLayer::calls()      one outcome per logical call; creates the call's plan and context
//! [call_layer]                      yours (StackBuilder::call_layer): once per call; none by default
//! WorkloadTimeoutLayer              settles workload, profile and deadline in the plan; ready + total
//! RetryLayer                        settles safety and the classifier; backs off, honours hints, spends the budget
//! [attempt_layer]                   yours (StackBuilder::attempt_layer): once per attempt; none by default
//! FailureMetricsLayer::attempts()   one outcome per attempt, with its reach, judged by the plan's classifier
//! PacerLayer                        holds an attempt while the server's rate-limit headers say no room is left
//! AttemptTimeoutLayer               headers and read from the plan's profile; grpc-timeout for this attempt
//! inner client                      sturdy::client() or a tonic Channel
//! ```
//!
//! Why this order: the call's metrics sit outermost so that every call is
//! recorded once, whatever fails below, and read the workload and retry
//! story the layers below write into the `CallContext` when the call ends.
//! The workload layer sits above retry so that its deadline bounds every
//! attempt and every backoff sleep together; retry sits above the
//! per-attempt metrics and timeouts so that each attempt is timed and
//! recorded on its own.
//!
//! The two places for the user's own layers follow from the same order. A
//! call layer sits just under the call's metrics, so what it does (a span,
//! a log line, a header for the whole call) happens once per call, inside
//! the call's plan and context, and its time counts in the call's
//! duration. An attempt layer sits just under the retry layer, so it sees
//! every attempt's request, the retry's re-sent copies included (a tracing
//! span per attempt, a freshly refreshed token), and the attempt's metrics
//! and timeouts below it judge what actually went out.

use std::marker::PhantomData;

use sturdy_core::{BoxBody, InvalidProfile, Profile, Profiles, RequestHead, Workload};
use sturdy_metrics::{
    FailureMetrics, FailureMetricsLayer, InvalidServerLabel, Recorder, SnapshotRecorder,
};
use sturdy_rate::{Pacer, PacerLayer};
use sturdy_retry::{
    BudgetConfig, RetryConfigError, RetryLayer, RetryPolicy, RetryPolicyBuilder, RetrySafeRule,
    RetryService,
};
use sturdy_timeout::{
    AttemptTimeout, AttemptTimeoutLayer, ClassifyWorkload, PathClassifier, WorkloadTimeout,
    WorkloadTimeoutBuilder, WorkloadTimeoutLayer,
};
use tower_layer::{Identity, Layer};

/// Responses up to this size (by content-length, never SSE) are read in full
/// before they are handed over, so a connection cut mid-body is retried.
pub const DEFAULT_PREFETCH: u64 = 256 * 1024;

/// The whole sturdy stack as one `Layer`: metrics per call, workload
/// timeouts, retries, metrics per attempt, attempt timeouts. Build it with
/// [`Stack::builder`] (for `sturdy::client()`) or [`Stack::grpc_builder`]
/// (for a tonic `Channel`, feature `grpc`, on by default).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{Layer, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sturdy::BoxError> {
/// let stack = sturdy::Stack::builder().build()?;
/// let service = stack.layer(sturdy::client().build()?);
/// let snapshot = stack.recorder().clone();
/// # let _ = (service, snapshot);
/// # Ok(()) }
/// ```
///
/// `CL` and `AL` are the user's own layers, at the call and at the attempt
/// position ([`StackBuilder::call_layer`], [`StackBuilder::attempt_layer`]);
/// both are [`Identity`] unless set, and a stack without them is exactly
/// the stack without the two positions: same type, same code.
///
/// The user's layers are used as they are, with no adapter around them:
/// the retry layer and the metrics take any response body of `Bytes` whose
/// error converts into a `BoxError`, so a layer that changes the response
/// body (tower-http's `TraceLayer`) composes as it is, nothing is boxed
/// for it, and the default stack keeps its type and its cost. (Boxing
/// every attempt layer's body back into [`BoxBody`] would cost an
/// allocation per attempt and buy nothing the layers need.)
pub struct Stack<
    R = SnapshotRecorder,
    C = PathClassifier,
    E = BoxBody,
    CL = Identity,
    AL = Identity,
> {
    calls: FailureMetricsLayer<R>,
    call_layer: CL,
    workload: WorkloadTimeoutLayer<C>,
    retry: RetryLayer<E>,
    attempt_layer: AL,
    attempts: FailureMetricsLayer<R>,
    pacer: PacerLayer,
    attempt: AttemptTimeoutLayer,
    recorder: R,
}

/// The service a [`Stack`] makes around `S`.
///
/// With the user's layers at their default, [`Identity`], this is
/// `FailureMetrics<WorkloadTimeout<RetryService<FailureMetrics<Pacer<AttemptTimeout<S>>, R>, E>, C>, R>`.
pub type StackService<
    S,
    R = SnapshotRecorder,
    C = PathClassifier,
    E = BoxBody,
    CL = Identity,
    AL = Identity,
> = FailureMetrics<
    <CL as Layer<
        WorkloadTimeout<
            RetryService<<AL as Layer<FailureMetrics<Pacer<AttemptTimeout<S>>, R>>>::Service, E>,
            C,
        >,
    >>::Service,
    R,
>;

impl Stack {
    /// A builder with the guide's defaults, for `sturdy::client()`.
    pub fn builder() -> StackBuilder {
        StackBuilder::new(true)
    }
}

/// The gRPC stack ([`Stack::grpc_builder`]), named.
///
/// ```
/// let stack: sturdy::GrpcStack = sturdy::Stack::grpc_builder().build().unwrap();
/// # let _ = stack;
/// ```
#[cfg(feature = "grpc")]
pub type GrpcStack<R = SnapshotRecorder> = Stack<R, PathClassifier, tonic::body::Body>;

/// The service a [`GrpcStack`] makes around `S` (a tonic `Channel`):
/// `HealthClient<GrpcStackService<Channel>>` stores one.
#[cfg(feature = "grpc")]
pub type GrpcStackService<S, R = SnapshotRecorder> =
    StackService<S, R, PathClassifier, tonic::body::Body>;

#[cfg(feature = "grpc")]
impl Stack<SnapshotRecorder, PathClassifier, tonic::body::Body> {
    /// A builder with the guide's defaults, for a tonic `Channel` (whose
    /// connections cannot be observed per request: a `headers` timeout is
    /// then always `Unknown`, never `NotSent`).
    pub fn grpc_builder() -> StackBuilder<SnapshotRecorder, PathClassifier, tonic::body::Body> {
        StackBuilder::new(false)
    }
}

impl<R, C, E, CL, AL> Stack<R, C, E, CL, AL> {
    /// The recorder both metrics layers write to (a [`SnapshotRecorder`] by
    /// default: call `snapshot()` on it for a report).
    pub fn recorder(&self) -> &R {
        &self.recorder
    }

    /// The profiles in force.
    pub fn profiles(&self) -> &Profiles {
        self.workload.profiles()
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> &RetryPolicy {
        self.retry.policy()
    }

    /// The pacer: [`stats`](PacerLayer::stats) says which attempts it held
    /// and for how long, per server;
    /// [`PacerCollector`](sturdy_metrics::PacerCollector) exports the same
    /// to Prometheus, read at each scrape.
    ///
    /// ```
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let stack = sturdy::Stack::builder()
    ///     .recorder(sturdy::metrics::PrometheusRecorder::new(&mut registry))
    ///     .build()?;
    /// sturdy::metrics::PacerCollector::new(stack.pacer()).register(&mut registry);
    /// # Ok::<(), sturdy::StackError>(())
    /// ```
    pub fn pacer(&self) -> &PacerLayer {
        &self.pacer
    }
}

impl<R: Clone, C: Clone, E, CL: Clone, AL: Clone> Clone for Stack<R, C, E, CL, AL> {
    fn clone(&self) -> Self {
        Stack {
            calls: self.calls.clone(),
            call_layer: self.call_layer.clone(),
            workload: self.workload.clone(),
            retry: self.retry.clone(),
            attempt_layer: self.attempt_layer.clone(),
            attempts: self.attempts.clone(),
            pacer: self.pacer.clone(),
            attempt: self.attempt,
            recorder: self.recorder.clone(),
        }
    }
}

impl<R, C, E, CL, AL> std::fmt::Debug for Stack<R, C, E, CL, AL> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("profiles", self.workload.profiles())
            .field("retry", self.retry.policy())
            .finish_non_exhaustive()
    }
}

impl<S, R, C, E, CL, AL> Layer<S> for Stack<R, C, E, CL, AL>
where
    R: Recorder,
    C: Clone,
    AL: Layer<FailureMetrics<Pacer<AttemptTimeout<S>>, R>>,
    CL: Layer<WorkloadTimeout<RetryService<AL::Service, E>, C>>,
{
    type Service = StackService<S, R, C, E, CL, AL>;

    fn layer(&self, inner: S) -> Self::Service {
        let s = self.attempt.layer(inner);
        let s = self.pacer.layer(s);
        let s = self.attempts.layer(s);
        let s = self.attempt_layer.layer(s);
        let s = self.retry.service(s);
        let s = self.workload.layer(s);
        let s = self.call_layer.layer(s);
        self.calls.layer(s)
    }
}

/// An invalid [`Stack`] configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum StackError {
    /// A profile with a zero phase.
    Profile(InvalidProfile),
    /// An invalid retry policy.
    Retry(RetryConfigError),
    /// A server label that is not `host[:port]`.
    ServerLabel(InvalidServerLabel),
}

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StackError::Profile(e) => write!(f, "invalid stack: {e}"),
            StackError::Retry(e) => write!(f, "invalid stack: {e}"),
            StackError::ServerLabel(e) => write!(f, "invalid stack: {e}"),
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StackError::Profile(e) => Some(e),
            StackError::Retry(e) => Some(e),
            StackError::ServerLabel(e) => Some(e),
        }
    }
}

/// Builds a [`Stack`]. Every setting goes to the one layer that owns it:
/// profiles and the workload classifier to the workload timeout (the
/// attempt timeout reads the profile it settles), the retry policy (safety
/// rule included) to the retry layer, the recorder and the server label to
/// both metrics scopes.
///
/// The stack's defaults differ from the retry layer's own in one setting:
/// responses up to [`DEFAULT_PREFETCH`] bytes are read in full before they
/// are handed over. A policy builder handed to
/// [`retry_policy`](StackBuilder::retry_policy) keeps it unless it sets
/// its own.
pub struct StackBuilder<
    R = SnapshotRecorder,
    C = PathClassifier,
    E = BoxBody,
    CL = Identity,
    AL = Identity,
> {
    workload: WorkloadTimeoutBuilder<C>,
    capture_connection: bool,
    retry: RetryPolicyBuilder,
    recorder: R,
    server_label: Option<String>,
    call_layer: CL,
    attempt_layer: AL,
    pacing: bool,
    _body: PhantomData<fn(E)>,
}

/// The stack's own retry defaults, under whatever the user sets.
fn stack_retry_defaults() -> RetryPolicyBuilder {
    RetryPolicy::builder().prefetch_up_to(DEFAULT_PREFETCH)
}

impl<E> StackBuilder<SnapshotRecorder, PathClassifier, E> {
    fn new(capture_connection: bool) -> Self {
        StackBuilder {
            workload: WorkloadTimeoutLayer::builder(),
            capture_connection,
            retry: RetryPolicy::builder(),
            recorder: SnapshotRecorder::new(),
            server_label: None,
            call_layer: Identity::new(),
            attempt_layer: Identity::new(),
            pacing: true,
            _body: PhantomData,
        }
    }
}

impl<R, C, E, CL, AL> StackBuilder<R, C, E, CL, AL> {
    /// The builder with its typed parts passed through `recorder`,
    /// `workload`, `call_layer` and `attempt_layer`, every other setting
    /// kept: the one place the setters that change a type list the fields.
    fn retype<R2, C2, CL2, AL2>(
        self,
        recorder: impl FnOnce(R) -> R2,
        workload: impl FnOnce(WorkloadTimeoutBuilder<C>) -> WorkloadTimeoutBuilder<C2>,
        call_layer: impl FnOnce(CL) -> CL2,
        attempt_layer: impl FnOnce(AL) -> AL2,
    ) -> StackBuilder<R2, C2, E, CL2, AL2> {
        StackBuilder {
            workload: workload(self.workload),
            capture_connection: self.capture_connection,
            retry: self.retry,
            recorder: recorder(self.recorder),
            server_label: self.server_label,
            call_layer: call_layer(self.call_layer),
            attempt_layer: attempt_layer(self.attempt_layer),
            pacing: self.pacing,
            _body: PhantomData,
        }
    }

    /// Every workload's profile.
    pub fn profiles(mut self, profiles: Profiles) -> Self {
        self.workload = self.workload.profiles(profiles);
        self
    }

    /// One workload's profile.
    pub fn profile(mut self, workload: Workload, profile: Profile) -> Self {
        self.workload = self.workload.profile(workload, profile);
        self
    }

    /// The workload of a request that neither carries a `Workload`
    /// extension nor matches the classifier (default `Interactive`).
    pub fn default_workload(mut self, workload: Workload) -> Self {
        self.workload = self.workload.default_workload(workload);
        self
    }

    /// The retry policy: every setting `retry` was given replaces the one
    /// this builder had; the others stay (the stack's defaults included).
    pub fn retry_policy(mut self, retry: RetryPolicyBuilder) -> Self {
        self.retry = retry.or(self.retry);
        self
    }

    /// The retry budget's numbers.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.retry = self.retry.budget(budget);
        self
    }

    /// No retry budget: retries are bounded only by `max_retries`.
    pub fn no_budget(mut self) -> Self {
        self.retry = self.retry.no_budget();
        self
    }

    /// At most `n` retries per call.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.retry = self.retry.max_retries(n);
        self
    }

    /// Records into `recorder` (both scopes) instead of a fresh
    /// [`SnapshotRecorder`]; use `sturdy::metrics::Both` for two at once.
    pub fn recorder<R2>(self, recorder: R2) -> StackBuilder<R2, C, E, CL, AL> {
        self.retype(|_| recorder, |w| w, |cl| cl, |al| al)
    }

    /// Picks each request's workload with `classifier` when the request
    /// carries no `Workload` extension.
    pub fn classifier<C2: ClassifyWorkload>(
        self,
        classifier: C2,
    ) -> StackBuilder<R, C2, E, CL, AL> {
        self.map_workload_timeout(|b| b.classifier(classifier))
    }

    /// Which requests may be sent again after an attempt of unknown reach
    /// (the retry policy's one rule; default: idempotent methods, requests
    /// with an idempotency key, and those marked `RetrySafe`).
    pub fn retry_safe(mut self, rule: RetrySafeRule) -> Self {
        self.retry = self.retry.retry_safe(rule);
        self
    }

    /// The presets for OpenAI-compatible APIs ([`crate::openai`]): jobs
    /// (batches, fine-tuning) under any path prefix are
    /// [`Workload::Batch`], and every inference endpoint may be sent again
    /// after an attempt of unknown reach (a batch or an upload may not).
    ///
    /// ```
    /// let stack = sturdy::Stack::builder().openai_presets().build().unwrap();
    /// # let _ = stack;
    /// ```
    pub fn openai_presets(self) -> StackBuilder<R, crate::openai::EndpointClassifier, E, CL, AL> {
        self.retry_safe(crate::openai::retry_safe())
            .classifier(crate::openai::EndpointClassifier)
    }

    /// Also treats the requests `pick` chooses as safe to send again.
    pub fn retry_safe_when<F>(self, pick: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        self.retry_safe(RetrySafeRule::when(pick))
    }

    /// The `server_address` label for requests whose URI and `Host` header
    /// name no server (tonic requests above a `Channel`). It must be
    /// `host[:port]`: anything else makes `build` fail.
    pub fn server_label(mut self, label: impl Into<String>) -> Self {
        self.server_label = Some(label.into());
        self
    }

    /// Reaches the workload timeout layer's own builder.
    pub fn map_workload_timeout<C2>(
        self,
        f: impl FnOnce(WorkloadTimeoutBuilder<C>) -> WorkloadTimeoutBuilder<C2>,
    ) -> StackBuilder<R, C2, E, CL, AL> {
        self.retype(|r| r, f, |cl| cl, |al| al)
    }

    /// Reaches the retry policy's own builder.
    pub fn map_retry(mut self, f: impl FnOnce(RetryPolicyBuilder) -> RetryPolicyBuilder) -> Self {
        self.retry = f(self.retry);
        self
    }

    /// Adds `layer` at the attempt position: under the retry layer, above
    /// the attempt's metrics and timeouts. Its service runs once per
    /// attempt and sees each attempt's request, the copies the retry layer
    /// sends again included (each one fresh from the call's request: what
    /// the layer did to an earlier attempt is not carried over), so it is
    /// the place for a span per attempt or a token refreshed before every
    /// send. The attempt's metrics and timeouts below it judge what it
    /// sends.
    ///
    /// Called again, it adds another layer under the ones before, as
    /// `tower::ServiceBuilder` does: the first layer added is the
    /// outermost. The type becomes `tower_layer::Stack<L, AL>`.
    ///
    /// What the layer may change, and what it must keep:
    ///
    /// - the response body, freely (tower-http's `TraceLayer` wraps it):
    ///   the retry layer and the metrics take any body of `Bytes` whose
    ///   error converts into a `BoxError`, so nothing is boxed or mapped
    ///   for it, and a stack without an attempt layer pays nothing;
    /// - the request body type, not: the layer is handed
    ///   `http::Request<E>` (a [`BoxBody`] for `sturdy::client()`) and the
    ///   inner client takes that type. A layer that wraps the request body
    ///   needs it boxed again under it, e.g. with
    ///   `MapRequestLayer::new(|r: http::Request<_>| r.map(sturdy::boxed))`;
    /// - errors: any error that converts into a `BoxError` is taken, but
    ///   one passed on unchanged keeps its failure kind, which the retry
    ///   layer and the metrics read by downcasting;
    /// - the request's extensions, which carry the call's plan: pass them
    ///   on (every `tower` and `tower-http` layer does);
    /// - its service must be `Clone` (the retry layer keeps a clone per
    ///   call), and `Send` for the stack's futures to be.
    ///
    /// ```
    /// use tower::Layer;
    /// use tower::util::MapRequestLayer;
    /// # fn main() -> Result<(), sturdy::BoxError> {
    /// // A token read fresh before every attempt, retries included.
    /// let token = || http::HeaderValue::from_static("Bearer fresh");
    /// let stack = sturdy::Stack::builder()
    ///     .attempt_layer(MapRequestLayer::new(move |mut req: http::Request<sturdy::BoxBody>| {
    ///         req.headers_mut().insert(http::header::AUTHORIZATION, token());
    ///         req
    ///     }))
    ///     .attempt_layer(tower_http::trace::TraceLayer::new_for_http())
    ///     .build()?;
    /// let service = stack.layer(sturdy::client().build()?);
    /// # let _ = service;
    /// # Ok(()) }
    /// ```
    pub fn attempt_layer<L>(
        self,
        layer: L,
    ) -> StackBuilder<R, C, E, CL, tower_layer::Stack<L, AL>> {
        self.retype(
            |r| r,
            |w| w,
            |cl| cl,
            |al| tower_layer::Stack::new(layer, al),
        )
    }

    /// Adds `layer` at the call position: under the call's metrics, above
    /// the workload timeout. Its service runs once per call, whatever the
    /// retries below it do, with the call's plan and context already in the
    /// request's extensions; its time counts in the call's duration but not
    /// in the workload's deadline. The place for a span or a log line per
    /// call, or a header every attempt of the call shares.
    ///
    /// Called again, it adds another layer under the ones before (the first
    /// added is the outermost), as [`attempt_layer`](Self::attempt_layer)
    /// does, with the same rules: the response body may change, the
    /// request's extensions must be passed on, errors are best passed on
    /// unchanged, and its service must be `Clone`. The request body it is
    /// handed is the caller's own, and the retry layer below takes any
    /// body of `Bytes`.
    ///
    /// ```
    /// use tower::Layer;
    /// # fn main() -> Result<(), sturdy::BoxError> {
    /// let stack = sturdy::Stack::builder()
    ///     .call_layer(tower_http::trace::TraceLayer::new_for_http())
    ///     .build()?;
    /// let service = stack.layer(sturdy::client().build()?);
    /// # let _ = service;
    /// # Ok(()) }
    /// ```
    pub fn call_layer<L>(self, layer: L) -> StackBuilder<R, C, E, tower_layer::Stack<L, CL>, AL> {
        self.retype(
            |r| r,
            |w| w,
            |cl| tower_layer::Stack::new(layer, cl),
            |al| al,
        )
    }

    /// Whether to pace attempts by the server's rate-limit headers (default
    /// on). The pacer reads `x-ratelimit-*` (OpenAI-compatible),
    /// `anthropic-ratelimit-*` and the IETF `RateLimit` fields of every
    /// answer, and holds a new attempt while the server says no room is
    /// left, until its reset — never past the call's deadline: a reset
    /// beyond it fails the attempt at once as `rate_limit_hold`, never
    /// sent. It acts only on servers that send these headers; off, it is a
    /// branch per attempt.
    ///
    /// ```
    /// let stack = sturdy::Stack::builder().pacing(false).build().unwrap();
    /// assert!(stack.pacer().stats().servers.is_empty());
    /// ```
    pub fn pacing(mut self, on: bool) -> Self {
        self.pacing = on;
        self
    }

    /// Checks everything and builds the stack: a zero phase in any profile,
    /// an invalid retry policy (see `RetryPolicyBuilder::build`) or a bad
    /// server label is a [`StackError`].
    pub fn build(self) -> Result<Stack<R, C, E, CL, AL>, StackError>
    where
        R: Recorder + Clone,
    {
        let workload = self.workload.build().map_err(StackError::Profile)?;
        let attempt = AttemptTimeoutLayer::builder()
            .capture_connection(self.capture_connection)
            .build()
            .map_err(StackError::Profile)?;
        let policy = self
            .retry
            .or(stack_retry_defaults())
            .build()
            .map_err(StackError::Retry)?;
        let mut calls = FailureMetricsLayer::calls(self.recorder.clone());
        let mut attempts = FailureMetricsLayer::attempts(self.recorder.clone());
        if let Some(label) = &self.server_label {
            calls = calls.server_label(label).map_err(StackError::ServerLabel)?;
            attempts = attempts
                .server_label(label)
                .map_err(StackError::ServerLabel)?;
        }
        Ok(Stack {
            calls,
            call_layer: self.call_layer,
            workload,
            retry: RetryLayer::new(policy),
            attempt_layer: self.attempt_layer,
            attempts,
            pacer: if self.pacing {
                PacerLayer::new()
            } else {
                PacerLayer::off()
            },
            attempt,
            recorder: self.recorder,
        })
    }
}

impl<R, C, E, CL, AL> std::fmt::Debug for StackBuilder<R, C, E, CL, AL> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}
