//! The project's SIP message module: parsing (with the repairs rsip 0.4
//! needs) and building requests and responses.
//!
//! What it does:
//! - [`parse`] takes one datagram (or one message the [`super::framing`]
//!   layer cut out of a stream) and returns a [`Message`]. A pre-pass does
//!   what rsip 0.4 cannot: it unfolds folded header lines (RFC 3261 §7.3.1),
//!   expands compact header names (§7.3.3), accepts whitespace before the
//!   colon (§7.3.1, `HCOLON`), and cuts the body by Content-Length (§18.3);
//!   without a Content-Length the body is the rest of the datagram (§18.3
//!   allows that for UDP only, which is why streams go through the framer).
//! - [`Request`] and [`Response`] expose the fields a UA and the transaction
//!   layer need (method, Request-URI, Call-ID, tags, CSeq, Via branch and
//!   sent-by, Contact, Record-Route, body, ...), as the project's own types.
//! - [`Request::response`] builds a response the way RFC 3261 §8.2.6.2 says;
//!   [`RequestBuilder`] builds the requests a UA sends.
//! - A [`SipError`] knows the response code it should produce and, when the
//!   message had enough headers (Via, From, To, Call-ID, CSeq), can build
//!   that response ([`SipError::error_response`]); otherwise the message is
//!   dropped.
//!
//! What it does not do: transactions (ACK/CANCEL matching, RFC 3261 §17),
//! dialogs, SDP, sockets. rsip stays behind this module: its extension-method
//! handling is missing (RFC 4475 §3.1.1.2 would fail), so the start line and
//! the headers the bridge relies on are parsed here, and rsip is used only to
//! read the host and port of `sip:`/`sips:` URIs.

use std::fmt;
use std::ops::Range;

/// RFC 3261 §8.1.1.7: every branch this UA creates starts with the magic cookie.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The Max-Forwards a UA puts in the requests it creates (RFC 3261 §8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u8 = 70;

/// SIP methods the bridge distinguishes; anything else is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Info,
    Register,
    /// An extension method, kept exactly as received: RFC 4475 §3.1.1.5 says
    /// `RE%47IST%45R` is not REGISTER, so no unescaping and no case folding.
    Other(String),
}

impl Method {
    /// Method names are case-sensitive (RFC 3261 §7.1), so `invite` is an
    /// extension method, not INVITE.
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "REGISTER" => Method::Register,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Register => "REGISTER",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with a received message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipErrorKind {
    #[error("message is empty: expected a SIP request or response")]
    Empty,
    #[error("no empty line ends the header section: the message is truncated")]
    MissingHeaderEnd,
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("header section is not UTF-8: header values must be UTF-8 text")]
    NotUtf8,
    #[error("bad start line {line:?}: {why}")]
    BadStartLine { line: String, why: &'static str },
    #[error("unsupported SIP version {0:?}: only SIP/2.0 is spoken")]
    UnsupportedVersion(String),
    #[error("unsupported Request-URI scheme in {0:?}: expected sip, sips or tel")]
    UnsupportedUriScheme(String),
    #[error("bad header line {line:?}: {why}")]
    BadHeaderLine { line: String, why: &'static str },
    #[error("Content-Length larger than the message: it says {declared} bytes, {available} follow")]
    ContentLengthTooLarge { declared: u64, available: usize },
    #[error("bad Content-Length {0:?}: expected one non-negative decimal number")]
    BadContentLength(String),
    #[error("mandatory header {0} is missing")]
    MissingHeader(&'static str),
    #[error("bad {header} value {value:?}: {why}")]
    BadHeaderValue {
        header: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("CSeq method {cseq} does not match the request method {method}")]
    MethodMismatch { method: String, cseq: String },
}

/// A received message that cannot be used, with enough of it kept to answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}")]
pub struct SipError {
    kind: SipErrorKind,
    /// The request's headers when it was a request with Via, From, To,
    /// Call-ID and CSeq: then a response can be formed (RFC 3261 §8.2.6).
    request: Option<Box<Request>>,
}

impl SipError {
    pub(crate) fn new(kind: SipErrorKind) -> SipError {
        SipError {
            kind,
            request: None,
        }
    }

    pub fn kind(&self) -> &SipErrorKind {
        &self.kind
    }

    /// The status code a UAS answers with (RFC 3261 §21.4, §8.2.2).
    pub fn response_code(&self) -> u16 {
        match &self.kind {
            SipErrorKind::TooLarge { .. } => 413,
            SipErrorKind::UnsupportedVersion(_) => 505,
            SipErrorKind::UnsupportedUriScheme(_) => 416,
            // RFC 4475 §3.1.2.18: an unknown method with a mismatched CSeq
            // is better answered 501 than 400.
            SipErrorKind::MethodMismatch { method, .. }
                if matches!(Method::from_token(method), Method::Other(_)) =>
            {
                501
            }
            _ => 400,
        }
    }

    /// The reason phrase that goes with [`Self::response_code`]; 400s say
    /// what was wrong (RFC 3261 §21.4.1 recommends it).
    pub fn reason_phrase(&self) -> String {
        match self.response_code() {
            413 => "Request Entity Too Large".to_string(),
            416 => "Unsupported URI Scheme".to_string(),
            501 => "Not Implemented".to_string(),
            505 => "Version Not Supported".to_string(),
            _ => match &self.kind {
                SipErrorKind::ContentLengthTooLarge { .. } => {
                    "Content-Length larger than the message".to_string()
                }
                SipErrorKind::MissingHeader(h) => format!("Missing {h}"),
                SipErrorKind::BadHeaderValue { header, .. } => format!("Bad {header}"),
                SipErrorKind::BadContentLength(_) => "Bad Content-Length".to_string(),
                SipErrorKind::MethodMismatch { .. } => "CSeq method mismatch".to_string(),
                _ => "Bad Request".to_string(),
            },
        }
    }

    /// The request's headers, when it was a request with the headers a
    /// response copies: a transport that refuses it for a limit of its own
    /// answers with that limit's status instead.
    pub fn request(&self) -> Option<&Request> {
        self.request.as_deref()
    }

    /// Whether the message was a request with the headers a response copies.
    pub fn can_respond(&self) -> bool {
        self.request.is_some()
    }

    /// The error response to send, or `None` when the message must be
    /// dropped (a response, or a request too broken to answer).
    pub fn error_response(&self) -> Option<ResponseBuilder> {
        let req = self.request.as_ref()?;
        Some(req.response(self.response_code(), &self.reason_phrase()))
    }
}

fn err(kind: SipErrorKind) -> SipError {
    SipError::new(kind)
}

/// A parsed request or response.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Header lines after unfolding and name expansion, in arrival order.
///
/// All names and values live in one string (a message's headers cost two
/// allocations, not two per line); `lines` holds their byte ranges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Headers {
    text: String,
    /// (name as a full name, value trimmed and unfolded), as ranges of
    /// `text`. The last line's value always ends `text`, so a folded line
    /// extends it in place.
    lines: Vec<(Range<usize>, Range<usize>)>,
}

/// RFC 3261 §7.3.3 and §20: compact forms the bridge must understand, plus
/// the ones from RFC 3515/3841/4028 that peers send (`r`, `b`, `x`, `o`, `u`,
/// `y`, `j`, `a`, `d`).
const COMPACT: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("f", "From"),
    ("t", "To"),
    ("v", "Via"),
    ("m", "Contact"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("k", "Supported"),
    ("s", "Subject"),
    ("e", "Content-Encoding"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("u", "Allow-Events"),
    ("x", "Session-Expires"),
    ("a", "Accept-Contact"),
    ("j", "Reject-Contact"),
    ("d", "Request-Disposition"),
    ("y", "Identity"),
];

/// The full header name for a compact or full name (case kept for unknown
/// names, canonical case for compact ones).
pub fn full_header_name(name: &str) -> &str {
    if name.len() == 1 {
        for (short, long) in COMPACT {
            if short.eq_ignore_ascii_case(name) {
                return long;
            }
        }
    }
    name
}

impl Headers {
    /// First value of a header; `name` may be compact or full, any case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every header line with that name, in order.
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        let full = full_header_name(name);
        let text = self.text.as_str();
        self.lines
            .iter()
            .filter(move |(n, _)| text[n.clone()].eq_ignore_ascii_case(full))
            .map(move |(_, v)| &text[v.clone()])
    }

    /// Every value of a comma-separated header (RFC 3261 §7.3.1), across
    /// all its lines, split outside quotes and angle brackets.
    pub fn values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.get_all(name).flat_map(split_commas).collect()
    }

    /// All lines as (full name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines
            .iter()
            .map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()]))
    }

    fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.lines
            .push((start..name_end, name_end..self.text.len()));
    }

    /// Appends a folded line's text to the last value (RFC 3261 §7.3.1:
    /// the line break and leading whitespace become one SP). `false` when
    /// there is no header to continue.
    fn continue_last(&mut self, cont: &str) -> bool {
        let Some((_, value)) = self.lines.last_mut() else {
            return false;
        };
        if !cont.is_empty() {
            if value.start != value.end {
                self.text.push(' ');
            }
            self.text.push_str(cont);
            value.end = self.text.len();
        }
        true
    }
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// The `host[:port]` of a Via (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SentBy {
    pub host: String,
    pub port: Option<u16>,
}

impl fmt::Display for SentBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{}", self.host, p),
            None => f.write_str(&self.host),
        }
    }
}

/// One Via value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, ... upper-cased.
    pub transport: String,
    pub sent_by: SentBy,
    pub branch: Option<String>,
    /// All parameters as (lower-case name, value).
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses `SIP/2.0/UDP host:port;branch=...`, tolerating LWS around `/`,
    /// `;` and `=` as RFC 3261 §25.1 allows.
    pub fn parse(value: &str) -> Result<Via, SipErrorKind> {
        let bad = |why| SipErrorKind::BadHeaderValue {
            header: "Via",
            value: value.to_string(),
            why,
        };
        let (head, params) = match value.find(';') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        };
        // Join "SIP / 2.0 / UDP" into "SIP/2.0/UDP" before splitting on LWS.
        let mut compact = String::with_capacity(head.len());
        let mut pending_space = false;
        for ch in head.trim().chars() {
            if ch.is_whitespace() {
                pending_space = true;
                continue;
            }
            if pending_space && ch != '/' && !compact.ends_with('/') {
                compact.push(' ');
            }
            pending_space = false;
            compact.push(ch);
        }
        let mut parts = compact.split(' ');
        let protocol = parts.next().unwrap_or_default();
        let sent_by = parts
            .next()
            .ok_or_else(|| bad("expected a sent-by after the protocol"))?;
        if parts.next().is_some() {
            return Err(bad("expected protocol, sent-by and parameters only"));
        }
        let proto: Vec<&str> = protocol.split('/').collect();
        if proto.len() != 3 || proto.iter().any(|p| p.is_empty() || !is_token(p)) {
            return Err(bad("expected SIP/2.0/<transport>"));
        }
        if !proto[0].eq_ignore_ascii_case("SIP") || proto[1] != "2.0" {
            return Err(bad("expected SIP/2.0/<transport>"));
        }
        let sent_by = parse_host_port(sent_by).ok_or_else(|| bad("bad sent-by host:port"))?;
        let params = match params {
            Some(p) => parse_params(p).ok_or_else(|| bad("empty parameter between semicolons"))?,
            None => Vec::new(),
        };
        let branch = params
            .iter()
            .find(|(n, _)| n == "branch")
            .and_then(|(_, v)| v.clone());
        Ok(Via {
            transport: proto[2].to_ascii_uppercase(),
            sent_by,
            branch,
            params,
        })
    }
}

/// A From/To/Contact/Route value: `"Name" <uri>;params` or `uri;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display_name: Option<String>,
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(header: &'static str, value: &str) -> Result<NameAddr, SipErrorKind> {
        let bad = |why| SipErrorKind::BadHeaderValue {
            header,
            value: value.to_string(),
            why,
        };
        let v = value.trim();
        // Find '<' outside a quoted string (RFC 3261 §25.1 quoted-pair aware).
        let mut in_quote = false;
        let mut escaped = false;
        let mut lt = None;
        for (i, ch) in v.char_indices() {
            if in_quote {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == '"' {
                    in_quote = false;
                }
                continue;
            }
            match ch {
                '"' => in_quote = true,
                '<' => {
                    lt = Some(i);
                    break;
                }
                _ => {}
            }
        }
        if in_quote {
            // RFC 4475 §3.1.2.6: unterminated quoted display name.
            return Err(bad("unterminated quoted display name"));
        }
        match lt {
            Some(lt) => {
                let display = v[..lt].trim();
                let rest = &v[lt + 1..];
                let gt = rest.find('>').ok_or_else(|| bad("missing '>'"))?;
                let uri = &rest[..gt];
                if uri.is_empty() || uri.trim() != uri {
                    // RFC 4475 §3.1.2.15 (badaspec): no LWS inside <>.
                    return Err(bad("whitespace inside <>"));
                }
                let display_name = if display.is_empty() {
                    None
                } else if display.starts_with('"') {
                    if !display.ends_with('"') || display.len() < 2 {
                        return Err(bad("text after the quoted display name"));
                    }
                    Some(display[1..display.len() - 1].to_string())
                } else {
                    // RFC 4475 §3.1.2.16 (baddn): an unquoted display name
                    // is tokens only; a comma would be two values.
                    if !display.split_whitespace().all(is_token) {
                        return Err(bad("unquoted display name with non-token characters"));
                    }
                    Some(display.to_string())
                };
                let after = rest[gt + 1..].trim();
                let params = if after.is_empty() {
                    Vec::new()
                } else {
                    let p = after
                        .strip_prefix(';')
                        .ok_or_else(|| bad("text after '>' that is not a parameter"))?;
                    parse_params(p).ok_or_else(|| bad("empty parameter"))?
                };
                Ok(NameAddr {
                    display_name,
                    uri: uri.to_string(),
                    params,
                })
            }
            None => {
                // addr-spec: RFC 3261 §20.10, parameters after ';' belong to
                // the header, and a URI with '?' or ',' needs <>.
                let (uri, params) = match v.find(';') {
                    Some(i) => (v[..i].trim(), Some(&v[i + 1..])),
                    None => (v, None),
                };
                if uri.is_empty() || uri.contains(char::is_whitespace) {
                    return Err(bad("expected a URI"));
                }
                if uri.contains('?') || uri.contains(',') {
                    return Err(bad("a URI with '?' or ',' must be enclosed in <>"));
                }
                let params = match params {
                    Some(p) => parse_params(p).ok_or_else(|| bad("empty parameter"))?,
                    None => Vec::new(),
                };
                Ok(NameAddr {
                    display_name: None,
                    uri: uri.to_string(),
                    params,
                })
            }
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }
}

/// Accessors shared by requests and responses.
pub trait SipHeaders {
    fn headers(&self) -> &Headers;
    fn body(&self) -> &[u8];

    /// Any header by compact or full name, case-insensitively.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }
    fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }
    fn from(&self) -> Option<NameAddr> {
        self.header("From")
            .and_then(|v| NameAddr::parse("From", v).ok())
    }
    fn to(&self) -> Option<NameAddr> {
        self.header("To")
            .and_then(|v| NameAddr::parse("To", v).ok())
    }
    // "From tag" is the RFC 3261 name (§8.1.1.3), not a conversion.
    #[allow(clippy::wrong_self_convention)]
    fn from_tag(&self) -> Option<String> {
        self.from().and_then(|n| n.tag().map(str::to_string))
    }
    fn to_tag(&self) -> Option<String> {
        self.to().and_then(|n| n.tag().map(str::to_string))
    }
    fn cseq(&self) -> Option<CSeq> {
        self.header("CSeq").and_then(|v| parse_cseq(v).ok())
    }
    /// Every Via value, top first, across lines and commas.
    fn vias(&self) -> Vec<&str> {
        self.headers().values("Via")
    }
    fn top_via(&self) -> Option<Via> {
        self.vias().first().and_then(|v| Via::parse(v).ok())
    }
    /// Branch of the top Via: the transaction key (RFC 3261 §17.2.3).
    fn branch(&self) -> Option<String> {
        self.top_via().and_then(|v| v.branch)
    }
    fn sent_by(&self) -> Option<SentBy> {
        self.top_via().map(|v| v.sent_by)
    }
    /// URI of the first Contact value.
    fn contact_uri(&self) -> Option<String> {
        let first = *self.headers().values("Contact").first()?;
        NameAddr::parse("Contact", first).ok().map(|n| n.uri)
    }
    fn record_routes(&self) -> Vec<&str> {
        self.headers().values("Record-Route")
    }
    fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }
    /// `None` when absent or out of range (RFC 4475 §3.1.2.4 lets a UAS
    /// treat a bad Max-Forwards as absent).
    fn max_forwards(&self) -> Option<u8> {
        self.header("Max-Forwards").and_then(|v| {
            let v = v.trim();
            if v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse::<u8>().ok()
            } else {
                None
            }
        })
    }
}

/// A received (or built and re-parsed) request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    method: Method,
    uri: String,
    headers: Headers,
    body: Vec<u8>,
}

/// A received response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    status: u16,
    reason: String,
    headers: Headers,
    body: Vec<u8>,
}

impl SipHeaders for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn body(&self) -> &[u8] {
        &self.body
    }
}

impl SipHeaders for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn body(&self) -> &[u8] {
        &self.body
    }
}

impl Request {
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The Request-URI exactly as received.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `sip`, `sips` or `tel`, lower-case.
    pub fn uri_scheme(&self) -> &str {
        self.uri.split_once(':').map(|(s, _)| s).unwrap_or_default()
    }

    /// The user part of a `sip:`/`sips:` Request-URI (without password,
    /// still %-escaped), or the number of a `tel:` URI (RFC 3966, without
    /// parameters). This is the dialled service number.
    pub fn uri_user(&self) -> Option<&str> {
        uri_user(&self.uri)
    }

    /// Host and port of a `sip:`/`sips:` Request-URI, via rsip.
    pub fn uri_host_port(&self) -> Option<SentBy> {
        let uri = rsip::Uri::try_from(self.uri.as_str()).ok()?;
        Some(SentBy {
            host: uri.host_with_port.host.to_string(),
            port: uri.host_with_port.port.map(|p| *p.value()),
        })
    }

    /// Starts a response that copies Via, From, To, Call-ID and CSeq
    /// (RFC 3261 §8.2.6.2).
    pub fn response(&self, status: u16, reason: &str) -> ResponseBuilder {
        let mut copied = Vec::new();
        for v in self.headers.get_all("Via") {
            copied.push(("Via".to_string(), v.to_string()));
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = self.headers.get(name) {
                copied.push((name.to_string(), v.to_string()));
            }
        }
        ResponseBuilder {
            status,
            reason: reason.to_string(),
            copied,
            to_tag: None,
            extra: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl Response {
    pub fn status(&self) -> u16 {
        self.status
    }
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Builds a response; see [`Request::response`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseBuilder {
    status: u16,
    reason: String,
    copied: Vec<(String, String)>,
    to_tag: Option<String>,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
}

impl ResponseBuilder {
    /// Adds a To tag unless the request's To already had one (RFC 3261
    /// §8.2.6.2: a tag on an in-dialog request is kept, not replaced).
    pub fn to_tag(mut self, tag: &str) -> Self {
        self.to_tag = Some(tag.to_string());
        self
    }

    /// Adds a header (Contact, Allow, Accept, Supported, Retry-After,
    /// Reason, ...). Content-Length is ignored: it is always computed.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if !full_header_name(name).eq_ignore_ascii_case("Content-Length") {
            self.extra
                .push((full_header_name(name).to_string(), value.to_string()));
        }
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.extra
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Content-Type"));
        self.extra
            .push(("Content-Type".to_string(), content_type.to_string()));
        self.body = body.to_vec();
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Written straight into one buffer: this runs for every response.
        use std::fmt::Write as _;
        let mut out = String::with_capacity(self.estimated_len());
        let _ = write!(out, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        for (name, value) in &self.copied {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            if let (true, Some(tag)) = (name == "To", &self.to_tag) {
                let has_tag = NameAddr::parse("To", value)
                    .map(|n| n.tag().is_some())
                    .unwrap_or(false);
                if !has_tag {
                    out.push_str(";tag=");
                    out.push_str(tag);
                }
            }
            out.push_str("\r\n");
        }
        for (name, value) in &self.extra {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// About the size of [`to_bytes`](Self::to_bytes), so it allocates once.
    fn estimated_len(&self) -> usize {
        let lines: usize = self
            .copied
            .iter()
            .chain(&self.extra)
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum();
        64 + self.reason.len()
            + lines
            + self.to_tag.as_ref().map_or(0, |t| t.len() + 5)
            + self.body.len()
    }
}

/// Builds a request a UA sends (INVITE, ACK, BYE, CANCEL, INFO, OPTIONS).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBuilder {
    method: Method,
    uri: String,
    via: Option<(String, String, String)>,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: u32,
    max_forwards: u8,
    extra: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RequestBuilder {
    pub fn new(method: Method, request_uri: &str) -> Self {
        RequestBuilder {
            method,
            uri: request_uri.to_string(),
            via: None,
            from: None,
            to: None,
            call_id: None,
            cseq: 1,
            max_forwards: DEFAULT_MAX_FORWARDS,
            extra: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Top Via: `SIP/2.0/<transport> <sent_by>;branch=z9hG4bK<random>`. The
    /// caller supplies the random part (from its seeded RNG) so that an ACK
    /// for a non-2xx or a CANCEL can reuse the INVITE's (RFC 3261 §17.1.1.3,
    /// §9.1).
    pub fn via(mut self, transport: &str, sent_by: &str, branch_random: &str) -> Self {
        self.via = Some((
            transport.to_ascii_uppercase(),
            sent_by.to_string(),
            format!("{MAGIC_COOKIE}{branch_random}"),
        ));
        self
    }

    /// `From: <uri>;tag=tag` (a UAC always sets a From tag, §8.1.1.3).
    pub fn from(mut self, uri: &str, tag: &str) -> Self {
        self.from = Some(format!("<{uri}>;tag={tag}"));
        self
    }

    /// `To: <uri>` plus the remote tag inside a dialog.
    pub fn to(mut self, uri: &str, tag: Option<&str>) -> Self {
        self.to = Some(match tag {
            Some(t) => format!("<{uri}>;tag={t}"),
            None => format!("<{uri}>"),
        });
        self
    }

    pub fn call_id(mut self, call_id: &str) -> Self {
        self.call_id = Some(call_id.to_string());
        self
    }

    /// CSeq number; the CSeq method is always the request's method.
    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = seq;
        self
    }

    pub fn max_forwards(mut self, hops: u8) -> Self {
        self.max_forwards = hops;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        if !full_header_name(name).eq_ignore_ascii_case("Content-Length") {
            self.extra
                .push((full_header_name(name).to_string(), value.to_string()));
        }
        self
    }

    /// `Reason: SIP ;cause=403 ;text="..."` (RFC 3326 §2), e.g. on the BYE
    /// that ends a call whose conference ID was not valid.
    pub fn reason_sip(self, cause: u16, text: &str) -> Self {
        let text = text.replace('\\', "\\\\").replace('"', "\\\"");
        self.header("Reason", &format!("SIP ;cause={cause} ;text=\"{text}\""))
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.extra
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Content-Type"));
        self.extra
            .push(("Content-Type".to_string(), content_type.to_string()));
        self.body = body.to_vec();
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Written straight into one buffer sized up front: a caller under
        // load builds every request of every call here.
        use std::fmt::Write as _;
        let method = self.method.as_str();
        let fixed = 160 + 2 * method.len() + self.uri.len() + self.body.len();
        let via = self
            .via
            .as_ref()
            .map_or(0, |(t, s, b)| t.len() + s.len() + b.len());
        let headers: usize = [&self.from, &self.to, &self.call_id]
            .iter()
            .filter_map(|v| v.as_ref().map(String::len))
            .sum::<usize>()
            + self
                .extra
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>();
        let mut out = String::with_capacity(fixed + via + headers);
        let _ = write!(out, "{method} {} SIP/2.0\r\n", self.uri);
        if let Some((transport, sent_by, branch)) = &self.via {
            let _ = write!(
                out,
                "Via: SIP/2.0/{transport} {sent_by};branch={branch}\r\n"
            );
        }
        let _ = write!(out, "Max-Forwards: {}\r\n", self.max_forwards);
        for (name, value) in [
            ("From", &self.from),
            ("To", &self.to),
            ("Call-ID", &self.call_id),
        ] {
            if let Some(v) = value {
                out.push_str(name);
                out.push_str(": ");
                out.push_str(v);
                out.push_str("\r\n");
            }
        }
        let _ = write!(out, "CSeq: {} {method}\r\n", self.cseq);
        for (name, value) in &self.extra {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Parses one message that arrived as a whole: a UDP datagram, or a message
/// [`super::framing::StreamFramer`] cut out of a stream.
pub fn parse(bytes: &[u8]) -> Result<Message, SipError> {
    // RFC 3261 §7.5: leading CRLFs before the start line are ignored.
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .ok_or_else(|| err(SipErrorKind::Empty))?;
    let bytes = &bytes[start..];
    let (head_end, body_start) =
        find_header_end(bytes).ok_or_else(|| err(SipErrorKind::MissingHeaderEnd))?;
    let head = std::str::from_utf8(&bytes[..head_end]).map_err(|_| err(SipErrorKind::NotUtf8))?;
    let rest = &bytes[body_start..];

    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    let headers = unfold_headers(lines, head.len())?;

    // Work out what kind of message it is before any other check, so that a
    // later error can still be answered when it was a request.
    let start = parse_start_line(start_line);
    let request_skeleton = match &start {
        Ok(StartLine::Request { method, uri }) => Some((method.clone(), uri.clone())),
        Ok(StartLine::Response { .. }) => None,
        Err(_) if !start_line.starts_with("SIP/") => {
            let method = start_line.split(' ').next().unwrap_or_default();
            Some((Method::from_token(method), String::new()))
        }
        Err(_) => None,
    };
    let respondable = |kind: SipErrorKind, body: &[u8]| -> SipError {
        let request = request_skeleton.as_ref().and_then(|(method, uri)| {
            let req = Request {
                method: method.clone(),
                uri: uri.clone(),
                headers: headers.clone(),
                body: body.to_vec(),
            };
            has_response_headers(&req).then(|| Box::new(req))
        });
        SipError { kind, request }
    };

    let body = cut_body(&headers, rest).map_err(|k| respondable(k, &[]))?;
    let start = start.map_err(|k| respondable(k, &body))?;
    match start {
        StartLine::Request { method, uri } => {
            let req = Request {
                method,
                uri,
                headers,
                body,
            };
            validate_request(&req).map_err(|k| {
                let request = has_response_headers(&req).then(|| Box::new(req.clone()));
                SipError { kind: k, request }
            })?;
            Ok(Message::Request(req))
        }
        StartLine::Response { status, reason } => {
            let resp = Response {
                status,
                reason,
                headers,
                body,
            };
            validate_common(&resp).map_err(err)?;
            Ok(Message::Response(resp))
        }
    }
}

/// The Call-ID of a message, read without parsing it: what
/// `parse(bytes)?.call_id()` would give, or `None` when this quick look is
/// not sure (no end of headers, not UTF-8, a folded line, a line without a
/// colon, no Call-ID or two of them). A router uses it to hand the bytes to
/// the call they belong to, which parses them; on `None` it parses them
/// itself.
pub fn peek_call_id(bytes: &[u8]) -> Option<&str> {
    // The router runs this for every datagram: bytes only, no copies, and
    // only lines that could be a Call-ID are looked at closely.
    let start = bytes.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let mut rest = &bytes[start..];
    let mut found: Option<&[u8]> = None;
    let mut after_call_id = false;
    let mut first = true;
    loop {
        // A message without an empty line after its headers does not parse.
        let nl = rest.iter().position(|b| *b == b'\n')?;
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if std::mem::take(&mut first) {
            continue; // the start line
        }
        if line.is_empty() {
            break; // the end of the headers (what find_header_end finds)
        }
        let folded = line[0] == b' ' || line[0] == b'\t';
        if folded {
            if after_call_id {
                return None; // the Call-ID continues: let parse decide
            }
            continue;
        }
        after_call_id = false;
        if !matches!(line[0], b'c' | b'C' | b'i' | b'I') {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        // Whitespace before the colon, as parse allows (§7.3.1 HCOLON).
        let mut name = &line[..colon];
        while let [head @ .., b' ' | b'\t'] = name {
            name = head;
        }
        if name.eq_ignore_ascii_case(b"Call-ID") || name.eq_ignore_ascii_case(b"i") {
            if found.is_some() {
                return None;
            }
            found = Some(&line[colon + 1..]);
            after_call_id = true;
        }
    }
    let value = std::str::from_utf8(found?).ok()?.trim();
    Some(value)
}

enum StartLine {
    Request { method: Method, uri: String },
    Response { status: u16, reason: String },
}

fn parse_start_line(line: &str) -> Result<StartLine, SipErrorKind> {
    let bad = |why| SipErrorKind::BadStartLine {
        line: line.to_string(),
        why,
    };
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2)
        let (version, rest) = rest
            .split_once(' ')
            .ok_or_else(|| bad("expected SIP/2.0 <code> <reason>"))?;
        if version != "2.0" {
            return Err(SipErrorKind::UnsupportedVersion(format!("SIP/{version}")));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("status code must be 3 digits"));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| bad("status code must be 3 digits"))?;
        if !(100..=699).contains(&status) {
            return Err(bad("status code must be 100 to 699"));
        }
        return Ok(StartLine::Response {
            status,
            reason: reason.to_string(),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (§7.1): exactly
    // single spaces (RFC 4475 §3.1.2.8-10 are rejected here).
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad(
            "expected <method> SP <uri> SP SIP/2.0 with single spaces",
        ));
    }
    let (method, uri, version) = (parts[0], parts[1], parts[2]);
    if !is_token(method) {
        return Err(bad("method is not a token"));
    }
    if !version.starts_with("SIP/") {
        return Err(bad("expected SIP/2.0 at the end"));
    }
    if version != "SIP/2.0" {
        return Err(SipErrorKind::UnsupportedVersion(version.to_string()));
    }
    match check_request_uri(uri) {
        Ok(()) => {}
        Err(RequestUriError::UnsupportedScheme) => {
            return Err(SipErrorKind::UnsupportedUriScheme(uri.to_string()));
        }
        Err(RequestUriError::Malformed(why)) => return Err(bad(why)),
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri.to_string(),
    })
}

/// Why a URI can't stand as a Request-URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestUriError {
    Malformed(&'static str),
    /// Not `sip`, `sips` or `tel` (RFC 3261 §8.2.2.1: 416).
    UnsupportedScheme,
}

impl fmt::Display for RequestUriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => f.write_str(why),
            Self::UnsupportedScheme => f.write_str("the scheme is not sip, sips or tel"),
        }
    }
}

/// Whether `uri` can stand as a Request-URI (RFC 3261 §7.1, §19.1): a
/// `sip`, `sips` or `tel` URI, not in `<>`, without whitespace or control
/// characters (a URI escapes those, §19.1.2), and a SIP URI without
/// `?headers`. The request line parser checks this, and so does a dialog
/// for the Contact it will send its requests to.
pub fn check_request_uri(uri: &str) -> Result<(), RequestUriError> {
    use RequestUriError::Malformed;
    if uri.starts_with('<') {
        return Err(Malformed("Request-URI must not be enclosed in <>"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Malformed(
            "Request-URI has whitespace or control characters: escape them (%20)",
        ));
    }
    let scheme = match uri.split_once(':') {
        Some((s, _)) if !s.is_empty() => s.to_ascii_lowercase(),
        _ => return Err(Malformed("Request-URI has no scheme")),
    };
    match scheme.as_str() {
        "sip" | "sips" => {
            // RFC 3261 §19.1.5: headers are not allowed in a Request-URI.
            // A '?' in the user part is legal (RFC 4475 §3.1.1.2), so look
            // only after the userinfo.
            let host_part = uri.rsplit_once('@').map(|(_, h)| h).unwrap_or(uri);
            if host_part.contains('?') {
                return Err(Malformed("Request-URI must not carry ?headers"));
            }
            Ok(())
        }
        "tel" => Ok(()),
        _ => Err(RequestUriError::UnsupportedScheme),
    }
}

/// Returns (end of headers, start of body), tolerating bare LF.
pub(crate) fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let next = bytes.get(i + 1).copied();
            if next == Some(b'\n') {
                return Some((i, i + 2));
            }
            if next == Some(b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// RFC 3261 §7.3.1: a line starting with SP or HT continues the previous
/// header; the CRLF and leading whitespace become one SP. Also expands
/// compact names and drops whitespace before the colon.
fn unfold_headers<'a>(
    lines: impl Iterator<Item = &'a str>,
    size: usize,
) -> Result<Headers, SipError> {
    let mut headers = Headers {
        text: String::with_capacity(size),
        lines: Vec::with_capacity(16),
    };
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            if !headers.continue_last(line.trim()) {
                return Err(err(SipErrorKind::BadHeaderLine {
                    line: line.to_string(),
                    why: "continuation line before any header",
                }));
            }
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| {
            err(SipErrorKind::BadHeaderLine {
                line: line.to_string(),
                why: "expected name: value",
            })
        })?;
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(err(SipErrorKind::BadHeaderLine {
                line: line.to_string(),
                why: "header name is not a token",
            }));
        }
        headers.push(full_header_name(name), value.trim());
    }
    Ok(headers)
}

/// RFC 3261 §18.3 and §20.14: the body is exactly Content-Length bytes;
/// extra bytes after it are ignored (RFC 4475 §3.1.1.8), fewer are an error
/// (§3.1.2.2). Without Content-Length (UDP only) the body is the rest.
fn cut_body(headers: &Headers, rest: &[u8]) -> Result<Vec<u8>, SipErrorKind> {
    match content_length(headers)? {
        Some(n) => {
            if n > rest.len() as u64 {
                return Err(SipErrorKind::ContentLengthTooLarge {
                    declared: n,
                    available: rest.len(),
                });
            }
            Ok(rest[..n as usize].to_vec())
        }
        None => Ok(rest.to_vec()),
    }
}

/// The one Content-Length value, if any; several different values or a
/// non-numeric one are errors (RFC 4475 §3.1.2.3, §3.3.9).
pub(crate) fn content_length(headers: &Headers) -> Result<Option<u64>, SipErrorKind> {
    let mut found: Option<u64> = None;
    for v in headers.get_all("Content-Length") {
        let n = parse_content_length(v)?;
        match found {
            Some(prev) if prev != n => {
                return Err(SipErrorKind::BadContentLength(format!(
                    "{prev} and {n} in two headers"
                )));
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

pub(crate) fn parse_content_length(v: &str) -> Result<u64, SipErrorKind> {
    let v = v.trim();
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SipErrorKind::BadContentLength(v.to_string()));
    }
    v.parse()
        .map_err(|_| SipErrorKind::BadContentLength(v.to_string()))
}

fn parse_cseq(v: &str) -> Result<CSeq, SipErrorKind> {
    let bad = |why| SipErrorKind::BadHeaderValue {
        header: "CSeq",
        value: v.to_string(),
        why,
    };
    let mut parts = v.split_whitespace();
    let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected <number> <method>"));
    };
    if !num.bytes().all(|b| b.is_ascii_digit()) || num.len() > 20 {
        return Err(bad("sequence number must be decimal digits"));
    }
    // RFC 3261 §8.1.1.5: the number must be below 2**31; accept to 2**32-1
    // as many stacks do, reject beyond (RFC 4475 §3.1.2.4).
    let seq = num
        .parse::<u32>()
        .map_err(|_| bad("sequence number larger than 2**32-1"))?;
    if !is_token(method) {
        return Err(bad("method is not a token"));
    }
    Ok(CSeq {
        seq,
        method: Method::from_token(method),
    })
}

/// A response copies these five verbatim (RFC 3261 §8.2.6.2), so they only
/// need to be present, not valid: RFC 4475 §3.1.2.1 and §3.1.2.4 expect a 400
/// to a request whose Via or CSeq is malformed.
fn has_response_headers(req: &Request) -> bool {
    ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .all(|h| req.headers.get(h).is_some_and(|v| !v.is_empty()))
}

/// Checks shared by requests and responses: the headers a transaction needs
/// are there and parse.
fn validate_common(msg: &impl SipHeaders) -> Result<(), SipErrorKind> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if msg.header(name).is_none() {
            return Err(SipErrorKind::MissingHeader(name));
        }
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        // RFC 4475 §3.3.8: these appear once; two Call-IDs is not a request
        // anyone can answer correctly.
        if msg.headers().get_all(name).count() > 1 {
            return Err(SipErrorKind::BadHeaderValue {
                header: match name {
                    "From" => "From",
                    "To" => "To",
                    "Call-ID" => "Call-ID",
                    _ => "CSeq",
                },
                value: msg.header(name).unwrap_or_default().to_string(),
                why: "header appears more than once",
            });
        }
    }
    if msg.call_id().map(str::is_empty).unwrap_or(true) {
        return Err(SipErrorKind::MissingHeader("Call-ID"));
    }
    for v in msg.vias() {
        Via::parse(v)?;
    }
    NameAddr::parse("From", msg.header("From").unwrap_or_default())?;
    NameAddr::parse("To", msg.header("To").unwrap_or_default())?;
    parse_cseq(msg.header("CSeq").unwrap_or_default())?;
    for c in msg.headers().values("Contact") {
        if c != "*" {
            NameAddr::parse("Contact", c)?;
        }
    }
    Ok(())
}

fn validate_request(req: &Request) -> Result<(), SipErrorKind> {
    validate_common(req)?;
    let cseq = parse_cseq(req.header("CSeq").unwrap_or_default())?;
    // RFC 3261 §8.1.1.5: the CSeq method matches the request method
    // (RFC 4475 §3.1.2.17/18).
    if cseq.method != req.method {
        return Err(SipErrorKind::MethodMismatch {
            method: req.method.to_string(),
            cseq: cseq.method.to_string(),
        });
    }
    Ok(())
}

fn uri_user(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    if scheme.eq_ignore_ascii_case("tel") {
        let number = rest.split(';').next().unwrap_or_default();
        return (!number.is_empty()).then_some(number);
    }
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    // userinfo ends at the last '@' (the user part may hold ';' params,
    // RFC 4475 §3.1.1.9); a password follows the first ':'.
    let at = rest.rfind('@')?;
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or_default();
    (!user.is_empty()).then_some(user)
}

fn parse_host_port(s: &str) -> Option<SentBy> {
    if s.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &s[..close + 2];
        let after = &rest[close + 1..];
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some(SentBy {
        host: host.to_string(),
        port,
    })
}

/// `a=b ; c ; d = e` → [(a, Some(b)), (c, None), (d, Some(e))]; `None`
/// when a parameter is empty (RFC 4475 §3.1.2.1 `;;,;,,`).
fn parse_params(s: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for p in s.split(';') {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        match p.split_once('=') {
            Some((n, v)) => {
                let n = n.trim();
                if n.is_empty() {
                    return None;
                }
                out.push((n.to_ascii_lowercase(), Some(v.trim().to_string())));
            }
            None => out.push((p.to_ascii_lowercase(), None)),
        }
    }
    Some(out)
}

/// Splits a header value on commas outside quotes and `<>`; an empty
/// element is kept so that validation sees it.
/// Splits one header value at the commas that separate entries (RFC 3261
/// §7.3.1): not inside a quoted string or `<…>`. Entries are trimmed.
pub fn split_commas(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quote, mut escaped, mut in_angle) = (false, false, false);
    let mut start = 0;
    for (i, ch) in v.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_quote = false;
            }
            continue;
        }
        match ch {
            '"' => in_quote = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            ',' if !in_angle => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out
}

/// RFC 3261 §25.1 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(bytes: &[u8]) -> Request {
        match parse(bytes) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:+15551234567@bridge.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n\
Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKdef\r\n\
Record-Route: <sip:proxy.example.com;lr>\r\n\
Max-Forwards: 69\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
To: <sip:+15551234567@bridge.example.com>\r\n\
Call-ID: call-1@192.0.2.1\r\n\
CSeq: 7 INVITE\r\n\
Contact: <sip:alice@192.0.2.1:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\r";

    #[test]
    fn parses_the_fields_a_uas_needs() {
        let r = req(INVITE.as_bytes());
        assert_eq!(r.method(), &Method::Invite);
        assert_eq!(r.uri_user(), Some("+15551234567"));
        assert_eq!(r.call_id(), Some("call-1@192.0.2.1"));
        assert_eq!(r.from_tag().as_deref(), Some("a1"));
        assert_eq!(r.to_tag(), None);
        assert_eq!(
            r.cseq(),
            Some(CSeq {
                seq: 7,
                method: Method::Invite
            })
        );
        assert_eq!(r.branch().as_deref(), Some("z9hG4bKabc"));
        assert_eq!(
            r.sent_by(),
            Some(SentBy {
                host: "192.0.2.1".into(),
                port: Some(5060)
            })
        );
        assert_eq!(r.vias().len(), 2);
        assert_eq!(r.contact_uri().as_deref(), Some("sip:alice@192.0.2.1:5060"));
        assert_eq!(r.record_routes(), vec!["<sip:proxy.example.com;lr>"]);
        assert_eq!(r.content_type(), Some("application/sdp"));
        assert_eq!(r.body(), b"v=0\r");
        assert_eq!(r.max_forwards(), Some(69));
        assert_eq!(
            r.uri_host_port().map(|h| h.host),
            Some("bridge.example.com".into())
        );
    }

    #[test]
    fn tel_uri_user_is_the_number() {
        let msg = INVITE.replace(
            "sip:+15551234567@bridge.example.com;user=phone",
            "tel:+1-555-123-4567;phone-context=example.com",
        );
        assert_eq!(req(msg.as_bytes()).uri_user(), Some("+1-555-123-4567"));
    }

    #[test]
    fn compact_names_expand_and_header_lookup_accepts_both_forms() {
        let msg = "OPTIONS sip:bridge@example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>\r\ni: cid\r\n\
CSeq: 1 OPTIONS\r\nm: <sip:a@h>\r\nk: timer\r\nc: text/plain\r\nl: 2\r\n\r\nhi";
        let r = req(msg.as_bytes());
        assert_eq!(r.call_id(), Some("cid"));
        assert_eq!(r.header("i"), Some("cid"));
        assert_eq!(r.header("CALL-id"), Some("cid"));
        assert_eq!(r.header("Supported"), Some("timer"));
        assert_eq!(r.header("s"), None);
        assert_eq!(r.contact_uri().as_deref(), Some("sip:a@h"));
        assert_eq!(r.content_type(), Some("text/plain"));
        assert_eq!(r.body(), b"hi");
        assert_eq!(r.branch().as_deref(), Some("z9hG4bK1"));
    }

    #[test]
    fn folded_lines_are_unfolded_into_one_value() {
        let msg = "OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n ;branch=z9hG4bK2\r\n\
From: <sip:a@example.com>\r\n\t;tag=9\r\nTo: <sip:b@example.com>\r\nCall-ID: x\r\n\
CSeq: 3\r\n  OPTIONS\r\nSubject: one\r\n two\r\nContent-Length: 0\r\n\r\n";
        let r = req(msg.as_bytes());
        assert_eq!(r.branch().as_deref(), Some("z9hG4bK2"));
        assert_eq!(r.from_tag().as_deref(), Some("9"));
        assert_eq!(r.cseq().map(|c| c.seq), Some(3));
        assert_eq!(r.header("Subject"), Some("one two"));
    }

    #[test]
    fn whitespace_before_the_colon_is_accepted() {
        let msg = "BYE sip:b@example.com SIP/2.0\r\nVia  : SIP/2.0/UDP h;branch=z9hG4bK3\r\n\
From\t: <sip:a@example.com>;tag=1\r\nTo : <sip:b@example.com>;tag=2\r\nCall-ID   :   y\r\n\
CSeq : 4 BYE\r\nContent-Length  : 0\r\n\r\n";
        let r = req(msg.as_bytes());
        assert_eq!(r.call_id(), Some("y"));
        assert_eq!(r.to_tag().as_deref(), Some("2"));
        assert_eq!(r.method(), &Method::Bye);
    }

    #[test]
    fn content_length_cuts_the_body_and_ignores_trailing_bytes() {
        let msg = INVITE.replace("Content-Length: 4", "Content-Length: 2");
        assert_eq!(req(msg.as_bytes()).body(), b"v=");
    }

    #[test]
    fn missing_content_length_on_a_datagram_takes_the_rest() {
        let msg = INVITE.replace("Content-Length: 4\r\n", "");
        assert_eq!(req(msg.as_bytes()).body(), b"v=0\r");
    }

    #[test]
    fn content_length_larger_than_the_data_is_a_400_with_a_response() {
        let msg = INVITE.replace("Content-Length: 4", "Content-Length: 400");
        let e = parse(msg.as_bytes()).expect_err("too long");
        assert_eq!(e.response_code(), 400);
        assert_eq!(e.reason_phrase(), "Content-Length larger than the message");
        let resp = e.error_response().expect("headers were complete");
        let text = String::from_utf8(resp.to_bytes()).expect("utf-8");
        assert!(text.starts_with("SIP/2.0 400 Content-Length larger than the message\r\n"));
        assert!(text.contains("Call-ID: call-1@192.0.2.1\r\n"));
    }

    #[test]
    fn broken_request_without_call_id_is_dropped() {
        let msg = INVITE.replace("Call-ID: call-1@192.0.2.1\r\n", "");
        let e = parse(msg.as_bytes()).expect_err("no call-id");
        assert_eq!(e.kind(), &SipErrorKind::MissingHeader("Call-ID"));
        assert!(!e.can_respond());
        assert!(e.error_response().is_none());
    }

    #[test]
    fn response_copies_vias_from_to_callid_cseq_and_adds_to_tag() {
        let r = req(INVITE.as_bytes());
        let bytes = r
            .response(486, "Busy Here")
            .to_tag("b7")
            .header("Retry-After", "30")
            .to_bytes();
        let resp = match parse(&bytes) {
            Ok(Message::Response(resp)) => resp,
            other => panic!("expected a response, got {other:?}"),
        };
        assert_eq!(resp.status(), 486);
        assert_eq!(resp.reason(), "Busy Here");
        assert_eq!(resp.vias(), r.vias());
        assert_eq!(resp.to_tag().as_deref(), Some("b7"));
        assert_eq!(resp.from_tag().as_deref(), Some("a1"));
        assert_eq!(resp.cseq(), r.cseq());
        assert_eq!(resp.call_id(), r.call_id());
        assert_eq!(resp.header("Retry-After"), Some("30"));
        assert_eq!(resp.header("Content-Length"), Some("0"));
    }

    #[test]
    fn response_keeps_an_existing_to_tag_and_counts_the_body() {
        let msg = INVITE.replace(
            "To: <sip:+15551234567@bridge.example.com>",
            "To: <sip:+15551234567@bridge.example.com>;tag=old",
        );
        let r = req(msg.as_bytes());
        let body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\n";
        let bytes = r
            .response(200, "OK")
            .to_tag("new")
            .header("Content-Length", "999")
            .body("application/sdp", body)
            .to_bytes();
        let Ok(Message::Response(resp)) = parse(&bytes) else {
            panic!("response did not parse")
        };
        assert_eq!(resp.to_tag().as_deref(), Some("old"));
        assert_eq!(resp.body(), body);
        assert_eq!(resp.headers().get_all("Content-Length").count(), 1);
    }

    #[test]
    fn bye_with_reason_parses_back() {
        let bytes = RequestBuilder::new(Method::Bye, "sip:alice@192.0.2.1:5060")
            .via("udp", "198.51.100.7:5060", "r4nd0m")
            .from("sip:bridge@example.com", "b7")
            .to("sip:alice@example.com", Some("a1"))
            .call_id("call-1@192.0.2.1")
            .cseq(2)
            .reason_sip(403, "Conference ID not valid")
            .to_bytes();
        let r = req(&bytes);
        assert_eq!(r.method(), &Method::Bye);
        assert_eq!(r.branch().as_deref(), Some("z9hG4bKr4nd0m"));
        assert_eq!(
            r.sent_by().map(|s| s.to_string()).as_deref(),
            Some("198.51.100.7:5060")
        );
        assert_eq!(r.max_forwards(), Some(70));
        assert_eq!(
            r.header("Reason"),
            Some("SIP ;cause=403 ;text=\"Conference ID not valid\"")
        );
        assert_eq!(r.cseq().map(|c| (c.seq, c.method)), Some((2, Method::Bye)));
        assert_eq!(r.header("Content-Length"), Some("0"));
    }

    #[test]
    fn info_with_body_has_correct_content_length() {
        let body = b"Signal=5\r\nDuration=160\r\n";
        let bytes = RequestBuilder::new(Method::Info, "sip:bridge@example.com")
            .via("TCP", "192.0.2.1", "x1")
            .from("sip:a@example.com", "1")
            .to("sip:b@example.com", Some("2"))
            .call_id("c")
            .cseq(5)
            .body("application/dtmf-relay", body)
            .to_bytes();
        let r = req(&bytes);
        assert_eq!(r.body(), body);
        assert_eq!(r.header("l"), Some(body.len().to_string().as_str()));
    }

    #[test]
    fn extension_methods_are_kept_verbatim() {
        assert_eq!(Method::from_token("invite"), Method::Other("invite".into()));
        assert_eq!(Method::from_token("CANCEL"), Method::Cancel);
        assert_eq!(Method::Other("FOO".into()).as_str(), "FOO");
    }

    #[test]
    fn bad_version_is_505_and_mismatched_cseq_is_400() {
        let e = parse(
            INVITE
                .replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia")
                .as_bytes(),
        )
        .expect_err("version");
        assert_eq!(e.response_code(), 505);
        assert!(e.can_respond());
        let e = parse(INVITE.replace("CSeq: 7 INVITE", "CSeq: 7 BYE").as_bytes())
            .expect_err("mismatch");
        assert_eq!(e.response_code(), 400);
    }

    #[test]
    fn truncated_and_empty_input_are_errors() {
        assert_eq!(parse(b"").expect_err("empty").kind(), &SipErrorKind::Empty);
        assert_eq!(
            parse(b"\r\n\r\n").expect_err("empty").kind(),
            &SipErrorKind::Empty
        );
        for cut in 0..INVITE.len() - 4 {
            let _ = parse(&INVITE.as_bytes()[..cut]);
        }
        let e = parse(&INVITE.as_bytes()[..100]).expect_err("truncated");
        assert_eq!(e.kind(), &SipErrorKind::MissingHeaderEnd);
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4475);
        let alphabet: &[u8] =
            b"INVITE SIP/2.0 sip:@;=<>\"\\,:\r\n\t vVfFtTiIlL0123456789-z9hG4bK\x00\xff";
        for _ in 0..3000 {
            let len = rng.random_range(0..300);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let _ = parse(&bytes);
            // And mutations of a real message.
            let mut m = INVITE.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..m.len());
                m[i] = alphabet[rng.random_range(0..alphabet.len())];
            }
            match parse(&m) {
                Err(e) => {
                    let _ = e.error_response().map(|r| r.to_bytes());
                }
                // rsip reads the URI host: it must not panic either.
                Ok(Message::Request(r)) => {
                    let _ = r.uri_host_port();
                }
                Ok(Message::Response(_)) => {}
            }
        }
    }

    /// Whatever `peek_call_id` answers must be what the parse finds, or a
    /// call would get another call's messages.
    #[test]
    fn peek_call_id_agrees_with_parse_or_abstains() {
        use rand::{RngExt, SeedableRng};
        let parsed_id = |bytes: &[u8]| match parse(bytes) {
            Ok(Message::Request(r)) => r.call_id().map(str::to_owned),
            Ok(Message::Response(r)) => r.call_id().map(str::to_owned),
            Err(_) => None,
        };
        assert_eq!(
            peek_call_id(INVITE.as_bytes()),
            parsed_id(INVITE.as_bytes()).as_deref()
        );
        assert!(peek_call_id(INVITE.as_bytes()).is_some());
        let compact = INVITE.replace("Call-ID:", "i :");
        assert_eq!(
            peek_call_id(compact.as_bytes()),
            parsed_id(compact.as_bytes()).as_deref()
        );
        assert!(peek_call_id(compact.as_bytes()).is_some());
        // Two Call-IDs, or a folded line: no answer, parse decides.
        let twice = INVITE.replace("Call-ID:", "Call-ID: other\r\nCall-ID:");
        assert_eq!(peek_call_id(twice.as_bytes()), None);
        let folded = INVITE.replace("Call-ID:", "Call-ID:\r\n ");
        assert_eq!(peek_call_id(folded.as_bytes()), None);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            files += 1;
            if let (Some(peeked), parsed) = (peek_call_id(&bytes), parsed_id(&bytes))
                && parsed.is_some()
            {
                assert_eq!(Some(peeked), parsed.as_deref());
            }
        }
        assert!(files > 10, "the torture messages are there");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3261);
        let alphabet: &[u8] = b"iI:Call-D \r\n\t;=abc";
        for _ in 0..3000 {
            let mut m = INVITE.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..m.len());
                m[i] = alphabet[rng.random_range(0..alphabet.len())];
            }
            if let (Some(peeked), Some(parsed)) = (peek_call_id(&m), parsed_id(&m)) {
                assert_eq!(peeked, parsed, "{}", String::from_utf8_lossy(&m));
            }
        }
    }
}
