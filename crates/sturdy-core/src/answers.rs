//! What an answer's body says, where the head does not: an
//! OpenAI-compatible error body (`{"error": {"type": ..., "code": ...}}`)
//! that tells a quota running out from a rate limit, and server-sent events
//! (the first line that carries data; an error object sent inside a stream).
//!
//! Bounded work on bytes a peer controls: an error body is read only when
//! it is small ([`MAX_ERROR_BODY`]) and only for the statuses where it
//! changes the verdict ([`body_may_refine`]); a stream is scanned line by
//! line, keeping at most [`MAX_EVENT_LINE`] bytes of one line, and only a
//! data line that is an object and could name an `error` member is
//! parsed. Parsing never panics: garbage is "nothing said".

use std::sync::LazyLock;

use http::StatusCode;
use memchr::memmem;
use serde::Deserialize;

use crate::FailureKind;

/// The largest error body read to refine a verdict (the drain limit).
pub const MAX_ERROR_BODY: u64 = 64 * 1024;

/// The longest line of a stream kept to be parsed (longer data lines still
/// count as data; they are not parsed).
pub const MAX_EVENT_LINE: usize = 16 * 1024;

/// Whether the body of a failure answer with `status` may change its
/// verdict: a 429 or a 403 may say the account is out of quota (OpenAI
/// answers `insufficient_quota` on both).
pub fn body_may_refine(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 403)
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    code: Option<serde_json::Value>,
}

/// The `type` or `code` values that mean the account is out of quota or
/// credit, across OpenAI-compatible APIs.
const QUOTA: [&str; 3] = [
    "insufficient_quota",
    "billing_hard_limit_reached",
    "billing_not_active",
];

impl ErrorObject {
    fn says_quota(&self) -> bool {
        [&self.kind, &self.code]
            .into_iter()
            .flatten()
            .any(|v| v.as_str().is_some_and(|s| QUOTA.contains(&s)))
    }
}

/// What an OpenAI-compatible error body says beyond its status:
/// [`FailureKind::QuotaExhausted`] when its error's `type` or `code` says
/// the account is out of quota or credit; `None` for anything else (a rate
/// limit, another error, garbage).
///
/// ```
/// use sturdy_core::{FailureKind, classify_error_body};
/// let quota = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
/// assert_eq!(classify_error_body(quota), Some(FailureKind::QuotaExhausted));
/// let limit = br#"{"error":{"type":"requests","code":"rate_limit_exceeded"}}"#;
/// assert_eq!(classify_error_body(limit), None);
/// assert_eq!(classify_error_body(b"\xff{not json"), None);
/// ```
pub fn classify_error_body(body: &[u8]) -> Option<FailureKind> {
    if body.len() as u64 > MAX_ERROR_BODY {
        return None;
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    envelope
        .error
        .filter(ErrorObject::says_quota)
        .map(|_| FailureKind::QuotaExhausted)
}

/// The failure an event's data announces, when it is an error object
/// (`{"error": ...}`): [`FailureKind::QuotaExhausted`] for a quota error,
/// else [`FailureKind::StreamError`].
pub fn classify_event_data(data: &[u8]) -> Option<FailureKind> {
    let envelope: Envelope = serde_json::from_slice(data).ok()?;
    let error = envelope.error?;
    Some(if error.says_quota() {
        FailureKind::QuotaExhausted
    } else {
        FailureKind::StreamError
    })
}

/// Whether a JSON text can have a member named `error`: only if it holds
/// that name in quotes, or a `\u` escape, which could spell it. A stream's
/// ordinary events (`{"id":"chatcmpl-…","choices":[…]}`) hold neither, and
/// are not parsed; two vectorised searches cost far less than a parse.
fn may_name_error(json: &[u8]) -> bool {
    // Built once: building a searcher costs more than a search.
    static NAME: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"error\""));
    NAME.find(json).is_some()
        || memchr::memchr_iter(b'\\', json).any(|i| json.get(i + 1) == Some(&b'u'))
}

/// Reads a server-sent-event stream as it passes, frame by frame: whether a
/// line carrying data has been seen (the first token), and the first error
/// object an event carried.
///
/// ```
/// use sturdy_core::{FailureKind, SseScan};
/// let mut scan = SseScan::default();
/// scan.feed(b": keep-alive\n\n");
/// assert!(!scan.saw_data(), "a comment is activity, not output");
/// scan.feed(b"data: {\"choices\":[]}\n\nda");
/// assert!(scan.saw_data());
/// scan.feed(b"ta: {\"error\":{\"type\":\"server_error\"}}\n\n");
/// assert_eq!(scan.error(), Some(FailureKind::StreamError));
/// assert!(!scan.saw_done());
/// scan.feed(b"data: [DONE]\n\n");
/// assert!(scan.saw_done());
/// ```
#[derive(Debug, Default, Clone)]
pub struct SseScan {
    /// The line under way, up to [`MAX_EVENT_LINE`] bytes.
    line: Vec<u8>,
    /// The line under way is longer than what is kept.
    overlong: bool,
    saw_data: bool,
    done: bool,
    error: Option<FailureKind>,
}

impl SseScan {
    /// Reads the next chunk of the stream.
    ///
    /// A line that lies whole in `chunk` is read where it is; only the
    /// start of a line the chunk ends in is copied, to be read with its end
    /// from the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        loop {
            let i = match rest.first() {
                None => break,
                // The empty line that ends an event, and `\r\n`'s second
                // half: no search.
                Some(b'\n' | b'\r') => 0,
                Some(_) => match memchr::memchr2(b'\n', b'\r', rest) {
                    Some(i) => i,
                    None => break,
                },
            };
            let (line, after) = (&rest[..i], &rest[i + 1..]);
            if self.line.is_empty() && !self.overlong {
                self.line_ended(line, line.len() > MAX_EVENT_LINE);
            } else {
                self.keep(line);
                let kept = std::mem::take(&mut self.line);
                let overlong = std::mem::replace(&mut self.overlong, false);
                self.line_ended(&kept, overlong);
                // Keep the allocation for the next split line.
                self.line = kept;
                self.line.clear();
            }
            rest = after;
        }
        self.keep(rest);
    }

    fn keep(&mut self, part: &[u8]) {
        if self.overlong || part.is_empty() {
            return;
        }
        if self.line.len() + part.len() > MAX_EVENT_LINE {
            // Too long to parse; what it starts with is enough to know
            // whether it is data.
            let room = MAX_EVENT_LINE
                .saturating_sub(self.line.len())
                .min(part.len());
            self.line.extend_from_slice(&part[..room]);
            self.overlong = true;
            return;
        }
        self.line.extend_from_slice(part);
    }

    /// A whole line (without its end), `overlong` when it is longer than
    /// what is parsed.
    fn line_ended(&mut self, line: &[u8], overlong: bool) {
        // A field line is `name: value` or `name:value` (or a bare name); a
        // line starting with `:` is a comment; an empty line ends an event.
        let Some(value) = line.strip_prefix(b"data") else {
            return;
        };
        let value = match value.split_first() {
            None => value,
            Some((b':', v)) => v.strip_prefix(b" ").unwrap_or(v),
            Some(_) => return, // another field, such as `data2`
        };
        self.saw_data = true;
        if value.trim_ascii() == b"[DONE]" {
            self.done = true;
        }
        if self.error.is_none() && !overlong {
            let trimmed = value.trim_ascii_start();
            if trimmed.starts_with(b"{") && may_name_error(trimmed) {
                self.error = classify_event_data(trimmed);
            }
        }
    }

    /// Whether a line carrying data has ended (the first token is out).
    pub fn saw_data(&self) -> bool {
        self.saw_data
    }

    /// Whether the stream said it is complete: OpenAI's `data: [DONE]`.
    /// Clients stop reading there, and may drop the body before its end.
    pub fn saw_done(&self) -> bool {
        self.done
    }

    /// The first error object an event carried, if any.
    pub fn error(&self) -> Option<FailureKind> {
        self.error
    }
}

/// A response extension: the verdict the body of this answer gave, put
/// there by the retry layer when it read the (small) body to decide. Layers
/// above label the answer by it rather than by its head, so the call's
/// outcome and the attempt's agree even when the caller never reads the
/// body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyVerdict(pub FailureKind);

/// Whether a response is a server-sent-event stream.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    crate::content_type(headers).is_some_and(|v| v.starts_with(b"text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_read_from_type_or_code_and_nothing_else() {
        for (body, want) in [
            (&br#"{"error":{"type":"insufficient_quota"}}"#[..], true),
            (
                br#"{"error":{"code":"insufficient_quota","type":"invalid_request_error"}}"#,
                true,
            ),
            (br#"{"error":{"code":"billing_hard_limit_reached"}}"#, true),
            (
                br#"{"error":{"code":"rate_limit_exceeded","type":"requests"}}"#,
                false,
            ),
            (br#"{"error":{"message":"insufficient_quota"}}"#, false),
            (br#"{"error":{"code":429}}"#, false),
            (br#"{"error":null}"#, false),
            (br#"{"type":"insufficient_quota"}"#, false),
            (b"", false),
            (b"[]", false),
            (b"{\"error\":{\"type\":\"insufficient_quota\"", false),
        ] {
            assert_eq!(
                classify_error_body(body) == Some(FailureKind::QuotaExhausted),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let huge = vec![b' '; MAX_ERROR_BODY as usize + 1];
        assert_eq!(classify_error_body(&huge), None);
    }

    #[test]
    fn data_lines_split_across_frames_and_comments_are_read_as_a_stream() {
        let mut scan = SseScan::default();
        for chunk in [
            &b": ping\r\n"[..],
            b"event: x\n",
            b"da",
            b"ta:",
            b" {\"choices\":[]}",
            b"\n",
        ] {
            assert!(!scan.saw_data());
            scan.feed(chunk);
        }
        assert!(scan.saw_data());
        assert_eq!(scan.error(), None);
        scan.feed(b"data: {\"error\": {\"code\": \"insufficient_quota\"}}\r\n\r\n");
        assert_eq!(scan.error(), Some(FailureKind::QuotaExhausted));
        // The first error stays.
        scan.feed(b"data: {\"error\": {}}\n");
        assert_eq!(scan.error(), Some(FailureKind::QuotaExhausted));
    }

    #[test]
    fn an_error_member_is_found_however_it_is_spelled_and_content_is_not_one() {
        let mut scan = SseScan::default();
        scan.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\n");
        scan.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"\\u00e9t\\u00e9\"}}]}\n\n");
        assert_eq!(scan.error(), None, "a token that says error is not one");
        scan.feed(b"data: {\"\\u0065rror\":{\"type\":\"server_error\"}}\n\n");
        assert_eq!(scan.error(), Some(FailureKind::StreamError));
    }

    /// The scan as it was first written: every line copied, every data line
    /// that starts as an object parsed. What it says after all of `chunks`.
    fn scan_by_copying(chunks: &[Vec<u8>]) -> (bool, bool, Option<FailureKind>) {
        let all: Vec<u8> = chunks.concat();
        let mut lines: Vec<&[u8]> = all.split(|&b| b == b'\n' || b == b'\r').collect();
        lines.pop(); // The part after the last line end is not a line yet.
        let (mut data, mut done, mut error) = (false, false, None);
        for line in lines {
            let overlong = line.len() > MAX_EVENT_LINE;
            let Some(value) = line.strip_prefix(b"data") else {
                continue;
            };
            let value = match value.split_first() {
                None => value,
                Some((b':', v)) => v.strip_prefix(b" ").unwrap_or(v),
                Some(_) => continue,
            };
            data = true;
            if !overlong && value.trim_ascii() == b"[DONE]" {
                done = true;
            }
            let trimmed = value.trim_ascii_start();
            if error.is_none() && !overlong && trimmed.starts_with(b"{") {
                error = classify_event_data(trimmed);
            }
        }
        (data, done, error)
    }

    #[test]
    fn reading_lines_in_place_says_what_copying_every_line_said() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let events: [&[u8]; 12] = [
            br#"data: {"id":"c1","choices":[{"delta":{"content":"hi"}}]}"#,
            br#"data:{"choices":[{"delta":{"content":"error"}}]}"#,
            br#"data: {"error":{"type":"server_error"}}"#,
            br#"data: {"error":{"code":"insufficient_quota"}}"#,
            br#"data: {"\u0065rror":{"type":"x"}}"#,
            br#"data: {"error":null,"choices":[]}"#,
            br#"data: {"choices":[{"delta":{"content":"\u00e9"}}]}"#,
            b"data: [DONE]",
            b": keep-alive",
            b"event: message",
            b"data",
            b"data2: {\"error\":{}}",
        ];
        let ends: [&[u8]; 3] = [b"\n\n", b"\r\n\r\n", b"\n"];
        for round in 0..2_000 {
            let mut stream = Vec::new();
            for _ in 0..1 + next(8) {
                if next(40) == 0 {
                    // An error event one byte under, at or over the parse limit.
                    let open = br#"data: {"error":{"type":""#;
                    let close = br#""}}"#;
                    let pad = MAX_EVENT_LINE - open.len() - close.len() - 1 + next(3) as usize;
                    stream.extend_from_slice(open);
                    stream.extend(std::iter::repeat_n(b'x', pad));
                    stream.extend_from_slice(close);
                } else {
                    stream.extend_from_slice(events[next(events.len() as u64) as usize]);
                }
                stream.extend_from_slice(ends[next(3) as usize]);
            }
            // Cut anywhere, into one to six chunks.
            let mut cuts: Vec<usize> = (0..next(6))
                .map(|_| next(stream.len() as u64 + 1) as usize)
                .collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                chunks.push(stream[from..cut].to_vec());
                from = cut;
            }
            let mut scan = SseScan::default();
            for (k, chunk) in chunks.iter().enumerate() {
                scan.feed(chunk);
                let said = (scan.saw_data(), scan.saw_done(), scan.error());
                assert_eq!(
                    said,
                    scan_by_copying(&chunks[..=k]),
                    "round {round}, chunk {k}: {:?}",
                    String::from_utf8_lossy(&stream)
                );
            }
        }
    }

    #[test]
    fn an_overlong_data_line_is_data_but_not_parsed() {
        let mut scan = SseScan::default();
        let mut long = b"data: {\"error\":".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_EVENT_LINE * 2));
        scan.feed(&long);
        scan.feed(b"\n");
        assert!(scan.saw_data());
        assert_eq!(scan.error(), None);
        assert!(scan.line.capacity() <= MAX_EVENT_LINE * 2);
        let mut other = SseScan::default();
        other.feed(b"data2: x\nid: 1\n\n");
        assert!(!other.saw_data());
        other.feed(b"data\n");
        assert!(other.saw_data(), "a bare `data` line is an empty data line");
    }
}
