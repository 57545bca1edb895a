//! What a pacer did, per server: see [`PacerStats`].

use std::time::Duration;

/// A snapshot of what a pacer did, per server (sorted by label). It names
/// servers only by `host:port`, never shows a header value, and costs an
/// allocation per server when taken (never on a request's path).
///
/// ```
/// use sturdy_rate::PacerLayer;
/// let layer = PacerLayer::new();
/// let stats = layer.stats();
/// assert!(stats.servers.is_empty());
/// assert_eq!(stats.held(), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacerStats {
    /// One entry per server seen, sorted by label.
    pub servers: Vec<ServerStats>,
}

impl PacerStats {
    /// The entry of one server, by its `host:port` label.
    pub fn server(&self, label: &str) -> Option<&ServerStats> {
        self.servers.iter().find(|s| s.server == label)
    }

    /// Attempts held, over every server.
    pub fn held(&self) -> u64 {
        self.servers.iter().map(|s| s.held).sum()
    }

    /// Calls failed at once for their deadline, over every server.
    pub fn failed_deadline(&self) -> u64 {
        self.servers.iter().map(|s| s.failed_deadline).sum()
    }
}

/// What a pacer did for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStats {
    /// The server, as `host:port` (the host lowercased; the port the URI's,
    /// else its scheme's default; just the host for a scheme with none).
    pub server: String,
    /// Attempts held (each counted once, however many times it waited).
    pub held: u64,
    /// Total time attempts spent held, counted when each hold ends (its
    /// attempt sent, failed, or dropped): a hold under way is not in it yet.
    pub held_time: Duration,
    /// Attempts failed at once with
    /// [`PacerError::ResetBeyondDeadline`](crate::PacerError::ResetBeyondDeadline):
    /// the server's reset came after the call's deadline.
    pub failed_deadline: u64,
    /// Attempts held right now.
    pub holding: u64,
    /// Attempts sent to this server whose response head has not come yet.
    pub in_flight: u64,
}
