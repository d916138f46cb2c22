//! Crash safety: a `dialin serve` process killed with SIGKILL in the middle
//! of a burst of conference ID changes loses nothing it answered, keeps at
//! most the one unanswered change per user that was in flight, and comes back
//! with a directory equal to its store.
//!
//! Each cycle runs the real binary on the same data folder: one task per user
//! resets (and for some users sets) conference IDs back to back while another
//! task runs migrations by advancing the manual clock, and a third imports
//! users by CSV (new users, and one added earlier that the import enables);
//! after a pseudo-random number of answered changes the process is killed
//! with requests in flight. The restarted server is then checked against
//! what the clients were told. An import is one transaction ("all users or
//! none"): every answered import is there completely, and the one in flight
//! at the kill is there completely or not at all.
//!
//! The seed is printed; `DIALIN_CRASH_SEED=N` replays a run's choices (the
//! kill points), though not its timing.
//!
//! A second test kills the server in the middle of a migration run and
//! checks that the interrupted job runs again.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dialin::client::{Client, ClientError, Payload, segment};
use dialin::datadir::DataDir;
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Users changing IDs concurrently, one task each.
const USERS: usize = 8;
/// Kill/restart cycles, at most...
const CYCLES: usize = 20;
/// ...and no new cycle once the test has run this long.
const TIME_BUDGET: Duration = Duration::from_secs(20);
/// A cycle's kill comes after this many answered changes plus a random part.
const KILL_AFTER_MIN: usize = 20;
const KILL_AFTER_SPREAD: u64 = 100;
/// A task stops after this many changes even if the kill never comes.
const MAX_CHANGES_PER_TASK: usize = 1_000;
/// How long the test waits for the planned kill point before killing anyway.
const KILL_WAIT: Duration = Duration::from_secs(15);
/// How long one request may take before it counts as unanswered.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Looks at the data folder while waiting for server.json: at most
/// `MAX_POLLS`, `POLL_INTERVAL` apart.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const MAX_POLLS: u32 = 1_000;
/// Hand-set IDs come from here up (7 digits, as a Microsoft user needs).
const SET_ID_BASE: u64 = 9_000_000;
/// New users in each CSV import (plus one existing user it enables).
const IMPORT_NEW: usize = 4;
/// An import task stops after this many imports even if the kill never comes.
const MAX_IMPORTS_PER_BURST: usize = 500;

/// Users with a migration job each in the interrupted-run test: enough jobs
/// that one run of them all takes many commits.
const JOB_USERS: usize = 40;
/// Kill attempts before the interrupted-run test gives up finding a run to cut.
const CUT_ATTEMPTS: usize = 30;
/// Looks at the job list while a migration run goes on.
const JOB_POLLS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_id_changes_survive_kill_9_and_the_directory_matches_the_store() {
    let seed = std::env::var("DIALIN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed} (DIALIN_CRASH_SEED={seed} replays the kill points)");
    let mut rng = XorShift::new(seed);

    let tmp = tempfile::tempdir().expect("a temporary folder");
    let data = tmp.path().join("data");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("a folder for server logs");
    let started = Instant::now();
    let next_set_id = Arc::new(AtomicU64::new(0));

    let mut server = ServeProcess::start(&data, logs.join("serve-0.log")).await;
    let mut users = enable_users(&server).await;

    let mut cycles = 0;
    let mut in_flight_at_kills = 0;
    let mut unanswered_committed = 0;
    let mut migrations_succeeded = 0;
    let mut runs_cut_short = 0;
    let mut imported: Vec<Imported> = Vec::new();
    let mut imports_answered = 0;
    let mut imports_in_flight = 0;
    let mut imports_in_flight_committed = 0;
    let mut changes_answered = 0;
    for cycle in 1..=CYCLES {
        let kill_at = KILL_AFTER_MIN + rng.below(KILL_AFTER_SPREAD) as usize;
        let burst = burst_and_kill(&mut server, &users, kill_at, next_set_id.clone(), cycle).await;
        in_flight_at_kills += burst.in_flight_at_kill;
        imports_answered += burst.imports.answered.len();
        imports_in_flight += usize::from(burst.imports.unanswered.is_some());
        changes_answered += burst
            .per_user
            .iter()
            .map(|b| b.answered.len())
            .sum::<usize>();

        server = ServeProcess::start(&data, logs.join(format!("serve-{cycle}.log"))).await;
        // Informational: whether this kill cut a migration run short (the
        // restarted server says so when it puts the job back).
        let requeued = server
            .log_text()
            .contains("migration runs were interrupted");
        runs_cut_short += usize::from(requeued);
        let in_flight_committed = verify_imports(&server, &burst.imports, &mut imported).await;
        imports_in_flight_committed += usize::from(in_flight_committed == Some(true));
        let verified = verify(&server, &mut users, &burst.per_user, &imported).await;
        unanswered_committed += verified.unanswered_committed;
        cycles += 1;
        eprintln!(
            "cycle {cycle}: killed after {} answered changes (planned {kill_at}) with {} in \
             flight; {} committed but unanswered; {} imports answered, one in flight: {}; a \
             migration run cut short: {requeued}, jobs stranded: {}; {} IDs, {} migration runs \
             succeeded so far",
            burst
                .per_user
                .iter()
                .map(|b| b.answered.len())
                .sum::<usize>(),
            burst.in_flight_at_kill,
            verified.unanswered_committed,
            burst.imports.answered.len(),
            match in_flight_committed {
                None => "none",
                Some(true) => "committed whole",
                Some(false) => "absent whole",
            },
            verified.stranded,
            verified.ids,
            verified.migrations_succeeded,
        );
        migrations_succeeded = verified.migrations_succeeded;
        if started.elapsed() > TIME_BUDGET {
            break;
        }
    }
    let status = server.kill();
    eprintln!(
        "{cycles} cycles in {:.1?}: {changes_answered} ID changes and {imports_answered} \
         imports answered, none lost; {in_flight_at_kills} requests in flight at the kills, \
         {unanswered_committed} changes committed but never answered; {imports_in_flight} \
         imports in flight at a kill, {imports_in_flight_committed} of them committed whole, \
         the rest absent whole; {runs_cut_short} kills during a migration run (last exit: \
         {status})",
        started.elapsed()
    );
    assert!(
        imports_answered > 0,
        "no import was answered, so none was tested against a kill"
    );
    assert!(
        migrations_succeeded > 0,
        "no migration run ever finished, so none could have been cut short by a kill"
    );
    assert!(
        in_flight_at_kills > 0,
        "no change request was in flight at any kill: the test did not test a crash mid-request"
    );
}

/// A migration run cut short by SIGKILL goes back to pending and runs again
/// once it is due: killing the server must not strand a user's job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_run_cut_short_by_kill_9_runs_again_after_restart() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let data = tmp.path().join("data");
    let mut server = ServeProcess::start(&data, tmp.path().join("serve-0.log")).await;
    let emails: Vec<String> = (0..JOB_USERS)
        .map(|i| format!("job{i}@contoso.com"))
        .collect();
    let client = server.client();
    for email in &emails {
        let path = format!("/api/users/{}/enable", segment(email));
        call(&client, Method::POST, &path, Payload::None)
            .await
            .unwrap_or_else(|e| panic!("enabling {email}: {e}"));
    }

    for attempt in 1..=CUT_ATTEMPTS {
        // Every user gets a pending job (a reset queues one, or finds the
        // one waiting), then the clock moves past every job's start.
        let client = server.client();
        for email in &emails {
            let path = format!("/api/users/{}/reset-id", segment(email));
            call(
                &client,
                Method::POST,
                &path,
                Payload::Json(json!({"no_email": true})),
            )
            .await
            .unwrap_or_else(|e| panic!("resetting {email}: {e}"));
        }
        let jobs = call(&client, Method::GET, "/api/migrations", Payload::None)
            .await
            .expect("listing migration jobs");
        let waiting: HashSet<i64> = jobs
            .as_array()
            .expect("a list of migration jobs")
            .iter()
            .filter(|j| j["state"] == "pending")
            .map(|j| j["id"].as_i64().expect("a job ID"))
            .collect();
        let advance = tokio::spawn(async move {
            let body = Payload::Json(json!({"by": "30days"}));
            let _ = call(&client, Method::POST, "/api/clock/advance", body).await;
        });
        // Kill once the run is part way: some of the waiting jobs done or
        // running, some still waiting.
        let client = server.client();
        for _ in 0..JOB_POLLS {
            let Ok(jobs) = call(&client, Method::GET, "/api/migrations", Payload::None).await
            else {
                break;
            };
            let states: Vec<&Value> = jobs
                .as_array()
                .expect("a list of migration jobs")
                .iter()
                .filter(|j| waiting.contains(&j["id"].as_i64().expect("a job ID")))
                .map(|j| &j["state"])
                .collect();
            if states.iter().any(|s| *s != "pending") && states.iter().any(|s| *s == "pending") {
                break;
            }
        }
        server.kill();
        let _ = advance.await;

        let log = tmp.path().join(format!("serve-{attempt}.log"));
        server = ServeProcess::start(&data, log).await;
        if !server
            .log_text()
            .contains("migration runs were interrupted")
        {
            continue;
        }
        // A run was cut short. Once the clock is past every due time, every
        // job that was waiting for that run has run, the cut one included.
        let client = server.client();
        call(
            &client,
            Method::POST,
            "/api/clock/advance",
            Payload::Json(json!({"by": "30days"})),
        )
        .await
        .expect("advancing the clock past every due time");
        let jobs = call(&client, Method::GET, "/api/migrations", Payload::None)
            .await
            .expect("listing migration jobs");
        let stranded: Vec<&Value> = jobs
            .as_array()
            .expect("a list of migration jobs")
            .iter()
            .filter(|j| waiting.contains(&j["id"].as_i64().expect("a job ID")))
            .filter(|j| j["state"] != "succeeded")
            .collect();
        assert!(
            stranded.is_empty(),
            "a kill cut a migration run short, and after the restart and 30 more days these \
             jobs still have not run: {stranded:?}"
        );
        return;
    }
    panic!("no kill in {CUT_ATTEMPTS} attempts landed inside a migration run");
}

// ------------------------------------------------------------------ what the clients saw

/// How a change revokes the old ID, by its revocation cause.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Reset,
    Set(String),
}

impl Op {
    fn cause(&self) -> &'static str {
        match self {
            Op::Reset => "reset-id",
            Op::Set(_) => "set-id",
        }
    }
}

/// One answered change: the server said `old` became `new`.
#[derive(Clone, Debug)]
struct Step {
    op: Op,
    old: String,
    new: String,
}

/// What one user's task saw in one burst.
#[derive(Debug, Default)]
struct UserBurst {
    answered: Vec<Step>,
    /// The change whose request got no answer (the kill came first): it may
    /// or may not have committed.
    unanswered: Option<Op>,
}

/// Everything known of a user: every ID it ever held, in order.
#[derive(Debug)]
struct UserLog {
    email: String,
    id: i64,
    /// IDs in the order the user held them; all but the last are revoked.
    chain: Vec<String>,
    /// `causes[i]` is the cause `chain[i]` was revoked with.
    causes: Vec<&'static str>,
}

async fn enable_users(server: &ServeProcess) -> Vec<UserLog> {
    let client = server.client();
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let email = format!("user{i}@contoso.com");
        let out = call(
            &client,
            Method::POST,
            &format!("/api/users/{}/enable", segment(&email)),
            Payload::None,
        )
        .await
        .unwrap_or_else(|e| panic!("enabling {email}: {e}"));
        assert_eq!(out["created"], true, "{email} is new: {out}");
        users.push(UserLog {
            id: out["user"]["id"].as_i64().expect("a user ID"),
            chain: vec![text(&out["user"]["conference_id"])],
            causes: Vec::new(),
            email,
        });
    }
    users
}

// ------------------------------------------------------------------ the burst

/// What a burst leaves for the checks.
struct Burst {
    per_user: Vec<UserBurst>,
    in_flight_at_kill: usize,
    imports: ImportBurst,
}

/// What the tasks of one burst share.
struct Shared {
    answered: AtomicUsize,
    kill_at: usize,
    kill_now: Notify,
    /// Set just before the kill: a failed request after it is expected.
    killed: AtomicBool,
    in_flight: AtomicUsize,
    next_set_id: Arc<AtomicU64>,
}

/// Changes IDs from one task per user and kills the server once `kill_at`
/// changes were answered.
async fn burst_and_kill(
    server: &mut ServeProcess,
    users: &[UserLog],
    kill_at: usize,
    next_set_id: Arc<AtomicU64>,
    cycle: usize,
) -> Burst {
    let shared = Arc::new(Shared {
        answered: AtomicUsize::new(0),
        kill_at,
        kill_now: Notify::new(),
        killed: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        next_set_id,
    });
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let current = user.chain.last().expect("a user has an ID").clone();
            tokio::spawn(change_ids(
                server.client(),
                i,
                user.email.clone(),
                current,
                shared.clone(),
            ))
        })
        .collect();
    let migrations = tokio::spawn(run_migrations(server.client(), shared.clone()));
    let imports = tokio::spawn(run_imports(server.client(), shared.clone(), cycle));

    let planned = tokio::time::timeout(KILL_WAIT, shared.kill_now.notified())
        .await
        .is_ok();
    shared.killed.store(true, Ordering::SeqCst);
    let in_flight_at_kill = shared.in_flight.load(Ordering::SeqCst);
    let status = server.kill();
    assert!(
        !status.success(),
        "the server was killed, yet it exited with {status}"
    );

    let mut per_user = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await.expect("a change task does not panic") {
            Ok(burst) => per_user.push(burst),
            Err(e) => panic!("{e} (server log: {})", server.log_text()),
        }
    }
    if let Err(e) = migrations.await.expect("the migration task does not panic") {
        panic!("{e} (server log: {})", server.log_text());
    }
    let imports = match imports.await.expect("the import task does not panic") {
        Ok(imports) => imports,
        Err(e) => panic!("{e} (server log: {})", server.log_text()),
    };
    assert!(
        planned,
        "only {} changes were answered in {KILL_WAIT:?}; the kill was planned after {kill_at}",
        shared.answered.load(Ordering::SeqCst)
    );
    Burst {
        per_user,
        in_flight_at_kill,
        imports,
    }
}

/// One user's changes, back to back, until the server dies. Odd users set a
/// hand-picked ID every third change; the rest are resets.
async fn change_ids(
    client: Client,
    user: usize,
    email: String,
    mut current: String,
    shared: Arc<Shared>,
) -> Result<UserBurst, String> {
    let mut burst = UserBurst::default();
    let base = format!("/api/users/{}", segment(&email));
    for n in 0..MAX_CHANGES_PER_TASK {
        let op = if user % 2 == 1 && n % 3 == 2 {
            let k = shared.next_set_id.fetch_add(1, Ordering::SeqCst);
            Op::Set(format!("{:07}", SET_ID_BASE + k))
        } else {
            Op::Reset
        };
        let (method, path, body) = match &op {
            Op::Reset => (
                Method::POST,
                format!("{base}/reset-id"),
                json!({"no_email": false}),
            ),
            Op::Set(id) => (
                Method::PUT,
                format!("{base}/conference-id"),
                json!({"conference_id": id, "no_email": false}),
            ),
        };
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = call(&client, method, &path, Payload::Json(body)).await;
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let out = match result {
            Ok(out) => out,
            // A random reset took the ID first: refused, nothing changed.
            Err(ClientError::Api { status: 409, .. }) if matches!(op, Op::Set(_)) => continue,
            Err(ClientError::Transport(_)) if shared.killed.load(Ordering::SeqCst) => {
                burst.unanswered = Some(op);
                return Ok(burst);
            }
            Err(e) => return Err(format!("{email}: {op:?} failed before the kill: {e}")),
        };
        let new = text(&out["new_conference_id"]);
        if out["changed"] != true || out["old_conference_id"] != current.as_str() {
            return Err(format!(
                "{email}: {op:?} of {current} answered {out} (expected a change from {current})"
            ));
        }
        if let Op::Set(wanted) = &op
            && &new != wanted
        {
            return Err(format!("{email}: set {wanted} answered {new}"));
        }
        let old = std::mem::replace(&mut current, new.clone());
        burst.answered.push(Step {
            op,
            old: old.clone(),
            new,
        });
        if shared.answered.fetch_add(1, Ordering::SeqCst) + 1 == shared.kill_at {
            shared.kill_now.notify_one();
        }
        // Linearizable revocation: once a change is answered, the old ID is rejected.
        match call(
            &client,
            Method::GET,
            &format!("/api/directory/{old}"),
            Payload::None,
        )
        .await
        {
            Ok(found) if found["status"] == "revoked" => {}
            Ok(found) => return Err(format!("{email}: {old} after its change answered: {found}")),
            Err(ClientError::Transport(_)) if shared.killed.load(Ordering::SeqCst) => {
                return Ok(burst);
            }
            Err(e) => return Err(format!("{email}: looking up {old}: {e}")),
        }
    }
    Ok(burst)
}

/// Advances the manual clock two hours at a time until the server dies, so
/// due migration jobs run (two commits each) while IDs change.
async fn run_migrations(client: Client, shared: Arc<Shared>) -> Result<(), String> {
    loop {
        let advanced = call(
            &client,
            Method::POST,
            "/api/clock/advance",
            Payload::Json(json!({"by": "2h"})),
        )
        .await;
        match advanced {
            Ok(_) => {}
            Err(ClientError::Transport(_)) if shared.killed.load(Ordering::SeqCst) => return Ok(()),
            Err(e) => return Err(format!("advancing the clock before the kill: {e}")),
        }
        // Pacing only, so the migration runs don't crowd out the changes.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One import's users: the new ones and the existing one it enables.
#[derive(Clone, Debug)]
struct ImportRequest {
    new: Vec<String>,
    existing: String,
}

/// An answered import: each user's email and the conference ID it was given.
#[derive(Clone, Debug)]
struct Imported {
    email: String,
    conference_id: String,
}

/// What the import task saw in one burst.
#[derive(Debug, Default)]
struct ImportBurst {
    answered: Vec<Vec<Imported>>,
    /// The import whose request got no answer: all of it or none committed.
    unanswered: Option<ImportRequest>,
}

/// Imports users by CSV back to back until the server dies: each import
/// adds one user without enabling them first, then imports `IMPORT_NEW` new
/// users and that one (which the import enables: a change to an existing
/// user), in one request.
async fn run_imports(
    client: Client,
    shared: Arc<Shared>,
    cycle: usize,
) -> Result<ImportBurst, String> {
    let mut burst = ImportBurst::default();
    for n in 0..MAX_IMPORTS_PER_BURST {
        let request = ImportRequest {
            new: (0..IMPORT_NEW)
                .map(|k| format!("imp-{cycle}-{n}-{k}@contoso.com"))
                .collect(),
            existing: format!("pre-{cycle}-{n}@contoso.com"),
        };
        let add = call(
            &client,
            Method::POST,
            "/api/users",
            Payload::Json(json!({"email": request.existing, "display_name": "Added First"})),
        )
        .await;
        match add {
            Ok(_) => {}
            Err(ClientError::Transport(_)) if shared.killed.load(Ordering::SeqCst) => {
                return Ok(burst);
            }
            Err(e) => return Err(format!("adding {} before the kill: {e}", request.existing)),
        }
        let mut csv = String::from("email,display_name\n");
        for email in request.new.iter().chain([&request.existing]) {
            csv.push_str(&format!("{email},Imported User\n"));
        }
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = call(
            &client,
            Method::POST,
            "/api/users/import",
            Payload::Csv(csv),
        )
        .await;
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let report = match result {
            Ok(report) => report,
            Err(ClientError::Transport(_)) if shared.killed.load(Ordering::SeqCst) => {
                burst.unanswered = Some(request);
                return Ok(burst);
            }
            Err(e) => return Err(format!("import {n} failed before the kill: {e}")),
        };
        if report["created"] != IMPORT_NEW || report["enabled"] != IMPORT_NEW + 1 {
            return Err(format!(
                "import {n} answered {report}: expected {IMPORT_NEW} created and {} enabled",
                IMPORT_NEW + 1
            ));
        }
        let lines = report["users"]
            .as_array()
            .ok_or("an import report lists its users")?;
        let mut users = Vec::with_capacity(lines.len());
        for line in lines {
            users.push(Imported {
                email: text(&line["email"]),
                conference_id: text(&line["conference_id"]),
            });
        }
        burst.answered.push(users);
    }
    Ok(burst)
}

// ------------------------------------------------------------------ the checks

/// Checks the restarted server against the import task's record: every
/// answered import is there whole; the one in flight at the kill is there
/// whole or not at all (`Some(true)` / `Some(false)`; `None` when none was
/// in flight). Adds what committed to `imported`.
async fn verify_imports(
    server: &ServeProcess,
    burst: &ImportBurst,
    imported: &mut Vec<Imported>,
) -> Option<bool> {
    let client = server.client();
    let users = call(&client, Method::GET, "/api/users", Payload::None)
        .await
        .unwrap_or_else(|e| panic!("listing users after the restart: {e}"));
    let by_email: HashMap<String, &Value> = users
        .as_array()
        .expect("a list of users")
        .iter()
        .map(|u| (text(&u["email"]), u))
        .collect();
    let lookup = |id: String| {
        let client = &client;
        async move {
            call(
                client,
                Method::GET,
                &format!("/api/directory/{id}"),
                Payload::None,
            )
            .await
            .unwrap_or_else(|e| panic!("looking up {id} after the restart: {e}"))
        }
    };

    // Earlier cycles' imports are all still there, with the same IDs.
    for user in imported.iter() {
        let shown = by_email.get(&user.email).map(|u| &u["conference_id"]);
        assert_eq!(
            shown,
            Some(&Value::from(user.conference_id.as_str())),
            "{}: an import committed in an earlier cycle changed",
            user.email
        );
    }
    for users in &burst.answered {
        for user in users {
            let shown = by_email.get(&user.email).unwrap_or_else(|| {
                panic!("{}: the answered import is lost: no such user", user.email)
            });
            assert_eq!(
                shown["enabled"], true,
                "{}: answered import: {shown}",
                user.email
            );
            assert_eq!(
                shown["conference_id"],
                user.conference_id.as_str(),
                "{}: the answered import's ID",
                user.email
            );
            let found = lookup(user.conference_id.clone()).await;
            assert_eq!(found["status"], "valid", "{}: {found}", user.email);
            assert_eq!(
                found["organizer_id"], shown["id"],
                "{}: {found}",
                user.email
            );
            imported.push(user.clone());
        }
    }

    let request = burst.unanswered.as_ref()?;
    let present: Vec<&String> = request
        .new
        .iter()
        .filter(|email| by_email.contains_key(*email))
        .collect();
    let existing = by_email.get(&request.existing).unwrap_or_else(|| {
        panic!(
            "{}: added (answered) before its import, now gone",
            request.existing
        )
    });
    if present.is_empty() {
        assert_eq!(
            existing["enabled"], false,
            "the import in flight left none of its new users, yet enabled {}",
            request.existing
        );
        assert!(existing["conference_id"].is_null(), "{existing}");
        return Some(false);
    }
    assert_eq!(
        present.len(),
        request.new.len(),
        "the import in flight committed half: {present:?} of {:?}",
        request.new
    );
    for email in request.new.iter().chain([&request.existing]) {
        let shown = by_email[email];
        assert_eq!(
            shown["enabled"], true,
            "{email}: the committed import: {shown}"
        );
        let id = text(&shown["conference_id"]);
        let found = lookup(id.clone()).await;
        assert_eq!(found["status"], "valid", "{email}: {found}");
        imported.push(Imported {
            email: email.clone(),
            conference_id: id,
        });
    }
    Some(true)
}

struct Verified {
    unanswered_committed: usize,
    /// Pending jobs with no next run time.
    stranded: usize,
    ids: usize,
    migrations_succeeded: usize,
}

/// Checks the restarted server against the clients' record and extends each
/// user's chain with what the store shows was committed.
async fn verify(
    server: &ServeProcess,
    users: &mut [UserLog],
    bursts: &[UserBurst],
    imported: &[Imported],
) -> Verified {
    let client = server.client();
    let get = |path: String| {
        let client = &client;
        async move {
            call(client, Method::GET, &path, Payload::None)
                .await
                .unwrap_or_else(|e| panic!("GET {path} after the restart: {e}"))
        }
    };

    let revocations = get("/api/revocations".into()).await;
    let revocations = revocations.as_array().expect("a list of revocations");
    let mut revoked_by_user: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in revocations {
        revoked_by_user
            .entry(text(&r["user"]))
            .or_default()
            .push((text(&r["conference_id"]), text(&r["cause"])));
    }
    assert!(
        revoked_by_user
            .keys()
            .all(|email| users.iter().any(|u| &u.email == email)),
        "revocations of unknown users: {revocations:?}"
    );

    let mut unanswered_committed = 0;
    let mut current_ids = Vec::with_capacity(users.len());
    for (user, burst) in users.iter_mut().zip(bursts) {
        let email = user.email.clone();
        let revoked = revoked_by_user.remove(&email).unwrap_or_default();
        let shown = get(format!("/api/users/{}", segment(&email))).await;
        let current = text(&shown["conference_id"]);

        // (a) every answered change is there: its old ID revoked with the
        // change's cause, its new ID known to the directory.
        for step in &burst.answered {
            assert!(
                revoked
                    .iter()
                    .any(|(id, cause)| id == &step.old && cause == step.op.cause()),
                "{email}: the answered change {step:?} is lost: {} is not revoked with cause {} \
                 (revocations: {revoked:?})",
                step.old,
                step.op.cause()
            );
            let found = get(format!("/api/directory/{}", step.new)).await;
            assert!(
                found["status"] == "valid" || found["status"] == "revoked",
                "{email}: the answered change {step:?} is lost: the directory says {found}"
            );
        }

        // (b) the store holds exactly the answered changes, plus at most the
        // one unanswered change that was in flight, in order.
        let mut expected = user.chain.clone();
        let mut expected_causes = user.causes.clone();
        for step in &burst.answered {
            expected.push(step.new.clone());
            expected_causes.push(step.op.cause());
        }
        let mut found: Vec<String> = revoked.iter().map(|(id, _)| id.clone()).collect();
        found.push(current.clone());
        let found_causes: Vec<&'static str> = revoked
            .iter()
            .map(|(_, cause)| static_cause(cause))
            .collect();
        let one_more = found.len() == expected.len() + 1 && found[..expected.len()] == expected;
        if found == expected {
            assert_eq!(found_causes, expected_causes, "{email}: revocation causes");
        } else if one_more && let Some(op) = &burst.unanswered {
            expected_causes.push(op.cause());
            assert_eq!(
                found_causes, expected_causes,
                "{email}: the unanswered {op:?} committed under another cause"
            );
            if let Op::Set(wanted) = op {
                assert_eq!(&current, wanted, "{email}: the unanswered set committed");
            }
            unanswered_committed += 1;
        } else {
            panic!(
                "{email}: the store's history is not the answered changes (plus at most the one \
                 in flight, {:?}):\n  answered: {expected:?}\n  stored:   {found:?}",
                burst.unanswered
            );
        }
        assert_eq!(shown["enabled"], true, "{email} is still enabled");
        user.chain = found;
        user.causes = found_causes;
        current_ids.push((user.id, current));
    }

    // (c) the directory rebuilt at start equals the store.
    let check = get("/api/directory/check".into()).await;
    assert_eq!(
        check["differences"],
        json!([]),
        "the directory differs from the store after the restart"
    );

    // (d) no ID was issued twice, and each answers as the store says.
    let revoked_ids: Vec<String> = revocations
        .iter()
        .map(|r| text(&r["conference_id"]))
        .collect();
    let all: Vec<&String> = revoked_ids
        .iter()
        .chain(current_ids.iter().map(|(_, id)| id))
        .chain(imported.iter().map(|u| &u.conference_id))
        .collect();
    let distinct: HashSet<&&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an ID was issued twice: {all:?}");
    let ever: Vec<&String> = users
        .iter()
        .flat_map(|u| &u.chain)
        .chain(imported.iter().map(|u| &u.conference_id))
        .collect();
    assert_eq!(
        ever.len(),
        all.len(),
        "the users' histories and the store disagree on how many IDs were issued"
    );
    assert_eq!(
        check["entries"].as_u64(),
        Some(all.len() as u64),
        "the directory has an entry per issued ID"
    );
    for r in revocations {
        let id = text(&r["conference_id"]);
        let found = get(format!("/api/directory/{id}")).await;
        assert_eq!(found["status"], "revoked", "{id} was revoked: {found}");
        assert_eq!(found["cause"], r["cause"], "{id}: the revocation cause");
    }
    for (user, id) in &current_ids {
        let found = get(format!("/api/directory/{id}")).await;
        assert_eq!(found["status"], "valid", "{id} is a current ID: {found}");
        assert_eq!(found["organizer_id"], *user, "{id} leads to its user");
    }

    // (e) a migration run cut short by the kill was put back, not left hanging.
    let jobs = get("/api/migrations".into()).await;
    let jobs = jobs.as_array().expect("a list of migration jobs");
    let stuck: Vec<&Value> = jobs
        .iter()
        .filter(|j| j["state"] == "in-progress")
        .collect();
    assert!(
        stuck.is_empty(),
        "migration jobs stuck in progress: {stuck:?}"
    );

    // A job put back after a kill must have a time to run again.
    let stranded = jobs
        .iter()
        .filter(|j| j["state"] == "pending" && j["next_run_at"].is_null())
        .count();
    assert_eq!(stranded, 0, "pending jobs with no next run: {jobs:?}");

    Verified {
        unanswered_committed,
        stranded,
        ids: all.len(),
        migrations_succeeded: jobs.iter().filter(|j| j["state"] == "succeeded").count(),
    }
}

fn static_cause(cause: &str) -> &'static str {
    match cause {
        "reset-id" => "reset-id",
        "set-id" => "set-id",
        "disable" => "disable",
        "replace-provider" => "replace-provider",
        other => panic!("unknown revocation cause {other}"),
    }
}

// ------------------------------------------------------------------ the process

/// A `dialin serve` child process; killed with SIGKILL when dropped, so a
/// failing test leaves no server behind.
struct ServeProcess {
    child: Child,
    url: String,
    token: String,
    log: PathBuf,
}

impl ServeProcess {
    /// Starts `dialin serve` on `data` and waits until it has published its
    /// address in server.json.
    async fn start(data: &Path, log: PathBuf) -> ServeProcess {
        let dir = DataDir::existing(data);
        // A killed server leaves its server.json behind.
        dir.remove_server_info();
        let stderr = File::create(&log).expect("a log file for the server");
        let child = Command::new(env!("CARGO_BIN_EXE_dialin"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--admin", "127.0.0.1:0", "--clock", "manual"])
            .args(["--sip", "127.0.0.1:0", "--rtp-ports", "0-0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning dialin serve");
        let mut process = ServeProcess {
            child,
            url: String::new(),
            token: String::new(),
            log,
        };
        for _ in 0..MAX_POLLS {
            if let Some(status) = process.child.try_wait().expect("polling the server") {
                panic!(
                    "dialin serve exited with {status} before serving: {}",
                    process.log_text()
                );
            }
            if let Some(info) = dir.read_server_info()
                && info.pid == process.child.id()
            {
                process.url = info.admin_url;
                process.token = dir
                    .read_token()
                    .expect("reading the admin token")
                    .expect("the server created the admin token");
                return process;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        panic!(
            "dialin serve wrote no server.json in {MAX_POLLS} looks: {}",
            process.log_text()
        );
    }

    fn client(&self) -> Client {
        Client::remote(&self.url, self.token.clone()).expect("server.json has an http:// URL")
    }

    /// SIGKILL, then reap the process (which releases the data folder's lock).
    fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("killing the server");
        self.child.wait().expect("reaping the killed server")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ helpers

async fn call(
    client: &Client,
    method: Method,
    path: &str,
    payload: Payload,
) -> Result<Value, ClientError> {
    match tokio::time::timeout(REQUEST_DEADLINE, client.call(method, path, payload)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Transport(format!(
            "no answer within {REQUEST_DEADLINE:?}"
        ))),
    }
}

/// A JSON string field, which must be there.
fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
        .to_string()
}

/// xorshift64*: reproducible choices from a printed seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
