//! The bridge end to end with the project's own caller, over loopback UDP:
//! what a caller hears (prompts recognised from the RTP audio), which digits
//! joined, and how the call ended, for each DTMF method, a reset during a
//! call, three wrong IDs, and an unknown number.

mod common;

use common::bridge::{Bridge, DEADLINE, NUMBER, assert_joined, call, call_config, call_until};
use dialin::caller::{HangUp, Outcome, Party};
use dialin::media::dtmf::DtmfMethod;
use dialin::media::prompts::PromptId;

async fn joins_with(method: DtmfMethod) {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let report = call(call_config(&bridge, NUMBER, &format!("{id}#"), method)).await;
    assert_joined(&report);
    assert_eq!(report.digit_text(), format!("{id}#"));
    assert!(report.digits.iter().all(|d| d.method == method), "{report}");
    assert_eq!(bridge.monitor.joined_total(), 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_id_sent_as_rfc4733_events_joins_the_meeting() {
    joins_with(DtmfMethod::Rfc4733).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_id_sent_as_sip_info_joins_the_meeting() {
    joins_with(DtmfMethod::Info).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_id_sent_as_inband_tones_joins_the_meeting() {
    joins_with(DtmfMethod::Inband).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_ids_end_with_goodbye_and_a_bye_with_reason() {
    let bridge = Bridge::start().await;
    bridge.enable("alice@contoso.com", Some("7654321")).await;
    let digits = "1111111#,,,,2222222#,,,,3333333#";
    let mut config = call_config(&bridge, NUMBER, digits, DtmfMethod::Rfc4733);
    config.hang_up = HangUp::WaitForBye;
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
    let prompts = report.prompt_ids();
    assert_eq!(prompts.first(), Some(&PromptId::Welcome), "{report}");
    assert_eq!(prompts.last(), Some(&PromptId::Goodbye), "{report}");
    assert!(prompts.contains(&PromptId::NotValid), "{report}");
    assert!(!prompts.contains(&PromptId::Joining), "{report}");
    assert_eq!(bridge.monitor.joined_total(), 0);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_rejects_the_old_id_at_once_and_leaves_a_joined_call_up() {
    let bridge = Bridge::start().await;
    let old = bridge.enable("alice@contoso.com", None).await;

    // A caller joins with the ID and stays until the second call is over.
    let mut long = call_config(&bridge, NUMBER, &format!("{old}#"), DtmfMethod::Info);
    long.hang_up = HangUp::WaitForBye;
    let (leave, left) = tokio::sync::oneshot::channel::<()>();
    let in_meeting = tokio::spawn(call_until(long, async {
        let _ = left.await;
    }));
    tokio::time::timeout(DEADLINE, bridge.monitor.joined_at_least(1))
        .await
        .expect("the first caller joins");

    // The admin resets the ID while that call is up.
    let service = bridge.service.clone();
    let reset = tokio::task::spawn_blocking(move || {
        service.reset_conference_id("test", &"alice@contoso.com".parse().unwrap(), true)
    })
    .await
    .unwrap()
    .expect("the reset succeeds");
    let new = reset.new_conference_id.to_string();

    // A second caller with the old ID is turned away, then joins with the
    // new one: the same meeting room, so not "you are the first person".
    let late = call(call_config(
        &bridge,
        NUMBER,
        &format!("{old}#,,,,{new}#"),
        DtmfMethod::Info,
    ))
    .await;
    assert_eq!(
        late.prompt_ids(),
        vec![PromptId::Welcome, PromptId::NotValid, PromptId::Joining],
        "{late}"
    );
    assert_eq!(late.outcome, Outcome::Completed, "{late}");

    // The first caller was not thrown out by the reset.
    let _ = leave.send(());
    let first = in_meeting.await.unwrap();
    assert_joined(&first);
    assert_eq!(bridge.monitor.joined_total(), 2);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_that_is_not_the_tenants_gets_404() {
    let bridge = Bridge::start().await;
    let report = call(call_config(&bridge, "+19995550123", "", DtmfMethod::Info)).await;
    match &report.outcome {
        Outcome::Rejected { status, .. } => assert_eq!(*status, 404, "{report}"),
        other => panic!("expected a 404, got {other}: {report}"),
    }
    bridge.stop().await;
}
