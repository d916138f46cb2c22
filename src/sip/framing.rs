//! Finding SIP messages in a TCP byte stream (RFC 3261 §18.3), by
//! Content-Length, and the same size rules for UDP datagrams.
//!
//! What it does: [`StreamFramer`] takes bytes as they arrive (`push`) and
//! hands out whole messages (`next_message`): it finds the end of the
//! header section (CRLFCRLF, bare LF tolerated), reads Content-Length (full
//! or compact `l`), skips CRLF keep-alives between messages (RFC 5626
//! §3.5.1), and enforces size limits. [`check_datagram`] applies the same
//! limits and Content-Length rule to one UDP datagram. [`check_lines`]
//! applies the header count and line length limits to one whole message
//! (a datagram, or a message the framer cut out of a stream): breaking them
//! does not break a stream's framing, so the message is answered and the
//! connection goes on.
//!
//! What it does not: parse the message ([`super::message::parse`] does),
//! answer keep-alive pings (the transport sends the CRLF pong), or read
//! sockets. After a [`FrameError`] the stream has lost its framing (RFC 3261
//! §18.3: there is no way to resynchronise), so the caller closes the
//! connection; the framer keeps returning the error.

use super::message::{find_header_end, full_header_name, parse_content_length};

/// Default limit for a whole message; larger ones are refused.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// Default limit for the header section alone.
pub const DEFAULT_MAX_HEADER: usize = 16 * 1024;
/// Default limit on header fields in one message (a folded field and a
/// comma-separated list count once). Real requests carry 10 to 30.
pub const DEFAULT_MAX_HEADERS: usize = 128;
/// Default limit on one header field (with its folded continuation lines)
/// and on the start line, in bytes.
pub const DEFAULT_MAX_HEADER_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("header section exceeds {limit} bytes without an empty line: not SIP, or too large")]
    HeaderTooLarge { limit: usize },
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: u64, limit: usize },
    #[error("a message on a stream must carry Content-Length (RFC 3261 §18.3)")]
    MissingContentLength,
    #[error("bad Content-Length {0:?}: expected one non-negative decimal number")]
    BadContentLength(String),
    #[error("Content-Length larger than the message: it says {declared} bytes, {available} follow")]
    ContentLengthTooLarge { declared: u64, available: usize },
    #[error("message has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("header field {name:?} is {length} bytes long, over the limit of {limit} bytes")]
    HeaderLineTooLong {
        name: String,
        length: usize,
        limit: usize,
    },
    #[error("start line is {length} bytes long, over the limit of {limit} bytes")]
    StartLineTooLong { length: usize, limit: usize },
}

impl FrameError {
    /// The response a datagram with this error deserves (when it is a
    /// request that can be answered); on a stream the connection is closed.
    pub fn response_code(&self) -> u16 {
        match self {
            FrameError::HeaderTooLarge { .. } | FrameError::MessageTooLarge { .. } => 413,
            // RFC 3261 §21.4.12: the Request-URI is longer than the server
            // will interpret.
            FrameError::StartLineTooLong { .. } => 414,
            _ => 400,
        }
    }

    /// The reason phrase that goes with [`Self::response_code`]: RFC 3261
    /// has no status for too many or too long header fields (HTTP's 431
    /// is not SIP), so those are 400s whose phrase says which limit it was
    /// (§21.4.1 recommends saying what was wrong).
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            FrameError::HeaderTooLarge { .. } | FrameError::MessageTooLarge { .. } => {
                "Request Entity Too Large"
            }
            FrameError::StartLineTooLong { .. } => "Request-URI Too Long",
            FrameError::TooManyHeaders { .. } => "Too Many Headers",
            FrameError::HeaderLineTooLong { .. } => "Header Line Too Long",
            FrameError::MissingContentLength => "Missing Content-Length",
            FrameError::BadContentLength(_) => "Bad Content-Length",
            FrameError::ContentLengthTooLarge { .. } => "Content-Length larger than the message",
        }
    }

    /// The limit (a `dialin serve` setting, or the Content-Length rule)
    /// this error is about, as the metrics name it.
    pub fn limit_name(&self) -> &'static str {
        match self {
            FrameError::MessageTooLarge { .. } => "max-message",
            FrameError::HeaderTooLarge { .. } => "max-header-section",
            FrameError::TooManyHeaders { .. } => "max-headers",
            FrameError::HeaderLineTooLong { .. } | FrameError::StartLineTooLong { .. } => {
                "max-header-line"
            }
            FrameError::MissingContentLength
            | FrameError::BadContentLength(_)
            | FrameError::ContentLengthTooLarge { .. } => "content-length",
        }
    }
}

/// Size limits on received messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A whole message (headers and body), in bytes.
    pub max_message: usize,
    /// The header section (start line to the empty line), in bytes.
    pub max_header: usize,
    /// Header fields in one message; 0: no limit.
    pub max_headers: usize,
    /// One header field (folded lines included) or the start line, in
    /// bytes; 0: no limit.
    pub max_header_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: DEFAULT_MAX_MESSAGE,
            max_header: DEFAULT_MAX_HEADER,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_line: DEFAULT_MAX_HEADER_LINE,
        }
    }
}

/// The smallest `max_message` allowed: room for a plain INVITE with SDP.
pub const MIN_MAX_MESSAGE: usize = 1024;
/// The largest `max_message` allowed (a stream connection may buffer this
/// much).
pub const MAX_MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl Limits {
    /// Limits with `max_message` as given and the header section bounded
    /// by the smaller of it and [`DEFAULT_MAX_HEADER`].
    pub fn with_max_message(max_message: usize) -> Limits {
        Limits {
            max_message,
            max_header: DEFAULT_MAX_HEADER.min(max_message),
            ..Limits::default()
        }
    }

    /// Checks the settings; the error names the flag and the range.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_MAX_MESSAGE..=MAX_MAX_MESSAGE).contains(&self.max_message) {
            return Err(format!(
                "--max-message: {} bytes is out of range: use {MIN_MAX_MESSAGE} to {MAX_MAX_MESSAGE}",
                self.max_message
            ));
        }
        if self.max_header == 0 || self.max_header > self.max_message {
            return Err(format!(
                "the header section limit of {} bytes is out of range: use 1 to --max-message ({})",
                self.max_header, self.max_message
            ));
        }
        if self.max_header_line != 0 && self.max_header_line < 256 {
            return Err(format!(
                "--max-header-line: {} bytes is too small: use 0 (no limit) or 256 and more",
                self.max_header_line
            ));
        }
        if self.max_headers != 0 && self.max_headers < 8 {
            return Err(format!(
                "--max-headers: {} is too few for a SIP request (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact, Content-Length): use 0 (no limit) or 8 and more",
                self.max_headers
            ));
        }
        Ok(())
    }
}

/// Sans-IO framer for one stream connection.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limits: Limits,
    failed: Option<FrameError>,
    keepalives: usize,
    /// The header section of a message refused as too large, kept so the
    /// transport can answer it before it closes the connection.
    refused_head: Option<Vec<u8>>,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        StreamFramer {
            buf: Vec::new(),
            limits,
            failed: None,
            keepalives: 0,
            refused_head: None,
        }
    }

    /// The header section of the message that broke the size limit (once,
    /// after [`Self::next_message`] returned [`FrameError::MessageTooLarge`]):
    /// the transport answers it 413 (RFC 3261 §21.4.11), then closes.
    pub fn take_refused_head(&mut self) -> Option<Vec<u8>> {
        self.refused_head.take()
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// How many CRLFCRLF keep-alive pings were skipped so far; the transport
    /// answers each with CRLF (RFC 5626 §3.5.1).
    pub fn keepalives(&self) -> usize {
        self.keepalives
    }

    /// Bytes held but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `None` if more bytes are needed, or the
    /// error that broke the stream (returned again on every later call).
    #[must_use]
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if let Some(e) = &self.failed {
            return Some(Err(e.clone()));
        }
        self.skip_keepalives();
        // Empty, or the start of what may be a ping: wait for more.
        if matches!(self.buf.first(), None | Some(b'\r' | b'\n')) {
            return None;
        }
        let Some((head_end, body_start)) = find_header_end(&self.buf) else {
            if self.buf.len() > self.limits.max_header {
                return Some(self.fail(FrameError::HeaderTooLarge {
                    limit: self.limits.max_header,
                }));
            }
            return None;
        };
        if head_end > self.limits.max_header {
            return Some(self.fail(FrameError::HeaderTooLarge {
                limit: self.limits.max_header,
            }));
        }
        let length = match find_content_length(&self.buf[..head_end]) {
            Ok(Some(n)) => n,
            Ok(None) => return Some(self.fail(FrameError::MissingContentLength)),
            Err(e) => return Some(self.fail(e)),
        };
        let total = body_start as u64 + length;
        if total > self.limits.max_message as u64 {
            self.refused_head = Some(self.buf[..body_start].to_vec());
            return Some(self.fail(FrameError::MessageTooLarge {
                size: total,
                limit: self.limits.max_message,
            }));
        }
        let total = total as usize; // ≤ max_message, so it fits
        if self.buf.len() < total {
            return None;
        }
        let rest = self.buf.split_off(total);
        let message = std::mem::replace(&mut self.buf, rest);
        Some(Ok(message))
    }

    fn fail(&mut self, e: FrameError) -> Result<Vec<u8>, FrameError> {
        self.buf.clear();
        self.failed = Some(e.clone());
        Err(e)
    }

    /// RFC 5626 §3.5.1: a client pings with CRLFCRLF between messages; RFC
    /// 3261 §7.5 also says to ignore CRLFs before a start line. Each byte is
    /// judged only on the bytes it takes to judge it, so the outcome does
    /// not depend on how TCP cut the stream: a line end that could still
    /// begin a ping waits for the next bytes (at most 3 are held); one that
    /// can't is a stray and dropped.
    fn skip_keepalives(&mut self) {
        // Each pass drops at least one byte or stops: bounded by the buffer.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                self.keepalives += 1;
                continue;
            }
            if self.buf.starts_with(b"\n\n") {
                self.buf.drain(..2);
                self.keepalives += 1;
                continue;
            }
            match self.buf.first() {
                Some(b'\r' | b'\n') => {}
                _ => break,
            }
            let may_be_ping = b"\r\n\r\n".starts_with(&self.buf) || b"\n\n".starts_with(&self.buf);
            if may_be_ping {
                break;
            }
            self.buf.drain(..1);
        }
    }
}

/// Applies the size limit and the Content-Length rule to one datagram: the
/// Content-Length (if any) must not exceed the bytes after the headers.
/// Missing Content-Length is fine on UDP (RFC 3261 §18.3).
pub fn check_datagram(bytes: &[u8], limits: Limits) -> Result<(), FrameError> {
    if bytes.len() > limits.max_message {
        return Err(FrameError::MessageTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_message,
        });
    }
    let Some((head_end, body_start)) = find_header_end(bytes) else {
        if bytes.len() > limits.max_header {
            return Err(FrameError::HeaderTooLarge {
                limit: limits.max_header,
            });
        }
        return Ok(()); // the parser reports the missing empty line
    };
    if head_end > limits.max_header {
        return Err(FrameError::HeaderTooLarge {
            limit: limits.max_header,
        });
    }
    check_head_lines(&bytes[..head_end], limits)?;
    if let Some(n) = find_content_length(&bytes[..head_end])? {
        let available = bytes.len() - body_start;
        if n > available as u64 {
            return Err(FrameError::ContentLengthTooLarge {
                declared: n,
                available,
            });
        }
    }
    Ok(())
}

/// Applies the header count and line length limits to one whole message
/// (for a datagram, [`check_datagram`] does it too). A message without
/// an empty line after its headers is checked as far as it goes.
pub fn check_lines(message: &[u8], limits: Limits) -> Result<(), FrameError> {
    let head_end = find_header_end(message).map_or(message.len(), |(end, _)| end);
    check_head_lines(&message[..head_end], limits)
}

/// [`check_lines`] on a header section: one pass over its bytes, no copy.
fn check_head_lines(head: &[u8], limits: Limits) -> Result<(), FrameError> {
    if limits.max_headers == 0 && limits.max_header_line == 0 {
        return Ok(());
    }
    let line_limit = if limits.max_header_line == 0 {
        usize::MAX
    } else {
        limits.max_header_line
    };
    // RFC 3261 §7.5: CRLFs before the start line are not part of it.
    let start = head
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(head.len());
    let mut lines = head[start..]
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    if start_line.len() > line_limit {
        return Err(FrameError::StartLineTooLong {
            length: start_line.len(),
            limit: line_limit,
        });
    }
    let mut fields = 0usize;
    // The field being read: its first line (for the name) and its length
    // so far, continuation lines included (§7.3.1 folding).
    let mut current: Option<(&[u8], usize)> = None;
    let too_long = |first: &[u8], length: usize| {
        let name = first.split(|b| *b == b':').next().unwrap_or_default();
        let name = String::from_utf8_lossy(&name[..name.len().min(64)])
            .trim()
            .to_string();
        FrameError::HeaderLineTooLong {
            name,
            length,
            limit: line_limit,
        }
    };
    for line in lines {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        match (&mut current, folded) {
            (Some((_, length)), true) => *length += line.len(),
            _ => {
                fields += 1;
                if limits.max_headers != 0 && fields > limits.max_headers {
                    return Err(FrameError::TooManyHeaders {
                        limit: limits.max_headers,
                    });
                }
                current = Some((line, line.len()));
            }
        }
        if let Some((first, length)) = current
            && length > line_limit
        {
            return Err(too_long(first, length));
        }
    }
    Ok(())
}

/// Content-Length from a raw header section (folded lines and whitespace
/// before the colon allowed); differing duplicates are an error.
fn find_content_length(head: &[u8]) -> Result<Option<u64>, FrameError> {
    match content_length_unfolded(head) {
        Some(found) => Ok(found),
        None => content_length_slow(head),
    }
}

/// The common case without copying a byte: no folded line, UTF-8 names
/// and values, good values. `None` when unsure (a folded line, a bad or
/// differing value): [`content_length_slow`] decides, with its errors.
fn content_length_unfolded(head: &[u8]) -> Option<Option<u64>> {
    let mut found = None;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return None;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        if !full_header_name(name.trim()).eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let value = std::str::from_utf8(&line[colon + 1..]).ok()?;
        let n = parse_content_length(value).ok()?;
        match found {
            Some(prev) if prev != n => return None,
            _ => found = Some(n),
        }
    }
    Some(found)
}

/// [`find_content_length`] for any header section: unfolds into owned lines.
fn content_length_slow(head: &[u8]) -> Result<Option<u64>, FrameError> {
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<String> = Vec::new();
    for line in text.split('\n').skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            lines.push(line.to_string());
        }
    }
    let mut found: Option<u64> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !full_header_name(name.trim()).eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let n = parse_content_length(value)
            .map_err(|_| FrameError::BadContentLength(value.trim().to_string()))?;
        match found {
            Some(prev) if prev != n => {
                return Err(FrameError::BadContentLength(format!("{prev} and {n}")));
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 5\r\n\r\nhello";

    fn framer() -> StreamFramer {
        StreamFramer::new(Limits::default())
    }

    /// Every message (or error) and the ping count, the stream pushed in
    /// `chunk`-byte pieces.
    fn frame_all(stream: &[u8], chunk: usize) -> (Vec<Result<Vec<u8>, FrameError>>, usize) {
        let mut f = framer();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            f.push(piece);
            while let Some(m) = f.next_message() {
                let failed = m.is_err();
                out.push(m);
                if failed {
                    return (out, f.keepalives());
                }
            }
        }
        (out, f.keepalives())
    }

    /// Found by the tcp_stream fuzz target: "\n\r\n" between two messages,
    /// read one byte at a time, was taken for an empty header section and
    /// broke the connection (no Content-Length), while read at once it was
    /// skipped as stray line ends.
    #[test]
    fn line_ends_between_messages_frame_the_same_however_the_stream_is_cut() {
        for gap in [
            &b"\n\r\n"[..],
            b"\r\r\n",
            b"\n\r\n\r\n\r",
            b"\r\n\r\n\n\n",
            b"\r",
        ] {
            let stream = [MSG, gap, MSG].concat();
            let whole = frame_all(&stream, stream.len());
            assert_eq!(whole.0, vec![Ok(MSG.to_vec()), Ok(MSG.to_vec())], "{gap:?}");
            for chunk in 1..8 {
                assert_eq!(
                    frame_all(&stream, chunk),
                    whole,
                    "{gap:?} in {chunk}-byte pieces"
                );
            }
        }
    }

    #[test]
    fn line_ends_alone_are_not_held_without_bound() {
        let mut f = framer();
        for _ in 0..10_000 {
            f.push(b"\n\r");
            assert!(f.next_message().is_none());
            assert!(f.buffered() <= 3, "{} bytes held", f.buffered());
        }
    }

    #[test]
    fn message_split_over_many_pushes_comes_out_whole() {
        let mut f = framer();
        for b in MSG {
            assert_eq!(f.next_message(), None);
            f.push(&[*b]);
        }
        assert_eq!(f.next_message(), Some(Ok(MSG.to_vec())));
        assert_eq!(f.next_message(), None);
    }

    #[test]
    fn several_messages_in_one_push_come_out_in_order() {
        let mut f = framer();
        let second = String::from_utf8_lossy(MSG)
            .replace("hello", "world")
            .into_bytes();
        let mut both = MSG.to_vec();
        both.extend_from_slice(&second);
        both.extend_from_slice(&MSG[..20]);
        f.push(&both);
        assert_eq!(f.next_message(), Some(Ok(MSG.to_vec())));
        assert_eq!(f.next_message(), Some(Ok(second)));
        assert_eq!(f.next_message(), None);
        assert_eq!(f.buffered(), 20);
    }

    #[test]
    fn keepalive_crlfs_between_messages_are_skipped_and_counted() {
        let mut f = framer();
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_message(), None);
        assert_eq!(f.keepalives(), 1);
        f.push(MSG);
        f.push(b"\r\n\r\n");
        f.push(MSG);
        assert_eq!(f.next_message(), Some(Ok(MSG.to_vec())));
        assert_eq!(f.next_message(), Some(Ok(MSG.to_vec())));
        assert_eq!(f.keepalives(), 2);
    }

    #[test]
    fn compact_content_length_and_bare_lf_are_understood() {
        let msg = b"OPTIONS sip:b@x SIP/2.0\nl : 3\n\nabcREST";
        let mut f = framer();
        f.push(msg);
        assert_eq!(
            f.next_message(),
            Some(Ok(b"OPTIONS sip:b@x SIP/2.0\nl : 3\n\nabc".to_vec()))
        );
        assert_eq!(f.buffered(), 4);
    }

    #[test]
    fn missing_or_bad_content_length_breaks_the_stream() {
        let mut f = framer();
        f.push(b"OPTIONS sip:b@x SIP/2.0\r\nCall-ID: c\r\n\r\n");
        assert_eq!(
            f.next_message(),
            Some(Err(FrameError::MissingContentLength))
        );
        f.push(MSG);
        assert_eq!(
            f.next_message(),
            Some(Err(FrameError::MissingContentLength))
        );

        let mut f = framer();
        f.push(b"OPTIONS sip:b@x SIP/2.0\r\nContent-Length: -999\r\n\r\n");
        assert_eq!(
            f.next_message(),
            Some(Err(FrameError::BadContentLength("-999".into())))
        );
    }

    #[test]
    fn limits_are_enforced() {
        let mut f = StreamFramer::new(Limits {
            max_message: 1000,
            max_header: 100,
            ..Limits::default()
        });
        f.push(&[b'a'; 101]);
        assert_eq!(
            f.next_message(),
            Some(Err(FrameError::HeaderTooLarge { limit: 100 }))
        );
        let mut f = StreamFramer::new(Limits {
            max_message: 1000,
            max_header: 200,
            ..Limits::default()
        });
        f.push(b"OPTIONS sip:b@x SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        let e = f.next_message().expect("decided").expect_err("too large");
        assert_eq!(e.response_code(), 413);
        assert!(matches!(e, FrameError::MessageTooLarge { limit: 1000, .. }));
    }

    #[test]
    fn datagram_rules() {
        let l = Limits::default();
        assert_eq!(check_datagram(MSG, l), Ok(()));
        let short = &MSG[..MSG.len() - 1];
        assert_eq!(
            check_datagram(short, l),
            Err(FrameError::ContentLengthTooLarge {
                declared: 5,
                available: 4
            })
        );
        let no_cl = String::from_utf8_lossy(MSG).replace("Content-Length: 5\r\n", "");
        assert_eq!(check_datagram(no_cl.as_bytes(), l), Ok(()));
        let big = vec![b'x'; l.max_message + 1];
        assert_eq!(
            check_datagram(&big, l).map_err(|e| e.response_code()),
            Err(413)
        );
    }

    fn with_headers(n: usize, extra_len: usize) -> Vec<u8> {
        let mut text = String::from(
            "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n",
        );
        for i in 0..n.saturating_sub(7) {
            text.push_str(&format!("X-H{i}: v\r\n"));
        }
        text.push_str(&format!("Subject: {}\r\n", "s".repeat(extra_len)));
        text.push_str("Content-Length: 0\r\n\r\n");
        text.into_bytes()
    }

    #[test]
    fn header_count_limit_counts_fields_not_lines() {
        let l = Limits::default();
        // Exactly at the limit: fine, on a datagram and as a framed message.
        let at = with_headers(DEFAULT_MAX_HEADERS, 1);
        assert_eq!(check_datagram(&at, l), Ok(()));
        assert_eq!(check_lines(&at, l), Ok(()));
        let over = with_headers(DEFAULT_MAX_HEADERS + 1, 1);
        let e = check_datagram(&over, l).expect_err("one field too many");
        assert_eq!(
            e,
            FrameError::TooManyHeaders {
                limit: DEFAULT_MAX_HEADERS
            }
        );
        assert_eq!(
            (e.response_code(), e.reason_phrase()),
            (400, "Too Many Headers")
        );
        assert_eq!(check_lines(&over, l), Err(e));
        // Folded lines belong to their field: 200 continuation lines are one field.
        let folded = String::from_utf8_lossy(&at).replace(
            "Subject: s\r\n",
            &format!("Subject: s\r\n{}", " more\r\n".repeat(200)),
        );
        assert_eq!(check_lines(folded.as_bytes(), l), Ok(()));
        // 0 is no limit.
        let off = Limits {
            max_headers: 0,
            ..l
        };
        assert_eq!(check_lines(&with_headers(1000, 1), off), Ok(()));
    }

    #[test]
    fn header_line_limit_covers_folded_fields_and_the_start_line() {
        let l = Limits::default();
        // "Subject: " is 9 bytes.
        let at = with_headers(10, DEFAULT_MAX_HEADER_LINE - 9);
        assert_eq!(check_datagram(&at, l), Ok(()));
        let over = with_headers(10, DEFAULT_MAX_HEADER_LINE - 8);
        let e = check_datagram(&over, l).expect_err("one byte too long");
        assert_eq!(
            e,
            FrameError::HeaderLineTooLong {
                name: "Subject".into(),
                length: DEFAULT_MAX_HEADER_LINE + 1,
                limit: DEFAULT_MAX_HEADER_LINE
            }
        );
        assert_eq!(
            (e.response_code(), e.reason_phrase()),
            (400, "Header Line Too Long")
        );
        // Folding does not get a long value past the limit.
        let folded = String::from_utf8_lossy(&with_headers(10, 1)).replace(
            "Subject: s\r\n",
            &format!("Subject: s\r\n{}", " 0123456789\r\n".repeat(800)),
        );
        assert!(matches!(
            check_lines(folded.as_bytes(), l),
            Err(FrameError::HeaderLineTooLong { .. })
        ));
        // A long Request-URI: 414.
        let long_uri = format!(
            "INVITE sip:{}@x SIP/2.0\r\nContent-Length: 0\r\n\r\n",
            "1".repeat(DEFAULT_MAX_HEADER_LINE)
        );
        let e = check_datagram(long_uri.as_bytes(), l).expect_err("start line too long");
        assert_eq!(
            (e.response_code(), e.limit_name()),
            (414, "max-header-line")
        );
        // 0 is no limit.
        let off = Limits {
            max_header_line: 0,
            ..l
        };
        assert_eq!(check_lines(&over, off), Ok(()));
        assert_eq!(check_lines(long_uri.as_bytes(), off), Ok(()));
    }

    #[test]
    fn a_stream_message_over_the_size_limit_leaves_its_head_to_answer() {
        let mut f = StreamFramer::new(Limits::with_max_message(1024));
        let head = b"OPTIONS sip:b@x SIP/2.0\r\nCall-ID: c\r\nContent-Length: 2000\r\n\r\n";
        f.push(head);
        let e = f.next_message().expect("decided").expect_err("too large");
        assert_eq!((e.response_code(), e.limit_name()), (413, "max-message"));
        assert_eq!(f.take_refused_head(), Some(head.to_vec()));
        assert_eq!(f.take_refused_head(), None);
        // A missing Content-Length leaves nothing to answer: the stream is lost.
        let mut f = framer();
        f.push(b"OPTIONS sip:b@x SIP/2.0\r\nCall-ID: c\r\n\r\n");
        assert!(matches!(f.next_message(), Some(Err(_))));
        assert_eq!(f.take_refused_head(), None);
    }

    #[test]
    fn limits_validate_with_the_flag_and_range_in_the_message() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let e = Limits::with_max_message(100)
            .validate()
            .expect_err("too small");
        assert!(e.contains("--max-message") && e.contains("1024"), "{e}");
        assert_eq!(Limits::with_max_message(1024).validate(), Ok(()));
        assert_eq!(Limits::with_max_message(1024).max_header, 1024);
        let e = Limits {
            max_header_line: 10,
            ..Limits::default()
        }
        .validate()
        .expect_err("too small");
        assert!(e.contains("--max-header-line"), "{e}");
        let e = Limits {
            max_headers: 3,
            ..Limits::default()
        }
        .validate()
        .expect_err("too few");
        assert!(e.contains("--max-headers"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5626);
        let alphabet: &[u8] = b"\r\n :lL-Content-Length0123456789\xff";
        for _ in 0..2000 {
            let mut f = StreamFramer::new(Limits {
                max_message: 2000,
                max_header: 500,
                ..Limits::default()
            });
            for _ in 0..rng.random_range(1..10) {
                let len = rng.random_range(0..200);
                let chunk: Vec<u8> = (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect();
                let _ = check_datagram(&chunk, Limits::default());
                let _ = check_lines(&chunk, Limits::default());
                f.push(&chunk);
                while let Some(Ok(_)) = f.next_message() {}
            }
        }
    }
}
