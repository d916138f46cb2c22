//! RFC 3261 §17.2 server transactions as state machines, timers as deadlines.
//!
//! What is here: the transaction key (§17.2.3, with the RFC 2543 fallback),
//! the INVITE server transaction (§17.2.1), the non-INVITE server transaction
//! (§17.2.2), the UAS core's retransmitter of a 2xx to an INVITE (§13.3.1.4),
//! and [`ServerTransactions`], the table that routes each incoming request to
//! the transaction it belongs to (a retransmission is absorbed there) or
//! reports it as new, and matches a CANCEL to the INVITE it cancels (§9.2).
//!
//! What is not: no IO and no clock. Time arrives as an `Instant` argument;
//! timers are deadlines ([`poll_timeout`](InviteServerTransaction::poll_timeout))
//! that the driver sleeps until before calling `handle_timeout(now)`.
//! Messages are not parsed or built here: requests are described by plain
//! fields ([`RequestKeyParts`]) and responses are the bytes the message layer
//! formatted, which come back out unchanged in a [`Transmit`]. Addresses are
//! the driver's business: it remembers where each transaction's request came
//! from (by [`TransactionKey`]) and sends the transmits there (§18.2.2).
//! No client transactions: the bridge only answers, and its one request of
//! its own (BYE) is sent by the driver with the timers of §17.1.2 there.
//!
//! Transport errors: RFC 3261 §17.2.4 lets a server transaction terminate
//! when a send fails and no other address (RFC 3263) works. The bridge has
//! no other address (it answers to the request's source), and one failed
//! UDP send (a full socket buffer, an ICMP error reported on the socket) says
//! little about the next one, so here a transport error is reported to the
//! TU as [`Event::TransportError`] and the transaction carries on: its
//! retransmissions may still arrive, and Timers H/J and the 64×T1 ACK timeout
//! bound its life anyway.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 3261 §17.1.1.3: a branch starting with this was built by an RFC 3261
/// element and is unique per transaction; otherwise the RFC 2543 rules apply.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Errors of the transaction layer. Those about a received request know the
/// response it gets; those about the TU's own calls (a response in the wrong
/// state) have none, since they are bugs on this side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    #[error("request has an empty method: a request line needs a method such as INVITE or BYE")]
    EmptyMethod,
    #[error(
        "top Via branch '{branch}' has no sent-by: an RFC 3261 Via needs host[:port] before its parameters"
    )]
    EmptySentBy { branch: String },
    #[error(
        "{method} request without an RFC 3261 branch lacks '{field}', which the RFC 2543 transaction key needs (RFC 3261 §17.2.3)"
    )]
    MissingKeyField { method: String, field: &'static str },
    #[error("response status {status} is out of range: a SIP status is 100 to 699")]
    InvalidStatus { status: u16 },
    #[error(
        "cannot send {status} in state {state}: a transaction sends no response after its final one (RFC 3261 §17.2)"
    )]
    ResponseAfterFinal { status: u16, state: &'static str },
    #[error("no server transaction {key}: it was never created or has already ended")]
    UnknownTransaction { key: String },
}

impl TransactionError {
    /// The response this error produces for the request it is about, if any.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            // RFC 3261 §8.2: a request without the fields the key needs is malformed.
            Self::EmptyMethod | Self::EmptySentBy { .. } | Self::MissingKeyField { .. } => {
                Some(400)
            }
            Self::InvalidStatus { .. }
            | Self::ResponseAfterFinal { .. }
            | Self::UnknownTransaction { .. } => None,
        }
    }
}

/// The transaction timers' base values (RFC 3261 §17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate: the first retransmission interval.
    pub t1: Duration,
    /// The cap on retransmission intervals of non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// How long a message may stay in the network (Timer I, Timer K).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64×T1: Timer H, Timer J and the 2xx ACK timeout (§17.2.1, §17.2.2, §13.3.1.4).
    pub fn t1_x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// The next retransmission interval after `interval`: doubled, capped at T2.
    fn backoff(&self, interval: Duration) -> Duration {
        interval.saturating_mul(2).min(self.t2)
    }
}

/// Whether the transport the request came on retransmits by itself.
/// RFC 3261 §17: over a reliable transport (TCP, TLS, SCTP) responses are
/// not retransmitted and Timers I and J are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: the transaction layer retransmits.
    Unreliable,
    /// TCP and the like: the stream delivers or fails.
    Reliable,
}

/// A response to send: the status (for logs and tests) and the bytes the
/// message layer formatted, shared so that retransmissions do not copy them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub status: u16,
    pub bytes: Arc<[u8]>,
}

/// What a server transaction tells its TU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The ACK for a non-2xx final response to an INVITE arrived (§17.2.1:
    /// Completed → Confirmed). The ACK itself is absorbed.
    AckReceived,
    /// Timer H fired: no ACK for the non-2xx final within 64×T1 (§17.2.1).
    Timeout,
    /// The driver reported a failed send; the transaction carries on (see the module doc).
    TransportError,
    /// The transaction has ended; a table forgets it.
    Terminated,
}

/// The fields of a request that the transaction key is built from, as the
/// message layer parsed them.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestKeyParts<'a> {
    /// The method as written (methods are case-sensitive, §7.1).
    pub method: &'a str,
    pub request_uri: &'a str,
    /// The top Via's `branch` parameter, if it has one.
    pub via_branch: Option<&'a str>,
    /// The top Via's sent-by (`host[:port]`).
    pub via_sent_by: &'a str,
    /// The whole top Via header value, for the RFC 2543 key.
    pub via: &'a str,
    pub from_tag: Option<&'a str>,
    pub call_id: &'a str,
    /// The CSeq number (its method is `method`).
    pub cseq: u32,
}

/// Identifies a server transaction (RFC 3261 §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// The top Via branch starts with the magic cookie: branch, sent-by and
    /// method identify the transaction.
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// RFC 2543 fallback for branches without the cookie: Request-URI,
    /// From tag, Call-ID, CSeq and the top Via identify the transaction.
    /// The To tag is left out: the ACK to a non-2xx carries the tag this
    /// side put in the response while the INVITE carried none, and the
    /// other fields already tell one request from another.
    Rfc2543 {
        request_uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        via: String,
        method: String,
    },
}

impl TransactionKey {
    /// The key of the server transaction `request` belongs to.
    ///
    /// RFC 3261 §17.2.3: an ACK belongs to the INVITE transaction it
    /// acknowledges (its key carries the method INVITE). A CANCEL is a
    /// transaction of its own (method CANCEL); the INVITE it cancels is
    /// [`cancel_target`](Self::cancel_target).
    pub fn for_request(request: &RequestKeyParts<'_>) -> Result<TransactionKey, TransactionError> {
        let method = request.method.trim();
        if method.is_empty() {
            return Err(TransactionError::EmptyMethod);
        }
        let method = if method == "ACK" { "INVITE" } else { method };
        match request.via_branch.map(str::trim) {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => {
                let sent_by = request.via_sent_by.trim();
                if sent_by.is_empty() {
                    return Err(TransactionError::EmptySentBy {
                        branch: branch.to_owned(),
                    });
                }
                Ok(TransactionKey::Rfc3261 {
                    branch: branch.to_owned(),
                    // Host names compare case-insensitively (§19.1.4).
                    sent_by: sent_by.to_ascii_lowercase(),
                    method: method.to_owned(),
                })
            }
            _ => {
                let missing = |field| TransactionError::MissingKeyField {
                    method: request.method.trim().to_owned(),
                    field,
                };
                let call_id = request.call_id.trim();
                let request_uri = request.request_uri.trim();
                let via = request.via.trim();
                if call_id.is_empty() {
                    return Err(missing("Call-ID"));
                }
                if request_uri.is_empty() {
                    return Err(missing("Request-URI"));
                }
                if via.is_empty() {
                    return Err(missing("Via"));
                }
                Ok(TransactionKey::Rfc2543 {
                    request_uri: request_uri.to_owned(),
                    from_tag: request.from_tag.unwrap_or("").trim().to_owned(),
                    call_id: call_id.to_owned(),
                    cseq: request.cseq,
                    via: via.to_owned(),
                    method: method.to_owned(),
                })
            }
        }
    }

    /// The method of the request that created the transaction.
    pub fn method(&self) -> &str {
        match self {
            TransactionKey::Rfc3261 { method, .. } | TransactionKey::Rfc2543 { method, .. } => {
                method
            }
        }
    }

    /// For a CANCEL's key, the key of the INVITE transaction it cancels:
    /// RFC 3261 §9.2, the same matching as §17.2.3 except for the method.
    /// `None` for any other method.
    pub fn cancel_target(&self) -> Option<TransactionKey> {
        if self.method() != "CANCEL" {
            return None;
        }
        let mut target = self.clone();
        match &mut target {
            TransactionKey::Rfc3261 { method, .. } | TransactionKey::Rfc2543 { method, .. } => {
                *method = "INVITE".to_owned();
            }
        }
        Some(target)
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransactionKey::Rfc3261 {
                branch,
                sent_by,
                method,
            } => write!(f, "{method} branch={branch} sent-by={sent_by}"),
            TransactionKey::Rfc2543 {
                call_id,
                cseq,
                method,
                ..
            } => write!(f, "{method} call-id={call_id} cseq={cseq} (RFC 2543)"),
        }
    }
}

fn check_status(status: u16) -> Result<(), TransactionError> {
    if (100..=699).contains(&status) {
        Ok(())
    } else {
        Err(TransactionError::InvalidStatus { status })
    }
}

/// States of the INVITE server transaction (RFC 3261 §17.2.1, Figure 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    Proceeding,
    Completed,
    Confirmed,
    Terminated,
}

impl InviteState {
    fn name(self) -> &'static str {
        match self {
            InviteState::Proceeding => "proceeding",
            InviteState::Completed => "completed",
            InviteState::Confirmed => "confirmed",
            InviteState::Terminated => "terminated",
        }
    }
}

/// A retransmission timer: the deadline and the interval that led to it.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    at: Instant,
    interval: Duration,
}

/// The INVITE server transaction (RFC 3261 §17.2.1).
///
/// The TU sends the 100 Trying itself (through
/// [`send_response`](Self::send_response)), since the bytes come from the
/// message layer. A 2xx ends the transaction at once: retransmitting it is
/// the UAS core's job ([`AnswerRetransmitter`]).
#[derive(Debug)]
pub struct InviteServerTransaction {
    config: TimerConfig,
    transport: Transport,
    state: InviteState,
    latest: Option<Transmit>,
    timer_g: Option<Backoff>,
    timer_h: Option<Instant>,
    timer_i: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl InviteServerTransaction {
    /// A transaction for an INVITE received at `now` (§17.2.1: it starts in Proceeding).
    pub fn new(_now: Instant, config: TimerConfig, transport: Transport) -> Self {
        InviteServerTransaction {
            config,
            transport,
            state: InviteState::Proceeding,
            latest: None,
            timer_g: None,
            timer_h: None,
            timer_i: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> InviteState {
        self.state
    }

    /// The INVITE arrived again: RFC 3261 §17.2.1, in Proceeding the latest
    /// provisional response is sent again, in Completed the final one; in
    /// Confirmed the retransmission is absorbed without a response.
    pub fn handle_request_retransmission(&mut self, _now: Instant) {
        if matches!(self.state, InviteState::Proceeding | InviteState::Completed)
            && let Some(latest) = &self.latest
        {
            self.transmits.push_back(latest.clone());
        }
    }

    /// The TU's response. A 1xx keeps the transaction in Proceeding; a 2xx
    /// terminates it (§17.2.1); a 300–699 moves it to Completed, with Timer G
    /// retransmitting (unreliable transports only) and Timer H bounding the
    /// wait for the ACK.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        bytes: impl Into<Arc<[u8]>>,
    ) -> Result<(), TransactionError> {
        check_status(status)?;
        if self.state != InviteState::Proceeding {
            return Err(TransactionError::ResponseAfterFinal {
                status,
                state: self.state.name(),
            });
        }
        let transmit = Transmit {
            status,
            bytes: bytes.into(),
        };
        self.transmits.push_back(transmit.clone());
        match status {
            100..=199 => self.latest = Some(transmit),
            200..=299 => {
                self.latest = Some(transmit);
                self.terminate();
            }
            _ => {
                self.latest = Some(transmit);
                self.state = InviteState::Completed;
                if self.transport == Transport::Unreliable {
                    self.timer_g = Some(Backoff {
                        at: now + self.config.t1,
                        interval: self.config.t1,
                    });
                }
                self.timer_h = Some(now + self.config.t1_x64());
            }
        }
        Ok(())
    }

    /// An ACK matched this transaction. In Completed it confirms the
    /// non-2xx final (§17.2.1): retransmissions stop and Timer I (T4, zero
    /// on reliable transports) absorbs further ACKs. Returns whether the ACK
    /// was absorbed here; otherwise (Proceeding, Terminated) it is the TU's.
    pub fn handle_ack(&mut self, now: Instant) -> bool {
        match self.state {
            InviteState::Completed => {
                self.state = InviteState::Confirmed;
                self.timer_g = None;
                self.timer_h = None;
                self.events.push_back(Event::AckReceived);
                match self.transport {
                    Transport::Unreliable => self.timer_i = Some(now + self.config.t4),
                    Transport::Reliable => self.terminate(),
                }
                true
            }
            InviteState::Confirmed => true,
            InviteState::Proceeding | InviteState::Terminated => false,
        }
    }

    /// The driver failed to send one of this transaction's responses.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != InviteState::Terminated {
            self.events.push_back(Event::TransportError);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Timer H first: when it is due, retransmitting once more is pointless.
        if self.timer_h.is_some_and(|at| at <= now) {
            self.events.push_back(Event::Timeout);
            self.terminate();
            return;
        }
        if self.timer_i.is_some_and(|at| at <= now) {
            self.terminate();
            return;
        }
        if let Some(g) = self.timer_g
            && g.at <= now
        {
            // RFC 3261 §17.2.1: Timer G doubles up to T2.
            if let Some(latest) = &self.latest {
                self.transmits.push_back(latest.clone());
            }
            let interval = self.config.backoff(g.interval);
            self.timer_g = Some(Backoff {
                at: now + interval,
                interval,
            });
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timer_g.map(|g| g.at), self.timer_h, self.timer_i]
            .into_iter()
            .flatten()
            .min()
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn terminate(&mut self) {
        self.state = InviteState::Terminated;
        self.timer_g = None;
        self.timer_h = None;
        self.timer_i = None;
        self.events.push_back(Event::Terminated);
    }
}

/// States of the non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl NonInviteState {
    fn name(self) -> &'static str {
        match self {
            NonInviteState::Trying => "trying",
            NonInviteState::Proceeding => "proceeding",
            NonInviteState::Completed => "completed",
            NonInviteState::Terminated => "terminated",
        }
    }
}

/// The non-INVITE server transaction (RFC 3261 §17.2.2): INFO, BYE,
/// OPTIONS, CANCEL and the rest. It does not retransmit on its own; it
/// answers each retransmitted request with the latest response, and
/// Timer J keeps it alive long enough to do so after the final one.
#[derive(Debug)]
pub struct NonInviteServerTransaction {
    config: TimerConfig,
    transport: Transport,
    state: NonInviteState,
    latest: Option<Transmit>,
    timer_j: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl NonInviteServerTransaction {
    /// A transaction for a request received at `now` (§17.2.2: it starts in Trying).
    pub fn new(_now: Instant, config: TimerConfig, transport: Transport) -> Self {
        NonInviteServerTransaction {
            config,
            transport,
            state: NonInviteState::Trying,
            latest: None,
            timer_j: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> NonInviteState {
        self.state
    }

    /// The request arrived again: absorbed in Trying (§17.2.2: nothing to
    /// send yet), answered with the latest response in Proceeding and Completed.
    pub fn handle_request_retransmission(&mut self, _now: Instant) {
        if matches!(
            self.state,
            NonInviteState::Proceeding | NonInviteState::Completed
        ) && let Some(latest) = &self.latest
        {
            self.transmits.push_back(latest.clone());
        }
    }

    /// The TU's response: a 1xx moves to (or stays in) Proceeding; a final
    /// moves to Completed with Timer J (64×T1, zero on reliable transports).
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        bytes: impl Into<Arc<[u8]>>,
    ) -> Result<(), TransactionError> {
        check_status(status)?;
        if matches!(
            self.state,
            NonInviteState::Completed | NonInviteState::Terminated
        ) {
            return Err(TransactionError::ResponseAfterFinal {
                status,
                state: self.state.name(),
            });
        }
        let transmit = Transmit {
            status,
            bytes: bytes.into(),
        };
        self.transmits.push_back(transmit.clone());
        self.latest = Some(transmit);
        if status < 200 {
            self.state = NonInviteState::Proceeding;
        } else {
            self.state = NonInviteState::Completed;
            match self.transport {
                Transport::Unreliable => self.timer_j = Some(now + self.config.t1_x64()),
                Transport::Reliable => self.terminate(),
            }
        }
        Ok(())
    }

    /// The driver failed to send one of this transaction's responses.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state != NonInviteState::Terminated {
            self.events.push_back(Event::TransportError);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer_j.is_some_and(|at| at <= now) {
            self.terminate();
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn terminate(&mut self) {
        self.state = NonInviteState::Terminated;
        self.timer_j = None;
        self.events.push_back(Event::Terminated);
    }
}

/// What the [`AnswerRetransmitter`] tells the UAS core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerEvent {
    /// The ACK arrived: retransmissions have stopped.
    AckReceived,
    /// No ACK within 64×T1 of the 2xx (§13.3.1.4): the session should end with a BYE.
    AckTimeout,
}

/// The UAS core's retransmission of a 2xx to an INVITE (RFC 3261 §13.3.1.4).
///
/// The INVITE server transaction ends when the 2xx goes out, and an ACK to a
/// 2xx is a transaction of its own (matched to the dialog by Call-ID, tags
/// and CSeq), so this lives beside the dialog. Created once the 2xx has been
/// sent: it sends it again at T1, 2T1, 4T1… capped at T2 until
/// [`handle_ack`](Self::handle_ack), and reports
/// [`AnswerEvent::AckTimeout`] at 64×T1 without one. On a reliable
/// transport nothing is retransmitted, but the ACK timeout still runs.
#[derive(Debug)]
pub struct AnswerRetransmitter {
    config: TimerConfig,
    response: Transmit,
    retransmit: Option<Backoff>,
    give_up: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<AnswerEvent>,
}

impl AnswerRetransmitter {
    /// `now` is when the 2xx (`status`, `bytes`) was first sent.
    pub fn new(
        now: Instant,
        config: TimerConfig,
        transport: Transport,
        status: u16,
        bytes: impl Into<Arc<[u8]>>,
    ) -> Self {
        let retransmit = (transport == Transport::Unreliable).then_some(Backoff {
            at: now + config.t1,
            interval: config.t1,
        });
        AnswerRetransmitter {
            config,
            response: Transmit {
                status,
                bytes: bytes.into(),
            },
            retransmit,
            give_up: Some(now + config.t1_x64()),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether the retransmitter has finished (ACK received or given up).
    pub fn is_done(&self) -> bool {
        self.give_up.is_none()
    }

    /// The ACK for the 2xx arrived. Only the first one is reported.
    pub fn handle_ack(&mut self, _now: Instant) {
        if self.give_up.take().is_some() {
            self.retransmit = None;
            self.events.push_back(AnswerEvent::AckReceived);
        }
    }

    /// The INVITE arrived again after the 2xx (the caller has not seen it):
    /// send the 2xx again at once, while waiting for the ACK. The backoff
    /// schedule is unchanged.
    pub fn handle_request_retransmission(&mut self, _now: Instant) {
        if !self.is_done() {
            self.transmits.push_back(self.response.clone());
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.give_up.is_some_and(|at| at <= now) {
            self.give_up = None;
            self.retransmit = None;
            self.events.push_back(AnswerEvent::AckTimeout);
            return;
        }
        if let Some(r) = self.retransmit
            && r.at <= now
        {
            self.transmits.push_back(self.response.clone());
            let interval = self.config.backoff(r.interval);
            self.retransmit = Some(Backoff {
                at: now + interval,
                interval,
            });
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.at), self.give_up]
            .into_iter()
            .flatten()
            .min()
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<AnswerEvent> {
        self.events.pop_front()
    }
}

/// Where [`ServerTransactions::handle_request`] put a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A new request: a server transaction was created under this key and
    /// the TU must answer it through [`ServerTransactions::send_response`].
    New(TransactionKey),
    /// A retransmission (or the ACK of a non-2xx final), absorbed by its
    /// transaction; any response to send again is queued as a transmit.
    Absorbed(TransactionKey),
    /// An ACK no transaction absorbs: the ACK of a 2xx, which the TU matches
    /// to its dialog (§13.3.1.4, §17.2.3). No transaction was created.
    Ack,
    /// A new CANCEL: a transaction was created under `key` (answer it 200,
    /// or 481 when `target` is [`CancelTarget::NotFound`]).
    Cancel {
        key: TransactionKey,
        target: CancelTarget,
    },
}

/// The INVITE a CANCEL is aimed at (RFC 3261 §9.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelTarget {
    /// Not answered yet: the TU answers the CANCEL 200 and the INVITE 487.
    Proceeding(TransactionKey),
    /// Already answered with a final response: the CANCEL gets 200 and has no effect.
    Answered(TransactionKey),
    /// No such INVITE transaction: the CANCEL gets 481.
    NotFound,
}

#[derive(Debug)]
enum Entry {
    Invite(InviteServerTransaction),
    NonInvite(NonInviteServerTransaction),
    /// An INVITE transaction that sent a 2xx. RFC 3261 ends it there, but
    /// then a retransmitted INVITE would look new and start a second call;
    /// RFC 6026 §7.1 keeps it (the Accepted state) for 64×T1 so that the
    /// retransmission is recognised. Here it is also answered with the 2xx
    /// again, so a caller that lost the 2xx gets it without waiting.
    Accepted {
        answer: Transmit,
        until: Instant,
    },
}

impl Entry {
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Entry::Invite(t) => t.poll_timeout(),
            Entry::NonInvite(t) => t.poll_timeout(),
            Entry::Accepted { until, .. } => Some(*until),
        }
    }

    fn is_terminated(&self) -> bool {
        match self {
            Entry::Invite(t) => t.state() == InviteState::Terminated,
            Entry::NonInvite(t) => t.state() == NonInviteState::Terminated,
            Entry::Accepted { .. } => false,
        }
    }
}

/// What a transaction still does once its TU has gone: absorb its
/// request's retransmissions, answering each with `response` (none for an
/// INVITE in Confirmed, §17.2.1), until `until`. See [`super::linger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absorber {
    key: TransactionKey,
    response: Option<Arc<[u8]>>,
    until: Instant,
}

impl Absorber {
    pub fn key(&self) -> &TransactionKey {
        &self.key
    }

    /// The bytes a retransmission gets; `None`: absorbed silently.
    pub fn response(&self) -> Option<&Arc<[u8]>> {
        self.response.as_ref()
    }

    /// When the transaction's timer (J, I, or the end of Accepted) ends it.
    pub fn until(&self) -> Instant {
        self.until
    }
}

/// The server transactions of one SIP endpoint, by key.
///
/// Every request goes through [`handle_request`](Self::handle_request)
/// first; only [`Route::New`], [`Route::Cancel`] and [`Route::Ack`] need the
/// TU. Outputs of all transactions come out of one queue, tagged with the
/// key. `poll_timeout` scans all transactions (a bridge holds a few per call).
#[derive(Debug)]
pub struct ServerTransactions {
    config: TimerConfig,
    entries: HashMap<TransactionKey, Entry>,
    transmits: VecDeque<(TransactionKey, Transmit)>,
    events: VecDeque<(TransactionKey, Event)>,
}

impl ServerTransactions {
    pub fn new(config: TimerConfig) -> Self {
        ServerTransactions {
            config,
            entries: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The number of live transactions (including accepted INVITEs).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &TransactionKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Routes a request received at `now` over `transport`.
    pub fn handle_request(
        &mut self,
        now: Instant,
        request: &RequestKeyParts<'_>,
        transport: Transport,
    ) -> Result<Route, TransactionError> {
        let key = TransactionKey::for_request(request)?;
        let method = request.method.trim();
        if method == "ACK" {
            // RFC 3261 §17.2.3: the ACK of a non-2xx final matches the
            // INVITE transaction; the ACK of a 2xx has a branch of its own
            // (§13.2.2.4) and is the TU's.
            let absorbed = match self.entries.get_mut(&key) {
                Some(Entry::Invite(t)) => t.handle_ack(now),
                _ => false,
            };
            self.drain(&key);
            return Ok(if absorbed {
                Route::Absorbed(key)
            } else {
                Route::Ack
            });
        }
        if let Some(entry) = self.entries.get_mut(&key) {
            match entry {
                Entry::Invite(t) => t.handle_request_retransmission(now),
                Entry::NonInvite(t) => t.handle_request_retransmission(now),
                Entry::Accepted { answer, .. } => {
                    self.transmits.push_back((key.clone(), answer.clone()));
                }
            }
            self.drain(&key);
            return Ok(Route::Absorbed(key));
        }
        if method == "INVITE" {
            let t = InviteServerTransaction::new(now, self.config, transport);
            self.entries.insert(key.clone(), Entry::Invite(t));
            return Ok(Route::New(key));
        }
        let t = NonInviteServerTransaction::new(now, self.config, transport);
        self.entries.insert(key.clone(), Entry::NonInvite(t));
        if method != "CANCEL" {
            return Ok(Route::New(key));
        }
        let target = match key.cancel_target() {
            Some(invite) => match self.entries.get(&invite) {
                Some(Entry::Invite(t)) if t.state() == InviteState::Proceeding => {
                    CancelTarget::Proceeding(invite)
                }
                Some(Entry::Invite(_) | Entry::Accepted { .. }) => CancelTarget::Answered(invite),
                Some(Entry::NonInvite(_)) | None => CancelTarget::NotFound,
            },
            None => CancelTarget::NotFound,
        };
        Ok(Route::Cancel { key, target })
    }

    /// Sends the TU's response on the transaction `key`. A 2xx to an INVITE
    /// turns it into an accepted entry (see [`Entry`]); the caller then
    /// starts an [`AnswerRetransmitter`] for the 2xx.
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        status: u16,
        bytes: impl Into<Arc<[u8]>>,
    ) -> Result<(), TransactionError> {
        let bytes = bytes.into();
        let Some(entry) = self.entries.get_mut(key) else {
            return Err(TransactionError::UnknownTransaction {
                key: key.to_string(),
            });
        };
        match entry {
            Entry::Invite(t) => {
                t.send_response(now, status, bytes.clone())?;
                if (200..300).contains(&status) {
                    // The key lives on as accepted, so the transaction's own
                    // `Terminated` is not reported: the table reports it when
                    // it forgets the key.
                    while let Some(x) = t.poll_transmit() {
                        self.transmits.push_back((key.clone(), x));
                    }
                    while let Some(e) = t.poll_event() {
                        if e != Event::Terminated {
                            self.events.push_back((key.clone(), e));
                        }
                    }
                    self.entries.insert(
                        key.clone(),
                        Entry::Accepted {
                            answer: Transmit { status, bytes },
                            until: now + self.config.t1_x64(),
                        },
                    );
                    return Ok(());
                }
            }
            Entry::NonInvite(t) => t.send_response(now, status, bytes)?,
            Entry::Accepted { answer, .. } => {
                check_status(status)?;
                // RFC 6026 §7.1: in Accepted, only 2xx retransmissions pass.
                if !(200..300).contains(&status) {
                    return Err(TransactionError::ResponseAfterFinal {
                        status,
                        state: "accepted",
                    });
                }
                *answer = Transmit { status, bytes };
                self.transmits.push_back((key.clone(), answer.clone()));
                return Ok(());
            }
        }
        self.drain(key);
        Ok(())
    }

    /// The driver failed to send a response of transaction `key`.
    pub fn handle_transport_error(&mut self, now: Instant, key: &TransactionKey) {
        match self.entries.get_mut(key) {
            Some(Entry::Invite(t)) => t.handle_transport_error(now),
            Some(Entry::NonInvite(t)) => t.handle_transport_error(now),
            Some(Entry::Accepted { .. }) => {
                self.events.push_back((key.clone(), Event::TransportError));
            }
            None => {}
        }
        self.drain(key);
    }

    /// Runs every timer due at `now` and forgets ended transactions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransactionKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.poll_timeout().is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            match self.entries.get_mut(&key) {
                Some(Entry::Invite(t)) => t.handle_timeout(now),
                Some(Entry::NonInvite(t)) => t.handle_timeout(now),
                Some(Entry::Accepted { .. }) => {
                    self.entries.remove(&key);
                    self.events.push_back((key.clone(), Event::Terminated));
                }
                None => {}
            }
            self.drain(&key);
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.values().filter_map(Entry::poll_timeout).min()
    }

    /// What is left of the transactions when all of it is absorbing
    /// retransmissions: non-INVITE transactions in Completed (Timer J),
    /// INVITEs in Confirmed (Timer I) or accepted (RFC 6026 §7.1). `None`
    /// while one still has work of its own: a request the TU has not
    /// answered, or a non-2xx final response retransmitted until its ACK
    /// (Timer G). Queued outputs must have been polled first.
    pub fn absorbers(&self) -> Option<Vec<Absorber>> {
        if !self.transmits.is_empty() {
            return None;
        }
        let mut absorbers = Vec::with_capacity(self.entries.len());
        for (key, entry) in &self.entries {
            let (response, until) = match entry {
                Entry::Invite(t) => match (t.state, t.timer_i) {
                    (InviteState::Confirmed, Some(until)) => (None, until),
                    _ => return None,
                },
                Entry::NonInvite(t) => match (t.state, t.timer_j, &t.latest) {
                    (NonInviteState::Completed, Some(until), Some(latest)) => {
                        (Some(latest.bytes.clone()), until)
                    }
                    _ => return None,
                },
                Entry::Accepted { answer, until } => (Some(answer.bytes.clone()), *until),
            };
            absorbers.push(Absorber {
                key: key.clone(),
                response,
                until,
            });
        }
        Some(absorbers)
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(TransactionKey, Transmit)> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<(TransactionKey, Event)> {
        self.events.pop_front()
    }

    /// Moves a transaction's outputs to the table's queues, and forgets it
    /// once it has terminated (its `Terminated` event is queued first).
    fn drain(&mut self, key: &TransactionKey) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match entry {
            Entry::Invite(t) => {
                while let Some(x) = t.poll_transmit() {
                    self.transmits.push_back((key.clone(), x));
                }
                while let Some(e) = t.poll_event() {
                    self.events.push_back((key.clone(), e));
                }
            }
            Entry::NonInvite(t) => {
                while let Some(x) = t.poll_transmit() {
                    self.transmits.push_back((key.clone(), x));
                }
                while let Some(e) = t.poll_event() {
                    self.events.push_back((key.clone(), e));
                }
            }
            Entry::Accepted { .. } => {}
        }
        if entry.is_terminated() {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(f64) -> Duration = Duration::from_secs_f64;

    /// A virtual-time driver over any of the machines here: jumps from
    /// deadline to deadline up to `end`, recording when each transmit left.
    trait Machine {
        fn deadline(&self) -> Option<Instant>;
        fn fire(&mut self, now: Instant);
        fn transmit(&mut self) -> Option<Transmit>;
    }

    impl Machine for InviteServerTransaction {
        fn deadline(&self) -> Option<Instant> {
            self.poll_timeout()
        }
        fn fire(&mut self, now: Instant) {
            self.handle_timeout(now)
        }
        fn transmit(&mut self) -> Option<Transmit> {
            self.poll_transmit()
        }
    }

    impl Machine for NonInviteServerTransaction {
        fn deadline(&self) -> Option<Instant> {
            self.poll_timeout()
        }
        fn fire(&mut self, now: Instant) {
            self.handle_timeout(now)
        }
        fn transmit(&mut self) -> Option<Transmit> {
            self.poll_transmit()
        }
    }

    impl Machine for AnswerRetransmitter {
        fn deadline(&self) -> Option<Instant> {
            self.poll_timeout()
        }
        fn fire(&mut self, now: Instant) {
            self.handle_timeout(now)
        }
        fn transmit(&mut self) -> Option<Transmit> {
            self.poll_transmit()
        }
    }

    /// Runs timers up to and including `end`; returns the offsets from `t0`
    /// (in seconds) at which transmits came out.
    fn run(m: &mut impl Machine, t0: Instant, end: Instant) -> Vec<f64> {
        let mut sent = Vec::new();
        while let Some(at) = m.deadline() {
            if at > end {
                break;
            }
            m.fire(at);
            while m.transmit().is_some() {
                sent.push((at - t0).as_secs_f64());
            }
        }
        sent
    }

    fn statuses(m: &mut impl Machine) -> Vec<u16> {
        std::iter::from_fn(|| m.transmit())
            .map(|t| t.status)
            .collect()
    }

    fn invite(t0: Instant, transport: Transport) -> InviteServerTransaction {
        InviteServerTransaction::new(t0, TimerConfig::default(), transport)
    }

    fn non_invite(t0: Instant, transport: Transport) -> NonInviteServerTransaction {
        NonInviteServerTransaction::new(t0, TimerConfig::default(), transport)
    }

    fn events(tx: &mut InviteServerTransaction) -> Vec<Event> {
        std::iter::from_fn(|| tx.poll_event()).collect()
    }

    /// The 64×T1 schedule with T1 = 500 ms, T2 = 4 s: 0.5, 1.5, 3.5, 7.5,
    /// then every 4 s up to 31.5.
    const BACKOFF_TO_32S: [f64; 10] = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5];

    #[test]
    fn invite_retransmission_while_proceeding_gets_latest_provisional() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Unreliable);
        tx.handle_request_retransmission(t0);
        assert_eq!(statuses(&mut tx), Vec::<u16>::new(), "nothing sent yet");
        tx.send_response(t0, 100, b"100".to_vec()).unwrap();
        assert_eq!(statuses(&mut tx), [100]);
        tx.handle_request_retransmission(t0 + SECS(0.2));
        assert_eq!(statuses(&mut tx), [100]);
        tx.send_response(t0 + SECS(0.3), 180, b"180".to_vec())
            .unwrap();
        assert_eq!(statuses(&mut tx), [180]);
        tx.handle_request_retransmission(t0 + SECS(1.0));
        let again = tx.poll_transmit().unwrap();
        assert_eq!((again.status, &*again.bytes), (180, &b"180"[..]));
        assert_eq!(tx.state(), InviteState::Proceeding);
        assert_eq!(tx.poll_timeout(), None, "no timers while proceeding");
    }

    #[test]
    fn invite_retransmission_after_final_gets_final() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Unreliable);
        tx.send_response(t0, 180, b"180".to_vec()).unwrap();
        tx.send_response(t0, 486, b"486".to_vec()).unwrap();
        assert_eq!(statuses(&mut tx), [180, 486]);
        tx.handle_request_retransmission(t0 + SECS(0.1));
        assert_eq!(statuses(&mut tx), [486]);
        assert!(tx.handle_ack(t0 + SECS(0.2)));
        tx.handle_request_retransmission(t0 + SECS(0.3));
        assert_eq!(
            statuses(&mut tx),
            Vec::<u16>::new(),
            "absorbed in confirmed"
        );
    }

    #[test]
    fn non_2xx_final_is_retransmitted_with_backoff_until_ack() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Unreliable);
        tx.send_response(t0, 404, b"404".to_vec()).unwrap();
        assert_eq!(statuses(&mut tx), [404]);
        let sent = run(&mut tx, t0, t0 + SECS(20.0));
        assert_eq!(sent, BACKOFF_TO_32S[..7]);
        assert!(tx.handle_ack(t0 + SECS(20.0)));
        assert_eq!(tx.state(), InviteState::Confirmed);
        // Timer I (T4) is all that is left: no more retransmissions.
        assert_eq!(tx.poll_timeout(), Some(t0 + SECS(25.0)));
        assert!(run(&mut tx, t0, t0 + SECS(40.0)).is_empty());
        assert_eq!(tx.state(), InviteState::Terminated);
        assert_eq!(
            events(&mut tx),
            [Event::AckReceived, Event::Terminated],
            "no timeout once acknowledged"
        );
    }

    #[test]
    fn timer_h_ends_the_transaction_at_64_t1_without_ack() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Unreliable);
        tx.send_response(t0, 487, b"487".to_vec()).unwrap();
        let _ = statuses(&mut tx);
        let sent = run(&mut tx, t0, t0 + SECS(31.999));
        assert_eq!(sent, BACKOFF_TO_32S);
        assert_eq!(tx.state(), InviteState::Completed);
        assert_eq!(tx.poll_timeout(), Some(t0 + SECS(32.0)));
        tx.handle_timeout(t0 + SECS(32.0));
        assert_eq!(statuses(&mut tx), Vec::<u16>::new());
        assert_eq!(events(&mut tx), [Event::Timeout, Event::Terminated]);
        assert_eq!(tx.poll_timeout(), None);
        assert!(!tx.handle_ack(t0 + SECS(33.0)), "too late for the ACK");
    }

    #[test]
    fn invite_2xx_terminates_the_transaction() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Unreliable);
        tx.send_response(t0, 200, b"200".to_vec()).unwrap();
        assert_eq!(statuses(&mut tx), [200]);
        assert_eq!(tx.state(), InviteState::Terminated);
        assert_eq!(events(&mut tx), [Event::Terminated]);
        assert_eq!(tx.poll_timeout(), None, "2xx retransmission is the core's");
        assert_eq!(
            tx.send_response(t0, 200, b"200".to_vec()),
            Err(TransactionError::ResponseAfterFinal {
                status: 200,
                state: "terminated"
            })
        );
    }

    #[test]
    fn reliable_invite_final_is_not_retransmitted_and_ack_ends_it_at_once() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Reliable);
        tx.send_response(t0, 486, b"486".to_vec()).unwrap();
        assert_eq!(statuses(&mut tx), [486]);
        // Only Timer H is set.
        assert_eq!(tx.poll_timeout(), Some(t0 + SECS(32.0)));
        assert!(tx.handle_ack(t0 + SECS(1.0)));
        assert_eq!(tx.state(), InviteState::Terminated, "Timer I is zero");
        assert_eq!(events(&mut tx), [Event::AckReceived, Event::Terminated]);
    }

    #[test]
    fn reliable_invite_without_ack_times_out_at_64_t1_without_retransmitting() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Reliable);
        tx.send_response(t0, 603, b"603".to_vec()).unwrap();
        let _ = statuses(&mut tx);
        assert!(run(&mut tx, t0, t0 + SECS(60.0)).is_empty());
        assert_eq!(events(&mut tx), [Event::Timeout, Event::Terminated]);
    }

    #[test]
    fn transport_error_does_not_end_the_transaction() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Unreliable);
        tx.send_response(t0, 486, b"486".to_vec()).unwrap();
        let _ = statuses(&mut tx);
        tx.handle_transport_error(t0 + SECS(0.1));
        assert_eq!(events(&mut tx), [Event::TransportError]);
        assert_eq!(tx.state(), InviteState::Completed);
        assert_eq!(run(&mut tx, t0, t0 + SECS(2.0)), [0.5, 1.5]);
        assert!(tx.handle_ack(t0 + SECS(2.0)));
    }

    #[test]
    fn responses_with_bad_status_are_refused() {
        let t0 = Instant::now();
        let mut tx = invite(t0, Transport::Unreliable);
        let mut ni = non_invite(t0, Transport::Unreliable);
        for status in [0, 99, 700, u16::MAX] {
            let err = tx.send_response(t0, status, Vec::new()).unwrap_err();
            assert_eq!(err, TransactionError::InvalidStatus { status });
            assert!(ni.send_response(t0, status, Vec::new()).is_err());
        }
        assert_eq!(tx.state(), InviteState::Proceeding);
        assert_eq!(ni.state(), NonInviteState::Trying);
        assert!(tx.poll_transmit().is_none() && ni.poll_transmit().is_none());
    }

    #[test]
    fn non_invite_absorbs_retransmissions_and_resends_the_latest_response() {
        let t0 = Instant::now();
        let mut tx = non_invite(t0, Transport::Unreliable);
        tx.handle_request_retransmission(t0 + SECS(0.5));
        assert_eq!(statuses(&mut tx), Vec::<u16>::new(), "trying: absorbed");
        tx.send_response(t0 + SECS(0.6), 100, b"100".to_vec())
            .unwrap();
        assert_eq!(tx.state(), NonInviteState::Proceeding);
        tx.handle_request_retransmission(t0 + SECS(1.0));
        assert_eq!(statuses(&mut tx), [100, 100]);
        tx.send_response(t0 + SECS(2.0), 200, b"200".to_vec())
            .unwrap();
        tx.handle_request_retransmission(t0 + SECS(3.0));
        tx.handle_request_retransmission(t0 + SECS(4.0));
        assert_eq!(statuses(&mut tx), [200, 200, 200]);
        assert!(tx.send_response(t0 + SECS(5.0), 500, Vec::new()).is_err());
    }

    #[test]
    fn non_invite_timer_j_ends_it_64_t1_after_the_final() {
        let t0 = Instant::now();
        let mut tx = non_invite(t0, Transport::Unreliable);
        tx.send_response(t0 + SECS(1.0), 200, b"200".to_vec())
            .unwrap();
        let _ = statuses(&mut tx);
        assert_eq!(tx.poll_timeout(), Some(t0 + SECS(33.0)));
        assert!(
            run(&mut tx, t0, t0 + SECS(32.9)).is_empty(),
            "no retransmissions"
        );
        assert_eq!(tx.state(), NonInviteState::Completed);
        tx.handle_timeout(t0 + SECS(33.0));
        assert_eq!(tx.state(), NonInviteState::Terminated);
        assert_eq!(tx.poll_event(), Some(Event::Terminated));
        tx.handle_request_retransmission(t0 + SECS(34.0));
        assert!(tx.poll_transmit().is_none());
    }

    #[test]
    fn reliable_non_invite_ends_with_its_final() {
        let t0 = Instant::now();
        let mut tx = non_invite(t0, Transport::Reliable);
        tx.send_response(t0, 200, b"200".to_vec()).unwrap();
        assert_eq!(statuses(&mut tx), [200]);
        assert_eq!(tx.state(), NonInviteState::Terminated, "Timer J is zero");
        assert_eq!(tx.poll_timeout(), None);
    }

    fn answer(t0: Instant, transport: Transport) -> AnswerRetransmitter {
        AnswerRetransmitter::new(t0, TimerConfig::default(), transport, 200, b"200".to_vec())
    }

    #[test]
    fn answer_is_retransmitted_until_ack_then_stops() {
        let t0 = Instant::now();
        let mut r = answer(t0, Transport::Unreliable);
        assert!(
            r.poll_transmit().is_none(),
            "the first 200 went out through the transaction"
        );
        assert_eq!(run(&mut r, t0, t0 + SECS(9.0)), [0.5, 1.5, 3.5, 7.5]);
        r.handle_ack(t0 + SECS(9.0));
        assert_eq!(r.poll_event(), Some(AnswerEvent::AckReceived));
        assert!(r.is_done());
        assert_eq!(r.poll_timeout(), None);
        assert!(run(&mut r, t0, t0 + SECS(100.0)).is_empty());
        r.handle_ack(t0 + SECS(10.0));
        assert_eq!(r.poll_event(), None, "a second ACK is not reported");
    }

    #[test]
    fn answer_without_ack_times_out_at_exactly_64_t1() {
        let t0 = Instant::now();
        let mut r = answer(t0, Transport::Unreliable);
        assert_eq!(run(&mut r, t0, t0 + SECS(31.999)), BACKOFF_TO_32S);
        assert_eq!(r.poll_event(), None);
        r.handle_timeout(t0 + SECS(32.0) - Duration::from_nanos(1));
        assert_eq!(r.poll_event(), None, "not a nanosecond early");
        assert_eq!(r.poll_timeout(), Some(t0 + SECS(32.0)));
        r.handle_timeout(t0 + SECS(32.0));
        assert_eq!(r.poll_event(), Some(AnswerEvent::AckTimeout));
        assert!(r.poll_transmit().is_none());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn answer_on_reliable_transport_is_not_retransmitted_but_times_out() {
        let t0 = Instant::now();
        let mut r = answer(t0, Transport::Reliable);
        assert_eq!(r.poll_timeout(), Some(t0 + SECS(32.0)));
        assert!(run(&mut r, t0, t0 + SECS(40.0)).is_empty());
        assert_eq!(r.poll_event(), Some(AnswerEvent::AckTimeout));
    }

    #[test]
    fn answer_is_resent_at_once_for_a_retransmitted_invite() {
        let t0 = Instant::now();
        let mut r = answer(t0, Transport::Unreliable);
        r.handle_request_retransmission(t0 + SECS(0.2));
        assert_eq!(r.poll_transmit().map(|t| t.status), Some(200));
        assert_eq!(r.poll_timeout(), Some(t0 + SECS(0.5)), "schedule unchanged");
    }

    #[test]
    fn answer_with_custom_timers_caps_at_t2() {
        let t0 = Instant::now();
        let config = TimerConfig {
            t1: Duration::from_millis(100),
            t2: Duration::from_millis(300),
            t4: Duration::from_secs(1),
        };
        let mut r = AnswerRetransmitter::new(t0, config, Transport::Unreliable, 200, Vec::new());
        // 0.1, +0.2, +0.3, +0.3 …; timeout at 6.4 s.
        let sent = run(&mut r, t0, t0 + SECS(1.2));
        assert_eq!(sent.len(), 5);
        for (got, want) in sent.iter().zip([0.1, 0.3, 0.6, 0.9, 1.2]) {
            assert!((got - want).abs() < 1e-9, "{sent:?}");
        }
        assert!(run(&mut r, t0, t0 + SECS(7.0)).len() > 10);
        assert_eq!(r.poll_event(), Some(AnswerEvent::AckTimeout));
    }

    // Keys.

    fn parts<'a>(method: &'a str, branch: &'a str) -> RequestKeyParts<'a> {
        RequestKeyParts {
            method,
            request_uri: "sip:conf@bridge.example.com",
            via_branch: Some(branch),
            via_sent_by: "Caller.example.com:5060",
            via: "SIP/2.0/UDP caller.example.com:5060;branch=",
            from_tag: Some("ft1"),
            call_id: "call-1@caller",
            cseq: 1,
        }
    }

    const BRANCH: &str = "z9hG4bK776asdhds";

    #[test]
    fn ack_maps_to_the_invite_key_and_cancel_to_its_own() {
        let invite = TransactionKey::for_request(&parts("INVITE", BRANCH)).unwrap();
        let ack = TransactionKey::for_request(&parts("ACK", BRANCH)).unwrap();
        let cancel = TransactionKey::for_request(&parts("CANCEL", BRANCH)).unwrap();
        assert_eq!(ack, invite);
        assert_ne!(cancel, invite);
        assert_eq!(cancel.method(), "CANCEL");
        assert_eq!(cancel.cancel_target(), Some(invite.clone()));
        assert_eq!(invite.cancel_target(), None);
        let bye = TransactionKey::for_request(&parts("BYE", BRANCH)).unwrap();
        assert_ne!(bye, invite, "the method is part of the key");
    }

    #[test]
    fn rfc3261_key_uses_branch_and_sent_by_only() {
        let a = TransactionKey::for_request(&parts("INVITE", BRANCH)).unwrap();
        let mut other = parts("INVITE", BRANCH);
        other.call_id = "different";
        other.cseq = 9;
        other.via_sent_by = "caller.EXAMPLE.com:5060";
        assert_eq!(TransactionKey::for_request(&other).unwrap(), a);
        let mut moved = parts("INVITE", BRANCH);
        moved.via_sent_by = "other.example.com:5060";
        assert_ne!(TransactionKey::for_request(&moved).unwrap(), a);
        let new_branch = TransactionKey::for_request(&parts("INVITE", "z9hG4bKother")).unwrap();
        assert_ne!(new_branch, a);
        assert!(matches!(a, TransactionKey::Rfc3261 { .. }));
    }

    #[test]
    fn branch_without_cookie_falls_back_to_the_rfc2543_key() {
        let invite = parts("INVITE", "old-branch-1");
        let key = TransactionKey::for_request(&invite).unwrap();
        assert!(matches!(key, TransactionKey::Rfc2543 { .. }));
        // The ACK of a non-2xx: same URI, From tag, Call-ID, CSeq number, Via.
        let ack = TransactionKey::for_request(&parts("ACK", "old-branch-1")).unwrap();
        assert_eq!(ack, key);
        let no_branch = RequestKeyParts {
            via_branch: None,
            ..invite
        };
        let key2 = TransactionKey::for_request(&no_branch).unwrap();
        assert!(matches!(key2, TransactionKey::Rfc2543 { .. }));
        for change in [
            RequestKeyParts { cseq: 2, ..invite },
            RequestKeyParts {
                from_tag: Some("ft2"),
                ..invite
            },
            RequestKeyParts {
                call_id: "call-2@caller",
                ..invite
            },
            RequestKeyParts {
                request_uri: "sip:other@bridge",
                ..invite
            },
            RequestKeyParts {
                via: "SIP/2.0/UDP elsewhere:5060",
                ..invite
            },
        ] {
            assert_ne!(
                TransactionKey::for_request(&change).unwrap(),
                key,
                "{change:?}"
            );
        }
        let cancel = TransactionKey::for_request(&parts("CANCEL", "old-branch-1")).unwrap();
        assert_eq!(cancel.cancel_target(), Some(key));
    }

    #[test]
    fn absorbers_wait_for_work_of_their_own_then_carry_the_last_responses() {
        let t0 = Instant::now();
        let config = TimerConfig::default();
        let mut table = ServerTransactions::new(config);
        let drain = |t: &mut ServerTransactions| {
            while t.poll_transmit().is_some() {}
            while t.poll_event().is_some() {}
        };
        // INVITE answered 2xx (accepted), an INFO answered 200.
        let Route::New(invite) = table
            .handle_request(t0, &parts("INVITE", BRANCH), Transport::Unreliable)
            .unwrap()
        else {
            panic!("new INVITE")
        };
        table
            .send_response(t0, &invite, 200, &b"200 invite"[..])
            .unwrap();
        let Route::New(info) = table
            .handle_request(t0, &parts("INFO", "z9hG4bKinfo"), Transport::Unreliable)
            .unwrap()
        else {
            panic!("new INFO")
        };
        // An unanswered request is work of the TU's: nothing to hand over.
        assert_eq!(table.absorbers(), None);
        table
            .send_response(t0, &info, 200, &b"200 info"[..])
            .unwrap();
        // Queued outputs first.
        assert_eq!(table.absorbers(), None);
        drain(&mut table);
        let mut absorbers = table.absorbers().unwrap();
        absorbers.sort_by(|a, b| a.key().method().cmp(b.key().method()));
        assert_eq!(absorbers.len(), 2);
        assert_eq!(absorbers[0].key(), &info);
        assert_eq!(
            absorbers[0].response().map(|b| &b[..]),
            Some(&b"200 info"[..])
        );
        assert_eq!(absorbers[0].until(), t0 + config.t1_x64());
        assert_eq!(absorbers[1].key(), &invite);
        assert_eq!(
            absorbers[1].response().map(|b| &b[..]),
            Some(&b"200 invite"[..])
        );

        // A non-2xx final retransmits until its ACK (Timer G): not handed
        // over; once confirmed, only ACKs are absorbed until Timer I.
        let mut table = ServerTransactions::new(config);
        let Route::New(rejected) = table
            .handle_request(t0, &parts("INVITE", BRANCH), Transport::Unreliable)
            .unwrap()
        else {
            panic!("new INVITE")
        };
        table
            .send_response(t0, &rejected, 487, &b"487"[..])
            .unwrap();
        drain(&mut table);
        assert_eq!(table.absorbers(), None);
        let t1 = t0 + SECS(0.1);
        table
            .handle_request(t1, &parts("ACK", BRANCH), Transport::Unreliable)
            .unwrap();
        drain(&mut table);
        let absorbers = table.absorbers().unwrap();
        assert_eq!(absorbers.len(), 1);
        assert_eq!(absorbers[0].response(), None);
        assert_eq!(absorbers[0].until(), t1 + config.t4);
    }

    #[test]
    fn keys_without_needed_fields_are_400() {
        let empty = RequestKeyParts::default();
        let err = TransactionKey::for_request(&empty).unwrap_err();
        assert_eq!(err, TransactionError::EmptyMethod);
        assert_eq!(err.status_code(), Some(400));
        let no_sent_by = RequestKeyParts {
            via_sent_by: " ",
            ..parts("INVITE", BRANCH)
        };
        assert_eq!(
            TransactionKey::for_request(&no_sent_by)
                .unwrap_err()
                .status_code(),
            Some(400)
        );
        let no_call_id = RequestKeyParts {
            call_id: "",
            ..parts("INVITE", "old")
        };
        let err = TransactionKey::for_request(&no_call_id).unwrap_err();
        assert!(err.to_string().contains("Call-ID"), "{err}");
        assert_eq!(err.status_code(), Some(400));
    }

    #[test]
    fn garbage_fields_never_panic() {
        let t0 = Instant::now();
        let mut table = ServerTransactions::new(TimerConfig::default());
        let junk = [
            "",
            " ",
            "\0",
            "z9hG4bK",
            "ACK",
            "CANCEL",
            "ü\u{202e}ß",
            "<<<>>>;;;",
            "\r\n",
        ];
        for (i, a) in junk.iter().enumerate() {
            for b in junk {
                let request = RequestKeyParts {
                    method: a,
                    request_uri: b,
                    via_branch: Some(b),
                    via_sent_by: a,
                    via: b,
                    from_tag: Some(a),
                    call_id: b,
                    cseq: u32::MAX - i as u32,
                };
                if let Ok(Route::New(key) | Route::Cancel { key, .. }) =
                    table.handle_request(t0, &request, Transport::Unreliable)
                {
                    let _ = table.send_response(t0, &key, 200, b"x".to_vec());
                    let _ = table.send_response(t0, &key, 0, Vec::new());
                }
            }
        }
        table.handle_timeout(t0 + SECS(100.0));
        assert!(table.is_empty(), "everything expired");
    }

    // The table.

    fn table() -> ServerTransactions {
        ServerTransactions::new(TimerConfig::default())
    }

    fn sent(table: &mut ServerTransactions) -> Vec<u16> {
        std::iter::from_fn(|| table.poll_transmit())
            .map(|(_, t)| t.status)
            .collect()
    }

    fn table_events(table: &mut ServerTransactions) -> Vec<Event> {
        std::iter::from_fn(|| table.poll_event())
            .map(|(_, e)| e)
            .collect()
    }

    #[test]
    fn table_absorbs_a_retransmitted_invite_and_resends_the_provisional() {
        let t0 = Instant::now();
        let mut table = table();
        let invite = parts("INVITE", BRANCH);
        let Route::New(key) = table
            .handle_request(t0, &invite, Transport::Unreliable)
            .unwrap()
        else {
            panic!("a first INVITE is new");
        };
        table.send_response(t0, &key, 100, b"100".to_vec()).unwrap();
        table.send_response(t0, &key, 180, b"180".to_vec()).unwrap();
        assert_eq!(sent(&mut table), [100, 180]);
        let again = table.handle_request(t0 + SECS(0.5), &invite, Transport::Unreliable);
        assert_eq!(again, Ok(Route::Absorbed(key.clone())));
        assert_eq!(sent(&mut table), [180]);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn table_answers_a_retransmitted_invite_after_200_with_the_200_not_a_new_call() {
        let t0 = Instant::now();
        let mut table = table();
        let invite = parts("INVITE", BRANCH);
        let Ok(Route::New(key)) = table.handle_request(t0, &invite, Transport::Unreliable) else {
            panic!("a first INVITE is new");
        };
        table.send_response(t0, &key, 200, b"200".to_vec()).unwrap();
        assert_eq!(sent(&mut table), [200]);
        assert_eq!(
            table_events(&mut table),
            Vec::<Event>::new(),
            "the key lives on as accepted"
        );
        let again = table.handle_request(t0 + SECS(1.0), &invite, Transport::Unreliable);
        assert_eq!(again, Ok(Route::Absorbed(key.clone())));
        assert_eq!(sent(&mut table), [200]);
        // The ACK of a 2xx has a new branch: it is the TU's.
        let ack = parts("ACK", "z9hG4bKack");
        assert_eq!(
            table.handle_request(t0 + SECS(1.1), &ack, Transport::Unreliable),
            Ok(Route::Ack)
        );
        assert_eq!(table.poll_timeout(), Some(t0 + SECS(32.0)));
        table.handle_timeout(t0 + SECS(32.0));
        assert!(table.is_empty());
        assert_eq!(table.poll_event(), Some((key, Event::Terminated)));
    }

    #[test]
    fn table_cancel_before_answer_gets_200_and_the_invite_487() {
        let t0 = Instant::now();
        let mut table = table();
        let invite = parts("INVITE", BRANCH);
        let Ok(Route::New(invite_key)) = table.handle_request(t0, &invite, Transport::Unreliable)
        else {
            panic!("a first INVITE is new");
        };
        table
            .send_response(t0, &invite_key, 180, b"180".to_vec())
            .unwrap();
        let cancel = parts("CANCEL", BRANCH);
        let route = table
            .handle_request(t0 + SECS(1.0), &cancel, Transport::Unreliable)
            .unwrap();
        let Route::Cancel {
            key: cancel_key,
            target,
        } = route
        else {
            panic!("a CANCEL is routed as one: {route:?}");
        };
        assert_eq!(target, CancelTarget::Proceeding(invite_key.clone()));
        table
            .send_response(t0 + SECS(1.0), &cancel_key, 200, b"200c".to_vec())
            .unwrap();
        table
            .send_response(t0 + SECS(1.0), &invite_key, 487, b"487".to_vec())
            .unwrap();
        assert_eq!(sent(&mut table), [180, 200, 487]);
        // A retransmitted CANCEL gets its 200 again; the INVITE its 487.
        assert_eq!(
            table.handle_request(t0 + SECS(1.2), &cancel, Transport::Unreliable),
            Ok(Route::Absorbed(cancel_key.clone()))
        );
        assert_eq!(
            table.handle_request(t0 + SECS(1.3), &invite, Transport::Unreliable),
            Ok(Route::Absorbed(invite_key.clone()))
        );
        assert_eq!(sent(&mut table), [200, 487]);
        // Timer G retransmits the 487 at T1.
        assert_eq!(table.poll_timeout(), Some(t0 + SECS(1.5)));
        table.handle_timeout(t0 + SECS(1.5));
        assert_eq!(sent(&mut table), [487]);
        // The ACK of the 487 reuses the INVITE's branch and is absorbed.
        assert_eq!(
            table.handle_request(t0 + SECS(1.6), &parts("ACK", BRANCH), Transport::Unreliable),
            Ok(Route::Absorbed(invite_key.clone()))
        );
        assert_eq!(
            table.poll_event(),
            Some((invite_key.clone(), Event::AckReceived))
        );
        // Timer I (T4) ends the INVITE, Timer J (64×T1) the CANCEL.
        table.handle_timeout(t0 + SECS(6.6));
        assert!(!table.contains(&invite_key) && table.contains(&cancel_key));
        table.handle_timeout(t0 + SECS(33.0));
        assert!(table.is_empty());
    }

    #[test]
    fn table_cancel_matches_only_its_invite() {
        let t0 = Instant::now();
        let mut table = table();
        let lone = table
            .handle_request(t0, &parts("CANCEL", "z9hG4bKnone"), Transport::Unreliable)
            .unwrap();
        assert!(matches!(
            lone,
            Route::Cancel {
                target: CancelTarget::NotFound,
                ..
            }
        ));
        let Ok(Route::New(key)) =
            table.handle_request(t0, &parts("INVITE", BRANCH), Transport::Unreliable)
        else {
            panic!("a first INVITE is new");
        };
        table.send_response(t0, &key, 200, b"200".to_vec()).unwrap();
        let late = table
            .handle_request(t0, &parts("CANCEL", BRANCH), Transport::Unreliable)
            .unwrap();
        assert!(
            matches!(&late, Route::Cancel { target: CancelTarget::Answered(k), .. } if *k == key),
            "{late:?}"
        );
    }

    #[test]
    fn table_non_invite_absorbs_retransmissions_until_timer_j() {
        let t0 = Instant::now();
        let mut table = table();
        let bye = parts("BYE", "z9hG4bKbye");
        let Ok(Route::New(key)) = table.handle_request(t0, &bye, Transport::Unreliable) else {
            panic!("a first BYE is new");
        };
        assert_eq!(
            table.handle_request(t0 + SECS(0.5), &bye, Transport::Unreliable),
            Ok(Route::Absorbed(key.clone()))
        );
        assert_eq!(sent(&mut table), [0u16; 0], "trying: nothing to resend");
        table
            .send_response(t0 + SECS(0.6), &key, 200, b"200".to_vec())
            .unwrap();
        assert_eq!(
            table.handle_request(t0 + SECS(1.0), &bye, Transport::Unreliable),
            Ok(Route::Absorbed(key.clone()))
        );
        assert_eq!(sent(&mut table), [200, 200]);
        table.handle_timeout(t0 + SECS(32.5));
        assert!(table.contains(&key), "Timer J runs from the final at 0.6 s");
        table.handle_timeout(t0 + SECS(32.6));
        assert!(table.is_empty());
        assert_eq!(table_events(&mut table), [Event::Terminated]);
        // After that the same request would be new again.
        assert!(matches!(
            table.handle_request(t0 + SECS(40.0), &bye, Transport::Unreliable),
            Ok(Route::New(_))
        ));
    }

    #[test]
    fn table_over_tcp_sends_no_retransmissions() {
        let t0 = Instant::now();
        let mut table = table();
        let Ok(Route::New(key)) =
            table.handle_request(t0, &parts("INVITE", BRANCH), Transport::Reliable)
        else {
            panic!("a first INVITE is new");
        };
        table.send_response(t0, &key, 486, b"486".to_vec()).unwrap();
        assert_eq!(sent(&mut table), [486]);
        let mut now = t0;
        while let Some(at) = table.poll_timeout() {
            now = at;
            table.handle_timeout(at);
            assert_eq!(sent(&mut table), [0u16; 0], "no Timer G on TCP");
        }
        assert_eq!(now, t0 + SECS(32.0), "Timer H still applies");
        assert_eq!(
            table_events(&mut table),
            [Event::Timeout, Event::Terminated]
        );
    }

    #[test]
    fn table_transport_error_keeps_the_transaction() {
        let t0 = Instant::now();
        let mut table = table();
        let Ok(Route::New(key)) =
            table.handle_request(t0, &parts("INFO", BRANCH), Transport::Unreliable)
        else {
            panic!("a first INFO is new");
        };
        table.send_response(t0, &key, 200, b"200".to_vec()).unwrap();
        table.handle_transport_error(t0, &key);
        assert_eq!(table_events(&mut table), [Event::TransportError]);
        assert!(table.contains(&key));
        let _ = sent(&mut table);
        let _ = table.handle_request(
            t0 + SECS(1.0),
            &parts("INFO", BRANCH),
            Transport::Unreliable,
        );
        assert_eq!(
            sent(&mut table),
            [200],
            "the retransmission is still answered"
        );
    }

    #[test]
    fn table_refuses_responses_on_unknown_keys() {
        let t0 = Instant::now();
        let mut table = table();
        let key = TransactionKey::for_request(&parts("INVITE", BRANCH)).unwrap();
        let err = table.send_response(t0, &key, 200, Vec::new()).unwrap_err();
        assert!(matches!(err, TransactionError::UnknownTransaction { .. }));
        assert_eq!(err.status_code(), None);
        assert!(err.to_string().contains(BRANCH), "{err}");
    }

    #[test]
    fn time_is_never_read_from_the_system() {
        let source = include_str!("transaction.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        for needle in [["Instant", "::now"].concat(), ["System", "Time"].concat()] {
            assert!(!code.contains(&needle), "found {needle} outside tests");
        }
    }
}
