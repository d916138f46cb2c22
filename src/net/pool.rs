//! Many caller cores on a few shared sockets: the load generator's engine.
//!
//! [`super::caller::place_call`] binds two sockets per call, which at
//! thousands of calls per second costs more system time than the calls
//! themselves. A [`CallerPool`] runs one worker task per core; each worker
//! owns one SIP and one RTP socket on loopback (or the route to the
//! target), keeps its calls' [`Caller`] cores in a map by Call-ID, routes
//! SIP by Call-ID and RTP by the bridge's source address (one RTP port per
//! call at the bridge), and sleeps until the earliest deadline of its calls.
//! A reader task per socket drains the kernel buffer into a queue at once,
//! so a busy worker does not make the kernel drop datagrams.
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

type Reply = oneshot::Sender<Result<CallReport, CallError>>;

/// The handle calls are placed through; cheap to clone.
#[derive(Clone)]
pub struct CallerPool {
    workers: Arc<[mpsc::UnboundedSender<(PoolCall, Reply)>]>,
    next: Arc<AtomicUsize>,
}

impl CallerPool {
    /// Binds `workers` pairs of sockets on `local_ip` and starts the
    /// workers. They run until every handle is dropped and their calls
    /// are over; `stop` turning true hangs every call up.
    pub async fn start(
        remote: SocketAddr,
        local_ip: IpAddr,
        workers: usize,
        prompts: Arc<PromptMatchers>,
        stop: watch::Receiver<bool>,
    ) -> Result<CallerPool, CallError> {
        let mut senders = Vec::with_capacity(workers.max(1));
        for _ in 0..workers.max(1) {
            let sip = bind(local_ip).await?;
            let rtp = bind(local_ip).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = Worker::new(sip, rtp, remote, prompts.clone())?;
            tokio::spawn(worker.run(rx, stop.clone()));
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
        self.workers[n].send((call, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn bind(ip: IpAddr) -> Result<Arc<UdpSocket>, CallError> {
    let addr = SocketAddr::new(ip, 0);
    UdpSocket::bind(addr)
        .await
        .map(Arc::new)
        .map_err(|source| CallError::Bind { addr, source })
}

/// What a reader task hands its worker.
enum Datagram {
    Sip(Vec<u8>, SocketAddr),
    Rtp(Vec<u8>, SocketAddr),
}

/// Drains one socket into the worker's queue until the worker is gone.
async fn read_socket(socket: Arc<UdpSocket>, sip: bool, tx: mpsc::UnboundedSender<Datagram>) {
    let mut buf = vec![0u8; Limits::default().max_message + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                let bytes = buf[..len].to_vec();
                let d = if sip {
                    Datagram::Sip(bytes, from)
                } else {
                    Datagram::Rtp(bytes, from)
                };
                if tx.send(d).is_err() {
                    return;
                }
            }
            // ICMP errors from earlier sends (a closed port at the bridge)
            // are the calls' timers' business.
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "the caller pool can't receive");
                return;
            }
        }
    }
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
    reply: Option<Reply>,
    deadline: Instant,
    timeout: Duration,
    hung_up_at: Option<Instant>,
    timed_out: bool,
    /// The wake-up queued for this call (older queue entries are stale).
    scheduled: Option<Instant>,
    rtp_peer: Option<SocketAddr>,
}

struct Worker {
    sip: Arc<UdpSocket>,
    rtp: Arc<UdpSocket>,
    local_sip: SocketAddr,
    local_rtp: SocketAddr,
    remote: SocketAddr,
    prompts: Arc<PromptMatchers>,
    calls: HashMap<String, Active>,
    by_rtp: HashMap<SocketAddr, String>,
    wakes: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Worker {
    fn new(
        sip: Arc<UdpSocket>,
        rtp: Arc<UdpSocket>,
        remote: SocketAddr,
        prompts: Arc<PromptMatchers>,
    ) -> Result<Worker, CallError> {
        let addr = |s: &UdpSocket| {
            s.local_addr().map_err(|source| CallError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
        };
        Ok(Worker {
            local_sip: addr(&sip)?,
            local_rtp: addr(&rtp)?,
            sip,
            rtp,
            remote,
            prompts,
            calls: HashMap::new(),
            by_rtp: HashMap::new(),
            wakes: BinaryHeap::new(),
        })
    }

    async fn run(
        mut self,
        mut calls: mpsc::UnboundedReceiver<(PoolCall, Reply)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let (tx, mut datagrams) = mpsc::unbounded_channel();
        let readers = [
            tokio::spawn(read_socket(self.sip.clone(), true, tx.clone())),
            tokio::spawn(read_socket(self.rtp.clone(), false, tx)),
        ];
        let mut open = true;
        let mut stopping = false;
        // Ends when no handle can send calls and none is left; each turn
        // handles one event.
        while open || !self.calls.is_empty() {
            // Timers first: under a steady stream of datagrams a select
            // that prefers them would never get to the deadlines.
            self.run_due(Instant::now()).await;
            let next = self.wakes.peek().map(|Reverse((t, _))| *t);
            tokio::select! {
                () = stopped(&mut stop), if !stopping => {
                    stopping = true;
                    let now = Instant::now();
                    let ids: Vec<String> = self.calls.keys().cloned().collect();
                    for id in ids {
                        if let Some(a) = self.calls.get_mut(&id) && a.hung_up_at.is_none() {
                            a.caller.hang_up(now.into_std());
                            a.hung_up_at = Some(now);
                        }
                        self.service(&id, now).await;
                    }
                }
                d = datagrams.recv() => match d {
                    Some(Datagram::Sip(bytes, from)) => self.handle_sip(&bytes, from).await,
                    Some(Datagram::Rtp(bytes, from)) => {
                        if let Some(id) = self.by_rtp.get(&from).cloned()
                            && let Some(a) = self.calls.get_mut(&id)
                        {
                            a.caller.handle_rtp(Instant::now().into_std(), &bytes);
                            self.service(&id, Instant::now()).await;
                        }
                    }
                    None => break,
                },
                c = calls.recv(), if open => match c {
                    Some((call, reply)) => self.start(call, reply, stopping).await,
                    None => open = false,
                },
                () = sleep_until(next) => {}
            }
        }
        for r in readers {
            r.abort();
        }
    }

    /// Runs every wake-up that is due at `now`.
    async fn run_due(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.wakes.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, id))) = self.wakes.pop() else {
                break;
            };
            self.on_wake(&id, t, now).await;
        }
    }

    async fn start(&mut self, call: PoolCall, reply: Reply, stopping: bool) {
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
        let id = caller.call_id().to_string();
        if self.calls.contains_key(&id) {
            let _ = reply.send(Err(CallError::BadTarget {
                uri: format!("a second call with Call-ID {id}: give each call its own seed"),
            }));
            return;
        }
        let mut hung_up_at = None;
        if stopping {
            caller.hang_up(now.into_std());
            hung_up_at = Some(now);
        }
        self.calls.insert(
            id.clone(),
            Active {
                caller,
                reply: Some(reply),
                deadline: now + call.timeout,
                timeout: call.timeout,
                hung_up_at,
                timed_out: false,
                scheduled: None,
                rtp_peer: None,
            },
        );
        self.service(&id, now).await;
    }

    async fn handle_sip(&mut self, bytes: &[u8], from: SocketAddr) {
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return; // RFC 5626 keep-alive
        }
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
        let id = match &message {
            Message::Request(r) => r.call_id(),
            Message::Response(r) => r.call_id(),
        }
        .map(str::to_string);
        let Some(id) = id else {
            tracing::warn!(%from, "dropped a SIP message without a Call-ID");
            return;
        };
        let now = Instant::now();
        match self.calls.get_mut(&id) {
            Some(a) => a.caller.handle_sip(now.into_std(), message),
            // A retransmission for a call that is over: its timers are gone.
            None => return,
        }
        self.service(&id, now).await;
    }

    async fn on_wake(&mut self, id: &str, t: Instant, now: Instant) {
        let Some(a) = self.calls.get_mut(id) else {
            return;
        };
        if a.scheduled != Some(t) {
            return; // superseded
        }
        a.scheduled = None;
        let give_up = a.hung_up_at.map_or(a.deadline, |h| h + HANG_UP_GRACE);
        if now >= give_up {
            if a.hung_up_at.is_some() {
                tracing::warn!(call_id = id, "no answer to our hang-up: giving up");
                self.complete(id, now);
                return;
            }
            tracing::warn!(call_id = id, timeout = ?a.timeout, "call timeout: hanging up");
            a.timed_out = true;
            a.caller.hang_up(now.into_std());
            a.hung_up_at = Some(now);
        } else {
            a.caller.handle_timeout(now.into_std());
        }
        self.service(id, now).await;
    }

    /// Sends what the call has to send, ends it if it is over, and queues
    /// its next wake-up.
    async fn service(&mut self, id: &str, now: Instant) {
        let Some(a) = self.calls.get_mut(id) else {
            return;
        };
        let mut out = Vec::new();
        while let Some(o) = a.caller.poll_output() {
            out.push(o);
        }
        if a.rtp_peer.is_none()
            && let Some(peer) = a.caller.remote_rtp()
        {
            a.rtp_peer = Some(peer);
            self.by_rtp.insert(peer, id.to_string());
        }
        let a = match self.calls.get_mut(id) {
            Some(a) => a,
            None => return,
        };
        let finished = a.caller.is_finished();
        if finished && a.caller.awaits_late_answer() {
            a.hung_up_at.get_or_insert(now);
        }
        let done = finished && !a.caller.awaits_late_answer();
        if !done {
            let give_up = a.hung_up_at.map_or(a.deadline, |h| h + HANG_UP_GRACE);
            let wake = a
                .caller
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or(give_up)
                .min(give_up);
            if a.scheduled != Some(wake) {
                a.scheduled = Some(wake);
                self.wakes.push(Reverse((wake, id.to_string())));
            }
        }
        for o in out {
            let (socket, bytes, to) = match o {
                Output::Sip(bytes) => (&self.sip, bytes, self.remote),
                Output::Rtp { to, bytes } => (&self.rtp, bytes, to),
            };
            if let Err(e) = socket.send_to(&bytes, to).await {
                // A lost datagram: the core's retransmissions and timers decide.
                tracing::warn!(%to, error = %e, "the caller pool could not send");
            }
        }
        if done {
            self.complete(id, now);
        }
    }

    fn complete(&mut self, id: &str, now: Instant) {
        let Some(mut a) = self.calls.remove(id) else {
            return;
        };
        if let Some(peer) = a.rtp_peer {
            self.by_rtp.remove(&peer);
        }
        let report = a.caller.report_at(now.into_std());
        let result = if a.timed_out {
            Err(CallError::Timeout {
                timeout: a.timeout,
                report: Box::new(report),
            })
        } else {
            Ok(report)
        };
        if let Some(reply) = a.reply.take() {
            let _ = reply.send(result);
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

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
