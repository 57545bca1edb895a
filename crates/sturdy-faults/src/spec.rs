//! The `key=value,key=value` specs of the rate-limit and capacity modes
//! ([`RateLimit`](crate::RateLimit), [`Capacity`](crate::Capacity)) and
//! their [`SpecError`].
//!
//! Keys are case-insensitive, whitespace around items, keys and values is
//! ignored; an empty item, a key given twice, an unknown key or a value that
//! does not parse (or is out of range: negative, NaN, infinite, too large)
//! is an error, never a panic.

use std::fmt;

/// Why a rate-limit or capacity spec (or a builder value) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    message: String,
}

impl SpecError {
    pub(crate) fn new(message: impl Into<String>) -> SpecError {
        SpecError {
            message: message.into(),
        }
    }

    /// What was wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// The `(key, value)` pairs of `text`, keys lowercased, each key one of
/// `known` and given once; `what` names the spec in messages.
pub(crate) fn pairs<'a>(
    what: &str,
    text: &'a str,
    known: &[&str],
) -> Result<Vec<(String, &'a str)>, SpecError> {
    if text.trim().is_empty() {
        return Err(SpecError::new(format!("empty {what} spec")));
    }
    let mut out: Vec<(String, &str)> = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(SpecError::new(format!(
                "empty item in {what} spec {text:?}"
            )));
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(SpecError::new(format!(
                "{what} item {item:?} is not key=value"
            )));
        };
        let key = key.trim().to_ascii_lowercase();
        if !known.contains(&key.as_str()) {
            return Err(SpecError::new(format!(
                "unknown {what} key {key:?}: expected one of {}",
                known.join(", ")
            )));
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(SpecError::new(format!("{what} key {key:?} given twice")));
        }
        out.push((key, value.trim()));
    }
    Ok(out)
}

/// A rate: a finite number above zero and at most `max`.
pub(crate) fn rate(key: &str, value: &str, max: f64) -> Result<f64, SpecError> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= max => Ok(x),
        _ => Err(SpecError::new(format!(
            "{key}={value:?} is not a number above 0 and at most {max}"
        ))),
    }
}

/// A whole number in `min..=max`.
pub(crate) fn whole(key: &str, value: &str, min: u64, max: u64) -> Result<u64, SpecError> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(SpecError::new(format!(
            "{key}={value:?} is not a whole number in {min}..={max}"
        ))),
    }
}

/// `true` or `false`, in any case.
pub(crate) fn flag(key: &str, value: &str) -> Result<bool, SpecError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SpecError::new(format!(
            "{key}={value:?} is not true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_refuse_what_is_not_a_clean_list() {
        let known = ["a", "b"];
        assert_eq!(
            pairs("x", " A = 1 ,b=2", &known).unwrap(),
            vec![("a".to_owned(), "1"), ("b".to_owned(), "2")]
        );
        for bad in ["", "  ", "a=1,", ",a=1", "a", "c=1", "a=1,a=2", "a=1,,b=2"] {
            assert!(pairs("x", bad, &known).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_bounded() {
        assert_eq!(rate("r", "2.5", 10.0), Ok(2.5));
        for bad in [
            "0", "-1", "NaN", "nan", "inf", "-inf", "11", "1e400", "", "x",
        ] {
            assert!(rate("r", bad, 10.0).is_err(), "{bad:?}");
        }
        assert_eq!(whole("n", "3", 1, 5), Ok(3));
        for bad in ["0", "6", "-1", "1.5", "99999999999999999999999", ""] {
            assert!(whole("n", bad, 1, 5).is_err(), "{bad:?}");
        }
        assert_eq!(flag("h", "TRUE"), Ok(true));
        assert_eq!(flag("h", "false"), Ok(false));
        assert!(flag("h", "yes").is_err());
    }
}
