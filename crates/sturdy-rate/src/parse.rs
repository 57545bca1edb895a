//! The value grammars the rate-limit headers use: counts, Go durations and
//! plain seconds, RFC 3339 date-times, and the subset of RFC 9651
//! structured-field lists the IETF draft needs. Every function reads a
//! value already bounded in length, works on bytes, never allocates and
//! never panics: what does not parse is `None` (or `Err(Garbage)`).

use std::time::{Duration, SystemTime};

use crate::headers::MAX_RESET;

/// Nanoseconds in [`MAX_RESET`], the cap every duration is clamped to.
const CAP_NANOS: u128 = MAX_RESET.as_nanos();

/// A value with its surrounding spaces and tabs removed; `None` when
/// nothing is left.
pub(crate) fn trim(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    (!v.is_empty()).then_some(v)
}

/// A non-negative integer count, digits only; a count too large for `u64`
/// clamps to `u64::MAX`.
pub(crate) fn count(v: &[u8]) -> Option<u64> {
    let s = trim(v)?;
    if s.len() > MAX_EXACT_DIGITS {
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        return Some(s.iter().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        }));
    }
    // Nineteen digits or fewer cannot overflow: one pass, no saturation.
    let mut n = 0u64;
    for &d in s {
        let digit = d.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n = n * 10 + u64::from(digit);
    }
    Some(n)
}

/// Most digits a `u64` holds whatever they are (`10¹⁹ − 1 < 2⁶⁴`).
const MAX_EXACT_DIGITS: usize = 19;

/// A duration clamped to [`MAX_RESET`].
fn clamp(nanos: u128) -> Duration {
    let n = nanos.min(CAP_NANOS);
    // At most 86 400 s in nanoseconds: fits in a u64.
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// The reset of the OpenAI-compatible headers: a Go duration (`1s`,
/// `6m0s`, `59.52s`, `20ms`, `1h2m3.5s`, `500us`, `500µs`, `0s`, `0`) or
/// plain, possibly fractional, seconds (`12`, `0.5`). Negative values are
/// garbage; huge ones clamp to [`MAX_RESET`].
pub(crate) fn reset_duration(v: &[u8]) -> Option<Duration> {
    let s = trim(v)?;
    if s.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        let (n, rest) = decimal(s, 1_000_000_000)?;
        return rest.is_empty().then(|| clamp(n));
    }
    go_duration(s)
}

/// `[0-9]*(\.[0-9]*)?` at the start of `s`, at least one digit in all,
/// times `unit` nanoseconds: the value in nanoseconds (saturating far past
/// the cap) and what follows.
fn decimal(s: &[u8], unit: u128) -> Option<(u128, &[u8])> {
    let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = s.split_at(int_len);
    let (frac, rest) = match rest.split_first() {
        Some((b'.', after)) => {
            let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
            after.split_at(n)
        }
        _ => (&rest[..0], rest),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    // Saturating at u64::MAX, which is past the cap in any unit: the
    // product below cannot overflow (u64::MAX times an hour in
    // nanoseconds is below u128::MAX).
    let whole = int.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    let mut nanos = u128::from(whole) * unit;
    if !frac.is_empty() {
        // Nineteen fractional digits are below a nanosecond of any unit
        // here, and fit in a u64.
        let (mut f, mut scale) = (0u64, 1u64);
        for d in frac.iter().take(19) {
            f = f * 10 + u64::from(d - b'0');
            scale *= 10;
        }
        let (f, scale) = (u128::from(f), u128::from(scale));
        // A unit that the fraction's scale divides (as `59.52s` is read)
        // needs no 128-bit division.
        nanos += if unit.is_multiple_of(scale) {
            f * (unit / scale)
        } else {
            f * unit / scale
        };
    }
    Some((nanos, rest))
}

/// Go's `time.ParseDuration` grammar, `[+]?([0-9]*(\.[0-9]*)?unit)+` or
/// `0`, without the minus sign (a negative reset is garbage).
fn go_duration(s: &[u8]) -> Option<Duration> {
    let mut s = match s.split_first() {
        Some((b'+', rest)) => rest,
        _ => s,
    };
    if s == b"0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total = 0u128;
    while !s.is_empty() {
        let unit_at = s.iter().position(|b| !(b.is_ascii_digit() || *b == b'.'))?;
        let unit_len = s[unit_at..]
            .iter()
            .position(|b| b.is_ascii_digit() || *b == b'.')
            .unwrap_or(s.len() - unit_at);
        let unit = match &s[unit_at..unit_at + unit_len] {
            b"ns" => 1,
            // "us", U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU, as Go.
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        let (n, rest) = decimal(&s[..unit_at], unit)?;
        if !rest.is_empty() {
            return None; // two dots: `1.2.3s`
        }
        total = total.saturating_add(n).min(CAP_NANOS + 1);
        s = &s[unit_at + unit_len..];
    }
    Some(clamp(total))
}

/// Plain delta-seconds, integer or fractional (`RateLimit-Reset`).
pub(crate) fn delta_seconds(v: &[u8]) -> Option<Duration> {
    let s = trim(v)?;
    let (n, rest) = decimal(s, 1_000_000_000)?;
    rest.is_empty().then(|| clamp(n))
}

/// An RFC 3339 date-time (`2026-12-02T10:00:30Z`, with fractional seconds
/// and a numeric offset if given; `t`, `z` and a space separator as RFC
/// 3339 §5.6 allows), as the time from `now` until it: zero when it has
/// passed, clamped to [`MAX_RESET`].
pub(crate) fn reset_at_date(v: &[u8], now: SystemTime) -> Option<Duration> {
    let at = rfc3339(trim(v)?)?;
    let until = match at {
        Instant::After(d) => SystemTime::UNIX_EPOCH.checked_add(d)?,
        // Before 1970: long past.
        Instant::Before => return Some(Duration::ZERO),
    };
    Some(match until.duration_since(now) {
        Ok(d) => clamp(d.as_nanos()),
        Err(_) => Duration::ZERO,
    })
}

/// A point in time relative to the Unix epoch.
enum Instant {
    After(Duration),
    Before,
}

fn digits<const N: usize>(s: &[u8], at: usize) -> Option<u32> {
    let part = s.get(at..at + N)?;
    if !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

fn rfc3339(s: &[u8]) -> Option<Instant> {
    let byte = |i: usize| s.get(i).copied();
    let year = digits::<4>(s, 0)?;
    let month = digits::<2>(s, 5)?;
    let day = digits::<2>(s, 8)?;
    let hour = digits::<2>(s, 11)?;
    let minute = digits::<2>(s, 14)?;
    let second = digits::<2>(s, 17)?;
    if byte(4) != Some(b'-')
        || byte(7) != Some(b'-')
        || !matches!(byte(10), Some(b'T' | b't' | b' '))
        || byte(13) != Some(b':')
        || byte(16) != Some(b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if byte(i) == Some(b'.') {
        let frac = s.get(i + 1..)?;
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let mut scale = 1_000_000_000u32;
        for d in &frac[..n.min(9)] {
            scale /= 10;
            nanos += u32::from(d - b'0') * scale;
        }
        i += 1 + n;
    }
    let offset: i64 = match byte(i)? {
        b'Z' | b'z' if i + 1 == s.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == s.len() && byte(i + 3) == Some(b':') => {
            let (h, m) = (digits::<2>(s, i + 1)?, digits::<2>(s, i + 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    Some(match u64::try_from(secs) {
        Ok(secs) => Instant::After(Duration::new(secs, nanos)),
        Err(_) => Instant::Before,
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A syntax error in a structured field: the whole field is ignored
/// (RFC 9651 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Garbage;

/// One parameter value the rate-limit fields use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param<'a> {
    /// An Integer.
    Int(i64),
    /// A String's raw content (escapes left in) or a Token.
    Text(&'a [u8]),
    /// Any other bare item.
    Other,
}

/// One member of a structured-field List: its name (a String's raw
/// content or a Token; `None` for other bare items and inner lists) and
/// the parameters the rate-limit fields read (the last of each key, as
/// RFC 9651 says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Member<'a> {
    pub(crate) name: Option<&'a [u8]>,
    /// `r`: remaining quota units.
    pub(crate) r: Option<Param<'a>>,
    /// `t`: seconds until the quota resets.
    pub(crate) t: Option<Param<'a>>,
    /// `q`: the policy's quota.
    pub(crate) q: Option<Param<'a>>,
    /// `qu`: the policy's quota unit.
    pub(crate) qu: Option<Param<'a>>,
}

impl Member<'_> {
    /// A non-negative Integer parameter.
    pub(crate) fn count(p: Option<Param<'_>>) -> Option<u64> {
        match p? {
            Param::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }
}

/// A cursor over one field line.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn skip(&mut self, ows: bool) {
        while matches!(self.peek(), Some(b' ')) || (ows && self.peek() == Some(b'\t')) {
            self.i += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A bare item: what the fields need, and enough of the rest of RFC
    /// 9651 to step over it.
    fn bare_item(&mut self) -> Result<Param<'a>, Garbage> {
        match self.peek().ok_or(Garbage)? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => {
                self.i += 1;
                let start = self.i;
                loop {
                    match self.bump().ok_or(Garbage)? {
                        b'\\' => match self.bump() {
                            Some(b'"' | b'\\') => {}
                            _ => return Err(Garbage),
                        },
                        b'"' => return Ok(Param::Text(&self.s[start..self.i - 1])),
                        0x20..=0x7e => {}
                        _ => return Err(Garbage),
                    }
                }
            }
            b'*' | b'a'..=b'z' | b'A'..=b'Z' => {
                Ok(Param::Text(self.take_while(|b| {
                    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)
                })))
            }
            b'?' => {
                self.i += 1;
                match self.bump() {
                    Some(b'0' | b'1') => Ok(Param::Other),
                    _ => Err(Garbage),
                }
            }
            b':' => {
                self.i += 1;
                self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                match self.bump() {
                    Some(b':') => Ok(Param::Other),
                    _ => Err(Garbage),
                }
            }
            b'@' => {
                self.i += 1;
                match self.number()? {
                    Param::Int(_) => Ok(Param::Other),
                    _ => Err(Garbage),
                }
            }
            b'%' => {
                self.i += 1;
                if self.bump() != Some(b'"') {
                    return Err(Garbage);
                }
                loop {
                    match self.bump().ok_or(Garbage)? {
                        b'"' => return Ok(Param::Other),
                        b'%' => {
                            let hex = |b: Option<u8>| {
                                b.is_some_and(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                            };
                            if !(hex(self.bump()) && hex(self.bump())) {
                                return Err(Garbage);
                            }
                        }
                        0x20..=0x7e => {}
                        _ => return Err(Garbage),
                    }
                }
            }
            _ => Err(Garbage),
        }
    }

    /// An Integer (at most 15 digits) or a Decimal (at most 12 integer
    /// and 3 fractional digits), as RFC 9651 §4.2.4 bounds them.
    fn number(&mut self) -> Result<Param<'a>, Garbage> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int = self.take_while(|b| b.is_ascii_digit());
        if int.is_empty() || int.len() > 15 {
            return Err(Garbage);
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let frac = self.take_while(|b| b.is_ascii_digit());
            if int.len() > 12 || frac.is_empty() || frac.len() > 3 {
                return Err(Garbage);
            }
            return Ok(Param::Other);
        }
        let n = int.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        Ok(Param::Int(if negative { -n } else { n }))
    }

    /// `*( ";" *SP key [ "=" bare-item ] )`, keeping the keys a member needs.
    fn parameters(&mut self, m: &mut Member<'a>) -> Result<(), Garbage> {
        while self.peek() == Some(b';') {
            self.i += 1;
            self.skip(false);
            if !matches!(self.peek(), Some(b'a'..=b'z' | b'*')) {
                return Err(Garbage);
            }
            let key = self.take_while(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)
            });
            let value = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare_item()?
            } else {
                Param::Other // Boolean true
            };
            match key {
                b"r" => m.r = Some(value),
                b"t" => m.t = Some(value),
                b"q" => m.q = Some(value),
                b"qu" => m.qu = Some(value),
                _ => {}
            }
        }
        Ok(())
    }

    fn member(&mut self) -> Result<Member<'a>, Garbage> {
        let mut m = Member::default();
        if self.peek() == Some(b'(') {
            // An inner list: its items are stepped over, it has no name.
            self.i += 1;
            loop {
                self.skip(false);
                if self.peek() == Some(b')') {
                    self.i += 1;
                    break;
                }
                self.bare_item()?;
                self.parameters(&mut Member::default())?;
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return Err(Garbage);
                }
            }
        } else if let Param::Text(name) = self.bare_item()? {
            m.name = Some(name);
        }
        self.parameters(&mut m)?;
        Ok(m)
    }
}

/// Calls `f` with every member of a structured-field List line (RFC 9651
/// §4.2.1); `Err` on any syntax error, after which what `f` saw must be
/// thrown away.
pub(crate) fn list<'a>(line: &'a [u8], mut f: impl FnMut(Member<'a>)) -> Result<(), Garbage> {
    let mut c = Cursor {
        s: line.trim_ascii(),
        i: 0,
    };
    if c.s.is_empty() {
        return Ok(());
    }
    loop {
        f(c.member()?);
        c.skip(true);
        match c.bump() {
            None => return Ok(()),
            Some(b',') => {
                c.skip(true);
                if c.peek().is_none() {
                    return Err(Garbage);
                }
            }
            Some(_) => return Err(Garbage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<Duration> {
        reset_duration(s.as_bytes())
    }

    #[test]
    fn go_durations_and_plain_seconds() {
        let ms = Duration::from_millis;
        for (v, want) in [
            ("1s", Some(ms(1000))),
            ("6m0s", Some(ms(360_000))),
            ("59.52s", Some(ms(59_520))),
            ("20ms", Some(ms(20))),
            ("1h2m3.5s", Some(ms(3_723_500))),
            ("500us", Some(Duration::from_micros(500))),
            ("500µs", Some(Duration::from_micros(500))),
            ("500μs", Some(Duration::from_micros(500))),
            ("750ns", Some(Duration::from_nanos(750))),
            ("0s", Some(Duration::ZERO)),
            ("0", Some(Duration::ZERO)),
            ("+2s", Some(ms(2000))),
            (".5s", Some(ms(500))),
            ("1.s", Some(ms(1000))),
            ("2m59.56s", Some(ms(179_560))),
            ("1.5h", Some(ms(5_400_000))),
            ("12", Some(ms(12_000))),
            ("0.5", Some(ms(500))),
            (" 7s ", Some(ms(7000))),
            ("-1s", None),
            ("-0", None),
            ("1", Some(ms(1000))),
            ("s", None),
            (".s", None),
            ("1x", None),
            ("1S", None),
            ("1 s", None),
            ("1.2.3s", None),
            ("1.2.3", None),
            (".", None),
            ("", None),
            ("1d", None),
            ("5m3", None),
            ("NaN", None),
            ("inf", None),
        ] {
            assert_eq!(d(v), want, "{v:?}");
        }
    }

    #[test]
    fn huge_durations_clamp_to_the_cap() {
        for v in [
            "25h",
            "86401",
            "99999999999999999999999999999999999999999s",
            "9999999999999999999h9999999999999999999h",
            "1e9",
        ] {
            let got = d(v);
            if v == "1e9" {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some(MAX_RESET), "{v}");
            }
        }
        assert_eq!(d("24h"), Some(MAX_RESET));
        assert_eq!(
            d("23h59m59.999999999s"),
            Some(MAX_RESET - Duration::from_nanos(1))
        );
    }

    #[test]
    fn counts() {
        assert_eq!(count(b"42"), Some(42));
        assert_eq!(count(b" 0 "), Some(0));
        assert_eq!(count(b"99999999999999999999999999"), Some(u64::MAX));
        // Nineteen digits are read exactly; from twenty, saturating.
        assert_eq!(
            count(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(count(b"0000000000000000007"), Some(7));
        assert_eq!(count(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(count(b"18446744073709551614"), Some(u64::MAX - 1));
        assert_eq!(count(b"18446744073709551616"), Some(u64::MAX));
        for bad in [
            &b"-1"[..],
            b"1.0",
            b"+1",
            b"",
            b"1e3",
            b"0x10",
            b"\xff",
            b"12:",
            b"/1",
        ] {
            assert_eq!(count(bad), None, "{bad:?}");
        }
        // A non-digit anywhere in a long value.
        assert_eq!(count(b"1234567890123456789012a"), None);
        assert_eq!(count(b"123456789012345678a"), None);
    }

    fn now() -> SystemTime {
        // 2026-12-02T10:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_205_600)
    }

    #[test]
    fn rfc3339_dates_with_fractions_and_offsets() {
        let at = |s: &str| reset_at_date(s.as_bytes(), now());
        let s = Duration::from_secs;
        assert_eq!(at("2026-12-02T10:00:30Z"), Some(s(30)));
        assert_eq!(at("2026-12-02t10:00:30z"), Some(s(30)));
        assert_eq!(at("2026-12-02 10:00:30Z"), Some(s(30)));
        assert_eq!(
            at("2026-12-02T10:00:30.25Z"),
            Some(Duration::from_millis(30_250))
        );
        assert_eq!(
            at("2026-12-02T10:00:00.123456789123Z"),
            Some(Duration::from_nanos(123_456_789))
        );
        assert_eq!(at("2026-12-02T11:00:30+01:00"), Some(s(30)));
        assert_eq!(at("2026-12-02T04:30:30-05:30"), Some(s(30)));
        assert_eq!(at("2026-12-02T09:59:00Z"), Some(Duration::ZERO), "past");
        assert_eq!(
            at("1969-12-31T23:59:59Z"),
            Some(Duration::ZERO),
            "pre-epoch"
        );
        assert_eq!(at("2027-12-02T10:00:00Z"), Some(MAX_RESET), "far ahead");
        assert_eq!(at("9999-12-31T23:59:59Z"), Some(MAX_RESET));
        assert_eq!(at("2028-02-29T00:00:00Z"), Some(MAX_RESET), "leap day");
        for bad in [
            "2026-12-02T10:00:30",
            "2026-12-02T10:00:30.Z",
            "2026-12-02T10:00:30+0100",
            "2026-12-02T10:00:30+24:00",
            "2026-13-02T10:00:30Z",
            "2026-02-29T10:00:30Z",
            "2026-12-32T10:00:30Z",
            "2026-12-02T24:00:30Z",
            "2026-12-02T10:60:30Z",
            "2026-12-02T10:00:61Z",
            "2026-12-02X10:00:30Z",
            "26-12-02T10:00:30Z",
            "2026-12-02T10:00:30Zjunk",
            "+2026-12-02T10:00:30Z",
            "Wed, 02 Dec 2026 10:00:30 GMT",
            "30",
            "",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    fn members(s: &str) -> Result<Vec<Member<'_>>, Garbage> {
        let mut out = Vec::new();
        list(s.as_bytes(), |m| out.push(m)).map(|()| out)
    }

    #[test]
    fn structured_lists() {
        let m = members(r#""default";r=50;t=30"#).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, Some(&b"default"[..]));
        assert_eq!(
            (m[0].r, m[0].t),
            (Some(Param::Int(50)), Some(Param::Int(30)))
        );
        let m = members(r#""a";t=1;r=0 ,	"b\"c";q=100;w=60;qu="requests""#).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].name, Some(&br#"b\"c"#[..]));
        assert_eq!(m[1].qu, Some(Param::Text(b"requests")));
        // Other bare items and inner lists are stepped over.
        let m = members(r#"(1 2);r=1, ?1, :aGk=:, @17, %"caf%c3%a9", 1.5;t=2, tok;r"#).unwrap();
        assert_eq!(m.len(), 7);
        assert_eq!(m[0].name, None);
        assert_eq!(m[6].name, Some(&b"tok"[..]));
        assert_eq!(m[6].r, Some(Param::Other));
        // The last of a repeated parameter wins.
        assert_eq!(members(r#""d";r=1;r=2"#).unwrap()[0].r, Some(Param::Int(2)));
        assert_eq!(members(r#""d";r=-1"#).unwrap()[0].r, Some(Param::Int(-1)));
        assert_eq!(members("").unwrap().len(), 0);
        for bad in [
            r#""default";r=50;t=30,"#,
            r#""default" r=50"#,
            r#""default";R=50"#,
            r#""default";r=1234567890123456"#,
            r#""default";r=1.2345"#,
            r#""unterminated"#,
            r#""bad\escape""#,
            r#""default";=5"#,
            "limit=100, remaining=50",
            r#""a",,"b""#,
            "(1 2",
            "?2",
            "\"caf\u{e9}\"",
        ] {
            assert!(members(bad).is_err(), "{bad:?}");
        }
    }
}
