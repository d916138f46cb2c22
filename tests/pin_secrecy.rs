//! Leader PINs are secrets: only the answer of the operation that made one
//! (enable, import, reset-pin) shows it, once. This test does everything an
//! admin and callers do on a bridge, collects every output there is (the
//! log at TRACE level, the events file, call records, every CLI listing in
//! text and JSON, every email in the outbox) and looks for each PIN in it.
//!
//! The tenant's PINs are 12 digits long, so a PIN found anywhere is a leak,
//! not a coincidence with a port, a timestamp or an ID.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::bridge::{Bridge, NUMBER, call, call_config};
use common::{dialin_command, run_bounded};
use dialin::media::dtmf::DtmfMethod;
use serde_json::Value;

/// Everything the process logs, at every level.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("no writer panicked")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("no writer panicked")).into_owned()
    }
}

/// `dialin ARGS...` against the bridge's admin API; must succeed. Returns stdout.
fn cli(bridge: &Bridge, args: &[&str]) -> String {
    let mut command = dialin_command();
    command.args(args).args([
        "--server",
        &format!("http://{}", bridge.admin),
        "--token",
        &bridge.token,
    ]);
    // The bridge serves this on the same runtime: hand this worker's
    // tasks to another while the CLI runs.
    let output = tokio::task::block_in_place(|| run_bounded(command));
    assert!(
        output.status.success(),
        "dialin {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `leader_pin` values anywhere in a JSON answer (not the masked ones).
fn pins_in(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("leader_pin", Value::String(pin)) if !pin.starts_with('*') => {
                        found.push(pin.clone())
                    }
                    _ => pins_in(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| pins_in(v, found)),
        _ => {}
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("JSON ({e}): {text}"))
}

fn read_dir_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("the folder exists").flatten() {
        text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_but_the_one_that_made_it_ever_shows_a_leader_pin() {
    let log = LogBuffer::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let folder = tempfile::tempdir().expect("a folder for the events file");
    let events = folder.path().join("events.jsonl");
    let bridge = Bridge::start_with_events(Some(events.clone())).await;

    // The operations that make a PIN: their answers are the only places
    // it may appear.
    cli(&bridge, &["admin", "tenant", "set", "--pin-length", "12"]);
    let mut pins = Vec::new();
    let mut showing = Vec::new();
    for args in [
        &["admin", "user", "enable", "alice@contoso.com", "--json"][..],
        &["admin", "user", "enable", "bob@contoso.com", "--json"],
        &["admin", "user", "reset-pin", "alice@contoso.com", "--json"],
    ] {
        let out = cli(&bridge, args);
        pins_in(&json(&out), &mut pins);
        showing.push(out);
    }
    let csv = folder.path().join("users.csv");
    std::fs::write(&csv, "email,display_name\ncarol@contoso.com,Carol\n").expect("CSV written");
    let out = cli(
        &bridge,
        &[
            "admin",
            "user",
            "import",
            csv.to_str().expect("UTF-8"),
            "--json",
        ],
    );
    pins_in(&json(&out), &mut pins);
    showing.push(out);
    assert_eq!(pins.len(), 4, "each operation showed its PIN: {showing:?}");
    for pin in &pins {
        assert!(
            pin.len() == 12 && pin.bytes().all(|b| b.is_ascii_digit()),
            "a 12-digit PIN: {pin}"
        );
    }

    // Everything else an admin does, and the listings.
    let mut outputs: Vec<(String, String)> = Vec::new();
    let run = |outputs: &mut Vec<(String, String)>, args: &[&str]| {
        outputs.push((args.join(" "), cli(&bridge, args)))
    };
    run(
        &mut outputs,
        &["admin", "user", "send-info", "alice@contoso.com"],
    );
    run(
        &mut outputs,
        &["admin", "user", "send-info", "carol@contoso.com", "--json"],
    );
    run(
        &mut outputs,
        &["admin", "user", "reset-id", "bob@contoso.com", "--json"],
    );
    // bob's new PIN is the one this answer shows.
    let last = cli(
        &bridge,
        &["admin", "user", "reset-pin", "bob@contoso.com", "--json"],
    );
    pins_in(&json(&last), &mut pins);
    assert_eq!(pins.len(), 5);
    let id = json(&cli(
        &bridge,
        &["admin", "user", "show", "alice@contoso.com", "--json"],
    ))["conference_id"]
        .as_str()
        .expect("alice has an ID")
        .to_string();

    // Callers: one joins, one types a wrong ID.
    let mut joined = call_config(&bridge, NUMBER, &format!("{id}#"), DtmfMethod::Rfc4733);
    joined.hang_up = dialin::caller::HangUp::AfterJoined(std::time::Duration::from_millis(300));
    call(joined).await;
    let mut wrong = call_config(&bridge, NUMBER, "1111111#", DtmfMethod::Info);
    wrong.hang_up = dialin::caller::HangUp::AfterAnswer(std::time::Duration::from_secs(9));
    call(wrong).await;

    for args in [
        &["admin", "user", "list"][..],
        &["admin", "user", "list", "--json"],
        &["admin", "user", "show", "alice@contoso.com"],
        &["admin", "user", "show", "bob@contoso.com", "--json"],
        &["admin", "outbox", "list"],
        &["admin", "outbox", "list", "--json"],
        &["admin", "revocations"],
        &["admin", "revocations", "--json"],
        &["admin", "migration", "status", "--json"],
        &["admin", "meeting", "list", "--json"],
        &["admin", "tenant", "show", "--json"],
        &["calls"],
        &["calls", "--json"],
    ] {
        run(&mut outputs, args);
    }
    let emails = json(&cli(&bridge, &["admin", "outbox", "list", "--json"]));
    let emails = emails.as_array().expect("a list of emails");
    assert!(emails.len() >= 5, "the operations sent emails: {emails:?}");
    for email in emails {
        let id = email["id"].to_string();
        run(&mut outputs, &["admin", "outbox", "show", &id]);
        run(&mut outputs, &["admin", "outbox", "show", &id, "--json"]);
    }
    outputs.push((
        "outbox/*.eml".into(),
        read_dir_text(&bridge.data().join("outbox")),
    ));
    outputs.push((
        "events".into(),
        std::fs::read_to_string(&events).expect("the events file"),
    ));
    bridge.stop().await;
    outputs.push(("log".into(), log.text()));

    // The search works: the answers that made the PINs do show them, and
    // the outputs are not empty.
    for pin in &pins {
        assert!(
            showing
                .iter()
                .chain([&last])
                .any(|s| s.contains(pin.as_str()))
        );
    }
    let log_text = &outputs.last().expect("the log").1;
    assert!(
        log_text.contains("INVITE") && log_text.contains("DEBUG"),
        "the log holds the calls in detail:\n{log_text}"
    );
    for (name, text) in &outputs {
        assert!(!text.trim().is_empty(), "{name} printed something");
        for pin in &pins {
            assert!(
                !text.contains(pin.as_str()),
                "a leader PIN appears in `{name}`:\n{text}"
            );
        }
    }
}
