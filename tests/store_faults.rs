//! Store faults: a full disk and a read-only data folder.
//!
//! - A full store (`serve --store-max-bytes`, which SQLite enforces with
//!   SQLITE_FULL exactly as on a full disk) refuses admin changes with 507
//!   `store-full`, changes nothing (store and directory), and the bridge
//!   keeps answering calls with the directory it has; once there is room,
//!   changes go through again.
//! - A bound too small for the store at start, and a read-only data folder
//!   at start, are clear errors naming the folder and the fix.
//! - An email that can't be written to the outbox stays queued and goes out
//!   once it can.
//!
//! Root ignores file modes: where a test needs a folder the server can't
//! write, a root test runs the server as `nobody` (65534), whom the modes
//! do bind. A real full filesystem needs a mount (privileges), so the disk
//! full case is the store bound here; docs/RELIABILITY.md records a manual
//! run on a full tmpfs.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::bridge::{Bridge, NUMBER, assert_joined, call, call_config};
use common::{ServeProcess, admin, admin_json, dialin_command, run_bounded};
use dialin::admin::service::EnableRequest;
use dialin::admin::{Options, Service};
use dialin::caller::Outcome;
use dialin::client::{Client, ClientError, Payload, segment};
use dialin::datadir::DataDir;
use dialin::media::dtmf::DtmfMethod;
use dialin::media::prompts::PromptId;
use dialin::time::{Clock, ManualClock, Timestamp};
use hyper::Method;
use serde_json::{Value, json};

/// Resets before the store is full, at most (each adds a few hundred bytes
/// to a store bounded at its size, so a handful fill it).
const MAX_FILL_RESETS: usize = 500;
/// Users in the import that can't fit: well over the room any half-full
/// page could give.
const BIG_IMPORT: usize = 200;
/// How long a spawned server may take to publish server.json or to exit.
const PROCESS_DEADLINE: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const MAX_POLLS: u32 = 2_000;
/// `nobody`, whom file modes bind when the tests run as root.
const NOBODY: u32 = 65534;

// ------------------------------------------------------------------ full store, in process

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_changes_with_507_changes_nothing_and_callers_still_join() {
    let bridge = Bridge::start().await;
    let client = Client::remote(&format!("http://{}", bridge.admin), bridge.token.clone())
        .expect("a loopback URL");
    let mut alice = bridge.enable("alice@contoso.com", None).await;
    let bob_old = bridge.enable("bob@contoso.com", None).await;
    let bob = reset(&client, "bob@contoso.com")
        .await
        .expect("bob's reset");
    assert_ne!(bob, bob_old);

    // Bound the store at its size, then reset until a reset no longer fits.
    let service = bridge.service.clone();
    let size = service.store_size_bytes().expect("the store's size");
    let bound = service
        .set_store_max_bytes(Some(size))
        .expect("bounding the store");
    assert_eq!(bound, size, "a bound at the store's size is the size");
    let mut resets = 0;
    let refusal = loop {
        assert!(
            resets < MAX_FILL_RESETS,
            "{MAX_FILL_RESETS} resets fit in a store bounded at {size} bytes"
        );
        let before = snapshot(&client).await;
        match reset(&client, "alice@contoso.com").await {
            Ok(new) => {
                alice = new;
                resets += 1;
            }
            Err(refusal) => {
                assert_eq!(
                    snapshot(&client).await,
                    before,
                    "the refused reset changed something"
                );
                break refusal;
            }
        }
    };
    let ClientError::Api {
        status,
        code,
        message,
    } = &refusal
    else {
        panic!("the full store answered with a transport error: {refusal}");
    };
    assert_eq!((*status, code.as_str()), (507, "store-full"), "{message}");
    for words in [
        "disk is full",
        "--store-max-bytes",
        "then retry",
        "nothing was changed",
    ] {
        assert!(message.contains(words), "{words:?} not in: {message}");
    }
    eprintln!("a store bounded at {size} bytes took {resets} resets, then refused one: {message}");
    let during = snapshot(&client).await;
    assert_eq!(during["user"]["alice@contoso.com"], alice.as_str());

    // An import that needs far more room than is left: refused, none of it there.
    let csv = import_csv("big", BIG_IMPORT);
    let refused = client
        .call(Method::POST, "/api/users/import", Payload::Csv(csv.clone()))
        .await
        .expect_err("an import of 200 users does not fit");
    assert!(
        matches!(&refused, ClientError::Api { status: 507, code, .. } if code == "store-full"),
        "{refused}"
    );
    assert_eq!(
        snapshot(&client).await,
        during,
        "the refused import left a trace"
    );
    let first = client
        .call(
            Method::GET,
            &format!("/api/users/{}", segment("big0@contoso.com")),
            Payload::None,
        )
        .await;
    assert!(
        matches!(&first, Err(ClientError::Api { status: 404, .. })),
        "{first:?}"
    );

    // The bridge answers from the directory it has: alice's ID joins; bob's
    // old one is not valid, his new one joins.
    let joined = call(call_config(
        &bridge,
        NUMBER,
        &format!("{alice}#"),
        DtmfMethod::Info,
    ))
    .await;
    assert_joined(&joined);
    let turned_away = call(call_config(
        &bridge,
        NUMBER,
        &format!("{bob_old}#,,,,{bob}#"),
        DtmfMethod::Info,
    ))
    .await;
    assert_eq!(
        turned_away.prompt_ids(),
        vec![
            PromptId::Welcome,
            PromptId::NotValid,
            PromptId::Joining,
            PromptId::FirstPerson
        ],
        "{turned_away}"
    );
    assert_eq!(turned_away.outcome, Outcome::Completed, "{turned_away}");
    assert_eq!(
        snapshot(&client).await,
        during,
        "calls change no admin state"
    );

    // Room again (an admin raises the bound, or frees the disk): the same
    // operations go through, and the directory follows the store.
    service
        .set_store_max_bytes(None)
        .expect("lifting the bound");
    let old = alice.clone();
    alice = reset(&client, "alice@contoso.com")
        .await
        .expect("a reset once the store has room");
    assert_ne!(alice, old);
    let found = get(&client, &format!("/api/directory/{old}")).await;
    assert_eq!(found["status"], "revoked", "{found}");
    let report = client
        .call(Method::POST, "/api/users/import", Payload::Csv(csv))
        .await
        .expect("the import once the store has room");
    assert_eq!(report["created"], BIG_IMPORT, "{report}");
    let check = get(&client, "/api/directory/check").await;
    assert_eq!(check["differences"], json!([]), "{check}");
    // Two users, alice's IDs (first, each reset, the last), bob's two, the import.
    assert_eq!(
        check["entries"].as_u64(),
        Some((1 + resets + 1 + 2 + BIG_IMPORT) as u64),
        "{check}"
    );
    bridge.stop().await;
}

// ------------------------------------------------------------------ full store, real process

#[test]
fn serve_store_max_bytes_refuses_changes_and_the_cli_says_what_to_do() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let data = tmp.path().join("data");

    // A bound too small for the schema: start-up fails, naming the folder.
    let out = serve_until_exit(&data, &["--store-max-bytes", "4096"], false);
    assert!(!out.status.success(), "started with a 4 KiB store");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("opening the store in {}", data.display())),
        "{text}"
    );
    assert!(text.contains("the store is full"), "{text}");
    assert!(text.contains("--store-max-bytes"), "{text}");

    // Nothing half-made: the same folder starts without the bound.
    let mut server = ServeProcess::start(&data, &[]);
    let enabled = admin_json(&data, &["user", "enable", "alice@contoso.com"]);
    let mut alice = text_of(&enabled["user"]["conference_id"]);
    assert_eq!(server.terminate().code(), Some(0));

    // Bounded at its size (any bound below the size is the size).
    let mut server = ServeProcess::start(&data, &["--store-max-bytes", "1"]);
    let mut refused = None;
    for _ in 0..MAX_FILL_RESETS {
        let out = admin(&data, &["user", "reset-id", "alice@contoso.com", "--json"]);
        if !out.status.success() {
            refused = Some(out);
            break;
        }
        let answer: Value = serde_json::from_slice(&out.stdout).expect("reset-id --json");
        alice = text_of(&answer["new_conference_id"]);
    }
    let refused = refused.expect("the bounded store filled up");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("the store is full"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    let shown = admin_json(&data, &["user", "show", "alice@contoso.com"]);
    assert_eq!(
        shown["conference_id"],
        alice.as_str(),
        "the refused reset changed alice"
    );
    let client = server.client();
    let check = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async { get(&client, "/api/directory/check").await });
    assert_eq!(check["differences"], json!([]), "{check}");
    assert_eq!(server.terminate().code(), Some(0));

    // Restarted without the bound: the next change goes through.
    let mut server = ServeProcess::start(&data, &[]);
    let answer = admin_json(&data, &["user", "reset-id", "alice@contoso.com"]);
    assert_eq!(answer["old_conference_id"], alice.as_str(), "{answer}");
    assert_eq!(server.terminate().code(), Some(0));
}

// ------------------------------------------------------------------ the outbox

#[test]
fn an_email_that_cannot_be_written_stays_queued_and_goes_out_once_it_can() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let outbox = tmp.path().join("outbox");
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let service = Service::open(
        &tmp.path().join("dialin.sqlite"),
        outbox.clone(),
        Options {
            clock: std::sync::Arc::new(clock),
            rng_seed: Some(7),
            smtp: None,
        },
    )
    .expect("a fresh store");
    let alice = "alice@contoso.com".parse().expect("an email address");
    service
        .enable_user(
            "test",
            &EnableRequest {
                email: Some("alice@contoso.com".parse().expect("an email address")),
                no_email: true,
                ..EnableRequest::default()
            },
        )
        .expect("alice is enabled");

    // A file where the outbox folder should be: no one, root included, can
    // write an email into it.
    std::fs::remove_dir_all(&outbox).ok();
    std::fs::write(&outbox, b"not a folder").expect("a file in the outbox's place");
    let first = service
        .reset_conference_id("test", &alice, false)
        .expect("the reset commits whatever the outbox does");
    let id = first.email_id.expect("the reset queued an email");
    let email = service.email(id).expect("the email is in the store");
    assert_eq!(email.status, "queued", "{email:?}");
    assert!(email.file.is_none(), "{email:?}");
    assert!(email.attempts >= 1, "the write was tried: {email:?}");
    let error = email.last_error.clone().expect("the failure is recorded");
    assert!(error.contains(&outbox.display().to_string()), "{error}");
    // The directory took the reset: it was committed.
    assert!(service.verify_directory().expect("a check").is_empty());

    // The folder is back: the next pass writes it.
    std::fs::remove_file(&outbox).expect("removing the stand-in file");
    std::fs::create_dir(&outbox).expect("the outbox folder again");
    assert_eq!(service.deliver_queued().expect("a delivery pass"), 1);
    let email = service.email(id).expect("the email");
    assert_eq!(email.status, "delivered", "{email:?}");
    let file = email.file.expect("the written file's name");
    let text = std::fs::read_to_string(outbox.join(&file)).expect("the .eml file");
    assert!(
        text.contains(&first.new_conference_id.to_string()),
        "the email carries the new ID: {text}"
    );

    // A read-only outbox folder, where modes bind this process.
    std::fs::set_permissions(&outbox, std::fs::Permissions::from_mode(0o555))
        .expect("chmod 555 the outbox");
    if std::fs::write(outbox.join("probe"), b"").is_ok() {
        eprintln!(
            "this process writes into a 0555 folder (root): the read-only outbox case is covered by the file stand-in above and by the server run as nobody"
        );
        std::fs::set_permissions(&outbox, std::fs::Permissions::from_mode(0o755)).ok();
        return;
    }
    let second = service
        .reset_conference_id("test", &alice, false)
        .expect("the reset commits");
    let id = second.email_id.expect("an email");
    assert_eq!(service.email(id).expect("the email").status, "queued");
    std::fs::set_permissions(&outbox, std::fs::Permissions::from_mode(0o755))
        .expect("chmod 755 the outbox");
    assert_eq!(service.deliver_queued().expect("a delivery pass"), 1);
    assert_eq!(service.email(id).expect("the email").status, "delivered");
}

// ------------------------------------------------------------------ migration runs

/// Meetings alice organizes, each a long subject so their updated
/// invitations need many new pages.
const MEETINGS: usize = 30;

/// A service on a fresh store with alice enabled, `MEETINGS` future
/// meetings carrying her ID, then a reset that queues their migration.
fn alice_with_a_pending_migration(
    dir: &Path,
    clock: &ManualClock,
) -> (Service, dialin::admin::ids::EmailAddress, String) {
    let service = Service::open(
        &dir.join("dialin.sqlite"),
        dir.join("outbox"),
        Options {
            clock: std::sync::Arc::new(clock.clone()),
            rng_seed: Some(11),
            smtp: None,
        },
    )
    .expect("a fresh store");
    let alice: dialin::admin::ids::EmailAddress =
        "alice@contoso.com".parse().expect("an email address");
    service
        .enable_user(
            "test",
            &EnableRequest {
                email: Some(alice.clone()),
                no_email: true,
                ..EnableRequest::default()
            },
        )
        .expect("alice is enabled");
    let start = Timestamp::from_millis(clock.now().as_millis() + 30 * 86_400_000);
    for i in 0..MEETINGS {
        let subject = format!("{i:03} {}", "quarterly planning ".repeat(12));
        service
            .schedule_meeting("test", &alice, subject.trim(), start)
            .expect("a meeting");
    }
    let reset = service
        .reset_conference_id("test", &alice, true)
        .expect("the reset");
    assert!(
        reset.migration_job.is_some(),
        "the reset queued a migration"
    );
    (service, alice, reset.new_conference_id.to_string())
}

fn meeting_ids(service: &Service, alice: &dialin::admin::ids::EmailAddress) -> Vec<String> {
    service
        .meetings(Some(alice))
        .expect("alice's meetings")
        .iter()
        .map(|m| m.conference_id.to_string())
        .collect()
}

#[test]
fn a_migration_run_on_a_full_store_changes_no_meeting_and_runs_again_once_there_is_room() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let (service, alice, new) = alice_with_a_pending_migration(tmp.path(), &clock);
    let before = meeting_ids(&service, &alice);
    assert!(before.iter().all(|id| *id != new), "{before:?}");

    let size = service.store_size_bytes().expect("the size");
    service.set_store_max_bytes(Some(size)).expect("the bound");
    clock
        .advance(Duration::from_secs(2 * 3600))
        .expect("2 hours on");
    // The run fails; its failure is recorded if that fits, else the pass
    // fails. Either way, no meeting is half-migrated.
    let run = service.run_due_migrations();
    eprintln!("the run on a full store: {run:?}");
    assert_eq!(meeting_ids(&service, &alice), before, "a meeting moved");
    let jobs = service.migration_jobs(Some(&alice)).expect("the jobs");
    assert!(
        jobs.iter()
            .all(|j| j.meetings_updated == 0 && j.finished_at.is_none()),
        "{jobs:?}"
    );

    service
        .set_store_max_bytes(None)
        .expect("lifting the bound");
    clock
        .advance(Duration::from_secs(3 * 3600))
        .expect("past the retry");
    service.run_due_migrations().expect("a pass with room");
    let jobs = service.migration_jobs(Some(&alice)).expect("the jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{jobs:?}");
    assert_eq!(jobs[0].meetings_updated as usize, MEETINGS);
    assert!(meeting_ids(&service, &alice).iter().all(|id| *id == new));
}

/// A run whose failure could not be recorded either leaves its job in
/// progress; the next pass puts it back instead of stranding it until a
/// restart.
#[test]
fn a_job_left_in_progress_by_a_failed_pass_runs_on_the_next_pass() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let (service, alice, new) = alice_with_a_pending_migration(tmp.path(), &clock);
    // What such a pass leaves behind: in progress, no next run.
    let raw = rusqlite::Connection::open(tmp.path().join("dialin.sqlite")).expect("the store");
    let stuck = raw
        .execute(
            "UPDATE migration_jobs SET state = 'in-progress', next_run_at = NULL, runs = 1",
            [],
        )
        .expect("marking the job in progress");
    assert_eq!(stuck, 1);
    drop(raw);

    service.run_due_migrations().expect("the next pass");
    let jobs = service.migration_jobs(Some(&alice)).expect("the jobs");
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{jobs:?}");
    assert!(meeting_ids(&service, &alice).iter().all(|id| *id == new));
}

// ------------------------------------------------------------------ a read-only data folder

/// A folder made read-only while the server runs: SQLite keeps writing the
/// files it has open (WAL mode opens the database, -wal and -shm once), so
/// admin changes still commit; what needs a new file (an email's .eml)
/// waits, queued. At the next start the folder is refused with the fix.
#[test]
fn a_data_folder_made_read_only_queues_emails_and_refuses_the_next_start_clearly() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let as_root = std::fs::metadata(tmp.path())
        .expect("the temporary folder")
        .uid()
        == 0;
    if as_root && !nobody_can_run_dialin() {
        eprintln!(
            "skipped: running as root, and user {NOBODY} can't run the dialin binary (its \
             folder is not readable to others), so no process here is bound by file modes"
        );
        return;
    }
    // The server (as nobody when we are root) creates the folder, so it owns it.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod 777 the temporary folder");
    let data = tmp.path().join("data");
    let mut server = Spawned::start(&data, as_root);
    let enabled = admin_json(&data, &["user", "enable", "alice@contoso.com"]);
    let first = text_of(&enabled["user"]["conference_id"]);

    // Read-only while it runs.
    set_mode(&data, 0o555);
    set_mode(&data.join("outbox"), 0o555);
    let answer = admin_json(&data, &["user", "reset-id", "alice@contoso.com"]);
    assert_eq!(answer["old_conference_id"], first.as_str(), "{answer}");
    let alice = text_of(&answer["new_conference_id"]);
    let email = answer["email_id"]
        .as_i64()
        .expect("the reset queued an email");
    let shown = admin_json(&data, &["outbox", "show", &email.to_string()]);
    assert_eq!(shown["status"], "queued", "{shown}");
    assert!(
        text_of(&shown["last_error"]).contains("outbox"),
        "the failure names the outbox: {shown}"
    );
    server.stop();

    // The next start is refused, naming the folder and the fix.
    let out = serve_until_exit(&data, &[], as_root);
    assert!(!out.status.success(), "started on a read-only folder");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("opening the store in {}", data.display())),
        "{text}"
    );
    assert!(text.contains("the store is read-only"), "{text}");
    assert!(text.contains("chmod u+w"), "{text}");

    // Writable again: it starts, the change made during the fault is there,
    // and the queued email goes out.
    set_mode(&data, 0o755);
    set_mode(&data.join("outbox"), 0o755);
    let mut server = Spawned::start(&data, as_root);
    let shown = admin_json(&data, &["user", "show", "alice@contoso.com"]);
    assert_eq!(shown["conference_id"], alice.as_str(), "{shown}");
    admin_json(&data, &["outbox", "deliver"]);
    let shown = admin_json(&data, &["outbox", "show", &email.to_string()]);
    assert_eq!(shown["status"], "delivered", "{shown}");
    server.stop();
}

// ------------------------------------------------------------------ helpers

async fn reset(client: &Client, email: &str) -> Result<String, ClientError> {
    let path = format!("/api/users/{}/reset-id", segment(email));
    let out = client
        .call(
            Method::POST,
            &path,
            Payload::Json(json!({"no_email": false})),
        )
        .await?;
    Ok(text_of(&out["new_conference_id"]))
}

async fn get(client: &Client, path: &str) -> Value {
    client
        .call(Method::GET, path, Payload::None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// What an admin change would alter: users and their IDs, the directory,
/// revocations, emails, migration jobs.
async fn snapshot(client: &Client) -> Value {
    let users = get(client, "/api/users").await;
    let mut by_email = serde_json::Map::new();
    for u in users.as_array().expect("a list of users") {
        by_email.insert(text_of(&u["email"]), u["conference_id"].clone());
    }
    let check = get(client, "/api/directory/check").await;
    assert_eq!(
        check["differences"],
        json!([]),
        "directory vs store: {check}"
    );
    json!({
        "user": by_email,
        "entries": check["entries"],
        "revocations": get(client, "/api/revocations").await,
        "emails": get(client, "/api/outbox").await.as_array().map(Vec::len),
        "jobs": get(client, "/api/migrations").await,
    })
}

fn import_csv(prefix: &str, n: usize) -> String {
    let mut csv = String::from("email,display_name\n");
    for i in 0..n {
        csv.push_str(&format!("{prefix}{i}@contoso.com,Imported User {i}\n"));
    }
    csv
}

fn text_of(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
        .to_string()
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// `dialin serve` on `data`, as `nobody` when asked.
fn serve_command(data: &Path, extra: &[&str], as_nobody: bool) -> Command {
    let mut command = dialin_command();
    command
        .args(["serve", "--admin", "127.0.0.1:0"])
        .args(["--sip", "127.0.0.1:0", "--rtp-ports", "0-0", "--data"])
        .arg(data)
        .args(extra);
    if as_nobody {
        command.uid(NOBODY).gid(NOBODY);
    }
    command
}

/// Runs a `dialin serve` that is expected to stop by itself (a start-up
/// error), bounded.
fn serve_until_exit(data: &Path, extra: &[&str], as_nobody: bool) -> Output {
    run_bounded(serve_command(data, extra, as_nobody))
}

fn nobody_can_run_dialin() -> bool {
    let mut command = dialin_command();
    command.arg("--version").uid(NOBODY).gid(NOBODY);
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `dialin serve` child, possibly as another user; killed on drop.
struct Spawned {
    child: Child,
}

impl Spawned {
    fn start(data: &Path, as_nobody: bool) -> Spawned {
        let mut child = serve_command(data, &[], as_nobody)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dialin serve starts");
        let started = Instant::now();
        for _ in 0..MAX_POLLS {
            if let Some(info) = DataDir::existing(data).read_server_info()
                && info.pid == child.id()
            {
                return Spawned { child };
            }
            if let Some(status) = child.try_wait().expect("polling the server") {
                panic!("dialin serve exited with {status} before serving");
            }
            if started.elapsed() > PROCESS_DEADLINE {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        panic!("dialin serve did not publish server.json in time");
    }

    /// SIGTERM, then wait (bounded) for it to exit.
    fn stop(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM was delivered");
        let started = Instant::now();
        for _ in 0..MAX_POLLS {
            if self.child.try_wait().expect("polling the server").is_some() {
                return;
            }
            if started.elapsed() > PROCESS_DEADLINE {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        panic!("dialin serve did not stop on SIGTERM in time");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
