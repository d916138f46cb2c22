//! More of the bridge end to end with the project's own caller, over
//! loopback: SIP over TCP (a valid ID joins, three wrong IDs end with a BYE
//! and Reason on the same connection), a lossy path (a lost INVITE or ACK is
//! recovered by retransmissions, one call only), and malformed datagrams
//! sent to the bridge while a call runs, and retransmissions after a call
//! ended, answered from the linger table.
//!
//! CANCEL is not here: the bridge answers at once, and its ring delay
//! (`call::CallConfig::ring`) is not reachable from `SipOptions`, so no
//! INVITE stays pending long enough to be cancelled. The caller's CANCEL is
//! covered by its unit tests and the driver's loopback tests.

mod common;

use std::net::SocketAddr;

use std::time::Duration;

use common::bridge::{Bridge, DEADLINE, NUMBER, assert_joined, call, call_config, call_until};
use dialin::caller::{CallReport, Direction, HangUp, Outcome, Party, Transport};
use dialin::media::dtmf::DtmfMethod;
use dialin::media::prompts::PromptId;
use dialin::net::caller::{CallConfig, LossPattern};
use dialin::sip::message::{self, Message, Method, RequestBuilder, SipHeaders};
use tokio::net::UdpSocket;

/// How long to wait for one expected datagram.
const WAIT: Duration = Duration::from_secs(10);

fn config(bridge: &Bridge, digits: &str, method: DtmfMethod) -> CallConfig {
    call_config(bridge, NUMBER, digits, method)
}

fn count(report: &CallReport, direction: Direction, start: &str) -> usize {
    report
        .ladder
        .iter()
        .filter(|e| e.direction == direction && e.first_line.starts_with(start))
        .count()
}

// --- TCP ---

async fn joins_over_tcp_with(method: DtmfMethod) {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let mut config = config(&bridge, &format!("{id}#"), method);
    config.transport = Transport::Tcp;
    let report = call(config).await;
    assert_joined(&report);
    assert_eq!(report.digit_text(), format!("{id}#"));
    assert!(report.digits.iter().all(|d| d.method == method), "{report}");
    if method == DtmfMethod::Info {
        assert!(
            report.digits.iter().all(|d| d.status == Some(200)),
            "every INFO answered over the connection: {report}"
        );
    }
    // A reliable transport: nothing was sent twice.
    assert_eq!(count(&report, Direction::Sent, "INVITE "), 1, "{report}");
    assert_eq!(count(&report, Direction::Sent, "ACK "), 1, "{report}");
    assert_eq!(bridge.monitor.joined_total(), 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_valid_id_sent_as_sip_info_joins_the_meeting() {
    joins_over_tcp_with(DtmfMethod::Info).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_valid_id_sent_as_rfc4733_events_joins_the_meeting() {
    joins_over_tcp_with(DtmfMethod::Rfc4733).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_transport_parameter_in_the_uri_is_enough() {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let mut config = config(&bridge, &format!("{id}#"), DtmfMethod::Info);
    config.target = format!("sip:{NUMBER}@{};transport=tcp", bridge.sip);
    let report = call(config).await;
    assert_joined(&report);
    assert_eq!(count(&report, Direction::Sent, "INVITE "), 1, "{report}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_three_wrong_ids_end_with_a_bye_and_reason_on_the_connection() {
    let bridge = Bridge::start().await;
    bridge.enable("alice@contoso.com", Some("7654321")).await;
    let digits = "1111111#,,,,2222222#,,,,3333333#";
    let mut config = config(&bridge, digits, DtmfMethod::Info);
    config.transport = Transport::Tcp;
    config.hang_up = HangUp::WaitForBye;
    // The caller's only SIP link is the TCP connection: the BYE came on it.
    let report = call(config).await;
    assert_eq!(report.hung_up_by, Some(Party::Bridge), "{report}");
    assert_eq!(
        report.bye_reason_text.as_deref(),
        Some("Conference ID not valid"),
        "{report}"
    );
    let reason = report.bye_reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("SIP") && reason.contains("cause=403"),
        "{reason}"
    );
    assert_eq!(count(&report, Direction::Received, "BYE "), 1, "{report}");
    let prompts = report.prompt_ids();
    assert_eq!(prompts.first(), Some(&PromptId::Welcome), "{report}");
    assert_eq!(prompts.last(), Some(&PromptId::Goodbye), "{report}");
    assert!(!prompts.contains(&PromptId::Joining), "{report}");
    // The bridge counts the call once our 200 to its BYE reached it.
    tokio::time::timeout(DEADLINE, bridge.monitor.ended_at_least(1))
        .await
        .expect("the bridge ends the call");
    assert_eq!(bridge.monitor.joined_total(), 0);
    assert_eq!(bridge.monitor.bridge_hangups(), 1);
    bridge.stop().await;
}

// --- hanging up before the answer ---

/// Waits until the bridge has no call left, at most `within`.
async fn no_call_left(bridge: &Bridge, within: Duration) {
    let ended = async {
        // Bounded by the timeout around it; the monitor has no wait for this.
        while bridge.monitor.active_calls() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(within, ended)
        .await
        .expect("the bridge's call ends soon, not at its ACK timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_before_any_response_acks_and_ends_the_late_answer() {
    let bridge = Bridge::start().await;
    bridge.enable("alice@contoso.com", None).await;
    let mut config = config(&bridge, "", DtmfMethod::Info);
    config.hang_up = HangUp::WaitForBye;
    // A shutdown that has already happened: the driver hangs up right
    // after sending the INVITE, before any response, so no CANCEL may go
    // yet (§9.1); the bridge's 100 may bring one, which crosses its 200;
    // either way the 200 gets its ACK and a BYE.
    let report = call_until(config, std::future::ready(())).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{report}");
    assert_eq!(report.hung_up_by, Some(Party::Caller), "{report}");
    assert_eq!(count(&report, Direction::Sent, "ACK "), 1, "{report}");
    assert_eq!(count(&report, Direction::Sent, "BYE "), 1, "{report}");
    assert!(
        count(&report, Direction::Received, "SIP/2.0 200") >= 2,
        "the INVITE's 200 and the BYE's: {report}"
    );
    // Ended by our BYE: well before the bridge would give up on its own.
    no_call_left(&bridge, Duration::from_secs(2)).await;
    assert_eq!(bridge.monitor.joined_total(), 0);
    bridge.stop().await;
}

// --- a lossy path ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invite_is_retransmitted_on_timer_a_and_makes_one_call() {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let mut config = config(&bridge, &format!("{id}#"), DtmfMethod::Rfc4733);
    config.drop_outgoing = Some(LossPattern::first(1, "INVITE"));
    let placed = tokio::spawn(call(config));
    tokio::time::timeout(DEADLINE, bridge.monitor.joined_at_least(1))
        .await
        .expect("the call joins");
    assert_eq!(bridge.monitor.active_calls(), 1, "one call at the bridge");
    let report = placed.await.expect("the call task did not panic");
    assert_joined(&report);
    assert_eq!(
        count(&report, Direction::Sent, "INVITE "),
        2,
        "the lost INVITE and its retransmission: {report}"
    );
    assert_eq!(bridge.monitor.joined_total(), 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ack_brings_a_retransmitted_200_that_is_acked_again() {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    // RFC 4733 digits: no INFO, so every 200 received answers the INVITE.
    let mut config = config(&bridge, &format!("{id}#"), DtmfMethod::Rfc4733);
    config.drop_outgoing = Some(LossPattern::first(1, "ACK"));
    let report = call(config).await;
    assert_joined(&report);
    let oks = count(&report, Direction::Received, "SIP/2.0 200");
    let acks = count(&report, Direction::Sent, "ACK ");
    // The final BYE's 200 is one of the 200s.
    assert!(oks >= 3, "the 200 retransmitted: {report}");
    assert_eq!(acks, oks - 1, "every 200 to the INVITE ACKed: {report}");
    assert_eq!(bridge.monitor.joined_total(), 1);
    bridge.stop().await;
}

// --- malformed input ---

/// The next SIP response on `socket`, bounded.
async fn response(socket: &UdpSocket) -> message::Response {
    let mut buf = vec![0u8; 65536];
    let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("the bridge answers within the wait")
        .expect("receive");
    match message::parse(&buf[..len]).expect("the bridge sends valid SIP") {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method()),
    }
}

fn options(from: SocketAddr, to: SocketAddr, branch: &str) -> Vec<u8> {
    RequestBuilder::new(Method::Options, &format!("sip:{NUMBER}@{to}"))
        .via("UDP", &from.to_string(), branch)
        .from(&format!("sip:prober@{from}"), "probe")
        .to(&format!("sip:{NUMBER}@{to}"), None)
        .call_id(&format!("{branch}@prober"))
        .cseq(1)
        .to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_a_truncated_invite_during_a_call_leave_the_call_alone() {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let mut config = config(&bridge, &format!("{id}#"), DtmfMethod::Info);
    config.hang_up = HangUp::AfterJoined(Duration::from_secs(3));
    let placed = tokio::spawn(call(config));

    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = raw.local_addr().unwrap();
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02\x03 not SIP at all",
        b"\r\n\r\n",
        b"INVITE\r\n\r\n",
        &[0xff; 1200],
    ];
    // While the call is being set up and greeted...
    for g in garbage {
        raw.send_to(g, bridge.sip).await.unwrap();
    }
    // ...and while it is in the meeting.
    tokio::time::timeout(DEADLINE, bridge.monitor.joined_at_least(1))
        .await
        .expect("the call joins despite the garbage");
    for g in garbage {
        raw.send_to(g, bridge.sip).await.unwrap();
    }
    // Garbage gets no answer: the first response is the OPTIONS'.
    raw.send_to(&options(me, bridge.sip, "opt1"), bridge.sip)
        .await
        .unwrap();
    let first = response(&raw).await;
    assert_eq!(first.cseq().map(|c| c.method), Some(Method::Options));
    assert_eq!(first.status(), 200);

    // Truncated INVITEs. The bridge answers what the message module can
    // answer (`can_respond`), whether or not the datagram passed the UDP
    // framing check (a body shorter than its Content-Length gets 400).
    for (i, (what, cut)) in truncated_invites(me, bridge.sip).into_iter().enumerate() {
        let error = message::parse(&cut).expect_err("a truncated INVITE does not parse");
        let answerable = error.can_respond();
        raw.send_to(&cut, bridge.sip).await.unwrap();
        raw.send_to(&options(me, bridge.sip, &format!("opt-t{i}")), bridge.sip)
            .await
            .unwrap();
        let next = response(&raw).await;
        if answerable {
            assert_eq!(
                next.cseq().map(|c| c.method),
                Some(Method::Invite),
                "{what}"
            );
            assert_eq!(next.status(), error.response_code(), "{what}: {error}");
            assert_eq!(
                response(&raw).await.status(),
                200,
                "{what}: then the OPTIONS"
            );
        } else {
            // Nothing to answer: dropped, and the OPTIONS is answered next.
            assert_eq!(
                next.cseq().map(|c| c.method),
                Some(Method::Options),
                "{what} ({error}) is dropped"
            );
        }
    }

    let report = placed.await.expect("the call task did not panic");
    assert_joined(&report);
    assert_eq!(report.digit_text(), format!("{id}#"));
    assert_eq!(bridge.monitor.joined_total(), 1);
    bridge.stop().await;
}

/// An INVITE cut short three ways: (what, bytes).
fn truncated_invites(me: SocketAddr, bridge: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    let invite = RequestBuilder::new(Method::Invite, &format!("sip:{NUMBER}@{bridge}"))
        .via("UDP", &me.to_string(), "trunc1")
        .from(&format!("sip:prober@{me}"), "probe")
        .to(&format!("sip:{NUMBER}@{bridge}"), None)
        .call_id("truncated@prober")
        .cseq(1)
        .header("Contact", &format!("<sip:prober@{me}>"))
        .body("application/sdp", b"v=0\r\n")
        .to_bytes();
    let text = String::from_utf8_lossy(&invite).into_owned();
    let cseq = text.find("CSeq").expect("the INVITE has a CSeq");
    vec![
        (
            "cut in the headers",
            invite[..invite.len() * 2 / 3].to_vec(),
        ),
        (
            "headers ending before CSeq",
            format!("{}\r\n", &text[..cseq]).into_bytes(),
        ),
        (
            "body shorter than Content-Length",
            invite[..invite.len() - 3].to_vec(),
        ),
    ]
}

/// RFC 3261 §18.3: a request over UDP whose body is shorter than its
/// Content-Length SHOULD get 400, and the message module can form it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_invite_with_a_short_body_gets_400() {
    let bridge = Bridge::start().await;
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = raw.local_addr().unwrap();
    let (_, cut) = truncated_invites(me, bridge.sip).pop().unwrap();
    assert!(message::parse(&cut).unwrap_err().can_respond());
    raw.send_to(&cut, bridge.sip).await.unwrap();
    let answer = response(&raw).await;
    assert_eq!(answer.status(), 400);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_the_bridge_rings_gets_487_and_leaves_no_call() {
    let bridge = Bridge::start_with(|sip| sip.ring = Duration::from_secs(30), None).await;
    let mut config = config(&bridge, "", DtmfMethod::Info);
    config.hang_up = HangUp::CancelAfter(Duration::from_millis(500));
    let report = call(config).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{report}");
    assert_eq!(
        report.final_status.as_ref().map(|(s, _)| *s),
        Some(487),
        "{report}"
    );
    assert_eq!(
        count(&report, Direction::Received, "SIP/2.0 180"),
        1,
        "{report}"
    );
    assert_eq!(count(&report, Direction::Sent, "CANCEL"), 1, "{report}");
    no_call_left(&bridge, Duration::from_secs(5)).await;
    assert_eq!(bridge.monitor.joined_total(), 0);
    bridge.stop().await;
}

// --- after the end: retransmissions answered without the call ---

/// The next response on `socket` to a request of `method`, as bytes and
/// parsed, bounded; responses to other requests (a 200 retransmitted
/// before our ACK arrived) are skipped.
async fn response_to(socket: &UdpSocket, method: Method) -> (Vec<u8>, message::Response) {
    let mut buf = vec![0u8; 65536];
    for _ in 0..20 {
        let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("the bridge answers within the wait")
            .expect("receive");
        if let Ok(Message::Response(r)) = message::parse(&buf[..len])
            && r.cseq().map(|c| c.method) == Some(method.clone())
            && r.status() >= 200
        {
            return (buf[..len].to_vec(), r);
        }
    }
    panic!("no final response to {method} among 20 datagrams");
}

/// RFC 3261 §17.2.2: a retransmitted BYE gets the same final response for
/// 64×T1 after it, and RFC 6026 §7.1 the same for the INVITE's 2xx. The
/// call's task is gone by then: the bridge answers from its linger table.
/// A new request on the ended dialog gets 481, as the call would have
/// answered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_end_retransmissions_get_the_same_responses_without_a_call_task() {
    let bridge = Bridge::start_with(|sip| sip.mute_prompts = true, None).await;
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = raw.local_addr().unwrap();
    let uri = format!("sip:{NUMBER}@{}", bridge.sip);
    let call_id = "linger-1@prober";
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        me.port() + 2
    );
    let invite = RequestBuilder::new(Method::Invite, &uri)
        .via("UDP", &me.to_string(), "linv")
        .from(&format!("sip:prober@{me}"), "ft")
        .to(&uri, None)
        .call_id(call_id)
        .cseq(1)
        .header("Contact", &format!("<sip:prober@{me}>"))
        .body("application/sdp", sdp.as_bytes())
        .to_bytes();
    raw.send_to(&invite, bridge.sip).await.unwrap();
    let (ok_invite, answer) = response_to(&raw, Method::Invite).await;
    assert_eq!(answer.status(), 200);
    let tag = answer.to_tag().expect("the 200 has a To tag");
    let in_dialog = |method: Method, branch: &str, cseq: u32| {
        RequestBuilder::new(method, &uri)
            .via("UDP", &me.to_string(), branch)
            .from(&format!("sip:prober@{me}"), "ft")
            .to(&uri, Some(&tag))
            .call_id(call_id)
            .cseq(cseq)
            .to_bytes()
    };
    raw.send_to(&in_dialog(Method::Ack, "lack", 1), bridge.sip)
        .await
        .unwrap();
    let bye = in_dialog(Method::Bye, "lbye", 2);
    raw.send_to(&bye, bridge.sip).await.unwrap();
    let (ok_bye, answer) = response_to(&raw, Method::Bye).await;
    assert_eq!(answer.status(), 200);

    // The call's task ends at once instead of after Timer J (32 s).
    let handed_off = async {
        // Bounded by the timeout around it; the monitor has no wait for this.
        while bridge.monitor.call_tasks() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), handed_off)
        .await
        .expect("the ended call's task ends within seconds");
    assert_eq!(bridge.monitor.lingering_calls(), 1);
    assert_eq!(bridge.monitor.ended_total(), 1);

    // Retransmissions: the very same bytes back.
    raw.send_to(&bye, bridge.sip).await.unwrap();
    let (again, _) = response_to(&raw, Method::Bye).await;
    assert_eq!(again, ok_bye, "the BYE's 200 again");
    raw.send_to(&invite, bridge.sip).await.unwrap();
    let (again, _) = response_to(&raw, Method::Invite).await;
    assert_eq!(again, ok_invite, "the INVITE's 200 again");

    // New requests on the ended dialog: 481. An INVITE without a To tag
    // reusing the Call-ID starts no second call.
    raw.send_to(&in_dialog(Method::Info, "linfo", 3), bridge.sip)
        .await
        .unwrap();
    assert_eq!(response_to(&raw, Method::Info).await.1.status(), 481);
    let reuse = RequestBuilder::new(Method::Invite, &uri)
        .via("UDP", &me.to_string(), "linv2")
        .from(&format!("sip:prober@{me}"), "ft2")
        .to(&uri, None)
        .call_id(call_id)
        .cseq(1)
        .header("Contact", &format!("<sip:prober@{me}>"))
        .body("application/sdp", sdp.as_bytes())
        .to_bytes();
    raw.send_to(&reuse, bridge.sip).await.unwrap();
    assert_eq!(response_to(&raw, Method::Invite).await.1.status(), 481);
    assert_eq!(
        bridge
            .monitor
            .stats()
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    bridge.stop().await;
}
