//! Media at scale: N concurrent calls each receiving prompt audio from a
//! `dialin serve` process, measured on the receiving side.
//!
//! The bridge runs as its own process (the release `dialin` binary), so its
//! memory and CPU are its own: RSS from `/proc/PID/status` before the calls
//! and while they all play, divided by N; CPU from `/proc/PID/stat` over the
//! measurement window. Its prompts are a data folder's `--prompts` set whose
//! welcome prompt is long enough that every call is still in it (receiving
//! 50 packets per second) for the whole window.
//!
//! The receiving side is light on purpose: one SIP socket on one thread
//! places the calls (INVITE with an SDP offer, ACK to the 200, 200 to
//! whatever the bridge sends, BYE at the end), and every call's SDP names
//! one of a few RTP sockets, each read by a thread of its own, which tells
//! calls apart by the bridge's source port. For each packet in the window:
//! |D| of RFC 3550 §6.4.1, the inter-arrival time minus the RTP timestamp
//! difference (20 ms within a prompt), into an hdrhistogram; sequence gaps
//! as lost packets. The UDP counters of `/proc/net/snmp` (whole machine)
//! say whether any loss was a socket buffer overflow.
//!
//! `cargo bench --bench media [-- CALLS [SECONDS]]` (default 2000 calls,
//! a 20 s window). Calls are placed at 400 per second.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dialin::media::prompts::PromptId;
use dialin::media::recorder::wav_bytes;
use dialin::media::rtp::RtpHeader;
use dialin::sip::message::{Message, Method, RequestBuilder, SipHeaders, parse};
use hdrhistogram::Histogram;

const NUMBER: &str = "+14255550100";
/// RTP sockets on the receiving side, a thread each (each with the default
/// receive buffer, which the bench can't raise). With 4, a loaded 2-core
/// machine overflowed them (RcvbufErrors); 16 lost nothing. On loopback the
/// receiver's wake-up is charged to the bridge's `sendto`.
const RECEIVERS: usize = 16;
const CALL_RATE: f64 = 400.0;
/// Settle time after the last call is answered, before the window opens.
const SETTLE: Duration = Duration::from_secs(2);
const TARGET_P99: Duration = Duration::from_millis(5);
const TARGET_BYTES_PER_CALL: f64 = 32.0 * 1024.0;

fn main() -> anyhow::Result<()> {
    let numbers: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let calls = numbers
        .first()
        .map_or(2000, |n| *n as usize)
        .clamp(1, 10_000);
    let window = Duration::from_secs_f64(numbers.get(1).copied().unwrap_or(20.0).clamp(1.0, 90.0));
    println!("load average at start: {}", load_average());
    println!(
        "dialin media benchmark: {calls} calls, a {:.0?} window, {} CPUs",
        window,
        thread::available_parallelism().map_or(0, |n| n.get())
    );

    let tmp = tempfile::tempdir()?;
    let ramp = Duration::from_secs_f64(calls as f64 / CALL_RATE);
    // Long enough for the ramp, the settling, the window and some slack.
    let welcome = ramp + SETTLE + window + Duration::from_secs(15);
    anyhow::ensure!(
        welcome < Duration::from_secs(120),
        "the welcome prompt would last {welcome:?}, over the 120 s a prompt may: fewer calls or a shorter window"
    );
    let prompts = tmp.path().join("prompts");
    write_prompts(&prompts, welcome)?;

    let sip = free_udp_port()?;
    let bridge = Command::new(env!("CARGO_BIN_EXE_dialin"))
        .args(["serve", "--data"])
        .arg(tmp.path().join("data"))
        .arg("--prompts")
        .arg(&prompts)
        .args([
            "--admin",
            "127.0.0.1:0",
            "--sip",
            &sip.to_string(),
            "--rtp-ports",
            "30000-39999",
            "--max-calls",
            &(calls + 10).to_string(),
            "--guard",
            "off",
            // Every call comes from this one address.
            "--calls-per-source",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = bridge.id();
    let result = run(pid, sip, calls, window, ramp);
    let stopped = stop(bridge);
    result?;
    stopped
}

fn run(
    pid: u32,
    sip: SocketAddr,
    calls: usize,
    window: Duration,
    ramp: Duration,
) -> anyhow::Result<()> {
    wait_for_options(sip)?;
    let rss_idle = rss_kib(pid)?;
    println!("bridge pid {pid}: ready, RSS {rss_idle} KiB with no calls");

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    let mut rtp_addrs = Vec::new();
    for _ in 0..RECEIVERS {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        rtp_addrs.push(socket.local_addr()?);
        let (measuring, stop) = (measuring.clone(), stop.clone());
        receivers.push(thread::spawn(move || receive(&socket, &measuring, &stop)));
    }

    let answered = Arc::new(AtomicUsize::new(0));
    let sip_stop = Arc::new(AtomicBool::new(false));
    let uac = {
        let (answered, sip_stop) = (answered.clone(), sip_stop.clone());
        thread::spawn(move || place_calls(sip, calls, &rtp_addrs, &answered, &sip_stop))
    };

    let limit = Instant::now() + ramp * 2 + Duration::from_secs(20);
    while answered.load(Ordering::Relaxed) < calls && Instant::now() < limit {
        thread::sleep(Duration::from_millis(50));
    }
    let up = answered.load(Ordering::Relaxed);
    println!("calls answered: {up} of {calls}");
    thread::sleep(SETTLE);

    let cpu0 = cpu_ticks(pid)?;
    let udp0 = udp_counters()?;
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    thread::sleep(window / 2);
    let rss_busy = rss_kib(pid)?;
    thread::sleep(window / 2);
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu1 = cpu_ticks(pid)?;
    let udp1 = udp_counters()?;

    sip_stop.store(true, Ordering::Relaxed);
    let sip_report = uac
        .join()
        .map_err(|_| anyhow::anyhow!("the SIP thread panicked"))??;
    stop.store(true, Ordering::Relaxed);
    let mut total = Stats::new()?;
    for r in receivers {
        let stats = r
            .join()
            .map_err(|_| anyhow::anyhow!("a receiver panicked"))?;
        total.merge(&stats)?;
    }

    let secs = elapsed.as_secs_f64();
    println!();
    println!("in the {secs:.1}s window:");
    println!(
        "  packets received: {} = {:.0}/s ({:.1}/s per answered call; 50/s expected)",
        total.packets,
        total.packets as f64 / secs,
        total.packets as f64 / secs / up.max(1) as f64
    );
    println!(
        "  calls heard: {} of {up}; lost (sequence gaps): {}; out of order: {}",
        total.calls.len(),
        total.lost,
        total.reordered
    );
    let h = &total.jitter;
    let us = |v: u64| Duration::from_micros(v);
    println!(
        "  |D| (inter-arrival minus timestamp spacing): p50 {:.2?}, p99 {:.2?}, p99.9 {:.2?}, max {:.2?}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    );
    println!(
        "  |D| over 5 ms: {}, over 20 ms: {}",
        h.count_between(5_001, u64::MAX),
        h.count_between(20_001, u64::MAX)
    );
    println!(
        "  UDP on the machine: RcvbufErrors +{}, SndbufErrors +{}, InErrors +{}",
        udp1.rcvbuf - udp0.rcvbuf,
        udp1.sndbuf - udp0.sndbuf,
        udp1.in_errors - udp0.in_errors
    );
    let cores = (cpu1 - cpu0) as f64 / ticks_per_sec() / secs;
    println!(
        "  bridge CPU: {:.2} cores ({:.1} µs per packet sent)",
        cores,
        cores * 1e6 / (total.packets as f64 / secs).max(1.0)
    );
    let per_call = (rss_busy.saturating_sub(rss_idle) * 1024) as f64 / up.max(1) as f64;
    println!(
        "  bridge RSS: {rss_idle} KiB idle, {rss_busy} KiB with {up} calls: {:.1} KiB per call",
        per_call / 1024.0
    );
    println!(
        "SIP: {} INVITEs, {} answered, {} refused, {} BYEs from the bridge, {} of our BYEs answered",
        sip_report.invites,
        sip_report.answered,
        sip_report.refused,
        sip_report.bridge_byes,
        sip_report.byes_answered
    );

    println!();
    println!("load average at end: {}", load_average());
    println!("targets:");
    let p99 = us(h.value_at_quantile(0.99));
    println!(
        "  {calls} calls at 50 packets/s, p99 send-time jitter < {TARGET_P99:?}: {} (p99 {p99:.2?})",
        met(up == calls && p99 < TARGET_P99)
    );
    println!(
        "  no packet lost: {} ({} lost)",
        met(total.lost == 0 && total.calls.len() == calls),
        total.lost
    );
    println!(
        "  memory < 32 KiB per active call: {} ({:.1} KiB)",
        met(per_call < TARGET_BYTES_PER_CALL),
        per_call / 1024.0
    );
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

// ------------------------------------------------------------------ RTP

struct CallState {
    arrival: Instant,
    timestamp: u32,
    sequence: u16,
}

struct Stats {
    calls: HashMap<u16, CallState>,
    jitter: Histogram<u64>,
    packets: u64,
    lost: u64,
    reordered: u64,
}

impl Stats {
    fn new() -> anyhow::Result<Stats> {
        Ok(Stats {
            calls: HashMap::new(),
            // Microseconds, up to 60 s, 3 significant digits.
            jitter: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            packets: 0,
            lost: 0,
            reordered: 0,
        })
    }

    fn merge(&mut self, other: &Stats) -> anyhow::Result<()> {
        self.jitter.add(&other.jitter)?;
        self.packets += other.packets;
        self.lost += other.lost;
        self.reordered += other.reordered;
        // Calls are told apart by the bridge's port: distinct across receivers.
        for (&port, s) in &other.calls {
            self.calls.insert(
                port,
                CallState {
                    arrival: s.arrival,
                    timestamp: s.timestamp,
                    sequence: s.sequence,
                },
            );
        }
        Ok(())
    }

    fn record(&mut self, port: u16, now: Instant, sequence: u16, timestamp: u32) {
        self.packets += 1;
        let Some(prev) = self.calls.get_mut(&port) else {
            self.calls.insert(
                port,
                CallState {
                    arrival: now,
                    timestamp,
                    sequence,
                },
            );
            return;
        };
        let step = sequence.wrapping_sub(prev.sequence);
        if step == 0 || step > 0x8000 {
            self.reordered += 1;
            return;
        }
        self.lost += u64::from(step - 1);
        // RFC 3550 §6.4.1: D(i,j) = (Rj - Ri) - (Sj - Si), at 8 kHz.
        let arrived = now.duration_since(prev.arrival).as_micros() as i64;
        let spacing = i64::from(timestamp.wrapping_sub(prev.timestamp)) * 1000 / 8;
        let d = (arrived - spacing).unsigned_abs().max(1);
        let _ = self.jitter.record(d.min(60_000_000));
        *prev = CallState {
            arrival: now,
            timestamp,
            sequence,
        };
    }
}

fn receive(socket: &UdpSocket, measuring: &AtomicBool, stop: &AtomicBool) -> Stats {
    let mut stats = Stats::new().expect("valid histogram bounds");
    let mut buf = [0u8; 2048];
    let mut opened = false;
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let now = Instant::now();
        if !measuring.load(Ordering::Relaxed) {
            // Before the window: forget the previous packet, so the
            // window's first one starts the call afresh. After it: ignore.
            if !opened {
                stats.calls.remove(&from.port());
            }
            continue;
        }
        opened = true;
        if let Ok(h) = RtpHeader::parse(&buf[..n]) {
            stats.record(from.port(), now, h.sequence(), h.timestamp());
        }
    }
    stats
}

// ------------------------------------------------------------------ SIP

#[derive(Default)]
struct SipReport {
    invites: usize,
    answered: usize,
    refused: usize,
    bridge_byes: usize,
    byes_answered: usize,
}

struct Dialog {
    to_tag: String,
    contact: String,
}

fn place_calls(
    bridge: SocketAddr,
    calls: usize,
    rtp: &[SocketAddr],
    answered: &AtomicUsize,
    stop: &AtomicBool,
) -> anyhow::Result<SipReport> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(1)))?;
    let me = socket.local_addr()?;
    let mut report = SipReport::default();
    let mut dialogs: HashMap<usize, Dialog> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let started = Instant::now();
    let limit = started + Duration::from_secs(600);
    let uri = format!("sip:{NUMBER}@{bridge}");
    while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
        let due = (started.elapsed().as_secs_f64() * CALL_RATE) as usize + 1;
        while report.invites < calls.min(due) {
            let i = report.invites;
            let sdp = offer(rtp[i % rtp.len()]);
            let invite = RequestBuilder::new(Method::Invite, &uri)
                .via("UDP", &me.to_string(), &format!("inv{i}"))
                .from(&format!("sip:caller{i}@{me}"), &format!("f{i}"))
                .to(&uri, None)
                .call_id(&format!("media-{i}@bench"))
                .cseq(1)
                .header("Contact", &format!("<sip:caller{i}@{me}>"))
                .body("application/sdp", sdp.as_bytes())
                .to_bytes();
            socket.send_to(&invite, bridge)?;
            report.invites += 1;
        }
        handle_sip(&socket, &mut buf, me, &uri, &mut dialogs, &mut report)?;
        answered.store(report.answered, Ordering::Relaxed);
    }
    // BYE every call, then collect the answers for a while.
    for (i, d) in &dialogs {
        let bye = RequestBuilder::new(Method::Bye, &d.contact)
            .via("UDP", &me.to_string(), &format!("bye{i}"))
            .from(&format!("sip:caller{i}@{me}"), &format!("f{i}"))
            .to(&uri, Some(&d.to_tag))
            .call_id(&format!("media-{i}@bench"))
            .cseq(2)
            .to_bytes();
        socket.send_to(&bye, bridge)?;
        if i % 10 == 0 {
            handle_sip(
                &socket,
                &mut buf,
                me,
                &uri,
                &mut HashMap::new(),
                &mut report,
            )?;
        }
    }
    let until = Instant::now() + Duration::from_secs(10);
    while report.byes_answered < dialogs.len() && Instant::now() < until {
        handle_sip(
            &socket,
            &mut buf,
            me,
            &uri,
            &mut HashMap::new(),
            &mut report,
        )?;
    }
    Ok(report)
}

/// Reads what is waiting (up to a 1 ms timeout) and answers it.
fn handle_sip(
    socket: &UdpSocket,
    buf: &mut [u8],
    me: SocketAddr,
    uri: &str,
    dialogs: &mut HashMap<usize, Dialog>,
    report: &mut SipReport,
) -> anyhow::Result<()> {
    for _ in 0..256 {
        let (n, from) = match socket.recv_from(buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let Ok(message) = parse(&buf[..n]) else {
            continue;
        };
        match message {
            Message::Request(request) => {
                if *request.method() == Method::Bye {
                    report.bridge_byes += 1;
                }
                socket.send_to(&request.response(200, "OK").to_bytes(), from)?;
            }
            Message::Response(response) => {
                let Some(cseq) = response.cseq() else {
                    continue;
                };
                let Some(i) = response
                    .call_id()
                    .and_then(|c| c.strip_prefix("media-"))
                    .and_then(|c| c.strip_suffix("@bench"))
                    .and_then(|c| c.parse::<usize>().ok())
                else {
                    continue;
                };
                let status = response.status();
                if cseq.method == Method::Bye {
                    report.byes_answered += usize::from(status >= 200);
                    continue;
                }
                if status < 200 || cseq.method != Method::Invite {
                    continue;
                }
                let to_tag = response.to_tag().unwrap_or_default();
                if status >= 300 {
                    // RFC 3261 §17.1.1.3: the ACK to a failure is in the
                    // INVITE's transaction.
                    report.refused += 1;
                    let ack = RequestBuilder::new(Method::Ack, uri)
                        .via("UDP", &me.to_string(), &format!("inv{i}"))
                        .from(&format!("sip:caller{i}@{me}"), &format!("f{i}"))
                        .to(uri, Some(&to_tag))
                        .call_id(&format!("media-{i}@bench"))
                        .cseq(1)
                        .to_bytes();
                    socket.send_to(&ack, from)?;
                    continue;
                }
                let contact = response.contact_uri().unwrap_or_else(|| uri.to_string());
                // Every 200 (first or retransmitted) gets an ACK (§13.2.2.4).
                let ack = RequestBuilder::new(Method::Ack, &contact)
                    .via("UDP", &me.to_string(), &format!("ack{i}"))
                    .from(&format!("sip:caller{i}@{me}"), &format!("f{i}"))
                    .to(uri, Some(&to_tag))
                    .call_id(&format!("media-{i}@bench"))
                    .cseq(1)
                    .to_bytes();
                socket.send_to(&ack, from)?;
                if dialogs.insert(i, Dialog { to_tag, contact }).is_none() {
                    report.answered += 1;
                }
            }
        }
    }
    Ok(())
}

fn offer(rtp: SocketAddr) -> String {
    format!(
        "v=0\r\no=bench 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

// ------------------------------------------------------------------ the bridge process

/// Every prompt as a tone; the welcome one `welcome` long.
fn write_prompts(dir: &Path, welcome: Duration) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for prompt in PromptId::ALL {
        let length = if prompt == PromptId::Welcome {
            welcome
        } else {
            Duration::from_secs(1)
        };
        // Whole 20 ms frames of a 440 Hz tone, quiet enough not to be DTMF.
        let frames = length.as_millis() as usize / 20;
        let samples: Vec<i16> = (0..frames * 160)
            .map(|n| {
                let t = n as f64 / 8000.0;
                (4000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect();
        std::fs::write(dir.join(format!("{prompt}.wav")), wav_bytes(&samples)?)?;
    }
    Ok(())
}

fn stop(child: Child) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "dialin serve exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn free_udp_port() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_for_options(to: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(10)))?;
    let me = socket.local_addr()?;
    let mut buf = [0u8; 4096];
    for n in 1..=1000u32 {
        let options = RequestBuilder::new(Method::Options, &format!("sip:ping@{to}"))
            .via("UDP", &me.to_string(), &format!("ping{n}"))
            .from(&format!("sip:bench@{me}"), "bench")
            .to(&format!("sip:ping@{to}"), None)
            .call_id(&format!("ping-{n}@bench"))
            .cseq(n)
            .to_bytes();
        let _ = socket.send_to(&options, to);
        match socket.recv_from(&mut buf) {
            Ok((len, _)) if buf[..len].starts_with(b"SIP/2.0 200") => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    anyhow::bail!("the bridge at {to} did not answer OPTIONS within 10 s")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// User + system CPU ticks of the process.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

fn ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

struct UdpCounters {
    in_errors: u64,
    rcvbuf: u64,
    sndbuf: u64,
}

fn udp_counters() -> anyhow::Result<UdpCounters> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        anyhow::bail!("no Udp lines in /proc/net/snmp");
    };
    let map: HashMap<&str, u64> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
        .collect();
    let get = |k: &str| map.get(k).copied().unwrap_or(0);
    Ok(UdpCounters {
        in_errors: get("InErrors"),
        rcvbuf: get("RcvbufErrors"),
        sndbuf: get("SndbufErrors"),
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
