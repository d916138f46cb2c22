//! The SIP side of `dialin serve`: one UDP socket and one TCP listener on
//! the same address, a router that parses each datagram or framed TCP
//! message and hands it to the call it belongs to (by Call-ID), and the
//! answers that need no call: OPTIONS 200, 404 for a number that is not the
//! tenant's, 405, 481, 400, 503 (overload, shutdown) and 403 for a source
//! or caller ID that guessing protection blocked ([`crate::guard`]).
//!
//! It also enforces the protocol limits ([`SipOptions`]: message size,
//! header count and line length, TCP connections per source, the TCP idle
//! timeout, calls per source), answering what can be answered (400, 413,
//! 414, 503) and counting every hit for the metrics ([`LIMIT_NAMES`]).
//!
//! The decisions about a call are in [`crate::call`]; this module only
//! moves bytes. Responses go back to where the request came from (the UDP
//! source address, or the TCP connection it arrived on).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::admin::Service;
use crate::admin::ids::PhoneNumber;
use crate::attendant;
use crate::call::{ALLOW, Call, CallConfig, KeyFields, SipTransmit, Source, options_response};
use crate::media::prompts::PromptCatalog;
use crate::sip::admission::{Admit, PerSource};
use crate::sip::framing::{FrameError, Limits, StreamFramer, check_datagram, check_lines};
use crate::sip::linger::{LingerMatch, LingerTable};
use crate::sip::message::{self, Message, Method, Request, SipHeaders};
use crate::sip::transaction::{TimerConfig, Transport};

use crate::records::{CallLog, TimeAnchor};

use super::events::EventSink;
use super::guard::GuardHandle;
use super::rtp::{BridgeMonitor, CallInput, CallShared, Roster, RtpPorts, run_call};

/// A call's inbox: SIP routed to it. Full means the call is far behind; a
/// datagram is dropped then (the peer retransmits).
const CALL_INBOX: usize = 64;
/// Messages from TCP connections waiting for the router.
const TCP_INBOX: usize = 1024;
/// Retry-After (seconds) on 503s.
const RETRY_AFTER: &str = "5";
/// The reason phrase of a guard's 403.
const BLOCKED_REASON: &str = "Forbidden";
/// Binding UDP and TCP on one ephemeral port: tries before giving up.
const BIND_TRIES: usize = 20;
/// Datagrams the router reads in one wake-up after the first (bounded so
/// TCP, timers and shutdown get their turn).
const DATAGRAMS_PER_WAKE: usize = 63;
/// The linger table is swept at most this often: a lookup ignores what is
/// over anyway, so a late sweep only holds memory a little longer, and the
/// router does not wake once per ended call.
const LINGER_SWEEP: Duration = Duration::from_secs(1);

/// How the SIP side runs.
#[derive(Debug, Clone)]
pub struct SipOptions {
    /// UDP and TCP listen here.
    pub addr: SocketAddr,
    /// RTP ports, one per call, on the same IP; `0..=0` lets the OS choose.
    pub rtp_ports: RangeInclusive<u16>,
    /// Calls at once; more get 503 with Retry-After.
    pub max_calls: usize,
    pub prompts: Arc<PromptCatalog>,
    /// Time prompts but send no audio.
    pub mute_prompts: bool,
    pub timers: TimerConfig,
    pub attendant: attendant::Config,
    /// At shutdown, how long to wait for calls to end after their BYEs.
    pub drain: Duration,
    /// Ring (180 Ringing) this long before answering; zero answers at once.
    pub ring: Duration,
    /// Where ended calls' records go (shared with the admin API).
    pub log: Arc<CallLog>,
    /// The events file, if any.
    pub events: Option<EventSink>,
    /// Guessing protection; `None` turns it off (`--guard off`).
    pub guard: Option<crate::guard::Config>,
    /// The receive and send buffer asked for on the SIP UDP socket, in
    /// bytes; 0 keeps the OS default. A burst of datagrams (thousands of
    /// calls a second) waits here while the router is busy: too small a
    /// buffer drops them and the callers retransmit.
    pub socket_buffer: usize,
    /// Message size, header count and header line length limits
    /// (`--max-message`, `--max-headers`, `--max-header-line`).
    pub limits: Limits,
    /// Open TCP connections one source address may hold; more are closed
    /// as soon as they are accepted. 0: no limit.
    pub tcp_per_source: usize,
    /// A TCP connection with no bytes received for this long and no call
    /// on it is closed; a CRLF keep-alive counts as bytes. Zero: never.
    pub tcp_idle: Duration,
    /// Calls one source address may hold at once; more INVITEs get 503
    /// with Retry-After. 0: no limit.
    pub calls_per_source: usize,
}

/// The default SIP UDP socket buffer asked for: 4 MiB.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Default `tcp_per_source`: above `calls_per_source`, because SIPp
/// (`-t tn`) and dialin's own caller open one connection per call.
pub const DEFAULT_TCP_PER_SOURCE: usize = 128;
/// Default `tcp_idle`.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(120);
/// Default `calls_per_source`: a fifth of the default `max_calls`, so one
/// address cannot take the whole bridge, yet a load generator on one host
/// (SIPp, `dialin load`) gets 100 calls at once.
pub const DEFAULT_CALLS_PER_SOURCE: usize = 100;

/// The limits `GET /api/metrics` counts hits of
/// (`dialin_limit_hits_total{limit}`), in the order of
/// [`super::rtp::BridgeStats::limit_hits`]: the `dialin serve` flag that
/// sets each, or the rule (`content-length`, the fixed
/// `max-header-section`).
pub const LIMIT_NAMES: [&str; 10] = [
    "max-message",
    "max-header-section",
    "max-headers",
    "max-header-line",
    "content-length",
    "tcp-per-source",
    "tcp-idle",
    "calls-per-source",
    "max-calls",
    "rtp-ports",
];

/// The buffer sizes the kernel granted the SIP UDP socket, as it reports
/// them (Linux reports twice what it reserves for data: the doubling covers
/// its bookkeeping, socket(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    pub recv: usize,
    pub send: usize,
}

impl SipOptions {
    pub fn new(addr: SocketAddr, prompts: Arc<PromptCatalog>) -> SipOptions {
        SipOptions {
            addr,
            rtp_ports: 20000..=20999,
            max_calls: 500,
            prompts,
            mute_prompts: false,
            timers: TimerConfig::default(),
            attendant: attendant::Config::default(),
            drain: Duration::from_secs(5),
            ring: Duration::ZERO,
            log: Arc::new(CallLog::default()),
            events: None,
            guard: Some(crate::guard::Config::default()),
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            limits: Limits::default(),
            tcp_per_source: DEFAULT_TCP_PER_SOURCE,
            tcp_idle: DEFAULT_TCP_IDLE,
            calls_per_source: DEFAULT_CALLS_PER_SOURCE,
        }
    }

    /// Checks the limits; the error names the flag and the valid range.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate().map_err(anyhow::Error::msg)
    }
}

/// One open TCP connection: its write queue, and how many calls started
/// on it (a connection with a call is never idle).
#[derive(Clone)]
struct TcpConn {
    tx: mpsc::Sender<Arc<[u8]>>,
    calls: Arc<AtomicUsize>,
}

/// Each open TCP connection, by peer address. A std Mutex: looked up and
/// cloned out, never held across an await.
type TcpWriters = Arc<Mutex<HashMap<SocketAddr, TcpConn>>>;

/// Sends SIP bytes to a UDP address or down a TCP connection.
#[derive(Clone)]
pub struct Outbound {
    udp: Arc<UdpSocket>,
    tcp: TcpWriters,
}

impl Outbound {
    /// Sends without waiting: a full UDP buffer or TCP queue drops the
    /// message, as the network could (UDP retransmits; TCP peers time out).
    pub fn send(&self, x: &SipTransmit) {
        match x.to.transport {
            Transport::Unreliable => {
                if let Err(e) = self.udp.try_send_to(&x.bytes, x.to.addr) {
                    tracing::debug!(error = %e, to = %x.to.addr, "SIP send over UDP failed");
                }
            }
            Transport::Reliable => {
                let writer = {
                    let map = self.tcp.lock().unwrap_or_else(|e| e.into_inner());
                    map.get(&x.to.addr).map(|c| c.tx.clone())
                };
                match writer {
                    Some(w) => {
                        if w.try_send(x.bytes.clone()).is_err() {
                            tracing::debug!(to = %x.to.addr, "TCP connection queue full or closed");
                        }
                    }
                    None => tracing::debug!(to = %x.to.addr, "no TCP connection to send on"),
                }
            }
        }
    }

    fn reply(&self, to: Source, bytes: Vec<u8>) {
        self.send(&SipTransmit {
            to,
            bytes: bytes.into(),
        });
    }
}

/// The bound SIP side, ready to run.
pub struct SipServer {
    shared: Arc<CallShared>,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    addr: SocketAddr,
    options: SipOptions,
    service: Arc<Service>,
    buffers: SocketBuffers,
}

/// Binds the SIP UDP socket with the buffer sizes asked for (0: the OS
/// default). The kernel may grant less (Linux caps at `net.core.rmem_max`
/// and `net.core.wmem_max`): what it granted is returned and logged, and a
/// refusal to set a size is a warning, not an error.
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<(UdpSocket, SocketBuffers)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer > 0 {
        if let Err(e) = socket.set_recv_buffer_size(buffer) {
            tracing::warn!(error = %e, bytes = buffer, "SIP UDP receive buffer not set");
        }
        if let Err(e) = socket.set_send_buffer_size(buffer) {
            tracing::warn!(error = %e, bytes = buffer, "SIP UDP send buffer not set");
        }
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let buffers = SocketBuffers {
        recv: socket.recv_buffer_size()?,
        send: socket.send_buffer_size()?,
    };
    let udp = UdpSocket::from_std(socket.into())?;
    Ok((udp, buffers))
}

/// Logs the buffers granted; a warning when the kernel granted less than
/// asked for (Linux reports double the data size it reserves, so granted
/// below twice the request means it was capped).
fn log_buffers(asked: usize, granted: SocketBuffers) {
    let capped = |got: usize| cfg!(target_os = "linux") && got < asked.saturating_mul(2);
    if asked > 0 && (capped(granted.recv) || capped(granted.send)) {
        tracing::warn!(
            asked,
            recv = granted.recv,
            send = granted.send,
            "SIP UDP socket buffers capped by the kernel: raise net.core.rmem_max and net.core.wmem_max (sysctl) to get --sip-socket-buffer"
        );
    } else {
        tracing::info!(
            asked,
            recv = granted.recv,
            send = granted.send,
            "SIP UDP socket buffers"
        );
    }
}

impl SipServer {
    /// Binds UDP and TCP on `options.addr` (with port 0: one free port for both).
    pub async fn bind(options: SipOptions, service: Arc<Service>) -> anyhow::Result<SipServer> {
        options.validate()?;
        let mut last_error = None;
        for _ in 0..BIND_TRIES {
            let (udp, buffers) = bind_udp(options.addr, options.socket_buffer)
                .with_context(|| format!("binding SIP over UDP to {}", options.addr))?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let udp = Arc::new(udp);
                    let shared = Arc::new(CallShared {
                        out: Outbound {
                            udp: udp.clone(),
                            tcp: Arc::new(Mutex::new(HashMap::new())),
                        },
                        directory: service.directory().clone(),
                        roster: Roster::default(),
                        active: AtomicUsize::new(0),
                        joined: AtomicU64::new(0),
                        join_signal: tokio::sync::Notify::new(),
                        bridge_hangups: AtomicU64::new(0),
                        log: options.log.clone(),
                        events: options.events.clone(),
                        ended: AtomicU64::new(0),
                        end_signal: tokio::sync::Notify::new(),
                        guard: options
                            .guard
                            .map(|c| Arc::new(GuardHandle::new(c, options.events.clone()))),
                        stats: Default::default(),
                        linger: Mutex::new(LingerTable::new()),
                        linger_signal: tokio::sync::Notify::new(),
                        limits: options.limits,
                    });
                    log_buffers(options.socket_buffer, buffers);
                    return Ok(SipServer {
                        shared,
                        udp,
                        tcp,
                        addr,
                        options,
                        service,
                        buffers,
                    });
                }
                Err(e) if options.addr.port() == 0 => last_error = Some(e),
                Err(e) => {
                    return Err(e).with_context(|| format!("binding SIP over TCP to {addr}"));
                }
            }
        }
        Err(last_error.map_or_else(
            || anyhow::anyhow!("no port free for both UDP and TCP"),
            anyhow::Error::from,
        ))
        .with_context(|| format!("binding SIP to {}", options.addr))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The UDP socket's buffer sizes, as the kernel granted them.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// Watches the calls of this bridge (works while and after it runs).
    pub fn monitor(&self) -> BridgeMonitor {
        BridgeMonitor(self.shared.clone())
    }

    /// Serves until `shutdown` resolves; then answers new calls 503, ends
    /// the calls in progress with BYE, and returns when they are done (or
    /// after the drain time).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let mut router = Router {
            shared: self.shared.clone(),
            service: self.service.clone(),
            ports: RtpPorts::new(self.addr.ip(), self.options.rtp_ports.clone()),
            options: self.options.clone(),
            addr: self.addr,
            calls: HashMap::new(),
            tasks: JoinSet::new(),
            next_call: AtomicU64::new(1),
            draining: false,
            call_sources: PerSource::new(self.options.calls_per_source),
            call_slots: HashMap::new(),
            refusals: Throttle::default(),
        };
        if let Some(ports) = router.ports.capacity()
            && ports < self.options.max_calls
        {
            tracing::warn!(
                ports,
                max_calls = self.options.max_calls,
                "--rtp-ports has fewer ports than --max-calls allows calls (one even port per call): calls past {ports} get 503; widen --rtp-ports"
            );
        }
        let (tcp_tx, mut tcp_rx) = mpsc::channel::<(Vec<u8>, Source)>(TCP_INBOX);
        let mut connections = JoinSet::new();
        let mut tcp_sources = PerSource::new(self.options.tcp_per_source);
        let mut connection_sources: HashMap<tokio::task::Id, std::net::IpAddr> = HashMap::new();
        // One byte more than the limit, so a datagram over it shows (and
        // no more than a UDP datagram can carry).
        let mut buf = vec![0u8; self.options.limits.max_message.min(65_535) + 1];
        let mut shutdown = std::pin::pin!(shutdown);
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            if router.draining && router.tasks.is_empty() {
                break;
            }
            let drain_sleep = tokio::time::sleep_until(
                drain_until
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
            );
            // Blocks end and the alarm clears on time, not only when the
            // next INVITE or failure comes.
            let guard_deadline = router.shared.guard.as_ref().and_then(|g| g.next_deadline());
            let guard_sleep = tokio::time::sleep_until(guard_deadline.map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(3600),
                tokio::time::Instant::from_std,
            ));
            let linger_deadline = router
                .shared
                .linger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .poll_timeout()
                .map(|at| tokio::time::Instant::from_std(at).max(last_sweep + LINGER_SWEEP));
            let linger_sleep = tokio::time::sleep_until(
                linger_deadline
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                received = self.udp.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        router.handle_datagram(&buf[..n], from).await;
                        // Drain what else is queued in this wake-up: the
                        // socket buffer empties faster than one select! per
                        // datagram, so bursts are not dropped.
                        for _ in 0..DATAGRAMS_PER_WAKE {
                            match self.udp.try_recv_from(&mut buf) {
                                Ok((n, from)) => router.handle_datagram(&buf[..n], from).await,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(e) => {
                                    tracing::debug!(error = %e, "UDP receive failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
                },
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => match tcp_sources.acquire(peer.ip()) {
                        Admit::Yes => {
                            let task = connections.spawn(run_connection(
                                stream,
                                peer,
                                tcp_tx.clone(),
                                router.shared.clone(),
                                self.options.tcp_idle,
                            ));
                            connection_sources.insert(task.id(), peer.ip());
                        }
                        Admit::No { first } => {
                            router.shared.stats.limit_hit("tcp-per-source");
                            if first {
                                tracing::warn!(
                                    %peer,
                                    limit = self.options.tcp_per_source,
                                    "TCP connections from this source at --tcp-per-source: new ones are closed"
                                );
                            }
                            drop(stream);
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "TCP accept failed"),
                },
                Some((bytes, source)) = tcp_rx.recv() => router.handle_bytes(&bytes, source).await,
                Some(done) = router.tasks.join_next_with_id(), if !router.tasks.is_empty() => {
                    router.shared.stats.call_tasks.fetch_sub(1, Ordering::Relaxed);
                    let id = match done {
                        Ok((id, call_id)) => {
                            router.calls.remove(&call_id);
                            id
                        }
                        Err(e) => e.id(),
                    };
                    router.call_task_ended(id);
                }
                () = linger_sleep, if linger_deadline.is_some() => {
                    let now = tokio::time::Instant::now();
                    last_sweep = now;
                    router
                        .shared
                        .linger
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .handle_timeout(now.into_std());
                }
                // The table was empty when the deadline above was read.
                () = router.shared.linger_signal.notified(), if linger_deadline.is_none() => {}
                Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    if let Some(ip) = connection_sources.remove(&id) {
                        tcp_sources.release(ip);
                    }
                }
                () = &mut shutdown, if !router.draining => {
                    tracing::info!(calls = router.calls.len(), "SIP: refusing new calls, ending calls in progress");
                    router.draining = true;
                    drain_until = Some(tokio::time::Instant::now() + router.options.drain);
                    for handle in router.calls.values() {
                        let _ = handle.try_send(CallInput::Shutdown);
                    }
                }
                () = guard_sleep, if guard_deadline.is_some() => {
                    if let Some(guard) = &router.shared.guard {
                        guard.tick();
                    }
                }
                () = drain_sleep, if drain_until.is_some() => {
                    tracing::warn!(calls = router.tasks.len(), "calls still running at the end of the drain time: stopped");
                    router.tasks.abort_all();
                    break;
                }
            }
        }
        connections.abort_all();
        Ok(())
    }
}

/// Reads one TCP connection: frames messages and hands them to the router;
/// a writer task sends what calls and the router address to this peer.
/// A message over the header limits is answered and the connection goes
/// on; one that breaks the framing closes it (after a 413 when it was
/// only too large). With no bytes for `idle` and no call on it, the
/// connection is closed (zero: never).
async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    to_router: mpsc::Sender<(Vec<u8>, Source)>,
    shared: Arc<CallShared>,
    idle: Duration,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Arc<[u8]>>(CALL_INBOX);
    let calls = Arc::new(AtomicUsize::new(0));
    shared
        .out
        .tcp
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            peer,
            TcpConn {
                tx: tx.clone(),
                calls: calls.clone(),
            },
        );
    let write_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let source = Source {
        transport: Transport::Reliable,
        addr: peer,
    };
    let limits = shared.limits;
    let mut framer = StreamFramer::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    let mut pongs = 0;
    let mut idle_since = tokio::time::Instant::now();
    loop {
        // `read` is cancel safe: a timeout loses no bytes.
        let read = if idle.is_zero() {
            reader.read(&mut buf).await
        } else {
            match tokio::time::timeout_at(idle_since + idle, reader.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) if calls.load(Ordering::Acquire) > 0 => {
                    idle_since = tokio::time::Instant::now();
                    continue;
                }
                Err(_) => {
                    shared.stats.limit_hit("tcp-idle");
                    tracing::debug!(%peer, ?idle, "TCP connection idle with no call: closing");
                    break;
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        idle_since = tokio::time::Instant::now();
        framer.push(&buf[..n]);
        let mut broken = false;
        while let Some(message) = framer.next_message() {
            match message {
                Ok(bytes) => {
                    // Framing is intact: the message is answered, the
                    // connection goes on.
                    if let Err(e) = check_lines(&bytes, limits) {
                        reject_message(&shared, &bytes, source, &e);
                        continue;
                    }
                    if to_router.send((bytes, source)).await.is_err() {
                        broken = true;
                        break;
                    }
                }
                Err(e) => {
                    // RFC 3261 §18.3: no way to find the next message: close,
                    // after answering a message that was only too large.
                    match framer.take_refused_head() {
                        Some(head) => reject_message(&shared, &head, source, &e),
                        None => {
                            shared.stats.limit_hit(e.limit_name());
                            tracing::warn!(error = %e, %peer, "TCP stream lost its framing: closing");
                        }
                    }
                    broken = true;
                    break;
                }
            }
        }
        // RFC 5626 §3.5.1: a CRLFCRLF ping gets a CRLF pong. The framer
        // counts pings as it skips them in `next_message`, so this comes
        // after: a ping is answered when it arrives, not at the next read.
        while pongs < framer.keepalives() {
            pongs += 1;
            let _ = tx.try_send(Arc::from(&b"\r\n"[..]));
        }
        if broken {
            break;
        }
    }
    shared
        .out
        .tcp
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&peer);
    drop(tx);
    let _ = write_task.await;
}

/// The routing table and what a new call needs.
struct Router {
    shared: Arc<CallShared>,
    service: Arc<Service>,
    ports: RtpPorts,
    options: SipOptions,
    addr: SocketAddr,
    calls: HashMap<String, mpsc::Sender<CallInput>>,
    tasks: JoinSet<String>,
    next_call: AtomicU64,
    draining: bool,
    /// Calls held per source (`--calls-per-source`).
    call_sources: PerSource,
    /// What each call task holds, to give back when it ends.
    call_slots: HashMap<tokio::task::Id, CallSlot>,
    /// The 503 warning, at most once a second.
    refusals: Throttle,
}

/// A warning that may repeat thousands of times a second (every INVITE
/// refused under overload): logged at most once per [`Throttle::EVERY`],
/// with how many were left out since the last one logged.
#[derive(Debug, Default)]
struct Throttle {
    state: Mutex<(Option<tokio::time::Instant>, u64)>,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(1);

    /// `Some(left out)` when this occurrence is to be logged.
    fn hit(&self, now: tokio::time::Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, left_out) = &mut *state;
        if last.is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY) {
            *left_out += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(left_out))
    }
}

/// What a call task holds: a slot of its source, and a call on the TCP
/// connection it came in on.
struct CallSlot {
    ip: std::net::IpAddr,
    connection: Option<Arc<AtomicUsize>>,
    /// The call's RTP port, given back when its task ends (its socket is
    /// closed by then).
    rtp_port: Option<u16>,
}

fn random_tag() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// Whether the Request-URI names one of `numbers`: the user part of a
/// `sip:` URI with or without `+`, or a `tel:` number.
pub fn dials_number(request: &Request, numbers: &[PhoneNumber]) -> bool {
    let Some(user) = request.uri_user() else {
        return false;
    };
    let user = user.split(';').next().unwrap_or_default();
    match user.parse::<PhoneNumber>() {
        Ok(n) => numbers.contains(&n),
        Err(_) => false,
    }
}

/// A message that breaks a limit or the Content-Length rule: a request
/// whose headers can be read gets the limit's response (RFC 3261 §18.3:
/// 400 when the body is shorter than its Content-Length; 413 when too
/// large, §21.4.11; 414 for a start line over the line limit, §21.4.12;
/// 400 "Too Many Headers" or "Header Line Too Long"); anything else (a
/// response, no Via, From, To, Call-ID or CSeq to copy) is dropped. Every
/// hit is counted.
fn reject_message(shared: &CallShared, bytes: &[u8], source: Source, error: &FrameError) {
    shared.stats.limit_hit(error.limit_name());
    tracing::warn!(%error, from = %source.addr, "SIP message refused");
    let request = match message::parse(bytes) {
        Ok(Message::Request(request)) => Some(request),
        Ok(Message::Response(_)) => None,
        Err(e) => e.request().cloned(),
    };
    if let Some(request) = request {
        shared.out.reply(
            source,
            request
                .response(error.response_code(), error.reason_phrase())
                .to_tag(&random_tag())
                .to_bytes(),
        );
    }
}

/// Checks and parses a message the router handed to a call as bytes
/// ([`CallInput::Bytes`]), answering what cannot be used the way the
/// router would have: a datagram that breaks the size rules, or an
/// unparseable message, gets its error response (if one can be formed)
/// and `None`.
pub(crate) fn read_call_message(
    shared: &CallShared,
    bytes: &[u8],
    source: Source,
) -> Option<Message> {
    let out = &shared.out;
    if source.transport == Transport::Unreliable
        && let Err(e) = check_datagram(bytes, shared.limits)
    {
        reject_message(shared, bytes, source, &e);
        return None;
    }
    match message::parse(bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, from = %source.addr, "unparseable SIP message");
            if let Some(response) = e.error_response() {
                out.reply(source, response.to_tag(&random_tag()).to_bytes());
            }
            None
        }
    }
}

/// A request for a Call-ID no call task has, answered from the linger
/// table if the Call-ID lingers there: an absorbed retransmission gets its
/// transaction's last response (RFC 3261 §17.2.2), sent to where it came
/// from. `None` when the Call-ID does not linger: the request is outside
/// any call.
pub(crate) fn answer_lingering(
    shared: &CallShared,
    request: &Request,
    source: Source,
) -> Option<LingerMatch> {
    let fields = KeyFields::of(request);
    let now = tokio::time::Instant::now().into_std();
    let found = shared
        .linger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .handle_request(now, &fields.parts(request));
    if let Some(LingerMatch::Absorbed(Some(bytes))) = &found {
        shared.out.send(&SipTransmit {
            to: source,
            bytes: bytes.clone(),
        });
    }
    found
}

impl Router {
    /// One UDP datagram. A message of a call the router knows goes to
    /// that call as bytes, found by a quick look at its Call-ID: the call's
    /// task checks and parses it, so parsing runs on every core and the
    /// router only routes. Anything else is checked and parsed here.
    async fn handle_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let source = Source {
            transport: Transport::Unreliable,
            addr: from,
        };
        if let Some(call_id) = message::peek_call_id(bytes)
            && let Some(call) = self.calls.get(call_id)
        {
            match call.try_send(CallInput::Bytes(bytes.to_vec(), source)) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(%call_id, "call inbox full: message dropped");
                    return;
                }
                // The call is gone: what it would have done, the router does.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let call_id = call_id.to_owned();
                    self.calls.remove(&call_id);
                }
            }
        }
        match check_datagram(bytes, self.options.limits) {
            Ok(()) => self.handle_bytes(bytes, source).await,
            Err(e) => reject_message(&self.shared, bytes, source, &e),
        }
    }

    async fn handle_bytes(&mut self, bytes: &[u8], source: Source) {
        let message = match message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, from = %source.addr, "unparseable SIP message");
                if let Some(response) = e.error_response() {
                    self.shared
                        .out
                        .reply(source, response.to_tag(&random_tag()).to_bytes());
                }
                return;
            }
        };
        match message {
            Message::Response(response) => {
                let Some(call) = response.call_id().and_then(|id| self.calls.get(id)) else {
                    tracing::debug!(status = response.status(), "response for no call: dropped");
                    return;
                };
                let _ = call.try_send(CallInput::Response(Box::new(response)));
            }
            Message::Request(request) => {
                let call_id = request.call_id().unwrap_or_default().to_string();
                let request = match self.calls.get(&call_id) {
                    None => request,
                    Some(call) => {
                        match call.try_send(CallInput::Request(Box::new(request), source)) {
                            Ok(()) => return,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                tracing::debug!(%call_id, "call inbox full: request dropped");
                                return;
                            }
                            // The call is gone (to the linger table, maybe).
                            Err(mpsc::error::TrySendError::Closed(CallInput::Request(r, _))) => {
                                self.calls.remove(&call_id);
                                *r
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                };
                match answer_lingering(&self.shared, &request, source) {
                    Some(LingerMatch::Absorbed(_)) => return,
                    // An INVITE without a To tag reusing the Call-ID of a call
                    // that ended: the call would have refused it (no dialog
                    // matches, RFC 3261 §12.2.2), not started a second call.
                    Some(LingerMatch::Unmatched)
                        if *request.method() == Method::Invite && request.to_tag().is_none() =>
                    {
                        self.shared.out.reply(
                            source,
                            request
                                .response(481, "Call/Transaction Does Not Exist")
                                .to_tag(&random_tag())
                                .to_bytes(),
                        );
                        return;
                    }
                    Some(LingerMatch::Unmatched) | None => {}
                }
                self.handle_outside_call(request, source).await;
            }
        }
    }

    /// A request no call has: a new INVITE, or a stateless answer.
    async fn handle_outside_call(&mut self, request: Request, source: Source) {
        let out = self.shared.out.clone();
        let respond = |status: u16, reason: &str| {
            out.reply(
                source,
                request
                    .response(status, reason)
                    .to_tag(&random_tag())
                    .to_bytes(),
            );
        };
        match request.method() {
            Method::Ack => {} // RFC 3261 §17: never answered.
            Method::Options => out.reply(
                source,
                options_response(&request).to_tag(&random_tag()).to_bytes(),
            ),
            Method::Invite if request.to_tag().is_none() => self.new_call(request, source).await,
            Method::Invite | Method::Bye | Method::Cancel | Method::Info => {
                respond(481, "Call/Transaction Does Not Exist")
            }
            Method::Register | Method::Other(_) => out.reply(
                source,
                request
                    .response(405, "Method Not Allowed")
                    .to_tag(&random_tag())
                    .header("Allow", ALLOW)
                    .to_bytes(),
            ),
        }
    }

    async fn new_call(&mut self, request: Request, source: Source) {
        let out = self.shared.out.clone();
        let stats = &self.shared.stats;
        let refusals = &self.refusals;
        let unavailable = |why: &str| {
            stats.refused_503.fetch_add(1, Ordering::Relaxed);
            // Overload refuses thousands a second: say so once a second.
            if let Some(left_out) = refusals.hit(tokio::time::Instant::now()) {
                tracing::warn!(
                    why,
                    left_out,
                    "INVITE refused with 503 (left_out: refusals not logged in the second before; dialin_invites_refused_total counts them all)"
                );
            }
            out.reply(
                source,
                request
                    .response(503, "Service Unavailable")
                    .to_tag(&random_tag())
                    .header("Retry-After", RETRY_AFTER)
                    .to_bytes(),
            );
        };
        if self.draining {
            return unavailable("shutting down");
        }
        // Before anything that costs: a blocked source gets no port, no
        // call task and no lookup.
        if let Some(guard) = &self.shared.guard {
            let caller_id = super::guard::caller_id(&request);
            let call_id = request.call_id().unwrap_or_default();
            if let crate::guard::Admit::Blocked { until, .. } =
                guard.admit(source.addr.ip(), caller_id.as_deref(), call_id)
            {
                stats.refused_403.fetch_add(1, Ordering::Relaxed);
                let wait = until
                    .saturating_duration_since(tokio::time::Instant::now().into_std())
                    .as_secs()
                    .max(1);
                tracing::debug!(from = %source.addr, "INVITE from a blocked key: 403");
                // RFC 3261 §20.33 defines Retry-After for 404, 413, 480,
                // 486, 500, 503, 600 and 603, not 403: the hint goes in a
                // Warning (§20.43, code 399 "miscellaneous", the agent as
                // a pseudonym). It says why, never anything about an ID.
                let warning = format!(
                    "399 dialin \"too many failed conference ID attempts; try again in {wait} s\""
                );
                out.reply(
                    source,
                    request
                        .response(403, BLOCKED_REASON)
                        .to_tag(&random_tag())
                        .header("Warning", &warning)
                        .to_bytes(),
                );
                return;
            }
        }
        if self.shared.active.load(Ordering::Acquire) >= self.options.max_calls {
            stats.limit_hit("max-calls");
            return unavailable("--max-calls reached");
        }
        // The service's copy as of its last commit: a number added or
        // removed by the admin counts from the next INVITE on, and the SIP
        // task never waits on the store.
        let numbers = self.service.dial_in_numbers();
        if !dials_number(&request, &numbers) {
            stats.refused_404.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                uri = request.uri(),
                "INVITE to a number that is not the tenant's: 404"
            );
            out.reply(
                source,
                request
                    .response(404, "Not Found")
                    .to_tag(&random_tag())
                    .to_bytes(),
            );
            return;
        }
        // Before the RTP port: a source at its limit costs no socket. A
        // mature PBX answers a per-source limit as overload (Kamailio's
        // pike and Asterisk's call limits send 503): the peer, often a
        // proxy for many callers, may try another bridge or retry later.
        let ip = source.addr.ip();
        if let Admit::No { first } = self.call_sources.acquire(ip) {
            stats.limit_hit("calls-per-source");
            stats.refused_503.fetch_add(1, Ordering::Relaxed);
            if first {
                tracing::warn!(
                    from = %source.addr,
                    limit = self.options.calls_per_source,
                    "calls from this source at --calls-per-source: new INVITEs get 503"
                );
            }
            out.reply(
                source,
                request
                    .response(503, "Service Unavailable")
                    .to_tag(&random_tag())
                    .header("Retry-After", RETRY_AFTER)
                    .to_bytes(),
            );
            return;
        }
        let (socket, rtp_port) = match self.ports.bind().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "no RTP port");
                stats.limit_hit("rtp-ports");
                self.call_sources.release(ip);
                return unavailable("no RTP port");
            }
        };
        let rtp_addr = match socket.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "RTP socket has no address");
                self.call_sources.release(ip);
                drop(socket);
                if let Some(port) = rtp_port {
                    self.ports.release(port);
                }
                return unavailable("no RTP port");
            }
        };
        let call_id = request.call_id().unwrap_or_default().to_string();
        let number = self.next_call.fetch_add(1, Ordering::Relaxed);
        let config = CallConfig {
            timers: self.options.timers,
            attendant: self.options.attendant,
            sip_addr: self.addr,
            rtp_addr,
            mute_prompts: self.options.mute_prompts,
            ring: self.options.ring,
            seed: rand::rng().random(),
        };
        let span = tracing::info_span!("call", call_id = %call_id);
        let started = tokio::time::Instant::now().into_std();
        let anchor = TimeAnchor::new(started, std::time::SystemTime::now().into());
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        self.shared.stats.calls.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CALL_INBOX);
        self.calls.insert(call_id.clone(), tx);
        let shared = self.shared.clone();
        let prompts = self.options.prompts.clone();
        self.shared.stats.call_tasks.fetch_add(1, Ordering::Relaxed);
        // A call on a TCP connection keeps the connection from going idle.
        let connection = match source.transport {
            Transport::Reliable => self
                .shared
                .out
                .tcp
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&source.addr)
                .map(|c| c.calls.clone()),
            Transport::Unreliable => None,
        };
        if let Some(calls) = &connection {
            calls.fetch_add(1, Ordering::AcqRel);
        }
        // The call's core is made in its own task, off the router: the
        // router's time per call is what bounds the call rate.
        let task = self.tasks.spawn(
            async move {
                tracing::info!(from = %source.addr, uri = request.uri(), "INVITE");
                let call = Call::new(started, &request, source, config, prompts);
                drop(request);
                run_call(call, socket, rx, shared, number, anchor).await;
                call_id
            }
            .instrument(span),
        );
        self.call_slots.insert(
            task.id(),
            CallSlot {
                ip,
                connection,
                rtp_port,
            },
        );
    }

    /// A call task ended (or panicked): its source slot and its call on a
    /// TCP connection are given back.
    fn call_task_ended(&mut self, id: tokio::task::Id) {
        if let Some(slot) = self.call_slots.remove(&id) {
            self.call_sources.release(slot.ip);
            if let Some(port) = slot.rtp_port {
                self.ports.release(port);
            }
            if let Some(calls) = slot.connection {
                calls.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite_to(uri: &str) -> Request {
        let bytes = crate::sip::message::RequestBuilder::new(Method::Invite, uri)
            .via("UDP", "127.0.0.1:5062", "b")
            .from("sip:c@127.0.0.1", "t")
            .to(uri, None)
            .call_id("c")
            .to_bytes();
        match message::parse(&bytes).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!("built a request"),
        }
    }

    #[tokio::test]
    async fn the_udp_socket_gets_the_buffers_asked_for() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let (_, default) = bind_udp(addr, 0).unwrap();
        // Below any Linux cap (net.core.rmem_max and wmem_max are at least
        // 208 KiB out of the box), above the usual default.
        let asked = 160 * 1024;
        let (udp, granted) = bind_udp(addr, asked).unwrap();
        assert!(granted.recv >= asked, "{granted:?}");
        assert!(granted.send >= asked, "{granted:?}");
        assert!(granted.recv > default.recv, "{granted:?} vs {default:?}");
        // The socket works as a tokio socket.
        let peer = UdpSocket::bind(addr).await.unwrap();
        peer.send_to(b"ping", udp.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
    }

    #[test]
    fn a_throttled_warning_is_logged_once_a_second_with_the_count_left_out() {
        let throttle = Throttle::default();
        let t0 = tokio::time::Instant::now();
        assert_eq!(throttle.hit(t0), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(throttle.hit(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.hit(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(throttle.hit(t0 + Duration::from_millis(5000)), Some(0));
    }

    #[test]
    fn the_dialled_number_matches_with_or_without_plus_and_as_tel() {
        let numbers = vec!["+14255550100".parse::<PhoneNumber>().unwrap()];
        for uri in [
            "sip:+14255550100@bridge",
            "sip:14255550100@bridge:5060",
            "sip:+14255550100;isub=1@bridge",
            "tel:+14255550100",
            "tel:+1-425-555-0100;phone-context=x",
        ] {
            assert!(dials_number(&invite_to(uri), &numbers), "{uri}");
        }
        for uri in ["sip:14255550101@bridge", "sip:bridge", "sip:alice@bridge"] {
            assert!(!dials_number(&invite_to(uri), &numbers), "{uri}");
        }
    }
}
