//! The protocol limits of `dialin serve` over loopback, with raw UDP and
//! TCP sockets: each limit hit gets its documented answer (README
//! "Limits"), is counted in `dialin_limit_hits_total`, and the bridge still
//! completes a normal call afterwards.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::bridge::{Bridge, DEADLINE, NUMBER, assert_joined, call, call_config};
use common::{dialin_command, raw_request, run_bounded};
use dialin::caller::{HangUp, Transport};
use dialin::media::dtmf::DtmfMethod;
use dialin::net::sip::LIMIT_NAMES;
use dialin::sip::framing::Limits;
use dialin::sip::message::{self, Message, Method, RequestBuilder, Response, SipHeaders};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long a close or an answer may take to show.
const WAIT: Duration = Duration::from_secs(10);

/// How many times `limit` was hit, as the bridge counts it.
fn hits(bridge: &Bridge, limit: &str) -> u64 {
    let i = LIMIT_NAMES
        .iter()
        .position(|n| *n == limit)
        .unwrap_or_else(|| panic!("{limit} is not a limit name"));
    bridge.monitor.stats().limit_hits[i].load(std::sync::atomic::Ordering::Relaxed)
}

/// The metrics text, as `GET /api/metrics` serves it.
async fn metrics(bridge: &Bridge) -> String {
    let auth = format!("Authorization: Bearer {}", bridge.token);
    let answer = raw_request(bridge.admin, "GET", "/api/metrics", &[auth.as_bytes()], b"").await;
    assert_eq!(answer.status, 200);
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// An OPTIONS request from `via` (a transport and address), with `extra`
/// header fields, as bytes.
fn options(via: (&str, &str), call_id: &str, extra: &[(String, String)]) -> Vec<u8> {
    let mut builder = RequestBuilder::new(Method::Options, "sip:bridge@127.0.0.1")
        .via(via.0, via.1, call_id)
        .from("sip:tester@127.0.0.1", "t")
        .to("sip:bridge@127.0.0.1", None)
        .call_id(call_id);
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    builder.to_bytes()
}

/// `n` extra header fields.
fn many_headers(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("X-Filler-{i}"), "x".into()))
        .collect()
}

/// One header field `bytes` long in all (name, colon, space, value).
fn long_header(bytes: usize) -> Vec<(String, String)> {
    vec![("Subject".into(), "s".repeat(bytes - "Subject: ".len()))]
}

fn parse_response(bytes: &[u8]) -> Response {
    match message::parse(bytes).expect("the bridge sends valid SIP") {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method()),
    }
}

/// A UDP peer of the bridge.
struct Udp {
    socket: UdpSocket,
    to: SocketAddr,
}

impl Udp {
    async fn new(bridge: &Bridge) -> Udp {
        Udp {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket"),
            to: bridge.sip,
        }
    }

    fn addr(&self) -> String {
        self.socket.local_addr().expect("bound").to_string()
    }

    async fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.to).await.expect("sent");
    }

    async fn response(&self) -> Response {
        let mut buf = vec![0u8; 65536];
        let (n, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("the bridge answered in time")
            .expect("received");
        parse_response(&buf[..n])
    }

    /// The final response, past any 1xx.
    async fn final_response(&self) -> Response {
        for _ in 0..10 {
            let r = self.response().await;
            if r.status() >= 200 {
                return r;
            }
        }
        panic!("only provisional responses arrived");
    }
}

/// A TCP connection to the bridge, reading SIP responses off it.
struct Tcp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Tcp {
    async fn connect(bridge: &Bridge) -> Tcp {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(bridge.sip))
            .await
            .expect("connected in time")
            .expect("connected");
        Tcp {
            stream,
            buf: Vec::new(),
        }
    }

    fn addr(&self) -> String {
        self.stream.local_addr().expect("connected").to_string()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("written");
    }

    /// The next response; `None` when the bridge closed the connection.
    async fn response(&mut self) -> Option<Response> {
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..1000 {
            // Pongs (CRLF) between messages are skipped.
            let skip = self
                .buf
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
                .unwrap_or(self.buf.len());
            self.buf.drain(..skip);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                // The bridge's responses here have no body.
                let message: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Some(parse_response(&message));
            }
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("an answer or a close in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        panic!("no whole response in 1000 reads");
    }

    /// Waits (bounded) for the bridge to close the connection, reading
    /// and dropping what comes; the time it took.
    async fn closed(&mut self) -> Duration {
        let started = Instant::now();
        let mut chunk = [0u8; 4096];
        for _ in 0..1000 {
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("the bridge closes the connection in time")
            {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
        panic!("the connection kept sending");
    }
}

/// An INVITE from a raw socket of its own (127.0.0.1, another port), and
/// the bridge's final answer to it.
async fn another_invite(bridge: &Bridge, name: &str) -> Response {
    let udp = Udp::new(bridge).await;
    let uri = format!("sip:{NUMBER}@{}", bridge.sip);
    let invite = RequestBuilder::new(Method::Invite, &uri)
        .via("UDP", &udp.addr(), name)
        .from(&format!("sip:{name}@127.0.0.1"), name)
        .to(&uri, None)
        .call_id(name)
        .header("Contact", &format!("<sip:{name}@{}>", udp.addr()))
        .to_bytes();
    udp.send(&invite).await;
    udp.final_response().await
}

/// A normal call still joins: the limits hit before left the bridge whole.
async fn a_call_joins(bridge: &Bridge, transport: Transport) {
    let id = bridge.enable("after@contoso.com", None).await;
    let mut config = call_config(bridge, NUMBER, &format!("{id}#"), DtmfMethod::Rfc4733);
    config.transport = transport;
    assert_joined(&call(config).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_gets_413_on_udp_and_413_then_a_close_on_tcp() {
    let bridge = Bridge::start_with(|sip| sip.limits = Limits::with_max_message(4096), None).await;
    let udp = Udp::new(&bridge).await;
    let big = options(("UDP", &udp.addr()), "big-udp", &many_headers(0));
    let mut big = String::from_utf8(big).expect("text");
    // A body past the limit, with its Content-Length.
    big = big.replace("Content-Length: 0\r\n\r\n", "Content-Length: 5000\r\n\r\n");
    big.push_str(&"b".repeat(5000));
    udp.send(big.as_bytes()).await;
    let r = udp.response().await;
    assert_eq!((r.status(), r.reason()), (413, "Request Entity Too Large"));
    assert_eq!(hits(&bridge, "max-message"), 1);

    // On TCP the header section is answered, then the stream (lost: its
    // body will not be read) is closed.
    let mut tcp = Tcp::connect(&bridge).await;
    let head = options(("TCP", &tcp.addr()), "big-tcp", &[]);
    let head = String::from_utf8(head)
        .expect("text")
        .replace("Content-Length: 0", "Content-Length: 100000");
    tcp.send(head.as_bytes()).await;
    let r = tcp.response().await.expect("a 413 before the close");
    assert_eq!(r.status(), 413);
    assert_eq!(r.call_id(), Some("big-tcp"));
    tcp.closed().await;
    assert_eq!(hits(&bridge, "max-message"), 2);

    a_call_joins(&bridge, Transport::Udp).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_400_too_many_headers_and_no_via_gets_nothing() {
    let bridge = Bridge::start().await;
    let udp = Udp::new(&bridge).await;
    let defaults = Limits::default();
    // At the limit (the request has 7 fields of its own): answered 200.
    let at = options(
        ("UDP", &udp.addr()),
        "at",
        &many_headers(defaults.max_headers - 7),
    );
    udp.send(&at).await;
    assert_eq!(udp.response().await.status(), 200);
    let over = options(
        ("UDP", &udp.addr()),
        "over",
        &many_headers(defaults.max_headers - 6),
    );
    udp.send(&over).await;
    let r = udp.response().await;
    assert_eq!((r.status(), r.reason()), (400, "Too Many Headers"));
    assert_eq!(r.call_id(), Some("over"));

    // Without a Via no response can be formed: dropped. The next request's
    // answer is the next thing to arrive.
    let no_via = options(
        ("UDP", &udp.addr()),
        "no-via",
        &many_headers(defaults.max_headers),
    );
    let no_via = String::from_utf8(no_via)
        .expect("text")
        .lines()
        .filter(|l| !l.starts_with("Via:"))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    assert!(no_via.ends_with("\r\n\r\n"));
    udp.send(no_via.as_bytes()).await;
    udp.send(&options(("UDP", &udp.addr()), "after", &[])).await;
    let r = udp.response().await;
    assert_eq!((r.status(), r.call_id()), (200, Some("after")));
    assert_eq!(hits(&bridge, "max-headers"), 2);

    // On TCP the framing is intact: answered, and the connection goes on.
    let mut tcp = Tcp::connect(&bridge).await;
    let over = options(
        ("TCP", &tcp.addr()),
        "over-tcp",
        &many_headers(defaults.max_headers),
    );
    tcp.send(&over).await;
    let r = tcp.response().await.expect("an answer");
    assert_eq!((r.status(), r.reason()), (400, "Too Many Headers"));
    tcp.send(&options(("TCP", &tcp.addr()), "next-tcp", &[]))
        .await;
    let r = tcp.response().await.expect("the connection goes on");
    assert_eq!((r.status(), r.call_id()), (200, Some("next-tcp")));

    let text = metrics(&bridge).await;
    assert!(
        text.contains("dialin_limit_hits_total{limit=\"max-headers\"} 3"),
        "{text}"
    );
    a_call_joins(&bridge, Transport::Tcp).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_line_over_the_limit_gets_400_and_a_long_request_uri_414() {
    let bridge = Bridge::start().await;
    let line = Limits::default().max_header_line;
    let udp = Udp::new(&bridge).await;
    udp.send(&options(("UDP", &udp.addr()), "at", &long_header(line)))
        .await;
    assert_eq!(udp.response().await.status(), 200);
    udp.send(&options(
        ("UDP", &udp.addr()),
        "over",
        &long_header(line + 1),
    ))
    .await;
    let r = udp.response().await;
    assert_eq!((r.status(), r.reason()), (400, "Header Line Too Long"));

    let mut tcp = Tcp::connect(&bridge).await;
    tcp.send(&options(
        ("TCP", &tcp.addr()),
        "over-tcp",
        &long_header(line + 1),
    ))
    .await;
    let r = tcp.response().await.expect("an answer");
    assert_eq!((r.status(), r.reason()), (400, "Header Line Too Long"));
    // A Request-URI longer than the line limit: 414 (RFC 3261 §21.4.12).
    let uri = format!("sip:{}@127.0.0.1", "1".repeat(line));
    let long_uri = RequestBuilder::new(Method::Options, &uri)
        .via("TCP", &tcp.addr(), "long-uri")
        .from("sip:tester@127.0.0.1", "t")
        .to("sip:bridge@127.0.0.1", None)
        .call_id("long-uri")
        .to_bytes();
    tcp.send(&long_uri).await;
    let r = tcp.response().await.expect("an answer");
    assert_eq!((r.status(), r.reason()), (414, "Request-URI Too Long"));
    assert_eq!(hits(&bridge, "max-header-line"), 3);

    a_call_joins(&bridge, Transport::Udp).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_past_the_datagram_gets_400_and_a_stream_without_one_is_closed() {
    let bridge = Bridge::start().await;
    let udp = Udp::new(&bridge).await;
    let short = String::from_utf8(options(("UDP", &udp.addr()), "short", &[]))
        .expect("text")
        .replace("Content-Length: 0", "Content-Length: 10");
    udp.send(short.as_bytes()).await;
    let r = udp.response().await;
    assert_eq!(
        (r.status(), r.reason()),
        (400, "Content-Length larger than the message")
    );

    // RFC 3261 §18.3: a stream message must say its length; without it
    // the stream cannot be framed, and is closed unanswered.
    let mut tcp = Tcp::connect(&bridge).await;
    let no_length = String::from_utf8(options(("TCP", &tcp.addr()), "no-cl", &[]))
        .expect("text")
        .replace("Content-Length: 0\r\n", "");
    tcp.send(no_length.as_bytes()).await;
    assert!(tcp.response().await.is_none(), "closed, unanswered");
    assert_eq!(hits(&bridge, "content-length"), 2);

    a_call_joins(&bridge, Transport::Tcp).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_past_the_per_source_limit_are_closed_and_the_others_go_on() {
    let bridge = Bridge::start_with(|sip| sip.tcp_per_source = 2, None).await;
    let mut first = Tcp::connect(&bridge).await;
    let mut second = Tcp::connect(&bridge).await;
    for (tcp, id) in [(&mut first, "one"), (&mut second, "two")] {
        tcp.send(&options(("TCP", &tcp.addr()), id, &[])).await;
        assert_eq!(tcp.response().await.map(|r| r.status()), Some(200));
    }
    // The third is accepted and closed at once, unread.
    let mut third = Tcp::connect(&bridge).await;
    third.closed().await;
    let mut fourth = Tcp::connect(&bridge).await;
    fourth.closed().await;
    assert_eq!(hits(&bridge, "tcp-per-source"), 2);
    // The two held connections are not affected.
    for (tcp, id) in [(&mut first, "one-again"), (&mut second, "two-again")] {
        tcp.send(&options(("TCP", &tcp.addr()), id, &[])).await;
        assert_eq!(tcp.response().await.map(|r| r.status()), Some(200));
    }
    // Closing one gives its slot back once the bridge has seen the close:
    // a call over TCP gets through, bounded by a few tries.
    drop(first);
    let started = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let mut tcp = Tcp::connect(&bridge).await;
        tcp.send(&options(("TCP", &tcp.addr()), "slot", &[])).await;
        if tcp.response().await.is_some() {
            break;
        }
        assert!(
            tries < 100 && started.elapsed() < WAIT,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connections still held fill the source's slots: the call goes
    // over UDP.
    a_call_joins(&bridge, Transport::Udp).await;
    drop(second);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tcp_connection_is_closed_keepalives_and_calls_keep_it_open() {
    let idle = Duration::from_secs(1);
    let bridge = Bridge::start_with(|sip| sip.tcp_idle = idle, None).await;
    // No bytes: closed after the idle time, counted from before the
    // connect (the bridge's clock starts after it).
    let started = Instant::now();
    let mut silent = Tcp::connect(&bridge).await;
    silent.closed().await;
    let took = started.elapsed();
    assert!(took >= idle && took < WAIT, "{took:?}");
    assert_eq!(hits(&bridge, "tcp-idle"), 1);

    // CRLF pings every 100 ms keep it open for 3 idle times (each ping's
    // pong shows it open; the loop runs until 3 idle times have passed,
    // 100 pings are 10 s); then silence closes it.
    let mut pinged = Tcp::connect(&bridge).await;
    let started = Instant::now();
    for _ in 0..100 {
        if started.elapsed() >= idle * 3 {
            break;
        }
        pinged.send(b"\r\n\r\n").await;
        let mut pong = [0u8; 2];
        tokio::time::timeout(WAIT, pinged.stream.read_exact(&mut pong))
            .await
            .expect("a pong in time")
            .expect("a CRLF pong: the connection is open");
        assert_eq!(&pong, b"\r\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pinged.closed().await;
    assert_eq!(hits(&bridge, "tcp-idle"), 2);

    // A call over TCP is quiet on SIP for longer than the idle time (the
    // digits go over RTP, the caller stays joined 2.5 s): the connection
    // stays, the caller's BYE goes over it.
    let id = bridge.enable("tcp@contoso.com", None).await;
    let mut config = call_config(&bridge, NUMBER, &format!("{id}#"), DtmfMethod::Rfc4733);
    config.transport = Transport::Tcp;
    assert_joined(&call(config).await);
    assert_eq!(hits(&bridge, "tcp-idle"), 2, "the call's connection stayed");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_per_source_limit_get_503_with_retry_after() {
    let bridge = Bridge::start_with(|sip| sip.calls_per_source = 1, None).await;
    let id = bridge.enable("first@contoso.com", None).await;
    let mut config = call_config(&bridge, NUMBER, &format!("{id}#"), DtmfMethod::Rfc4733);
    config.hang_up = HangUp::AfterJoined(Duration::from_secs(3));
    let first = tokio::spawn(call(config));
    tokio::time::timeout(DEADLINE, bridge.monitor.joined_at_least(1))
        .await
        .expect("the first call joins");

    // A second INVITE from 127.0.0.1 (another port: the same source).
    let r = another_invite(&bridge, "second").await;
    assert_eq!((r.status(), r.reason()), (503, "Service Unavailable"));
    let retry = r.header("Retry-After").expect("503 says when to retry");
    assert!(retry.trim().parse::<u32>().is_ok(), "{retry}");
    assert_eq!(hits(&bridge, "calls-per-source"), 1);
    let text = metrics(&bridge).await;
    assert!(
        text.contains("dialin_limit_hits_total{limit=\"calls-per-source\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dialin_invites_refused_total{status=\"503\"} 1"),
        "{text}"
    );

    assert_joined(&first.await.expect("the first call ran"));
    // The slot comes back when the first call's task ends.
    let started = Instant::now();
    while bridge.monitor.call_tasks() > 0 {
        assert!(started.elapsed() < DEADLINE, "the first call's task ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a_call_joins(&bridge, Transport::Udp).await;
    bridge.stop().await;
}

/// Two even RTP ports for the bridge that were free a moment ago.
fn two_free_ports() -> std::ops::RangeInclusive<u16> {
    let first = common::free_udp_ports(2, 2);
    first..=first + 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_rtp_port_held_an_invite_gets_503_and_ended_calls_give_theirs_back() {
    let bridge = Bridge::start_with(|sip| sip.rtp_ports = two_free_ports(), None).await;
    let ids = [
        bridge.enable("ports1@contoso.com", None).await,
        bridge.enable("ports2@contoso.com", None).await,
    ];
    // Each call first in its own meeting.
    let holding = ids.map(|id| {
        let mut config = call_config(&bridge, NUMBER, &format!("{id}#"), DtmfMethod::Rfc4733);
        config.hang_up = HangUp::AfterJoined(Duration::from_secs(3));
        tokio::spawn(call(config))
    });
    tokio::time::timeout(DEADLINE, bridge.monitor.joined_at_least(2))
        .await
        .expect("two calls join, one port each");

    let r = another_invite(&bridge, "third").await;
    assert_eq!((r.status(), r.reason()), (503, "Service Unavailable"));
    assert!(r.header("Retry-After").is_some());
    assert_eq!(hits(&bridge, "rtp-ports"), 1);
    assert!(
        metrics(&bridge)
            .await
            .contains("dialin_limit_hits_total{limit=\"rtp-ports\"} 1")
    );

    for h in holding {
        assert_joined(&h.await.expect("the call ran"));
    }
    // Without the ports given back, not one more call would get one.
    for _ in 0..2 {
        a_call_joins(&bridge, Transport::Udp).await;
    }
    bridge.stop().await;
}

#[test]
fn serve_refuses_limits_out_of_range_naming_the_flag() {
    let data = tempfile::tempdir().expect("a data folder");
    for (flag, value, expect) in [
        ("--max-message", "100", "1024"),
        ("--max-headers", "3", "8"),
        ("--max-header-line", "10", "256"),
        ("--tcp-idle", "soon", "not a duration"),
    ] {
        let mut command = dialin_command();
        command.args(["serve", "--admin", "127.0.0.1:0", "--sip", "127.0.0.1:0"]);
        command.arg("--data").arg(data.path());
        command.args([flag, value]);
        let output = run_bounded(command);
        assert!(!output.status.success(), "{flag} {value} was taken");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains(expect),
            "{flag} {value}: {stderr}"
        );
    }
}
