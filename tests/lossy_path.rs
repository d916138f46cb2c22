//! A bad network between caller and bridge: the project's caller loses 20%
//! of the UDP datagrams it sends and 20% of those that reach it (SIP and
//! RTP alike, each decided independently by a seeded RNG) and holds back 5%
//! of the RTP packets behind the next one. Every call must still join:
//! SIP's retransmissions (Timer A for the INVITE, the bridge's 2xx
//! retransmission for a lost ACK, Timer E for INFO) carry the signalling,
//! and RFC 4733's repeated end packets carry the keys.
//!
//! The bridge here waits 40 s for a key, not 5. With a fifth lost each way,
//! an INFO's 200 now and then needs 5 tries to come back (7.5 s; Timer E
//! backs off to 4 s), and the caller sends the next key only then: the
//! default inter-digit timeout would end the entry first. That is the
//! bridge's policy working, not SIP failing; the attendant's own tests
//! (`timeout_with_partial_digits_completes_the_entry`) cover it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::bridge::{Bridge, NUMBER, assert_joined, call_config, call_within};
use dialin::caller::{CallReport, Direction, HangUp, PathCounts};
use dialin::media::dtmf::DtmfMethod;
use dialin::net::caller::LossyPath;

const LOSS: f64 = 0.20;
const REORDER: f64 = 0.05;
/// Calls per DTMF method.
const CALLS: u64 = 5;
/// How long the bridge waits for a key: past the 32 s an INFO transaction
/// may retransmit for (64×T1), so only a key that SIP gave up on is missed.
const KEY_WAIT: Duration = Duration::from_secs(40);
/// How long a call may take: retransmissions stretch every step.
const CALL_DEADLINE: Duration = Duration::from_secs(90);

/// Requests this call sent more than once (same start line and CSeq):
/// what the lossy path made SIP retransmit.
fn retransmitted(report: &CallReport) -> usize {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for entry in &report.ladder {
        if entry.direction == Direction::Sent {
            *seen.entry(entry.first_line.as_str()).or_default() += 1;
        }
    }
    // INFO start lines repeat for every key; count only INVITE, ACK, BYE.
    seen.iter()
        .filter(|(line, n)| **n > 1 && !line.starts_with("INFO "))
        .map(|(_, n)| n - 1)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_joins_through_a_path_that_loses_a_fifth_each_way() {
    let bridge = Bridge::start_with(
        |sip| {
            sip.attendant.first_digit_timeout = KEY_WAIT;
            sip.attendant.inter_digit_timeout = KEY_WAIT;
        },
        None,
    )
    .await;
    // A user per call, so each caller is the first in their meeting.
    let mut ids = Vec::new();
    for n in 0..2 * CALLS {
        ids.push(bridge.enable(&format!("user{n}@contoso.com"), None).await);
    }

    let mut calls = tokio::task::JoinSet::new();
    for (n, method) in (0..CALLS)
        .flat_map(|n| [(n, DtmfMethod::Rfc4733), (n + CALLS, DtmfMethod::Info)])
        .collect::<Vec<_>>()
    {
        let digits = format!("{}#", ids[n as usize]);
        let mut config = call_config(&bridge, NUMBER, &digits, method);
        config.lossy_path = Some(LossyPath::new(LOSS, REORDER, 0x10557 + n).expect("valid ratios"));
        // Long enough after "joining" to recognise "first person" through
        // the loss.
        config.hang_up = HangUp::AfterJoined(Duration::from_millis(3500));
        calls.spawn(async move { (method, digits, call_within(config, CALL_DEADLINE).await) });
    }

    let mut total = PathCounts::default();
    let mut retransmissions = 0;
    let mut info_tries = 0;
    while let Some(joined) = calls.join_next().await {
        let (method, digits, report) = joined.expect("the call task ran");
        assert_joined(&report);
        assert_eq!(report.digit_text(), digits, "{method:?}: {report}");
        if method == DtmfMethod::Info {
            // Every key's INFO got its 200 in the end, however many tries.
            assert!(
                report.digits.iter().all(|d| d.status == Some(200)),
                "{report}"
            );
            info_tries += report
                .ladder
                .iter()
                .filter(|e| e.direction == Direction::Sent && e.first_line.starts_with("INFO "))
                .count();
        }
        retransmissions += retransmitted(&report);
        let path = report.path.expect("the call had a lossy path");
        total.sent += path.sent;
        total.lost_out += path.lost_out;
        total.arrived += path.arrived;
        total.lost_in += path.lost_in;
        total.reordered += path.reordered;
    }
    assert_eq!(bridge.monitor.joined_total(), 2 * CALLS);

    // The path really was bad, both ways, at about the rate asked for
    // (thousands of datagrams: 20% ± a few points).
    let out = total.lost_out as f64 / total.sent as f64;
    let inward = total.lost_in as f64 / total.arrived as f64;
    assert!(
        (0.15..0.25).contains(&out),
        "lost on the way out: {total:?}"
    );
    assert!(
        (0.15..0.25).contains(&inward),
        "lost on the way in: {total:?}"
    );
    assert!(total.reordered > 0, "{total:?}");
    // And the signalling only got through because it was sent again.
    assert!(retransmissions > 0, "no INVITE/ACK/BYE was resent");
    let keys = (8 * CALLS) as usize;
    assert!(
        info_tries > keys,
        "{info_tries} INFO sent for {keys} keys: none was retransmitted"
    );
}

#[test]
fn a_lossy_path_outside_its_range_is_refused_with_the_range() {
    let e = LossyPath::new(0.7, 0.0, 1).unwrap_err();
    assert!(e.contains("0.7") && e.contains("between 0 and 0.5"), "{e}");
    let e = LossyPath::new(0.1, -0.1, 1).unwrap_err();
    assert!(e.contains("between 0 and 1"), "{e}");
    assert!(LossyPath::new(0.2, 0.05, 1).is_ok());
}
