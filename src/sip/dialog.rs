//! SIP dialogs (RFC 3261 §12): tags, route set, CSeq, without IO.
//!
//! What is here: the dialog state of a UAS (built from the INVITE it
//! answers, §12.1.1) and of a UAC (built from the 2xx it received,
//! §12.1.2), the check that an in-dialog request belongs to the dialog
//! (otherwise 481, §12.2.2) and keeps the CSeq order (otherwise 500), and the
//! parts of the requests this side sends in the dialog (BYE with an RFC 3326
//! Reason, §12.2.1.1 for the Request-URI and Route headers).
//!
//! What is not: no message parsing or formatting. Inputs are plain fields
//! that the message layer took out of a message; outputs ([`OutgoingRequest`])
//! are plain parts that it formats. No Via, branch or transaction handling
//! either (that is [`super::transaction`]), no clock, and randomness (the
//! local tag) comes from an RNG the caller owns.

use std::fmt;

/// Errors about in-dialog requests and dialog creation; each knows the
/// response the offending request gets, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error(
        "request matches no dialog here (call-id '{call_id}', from tag '{from_tag}', to tag '{to_tag}'): an in-dialog request needs this dialog's Call-ID and tags (RFC 3261 §12.2.2)"
    )]
    UnknownDialog {
        call_id: String,
        from_tag: String,
        to_tag: String,
    },
    #[error("{method} arrived after the dialog ended with a BYE: no request is accepted in it")]
    Terminated { method: String },
    #[error(
        "{method} has CSeq {cseq}, lower than {last} already seen in this dialog: CSeq must increase (RFC 3261 §12.2.2)"
    )]
    CseqOutOfOrder {
        method: String,
        cseq: u32,
        last: u32,
    },
    #[error(
        "an ACK has CSeq {cseq} but the INVITE it acknowledges had {invite}: they must be equal (RFC 3261 §13.2.2.4)"
    )]
    AckCseqMismatch { cseq: u32, invite: u32 },
    #[error(
        "{message} has no Contact URI: a dialog-creating message needs one (RFC 3261 §8.1.1.8, §12.1)"
    )]
    MissingContact { message: &'static str },
    #[error(
        "{message} has Contact URI {uri:?}, which can't be the Request-URI of a later request ({why}): give a sip or sips URI (RFC 3261 §8.1.1.8)"
    )]
    BadContact {
        message: &'static str,
        uri: String,
        why: crate::sip::message::RequestUriError,
    },
    #[error("{message} has an empty Call-ID: every SIP message needs one (RFC 3261 §8.1.1.4)")]
    EmptyCallId { message: &'static str },
    #[error("{message} has an empty {field} URI: give the URI of the header")]
    EmptyUri {
        message: &'static str,
        field: &'static str,
    },
    #[error(
        "{message} has {field} URI {uri:?} with whitespace, control characters, <, > or \": a URI escapes them (RFC 3261 §19.1.2, §25.1)"
    )]
    BadUri {
        message: &'static str,
        field: &'static str,
        uri: String,
    },
    #[error("{message} CSeq {cseq} is too large: a CSeq must be below 2^31 (RFC 3261 §8.1.1.5)")]
    CseqTooLarge { message: &'static str, cseq: u32 },
}

impl DialogError {
    /// The response to the request this error is about; `None` when there
    /// is none to give (an ACK is never answered; a UAC does not answer a 2xx).
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::UnknownDialog { .. } | Self::Terminated { .. } => Some(481),
            // RFC 3261 §12.2.2: out-of-order requests get 500 (Server Internal Error).
            Self::CseqOutOfOrder { .. } => Some(500),
            Self::AckCseqMismatch { .. } => None,
            Self::MissingContact { message }
            | Self::BadContact { message, .. }
            | Self::EmptyCallId { message }
            | Self::EmptyUri { message, .. }
            | Self::BadUri { message, .. }
            | Self::CseqTooLarge { message, .. } => (*message == UAS_MESSAGE).then_some(400),
        }
    }
}

const UAS_MESSAGE: &str = "INVITE";
const UAC_MESSAGE: &str = "2xx response";

/// Identifies a dialog at this endpoint (RFC 3261 §12): Call-ID and the
/// local and remote tags. An empty tag stands for the null tag of an RFC
/// 2543 peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a request received here belongs to (§12.2.2): the To tag
    /// is this side's tag, the From tag the peer's.
    pub fn of_incoming(call_id: &str, from_tag: Option<&str>, to_tag: Option<&str>) -> DialogId {
        DialogId {
            call_id: call_id.trim().to_owned(),
            local_tag: to_tag.unwrap_or("").trim().to_owned(),
            remote_tag: from_tag.unwrap_or("").trim().to_owned(),
        }
    }
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call-id {} local tag {} remote tag {}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// The fields of an INVITE a UAS builds its dialog from (§12.1.1).
#[derive(Debug, Clone, Copy, Default)]
pub struct UasInvite<'a> {
    pub call_id: &'a str,
    /// The From URI (the remote URI).
    pub from_uri: &'a str,
    /// `None` for an RFC 2543 caller that sent no tag.
    pub from_tag: Option<&'a str>,
    /// The To URI (the local URI).
    pub to_uri: &'a str,
    /// The Contact URI (the remote target).
    pub contact: Option<&'a str>,
    /// The Record-Route header values in the order they appear; a value
    /// may hold several comma-separated entries.
    pub record_route: &'a [&'a str],
    pub cseq: u32,
}

/// The fields of a 2xx (and of the INVITE it answers) a UAC builds its dialog from (§12.1.2).
#[derive(Debug, Clone, Copy, Default)]
pub struct UacAnswer<'a> {
    pub call_id: &'a str,
    /// The From URI of the INVITE (the local URI).
    pub from_uri: &'a str,
    /// The From tag of the INVITE (the local tag).
    pub from_tag: &'a str,
    /// The To URI (the remote URI).
    pub to_uri: &'a str,
    /// The To tag of the 2xx; `None` for an RFC 2543 UAS that sent none.
    pub to_tag: Option<&'a str>,
    /// The Contact URI of the 2xx (the remote target).
    pub contact: Option<&'a str>,
    /// The Record-Route header values of the 2xx, in the order they appear.
    pub record_route: &'a [&'a str],
    /// The CSeq of the INVITE.
    pub cseq: u32,
}

/// The fields of a request received in (or aimed at) a dialog.
#[derive(Debug, Clone, Copy, Default)]
pub struct InDialogRequest<'a> {
    pub method: &'a str,
    pub call_id: &'a str,
    pub from_tag: Option<&'a str>,
    pub to_tag: Option<&'a str>,
    pub cseq: u32,
}

/// RFC 3326 Reason header: why a BYE or CANCEL was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `SIP` or `Q.850`.
    pub protocol: ReasonProtocol,
    pub cause: u16,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonProtocol {
    /// The cause is a SIP status code.
    Sip,
    /// The cause is an ITU-T Q.850 cause value.
    Q850,
}

impl Reason {
    /// A reason that is a SIP status (`SIP ;cause=403 ;text="..."`).
    pub fn sip(cause: u16, text: impl Into<String>) -> Reason {
        Reason {
            protocol: ReasonProtocol::Sip,
            cause,
            text: Some(text.into()),
        }
    }

    /// A reason that is a Q.850 cause (`Q.850 ;cause=16 ;text="..."`).
    pub fn q850(cause: u16, text: impl Into<String>) -> Reason {
        Reason {
            protocol: ReasonProtocol::Q850,
            cause,
            text: Some(text.into()),
        }
    }

    /// The header value (RFC 3326 §2). The text is a quoted-string: quotes
    /// and backslashes are escaped, and control characters (CR, LF among
    /// them, which would end the header) are dropped.
    pub fn header_value(&self) -> String {
        let protocol = match self.protocol {
            ReasonProtocol::Sip => "SIP",
            ReasonProtocol::Q850 => "Q.850",
        };
        let mut value = format!("{protocol} ;cause={}", self.cause);
        if let Some(text) = &self.text {
            value.push_str(" ;text=\"");
            for c in text.chars().filter(|c| !c.is_control()) {
                if c == '"' || c == '\\' {
                    value.push('\\');
                }
                value.push(c);
            }
            value.push('"');
        }
        value
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header_value())
    }
}

/// A request this side sends in a dialog, as parts for the message layer
/// to format. It adds Via (with a new branch), Max-Forwards and Content-Length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    pub method: String,
    pub request_uri: String,
    /// Route header values, in order (`<sip:proxy;lr>`).
    pub route: Vec<String>,
    /// From header value: the local URI and tag.
    pub from: String,
    /// To header value: the remote URI and tag.
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    /// Reason header value (RFC 3326), for a BYE.
    pub reason: Option<String>,
}

/// Which side of the dialog this endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Uas,
    Uac,
}

/// A dialog's state at this endpoint (RFC 3261 §12).
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    role: Role,
    local_uri: String,
    remote_uri: String,
    remote_target: String,
    route_set: Vec<String>,
    /// The highest CSeq seen from the peer; `None` until a request arrives
    /// (a UAC dialog starts without one, §12.1.2).
    remote_cseq: Option<u32>,
    /// The CSeq of this side's last request; `None` until it sends one
    /// (a UAS dialog starts without one, §12.1.1).
    local_cseq: Option<u32>,
    /// The CSeq of the INVITE an ACK must carry.
    invite_cseq: u32,
    terminated: bool,
}

/// CSeq numbers stay below 2^31 (RFC 3261 §8.1.1.5).
const CSEQ_LIMIT: u32 = 1 << 31;

impl Dialog {
    /// The UAS dialog for the INVITE this side answers with a tagged 2xx
    /// (or 1xx) response (RFC 3261 §12.1.1). The local tag is 64 random bits
    /// from `rng` (§19.3 asks for at least 32).
    pub fn uas(rng: &mut impl rand::Rng, invite: &UasInvite<'_>) -> Result<Dialog, DialogError> {
        let call_id = non_empty_call_id(invite.call_id, UAS_MESSAGE)?;
        let remote_target = contact_uri(invite.contact, UAS_MESSAGE)?;
        let remote_uri = uri_field(invite.from_uri, UAS_MESSAGE, "From")?;
        let local_uri = uri_field(invite.to_uri, UAS_MESSAGE, "To")?;
        if invite.cseq >= CSEQ_LIMIT {
            return Err(DialogError::CseqTooLarge {
                message: UAS_MESSAGE,
                cseq: invite.cseq,
            });
        }
        let local_tag = format!("{:016x}", rng.next_u64());
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag: invite.from_tag.unwrap_or("").trim().to_owned(),
            },
            role: Role::Uas,
            local_uri,
            remote_uri,
            remote_target,
            // §12.1.1: the Record-Route URIs of the request, in order.
            route_set: split_routes(invite.record_route),
            remote_cseq: Some(invite.cseq),
            local_cseq: None,
            invite_cseq: invite.cseq,
            terminated: false,
        })
    }

    /// The UAC dialog for a 2xx received to this side's INVITE (RFC 3261 §12.1.2).
    pub fn uac(answer: &UacAnswer<'_>) -> Result<Dialog, DialogError> {
        let call_id = non_empty_call_id(answer.call_id, UAC_MESSAGE)?;
        let remote_target = contact_uri(answer.contact, UAC_MESSAGE)?;
        let local_uri = uri_field(answer.from_uri, UAC_MESSAGE, "From")?;
        let remote_uri = uri_field(answer.to_uri, UAC_MESSAGE, "To")?;
        if answer.cseq >= CSEQ_LIMIT {
            return Err(DialogError::CseqTooLarge {
                message: UAC_MESSAGE,
                cseq: answer.cseq,
            });
        }
        let mut route_set = split_routes(answer.record_route);
        // §12.1.2: the Record-Route URIs of the response, in reverse order.
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: answer.from_tag.trim().to_owned(),
                remote_tag: answer.to_tag.unwrap_or("").trim().to_owned(),
            },
            role: Role::Uac,
            local_uri,
            remote_uri,
            remote_target,
            route_set,
            remote_cseq: None,
            local_cseq: Some(answer.cseq),
            invite_cseq: answer.cseq,
            terminated: false,
        })
    }

    pub fn id(&self) -> &DialogId {
        &self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The tag this side puts in its To (UAS) or From (UAC) header.
    pub fn local_tag(&self) -> &str {
        &self.id.local_tag
    }

    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The route set, in the order Route headers list it.
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    pub fn remote_cseq(&self) -> Option<u32> {
        self.remote_cseq
    }

    pub fn local_cseq(&self) -> Option<u32> {
        self.local_cseq
    }

    /// Whether a BYE ended the dialog (received or sent).
    pub fn is_terminated(&self) -> bool {
        self.terminated
    }

    /// Whether `request` carries this dialog's Call-ID and tags (§12.2.2).
    pub fn matches(&self, request: &InDialogRequest<'_>) -> bool {
        DialogId::of_incoming(request.call_id, request.from_tag, request.to_tag) == self.id
    }

    /// Checks an in-dialog request received here and updates the dialog
    /// (RFC 3261 §12.2.2): a request of another dialog gets 481, one with a
    /// CSeq lower than the last gets 500, an ACK must carry the INVITE's
    /// CSeq, a BYE ends the dialog (the TU answers it 200 and tears down).
    /// A CANCEL carries the CSeq of the request it cancels and is matched by
    /// the transaction layer, so its CSeq is not checked here.
    pub fn handle_request(&mut self, request: &InDialogRequest<'_>) -> Result<(), DialogError> {
        if !self.matches(request) {
            return Err(DialogError::UnknownDialog {
                call_id: request.call_id.to_owned(),
                from_tag: request.from_tag.unwrap_or("").to_owned(),
                to_tag: request.to_tag.unwrap_or("").to_owned(),
            });
        }
        let method = request.method.trim();
        if method == "ACK" {
            if request.cseq != self.invite_cseq {
                return Err(DialogError::AckCseqMismatch {
                    cseq: request.cseq,
                    invite: self.invite_cseq,
                });
            }
            return Ok(());
        }
        if self.terminated {
            return Err(DialogError::Terminated {
                method: method.to_owned(),
            });
        }
        if method == "CANCEL" {
            return Ok(());
        }
        if let Some(last) = self.remote_cseq
            && request.cseq < last
        {
            return Err(DialogError::CseqOutOfOrder {
                method: method.to_owned(),
                cseq: request.cseq,
                last,
            });
        }
        self.remote_cseq = Some(request.cseq);
        match method {
            "INVITE" => self.invite_cseq = request.cseq,
            "BYE" => self.terminated = true,
            _ => {}
        }
        Ok(())
    }

    /// The parts of a new request `method` in this dialog (RFC 3261
    /// §12.2.1.1), with the next local CSeq. Route and Request-URI follow
    /// the route set: loose routing (first route has `lr`) sends to the
    /// remote target through all routes; strict routing sends to the first
    /// route and puts the remote target last.
    pub fn request(&mut self, method: &str) -> OutgoingRequest {
        // §12.1.1: a UAS has no local CSeq until it sends; any start below
        // 2^31 is allowed (§8.1.1.5). Past 2^31 − 1 it stays there: a dialog
        // does not live for two billion requests.
        let cseq = match self.local_cseq {
            None => 1,
            Some(c) => c.saturating_add(1).min(CSEQ_LIMIT - 1),
        };
        self.local_cseq = Some(cseq);
        let (request_uri, route) = match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if has_lr(first) => (self.remote_target.clone(), self.route_set.clone()),
            Some(first) => {
                let mut route: Vec<String> = self.route_set[1..].to_vec();
                route.push(format!("<{}>", self.remote_target));
                (strip_uri_headers(route_uri(first)), route)
            }
        };
        OutgoingRequest {
            method: method.to_owned(),
            request_uri,
            route,
            from: with_tag(&self.local_uri, &self.id.local_tag),
            to: with_tag(&self.remote_uri, &self.id.remote_tag),
            call_id: self.id.call_id.clone(),
            cseq,
            reason: None,
        }
    }

    /// A BYE ending the dialog (§15.1.1), with an RFC 3326 Reason if given.
    /// The dialog counts as terminated from here on.
    pub fn bye(&mut self, reason: Option<Reason>) -> OutgoingRequest {
        let mut bye = self.request("BYE");
        bye.reason = reason.map(|r| r.header_value());
        self.terminated = true;
        bye
    }
}

fn non_empty_call_id(call_id: &str, message: &'static str) -> Result<String, DialogError> {
    let call_id = call_id.trim();
    if call_id.is_empty() {
        return Err(DialogError::EmptyCallId { message });
    }
    Ok(call_id.to_owned())
}

fn contact_uri(contact: Option<&str>, message: &'static str) -> Result<String, DialogError> {
    match contact.map(bare_uri) {
        Some(uri) if !uri.is_empty() && uri != "*" => {
            // The remote target becomes the Request-URI of every request
            // this side sends in the dialog (§12.2.1.1): one that would not
            // parse there is refused now, not sent later.
            crate::sip::message::check_request_uri(uri).map_err(|why| DialogError::BadContact {
                message,
                uri: uri.to_owned(),
                why,
            })?;
            Ok(uri.to_owned())
        }
        _ => Err(DialogError::MissingContact { message }),
    }
}

fn uri_field(uri: &str, message: &'static str, field: &'static str) -> Result<String, DialogError> {
    let uri = bare_uri(uri);
    if uri.is_empty() {
        return Err(DialogError::EmptyUri { message, field });
    }
    // The URI goes back out inside `<...>` in the From and To of every
    // request of the dialog: one that would break that form is refused now.
    let breaks_name_addr = |c: char| c.is_whitespace() || c.is_control() || "<>\"".contains(c);
    if uri.contains(breaks_name_addr) {
        return Err(DialogError::BadUri {
            message,
            field,
            uri: uri.to_owned(),
        });
    }
    Ok(uri.to_owned())
}

/// The URI of a plain URI or of a name-addr (`"Bob" <sip:b@h>`).
fn bare_uri(text: &str) -> &str {
    let text = text.trim();
    match (text.find('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => text[open + 1..close].trim(),
        _ => text,
    }
}

/// `<uri>;tag=t`, or `<uri>` for the null tag (§12.2.1.1).
fn with_tag(uri: &str, tag: &str) -> String {
    if tag.is_empty() {
        format!("<{uri}>")
    } else {
        format!("<{uri}>;tag={tag}")
    }
}

/// Splits Record-Route header values into single entries, with the
/// message module's comma rules (not inside `<…>` or quoted strings).
fn split_routes(values: &[&str]) -> Vec<String> {
    let mut routes = Vec::new();
    for entry in values
        .iter()
        .flat_map(|v| crate::sip::message::split_commas(v))
    {
        push_route(&mut routes, entry);
    }
    routes
}

fn push_route(routes: &mut Vec<String>, entry: &str) {
    let entry = entry.trim();
    if entry.is_empty() {
        return;
    }
    // Record-Route is a name-addr (§20.30); keep it whole, brackets and all.
    if entry.contains('<') {
        routes.push(entry.to_owned());
    } else {
        routes.push(format!("<{entry}>"));
    }
}

/// The URI inside a route entry.
fn route_uri(entry: &str) -> &str {
    bare_uri(entry)
}

/// Whether a route's URI has the `lr` parameter (RFC 3261 §16.12.1.1: loose routing).
fn has_lr(entry: &str) -> bool {
    let uri = route_uri(entry);
    let params = uri.split('?').next().unwrap_or("");
    params.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("lr")
    })
}

/// A Request-URI may not carry URI headers taken from a route (§12.2.1.1
/// strips parameters "not allowed in a Request-URI"; headers are the ones
/// that would change the request).
fn strip_uri_headers(uri: &str) -> String {
    uri.split('?').next().unwrap_or(uri).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const RECORD_ROUTE: [&str; 2] = [
        "<sip:p1.example.com;lr>, \"Edge, West\" <sip:p2.example.com;lr>",
        "<sip:p3.example.com;lr;transport=tcp>",
    ];

    fn invite<'a>(record_route: &'a [&'a str]) -> UasInvite<'a> {
        UasInvite {
            call_id: "a84b4c76e66710@pc33.example.com",
            from_uri: "\"Alice\" <sip:alice@example.com>",
            from_tag: Some("1928301774"),
            to_uri: "<sip:+14255550100@bridge.example.com>",
            contact: Some("<sip:alice@pc33.example.com;transport=udp>"),
            record_route,
            cseq: 314159,
        }
    }

    fn uas(record_route: &[&str]) -> Dialog {
        Dialog::uas(&mut StdRng::seed_from_u64(7), &invite(record_route)).unwrap()
    }

    fn incoming<'a>(d: &'a Dialog, method: &'a str, cseq: u32) -> InDialogRequest<'a> {
        InDialogRequest {
            method,
            call_id: &d.id().call_id,
            from_tag: Some(&d.id().remote_tag),
            to_tag: Some(&d.id().local_tag),
            cseq,
        }
    }

    #[test]
    fn uas_dialog_takes_its_state_from_the_invite() {
        let d = uas(&RECORD_ROUTE);
        assert_eq!(d.role(), Role::Uas);
        assert_eq!(d.id().call_id, "a84b4c76e66710@pc33.example.com");
        assert_eq!(d.id().remote_tag, "1928301774");
        assert_eq!(
            d.remote_target(),
            "sip:alice@pc33.example.com;transport=udp"
        );
        assert_eq!(
            d.route_set(),
            [
                "<sip:p1.example.com;lr>",
                "\"Edge, West\" <sip:p2.example.com;lr>",
                "<sip:p3.example.com;lr;transport=tcp>",
            ],
            "Record-Route entries in order, commas inside quotes kept"
        );
        assert_eq!(d.remote_cseq(), Some(314159));
        assert_eq!(d.local_cseq(), None, "a UAS has sent nothing yet");
        assert!(!d.is_terminated());
    }

    #[test]
    fn local_tag_is_64_random_bits_from_the_callers_rng() {
        let tag = |seed| {
            Dialog::uas(&mut StdRng::seed_from_u64(seed), &invite(&[]))
                .unwrap()
                .local_tag()
                .to_owned()
        };
        assert_eq!(tag(1), tag(1), "same seed, same tag");
        assert_ne!(tag(1), tag(2));
        let t = tag(3);
        assert_eq!(t.len(), 16);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()), "{t}");
    }

    #[test]
    fn requests_of_other_dialogs_get_481() {
        let mut d = uas(&[]);
        let id = d.id().clone();
        assert_eq!(
            DialogId::of_incoming(&id.call_id, Some(&id.remote_tag), Some(&id.local_tag)),
            id
        );
        let snapshot = d.clone();
        let good = incoming(&snapshot, "INFO", 314160);
        let cases = [
            InDialogRequest {
                to_tag: Some("not-ours"),
                ..good
            },
            InDialogRequest {
                to_tag: None,
                ..good
            },
            InDialogRequest {
                from_tag: Some("stranger"),
                ..good
            },
            InDialogRequest {
                call_id: "other@call",
                ..good
            },
        ];
        for request in cases {
            assert!(!d.matches(&request));
            let err = d.handle_request(&request).unwrap_err();
            assert!(matches!(err, DialogError::UnknownDialog { .. }), "{err}");
            assert_eq!(err.status_code(), Some(481));
        }
        assert_eq!(
            d.remote_cseq(),
            Some(314159),
            "rejected requests change nothing"
        );
        assert!(d.handle_request(&good).is_ok());
    }

    #[test]
    fn lower_cseq_gets_500_and_ack_must_carry_the_invite_cseq() {
        let mut d = uas(&[]);
        assert_eq!(
            d.handle_request(&incoming(&d.clone(), "ACK", 314159)),
            Ok(())
        );
        let err = d
            .handle_request(&incoming(&d.clone(), "ACK", 314160))
            .unwrap_err();
        assert_eq!(
            err,
            DialogError::AckCseqMismatch {
                cseq: 314160,
                invite: 314159
            }
        );
        assert_eq!(err.status_code(), None, "an ACK is never answered");
        assert_eq!(
            d.handle_request(&incoming(&d.clone(), "INFO", 314161)),
            Ok(())
        );
        assert_eq!(d.remote_cseq(), Some(314161));
        let err = d
            .handle_request(&incoming(&d.clone(), "INFO", 314160))
            .unwrap_err();
        assert_eq!(err.status_code(), Some(500));
        assert!(err.to_string().contains("314160"), "{err}");
        assert_eq!(d.remote_cseq(), Some(314161));
        // A re-INVITE moves the CSeq an ACK must carry.
        assert_eq!(
            d.handle_request(&incoming(&d.clone(), "INVITE", 314170)),
            Ok(())
        );
        assert_eq!(
            d.handle_request(&incoming(&d.clone(), "ACK", 314170)),
            Ok(())
        );
        assert!(
            d.handle_request(&incoming(&d.clone(), "ACK", 314159))
                .is_err()
        );
        // A CANCEL carries the CSeq of what it cancels, lower or not.
        assert_eq!(
            d.handle_request(&incoming(&d.clone(), "CANCEL", 314159)),
            Ok(())
        );
    }

    #[test]
    fn incoming_bye_ends_the_dialog() {
        let mut d = uas(&[]);
        assert_eq!(
            d.handle_request(&incoming(&d.clone(), "BYE", 314160)),
            Ok(())
        );
        assert!(d.is_terminated());
        let err = d
            .handle_request(&incoming(&d.clone(), "INFO", 314161))
            .unwrap_err();
        assert_eq!(err.status_code(), Some(481));
    }

    #[test]
    fn bye_carries_dialog_parts_and_reason() {
        let mut d = uas(&RECORD_ROUTE);
        let local_tag = d.local_tag().to_owned();
        let bye = d.bye(Some(Reason::sip(403, "Conference ID not valid")));
        assert_eq!(
            bye,
            OutgoingRequest {
                method: "BYE".into(),
                request_uri: "sip:alice@pc33.example.com;transport=udp".into(),
                route: RECORD_ROUTE_ENTRIES.map(String::from).to_vec(),
                from: format!("<sip:+14255550100@bridge.example.com>;tag={local_tag}"),
                to: "<sip:alice@example.com>;tag=1928301774".into(),
                call_id: "a84b4c76e66710@pc33.example.com".into(),
                cseq: 1,
                reason: Some("SIP ;cause=403 ;text=\"Conference ID not valid\"".into()),
            }
        );
        assert!(d.is_terminated());
        assert_eq!(d.request("INFO").cseq, 2, "local CSeq increases");
    }

    const RECORD_ROUTE_ENTRIES: [&str; 3] = [
        "<sip:p1.example.com;lr>",
        "\"Edge, West\" <sip:p2.example.com;lr>",
        "<sip:p3.example.com;lr;transport=tcp>",
    ];

    #[test]
    fn requests_without_route_set_go_straight_to_the_target() {
        let mut d = uas(&[]);
        let info = d.request("INFO");
        assert_eq!(info.request_uri, "sip:alice@pc33.example.com;transport=udp");
        assert!(info.route.is_empty());
        assert_eq!(info.reason, None);
    }

    #[test]
    fn strict_route_becomes_the_request_uri() {
        let mut d = uas(&[
            "<sip:strict.example.com;maddr=10.0.0.1?X=1>",
            "<sip:p2.example.com;lr>",
        ]);
        let bye = d.bye(None);
        assert_eq!(bye.request_uri, "sip:strict.example.com;maddr=10.0.0.1");
        assert_eq!(
            bye.route,
            [
                "<sip:p2.example.com;lr>",
                "<sip:alice@pc33.example.com;transport=udp>"
            ]
        );
        assert_eq!(bye.reason, None);
    }

    #[test]
    fn reason_text_is_a_safe_quoted_string() {
        let r = Reason::q850(16, "say \"bye\"\r\nX-Injected: 1 \\o/");
        assert_eq!(
            r.header_value(),
            "Q.850 ;cause=16 ;text=\"say \\\"bye\\\"X-Injected: 1 \\\\o/\""
        );
        let bare = Reason {
            protocol: ReasonProtocol::Sip,
            cause: 200,
            text: None,
        };
        assert_eq!(bare.to_string(), "SIP ;cause=200");
    }

    #[test]
    fn rfc2543_caller_without_from_tag_gets_untagged_to() {
        let mut d = Dialog::uas(
            &mut StdRng::seed_from_u64(1),
            &UasInvite {
                from_tag: None,
                ..invite(&[])
            },
        )
        .unwrap();
        let local_tag = d.local_tag().to_owned();
        let request = InDialogRequest {
            method: "INFO",
            call_id: "a84b4c76e66710@pc33.example.com",
            from_tag: None,
            to_tag: Some(&local_tag),
            cseq: 314160,
        };
        assert_eq!(d.handle_request(&request), Ok(()));
        assert_eq!(d.bye(None).to, "<sip:alice@example.com>");
    }

    #[test]
    fn uac_dialog_reverses_the_route_set_and_continues_its_cseq() {
        let mut d = Dialog::uac(&UacAnswer {
            call_id: "c1@dialin",
            from_uri: "sip:caller@dialin.example.com",
            from_tag: "ours",
            to_uri: "sip:+14255550100@bridge.example.com",
            to_tag: Some("theirs"),
            contact: Some("<sip:bridge@10.0.0.5:5060>"),
            record_route: &RECORD_ROUTE,
            cseq: 7,
        })
        .unwrap();
        assert_eq!(d.role(), Role::Uac);
        let mut reversed = RECORD_ROUTE_ENTRIES;
        reversed.reverse();
        assert_eq!(d.route_set(), reversed);
        assert_eq!(d.remote_cseq(), None);
        let bye = d.bye(None);
        assert_eq!(bye.cseq, 8);
        assert_eq!(bye.request_uri, "sip:bridge@10.0.0.5:5060");
        assert_eq!(bye.from, "<sip:caller@dialin.example.com>;tag=ours");
        assert_eq!(bye.to, "<sip:+14255550100@bridge.example.com>;tag=theirs");
        // The peer's first request may start anywhere (§12.1.2).
        let mut d2 = Dialog::uac(&UacAnswer {
            call_id: "c2",
            from_uri: "sip:a@b",
            from_tag: "ours",
            to_uri: "sip:c@d",
            to_tag: Some("theirs"),
            contact: Some("sip:c@10.0.0.6"),
            record_route: &[],
            cseq: 1,
        })
        .unwrap();
        let info = InDialogRequest {
            method: "INFO",
            call_id: "c2",
            from_tag: Some("theirs"),
            to_tag: Some("ours"),
            cseq: 5,
        };
        assert_eq!(d2.handle_request(&info), Ok(()));
        assert_eq!(d2.remote_cseq(), Some(5));
    }

    #[test]
    fn invites_missing_what_a_dialog_needs_get_400() {
        let mut rng = StdRng::seed_from_u64(0);
        let no_contact = UasInvite {
            contact: None,
            ..invite(&[])
        };
        let star = UasInvite {
            contact: Some("*"),
            ..invite(&[])
        };
        let no_call_id = UasInvite {
            call_id: "  ",
            ..invite(&[])
        };
        let no_to = UasInvite {
            to_uri: "<>",
            ..invite(&[])
        };
        let huge_cseq = UasInvite {
            cseq: 1 << 31,
            ..invite(&[])
        };
        for bad in [no_contact, star, no_call_id, no_to, huge_cseq] {
            let err = Dialog::uas(&mut rng, &bad).unwrap_err();
            assert_eq!(err.status_code(), Some(400), "{err}");
        }
        let err = Dialog::uac(&UacAnswer {
            call_id: "c",
            from_uri: "sip:a@b",
            to_uri: "sip:c@d",
            ..UacAnswer::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            DialogError::MissingContact {
                message: UAC_MESSAGE
            }
        );
        assert_eq!(err.status_code(), None, "a UAC does not answer a 2xx");
    }

    /// Found by the sip_datagram fuzz target: a Contact with NUL bytes in
    /// its scheme made a dialog whose BYE had a Request-URI no one can parse.
    #[test]
    fn a_contact_that_cannot_be_a_request_uri_gets_400() {
        let mut rng = StdRng::seed_from_u64(0);
        for contact in [
            "<sip\0\0:caller@host15.example.net>",
            "<sip:caller@host\u{7}.example.net>",
            "<http://example.com/>",
            "<sip:caller@example.net?Subject=x>",
            "<sip:a b@example.net>",
        ] {
            let bad = UasInvite {
                contact: Some(contact),
                ..invite(&[])
            };
            let err = Dialog::uas(&mut rng, &bad).unwrap_err();
            assert!(
                matches!(err, DialogError::BadContact { .. }),
                "{contact}: {err}"
            );
            assert_eq!(err.status_code(), Some(400), "{err}");
        }
        for contact in [
            "<sips:caller@example.net;transport=tls>",
            "<tel:+14255550100>",
        ] {
            let ok = UasInvite {
                contact: Some(contact),
                ..invite(&[])
            };
            assert!(Dialog::uas(&mut rng, &ok).is_ok(), "{contact}");
        }
    }

    /// Found by the sip_datagram fuzz target: `From: sip:caller@example>net`
    /// (no angle brackets) made a dialog whose BYE had
    /// `To: <sip:caller@example>net>`, which no parser accepts.
    #[test]
    fn a_from_or_to_uri_that_breaks_a_name_addr_gets_400() {
        let mut rng = StdRng::seed_from_u64(0);
        for uri in [
            "sip:caller@example>net",
            "sip:a<b@example.net",
            "sip:a\"b@example.net",
            "sip:a\u{0}@x",
        ] {
            let from = UasInvite {
                from_uri: uri,
                ..invite(&[])
            };
            let to = UasInvite {
                to_uri: uri,
                ..invite(&[])
            };
            for bad in [from, to] {
                let err = Dialog::uas(&mut rng, &bad).unwrap_err();
                assert!(matches!(err, DialogError::BadUri { .. }), "{uri}: {err}");
                assert_eq!(err.status_code(), Some(400), "{err}");
            }
        }
    }

    #[test]
    fn garbage_fields_never_panic() {
        let junk = [
            "",
            "<",
            ">",
            "<>",
            "\"",
            "\"<,>",
            ",,,",
            "ü<ß>;lr",
            "\\",
            "<a;lr?",
            "?;",
        ];
        let mut rng = StdRng::seed_from_u64(9);
        for a in junk {
            for b in junk {
                let rr = [a, b];
                let fields = UasInvite {
                    call_id: a,
                    from_uri: b,
                    from_tag: Some(a),
                    to_uri: a,
                    contact: Some(b),
                    record_route: &rr,
                    cseq: u32::MAX,
                };
                let _ = Dialog::uas(&mut rng, &fields);
                let ok = UasInvite {
                    record_route: &rr,
                    ..invite(&[])
                };
                let mut d = Dialog::uas(&mut rng, &ok).unwrap();
                let _ = d.request(a);
                let _ = d.handle_request(&InDialogRequest {
                    method: b,
                    call_id: a,
                    from_tag: Some(b),
                    to_tag: None,
                    cseq: 0,
                });
                let _ = d.bye(Some(Reason::sip(u16::MAX, b)));
            }
        }
    }

    #[test]
    fn randomness_comes_only_from_the_callers_rng() {
        let source = include_str!("dialog.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        for needle in [["rand", "::rng()"].concat(), ["thread", "_rng"].concat()] {
            assert!(!code.contains(&needle), "found {needle} outside tests");
        }
    }

    #[test]
    fn local_cseq_saturates_below_2_pow_31() {
        let mut d = Dialog::uac(&UacAnswer {
            call_id: "c",
            from_uri: "sip:a@b",
            from_tag: "t",
            to_uri: "sip:c@d",
            to_tag: None,
            contact: Some("sip:c@d"),
            record_route: &[],
            cseq: (1 << 31) - 2,
        })
        .unwrap();
        assert_eq!(d.request("INFO").cseq, (1 << 31) - 1);
        assert_eq!(d.request("INFO").cseq, (1 << 31) - 1);
    }
}
