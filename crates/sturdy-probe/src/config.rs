//! Command-line flags and the run they describe. Every bad flag is a usage
//! error (exit code 2) with a message that says what to do instead.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sturdy::Workload;
use sturdy_faults::Mix;

use crate::exposition::LabelFilter;

/// sturdy-probe: sends chat completions through sturdy's full stack and shows
/// what the layers saw: calls and attempts by outcome and reach, retries,
/// budget use, latency, and the client's counts beside the server's.
///
/// With no arguments it runs against an embedded fault server with a
/// realistic mix of failures. With --url it probes a real OpenAI-compatible
/// endpoint with the real default profiles (and spends real tokens: by
/// default only 20 requests with max_tokens 1).
#[derive(Debug, Parser)]
#[command(name = "sturdy-probe", version)]
pub struct Args {
    /// OpenAI-compatible base URL, e.g. <https://api.fireworks.ai/inference/v1>.
    /// Without it, an embedded fault server is used.
    #[arg(long, value_name = "BASE")]
    pub url: Option<String>,

    /// Name of the environment variable holding the API key (--url only).
    /// The key is never read from the command line and never printed.
    #[arg(long, value_name = "NAME", default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,

    /// Model to ask for (required with --url).
    #[arg(long)]
    pub model: Option<String>,

    /// Calls to make (default: 2000 embedded, 20 with --url).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,

    /// Calls in flight at once (default: 32 embedded, 4 with --url).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Workload of every call: its timeout profile.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Interactive)]
    pub workload: WorkloadArg,

    /// The header that carries the API key (--url only): `authorization`
    /// sends `Bearer KEY`; any other (`api-key` for Azure OpenAI,
    /// `x-api-key` for Anthropic-compatible servers) sends the key alone.
    #[arg(long, value_name = "NAME", default_value = "authorization")]
    pub api_key_header: String,

    /// The request field that limits the answer's length: reasoning models
    /// reject `max_tokens` and want `max_completion_tokens`.
    #[arg(long, value_enum, default_value_t = TokenField::MaxTokens)]
    pub token_field: TokenField,

    /// Stream every call (SSE). By default a quarter of embedded calls stream,
    /// and none with --url.
    #[arg(long)]
    pub stream: bool,

    /// Fault mix of the embedded server, e.g. "503=0.05,reset=0.02"
    /// (embedded server only; default: a realistic mix).
    #[arg(long, value_name = "SPEC")]
    pub mix: Option<String>,

    /// Seed of the embedded server's fault mix (embedded server only).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Serve live Prometheus metrics at http://ADDR/metrics while running
    /// (a loopback address, e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Keep serving --metrics-listen this many seconds after the run has
    /// ended and its report is printed, so a Prometheus scraping it sees
    /// the final counts (0 to 3600).
    #[arg(long, value_name = "SECS", requires = "metrics_listen")]
    pub metrics_linger: Option<u64>,

    /// Print one JSON object instead of the report (and no progress bar).
    #[arg(long)]
    pub json: bool,

    /// Give the embedded server a rate limit with OpenAI-style
    /// x-ratelimit-* headers, e.g. "rps=300" (see sturdy-faults --help):
    /// the stack's pacer then holds attempts by them.
    #[arg(long, value_name = "SPEC")]
    pub rate_limit: Option<String>,

    /// Give the embedded server a capacity, e.g. "n=20,service-ms=20"
    /// (429 beyond it; see sturdy-faults --help).
    #[arg(long, value_name = "SPEC")]
    pub capacity: Option<String>,

    /// Put the adaptive concurrency limit in the stack (attempt position).
    #[arg(long)]
    pub adaptive: bool,

    /// Instead of chat completions: submit one batch job and wait for it
    /// through restarts and failures (embedded: a job of ~12 s, two 2 s
    /// restarts and a burst of 503s while it runs; with --url: a two-line
    /// input file of 1-token requests to /v1/chat/completions, at the
    /// endpoint's batch price).
    #[arg(long)]
    pub batch: bool,

    /// The longest interval between polls of a batch job, in seconds
    /// (default: 3 embedded, 60 with --url).
    #[arg(long, value_name = "SECS")]
    pub poll_cap: Option<f64>,

    /// Scrape the server's own Prometheus metrics before and after the run
    /// and print the growth of one counter beside the client's attempts by
    /// reach. A URL (a provider's per-deployment metrics endpoint), or a
    /// path such as /metrics on the target's own scheme, host and port
    /// (the embedded fault server without --url). The API key goes along
    /// only to the --url's own scheme, host and port. A scrape that fails is
    /// reported, and the run goes on.
    #[arg(long, value_name = "URL")]
    pub server_metrics: Option<String>,

    /// The counter to sum: samples named NAME or NAME_total (default
    /// sturdy_faults_requests_total, the fault server's).
    #[arg(long, value_name = "NAME")]
    pub server_metrics_series: Option<String>,

    /// Sum only the samples whose labels all have these values, e.g.
    /// route=chat_completions (a label a sample lacks counts as empty).
    #[arg(long, value_name = "LABEL=VALUE[,LABEL=VALUE...]")]
    pub server_metrics_filter: Option<String>,

    /// Seconds to wait after the run before the second scrape, for a server
    /// that publishes its metrics on an interval (default 0).
    #[arg(long, value_name = "SECS")]
    pub server_metrics_wait: Option<f64>,
}

/// The default embedded mix: statuses with and without hints (one hint
/// longer than the demo's cap), a status never retried, a 429 out of quota
/// (never retried either), the overload family (529, 522), resets after
/// the first event and before it (a stream retried before its first
/// token), closes, delays and stalls. A short outage is scheduled
/// separately.
pub const DEFAULT_MIX: &str = "503=0.02,503;retry-after-ms=40=0.02,429;retry-after-ms=80=0.02,\
429=0.01,429;quota=true=0.005,500=0.01,502=0.01,504=0.01,529=0.005,522=0.005,400=0.003,\
503;retry-after-ms=5000=0.002,reset=0.01,reset;at=0=0.015,close=0.015,delay=0.02,stall=0.02";

/// `--workload`'s choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    /// Chat: 60 s.
    Interactive,
    /// Tool calls, multi-step: 30 min.
    Agentic,
    /// Long prompts, large models: 30 min.
    #[value(alias = "long_context")]
    LongContext,
    /// Job submission: 60 s.
    Batch,
}

impl From<WorkloadArg> for Workload {
    fn from(w: WorkloadArg) -> Workload {
        match w {
            WorkloadArg::Interactive => Workload::Interactive,
            WorkloadArg::Agentic => Workload::Agentic,
            WorkloadArg::LongContext => Workload::LongContext,
            WorkloadArg::Batch => Workload::Batch,
        }
    }
}

/// `--token-field`'s choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenField {
    /// `max_tokens`: most OpenAI-compatible servers.
    #[value(name = "max_tokens")]
    MaxTokens,
    /// `max_completion_tokens`: OpenAI's reasoning models.
    #[value(name = "max_completion_tokens")]
    MaxCompletionTokens,
}

impl TokenField {
    /// The JSON field's name.
    pub fn name(self) -> &'static str {
        match self {
            TokenField::MaxTokens => "max_tokens",
            TokenField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// Where the calls go.
#[derive(Debug)]
pub enum Target {
    /// An embedded fault server with this mix and seed.
    Embedded {
        /// The fault mix.
        mix: Mix,
        /// Its seed.
        seed: u64,
    },
    /// A real endpoint.
    Remote {
        /// Base URL, without a trailing slash.
        base: String,
        /// The API key (never printed; `Config`'s Debug hides it).
        api_key: Option<ApiKey>,
        /// The header that carries it.
        key_header: http::HeaderName,
    },
}

/// An API key: its Debug never shows it.
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A validated run.
#[derive(Debug)]
pub struct Config {
    /// Where to send.
    pub target: Target,
    /// Model name.
    pub model: String,
    /// Calls.
    pub requests: u64,
    /// In flight at once.
    pub concurrency: usize,
    /// Workload of every call.
    pub workload: Workload,
    /// The answer-length field.
    pub token_field: TokenField,
    /// Stream every call.
    pub stream_all: bool,
    /// Live metrics address.
    pub metrics_listen: Option<SocketAddr>,
    /// How long to keep serving them after the run.
    pub metrics_linger: Duration,
    /// JSON output.
    pub json: bool,
    /// The embedded server's rate limit.
    pub rate_limit: Option<sturdy_faults::RateLimit>,
    /// The embedded server's capacity.
    pub capacity: Option<sturdy_faults::Capacity>,
    /// Adaptive concurrency on.
    pub adaptive: bool,
    /// Batch mode, with the poll cap.
    pub batch: Option<Duration>,
    /// `--server-metrics` and its options.
    pub server_metrics: Option<ServerMetrics>,
}

/// The counter `--server-metrics-series` names by default.
pub const DEFAULT_SERVER_SERIES: &str = "sturdy_faults_requests_total";

/// Longest `--server-metrics-wait`, in seconds.
pub const MAX_SERVER_METRICS_WAIT: f64 = 600.0;

/// Where the server's metrics are scraped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAt {
    /// An absolute `http://` or `https://` URL.
    Url(http::Uri),
    /// A path (and query) on the target's own scheme, host and port.
    Path(String),
}

/// `--server-metrics`, validated.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    /// Where to scrape.
    pub at: MetricsAt,
    /// The counter's name.
    pub series: String,
    /// Which of its samples to sum (empty: all).
    pub filter: LabelFilter,
    /// How long to wait after the run before the second scrape.
    pub wait: Duration,
}

impl ServerMetrics {
    /// Checks the `--server-metrics*` flags (`None` when none is given).
    fn from_args(args: &Args) -> Result<Option<ServerMetrics>, String> {
        let Some(location) = &args.server_metrics else {
            if args.server_metrics_series.is_some()
                || args.server_metrics_filter.is_some()
                || args.server_metrics_wait.is_some()
            {
                return Err("--server-metrics-series, --server-metrics-filter and \
                     --server-metrics-wait apply with --server-metrics URL only"
                    .into());
            }
            return Ok(None);
        };
        if args.batch {
            return Err("--server-metrics applies to chat completion runs, not --batch".into());
        }
        let at = if location.starts_with('/') {
            location
                .parse::<http::uri::PathAndQuery>()
                .map_err(|e| format!("--server-metrics {location:?}: not a path: {e}"))?;
            MetricsAt::Path(location.clone())
        } else {
            let uri: http::Uri = location
                .parse()
                .map_err(|e| format!("--server-metrics {location:?}: {e}"))?;
            match (uri.scheme_str(), uri.authority()) {
                (Some("http" | "https"), Some(authority)) if !authority.as_str().contains('@') => {}
                (Some("http" | "https"), Some(_)) => {
                    return Err(
                        "--server-metrics: credentials in the URL are not supported \
                         (the API key goes along to the --url's own host)"
                            .into(),
                    );
                }
                _ => {
                    return Err(format!(
                        "--server-metrics {location:?}: expected an http:// or https:// URL, \
                         or a path such as /metrics on the target's host"
                    ));
                }
            }
            MetricsAt::Url(uri)
        };
        let series = args
            .server_metrics_series
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVER_SERIES.to_owned());
        if !crate::exposition::is_metric_name(&series) {
            return Err(format!(
                "--server-metrics-series {series:?}: not a metric name \
                 (letters, digits, _ and :, not starting with a digit)"
            ));
        }
        let filter = match &args.server_metrics_filter {
            Some(spec) => spec
                .parse()
                .map_err(|e| format!("--server-metrics-filter {spec:?}: {e}"))?,
            None => LabelFilter::default(),
        };
        let wait = args.server_metrics_wait.unwrap_or(0.0);
        if !(0.0..=MAX_SERVER_METRICS_WAIT).contains(&wait) {
            return Err(format!(
                "--server-metrics-wait {wait}: expected 0 to {MAX_SERVER_METRICS_WAIT} seconds"
            ));
        }
        Ok(Some(ServerMetrics {
            at,
            series,
            filter,
            wait: Duration::from_secs_f64(wait),
        }))
    }
}

/// Longest run the flags may ask for.
pub const MAX_REQUESTS: u64 = 10_000_000;
/// Most calls in flight.
pub const MAX_CONCURRENCY: usize = 10_000;
/// The demo's time scale, printed at the top.
pub const EMBEDDED_HINT: Duration = Duration::from_millis(1200);

impl Config {
    /// Checks the flags against each other. `env` reads an environment
    /// variable (injected so tests need not touch the process environment).
    pub fn from_args(args: Args, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let workload = Workload::from(args.workload);
        let server_metrics = ServerMetrics::from_args(&args)?;
        if let Some(addr) = args.metrics_listen
            && !addr.ip().is_loopback()
        {
            return Err(format!(
                "--metrics-listen {addr}: only loopback addresses are served (try 127.0.0.1:{})",
                addr.port()
            ));
        }
        let target = match &args.url {
            Some(url) => {
                if args.mix.is_some() || args.seed.is_some() {
                    return Err(
                        "--mix and --seed apply to the embedded server only; drop them with --url"
                            .into(),
                    );
                }
                let uri: http::Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
                match uri.scheme_str() {
                    Some("http" | "https") if uri.host().is_some() => {}
                    _ => {
                        return Err(format!(
                            "--url {url:?}: expected an http:// or https:// base URL"
                        ));
                    }
                }
                if args.model.is_none() {
                    return Err("--model is required with --url (the endpoint's model name)".into());
                }
                let key_header = http::HeaderName::from_bytes(args.api_key_header.as_bytes())
                    .map_err(|_| {
                        format!(
                            "--api-key-header {:?}: not a header name (try authorization, api-key or x-api-key)",
                            args.api_key_header
                        )
                    })?;
                Target::Remote {
                    base: url.trim_end_matches('/').to_owned(),
                    api_key: env(&args.api_key_env).filter(|k| !k.is_empty()).map(ApiKey),
                    key_header,
                }
            }
            None => {
                let spec = args.mix.as_deref().unwrap_or(DEFAULT_MIX);
                let mix: Mix = spec.parse().map_err(|e| format!("--mix: {e}"))?;
                Target::Embedded {
                    mix,
                    seed: args.seed.unwrap_or(7),
                }
            }
        };
        let remote = matches!(target, Target::Remote { .. });
        let requests = args.requests.unwrap_or(if remote { 20 } else { 2000 });
        if requests == 0 || requests > MAX_REQUESTS {
            return Err(format!(
                "--requests {requests}: expected 1 to {MAX_REQUESTS}"
            ));
        }
        let concurrency = args.concurrency.unwrap_or(if remote { 4 } else { 32 });
        if concurrency == 0 || concurrency > MAX_CONCURRENCY {
            return Err(format!(
                "--concurrency {concurrency}: expected 1 to {MAX_CONCURRENCY}"
            ));
        }
        let batch = match (args.batch, args.poll_cap) {
            (false, Some(_)) => return Err("--poll-cap applies to --batch only".into()),
            (false, None) => None,
            (true, cap) => {
                let default = if remote { 60.0 } else { 3.0 };
                let cap = cap.unwrap_or(default);
                if !(0.1..=3600.0).contains(&cap) {
                    return Err(format!("--poll-cap {cap}: expected 0.1 to 3600 seconds"));
                }
                Some(Duration::from_secs_f64(cap))
            }
        };
        Ok(Config {
            batch,
            target,
            model: args.model.unwrap_or_else(|| "sturdy-demo".to_owned()),
            requests,
            concurrency,
            workload,
            token_field: args.token_field,
            stream_all: args.stream,
            rate_limit: match &args.rate_limit {
                None => None,
                Some(_) if remote => {
                    return Err("--rate-limit applies to the embedded server only".into());
                }
                Some(spec) => Some(
                    spec.parse()
                        .map_err(|e| format!("--rate-limit {spec}: {e}"))?,
                ),
            },
            capacity: match &args.capacity {
                None => None,
                Some(_) if remote => {
                    return Err("--capacity applies to the embedded server only".into());
                }
                Some(spec) => Some(
                    spec.parse()
                        .map_err(|e| format!("--capacity {spec}: {e}"))?,
                ),
            },
            adaptive: args.adaptive,
            metrics_listen: args.metrics_listen,
            metrics_linger: match args.metrics_linger {
                Some(secs) if secs > 3600 => {
                    return Err(format!(
                        "--metrics-linger {secs}: expected 0 to 3600 seconds"
                    ));
                }
                secs => Duration::from_secs(secs.unwrap_or(0)),
            },
            json: args.json,
            server_metrics,
        })
    }

    /// Whether call number `i` streams.
    pub fn streams(&self, i: u64) -> bool {
        match self.target {
            _ if self.stream_all => true,
            Target::Embedded { .. } => i % 4 == 3,
            Target::Remote { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("sturdy-probe").chain(argv.iter().copied()))
                .map_err(|e| e.to_string())?;
        Config::from_args(args, |name| {
            (name == "OPENAI_API_KEY").then(|| "sk-sturdy-canary".to_owned())
        })
    }

    #[test]
    fn no_arguments_is_the_embedded_demo() {
        let c = parse(&[]).unwrap();
        assert!(matches!(c.target, Target::Embedded { seed: 7, .. }));
        assert_eq!(
            (c.requests, c.concurrency, c.workload),
            (2000, 32, Workload::Interactive)
        );
        assert_eq!((0..8).filter(|i| c.streams(*i)).count(), 2);
    }

    #[test]
    fn a_url_spends_little_by_default_and_hides_the_key() {
        let c = parse(&["--url", "https://api.example.test/v1/", "--model", "m"]).unwrap();
        assert_eq!((c.requests, c.streams(0)), (20, false));
        match &c.target {
            Target::Remote {
                base,
                api_key,
                key_header,
            } => {
                assert_eq!(base, "https://api.example.test/v1");
                assert_eq!(key_header, "authorization");
                assert_eq!(
                    api_key.as_ref().map(|k| k.0.as_str()),
                    Some("sk-sturdy-canary")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("sk-sturdy-canary"));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for argv in [
            &["--workload", "nap"][..],
            &["--requests", "0"],
            &["--concurrency", "0"],
            &["--mix", "503=2"],
            &["--url", "ftp://x", "--model", "m"],
            &["--url", "https://x.test"],
            &["--url", "https://x.test", "--model", "m", "--seed", "1"],
            &[
                "--url",
                "https://x.test",
                "--model",
                "m",
                "--api-key-header",
                "bad header",
            ],
            &["--token-field", "max_output"],
            &["--poll-cap", "2"],
            &["--batch", "--poll-cap", "0"],
            &["--batch", "--poll-cap", "NaN"],
            &["--metrics-listen", "0.0.0.0:9464"],
            &["--metrics-linger", "5"],
            &["--rate-limit", "rps=nope"],
            &["--capacity", "n=0"],
            &[
                "--metrics-listen",
                "127.0.0.1:0",
                "--metrics-linger",
                "4000",
            ],
            &["--requests", "many"],
            &[
                "--server-metrics",
                "/metrics",
                "--server-metrics-filter",
                "route",
            ],
            &[
                "--server-metrics",
                "/metrics",
                "--server-metrics-filter",
                "",
            ],
            &[
                "--server-metrics",
                "/metrics",
                "--server-metrics-filter",
                "a=1,,b=2",
            ],
            &[
                "--server-metrics",
                "/metrics",
                "--server-metrics-series",
                "bad-name",
            ],
            &[
                "--server-metrics",
                "/metrics",
                "--server-metrics-wait",
                "-1",
            ],
            &[
                "--server-metrics",
                "/metrics",
                "--server-metrics-wait",
                "NaN",
            ],
            &["--server-metrics", "ftp://x.test/metrics"],
            &["--server-metrics", "metrics"],
            &["--server-metrics", "https://user:pw@x.test/metrics"],
            &["--server-metrics", "/metrics", "--batch"],
            &["--server-metrics-filter", "route=models"],
            &["--server-metrics-series", "x"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn server_metrics_take_a_url_or_a_path_and_default_to_the_fault_servers_counter() {
        let c = parse(&[]).unwrap();
        assert!(c.server_metrics.is_none());
        let c = parse(&["--server-metrics", "/metrics"]).unwrap();
        let sm = c.server_metrics.unwrap();
        assert_eq!(sm.at, MetricsAt::Path("/metrics".into()));
        assert_eq!(sm.series, "sturdy_faults_requests_total");
        assert_eq!(sm.filter, LabelFilter::default());
        assert_eq!(sm.wait, Duration::ZERO);
        let c = parse(&[
            "--url",
            "https://api.example.test/inference/v1",
            "--model",
            "m",
            "--server-metrics",
            "https://api.example.test/v1/accounts/a/metrics",
            "--server-metrics-series",
            "requests",
            "--server-metrics-filter",
            "deployment=d1,code=\"200\"",
            "--server-metrics-wait",
            "45",
        ])
        .unwrap();
        let sm = c.server_metrics.unwrap();
        assert!(matches!(sm.at, MetricsAt::Url(ref u) if u.path() == "/v1/accounts/a/metrics"));
        assert_eq!(sm.series, "requests");
        assert_eq!(sm.filter.to_string(), r#"deployment="d1",code="200""#);
        assert_eq!(sm.wait, Duration::from_secs(45));
    }
}
