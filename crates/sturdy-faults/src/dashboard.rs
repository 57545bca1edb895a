//! The server's own view of what happened, the counts a provider's dashboard
//! would show: requests received, responses by status, faults by kind.
//!
//! The server records into a [`Recorder`] as requests flow through it;
//! [`FaultServer::dashboard`](crate::FaultServer::dashboard) and
//! `GET /dashboard` both read a [`Dashboard`] snapshot. Requests for
//! `/dashboard` itself are never counted.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// A snapshot of the server's counts.
///
/// - `received` moves when a request head has been read.
/// - `responded[status]` moves when a response head is produced (before its
///   body is sent, so a `reset` counts as the `200` it started as).
/// - `faults[kind]` moves when a fault is chosen for a request, right after
///   its body has been read: `status` (an injected non-200 status), `delay`,
///   `stall`, `slow`, `reset`, `close`, `hostile`; `outage_dropped` counts
///   connections dropped when an outage starts, `idle_close` idle
///   connections closed as a request arrived on them (that request is not
///   `received`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Dashboard {
    /// Request heads read, excluding `/dashboard` requests.
    pub received: u64,
    /// Response heads produced, by status code (`"200"`, `"503"`, ...).
    pub responded: BTreeMap<String, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
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
    responded: BTreeMap<u16, u64>,
    faults: BTreeMap<&'static str, u64>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        // Counting never panics while holding the lock, but a poisoned count
        // is still the best count there is.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn received(&self) {
        self.lock().received += 1;
    }

    pub(crate) fn responded(&self, status: u16) {
        let mut maps = self.lock();
        *maps.responded.entry(status).or_default() += 1;
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
        }
    }
}
