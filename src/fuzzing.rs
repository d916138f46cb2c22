//! Entry points for the fuzz targets (`fuzz/`) and for the replay of their
//! corpus in `cargo test` (`tests/fuzz_corpus.rs`): one function per kind of
//! untrusted input, each calling the code the server runs on that input.
//!
//! Every function takes raw bytes, must never panic, and asserts what must
//! hold on any input (the bridge's own answers parse; framing does not
//! depend on how TCP cut the stream; the admin API never answers 500).
//! Work per input is bounded: a fuzz input of any size is handled in
//! milliseconds.
//!
//! What it does not: sockets or files. The admin API runs its real router
//! on an in-memory store whose outbox folder cannot be created, so emails
//! stay queued (the delivery failure path) and nothing is written.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::admin::model::NumberKind;
use crate::admin::service::{Options, Service};
use crate::admin::{self, ids::PhoneNumber};
use crate::call::{Call, CallConfig, Source, options_response};
use crate::directory::{IdLookup, Lookup, PinDigits, Target};
use crate::media::dtmf::info::parse_info;
use crate::media::dtmf::rfc4733::{EventDetector, EventPayload, EventRtpPacket};
use crate::media::prompts::PromptCatalog;
use crate::media::rtp::RtpHeader;
use crate::sip::framing::{Limits, StreamFramer, check_datagram};
use crate::sip::message::{self, Message, Method, Request, RequestBuilder, SipHeaders};
use crate::sip::sdp::{self, LocalMedia, SessionDescription};
use crate::sip::transaction::{TimerConfig, Transport};

/// The conference ID [`FuzzDirectory`] knows; every other ID is unknown.
const KNOWN_ID: &str = "1234567";
/// The bridge's service number the fixed INVITE dials.
const URI: &str = "sip:14255550100@127.0.0.1:5060";
const PEER: &str = "127.0.0.1:5062";
/// Bounds the timer steps after each input.
const MAX_STEPS: usize = 64;
/// Bounds how far virtual time runs after the last input.
const RUN_FOR: Duration = Duration::from_secs(40);

/// A directory with one valid ID, so that a key sequence can reach a join.
struct FuzzDirectory;

impl IdLookup for FuzzDirectory {
    fn lookup(&self, id: crate::admin::ids::ConferenceId) -> Lookup {
        if KNOWN_ID.parse() == Ok(id) {
            Lookup::Valid(Target {
                tenant: 1,
                organizer: 1,
                meeting: None,
                leader_pin: PinDigits::NONE,
            })
        } else {
            Lookup::Unknown
        }
    }
}

fn source() -> Source {
    Source {
        transport: Transport::Unreliable,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5062),
    }
}

fn config() -> CallConfig {
    CallConfig {
        timers: TimerConfig::default(),
        attendant: crate::attendant::Config::default(),
        sip_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
        rtp_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 20000),
        mute_prompts: false,
        ring: Duration::ZERO,
        seed: 7,
    }
}

/// Short synthetic prompts (3 frames each): the fuzz targets exercise the
/// call, not the prompt audio.
fn catalog() -> Arc<PromptCatalog> {
    static CATALOG: OnceLock<Arc<PromptCatalog>> = OnceLock::new();
    CATALOG
        .get_or_init(|| Arc::new(PromptCatalog::from_pcm(|_| vec![1000; 480])))
        .clone()
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn builder(method: Method, cseq: u32, branch: &str, to_tag: Option<&str>) -> RequestBuilder {
    RequestBuilder::new(method, URI)
        .via("UDP", PEER, branch)
        .from("sip:caller@127.0.0.1", "ctag")
        .to(URI, to_tag)
        .call_id("fuzz-call")
        .cseq(cseq)
        .header("Contact", &format!("<sip:caller@{PEER}>"))
}

fn request(bytes: &[u8]) -> Request {
    match message::parse(bytes) {
        Ok(Message::Request(r)) => r,
        other => panic!("the fixed requests of the fuzz harness parse: {other:?}"),
    }
}

/// Drains everything the call produced; every SIP message it sends must
/// parse (what we send, a peer has to read).
fn drain(call: &mut Call) -> Option<String> {
    let mut to_tag = None;
    while let Some(x) = call.poll_transmit() {
        match message::parse(&x.bytes) {
            Ok(Message::Response(r)) => {
                if r.status() == 200 && to_tag.is_none() {
                    to_tag = r.to_tag();
                }
            }
            Ok(Message::Request(_)) => {}
            Err(e) => panic!(
                "the bridge sent a message it cannot parse ({e}):\n{}",
                String::from_utf8_lossy(&x.bytes)
            ),
        }
    }
    while call.poll_rtp().is_some() {}
    while call.poll_event().is_some() {}
    to_tag
}

/// Runs the call's timers, bounded by steps and virtual time.
fn run_timers(call: &mut Call, until: Instant) {
    for _ in 0..MAX_STEPS {
        match call.poll_timeout() {
            Some(t) if t <= until => {
                call.handle_timeout(t, &FuzzDirectory);
                drain(call);
            }
            _ => break,
        }
    }
}

/// A call that got its INVITE (PCMU and telephone-event 101) and ACK, and
/// the bridge's To tag.
fn confirmed_call(t0: Instant) -> (Call, String) {
    let invite = request(
        &builder(Method::Invite, 1, "inv", None)
            .body("application/sdp", OFFER.as_bytes())
            .to_bytes(),
    );
    let mut call = Call::new(t0, &invite, source(), config(), catalog());
    let tag = drain(&mut call).unwrap_or_default();
    let ack = request(&builder(Method::Ack, 1, "ack", Some(&tag)).to_bytes());
    call.handle_sip(t0, &ack, source(), &FuzzDirectory);
    drain(&mut call);
    (call, tag)
}

/// The bridge's response bytes must parse. An error response to a request
/// that did not parse copies that request's headers (RFC 3261 §8.2.6.2:
/// Via, From, To, Call-ID, CSeq), broken ones included, so for those only
/// the status line and the framing are checked.
fn check_sent(bytes: &[u8]) {
    if let Err(e) = message::parse(bytes) {
        panic!(
            "the bridge sent a message it cannot parse ({e}):\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

fn check_error_response(bytes: &[u8]) {
    assert!(
        bytes.starts_with(b"SIP/2.0 ") && check_datagram(bytes, Limits::default()).is_ok(),
        "the bridge sent a broken error response:\n{}",
        String::from_utf8_lossy(bytes)
    );
}

/// One UDP datagram at the SIP port: what `net::sip`'s router does with it
/// (size and Content-Length checks, parse, the stateless answers, the
/// dialled-number check), then, for a new INVITE, the call it starts; and
/// the same datagram delivered to a call in progress as a request of that
/// call or the answer to its BYE.
pub fn sip_datagram(data: &[u8]) {
    let t0 = Instant::now();
    if let Err(error) = check_datagram(data, Limits::default()) {
        match message::parse(data) {
            Err(e) => {
                if let Some(r) = e.error_response() {
                    check_error_response(&r.to_tag("fuzz").to_bytes());
                }
            }
            Ok(Message::Request(request)) => {
                let r = request.response(error.response_code(), "Bad Request");
                check_sent(&r.to_tag("fuzz").to_bytes());
            }
            Ok(Message::Response(_)) => {}
        }
        return;
    }
    let message = match message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            let _ = (e.response_code(), e.reason_phrase(), e.can_respond());
            if let Some(r) = e.error_response() {
                check_error_response(&r.to_tag("fuzz").to_bytes());
            }
            return;
        }
    };
    let request = match message {
        Message::Response(response) => {
            let _ = (response.call_id(), response.cseq(), response.to_tag());
            let (mut call, _) = confirmed_call(t0);
            call.cancel(t0, &FuzzDirectory);
            drain(&mut call);
            call.handle_response(t0, &response);
            drain(&mut call);
            run_timers(&mut call, t0 + RUN_FOR);
            return;
        }
        Message::Request(request) => request,
    };
    // The router's stateless answers (net::sip::Router::handle_outside_call).
    let _ = (
        request.uri_scheme(),
        request.uri_user(),
        request.uri_host_port(),
    );
    match request.method() {
        Method::Ack => {}
        Method::Options => check_sent(&options_response(&request).to_tag("fuzz").to_bytes()),
        Method::Invite if request.to_tag().is_none() => {
            let _ = crate::net::guard::caller_id(&request);
            let numbers: Vec<PhoneNumber> = ["+14255550100"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect();
            if !crate::net::sip::dials_number(&request, &numbers) {
                check_sent(&request.response(404, "Not Found").to_tag("fuzz").to_bytes());
            }
            for status in [403, 503] {
                check_sent(
                    &request
                        .response(status, "Refused")
                        .to_tag("fuzz")
                        .to_bytes(),
                );
            }
            let mut call = Call::new(t0, &request, source(), config(), catalog());
            drain(&mut call);
            // A retransmission of the INVITE is absorbed.
            call.handle_sip(t0, &request, source(), &FuzzDirectory);
            drain(&mut call);
            run_timers(&mut call, t0 + RUN_FOR);
        }
        _ => {
            check_sent(
                &request
                    .response(481, "Call/Transaction Does Not Exist")
                    .to_tag("fuzz")
                    .to_bytes(),
            );
        }
    }
    // The same request inside a confirmed call (INFO, BYE, CANCEL, re-INVITE, ...).
    let (mut call, _) = confirmed_call(t0);
    let at = t0 + Duration::from_millis(100);
    call.handle_sip(at, &request, source(), &FuzzDirectory);
    drain(&mut call);
    call.handle_sip(at, &request, source(), &FuzzDirectory);
    drain(&mut call);
    run_timers(&mut call, at + RUN_FOR);
}

/// A TCP byte stream at the SIP port: `StreamFramer` over the stream cut
/// into chunks (the first byte chooses the chunk size), each framed message
/// parsed. The messages framed must not depend on how the stream was cut.
pub fn tcp_stream(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = frame(stream, stream.len().max(1));
    let chunked = frame(stream, usize::from(cut % 64) + 1);
    assert_eq!(
        whole,
        chunked,
        "framing depends on how the stream was cut (chunks of {})",
        cut % 64 + 1
    );
}

/// Frames `stream` pushed in `chunk`-byte pieces: the messages (or the
/// error that ended the connection) and the keep-alives seen.
fn frame(stream: &[u8], chunk: usize) -> (Vec<Result<Vec<u8>, String>>, usize) {
    let limits = Limits::default();
    let mut framer = StreamFramer::new(limits);
    let mut out = Vec::new();
    'conn: for piece in stream.chunks(chunk) {
        framer.push(piece);
        // Each message consumes at least one byte, so this bounds the loop.
        for _ in 0..=stream.len() {
            match framer.next_message() {
                None => break,
                Some(Ok(bytes)) => {
                    assert!(
                        bytes.len() <= limits.max_message,
                        "a framed message of {} bytes is over the limit",
                        bytes.len()
                    );
                    let _ = message::parse(&bytes);
                    out.push(Ok(bytes));
                }
                Some(Err(e)) => {
                    // The connection is closed after a framing error.
                    let _ = e.response_code();
                    out.push(Err(e.to_string()));
                    break 'conn;
                }
            }
        }
        assert!(
            framer.buffered() <= limits.max_message + chunk,
            "the framer holds {} bytes",
            framer.buffered()
        );
    }
    (out, framer.keepalives())
}

/// An SDP body: parsed, answered as the bridge answers an INVITE's offer,
/// and, as the caller reads an answer to its own offer, accepted. The
/// bridge's answer must parse and be acceptable as an answer to the offer.
pub fn sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let local = LocalMedia {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        rtp_port: 20000,
        session_id: 1,
        session_version: 1,
    };
    let our_offer = sdp::offer(&local);
    if let Ok(n) = sdp::accept_answer(&our_offer, text) {
        let _ = n.direction.as_str();
    }
    let Ok(offer) = SessionDescription::parse(text) else {
        return;
    };
    for media in &offer.media {
        let _ = (
            media.is_rtp_avp_audio(),
            media.payload_types().count(),
            media.telephone_event(),
            offer.connection_of(media),
            offer.direction_of(media),
        );
    }
    let Ok(answer) = sdp::answer(&offer, &local) else {
        return;
    };
    if let Err(e) = SessionDescription::parse(&answer.sdp) {
        panic!(
            "the bridge's SDP answer does not parse ({e}):\n{}",
            answer.sdp
        );
    }
}

/// RTP packets at a call's RTP port. The input is a list of records
/// `[length: u8][gap in ms: u8][packet: length bytes]`. Each packet goes
/// through the header view and the RFC 4733 event detector, then into a
/// confirmed call (PCMU, telephone-event 101) as the call task hands it over.
pub fn rtp(data: &[u8]) {
    let t0 = Instant::now();
    let mut detector = EventDetector::new([101, 96]);
    let (mut call, _) = confirmed_call(t0);
    let mut now = t0;
    let mut rest = data;
    // Each record consumes at least two bytes.
    while let [len, gap, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*gap));
        if let Ok(h) = RtpHeader::parse(packet) {
            let _ = (
                h.version(),
                h.has_padding(),
                h.has_extension(),
                h.csrc_count(),
                h.csrcs().count(),
                h.extension(),
            );
            if let Ok(p) = EventPayload::parse(h.payload()) {
                let again = EventPayload::parse(&p.to_bytes());
                assert_eq!(
                    again.ok(),
                    Some(p),
                    "an event payload survives a round trip"
                );
                let _ = p.digit();
            }
            let event = EventRtpPacket {
                ssrc: h.ssrc(),
                payload_type: h.payload_type(),
                sequence: h.sequence(),
                timestamp: h.timestamp(),
                marker: h.marker(),
                payload: h.payload(),
            };
            let _ = detector.handle_packet(now, &event);
            if let Some(t) = detector.poll_timeout()
                && t <= now
            {
                detector.handle_timeout(now);
            }
        }
        run_timers(&mut call, now);
        call.handle_rtp(now, packet, &FuzzDirectory);
        drain(&mut call);
    }
    run_timers(&mut call, now + RUN_FOR);
}

/// A SIP INFO key press: the first line is the `Content-Type`, the rest the
/// body. Parsed as the call parses it, then sent to a confirmed call in an
/// INFO request.
pub fn info_body(data: &[u8]) {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = String::from_utf8_lossy(content_type);
    if let Err(e) = parse_info(&content_type, body) {
        let _ = (e.status_code(), e.to_string());
    }
    let t0 = Instant::now();
    let (mut call, tag) = confirmed_call(t0);
    let info = builder(Method::Info, 2, "info", Some(&tag));
    let Ok(Message::Request(info)) =
        message::parse(&info.body(content_type.trim(), body).to_bytes())
    else {
        return;
    };
    call.handle_sip(
        t0 + Duration::from_millis(50),
        &info,
        source(),
        &FuzzDirectory,
    );
    drain(&mut call);
}

/// A scenario file (TOML), loaded and checked as `dialin run` does.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = crate::scenario::Scenario::from_str(text, "fuzz.toml") {
        let _ = (e.line(), e.to_string());
    }
}

/// The admin API routes that take a body, in the order of the selector.
const BODY_ROUTES: &[(&str, &str)] = &[
    ("PATCH", "/api/tenant"),
    ("POST", "/api/tenant/numbers"),
    ("POST", "/api/users"),
    ("POST", "/api/users/alice@contoso.com/enable"),
    ("POST", "/api/users/alice@contoso.com/reset-id"),
    ("PUT", "/api/users/alice@contoso.com/conference-id"),
    ("POST", "/api/users/alice@contoso.com/reset-pin"),
    ("POST", "/api/meetings"),
    ("POST", "/api/migrations"),
    ("POST", "/api/clock/advance"),
];

/// An admin API request body: the first byte chooses the route (`a` is the
/// first of [`BODY_ROUTES`], `b` the second, ...), the rest is the JSON
/// body. It goes through the real router (token check, body parsing, the
/// service's rules, the store) on a fresh in-memory store with one enabled
/// user, alice@contoso.com. Any answer but a 500 is fine: a 500 is a bug
/// (a panic in the service or an error the rules should have caught).
pub fn admin_json(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (method, path) = BODY_ROUTES[usize::from(selector.wrapping_sub(b'a')) % BODY_ROUTES.len()];
    admin_request(method, path, "application/json", body);
}

/// A CSV user import (`POST /api/users/import`, `dialin admin user import`):
/// the parser, then the import through the real router as in [`admin_json`].
pub fn csv_import(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(rows) = admin::import::parse(text)
    {
        for row in &rows {
            assert!(
                row.line >= 2,
                "a data row is on line {} (the header is line 1)",
                row.line
            );
        }
    }
    admin_request("POST", "/api/users/import?no_email=false", "text/csv", data);
}

const TOKEN: &str = "fuzz-token";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds")
    })
}

/// A service on a fresh in-memory store with alice enabled, so that every
/// input starts from the same state.
fn fresh_service() -> Arc<Service> {
    let clock = Arc::new(crate::time::ManualClock::new(
        crate::time::Timestamp::from_millis(1_800_000_000_000),
    ));
    // The outbox folder can't be created (its parent is a file), so emails
    // stay queued and the fuzzer writes nothing.
    let outbox = PathBuf::from("/dev/null/dialin-fuzz-outbox");
    let service = Service::open(
        Path::new(":memory:"),
        outbox,
        Options {
            clock,
            rng_seed: Some(1),
            smtp: None,
        },
    )
    .expect("an in-memory store opens");
    let alice = "alice@contoso.com".parse().expect("a valid address");
    service
        .add_user("fuzz", &alice, "Alice")
        .expect("alice is added to a fresh store");
    let number: PhoneNumber = "+14255550100".parse().expect("a valid number");
    let _ = service.add_number("fuzz", number, NumberKind::Toll, false);
    let enable = admin::service::EnableRequest {
        email: Some(alice),
        ..Default::default()
    };
    service
        .enable_user("fuzz", &enable)
        .expect("alice is enabled in a fresh store");
    Arc::new(service)
}

fn admin_request(method: &str, path: &str, content_type: &str, body: &[u8]) {
    use tower::ServiceExt;
    let service = fresh_service();
    let calls = Arc::new(crate::records::CallLog::new(8));
    let router = crate::net::http::router(service, TOKEN.into(), "fuzz".into(), calls, None);
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", content_type)
        .body(axum::body::Body::from(body.to_vec()))
        .expect("a request from fixed parts builds");
    let response = runtime()
        .block_on(router.oneshot(request))
        .expect("the router's error type is Infallible");
    if response.status().is_server_error() {
        let bytes = runtime()
            .block_on(http_body_util::BodyExt::collect(response.into_body()))
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        panic!(
            "{method} {path} answered a server error: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
