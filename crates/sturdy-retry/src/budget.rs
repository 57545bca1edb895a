//! The retry budget: one per layer, shared by every clone of its services.
//!
//! Two rules, one lock (which a call's deposit takes only at the turn of
//! the window's slot, about once a second: see [`SharedBudget::deposit`]):
//!
//! - **The cap** (tower's `TpsBudget` accounting, over a sliding window):
//!   retries that failed may number `retry_ratio` times the calls made plus
//!   `min_per_sec` per second of the window. Each call deposits once, each
//!   retry withdraws once, and a retry that succeeds gives its withdrawal
//!   back: the cap bounds the *wasted* retries, the load a down server
//!   sees on top of its traffic.
//! - **Pacing** (a token bucket): a retry also takes a token. Tokens come
//!   from the calls made (`retry_ratio` each, but none during a failure
//!   streak: new calls probe the server themselves), from the floor
//!   (`min_per_sec` per second, halving every second of a failure streak,
//!   down to one per second), and hold at most `burst`. So the cap's
//!   reserve is not spent in the first hundred milliseconds of an outage:
//!   while nothing succeeds, retries trickle out as probes.
//!
//! A retry that finds no room may **wait** (patient budgets, the default),
//! bounded by the call's deadline: it checks again later, and goes as soon
//! as there is room — or at once when the server has answered a success
//! since it began to wait (the outage is over: a recovery lets every
//! waiting call through, each still within the cap). An impatient budget
//! refuses instead, as tower's does.
//!
//! Why (measured in BENCHMARKS.md, "Retry storms"): 1 000 callers against
//! a server down for 1 s used to spend the cap's 300 retries in the first
//! ~230 ms and give up; now about 20 probes go during the outage and every
//! other caller retries once after it. Against a 30 s outage the probes
//! cost ~0.05 attempts per call.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::RetryConfigError;

/// The numbers of a retry budget: over a sliding `window`, failed retries
/// may number `retry_ratio` times the calls made, plus `min_per_sec` per
/// second; retries are paced through a bucket of `burst` tokens; a
/// `patient` budget makes a retry wait for room (within the call's
/// deadline) instead of refusing it.
///
/// The default: tower's numbers (20 % of calls plus 10 retries per second
/// over 10 seconds), a burst of 10, patient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a deposit or withdrawal counts (1..=60 s).
    pub window: Duration,
    /// Retries allowed per second whatever the traffic.
    pub min_per_sec: u32,
    /// Retries allowed per call, as a fraction (0.2: one retry per five
    /// calls; from 0 to 10).
    pub retry_ratio: f32,
    /// Most retries sent at once before pacing holds them (1 to 1 000 000).
    pub burst: u32,
    /// Whether a retry without room waits for it (within the call's
    /// deadline) instead of being refused.
    pub patient: bool,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            window: Duration::from_secs(10),
            min_per_sec: 10,
            retry_ratio: 0.2,
            burst: 10,
            patient: true,
        }
    }
}

impl BudgetConfig {
    /// tower's `TpsBudget` behaviour: no pacing, no waiting (a retry beyond
    /// the cap is refused at once), and no refunds for retries that
    /// succeeded.
    pub fn impatient(self) -> BudgetConfig {
        BudgetConfig {
            patient: false,
            ..self
        }
    }

    pub(crate) fn validate(&self) -> Result<(), RetryConfigError> {
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(60) {
            return Err(RetryConfigError::BudgetWindow);
        }
        if !self.retry_ratio.is_finite() || !(0.0..=10.0).contains(&self.retry_ratio) {
            return Err(RetryConfigError::BudgetRatio);
        }
        // Kept far from any overflow of the window's sums.
        if self.min_per_sec > 1_000_000 {
            return Err(RetryConfigError::BudgetFloor);
        }
        if self.burst == 0 || self.burst > 1_000_000 {
            return Err(RetryConfigError::BudgetBurst);
        }
        Ok(())
    }
}

/// What the budget says to a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it.
    Now,
    /// No room yet: ask again at this instant (patient budgets).
    Later(Instant),
    /// No room, and the budget does not wait.
    Refused,
}

/// A waiting retry's ticket: what it had seen when it began to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    recoveries: u64,
    since: Instant,
}

impl Ticket {
    /// When the wait began.
    pub(crate) fn since(&self) -> Instant {
        self.since
    }
}

/// The slots of the sliding window, in the budget's units: a call adds
/// `deposit`, a retry takes `withdraw` (tower's integer scheme: no floats
/// in the sums).
struct Window {
    slots: [i64; 10],
    /// The slot being written.
    current: usize,
    /// When `current` began.
    began: Instant,
    slot_len: Duration,
    reserve: i64,
}

impl Window {
    fn advance(&mut self, now: Instant) {
        let mut elapsed = now.saturating_duration_since(self.began);
        if elapsed < self.slot_len {
            return;
        }
        let mut steps = 0;
        while elapsed >= self.slot_len && steps < self.slots.len() {
            self.current = (self.current + 1) % self.slots.len();
            self.slots[self.current] = 0;
            elapsed -= self.slot_len;
            steps += 1;
        }
        // After a long idle period every slot is cleared: start afresh.
        self.began = if elapsed >= self.slot_len {
            now
        } else {
            now - elapsed
        };
    }

    fn room(&self) -> i64 {
        self.slots
            .iter()
            .fold(self.reserve, |sum, s| sum.saturating_add(*s))
    }

    fn add(&mut self, amount: i64) {
        let slot = &mut self.slots[self.current];
        *slot = slot.saturating_add(amount);
    }
}

struct State {
    window: Window,
    /// Pacing tokens.
    tokens: f64,
    refilled: Instant,
    /// The start of the current failure streak (no success since).
    failing_since: Option<Instant>,
    /// Successes that ended a failure streak.
    recoveries: u64,
}

struct Inner {
    config: BudgetConfig,
    deposit: i64,
    withdraw: i64,
    state: Mutex<State>,
    /// Whether a failure streak is on (`failing_since` is set), readable
    /// without the lock: a first attempt's success outside a streak, the
    /// common case, changes nothing and takes neither lock nor clock.
    failing: AtomicBool,
    /// When the budget was made: the origin of `slot_ends`.
    origin: Instant,
    /// When the window's current slot ends, in nanoseconds after `origin`:
    /// a deposit before it goes to the pending sums below, without the lock.
    slot_ends: AtomicU64,
    /// Deposits made in the current slot and not yet added to it.
    pending: AtomicI64,
    /// How many of them earned a token (made outside a failure streak).
    pending_tokens: AtomicU64,
}

/// A live budget, shared by every clone (an `Arc`).
#[derive(Clone)]
pub(crate) struct SharedBudget(Arc<Inner>);

/// The first wait between two checks of a waiting retry; it doubles up to
/// [`MAX_RECHECK`].
const FIRST_RECHECK: Duration = Duration::from_millis(50);
const MAX_RECHECK: Duration = Duration::from_secs(1);

impl SharedBudget {
    /// `config` must have been validated.
    pub(crate) fn new(config: &BudgetConfig) -> SharedBudget {
        // tower's units: with a ratio r <= 1 a call deposits 1 and a retry
        // withdraws 1/r; above 1, 1000 and 1000/r.
        let (deposit, withdraw) = if config.retry_ratio == 0.0 {
            (0, 1)
        } else if config.retry_ratio <= 1.0 {
            (1, (1.0 / config.retry_ratio) as i64)
        } else {
            (1000, (1000.0 / config.retry_ratio) as i64)
        };
        let secs = i64::try_from(config.window.as_secs()).unwrap_or(60);
        let reserve = i64::from(config.min_per_sec)
            .saturating_mul(secs)
            .saturating_mul(withdraw);
        let now = Instant::now();
        SharedBudget(Arc::new(Inner {
            config: *config,
            deposit,
            withdraw,
            failing: AtomicBool::new(false),
            origin: now,
            // Published by the first deposit, which takes the lock.
            slot_ends: AtomicU64::new(0),
            pending: AtomicI64::new(0),
            pending_tokens: AtomicU64::new(0),
            state: Mutex::new(State {
                window: Window {
                    slots: [0; 10],
                    current: 0,
                    began: now,
                    slot_len: config.window / 10,
                    reserve,
                },
                tokens: f64::from(config.burst),
                refilled: now,
                failing_since: None,
                recoveries: 0,
            }),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // counts are still sound.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call began: its share goes to the window's current slot, and a
    /// token with it unless a failure streak is on (while nothing
    /// succeeds, new calls are probes themselves: they earn no retries
    /// until the streak ends).
    ///
    /// Without the lock: every deposit is added to the pending sums, which
    /// whoever takes the lock next adds to the slot before the window moves
    /// on ([`locked`](SharedBudget::locked)); the first deposit after the
    /// slot's end first takes the lock to move the window. So deposits
    /// still count in their own slot (one made as another call moves the
    /// window may count in the next), and the lock every call shared is
    /// taken about once a second.
    pub(crate) fn deposit(&self) {
        let inner = &*self.0;
        let now = sturdy_core::clock::now();
        if inner.offset(now) >= inner.slot_ends.load(Ordering::Acquire) {
            drop(self.locked(Some(now)));
        }
        inner.pending.fetch_add(inner.deposit, Ordering::Relaxed);
        if !inner.failing.load(Ordering::Relaxed) {
            inner.pending_tokens.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The state under its lock, with the pending deposits added to the
    /// slot they were made in and, when `now` is given, the window moved
    /// on to it (and its new slot's end published for the deposits).
    fn locked(&self, now: Option<Instant>) -> std::sync::MutexGuard<'_, State> {
        let inner = &*self.0;
        let mut s = self.state();
        let pending = inner.pending.swap(0, Ordering::Relaxed);
        if pending != 0 {
            s.window.add(pending);
        }
        let earned = inner.pending_tokens.swap(0, Ordering::Relaxed);
        if earned > 0 {
            let c = &inner.config;
            let tokens = s.tokens + earned as f64 * f64::from(c.retry_ratio);
            s.tokens = tokens.min(f64::from(c.burst));
        }
        if let Some(now) = now {
            s.window.advance(now);
            let ends = inner.offset(s.window.began + s.window.slot_len);
            inner.slot_ends.store(ends, Ordering::Release);
        }
        s
    }

    /// A ticket for a retry about to wait.
    pub(crate) fn ticket(&self) -> Ticket {
        let s = self.state();
        Ticket {
            recoveries: s.recoveries,
            since: Instant::now(),
        }
    }

    /// May a retry go now? `waiting` is the ticket of a retry that has
    /// already waited (`None` on its first ask).
    pub(crate) fn admit(&self, waiting: Option<Ticket>) -> Admission {
        let now = Instant::now();
        let inner = &*self.0;
        let c = &inner.config;
        let mut s = self.locked(Some(now));
        let capped = s.window.room() < inner.withdraw;
        if !c.patient {
            if capped {
                return Admission::Refused;
            }
            s.window.add(-inner.withdraw);
            return Admission::Now;
        }
        refill(&mut s, c, now);
        // The server answered a success since this retry began to wait:
        // the outage is over for it, pacing or not.
        let recovered = waiting.is_some_and(|t| t.recoveries != s.recoveries);
        if !capped && (recovered || s.tokens >= 1.0) {
            if !recovered {
                s.tokens -= 1.0;
            }
            s.window.add(-inner.withdraw);
            return Admission::Now;
        }
        let waited = waiting.map_or(Duration::ZERO, |t| now.saturating_duration_since(t.since));
        // Ask again sooner at first, then less often: a long outage costs
        // a waiting call one check a second.
        let recheck = FIRST_RECHECK
            .saturating_mul(1 + u32::try_from(waited.as_millis() / 100).unwrap_or(u32::MAX))
            .min(MAX_RECHECK);
        Admission::Later(now + recheck)
    }

    /// An attempt succeeded; `retry` when it was a retry (its withdrawal is
    /// given back: it was not wasted).
    pub(crate) fn succeeded(&self, retry: bool) {
        let inner = &*self.0;
        if !inner.config.patient || (!retry && !inner.failing.load(Ordering::Relaxed)) {
            return;
        }
        let now = Instant::now();
        let mut s = self.locked(Some(now));
        if retry {
            s.window.add(inner.withdraw);
        }
        if s.failing_since.take().is_some() {
            inner.failing.store(false, Ordering::Relaxed);
            s.recoveries = s.recoveries.wrapping_add(1);
        }
    }

    /// An attempt failed in a way a retry would follow.
    pub(crate) fn failed(&self) {
        if !self.0.config.patient {
            return;
        }
        let now = Instant::now();
        let mut s = self.locked(None);
        refill(&mut s, &self.0.config, now);
        s.failing_since.get_or_insert(now);
        self.0.failing.store(true, Ordering::Relaxed);
    }
}

impl Inner {
    /// `at` in nanoseconds after `origin` (0 before it, saturating at 584
    /// years): the scale of `slot_ends`.
    fn offset(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Adds the floor's tokens since the last refill: `min_per_sec` per second,
/// halving every second of a failure streak down to one per second (or
/// the floor, if lower).
fn refill(s: &mut State, c: &BudgetConfig, now: Instant) {
    let dt = now.saturating_duration_since(s.refilled).as_secs_f64();
    s.refilled = now;
    let floor = f64::from(c.min_per_sec);
    let rate = match s.failing_since {
        None => floor,
        Some(since) => {
            let streak = now.saturating_duration_since(since).as_secs_f64().min(60.0);
            (floor * 0.5f64.powf(streak)).max(floor.min(1.0))
        }
    };
    s.tokens = (s.tokens + rate * dt).min(f64::from(c.burst));
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.locked(None);
        f.debug_struct("SharedBudget")
            .field("config", &self.0.config)
            .field("room", &s.window.room())
            .field("tokens", &s.tokens)
            .field("failing", &s.failing_since.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(config: BudgetConfig) -> SharedBudget {
        config.validate().expect("valid");
        SharedBudget::new(&config)
    }

    /// Asks like a retry would, up to the first `Later`; how many went.
    fn drain(b: &SharedBudget) -> usize {
        let mut n = 0;
        while b.admit(None) == Admission::Now {
            n += 1;
            assert!(n < 100_000, "no bound");
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn an_impatient_budget_is_towers_cap() {
        let b = budget(BudgetConfig::default().impatient());
        for _ in 0..1000 {
            b.deposit();
        }
        // 10/s over 10 s plus 20 % of 1 000.
        let mut sent = 0;
        while b.admit(None) == Admission::Now {
            sent += 1;
        }
        assert_eq!(sent, 300);
        assert_eq!(b.admit(None), Admission::Refused);
        // Successes change nothing for it.
        b.succeeded(true);
        assert_eq!(b.admit(None), Admission::Refused);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_start_of_an_outage_only_the_burst_goes_then_probes_trickle() {
        let b = budget(BudgetConfig::default());
        for _ in 0..1000 {
            b.deposit();
        }
        for _ in 0..1000 {
            b.failed();
        }
        assert_eq!(drain(&b), 10, "the burst");
        // A second later: the floor's tokens, halved by the streak.
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = drain(&b);
        assert!((5..=10).contains(&second), "{second}");
        // Thirty seconds of failures: about one probe a second.
        let mut probes = 0;
        for _ in 0..29 {
            tokio::time::advance(Duration::from_secs(1)).await;
            b.failed();
            probes += drain(&b);
        }
        assert!(probes <= 40, "{probes} probes in 29 s");
        assert!(probes >= 20, "{probes} probes in 29 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_lets_every_waiting_retry_through_within_the_cap() {
        let b = budget(BudgetConfig::default());
        for _ in 0..1000 {
            b.deposit();
        }
        b.failed();
        drain(&b);
        let tickets: Vec<Ticket> = (0..500).map(|_| b.ticket()).collect();
        for t in &tickets {
            assert!(matches!(b.admit(Some(*t)), Admission::Later(_)));
        }
        // A probe succeeds: the outage is over.
        b.succeeded(true);
        let mut went = 0;
        for t in &tickets {
            if b.admit(Some(*t)) == Admission::Now {
                went += 1;
                // And each of them succeeds: its withdrawal comes back.
                b.succeeded(true);
            }
        }
        assert_eq!(went, 500);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_retries_stay_capped_and_refunds_restore_room() {
        let b = budget(BudgetConfig {
            burst: 1_000_000,
            ..BudgetConfig::default()
        });
        for _ in 0..1000 {
            b.deposit();
        }
        b.failed();
        // The cap: 300 wasted retries, then no more (tokens aside).
        assert_eq!(drain(&b), 300);
        let ticket = b.ticket();
        assert!(matches!(b.admit(Some(ticket)), Admission::Later(_)));
        // A retry that succeeded gives its room back.
        b.succeeded(true);
        assert_eq!(b.admit(Some(ticket)), Admission::Now);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_retries_check_less_often_as_they_wait() {
        let b = budget(BudgetConfig::default());
        b.failed();
        drain(&b);
        let t = b.ticket();
        let Admission::Later(first) = b.admit(Some(t)) else {
            panic!("room?")
        };
        tokio::time::advance(Duration::from_secs(30)).await;
        b.failed();
        drain(&b);
        let Admission::Later(later) = b.admit(Some(t)) else {
            panic!("room?")
        };
        let now = Instant::now();
        assert!(first - (now - Duration::from_secs(30)) <= Duration::from_millis(60));
        assert_eq!(later - now, MAX_RECHECK);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_after_its_length() {
        let b = budget(BudgetConfig {
            burst: 1_000_000,
            ..BudgetConfig::default()
        });
        b.failed();
        assert_eq!(drain(&b), 100, "the reserve alone");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(drain(&b), 100, "withdrawals older than the window are gone");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_made_without_the_lock_count_in_their_own_slot() {
        let b = budget(BudgetConfig::default().impatient());
        // A thousand calls in the first slot, none of which takes the lock.
        for _ in 0..1000 {
            b.deposit();
        }
        // Five seconds on: the first of 500 more moves the window.
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..500 {
            b.deposit();
        }
        // Eleven seconds in, the first thousand are out of the window and
        // the 500 are not: the reserve (500) and 500 deposits leave room
        // for 200 retries (each withdraws 5). Counted in the slot the
        // window was at when the lock was next taken, the first thousand
        // would leave room for 400.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(drain(&b), 200);
    }

    #[test]
    fn bad_numbers_are_refused() {
        for bad in [
            BudgetConfig {
                burst: 0,
                ..BudgetConfig::default()
            },
            BudgetConfig {
                retry_ratio: f32::NAN,
                ..BudgetConfig::default()
            },
            BudgetConfig {
                window: Duration::ZERO,
                ..BudgetConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
