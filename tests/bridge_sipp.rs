//! The SIP bridge end to end: real SIPp (Debian `sip-tester`) calls an
//! in-process `dialin serve` on loopback, and raw UDP checks the answers
//! that need no call (404, 488, 481, 405, garbage, OPTIONS) and shutdown.
//!
//! The SIPp scenarios are in `tests/sipp/`. SIPp runs with `-m 1 -timeout
//! 30s -timeout_error` on ports the test picked, in `spawn_blocking`, so the
//! bridge keeps running on the test's runtime.

mod common;

use common::bridge::{Bridge, DEADLINE};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dialin::sip::message::{self, Message, Method, RequestBuilder, SipHeaders};
use tokio::net::UdpSocket;

/// The default tenant's toll number, without the `+` (SIPp's `-s`).
const SERVICE: &str = "14255550100";

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// An even port for SIPp's RTP echo (`-mp`) that is free with the three
/// after it (SIPp binds the port and the port + 2).
fn free_media_port() -> u16 {
    common::free_udp_ports(4, 1)
}

/// Runs SIPp with `scenario` against the bridge; panics with its output if it fails.
async fn sipp(bridge: &Bridge, scenario_name: &str, extra: &[String]) {
    let dir = tempfile::tempdir().expect("a folder for SIPp's logs");
    let mut command = Command::new("sipp");
    command
        .current_dir(dir.path())
        .arg("-sf")
        .arg(scenario(scenario_name))
        .args([
            "-s",
            SERVICE,
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .args(["-i", "127.0.0.1", "-nostdin", "-trace_err"])
        // No -p: SIPp binds the first free port from 5060 up.
        .args(["-mp", &free_media_port().to_string()])
        .args(extra)
        .arg(bridge.sip.to_string());
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("SIPp finished in time")
    .expect("SIPp ran")
    .expect("sipp is installed (Debian package sip-tester)");
    if !output.status.success() {
        let mut errors = String::new();
        for entry in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            errors.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        panic!(
            "SIPp {scenario_name} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n"),
            errors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_info_digits_of_a_valid_id_join_and_the_call_stays_up() {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let mut extra = Vec::new();
    for (i, digit) in id.chars().enumerate() {
        extra.extend(["-set".to_string(), format!("d{}", i + 1), digit.to_string()]);
    }
    sipp(&bridge, "info_valid_id.xml", &extra).await;
    assert_eq!(bridge.monitor.joined_total(), 1, "the caller joined");
    assert_eq!(
        bridge.monitor.bridge_hangups(),
        0,
        "the caller hung up, not the bridge"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_three_invalid_ids_get_the_bridges_bye_with_a_reason() {
    let bridge = Bridge::start().await;
    bridge.enable("alice@contoso.com", Some("7654321")).await;
    sipp(&bridge, "info_invalid_three.xml", &[]).await;
    // The bridge counts the call once SIPp's 200 to its BYE reached it.
    tokio::time::timeout(DEADLINE, bridge.monitor.ended_at_least(1))
        .await
        .expect("the bridge ends the call");
    assert_eq!(bridge.monitor.joined_total(), 0);
    assert_eq!(bridge.monitor.bridge_hangups(), 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_rfc4733_digits_from_pcaps_join_and_the_call_stays_up() {
    let bridge = Bridge::start().await;
    // The scenario plays SIPp's pcaps for 7, 6, 5, 4, 3, 2, 1 and #.
    bridge.enable("alice@contoso.com", Some("7654321")).await;
    sipp(&bridge, "rfc4733_valid_id.xml", &[]).await;
    assert_eq!(bridge.monitor.joined_total(), 1, "the caller joined");
    assert_eq!(bridge.monitor.bridge_hangups(), 0);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_gets_200_with_allow() {
    let bridge = Bridge::start().await;
    sipp(&bridge, "options.xml", &[]).await;
    bridge.stop().await;
}

// ------------------------------------------------------------------ raw UDP

struct Peer {
    socket: UdpSocket,
    to: SocketAddr,
}

impl Peer {
    async fn new(bridge: &Bridge) -> Peer {
        Peer {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket"),
            to: bridge.sip,
        }
    }

    fn addr(&self) -> String {
        self.socket.local_addr().expect("bound").to_string()
    }

    fn request(&self, method: Method, uri: &str, call_id: &str, branch: &str) -> RequestBuilder {
        RequestBuilder::new(method, uri)
            .via("UDP", &self.addr(), branch)
            .from(&format!("sip:caller@{}", self.addr()), "caller-tag")
            .to(uri, None)
            .call_id(call_id)
            .header("Contact", &format!("<sip:caller@{}>", self.addr()))
    }

    async fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.to).await.expect("sent");
    }

    /// The next message from the bridge that is not a 1xx response.
    async fn next_final(&self) -> Message {
        let mut buf = vec![0u8; 65536];
        for _ in 0..20 {
            let (n, _) = tokio::time::timeout(DEADLINE, self.socket.recv_from(&mut buf))
                .await
                .expect("the bridge answered in time")
                .expect("received");
            let message = message::parse(&buf[..n]).expect("the bridge sends valid SIP");
            match &message {
                Message::Response(r) if r.status() < 200 => continue,
                _ => return message,
            }
        }
        panic!("only provisional responses arrived");
    }

    /// The next response from the bridge, provisional ones included.
    async fn next_response(&self) -> message::Response {
        let mut buf = vec![0u8; 65536];
        let (n, _) = tokio::time::timeout(DEADLINE, self.socket.recv_from(&mut buf))
            .await
            .expect("the bridge answered in time")
            .expect("received");
        match message::parse(&buf[..n]).expect("the bridge sends valid SIP") {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {}", r.method()),
        }
    }

    async fn final_status(&self) -> (u16, message::Response) {
        match self.next_final().await {
            Message::Response(r) => (r.status(), r),
            Message::Request(r) => panic!("expected a response, got {}", r.method()),
        }
    }
}

fn sdp(formats: &str, rtpmaps: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP {formats}\r\n{rtpmaps}"
    )
}

fn pcmu_sdp() -> String {
    sdp(
        "0 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
}

#[tokio::test]
async fn invite_to_a_number_that_is_not_the_tenants_gets_404() {
    let bridge = Bridge::start().await;
    let peer = Peer::new(&bridge).await;
    let uri = format!("sip:+19995550000@{}", bridge.sip);
    let invite = peer
        .request(Method::Invite, &uri, "c404", "b404")
        .body("application/sdp", pcmu_sdp().as_bytes())
        .to_bytes();
    peer.send(&invite).await;
    let (status, response) = peer.final_status().await;
    assert_eq!(status, 404);
    assert!(
        response.to_tag().is_some(),
        "a final response carries a To tag"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn invite_with_only_g729_gets_488() {
    let bridge = Bridge::start().await;
    let peer = Peer::new(&bridge).await;
    let uri = format!("sip:+{SERVICE}@{}", bridge.sip);
    let body = sdp("18", "a=rtpmap:18 G729/8000\r\n");
    let invite = peer
        .request(Method::Invite, &uri, "c488", "b488")
        .body("application/sdp", body.as_bytes())
        .to_bytes();
    peer.send(&invite).await;
    let (status, _) = peer.final_status().await;
    assert_eq!(status, 488);
    assert_eq!(bridge.monitor.joined_total(), 0);
    bridge.stop().await;
}

#[tokio::test]
async fn an_invite_past_max_calls_gets_503_with_retry_after() {
    let bridge = Bridge::start_with(|sip| sip.max_calls = 0, None).await;
    let peer = Peer::new(&bridge).await;
    let uri = format!("sip:+{SERVICE}@{}", bridge.sip);
    let invite = peer
        .request(Method::Invite, &uri, "c503", "b503")
        .body("application/sdp", pcmu_sdp().as_bytes())
        .to_bytes();
    peer.send(&invite).await;
    let (status, response) = peer.final_status().await;
    assert_eq!(status, 503);
    let retry = response
        .header("Retry-After")
        .expect("503 says when to retry");
    assert!(retry.trim().parse::<u32>().is_ok(), "{retry}");
    assert_eq!(bridge.monitor.active_calls(), 0);
    bridge.stop().await;
}

#[tokio::test]
async fn cancel_while_ringing_gets_200_and_the_invite_487() {
    let bridge = Bridge::start_with(|sip| sip.ring = Duration::from_secs(30), None).await;
    let peer = Peer::new(&bridge).await;
    let uri = format!("sip:+{SERVICE}@{}", bridge.sip);
    let invite = peer
        .request(Method::Invite, &uri, "ccancel", "bcancel")
        .body("application/sdp", pcmu_sdp().as_bytes())
        .to_bytes();
    peer.send(&invite).await;
    assert_eq!(peer.next_response().await.status(), 100);
    assert_eq!(peer.next_response().await.status(), 180, "ringing");

    // RFC 3261 §9.1: the CANCEL carries the INVITE's branch and CSeq number.
    let cancel = peer
        .request(Method::Cancel, &uri, "ccancel", "bcancel")
        .to_bytes();
    peer.send(&cancel).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = peer.next_response().await;
        answers.push((r.cseq().expect("a CSeq").method.to_string(), r.status()));
    }
    answers.sort();
    assert_eq!(
        answers,
        vec![("CANCEL".to_string(), 200), ("INVITE".to_string(), 487)]
    );
    assert_eq!(bridge.monitor.joined_total(), 0);
    bridge.stop().await;
}

#[tokio::test]
async fn bye_in_an_unknown_dialog_gets_481() {
    let bridge = Bridge::start().await;
    let peer = Peer::new(&bridge).await;
    let uri = format!("sip:{SERVICE}@{}", bridge.sip);
    let bye = RequestBuilder::new(Method::Bye, &uri)
        .via("UDP", &peer.addr(), "b481")
        .from("sip:caller@example.com", "caller-tag")
        .to(&uri, Some("no-such-tag"))
        .call_id("no-such-call")
        .cseq(2)
        .to_bytes();
    peer.send(&bye).await;
    let (status, _) = peer.final_status().await;
    assert_eq!(status, 481);
    bridge.stop().await;
}

#[tokio::test]
async fn an_unsupported_method_gets_405_with_allow() {
    let bridge = Bridge::start().await;
    let peer = Peer::new(&bridge).await;
    let uri = format!("sip:{SERVICE}@{}", bridge.sip);
    let subscribe = peer
        .request(Method::Other("SUBSCRIBE".into()), &uri, "c405", "b405")
        .header("Event", "presence")
        .to_bytes();
    peer.send(&subscribe).await;
    let (status, response) = peer.final_status().await;
    assert_eq!(status, 405);
    let allow = response.header("Allow").expect("405 carries Allow");
    assert!(
        allow.contains("INVITE") && allow.contains("INFO"),
        "{allow}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn garbage_datagrams_do_not_stop_the_server() {
    let bridge = Bridge::start().await;
    let peer = Peer::new(&bridge).await;
    for garbage in [
        &b"\x00\x01\x02garbage"[..],
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200\r\n",
        b"\r\n\r\n",
        &[0xff; 3000],
        b"OPTIONS sip:x SIP/2.0\r\nVia: nonsense\r\nContent-Length: 99999\r\n\r\n",
    ] {
        peer.send(garbage).await;
    }
    let uri = format!("sip:{SERVICE}@{}", bridge.sip);
    let options = peer
        .request(Method::Options, &uri, "copt", "bopt")
        .to_bytes();
    peer.send(&options).await;
    // Some garbage may be answered 400; the OPTIONS must get its 200.
    let mut got = Vec::new();
    for _ in 0..10 {
        let (status, response) = peer.final_status().await;
        got.push(status);
        if response.call_id() == Some("copt") {
            assert_eq!(status, 200);
            assert!(response.header("Allow").is_some());
            bridge.stop().await;
            return;
        }
    }
    panic!("no answer to the OPTIONS after the garbage: {got:?}");
}

#[tokio::test]
async fn shutdown_ends_a_call_in_progress_with_bye_and_a_reason() {
    let mut bridge = Bridge::start().await;
    let peer = Peer::new(&bridge).await;
    let uri = format!("sip:{SERVICE}@{}", bridge.sip);
    let invite = peer
        .request(Method::Invite, &uri, "cshut", "bshut")
        .body("application/sdp", pcmu_sdp().as_bytes())
        .to_bytes();
    peer.send(&invite).await;
    let (status, ok) = peer.final_status().await;
    assert_eq!(status, 200);
    let to_tag = ok.to_tag().expect("the 200 has a To tag");
    let ack = RequestBuilder::new(Method::Ack, &uri)
        .via("UDP", &peer.addr(), "back")
        .from(&format!("sip:caller@{}", peer.addr()), "caller-tag")
        .to(&uri, Some(&to_tag))
        .call_id("cshut")
        .to_bytes();
    peer.send(&ack).await;
    assert_eq!(bridge.monitor.active_calls(), 1);

    bridge.begin_stop();
    let bye = match peer.next_final().await {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected the bridge's BYE, got {}", r.status()),
    };
    assert_eq!(bye.method(), &Method::Bye);
    let reason = bye.header("Reason").expect("the BYE says why");
    assert!(reason.contains("cause=503"), "{reason}");
    peer.send(&bye.response(200, "OK").to_bytes()).await;
    // Stops within the deadline once its BYE is answered.
    bridge.stop().await;
}
