//! Call records and call events, end to end: a call with a wrong ID then
//! the right one, placed with the project's caller against an in-process
//! bridge; then what `GET /api/calls`, `dialin calls --json` and the
//! `--events` file say about it.

mod common;

use std::time::Duration;

use common::bridge::{Bridge, DEADLINE, call};
use common::{dialin_command, run_bounded};
use dialin::caller::{DtmfPlan, HangUp, Outcome};
use dialin::client::Client;
use dialin::media::dtmf::DtmfMethod;
use dialin::net::caller::CallConfig;
use serde_json::Value;

const NUMBER: &str = "+14255550100";
const RIGHT: &str = "7654321";
const WRONG: &str = "1111111";

/// Event names with runs of the same name merged (`digit` x8 -> `digit`).
fn collapsed(names: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for name in names {
        if out.last() != Some(&name.as_str()) {
            out.push(name);
        }
    }
    out
}

fn assert_attempts(record: &Value) {
    let attempts = record["attempts"].as_array().expect("attempts");
    let summary: Vec<(&str, &str, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["digits"].as_str().unwrap_or_default(),
                a["result"].as_str().unwrap_or_default(),
                a["method"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (WRONG, "unknown", "rfc4733"),
            (RIGHT, "accepted", "rfc4733")
        ],
        "{record}"
    );
    assert_eq!(record["outcome"], "joined", "{record}");
    assert_eq!(record["hung_up_by"], "caller", "{record}");
    assert_eq!(record["dialed"], NUMBER, "{record}");
    assert_eq!(record["joined"]["conference_id"], RIGHT, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_then_right_id_is_recorded_in_the_api_the_cli_and_the_events_file() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let events = folder.path().join("events.jsonl");
    let bridge = Bridge::start_with_events(Some(events.clone())).await;
    bridge.enable("alice@contoso.com", Some(RIGHT)).await;

    let mut config = CallConfig::new(format!("sip:{NUMBER}@{}", bridge.sip));
    config.remote = Some(bridge.sip);
    config.dtmf = DtmfPlan::parse(&format!("{WRONG}#,,,,{RIGHT}#"), DtmfMethod::Rfc4733)
        .expect("valid digits");
    config.hang_up = HangUp::AfterJoined(Duration::from_millis(2500));
    config.seed = Some(7001);
    let report = call(config).await;
    assert_eq!(report.outcome, Outcome::Completed, "{report}");
    tokio::time::timeout(DEADLINE, bridge.monitor.ended_at_least(1))
        .await
        .expect("the bridge records the end of the call");

    // The admin API.
    let client = Client::remote(&format!("http://{}", bridge.admin), bridge.token.clone())
        .expect("a client");
    let list = client
        .get("/api/calls?limit=5")
        .await
        .expect("GET /api/calls");
    let records = list.as_array().expect("a list");
    assert_eq!(records.len(), 1, "{list}");
    let record = &records[0];
    assert_eq!(record["call_id"], report.call_id.as_str(), "{record}");
    assert_attempts(record);
    let one = client
        .get(&format!(
            "/api/calls/{}",
            dialin::client::segment(&report.call_id)
        ))
        .await
        .expect("GET /api/calls/{call_id}");
    assert_eq!(&one, record);
    let missing = client.get("/api/calls/no-such-call").await;
    assert!(missing.is_err(), "{missing:?}");

    // The CLI, through the data folder's server.json.
    let data = bridge.data().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = dialin_command();
        command.args(["calls", "--json", "--data"]).arg(&data);
        run_bounded(command)
    })
    .await
    .expect("the CLI ran");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(printed, list);
    let data = bridge.data().to_path_buf();
    let table = tokio::task::spawn_blocking(move || {
        let mut command = dialin_command();
        command.args(["calls", "--data"]).arg(&data);
        run_bounded(command)
    })
    .await
    .expect("the CLI ran");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains(&report.call_id), "{table}");
    assert!(table.contains("1111111 unknown (rfc4733)"), "{table}");
    assert!(table.contains("joined 7654321"), "{table}");

    // The events file, complete once the bridge has stopped.
    bridge.stop().await;
    let text = std::fs::read_to_string(&events).expect("the events file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["call_id"] == report.call_id.as_str() && l["at"].is_string()),
        "{text}"
    );
    let names: Vec<String> = lines
        .iter()
        .map(|l| l["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        collapsed(&names),
        vec![
            "started", "answered", "prompt", "digit", "attempt", "prompt", "digit", "attempt",
            "prompt", "joined", "prompt", "left", "ended"
        ],
        "{names:?}"
    );
    let digits: Vec<&Value> = lines.iter().filter(|l| l["event"] == "digit").collect();
    assert_eq!(digits.len(), 16, "{text}");
    assert!(digits.iter().all(|d| d["method"] == "rfc4733"), "{text}");
    let results: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "attempt")
        .map(|l| l["attempt"]["result"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(results, ["unknown", "accepted"]);
    let prompts: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "prompt")
        .map(|l| l["prompt"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(prompts, ["welcome", "not-valid", "joining", "first-person"]);
    let ended = lines.last().expect("an ended line");
    assert_eq!(&ended["record"], record);
}

#[test]
fn dialin_calls_without_a_running_server_says_how_to_start_one() {
    let data = tempfile::tempdir().expect("a temporary data folder");
    let mut command = dialin_command();
    command.args(["calls", "--data"]).arg(data.path());
    let output = run_bounded(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no dialin server runs") && stderr.contains("dialin serve"),
        "{stderr}"
    );
}

#[test]
fn dialin_calls_with_no_data_folder_creates_none() {
    let parent = tempfile::tempdir().expect("a temporary folder");
    let missing = parent.path().join("nowhere");
    let mut command = dialin_command();
    command.args(["calls", "--data"]).arg(&missing);
    let output = run_bounded(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no data folder"), "{stderr}");
    assert!(!missing.exists(), "the folder was not created");
}
