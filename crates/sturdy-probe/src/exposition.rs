//! A tolerant reader of the Prometheus text exposition (0.0.4, and the
//! OpenMetrics text that prometheus-client writes): enough to sum one
//! counter's samples, as `--server-metrics` does.
//!
//! - Blank lines and comments (`# HELP`, `# TYPE`, `# EOF`, ...) are
//!   skipped, and so is every line that does not parse as a sample: a
//!   scrape of a real server must not fail on one odd line.
//! - A sample is `name{label="value",...} value [timestamp]`; the labels are
//!   optional, label values may hold the escapes `\"`, `\\` and `\n`, the
//!   timestamp is ignored, and so is an OpenMetrics exemplar (`# {...} v`).
//!   Names in quotes (Prometheus 3's UTF-8 names) are not read.
//! - A series named `NAME` matches samples named exactly `NAME` or
//!   `NAME_total` (so the family name of an OpenMetrics counter works too).
//! - Values that are not finite (`+Inf`, `-Inf`, `NaN`) are left out of a
//!   sum.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// `label=value[,label=value...]`: a sample matches when each label has that
/// value (a label the sample lacks has the value `""`, as in PromQL).
///
/// Items are split on commas, so a value cannot hold one; spaces around a
/// label name are dropped, a value is taken as written, and double quotes
/// around it are removed (`route="models"` is `route=models`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter(Vec<(String, String)>);

impl FromStr for LabelFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<LabelFilter, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for item in text.split(',') {
            let Some((label, value)) = item.split_once('=') else {
                return Err(format!(
                    "{item:?} is not label=value (expected label=value[,label=value...])"
                ));
            };
            let label = label.trim();
            if !is_label_name(label) {
                return Err(format!(
                    "{label:?} is not a label name (letters, digits and _, not starting with a digit)"
                ));
            }
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if pairs.iter().any(|(l, _)| l == label) {
                return Err(format!("label {label:?} is given twice"));
            }
            pairs.push((label.to_owned(), value.to_owned()));
        }
        Ok(LabelFilter(pairs))
    }
}

impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (label, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{label}={value:?}")?;
        }
        Ok(())
    }
}

impl LabelFilter {
    fn matches(&self, labels: &[(&str, Cow<'_, str>)]) -> bool {
        self.0.iter().all(|(label, value)| {
            let has = labels
                .iter()
                .find(|(l, _)| l == label)
                .map_or("", |(_, v)| v.as_ref());
            has == value
        })
    }
}

/// Whether `name` is a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One sample line.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, Cow<'a, str>)>,
    value: f64,
}

/// The sample on `line`, or `None` for a comment, a blank or a line that
/// does not parse.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inside)?;
        labels = parsed;
        rest = after;
    }
    // An OpenMetrics exemplar follows the value after a `#`.
    if let Some(hash) = rest.find('#') {
        rest = &rest[..hash];
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next()?.parse::<f64>().ok()?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<f64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The labels after a `{`, and what follows the closing `}`.
#[allow(clippy::type_complexity)]
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, Cow<'_, str>)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..name_end];
        if !is_label_name(name) {
            return None;
        }
        s = s[name_end..].trim_start().strip_prefix('=')?;
        s = s.trim_start().strip_prefix('"')?;
        let (value, after) = quoted(s)?;
        labels.push((name, value));
        s = after.trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// A label value after its opening quote, unescaped, and what follows its
/// closing quote. An unknown escape is kept as written.
fn quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let end = s.find(['"', '\\'])?;
    if s.as_bytes()[end] == b'"' {
        return Some((Cow::Borrowed(&s[..end]), &s[end + 1..]));
    }
    let mut value = String::from(&s[..end]);
    let mut chars = s[end..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Cow::Owned(value), &s[end + i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

/// The sum of a series in one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sum {
    /// The finite values of the matching samples, added.
    pub total: f64,
    /// Samples that matched the name and the filter (non-finite ones
    /// included).
    pub matched: u64,
}

/// Sums the samples of `series` (named `series` or `series_total`) whose
/// labels match `filter`.
pub fn sum(text: &str, series: &str, filter: &LabelFilter) -> Sum {
    let mut out = Sum::default();
    for s in text.lines().filter_map(sample) {
        let named = s.name == series
            || s.name
                .strip_prefix(series)
                .is_some_and(|suffix| suffix == "_total");
        if !named || !filter.matches(&s.labels) {
            continue;
        }
        out.matched += 1;
        if s.value.is_finite() {
            out.total += s.value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP sturdy_faults_requests_total Requests received.
# TYPE sturdy_faults_requests_total counter
sturdy_faults_requests_total{route="chat_completions",code="200"} 40
sturdy_faults_requests_total{route="chat_completions",code="503"} 3 1712345678000
sturdy_faults_requests_total{route="chat_completions",code="none"} 2
sturdy_faults_requests_total{route="models",code="200"} 5
sturdy_faults_requests_total{code="200",route="other"} +Inf
sturdy_faults_requests_total{route="other",code="404"} NaN
sturdy_faults_requests_total_created{route="models",code="200"} 1712345678
sturdy_faults_requests 7
other_total{route="chat_completions"} 100
this is { not a sample
sturdy_faults_requests_total{route="x} 9
sturdy_faults_requests_total{route="x"} many
sturdy_faults_requests_total{route="x"} 1 2 3
sturdy_faults_requests_total{=""} 4
{"quoted.name"} 1
   
weird{path="a \"quoted\" \\ back\nslash, comma",code="1"} 11
weird{path="plain"} 12 # {trace_id="a"} 1.0
weird{ path = "spaced" , } 13
# EOF
"#;

    fn filter(spec: &str) -> LabelFilter {
        spec.parse().unwrap()
    }

    #[test]
    fn sums_a_counter_skipping_garbage_comments_and_non_finite_values() {
        let all = sum(
            TEXT,
            "sturdy_faults_requests_total",
            &LabelFilter::default(),
        );
        assert_eq!(
            all,
            Sum {
                total: 50.0,
                matched: 6
            }
        );
        // The family name of an OpenMetrics counter matches its `_total`
        // samples (and the bare name's own), never `_created`.
        let family = sum(TEXT, "sturdy_faults_requests", &LabelFilter::default());
        assert_eq!(
            family,
            Sum {
                total: 57.0,
                matched: 7
            }
        );
        assert_eq!(sum(TEXT, "other", &LabelFilter::default()).total, 100.0);
        assert_eq!(sum("", "x", &LabelFilter::default()), Sum::default());
        assert_eq!(
            sum("\u{0}\u{ff}garbage\n{}\n=\"", "x", &LabelFilter::default()).matched,
            0
        );
    }

    #[test]
    fn filters_by_every_given_label() {
        let series = "sturdy_faults_requests_total";
        let chat = sum(TEXT, series, &filter("route=chat_completions"));
        assert_eq!(
            chat,
            Sum {
                total: 45.0,
                matched: 3
            }
        );
        let quoted = sum(
            TEXT,
            series,
            &filter(r#"route="chat_completions",code=503"#),
        );
        assert_eq!(
            quoted,
            Sum {
                total: 3.0,
                matched: 1
            }
        );
        // A filter nothing matches sums 0.
        assert_eq!(
            sum(TEXT, series, &filter("route=batches")),
            Sum {
                total: 0.0,
                matched: 0
            }
        );
        assert_eq!(sum(TEXT, series, &filter("deployment=d1")).matched, 0);
        // An empty value matches samples without the label.
        assert_eq!(sum(TEXT, "other_total", &filter("code=")).total, 100.0);
    }

    #[test]
    fn reads_escaped_label_values() {
        let samples: Vec<_> = TEXT
            .lines()
            .filter_map(sample)
            .filter(|s| s.name == "weird")
            .collect();
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].labels[0].1, "a \"quoted\" \\ back\nslash, comma");
        assert_eq!(samples[1].value, 12.0);
        assert_eq!(samples[2].labels, vec![("path", Cow::Borrowed("spaced"))]);
        // (Commas cannot be given in a filter: the first sample matches
        // through its other label.)
        assert_eq!(sum(TEXT, "weird", &filter("code=1")).total, 11.0);
        assert_eq!(sum(TEXT, "weird", &filter("path=plain")).total, 12.0);
        assert_eq!(sum(TEXT, "weird", &LabelFilter::default()).total, 36.0);
    }

    #[test]
    fn bad_filters_are_errors() {
        for bad in [
            "", "route", "route=a,", ",route=a", "1x=a", "a b=c", "r=a,r=b", "=a",
        ] {
            assert!(bad.parse::<LabelFilter>().is_err(), "{bad:?}");
        }
        let ok = filter(" route = x=y ,code=\"200\"");
        assert_eq!(ok.to_string(), r#"route=" x=y ",code="200""#);
        assert!(is_metric_name("a:b_c1") && !is_metric_name("1a") && !is_metric_name("a-b"));
    }
}
