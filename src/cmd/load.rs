//! `dialin load`: many concurrent callers through the whole flow (INVITE,
//! answer, the conference ID by DTMF, the bridge's decision, hang-up)
//! against an embedded bridge or a running one (`--target`).
//!
//! The decisions are [`crate::load`]'s (schedule, judge, report); this file
//! waits on sockets and timers:
//! - setup: the embedded bridge (temporary data folder, loopback, ephemeral
//!   ports) or the target's admin API; users enabled, some IDs revoked by
//!   resets, unknown IDs checked against the directory;
//! - one task per call ([`place_call`], its own SIP and RTP sockets) on the
//!   multi-threaded runtime, started on the [`Schedule`] and capped by a
//!   semaphore (`--concurrency`);
//! - a reset task (`--reset-every`) that records each reset's
//!   `[started, returned]` window for the judge;
//! - the bridge's decision per call from its call record (`GET
//!   /api/calls/{call_id}`, in-process for the embedded bridge), or from the
//!   prompts the caller heard when there is no admin access;
//! - a progress bar fed from atomic counters a few times a second.
//!
//! Every admin operation goes through the admin API: in-process
//! ([`Client::local`]) for the embedded bridge, over HTTP for `--target`, so
//! both modes share one code path.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use hyper::Method;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::ids::ConferenceId;
use crate::caller::{
    CallReport, DtmfPlan, DtmfStart, HangUp, Outcome, PlannedDigit, PromptMatchers,
};
use crate::cli::LoadArgs;
use crate::client::{Client, Payload, segment};
use crate::load::judge::{Decision, IdKind, Judge, ResetWindow};
use crate::load::options::{DtmfChoice, LoadOptions};
use crate::load::schedule::Schedule;
use crate::load::stats::{CallSummary, Cause, LoadReport};
use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::prompts::{PromptCatalog, PromptId};
use crate::net::caller::{CallConfig, CallError, HANG_UP_GRACE, place_call, resolve, route_to};
use crate::net::pool::{CallerPool, PoolCall, stopped};
use crate::net::server::{ServeOptions, Server};
use crate::net::sip::SipOptions;

/// The first key comes this long after the answer, at most.
const FIRST_KEY_AFTER: Duration = Duration::from_millis(20);
/// When the decision is not listened for: hang up this long after `#`
/// started (the key's own length plus the bridge's handling of it)...
const MUTED_HOLD: Duration = Duration::from_millis(400);
/// ...or, for a `#` sent by INFO, this long after its answer (the bridge
/// looked the ID up before answering).
const MUTED_INFO_HOLD: Duration = Duration::from_millis(20);
/// When it is listened for, hang up when the decision prompt is heard, or
/// this long after `#` if none was.
const HEARD_LIMIT: Duration = Duration::from_secs(5);
/// How long to look for the bridge's record of an ended call.
const RECORD_WAIT: Duration = Duration::from_secs(3);
/// Invalid IDs prepared of each kind (unknown, revoked).
const INVALID_POOL: usize = 16;
/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// The actor the embedded bridge logs the run's admin operations under.
const ACTOR: &str = "load";

/// `dialin load` from the command line: runs, prints the report, writes
/// `--json`, and fails on unexpected failures or violations.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let json_path = args.json.clone();
    let options = options_of(args)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        // Ctrl-C stops starting calls and hangs up those in progress; the
        // report still comes.
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let report = run_load(options, stop_rx).await?;
    println!("{report}");
    if let Some(path) = json_path {
        let text =
            serde_json::to_string_pretty(&report.to_json()).context("formatting the report")?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if !report.passed() {
        bail!(
            "{} calls failed unexpectedly and {} revocation violations happened",
            report.failed,
            report.violations
        );
    }
    Ok(())
}

fn options_of(args: LoadArgs) -> anyhow::Result<LoadOptions> {
    let ids = match &args.ids {
        Some(path) => read_ids(path)?,
        None => Vec::new(),
    };
    let options = LoadOptions {
        target: args.target,
        admin: args.admin,
        token: args.token,
        ids,
        number: args.number,
        rate: args.rate,
        calls: args.calls,
        duration: args.duration,
        concurrency: args.concurrency,
        dtmf: DtmfChoice::parse(&args.dtmf)?,
        dtmf_duration: args.dtmf_duration,
        dtmf_gap: args.dtmf_gap,
        workers: args.workers,
        invalid_ratio: args.invalid_ratio,
        reset_every: args.reset_every,
        users: args.users,
        mute_prompts: args.mute_prompts,
        caller_audio: args.caller_audio.map(crate::cli::OnOff::as_bool),
        seed: args.seed,
        socket_per_call: args.socket_per_call,
        check_every: args.check_every,
        call_timeout: args.call_timeout,
        progress: !args.no_progress,
    };
    options.validate()?;
    Ok(options)
}

/// Known-valid IDs, one a line (blank lines and `#` comments skipped).
fn read_ids(path: &std::path::Path) -> anyhow::Result<Vec<ConferenceId>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --ids {}", path.display()))?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = line.parse::<ConferenceId>().map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: {line:?} is not a conference ID ({e}): write one ID of digits per line",
                path.display(),
                n + 1
            )
        })?;
        ids.push(id);
    }
    if ids.is_empty() {
        bail!(
            "--ids {} holds no conference ID: write one per line",
            path.display()
        );
    }
    Ok(ids)
}

/// Runs one load and returns its report; `stop` turning true ends it early
/// (calls in progress are hung up). The library entry point: `dialin load`
/// and the tests call it.
pub async fn run_load(
    options: LoadOptions,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<LoadReport> {
    options.validate()?;
    let mut bridge = match &options.target {
        Some(_) => None,
        None => Some(Embedded::start(&options).await?),
    };
    let result = match &bridge {
        Some(b) => {
            let target = format!("sip:{}@{}", options.number, b.sip);
            drive(&options, target, Some(b.client()), stop).await
        }
        None => {
            let target = target_uri(options.target.as_deref().unwrap_or_default(), &options);
            let client = match (&options.admin, &options.token) {
                (Some(url), Some(token)) => Some(Arc::new(
                    Client::remote(url, token.clone()).context("--admin")?,
                )),
                _ => None,
            };
            if let Some(client) = &client {
                warn_if_guarded(client).await;
            }
            drive(&options, target, client, stop).await
        }
    };
    if let Some(b) = bridge.take() {
        b.stop().await;
    }
    result
}

/// A running bridge's guessing guard blocks a generator that enters wrong
/// IDs (`--invalid-ratio`, revoked IDs) from one address: every later call
/// then fails with 403. Say so up front.
async fn warn_if_guarded(client: &Client) {
    let Ok(guard) = client.get("/api/guard").await else {
        return;
    };
    if guard["enabled"].as_bool() == Some(true) {
        tracing::warn!(
            failures = guard["config"]["failures"].as_u64(),
            window_s = guard["config"]["window_s"].as_u64(),
            "the target's guessing protection is on: wrong or revoked IDs from this one address will get it blocked (403 on every INVITE); start the bridge with `dialin serve --guard off` for load runs"
        );
    }
}

/// `sip:HOST:PORT` gets the number to dial; a URI with a user part is kept.
fn target_uri(target: &str, options: &LoadOptions) -> String {
    let rest = target
        .strip_prefix("sip:")
        .unwrap_or(target)
        .split(';')
        .next()
        .unwrap_or_default();
    if rest.contains('@') {
        target.to_string()
    } else {
        let host = target.strip_prefix("sip:").unwrap_or(target);
        format!("sip:{}@{host}", options.number)
    }
}

/// The in-process bridge of a run without `--target`.
struct Embedded {
    sip: std::net::SocketAddr,
    client: Arc<Client>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    data: PathBuf,
}

impl Embedded {
    async fn start(options: &LoadOptions) -> anyhow::Result<Embedded> {
        let data = temp_folder()?;
        match Self::start_in(options, data.clone()).await {
            Ok(e) => Ok(e),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&data);
                Err(e)
            }
        }
    }

    async fn start_in(options: &LoadOptions, data: PathBuf) -> anyhow::Result<Embedded> {
        let mut serve = ServeOptions::new(data.clone());
        serve.admin = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let prompts = PromptCatalog::embedded().context("loading the shipped prompts")?;
        let mut sip = SipOptions::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::new(prompts),
        );
        // Ephemeral RTP ports, and room for every call the run may hold.
        sip.rtp_ports = 0..=0;
        sip.max_calls = options.concurrency + 16;
        sip.mute_prompts = options.mute_prompts;
        // Every call comes from 127.0.0.1 and `--invalid-ratio` enters wrong
        // IDs on purpose: the guessing guard would block the generator.
        sip.guard = None;
        // All of it from one address, a connection per call over TCP.
        sip.calls_per_source = 0;
        sip.tcp_per_source = 0;
        serve.sip = Some(sip);
        let server = Server::bind(serve)
            .await
            .context("starting the embedded bridge")?;
        let Some(sip) = server.sip_addr() else {
            bail!("the embedded bridge has no SIP address");
        };
        let router = crate::net::http::router(
            server.service().clone(),
            server.token().to_string(),
            ACTOR.into(),
            server.calls().clone(),
            server.bridge(),
        );
        let client = Arc::new(Client::local(router, server.token().to_string()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Ok(Embedded {
            sip,
            client,
            stop: Some(stop),
            task,
            data,
        })
    }

    fn client(&self) -> Arc<Client> {
        self.client.clone()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(15), &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %format!("{e:#}"), "the embedded bridge stopped with an error")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the embedded bridge panicked"),
            Err(_) => {
                tracing::warn!("the embedded bridge did not stop within 15s");
                self.task.abort();
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.data) {
            tracing::warn!(folder = %self.data.display(), error = %e, "could not remove the load run's data folder");
        }
    }
}

fn run_nonce() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos.rotate_left(17) ^ u64::from(std::process::id()) ^ FOLDER.fetch_add(1, Ordering::Relaxed)
}

static FOLDER: AtomicU64 = AtomicU64::new(0);

fn temp_folder() -> anyhow::Result<PathBuf> {
    crate::datadir::temp_folder("dialin-load").context("creating a temporary data folder")
}

/// The IDs callers enter: the users' current IDs (the reset task replaces
/// one after its reset returns) and the invalid pools.
struct Ids {
    /// (user email, current ID); empty emails for `--ids` without admin.
    users: RwLock<Vec<(String, ConferenceId)>>,
    unknown: Vec<ConferenceId>,
    revoked: Vec<ConferenceId>,
}

impl Ids {
    /// The ID for one call, read at the call's start.
    fn pick(&self, rng: &mut StdRng, invalid_ratio: f64) -> (ConferenceId, IdKind) {
        if invalid_ratio > 0.0 && rng.random_bool(invalid_ratio) {
            let revoked = !self.revoked.is_empty() && rng.random_bool(0.5);
            let (pool, kind) = if revoked || self.unknown.is_empty() {
                (&self.revoked, IdKind::Revoked)
            } else {
                (&self.unknown, IdKind::Unknown)
            };
            if let Some(id) = pool.get(rng.random_range(0..pool.len().max(1))) {
                return (*id, kind);
            }
        }
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let (_, id) = users[rng.random_range(0..users.len())];
        (id, IdKind::Valid)
    }
}

/// The run's admin side: enable users, reset IDs, look up, read records.
struct Admin {
    client: Arc<Client>,
}

impl Admin {
    async fn call(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let payload = if body.is_null() {
            Payload::None
        } else {
            Payload::Json(body)
        };
        self.client
            .call(method.clone(), path, payload)
            .await
            .with_context(|| format!("{method} {path}"))
    }

    async fn enable(&self, email: &str) -> anyhow::Result<ConferenceId> {
        let answer = self
            .call(
                Method::POST,
                &format!("/api/users/{}/enable", segment(email)),
                json!({"display_name": email.split('@').next().unwrap_or("load"), "no_email": true}),
            )
            .await?;
        id_field(&answer["user"]["conference_id"])
            .with_context(|| format!("the conference ID of {email} in the enable answer"))
    }

    /// Resets `email`'s ID: (old, new).
    async fn reset(&self, email: &str) -> anyhow::Result<(ConferenceId, ConferenceId)> {
        let answer = self
            .call(
                Method::POST,
                &format!("/api/users/{}/reset-id", segment(email)),
                json!({"no_email": true}),
            )
            .await?;
        let old = id_field(&answer["old_conference_id"]).context("the old ID of the reset")?;
        let new = id_field(&answer["new_conference_id"]).context("the new ID of the reset")?;
        Ok((old, new))
    }

    async fn is_unknown(&self, id: ConferenceId) -> anyhow::Result<bool> {
        let answer = self
            .call(Method::GET, &format!("/api/directory/{id}"), Value::Null)
            .await?;
        Ok(answer["status"] == "unknown")
    }

    /// The bridge's decision on the call's first entry, from its record;
    /// `Err` when the record says the entry was not looked up, `Ok(None)`
    /// when no record came within [`RECORD_WAIT`].
    async fn decision(&self, call_id: &str) -> Result<Option<Decision>, Cause> {
        let path = format!("/api/calls/{}", segment(call_id));
        let deadline = Instant::now() + RECORD_WAIT;
        // The record is written as the bridge's side of the call ends,
        // which may be a moment after the caller's: look again briefly.
        for attempt in 0..60u32 {
            match self.client.get(&path).await {
                Ok(record) => {
                    let result = record["attempts"][0]["result"].as_str().unwrap_or("none");
                    return match result {
                        "accepted" => Ok(Some(Decision::Accepted)),
                        "unknown" | "revoked" => Ok(Some(Decision::Rejected)),
                        other => {
                            let attempt = &record["attempts"][0];
                            tracing::warn!(call_id, %attempt, "the bridge did not look the entry up");
                            // `malformed (wrong length: 4 digits)` says keys were lost.
                            Err(Cause::NotLookedUp(match attempt["malformed"].as_str() {
                                Some(why) => format!("{other} ({why})"),
                                None => other.to_string(),
                            }))
                        }
                    };
                }
                Err(crate::client::ClientError::Api { status: 404, .. }) => {}
                Err(e) => return Err(Cause::Transport(format!("reading the call record: {e}"))),
            }
            if Instant::now() >= deadline {
                break;
            }
            let pause =
                Duration::from_millis(5 * u64::from(attempt + 1)).min(Duration::from_millis(100));
            tokio::time::sleep(pause.min(deadline - Instant::now())).await;
        }
        Ok(None)
    }
}

fn id_field(v: &Value) -> anyhow::Result<ConferenceId> {
    let text = v
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("expected a conference ID, got {v}"))?;
    text.parse::<ConferenceId>()
        .map_err(|e| anyhow::anyhow!("{text:?} is not a conference ID: {e}"))
}

/// A random 7-digit ID.
fn random_id(rng: &mut StdRng) -> ConferenceId {
    ConferenceId::from_parts(rng.random_range(0..10_000_000), 7)
        .expect("a value below 10^7 fits 7 digits")
}

/// Enables users, revokes a few IDs by resets, and finds unknown IDs.
async fn setup(
    options: &LoadOptions,
    admin: Option<&Admin>,
    rng: &mut StdRng,
    notes: &mut Vec<String>,
) -> anyhow::Result<Ids> {
    let Some(admin) = admin else {
        // `--ids` without admin access: unknown IDs are random ones nobody
        // can check; revoked ones can't be made.
        let unknown: Vec<_> = (0..INVALID_POOL)
            .map(|_| random_id(rng))
            .filter(|id| !options.ids.contains(id))
            .collect();
        if options.invalid_ratio > 0.0 {
            notes.push(
                "no admin access: invalid calls use random IDs assumed never issued; no revoked IDs"
                    .into(),
            );
        }
        return Ok(Ids {
            users: RwLock::new(options.ids.iter().map(|id| (String::new(), *id)).collect()),
            unknown,
            revoked: Vec::new(),
        });
    };
    // Unique emails per run, so a second run against the same bridge does
    // not meet the first one's users.
    let run_id = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut users = Vec::with_capacity(options.users);
    for n in 0..options.users {
        let email = format!("load{run_id}-{n}@contoso.com");
        let id = admin.enable(&email).await?;
        users.push((email, id));
    }
    let mut revoked = Vec::new();
    if options.invalid_ratio > 0.0 {
        for slot in users.iter_mut().take(INVALID_POOL) {
            let (old, new) = admin.reset(&slot.0).await?;
            revoked.push(old);
            slot.1 = new;
        }
    }
    let mut unknown = Vec::new();
    for _ in 0..INVALID_POOL * 4 {
        if unknown.len() == INVALID_POOL {
            break;
        }
        let id = random_id(rng);
        if !unknown.contains(&id) && admin.is_unknown(id).await? {
            unknown.push(id);
        }
    }
    notes.push(format!(
        "setup: {} users enabled, {} IDs revoked by resets, {} unknown IDs checked against the directory",
        users.len(),
        revoked.len(),
        unknown.len()
    ));
    Ok(Ids {
        users: RwLock::new(users),
        unknown,
        revoked,
    })
}

/// Live counts for the progress bar.
#[derive(Default)]
struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// Everything a call task needs, shared.
struct Shared {
    target: String,
    /// The shared-socket callers; `None` with --socket-per-call.
    pool: Option<CallerPool>,
    remote: std::net::SocketAddr,
    local_ip: std::net::IpAddr,
    options: LoadOptions,
    ids: Ids,
    admin: Option<Admin>,
    prompts: Arc<PromptMatchers>,
    t0: Instant,
    counters: Counters,
    summaries: Mutex<Vec<CallSummary>>,
    resets: Mutex<Vec<ResetWindow>>,
    reset_errors: AtomicU64,
    /// Differs between runs (the wall clock's nanoseconds and the pid).
    nonce: u64,
    stop: watch::Receiver<bool>,
}

async fn drive(
    options: &LoadOptions,
    target: String,
    client: Option<Arc<Client>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<LoadReport> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let admin = client.map(|client| Admin { client });
    let mut notes = vec![format!(
        "target {target}{}",
        if options.target.is_none() {
            " (embedded bridge)"
        } else {
            ""
        }
    )];
    let ids = setup(options, admin.as_ref(), &mut rng, &mut notes).await?;
    let prompts = Arc::new(PromptMatchers::embedded().context("loading the prompt catalog")?);
    // Resolved once: per call it would cost a lookup and a routing socket.
    let remote = resolve(&target)
        .await
        .with_context(|| format!("resolving {target}"))?;
    let local_ip = route_to(remote);
    let pool = if options.socket_per_call {
        None
    } else {
        let workers = options.worker_count();
        Some(
            CallerPool::start(remote, local_ip, workers, prompts.clone(), stop.clone())
                .await
                .context("starting the callers")?,
        )
    };
    let schedule = Schedule::new(options.rate, options.calls_bound(), options.duration);
    let total = schedule.total().unwrap_or(u64::MAX);
    let shared = Arc::new(Shared {
        target,
        pool,
        remote,
        local_ip,
        options: options.clone(),
        ids,
        admin,
        prompts,
        t0: Instant::now(),
        counters: Counters::default(),
        summaries: Mutex::new(Vec::with_capacity(total.min(1 << 20) as usize)),
        resets: Mutex::new(Vec::new()),
        reset_errors: AtomicU64::new(0),
        nonce: run_nonce(),
        stop: stop.clone(),
    });
    let progress = Progress::start(&shared, total);
    let resets = options
        .reset_every
        .map(|every| tokio::spawn(run_resets(shared.clone(), every, rng.next_u64())));

    let permits = Arc::new(Semaphore::new(options.concurrency));
    let (batch, collector) = match &shared.pool {
        Some(_) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let in_flight = Arc::new(InFlight::default());
            let task = tokio::spawn(collect(shared.clone(), in_flight.clone(), rx));
            (Some((tx, in_flight)), Some(task))
        }
        None => (None, None),
    };
    let mut behind = Duration::ZERO;
    let mut last_start = Duration::ZERO;
    let mut n = 0u64;
    while let Some(at) = schedule.start_of(n) {
        if *stop.borrow() {
            break;
        }
        let due = shared.t0 + at;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            () = stopped(&mut stop) => break,
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.context("the call slots closed")?,
            () = stopped(&mut stop) => break,
        };
        behind = behind.max(Instant::now().saturating_duration_since(due));
        last_start = shared.t0.elapsed();
        let seed = rng.next_u64();
        shared.counters.started.fetch_add(1, Ordering::Relaxed);
        match (&shared.pool, &batch) {
            // The pool's calls need no task each: their results come on one
            // queue, which `collect` reads.
            (Some(pool), Some((ended, in_flight))) => {
                let placing = prepare(&shared, n, seed);
                let call = placing.pool_call(&shared);
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(n, (placing, Instant::now(), permit));
                if let Err(e) = pool.submit(call, n, ended) {
                    let entry = in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&n);
                    if let Some((placing, start, permit)) = entry
                        && let Concluded::Done(summary) = conclude(&shared, placing, start, Err(e))
                    {
                        record(&shared, summary, permit);
                    }
                }
            }
            _ => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let summary = one_call(&shared, n, seed).await;
                    record(&shared, summary, permit);
                });
            }
        }
        n += 1;
    }
    // Every slot back means every call ended.
    let drain = options.call_timeout + HANG_UP_GRACE + RECORD_WAIT + Duration::from_secs(5);
    let slots = u32::try_from(options.concurrency).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(drain, permits.acquire_many(slots)).await;
    // Every call has ended (or is left out): the collector is done.
    drop(batch);
    if let Some(task) = collector {
        task.abort();
        let _ = task.await;
    }
    let elapsed = shared.t0.elapsed();
    if let Some(task) = resets {
        // Every call has ended: a reset cut short now affects none of them.
        task.abort();
        let _ = task.await;
    }
    let mut judge = Judge::new();
    for window in shared
        .resets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        judge.add_reset(*window);
    }
    let reset_errors = shared.reset_errors.load(Ordering::Relaxed);
    if reset_errors > 0 {
        notes.push(format!("{reset_errors} resets failed (see the log)"));
    }
    progress.finish();
    if drained.is_err() {
        notes.push(format!(
            "some calls had not ended {} after the last start; they are left out",
            humantime::format_duration(drain)
        ));
    }
    if behind > Duration::from_millis(100) {
        notes.push(format!(
            "the schedule fell behind by up to {:.0} ms (--concurrency {} full, or the machine busy): the rate was lower than asked",
            behind.as_secs_f64() * 1000.0,
            options.concurrency
        ));
    }
    if options.mute_prompts && options.target.is_none() {
        notes.push("prompts muted: no RTP jitter to measure".into());
    }
    let summaries =
        std::mem::take(&mut *shared.summaries.lock().unwrap_or_else(|p| p.into_inner()));
    let mut report = LoadReport::build(&judge, &summaries, elapsed);
    report.notes = notes;
    report.start_span = last_start;
    report.settings = json!({
        "target": shared.target,
        "embedded": options.target.is_none(),
        "rate": options.rate,
        "calls": options.calls_bound(),
        "duration_s": options.duration.map(|d| d.as_secs_f64()),
        "concurrency": options.concurrency,
        "dtmf": format!("{:?}", options.dtmf).to_lowercase(),
        "dtmf_duration_ms": options.dtmf_duration.as_secs_f64() * 1000.0,
        "dtmf_gap_ms": options.dtmf_gap.as_secs_f64() * 1000.0,
        "workers": options.worker_count(),
        "invalid_ratio": options.invalid_ratio,
        "reset_every_s": options.reset_every.map(|d| d.as_secs_f64()),
        "users": options.users,
        "mute_prompts": options.mute_prompts,
        "caller_audio": options.sends_silence(),
        "seed": options.seed,
    });
    Ok(report)
}

/// Resets a random user's ID every `every` until aborted, recording each
/// reset's window (taken just before the request and just after its
/// answer) before the callers see the new ID.
async fn run_resets(shared: Arc<Shared>, every: Duration, seed: u64) {
    let Some(admin) = &shared.admin else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.stop.clone();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopped(&mut stop) => return,
        }
        let (index, email) = {
            let users = shared.ids.users.read().unwrap_or_else(|p| p.into_inner());
            let index = rng.random_range(0..users.len());
            (index, users[index].0.clone())
        };
        let started = shared.t0.elapsed();
        match admin.reset(&email).await {
            Ok((old, new)) => {
                let returned = shared.t0.elapsed();
                shared
                    .resets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ResetWindow {
                        old,
                        new,
                        started,
                        returned,
                    });
                let mut users = shared.ids.users.write().unwrap_or_else(|p| p.into_inner());
                users[index].1 = new;
            }
            Err(e) => {
                tracing::warn!(user = %email, error = %format!("{e:#}"), "a reset failed");
                shared.reset_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One call about to be placed: what its end is judged against.
struct Placing {
    n: u64,
    summary: CallSummary,
    dtmf: DtmfPlan,
    hang_up: HangUp,
    /// Seeds the Call-ID: mixed with the run's nonce so that two runs with
    /// one --seed against one bridge never share a Call-ID.
    call_seed: u64,
}

/// Picks the call's ID and DTMF method, and how it ends.
fn prepare(shared: &Shared, n: u64, seed: u64) -> Placing {
    let mut rng = StdRng::seed_from_u64(seed);
    let options = &shared.options;
    let (id, kind) = shared.ids.pick(&mut rng, options.invalid_ratio);
    let method = options.dtmf.method(rng.random_range(0..3u8));
    let summary = CallSummary {
        id,
        kind,
        failure: None,
        hash_sent: None,
        decided_by: None,
        decision: None,
        answer: None,
        decision_latency: None,
        whole: None,
        jitter: None,
        retransmissions: 0,
    };
    let dtmf = plan(id, method, options.dtmf_duration, options.dtmf_gap);
    // Waiting to hear the decision is only worth it when the prompts play
    // (the embedded bridge unmuted) or when they are the only way to learn
    // it (a target without admin access); otherwise the bridge's record
    // tells, and the call ends right after the `#`.
    let listen = match &options.target {
        None => !options.mute_prompts,
        Some(_) => shared.admin.is_none(),
    };
    let limit = if listen {
        HEARD_LIMIT
    } else if method == DtmfMethod::Info {
        MUTED_INFO_HOLD
    } else {
        MUTED_HOLD
    };
    let hang_up = HangUp::AfterDecision {
        hold: Duration::ZERO,
        limit,
    };
    Placing {
        n,
        summary,
        dtmf,
        hang_up,
        call_seed: rng.next_u64() ^ shared.nonce,
    }
}

impl Placing {
    fn pool_call(&self, shared: &Shared) -> PoolCall {
        PoolCall {
            target: shared.target.clone(),
            dtmf: self.dtmf.clone(),
            hang_up: self.hang_up,
            timeout: shared.options.call_timeout,
            seed: self.call_seed,
            send_silence: shared.options.sends_silence(),
        }
    }
}

/// Places one call on its own sockets (or through the pool, one task per
/// call) and says what happened.
async fn one_call(shared: &Shared, n: u64, seed: u64) -> CallSummary {
    let placing = prepare(shared, n, seed);
    let start = Instant::now();
    let placed = match &shared.pool {
        Some(pool) => pool.call(placing.pool_call(shared)).await,
        None => {
            let options = &shared.options;
            let mut config = CallConfig::new(shared.target.clone());
            config.remote = Some(shared.remote);
            config.local_ip = Some(shared.local_ip);
            config.dtmf = placing.dtmf.clone();
            config.hang_up = placing.hang_up;
            config.timeout = options.call_timeout;
            config.prompts = Some(shared.prompts.clone());
            config.send_silence = options.sends_silence();
            config.seed = Some(placing.call_seed);
            let mut stop = shared.stop.clone();
            place_call(config, async move {
                stopped(&mut stop).await;
            })
            .await
        }
    };
    match conclude(shared, placing, start, placed) {
        Concluded::Done(summary) => summary,
        Concluded::Check(summary, call_id, heard) => {
            check_decision(shared, summary, &call_id, heard).await
        }
    }
}

/// What a call's end leaves to do.
enum Concluded {
    Done(CallSummary),
    /// The bridge's record of the call (this Call-ID) is to be read for
    /// its decision; what the caller heard stands in if none comes.
    Check(CallSummary, String, Option<Decision>),
}

/// Classifies a placed call's result; `start` is when it was placed.
fn conclude(
    shared: &Shared,
    placing: Placing,
    start: Instant,
    placed: Result<CallReport, CallError>,
) -> Concluded {
    let Placing { n, mut summary, .. } = placing;
    let ended = Instant::now();
    let offset = |d: Duration| start.saturating_duration_since(shared.t0) + d;
    let report = match placed {
        Ok(report) => report,
        Err(CallError::Timeout { report, .. }) => {
            fill_latencies(&mut summary, &report);
            summary.failure = Some(Cause::Timeout);
            return Concluded::Done(summary);
        }
        Err(e) => {
            let kind = error_kind(&e);
            tracing::debug!(error = %format!("{:#}", anyhow::Error::new(e)), "a call failed");
            summary.failure = Some(Cause::Transport(kind.into()));
            return Concluded::Done(summary);
        }
    };
    fill_latencies(&mut summary, &report);
    let failure = match &report.outcome {
        Outcome::Completed => None,
        Outcome::Rejected { status, .. } => Some(Cause::SipStatus(*status)),
        Outcome::NoAnswer => Some(Cause::NoAnswer),
        Outcome::Cancelled | Outcome::Failed { .. } | Outcome::InProgress => {
            Some(Cause::CallFailed)
        }
    };
    if failure.is_some() {
        summary.failure = failure;
        return Concluded::Done(summary);
    }
    summary.hash_sent = report
        .digits
        .iter()
        .rev()
        .find(|d| d.digit == Digit::Pound)
        .map(|d| offset(d.at));
    // Conservative for the judge: the decision was certainly made by the
    // time the call was over.
    summary.decided_by = Some(ended.saturating_duration_since(shared.t0));
    let checked = n.is_multiple_of(shared.options.check_interval());
    if shared.admin.is_some() && checked {
        let heard = heard_decision(&report);
        return Concluded::Check(summary, report.call_id, heard);
    }
    summary.decision = heard_decision(&report);
    Concluded::Done(summary)
}

/// Reads the bridge's decision on the call from its record.
async fn check_decision(
    shared: &Shared,
    mut summary: CallSummary,
    call_id: &str,
    heard: Option<Decision>,
) -> CallSummary {
    let Some(admin) = &shared.admin else {
        summary.decision = heard;
        return summary;
    };
    summary.decision = match admin.decision(call_id).await {
        Ok(Some(d)) => Some(d),
        Ok(None) => heard.or_else(|| {
            summary.failure = Some(Cause::NoDecision);
            None
        }),
        Err(cause) => {
            summary.failure = Some(cause);
            None
        }
    };
    summary
}

/// Records a call's summary and frees its slot.
fn record(shared: &Shared, summary: CallSummary, permit: OwnedSemaphorePermit) {
    if summary.failure.is_some() {
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    shared.counters.completed.fetch_add(1, Ordering::Relaxed);
    shared
        .summaries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(summary);
    drop(permit);
}

/// Calls handed to the pool, by tag, until their results come.
type InFlight = Mutex<HashMap<u64, (Placing, Instant, OwnedSemaphorePermit)>>;

/// Receives the pool's results and concludes each call; a call whose
/// record is to be read gets a task of its own for that.
async fn collect(
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
    mut ended: mpsc::UnboundedReceiver<(u64, Result<CallReport, CallError>)>,
) {
    while let Some((tag, placed)) = ended.recv().await {
        let Some((placing, start, permit)) = in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tag)
        else {
            continue;
        };
        match conclude(&shared, placing, start, placed) {
            Concluded::Done(summary) => record(&shared, summary, permit),
            Concluded::Check(summary, call_id, heard) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let summary = check_decision(&shared, summary, &call_id, heard).await;
                    record(&shared, summary, permit);
                });
            }
        }
    }
}

/// The digits of `id` and `#`, pressed right after the answer (barge-in:
/// the attendant takes keys during the welcome prompt): each held for
/// `duration`, `gap` apart, the first at most 20 ms after the answer.
fn plan(id: ConferenceId, method: DtmfMethod, duration: Duration, gap: Duration) -> DtmfPlan {
    let digits = id
        .to_string()
        .chars()
        .chain(['#'])
        .filter_map(Digit::from_char)
        .enumerate()
        .map(|(i, digit)| PlannedDigit {
            digit,
            delay: if i == 0 { Duration::ZERO } else { gap },
        })
        .collect();
    DtmfPlan {
        digits,
        method,
        start: DtmfStart::AfterAnswer(gap.min(FIRST_KEY_AFTER)),
        tone: duration,
    }
}

/// The decision the caller heard, if any.
fn heard_decision(report: &CallReport) -> Option<Decision> {
    report.prompts.iter().find_map(|p| match p.prompt {
        PromptId::Joining | PromptId::FirstPerson => Some(Decision::Accepted),
        PromptId::NotValid => Some(Decision::Rejected),
        _ => None,
    })
}

fn fill_latencies(summary: &mut CallSummary, report: &CallReport) {
    summary.answer = report.answer_time;
    summary.decision_latency = report.decision_time.or_else(|| info_answer_time(report));
    summary.whole = Some(report.duration);
    summary.retransmissions = report.retransmissions;
    summary.jitter = report.rtp_jitter;
}

/// With nothing heard (muted prompts), the bridge's answer to the `#` INFO
/// stands for its decision: it looks the ID up as it handles the INFO.
fn info_answer_time(report: &CallReport) -> Option<Duration> {
    use crate::caller::Direction;
    let last = report.digits.last()?;
    if last.method != DtmfMethod::Info {
        return None;
    }
    let sent = report
        .ladder
        .iter()
        .rposition(|l| l.direction == Direction::Sent && l.first_line.starts_with("INFO "))?;
    let answered = report.ladder[sent..]
        .iter()
        .find(|l| l.direction == Direction::Received && l.first_line.starts_with("SIP/2.0 200"))?;
    Some(answered.at.saturating_sub(report.ladder[sent].at))
}

fn error_kind(e: &CallError) -> &'static str {
    match e {
        CallError::BadTarget { .. } => "bad target",
        CallError::Resolve { .. } | CallError::NoAddress { .. } => "resolve",
        CallError::Connect { .. } => "connect",
        CallError::Bind { .. } => "bind",
        CallError::Send { .. } => "send",
        CallError::Receive { .. } => "receive",
        CallError::Prompts(_) => "prompts",
        CallError::Timeout { .. } => "timeout",
        CallError::RecordDir { .. } | CallError::RecordWrite { .. } => "record",
    }
}

/// The live progress bar, redrawn from the counters.
struct Progress {
    bar: ProgressBar,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    fn start(shared: &Arc<Shared>, total: u64) -> Progress {
        let target = if shared.options.progress {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:20}] {pos}/{len} started, {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        if bar.is_hidden() {
            return Progress { bar, task: None };
        }
        let shared = shared.clone();
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROGRESS_TICK);
            // Completed counts of the last second, for the current rate.
            let mut window = std::collections::VecDeque::with_capacity(5);
            loop {
                ticks.tick().await;
                let c = &shared.counters;
                let started = c.started.load(Ordering::Relaxed);
                let completed = c.completed.load(Ordering::Relaxed);
                let failed = c.failed.load(Ordering::Relaxed);
                if window.len() == 5 {
                    window.pop_front();
                }
                window.push_back((Instant::now(), completed));
                let cps = match (window.front(), window.back()) {
                    (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                        (c1 - c0) as f64 / (*t1 - *t0).as_secs_f64()
                    }
                    _ => 0.0,
                };
                shown.set_position(started);
                shown.set_message(format!(
                    "{completed} done, {failed} failed, {} active, {cps:.0}/s",
                    started.saturating_sub(completed)
                ));
            }
        });
        Progress {
            bar,
            task: Some(task),
        }
    }

    fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_user_part_dials_the_number() {
        let o = LoadOptions::new();
        assert_eq!(
            target_uri("sip:127.0.0.1:5060", &o),
            "sip:+14255550100@127.0.0.1:5060"
        );
        assert_eq!(
            target_uri("sip:+15550001@10.0.0.1:5070", &o),
            "sip:+15550001@10.0.0.1:5070"
        );
        assert_eq!(
            target_uri("sip:127.0.0.1;transport=tcp", &o),
            "sip:+14255550100@127.0.0.1;transport=tcp"
        );
    }

    #[test]
    fn the_plan_presses_the_id_then_pound_right_after_the_answer() {
        let ms = Duration::from_millis;
        let person = plan(
            "0012345".parse().unwrap(),
            DtmfMethod::Info,
            ms(100),
            ms(60),
        );
        assert_eq!(person.text(), "0012345#");
        assert_eq!(person.digits[0].delay, Duration::ZERO);
        assert!(person.digits[1..].iter().all(|d| d.delay == ms(60)));
        assert_eq!(person.tone, ms(100));
        assert_eq!(person.method, DtmfMethod::Info);
        assert_eq!(person.start, DtmfStart::AfterAnswer(ms(20)));
        // Back to back: no pause anywhere, each INFO waits only for the
        // previous one's answer.
        let burst = plan("0012345".parse().unwrap(), DtmfMethod::Info, ms(0), ms(0));
        assert!(burst.digits.iter().all(|d| d.delay.is_zero()));
        assert_eq!(burst.start, DtmfStart::AfterAnswer(Duration::ZERO));
        assert_eq!(burst.tone, Duration::ZERO);
    }

    #[test]
    fn an_ids_file_is_read_line_by_line_and_a_bad_line_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ids.txt");
        std::fs::write(&good, "# valid IDs\n1234567\n\n 7654321 \n").unwrap();
        let ids = read_ids(&good).unwrap();
        assert_eq!(
            ids,
            ["1234567".parse().unwrap(), "7654321".parse().unwrap()]
        );
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "1234567\n12a4567\n").unwrap();
        let err = read_ids(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.txt:2") && err.contains("12a4567"),
            "{err}"
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(
            read_ids(&empty)
                .unwrap_err()
                .to_string()
                .contains("holds no conference ID")
        );
    }

    #[test]
    fn the_info_answer_times_the_decision_when_nothing_is_heard() {
        use crate::caller::{Direction, LadderEntry, SentDigit};
        let line = |ms: u64, direction, text: &str| LadderEntry {
            at: Duration::from_millis(ms),
            direction,
            first_line: text.into(),
        };
        let report = CallReport {
            call_id: "c".into(),
            target: "sip:x@h".into(),
            outcome: Outcome::Completed,
            final_status: None,
            codec: None,
            prompts: Vec::new(),
            digits: vec![SentDigit {
                digit: Digit::Pound,
                method: DtmfMethod::Info,
                at: Duration::from_millis(100),
                status: Some(200),
            }],
            hung_up_by: None,
            bye_reason: None,
            bye_reason_text: None,
            answer_time: None,
            decision_time: None,
            duration: Duration::from_millis(200),
            ladder: vec![
                line(50, Direction::Sent, "INFO sip:b@h SIP/2.0"),
                line(60, Direction::Received, "SIP/2.0 200 OK"),
                line(100, Direction::Sent, "INFO sip:b@h SIP/2.0"),
                line(103, Direction::Received, "SIP/2.0 200 OK"),
                line(130, Direction::Sent, "BYE sip:b@h SIP/2.0"),
                line(131, Direction::Received, "SIP/2.0 200 OK"),
            ],
            rtp_sent: 0,
            rtp_received: 0,
            retransmissions: 0,
            rtp_jitter: None,
            path: None,
            notes: Vec::new(),
            recording: None,
        };
        assert_eq!(info_answer_time(&report), Some(Duration::from_millis(3)));
    }
}
