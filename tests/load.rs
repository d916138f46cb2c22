//! `dialin load` through its library entry point: a short run on the
//! embedded bridge with every DTMF method, invalid IDs and resets racing
//! the calls (the shared-socket caller pool), and a run against a bridge
//! that is already running, through its admin API (a socket per call), and
//! the SIPp-shaped flow of bench/compare.sh (INFO keys back to back, one
//! caller thread). Correctness, not timing: no failure, no violation, and
//! the counts add up.

mod common;

use std::time::Duration;

use dialin::cmd::load::run_load;
use dialin::load::{DtmfChoice, LoadOptions, LoadReport};
use tokio::sync::watch;

/// A whole run may take this long before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// Runs a load to its end, within [`RUN_DEADLINE`].
async fn run(options: LoadOptions) -> LoadReport {
    let (_stop, stopped) = watch::channel(false);
    tokio::time::timeout(RUN_DEADLINE, run_load(options, stopped))
        .await
        .expect("the run ends within the deadline")
        .expect("the run starts")
}

/// No call failed, no revocation was violated, and every one of `calls`
/// was decided: joined, or rejected as invalid or as reset.
fn assert_clean(report: &LoadReport, calls: u64) {
    assert_eq!(report.calls, calls, "{report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.violations, 0, "{report}");
    assert_eq!(report.undecided, 0, "{report}");
    assert_eq!(
        report.joined + report.rejected_invalid + report.rejected_reset,
        calls,
        "{report}"
    );
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_with_invalid_ids_and_resets_fail_none_and_violate_nothing() {
    let options = LoadOptions {
        calls: Some(200),
        rate: 100.0,
        concurrency: 50,
        dtmf: DtmfChoice::Mix,
        invalid_ratio: 0.2,
        reset_every: Some(Duration::from_millis(100)),
        users: 20,
        seed: 7,
        ..LoadOptions::new()
    };
    let report = run(options).await;
    // Valid IDs joined (or were rejected because a reset revoked them in
    // time); invalid ones were all rejected.
    assert_clean(&report, 200);
    let invalid = report.by_kind.get("unknown").copied().unwrap_or(0)
        + report.by_kind.get("revoked").copied().unwrap_or(0);
    assert_eq!(report.rejected_invalid, invalid, "{report}");
    assert!(invalid > 0, "the ratio gave invalid calls: {report}");
    assert!(report.resets > 0, "resets ran during the load: {report}");
    // Every call was answered and judged, and the callers heard audio.
    assert_eq!(report.answer.count(), 200, "{report}");
    assert_eq!(report.whole.count(), 200, "{report}");
    assert!(report.jitter.count() > 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_bridge_is_loaded_through_its_admin_api_with_info_digits() {
    let bridge = common::bridge::Bridge::start_with(
        |sip| {
            sip.mute_prompts = true;
            // Wrong IDs on purpose, all from 127.0.0.1.
            sip.guard = None;
            sip.calls_per_source = 0;
        },
        None,
    )
    .await;
    let options = LoadOptions {
        target: Some(format!("sip:{}", bridge.sip)),
        admin: Some(format!("http://{}", bridge.admin)),
        token: Some(bridge.token.clone()),
        calls: Some(40),
        rate: 80.0,
        dtmf: DtmfChoice::Info,
        invalid_ratio: 0.25,
        reset_every: Some(Duration::from_millis(50)),
        users: 5,
        // The other engine: each call its own sockets, as `dialin call`.
        socket_per_call: true,
        ..LoadOptions::new()
    };
    let report = run(options).await;
    assert_clean(&report, 40);
    // Muted prompts: the decision came from the bridge's records, and the
    // `#` INFO's answer timed it.
    assert_eq!(report.decision.count(), 40, "{report}");
    assert_eq!(report.jitter.count(), 0, "{report}");
    // Every call ended at the bridge too (its last answers may still have
    // been on their way when the run returned).
    tokio::time::timeout(RUN_DEADLINE, bridge.monitor.ended_at_least(40))
        .await
        .expect("the bridge ends every call");
    assert_eq!(bridge.monitor.active_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sipp_shaped_flow_sends_keys_back_to_back_on_one_worker() {
    // What bench/compare.sh runs: INFO keys each sent as the previous one
    // is answered, no RTP, one caller thread; with invalid IDs and resets
    // so that every call is judged.
    let options = LoadOptions {
        calls: Some(200),
        rate: 200.0,
        concurrency: 100,
        dtmf: DtmfChoice::Info,
        dtmf_duration: Duration::ZERO,
        dtmf_gap: Duration::ZERO,
        workers: Some(1),
        mute_prompts: true,
        invalid_ratio: 0.2,
        reset_every: Some(Duration::from_millis(100)),
        users: 20,
        seed: 11,
        ..LoadOptions::new()
    };
    let report = run(options).await;
    assert_clean(&report, 200);
    assert!(report.rejected_invalid > 0, "{report}");
    // No audio either way; every `#` INFO's answer timed the decision.
    assert_eq!(report.jitter.count(), 0, "{report}");
    assert_eq!(report.decision.count(), 200, "{report}");
    let json = report.to_json();
    assert_eq!(json["settings"]["workers"], 1);
    assert_eq!(json["settings"]["dtmf_gap_ms"], 0.0);
    assert!(json["retransmissions"].is_u64(), "{json}");
}

#[tokio::test]
async fn bad_options_are_refused_before_anything_runs() {
    let (_stop, stopped) = watch::channel(false);
    let err = run_load(
        LoadOptions {
            invalid_ratio: 1.5,
            ..LoadOptions::new()
        },
        stopped,
    )
    .await
    .expect_err("1.5 is not a fraction");
    assert!(err.to_string().contains("from 0 to 1"), "{err}");
}
