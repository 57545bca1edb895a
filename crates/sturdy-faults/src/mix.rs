//! The seeded random fault mix used for load: requests without a script draw
//! their fault from it.
//!
//! A spec is a comma list of `FAULT=PROBABILITY`; each fault may carry its own
//! `;k=v` parameters, so every item is split on its *last* `=`. The
//! probabilities must add up to at most 1; the remainder answers normally.
//!
//! ```
//! use sturdy_faults::Mix;
//!
//! let mix: Mix = "503;retry-after-ms=20=0.05,429=0.05,reset=0.02,close=0.02".parse().unwrap();
//! assert_eq!(mix.entries().len(), 4);
//! assert!("503=0.7,429=0.7".parse::<Mix>().is_err());
//! assert!(Mix::none().is_none());
//! ```

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::fault::{Fault, ParseError, split_unquoted};

/// Slack for float sums such as `0.1 + 0.2 + 0.7`.
const SUM_EPSILON: f64 = 1e-9;

/// A weighted set of faults; see the module docs for the spec grammar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mix {
    entries: Vec<(Fault, f64)>,
}

impl Mix {
    /// A mix that injects nothing.
    pub fn none() -> Mix {
        Mix::default()
    }

    /// Whether this mix never injects anything.
    pub fn is_none(&self) -> bool {
        self.entries.iter().all(|(_, p)| *p == 0.0)
    }

    /// The faults and their probabilities, in spec order.
    pub fn entries(&self) -> &[(Fault, f64)] {
        &self.entries
    }

    /// Draws one fault, or `None` for a normal answer.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<&Fault> {
        if self.entries.is_empty() {
            return None;
        }
        let draw: f64 = rng.random();
        let mut bound = 0.0;
        for (fault, probability) in &self.entries {
            bound += probability;
            if draw < bound {
                return Some(fault);
            }
        }
        None
    }
}

impl FromStr for Mix {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Mix, ParseError> {
        if s.trim().is_empty() {
            return Ok(Mix::none());
        }
        let mut entries = Vec::new();
        let mut sum = 0.0;
        for item in split_unquoted(s, ',')? {
            let item = item.trim();
            if item.is_empty() {
                return Err(ParseError::Empty);
            }
            let (fault, probability) = item
                .rsplit_once('=')
                .ok_or_else(|| ParseError::MissingProbability(item.to_owned()))?;
            let fault: Fault = fault.parse()?;
            let probability = probability.trim();
            let p: f64 = probability
                .parse()
                .map_err(|_| ParseError::BadProbability(probability.to_owned()))?;
            if !(0.0..=1.0).contains(&p) {
                // Also catches NaN, which is in no range.
                return Err(ParseError::BadProbability(probability.to_owned()));
            }
            sum += p;
            entries.push((fault, p));
        }
        if sum > 1.0 + SUM_EPSILON {
            return Err(ParseError::ProbabilitySumAboveOne(sum));
        }
        Ok(Mix { entries })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (fault, p)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{fault}={p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn parses_items_with_their_own_params() {
        let mix: Mix = "503=0.05,429=0.05,reset=0.02,close=0.02,delay=0.02,stall=0.02"
            .parse()
            .unwrap();
        assert_eq!(mix.entries().len(), 6);
        let mix: Mix = " 503;retry-after-ms=200=0.5 , delay;ms=5=0.25"
            .parse()
            .unwrap();
        assert_eq!(
            mix.entries()[0].0,
            "503;retry-after-ms=200".parse::<Fault>().unwrap()
        );
        assert_eq!(
            mix.entries()[1],
            (
                Fault::Delay {
                    ms: Some(5),
                    chunks: None
                },
                0.25
            )
        );
        assert_eq!(mix.to_string().parse::<Mix>().unwrap(), mix);
        assert!("".parse::<Mix>().unwrap().is_none());
        assert!("0.1+0.2".parse::<Mix>().is_err());
        assert!("503=0.1,429=0.2,200=0.7".parse::<Mix>().is_ok());
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(matches!(
            "503".parse::<Mix>(),
            Err(ParseError::MissingProbability(_))
        ));
        assert!(matches!(
            "503=-0.1".parse::<Mix>(),
            Err(ParseError::BadProbability(_))
        ));
        assert!(matches!(
            "503=NaN".parse::<Mix>(),
            Err(ParseError::BadProbability(_))
        ));
        assert!(matches!(
            "503=inf".parse::<Mix>(),
            Err(ParseError::BadProbability(_))
        ));
        assert!(matches!(
            "503=lots".parse::<Mix>(),
            Err(ParseError::BadProbability(_))
        ));
        assert!(matches!(
            "503=1.5".parse::<Mix>(),
            Err(ParseError::BadProbability(_))
        ));
        assert!(matches!(
            "503=0.6,429=0.6".parse::<Mix>(),
            Err(ParseError::ProbabilitySumAboveOne(_))
        ));
        assert!(matches!(
            "boom=0.1".parse::<Mix>(),
            Err(ParseError::UnknownKind(_))
        ));
        assert!(matches!(
            "503=0.1,,429=0.1".parse::<Mix>(),
            Err(ParseError::Empty)
        ));
    }

    #[test]
    fn same_seed_same_draws() {
        let mix: Mix = "503=0.3,reset=0.3".parse().unwrap();
        let draws = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..200)
                .map(|_| mix.sample(&mut rng).cloned())
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let hits = draws(7).iter().filter(|f| f.is_some()).count();
        assert!((60..=180).contains(&hits), "{hits} of 200 drew a fault");
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| Mix::none().sample(&mut rng).is_none()));
    }
}
