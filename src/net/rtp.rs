//! A call's task: owns the call's [`Call`] core and its RTP socket, and
//! moves bytes and timers in and out of it. One `select!` over the call's
//! inbox (SIP routed to it by Call-ID), its RTP socket and the core's next
//! deadline; after every input the core's outputs are drained: SIP goes out
//! through [`Outbound`], RTP from the call's socket, roster events to the
//! shared [`Roster`].
//!
//! A call that has ended, once nothing of it retransmits on its own, hands
//! what its transactions still owe retransmitted requests to the bridge's
//! [`LingerTable`] and its task ends (see [`crate::sip::linger`]).
//!
//! Also here: [`RtpPorts`], which binds each call's port from the configured
//! range, keeping the free ones in a list.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::attendant::{AttemptResult, Outcome};
use crate::call::{Call, CallEnd, CallEvent, MeetingKey};
use crate::directory::Directory;
use crate::records::{
    AttemptJson, CallInfo, CallLog, CallRecordJson, EventJson, EventLine, MeetingJson, TimeAnchor,
};
use crate::sip::linger::LingerTable;
use crate::sip::message::{Message, Request, Response, SipHeaders};
use crate::sip::transaction::Absorber;

use super::events::EventSink;
use super::guard::GuardHandle;
use super::sip::Outbound;
use crate::call::Source;

/// What the SIP router sends a call's task.
#[derive(Debug)]
pub enum CallInput {
    /// A message of this call as it arrived (the router found its Call-ID
    /// without parsing it): the call's task checks and parses it.
    Bytes(Vec<u8>, Source),
    Request(Box<Request>, Source),
    Response(Box<Response>),
    /// The bridge is shutting down: end the call.
    Shutdown,
}

/// Who is in which meeting's room (calls by their task number).
#[derive(Debug, Default)]
pub struct Roster {
    // A std Mutex: held only to insert or remove, never across an await.
    rooms: Mutex<HashMap<MeetingKey, HashSet<u64>>>,
}

impl Roster {
    /// Adds the call; returns whether it is alone in the room.
    pub fn join(&self, key: MeetingKey, call: u64) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(key).or_default();
        room.insert(call);
        room.len() == 1
    }

    pub fn leave(&self, key: MeetingKey, call: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(room) = rooms.get_mut(&key) {
            room.remove(&call);
            if room.is_empty() {
                rooms.remove(&key);
            }
        }
    }

    /// How many callers are in the room.
    pub fn count(&self, key: &MeetingKey) -> usize {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.get(key).map_or(0, HashSet::len)
    }
}

/// Binds RTP sockets from a port range, on the SIP address's IP. Ports are
/// taken even (RFC 3550 §11: RTCP would use the odd one above); a port of 0
/// (the range `0-0`) lets the OS choose, which is what tests use.
///
/// The range's ports are kept in a free list: a call takes the oldest free
/// one and gives it back when its task ends ([`RtpPorts::release`]), so a
/// port just given up is the last to be reused (late packets of the old
/// call find nobody). Finding a port never walks the range: a port another
/// program holds fails to bind and goes to the back of the list, and at most
/// [`RtpPorts::MAX_TRIES`] are tried per call. With every port in use, a
/// call is refused at once (503) instead of costing a bind per port.
#[derive(Debug)]
pub struct RtpPorts {
    ip: IpAddr,
    first: u16,
    count: u32,
    free: Mutex<std::collections::VecDeque<u16>>,
}

impl RtpPorts {
    /// Ports tried for one call before it is refused.
    pub const MAX_TRIES: usize = 32;

    pub fn new(ip: IpAddr, range: RangeInclusive<u16>) -> RtpPorts {
        let first = range.start() + (range.start() % 2);
        let count = if *range.end() >= first && first != 0 {
            (u32::from(*range.end()) - u32::from(first)) / 2 + 1
        } else {
            0
        };
        let free = (0..count)
            .filter_map(|slot| u16::try_from(u32::from(first) + slot * 2).ok())
            .collect();
        RtpPorts {
            ip,
            first,
            count,
            free: Mutex::new(free),
        }
    }

    /// How many calls can have a port at once (`None`: the OS chooses).
    pub fn capacity(&self) -> Option<usize> {
        (self.first != 0).then_some(self.count as usize)
    }

    /// A socket on a free port of the range and the port to
    /// [`RtpPorts::release`] when the call is over (`None` when the OS
    /// chose it); an error when none is free.
    pub async fn bind(&self) -> io::Result<(UdpSocket, Option<u16>)> {
        if self.first == 0 {
            return Ok((UdpSocket::bind(SocketAddr::new(self.ip, 0)).await?, None));
        }
        for _ in 0..Self::MAX_TRIES {
            let Some(port) = self.lock().pop_front() else {
                break;
            };
            match UdpSocket::bind(SocketAddr::new(self.ip, port)).await {
                Ok(socket) => return Ok((socket, Some(port))),
                // Held by another program (or not yet closed): try it again
                // after the others.
                Err(_) => self.lock().push_back(port),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "no free RTP port in {}-{} on {} ({} calls hold one): widen --rtp-ports or lower --max-calls",
                self.first,
                u32::from(self.first) + self.count.saturating_sub(1) * 2,
                self.ip,
                self.count as usize - self.lock().len(),
            ),
        ))
    }

    /// Gives a port back once the socket bound to it is closed.
    pub fn release(&self, port: u16) {
        self.lock().push_back(port);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<u16>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What every call task shares.
pub struct CallShared {
    pub out: Outbound,
    pub directory: Arc<Directory>,
    pub roster: Roster,
    /// Calls that have not ended (the `--max-calls` count).
    pub active: AtomicUsize,
    /// Calls that joined a meeting, since start.
    pub joined: AtomicU64,
    /// Woken at every join, for whoever waits on the monitor.
    pub join_signal: tokio::sync::Notify,
    /// Calls the bridge ended with its own BYE, since start.
    pub bridge_hangups: AtomicU64,
    /// The records of the last calls (`GET /api/calls`).
    pub log: Arc<CallLog>,
    /// The events file, when `--events` was given.
    pub events: Option<EventSink>,
    /// Calls that ended (their record is in `log`), since start.
    pub ended: AtomicU64,
    /// Woken at every end, for whoever waits on the monitor.
    pub end_signal: tokio::sync::Notify,
    /// Guessing protection, unless it is off (`--guard off`).
    pub guard: Option<Arc<GuardHandle>>,
    /// Counters for the metrics.
    pub stats: BridgeStats,
    /// Finished calls' transactions, answering retransmissions until their
    /// timers end. A std Mutex: a hash lookup or insert under it, never
    /// held across an await; the router sweeps it.
    pub linger: Mutex<LingerTable>,
    /// Woken when the linger table stops being empty, so that the router
    /// sets its sweep deadline.
    pub linger_signal: tokio::sync::Notify,
    /// The message limits datagrams handed to calls are checked against.
    pub limits: crate::sip::framing::Limits,
}

/// The attempt results, in the order of [`BridgeStats::attempts`].
pub const ATTEMPT_RESULTS: [&str; 5] = ["accepted", "unknown", "revoked", "malformed", "no-input"];

fn attempt_index(result: &AttemptResult) -> usize {
    match result {
        AttemptResult::Accepted { .. } => 0,
        AttemptResult::Unknown { .. } => 1,
        AttemptResult::Revoked { .. } => 2,
        AttemptResult::Malformed(_) => 3,
        AttemptResult::NoInput => 4,
    }
}

/// Whether an attempt counts toward guessing protection: a wrong ID
/// (unknown, revoked, malformed). No input tries no ID (see `guard`).
pub fn is_guess_failure(result: &AttemptResult) -> bool {
    matches!(
        result,
        AttemptResult::Unknown { .. } | AttemptResult::Revoked { .. } | AttemptResult::Malformed(_)
    )
}

/// Counters since the bridge started, for `GET /api/metrics`.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// INVITEs that started a call.
    pub calls: AtomicU64,
    /// Calls the attendant turned away (out of attempts).
    pub rejected: AtomicU64,
    /// Attempts by result, in the order of [`ATTEMPT_RESULTS`].
    pub attempts: [AtomicU64; 5],
    /// New INVITEs the router refused: 403 (guard), 404 (not the
    /// tenant's number), 503 (overload, shutdown).
    pub refused_403: AtomicU64,
    pub refused_404: AtomicU64,
    pub refused_503: AtomicU64,
    /// Call tasks running (calls in progress, and ended calls with a
    /// response or an ACK still to wait for).
    pub call_tasks: AtomicU64,
    /// Limits hit, in the order of [`super::sip::LIMIT_NAMES`].
    pub limit_hits: [AtomicU64; super::sip::LIMIT_NAMES.len()],
}

impl BridgeStats {
    /// Counts a hit of the limit named `name` (one of
    /// [`super::sip::LIMIT_NAMES`]; another name counts nothing).
    pub fn limit_hit(&self, name: &str) {
        if let Some(i) = super::sip::LIMIT_NAMES.iter().position(|n| *n == name) {
            self.limit_hits[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn recv_rtp(socket: &Option<UdpSocket>, buf: &mut [u8]) -> io::Result<usize> {
    match socket {
        Some(s) => s.recv_from(buf).await.map(|(n, _)| n),
        None => std::future::pending().await,
    }
}

/// What a call task knows for the record and the events file.
struct Recorder {
    info: CallInfo,
    events: Option<EventSink>,
}

impl Recorder {
    fn new(call: &Call, anchor: TimeAnchor, events: Option<EventSink>) -> Recorder {
        let invite = call.invite();
        let info = CallInfo {
            call_id: call.call_id().to_string(),
            from: invite.from().map(|n| n.uri.to_string()).unwrap_or_default(),
            dialed: invite
                .uri_user()
                .map(|u| u.split(';').next().unwrap_or_default().to_string()),
            source: call.source(),
            anchor,
            answered: None,
        };
        Recorder { info, events }
    }

    fn emit(&self, at: std::time::Instant, event: impl FnOnce() -> EventJson) {
        if let Some(sink) = &self.events {
            sink.send(EventLine {
                at: self.info.anchor.wall(at),
                call_id: self.info.call_id.clone(),
                event: event(),
            });
        }
    }

    fn started(&self) {
        let info = &self.info;
        self.emit(info.anchor.instant, || EventJson::Started {
            from: info.from.clone(),
            dialed: info.dialed.clone(),
            source: info.source.addr.to_string(),
            transport: info.source.transport_name(),
        });
    }
}

/// Runs one call until it is finished. `number` names the call in the
/// roster; `anchor` is when the INVITE arrived, in both clocks.
pub async fn run_call(
    mut call: Call,
    socket: UdpSocket,
    mut inbox: mpsc::Receiver<CallInput>,
    shared: Arc<CallShared>,
    number: u64,
    anchor: TimeAnchor,
) {
    let mut recorder = Recorder::new(&call, anchor, shared.events.clone());
    recorder.started();
    let caller_id = super::guard::caller_id(call.invite());
    let mut socket = Some(socket);
    let mut buf = vec![0u8; 2048];
    let mut inbox_open = true;
    let mut counted = true;
    let mut room: Option<MeetingKey> = None;
    let mut shutting_down = false;
    let mut release_socket = false;
    loop {
        // Drain: events, then SIP and RTP. Events first, so that what the
        // bridge shows (roster, counters, call records) is up to date by the
        // time the peer has the answer that caused it. A Join is answered at
        // once, which may produce more output: bounded by the core's own
        // bounds.
        for _ in 0..64 {
            let mut progressed = false;
            while let Some(event) = call.poll_event() {
                progressed = true;
                let at = now();
                match event {
                    CallEvent::Answered => {
                        recorder.info.answered = Some(at);
                        recorder.emit(at, || EventJson::Answered);
                    }
                    CallEvent::Digit { digit, method } => {
                        recorder.emit(at, || EventJson::digit(digit, method));
                    }
                    CallEvent::PromptStarted(prompt) => {
                        recorder.emit(at, || EventJson::prompt(prompt));
                    }
                    CallEvent::Attempt(attempt) => {
                        shared.stats.attempts[attempt_index(&attempt.result)]
                            .fetch_add(1, Ordering::Relaxed);
                        // As it happens, not at the call's end: a caller
                        // is blocked within the calls the threshold implies.
                        if let Some(guard) = &shared.guard
                            && is_guess_failure(&attempt.result)
                        {
                            guard.record_failure(
                                recorder.info.source.addr.ip(),
                                caller_id.as_deref(),
                                &recorder.info.call_id,
                            );
                        }
                        let anchor = recorder.info.anchor;
                        recorder.emit(at, || EventJson::Attempt {
                            attempt: AttemptJson::new(&attempt, &anchor),
                        });
                    }
                    CallEvent::Join { key, id } => {
                        let alone = shared.roster.join(key, number);
                        shared.joined.fetch_add(1, Ordering::Relaxed);
                        shared.join_signal.notify_waiters();
                        room = Some(key);
                        tracing::info!(%id, alone, "in the meeting");
                        recorder.emit(at, || EventJson::Joined {
                            meeting: MeetingJson {
                                conference_id: id,
                                tenant: key.tenant,
                                organizer_id: key.organizer,
                                meeting_id: key.meeting,
                            },
                            alone,
                        });
                        call.handle_joined(at, alone, &*shared.directory);
                    }
                    CallEvent::Left { key } => {
                        shared.roster.leave(key, number);
                        room = None;
                        recorder.emit(at, || EventJson::Left);
                    }
                    CallEvent::Ended { end, record } => {
                        tracing::info!(?end, "ended");
                        if record
                            .as_deref()
                            .is_some_and(|r| matches!(r.outcome, Outcome::Rejected(_)))
                        {
                            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        let json = CallRecordJson::new(&recorder.info, &end, record.as_deref(), at);
                        recorder.emit(at, || EventJson::Ended {
                            record: Box::new(json.clone()),
                        });
                        if matches!(end, CallEnd::BridgeHungUp(_)) {
                            shared.bridge_hangups.fetch_add(1, Ordering::Relaxed);
                        }
                        if std::mem::take(&mut counted) {
                            shared.active.fetch_sub(1, Ordering::AcqRel);
                        }
                        // Last, so that a waiter on the end sees the rest.
                        shared.log.push(json);
                        shared.ended.fetch_add(1, Ordering::Release);
                        shared.end_signal.notify_waiters();
                        // The port is free again once this pass's last RTP
                        // is out; signalling lingers to absorb
                        // retransmissions.
                        release_socket = true;
                    }
                }
            }
            while let Some(x) = call.poll_transmit() {
                shared.out.send(&x);
                progressed = true;
            }
            while let Some(p) = call.poll_rtp() {
                if let Some(s) = &socket
                    && let Err(e) = s.try_send_to(&p.bytes, p.to)
                {
                    tracing::trace!(error = %e, to = %p.to, "RTP send failed");
                }
                progressed = true;
            }
            if std::mem::take(&mut release_socket) {
                socket = None;
            }
            if !progressed {
                break;
            }
        }
        // At shutdown the call need not linger for retransmissions once
        // its BYE was answered (or given up on).
        if shutting_down && call.is_ended() {
            break;
        }
        // Ended, and nothing left but absorbing retransmissions: the linger
        // table does that (RFC 3261 §17.2.2 Timer J is 32 s over UDP) and
        // the task ends, with its core, buffers and timers.
        if let Some(absorbers) = call.linger() {
            hand_off(&shared, &mut inbox, call.call_id(), absorbers);
            break;
        }
        let deadline = call.poll_timeout();
        if deadline.is_none() && !inbox_open {
            break;
        }
        let sleep = tokio::time::sleep_until(deadline.map_or_else(
            || Instant::now() + std::time::Duration::from_secs(3600),
            Instant::from_std,
        ));
        tokio::select! {
            message = inbox.recv(), if inbox_open => match message {
                Some(CallInput::Bytes(bytes, source)) => {
                    match super::sip::read_call_message(&shared, &bytes, source) {
                        Some(Message::Request(request)) => {
                            call.handle_sip(now(), &request, source, &*shared.directory);
                        }
                        Some(Message::Response(response)) => call.handle_response(now(), &response),
                        None => {}
                    }
                }
                Some(CallInput::Request(request, source)) => {
                    call.handle_sip(now(), &request, source, &*shared.directory);
                }
                Some(CallInput::Response(response)) => call.handle_response(now(), &response),
                Some(CallInput::Shutdown) => {
                    shutting_down = true;
                    call.cancel(now(), &*shared.directory);
                }
                None => {
                    inbox_open = false;
                    shutting_down = true;
                    call.cancel(now(), &*shared.directory);
                }
            },
            received = recv_rtp(&socket, &mut buf) => match received {
                Ok(n) => call.handle_rtp(now(), &buf[..n], &*shared.directory),
                Err(e) => tracing::trace!(error = %e, "RTP receive failed"),
            },
            _ = sleep => call.handle_timeout(now(), &*shared.directory),
        }
    }
    if let Some(key) = room {
        shared.roster.leave(key, number);
    }
    if counted {
        shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Puts an ended call's transactions in the linger table, then closes the
/// call's inbox: from then on the router, finding it closed, answers the
/// Call-ID from the table. What was queued before the close is answered
/// from the table here; a request the table does not absorb (a new one on
/// the ended dialog, in the instant of the hand-off) is dropped, and its
/// retransmission gets the router's answer.
fn hand_off(
    shared: &CallShared,
    inbox: &mut mpsc::Receiver<CallInput>,
    call_id: &str,
    absorbers: Vec<Absorber>,
) {
    if !absorbers.is_empty() {
        let was_empty = {
            let mut table = shared.linger.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = table.is_empty();
            table.insert(call_id, absorbers);
            was_empty
        };
        if was_empty {
            shared.linger_signal.notify_one();
        }
    }
    inbox.close();
    while let Ok(input) = inbox.try_recv() {
        let (request, source) = match input {
            CallInput::Bytes(bytes, source) => {
                match super::sip::read_call_message(shared, &bytes, source) {
                    Some(Message::Request(request)) => (request, source),
                    _ => continue,
                }
            }
            CallInput::Request(request, source) => (*request, source),
            CallInput::Response(_) | CallInput::Shutdown => continue,
        };
        if !matches!(
            super::sip::answer_lingering(shared, &request, source),
            Some(crate::sip::linger::LingerMatch::Absorbed(_))
        ) {
            tracing::debug!(method = %request.method(), "request at the hand-off to the linger table: dropped");
        }
    }
}

/// A view of the bridge's calls for tests, metrics and the CLI.
#[derive(Clone)]
pub struct BridgeMonitor(pub(crate) Arc<CallShared>);

impl BridgeMonitor {
    /// Calls that have not ended.
    pub fn active_calls(&self) -> usize {
        self.0.active.load(Ordering::Acquire)
    }

    /// Calls that joined a meeting since the bridge started.
    pub fn joined_total(&self) -> u64 {
        self.0.joined.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` calls have joined since the bridge started.
    pub async fn joined_at_least(&self, n: u64) {
        loop {
            // Created before the check: notify_waiters reaches it from here on.
            let signal = self.0.join_signal.notified();
            if self.joined_total() >= n {
                return;
            }
            signal.await;
        }
    }

    /// Calls that ended since the bridge started (their records are listed).
    pub fn ended_total(&self) -> u64 {
        self.0.ended.load(Ordering::Acquire)
    }

    /// Waits until at least `n` calls have ended since the bridge started.
    pub async fn ended_at_least(&self, n: u64) {
        loop {
            let signal = self.0.end_signal.notified();
            if self.ended_total() >= n {
                return;
            }
            signal.await;
        }
    }

    /// The records of the last calls, newest first.
    pub fn records(&self) -> &Arc<CallLog> {
        &self.0.log
    }

    /// Calls the bridge hung up on (BYE with a Reason) since it started.
    pub fn bridge_hangups(&self) -> u64 {
        self.0.bridge_hangups.load(Ordering::Relaxed)
    }

    /// Counters since the bridge started.
    pub fn stats(&self) -> &BridgeStats {
        &self.0.stats
    }

    /// Call tasks running: calls in progress, and ended calls still
    /// waiting for a response or an ACK.
    pub fn call_tasks(&self) -> u64 {
        self.0.stats.call_tasks.load(Ordering::Relaxed)
    }

    /// Ended calls whose transactions still answer retransmissions from
    /// the linger table (until the next sweep, some may be over).
    pub fn lingering_calls(&self) -> usize {
        self.0
            .linger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Guessing protection, unless it is off.
    pub fn guard(&self) -> Option<&Arc<GuardHandle>> {
        self.0.guard.as_ref()
    }

    /// Callers in a meeting's room now.
    pub fn in_room(&self, key: &MeetingKey) -> usize {
        self.0.roster.count(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range of `slots` even ports on loopback that were free a moment
    /// ago, from 20000-29999, below Linux's default ephemeral range (32768
    /// and up), so that no other test's `bind(0)` takes one in the meantime.
    /// (The integration tests share theirs in `tests/common`.)
    fn free_range(slots: u16) -> RangeInclusive<u16> {
        for _ in 0..200 {
            let first = 2 * rand::random_range(10_000u16..15_000);
            let last = first + (slots - 1) * 2;
            let all_free =
                (0..slots).all(|i| std::net::UdpSocket::bind(("127.0.0.1", first + i * 2)).is_ok());
            if all_free {
                return first..=last;
            }
        }
        panic!("no free range of {slots} ports on loopback between 20000 and 30000");
    }

    #[tokio::test]
    async fn every_port_held_refuses_at_once_and_a_released_port_is_reused_last() {
        let range = free_range(3);
        let ports = RtpPorts::new(IpAddr::from([127, 0, 0, 1]), range.clone());
        assert_eq!(ports.capacity(), Some(3));
        let mut held = Vec::new();
        for _ in 0..3 {
            let (socket, port) = ports.bind().await.expect("a free port");
            let port = port.expect("a port of the range");
            assert!(range.contains(&port) && port % 2 == 0, "{port}");
            assert_eq!(socket.local_addr().unwrap().port(), port);
            held.push((socket, port));
        }
        let err = ports.bind().await.expect_err("every port is held");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let text = err.to_string();
        assert!(
            text.contains("(3 calls hold one)") && text.contains("widen --rtp-ports"),
            "{text}"
        );
        // The first call ends: its port comes back, behind nobody else.
        let (socket, first) = held.remove(0);
        drop(socket);
        ports.release(first);
        let (_again, port) = ports.bind().await.expect("the released port");
        assert_eq!(port, Some(first));
    }

    #[tokio::test]
    async fn a_port_another_program_holds_is_skipped_and_tried_again_later() {
        let range = free_range(2);
        let outsider = std::net::UdpSocket::bind(("127.0.0.1", *range.start())).unwrap();
        let ports = RtpPorts::new(IpAddr::from([127, 0, 0, 1]), range.clone());
        let (_socket, port) = ports.bind().await.expect("the other port");
        assert_eq!(port, Some(*range.end()));
        assert!(
            ports.bind().await.is_err(),
            "the outsider still holds the first"
        );
        drop(outsider);
        let (_socket, port) = ports.bind().await.expect("free again");
        assert_eq!(port, Some(*range.start()));
    }

    #[tokio::test]
    async fn port_zero_lets_the_os_choose_without_a_list() {
        let ports = RtpPorts::new(IpAddr::from([127, 0, 0, 1]), 0..=0);
        assert_eq!(ports.capacity(), None);
        let (socket, port) = ports.bind().await.expect("an OS port");
        assert_eq!(port, None);
        assert_ne!(socket.local_addr().unwrap().port(), 0);
    }
}
