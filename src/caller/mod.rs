//! The SIP caller (UAC) core: places one call, presses DTMF by any method,
//! listens for prompts, and reports what happened. No IO and no clock.
//!
//! What it does:
//! - sends an INVITE with an SDP offer ([`sdp::offer`]: PCMU, PCMA,
//!   telephone-event), retransmitted on Timer A until a response comes,
//!   given up on Timer B (RFC 3261 §17.1.1.2); ACKs a 2xx with a new
//!   transaction (§13.2.2.4) and every retransmission of it, and a non-2xx
//!   in the INVITE transaction (same branch, §17.1.1.3);
//! - sends RTP every 20 ms once answered: silence, in-band key tones
//!   ([`ToneGenerator`], G.711 encoded), or RFC 4733 events
//!   ([`EventSender`]) on the same SSRC and sequence;
//! - sends SIP INFO `application/dtmf-relay` key presses and BYE, each a
//!   non-INVITE client transaction (Timer E retransmits, Timer F gives up,
//!   §17.1.2.2), and CANCEL before an answer (§9.1);
//! - matches received audio against the prompt catalog
//!   ([`PromptListener`]) to know which prompt plays, and answers the far
//!   end's BYE with 200, keeping its Reason (RFC 3326);
//! - with [`CallerConfig::record`], keeps the received audio on a timeline
//!   ([`Recorder`]) for the driver to write as a WAV;
//! - keeps a [`CallReport`]: final status, prompts and digits with times,
//!   who hung up and why, the SIP ladder.
//!
//! Over TCP ([`Transport::Tcp`]) the same messages carry a `SIP/2.0/TCP`
//! Via and are never retransmitted (Timers A and E do not run on a
//! reliable transport); Timers B and F still give up.
//!
//! What it does not: sockets, name resolution, authentication,
//! re-INVITEs, forking (the first 2xx makes the dialog; another To tag is
//! ACKed and then sent BYE), or early media.
//!
//! Drive it like the other cores: feed [`Caller::handle_sip`],
//! [`Caller::handle_rtp`] and [`Caller::handle_timeout`], then drain
//! [`Caller::poll_output`] and sleep until [`Caller::poll_timeout`].

mod config;
mod report;
#[cfg(test)]
mod tests;

pub use config::{
    COMMA_PAUSE, CallerConfig, DEFAULT_GAP, DEFAULT_TONE, DigitsError, DtmfPlan, DtmfStart, HangUp,
    PlannedDigit, PromptMatchers, Transport,
};
pub use report::{
    CallReport, Direction, HeardPrompt, LadderEntry, Outcome, Party, PathCounts, RecordingFile,
    SentDigit,
};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngExt};

use crate::media::dtmf::inband::ToneGenerator;
use crate::media::dtmf::rfc4733::{EventSender, OutgoingEvent};
use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::g711::Codec;
use crate::media::prompts::{
    FRAME_DURATION, FRAME_SAMPLES, Frame, HEARD_AFTER_FRAMES, ListenEvent, PromptId, PromptListener,
};
use crate::media::recorder::Recorder;
use crate::media::rtp::{self, RtpFields, RtpHeader, RtpReceiverStats};
use crate::sip::dialog::{Dialog, OutgoingRequest, UacAnswer};
use crate::sip::message::{
    MAGIC_COOKIE, Message, Method, Request, RequestBuilder, Response, SipHeaders,
};
use crate::sip::sdp::{self, LocalMedia};

/// Something to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A SIP message for the far end's SIP address
    /// ([`CallerConfig::remote_sip`]).
    Sip(Vec<u8>),
    /// An RTP packet for the far end's RTP address (from its SDP answer).
    Rtp { to: SocketAddr, bytes: Vec<u8> },
}

/// The INVITE client transaction (RFC 3261 §17.1.1).
#[derive(Debug)]
struct InviteTransaction {
    bytes: Vec<u8>,
    /// The random part of the branch, reused by CANCEL and a non-2xx ACK.
    branch: String,
    cseq: u32,
    /// Timer A; `None` once a response came.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B; `None` once a response came.
    give_up_at: Option<Instant>,
    /// Any response arrived (so CANCEL may be sent, §9.1).
    provisional: bool,
    /// The final response came.
    completed: bool,
    /// The ACK last sent for a final response, resent for its retransmissions.
    ack: Option<Vec<u8>>,
    /// The To tag of the 2xx that made the dialog.
    to_tag: Option<String>,
}

/// Why a non-INVITE request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Bye,
    Cancel,
    /// Index into the report's digits.
    Info(usize),
}

/// A non-INVITE client transaction (RFC 3261 §17.1.2).
#[derive(Debug)]
struct NonInviteTransaction {
    purpose: Purpose,
    branch: String,
    bytes: Vec<u8>,
    /// Timer E; `None` on a reliable transport.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer F.
    give_up_at: Instant,
}

/// A key press being played into the RTP stream, one packet per tick.
#[derive(Debug)]
enum Press {
    Tones {
        frames: Vec<Frame>,
        next: usize,
    },
    Events {
        packets: Vec<OutgoingEvent>,
        next: usize,
    },
}

/// The media of an answered call.
#[derive(Debug)]
struct Media {
    codec: Codec,
    audio_pt: u8,
    event_pt: Option<u8>,
    remote: SocketAddr,
    ssrc: u32,
    sequence: u16,
    /// The RTP timestamp of the next 20 ms tick (runs whatever is sent).
    timestamp: u32,
    next_tick: Instant,
    press: Option<Press>,
}

/// SDP names the codec the offer/answer agreed; the g711 module codes it.
fn g711(codec: sdp::Codec) -> Codec {
    match codec {
        sdp::Codec::Pcmu => Codec::Pcmu,
        sdp::Codec::Pcma => Codec::Pcma,
    }
}

/// Catching up more ticks than this after a stall would burst packets: the
/// stream skips ahead instead.
const MAX_CATCH_UP_TICKS: u32 = 5;

/// One SIP call from this side.
#[derive(Debug)]
pub struct Caller {
    config: CallerConfig,
    rng: StdRng,
    start: Instant,
    call_id: String,
    local_tag: String,
    offer: String,
    invite: InviteTransaction,
    dialog: Option<Dialog>,
    media: Option<Media>,
    requests: Vec<NonInviteTransaction>,
    listener: PromptListener,
    /// What was heard, once answered, when [`CallerConfig::record`] asks.
    recorder: Option<Recorder>,
    /// Arrival times of the last [`HEARD_AFTER_FRAMES`] audio frames: a
    /// prompt heard now started at the oldest (the listener is sure only
    /// after that many frames, and a burst is not paced at 20 ms).
    arrivals: VecDeque<Instant>,
    /// Digits still to press, in order.
    plan: VecDeque<PlannedDigit>,
    digits_started: bool,
    next_digit_at: Option<Instant>,
    hang_up_at: Option<Instant>,
    /// A digit came due while an INFO was out: press it on the answer.
    press_after_info: bool,
    /// The bridge's audio stream as received (loss, jitter).
    rtp_stats: RtpReceiverStats,
    /// Hang-up asked for before any response: CANCEL once one comes.
    cancel_pending: bool,
    cancelled: bool,
    /// A BYE of ours is out.
    bye_sent: bool,
    finished: bool,
    report: CallReport,
    out: VecDeque<Output>,
}

impl Caller {
    /// A call that sends its INVITE at `now` (drain [`Caller::poll_output`]).
    pub fn new(config: CallerConfig, now: Instant, mut rng: StdRng) -> Caller {
        let call_id = format!("{:016x}@{}", rng.next_u64(), config.local_sip.ip());
        let local_tag = format!("{:016x}", rng.next_u64());
        let branch = format!("{:016x}", rng.next_u64());
        let offer = sdp::offer(&LocalMedia {
            address: config.local_rtp.ip(),
            rtp_port: config.local_rtp.port(),
            session_id: rng.next_u64() >> 1,
            session_version: 1,
        });
        let cseq = 1;
        let bytes = RequestBuilder::new(Method::Invite, &config.target)
            .via(
                config.transport.via_name(),
                &config.local_sip.to_string(),
                &branch,
            )
            .from(&config.from, &local_tag)
            .to(&config.target, None)
            .call_id(&call_id)
            .cseq(cseq)
            .header("Contact", &contact(&config))
            .header("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")
            .header("User-Agent", "dialin-caller")
            .body("application/sdp", offer.as_bytes())
            .to_bytes();
        let t1 = config.timers.t1;
        // Timer A runs only on an unreliable transport (§17.1.1.2).
        let retransmit_at = (!config.transport.is_reliable()).then_some(now + t1);
        let hang_up_at = match config.hang_up {
            HangUp::CancelAfter(after) => Some(now + after),
            _ => None,
        };
        let report = CallReport {
            call_id: call_id.clone(),
            target: config.target.clone(),
            outcome: Outcome::InProgress,
            final_status: None,
            codec: None,
            prompts: Vec::new(),
            digits: Vec::new(),
            hung_up_by: None,
            bye_reason: None,
            bye_reason_text: None,
            answer_time: None,
            decision_time: None,
            duration: Duration::ZERO,
            ladder: Vec::new(),
            rtp_sent: 0,
            rtp_received: 0,
            retransmissions: 0,
            rtp_jitter: None,
            path: None,
            notes: Vec::new(),
            recording: None,
        };
        let plan = config.dtmf.digits.iter().copied().collect();
        let mut caller = Caller {
            rng,
            start: now,
            call_id,
            local_tag,
            offer,
            invite: InviteTransaction {
                bytes: bytes.clone(),
                branch,
                cseq,
                retransmit_at,
                interval: t1,
                give_up_at: Some(now + config.timers.t1_x64()),
                provisional: false,
                completed: false,
                ack: None,
                to_tag: None,
            },
            dialog: None,
            media: None,
            requests: Vec::new(),
            listener: PromptListener::new(),
            recorder: None,
            arrivals: VecDeque::with_capacity(HEARD_AFTER_FRAMES),
            plan,
            digits_started: false,
            next_digit_at: None,
            hang_up_at,
            press_after_info: false,
            rtp_stats: RtpReceiverStats::new(),
            cancel_pending: false,
            cancelled: false,
            bye_sent: false,
            finished: false,
            report,
            out: VecDeque::new(),
            config,
        };
        caller.send_sip(now, bytes);
        caller
    }

    /// The Call-ID, for the driver's span.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whether the call is over: nothing more will be sent unless the far
    /// end retransmits (a final response gets its ACK again).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether a hang-up before any response left the INVITE open: a late
    /// answer (or one crossing the CANCEL sent once a provisional came)
    /// still needs its ACK and BYE, so the driver keeps listening (for a
    /// bounded grace) after [`Caller::is_finished`].
    pub fn awaits_late_answer(&self) -> bool {
        (self.cancel_pending || self.cancelled)
            && (!self.invite.completed || self.requests.iter().any(|r| r.purpose == Purpose::Bye))
    }

    /// What was heard so far, when recording (from the answer on).
    pub fn recording(&self) -> Option<&Recorder> {
        self.recorder.as_ref()
    }

    /// Takes the recording out (the driver writes it once the call is over).
    pub fn take_recording(&mut self) -> Option<Recorder> {
        self.recorder.take()
    }

    /// The far end's RTP address, once the call is answered.
    pub fn remote_rtp(&self) -> Option<SocketAddr> {
        self.media.as_ref().map(|m| m.remote)
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The report so far (complete once [`Caller::is_finished`]).
    pub fn report(&self) -> CallReport {
        complete_report(self.report.clone(), &self.rtp_stats)
    }

    /// The report, the call given up: no copy of its ladder and lists.
    /// For a call still going, the duration runs up to `now`.
    pub fn into_report(self, now: Instant) -> CallReport {
        let Caller {
            report,
            rtp_stats,
            finished,
            start,
            ..
        } = self;
        let mut report = complete_report(report, &rtp_stats);
        if !finished {
            report.duration = now.saturating_duration_since(start);
        }
        report
    }

    /// The report, with the duration up to `now` for a call still going.
    pub fn report_at(&self, now: Instant) -> CallReport {
        let mut report = self.report();
        if !self.finished {
            report.duration = now.saturating_duration_since(self.start);
        }
        report
    }

    /// When [`Caller::handle_timeout`] has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        consider(self.invite.retransmit_at);
        consider(self.invite.give_up_at);
        for r in &self.requests {
            consider(r.retransmit_at);
            consider(Some(r.give_up_at));
        }
        if self.finished {
            return at;
        }
        consider(self.next_digit_at);
        consider(self.hang_up_at);
        consider(
            self.media
                .as_ref()
                .filter(|m| self.config.send_silence || m.press.is_some())
                .map(|m| m.next_tick),
        );
        at
    }

    /// Ends the call from this side now: CANCEL before an answer (once the
    /// far end has responded at all), BYE after. Also the driver's input for
    /// shutdown and the call timeout.
    pub fn hang_up(&mut self, now: Instant) {
        if self.finished || self.bye_sent || self.cancelled {
            return;
        }
        if self.dialog.is_some() {
            self.send_bye(now);
        } else if self.invite.provisional {
            self.send_cancel(now);
        } else {
            // §9.1: no CANCEL before a provisional response; the INVITE's
            // retransmissions stop, and a late answer is ACKed and ended.
            self.cancel_pending = true;
            self.report.hung_up_by = Some(Party::Caller);
            self.invite.retransmit_at = None;
            self.invite.give_up_at = None;
            self.finish(now, Outcome::Cancelled);
        }
    }

    /// A parsed SIP message from the far end.
    pub fn handle_sip(&mut self, now: Instant, message: Message) {
        match message {
            Message::Response(response) => {
                self.ladder(now, Direction::Received, status_line(&response));
                self.handle_response(now, &response);
            }
            Message::Request(request) => {
                self.ladder(
                    now,
                    Direction::Received,
                    format!("{} {} SIP/2.0", request.method(), request.uri()),
                );
                self.handle_request(now, &request);
            }
        }
    }

    /// A datagram from the RTP socket. Anything that is not RTP of the
    /// negotiated audio payload type is ignored.
    pub fn handle_rtp(&mut self, now: Instant, bytes: &[u8]) {
        let Some(media) = &self.media else {
            return;
        };
        let Ok(packet) = RtpHeader::parse(bytes) else {
            return;
        };
        if packet.payload_type() != media.audio_pt {
            return;
        }
        let codec = media.codec;
        self.report.rtp_received += 1;
        // RFC 3550 A.8: arrival in timestamp units (8 kHz for G.711).
        let arrival = now.saturating_duration_since(self.start).as_micros() * 8 / 1000;
        self.rtp_stats
            .record(packet.sequence(), packet.timestamp(), arrival as u32);
        if self.arrivals.len() == HEARD_AFTER_FRAMES {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(now);
        self.record(now, &packet);
        let matcher = self.config.prompts.get(codec);
        self.listener.handle_frame(matcher, packet.payload());
        self.drain_listener(now);
    }

    fn record(&mut self, now: Instant, packet: &RtpHeader<'_>) {
        let Some(recorder) = self.recorder.as_mut() else {
            return;
        };
        if recorder.is_truncated() {
            return;
        }
        recorder.handle_packet(now, packet);
        if recorder.is_truncated() {
            let cap = self.config.record.unwrap_or_default();
            self.note(format!(
                "the recording stopped at its {} cap",
                humantime::format_duration(cap)
            ));
        }
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.invite_timers(now);
        self.request_timers(now);
        if self.finished {
            return;
        }
        if self.hang_up_at.is_some_and(|t| t <= now) {
            self.hang_up_at = None;
            self.hang_up(now);
            if self.finished || self.bye_sent {
                return;
            }
        }
        if self.next_digit_at.is_some_and(|t| t <= now) {
            self.next_digit_at = None;
            if self.info_in_flight() {
                // The press waits for the previous INFO's answer.
                self.press_after_info = true;
            } else {
                self.start_press(now);
            }
        }
        self.media_ticks(now);
    }

    // --- SIP in ---

    fn handle_response(&mut self, now: Instant, response: &Response) {
        let Some(cseq) = response.cseq() else {
            return;
        };
        let branch = response.branch();
        if cseq.method == Method::Invite {
            if branch.as_deref() != Some(&format!("{MAGIC_COOKIE}{}", self.invite.branch)) {
                self.note(format!(
                    "ignored a response to an INVITE that is not ours (branch {branch:?})"
                ));
                return;
            }
            self.handle_invite_response(now, response);
            return;
        }
        let Some(index) = self
            .requests
            .iter()
            .position(|r| branch.as_deref() == Some(&format!("{MAGIC_COOKIE}{}", r.branch)))
        else {
            return;
        };
        let status = response.status();
        if status < 200 {
            // §17.1.2.2: Proceeding retransmits at T2.
            let r = &mut self.requests[index];
            r.interval = self.config.timers.t2;
            r.retransmit_at = r.retransmit_at.map(|_| now + r.interval);
            return;
        }
        let done = self.requests.swap_remove(index);
        match done.purpose {
            Purpose::Info(i) => {
                if let Some(d) = self.report.digits.get_mut(i) {
                    d.status = Some(status);
                }
                self.last_info_done(now, i);
                self.press_waiting(now);
            }
            Purpose::Bye => self.finish(now, Outcome::Completed),
            Purpose::Cancel => {}
        }
    }

    fn handle_invite_response(&mut self, now: Instant, response: &Response) {
        let status = response.status();
        // Any response stops Timer A and Timer B (§17.1.1.2).
        self.invite.retransmit_at = None;
        self.invite.give_up_at = None;
        self.invite.provisional = true;
        if status < 200 {
            if self.cancel_pending && !self.cancelled {
                self.cancel_pending = false;
                self.send_cancel(now);
            }
            return;
        }
        if status >= 300 {
            self.handle_non2xx(now, response);
            return;
        }
        let to_tag = response.to_tag();
        if self.invite.completed {
            if to_tag == self.invite.to_tag {
                // §13.2.2.4: every retransmission of the 2xx gets the ACK.
                if let Some(ack) = self.invite.ack.clone() {
                    self.send_sip(now, ack);
                }
            } else {
                self.note(format!(
                    "a second 2xx from another To tag {to_tag:?}: ACKed and ended (no forking)"
                ));
                self.ack_and_bye_stray(now, response);
            }
            return;
        }
        self.invite.completed = true;
        self.invite.to_tag = to_tag.clone();
        self.report.final_status = Some((status, response.reason().to_string()));
        self.report.answer_time = Some(now.saturating_duration_since(self.start));
        let to_uri = response
            .to()
            .map(|n| n.uri)
            .unwrap_or_else(|| self.config.target.clone());
        let contact = response.contact_uri();
        let record_route = response.record_routes();
        let dialog = Dialog::uac(&UacAnswer {
            call_id: &self.call_id,
            from_uri: &self.config.from,
            from_tag: &self.local_tag,
            to_uri: &to_uri,
            to_tag: to_tag.as_deref(),
            // A 2xx without Contact breaks §12.1.2; sending the in-dialog
            // requests to the Request-URI keeps the call usable.
            contact: Some(contact.as_deref().unwrap_or(&self.config.target)),
            record_route: &record_route,
            cseq: self.invite.cseq,
        });
        let dialog = match dialog {
            Ok(d) => d,
            Err(e) => {
                self.note(format!("the 200 does not make a dialog: {e}"));
                self.ack_and_bye_stray(now, response);
                self.finish(now, Outcome::Failed { why: e.to_string() });
                return;
            }
        };
        let ack = self.ack_2xx(&dialog, response);
        self.invite.ack = Some(ack.clone());
        self.send_sip(now, ack);
        self.dialog = Some(dialog);
        if self.cancel_pending || self.cancelled {
            // This side hung up before the answer (no CANCEL possible yet,
            // or the 200 crossed the CANCEL, §9.1): end the call at once.
            self.send_bye(now);
            return;
        }
        let answer = String::from_utf8_lossy(response.body()).into_owned();
        match sdp::accept_answer(&self.offer, &answer) {
            Ok(negotiated) => {
                let codec = g711(negotiated.codec);
                self.report.codec = Some(codec);
                self.recorder = self.config.record.map(|max| Recorder::new(codec, max));
                self.media = Some(Media {
                    codec,
                    audio_pt: negotiated.audio_pt,
                    event_pt: negotiated.event_pt,
                    remote: negotiated.remote_rtp,
                    ssrc: self.rng.random(),
                    sequence: self.rng.random(),
                    timestamp: self.rng.random(),
                    next_tick: now,
                    press: None,
                });
            }
            Err(e) => {
                let why = format!("the SDP answer is not usable: {e}");
                self.report.outcome = Outcome::Failed { why: why.clone() };
                self.note(why);
                self.send_bye(now);
                return;
            }
        }
        match self.config.hang_up {
            HangUp::AfterAnswer(after) => self.hang_up_at = Some(now + after),
            HangUp::AfterJoined(_)
            | HangUp::AfterDecision { .. }
            | HangUp::WaitForBye
            | HangUp::CancelAfter(_) => {}
        }
        if let DtmfStart::AfterAnswer(after) = self.config.dtmf.start {
            self.start_digits(now + after);
        }
    }

    fn handle_non2xx(&mut self, now: Instant, response: &Response) {
        // §17.1.1.3: the ACK is part of the INVITE transaction: same branch,
        // Request-URI and CSeq number, To from the response.
        let to = response.header("To").unwrap_or_default().to_string();
        let ack = RequestBuilder::new(Method::Ack, &self.config.target)
            .via(
                self.config.transport.via_name(),
                &self.config.local_sip.to_string(),
                &self.invite.branch,
            )
            .from(&self.config.from, &self.local_tag)
            .header("To", &to)
            .call_id(&self.call_id)
            .cseq(self.invite.cseq)
            .to_bytes();
        self.invite.ack = Some(ack.clone());
        self.send_sip(now, ack);
        if self.invite.completed {
            return;
        }
        self.invite.completed = true;
        let status = response.status();
        self.report.final_status = Some((status, response.reason().to_string()));
        let outcome = if status == 487 && (self.cancelled || self.cancel_pending) {
            Outcome::Cancelled
        } else {
            Outcome::Rejected {
                status,
                reason: response.reason().to_string(),
            }
        };
        self.requests.retain(|r| r.purpose != Purpose::Cancel);
        self.finish(now, outcome);
    }

    fn handle_request(&mut self, now: Instant, request: &Request) {
        let method = request.method().clone();
        if method == Method::Ack {
            return;
        }
        let in_dialog = self.dialog.as_ref().is_some_and(|d| {
            request.call_id() == Some(d.id().call_id.as_str())
                && request.to_tag().as_deref() == Some(d.local_tag())
                && request.from_tag().as_deref() == Some(d.id().remote_tag.as_str())
        });
        if !in_dialog {
            // §12.2.2: a request for no dialog of ours.
            let bytes = request
                .response(481, "Call/Transaction Does Not Exist")
                .to_bytes();
            self.send_sip(now, bytes);
            return;
        }
        match method {
            Method::Bye => {
                let bytes = request.response(200, "OK").to_bytes();
                self.send_sip(now, bytes);
                if self.finished {
                    // A retransmitted BYE: our 200 was lost.
                    return;
                }
                if let Some(reason) = request.header("Reason") {
                    self.report.bye_reason = Some(reason.to_string());
                    self.report.bye_reason_text = reason_text(reason);
                }
                if !self.bye_sent {
                    self.report.hung_up_by = Some(Party::Bridge);
                }
                if let Some(d) = self.dialog.as_mut() {
                    d.bye(None);
                }
                // Our own BYE, if crossing, needs no answer now.
                self.requests.retain(|r| r.purpose != Purpose::Bye);
                let outcome = match &self.report.outcome {
                    Outcome::Failed { why } => Outcome::Failed { why: why.clone() },
                    _ => Outcome::Completed,
                };
                self.finish(now, outcome);
            }
            Method::Options | Method::Info => {
                let bytes = request.response(200, "OK").to_bytes();
                self.send_sip(now, bytes);
            }
            Method::Invite => {
                // Re-INVITEs are not supported: keep the session as it is
                // (RFC 3261 §14.2 lets a UAS refuse with 488).
                let bytes = request.response(488, "Not Acceptable Here").to_bytes();
                self.send_sip(now, bytes);
            }
            _ => {
                let bytes = request
                    .response(405, "Method Not Allowed")
                    .header("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")
                    .to_bytes();
                self.send_sip(now, bytes);
            }
        }
    }

    // --- SIP out ---

    fn ack_2xx(&mut self, dialog: &Dialog, response: &Response) -> Vec<u8> {
        // §13.2.2.4: the ACK for a 2xx is its own transaction: new branch,
        // the dialog's remote target and route set, the INVITE's CSeq.
        let branch = self.new_branch();
        let to = response.header("To").unwrap_or_default().to_string();
        let mut ack = RequestBuilder::new(Method::Ack, dialog.remote_target())
            .via(
                self.config.transport.via_name(),
                &self.config.local_sip.to_string(),
                &branch,
            )
            .from(&self.config.from, &self.local_tag)
            .header("To", &to)
            .call_id(&self.call_id)
            .cseq(self.invite.cseq);
        for route in dialog.route_set() {
            ack = ack.header("Route", route);
        }
        ack.to_bytes()
    }

    /// ACK and BYE a 2xx this call cannot use (second fork, broken dialog).
    fn ack_and_bye_stray(&mut self, now: Instant, response: &Response) {
        let target = response
            .contact_uri()
            .unwrap_or_else(|| self.config.target.clone());
        let to = response.header("To").unwrap_or_default().to_string();
        let via = self.config.local_sip.to_string();
        let branch = self.new_branch();
        let ack = RequestBuilder::new(Method::Ack, &target)
            .via(self.config.transport.via_name(), &via, &branch)
            .from(&self.config.from, &self.local_tag)
            .header("To", &to)
            .call_id(&self.call_id)
            .cseq(self.invite.cseq)
            .to_bytes();
        self.send_sip(now, ack);
        let branch = self.new_branch();
        let bye = RequestBuilder::new(Method::Bye, &target)
            .via(self.config.transport.via_name(), &via, &branch)
            .from(&self.config.from, &self.local_tag)
            .header("To", &to)
            .call_id(&self.call_id)
            .cseq(self.invite.cseq + 1)
            .to_bytes();
        self.send_sip(now, bye);
    }

    fn send_cancel(&mut self, now: Instant) {
        // §9.1: same Request-URI, Call-ID, From, To, CSeq number and top
        // Via (branch) as the INVITE.
        self.cancelled = true;
        self.report.hung_up_by = Some(Party::Caller);
        let branch = self.invite.branch.clone();
        let bytes = RequestBuilder::new(Method::Cancel, &self.config.target)
            .via(
                self.config.transport.via_name(),
                &self.config.local_sip.to_string(),
                &branch,
            )
            .from(&self.config.from, &self.local_tag)
            .to(&self.config.target, None)
            .call_id(&self.call_id)
            .cseq(self.invite.cseq)
            .to_bytes();
        self.start_request(now, Purpose::Cancel, branch, bytes);
    }

    fn send_bye(&mut self, now: Instant) {
        let Some(dialog) = self.dialog.as_mut() else {
            return;
        };
        let bye = dialog.bye(None);
        self.bye_sent = true;
        if self.report.hung_up_by.is_none() {
            self.report.hung_up_by = Some(Party::Caller);
        }
        self.stop_media(now);
        self.send_in_dialog(now, Purpose::Bye, bye, None);
    }

    fn send_info(&mut self, now: Instant, digit: Digit, index: usize) {
        let Some(dialog) = self.dialog.as_mut() else {
            return;
        };
        let info = dialog.request("INFO");
        let body = format!(
            "Signal={}\r\nDuration={}",
            digit.as_char(),
            self.config.dtmf.tone.as_millis()
        );
        self.send_in_dialog(
            now,
            Purpose::Info(index),
            info,
            Some(("application/dtmf-relay", body)),
        );
    }

    fn send_in_dialog(
        &mut self,
        now: Instant,
        purpose: Purpose,
        request: OutgoingRequest,
        body: Option<(&str, String)>,
    ) {
        let branch = self.new_branch();
        let mut builder =
            RequestBuilder::new(Method::from_token(&request.method), &request.request_uri)
                .via(
                    self.config.transport.via_name(),
                    &self.config.local_sip.to_string(),
                    &branch,
                )
                .header("From", &request.from)
                .header("To", &request.to)
                .call_id(&request.call_id)
                .cseq(request.cseq);
        for route in &request.route {
            builder = builder.header("Route", route);
        }
        if let Some(reason) = &request.reason {
            builder = builder.header("Reason", reason);
        }
        if let Some((content_type, body)) = body {
            builder = builder.body(content_type, body.as_bytes());
        }
        let bytes = builder.to_bytes();
        self.start_request(now, purpose, branch, bytes);
    }

    fn start_request(&mut self, now: Instant, purpose: Purpose, branch: String, bytes: Vec<u8>) {
        let t1 = self.config.timers.t1;
        self.requests.push(NonInviteTransaction {
            purpose,
            branch,
            bytes: bytes.clone(),
            // Timer E runs only on an unreliable transport (§17.1.2.2).
            retransmit_at: (!self.config.transport.is_reliable()).then_some(now + t1),
            interval: t1,
            give_up_at: now + self.config.timers.t1_x64(),
        });
        self.send_sip(now, bytes);
    }

    fn send_sip(&mut self, now: Instant, bytes: Vec<u8>) {
        let first_line = first_line(&bytes);
        self.ladder(now, Direction::Sent, first_line);
        self.out.push_back(Output::Sip(bytes));
    }

    fn new_branch(&mut self) -> String {
        format!("{:016x}", self.rng.next_u64())
    }

    // --- timers ---

    fn invite_timers(&mut self, now: Instant) {
        if self.invite.give_up_at.is_some_and(|t| t <= now) {
            // Timer B (§17.1.1.2): no response at all.
            self.invite.retransmit_at = None;
            self.invite.give_up_at = None;
            self.finish(now, Outcome::NoAnswer);
            return;
        }
        if let Some(at) = self.invite.retransmit_at
            && at <= now
        {
            // Timer A doubles with no cap (§17.1.1.2).
            self.invite.interval = self.invite.interval.saturating_mul(2);
            self.invite.retransmit_at = Some(now + self.invite.interval);
            let bytes = self.invite.bytes.clone();
            self.report.retransmissions += 1;
            self.send_sip(now, bytes);
        }
    }

    fn request_timers(&mut self, now: Instant) {
        let t2 = self.config.timers.t2;
        let mut given_up = Vec::new();
        let mut resend = Vec::new();
        self.requests.retain_mut(|r| {
            if r.give_up_at <= now {
                given_up.push(r.purpose);
                return false;
            }
            if r.retransmit_at.is_some_and(|t| t <= now) {
                // Timer E doubles up to T2 (§17.1.2.2).
                r.interval = r.interval.saturating_mul(2).min(t2);
                r.retransmit_at = Some(now + r.interval);
                resend.push(r.bytes.clone());
            }
            true
        });
        for bytes in resend {
            self.report.retransmissions += 1;
            self.send_sip(now, bytes);
        }
        for purpose in given_up {
            match purpose {
                Purpose::Bye => {
                    self.note("no response to our BYE (Timer F): the call is over anyway".into());
                    self.finish(now, Outcome::Completed);
                }
                Purpose::Info(i) => {
                    let digit = self.report.digits.get(i).map(|d| d.digit);
                    self.note(format!("no response to the INFO for {digit:?} (Timer F)"));
                    self.last_info_done(now, i);
                    self.press_waiting(now);
                }
                Purpose::Cancel => {
                    self.note("no response to our CANCEL (Timer F)".into());
                    self.finish(now, Outcome::Cancelled);
                }
            }
        }
    }

    // --- DTMF ---

    /// Whether an INFO of ours awaits its final response. Digits by INFO go
    /// one at a time: the UAS refuses a request whose CSeq is below one it
    /// has already seen (RFC 3261 §12.2.2), so an INFO lost and resent after
    /// the next one went out would lose its digit (500). SIPp's scripts and
    /// phones wait for the 200 the same way.
    fn info_in_flight(&self) -> bool {
        self.requests
            .iter()
            .any(|r| matches!(r.purpose, Purpose::Info(_)))
    }

    /// The bridge handles a key sent by INFO before answering it: once the
    /// last key's INFO is answered, the decision's limit starts.
    fn last_info_done(&mut self, now: Instant, index: usize) {
        if let HangUp::AfterDecision { limit, .. } = self.config.hang_up
            && self.plan.is_empty()
            && index + 1 == self.report.digits.len()
            && self.hang_up_at.is_none()
        {
            self.hang_up_at = Some(now + limit);
        }
    }

    /// Presses the digit that waited for an INFO's answer, once none is out.
    fn press_waiting(&mut self, now: Instant) {
        if self.press_after_info && !self.finished && !self.info_in_flight() {
            self.press_after_info = false;
            self.start_press(now);
        }
    }

    fn start_digits(&mut self, at: Instant) {
        if self.digits_started {
            return;
        }
        self.digits_started = true;
        if let Some(first) = self.plan.front() {
            self.next_digit_at = Some(at + first.delay);
        }
    }

    /// Presses the next planned digit.
    fn start_press(&mut self, now: Instant) {
        let Some(planned) = self.plan.pop_front() else {
            return;
        };
        let tone = self.config.dtmf.tone;
        let mut method = self.config.dtmf.method;
        let Some(media) = self.media.as_mut() else {
            return;
        };
        // The press's timestamps start from now, even after a quiet spell.
        catch_up(media, now);
        if method == DtmfMethod::Rfc4733 && media.event_pt.is_none() {
            method = DtmfMethod::Inband;
            if self.report.digits.is_empty() {
                self.report.notes.push(
                    "the answer has no telephone-event: RFC 4733 digits are sent in-band".into(),
                );
            }
        }
        if self.plan.is_empty()
            && self.config.dtmf.method != DtmfMethod::Info
            && let HangUp::AfterDecision { limit, .. } = self.config.hang_up
            && self.hang_up_at.is_none()
        {
            self.hang_up_at = Some(now + limit);
        }
        let index = self.report.digits.len();
        self.report.digits.push(SentDigit {
            digit: planned.digit,
            method,
            at: now.saturating_duration_since(self.start),
            status: None,
        });
        match method {
            DtmfMethod::Info => {
                self.send_info(now, planned.digit, index);
                self.schedule_next_digit(now + tone);
            }
            DtmfMethod::Inband => {
                let samples = ToneGenerator::default().tone(planned.digit, tone);
                let mut frames = Vec::new();
                for chunk in samples.chunks(FRAME_SAMPLES) {
                    let mut frame = [media.codec.silence(); FRAME_SAMPLES];
                    media.codec.encode_slice(chunk, &mut frame);
                    frames.push(frame);
                }
                media.press = Some(Press::Tones { frames, next: 0 });
            }
            DtmfMethod::Rfc4733 => {
                let packets = EventSender::new().packets(planned.digit, media.timestamp, tone);
                media.press = Some(Press::Events { packets, next: 0 });
            }
        }
    }

    fn schedule_next_digit(&mut self, press_end: Instant) {
        if let Some(next) = self.plan.front() {
            self.next_digit_at = Some(press_end + next.delay);
        }
    }

    // --- RTP out ---

    fn media_ticks(&mut self, now: Instant) {
        let mut pressed_out = None;
        if let Some(media) = self.media.as_mut() {
            catch_up(media, now);
            let mut buf = [0u8; rtp::HEADER_LEN + FRAME_SAMPLES];
            let silent = !self.config.send_silence;
            while media.next_tick <= now {
                let tick = media.next_tick;
                media.next_tick += FRAME_DURATION;
                // Between presses a silent caller sends nothing; the RTP
                // timestamp still runs with time (RFC 3550 §5.1).
                let len = if silent && media.press.is_none() {
                    None
                } else {
                    media_packet(media, &mut buf)
                };
                if let Some(len) = len {
                    self.report.rtp_sent += 1;
                    self.out.push_back(Output::Rtp {
                        to: media.remote,
                        bytes: buf[..len].to_vec(),
                    });
                }
                media.timestamp = media.timestamp.wrapping_add(FRAME_SAMPLES as u32);
                if press_done(media) {
                    media.press = None;
                    pressed_out = Some(tick + FRAME_DURATION);
                }
            }
        }
        if let Some(end) = pressed_out {
            self.schedule_next_digit(end);
        }
    }

    fn stop_media(&mut self, now: Instant) {
        self.media = None;
        self.next_digit_at = None;
        self.listener.handle_end();
        self.drain_listener(now);
    }

    // --- listening ---

    fn drain_listener(&mut self, now: Instant) {
        let at = now.saturating_duration_since(self.start);
        while let Some(event) = self.listener.poll_output() {
            match event {
                ListenEvent::Heard(prompt) => {
                    let started_at = self
                        .arrivals
                        .front()
                        .map_or(at, |t| t.saturating_duration_since(self.start));
                    self.report.prompts.push(HeardPrompt {
                        prompt,
                        started_at,
                        heard_at: at,
                        ended_at: None,
                    });
                    self.on_prompt(now, prompt);
                }
                ListenEvent::Ended(prompt) => {
                    if let Some(p) = self
                        .report
                        .prompts
                        .iter_mut()
                        .rev()
                        .find(|p| p.prompt == prompt && p.ended_at.is_none())
                    {
                        p.ended_at = Some(at);
                    }
                }
            }
        }
    }

    fn on_prompt(&mut self, now: Instant, prompt: PromptId) {
        if self.config.dtmf.start == DtmfStart::OnPrompt(prompt) {
            self.start_digits(now);
        }
        if let HangUp::AfterJoined(after) = self.config.hang_up
            && matches!(prompt, PromptId::Joining | PromptId::FirstPerson)
            && self.hang_up_at.is_none()
        {
            self.hang_up_at = Some(now + after);
        }
        if let HangUp::AfterDecision { hold, .. } = self.config.hang_up
            && matches!(
                prompt,
                PromptId::Joining | PromptId::FirstPerson | PromptId::NotValid
            )
            && self.plan.is_empty()
            && !self.report.digits.is_empty()
        {
            // The decision replaces the fallback deadline set by the last key.
            let at = now + hold;
            self.hang_up_at = Some(self.hang_up_at.map_or(at, |t| t.min(at)));
        }
    }

    // --- report ---

    fn finish(&mut self, now: Instant, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.report.outcome == Outcome::InProgress {
            self.report.outcome = outcome;
        }
        self.stop_media(now);
        self.hang_up_at = None;
        self.report.duration = now.saturating_duration_since(self.start);
    }

    fn ladder(&mut self, now: Instant, direction: Direction, first_line: String) {
        self.report.ladder.push(LadderEntry {
            at: now.saturating_duration_since(self.start),
            direction,
            first_line,
        });
    }

    fn note(&mut self, note: String) {
        tracing::debug!(call_id = %self.call_id, "{note}");
        self.report.notes.push(note);
    }
}

fn contact(config: &CallerConfig) -> String {
    let user = config
        .from
        .split_once(':')
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('@'))
        .map(|(user, _)| user)
        .filter(|u| !u.is_empty())
        .unwrap_or("dialin");
    match config.transport {
        Transport::Udp => format!("<sip:{user}@{}>", config.local_sip),
        Transport::Tcp => format!("<sip:{user}@{};transport=tcp>", config.local_sip),
    }
}

/// Writes this tick's packet: the press's next tone frame or event, or
/// silence. `None` when there is nothing to write.
/// After a stall of the driver, or the quiet of a caller that sends no
/// silence, the stream skips the lost time instead of sending a burst.
fn catch_up(media: &mut Media, now: Instant) {
    let behind = now.saturating_duration_since(media.next_tick);
    if behind > FRAME_DURATION * MAX_CATCH_UP_TICKS {
        let skipped = (behind.as_millis() / FRAME_DURATION.as_millis()) as u32;
        media.timestamp = media.timestamp.wrapping_add(skipped * FRAME_SAMPLES as u32);
        media.next_tick += FRAME_DURATION * skipped;
    }
}

fn media_packet(media: &mut Media, buf: &mut [u8]) -> Option<usize> {
    let silence = [media.codec.silence(); FRAME_SAMPLES];
    let (pt, marker, timestamp, payload): (u8, bool, u32, Vec<u8>) = match media.press.as_mut() {
        Some(Press::Tones { frames, next }) => {
            let frame = frames.get(*next).copied().unwrap_or(silence);
            let marker = *next == 0;
            *next += 1;
            (media.audio_pt, marker, media.timestamp, frame.to_vec())
        }
        Some(Press::Events { packets, next }) => {
            let event = packets.get(*next).copied();
            *next += 1;
            match (event, media.event_pt) {
                (Some(e), Some(pt)) => (pt, e.marker, e.timestamp, e.payload.to_bytes().to_vec()),
                _ => (media.audio_pt, false, media.timestamp, silence.to_vec()),
            }
        }
        None => (media.audio_pt, false, media.timestamp, silence.to_vec()),
    };
    let fields = RtpFields {
        marker,
        payload_type: pt,
        sequence: media.sequence,
        timestamp,
        ssrc: media.ssrc,
    };
    let len = rtp::write_packet(buf, &fields, &payload).ok()?;
    media.sequence = media.sequence.wrapping_add(1);
    Some(len)
}

fn press_done(media: &Media) -> bool {
    match &media.press {
        Some(Press::Tones { frames, next }) => *next >= frames.len(),
        Some(Press::Events { packets, next }) => *next >= packets.len(),
        None => false,
    }
}

fn status_line(response: &Response) -> String {
    format!("SIP/2.0 {} {}", response.status(), response.reason())
}

fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The `text` parameter of a Reason header (RFC 3326 §2), unescaped.
pub fn reason_text(value: &str) -> Option<String> {
    let start = value.find("text=")? + "text=".len();
    let rest = value[start..].trim_start();
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(rest.split(';').next().unwrap_or("").trim().to_string());
    };
    let mut text = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.extend(chars.next()),
            '"' => return Some(text),
            c => text.push(c),
        }
    }
    Some(text)
}

/// Last digit pressed → the first prompt that started after it.
/// The figures derived when a report is handed out.
fn complete_report(mut report: CallReport, rtp_stats: &RtpReceiverStats) -> CallReport {
    report.decision_time = decision_time(&report);
    if rtp_stats.packets() > 1 {
        // Timestamp units of 8 kHz: 125 µs each.
        report.rtp_jitter = Some(Duration::from_micros(u64::from(rtp_stats.jitter()) * 125));
    }
    report
}

fn decision_time(report: &CallReport) -> Option<Duration> {
    let last = report.digits.last()?;
    report
        .prompts
        .iter()
        .find(|p| p.started_at >= last.at)
        .map(|p| p.started_at - last.at)
}
