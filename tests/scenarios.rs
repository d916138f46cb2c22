//! Every shipped scenario (`scenarios/*.toml`) runs through the runner and
//! passes; a wrong expectation fails at its step with expected vs actual and
//! the call's ladder; `dialin run` exits non-zero and writes JUnit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dialin::cmd::run::{load_paths, run_loaded};
use dialin::scenario::Scenario;
use dialin::scenario::report::{self, FileResult};
use dialin::scenario::runner::{RunOptions, run_scenario};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_shipped_scenario_passes() {
    let loaded = load_paths(&[shipped()]);
    assert!(loaded.len() >= 6, "only {} scenarios", loaded.len());
    let files = loaded.len();
    let results = tokio::time::timeout(
        Duration::from_secs(400),
        run_loaded(loaded, 6, RunOptions::default(), |_| {}),
    )
    .await
    .expect("the scenarios finish in time");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(report::text)
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let xml = report::junit(&results);
    assert_eq!(xml.matches("<testsuite ").count(), files, "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), files, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

const WRONG: &str = r#"
title = "a stranger's number is expected to answer"

[[step]]
name = "dial a stranger"
[step.call]
to = "+14255559999"
[step.expect]
status = 200
"#;

#[tokio::test]
async fn a_wrong_expectation_fails_at_its_step_with_the_ladder() {
    let scenario = Scenario::from_str(WRONG, "wrong.toml").expect("the file is valid");
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        run_scenario(&scenario, &RunOptions::default()),
    )
    .await
    .expect("the scenario finishes in time");
    let failure = result.failure.clone().expect("the scenario fails");
    assert_eq!(failure.step, "dial a stranger");
    assert_eq!(failure.expected, "final status 200");
    assert_eq!(failure.actual, "404");
    assert_eq!(failure.calls.len(), 1, "{failure:?}");
    assert!(
        failure.calls[0].lines.iter().any(|l| l.contains("404")),
        "{failure:?}"
    );
    let shown = report::text(&FileResult::Ran(result));
    assert!(shown.starts_with("FAIL  wrong.toml"), "{shown}");
}

#[test]
fn dialin_run_exits_non_zero_and_writes_junit() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("wrong.toml");
    std::fs::write(&file, WRONG).expect("write the scenario");
    let junit = dir.path().join("out/junit.xml");
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dialin"))
        .arg("run")
        .arg(&file)
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("dialin runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("expected: final status 200"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file");
    assert_eq!(xml.matches("<testcase ").count(), 1, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON file"))
            .expect("valid JSON");
    assert_eq!(v["failed"], 1);
}

const LATE: &str = r#"
title = "calls accepted after a step are caught"

[[user]]
name = "alice"
email = "alice@contoso.com"

[[step]]
name = "two callers"
concurrent = 2
[step.call]
to = "+14255550100"
digits = "${alice.conference_id}#"
hang_up = "after-joined 3s"
[step.expect]
joined = 2
all_accepted_before = "right away"

[[step]]
name = "right away"
[step.admin]
action = "send-info"
user = "alice"

[[step]]
name = "done"
wait_for = "two callers"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_accepted_after_the_named_step_fails_the_concurrent_step() {
    let scenario = Scenario::from_str(LATE, "late.toml").expect("the file is valid");
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        run_scenario(&scenario, &RunOptions::default()),
    )
    .await
    .expect("the scenario finishes in time");
    let failure = result.failure.expect("the calls joined after the step");
    assert_eq!(
        failure.step, "two callers (checked at 'done')",
        "{failure:?}"
    );
    assert!(
        failure.expected.contains("before 'right away'"),
        "{failure:?}"
    );
    assert!(failure.actual.contains("accepted at"), "{failure:?}");
    assert_eq!(failure.calls.len(), 1, "{failure:?}");
}
