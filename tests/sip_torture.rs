//! RFC 4475 torture messages (tests/data/rfc4475/*.sip): every one is parsed,
//! the valid ones (§3.1.1) with the right key fields, the invalid ones
//! (§3.1.2) with the right response code or a silent drop, and none panics.

use dialin::sip::framing::{Limits, StreamFramer, check_datagram};
use dialin::sip::message::{Message, Method, Request, Response, SipError, SipHeaders, parse};
use std::path::Path;

fn load(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rfc4475")
        .join(format!("{name}.sip"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn request(name: &str) -> Request {
    match parse(&load(name)) {
        Ok(Message::Request(r)) => r,
        other => panic!("{name}: expected a request, got {other:?}"),
    }
}

fn response(name: &str) -> Response {
    match parse(&load(name)) {
        Ok(Message::Response(r)) => r,
        other => panic!("{name}: expected a response, got {other:?}"),
    }
}

fn error(name: &str) -> SipError {
    match parse(&load(name)) {
        Err(e) => e,
        Ok(m) => panic!("{name}: expected an error, parsed {m:?}"),
    }
}

/// (name, expected response code; None = must be dropped silently)
fn assert_rejected(name: &str, code: Option<u16>) {
    let e = error(name);
    match code {
        Some(c) => {
            assert_eq!(e.response_code(), c, "{name}: {e}");
            let resp = e
                .error_response()
                .unwrap_or_else(|| panic!("{name}: a response can be formed: {e}"));
            // The response copies the request's (possibly malformed) Via,
            // From, To, Call-ID and CSeq verbatim, so check the status line.
            let bytes = resp.to_bytes();
            let status_line = format!("SIP/2.0 {c} ");
            assert!(bytes.starts_with(status_line.as_bytes()), "{name}");
        }
        None => assert!(e.error_response().is_none(), "{name}: must be dropped: {e}"),
    }
}

// ---- §3.1.1 valid messages ----

#[test]
fn wsinv_short_tortuous_invite() {
    let r = request("wsinv");
    assert_eq!(r.method(), &Method::Invite);
    assert_eq!(r.uri(), "sip:vivekg@chair-dnrc.example.com;unknownparam");
    assert_eq!(r.uri_user(), Some("vivekg"));
    assert_eq!(r.call_id(), Some("wsinv.ndaksdj@192.0.2.1"));
    assert_eq!(r.to_tag().as_deref(), Some("1918181833n"));
    assert_eq!(r.from_tag().as_deref(), Some("98asjd8"));
    assert_eq!(r.max_forwards(), Some(68));
    let cseq = r.cseq().expect("cseq");
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    assert_eq!(r.vias().len(), 3);
    let top = r.top_via().expect("via");
    assert_eq!(top.transport, "UDP");
    assert_eq!(top.sent_by.host, "192.0.2.2");
    assert_eq!(top.branch.as_deref(), Some("390skdjuw"));
    assert_eq!(r.header("Subject"), Some(""));
    assert_eq!(
        r.header("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(r.contact_uri().as_deref(), Some("sip:jdrosen@example.com"));
    assert_eq!(r.content_type(), Some("application/sdp"));
    assert_eq!(r.body().len(), 150);
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let r = request("intmeth");
    assert_eq!(
        r.method(),
        &Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    assert_eq!(
        r.uri_user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(r.max_forwards(), Some(255));
    assert_eq!(r.cseq().map(|c| c.seq), Some(139122385));
    assert_eq!(r.from_tag().as_deref(), Some("_token~1'+`*%!-."));
    assert_eq!(r.branch().as_deref(), Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(
        r.call_id(),
        Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
    assert_eq!(
        r.header("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
    assert!(r.body().is_empty());
}

#[test]
fn esc01_escaping_is_kept_as_received() {
    let r = request("esc01");
    assert_eq!(r.uri_user(), Some("sips%3Auser%40example.com"));
    assert_eq!(r.call_id(), Some("esc01.239409asdfakjkn23onasd0-3234"));
    assert_eq!(r.content_type(), Some("application/sdp"));
    assert_eq!(
        r.contact_uri().as_deref(),
        Some("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    );
    assert_eq!(r.body().len(), 150);
}

#[test]
fn escnull_registers_two_contacts() {
    let r = request("escnull");
    assert_eq!(r.method(), &Method::Register);
    assert_eq!(r.headers().values("Contact").len(), 2);
    assert_eq!(r.header("Content-Length"), Some("0"));
}

#[test]
fn esc02_percent_is_not_an_escape_in_method_or_header_name() {
    let r = request("esc02");
    assert_eq!(r.method(), &Method::Other("RE%47IST%45R".into()));
    assert_eq!(r.headers().values("Contact").len(), 2);
    assert_eq!(
        r.header("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
}

#[test]
fn lwsdisp_no_space_before_angle() {
    let r = request("lwsdisp");
    let from = r.from().expect("from");
    assert_eq!(from.display_name.as_deref(), Some("caller"));
    assert_eq!(from.uri, "sip:caller@example.com");
    assert_eq!(r.from_tag().as_deref(), Some("323"));
}

#[test]
fn longreq_long_values_and_34_vias() {
    let r = request("longreq");
    assert_eq!(r.vias().len(), 34);
    assert_eq!(
        r.top_via().map(|v| v.sent_by.host).as_deref(),
        Some("sip33.example.com")
    );
    assert!(
        r.call_id()
            .expect("call-id")
            .starts_with("longreq.onereally")
    );
    assert_eq!(
        r.to()
            .and_then(|t| t.uri.split(';').next().map(str::to_string))
            .as_deref(),
        Some("sip:user@example.com:6000")
    );
    assert_eq!(r.from_tag().map(|t| t.len()), Some(2 + 150 + 3));
    assert_eq!(r.body().len(), 150);
}

#[test]
fn dblreq_extra_octets_after_the_body_are_ignored() {
    let r = request("dblreq");
    assert_eq!(r.method(), &Method::Register);
    assert!(r.body().is_empty());
    assert_eq!(r.call_id(), Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
}

#[test]
fn mpart01_binary_multipart_body_is_taken_byte_for_byte() {
    let raw = load("mpart01");
    let r = request("mpart01");
    assert_eq!(r.method(), &Method::Other("MESSAGE".into()));
    assert!(
        r.content_type()
            .is_some_and(|t| t.starts_with("multipart/mixed")),
        "{:?}",
        r.content_type()
    );
    let declared: usize = r
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    assert_eq!(r.body().len(), declared);
    assert!(
        raw.ends_with(r.body()),
        "the body is the message's last bytes, unchanged"
    );
    assert!(
        r.body().contains(&0),
        "the NULs of the binary part are kept"
    );
}

#[test]
fn semiuri_user_part_with_semicolon() {
    let r = request("semiuri");
    assert_eq!(r.uri_user(), Some("user;par=u%40example.net"));
    assert_eq!(r.headers().values("Accept").len(), 6);
}

#[test]
fn transports_all_known_and_an_unknown() {
    let r = request("transports");
    let transports: Vec<String> = r
        .vias()
        .iter()
        .map(|v| dialin::sip::message::Via::parse(v).expect("via").transport)
        .collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    assert_eq!(r.call_id(), Some("transports.kijh4akdnaqjkwendsasfdj"));
}

#[test]
fn unreason_utf8_reason_phrase() {
    let r = response("unreason");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.reason(),
        "= 2**3 * 5**2 но сто девяносто девять - простое"
    );
    assert_eq!(r.to_tag().as_deref(), Some("2229"));
    assert_eq!(r.body().len(), 154);
}

#[test]
fn noreason_empty_reason_phrase() {
    let r = response("noreason");
    assert_eq!(r.status(), 100);
    assert_eq!(r.reason(), "");
    assert_eq!(r.branch().as_deref(), Some("z9hG4bK2398ndaoe"));
}

// ---- §3.1.2 invalid messages ----

#[test]
fn invalid_requests_get_the_right_response() {
    for (name, code) in [
        ("badinv01", 400),   // §3.1.2.1 extraneous separators
        ("clerr", 400),      // §3.1.2.2 Content-Length larger than the message
        ("ncl", 400),        // §3.1.2.3 negative Content-Length
        ("scalar02", 400),   // §3.1.2.4 CSeq out of range
        ("quotbal", 400),    // §3.1.2.6 unterminated quote
        ("ltgtruri", 400),   // §3.1.2.7 <> around the Request-URI
        ("lwsruri", 400),    // §3.1.2.8 LWS in the Request-URI
        ("lwsstart", 400),   // §3.1.2.9 multiple SP in the request line
        ("trws", 400),       // §3.1.2.10 SP at the end of the request line
        ("escruri", 400),    // §3.1.2.11 escaped headers in the Request-URI
        ("regbadct", 400),   // §3.1.2.13 addr-spec Contact with ?headers
        ("badaspec", 400),   // §3.1.2.14 spaces inside <>
        ("baddn", 400),      // §3.1.2.15 unquoted display name with a comma
        ("badvers", 505),    // §3.1.2.16 SIP/7.0
        ("mismatch01", 400), // §3.1.2.17 CSeq method mismatch
        ("mismatch02", 501), // §3.1.2.18 unknown method, CSeq mismatch
        ("mcl01", 400),      // §3.3.9 two different Content-Lengths
        ("multi01", 400),    // §3.3.8 two Call-IDs, CSeqs, Froms, Tos
        ("novelsc", 416),    // §3.3.3 unknown Request-URI scheme
        ("unkscm", 416),     // §3.3.2 unknown Request-URI scheme
    ] {
        assert_rejected(name, Some(code));
    }
}

#[test]
fn clerr_says_content_length_is_larger_than_the_message() {
    assert_eq!(
        error("clerr").reason_phrase(),
        "Content-Length larger than the message"
    );
    assert!(check_datagram(&load("clerr"), Limits::default()).is_err());
}

#[test]
fn invalid_responses_and_headless_requests_are_dropped() {
    assert_rejected("scalarlg", None); // §3.1.2.5 response with a huge CSeq
    assert_rejected("bigcode", None); // §3.1.2.19 status code > 699
    assert_rejected("insuf", None); // §3.3.1 no To, From, Call-ID
}

#[test]
fn baddate_is_accepted_because_date_is_not_used() {
    // §3.1.2.12: rejecting is allowed only if Date matters; it does not here.
    let r = request("baddate");
    assert_eq!(r.header("Date"), Some("Fri, 01 Jan 2010 16:00:00 EST"));
}

// ---- §3.2-3.4: parse; the transaction/application layer decides ----

#[test]
fn semantic_tests_parse_for_the_upper_layers() {
    assert_eq!(request("badbranch").branch().as_deref(), Some("z9hG4bK"));
    assert_eq!(response("bcast").vias().len(), 2);
    assert_eq!(
        request("bext01").header("Require"),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    assert_eq!(
        request("cparam01").contact_uri().as_deref(),
        Some("sip:+19725552222@gw1.example.net")
    );
    assert_eq!(
        request("cparam02").contact_uri().as_deref(),
        Some("sip:+19725552222@gw1.example.net;unknownparam")
    );
    let inv2543 = request("inv2543");
    assert_eq!(inv2543.branch(), None);
    assert_eq!(inv2543.body().len(), 105); // no Content-Length on UDP: rest of datagram
    assert_eq!(
        request("invut").content_type(),
        Some("application/unknownformat")
    );
    assert_eq!(
        request("regaut01").header("Authorization"),
        Some("NoOneKnowsThisScheme opaque-data=here")
    );
    assert!(
        request("regescrt")
            .contact_uri()
            .expect("contact")
            .contains("?Route=")
    );
    assert_eq!(request("sdp01").body().len(), 150);
    assert_eq!(request("unksm2").header("To"), Some("isbn:2983792873"));
    assert_eq!(request("zeromf").max_forwards(), Some(0));
}

#[test]
fn every_file_parses_or_errors_without_panicking_also_when_cut_or_framed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("sip") {
            continue;
        }
        count += 1;
        let bytes = std::fs::read(&path).expect("read");
        let _ = parse(&bytes);
        let _ = check_datagram(&bytes, Limits::default());
        for cut in 0..bytes.len() {
            if let Err(e) = parse(&bytes[..cut]) {
                let _ = e.error_response().map(|r| r.to_bytes());
            }
        }
        let mut framer = StreamFramer::new(Limits::default());
        for chunk in bytes.chunks(7) {
            framer.push(chunk);
            while let Some(Ok(m)) = framer.next_message() {
                let _ = parse(&m);
            }
        }
    }
    assert!(count >= 47, "expected the RFC 4475 files, found {count}");
}

#[test]
fn tcp_framing_of_dblreq_yields_both_requests() {
    // On a stream, dblreq's trailing INVITE is a second message.
    let mut framer = StreamFramer::new(Limits::default());
    framer.push(&load("dblreq"));
    let first = framer.next_message().expect("first").expect("framed");
    assert!(matches!(parse(&first), Ok(Message::Request(r)) if r.method() == &Method::Register));
    let second = framer.next_message().expect("second").expect("framed");
    assert!(matches!(parse(&second), Ok(Message::Request(r)) if r.method() == &Method::Invite));
    assert_eq!(framer.next_message(), None);
}
