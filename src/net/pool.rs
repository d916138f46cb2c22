//! Many caller cores on a few shared sockets: the load generator's engine.
//!
//! [`super::caller::place_call`] binds two sockets per call, which at
//! thousands of calls per second costs more system time than the calls
//! themselves. A [`CallerPool`] runs one worker per core, each on its own
//! thread with its own single-threaded runtime: a worker owns one SIP and
//! one RTP socket on loopback (or the route to the target), keeps its calls'
//! [`Caller`] cores in a slab, routes SIP by Call-ID and RTP by the bridge's
//! source address (one RTP port per call at the bridge), and sleeps until
//! the earliest deadline of its calls or a datagram.
//!
//! A worker reads its sockets itself, draining each one while it is
//! readable: no task or queue between the kernel and the caller core, and no
//! thread hand-off per datagram. Large socket buffers
//! ([`SOCKET_BUFFER`]) hold what arrives while the worker is busy.
//!
//! UDP only. All decisions stay in the caller core; this moves datagrams.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::caller::{CallError, HANG_UP_GRACE};
use crate::caller::{
    CallReport, Caller, CallerConfig, DtmfPlan, HangUp, Output, PromptMatchers, Transport,
};
use crate::sip::framing::{Limits, check_datagram};
use crate::sip::message::{self, Message, SipHeaders};
use crate::sip::transaction::TimerConfig;

/// The receive and send buffer asked for each of a worker's sockets: what
/// arrives while the worker handles a burst waits here instead of being
/// dropped by the kernel (which would cost a retransmission).
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read from one socket before the worker looks at its timers
/// and new calls again.
const DRAIN_BATCH: usize = 64;
/// New calls taken from the queue in one turn.
const START_BATCH: usize = 64;
/// What the worker's calls send goes out together, at most this long
/// after the first of them (or once [`SEND_BATCH`] are waiting): the bridge
/// then drains a burst per wake-up instead of waking for each datagram,
/// as it does under SIPp, which sends per tick of its clock.
const SEND_WINDOW: Duration = Duration::from_micros(500);
const SEND_BATCH: usize = 64;
/// Rounds of wake-ups that were due when asked for, per turn.
const DUE_ROUNDS: usize = 8;

/// One call for the pool.
#[derive(Debug, Clone)]
pub struct PoolCall {
    /// The Request-URI (`sip:NUMBER@HOST:PORT`); SIP goes to the pool's remote.
    pub target: String,
    pub dtmf: DtmfPlan,
    pub hang_up: HangUp,
    /// The whole call is hung up after this long.
    pub timeout: Duration,
    /// Seeds the Call-ID, tags and RTP ids; two calls with one seed would
    /// be one call to the bridge.
    pub seed: u64,
    pub send_silence: bool,
}

/// How a call's end is told: to the one placing it ([`CallerPool::call`]),
/// or as `(tag, result)` on a queue many calls share
/// ([`CallerPool::submit`]), which wakes the reader once per batch rather
/// than once per call.
enum Reply {
    Once(oneshot::Sender<Result<CallReport, CallError>>),
    Tagged(u64, Ended),
}

/// Where [`CallerPool::submit`]ted calls end up: `(tag, result)`.
pub type Ended = mpsc::UnboundedSender<(u64, Result<CallReport, CallError>)>;

impl Reply {
    fn send(self, result: Result<CallReport, CallError>) {
        match self {
            Reply::Once(tx) => {
                let _ = tx.send(result);
            }
            Reply::Tagged(tag, tx) => {
                let _ = tx.send((tag, result));
            }
        }
    }
}

/// The handle calls are placed through; cheap to clone.
#[derive(Clone)]
pub struct CallerPool {
    workers: Arc<[mpsc::UnboundedSender<(PoolCall, Reply)>]>,
    next: Arc<AtomicUsize>,
}

impl CallerPool {
    /// Binds `workers` pairs of sockets on `local_ip` and starts each
    /// worker on a thread of its own. They run until every handle is
    /// dropped and their calls are over; `stop` turning true hangs every
    /// call up.
    pub async fn start(
        remote: SocketAddr,
        local_ip: IpAddr,
        workers: usize,
        prompts: Arc<PromptMatchers>,
        stop: watch::Receiver<bool>,
    ) -> Result<CallerPool, CallError> {
        let mut senders = Vec::with_capacity(workers.max(1));
        for n in 0..workers.max(1) {
            let sip = bind(local_ip)?;
            let rtp = bind(local_ip)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let prompts = prompts.clone();
            let stop = stop.clone();
            let (ready_tx, ready_rx) = oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("dialin-caller-{n}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(CallError::Bind {
                                addr: SocketAddr::new(local_ip, 0),
                                source: e,
                            }));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match Worker::new(sip, rtp, remote, prompts) {
                            Ok(worker) => {
                                let _ = ready_tx.send(Ok(()));
                                worker.run(rx, stop).await;
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    });
                });
            if let Err(source) = spawned {
                return Err(CallError::Bind {
                    addr: SocketAddr::new(local_ip, 0),
                    source,
                });
            }
            ready_rx.await.map_err(|_| CallError::Bind {
                addr: SocketAddr::new(local_ip, 0),
                source: std::io::Error::other("the caller pool's worker did not start"),
            })??;
            senders.push(tx);
        }
        Ok(CallerPool {
            workers: senders.into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Places one call on the next worker and waits for its report.
    pub async fn call(&self, call: PoolCall) -> Result<CallReport, CallError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let (tx, rx) = oneshot::channel();
        let gone = || CallError::Receive {
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            source: std::io::Error::other("the caller pool's worker stopped"),
        };
        self.workers[n]
            .send((call, Reply::Once(tx)))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Places one call on the next worker; its result comes on `ended`
    /// with `tag`. Fails only when the worker has stopped.
    pub fn submit(&self, call: PoolCall, tag: u64, ended: &Ended) -> Result<(), CallError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.workers[n]
            .send((call, Reply::Tagged(tag, ended.clone())))
            .map_err(|_| CallError::Receive {
                local: SocketAddr::from(([0, 0, 0, 0], 0)),
                source: std::io::Error::other("the caller pool's worker stopped"),
            })
    }
}

/// A non-blocking UDP socket on `ip` with [`SOCKET_BUFFER`]-sized buffers
/// (the kernel may grant less; that only makes drops under bursts likelier).
fn bind(ip: IpAddr) -> Result<std::net::UdpSocket, CallError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, 0);
    let fail = |source| CallError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into()).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket.into())
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

struct Active {
    caller: Caller,
    call_id: Box<str>,
    reply: Option<Reply>,
    deadline: Instant,
    timeout: Duration,
    hung_up_at: Option<Instant>,
    timed_out: bool,
    /// The wake-up queued for this call (older queue entries are stale).
    scheduled: Option<Instant>,
    rtp_peer: Option<SocketAddr>,
}

/// A call's place in the worker: its slab index and the generation of the
/// slot, so a wake-up queued for an ended call never reaches the call that
/// took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    index: usize,
    generation: u64,
}

struct Worker {
    sip: UdpSocket,
    rtp: UdpSocket,
    local_sip: SocketAddr,
    local_rtp: SocketAddr,
    remote: SocketAddr,
    prompts: Arc<PromptMatchers>,
    /// The calls, by slot; `generations[i]` counts the calls slot i held.
    slots: Vec<Option<Active>>,
    generations: Vec<u64>,
    free: Vec<usize>,
    by_call_id: HashMap<Box<str>, usize>,
    by_rtp: HashMap<SocketAddr, usize>,
    wakes: BinaryHeap<Reverse<(Instant, Key)>>,
    /// Wake-ups already due when they were asked for (the next key of a
    /// call whose INFO was just answered): they skip the heap.
    due: Vec<(Instant, Key)>,
    /// Datagrams waiting to be sent together (see [`SEND_WINDOW`]).
    outbox: Vec<(Output, SocketAddr)>,
    /// When the outbox is sent at the latest.
    send_by: Option<Instant>,
    buf: Vec<u8>,
}

impl Worker {
    /// Takes over the bound sockets; runs inside the worker's runtime.
    fn new(
        sip: std::net::UdpSocket,
        rtp: std::net::UdpSocket,
        remote: SocketAddr,
        prompts: Arc<PromptMatchers>,
    ) -> Result<Worker, CallError> {
        let adopt = |s: std::net::UdpSocket| {
            let addr = s.local_addr().map_err(|source| CallError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            let socket =
                UdpSocket::from_std(s).map_err(|source| CallError::Bind { addr, source })?;
            Ok::<_, CallError>((socket, addr))
        };
        let (sip, local_sip) = adopt(sip)?;
        let (rtp, local_rtp) = adopt(rtp)?;
        Ok(Worker {
            sip,
            rtp,
            local_sip,
            local_rtp,
            remote,
            prompts,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_call_id: HashMap::new(),
            by_rtp: HashMap::new(),
            wakes: BinaryHeap::new(),
            due: Vec::new(),
            outbox: Vec::new(),
            send_by: None,
            buf: vec![0u8; Limits::default().max_message + 1],
        })
    }

    fn active(&self) -> usize {
        self.by_call_id.len()
    }

    fn get_mut(&mut self, key: Key) -> Option<&mut Active> {
        if self.generations.get(key.index) != Some(&key.generation) {
            return None;
        }
        self.slots.get_mut(key.index)?.as_mut()
    }

    fn key(&self, index: usize) -> Key {
        Key {
            index,
            generation: self.generations[index],
        }
    }

    async fn run(
        mut self,
        mut calls: mpsc::UnboundedReceiver<(PoolCall, Reply)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut open = true;
        let mut stopping = false;
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        // Ends when no handle can send calls and none is left; each turn
        // handles one batch of one kind of event.
        while open || self.active() > 0 {
            // Timers first: under a steady stream of datagrams a select
            // that prefers them would never get to the deadlines.
            self.run_due(Instant::now());
            let next = if self.due.is_empty() {
                let wake = self.wakes.peek().map(|Reverse((t, _))| *t);
                match (wake, self.send_by) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            } else {
                Some(Instant::now())
            };
            if next != armed
                && let Some(t) = next
            {
                sleep.as_mut().reset(t);
            }
            armed = next;
            tokio::select! {
                () = stopped(&mut stop), if !stopping => {
                    stopping = true;
                    self.hang_up_all(Instant::now());
                }
                ready = self.sip.readable() => {
                    if ready.is_ok() {
                        self.drain(true);
                    }
                }
                ready = self.rtp.readable() => {
                    if ready.is_ok() {
                        self.drain(false);
                    }
                }
                c = calls.recv(), if open => match c {
                    Some((call, reply)) => {
                        self.start(call, reply, stopping);
                        for _ in 1..START_BATCH {
                            match calls.try_recv() {
                                Ok((call, reply)) => self.start(call, reply, stopping),
                                Err(_) => break,
                            }
                        }
                    }
                    None => open = false,
                },
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                }
            }
            if self.outbox.len() >= SEND_BATCH || self.send_by.is_some_and(|t| t <= Instant::now())
            {
                self.flush();
            }
        }
        self.flush();
    }

    /// Sends the outbox. The worker never waits on a send: a full buffer
    /// loses the datagram, and the core's retransmissions and timers decide.
    fn flush(&mut self) {
        self.send_by = None;
        for (o, to) in self.outbox.drain(..) {
            let (socket, bytes) = match &o {
                Output::Sip(bytes) => (&self.sip, bytes),
                Output::Rtp { bytes, .. } => (&self.rtp, bytes),
            };
            if let Err(e) = socket.try_send_to(bytes, to) {
                tracing::warn!(%to, error = %e, "the caller pool could not send");
            }
        }
    }

    fn hang_up_all(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let key = self.key(index);
            if let Some(a) = self.get_mut(key) {
                if a.hung_up_at.is_none() {
                    a.caller.hang_up(now.into_std());
                    a.hung_up_at = Some(now);
                }
                self.service(key, now);
            }
        }
    }

    /// Reads up to [`DRAIN_BATCH`] datagrams from one socket, handling each
    /// as it comes.
    fn drain(&mut self, sip: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..DRAIN_BATCH {
            let socket = if sip { &self.sip } else { &self.rtp };
            match socket.try_recv_from(&mut buf) {
                Ok((len, from)) => {
                    if sip {
                        self.handle_sip(&buf[..len], from);
                    } else {
                        self.handle_rtp(&buf[..len], from);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends (a closed port at the
                // bridge) are the calls' timers' business.
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the caller pool can't receive");
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// Runs every wake-up that is due at `now`.
    fn run_due(&mut self, now: Instant) {
        // A wake-up run here may ask for another that is due at once; a
        // few rounds, and the rest waits for the next turn (so a core that
        // keeps asking can't hold the worker).
        for _ in 0..DUE_ROUNDS {
            if self.due.is_empty() {
                break;
            }
            for (t, key) in std::mem::take(&mut self.due) {
                self.on_wake(key, t, now);
            }
        }
        while let Some(Reverse((t, _))) = self.wakes.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, key))) = self.wakes.pop() else {
                break;
            };
            self.on_wake(key, t, now);
        }
    }

    fn start(&mut self, call: PoolCall, reply: Reply, stopping: bool) {
        let from = match self.local_sip.ip() {
            IpAddr::V4(ip) => format!("sip:caller@{ip}"),
            IpAddr::V6(ip) => format!("sip:caller@[{ip}]"),
        };
        let config = CallerConfig {
            target: call.target,
            from,
            remote_sip: self.remote,
            local_sip: self.local_sip,
            local_rtp: self.local_rtp,
            dtmf: call.dtmf,
            hang_up: call.hang_up,
            timers: TimerConfig::default(),
            transport: Transport::Udp,
            prompts: self.prompts.clone(),
            send_silence: call.send_silence,
            record: None,
        };
        let now = Instant::now();
        let mut caller = Caller::new(config, now.into_std(), StdRng::seed_from_u64(call.seed));
        let call_id: Box<str> = caller.call_id().into();
        if self.by_call_id.contains_key(&call_id) {
            reply.send(Err(CallError::BadTarget {
                uri: format!("a second call with Call-ID {call_id}: give each call its own seed"),
            }));
            return;
        }
        let mut hung_up_at = None;
        if stopping {
            caller.hang_up(now.into_std());
            hung_up_at = Some(now);
        }
        let active = Active {
            caller,
            call_id: call_id.clone(),
            reply: Some(reply),
            deadline: now + call.timeout,
            timeout: call.timeout,
            hung_up_at,
            timed_out: false,
            scheduled: None,
            rtp_peer: None,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.generations[i] += 1;
                self.slots[i] = Some(active);
                i
            }
            None => {
                self.slots.push(Some(active));
                self.generations.push(0);
                self.slots.len() - 1
            }
        };
        self.by_call_id.insert(call_id, index);
        self.service(self.key(index), now);
    }

    fn handle_sip(&mut self, bytes: &[u8], from: SocketAddr) {
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return; // RFC 5626 keep-alive
        }
        // Find the call first: a retransmission for a call that is over
        // (its timers are gone) is not worth parsing.
        let index = match message::peek_call_id(bytes) {
            Some(id) => match self.by_call_id.get(id) {
                Some(index) => Some(*index),
                None => return,
            },
            None => None,
        };
        let parsed = check_datagram(bytes, Limits::default())
            .map_err(|e| e.to_string())
            .and_then(|()| message::parse(bytes).map_err(|e| e.to_string()));
        let message = match parsed {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%from, "dropped a SIP datagram: {e}");
                return;
            }
        };
        let index = match index {
            Some(i) => i,
            None => {
                let id = match &message {
                    Message::Request(r) => r.call_id(),
                    Message::Response(r) => r.call_id(),
                };
                let Some(id) = id else {
                    tracing::warn!(%from, "dropped a SIP message without a Call-ID");
                    return;
                };
                match self.by_call_id.get(id) {
                    Some(index) => *index,
                    None => return,
                }
            }
        };
        let key = self.key(index);
        let now = Instant::now();
        if let Some(a) = self.get_mut(key) {
            a.caller.handle_sip(now.into_std(), message);
            self.service(key, now);
        }
    }

    fn handle_rtp(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(index) = self.by_rtp.get(&from).copied() else {
            return;
        };
        let key = self.key(index);
        let now = Instant::now();
        if let Some(a) = self.get_mut(key) {
            a.caller.handle_rtp(now.into_std(), bytes);
            self.service(key, now);
        }
    }

    fn on_wake(&mut self, key: Key, t: Instant, now: Instant) {
        let Some(a) = self.get_mut(key) else {
            return;
        };
        if a.scheduled != Some(t) {
            return; // superseded
        }
        a.scheduled = None;
        let give_up = a.hung_up_at.map_or(a.deadline, |h| h + HANG_UP_GRACE);
        if now >= give_up {
            if a.hung_up_at.is_some() {
                tracing::warn!(call_id = &*a.call_id, "no answer to our hang-up: giving up");
                self.complete(key, now);
                return;
            }
            tracing::warn!(call_id = &*a.call_id, timeout = ?a.timeout, "call timeout: hanging up");
            a.timed_out = true;
            a.caller.hang_up(now.into_std());
            a.hung_up_at = Some(now);
        } else {
            a.caller.handle_timeout(now.into_std());
        }
        self.service(key, now);
    }

    /// Sends what the call has to send, ends it if it is over, and queues
    /// its next wake-up.
    fn service(&mut self, key: Key, now: Instant) {
        let remote = self.remote;
        let outbox = &mut self.outbox;
        let send_by = &mut self.send_by;
        let Some(a) = self
            .slots
            .get_mut(key.index)
            .and_then(Option::as_mut)
            .filter(|_| self.generations[key.index] == key.generation)
        else {
            return;
        };
        while let Some(o) = a.caller.poll_output() {
            let to = match &o {
                Output::Sip(_) => remote,
                Output::Rtp { to, .. } => *to,
            };
            send_by.get_or_insert(now + SEND_WINDOW);
            outbox.push((o, to));
        }
        if a.rtp_peer.is_none()
            && let Some(peer) = a.caller.remote_rtp()
        {
            a.rtp_peer = Some(peer);
            self.by_rtp.insert(peer, key.index);
        }
        let finished = a.caller.is_finished();
        if finished && a.caller.awaits_late_answer() {
            a.hung_up_at.get_or_insert(now);
        }
        if finished && !a.caller.awaits_late_answer() {
            self.complete(key, now);
            return;
        }
        let give_up = a.hung_up_at.map_or(a.deadline, |h| h + HANG_UP_GRACE);
        let wake = a
            .caller
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or(give_up)
            .min(give_up);
        // A wake-up already queued for no later than this one stands: when
        // it comes early, the core has nothing to do and the call is queued
        // again for its real deadline. Most calls end before their first
        // timer (a retransmission's), so the queue holds few stale entries.
        if a.scheduled.is_none_or(|s| wake < s) {
            a.scheduled = Some(wake);
            if wake <= now {
                self.due.push((wake, key));
            } else {
                self.wakes.push(Reverse((wake, key)));
            }
        }
    }

    fn complete(&mut self, key: Key, now: Instant) {
        if self.get_mut(key).is_none() {
            return;
        }
        let Some(mut a) = self.slots[key.index].take() else {
            return;
        };
        self.free.push(key.index);
        self.by_call_id.remove(&a.call_id);
        if let Some(peer) = a.rtp_peer {
            self.by_rtp.remove(&peer);
        }
        let report = a.caller.into_report(now.into_std());
        let result = if a.timed_out {
            Err(CallError::Timeout {
                timeout: a.timeout,
                report: Box::new(report),
            })
        } else {
            Ok(report)
        };
        if let Some(reply) = a.reply.take() {
            reply.send(result);
        }
    }
}

/// Resolves once `stop` turns true; never if its sender is gone without
/// saying so (nobody can ask for a stop any more).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard is dropped here, before any caller's next await.
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
