//! The capacity mode: at most N chat completions in service at once, each
//! taking a service time, the rest refused at once.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::MAX_FAULT_MS;
use crate::spec::{self, SpecError};

/// Most requests a capacity may serve at once.
const MAX_CAPACITY: u64 = 1_000_000;

/// The default service time of a served request.
const DEFAULT_SERVICE_TIME: Duration = Duration::from_millis(50);

/// What the capacity mode answers a request beyond its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverCapacity {
    /// `429 Too Many Requests` (the default).
    #[default]
    TooManyRequests,
    /// `503 Service Unavailable`.
    ServiceUnavailable,
}

impl OverCapacity {
    /// The status answered.
    pub fn status(self) -> StatusCode {
        match self {
            OverCapacity::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            OverCapacity::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A capacity for [`FaultServerBuilder::capacity`](crate::FaultServerBuilder::capacity):
/// at most `n` chat completions in service at once, like a deployment with a
/// fixed number of replicas.
///
/// A request holds its slot from the moment it is received until its
/// response body has been fully sent (its last frame handed to the
/// connection) or dropped (the client went away). A request beyond `n` is
/// answered at once, before its body is read, with a `429` (the default) or
/// a `503` whose OpenAI-style body says the model is overloaded
/// (`"type":"server_error"`, `"code":null`: neither a rate limit nor a quota
/// error), without `x-ratelimit-*` headers and without `retry-after`. A
/// served request waits its service time (default 50 ms) before it is
/// answered, so capacity matters; the service time applies to chat
/// completions only, like the mode itself.
///
/// `n` must be 1 to 1 000 000 and the service time at most an hour, else
/// [`FaultServerBuilder::start`](crate::FaultServerBuilder::start) fails.
///
/// The spec (`--capacity`) is a comma list of `key=value`: `n` (required),
/// `over` (`429` or `503`, default `429`) and `service-ms` (milliseconds,
/// default 50).
///
/// ```
/// use std::time::Duration;
/// use sturdy_faults::{Capacity, OverCapacity};
///
/// let capacity: Capacity = "n=20,over=503,service-ms=80".parse().unwrap();
/// assert_eq!(
///     capacity,
///     Capacity::new(20)
///         .over(OverCapacity::ServiceUnavailable)
///         .service_time(Duration::from_millis(80))
/// );
/// assert!("n=0".parse::<Capacity>().is_err());
/// assert!("n=5,over=500".parse::<Capacity>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    n: usize,
    over: OverCapacity,
    service_time: Duration,
}

impl Capacity {
    /// At most `n` requests in service at once; a 50 ms service time and
    /// `429` beyond.
    pub fn new(n: usize) -> Capacity {
        Capacity {
            n,
            over: OverCapacity::default(),
            service_time: DEFAULT_SERVICE_TIME,
        }
    }

    /// What a request beyond the capacity gets.
    pub fn over(mut self, over: OverCapacity) -> Self {
        self.over = over;
        self
    }

    /// How long a served request waits before it is answered (default
    /// 50 ms).
    pub fn service_time(mut self, time: Duration) -> Self {
        self.service_time = time;
        self
    }

    /// Checks the values a builder may have been given.
    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        if !(1..=MAX_CAPACITY).contains(&(self.n as u64)) {
            return Err(SpecError::new(format!(
                "the capacity {} is not in 1..={MAX_CAPACITY}",
                self.n
            )));
        }
        if self.service_time > Duration::from_millis(MAX_FAULT_MS) {
            return Err(SpecError::new(format!(
                "the service time {:?} is longer than an hour",
                self.service_time
            )));
        }
        Ok(())
    }
}

impl FromStr for Capacity {
    type Err = SpecError;

    /// Parses `n=20,over=429,service-ms=50` (see [`Capacity`]).
    fn from_str(text: &str) -> Result<Capacity, SpecError> {
        let pairs = spec::pairs("capacity", text, &["n", "over", "service-ms"])?;
        let mut n = None;
        let mut over = OverCapacity::default();
        let mut service_time = DEFAULT_SERVICE_TIME;
        for (key, value) in pairs {
            match key.as_str() {
                "n" => n = Some(spec::whole(&key, value, 1, MAX_CAPACITY)?),
                "over" => {
                    over = match value {
                        "429" => OverCapacity::TooManyRequests,
                        "503" => OverCapacity::ServiceUnavailable,
                        _ => {
                            return Err(SpecError::new(format!(
                                "over={value:?} is neither 429 nor 503"
                            )));
                        }
                    }
                }
                _ => {
                    service_time = Duration::from_millis(spec::whole(&key, value, 0, MAX_FAULT_MS)?)
                }
            }
        }
        let n = n.ok_or_else(|| SpecError::new(format!("capacity spec {text:?} lacks n=N")))?;
        let capacity = Capacity::new(usize::try_from(n).unwrap_or(usize::MAX))
            .over(over)
            .service_time(service_time);
        capacity.validate()?;
        Ok(capacity)
    }
}

/// The live slots of one server.
#[derive(Debug)]
pub(crate) struct Slots {
    slots: Arc<Semaphore>,
    n: usize,
    over: OverCapacity,
    pub(crate) service_time: Duration,
}

/// A request's slot, free again when dropped.
pub(crate) type Slot = OwnedSemaphorePermit;

impl Slots {
    /// Free slots for a validated `capacity`.
    pub(crate) fn new(capacity: &Capacity) -> Slots {
        Slots {
            slots: Arc::new(Semaphore::new(capacity.n)),
            n: capacity.n,
            over: capacity.over,
            service_time: capacity.service_time,
        }
    }

    /// A slot, or `None` when all are taken.
    pub(crate) fn take(&self) -> Option<Slot> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// The status and body a request beyond the capacity gets.
    pub(crate) fn refusal(&self) -> (StatusCode, Bytes) {
        let body = json!({
            "error": {
                "message": format!(
                    "That model is currently overloaded with other requests (sturdy-faults \
                     serves at most {} at once). You can retry your request.",
                    self.n
                ),
                "type": "server_error",
                "param": null,
                "code": null,
            },
        });
        (self.over.status(), Bytes::from(body.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_capacities() {
        assert_eq!("n=3".parse::<Capacity>(), Ok(Capacity::new(3)));
        assert_eq!(
            " N = 7 , Over=503 , service-ms = 0 ".parse::<Capacity>(),
            Ok(Capacity::new(7)
                .over(OverCapacity::ServiceUnavailable)
                .service_time(Duration::ZERO))
        );
    }

    #[test]
    fn bad_specs_are_errors_not_panics() {
        for bad in [
            "",
            "n",
            "over=429",
            "n=0",
            "n=-1",
            "n=1.5",
            "n=NaN",
            "n=1000001",
            "n=99999999999999999999999",
            "n=5,n=6",
            "n=5,over=500",
            "n=5,over=",
            "n=5,service-ms=-1",
            "n=5,service-ms=3600001",
            "n=5,service-ms=inf",
            "n=5,size=3",
            "n=5,",
        ] {
            let parsed = bad.parse::<Capacity>();
            assert!(parsed.is_err(), "{bad:?} parsed as {parsed:?}");
        }
    }

    #[test]
    fn builder_values_are_validated() {
        assert!(Capacity::new(1).validate().is_ok());
        assert!(Capacity::new(0).validate().is_err());
        assert!(Capacity::new(usize::MAX).validate().is_err());
        assert!(
            Capacity::new(2)
                .service_time(Duration::from_secs(7200))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = Slots::new(&Capacity::new(2));
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
        let (status, body) = slots.refusal();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "server_error");
        assert!(body["error"]["code"].is_null());
    }
}
