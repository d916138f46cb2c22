//! Guessing protection end to end, on loopback with the real bridge and the
//! project's caller: a source that keeps entering wrong IDs gets 403 while
//! a valid caller from another address (127.0.0.2: loopback is all of
//! 127/8 on Linux) still joins; a caller ID is blocked across calls from
//! one source while another caller ID from it still joins; the global
//! alarm shows in the API, the metrics and the events; and the "not
//! valid" answer takes the same time for an unknown and a revoked ID.
//!
//! Cool-down expiry and the window sliding are unit tests of
//! `dialin::guard` (injected time); here the bridge runs on the real clock.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::bridge::{Bridge, NUMBER, call, call_config};
use common::raw_request;
use dialin::caller::{CallReport, DtmfPlan, DtmfStart, HangUp, Outcome, Party, PromptMatchers};
use dialin::guard::Config as GuardConfig;
use dialin::media::dtmf::DtmfMethod;
use dialin::media::prompts::PromptId;
use dialin::net::caller::CallConfig;
use serde_json::Value;

const MIN: Duration = Duration::from_secs(60);

/// `digits` by SIP INFO from shortly after the answer, with short presses,
/// so that a call with two wrong entries takes a couple of seconds.
fn fast_plan(digits: &str) -> DtmfPlan {
    let mut plan = DtmfPlan::parse(digits, DtmfMethod::Info).expect("valid digits");
    plan.start = DtmfStart::AfterAnswer(Duration::from_millis(50));
    plan.tone = Duration::from_millis(40);
    for d in plan.digits.iter_mut().skip(1) {
        d.delay = Duration::from_millis(20);
    }
    plan
}

/// A call from `local_ip` with From `sip:{user}@{local_ip}` pressing `digits`.
fn from(bridge: &Bridge, local_ip: &str, user: &str, digits: &str) -> CallConfig {
    let mut config = call_config(bridge, NUMBER, "", DtmfMethod::Info);
    let ip: IpAddr = local_ip.parse().expect("an IP");
    config.local_ip = Some(ip);
    config.from = Some(format!("sip:{user}@{ip}"));
    config.dtmf = fast_plan(digits);
    config.hang_up = HangUp::AfterJoined(Duration::from_millis(2500));
    config
}

/// Two wrong IDs: with `max_attempts = 2` the bridge says goodbye and hangs up.
const TWO_WRONG: &str = "1111111#2222222#";

fn assert_turned_away(report: &CallReport) {
    assert_eq!(report.outcome, Outcome::Completed, "{report}");
    assert_eq!(
        report.bye_reason_text.as_deref(),
        Some("Conference ID not valid"),
        "{report}"
    );
}

/// Joined (the welcome is cut short by the typed-ahead ID, too short to be
/// heard) and stayed until this side hung up.
fn assert_joined(report: &CallReport) {
    assert_eq!(report.outcome, Outcome::Completed, "{report}");
    assert_eq!(report.hung_up_by, Some(Party::Caller), "{report}");
    let prompts = report.prompt_ids();
    assert!(prompts.contains(&PromptId::Joining), "{report}");
    assert!(!prompts.contains(&PromptId::NotValid), "{report}");
}

fn assert_forbidden(report: &CallReport) {
    match &report.outcome {
        Outcome::Rejected { status, .. } => assert_eq!(*status, 403, "{report}"),
        other => panic!("expected 403, got {other}: {report}"),
    }
    assert!(report.prompts.is_empty(), "no call, no prompt: {report}");
}

/// GET `path` on the bridge's admin API with its token.
async fn get(bridge: &Bridge, path: &str) -> (u16, String) {
    let auth = format!("Authorization: Bearer {}", bridge.token);
    let answer = raw_request(bridge.admin, "GET", path, &[auth.as_bytes()], b"").await;
    (
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    )
}

async fn guard_json(bridge: &Bridge) -> Value {
    let (status, body) = get(bridge, "/api/guard").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// The value of one sample line of the metrics text (`name{labels}`).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .expect("an integer sample")
}

/// The events file's lines whose `event` is `name`.
fn events_named(path: &Path, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the events file");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|v| v["event"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guessing_source_gets_403_while_a_valid_caller_elsewhere_joins() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let events = folder.path().join("events.jsonl");
    let bridge = Bridge::start_with(
        |sip| {
            sip.attendant.max_attempts = 2;
            sip.guard = Some(GuardConfig {
                failures: 4,
                caller_id_failures: 0,
                window: 10 * MIN,
                cooldown: 10 * MIN,
                alarm: 0,
                ..GuardConfig::default()
            });
        },
        Some(events.clone()),
    )
    .await;
    let id = bridge.enable("alice@contoso.com", None).await;

    // 4 failures = 2 calls of 2 attempts; each failure is reported as it
    // happens, so the third call is refused before it rings.
    for _ in 0..2 {
        let report = call(from(&bridge, "127.0.0.1", "mallory", TWO_WRONG)).await;
        assert_turned_away(&report);
    }
    for _ in 0..2 {
        let report = call(from(&bridge, "127.0.0.1", "mallory", TWO_WRONG)).await;
        assert_forbidden(&report);
    }
    // Even with the right ID, and another caller ID: the source is blocked.
    let report = call(from(&bridge, "127.0.0.1", "alice", &format!("{id}#"))).await;
    assert_forbidden(&report);

    // Another source is unaffected.
    let report = call(from(&bridge, "127.0.0.2", "alice", &format!("{id}#"))).await;
    assert_joined(&report);

    // The API names the source and when the block ends.
    let guard = guard_json(&bridge).await;
    let blocked = guard["blocked"].as_array().expect("blocked");
    assert_eq!(blocked.len(), 1, "{guard}");
    assert_eq!(blocked[0]["kind"], "source", "{guard}");
    assert_eq!(blocked[0]["key"], "127.0.0.1", "{guard}");
    assert_eq!(blocked[0]["refused"], 3, "{guard}");
    let remaining = blocked[0]["remaining_s"].as_u64().expect("remaining_s");
    assert!((500..=600).contains(&remaining), "{guard}");
    assert_eq!(guard["totals"]["failures"], 4, "{guard}");
    assert_eq!(guard["alarm"]["on"], false, "{guard}");

    let (status, text) = get(&bridge, "/api/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        metric(&text, "dialin_guard_blocks_total{kind=\"source\"}"),
        1
    );
    assert_eq!(metric(&text, "dialin_guard_blocked{kind=\"source\"}"), 1);
    assert_eq!(
        metric(&text, "dialin_invites_refused_total{status=\"403\"}"),
        3
    );
    assert_eq!(
        metric(&text, "dialin_failed_attempts_total{result=\"unknown\"}"),
        4
    );
    assert_eq!(metric(&text, "dialin_calls_total"), 3);
    assert_eq!(metric(&text, "dialin_calls_joined_total"), 1);
    assert_eq!(metric(&text, "dialin_calls_rejected_total"), 2);
    assert_eq!(metric(&text, "dialin_guard_alarm"), 0);

    bridge.stop().await;
    // One event when the block started, one for the first refused INVITE,
    // not one per INVITE.
    let blocked = events_named(&events, "guard-blocked");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0]["key"], "127.0.0.1");
    assert_eq!(blocked[0]["source"], "127.0.0.1");
    assert_eq!(blocked[0]["caller_id"], "mallory");
    assert!(
        !blocked[0]["call_id"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    let refused = events_named(&events, "guard-refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["source"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guessing_caller_id_is_blocked_while_another_from_the_same_source_joins() {
    let bridge = Bridge::start_with(
        |sip| {
            sip.attendant.max_attempts = 2;
            sip.guard = Some(GuardConfig {
                failures: 0,
                caller_id_failures: 2,
                alarm: 0,
                ..GuardConfig::default()
            });
        },
        None,
    )
    .await;
    let id = bridge.enable("alice@contoso.com", None).await;

    let report = call(from(&bridge, "127.0.0.1", "+1-425-555-0199", TWO_WRONG)).await;
    assert_turned_away(&report);
    // The same number written without separators is the same caller ID.
    let report = call(from(
        &bridge,
        "127.0.0.1",
        "+14255550199",
        &format!("{id}#"),
    ))
    .await;
    assert_forbidden(&report);
    // Another caller ID from the same source still gets in.
    let report = call(from(
        &bridge,
        "127.0.0.1",
        "+14255550100",
        &format!("{id}#"),
    ))
    .await;
    assert_joined(&report);

    let guard = guard_json(&bridge).await;
    let blocked = guard["blocked"].as_array().expect("blocked");
    assert_eq!(blocked.len(), 1, "{guard}");
    assert_eq!(blocked[0]["kind"], "caller-id", "{guard}");
    assert_eq!(blocked[0]["key"], "+14255550199", "{guard}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_403_carries_a_warning_with_the_wait() {
    use dialin::sip::message::{self, Message, Method, RequestBuilder, SipHeaders};
    let bridge = Bridge::start_with(
        |sip| {
            sip.attendant.max_attempts = 2;
            sip.guard = Some(GuardConfig {
                failures: 2,
                caller_id_failures: 0,
                alarm: 0,
                ..GuardConfig::default()
            });
        },
        None,
    )
    .await;
    let report = call(from(&bridge, "127.0.0.1", "mallory", TWO_WRONG)).await;
    assert_turned_away(&report);

    // A raw INVITE, to read the response's headers.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let uri = format!("sip:{NUMBER}@{}", bridge.sip);
    let invite = RequestBuilder::new(Method::Invite, &uri)
        .via("UDP", &local.to_string(), "z9hG4bK-guard-1")
        .from("sip:mallory@127.0.0.1", "t1")
        .to(&uri, None)
        .call_id("guard-warning-1")
        .cseq(1)
        .to_bytes();
    socket.send_to(&invite, bridge.sip).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    let Message::Response(response) = message::parse(&buf[..n]).expect("SIP") else {
        panic!("a response");
    };
    assert_eq!(response.status(), 403);
    let warning = response.header("Warning").expect("a Warning header");
    assert!(
        warning.starts_with("399 dialin \"too many failed conference ID attempts"),
        "{warning}"
    );
    assert!(response.header("Retry-After").is_none());
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_guess_raises_the_alarm_in_the_api_metrics_and_events() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let events = folder.path().join("events.jsonl");
    let bridge = Bridge::start_with(
        |sip| {
            sip.attendant.max_attempts = 2;
            sip.guard = Some(GuardConfig {
                failures: 10,
                caller_id_failures: 10,
                alarm: 6,
                ..GuardConfig::default()
            });
        },
        Some(events.clone()),
    )
    .await;
    // Three sources, two failures each: none near its own threshold.
    let calls = ["127.0.0.3", "127.0.0.4", "127.0.0.5"].map(|ip| {
        let config = from(&bridge, ip, &format!("guesser-{ip}"), TWO_WRONG);
        tokio::spawn(call(config))
    });
    for c in calls {
        assert_turned_away(&c.await.expect("the call task"));
    }
    let guard = guard_json(&bridge).await;
    assert_eq!(guard["alarm"]["on"], true, "{guard}");
    assert_eq!(guard["alarm"]["window_failures"], 6, "{guard}");
    assert!(guard["alarm"]["since"].is_string(), "{guard}");
    assert_eq!(
        guard["blocked"].as_array().map(Vec::len),
        Some(0),
        "{guard}"
    );
    assert_eq!(guard["recent"].as_array().map(Vec::len), Some(6), "{guard}");

    let (_, text) = get(&bridge, "/api/metrics").await;
    assert_eq!(metric(&text, "dialin_guard_alarm"), 1);
    assert_eq!(metric(&text, "dialin_guard_alarms_total"), 1);
    assert_eq!(metric(&text, "dialin_guard_window_failures"), 6);

    bridge.stop().await;
    let alarms = events_named(&events, "guard-alarm");
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0]["on"], true);
    assert_eq!(alarms[0]["failures"], 6);
    assert_eq!(alarms[0]["threshold"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_off_lets_any_number_of_wrong_ids_through() {
    let bridge = Bridge::start_with(
        |sip| {
            sip.attendant.max_attempts = 2;
            sip.guard = None;
        },
        None,
    )
    .await;
    for _ in 0..2 {
        let report = call(from(&bridge, "127.0.0.1", "mallory", TWO_WRONG)).await;
        assert_turned_away(&report);
    }
    let (status, body) = get(&bridge, "/api/guard").await;
    assert_eq!((status, body.as_str()), (200, "{\"enabled\":false}"));
    let (_, text) = get(&bridge, "/api/metrics").await;
    assert_eq!(metric(&text, "dialin_guard_enabled"), 0);
    assert_eq!(
        metric(&text, "dialin_failed_attempts_total{result=\"unknown\"}"),
        4
    );
    bridge.stop().await;
}

/// How far apart the medians of "`#` sent → first frame of not-valid" may
/// be for unknown and revoked IDs, pooled over [`ROUNDS`] rounds.
/// Measured on loopback (40 calls, 8 at a time, interleaved): both medians about 0.2 ms, single calls 0.05-0.4 ms,
/// medians within 0.05 ms of each other; the prompt's first frame goes out
/// in the same wake-up as the lookup, so there is no 20 ms frame clock in
/// it. 2 ms is ten times that spread, and load hits both kinds alike
/// (they alternate within each batch). A leak a caller could use across a
/// network is larger than that: anything on the revoked path that waits
/// (a store query behind the admin service's write mutex, an fsync'd log
/// line, a lookup of the revocation's operation) costs milliseconds, and
/// network jitter hides less. A difference in what is played (another
/// prompt, a delay before it) would show as tens of milliseconds at least.
const TOLERANCE: Duration = Duration::from_millis(2);

/// The median of `values` (sorted in place).
fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Measurement rounds, pooled: noise on a busy machine (a stalled worker
/// in one batch) moves at most 8 of each kind's 60 samples, which shifts
/// a median by a few ranks of a 0.05-0.4 ms spread; a real leak moves
/// every sample of one kind.
const ROUNDS: usize = 3;

/// One round: 40 calls, 8 at a time, unknown and revoked IDs interleaved
/// (which positions are revoked alternates per batch, so neither kind
/// always waits behind the other). Adds "`#` sent → first frame of
/// not-valid" to `unknown` or `revoked`.
async fn not_valid_times(
    bridge: &Bridge,
    revoked_id: &str,
    prompts: &Arc<PromptMatchers>,
    round: usize,
    unknown: &mut Vec<Duration>,
    revoked: &mut Vec<Duration>,
) {
    const CALLS: usize = 40;
    const AT_ONCE: usize = 8;
    for batch in 0..CALLS / AT_ONCE {
        let mut tasks = Vec::new();
        for i in 0..AT_ONCE {
            let is_revoked = (i + batch + round) % 2 == 1;
            let id = if is_revoked {
                revoked_id.to_string()
            } else {
                format!("{:07}", 3_000_000 + round * CALLS + batch * AT_ONCE + i)
            };
            let mut config = from(bridge, "127.0.0.1", "timer", &format!("{id}#"));
            config.prompts = Some(prompts.clone());
            config.hang_up = HangUp::AfterAnswer(Duration::from_millis(1500));
            tasks.push((is_revoked, tokio::spawn(call(config))));
        }
        for (is_revoked, task) in tasks {
            let report = task.await.expect("the call task");
            assert!(
                report.prompt_ids().contains(&PromptId::NotValid),
                "{report}"
            );
            let decision = report.decision_time.expect("a decision time");
            if is_revoked {
                revoked.push(decision);
            } else {
                unknown.push(decision);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_valid_takes_the_same_time_for_an_unknown_and_a_revoked_id() {
    // Guard off: 40 wrong IDs from one address would be blocked.
    let bridge = Bridge::start_with(|sip| sip.guard = None, None).await;
    let old = bridge.enable("alice@contoso.com", None).await;
    let service = bridge.service.clone();
    tokio::task::spawn_blocking(move || {
        service.reset_conference_id("test", &"alice@contoso.com".parse().unwrap(), true)
    })
    .await
    .unwrap()
    .expect("the reset succeeds");
    let prompts = Arc::new(PromptMatchers::embedded().expect("the prompts"));

    let (mut unknown, mut revoked) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        not_valid_times(&bridge, &old, &prompts, round, &mut unknown, &mut revoked).await;
    }
    bridge.stop().await;
    let (u, r) = (median(&mut unknown), median(&mut revoked));
    eprintln!(
        "not valid after #: unknown median {u:?} {unknown:?}; revoked median {r:?} {revoked:?}"
    );
    let difference = u.abs_diff(r);
    assert!(
        difference < TOLERANCE,
        "the medians over {ROUNDS} rounds differ by {difference:?}, not under {TOLERANCE:?}: \
         unknown {u:?} {unknown:?}; revoked {r:?} {revoked:?}"
    );
}
