//! The server's own view of what happened, the counts a provider's dashboard
//! would show: requests received, responses by status, faults by kind.
//!
//! The server records into a [`Recorder`] as requests flow through it;
//! [`FaultServer::dashboard`](crate::FaultServer::dashboard) and
//! `GET /dashboard` both read a [`Dashboard`] snapshot, and `GET /metrics`
//! renders the same requests as a Prometheus counter (the `metrics`
//! module). Requests for `/dashboard` and `/metrics` themselves are never
//! counted.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::metrics::Route;

/// A snapshot of the server's counts.
///
/// - `received` moves when a request head has been read.
/// - `responded[status]` moves when a response head is produced (before its
///   body is sent, so a `reset` counts as the `200` it started as).
/// - `faults[kind]` moves when a fault is applied to a request, right after
///   its body has been read (a fault that only shapes a normal answer is
///   not applied to a request the capacity mode or the rate limiter
///   refuses): `status` (an injected non-200 status), `delay`, `stall`,
///   `slow`, `reset`, `close`, `hostile`; `outage_dropped` counts
///   connections dropped when an outage starts, `idle_close` idle
///   connections closed as a request arrived on them (that request is not
///   `received`).
/// - `too_many_requests` moves with `responded["429"]`: every `429`
///   answered, whatever produced it (a scripted or drawn fault, the rate
///   limiter, the capacity mode).
/// - `rate_limited` counts the requests the rate limiter refused (its
///   `429`s), `over_capacity` those the capacity mode refused (its `429`s
///   or `503`s); neither counts as a fault.
///
/// The last three are absent from older dashboards' JSON and read as 0.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Dashboard {
    /// Request heads read, excluding `/dashboard` and `/metrics` requests.
    pub received: u64,
    /// Response heads produced, by status code (`"200"`, `"503"`, ...).
    pub responded: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// `429` response heads produced, whatever produced them.
    #[serde(default)]
    pub too_many_requests: u64,
    /// Requests the rate limiter refused
    /// ([`FaultServerBuilder::rate_limit`](crate::FaultServerBuilder::rate_limit)).
    #[serde(default)]
    pub rate_limited: u64,
    /// Requests the capacity mode refused
    /// ([`FaultServerBuilder::capacity`](crate::FaultServerBuilder::capacity)).
    #[serde(default)]
    pub over_capacity: u64,
}

impl Dashboard {
    /// The count for one status code, 0 when absent.
    pub fn responded(&self, status: u16) -> u64 {
        self.responded
            .get(&status.to_string())
            .copied()
            .unwrap_or(0)
    }

    /// The count for one fault kind, 0 when absent.
    pub fn faults(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }
}

/// The live counters behind [`Dashboard`]. One lock keeps a snapshot
/// consistent; it is held for one update, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    maps: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    received: u64,
    /// Received requests that are over, by route and the status answered
    /// (`None`: dropped without an answer).
    requests: BTreeMap<(Route, Option<u16>), u64>,
    responded: BTreeMap<u16, u64>,
    faults: BTreeMap<&'static str, u64>,
    too_many_requests: u64,
    rate_limited: u64,
    over_capacity: u64,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        // Counting never panics while holding the lock, but a poisoned count
        // is still the best count there is.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request received on `route`; the returned tally puts it on
    /// `/metrics` once, when it is answered or dropped.
    pub(crate) fn received(&self, route: Route) -> Received<'_> {
        self.lock().received += 1;
        Received {
            recorder: self,
            route,
            counted: false,
        }
    }

    /// Requests over, by route and status answered, for `/metrics`.
    pub(crate) fn requests(&self) -> BTreeMap<(Route, Option<u16>), u64> {
        self.lock().requests.clone()
    }

    fn request_over(&self, route: Route, code: Option<u16>) {
        *self.lock().requests.entry((route, code)).or_default() += 1;
    }

    pub(crate) fn responded(&self, status: u16) {
        let mut maps = self.lock();
        *maps.responded.entry(status).or_default() += 1;
        if status == 429 {
            maps.too_many_requests += 1;
        }
    }

    /// Counts a request the rate limiter refused.
    pub(crate) fn rate_limited(&self) {
        self.lock().rate_limited += 1;
    }

    /// Counts a request the capacity mode refused.
    pub(crate) fn over_capacity(&self) {
        self.lock().over_capacity += 1;
    }

    pub(crate) fn fault(&self, kind: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let mut maps = self.lock();
        *maps.faults.entry(kind).or_default() += n;
    }

    pub(crate) fn snapshot(&self) -> Dashboard {
        let maps = self.lock();
        Dashboard {
            received: maps.received,
            responded: maps
                .responded
                .iter()
                .map(|(status, n)| (status.to_string(), *n))
                .collect(),
            faults: maps
                .faults
                .iter()
                .map(|(kind, n)| ((*kind).to_owned(), *n))
                .collect(),
            too_many_requests: maps.too_many_requests,
            rate_limited: maps.rate_limited,
            over_capacity: maps.over_capacity,
        }
    }
}

/// One received request on its way to `/metrics`: counted once, with the
/// status of the response head produced for it ([`Received::answered`]), or
/// as unanswered (`code="none"`) when it is dropped without one: an injected
/// `close`, a request body that failed, or a handler dropped with its
/// connection (the client gave up, an outage).
#[derive(Debug)]
pub(crate) struct Received<'a> {
    recorder: &'a Recorder,
    route: Route,
    counted: bool,
}

impl Received<'_> {
    /// Counts the request as answered with `status`.
    pub(crate) fn answered(mut self, status: u16) {
        self.counted = true;
        self.recorder.request_over(self.route, Some(status));
    }
}

impl Drop for Received<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.recorder.request_over(self.route, None);
        }
    }
}
