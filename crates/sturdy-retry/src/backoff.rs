//! Backoff: how long to wait before the n-th retry when the server gave no
//! hint. The guide's formula is the default; the other strategies are the
//! usual ones from AWS's "exponential backoff and jitter" and gRPC. Every
//! strategy is bounded by the policy's cap on one delay.

use std::time::Duration;

use crate::RetryConfigError;

/// A backoff strategy. `n` counts retries from 0 (the first retry waits
/// `base · 2^0` in the guide's formula); `cap` bounds every delay. Every
/// strategy takes one uniform random number in `[0, 1)` per delay, given by
/// the caller, so a delay is a plain function of its inputs.
///
/// ```
/// use std::time::Duration;
/// use sturdy_retry::Backoff;
/// let guide = Backoff::default();
/// let cap = Duration::from_secs(60);
/// // 1 s · 2^2 plus up to 1 s of jitter: here, a quarter of it.
/// assert_eq!(guide.delay(2, Duration::ZERO, cap, 0.25), Duration::from_millis(4250));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The guide's formula: `base · 2^n + uniform(0, jitter)`. The jitter
    /// must be at most the policy's cap on one delay.
    Guide {
        /// The first retry's delay before jitter.
        base: Duration,
        /// The most jitter added (the guide's 1 s).
        jitter: Duration,
    },
    /// "Full jitter": `uniform(0, base · 2^n)`.
    FullJitter {
        /// The first retry's upper bound.
        base: Duration,
    },
    /// "Equal jitter": half of `base · 2^n`, plus `uniform(0, half)`.
    EqualJitter {
        /// The first retry's upper bound.
        base: Duration,
    },
    /// "Decorrelated jitter": `uniform(base, 3 · previous delay)`, the
    /// first "previous" delay being `base`.
    Decorrelated {
        /// The smallest delay, and the first "previous" one.
        base: Duration,
    },
    /// gRPC's connection backoff: `base · multiplier^n`, then ±20 %.
    GrpcStyle {
        /// The first retry's delay before jitter.
        base: Duration,
        /// Growth per retry (gRPC uses 1.6).
        multiplier: f64,
    },
}

impl Default for Backoff {
    /// The guide's formula with base 1 s and up to 1 s of jitter.
    fn default() -> Self {
        Backoff::Guide {
            base: Duration::from_secs(1),
            jitter: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The guide's formula with `base` and up to `jitter` added.
    pub fn guide(base: Duration, jitter: Duration) -> Backoff {
        Backoff::Guide { base, jitter }
    }

    /// The strategy's base delay.
    pub fn base(&self) -> Duration {
        match *self {
            Backoff::Guide { base, .. }
            | Backoff::FullJitter { base }
            | Backoff::EqualJitter { base }
            | Backoff::Decorrelated { base }
            | Backoff::GrpcStyle { base, .. } => base,
        }
    }

    pub(crate) fn validate(&self, cap: Duration) -> Result<(), RetryConfigError> {
        let base = self.base();
        if base.is_zero() {
            return Err(RetryConfigError::ZeroBase);
        }
        if cap < base {
            return Err(RetryConfigError::CapBelowBase);
        }
        if let Backoff::Guide { jitter, .. } = *self
            && jitter > cap
        {
            return Err(RetryConfigError::JitterAboveCap);
        }
        if let Backoff::GrpcStyle { multiplier, .. } = *self
            && !(multiplier.is_finite() && (1.0..=100.0).contains(&multiplier))
        {
            return Err(RetryConfigError::InvalidFactor(
                "the gRPC backoff multiplier",
            ));
        }
        Ok(())
    }

    /// The delay before retry `n` (from 0), given the previous delay (used by
    /// the decorrelated strategy; pass `Duration::ZERO` before the first)
    /// and `uniform`, a random number in `[0, 1)` (clamped into it), never
    /// more than `cap`.
    pub fn delay(&self, n: u32, previous: Duration, cap: Duration, uniform: f64) -> Duration {
        let u = if uniform.is_nan() {
            0.0
        } else {
            uniform.clamp(0.0, 1.0)
        };
        let capf = cap.as_secs_f64();
        let exp = |base: Duration, factor: f64| {
            // powi saturates to infinity, and min() then picks the cap.
            (base.as_secs_f64() * factor.powi(n.min(i32::MAX as u32) as i32)).min(capf)
        };
        let secs = match *self {
            Backoff::Guide { base, jitter } => exp(base, 2.0) + u * jitter.as_secs_f64(),
            Backoff::FullJitter { base } => u * exp(base, 2.0),
            Backoff::EqualJitter { base } => {
                let half = exp(base, 2.0) / 2.0;
                half + u * half
            }
            Backoff::Decorrelated { base } => {
                let lo = base.as_secs_f64();
                // Before the first retry the "previous" delay is the base.
                let prev = if previous.is_zero() { base } else { previous };
                let hi = (prev.as_secs_f64() * 3.0).max(lo);
                lo + u * (hi - lo)
            }
            Backoff::GrpcStyle { base, multiplier } => exp(base, multiplier) * (0.8 + 0.4 * u),
        };
        Duration::try_from_secs_f64(secs.min(capf)).unwrap_or(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const SAMPLES: usize = 10_000;
    const CAP: Duration = Duration::from_secs(60);

    /// Samples retry `n` 10 000 times; checks every delay lies in `lo..=hi`
    /// and the mean is within 5 % of `mean`.
    fn check(b: Backoff, n: u32, prev: Duration, lo: f64, hi: f64, mean: f64) {
        let mut rng = SmallRng::seed_from_u64(0x5eed + u64::from(n));
        let mut sum = 0.0;
        for _ in 0..SAMPLES {
            let d = b.delay(n, prev, CAP, rng.random()).as_secs_f64();
            assert!(
                d >= lo - 1e-9 && d <= hi + 1e-9,
                "{b:?} n={n}: {d} outside {lo}..={hi}"
            );
            sum += d;
        }
        let got = sum / SAMPLES as f64;
        assert!(
            (got - mean).abs() <= 0.05 * mean,
            "{b:?} n={n}: mean {got}, theory {mean}"
        );
    }

    #[test]
    fn guide_formula_stays_in_bounds_and_mean_matches_theory() {
        for n in 0..5 {
            let t = 2f64.powi(n as i32);
            check(Backoff::default(), n, Duration::ZERO, t, t + 1.0, t + 0.5);
        }
    }

    #[test]
    fn full_jitter_stays_in_bounds_and_mean_matches_theory() {
        let b = Backoff::FullJitter {
            base: Duration::from_secs(1),
        };
        for n in 0..5 {
            let t = 2f64.powi(n as i32);
            check(b, n, Duration::ZERO, 0.0, t, t / 2.0);
        }
    }

    #[test]
    fn equal_jitter_stays_in_bounds_and_mean_matches_theory() {
        let b = Backoff::EqualJitter {
            base: Duration::from_secs(1),
        };
        for n in 0..5 {
            let t = 2f64.powi(n as i32);
            check(b, n, Duration::ZERO, t / 2.0, t, 0.75 * t);
        }
    }

    #[test]
    fn decorrelated_jitter_stays_in_bounds_and_mean_matches_theory() {
        let b = Backoff::Decorrelated {
            base: Duration::from_secs(1),
        };
        for prev in [1.0, 2.5, 7.0] {
            let p = Duration::from_secs_f64(prev);
            check(b, 1, p, 1.0, 3.0 * prev, (1.0 + 3.0 * prev) / 2.0);
        }
        // The first retry: uniform(base, 3 · base).
        check(b, 0, Duration::ZERO, 1.0, 3.0, 2.0);
    }

    #[test]
    fn grpc_style_stays_within_twenty_percent_and_mean_matches_theory() {
        let b = Backoff::GrpcStyle {
            base: Duration::from_secs(1),
            multiplier: 1.6,
        };
        for n in 0..5 {
            let t = 1.6f64.powi(n as i32);
            check(b, n, Duration::ZERO, 0.8 * t, 1.2 * t, t);
        }
    }

    #[test]
    fn every_strategy_respects_the_cap_even_for_huge_retry_numbers() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(10);
        let mut rng = SmallRng::seed_from_u64(1);
        for b in [
            Backoff::default(),
            Backoff::FullJitter { base },
            Backoff::EqualJitter { base },
            Backoff::Decorrelated { base },
            Backoff::GrpcStyle {
                base,
                multiplier: 1.6,
            },
        ] {
            for n in [10, 64, 1000, u32::MAX] {
                let d = b.delay(n, Duration::from_secs(1_000_000), cap, rng.random());
                assert!(d <= cap, "{b:?} n={n}: {d:?}");
            }
        }
    }

    #[test]
    fn invalid_strategies_are_errors() {
        let cap = Duration::from_secs(60);
        assert_eq!(
            Backoff::guide(Duration::ZERO, Duration::ZERO).validate(cap),
            Err(RetryConfigError::ZeroBase)
        );
        assert_eq!(
            Backoff::default().validate(Duration::from_millis(10)),
            Err(RetryConfigError::CapBelowBase)
        );
        let base = Duration::from_millis(10);
        assert_eq!(
            Backoff::guide(base, Duration::from_secs(2)).validate(Duration::from_secs(1)),
            Err(RetryConfigError::JitterAboveCap)
        );
        assert_eq!(
            Backoff::guide(base, Duration::from_secs(1)).validate(Duration::from_secs(1)),
            Ok(()),
            "a jitter as large as the cap is in range"
        );
        for m in [f64::NAN, f64::INFINITY, 0.5, -1.0] {
            let b = Backoff::GrpcStyle {
                base: Duration::from_secs(1),
                multiplier: m,
            };
            assert!(matches!(
                b.validate(cap),
                Err(RetryConfigError::InvalidFactor(_))
            ));
        }
    }
}
