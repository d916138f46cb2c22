//! The caller core against a scripted far end made from the project's own
//! message, SDP, RTP, DTMF and prompt modules, in virtual time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::media::dtmf::inband::InbandDetector;
use crate::media::dtmf::info::parse_info;
use crate::media::dtmf::rfc4733::{EventDetector, EventRtpPacket};
use crate::media::prompts::PromptCatalog;
use crate::media::rtp::RtpFields;
use crate::sip::dialog::Reason;
use crate::sip::message::{self, Message, Method, Request, RequestBuilder, SipHeaders};
use crate::sip::sdp::{self, SessionDescription};
use crate::sip::transaction::TimerConfig;

const TARGET: &str = "sip:+14255550100@127.0.0.1:5060";
const FROM: &str = "sip:caller@127.0.0.1";
const BRIDGE_TAG: &str = "bridge-tag-1";
const BRIDGE_CONTACT: &str = "<sip:bridge@127.0.0.1:5060>";

fn catalog() -> &'static PromptCatalog {
    static CATALOG: OnceLock<PromptCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| PromptCatalog::embedded().expect("shipped prompts load"))
}

fn matchers() -> Arc<PromptMatchers> {
    static MATCHERS: OnceLock<Arc<PromptMatchers>> = OnceLock::new();
    MATCHERS
        .get_or_init(|| Arc::new(PromptMatchers::new(catalog())))
        .clone()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn config(dtmf: DtmfPlan, hang_up: HangUp) -> CallerConfig {
    CallerConfig {
        target: TARGET.into(),
        from: FROM.into(),
        remote_sip: addr(5060),
        local_sip: addr(5070),
        local_rtp: addr(40000),
        dtmf,
        hang_up,
        timers: TimerConfig::default(),
        transport: Transport::Udp,
        prompts: matchers(),
        record: None,
        send_silence: true,
    }
}

fn plan(digits: &str, method: DtmfMethod, start: DtmfStart) -> DtmfPlan {
    DtmfPlan {
        start,
        ..DtmfPlan::parse(digits, method).expect("valid digits")
    }
}

/// The caller, virtual time, and everything it sent.
struct Sim {
    caller: Caller,
    t0: Instant,
    now: Instant,
    sip: Vec<Message>,
    rtp: Vec<(Instant, Vec<u8>)>,
}

impl Sim {
    fn new(config: CallerConfig) -> Sim {
        let t0 = Instant::now();
        let caller = Caller::new(config, t0, StdRng::seed_from_u64(7));
        let mut sim = Sim {
            caller,
            t0,
            now: t0,
            sip: Vec::new(),
            rtp: Vec::new(),
        };
        sim.drain();
        sim
    }

    fn drain(&mut self) {
        while let Some(out) = self.caller.poll_output() {
            match out {
                Output::Sip(bytes) => self
                    .sip
                    .push(message::parse(&bytes).expect("the caller sends valid SIP")),
                Output::Rtp { to, bytes } => {
                    assert_eq!(to, addr(41000), "RTP goes to the answer's address");
                    self.rtp.push((self.now, bytes));
                }
            }
        }
    }

    /// Runs the caller's timers up to `t0 + offset`.
    fn advance(&mut self, offset: Duration) {
        let end = self.t0 + offset;
        for _ in 0..1_000_000 {
            match self.caller.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = t.max(self.now);
                    self.caller.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = end.max(self.now);
    }

    fn feed(&mut self, bytes: &[u8]) {
        let message = message::parse(bytes).expect("the fake bridge sends valid SIP");
        self.caller.handle_sip(self.now, message);
        self.drain();
    }

    fn take_sip(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.sip)
            .into_iter()
            .map(|m| match m {
                Message::Request(r) => r,
                Message::Response(r) => panic!("expected requests, got {}", r.status()),
            })
            .collect()
    }

    fn take_one(&mut self, method: Method) -> Request {
        let mut sent = self.take_sip();
        assert_eq!(sent.len(), 1, "one message: {sent:?}");
        let r = sent.remove(0);
        assert_eq!(r.method(), &method);
        r
    }

    /// Answers the INVITE with 200 and an SDP answer (PCMU, events 101).
    fn answer(&mut self, invite: &Request) {
        let bytes = ok_200(invite);
        self.feed(&bytes);
    }

    /// Plays a prompt's frames to the caller, one every 20 ms.
    fn play(&mut self, prompt: PromptId) {
        let frames = catalog().frames(prompt, Codec::Pcmu).to_vec();
        let mut buf = [0u8; 200];
        for (i, frame) in frames.iter().enumerate() {
            let fields = RtpFields {
                marker: i == 0,
                payload_type: 0,
                sequence: i as u16,
                timestamp: i as u32 * 160,
                ssrc: 0xb41d,
            };
            let len = rtp::write_packet(&mut buf, &fields, frame).unwrap();
            self.caller.handle_rtp(self.now, &buf[..len]);
            self.drain();
            let next = self.now + FRAME_DURATION;
            self.advance(next - self.t0);
        }
    }
}

fn ok_200(invite: &Request) -> Vec<u8> {
    let offer = SessionDescription::parse(std::str::from_utf8(invite.body()).unwrap()).unwrap();
    let answer = sdp::answer(
        &offer,
        &sdp::LocalMedia {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rtp_port: 41000,
            session_id: 1,
            session_version: 1,
        },
    )
    .expect("the offer is acceptable to the bridge");
    invite
        .response(200, "OK")
        .to_tag(BRIDGE_TAG)
        .header("Contact", BRIDGE_CONTACT)
        .body("application/sdp", answer.sdp.as_bytes())
        .to_bytes()
}

fn bridge_bye(invite: &Request, reason: Option<(u16, &str)>) -> Vec<u8> {
    let mut bye = RequestBuilder::new(Method::Bye, &invite.contact_uri().unwrap())
        .via("UDP", "127.0.0.1:5060", "bye1")
        .from(TARGET, BRIDGE_TAG)
        .to(FROM, invite.from_tag().as_deref())
        .call_id(invite.call_id().unwrap())
        .cseq(1);
    if let Some((cause, text)) = reason {
        bye = bye.reason_sip(cause, text);
    }
    bye.to_bytes()
}

fn answered(config: CallerConfig) -> (Sim, Request) {
    let mut sim = Sim::new(config);
    let invite = sim.take_one(Method::Invite);
    sim.answer(&invite);
    let ack = sim.take_one(Method::Ack);
    assert_eq!(ack.cseq().unwrap().seq, 1);
    (sim, invite)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn invite_is_a_valid_request_with_an_offer_the_bridge_accepts() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    assert_eq!(invite.uri(), TARGET);
    assert_eq!(invite.uri_user(), Some("+14255550100"));
    assert!(invite.branch().unwrap().starts_with("z9hG4bK"));
    assert!(invite.from_tag().is_some());
    assert_eq!(invite.to_tag(), None);
    assert_eq!(invite.cseq().unwrap().seq, 1);
    assert_eq!(invite.call_id(), Some(sim.caller.call_id()));
    assert_eq!(
        invite.contact_uri().as_deref(),
        Some("sip:caller@127.0.0.1:5070")
    );
    assert_eq!(invite.content_type(), Some("application/sdp"));
    let offer = SessionDescription::parse(std::str::from_utf8(invite.body()).unwrap()).unwrap();
    let answer = sdp::answer(
        &offer,
        &sdp::LocalMedia {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rtp_port: 41000,
            session_id: 1,
            session_version: 1,
        },
    )
    .unwrap();
    assert_eq!(answer.negotiated.codec, sdp::Codec::Pcmu);
    assert_eq!(answer.negotiated.event_pt, Some(101));
    assert_eq!(answer.negotiated.remote_rtp, addr(40000));
}

#[test]
fn invite_is_retransmitted_on_timer_a_until_a_response_comes() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    let mut at = Vec::new();
    for step in [499, 500, 1499, 1500, 3500] {
        sim.advance(ms(step));
        for r in sim.take_sip() {
            assert_eq!(r, invite, "a retransmission is the same INVITE");
            at.push(step);
        }
    }
    // T1, then 2×T1, then 4×T1 after the previous one (RFC 3261 §17.1.1.2).
    assert_eq!(at, [500, 1500, 3500]);
    assert_eq!(sim.caller.report().retransmissions, 3, "each one counted");
    let trying = invite.response(100, "Trying").to_bytes();
    sim.feed(&trying);
    sim.advance(ms(20_000));
    assert!(sim.take_sip().is_empty(), "a provisional stops Timer A");
    assert_eq!(sim.caller.report().outcome, Outcome::InProgress);
}

#[test]
fn no_response_gives_up_on_timer_b() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    sim.advance(ms(31_999));
    assert!(!sim.caller.is_finished());
    sim.advance(ms(32_000));
    assert!(sim.caller.is_finished());
    assert_eq!(sim.caller.report().outcome, Outcome::NoAnswer);
    assert_eq!(sim.take_sip().len(), 7, "the INVITE and 6 retransmissions");
}

#[test]
fn provisional_then_200_is_acked_and_a_retransmitted_200_again() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    sim.advance(ms(30));
    sim.feed(&invite.response(100, "Trying").to_bytes());
    sim.feed(
        &invite
            .response(180, "Ringing")
            .to_tag(BRIDGE_TAG)
            .to_bytes(),
    );
    assert!(sim.take_sip().is_empty());
    sim.advance(ms(250));
    sim.answer(&invite);
    let ack = sim.take_one(Method::Ack);
    // §13.2.2.4: to the Contact, a new branch, the INVITE's CSeq number.
    assert_eq!(ack.uri(), "sip:bridge@127.0.0.1:5060");
    assert_ne!(ack.branch(), invite.branch());
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.to_tag().as_deref(), Some(BRIDGE_TAG));
    assert_eq!(ack.from_tag(), invite.from_tag());
    sim.advance(ms(750));
    sim.sip.clear();
    sim.feed(&ok_200(&invite));
    let again = sim.take_one(Method::Ack);
    assert_eq!(again, ack, "the same ACK for a retransmitted 200");

    let report = sim.caller.report();
    assert_eq!(report.final_status, Some((200, "OK".into())));
    assert_eq!(report.answer_time, Some(ms(250)));
    assert_eq!(report.codec, Some(Codec::Pcmu));
    let lines: Vec<&str> = report
        .ladder
        .iter()
        .map(|l| l.first_line.as_str())
        .collect();
    assert_eq!(
        lines,
        [
            "INVITE sip:+14255550100@127.0.0.1:5060 SIP/2.0",
            "SIP/2.0 100 Trying",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 OK",
            "ACK sip:bridge@127.0.0.1:5060 SIP/2.0",
            "SIP/2.0 200 OK",
            "ACK sip:bridge@127.0.0.1:5060 SIP/2.0",
        ]
    );
    // Silence flows every 20 ms once answered.
    assert_eq!(report.rtp_sent, 26, "ticks at 250, 270, ... 750 ms");
}

#[test]
fn a_404_is_acked_in_the_invite_transaction_and_reported() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    let not_found = invite.response(404, "Not Found").to_tag("t404").to_bytes();
    sim.feed(&not_found);
    let ack = sim.take_one(Method::Ack);
    // §17.1.1.3: same branch and Request-URI, To with the response's tag.
    assert_eq!(ack.branch(), invite.branch());
    assert_eq!(ack.uri(), invite.uri());
    assert_eq!(ack.to_tag().as_deref(), Some("t404"));
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert!(sim.caller.is_finished());
    let report = sim.caller.report();
    assert_eq!(
        report.outcome,
        Outcome::Rejected {
            status: 404,
            reason: "Not Found".into()
        }
    );
    assert_eq!(report.final_status, Some((404, "Not Found".into())));
    sim.feed(&not_found);
    assert_eq!(
        sim.take_one(Method::Ack),
        ack,
        "a retransmitted 404 gets the ACK again"
    );
    sim.advance(ms(60_000));
    assert!(sim.take_sip().is_empty(), "nothing else is sent");
}

#[test]
fn info_digits_carry_dtmf_relay_bodies_and_rising_cseqs() {
    let dtmf = plan(
        "1234567#",
        DtmfMethod::Info,
        DtmfStart::AfterAnswer(ms(200)),
    );
    let (mut sim, _invite) = answered(config(dtmf, HangUp::WaitForBye));
    let mut digits = String::new();
    let mut cseqs = Vec::new();
    let mut times = Vec::new();
    for step in 1..=100 {
        sim.advance(ms(step * 50));
        for info in sim.take_sip() {
            assert_eq!(info.method(), &Method::Info);
            assert_eq!(info.uri(), "sip:bridge@127.0.0.1:5060");
            assert_eq!(info.to_tag().as_deref(), Some(BRIDGE_TAG));
            assert_eq!(info.content_type(), Some("application/dtmf-relay"));
            let body = std::str::from_utf8(info.body()).unwrap();
            assert!(body.starts_with("Signal="), "{body}");
            assert!(body.ends_with("\r\nDuration=160"), "{body}");
            let event = parse_info(info.content_type().unwrap(), info.body()).unwrap();
            digits.push(event.digit.as_char());
            assert_eq!(event.duration, Some(ms(160)));
            cseqs.push(info.cseq().unwrap().seq);
            times.push(sim.now - sim.t0);
            sim.feed(&info.response(200, "OK").to_bytes());
        }
    }
    assert_eq!(digits, "1234567#");
    assert_eq!(cseqs, (2..10).collect::<Vec<u32>>());
    // The first press 200 ms after the answer, then 160 ms held + 100 ms gap.
    assert_eq!(times[0], ms(200));
    assert_eq!(times[1], ms(500), "polled every 50 ms: 460 lands at 500");
    let report = sim.caller.report();
    assert_eq!(report.digit_text(), "1234567#");
    assert!(report.digits.iter().all(|d| d.method == DtmfMethod::Info));
    assert!(report.digits.iter().all(|d| d.status == Some(200)));
    assert_eq!(report.digits[1].at, ms(460));
}

#[test]
fn info_keys_without_duration_or_gap_go_as_each_answer_comes() {
    // SIPp's INFO scenario: the next INFO as soon as the previous one is
    // answered, never two at once, and no time spent between them.
    let mut dtmf = plan("1234567#", DtmfMethod::Info, DtmfStart::AfterAnswer(ms(0)));
    dtmf.tone = Duration::ZERO;
    for d in &mut dtmf.digits {
        d.delay = Duration::ZERO;
    }
    let (mut sim, _invite) = answered(config(dtmf, HangUp::WaitForBye));
    sim.advance(Duration::ZERO);
    let mut digits = String::new();
    for _ in 0..8 {
        let sent = sim.take_sip();
        assert_eq!(sent.len(), 1, "one INFO at a time: {sent:?}");
        let info = &sent[0];
        let event = parse_info(info.content_type().unwrap(), info.body()).unwrap();
        digits.push(event.digit.as_char());
        sim.advance(Duration::ZERO);
        assert!(
            sim.take_sip().is_empty(),
            "the next key waits for the answer"
        );
        sim.feed(&info.response(200, "OK").to_bytes());
        sim.advance(Duration::ZERO);
    }
    assert_eq!(digits, "1234567#");
    assert_eq!(sim.now, sim.t0, "no time passed between the keys");
    let report = sim.caller.report();
    assert!(report.digits.iter().all(|d| d.at.is_zero()));
    assert_eq!(report.retransmissions, 0);
}

#[test]
fn an_unanswered_info_is_retransmitted_on_timer_e() {
    let dtmf = plan(
        "5",
        DtmfMethod::Info,
        DtmfStart::AfterAnswer(Duration::ZERO),
    );
    let (mut sim, _invite) = answered(config(dtmf, HangUp::WaitForBye));
    sim.advance(Duration::ZERO);
    let info = sim.take_one(Method::Info);
    let mut at = Vec::new();
    for step in (100..=8_000).step_by(100) {
        sim.advance(ms(step));
        for r in sim.take_sip() {
            assert_eq!(r, info);
            at.push(step);
        }
    }
    // 500 ms, then doubling up to T2 = 4 s (§17.1.2.2).
    assert_eq!(at, [500, 1500, 3500, 7500]);
    assert_eq!(sim.caller.report().retransmissions, 4);
}

#[test]
fn rfc4733_digits_decode_to_the_same_digits() {
    let dtmf = plan(
        "1234567#",
        DtmfMethod::Rfc4733,
        DtmfStart::AfterAnswer(ms(100)),
    );
    let (mut sim, _invite) = answered(config(dtmf, HangUp::WaitForBye));
    sim.advance(ms(5_000));
    let mut detector = EventDetector::new([101]);
    let mut heard = String::new();
    let mut ssrcs = std::collections::HashSet::new();
    let mut last_seq: Option<u16> = None;
    for (at, bytes) in &sim.rtp {
        let h = RtpHeader::parse(bytes).unwrap();
        ssrcs.insert(h.ssrc());
        if let Some(prev) = last_seq {
            assert_eq!(
                h.sequence(),
                prev.wrapping_add(1),
                "one sequence for audio and events"
            );
        }
        last_seq = Some(h.sequence());
        let packet = EventRtpPacket {
            ssrc: h.ssrc(),
            payload_type: h.payload_type(),
            sequence: h.sequence(),
            timestamp: h.timestamp(),
            marker: h.marker(),
            payload: h.payload(),
        };
        if let Some(d) = detector.handle_packet(*at, &packet) {
            heard.push(d.digit.as_char());
        }
    }
    assert_eq!(heard, "1234567#");
    assert_eq!(ssrcs.len(), 1);
    let report = sim.caller.report();
    assert_eq!(report.digit_text(), "1234567#");
    assert!(
        report
            .digits
            .iter()
            .all(|d| d.method == DtmfMethod::Rfc4733)
    );
}

#[test]
fn inband_digits_decode_to_the_same_digits() {
    let dtmf = plan(
        "1234567#",
        DtmfMethod::Inband,
        DtmfStart::AfterAnswer(ms(100)),
    );
    let (mut sim, _invite) = answered(config(dtmf, HangUp::WaitForBye));
    sim.advance(ms(5_000));
    let mut detector = InbandDetector::new();
    let mut samples = [0i16; FRAME_SAMPLES];
    for (at, bytes) in &sim.rtp {
        let h = RtpHeader::parse(bytes).unwrap();
        assert_eq!(h.payload_type(), 0, "in-band digits are audio");
        Codec::Pcmu.decode_slice(h.payload(), &mut samples);
        detector.handle_samples(*at, &samples);
    }
    let mut heard = String::new();
    while let Some(d) = detector.poll_output() {
        heard.push(d.digit.as_char());
    }
    assert_eq!(heard, "1234567#");
}

#[test]
fn rfc4733_without_telephone_event_in_the_answer_falls_back_to_inband() {
    let dtmf = plan(
        "42",
        DtmfMethod::Rfc4733,
        DtmfStart::AfterAnswer(Duration::ZERO),
    );
    let mut sim = Sim::new(config(dtmf, HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    let answer = "v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=b\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                  m=audio 41000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let ok = invite
        .response(200, "OK")
        .to_tag(BRIDGE_TAG)
        .header("Contact", BRIDGE_CONTACT)
        .body("application/sdp", answer.as_bytes())
        .to_bytes();
    sim.feed(&ok);
    sim.advance(ms(2_000));
    let mut detector = InbandDetector::new();
    let mut samples = [0i16; FRAME_SAMPLES];
    for (at, bytes) in &sim.rtp {
        let h = RtpHeader::parse(bytes).unwrap();
        assert_eq!(h.payload_type(), 8);
        Codec::Pcma.decode_slice(h.payload(), &mut samples);
        detector.handle_samples(*at, &samples);
    }
    let heard: Vec<char> = std::iter::from_fn(|| detector.poll_output())
        .map(|d| d.digit.as_char())
        .collect();
    assert_eq!(heard, ['4', '2']);
    let report = sim.caller.report();
    assert!(report.digits.iter().all(|d| d.method == DtmfMethod::Inband));
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
}

#[test]
fn prompts_are_heard_from_received_frames_and_start_the_digits() {
    let dtmf = plan(
        "1#",
        DtmfMethod::Info,
        DtmfStart::OnPrompt(PromptId::Welcome),
    );
    let (mut sim, _invite) = answered(config(dtmf, HangUp::WaitForBye));
    sim.advance(ms(1_000));
    assert!(
        sim.take_sip().is_empty(),
        "no digit before the welcome prompt"
    );
    sim.play(PromptId::Welcome);
    // The second key waits for the answer to the first INFO.
    let first = sim.take_sip();
    let cseqs: std::collections::BTreeSet<u32> =
        first.iter().map(|r| r.cseq().unwrap().seq).collect();
    assert_eq!(cseqs.len(), 1, "one INFO out at a time: {first:?}");
    sim.feed(&first[0].response(200, "OK").to_bytes());
    let second = sim.take_one(Method::Info);
    assert_eq!(second.cseq().unwrap().seq, first[0].cseq().unwrap().seq + 1);
    sim.play(PromptId::NotValid);
    let report = sim.caller.report();
    assert_eq!(report.prompt_ids(), [PromptId::Welcome, PromptId::NotValid]);
    let welcome = report.prompts[0];
    assert_eq!(welcome.started_at, ms(1_000));
    assert_eq!(welcome.heard_at, ms(1_080), "sure after 5 frames");
    // The first digit goes as soon as the prompt is heard.
    assert_eq!(report.digits[0].at, ms(1_080));
    let not_valid = report.prompts[1];
    assert!(not_valid.started_at > welcome.started_at);
    assert_eq!(
        report.decision_time,
        Some(not_valid.started_at - report.digits[1].at)
    );
}

#[test]
fn the_bridges_bye_is_answered_200_and_its_reason_kept() {
    let (mut sim, invite) = answered(config(DtmfPlan::none(), HangUp::AfterJoined(ms(5_000))));
    sim.advance(ms(1_000));
    sim.play(PromptId::NotValid);
    let bye = bridge_bye(&invite, Some((403, "Conference ID not valid")));
    sim.feed(&bye);
    let ok = match sim.sip.pop() {
        Some(Message::Response(r)) => r,
        other => panic!("expected the 200 to the BYE, got {other:?}"),
    };
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.cseq().unwrap().method, Method::Bye);
    assert!(sim.caller.is_finished());
    let report = sim.caller.report();
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.hung_up_by, Some(Party::Bridge));
    assert_eq!(
        report.bye_reason.as_deref(),
        Some(
            Reason::sip(403, "Conference ID not valid")
                .header_value()
                .as_str()
        )
    );
    assert_eq!(
        report.bye_reason_text.as_deref(),
        Some("Conference ID not valid")
    );
    assert_eq!(report.prompt_ids(), [PromptId::NotValid]);
    let rtp_sent = report.rtp_sent;
    sim.advance(ms(10_000));
    assert_eq!(
        sim.caller.report().rtp_sent,
        rtp_sent,
        "media stops with the call"
    );
}

#[test]
fn a_bye_for_another_dialog_gets_481() {
    let (mut sim, invite) = answered(config(DtmfPlan::none(), HangUp::WaitForBye));
    let stranger = RequestBuilder::new(Method::Bye, &invite.contact_uri().unwrap())
        .via("UDP", "127.0.0.1:5060", "x")
        .from(TARGET, "other-tag")
        .to(FROM, invite.from_tag().as_deref())
        .call_id(invite.call_id().unwrap())
        .cseq(1)
        .to_bytes();
    sim.feed(&stranger);
    match sim.sip.pop() {
        Some(Message::Response(r)) => assert_eq!(r.status(), 481),
        other => panic!("expected 481, got {other:?}"),
    }
    assert!(!sim.caller.is_finished());
}

#[test]
fn our_bye_goes_after_hang_up_after_joined() {
    let (mut sim, invite) = answered(config(DtmfPlan::none(), HangUp::AfterJoined(ms(2_000))));
    sim.advance(ms(500));
    sim.play(PromptId::Joining);
    let heard_at = sim.caller.report().prompts[0].heard_at;
    sim.advance(heard_at + ms(1_999));
    assert!(sim.take_sip().is_empty());
    sim.advance(heard_at + ms(2_000));
    let bye = sim.take_one(Method::Bye);
    assert_eq!(bye.cseq().unwrap().seq, 2);
    assert_eq!(bye.uri(), "sip:bridge@127.0.0.1:5060");
    assert_eq!(bye.to_tag().as_deref(), Some(BRIDGE_TAG));
    assert_eq!(bye.call_id(), invite.call_id());
    assert!(!sim.caller.is_finished(), "until the BYE is answered");
    sim.feed(&bye.response(200, "OK").to_bytes());
    assert!(sim.caller.is_finished());
    let report = sim.caller.report();
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.hung_up_by, Some(Party::Caller));
    assert_eq!(report.duration, heard_at + ms(2_000));
}

#[test]
fn hang_up_after_answer_sends_bye_even_when_nothing_is_heard() {
    let (mut sim, _invite) = answered(config(DtmfPlan::none(), HangUp::AfterAnswer(ms(3_000))));
    sim.advance(ms(2_999));
    assert!(sim.take_sip().is_empty());
    sim.advance(ms(3_000));
    let bye = sim.take_one(Method::Bye);
    // No answer to the BYE: Timer F ends the call anyway.
    sim.advance(ms(3_000 + 32_000));
    assert!(sim.caller.is_finished());
    assert!(sim.take_sip().iter().all(|r| *r == bye));
    assert_eq!(sim.caller.report().outcome, Outcome::Completed);
}

#[test]
fn hang_up_while_ringing_cancels_and_acks_the_487() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    sim.feed(
        &invite
            .response(180, "Ringing")
            .to_tag(BRIDGE_TAG)
            .to_bytes(),
    );
    sim.caller.hang_up(sim.now);
    sim.drain();
    let cancel = sim.take_one(Method::Cancel);
    assert_eq!(cancel.branch(), invite.branch());
    assert_eq!(cancel.uri(), invite.uri());
    assert_eq!(cancel.cseq().unwrap().seq, 1);
    sim.feed(&cancel.response(200, "OK").to_bytes());
    sim.feed(
        &invite
            .response(487, "Request Terminated")
            .to_tag(BRIDGE_TAG)
            .to_bytes(),
    );
    let ack = sim.take_one(Method::Ack);
    assert_eq!(ack.branch(), invite.branch());
    assert!(sim.caller.is_finished());
    assert_eq!(sim.caller.report().outcome, Outcome::Cancelled);
}

#[test]
fn digit_strings_parse_with_pauses_and_refuse_bad_keys() {
    let p = DtmfPlan::parse("12,,3#", DtmfMethod::Inband).unwrap();
    assert_eq!(p.text(), "123#");
    let delays: Vec<Duration> = p.digits.iter().map(|d| d.delay).collect();
    assert_eq!(delays, [ms(0), ms(100), ms(1_100), ms(100)]);
    let err = DtmfPlan::parse("12x", DtmfMethod::Info).unwrap_err();
    assert!(err.to_string().contains("'x' at position 2"), "{err}");
}

#[test]
fn reason_text_unescapes_the_quoted_string() {
    assert_eq!(
        reason_text(r#"SIP ;cause=403 ;text="Conference ID \"1\" not valid""#).as_deref(),
        Some(r#"Conference ID "1" not valid"#)
    );
    assert_eq!(reason_text("Q.850 ;cause=16"), None);
}

#[test]
fn garbage_rtp_and_early_rtp_are_ignored() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let frame = catalog().frames(PromptId::Welcome, Codec::Pcmu)[10];
    let mut buf = [0u8; 200];
    let fields = RtpFields {
        marker: false,
        payload_type: 0,
        sequence: 1,
        timestamp: 1,
        ssrc: 1,
    };
    let len = rtp::write_packet(&mut buf, &fields, &frame).unwrap();
    sim.caller.handle_rtp(sim.now, &buf[..len]);
    assert_eq!(
        sim.caller.report().rtp_received,
        0,
        "no codec before the answer"
    );
    let invite = sim.take_one(Method::Invite);
    sim.answer(&invite);
    let mut rng = StdRng::seed_from_u64(3);
    for len in 0..400 {
        let mut junk = vec![0u8; len % 200];
        rand::RngExt::fill(&mut rng, &mut junk[..]);
        sim.caller.handle_rtp(sim.now, &junk);
    }
    assert!(sim.caller.report().prompts.is_empty());
}

#[test]
fn a_200_that_crosses_our_cancel_is_acked_and_ended_with_bye() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    sim.feed(
        &invite
            .response(180, "Ringing")
            .to_tag(BRIDGE_TAG)
            .to_bytes(),
    );
    sim.caller.hang_up(sim.now);
    sim.drain();
    sim.take_one(Method::Cancel);
    sim.answer(&invite);
    let sent = sim.take_sip();
    let methods: Vec<&Method> = sent.iter().map(|r| r.method()).collect();
    assert_eq!(methods, [&Method::Ack, &Method::Bye]);
    sim.feed(&sent[1].response(200, "OK").to_bytes());
    assert!(sim.caller.is_finished());
    let report = sim.caller.report();
    assert_eq!(report.hung_up_by, Some(Party::Caller));
    assert_eq!(report.rtp_sent, 0, "no media for a call being ended");
}

#[test]
fn a_hang_up_before_any_response_ends_a_late_answer_at_once() {
    let mut sim = Sim::new(config(DtmfPlan::none(), HangUp::WaitForBye));
    let invite = sim.take_one(Method::Invite);
    sim.caller.hang_up(sim.now);
    sim.drain();
    assert!(
        sim.take_sip().is_empty(),
        "no CANCEL before a provisional (§9.1)"
    );
    assert!(sim.caller.is_finished());
    assert_eq!(sim.caller.report().outcome, Outcome::Cancelled);
    sim.advance(ms(5_000));
    assert!(sim.take_sip().is_empty(), "the INVITE is not retransmitted");
    assert!(
        sim.caller.awaits_late_answer(),
        "the driver keeps listening"
    );
    sim.answer(&invite);
    let sent = sim.take_sip();
    let methods: Vec<Method> = sent.iter().map(|r| r.method().clone()).collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    assert!(sim.caller.awaits_late_answer(), "until the BYE is answered");
    sim.feed(&sent[1].response(200, "OK").to_bytes());
    assert!(!sim.caller.awaits_late_answer());
    assert_eq!(sim.caller.report().outcome, Outcome::Cancelled);
}

#[test]
fn a_2xx_from_a_second_fork_is_acked_and_sent_bye() {
    let (mut sim, invite) = answered(config(DtmfPlan::none(), HangUp::WaitForBye));
    let fork = invite
        .response(200, "OK")
        .to_tag("other-fork")
        .header("Contact", "<sip:fork@127.0.0.1:5099>")
        .to_bytes();
    sim.feed(&fork);
    let sent = sim.take_sip();
    let methods: Vec<&Method> = sent.iter().map(|r| r.method()).collect();
    assert_eq!(methods, [&Method::Ack, &Method::Bye]);
    assert!(
        sent.iter()
            .all(|r| r.to_tag().as_deref() == Some("other-fork"))
    );
    assert!(sent.iter().all(|r| r.uri() == "sip:fork@127.0.0.1:5099"));
    assert!(!sim.caller.is_finished(), "the first dialog goes on");
}

#[test]
fn the_text_report_shows_prompts_digits_outcome_and_ladder() {
    let dtmf = plan(
        "7#",
        DtmfMethod::Rfc4733,
        DtmfStart::OnPrompt(PromptId::Welcome),
    );
    let (mut sim, invite) = answered(config(dtmf, HangUp::WaitForBye));
    sim.play(PromptId::Welcome);
    sim.play(PromptId::Joining);
    sim.feed(&bridge_bye(&invite, None));
    let text = sim.caller.report().to_string();
    for needle in [
        "outcome: completed",
        "answer: 200 OK after 0.000s, PCMU",
        "welcome",
        "joining",
        "7 by rfc4733",
        "# by rfc4733",
        "hung up by: bridge",
        "--> INVITE sip:+14255550100@127.0.0.1:5060 SIP/2.0",
        "<-- BYE sip:caller@127.0.0.1:5070 SIP/2.0",
        "--> SIP/2.0 200 OK",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    let json = sim.caller.report().to_json();
    assert_eq!(json["outcome"], "completed");
    assert_eq!(json["prompts"][0]["prompt"], "welcome");
    assert_eq!(json["digits"][1]["digit"], "#");
    assert_eq!(json["hung_up_by"], "bridge");
}

#[test]
fn a_stalled_driver_gets_no_burst_of_rtp() {
    let (mut sim, _invite) = answered(config(DtmfPlan::none(), HangUp::WaitForBye));
    sim.caller.handle_timeout(sim.t0);
    sim.drain();
    assert_eq!(sim.rtp.len(), 1);
    // The driver wakes a second late: the stream skips ahead.
    sim.now = sim.t0 + ms(1_000);
    sim.caller.handle_timeout(sim.now);
    sim.drain();
    assert!(sim.rtp.len() <= 1 + 6, "{} packets", sim.rtp.len());
    let first = RtpHeader::parse(&sim.rtp[0].1).unwrap().timestamp();
    let last = RtpHeader::parse(&sim.rtp.last().unwrap().1)
        .unwrap()
        .timestamp();
    assert_eq!(
        last.wrapping_sub(first),
        8_000,
        "the timestamp follows the clock"
    );
}

#[test]
fn over_tcp_nothing_is_retransmitted_but_timer_b_still_gives_up() {
    let mut tcp = config(DtmfPlan::none(), HangUp::WaitForBye);
    tcp.transport = Transport::Tcp;
    let mut sim = Sim::new(tcp);
    let invite = sim.take_one(Method::Invite);
    assert_eq!(invite.top_via().unwrap().transport, "TCP");
    assert!(
        invite.contact_uri().unwrap().contains(";transport=tcp"),
        "{:?}",
        invite.contact_uri()
    );
    sim.advance(ms(31_999));
    assert!(
        sim.take_sip().is_empty(),
        "no Timer A on a reliable transport"
    );
    assert!(!sim.caller.is_finished());
    sim.advance(ms(32_000));
    assert_eq!(sim.caller.report().outcome, Outcome::NoAnswer);
}

#[test]
fn over_tcp_an_unanswered_info_is_not_retransmitted() {
    let dtmf = plan(
        "5",
        DtmfMethod::Info,
        DtmfStart::AfterAnswer(Duration::ZERO),
    );
    let mut tcp = config(dtmf, HangUp::WaitForBye);
    tcp.transport = Transport::Tcp;
    let (mut sim, _invite) = answered(tcp);
    sim.advance(Duration::ZERO);
    let info = sim.take_one(Method::Info);
    assert_eq!(info.top_via().unwrap().transport, "TCP");
    sim.advance(ms(31_000));
    assert!(
        sim.take_sip().is_empty(),
        "no Timer E on a reliable transport"
    );
}

#[test]
fn cancel_after_cancels_a_ringing_call_and_acks_the_487() {
    let mut sim = Sim::new(config(
        DtmfPlan::none(),
        HangUp::CancelAfter(Duration::from_millis(300)),
    ));
    let invite = sim.take_one(Method::Invite);
    sim.feed(
        &invite
            .response(180, "Ringing")
            .to_tag(BRIDGE_TAG)
            .to_bytes(),
    );
    sim.advance(ms(299));
    assert!(sim.take_sip().is_empty());
    sim.advance(ms(300));
    let cancel = sim.take_one(Method::Cancel);
    assert_eq!(cancel.branch(), invite.branch());
    sim.feed(&cancel.response(200, "OK").to_bytes());
    sim.feed(
        &invite
            .response(487, "Request Terminated")
            .to_tag(BRIDGE_TAG)
            .to_bytes(),
    );
    sim.take_one(Method::Ack);
    assert_eq!(sim.caller.report().outcome, Outcome::Cancelled);
    assert_eq!(sim.caller.report().hung_up_by, Some(Party::Caller));
}

#[test]
fn cancel_after_an_answer_is_a_bye() {
    let (mut sim, _invite) = answered(config(
        DtmfPlan::none(),
        HangUp::CancelAfter(Duration::from_millis(300)),
    ));
    sim.take_sip();
    sim.advance(ms(300));
    let sent: Vec<_> = sim
        .take_sip()
        .into_iter()
        .filter(|r| r.method() == &Method::Bye)
        .collect();
    assert_eq!(sent.len(), 1);
}

#[test]
fn the_next_info_waits_for_the_answer_to_the_previous_one() {
    let dtmf = plan(
        "12",
        DtmfMethod::Info,
        DtmfStart::AfterAnswer(Duration::ZERO),
    );
    let (mut sim, _invite) = answered(config(dtmf, HangUp::WaitForBye));
    sim.advance(Duration::ZERO);
    let first = sim.take_one(Method::Info);
    // The second key is due at 260 ms (160 held + 100 gap), but the first
    // INFO is unanswered: only its retransmission goes out.
    sim.advance(ms(800));
    let sent = sim.take_sip();
    assert!(sent.iter().all(|r| *r == first), "{sent:?}");
    sim.feed(&first.response(200, "OK").to_bytes());
    let second = sim.take_one(Method::Info);
    assert_eq!(second.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);
    let event = parse_info(second.content_type().unwrap(), second.body()).unwrap();
    assert_eq!(event.digit.as_char(), '2');
    assert_eq!(sim.caller.report().digits[1].at, ms(800));
}

#[test]
fn hang_up_after_decision_follows_the_decision_prompt() {
    let dtmf = plan(
        "1#",
        DtmfMethod::Info,
        DtmfStart::AfterAnswer(Duration::ZERO),
    );
    let hang_up = HangUp::AfterDecision {
        hold: ms(100),
        limit: ms(5_000),
    };
    let (mut sim, _invite) = answered(config(dtmf, hang_up));
    for step in 0..10 {
        sim.advance(ms(step * 100));
        for info in sim.take_sip() {
            sim.feed(&info.response(200, "OK").to_bytes());
        }
    }
    assert_eq!(sim.caller.report().digit_text(), "1#");
    sim.play(PromptId::NotValid);
    let heard_at = sim.caller.report().prompts[0].heard_at;
    // `play` ran the clock past the heard moment; the BYE went out 100 ms
    // after it, long before the 5 s limit.
    let bye = sim
        .take_sip()
        .into_iter()
        .find(|r| r.method() == &Method::Bye)
        .expect("a BYE after the decision");
    sim.feed(&bye.response(200, "OK").to_bytes());
    let report = sim.caller.report();
    assert_eq!(report.hung_up_by, Some(Party::Caller));
    let bye_at = report
        .ladder
        .iter()
        .find(|l| l.first_line.starts_with("BYE "))
        .map(|l| l.at);
    assert_eq!(bye_at, Some(heard_at + ms(100)), "{report}");
    // The audio came at an even 20 ms: no jitter.
    assert_eq!(report.rtp_jitter, Some(Duration::ZERO));
}

#[test]
fn hang_up_after_decision_gives_up_at_the_limit_when_nothing_is_heard() {
    let dtmf = plan(
        "1#",
        DtmfMethod::Info,
        DtmfStart::AfterAnswer(Duration::ZERO),
    );
    let hang_up = HangUp::AfterDecision {
        hold: Duration::ZERO,
        limit: ms(400),
    };
    let (mut sim, _invite) = answered(config(dtmf, hang_up));
    sim.advance(Duration::ZERO);
    let one = sim.take_one(Method::Info);
    sim.feed(&one.response(200, "OK").to_bytes());
    sim.advance(ms(260));
    let pound = sim.take_one(Method::Info);
    // A slow bridge: the `#` INFO is answered 300 ms later, and the limit
    // runs from that answer (the decision), not from the press.
    sim.advance(ms(560));
    assert!(
        sim.take_sip().is_empty(),
        "no BYE while the `#` is unanswered"
    );
    sim.feed(&pound.response(200, "OK").to_bytes());
    sim.advance(ms(959));
    assert!(sim.take_sip().is_empty());
    sim.advance(ms(960));
    sim.take_one(Method::Bye);
    assert_eq!(sim.caller.report().rtp_jitter, None, "no audio came");
}

#[test]
fn a_caller_without_silence_sends_rtp_only_for_its_key_presses() {
    let dtmf = plan("5", DtmfMethod::Rfc4733, DtmfStart::AfterAnswer(ms(1_000)));
    let mut config = config(dtmf, HangUp::WaitForBye);
    config.send_silence = false;
    let (mut sim, _invite) = answered(config);
    sim.advance(ms(999));
    assert!(sim.rtp.is_empty(), "nothing before the press");
    // The caller has nothing to wake for until the press.
    assert_eq!(sim.caller.poll_timeout(), Some(sim.t0 + ms(1_000)));
    sim.advance(ms(3_000));
    assert!(!sim.rtp.is_empty());
    let mut detector = EventDetector::new([101]);
    let mut digits = Vec::new();
    for (at, bytes) in &sim.rtp {
        let h = RtpHeader::parse(bytes).unwrap();
        assert_eq!(h.payload_type(), 101, "only events, no silence");
        let packet = EventRtpPacket {
            ssrc: h.ssrc(),
            payload_type: h.payload_type(),
            sequence: h.sequence(),
            timestamp: h.timestamp(),
            marker: h.marker(),
            payload: h.payload(),
        };
        digits.extend(detector.handle_packet(*at, &packet));
    }
    assert_eq!(digits.len(), 1);
    let last = sim.rtp.last().unwrap().0;
    assert!(last < sim.t0 + ms(1_400), "the press ended, the stream too");
}
