//! `dialin run --target`: the shipped scenarios on a bridge that already
//! runs (started here, in-process, on loopback). They pass on it, and pass
//! or are skipped for a fresh bridge when run again (the runs don't meet
//! each other's users); the bridge's tenant is as it was afterwards. On the
//! real clock the scenarios that move the clock are skipped; a bad token,
//! an unreachable admin API or a malformed target stop the run before
//! anything runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dialin::client::Client;
use dialin::cmd::run::{load_paths, run_loaded};
use dialin::media::prompts::PromptCatalog;
use dialin::net::server::{ServeOptions, Server};
use dialin::net::sip::SipOptions;
use dialin::scenario::report::{self, FileResult};
use dialin::scenario::runner::{CLOCK_NOTE, RemoteBridge, RunOptions, check_remote, run_scenario};
use dialin::scenario::{Action, Scenario};
use dialin::time::{Clock, ManualClock, SystemClock};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The most one pass over the shipped scenarios may take.
const PASS_DEADLINE: Duration = Duration::from_secs(400);

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// A bridge like `dialin serve --sip 127.0.0.1:0 [--clock manual]`, in
/// this test's runtime.
struct Running {
    remote: RemoteBridge,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    data: TempDir,
}

impl Running {
    /// Guessing protection off, as the scenarios README advises for a
    /// bridge that runs scenarios: they enter wrong IDs on purpose, all
    /// from 127.0.0.1, and two passes would trip it.
    async fn start(manual_clock: bool) -> Running {
        Running::start_with(manual_clock, None).await
    }

    async fn start_with(manual_clock: bool, guard: Option<dialin::guard::Config>) -> Running {
        let data = tempfile::tempdir().expect("a temporary data folder");
        let mut options = ServeOptions::new(data.path().to_path_buf());
        options.admin = SocketAddr::from(([127, 0, 0, 1], 0));
        if manual_clock {
            options.clock = Arc::new(ManualClock::new(SystemClock.now()));
        }
        let prompts = PromptCatalog::embedded().expect("the shipped prompts load");
        let mut sip = SipOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(prompts));
        sip.rtp_ports = 0..=0;
        sip.guard = guard;
        options.sip = Some(sip);
        let server = Server::bind(options).await.expect("the bridge binds");
        let remote = RemoteBridge {
            sip: server.sip_addr().expect("SIP was configured"),
            admin: format!("http://{}", server.admin_addr()),
            token: server.token().to_string(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            remote,
            stop: Some(stop),
            task: Some(task),
            data,
        }
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            remote: Some(self.remote.clone()),
            ..RunOptions::default()
        }
    }

    fn client(&self) -> Client {
        Client::remote(&self.remote.admin, self.remote.token.clone()).expect("a valid URL")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the bridge stops in time")
                .expect("the bridge task did not panic")
                .expect("the bridge stopped cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn run_all(options: RunOptions) -> Vec<FileResult> {
    let loaded = load_paths(&[shipped()]);
    assert!(loaded.len() >= 6, "only {} scenarios", loaded.len());
    tokio::time::timeout(PASS_DEADLINE, run_loaded(loaded, 1, options, |_| {}))
        .await
        .expect("the scenarios finish in time")
}

/// The hand-set conference IDs of a scenario's fixture.
fn fixed_ids(file: &Path) -> Vec<String> {
    let scenario = Scenario::load(file).expect("a shipped scenario loads");
    scenario
        .users
        .iter()
        .filter_map(|u| u.conference_id.as_ref().map(|id| id.get_ref().clone()))
        .collect()
}

fn shown(results: &[FileResult]) -> String {
    results
        .iter()
        .map(report::text)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_scenarios_pass_on_a_running_bridge_and_again_without_meeting() {
    let bridge = Running::start(true).await;
    let api = bridge.client();
    let tenant_before: Value = api.get("/api/tenant").await.expect("the tenant");

    // First pass: every scenario passes, but for one whose hand-set ID an
    // earlier scenario of the same pass already took on this bridge.
    let first = run_all(bridge.options()).await;
    let all = shown(&first);
    let mut taken: Vec<String> = Vec::new();
    for r in &first {
        let ids = fixed_ids(r.file());
        let earlier = ids.iter().any(|id| taken.contains(id));
        match r.skipped() {
            None => assert!(r.passed(), "first pass:\n{all}"),
            Some(reason) => {
                assert!(earlier, "skipped on a fresh bridge:\n{all}");
                assert!(reason.contains("needs a fresh bridge"), "{all}");
            }
        }
        taken.extend(ids);
    }
    assert!(first.iter().filter(|r| r.passed()).count() >= 5, "{all}");
    let tenant_after: Value = api.get("/api/tenant").await.expect("the tenant");
    assert_eq!(tenant_after, tenant_before, "the tenant is put back");

    // Second pass on the same bridge: never a failure. A scenario with a
    // hand-set ID can't have it again; every other one passes, its users
    // new ones.
    let second = run_all(bridge.options()).await;
    let all = shown(&second);
    for r in &second {
        assert!(!r.failed(), "second pass:\n{all}");
        if fixed_ids(r.file()).is_empty() {
            assert!(r.passed(), "second pass:\n{all}");
        } else {
            let reason = r.skipped().unwrap_or_default();
            assert!(reason.contains("needs a fresh bridge"), "{all}");
            assert!(reason.contains("conference ID"), "{all}");
        }
    }
    let tenant_after: Value = api.get("/api/tenant").await.expect("the tenant");
    assert_eq!(tenant_after, tenant_before, "the tenant is put back");

    // Two passes made two sets of users, none of them the file's own.
    let users: Value = api.get("/api/users").await.expect("the users");
    let emails: Vec<&str> = users
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert!(!emails.contains(&"alice@contoso.com"), "{emails:?}");
    assert!(
        emails.iter().filter(|e| e.starts_with("alice+r")).count() >= 6,
        "{emails:?}"
    );
    bridge.stop().await;
}

const SKIP_ADVANCE: &str = r#"
title = "moves the clock, but can do without"
clock = "skip-advance"

[[user]]
name = "alice"
email = "alice@contoso.com"

[[step]]
name = "two hours later"
advance = "2h"
[step.expect]
lookup = [{ conference_id = "${alice.conference_id}", result = "revoked" }]

[[step]]
name = "alice's ID works"
[step.expect]
lookup = [{ conference_id = "${alice.conference_id}", result = "active" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_real_clock_scenarios_that_move_it_are_skipped_unless_they_can_do_without() {
    let bridge = Running::start(false).await;
    let clock: Value = bridge.client().get("/api/clock").await.expect("the clock");
    assert_eq!(clock["manual"], false, "{clock}");

    let advancing: Vec<PathBuf> = load_paths(&[shipped()])
        .into_iter()
        .filter_map(|(path, s)| {
            let s = s.expect("a shipped scenario loads");
            s.steps
                .iter()
                .any(|step| matches!(step.action, Action::Advance(_)))
                .then_some(path)
        })
        .collect();
    assert!(!advancing.is_empty(), "a shipped scenario moves the clock");
    let loaded = load_paths(&advancing);
    let results = tokio::time::timeout(
        PASS_DEADLINE,
        run_loaded(loaded, 1, bridge.options(), |_| {}),
    )
    .await
    .expect("the scenarios finish in time");
    for r in &results {
        assert_eq!(r.skipped(), Some(CLOCK_NOTE), "{}", report::text(r));
        assert_eq!(
            report::text(r),
            format!("SKIP  {}  ({CLOCK_NOTE})", r.file().display())
        );
    }
    let json = report::json(&results);
    assert_eq!(json["skipped"], results.len());
    assert_eq!(json["failed"], 0);

    // `clock = "skip-advance"`: the advance step and its expectation (which
    // would fail) are left out, with a note; the rest runs.
    let scenario = Scenario::from_str(SKIP_ADVANCE, "skip.toml").expect("the file is valid");
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        run_scenario(&scenario, &bridge.options()),
    )
    .await
    .expect("the scenario finishes in time");
    let text = report::text(&FileResult::Ran(result.clone()));
    assert!(result.passed(), "{text}");
    assert_eq!(result.notes.len(), 1, "{text}");
    assert!(
        result.notes[0].contains("'two hours later': advance 2h skipped"),
        "{text}"
    );

    // On a bridge it owns, the same scenario moves the clock and the
    // expectation of that step is checked (and fails: the ID is active).
    let own = run_scenario(&scenario, &RunOptions::default()).await;
    let failure = own
        .failure
        .expect("the advance step's expectation is checked");
    assert_eq!(failure.step, "two hours later");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_or_an_unreachable_admin_api_is_refused_before_anything_runs() {
    let bridge = Running::start(true).await;
    let wrong = RemoteBridge {
        token: "not-the-token".into(),
        ..bridge.remote.clone()
    };
    let e = check_remote(&wrong).await.expect_err("a wrong token");
    assert!(e.contains("refused the token"), "{e}");
    assert!(e.contains("--token"), "{e}");
    let warnings = check_remote(&bridge.remote)
        .await
        .expect("the right token is accepted");
    assert!(warnings.is_empty(), "guard off: {warnings:?}");
    let guarded = Running::start_with(true, Some(dialin::guard::Config::default())).await;
    let warnings = check_remote(&guarded.remote)
        .await
        .expect("the right token is accepted");
    assert!(
        warnings.iter().any(|w| w.contains("--guard off")),
        "a guarded bridge is named: {warnings:?}"
    );
    guarded.stop().await;

    // The CLI: nothing runs, the error says what is wrong.
    let admin = bridge.remote.admin.clone();
    let target = format!("sip:{}", bridge.remote.sip);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--target".into(),
                target.clone(),
                "--admin".into(),
                admin.clone(),
                "--token".into(),
                "wrong".into(),
            ],
            "refused the token",
        ),
        (
            vec![
                "--target".into(),
                target.clone(),
                "--admin".into(),
                // Nothing listens on port 9 of loopback here.
                "http://127.0.0.1:9".into(),
                "--token".into(),
                "t".into(),
            ],
            "can't reach the admin API",
        ),
        (
            vec![
                "--target".into(),
                "sip:127.0.0.1".into(),
                "--admin".into(),
                admin.clone(),
                "--token".into(),
                "t".into(),
            ],
            "write sip:HOST:PORT",
        ),
        (
            vec![
                "--target".into(),
                target.clone(),
                "--admin".into(),
                "127.0.0.1:8080".into(),
                "--token".into(),
                "t".into(),
            ],
            "write http://HOST:PORT",
        ),
    ];
    for (args, says) in cases {
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_dialin"))
                .arg("run")
                .arg(shipped())
                .args(&args)
                .output()
                .expect("dialin runs")
        })
        .await
        .expect("the command ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{says}: {stdout}{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(
            !stdout.contains("PASS") && !stdout.contains("FAIL"),
            "nothing ran: {stdout}"
        );
    }

    // With only --target, the data folder tells the admin URL and token.
    let data = bridge.data.path().display().to_string();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("join.toml");
    std::fs::write(
        &file,
        std::fs::read_to_string(shipped().join("04-dynamic-only.toml")).expect("a shipped file"),
    )
    .expect("write the scenario");
    let json = dir.path().join("out.json");
    let (file, json_path) = (file.clone(), json.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dialin"))
            .arg("run")
            .arg(&file)
            .args([
                "--target", &target, "--data", &data, "--jobs", "3", "--json",
            ])
            .arg(&json_path)
            .output()
            .expect("dialin runs")
    })
    .await
    .expect("the command ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("one at a time"),
        "the --jobs note: {stdout}"
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(
        stdout.contains("1 scenarios: 1 passed, 0 failed, 0 skipped"),
        "{stdout}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON"))
        .expect("valid JSON");
    assert_eq!(v["scenarios"][0]["result"], "passed");
    bridge.stop().await;
}

const REPLACE_PROVIDER: &str = r#"
title = "moving a user from a third-party provider to Microsoft revokes the old ID"

[[user]]
name = "ian"
email = "ian@contoso.com"
provider = { third-party = "InterCall" }
conference_id = "12345678"

[[step]]
name = "remember ian"
capture = { user = "ian", as = "before" }

[[step]]
name = "Microsoft without replace_provider"
[step.admin]
action = "enable"
user = "ian"
provider = "microsoft"
expect_error = "--replace-provider"

[[step]]
name = "Microsoft, replacing the provider"
[step.admin]
action = "enable"
user = "ian"
provider = "microsoft"
replace_provider = true
no_email = true
[step.expect]
lookup = [
  { conference_id = "${before.conference_id}", result = "revoked" },
  { conference_id = "${ian.conference_id}", result = "active" },
]

[[step]]
name = "the new ID joins"
[step.call]
to = "+14255550100"
digits = "${ian.conference_id}#"
hang_up = "after-joined 1s"
[step.expect]
outcome = "joined"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_provider_moves_a_user_and_revokes_the_old_providers_id() {
    let scenario = Scenario::from_str(REPLACE_PROVIDER, "replace.toml").expect("the file is valid");
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        run_scenario(&scenario, &RunOptions::default()),
    )
    .await
    .expect("the scenario finishes in time");
    assert!(
        result.passed(),
        "{}",
        report::text(&FileResult::Ran(result.clone()))
    );
    // Without replace_provider the second enable would succeed where the
    // scenario expects a refusal: the key is what makes the difference.
    let without = REPLACE_PROVIDER.replace("replace_provider = true\n", "");
    let scenario = Scenario::from_str(&without, "replace.toml").expect("the file is valid");
    let result = run_scenario(&scenario, &RunOptions::default()).await;
    let failure = result.failure.expect("the move is refused without the key");
    assert_eq!(failure.step, "Microsoft, replacing the provider");
    assert!(failure.actual.contains("--replace-provider"), "{failure:?}");
}
