//! One call at the bridge, as a sans-IO core: the INVITE server transaction
//! and the in-dialog ones, the 2xx retransmitter, the dialog, the SDP
//! offer/answer, the attendant [`Flow`], the prompt playout, the RTP sender,
//! and DTMF from RFC 4733 events, SIP INFO and in-band tones, merged.
//!
//! Inputs: [`Call::new`] (the INVITE), [`Call::handle_sip`] (every later
//! request of the call, retransmissions included), [`Call::handle_response`]
//! (answers to the bridge's BYE), [`Call::handle_rtp`] (one datagram from the
//! call's RTP port), [`Call::handle_joined`] (the driver put the caller into
//! the meeting's roster), [`Call::handle_timeout`] and [`Call::cancel`]
//! (shutdown). Outputs: [`Call::poll_transmit`] (SIP bytes and where they
//! go), [`Call::poll_rtp`] (RTP packets due now), [`Call::poll_event`] and
//! [`Call::poll_timeout`]. Time is always an argument; the RNG (tags,
//! branches, SSRC) is owned here and seeded by the driver.
//!
//! What it does not: sockets, the meeting roster (the driver keeps it and
//! answers [`CallEvent::Join`] with [`Call::handle_joined`]), deciding
//! whether the dialled number is the tenant's or whether the bridge has room
//! (the driver answers 404/503 before a call exists), or re-INVITEs (answered
//! 488: the bridge keeps the session it agreed). The BYE the bridge sends goes
//! to the address the INVITE came from, over the same transport, which is
//! where a caller that is not behind a proxy listens (RFC 3261 §18.2.2 does the
//! same for responses); a remote target resolved by RFC 3263 is not used.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::admin::ids::ConferenceId;
use crate::admin::model::{MeetingId, TenantId, UserId};
use crate::attendant::{self, Attempt, CallRecord, Flow, Input, Output};
use crate::directory::{IdLookup, Target};
use crate::media::dtmf::inband::InbandDetector;
use crate::media::dtmf::info::parse_info;
use crate::media::dtmf::rfc4733::{EventDetector, EventRtpPacket};
use crate::media::dtmf::{Digit, DtmfMerger, DtmfMethod};
use crate::media::g711;
use crate::media::prompts::{FRAME_DURATION, FRAME_SAMPLES, Frame, PromptCatalog, PromptId};
use crate::media::rtp::{HEADER_LEN, RtpError, RtpHeader, RtpSender};
use crate::sip::dialog::{Dialog, InDialogRequest, OutgoingRequest, Reason, UasInvite};
use crate::sip::message::{Method, Request, RequestBuilder, Response, SipHeaders, Via};
use crate::sip::sdp::{self, LocalMedia, Negotiated, SessionDescription};
use crate::sip::transaction::{
    Absorber, AnswerEvent, AnswerRetransmitter, CancelTarget, Event, RequestKeyParts, Route,
    ServerTransactions, TimerConfig, TransactionKey, Transport,
};

/// The methods the bridge handles (the `Allow` header, RFC 3261 §20.5).
/// Keys kept from INFO requests that arrive before the ACK.
const EARLY_INFO_MAX: usize = 32;

pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO";
/// The bodies the bridge reads (the `Accept` header, RFC 3261 §20.1).
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf";
/// The payload type SIPp's `play_dtmf` and many phones send RFC 4733 events
/// on whatever was negotiated: accepted as well unless audio uses it.
pub const EXTRA_EVENT_PT: u8 = 96;
/// Frames sent at most per timeout when the driver woke late: a late timer
/// catches up a little, never floods the caller.
const MAX_FRAMES_PER_WAKE: usize = 10;
/// Outputs drained from the flow per input, a bound far above what one input produces.
const MAX_FLOW_OUTPUTS: usize = 32;

/// Where a request came from; its responses go back there (RFC 3261 §18.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Source {
    pub fn transport_name(&self) -> &'static str {
        match self.transport {
            Transport::Unreliable => "UDP",
            Transport::Reliable => "TCP",
        }
    }
}

/// SIP bytes to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipTransmit {
    pub to: Source,
    pub bytes: Arc<[u8]>,
}

/// An RTP packet to send from the call's port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpTransmit {
    pub to: SocketAddr,
    pub bytes: RtpBytes,
}

/// The largest RTP packet the bridge sends: a header and one 20 ms G.711 frame.
pub const MAX_RTP_PACKET: usize = HEADER_LEN + FRAME_SAMPLES;

/// One RTP packet's bytes, held inline: 2,000 calls send 100,000 packets a
/// second, and none of them allocates (the call's queue reuses its slots).
#[derive(Clone, PartialEq, Eq)]
pub struct RtpBytes {
    len: u8,
    buf: [u8; MAX_RTP_PACKET],
}

impl RtpBytes {
    /// Writes the sender's next packet carrying one frame.
    fn packet(sender: &mut RtpSender, frame: &Frame) -> Result<RtpBytes, RtpError> {
        let mut buf = [0u8; MAX_RTP_PACKET];
        let len = sender.next_packet(frame, &mut buf, false)?;
        Ok(RtpBytes {
            // At most MAX_RTP_PACKET (172): the length of `buf`.
            len: len as u8,
            buf,
        })
    }
}

impl std::ops::Deref for RtpBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl fmt::Debug for RtpBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtpBytes({} bytes)", self.len)
    }
}

/// The room a caller joins: one per organizer's static ID, one per dynamic-ID meeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MeetingKey {
    pub tenant: TenantId,
    pub organizer: UserId,
    pub meeting: Option<MeetingId>,
}

impl From<Target> for MeetingKey {
    fn from(t: Target) -> Self {
        MeetingKey {
            tenant: t.tenant,
            organizer: t.organizer,
            meeting: t.meeting,
        }
    }
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEnd {
    /// The INVITE got this final non-2xx response (488, 400, 487 after a CANCEL, 503 at shutdown).
    Rejected(u16),
    /// The caller sent BYE.
    CallerHungUp,
    /// The bridge sent BYE with this Reason header value.
    BridgeHungUp(String),
}

/// What the call tells its driver.
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    /// The 200 to the INVITE went out.
    Answered,
    /// A key reached the attendant (after the merger dropped duplicates).
    Digit { digit: Digit, method: DtmfMethod },
    /// A prompt started playing (or, muted, timing).
    PromptStarted(PromptId),
    /// An entry completed and was judged (the attendant's record of it).
    Attempt(Box<Attempt>),
    /// Put the caller into this room, then call [`Call::handle_joined`].
    Join { key: MeetingKey, id: ConferenceId },
    /// The caller left the room.
    Left { key: MeetingKey },
    /// The call is over (signalling may linger to absorb retransmissions:
    /// see [`Call::is_finished`]). The record is the attendant's, if the call got that far.
    Ended {
        end: CallEnd,
        record: Option<Box<CallRecord>>,
    },
}

/// What one call needs to know about the bridge.
#[derive(Clone, Debug)]
pub struct CallConfig {
    pub timers: TimerConfig,
    pub attendant: attendant::Config,
    /// The bridge's SIP address (Contact, and the Via of its BYE).
    pub sip_addr: SocketAddr,
    /// The address and port the call receives RTP on.
    pub rtp_addr: SocketAddr,
    /// Time the prompts but send no audio (signalling-only load).
    pub mute_prompts: bool,
    /// Ring for this long (180) before answering; zero answers at once.
    pub ring: Duration,
    /// Seeds the call's RNG (tags, branches, SSRC).
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// 100 (and 180) sent; the 200 goes out at `answer_at`.
    Ringing {
        answer_at: Instant,
    },
    /// 200 sent, waiting for the ACK.
    Answered,
    /// ACK received: media and the attendant run.
    Confirmed,
    /// The bridge sent BYE and waits for its answer.
    ByeSent,
    Ended,
}

#[derive(Debug)]
struct Playout {
    prompt: PromptId,
    frame: usize,
    next_at: Instant,
}

/// The bridge's BYE as a non-INVITE client transaction (RFC 3261 §17.1.2):
/// Timer E retransmits over UDP, Timer F gives up.
#[derive(Debug)]
struct ByeClient {
    cseq: u32,
    bytes: Arc<[u8]>,
    retransmit: Option<(Instant, Duration)>,
    give_up: Instant,
}

#[derive(Debug)]
struct Media {
    negotiated: Negotiated,
    codec: g711::Codec,
    sender: RtpSender,
    events: EventDetector,
    inband: InbandDetector,
    merger: DtmfMerger,
    /// When the last frame sent ends (for the timestamp gap before the next prompt).
    last_frame_end: Option<Instant>,
}

/// One call's core. See the module doc.
#[derive(Debug)]
pub struct Call {
    config: CallConfig,
    prompts: Arc<PromptCatalog>,
    rng: StdRng,
    call_id: String,
    invite_source: Source,
    invite: Request,
    invite_key: Option<TransactionKey>,
    transactions: ServerTransactions,
    sources: HashMap<TransactionKey, Source>,
    answer: Option<AnswerRetransmitter>,
    dialog: Option<Dialog>,
    /// The SDP of the 200: the answer, or the offer when the INVITE had none.
    local_sdp: String,
    delayed_offer: bool,
    negotiated: Option<Negotiated>,
    media: Option<Media>,
    flow: Option<Flow>,
    /// Keys sent by INFO before the ACK confirmed the call.
    early_info: Vec<Digit>,
    playout: Option<Playout>,
    /// Muted prompts: when the one "playing" ends.
    muted_until: Option<(PromptId, Instant)>,
    room: Option<MeetingKey>,
    bye: Option<ByeClient>,
    end: Option<CallEnd>,
    phase: Phase,
    transmits: VecDeque<SipTransmit>,
    rtp: VecDeque<RtpTransmit>,
    events: VecDeque<CallEvent>,
    /// Attempts of the record already reported as [`CallEvent::Attempt`].
    attempts_reported: usize,
    scratch: Vec<i16>,
}

/// The owned fields of a request's transaction key.
pub(crate) struct KeyFields {
    method: String,
    branch: Option<String>,
    sent_by: String,
    via: String,
    from_tag: Option<String>,
    cseq: u32,
}

impl KeyFields {
    pub(crate) fn of(request: &Request) -> KeyFields {
        // One parse of the top Via for its branch and sent-by.
        let vias = request.vias();
        let top = vias.first().and_then(|v| Via::parse(v).ok());
        KeyFields {
            method: request.method().to_string(),
            sent_by: top
                .as_ref()
                .map(|v| v.sent_by.to_string())
                .unwrap_or_default(),
            branch: top.and_then(|v| v.branch),
            via: vias.first().map(|v| v.to_string()).unwrap_or_default(),
            from_tag: request.from_tag(),
            cseq: request.cseq().map(|c| c.seq).unwrap_or_default(),
        }
    }

    pub(crate) fn parts<'a>(&'a self, request: &'a Request) -> RequestKeyParts<'a> {
        RequestKeyParts {
            method: &self.method,
            request_uri: request.uri(),
            via_branch: self.branch.as_deref(),
            via_sent_by: &self.sent_by,
            via: &self.via,
            from_tag: self.from_tag.as_deref(),
            call_id: request.call_id().unwrap_or_default(),
            cseq: self.cseq,
        }
    }
}

fn in_dialog<'a>(
    request: &'a Request,
    from_tag: &'a Option<String>,
    to_tag: &'a Option<String>,
) -> InDialogRequest<'a> {
    InDialogRequest {
        method: request.method().as_str(),
        call_id: request.call_id().unwrap_or_default(),
        from_tag: from_tag.as_deref(),
        to_tag: to_tag.as_deref(),
        cseq: request.cseq().map(|c| c.seq).unwrap_or_default(),
    }
}

fn g711_codec(codec: sdp::Codec) -> g711::Codec {
    match codec {
        sdp::Codec::Pcmu => g711::Codec::Pcmu,
        sdp::Codec::Pcma => g711::Codec::Pcma,
    }
}

/// Formats a request the dialog built (RFC 3261 §8.1.1: Via with a new
/// branch, Max-Forwards, Route, and the Reason of a BYE).
pub fn format_request(
    out: &OutgoingRequest,
    transport: &str,
    sent_by: &str,
    branch_random: &str,
) -> Vec<u8> {
    let mut builder = RequestBuilder::new(Method::from_token(&out.method), &out.request_uri)
        .via(transport, sent_by, branch_random)
        .header("From", &out.from)
        .header("To", &out.to)
        .call_id(&out.call_id)
        .cseq(out.cseq);
    for route in &out.route {
        builder = builder.header("Route", route);
    }
    if let Some(reason) = &out.reason {
        builder = builder.header("Reason", reason);
    }
    builder.to_bytes()
}

impl Call {
    /// A call for a new INVITE (one the driver found no call for, to one of
    /// the tenant's numbers, with room for it). Sends 100 Trying, then
    /// answers (at once, or after `config.ring` with 180 first), or rejects
    /// it (400 for a broken INVITE or SDP, 488 when no codec fits).
    pub fn new(
        now: Instant,
        invite: &Request,
        source: Source,
        config: CallConfig,
        prompts: Arc<PromptCatalog>,
    ) -> Call {
        let rng = StdRng::seed_from_u64(config.seed);
        let transactions = ServerTransactions::new(config.timers);
        let mut call = Call {
            config,
            prompts,
            rng,
            call_id: invite.call_id().unwrap_or_default().to_string(),
            invite_source: source,
            invite: invite.clone(),
            invite_key: None,
            transactions,
            sources: HashMap::new(),
            answer: None,
            dialog: None,
            local_sdp: String::new(),
            delayed_offer: false,
            negotiated: None,
            media: None,
            flow: None,
            early_info: Vec::new(),
            playout: None,
            muted_until: None,
            room: None,
            bye: None,
            end: None,
            phase: Phase::Answered,
            transmits: VecDeque::new(),
            rtp: VecDeque::new(),
            events: VecDeque::new(),
            attempts_reported: 0,
            scratch: Vec::new(),
        };
        call.start(now, invite, source);
        call
    }

    fn start(&mut self, now: Instant, invite: &Request, source: Source) {
        let fields = KeyFields::of(invite);
        let key =
            match self
                .transactions
                .handle_request(now, &fields.parts(invite), source.transport)
            {
                Ok(Route::New(key)) => key,
                Ok(_) | Err(_) => {
                    // Unusable transaction key (no Call-ID, Via...): answer once
                    // without a transaction; the caller retransmits into 400s.
                    tracing::warn!("INVITE without a usable transaction key: 400");
                    let bytes = invite.response(400, "Bad Request").to_bytes();
                    self.transmits.push_back(SipTransmit {
                        to: source,
                        bytes: bytes.into(),
                    });
                    self.finish(CallEnd::Rejected(400));
                    return;
                }
            };
        self.sources.insert(key.clone(), source);
        self.invite_key = Some(key.clone());
        self.respond(now, &key, invite.response(100, "Trying"));

        let contact = invite.contact_uri();
        let from = invite.from();
        let to = invite.to();
        let record_route = invite.record_routes();
        let uas = UasInvite {
            call_id: invite.call_id().unwrap_or_default(),
            from_uri: from.as_ref().map(|n| n.uri.as_str()).unwrap_or_default(),
            from_tag: from.as_ref().and_then(|n| n.tag()),
            to_uri: to.as_ref().map(|n| n.uri.as_str()).unwrap_or_default(),
            contact: contact.as_deref(),
            record_route: &record_route,
            cseq: fields.cseq,
        };
        let dialog = match Dialog::uas(&mut self.rng, &uas) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "INVITE cannot start a dialog");
                let status = e.status_code().unwrap_or(400);
                let tag = self.random_tag();
                self.reject(now, status, "Bad Request", &tag);
                return;
            }
        };
        let tag = dialog.local_tag().to_string();
        self.dialog = Some(dialog);
        let local = LocalMedia {
            address: self.config.rtp_addr.ip(),
            rtp_port: self.config.rtp_addr.port(),
            session_id: self.rng.random::<u32>().into(),
            session_version: 1,
        };
        if invite.body().is_empty() {
            // Delayed offer (RFC 3261 §13.2.1): offer in the 200, answer in the ACK.
            self.delayed_offer = true;
            self.local_sdp = sdp::offer(&local);
        } else {
            let text = String::from_utf8_lossy(invite.body());
            let answered = SessionDescription::parse(&text).and_then(|o| sdp::answer(&o, &local));
            match answered {
                Ok(a) => {
                    self.negotiated = Some(a.negotiated);
                    self.local_sdp = a.sdp;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "offer refused");
                    let status = e.status_code();
                    let reason = if status == 488 {
                        "Not Acceptable Here"
                    } else {
                        "Bad Request"
                    };
                    self.reject(now, status, reason, &tag);
                    return;
                }
            }
        }
        if self.config.ring.is_zero() {
            self.send_answer(now);
        } else {
            self.respond(now, &key, invite.response(180, "Ringing").to_tag(&tag));
            self.phase = Phase::Ringing {
                answer_at: now + self.config.ring,
            };
        }
    }

    fn random_tag(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// A final non-2xx to the INVITE; the transaction waits for its ACK.
    fn reject(&mut self, now: Instant, status: u16, reason: &str, tag: &str) {
        if let Some(key) = self.invite_key.clone() {
            let response = self.invite.response(status, reason).to_tag(tag);
            let response = if status == 503 {
                response.header("Retry-After", "5")
            } else {
                response
            };
            self.respond(now, &key, response);
        }
        self.finish(CallEnd::Rejected(status));
    }

    fn send_answer(&mut self, now: Instant) {
        let (Some(key), Some(dialog)) = (self.invite_key.clone(), self.dialog.as_ref()) else {
            return;
        };
        let transport = match self.invite_source.transport {
            Transport::Unreliable => "",
            Transport::Reliable => ";transport=tcp",
        };
        let bytes = self
            .invite
            .response(200, "OK")
            .to_tag(dialog.local_tag())
            .header(
                "Contact",
                &format!("<sip:dialin@{}{transport}>", self.config.sip_addr),
            )
            .header("Allow", ALLOW)
            .header("Accept", ACCEPT)
            .body("application/sdp", self.local_sdp.as_bytes())
            .to_bytes();
        let bytes: Arc<[u8]> = bytes.into();
        if let Err(e) = self
            .transactions
            .send_response(now, &key, 200, bytes.clone())
        {
            tracing::error!(error = %e, "could not send the 200");
            return;
        }
        self.answer = Some(AnswerRetransmitter::new(
            now,
            self.config.timers,
            self.invite_source.transport,
            200,
            bytes,
        ));
        self.phase = Phase::Answered;
        self.events.push_back(CallEvent::Answered);
        tracing::info!("answered");
    }

    /// Sends a response on transaction `key`.
    fn respond(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        response: crate::sip::message::ResponseBuilder,
    ) {
        let status = response.status();
        if let Err(e) = self
            .transactions
            .send_response(now, key, status, response.to_bytes())
        {
            tracing::error!(error = %e, status, "response not sent");
        }
    }

    /// The call's Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// What was agreed in SDP, once known (the INVITE's offer, or the ACK's answer).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Whether media flows (ACK received, SDP agreed, not ended).
    pub fn has_media(&self) -> bool {
        self.media.is_some()
    }

    /// The INVITE that started the call.
    pub fn invite(&self) -> &Request {
        &self.invite
    }

    /// Where the INVITE came from.
    pub fn source(&self) -> Source {
        self.invite_source
    }

    /// The attendant's record, once the call was confirmed.
    pub fn record(&self) -> Option<&CallRecord> {
        self.flow.as_ref().map(Flow::record)
    }

    /// Whether the call is over and nothing is left to absorb or retransmit:
    /// the driver may drop it.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Ended
            && self.transactions.is_empty()
            && self.bye.is_none()
            && self
                .answer
                .as_ref()
                .is_none_or(AnswerRetransmitter::is_done)
    }

    /// Once the call has ended and nothing of it retransmits on its own
    /// (its BYE answered or given up on, its 2xx acknowledged or given up
    /// on, no non-2xx final waiting for its ACK, every output polled):
    /// what its transactions still absorb until their timers end, for a
    /// [`LingerTable`](crate::sip::linger::LingerTable). The driver may then
    /// drop the call. `None` before that.
    pub fn linger(&self) -> Option<Vec<Absorber>> {
        if self.phase != Phase::Ended
            || self.bye.is_some()
            || !self.transmits.is_empty()
            || self.answer.as_ref().is_some_and(|a| !a.is_done())
        {
            return None;
        }
        self.transactions.absorbers()
    }

    /// Whether the call has ended (its [`CallEvent::Ended`] is out).
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// A request of this call from `source` (by Call-ID; retransmissions included).
    pub fn handle_sip(
        &mut self,
        now: Instant,
        request: &Request,
        source: Source,
        dir: &impl IdLookup,
    ) {
        let fields = KeyFields::of(request);
        let route = self
            .transactions
            .handle_request(now, &fields.parts(request), source.transport);
        match route {
            Err(e) => {
                tracing::warn!(error = %e, "request without a usable transaction key");
                if e.status_code().is_some() {
                    self.transmits.push_back(SipTransmit {
                        to: source,
                        bytes: request.response(400, "Bad Request").to_bytes().into(),
                    });
                }
            }
            Ok(Route::Absorbed(key)) => {
                self.sources.insert(key, source);
            }
            Ok(Route::Ack) => self.on_ack(now, request, dir),
            Ok(Route::Cancel { key, target }) => {
                self.sources.insert(key.clone(), source);
                self.on_cancel(now, request, &key, target);
            }
            Ok(Route::New(key)) => {
                self.sources.insert(key.clone(), source);
                self.on_request(now, request, &key, dir);
            }
        }
        self.drain_transactions();
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        request: &Request,
        key: &TransactionKey,
        target: CancelTarget,
    ) {
        match target {
            CancelTarget::Proceeding(invite) if Some(&invite) == self.invite_key.as_ref() => {
                // RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE.
                self.respond(now, key, request.response(200, "OK"));
                let tag = match &self.dialog {
                    Some(d) => d.local_tag().to_string(),
                    None => self.random_tag(),
                };
                tracing::info!("cancelled before answer");
                self.reject(now, 487, "Request Terminated", &tag);
            }
            CancelTarget::Proceeding(_) | CancelTarget::Answered(_) => {
                self.respond(now, key, request.response(200, "OK"));
            }
            CancelTarget::NotFound => self.respond(
                now,
                key,
                request.response(481, "Call/Transaction Does Not Exist"),
            ),
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        request: &Request,
        key: &TransactionKey,
        dir: &impl IdLookup,
    ) {
        let method = request.method().clone();
        if matches!(method, Method::Other(_) | Method::Register) {
            let response = request
                .response(405, "Method Not Allowed")
                .header("Allow", ALLOW);
            self.respond(now, key, response);
            return;
        }
        // Every other method is in the dialog (OPTIONS may be too, and is answered either way).
        let (from_tag, to_tag) = (request.from_tag(), request.to_tag());
        let checked = match self.dialog.as_mut() {
            Some(d) => d
                .handle_request(&in_dialog(request, &from_tag, &to_tag))
                .map_err(|e| (e.status_code().unwrap_or(481), e.to_string())),
            None => Err((481, "the call has no dialog".to_string())),
        };
        if let Err((status, why)) = checked {
            if method == Method::Options {
                self.respond(now, key, options_response(request));
                return;
            }
            tracing::warn!(%method, status, %why, "in-dialog request refused");
            let reason = match status {
                500 => "Server Internal Error",
                400 => "Bad Request",
                _ => "Call/Transaction Does Not Exist",
            };
            self.respond(now, key, request.response(status, reason));
            return;
        }
        match method {
            Method::Bye => {
                self.respond(now, key, request.response(200, "OK"));
                tracing::info!("caller hung up");
                if let Some(flow) = self.flow.as_mut() {
                    flow.handle(now, Input::Hangup, dir);
                }
                self.leave_room();
                self.stop_media();
                self.bye = None;
                self.finish(CallEnd::CallerHungUp);
            }
            Method::Info => {
                let content_type = request.content_type().unwrap_or_default();
                match parse_info(content_type, request.body()) {
                    Ok(event) => {
                        self.respond(now, key, request.response(200, "OK"));
                        if self.flow.is_none() {
                            // Answered, not yet ACKed: the caller had our
                            // 200 and started typing, and the ACK is late
                            // or lost. Keep the keys for when the call is
                            // confirmed (bounded: a flood is cut).
                            if self.early_info.len() < EARLY_INFO_MAX {
                                self.early_info.push(event.digit);
                            }
                            return;
                        }
                        self.info_digit(now, event.digit, dir);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "INFO body is not a key press");
                        let status = e.status_code();
                        let response = if status == 415 {
                            request
                                .response(415, "Unsupported Media Type")
                                .header("Accept", "application/dtmf-relay, application/dtmf")
                        } else {
                            request.response(400, "Bad Request")
                        };
                        self.respond(now, key, response);
                    }
                }
            }
            Method::Options => self.respond(now, key, options_response(request)),
            Method::Invite => {
                // A re-INVITE: the bridge keeps the session it agreed.
                self.respond(
                    now,
                    key,
                    request.response(488, "Not Acceptable Here").header(
                        "Warning",
                        "399 dialin \"session changes are not supported\"",
                    ),
                );
            }
            _ => {
                let response = request
                    .response(405, "Method Not Allowed")
                    .header("Allow", ALLOW);
                self.respond(now, key, response);
            }
        }
    }

    /// A key pressed by SIP INFO, once the call is confirmed.
    fn info_digit(&mut self, now: Instant, digit: Digit, dir: &impl IdLookup) {
        if let Some(media) = self.media.as_mut() {
            media.merger.handle_digit(now, digit, DtmfMethod::Info);
        } else if let Some(flow) = self.flow.as_mut() {
            // Confirmed without media (an ACK answer we could not use ends
            // the call, so this is rare).
            self.events.push_back(CallEvent::Digit {
                digit,
                method: DtmfMethod::Info,
            });
            let input = Input::Digit {
                digit,
                method: DtmfMethod::Info,
            };
            flow.handle(now, input, dir);
        }
        self.run_digits(now, dir);
    }

    fn on_ack(&mut self, now: Instant, request: &Request, dir: &impl IdLookup) {
        let (from_tag, to_tag) = (request.from_tag(), request.to_tag());
        let Some(dialog) = self.dialog.as_mut() else {
            return;
        };
        if let Err(e) = dialog.handle_request(&in_dialog(request, &from_tag, &to_tag)) {
            // RFC 3261 §17: an ACK is never answered.
            tracing::warn!(error = %e, "ACK ignored");
            return;
        }
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        answer.handle_ack(now);
        while answer.poll_event().is_some() {}
        if self.phase != Phase::Answered {
            return;
        }
        if self.delayed_offer {
            let text = String::from_utf8_lossy(request.body());
            match sdp::accept_answer(&self.local_sdp, &text) {
                Ok(n) => self.negotiated = Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "the ACK's answer is unusable");
                    self.hang_up(now, Reason::sip(488, "No usable SDP answer in the ACK"));
                    return;
                }
            }
        }
        self.phase = Phase::Confirmed;
        self.start_media(now, dir);
    }

    fn start_media(&mut self, now: Instant, dir: &impl IdLookup) {
        if let Some(n) = self.negotiated.clone() {
            let mut pts: Vec<u8> = n.event_pt.into_iter().collect();
            if n.audio_pt != EXTRA_EVENT_PT {
                pts.push(EXTRA_EVENT_PT);
            }
            self.media = Some(Media {
                codec: g711_codec(n.codec),
                sender: RtpSender::new(&mut self.rng, n.audio_pt),
                events: EventDetector::new(pts),
                inband: InbandDetector::new(),
                merger: DtmfMerger::new(),
                last_frame_end: None,
                negotiated: n,
            });
        }
        self.flow = Some(Flow::new(self.config.attendant, now));
        self.run_flow(now, dir);
        // Keys that came by INFO before the ACK, in their order.
        for digit in std::mem::take(&mut self.early_info) {
            self.info_digit(now, digit, dir);
        }
    }

    /// A response the caller sent (to the bridge's BYE).
    pub fn handle_response(&mut self, _now: Instant, response: &Response) {
        let Some(bye) = &self.bye else {
            return;
        };
        let Some(cseq) = response.cseq() else {
            return;
        };
        if cseq.method == Method::Bye && cseq.seq == bye.cseq && response.status() >= 200 {
            tracing::debug!(status = response.status(), "BYE answered");
            self.bye = None;
        }
    }

    /// One datagram that arrived on the call's RTP port.
    pub fn handle_rtp(&mut self, now: Instant, packet: &[u8], dir: &impl IdLookup) {
        let Some(media) = self.media.as_mut() else {
            return;
        };
        let header = match RtpHeader::parse(packet) {
            Ok(h) => h,
            Err(e) => {
                tracing::trace!(error = %e, "not RTP");
                return;
            }
        };
        let pt = header.payload_type();
        if media.events.accepts(pt) {
            let event = EventRtpPacket {
                ssrc: header.ssrc(),
                payload_type: pt,
                sequence: header.sequence(),
                timestamp: header.timestamp(),
                marker: header.marker(),
                payload: header.payload(),
            };
            if let Some(d) = media.events.handle_packet(now, &event) {
                tracing::debug!(digit = %d.digit, "RFC 4733 digit");
                media.merger.handle_digit(now, d.digit, DtmfMethod::Rfc4733);
            }
        } else if pt == media.negotiated.audio_pt {
            let payload = header.payload();
            self.scratch.resize(payload.len(), 0);
            media.codec.decode_slice(payload, &mut self.scratch);
            media.inband.handle_samples(now, &self.scratch);
            while let Some(d) = media.inband.poll_output() {
                tracing::debug!(digit = %d.digit, "in-band digit");
                media.merger.handle_digit(d.at, d.digit, DtmfMethod::Inband);
            }
        }
        self.run_digits(now, dir);
    }

    /// The driver put the caller into the room of the last [`CallEvent::Join`].
    pub fn handle_joined(&mut self, now: Instant, alone: bool, dir: &impl IdLookup) {
        if let Some(flow) = self.flow.as_mut() {
            flow.handle(now, Input::Joined { alone }, dir);
        }
        self.run_flow(now, dir);
    }

    /// The bridge is shutting down: a call not yet answered gets 503, an
    /// answered one the attendant's BYE (`Reason: SIP ;cause=503`).
    pub fn cancel(&mut self, now: Instant, dir: &impl IdLookup) {
        match self.phase {
            Phase::Ringing { .. } => {
                let tag = self
                    .dialog
                    .as_ref()
                    .map(|d| d.local_tag().to_string())
                    .unwrap_or_default();
                self.reject(now, 503, "Service Unavailable", &tag);
            }
            Phase::Answered | Phase::Confirmed => match self.flow.as_mut() {
                Some(flow) if !flow.is_ended() => {
                    flow.handle(now, Input::Cancelled, dir);
                    self.run_flow(now, dir);
                }
                _ => {
                    let r = attendant::EndReason::Shutdown;
                    self.hang_up(now, Reason::sip(r.cause(), r.text()));
                }
            },
            Phase::ByeSent | Phase::Ended => {}
        }
        self.drain_transactions();
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, dir: &impl IdLookup) {
        self.transactions.handle_timeout(now);
        if let Phase::Ringing { answer_at } = self.phase
            && answer_at <= now
        {
            self.send_answer(now);
        }
        if let Some(answer) = self.answer.as_mut() {
            answer.handle_timeout(now);
            let mut timed_out = false;
            while let Some(x) = answer.poll_transmit() {
                self.transmits.push_back(SipTransmit {
                    to: self.invite_source,
                    bytes: x.bytes,
                });
            }
            while let Some(e) = answer.poll_event() {
                timed_out |= e == AnswerEvent::AckTimeout;
            }
            if timed_out && self.phase == Phase::Answered {
                // RFC 3261 §13.3.1.4: no ACK within 64×T1 ends the session with a BYE.
                tracing::warn!("no ACK for the 200: hanging up");
                self.hang_up(now, Reason::sip(408, "No ACK for the 200"));
            }
        }
        self.bye_timeout(now);
        self.play(now, dir);
        if let Some(media) = self.media.as_mut()
            && media.events.poll_timeout().is_some_and(|t| t <= now)
        {
            media.events.handle_timeout(now);
        }
        if let Some(flow) = self.flow.as_mut() {
            flow.handle_timeout(now, dir);
        }
        self.run_flow(now, dir);
        self.drain_transactions();
    }

    fn bye_timeout(&mut self, now: Instant) {
        let Some(bye) = self.bye.as_mut() else {
            return;
        };
        if bye.give_up <= now {
            tracing::warn!("BYE not answered within 64×T1");
            self.bye = None;
            return;
        }
        if let Some((at, interval)) = bye.retransmit
            && at <= now
        {
            // RFC 3261 §17.1.2.2: Timer E doubles up to T2.
            self.transmits.push_back(SipTransmit {
                to: self.invite_source,
                bytes: bye.bytes.clone(),
            });
            let next = (interval * 2).min(self.config.timers.t2);
            bye.retransmit = Some((now + next, next));
        }
    }

    /// Sends the frames due, and reports the end of a prompt to the flow.
    fn play(&mut self, now: Instant, dir: &impl IdLookup) {
        if let Some((prompt, until)) = self.muted_until
            && until <= now
        {
            self.muted_until = None;
            if let Some(flow) = self.flow.as_mut() {
                flow.handle(now, Input::PromptDone(prompt), dir);
            }
        }
        for _ in 0..MAX_FRAMES_PER_WAKE {
            let Some(playout) = self.playout.as_mut() else {
                return;
            };
            if playout.next_at > now {
                return;
            }
            let Some(media) = self.media.as_mut() else {
                self.playout = None;
                return;
            };
            let frames = self.prompts.frames(playout.prompt, media.codec);
            match frames.get(playout.frame) {
                Some(frame) => {
                    let to = media.negotiated.remote_rtp;
                    if media.negotiated.direction.sends() && !to.ip().is_unspecified() {
                        match RtpBytes::packet(&mut media.sender, frame) {
                            Ok(bytes) => self.rtp.push_back(RtpTransmit { to, bytes }),
                            Err(e) => tracing::error!(error = %e, "RTP packet not built"),
                        }
                    } else {
                        media.sender.skip(frame.len() as u32);
                    }
                    playout.frame += 1;
                    playout.next_at += FRAME_DURATION;
                    media.last_frame_end = Some(playout.next_at);
                }
                None => {
                    let prompt = playout.prompt;
                    self.playout = None;
                    if let Some(flow) = self.flow.as_mut() {
                        flow.handle(now, Input::PromptDone(prompt), dir);
                    }
                    self.run_flow(now, dir);
                }
            }
        }
    }

    fn start_prompt(&mut self, now: Instant, prompt: PromptId) {
        tracing::debug!(%prompt, "playing");
        self.events.push_back(CallEvent::PromptStarted(prompt));
        if self.config.mute_prompts || self.media.is_none() {
            self.muted_until = Some((prompt, now + self.prompts.duration(prompt)));
            return;
        }
        if let Some(media) = self.media.as_mut() {
            // The timestamp runs on through the silence between prompts
            // (RFC 3550 §5.1), and each prompt starts a talkspurt (RFC 3551 §4.1).
            match media.last_frame_end {
                Some(end) if now > end => {
                    let gap = now.duration_since(end);
                    let samples = gap.as_micros() * 8 / 1000;
                    media
                        .sender
                        .skip(u32::try_from(samples).unwrap_or(u32::MAX));
                }
                _ => {}
            }
            media.sender.start_talkspurt();
        }
        self.playout = Some(Playout {
            prompt,
            frame: 0,
            next_at: now,
        });
    }

    fn run_digits(&mut self, now: Instant, dir: &impl IdLookup) {
        if let (Some(media), Some(flow)) = (self.media.as_mut(), self.flow.as_mut()) {
            while let Some(d) = media.merger.poll_output() {
                tracing::debug!(digit = %d.digit, method = d.method.as_str(), "key");
                self.events.push_back(CallEvent::Digit {
                    digit: d.digit,
                    method: d.method,
                });
                flow.handle(
                    now,
                    Input::Digit {
                        digit: d.digit,
                        method: d.method,
                    },
                    dir,
                );
            }
        }
        self.run_flow(now, dir);
    }

    /// Reports the attempts the attendant judged since the last report.
    fn report_attempts(&mut self) {
        let Some(flow) = self.flow.as_ref() else {
            return;
        };
        let attempts = &flow.record().attempts;
        for attempt in attempts.iter().skip(self.attempts_reported) {
            self.events
                .push_back(CallEvent::Attempt(Box::new(attempt.clone())));
        }
        self.attempts_reported = attempts.len();
    }

    fn run_flow(&mut self, now: Instant, dir: &impl IdLookup) {
        self.report_attempts();
        for _ in 0..MAX_FLOW_OUTPUTS {
            let Some(output) = self.flow.as_mut().and_then(Flow::poll_output) else {
                break;
            };
            match output {
                Output::Play(prompt) => {
                    self.start_prompt(now, prompt);
                    // A prompt with no frames ends at once.
                    self.play(now, dir);
                }
                Output::StopPlayback => {
                    self.playout = None;
                    self.muted_until = None;
                }
                Output::Join { id, target } => {
                    let key = MeetingKey::from(target);
                    tracing::info!(%id, "joining the meeting");
                    self.room = Some(key);
                    self.events.push_back(CallEvent::Join { key, id });
                }
                Output::HangUp(reason) => {
                    tracing::info!(reason = reason.text(), "attendant hangs up");
                    self.hang_up(now, Reason::sip(reason.cause(), reason.text()));
                }
            }
        }
    }

    fn leave_room(&mut self) {
        if let Some(key) = self.room.take() {
            self.events.push_back(CallEvent::Left { key });
        }
    }

    fn stop_media(&mut self) {
        self.playout = None;
        self.muted_until = None;
        self.media = None;
    }

    /// Ends the call from this side: BYE with an RFC 3326 Reason.
    fn hang_up(&mut self, now: Instant, reason: Reason) {
        if matches!(self.phase, Phase::ByeSent | Phase::Ended) {
            return;
        }
        let Some(dialog) = self.dialog.as_mut() else {
            return;
        };
        let header = reason.header_value();
        let out = dialog.bye(Some(reason));
        let branch = format!("{:016x}", self.rng.random::<u64>());
        let bytes: Arc<[u8]> = format_request(
            &out,
            self.invite_source.transport_name(),
            &self.config.sip_addr.to_string(),
            &branch,
        )
        .into();
        self.transmits.push_back(SipTransmit {
            to: self.invite_source,
            bytes: bytes.clone(),
        });
        let t1 = self.config.timers.t1;
        self.bye = Some(ByeClient {
            cseq: out.cseq,
            bytes,
            retransmit: (self.invite_source.transport == Transport::Unreliable)
                .then_some((now + t1, t1)),
            give_up: now + self.config.timers.t1_x64(),
        });
        self.leave_room();
        self.stop_media();
        self.phase = Phase::ByeSent;
        self.finish(CallEnd::BridgeHungUp(header));
    }

    fn finish(&mut self, end: CallEnd) {
        if self.end.is_some() {
            return;
        }
        if self.phase != Phase::ByeSent {
            self.phase = Phase::Ended;
        }
        tracing::info!(?end, "call ended");
        self.report_attempts();
        self.end = Some(end.clone());
        self.events.push_back(CallEvent::Ended {
            end,
            record: self.flow.as_ref().map(|f| Box::new(f.record().clone())),
        });
    }

    fn drain_transactions(&mut self) {
        while let Some((key, x)) = self.transactions.poll_transmit() {
            let to = self
                .sources
                .get(&key)
                .copied()
                .unwrap_or(self.invite_source);
            self.transmits.push_back(SipTransmit { to, bytes: x.bytes });
        }
        while let Some((key, event)) = self.transactions.poll_event() {
            if event == Event::Terminated {
                self.sources.remove(&key);
            }
        }
        if self.phase == Phase::ByeSent && self.bye.is_none() {
            self.phase = Phase::Ended;
        }
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.drain_transactions();
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_rtp(&mut self) -> Option<RtpTransmit> {
        self.rtp.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ringing = match self.phase {
            Phase::Ringing { answer_at } => Some(answer_at),
            _ => None,
        };
        let bye = self
            .bye
            .as_ref()
            .map(|b| b.retransmit.map_or(b.give_up, |(at, _)| at.min(b.give_up)));
        let media = self.media.as_ref().and_then(|m| m.events.poll_timeout());
        [
            self.transactions.poll_timeout(),
            ringing,
            self.answer
                .as_ref()
                .and_then(AnswerRetransmitter::poll_timeout),
            bye,
            self.playout.as_ref().map(|p| p.next_at),
            self.muted_until.map(|(_, t)| t),
            self.flow.as_ref().and_then(Flow::poll_timeout),
            media,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// 200 to OPTIONS: what the bridge does (RFC 3261 §11.2).
pub fn options_response(request: &Request) -> crate::sip::message::ResponseBuilder {
    request
        .response(200, "OK")
        .header("Allow", ALLOW)
        .header("Accept", ACCEPT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{Lookup, PinDigits};
    use crate::media::dtmf::Digit;
    use crate::media::dtmf::rfc4733::EventPayload;
    use crate::media::rtp::{RtpFields, write_packet};
    use crate::sip::message::{self, Message};

    const VALID: &str = "7654321";
    /// An ID a reset revoked (operation 99).
    const REVOKED: &str = "5550001";
    /// The organizer's leader PIN: never in a call record.
    const LEADER_PIN: &str = "90817";
    const PEER: &str = "127.0.0.1:5062";

    struct OneId;

    impl IdLookup for OneId {
        fn lookup(&self, id: ConferenceId) -> Lookup {
            if id.to_string() == VALID {
                Lookup::Valid(Target {
                    tenant: 1,
                    organizer: 7,
                    meeting: None,
                    leader_pin: PinDigits::new(LEADER_PIN),
                })
            } else if id.to_string() == REVOKED {
                Lookup::Revoked(crate::directory::Revoked {
                    at: crate::time::Timestamp::from_millis(1_795_000_000_000),
                    operation: 99,
                    cause: crate::admin::model::RevocationCause::ResetId,
                    organizer: 7,
                })
            } else {
                Lookup::Unknown
            }
        }
    }

    fn source() -> Source {
        Source {
            transport: Transport::Unreliable,
            addr: PEER.parse().unwrap(),
        }
    }

    fn config(ring: Duration) -> CallConfig {
        CallConfig {
            timers: TimerConfig::default(),
            attendant: attendant::Config::default(),
            sip_addr: "127.0.0.1:5060".parse().unwrap(),
            rtp_addr: "127.0.0.1:20000".parse().unwrap(),
            mute_prompts: false,
            ring,
            seed: 42,
        }
    }

    fn catalog() -> Arc<PromptCatalog> {
        // Short synthetic prompts: 3 frames each.
        Arc::new(PromptCatalog::from_pcm(|_| vec![1000; 480]))
    }

    fn parse_request(bytes: &[u8]) -> Request {
        match message::parse(bytes).unwrap() {
            Message::Request(r) => r,
            Message::Response(r) => panic!("expected a request, got {}", r.status()),
        }
    }

    fn parse_response(bytes: &[u8]) -> Response {
        match message::parse(bytes).unwrap() {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {}", r.method()),
        }
    }

    const URI: &str = "sip:14255550100@127.0.0.1:5060";

    fn builder(method: Method, cseq: u32, branch: &str, to_tag: Option<&str>) -> RequestBuilder {
        RequestBuilder::new(method, URI)
            .via("UDP", PEER, branch)
            .from("sip:caller@127.0.0.1", "ctag")
            .to(URI, to_tag)
            .call_id("call-1")
            .cseq(cseq)
            .header("Contact", &format!("<sip:caller@{PEER}>"))
    }

    fn offer() -> String {
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            .to_string()
    }

    fn invite(body: Option<&str>) -> Request {
        let b = builder(Method::Invite, 1, "inv", None);
        let b = match body {
            Some(sdp) => b.body("application/sdp", sdp.as_bytes()),
            None => b,
        };
        parse_request(&b.to_bytes())
    }

    fn statuses(call: &mut Call) -> Vec<u16> {
        let mut out = Vec::new();
        while let Some(x) = call.poll_transmit() {
            if let Ok(Message::Response(r)) = message::parse(&x.bytes) {
                out.push(r.status());
            }
        }
        out
    }

    fn transmits(call: &mut Call) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(x) = call.poll_transmit() {
            out.push(message::parse(&x.bytes).unwrap());
        }
        out
    }

    fn events(call: &mut Call) -> Vec<CallEvent> {
        std::iter::from_fn(|| call.poll_event()).collect()
    }

    /// A call answered at `t0`, not yet ACKed; returns it and the 200's
    /// To tag.
    fn answered(t0: Instant) -> (Call, String) {
        let mut call = Call::new(
            t0,
            &invite(Some(&offer())),
            source(),
            config(Duration::ZERO),
            catalog(),
        );
        let sent = transmits(&mut call);
        let ok = match sent.last() {
            Some(Message::Response(r)) if r.status() == 200 => r.clone(),
            other => panic!("expected 100 then 200, got {other:?}"),
        };
        assert_eq!(ok.content_type(), Some("application/sdp"));
        let tag = ok.to_tag().unwrap();
        (call, tag)
    }

    /// A call answered and ACKed at `t0`; returns it and the 200's To tag.
    fn confirmed(t0: Instant) -> (Call, String) {
        let (mut call, tag) = answered(t0);
        let ack = parse_request(&builder(Method::Ack, 1, "ack", Some(&tag)).to_bytes());
        call.handle_sip(t0, &ack, source(), &OneId);
        assert!(call.has_media());
        (call, tag)
    }

    /// Runs the call's timers until `until`, collecting RTP.
    fn run_until(call: &mut Call, until: Instant) -> Vec<RtpTransmit> {
        let mut rtp = Vec::new();
        for _ in 0..100_000 {
            rtp.extend(std::iter::from_fn(|| call.poll_rtp()));
            match call.poll_timeout() {
                Some(t) if t <= until => call.handle_timeout(t, &OneId),
                _ => break,
            }
        }
        rtp.extend(std::iter::from_fn(|| call.poll_rtp()));
        rtp
    }

    fn event_packet(digit: Digit, seq: u16, ts: u32, end: bool) -> Vec<u8> {
        let payload = EventPayload {
            event: digit.event_code(),
            end,
            volume: 10,
            duration: 800,
        }
        .to_bytes();
        let mut buf = vec![0u8; 64];
        let fields = RtpFields {
            marker: !end,
            payload_type: 101,
            sequence: seq,
            timestamp: ts,
            ssrc: 0x1234,
        };
        let n = write_packet(&mut buf, &fields, &payload).unwrap();
        buf.truncate(n);
        buf
    }

    fn press_rfc4733(call: &mut Call, now: &mut Instant, keys: &str, seq: &mut u16) {
        for (i, c) in keys.chars().enumerate() {
            let digit = Digit::from_char(c).unwrap();
            let ts = 1000 + (i as u32) * 4000 + u32::from(*seq) * 8;
            call.handle_rtp(*now, &event_packet(digit, *seq, ts, false), &OneId);
            *seq += 1;
            call.handle_rtp(*now, &event_packet(digit, *seq, ts, true), &OneId);
            *seq += 1;
            *now += Duration::from_millis(200);
            run_until(call, *now);
        }
    }

    fn press_info(call: &mut Call, now: &mut Instant, tag: &str, keys: &str, cseq: &mut u32) {
        for c in keys.chars() {
            let info = builder(Method::Info, *cseq, &format!("info{cseq}"), Some(tag)).body(
                "application/dtmf-relay",
                format!("Signal={c}\r\nDuration=160\r\n").as_bytes(),
            );
            call.handle_sip(*now, &parse_request(&info.to_bytes()), source(), &OneId);
            assert_eq!(statuses(call), vec![200], "INFO {c} gets 200");
            *cseq += 1;
            *now += Duration::from_millis(200);
            run_until(call, *now);
        }
    }

    #[test]
    fn rfc4733_digits_of_a_valid_id_join_and_bye_leaves() {
        let t0 = Instant::now();
        let (mut call, tag) = confirmed(t0);
        // Welcome plays: 20 ms packets, one SSRC, seq +1, ts +160, marker first.
        let rtp = run_until(&mut call, t0 + Duration::from_millis(40));
        assert_eq!(rtp.len(), 3, "frames at 0, 20 and 40 ms");
        let headers: Vec<_> = rtp
            .iter()
            .map(|p| RtpHeader::parse(&p.bytes).unwrap())
            .collect();
        assert!(headers[0].marker() && !headers[1].marker());
        assert_eq!(headers[1].sequence(), headers[0].sequence().wrapping_add(1));
        assert_eq!(
            headers[1].timestamp(),
            headers[0].timestamp().wrapping_add(160)
        );
        assert_eq!(headers[0].ssrc(), headers[2].ssrc());
        assert_eq!(headers[0].payload_type(), 0);
        assert_eq!(rtp[0].to, "127.0.0.1:40000".parse().unwrap());

        let mut now = t0 + Duration::from_millis(100);
        let mut seq = 1;
        press_rfc4733(&mut call, &mut now, &format!("{VALID}#"), &mut seq);
        let now = now + Duration::from_secs(1);
        run_until(&mut call, now);
        let evs = events(&mut call);
        let key = MeetingKey {
            tenant: 1,
            organizer: 7,
            meeting: None,
        };
        assert!(
            evs.contains(&CallEvent::Join {
                key,
                id: VALID.parse().unwrap()
            }),
            "{evs:?}"
        );
        call.handle_joined(now, true, &OneId);
        let rtp = run_until(&mut call, now + Duration::from_secs(1));
        assert!(!rtp.is_empty(), "the first-person prompt plays");
        assert_eq!(
            call.record().unwrap().prompt_ids().last(),
            Some(&PromptId::FirstPerson)
        );

        // The caller stays until they hang up.
        let later = now + Duration::from_secs(600);
        run_until(&mut call, later);
        assert!(!call.is_ended());
        let _ = events(&mut call);
        let bye = builder(Method::Bye, 20, "bye", Some(&tag)).to_bytes();
        call.handle_sip(later, &parse_request(&bye), source(), &OneId);
        assert_eq!(statuses(&mut call), vec![200]);
        let evs = events(&mut call);
        assert_eq!(evs[0], CallEvent::Left { key });
        assert!(matches!(
            &evs[1],
            CallEvent::Ended {
                end: CallEnd::CallerHungUp,
                ..
            }
        ));
    }

    #[test]
    fn info_digits_of_a_valid_id_join() {
        let t0 = Instant::now();
        let (mut call, tag) = confirmed(t0);
        let mut now = t0 + Duration::from_millis(100);
        let mut cseq = 2;
        press_info(&mut call, &mut now, &tag, &format!("{VALID}#"), &mut cseq);
        run_until(&mut call, now + Duration::from_secs(1));
        assert!(
            events(&mut call)
                .iter()
                .any(|e| matches!(e, CallEvent::Join { .. }))
        );
    }

    #[test]
    fn info_digits_that_arrive_before_the_ack_are_kept_for_the_call() {
        let t0 = Instant::now();
        let (mut call, tag) = answered(t0);
        // The caller has our 200 and types; its ACK is late.
        let mut now = t0 + Duration::from_millis(10);
        for (cseq, c) in (2u32..).zip(format!("{VALID}#").chars()) {
            let info = builder(Method::Info, cseq, &format!("info{cseq}"), Some(&tag)).body(
                "application/dtmf-relay",
                format!("Signal={c}\r\nDuration=160\r\n").as_bytes(),
            );
            call.handle_sip(now, &parse_request(&info.to_bytes()), source(), &OneId);
            assert_eq!(statuses(&mut call), vec![200], "INFO {c} gets 200");
            now += Duration::from_millis(5);
        }
        assert!(
            !events(&mut call)
                .iter()
                .any(|e| matches!(e, CallEvent::Join { .. })),
            "nothing is decided before the ACK"
        );
        let ack = parse_request(&builder(Method::Ack, 1, "ack", Some(&tag)).to_bytes());
        call.handle_sip(now, &ack, source(), &OneId);
        run_until(&mut call, now + Duration::from_secs(1));
        let evs = events(&mut call);
        assert!(
            evs.iter().any(|e| matches!(e, CallEvent::Join { .. })),
            "the early keys make the ID: {evs:?}"
        );
    }

    /// The record of a call with a revoked ID, then an unknown one, then the
    /// right one, as the bridge writes it: each attempt's digits, method and
    /// result, the revocation's time and operation, and no leader PIN.
    #[test]
    fn the_call_record_json_tells_revoked_from_unknown_and_has_no_pin() {
        use crate::records::{CallInfo, CallRecordJson, TimeAnchor};
        let t0 = Instant::now();
        let anchor = TimeAnchor::new(t0, crate::time::Timestamp::from_millis(1_800_000_000_000));
        let (mut call, tag) = confirmed(t0);
        let mut now = t0 + Duration::from_millis(100);
        let mut cseq = 2;
        let keys = format!("{REVOKED}#");
        press_info(&mut call, &mut now, &tag, &keys, &mut cseq);
        now += Duration::from_millis(500);
        run_until(&mut call, now);
        press_info(&mut call, &mut now, &tag, "2222222#", &mut cseq);
        now += Duration::from_millis(500);
        run_until(&mut call, now);
        press_info(&mut call, &mut now, &tag, &format!("{VALID}#"), &mut cseq);
        now += Duration::from_secs(1);
        run_until(&mut call, now);
        let evs = events(&mut call);
        let digits = evs
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    CallEvent::Digit {
                        method: DtmfMethod::Info,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(digits, 24, "three entries of 7 digits and #: {evs:?}");
        let results: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                CallEvent::Attempt(a) => Some(a.result.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(results, ["revoked", "unknown", "accepted"]);
        assert!(evs.contains(&CallEvent::PromptStarted(PromptId::Welcome)));
        call.handle_joined(now, true, &OneId);
        run_until(&mut call, now + Duration::from_secs(5));
        let bye_at = now + Duration::from_secs(5);
        let bye = builder(Method::Bye, 90, "bye", Some(&tag)).to_bytes();
        call.handle_sip(bye_at, &parse_request(&bye), source(), &OneId);
        let (end, record) = events(&mut call)
            .into_iter()
            .find_map(|e| match e {
                CallEvent::Ended { end, record } => Some((end, record)),
                _ => None,
            })
            .expect("the call ended");
        let info = CallInfo {
            call_id: call.call_id().to_string(),
            from: "sip:caller@127.0.0.1".into(),
            dialed: call.invite().uri_user().map(str::to_string),
            source: call.source(),
            anchor,
            answered: Some(t0),
        };
        let json = CallRecordJson::new(&info, &end, record.as_deref(), bye_at);
        let value = serde_json::to_value(&json).unwrap();
        let text = value.to_string();
        assert!(!text.contains(LEADER_PIN), "no leader PIN: {text}");
        assert!(!text.contains("leader"), "no leader PIN field: {text}");
        assert_eq!(value["call_id"], "call-1");
        assert_eq!(value["dialed"], "14255550100");
        assert_eq!(value["transport"], "UDP");
        assert_eq!(value["started_at"], "2027-01-15T08:00:00Z");
        assert_eq!(value["answered_at"], "2027-01-15T08:00:00Z");
        assert_eq!(value["outcome"], "joined");
        assert_eq!(value["hung_up_by"], "caller");
        assert_eq!(value["joined"]["conference_id"], VALID);
        assert_eq!(value["joined"]["organizer_id"], 7);
        let attempts = value["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3);
        assert_eq!(attempts[0]["digits"], REVOKED);
        assert_eq!(attempts[0]["method"], "info");
        assert_eq!(attempts[0]["result"], "revoked");
        assert_eq!(attempts[0]["conference_id"], REVOKED);
        assert_eq!(attempts[0]["revoked"]["operation_id"], 99);
        assert_eq!(attempts[0]["revoked"]["cause"], "reset-id");
        assert_eq!(
            attempts[0]["revoked"]["at"],
            crate::time::Timestamp::from_millis(1_795_000_000_000).to_string()
        );
        assert_eq!(attempts[1]["result"], "unknown");
        assert!(attempts[1].get("revoked").is_none(), "{}", attempts[1]);
        assert_eq!(attempts[2]["result"], "accepted");
        assert_eq!(attempts[2]["digits"], VALID);
        let prompts: Vec<_> = value["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["prompt"].as_str().unwrap())
            .collect();
        assert_eq!(prompts.first(), Some(&"welcome"));
        assert!(prompts.contains(&"not-valid"), "{prompts:?}");
        assert!(prompts.contains(&"joining"), "{prompts:?}");
        // The end is the BYE's moment, converted through the anchor.
        let ended = anchor.wall(bye_at);
        assert_eq!(value["ended_at"], ended.to_string());
    }

    #[test]
    fn three_bad_ids_end_with_bye_and_reason() {
        let t0 = Instant::now();
        let (mut call, tag) = confirmed(t0);
        let mut now = t0 + Duration::from_millis(100);
        let mut cseq = 2;
        for _ in 0..3 {
            press_info(&mut call, &mut now, &tag, "1111111#", &mut cseq);
        }
        run_until(&mut call, now + Duration::from_secs(2));
        let bye = transmits(&mut call)
            .into_iter()
            .find_map(|m| match m {
                Message::Request(r) if r.method() == &Method::Bye => Some(r),
                _ => None,
            })
            .expect("the bridge sends BYE");
        assert_eq!(
            bye.header("Reason"),
            Some("SIP ;cause=403 ;text=\"Conference ID not valid\"")
        );
        assert_eq!(bye.to_tag().as_deref(), Some("ctag"));
        assert_eq!(bye.from_tag(), Some(tag));
        assert!(events(&mut call).iter().any(|e| matches!(
            e,
            CallEvent::Ended {
                end: CallEnd::BridgeHungUp(_),
                ..
            }
        )));
        // The caller's 200 ends the BYE transaction; the call finishes when
        // the INVITE's accepted state has run out.
        call.handle_response(now, &parse_response(&bye.response(200, "OK").to_bytes()));
        run_until(&mut call, now + Duration::from_secs(64));
        assert!(call.is_finished());
    }

    #[test]
    fn no_ack_retransmits_the_200_then_byes_at_64_t1() {
        let t0 = Instant::now();
        let mut call = Call::new(
            t0,
            &invite(Some(&offer())),
            source(),
            config(Duration::ZERO),
            catalog(),
        );
        assert_eq!(statuses(&mut call), vec![100, 200]);
        // 500 ms, 1 s, 2 s, 4 s, then every 4 s (T2) up to 32 s.
        call.handle_timeout(t0 + Duration::from_millis(500), &OneId);
        assert_eq!(statuses(&mut call), vec![200]);
        let before = t0 + Duration::from_millis(31_999);
        run_until(&mut call, before);
        assert!(statuses(&mut call).iter().all(|s| *s == 200));
        assert!(!call.is_ended());
        run_until(&mut call, t0 + Duration::from_secs(32));
        let bye = transmits(&mut call)
            .into_iter()
            .find_map(|m| match m {
                Message::Request(r) if r.method() == &Method::Bye => Some(r),
                _ => None,
            })
            .expect("BYE at 64×T1");
        assert!(bye.header("Reason").unwrap().contains("cause=408"));
    }

    #[test]
    fn cancel_before_the_answer_gets_200_and_487() {
        let t0 = Instant::now();
        let mut call = Call::new(
            t0,
            &invite(Some(&offer())),
            source(),
            config(Duration::from_secs(2)),
            catalog(),
        );
        assert_eq!(statuses(&mut call), vec![100, 180]);
        let cancel = RequestBuilder::new(Method::Cancel, URI)
            .via("UDP", PEER, "inv")
            .from("sip:caller@127.0.0.1", "ctag")
            .to(URI, None)
            .call_id("call-1")
            .cseq(1);
        call.handle_sip(
            t0 + Duration::from_millis(300),
            &parse_request(&cancel.to_bytes()),
            source(),
            &OneId,
        );
        assert_eq!(statuses(&mut call), vec![200, 487]);
        assert!(matches!(
            events(&mut call).last(),
            Some(CallEvent::Ended {
                end: CallEnd::Rejected(487),
                ..
            })
        ));
        run_until(&mut call, t0 + Duration::from_secs(5));
        assert!(
            statuses(&mut call).iter().all(|s| *s == 487),
            "no 200 after a CANCEL"
        );
    }

    #[test]
    fn a_retransmitted_invite_gets_the_200_again() {
        let t0 = Instant::now();
        let mut call = Call::new(
            t0,
            &invite(Some(&offer())),
            source(),
            config(Duration::ZERO),
            catalog(),
        );
        assert_eq!(statuses(&mut call), vec![100, 200]);
        call.handle_sip(
            t0 + Duration::from_millis(100),
            &invite(Some(&offer())),
            source(),
            &OneId,
        );
        assert_eq!(statuses(&mut call), vec![200]);
        assert_eq!(events(&mut call), vec![CallEvent::Answered]);
    }

    #[test]
    fn delayed_offer_takes_the_answer_from_the_ack() {
        let t0 = Instant::now();
        let mut call = Call::new(
            t0,
            &invite(None),
            source(),
            config(Duration::ZERO),
            catalog(),
        );
        let ok = match transmits(&mut call).pop() {
            Some(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(ok.status(), 200);
        let offer_text = String::from_utf8_lossy(ok.body()).to_string();
        assert!(
            offer_text.contains("m=audio 20000 RTP/AVP 0 8 101"),
            "{offer_text}"
        );
        let answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                      m=audio 41000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
        let ack = builder(Method::Ack, 1, "ack", Some(&ok.to_tag().unwrap()))
            .body("application/sdp", answer.as_bytes());
        call.handle_sip(t0, &parse_request(&ack.to_bytes()), source(), &OneId);
        let n = call.negotiated().expect("negotiated from the ACK");
        assert_eq!(n.codec, sdp::Codec::Pcma);
        assert_eq!(n.remote_rtp, "127.0.0.1:41000".parse().unwrap());
        let rtp = run_until(&mut call, t0);
        assert_eq!(RtpHeader::parse(&rtp[0].bytes).unwrap().payload_type(), 8);
    }

    #[test]
    fn an_offer_without_g711_gets_488() {
        let t0 = Instant::now();
        let g729 = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                    m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let mut call = Call::new(
            t0,
            &invite(Some(g729)),
            source(),
            config(Duration::ZERO),
            catalog(),
        );
        assert_eq!(statuses(&mut call), vec![100, 488]);
        assert!(call.is_ended());
    }

    #[test]
    fn shutdown_byes_with_503_reason() {
        let t0 = Instant::now();
        let (mut call, _) = confirmed(t0);
        call.cancel(t0 + Duration::from_millis(10), &OneId);
        let bye = transmits(&mut call)
            .into_iter()
            .find_map(|m| match m {
                Message::Request(r) if r.method() == &Method::Bye => Some(r),
                _ => None,
            })
            .expect("BYE at shutdown");
        assert!(bye.header("Reason").unwrap().contains("cause=503"));
    }

    #[test]
    fn muted_prompts_send_no_audio_but_take_their_time() {
        let t0 = Instant::now();
        let mut config = config(Duration::ZERO);
        config.mute_prompts = true;
        let mut call = Call::new(t0, &invite(Some(&offer())), source(), config, catalog());
        let tag = transmits(&mut call)
            .into_iter()
            .find_map(|m| match m {
                Message::Response(r) if r.status() == 200 => r.to_tag(),
                _ => None,
            })
            .unwrap();
        let ack = parse_request(&builder(Method::Ack, 1, "ack", Some(&tag)).to_bytes());
        call.handle_sip(t0, &ack, source(), &OneId);
        let mut now = t0 + Duration::from_millis(100);
        let mut cseq = 2;
        press_info(&mut call, &mut now, &tag, &format!("{VALID}#"), &mut cseq);
        let rtp = run_until(&mut call, now + Duration::from_secs(1));
        assert!(rtp.is_empty());
        assert!(
            events(&mut call)
                .iter()
                .any(|e| matches!(e, CallEvent::Join { .. }))
        );
    }

    #[test]
    fn a_request_with_the_wrong_tags_gets_481_and_an_unknown_method_405() {
        let t0 = Instant::now();
        let (mut call, _) = confirmed(t0);
        let bye = builder(Method::Bye, 5, "bye", Some("not-our-tag")).to_bytes();
        call.handle_sip(t0, &parse_request(&bye), source(), &OneId);
        assert_eq!(statuses(&mut call), vec![481]);
        assert!(!call.is_ended());
        let sub = builder(Method::Other("SUBSCRIBE".into()), 6, "sub", None).to_bytes();
        call.handle_sip(t0, &parse_request(&sub), source(), &OneId);
        assert_eq!(statuses(&mut call), vec![405]);
    }

    #[test]
    fn garbage_rtp_is_ignored() {
        let t0 = Instant::now();
        let (mut call, _) = confirmed(t0);
        for junk in [
            &b""[..],
            b"\x80",
            &[0xff; 40],
            &[0x80, 101, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xff],
        ] {
            call.handle_rtp(t0, junk, &OneId);
        }
        assert!(!call.is_ended());
    }
}
