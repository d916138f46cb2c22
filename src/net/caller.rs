//! Places one call with the [`crate::caller`] core: a UDP socket or one TCP
//! connection for SIP ([`Transport`]), a UDP socket for RTP, and the core's
//! timers, until the call ends, the call timeout passes, or the shutdown
//! future resolves.
//!
//! With [`CallConfig::record`] it also writes what the call heard as a WAV
//! once the call is over (temp file + rename), after checking before the
//! call that the folder can be written.
//!
//! All decisions are the core's; this moves datagrams and sleeps until the
//! core's next deadline (`tokio::time::Instant`, so `tokio::time::pause`
//! drives it in tests).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tracing::Instrument;

use crate::caller::{
    CallReport, Caller, CallerConfig, DtmfPlan, HangUp, Output, PathCounts, PromptMatchers,
    RecordingFile, Transport,
};
use crate::media::prompts::PromptError;
use crate::media::recorder::{self, DEFAULT_MAX_DURATION};
use crate::sip::framing::{Limits, StreamFramer, check_datagram};
use crate::sip::message;
use crate::sip::transaction::TimerConfig;

/// The SIP port when the target URI names none (RFC 3261 §19.1.2).
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// How long a hung-up call waits for the answer to its BYE or CANCEL
/// before giving up (on shutdown or timeout).
pub const HANG_UP_GRACE: Duration = Duration::from_secs(2);

/// What to call and how.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// `sip:USER@HOST[:PORT]`.
    pub target: String,
    /// The From URI; default `sip:caller@<local address>`.
    pub from: Option<String>,
    /// Where SIP goes; default the target's host and port.
    pub remote: Option<SocketAddr>,
    /// The local address to bind; default the one that routes to the remote.
    pub local_ip: Option<IpAddr>,
    pub dtmf: DtmfPlan,
    pub hang_up: HangUp,
    pub timers: TimerConfig,
    /// The whole call is hung up after this long.
    pub timeout: Duration,
    /// The prompts to recognise; default the embedded catalog.
    pub prompts: Option<Arc<PromptMatchers>>,
    /// Seeds tags, branches and RTP ids (default: from the OS).
    pub seed: Option<u64>,
    /// UDP or TCP for SIP. A target URI with `;transport=tcp` makes it TCP.
    pub transport: Transport,
    /// Send silence between key presses (default); off for
    /// signalling-only load (see [`CallerConfig::send_silence`]).
    pub send_silence: bool,
    /// Test hook: outgoing SIP requests that are really not sent, as a lossy
    /// path would lose them (the core does not know and retransmits).
    pub drop_outgoing: Option<LossPattern>,
    /// A lossy, reordering path between the caller and the bridge,
    /// simulated at the caller's sockets both ways (see [`LossyPath`]).
    pub lossy_path: Option<LossyPath>,
    /// Where to write what the call heard (8 kHz mono 16-bit WAV, at most
    /// [`DEFAULT_MAX_DURATION`]); `None` records nothing.
    pub record: Option<RecordTo>,
}

/// Where a call's recording goes. Either way the folder is created if
/// missing and checked writable before the call is placed, and the file is
/// written when the call is over, even an unanswered one (empty, then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordTo {
    /// `DIR/<Call-ID>.wav`, the Call-ID made safe as a file name
    /// ([`file_name_part`]).
    Dir(PathBuf),
    /// This file (replaced if it exists).
    File(PathBuf),
}

impl RecordTo {
    /// The folder the file goes in.
    fn dir(&self) -> &Path {
        match self {
            RecordTo::Dir(dir) => dir,
            RecordTo::File(file) => file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        }
    }

    /// The file for the call with `call_id`.
    pub fn path(&self, call_id: &str) -> PathBuf {
        match self {
            RecordTo::Dir(dir) => dir.join(format!("{}.wav", file_name_part(call_id))),
            RecordTo::File(file) => file.clone(),
        }
    }
}

/// `text` as a safe file name part: ASCII letters, digits, `.`, `-` and `_`
/// kept, anything else (`@`, `:`, `/`, spaces) made `_`, no leading dot,
/// never empty, at most 100 characters.
pub fn file_name_part(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Distinct temporary names for writers in one process.
static TEMP: AtomicU64 = AtomicU64::new(0);

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TEMP.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Creates the recording folder and proves a file can be written in it.
async fn check_record_dir(to: &RecordTo) -> Result<(), CallError> {
    let dir = to.dir();
    let err = |source| CallError::RecordDir {
        dir: dir.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(dir).await.map_err(err)?;
    let probe = temp_beside(&dir.join("probe"));
    tokio::fs::write(&probe, b"").await.map_err(err)?;
    let _ = tokio::fs::remove_file(&probe).await;
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside
/// it, then a rename over it.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = temp_beside(path);
    let written = async {
        tokio::fs::write(&temp, bytes).await?;
        tokio::fs::rename(&temp, path).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    written
}

/// Which outgoing SIP requests a lossy path loses: the first `count` whose
/// method is `method` (`INVITE`, `ACK`, ...), retransmissions included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossPattern {
    pub method: String,
    pub count: usize,
}

impl LossPattern {
    /// Loses the first `count` requests of `method`.
    pub fn first(count: usize, method: &str) -> LossPattern {
        LossPattern {
            method: method.to_ascii_uppercase(),
            count,
        }
    }

    /// Whether `bytes` is lost; counts it if so.
    fn drops(&mut self, bytes: &[u8]) -> bool {
        if self.count == 0 {
            return false;
        }
        let prefix = format!("{} ", self.method);
        if bytes.starts_with(prefix.as_bytes()) {
            self.count -= 1;
            return true;
        }
        false
    }
}

/// A simulated bad network path: each UDP datagram (SIP and RTP) is lost
/// with probability `loss`, independently, on the way out and on the way
/// in; each RTP packet is held back behind the next one with probability
/// `reorder`. Decided by RNGs seeded from `seed`, one for each kind of
/// datagram (SIP, RTP) and way: the nth SIP message sent is lost or not
/// whatever RTP went between, so a seed repeats the signalling's losses.
/// SIP over TCP is not touched (TCP does not lose; its own
/// retransmissions are the kernel's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossyPath {
    pub loss: f64,
    pub reorder: f64,
    pub seed: u64,
}

impl LossyPath {
    /// The largest loss that still lets SIP's retransmissions finish a
    /// call within its timers (Timer B and F give 7 tries).
    pub const MAX_LOSS: f64 = 0.5;

    /// Checks the ratios; the error says what is allowed.
    pub fn new(loss: f64, reorder: f64, seed: u64) -> Result<LossyPath, String> {
        if !(0.0..=Self::MAX_LOSS).contains(&loss) {
            return Err(format!(
                "a lossy path's loss is {loss}: it must be between 0 and {}",
                Self::MAX_LOSS
            ));
        }
        if !(0.0..=1.0).contains(&reorder) {
            return Err(format!(
                "a lossy path's reorder ratio is {reorder}: it must be between 0 and 1"
            ));
        }
        Ok(LossyPath {
            loss,
            reorder,
            seed,
        })
    }
}

/// What a lossy path decides for: each has its own RNG stream.
#[derive(Debug, Clone, Copy)]
enum Stream {
    SipOut,
    SipIn,
    RtpOut,
    RtpIn,
}

impl Stream {
    fn is_out(self) -> bool {
        matches!(self, Stream::SipOut | Stream::RtpOut)
    }
}

/// The running state of a [`LossyPath`] for one call.
struct PathSim {
    path: LossyPath,
    /// One per [`Stream`], in its order.
    rngs: [StdRng; 4],
    counts: PathCounts,
    /// An outgoing RTP packet held back to go after the next one.
    held_out: Option<(Vec<u8>, SocketAddr)>,
    /// An incoming RTP packet held back to be handled after the next one.
    held_in: Option<Vec<u8>>,
}

impl PathSim {
    fn new(path: LossyPath) -> PathSim {
        let stream = |n: u64| {
            StdRng::seed_from_u64(
                path.seed
                    .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            )
        };
        PathSim {
            path,
            rngs: [stream(0), stream(1), stream(2), stream(3)],
            counts: PathCounts::default(),
            held_out: None,
            held_in: None,
        }
    }

    /// Whether this datagram is lost (and counts it).
    fn loses(&mut self, stream: Stream) -> bool {
        let lost = self.rngs[stream as usize].random_bool(self.path.loss);
        if stream.is_out() {
            self.counts.sent += 1;
            self.counts.lost_out += u64::from(lost);
        } else {
            self.counts.arrived += 1;
            self.counts.lost_in += u64::from(lost);
        }
        lost
    }

    /// Whether this RTP packet is held back (none is held already).
    fn holds(&mut self, stream: Stream, already: bool) -> bool {
        !already && self.rngs[stream as usize].random_bool(self.path.reorder)
    }
}

impl CallConfig {
    /// A call to `target` that presses nothing, hangs up 5 s after joining,
    /// and gives up after 60 s.
    pub fn new(target: impl Into<String>) -> CallConfig {
        CallConfig {
            target: target.into(),
            from: None,
            remote: None,
            local_ip: None,
            dtmf: DtmfPlan::none(),
            hang_up: HangUp::AfterJoined(Duration::from_secs(5)),
            timers: TimerConfig::default(),
            timeout: Duration::from_secs(60),
            prompts: None,
            seed: None,
            transport: Transport::Udp,
            send_silence: true,
            drop_outgoing: None,
            lossy_path: None,
            record: None,
        }
    }
}

/// Why a call could not be made or finished (transport and local errors;
/// a rejected call is a [`CallReport`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{uri:?} is not a SIP URI with a host: use sip:USER@HOST[:PORT]")]
    BadTarget { uri: String },
    #[error("can't resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("can't connect over TCP to {to}")]
    Connect {
        to: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("can't bind a UDP socket on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("can't send to {to}")]
    Send {
        to: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("can't receive on {local}")]
    Receive {
        local: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("can't load the prompt catalog")]
    Prompts(#[from] PromptError),
    #[error("the call did not end within {timeout:?}; it was hung up ({})", report.outcome)]
    Timeout {
        timeout: Duration,
        report: Box<CallReport>,
    },
    #[error("can't write recordings in {}: give a folder you can write to", dir.display())]
    RecordDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the call is over ({}) but its recording could not be written to {}", report.outcome, path.display())]
    RecordWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        report: Box<CallReport>,
    },
}

/// The host and port of a `sip:`/`sips:` URI (`sip:user@host:port;params`).
pub fn uri_host_port(uri: &str) -> Option<(String, u16)> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let rest = rest.split([';', '?']).next()?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => DEFAULT_SIP_PORT,
    };
    Some((host.to_string(), port))
}

/// The transport a SIP URI asks for with its `transport` parameter
/// (RFC 3261 §19.1.1), if it names one this caller has.
pub fn uri_transport(uri: &str) -> Option<Transport> {
    let params = uri.split('?').next()?.split(';').skip(1);
    for param in params {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("transport")
        {
            return match value.trim().to_ascii_lowercase().as_str() {
                "tcp" => Some(Transport::Tcp),
                "udp" => Some(Transport::Udp),
                _ => None,
            };
        }
    }
    None
}

/// The address a target URI's host and port resolve to (the first one).
pub async fn resolve(target: &str) -> Result<SocketAddr, CallError> {
    let (host, port) = uri_host_port(target).ok_or_else(|| CallError::BadTarget {
        uri: target.to_string(),
    })?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let found = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|mut addrs| addrs.next());
    match found {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(CallError::NoAddress { host }),
        Err(source) => Err(CallError::Resolve { host, source }),
    }
}

/// The local address that routes to `remote` (connecting a UDP socket sends
/// nothing; it asks the kernel for the route).
pub fn route_to(remote: SocketAddr) -> IpAddr {
    let any: SocketAddr = match remote {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(remote)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(match remote {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        })
}

async fn bind(ip: IpAddr) -> Result<UdpSocket, CallError> {
    let addr = SocketAddr::new(ip, 0);
    UdpSocket::bind(addr)
        .await
        .map_err(|source| CallError::Bind { addr, source })
}

/// Places one call and returns its report once it is over: a rejected or
/// unanswered call is a report too. Errors are local or transport failures,
/// and the call timeout (its error carries the partial report).
///
/// When `shutdown` resolves the call is hung up (BYE or CANCEL), given
/// [`HANG_UP_GRACE`] for the answer, and its report returned.
pub async fn place_call(
    config: CallConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<CallReport, CallError> {
    if let Some(to) = &config.record {
        check_record_dir(to).await?;
    }
    let remote = match config.remote {
        Some(r) => r,
        None => resolve(&config.target).await?,
    };
    let local_ip = config.local_ip.unwrap_or_else(|| route_to(remote));
    let transport = uri_transport(&config.target).unwrap_or(config.transport);
    let sip = match transport {
        Transport::Udp => SipLink::Udp(bind(local_ip).await?),
        Transport::Tcp => SipLink::connect(remote).await?,
    };
    let rtp = bind(local_ip).await?;
    let local_sip = sip.local_addr().map_err(|source| CallError::Bind {
        addr: SocketAddr::new(local_ip, 0),
        source,
    })?;
    let local_rtp = rtp.local_addr().map_err(|source| CallError::Bind {
        addr: SocketAddr::new(local_ip, 0),
        source,
    })?;
    let prompts = match config.prompts {
        Some(p) => p,
        None => Arc::new(PromptMatchers::embedded()?),
    };
    let from = config.from.unwrap_or_else(|| match local_ip {
        IpAddr::V4(ip) => format!("sip:caller@{ip}"),
        IpAddr::V6(ip) => format!("sip:caller@[{ip}]"),
    });
    let core_config = CallerConfig {
        target: config.target,
        from,
        remote_sip: remote,
        local_sip,
        local_rtp,
        dtmf: config.dtmf,
        hang_up: config.hang_up,
        timers: config.timers,
        transport,
        prompts,
        record: config.record.is_some().then_some(DEFAULT_MAX_DURATION),
        send_silence: config.send_silence,
    };
    let rng = match config.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => rand::make_rng(),
    };
    let start = Instant::now();
    let caller = Caller::new(core_config, start.into_std(), rng);
    let span = tracing::info_span!("call", call_id = %caller.call_id());
    let driver = Driver {
        caller,
        sip,
        rtp,
        remote,
        local_sip,
        local_rtp,
        loss: config.drop_outgoing,
        path: config.lossy_path.map(PathSim::new),
        record: config.record,
    };
    driver
        .run(start + config.timeout, config.timeout, shutdown)
        .instrument(span)
        .await
}

/// What carries the call's SIP.
enum SipLink {
    Udp(UdpSocket),
    /// One connection for the whole dialog; `None` reader once the far end
    /// closed it (the core's Timers B and F then decide).
    Tcp {
        reader: Option<OwnedReadHalf>,
        writer: OwnedWriteHalf,
        framer: StreamFramer,
        local: SocketAddr,
    },
}

/// What one read from the SIP link gave.
enum Received {
    /// A datagram, or the messages framed from a TCP read (maybe none yet).
    Messages(Vec<Vec<u8>>, SocketAddr),
    /// The TCP connection closed, or lost its framing.
    Closed(String),
}

impl SipLink {
    async fn connect(remote: SocketAddr) -> Result<SipLink, CallError> {
        let stream = TcpStream::connect(remote)
            .await
            .map_err(|source| CallError::Connect { to: remote, source })?;
        // SIP messages are small and each one is a turn of the dialog.
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|source| CallError::Connect { to: remote, source })?;
        let (reader, writer) = stream.into_split();
        Ok(SipLink::Tcp {
            reader: Some(reader),
            writer,
            framer: StreamFramer::new(Limits::default()),
            local,
        })
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            SipLink::Udp(socket) => socket.local_addr(),
            SipLink::Tcp { local, .. } => Ok(*local),
        }
    }

    /// Waits for the next datagram or TCP read; pends forever on a closed
    /// connection.
    async fn recv(&mut self, buf: &mut [u8], remote: SocketAddr) -> std::io::Result<Received> {
        match self {
            SipLink::Udp(socket) => {
                let (len, from) = socket.recv_from(buf).await?;
                Ok(Received::Messages(vec![buf[..len].to_vec()], from))
            }
            SipLink::Tcp { reader, framer, .. } => {
                let Some(r) = reader.as_mut() else {
                    return std::future::pending().await;
                };
                let n = match r.read(buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        *reader = None;
                        return Ok(Received::Closed(format!("the TCP read failed: {e}")));
                    }
                };
                if n == 0 {
                    *reader = None;
                    return Ok(Received::Closed("the bridge closed the connection".into()));
                }
                framer.push(&buf[..n]);
                let mut messages = Vec::new();
                while let Some(message) = framer.next_message() {
                    match message {
                        Ok(bytes) => messages.push(bytes),
                        Err(e) => {
                            // RFC 3261 §18.3: no way to find the next message.
                            *reader = None;
                            return Ok(Received::Closed(format!(
                                "the TCP stream lost its framing: {e}"
                            )));
                        }
                    }
                }
                Ok(Received::Messages(messages, remote))
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            SipLink::Udp(socket) => socket.send_to(bytes, to).await.map(|_| ()),
            SipLink::Tcp { writer, .. } => writer.write_all(bytes).await,
        }
    }
}

struct Driver {
    caller: Caller,
    sip: SipLink,
    rtp: UdpSocket,
    remote: SocketAddr,
    local_sip: SocketAddr,
    local_rtp: SocketAddr,
    loss: Option<LossPattern>,
    path: Option<PathSim>,
    record: Option<RecordTo>,
}

/// Bounds the loop: a 60 s call has ~3000 RTP packets each way plus timers.
const MAX_STEPS_PER_SECOND: u64 = 2_000;

impl Driver {
    async fn run(
        mut self,
        deadline: Instant,
        timeout: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<CallReport, CallError> {
        tracing::info!(remote = %self.remote, local = %self.local_sip, rtp = %self.local_rtp, "calling");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut sip_buf = vec![0u8; Limits::default().max_message + 1];
        let mut rtp_buf = vec![0u8; 2048];
        // Set once this side hangs up on its own: shutdown or timeout.
        let mut hung_up_at: Option<Instant> = None;
        let mut timed_out = false;
        let max_steps = MAX_STEPS_PER_SECOND * (timeout + HANG_UP_GRACE).as_secs().max(1);
        for _ in 0..max_steps {
            self.flush().await?;
            if self.caller.is_finished() {
                if !self.caller.awaits_late_answer() {
                    break;
                }
                // Hung up before any response: a late 200 still gets its
                // ACK and BYE, within the hang-up grace.
                hung_up_at.get_or_insert_with(Instant::now);
            }
            let give_up = match hung_up_at {
                Some(t) => t + HANG_UP_GRACE,
                None => deadline,
            };
            let wake = self
                .caller
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or(give_up)
                .min(give_up);
            tokio::select! {
                biased;
                () = &mut shutdown, if hung_up_at.is_none() => {
                    let now = Instant::now();
                    tracing::info!("shutting down: hanging up");
                    self.caller.hang_up(now.into_std());
                    hung_up_at = Some(now);
                }
                received = self.sip.recv(&mut sip_buf, self.remote) => {
                    match received {
                        Ok(Received::Messages(messages, from)) => {
                            let udp = matches!(self.sip, SipLink::Udp(_));
                            for bytes in messages {
                                if udp && self.path.as_mut().is_some_and(|p| p.loses(Stream::SipIn)) {
                                    continue;
                                }
                                self.handle_sip(&bytes, from);
                            }
                        }
                        Ok(Received::Closed(why)) => tracing::warn!("SIP over TCP: {why}"),
                        Err(e) => self.receive_error(self.local_sip, e)?,
                    }
                }
                received = self.rtp.recv_from(&mut rtp_buf) => {
                    match received {
                        Ok((len, _)) => self.receive_rtp(&rtp_buf[..len]),
                        Err(e) => self.receive_error(self.local_rtp, e)?,
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= give_up {
                        if hung_up_at.is_some() {
                            tracing::warn!("no answer to our hang-up: giving up");
                            break;
                        }
                        tracing::warn!(?timeout, "call timeout: hanging up");
                        timed_out = true;
                        self.caller.hang_up(now.into_std());
                        hung_up_at = Some(now);
                    } else {
                        self.caller.handle_timeout(now.into_std());
                    }
                }
            }
        }
        self.flush().await?;
        let mut report = self.caller.report_at(Instant::now().into_std());
        report.path = self.path.as_ref().map(|p| p.counts);
        tracing::info!(outcome = %report.outcome, "call over");
        if let Some(to) = self.record.take() {
            let path = to.path(&report.call_id);
            match self.write_recording(&path).await {
                Ok(recording) => report.recording = Some(recording),
                Err(source) => {
                    tracing::error!(path = %path.display(), error = %source, "can't write the recording");
                    return Err(CallError::RecordWrite {
                        path,
                        source,
                        report: Box::new(report),
                    });
                }
            }
        }
        if timed_out {
            return Err(CallError::Timeout {
                timeout,
                report: Box::new(report),
            });
        }
        Ok(report)
    }

    /// Writes what the call heard (an empty WAV if it was never answered).
    async fn write_recording(&mut self, path: &Path) -> std::io::Result<RecordingFile> {
        let recorder = self.caller.take_recording();
        let samples = recorder.as_ref().map_or(&[][..], |r| r.samples());
        let bytes = recorder::wav_bytes(samples).map_err(std::io::Error::other)?;
        write_atomically(path, &bytes).await?;
        tracing::info!(path = %path.display(), "recording written");
        Ok(RecordingFile {
            path: path.to_path_buf(),
            duration: recorder.as_ref().map_or(Duration::ZERO, |r| r.duration()),
            truncated: recorder.as_ref().is_some_and(|r| r.is_truncated()),
        })
    }

    /// An RTP packet from the bridge, through the lossy path if there is one.
    fn receive_rtp(&mut self, bytes: &[u8]) {
        let Some(path) = self.path.as_mut() else {
            self.caller.handle_rtp(Instant::now().into_std(), bytes);
            return;
        };
        if path.loses(Stream::RtpIn) {
            return;
        }
        if path.holds(Stream::RtpIn, path.held_in.is_some()) {
            path.held_in = Some(bytes.to_vec());
            return;
        }
        let held = path.held_in.take();
        if held.is_some() {
            path.counts.reordered += 1;
        }
        let now = Instant::now().into_std();
        self.caller.handle_rtp(now, bytes);
        if let Some(held) = held {
            self.caller.handle_rtp(now, &held);
        }
    }

    fn handle_sip(&mut self, bytes: &[u8], from: SocketAddr) {
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return; // RFC 5626 keep-alive
        }
        let parsed = check_datagram(bytes, Limits::default())
            .map_err(|e| e.to_string())
            .and_then(|()| message::parse(bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(message) => self.caller.handle_sip(Instant::now().into_std(), message),
            Err(e) => tracing::warn!(%from, "dropped a SIP datagram: {e}"),
        }
    }

    /// A UDP receive error: ICMP errors from an earlier send (the peer's
    /// port closed) show up here; they are the peer's problem, not ours,
    /// and the call's timers decide. Anything else is fatal.
    fn receive_error(&self, local: SocketAddr, e: std::io::Error) -> Result<(), CallError> {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::Interrupted => {
                tracing::warn!(%local, "receive: {e}");
                Ok(())
            }
            _ => Err(CallError::Receive { local, source: e }),
        }
    }

    async fn flush(&mut self) -> Result<(), CallError> {
        while let Some(out) = self.caller.poll_output() {
            let (sent, to) = match out {
                Output::Sip(bytes) => {
                    if let Some(loss) = self.loss.as_mut()
                        && loss.drops(&bytes)
                    {
                        tracing::debug!(
                            "test hook: lost on the way out: {}",
                            String::from_utf8_lossy(
                                bytes.split(|b| *b == b'\r').next().unwrap_or(&[])
                            )
                        );
                        continue;
                    }
                    let udp = matches!(self.sip, SipLink::Udp(_));
                    if udp && self.path.as_mut().is_some_and(|p| p.loses(Stream::SipOut)) {
                        continue;
                    }
                    (self.sip.send(&bytes, self.remote).await, self.remote)
                }
                Output::Rtp { to, bytes } => {
                    let mut held = None;
                    if let Some(path) = self.path.as_mut() {
                        if path.loses(Stream::RtpOut) {
                            continue;
                        }
                        if path.holds(Stream::RtpOut, path.held_out.is_some()) {
                            path.held_out = Some((bytes.to_vec(), to));
                            continue;
                        }
                        held = path.held_out.take();
                        if held.is_some() {
                            path.counts.reordered += 1;
                        }
                    }
                    let mut sent = self.rtp.send_to(&bytes, to).await.map(|_| ());
                    if let (Ok(()), Some((bytes, to))) = (&sent, held) {
                        sent = self.rtp.send_to(&bytes, to).await.map(|_| ());
                    }
                    (sent, to)
                }
            };
            if let Err(source) = sent {
                // An RTP packet lost to a full buffer is a lost packet; SIP
                // is retransmitted by the core. Only a hard error stops.
                if source.kind() == std::io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(CallError::Send { to, source });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::{DtmfStart, Outcome, Party};
    use crate::media::dtmf::DtmfMethod;
    use crate::media::dtmf::info::parse_info;
    use crate::media::g711::Codec;
    use crate::media::prompts::{HEARD_AFTER_FRAMES, PromptCatalog, PromptId};
    use crate::media::rtp::{self, RtpFields};
    use crate::sip::message::{Message, Method, Request, RequestBuilder, SipHeaders};
    use crate::sip::sdp::{self, SessionDescription};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_lossy_paths_sip_losses_do_not_depend_on_the_rtp_between() {
        let path = LossyPath::new(0.3, 0.05, 7).unwrap();
        let sip_only = |rtp_between: usize| {
            let mut sim = PathSim::new(path);
            let mut lost = Vec::new();
            for n in 0..200 {
                for _ in 0..(n % 3) * rtp_between {
                    sim.loses(Stream::RtpOut);
                    sim.loses(Stream::RtpIn);
                    sim.holds(Stream::RtpIn, false);
                }
                lost.push((sim.loses(Stream::SipOut), sim.loses(Stream::SipIn)));
            }
            (lost, sim.counts)
        };
        let (quiet, quiet_counts) = sip_only(0);
        let (busy, busy_counts) = sip_only(5);
        assert_eq!(quiet, busy, "the same SIP messages were lost");
        // RTP counts in the totals all the same.
        assert_eq!(quiet_counts.sent, 200);
        assert!(busy_counts.sent > 200, "{busy_counts:?}");
        // Both ways lose, and not the same messages.
        let out = quiet.iter().filter(|(o, _)| *o).count();
        let inward = quiet.iter().filter(|(_, i)| *i).count();
        assert!(
            (30..90).contains(&out) && (30..90).contains(&inward),
            "{out} {inward}"
        );
        assert_ne!(
            quiet.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            quiet.iter().map(|(_, i)| *i).collect::<Vec<_>>()
        );
        // Another seed, other losses.
        let mut other = PathSim::new(LossyPath::new(0.3, 0.05, 8).unwrap());
        let other: Vec<_> = (0..200)
            .map(|_| (other.loses(Stream::SipOut), other.loses(Stream::SipIn)))
            .collect();
        assert_ne!(quiet, other);
    }

    /// A scripted bridge: one SIP and one RTP socket on loopback.
    struct FakeBridge {
        sip: UdpSocket,
        rtp: UdpSocket,
        caller_sip: Option<SocketAddr>,
    }

    impl FakeBridge {
        async fn bind() -> FakeBridge {
            FakeBridge {
                sip: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                rtp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                caller_sip: None,
            }
        }

        fn target(&self) -> String {
            format!("sip:+14255550100@{}", self.sip.local_addr().unwrap())
        }

        async fn recv(&mut self) -> Request {
            let mut buf = vec![0u8; 65536];
            let (len, from) = tokio::time::timeout(WAIT, self.sip.recv_from(&mut buf))
                .await
                .expect("the caller sends within the wait")
                .unwrap();
            self.caller_sip = Some(from);
            match message::parse(&buf[..len]).unwrap() {
                Message::Request(r) => r,
                Message::Response(r) => panic!("bridge got a response {}", r.status()),
            }
        }

        async fn recv_response(&mut self) -> u16 {
            let mut buf = vec![0u8; 65536];
            let (len, _) = tokio::time::timeout(WAIT, self.sip.recv_from(&mut buf))
                .await
                .expect("the caller answers within the wait")
                .unwrap();
            match message::parse(&buf[..len]).unwrap() {
                Message::Response(r) => r.status(),
                Message::Request(r) => panic!("bridge expected a response, got {}", r.method()),
            }
        }

        async fn send(&self, bytes: &[u8]) {
            self.sip
                .send_to(bytes, self.caller_sip.unwrap())
                .await
                .unwrap();
        }

        /// Answers the INVITE; returns where the caller wants RTP.
        async fn answer(&mut self, invite: &Request) -> SocketAddr {
            self.send(&invite.response(100, "Trying").to_bytes()).await;
            let offer =
                SessionDescription::parse(std::str::from_utf8(invite.body()).unwrap()).unwrap();
            let answer = sdp::answer(
                &offer,
                &sdp::LocalMedia {
                    address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    rtp_port: self.rtp.local_addr().unwrap().port(),
                    session_id: 1,
                    session_version: 1,
                },
            )
            .unwrap();
            let contact = format!("<sip:bridge@{}>", self.sip.local_addr().unwrap());
            let ok = invite
                .response(200, "OK")
                .to_tag("bridge1")
                .header("Contact", &contact)
                .body("application/sdp", answer.sdp.as_bytes())
                .to_bytes();
            self.send(&ok).await;
            answer.negotiated.remote_rtp
        }

        async fn play(&self, to: SocketAddr, prompt: PromptId, frames: usize) {
            let catalog = PromptCatalog::embedded().unwrap();
            let mut buf = [0u8; 200];
            for (i, frame) in catalog
                .frames(prompt, Codec::Pcmu)
                .iter()
                .take(frames)
                .enumerate()
            {
                let fields = RtpFields {
                    marker: i == 0,
                    payload_type: 0,
                    sequence: i as u16,
                    timestamp: i as u32 * 160,
                    ssrc: 77,
                };
                let len = rtp::write_packet(&mut buf, &fields, frame).unwrap();
                self.rtp.send_to(&buf[..len], to).await.unwrap();
                // Loopback buffers are large but not endless: a breath every
                // 50 frames keeps a burst from overflowing the caller's.
                if i % 50 == 49 {
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    fn config(bridge: &FakeBridge, dtmf: DtmfPlan) -> CallConfig {
        CallConfig {
            dtmf,
            hang_up: HangUp::WaitForBye,
            timeout: WAIT,
            seed: Some(1),
            ..CallConfig::new(bridge.target())
        }
    }

    #[tokio::test]
    async fn a_call_over_loopback_hears_prompts_sends_info_digits_and_records_the_bye() {
        let mut bridge = FakeBridge::bind().await;
        let dtmf = DtmfPlan {
            start: DtmfStart::OnPrompt(PromptId::Welcome),
            ..DtmfPlan::parse("12#", DtmfMethod::Info).unwrap()
        };
        let call = tokio::spawn(place_call(config(&bridge, dtmf), std::future::pending()));

        let invite = bridge.recv().await;
        assert_eq!(invite.method(), &Method::Invite);
        let caller_rtp = bridge.answer(&invite).await;
        let ack = bridge.recv().await;
        assert_eq!(ack.method(), &Method::Ack);
        bridge.play(caller_rtp, PromptId::Welcome, 40).await;
        let mut digits = String::new();
        while !digits.ends_with('#') {
            let info = bridge.recv().await;
            assert_eq!(info.method(), &Method::Info);
            let event = parse_info(info.content_type().unwrap(), info.body()).unwrap();
            digits.push(event.digit.as_char());
            bridge.send(&info.response(200, "OK").to_bytes()).await;
        }
        assert_eq!(digits, "12#");
        bridge
            .play(caller_rtp, PromptId::NotValid, usize::MAX)
            .await;
        // The caller's audio arrives on the RTP socket from the SDP offer.
        let mut buf = [0u8; 400];
        let (len, from) = tokio::time::timeout(WAIT, bridge.rtp.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, caller_rtp);
        assert_eq!(
            rtp::RtpHeader::parse(&buf[..len]).unwrap().payload_type(),
            0
        );
        let bye = RequestBuilder::new(Method::Bye, &invite.contact_uri().unwrap())
            .via("UDP", &bridge.sip.local_addr().unwrap().to_string(), "bye1")
            .from(invite.uri(), "bridge1")
            .to(&invite.from().unwrap().uri, invite.from_tag().as_deref())
            .call_id(invite.call_id().unwrap())
            .cseq(1)
            .reason_sip(403, "Conference ID not valid")
            .to_bytes();
        bridge.send(&bye).await;
        assert_eq!(bridge.recv_response().await, 200);

        let report = tokio::time::timeout(WAIT, call)
            .await
            .expect("the call ends after the BYE")
            .unwrap()
            .expect("the call completes");
        assert_eq!(report.outcome, Outcome::Completed);
        assert_eq!(report.final_status, Some((200, "OK".into())));
        assert_eq!(report.prompt_ids(), [PromptId::Welcome, PromptId::NotValid]);
        assert_eq!(report.digit_text(), "12#");
        assert_eq!(report.hung_up_by, Some(Party::Bridge));
        assert_eq!(
            report.bye_reason_text.as_deref(),
            Some("Conference ID not valid")
        );
        assert!(report.decision_time.is_some());
        assert!(report.rtp_sent > 0);
    }

    #[tokio::test]
    async fn a_recorded_call_writes_the_decoded_audio_it_heard() {
        let mut bridge = FakeBridge::bind().await;
        let folder = tempfile::tempdir().unwrap();
        let dir = folder.path().join("new").join("recordings");
        let dtmf = DtmfPlan {
            start: DtmfStart::OnPrompt(PromptId::Welcome),
            ..DtmfPlan::parse("1", DtmfMethod::Info).unwrap()
        };
        let mut config = config(&bridge, dtmf);
        config.record = Some(RecordTo::Dir(dir.clone()));
        let call = tokio::spawn(place_call(config, std::future::pending()));
        let invite = bridge.recv().await;
        let caller_rtp = bridge.answer(&invite).await;
        assert_eq!(bridge.recv().await.method(), &Method::Ack);
        // The caller presses its key once it has heard the welcome, which
        // takes exactly this many frames: all of them are in by then.
        bridge
            .play(caller_rtp, PromptId::Welcome, HEARD_AFTER_FRAMES)
            .await;
        let info = bridge.recv().await;
        assert_eq!(info.method(), &Method::Info);
        bridge.send(&info.response(200, "OK").to_bytes()).await;
        let bye = RequestBuilder::new(Method::Bye, &invite.contact_uri().unwrap())
            .via("UDP", &bridge.sip.local_addr().unwrap().to_string(), "bye1")
            .from(invite.uri(), "bridge1")
            .to(&invite.from().unwrap().uri, invite.from_tag().as_deref())
            .call_id(invite.call_id().unwrap())
            .cseq(1)
            .to_bytes();
        bridge.send(&bye).await;
        let report = tokio::time::timeout(WAIT, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let recording = report.recording.clone().expect("a recording");
        assert_eq!(
            recording.path,
            dir.join(format!("{}.wav", file_name_part(&report.call_id)))
        );
        assert!(!recording.path.to_string_lossy().contains('@'));
        assert_eq!(recording.duration, Duration::from_millis(100));
        let catalog = PromptCatalog::embedded().unwrap();
        let mut expected = Vec::new();
        for frame in &catalog.frames(PromptId::Welcome, Codec::Pcmu)[..HEARD_AFTER_FRAMES] {
            expected.extend(frame.iter().map(|c| Codec::Pcmu.decode(*c)));
        }
        let reader = hound::WavReader::open(&recording.path).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        let heard: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(heard, expected);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
        assert!(report.to_string().contains("recording: "), "{report}");
    }

    #[tokio::test]
    async fn an_unwritable_record_folder_fails_before_the_call_is_placed() {
        let bridge = FakeBridge::bind().await;
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let mut config = config(&bridge, DtmfPlan::none());
        config.record = Some(RecordTo::Dir(file.join("recordings")));
        let err = place_call(config, std::future::pending())
            .await
            .expect_err("the folder can't be made");
        assert!(matches!(err, CallError::RecordDir { .. }), "{err:?}");
        assert!(err.to_string().contains("a-file"), "{err}");
        let mut buf = [0u8; 100];
        assert_eq!(
            bridge.sip.try_recv_from(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "no INVITE went out"
        );
    }

    #[test]
    fn file_name_part_keeps_names_safe() {
        assert_eq!(
            file_name_part("0a1b@127.0.0.1"),
            "0a1b_127.0.0.1".to_string()
        );
        assert_eq!(file_name_part("../etc/passwd"), "_._etc_passwd");
        assert_eq!(file_name_part("a b:c"), "a_b_c");
        assert_eq!(file_name_part(""), "_");
        assert_eq!(file_name_part(&"x".repeat(300)).len(), 100);
    }

    #[tokio::test]
    async fn shutdown_hangs_up_with_bye_and_returns_the_report() {
        let mut bridge = FakeBridge::bind().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let call = tokio::spawn(place_call(config(&bridge, DtmfPlan::none()), async {
            let _ = stopped.await;
        }));
        let invite = bridge.recv().await;
        bridge.answer(&invite).await;
        assert_eq!(bridge.recv().await.method(), &Method::Ack);
        stop.send(()).unwrap();
        let bye = bridge.recv().await;
        assert_eq!(bye.method(), &Method::Bye);
        bridge.send(&bye.response(200, "OK").to_bytes()).await;
        let report = tokio::time::timeout(WAIT, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.outcome, Outcome::Completed);
        assert_eq!(report.hung_up_by, Some(Party::Caller));
    }

    #[tokio::test]
    async fn an_unreachable_bridge_times_out_with_a_report() {
        // A bound socket that never answers; short timers keep the test short.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut config = CallConfig::new(format!("sip:1@{}", silent.local_addr().unwrap()));
        // INVITEs at 0, 20 and 60 ms, then 140, 300, 620 ms: three sends
        // leave 900 ms for a busy machine.
        config.timeout = Duration::from_secs(1);
        config.timers.t1 = Duration::from_millis(20);
        config.seed = Some(2);
        let err = place_call(config, std::future::pending())
            .await
            .expect_err("nobody answers");
        match err {
            CallError::Timeout { report, .. } => {
                assert_eq!(report.outcome, Outcome::Cancelled);
                assert!(
                    report.ladder.len() >= 3,
                    "INVITE retransmitted: {:?}",
                    report.ladder
                );
            }
            other => panic!("expected a timeout, got {other}"),
        }
    }

    #[tokio::test]
    async fn cancel_after_cancels_a_ringing_call_over_loopback() {
        let mut bridge = FakeBridge::bind().await;
        let mut config = config(&bridge, DtmfPlan::none());
        config.hang_up = HangUp::CancelAfter(Duration::from_millis(50));
        let call = tokio::spawn(place_call(config, std::future::pending()));
        let invite = bridge.recv().await;
        let ringing = invite.response(180, "Ringing").to_tag("bridge1").to_bytes();
        bridge.send(&ringing).await;
        let cancel = bridge.recv().await;
        assert_eq!(cancel.method(), &Method::Cancel);
        assert_eq!(cancel.branch(), invite.branch());
        bridge.send(&cancel.response(200, "OK").to_bytes()).await;
        let terminated = invite
            .response(487, "Request Terminated")
            .to_tag("bridge1")
            .to_bytes();
        bridge.send(&terminated).await;
        let ack = bridge.recv().await;
        assert_eq!(ack.method(), &Method::Ack);
        assert_eq!(ack.branch(), invite.branch());
        let report = tokio::time::timeout(WAIT, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.outcome, Outcome::Cancelled);
        assert_eq!(
            report.final_status,
            Some((487, "Request Terminated".into()))
        );
    }

    #[tokio::test]
    async fn lost_invites_are_really_not_sent_and_timer_a_gets_through() {
        let mut bridge = FakeBridge::bind().await;
        let mut config = config(&bridge, DtmfPlan::none());
        // INVITEs at 0, 200 and 600 ms; a fourth would wait until 1.4 s,
        // time enough for the answer to the third on a busy machine.
        config.timers.t1 = Duration::from_millis(200);
        config.drop_outgoing = Some(LossPattern::first(2, "invite"));
        config.hang_up = HangUp::AfterAnswer(Duration::ZERO);
        let call = tokio::spawn(place_call(config, std::future::pending()));
        let invite = bridge.recv().await;
        bridge.answer(&invite).await;
        assert_eq!(bridge.recv().await.method(), &Method::Ack);
        let bye = bridge.recv().await;
        assert_eq!(bye.method(), &Method::Bye);
        bridge.send(&bye.response(200, "OK").to_bytes()).await;
        let report = tokio::time::timeout(WAIT, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let invites = report
            .ladder
            .iter()
            .filter(|e| e.first_line.starts_with("INVITE "))
            .count();
        assert_eq!(invites, 3, "two lost, the third arrived: {report}");
    }

    #[tokio::test]
    async fn a_call_over_tcp_uses_one_connection_for_the_dialog() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = CallConfig::new(format!("sip:1@{addr};transport=tcp"));
        config.hang_up = HangUp::AfterAnswer(Duration::ZERO);
        config.timeout = WAIT;
        config.seed = Some(3);
        let call = tokio::spawn(place_call(config, std::future::pending()));
        let (mut stream, peer) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut framer = StreamFramer::new(Limits::default());
        let mut buf = vec![0u8; 65536];
        let mut next = async |stream: &mut TcpStream| -> Request {
            for _ in 0..100 {
                if let Some(bytes) = framer.next_message() {
                    match message::parse(&bytes.unwrap()).unwrap() {
                        Message::Request(r) => return r,
                        Message::Response(r) => panic!("got a response {}", r.status()),
                    }
                }
                let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "the caller keeps the connection open");
                framer.push(&buf[..n]);
            }
            panic!("no message in 100 reads");
        };
        let invite = next(&mut stream).await;
        let via = invite.top_via().unwrap();
        assert_eq!(via.transport, "TCP");
        assert_eq!(via.sent_by.to_string(), peer.to_string());
        let ok = invite
            .response(200, "OK")
            .to_tag("b1")
            .header("Contact", &format!("<sip:bridge@{addr};transport=tcp>"))
            .body(
                "application/sdp",
                sdp::offer(&sdp::LocalMedia {
                    address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    rtp_port: 40000,
                    session_id: 1,
                    session_version: 1,
                })
                .as_bytes(),
            )
            .to_bytes();
        stream.write_all(&ok).await.unwrap();
        let ack = next(&mut stream).await;
        assert_eq!(ack.method(), &Method::Ack);
        let bye = next(&mut stream).await;
        assert_eq!(bye.method(), &Method::Bye);
        stream
            .write_all(&bye.response(200, "OK").to_bytes())
            .await
            .unwrap();
        let report = tokio::time::timeout(WAIT, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.outcome, Outcome::Completed);
        assert_eq!(report.hung_up_by, Some(Party::Caller));
    }

    #[test]
    fn uri_transport_reads_the_transport_parameter() {
        assert_eq!(uri_transport("sip:1@h;transport=tcp"), Some(Transport::Tcp));
        assert_eq!(
            uri_transport("sip:1@h:5060;lr;Transport=UDP"),
            Some(Transport::Udp)
        );
        assert_eq!(uri_transport("sip:1@h;transport=sctp"), None);
        assert_eq!(uri_transport("sip:1@h"), None);
        assert_eq!(uri_transport("sip:1@h?transport=tcp"), None);
    }

    #[test]
    fn uri_host_port_reads_sip_uris() {
        assert_eq!(
            uri_host_port("sip:+14255550100@127.0.0.1:5060"),
            Some(("127.0.0.1".into(), 5060))
        );
        assert_eq!(
            uri_host_port("sip:bridge.example.com;transport=udp"),
            Some(("bridge.example.com".into(), 5060))
        );
        assert_eq!(
            uri_host_port("sips:a@[::1]:5061"),
            Some(("::1".into(), 5061))
        );
        assert_eq!(uri_host_port("tel:+14255550100"), None);
        assert_eq!(uri_host_port("sip:a@"), None);
        assert_eq!(uri_host_port("sip:a@h:port"), None);
    }
}
