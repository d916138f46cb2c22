//! Runs a [`Scenario`] on the real pieces: by default its own bridge,
//! in-process, on loopback (temporary data folder, ephemeral SIP and RTP
//! ports, a manual clock), so scenarios share nothing and several can run at
//! once; or, with [`RunOptions::remote`], a bridge that already runs.
//!
//! Either way the runner talks to the bridge the same way: every admin
//! action, value read and check goes through the admin API ([`Client`]:
//! in-process for the embedded bridge, HTTP with the bearer token for a
//! remote one), and every call through the project's caller over SIP. On a
//! shared bridge the fixture is isolated: users get a per-run email
//! (`alice+r1f2e3d4c5@contoso.com`), the bridge's dial-in numbers are only
//! added to, and the tenant settings are put back afterwards.
//!
//! Steps run in file order: each step's action, then its expectations. The
//! first failing step ends the scenario with what was expected, what came
//! instead, and the SIP ladders of that step's calls. A scenario that can't
//! run on the bridge it was given (it needs a fresh bridge, or a clock it can
//! move) is skipped with the reason. Every call and wait is bounded
//! ([`RunOptions`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hyper::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Scenario;
use super::model::{
    Action, AdminAction, AdminSpec, CallOutcome, CallSpec, ClockNeed, EmailExpect, Expect,
    Invitation, LookupResult, ProviderSpec, Step, Template, TenantSettings,
};
use crate::admin::ids::{ConferenceId, EmailAddress, PhoneNumber};
use crate::admin::model::{
    DialInNumber, Email, InvitationState, Meeting, MeetingId, MigrationJob, Provider, Tenant, User,
};
use crate::admin::service::default_tenant;
use crate::caller::{CallReport, DEFAULT_GAP, Direction, DtmfPlan, DtmfStart, Outcome, Party};
use crate::client::{Client, ClientError, Payload, segment};
use crate::media::prompts::{PromptCatalog, PromptId};
use crate::net::caller::{CallConfig, CallError, RecordTo, file_name_part, place_call};
use crate::net::rtp::BridgeMonitor;
use crate::net::server::{ServeOptions, Server};
use crate::net::sip::SipOptions;
use crate::time::{Clock, ManualClock, SystemClock, Timestamp};

/// The actor name the embedded bridge logs the runner's admin actions under.
const ACTOR: &str = "scenario";

/// How often a remote bridge is asked again (joins, a call's record).
const POLL: Duration = Duration::from_millis(20);

/// The note of a scenario skipped because the bridge's clock can't move.
pub const CLOCK_NOTE: &str =
    "needs a controllable clock: start the bridge with `dialin serve --clock manual`";

/// A bridge that already runs, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBridge {
    /// Where its SIP listens (UDP and TCP).
    pub sip: SocketAddr,
    /// Its admin API, `http://HOST:PORT`.
    pub admin: String,
    pub token: String,
}

/// Bounds for one scenario run, and where it runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The most one call may take, from INVITE to the end.
    pub call_timeout: Duration,
    /// The most the bridge may take to start or stop.
    pub bridge_timeout: Duration,
    /// How long to wait for the bridge's record of an ended call.
    pub record_timeout: Duration,
    /// Write what each call heard to
    /// `DIR/<file stem>/<step>[-<n>].wav` ([`recording_path`]).
    pub record: Option<PathBuf>,
    /// Run on this bridge instead of one of the scenario's own.
    pub remote: Option<RemoteBridge>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            call_timeout: Duration::from_secs(60),
            bridge_timeout: Duration::from_secs(15),
            record_timeout: Duration::from_secs(3),
            record: None,
            remote: None,
        }
    }
}

/// How one scenario went.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub file: PathBuf,
    pub title: String,
    pub duration: Duration,
    /// Steps whose action ran (the failing one included).
    pub steps_run: usize,
    pub failure: Option<Failure>,
    /// Why the scenario did not run on this bridge (not a failure).
    pub skipped: Option<String>,
    /// What the run left out and why (advance steps on a real clock).
    pub notes: Vec<String>,
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.skipped.is_none()
    }

    pub fn is_skipped(&self) -> bool {
        self.failure.is_none() && self.skipped.is_some()
    }
}

/// The first step that did not see what it expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The step's name (empty for the fixture or the bridge itself).
    pub step: String,
    pub expected: String,
    pub actual: String,
    /// The SIP ladders of the step's calls involved.
    pub calls: Vec<CallLadder>,
}

/// One call's SIP messages, as the caller saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLadder {
    pub call_id: String,
    /// `  0.012s  --> INVITE sip:…`
    pub lines: Vec<String>,
}

impl CallLadder {
    fn of(report: &CallReport) -> CallLadder {
        let lines = report
            .ladder
            .iter()
            .map(|l| {
                let arrow = match l.direction {
                    Direction::Sent => "-->",
                    Direction::Received => "<--",
                };
                let line = l
                    .first_line
                    .trim_end_matches(" SIP/2.0")
                    .trim_start_matches("SIP/2.0 ");
                format!("{:>8.3}s  {arrow} {line}", l.at.as_secs_f64())
            })
            .collect();
        CallLadder {
            call_id: report.call_id.clone(),
            lines,
        }
    }
}

fn fail(step: &str, expected: impl Into<String>, actual: impl Into<String>) -> Failure {
    Failure {
        step: step.to_string(),
        expected: expected.into(),
        actual: actual.into(),
        calls: Vec::new(),
    }
}

/// Why a run ended early: a failure, or a scenario this bridge can't run.
#[derive(Debug)]
enum Halt {
    Fail(Failure),
    Skip(String),
}

impl From<Failure> for Halt {
    fn from(f: Failure) -> Halt {
        Halt::Fail(f)
    }
}

/// Runs `scenario` (on a bridge of its own, or on `options.remote`) and
/// says how it went.
pub async fn run_scenario(scenario: &Scenario, options: &RunOptions) -> ScenarioResult {
    let started = tokio::time::Instant::now();
    let mut steps_run = 0;
    let mut notes = Vec::new();
    let halt = match &options.remote {
        None => run_embedded(scenario, options, &mut steps_run, &mut notes).await,
        Some(remote) => run_remote(scenario, options, remote, &mut steps_run, &mut notes).await,
    }
    .err();
    let (failure, skipped) = match halt {
        None => (None, None),
        Some(Halt::Fail(f)) => (Some(f), None),
        Some(Halt::Skip(why)) => (None, Some(why)),
    };
    ScenarioResult {
        file: scenario.file.clone(),
        title: scenario.title.clone(),
        duration: started.elapsed(),
        steps_run,
        failure,
        skipped,
        notes,
    }
}

/// A fresh folder under the system's temporary folder.
fn temp_folder() -> Result<PathBuf, Failure> {
    crate::datadir::temp_folder("dialin-run")
        .map_err(|e| fail("", "a temporary data folder", e.to_string()))
}

async fn run_embedded(
    scenario: &Scenario,
    options: &RunOptions,
    steps_run: &mut usize,
    notes: &mut Vec<String>,
) -> Result<(), Halt> {
    let data = temp_folder()?;
    let result = run_in(scenario, options, steps_run, notes, data.clone()).await;
    if let Err(e) = std::fs::remove_dir_all(&data) {
        tracing::warn!(folder = %data.display(), error = %e, "could not remove a scenario's data folder");
    }
    result
}

async fn run_in(
    scenario: &Scenario,
    options: &RunOptions,
    steps_run: &mut usize,
    notes: &mut Vec<String>,
    data: PathBuf,
) -> Result<(), Halt> {
    let bridge_err = |what: &str, e: &dyn std::fmt::Display| fail("", what, e.to_string());
    let clock = ManualClock::new(SystemClock.now());
    let mut serve = ServeOptions::new(data);
    serve.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    serve.clock = Arc::new(clock);
    let prompts = PromptCatalog::embedded().map_err(|e| bridge_err("the shipped prompts", &e))?;
    let mut sip = SipOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(prompts));
    sip.rtp_ports = 0..=0;
    serve.sip = Some(sip);
    let server = Server::bind(serve)
        .await
        .map_err(|e| bridge_err("the bridge binds", &e))?;
    let (Some(sip), Some(monitor)) = (server.sip_addr(), server.bridge()) else {
        return Err(fail("", "a bridge with SIP", "SIP was not configured").into());
    };
    // The same API a remote bridge offers, called in-process: no sockets
    // between the runner and the admin service, one code path for both.
    let token = server.token().to_string();
    let router = crate::net::http::router(
        server.service().clone(),
        token.clone(),
        ACTOR.into(),
        server.calls().clone(),
        Some(monitor.clone()),
    );
    let bridge = Bridge {
        api: Arc::new(Client::local(router, token)),
        sip,
        monitor: Some(monitor),
        shared: false,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let result = Run::new(scenario, options, bridge)
        .execute(steps_run, notes)
        .await;
    let _ = stop.send(());
    let stopped = tokio::time::timeout(options.bridge_timeout, task).await;
    result?;
    match stopped {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(bridge_err("the bridge stops cleanly", &format!("{e:#}")).into()),
        Ok(Err(e)) => Err(bridge_err("the bridge stops cleanly", &e).into()),
        Err(_) => Err(fail(
            "",
            format!(
                "the bridge stops within {}",
                humantime::format_duration(options.bridge_timeout)
            ),
            "it did not",
        )
        .into()),
    }
}

async fn run_remote(
    scenario: &Scenario,
    options: &RunOptions,
    remote: &RemoteBridge,
    steps_run: &mut usize,
    notes: &mut Vec<String>,
) -> Result<(), Halt> {
    let api = Client::remote(&remote.admin, remote.token.clone())
        .map_err(|e| fail("", "an admin API URL", e.to_string()))?;
    let bridge = Bridge {
        api: Arc::new(api),
        sip: remote.sip,
        monitor: None,
        shared: true,
    };
    Run::new(scenario, options, bridge)
        .execute(steps_run, notes)
        .await
}

/// What the runner checks before any scenario runs on a remote bridge: the
/// admin API answers, the token is right, and the bridge has SIP. The error
/// says what is wrong and what would be right.
pub async fn check_remote(remote: &RemoteBridge) -> Result<Vec<String>, String> {
    let api = Client::remote(&remote.admin, remote.token.clone()).map_err(|e| e.to_string())?;
    match api.get("/api/bridge").await {
        Ok(_) => Ok(guard_note(&api).await.into_iter().collect()),
        Err(ClientError::Api {
            status: 401,
            message,
            ..
        }) => Err(format!(
            "the admin API at {} refused the token ({message}): give the server's token with --token or --token-file (it is in the data folder's admin-token file)",
            remote.admin
        )),
        Err(ClientError::Api { code, message, .. }) if code == "no-bridge" => Err(format!(
            "the server at {} has no SIP bridge: {message}",
            remote.admin
        )),
        Err(ClientError::Api { status: 404, .. }) => Err(format!(
            "the admin API at {} has no GET /api/bridge: it is an older dialin; run the same version as this runner",
            remote.admin
        )),
        Err(ClientError::Api { message, .. }) => Err(format!(
            "the admin API at {} answered GET /api/bridge with an error: {message}",
            remote.admin
        )),
        Err(ClientError::Transport(e)) => Err(format!(
            "{e}: give --admin the URL the bridge's admin API listens on (`dialin serve` prints it; it is in the data folder's server.json)"
        )),
    }
}

/// A warning when the bridge's guessing protection is on: the shipped
/// scenarios enter wrong IDs on purpose, all from this one address, so a
/// run or two trips it and every later call gets 403.
async fn guard_note(api: &Client) -> Option<String> {
    let guard = api.get("/api/guard").await.ok()?;
    if guard["enabled"].as_bool() != Some(true) {
        return None;
    }
    let failures = guard["config"]["failures"].as_u64().unwrap_or(0);
    let window = guard["config"]["window_s"].as_u64().unwrap_or(0);
    Some(format!(
        "the bridge's guessing protection is on ({failures} failed IDs from one source in {window} s block it): \
         scenarios that enter wrong IDs count toward it, and once this address is blocked every call gets 403; \
         for scenario runs start the bridge with `dialin serve --guard off` (or a higher --guard-failures)"
    ))
}

/// What the bridge's record of a call says, as far as the checks need it
/// (read from the API's JSON, the same for both kinds of bridge).
#[derive(Debug, Clone, Deserialize)]
struct Record {
    call_id: String,
    #[serde(default)]
    attempts: Vec<RecordAttempt>,
    joined: Option<RecordJoined>,
    reason: Option<RecordReason>,
}

#[derive(Debug, Clone, Deserialize)]
struct RecordAttempt {
    at: Timestamp,
    result: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RecordJoined {
    conference_id: ConferenceId,
}

#[derive(Debug, Clone, Deserialize)]
struct RecordReason {
    cause: u16,
}

/// What the runner saw of one call: the caller's report and the bridge's
/// record of it (when the bridge answered and wrote one).
#[derive(Debug, Clone)]
struct Observed {
    report: CallReport,
    record: Option<Record>,
}

type CallTask = JoinHandle<Result<Observed, Failure>>;

/// The bridge a run talks to.
#[derive(Clone)]
struct Bridge {
    api: Arc<Client>,
    sip: SocketAddr,
    /// The embedded bridge's calls, watched directly (joins wake the
    /// runner instead of being polled for).
    monitor: Option<BridgeMonitor>,
    /// A bridge others use too: isolate the fixture, restore the tenant.
    shared: bool,
}

/// What a shared bridge gets back after the scenario.
#[derive(Default)]
struct Restore {
    /// The tenant settings before the scenario changed them.
    tenant: Option<Value>,
    /// Dial-in numbers the scenario added.
    numbers: Vec<PhoneNumber>,
}

struct Run<'a> {
    scenario: &'a Scenario,
    options: &'a RunOptions,
    bridge: Bridge,
    /// The bridge's clock can be moved (`POST /api/clock/advance`).
    manual_clock: bool,
    /// Calls that had joined on the bridge when the scenario began.
    joined_base: u64,
    /// Put into the fixture's emails on a shared bridge (`+r1f2e3d4c5`).
    tag: Option<String>,
    restore: Restore,
    notes: Vec<String>,
    /// Fixture user name → email.
    users: HashMap<String, EmailAddress>,
    /// User name → the leader PIN last issued (the API lists it masked).
    pins: HashMap<String, String>,
    meetings: HashMap<String, MeetingId>,
    /// Capture name → field → value.
    captures: HashMap<String, HashMap<String, String>>,
    /// Step name → wall time just after its action returned.
    completed: HashMap<String, Timestamp>,
    /// Concurrent step name → its running calls.
    pending: HashMap<String, Vec<CallTask>>,
    /// Unique to this run; each call's seed counts up from it.
    seed_base: u64,
    seed: u64,
    /// Step name → calls recorded so far (names the next one's file).
    recorded: HashMap<String, usize>,
}

/// `${name.field}` values as they are now.
type Values = HashMap<(String, String), String>;

fn resolve(t: &Template, values: &Values, step: &str) -> Result<String, Failure> {
    t.resolve(|name, field| values.get(&(name.to_string(), field.to_string())).cloned())
        .map_err(|e| fail(step, format!("a value for '{t}'"), e.to_string()))
}

/// A tag unique to one scenario run: its fixture's emails carry it on a
/// shared bridge, so that a second run does not meet the first one's users.
fn run_tag() -> String {
    format!("r{:010x}", unique() & 0xff_ffff_ffff)
}

/// A number no other call of this function returns, in this process or
/// (with overwhelming likelihood) another one.
fn unique() -> u64 {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    // Time, process and counter mixed (FNV-1a): distinct across runs and
    // across processes started in the same nanosecond.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        nanos as u64,
        (nanos >> 64) as u64,
        u64::from(std::process::id()),
        n,
    ] {
        for byte in part.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// `alice@contoso.com` with `tag` → `alice+r…@contoso.com` (an address that
/// already has a `+` part gets `.r…` appended to it).
pub fn tagged_email(email: &str, tag: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) if local.contains('+') => format!("{local}.{tag}@{domain}"),
        Some((local, domain)) => format!("{local}+{tag}@{domain}"),
        None => email.to_string(),
    }
}

/// The four tenant settings a scenario runs with: its own, and the fresh
/// tenant's for the keys it leaves out.
fn tenant_body(t: &TenantSettings) -> Value {
    let fresh = default_tenant();
    json!({
        "conference_id_mode": t.conference_id_mode.unwrap_or(fresh.conference_id_mode),
        "send_emails_automatically": t.send_emails.unwrap_or(fresh.send_emails_automatically),
        "leader_pin_length": t.leader_pin_length.unwrap_or(fresh.leader_pin_length),
        "migrate_meetings_automatically": t.migrate_meetings.unwrap_or(fresh.migrate_meetings_automatically),
    })
}

/// Only the keys `t` sets (a `set-tenant` step changes just those).
fn tenant_patch(t: &TenantSettings) -> Value {
    let mut body = serde_json::Map::new();
    if let Some(v) = t.conference_id_mode {
        body.insert("conference_id_mode".into(), json!(v));
    }
    if let Some(v) = t.send_emails {
        body.insert("send_emails_automatically".into(), json!(v));
    }
    if let Some(v) = t.leader_pin_length {
        body.insert("leader_pin_length".into(), json!(v));
    }
    if let Some(v) = t.migrate_meetings {
        body.insert("migrate_meetings_automatically".into(), json!(v));
    }
    Value::Object(body)
}

fn provider_body(p: &ProviderSpec) -> Value {
    let provider = match p {
        ProviderSpec::Microsoft => Provider::Microsoft,
        ProviderSpec::ThirdParty(name) => Provider::ThirdParty {
            name: name.clone(),
            numbers: Vec::new(),
        },
    };
    serde_json::to_value(provider).unwrap_or(Value::Null)
}

/// A `+DURATION` the API reads as a time from the bridge's now.
fn from_now(d: Duration) -> String {
    format!("+{}ms", d.as_millis())
}

fn api_text(e: &ClientError) -> String {
    e.to_string()
}

impl<'a> Run<'a> {
    fn new(scenario: &'a Scenario, options: &'a RunOptions, bridge: Bridge) -> Run<'a> {
        let tag = bridge.shared.then(run_tag);
        Run {
            scenario,
            options,
            bridge,
            manual_clock: false,
            joined_base: 0,
            tag,
            restore: Restore::default(),
            notes: Vec::new(),
            users: HashMap::new(),
            pins: HashMap::new(),
            meetings: HashMap::new(),
            captures: HashMap::new(),
            completed: HashMap::new(),
            pending: HashMap::new(),
            seed_base: unique(),
            seed: 0,
            recorded: HashMap::new(),
        }
    }

    /// Prepare, fixture, steps; then whatever is left is cleaned up and the
    /// shared bridge's tenant put back, however the run ended.
    async fn execute(mut self, steps_run: &mut usize, notes: &mut Vec<String>) -> Result<(), Halt> {
        let mut result = self.prepare().await;
        if result.is_ok() {
            result = self.fixture().await;
        }
        if result.is_ok() {
            result = self.steps(steps_run).await.map_err(Halt::from);
        }
        // Calls still running end with the bridge (or are of no more use):
        // abort what is left.
        for (_, calls) in self.pending.drain() {
            for call in calls {
                call.abort();
            }
        }
        let restored = self.put_back().await;
        notes.append(&mut self.notes);
        result?;
        restored.map_err(Halt::from)
    }

    /// One API request; a refusal or an unreachable bridge is the error.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let payload = body.map_or(Payload::None, Payload::Json);
        self.bridge.api.call(method, path, payload).await
    }

    /// A GET whose answer is read as `T`.
    async fn read<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let value = self
            .request(Method::GET, path, None)
            .await
            .map_err(|e| api_text(&e))?;
        serde_json::from_value(value)
            .map_err(|e| format!("GET {path} answered something this runner can't read: {e}"))
    }

    fn email_of(&self, name: &str, step: &str) -> Result<EmailAddress, Failure> {
        self.users
            .get(name)
            .cloned()
            .ok_or_else(|| fail(step, format!("a user named '{name}'"), "none"))
    }

    /// What the bridge is like: its clock, its joins so far, and (on a
    /// shared bridge) whether the scenario's fixed IDs and numbers fit.
    async fn prepare(&mut self) -> Result<(), Halt> {
        const STEP: &str = "(bridge)";
        let clock: Value = self
            .read("/api/clock")
            .await
            .map_err(|e| fail(STEP, "the bridge's clock (GET /api/clock)", e))?;
        self.manual_clock = clock["manual"].as_bool().unwrap_or(false);
        let advances = self
            .scenario
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Advance(_)));
        if advances && !self.manual_clock && self.scenario.clock == ClockNeed::Required {
            return Err(Halt::Skip(CLOCK_NOTE.into()));
        }
        let counters: Value = self
            .read("/api/bridge")
            .await
            .map_err(|e| fail(STEP, "the bridge's counters (GET /api/bridge)", e))?;
        self.joined_base = counters["joined_total"].as_u64().unwrap_or(0);
        if self.bridge.shared {
            self.check_fixed_ids().await?;
        }
        Ok(())
    }

    /// A fixed conference ID (a fixture's, or a literal one an admin step
    /// sets) that the bridge already issued can never be issued again: the
    /// scenario needs a fresh bridge.
    async fn check_fixed_ids(&self) -> Result<(), Halt> {
        const STEP: &str = "(bridge)";
        let mut fixed: Vec<(String, String)> = Vec::new();
        for u in &self.scenario.users {
            if let Some(id) = &u.conference_id {
                fixed.push((id.get_ref().clone(), format!("user '{}'", u.name.get_ref())));
            }
        }
        for step in &self.scenario.steps {
            if let Action::Admin(admin) = &step.action
                && admin.expect_error.is_none()
                && let Some(t) = &admin.conference_id
                && t.references().next().is_none()
            {
                fixed.push((
                    t.as_str().to_string(),
                    format!("step '{}'", step.name.get_ref()),
                ));
            }
        }
        for (id, whose) in fixed {
            let path = format!("/api/directory/{}", segment(&id));
            let found: Value = self
                .read(&path)
                .await
                .map_err(|e| fail(STEP, format!("the directory's entry for {id}"), e))?;
            let status = found["status"].as_str().unwrap_or("unknown");
            if status != "unknown" {
                return Err(Halt::Skip(fresh_bridge_note(&id, &whose, status)));
            }
        }
        Ok(())
    }

    async fn fixture(&mut self) -> Result<(), Halt> {
        const STEP: &str = "(fixture)";
        let tenant: Tenant = self
            .read("/api/tenant")
            .await
            .map_err(|e| fail(STEP, "the tenant (GET /api/tenant)", e))?;
        self.numbers(&tenant).await?;
        if self.bridge.shared {
            self.restore.tenant = Some(json!({
                "conference_id_mode": tenant.conference_id_mode,
                "send_emails_automatically": tenant.send_emails_automatically,
                "leader_pin_length": tenant.leader_pin_length,
                "migrate_meetings_automatically": tenant.migrate_meetings_automatically,
            }));
        }
        self.request(
            Method::PATCH,
            "/api/tenant",
            Some(tenant_body(&self.scenario.tenant)),
        )
        .await
        .map_err(|e| fail(STEP, "the tenant settings apply", api_text(&e)))?;

        for user in &self.scenario.users {
            let name = user.name.get_ref().clone();
            let written = user.email.get_ref();
            let text = match &self.tag {
                Some(tag) => tagged_email(written, tag),
                None => written.clone(),
            };
            let email: EmailAddress = text
                .parse()
                .map_err(|e: String| fail(STEP, "an email address", e))?;
            let display = user.display_name.clone().unwrap_or_else(|| name.clone());
            let path = format!("/api/users/{}", segment(email.as_str()));
            if !user.enabled {
                let body = json!({"email": email, "display_name": display});
                self.request(Method::POST, "/api/users", Some(body))
                    .await
                    .map_err(|e| fail(STEP, format!("user '{name}' is set up"), api_text(&e)))?;
                self.users.insert(name, email);
                continue;
            }
            let mut body = json!({
                "display_name": display,
                "provider": provider_body(&user.provider),
                "no_email": true,
            });
            if let Some(id) = &user.conference_id {
                body["conference_id"] = json!(id.get_ref());
            }
            let answer = self
                .request(Method::POST, &format!("{path}/enable"), Some(body))
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(ClientError::Api { code, .. })
                    if self.bridge.shared
                        && matches!(
                            code.as_str(),
                            "conference-id-in-use" | "conference-id-revoked"
                        ) =>
                {
                    let id = user
                        .conference_id
                        .as_ref()
                        .map(|i| i.get_ref().clone())
                        .unwrap_or_default();
                    let status = if code == "conference-id-revoked" {
                        "revoked"
                    } else {
                        "valid"
                    };
                    return Err(Halt::Skip(fresh_bridge_note(
                        &id,
                        &format!("user '{name}'"),
                        status,
                    )));
                }
                Err(e) => {
                    return Err(fail(STEP, format!("user '{name}' is set up"), api_text(&e)).into());
                }
            };
            if let Some(pin) = answer["leader_pin"].as_str() {
                self.pins.insert(name.clone(), pin.to_string());
            }
            self.users.insert(name, email);
        }

        for meeting in &self.scenario.meetings {
            let organizer = self.email_of(meeting.organizer.get_ref(), STEP)?;
            let body = json!({
                "organizer": organizer,
                "subject": meeting.subject,
                "start": from_now(meeting.start.0),
            });
            let answer = self
                .request(Method::POST, "/api/meetings", Some(body))
                .await
                .map_err(|e| {
                    fail(
                        STEP,
                        format!("meeting '{}' is scheduled", meeting.name.get_ref()),
                        api_text(&e),
                    )
                })?;
            let id = answer["id"].as_i64().ok_or_else(|| {
                fail(
                    STEP,
                    format!("meeting '{}' is scheduled", meeting.name.get_ref()),
                    format!("the answer has no meeting id: {answer}"),
                )
            })?;
            self.meetings.insert(meeting.name.get_ref().clone(), id);
        }
        Ok(())
    }

    /// The scenario's dial-in numbers (the fresh tenant's when it names
    /// none). Its own bridge gets exactly these; a shared bridge keeps its
    /// numbers and gets the missing ones added (and removed afterwards). A
    /// number the shared bridge has with another kind or default flag is a
    /// reason to skip: changing it would change what other callers hear.
    async fn numbers(&mut self, tenant: &Tenant) -> Result<(), Halt> {
        const STEP: &str = "(fixture)";
        let mut wanted: Vec<DialInNumber> = Vec::new();
        for n in &self.scenario.numbers {
            let number: PhoneNumber = n.number.get_ref().parse().map_err(|e: String| {
                fail(
                    STEP,
                    "an E.164 number",
                    format!("{}: {e}", n.number.get_ref()),
                )
            })?;
            wanted.push(DialInNumber {
                number,
                kind: n.kind,
                default: n.default,
            });
        }
        if wanted.is_empty() {
            wanted = default_tenant().dial_in_numbers;
        }
        let mut remove = Vec::new();
        let mut add = Vec::new();
        for old in &tenant.dial_in_numbers {
            let same = wanted.iter().find(|w| w.number == old.number);
            match same {
                Some(w) if w == old => {}
                Some(w) if self.bridge.shared => {
                    return Err(Halt::Skip(format!(
                        "the bridge has {} as {}{}, the scenario needs it as {}{}: run it on a fresh bridge",
                        old.number,
                        old.kind,
                        if old.default { " (default)" } else { "" },
                        w.kind,
                        if w.default { " (default)" } else { "" },
                    )));
                }
                Some(w) => {
                    remove.push(old.number.clone());
                    add.push(w.clone());
                }
                None if self.bridge.shared => {}
                None => remove.push(old.number.clone()),
            }
        }
        for w in &wanted {
            if !tenant.dial_in_numbers.iter().any(|d| d.number == w.number) {
                add.push(w.clone());
            }
        }
        for number in remove {
            let path = format!("/api/tenant/numbers/{}", segment(number.as_str()));
            self.request(Method::DELETE, &path, None)
                .await
                .map_err(|e| fail(STEP, format!("{number} is removed"), api_text(&e)))?;
        }
        for w in add {
            let body = json!({"number": w.number, "kind": w.kind, "default": w.default});
            self.request(Method::POST, "/api/tenant/numbers", Some(body))
                .await
                .map_err(|e| fail(STEP, format!("{} is added", w.number), api_text(&e)))?;
            if self.bridge.shared {
                self.restore.numbers.push(w.number);
            }
        }
        Ok(())
    }

    /// A shared bridge gets its tenant settings back and loses the numbers
    /// the scenario added.
    async fn put_back(&mut self) -> Result<(), Failure> {
        const STEP: &str = "(restore)";
        let restore = std::mem::take(&mut self.restore);
        let mut problems = Vec::new();
        if let Some(tenant) = restore.tenant
            && let Err(e) = self
                .request(Method::PATCH, "/api/tenant", Some(tenant))
                .await
        {
            problems.push(format!("the tenant settings: {e}"));
        }
        for number in restore.numbers {
            let path = format!("/api/tenant/numbers/{}", segment(number.as_str()));
            if let Err(e) = self.request(Method::DELETE, &path, None).await {
                problems.push(format!("removing {number}: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(fail(
                STEP,
                "the bridge's tenant settings and numbers put back",
                problems.join("; "),
            ))
        }
    }

    /// The `${…}` values now: users (live), meetings (live), captures.
    async fn values(&self, step: &str) -> Result<Values, Failure> {
        let mut values = Values::new();
        let mut put = |name: &str, field: &str, value: String| {
            values.insert((name.to_string(), field.to_string()), value);
        };
        for (name, email) in &self.users {
            let user: User = self
                .read(&format!("/api/users/{}", segment(email.as_str())))
                .await
                .map_err(|e| fail(step, "the users and meetings to read", e))?;
            put(name, "email", user.email.to_string());
            put(name, "display_name", user.display_name.clone());
            if let Some(id) = user.conference_id {
                put(name, "conference_id", id.to_string());
            }
            if let Some(id) = user.previous_conference_id {
                put(name, "previous_conference_id", id.to_string());
            }
            if let Some(pin) = self.pins.get(name) {
                put(name, "leader_pin", pin.clone());
            }
        }
        for (name, id) in &self.meetings {
            let meeting: Meeting = self
                .read(&format!("/api/meetings/{id}"))
                .await
                .map_err(|e| fail(step, "the users and meetings to read", e))?;
            put(name, "conference_id", meeting.conference_id.to_string());
            put(name, "subject", meeting.subject.clone());
        }
        for (name, fields) in &self.captures {
            for (field, value) in fields {
                put(name, field, value.clone());
            }
        }
        Ok(values)
    }

    async fn steps(&mut self, steps_run: &mut usize) -> Result<(), Failure> {
        let scenario = self.scenario;
        for step in &scenario.steps {
            *steps_run += 1;
            self.step(step).await?;
        }
        // Concurrent calls nobody waited for: they must still meet their
        // expectations.
        let names: Vec<String> = self.pending.keys().cloned().collect();
        for name in names {
            self.finish_concurrent(&name, "(end of scenario)").await?;
        }
        Ok(())
    }

    /// Calls that joined on the bridge since the scenario began.
    async fn joined_since_start(&self) -> Result<u64, String> {
        let total = match &self.bridge.monitor {
            Some(monitor) => monitor.joined_total(),
            None => {
                let counters: Value = self.read("/api/bridge").await?;
                counters["joined_total"].as_u64().unwrap_or(0)
            }
        };
        Ok(total.saturating_sub(self.joined_base))
    }

    /// Waits until `n` calls have joined since the scenario began: woken by
    /// the embedded bridge, polling a remote one.
    async fn wait_joined(&self, n: u64) -> Result<(), String> {
        if let Some(monitor) = &self.bridge.monitor {
            monitor.joined_at_least(self.joined_base + n).await;
            return Ok(());
        }
        loop {
            if self.joined_since_start().await? >= n {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn step(&mut self, step: &Step) -> Result<(), Failure> {
        let name = step.name.get_ref().as_str();
        let values = self.values(name).await?;
        let mut observed = Vec::new();
        match &step.action {
            Action::Call(call) => match &step.concurrent {
                Some(n) => {
                    let mut tasks = Vec::new();
                    for _ in 0..*n.get_ref() {
                        let config = self.call_config(call, &values, name)?;
                        tasks.push(self.spawn_call(config, name));
                    }
                    self.pending.insert(name.to_string(), tasks);
                }
                None => {
                    let config = self.call_config(call, &values, name)?;
                    let obs = self.spawn_call(config, name).await.map_err(|e| {
                        fail(name, "the call to run", format!("it panicked: {e}"))
                    })??;
                    observed.push(obs);
                }
            },
            Action::Admin(admin) => self.admin_action(admin, &values, name).await?,
            Action::Advance(by) if !self.manual_clock => {
                // Only reached with `clock = "skip-advance"` (see prepare).
                self.notes.push(format!(
                    "step '{name}': advance {} skipped, and its expectations: the bridge's clock can't be moved",
                    humantime::format_duration(*by)
                ));
                self.completed
                    .insert(name.to_string(), SystemTime::now().into());
                return Ok(());
            }
            Action::Advance(by) => {
                let body = json!({"by": format!("{}ms", by.as_millis())});
                self.request(Method::POST, "/api/clock/advance", Some(body))
                    .await
                    .map_err(|e| {
                        fail(
                            name,
                            "the clock to move and due migrations to run",
                            api_text(&e),
                        )
                    })?;
            }
            Action::Wait(d) => tokio::time::sleep(*d).await,
            Action::WaitFor(target) => {
                self.finish_concurrent(target.get_ref(), name).await?;
            }
            Action::WaitJoined(n) => {
                let limit = self.options.call_timeout;
                match tokio::time::timeout(limit, self.wait_joined(u64::from(*n))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(fail(name, format!("{n} calls joined"), e));
                    }
                    Err(_) => {
                        let got = self
                            .joined_since_start()
                            .await
                            .map_or_else(|e| e, |j| j.to_string());
                        return Err(fail(
                            name,
                            format!("{n} calls joined within {}s", limit.as_secs()),
                            format!("{got} joined"),
                        ));
                    }
                }
            }
            Action::Capture(capture) => {
                let user = capture.user.get_ref();
                let fields = values
                    .iter()
                    .filter(|((n, _), _)| n == user)
                    .map(|((_, f), v)| (f.clone(), v.clone()))
                    .collect();
                self.captures.insert(capture.name.get_ref().clone(), fields);
            }
            Action::Check => {}
        }
        self.completed
            .insert(name.to_string(), SystemTime::now().into());
        let Some(expect) = &step.expect else {
            return Ok(());
        };
        // Values after the action: a reset changes `${alice.conference_id}`.
        let values = self.values(name).await?;
        if step.concurrent.is_none() {
            for obs in &observed {
                check_call(expect, obs, &values, name).map_err(|mut f| {
                    f.calls.push(CallLadder::of(&obs.report));
                    f
                })?;
            }
        }
        self.check_state(expect, &values, name).await
    }

    /// Waits for the calls of concurrent step `target` and checks its
    /// expectations (per call, counts, accepted-before).
    async fn finish_concurrent(&mut self, target: &str, at: &str) -> Result<(), Failure> {
        let Some(tasks) = self.pending.remove(target) else {
            return Ok(());
        };
        let mut observed = Vec::new();
        for task in tasks {
            let obs = task
                .await
                .map_err(|e| fail(target, "the call to run", format!("it panicked: {e}")))??;
            observed.push(obs);
        }
        let Some(expect) = self.scenario.step(target).and_then(|s| s.expect.as_ref()) else {
            return Ok(());
        };
        let label = format!("{target} (checked at '{at}')");
        let values = self.values(at).await?;
        for obs in &observed {
            check_call(expect, obs, &values, &label).map_err(|mut f| {
                f.calls.push(CallLadder::of(&obs.report));
                f
            })?;
        }
        let outcomes: Vec<&'static str> = observed.iter().map(actual_outcome).collect();
        for (key, want, name) in [
            ("joined", expect.joined, "joined"),
            ("rejected", expect.rejected, "rejected"),
            ("no_input", expect.no_input, "no-input"),
        ] {
            let Some(want) = want else { continue };
            let got = outcomes.iter().filter(|o| **o == name).count();
            if got != want as usize {
                let ladders = observed
                    .iter()
                    .filter(|o| actual_outcome(o) != name)
                    .take(3)
                    .map(|o| CallLadder::of(&o.report))
                    .collect();
                return Err(Failure {
                    calls: ladders,
                    ..fail(
                        &label,
                        format!("{key} = {want}"),
                        format!("{got} of {} calls ({})", observed.len(), tally(&outcomes)),
                    )
                });
            }
        }
        for before in [&expect.all_accepted_before, &expect.none_accepted_after]
            .into_iter()
            .flatten()
        {
            let step = before.get_ref();
            let Some(done) = self.completed.get(step).copied() else {
                return Err(fail(
                    &label,
                    format!("step '{step}' to have completed"),
                    "it has not run yet: wait_for the calls after it",
                ));
            };
            for obs in &observed {
                let Some(record) = &obs.record else { continue };
                for attempt in record.attempts.iter().filter(|a| a.result == "accepted") {
                    if attempt.at > done {
                        return Err(Failure {
                            calls: vec![CallLadder::of(&obs.report)],
                            ..fail(
                                &label,
                                format!(
                                    "every accepted attempt before '{step}' completed at {done}"
                                ),
                                format!(
                                    "call {} had an attempt accepted at {}",
                                    record.call_id, attempt.at
                                ),
                            )
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn call_config(
        &mut self,
        call: &CallSpec,
        values: &Values,
        step: &str,
    ) -> Result<CallConfig, Failure> {
        let to = resolve(&call.to, values, step)?;
        let sip = self.bridge.sip;
        let mut config = CallConfig::new(format!("sip:{to}@{sip}"));
        config.remote = Some(sip);
        if let Some(from) = &call.from {
            config.from = Some(resolve(from, values, step)?);
        }
        let digits = match &call.digits {
            Some(t) => resolve(t, values, step)?,
            None => String::new(),
        };
        let mut plan = DtmfPlan::parse(&digits, call.method.0)
            .map_err(|e| fail(step, "keys the caller can press", e.to_string()))?;
        if let Some(gap) = &call.gap {
            for d in plan.digits.iter_mut().skip(1) {
                d.delay = d.delay.saturating_sub(DEFAULT_GAP) + gap.0;
            }
        }
        if let Some(after) = &call.start_after {
            plan.start = DtmfStart::AfterAnswer(after.0);
        }
        config.dtmf = plan;
        config.hang_up = call.hang_up.0;
        config.transport = call.transport.0;
        config.timeout = self.options.call_timeout;
        config.seed = Some(self.next_seed());
        if let Some(dir) = &self.options.record {
            let n = self.recorded.entry(step.to_string()).or_default();
            *n += 1;
            let path = recording_path(dir, &self.scenario.file, step, *n);
            config.record = Some(RecordTo::File(path));
        }
        Ok(config)
    }

    fn next_seed(&mut self) -> u64 {
        self.seed += 1;
        // The caller's Call-ID and tags come from this seed: distinct across
        // runs (a running bridge remembers the Call-IDs of its last calls
        // and answers a reused one 481), across scenarios at once in one
        // process, and across processes.
        self.seed_base.wrapping_add(self.seed)
    }

    fn spawn_call(&self, config: CallConfig, step: &str) -> CallTask {
        let api = self.bridge.api.clone();
        let step = step.to_string();
        let limit = self.options.call_timeout + Duration::from_secs(5);
        let record_timeout = self.options.record_timeout;
        tokio::spawn(async move {
            let placed =
                tokio::time::timeout(limit, place_call(config, std::future::pending::<()>())).await;
            let report = match placed {
                Ok(Ok(report)) => report,
                Ok(Err(CallError::Timeout { report, .. })) => {
                    return Err(Failure {
                        calls: vec![CallLadder::of(&report)],
                        ..fail(&step, "the call to end in time", "it timed out")
                    });
                }
                Ok(Err(e)) => return Err(fail(&step, "the call to run", e.to_string())),
                Err(_) => {
                    return Err(fail(
                        &step,
                        format!(
                            "the call to end within {}",
                            humantime::format_duration(limit)
                        ),
                        "it did not",
                    ));
                }
            };
            let record = wait_for_record(&api, &report, record_timeout).await;
            Ok(Observed { report, record })
        })
    }

    async fn admin_action(
        &mut self,
        admin: &AdminSpec,
        values: &Values,
        step: &str,
    ) -> Result<(), Failure> {
        let action = *admin.action.get_ref();
        let user_name = admin.user.as_ref().map(|u| u.get_ref().clone());
        let user_path = match &user_name {
            Some(name) => {
                let email = self.email_of(name, step)?;
                format!("/api/users/{}", segment(email.as_str()))
            }
            None => String::new(),
        };
        let id = match &admin.conference_id {
            Some(t) => {
                let text = resolve(t, values, step)?;
                Some(
                    text.parse::<ConferenceId>()
                        .map_err(|e| fail(step, "a conference ID", format!("{text}: {e}")))?,
                )
            }
            None => None,
        };
        let no_email = json!({"no_email": admin.no_email});
        let (method, path, body) = match action {
            AdminAction::Enable => {
                let mut body = json!({
                    "no_email": admin.no_email,
                    "replace_provider": admin.replace_provider,
                });
                if let Some(id) = id {
                    body["conference_id"] = json!(id);
                }
                if let Some(p) = &admin.provider {
                    body["provider"] = provider_body(p);
                }
                (Method::POST, format!("{user_path}/enable"), Some(body))
            }
            AdminAction::ResetId => (
                Method::POST,
                format!("{user_path}/reset-id"),
                Some(no_email),
            ),
            AdminAction::SetId => {
                let id = id.ok_or_else(|| fail(step, "set-id with conference_id", "none"))?;
                let body = json!({"conference_id": id, "no_email": admin.no_email});
                (
                    Method::PUT,
                    format!("{user_path}/conference-id"),
                    Some(body),
                )
            }
            AdminAction::ResetPin => (
                Method::POST,
                format!("{user_path}/reset-pin"),
                Some(no_email),
            ),
            AdminAction::SendInfo => (Method::POST, format!("{user_path}/send-info"), None),
            AdminAction::Disable => (Method::POST, format!("{user_path}/disable"), None),
            AdminAction::ScheduleMeeting => {
                let organizer = match &user_name {
                    Some(name) => self.email_of(name, step)?,
                    None => return Err(fail(step, "schedule-meeting with a user", "none")),
                };
                let start = admin.start.map_or(Duration::from_secs(86_400), |o| o.0);
                let body = json!({
                    "organizer": organizer,
                    "subject": admin.subject.clone().unwrap_or_else(|| "Meeting".into()),
                    "start": from_now(start),
                });
                (Method::POST, "/api/meetings".to_string(), Some(body))
            }
            AdminAction::StartMigration => {
                let user = match &user_name {
                    Some(name) => self.email_of(name, step)?,
                    None => return Err(fail(step, "start-migration with a user", "none")),
                };
                let body = json!({"user": user});
                (Method::POST, "/api/migrations".to_string(), Some(body))
            }
            AdminAction::SetTenant => {
                let patch = admin.tenant.as_ref().map(tenant_patch).unwrap_or(json!({}));
                (Method::PATCH, "/api/tenant".to_string(), Some(patch))
            }
        };
        let result = self.request(method, &path, body).await;
        let what = format!("admin {}", action.as_str());
        match (result, &admin.expect_error) {
            (Ok(answer), None) => {
                if let (Some(pin), Some(name)) = (answer["leader_pin"].as_str(), &user_name) {
                    self.pins.insert(name.clone(), pin.to_string());
                }
                if action == AdminAction::ScheduleMeeting
                    && let (Some(id), Some(m)) = (answer["id"].as_i64(), &admin.meeting)
                {
                    self.meetings.insert(m.get_ref().clone(), id);
                }
                Ok(())
            }
            (Ok(_), Some(text)) => Err(fail(
                step,
                format!("{what} to fail with an error containing '{text}'"),
                "it succeeded",
            )),
            (Err(e), None) => Err(fail(step, format!("{what} to succeed"), api_text(&e))),
            // An unreachable bridge is never the refusal a step expects.
            (Err(e @ ClientError::Transport(_)), Some(_)) => Err(fail(
                step,
                format!("{what} to reach the bridge"),
                api_text(&e),
            )),
            (Err(e), Some(text)) if api_text(&e).contains(text.as_str()) => Ok(()),
            (Err(e), Some(text)) => Err(fail(
                step,
                format!("{what} to fail with an error containing '{text}'"),
                api_text(&e),
            )),
        }
    }

    async fn check_state(
        &self,
        expect: &Expect,
        values: &Values,
        step: &str,
    ) -> Result<(), Failure> {
        for email in &expect.email {
            self.check_email(email, values, step).await?;
        }
        for m in &expect.meeting {
            let name = m.name.get_ref();
            let Some(id) = self.meetings.get(name).copied() else {
                return Err(fail(step, format!("a meeting named '{name}'"), "none"));
            };
            let meeting: Meeting = self
                .read(&format!("/api/meetings/{id}"))
                .await
                .map_err(|e| fail(step, format!("meeting '{name}'"), e))?;
            if let Some(want) = m.invitation {
                let got = match meeting.invitation {
                    InvitationState::Current => Invitation::Current,
                    InvitationState::Stale => Invitation::Stale,
                    InvitationState::Migrated => Invitation::Migrated,
                };
                if got != want {
                    return Err(fail(
                        step,
                        format!("meeting '{name}': invitation {}", invitation_name(want)),
                        format!(
                            "invitation {} (carrying {})",
                            invitation_name(got),
                            meeting.conference_id
                        ),
                    ));
                }
            }
            if let Some(t) = &m.conference_id {
                let want = resolve(t, values, step)?;
                if meeting.conference_id.to_string() != want {
                    return Err(fail(
                        step,
                        format!("meeting '{name}' carries {want}"),
                        format!("it carries {}", meeting.conference_id),
                    ));
                }
            }
        }
        for m in &expect.migration {
            let user = m.user.get_ref();
            let email = self.email_of(user, step)?;
            let jobs: Vec<MigrationJob> = self
                .read(&format!("/api/migrations?user={}", segment(email.as_str())))
                .await
                .map_err(|e| fail(step, format!("{user}'s migration jobs"), e))?;
            let Some(job) = jobs.iter().max_by_key(|j| j.id) else {
                return Err(fail(
                    step,
                    format!("a migration job for {user}, {}", m.state.as_str()),
                    "none",
                ));
            };
            if job.state != m.state {
                return Err(fail(
                    step,
                    format!("{user}'s newest migration job {}", m.state.as_str()),
                    format!(
                        "job #{} {}{}",
                        job.id,
                        job.state.as_str(),
                        job.last_error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                ));
            }
            if let Some(want) = m.meetings_updated
                && job.meetings_updated != want
            {
                return Err(fail(
                    step,
                    format!("{user}'s migration updated {want} meeting(s)"),
                    format!("job #{} updated {}", job.id, job.meetings_updated),
                ));
            }
        }
        for l in &expect.lookup {
            let text = resolve(&l.conference_id, values, step)?;
            let got = match text.parse::<ConferenceId>() {
                Ok(id) => {
                    let found: Value = self
                        .read(&format!("/api/directory/{id}"))
                        .await
                        .map_err(|e| fail(step, format!("the directory's entry for {id}"), e))?;
                    match found["status"].as_str() {
                        Some("valid") => LookupResult::Active,
                        Some("revoked") => LookupResult::Revoked,
                        _ => LookupResult::Unknown,
                    }
                }
                Err(_) => LookupResult::Unknown,
            };
            if got != l.result {
                return Err(fail(
                    step,
                    format!("{text} is {}", lookup_name(l.result)),
                    format!("it is {}", lookup_name(got)),
                ));
            }
        }
        for r in &expect.roster {
            let text = resolve(&r.conference_id, values, step)?;
            let want = format!("{} caller(s) in the meeting of {text}", r.callers);
            let callers = match text.parse::<ConferenceId>() {
                Ok(id) => {
                    let room: Value = self
                        .read(&format!("/api/rooms/{id}"))
                        .await
                        .map_err(|e| fail(step, want.clone(), e))?;
                    room["callers"].as_u64()
                }
                Err(_) => None,
            };
            let Some(callers) = callers else {
                return Err(fail(step, want, format!("{text} is not an active ID")));
            };
            if callers != u64::from(r.callers) {
                return Err(fail(step, want, format!("{callers}")));
            }
        }
        Ok(())
    }

    async fn check_email(
        &self,
        want: &EmailExpect,
        values: &Values,
        step: &str,
    ) -> Result<(), Failure> {
        let user = want.to.get_ref();
        let email = self.email_of(user, step)?;
        let kind = want.kind;
        let mut list: Vec<Email> = self
            .read(&format!("/api/outbox?to={}", segment(email.as_str())))
            .await
            .map_err(|e| fail(step, format!("{user}'s emails"), e))?;
        list.retain(|m| kind.is_none_or(|k| m.kind == k));
        list.sort_by_key(|m| m.id);
        let count = list.len();
        let kind_text = kind.map_or("any".to_string(), |k| k.as_str().to_string());
        match want.count {
            Some(n) if count != n as usize => {
                return Err(fail(
                    step,
                    format!("{n} {kind_text} email(s) to {user}"),
                    format!("{count}"),
                ));
            }
            None if count == 0 => {
                return Err(fail(
                    step,
                    format!("at least one {kind_text} email to {user}"),
                    "none",
                ));
            }
            _ => {}
        }
        if want.contains.is_empty() && want.not_contains.is_empty() {
            return Ok(());
        }
        let body = match list.last() {
            Some(m) => {
                let full: Email = self
                    .read(&format!("/api/outbox/{}", m.id))
                    .await
                    .map_err(|e| fail(step, format!("{user}'s emails"), e))?;
                full.body.unwrap_or_default()
            }
            None => String::new(),
        };
        for t in &want.contains {
            let text = resolve(t, values, step)?;
            if !body.contains(&text) {
                return Err(fail(
                    step,
                    format!("{user}'s newest {kind_text} email contains '{text}' ({t})"),
                    format!("it does not:\n{}", indent(&body)),
                ));
            }
        }
        for t in &want.not_contains {
            let text = resolve(t, values, step)?;
            if body.contains(&text) {
                return Err(fail(
                    step,
                    format!("{user}'s newest {kind_text} email never contains '{text}' ({t})"),
                    format!("it does:\n{}", indent(&body)),
                ));
            }
        }
        Ok(())
    }
}

/// The skip note of a fixed ID the bridge already issued.
fn fresh_bridge_note(id: &str, whose: &str, status: &str) -> String {
    let state = if status == "revoked" {
        "already issued and revoked"
    } else {
        "already in use"
    };
    format!(
        "needs a fresh bridge: conference ID {id} ({whose}) is {state} on this bridge, and an ID is never issued twice"
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn invitation_name(i: Invitation) -> &'static str {
    match i {
        Invitation::Current => "current",
        Invitation::Stale => "stale",
        Invitation::Migrated => "migrated",
    }
}

fn lookup_name(l: LookupResult) -> &'static str {
    match l {
        LookupResult::Active => "active",
        LookupResult::Revoked => "revoked",
        LookupResult::Unknown => "unknown",
    }
}

fn outcome_name(o: CallOutcome) -> &'static str {
    match o {
        CallOutcome::Joined => "joined",
        CallOutcome::Rejected => "rejected",
        CallOutcome::NoInput => "no-input",
        CallOutcome::NotAnswered => "not-answered",
    }
}

fn tally(outcomes: &[&'static str]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for o in outcomes {
        match counts.iter_mut().find(|(n, _)| n == o) {
            Some((_, c)) => *c += 1,
            None => counts.push((o, 1)),
        }
    }
    counts
        .iter()
        .map(|(n, c)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bridge writes its record as the call ends; the caller may see the
/// end first. Asks the API (`GET /api/calls/{call_id}`) until it has it,
/// bounded by `limit`.
async fn wait_for_record(api: &Client, report: &CallReport, limit: Duration) -> Option<Record> {
    let deadline = tokio::time::Instant::now() + limit;
    let path = format!("/api/calls/{}", segment(&report.call_id));
    loop {
        match api.get(&path).await {
            Ok(value) => match serde_json::from_value(value) {
                Ok(record) => return Some(record),
                Err(e) => {
                    tracing::warn!(call_id = %report.call_id, error = %e, "a call record this runner can't read");
                    return None;
                }
            },
            Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => {
                tracing::warn!(call_id = %report.call_id, error = %e, "reading a call record failed");
                return None;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The cause of the bridge's BYE Reason (`SIP ;cause=403 ;text="…"`).
fn reason_parts(header: &str) -> (String, Option<u16>) {
    let protocol = header
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let cause = header.split(';').find_map(|p| {
        p.trim()
            .strip_prefix("cause=")
            .and_then(|c| c.trim().parse().ok())
    });
    (protocol, cause)
}

/// How the call ended, in the scenario's words.
fn actual_outcome(obs: &Observed) -> &'static str {
    let report = &obs.report;
    if matches!(
        report.outcome,
        Outcome::Rejected { .. } | Outcome::NoAnswer | Outcome::Cancelled
    ) {
        return "not-answered";
    }
    let joined = obs.record.as_ref().is_some_and(|r| r.joined.is_some())
        || report.prompt_ids().contains(&PromptId::Joining);
    if joined {
        return "joined";
    }
    let cause = obs
        .record
        .as_ref()
        .and_then(|r| r.reason.as_ref().map(|r| r.cause))
        .or_else(|| report.bye_reason.as_deref().and_then(|h| reason_parts(h).1));
    match cause {
        Some(403) => "rejected",
        Some(408) => "no-input",
        _ if matches!(report.outcome, Outcome::Failed { .. }) => "failed",
        _ => "ended",
    }
}

fn list<T>(items: &[T], name: impl Fn(&T) -> &str) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items.iter().map(name).collect::<Vec<_>>().join(", ")
}

/// Checks one call against the call keys of `expect`.
fn check_call(expect: &Expect, obs: &Observed, values: &Values, step: &str) -> Result<(), Failure> {
    let report = &obs.report;
    let need_record = |key: &str| {
        obs.record.clone().ok_or_else(|| {
            fail(
                step,
                format!("the bridge's record of call {} ({key})", report.call_id),
                "no record",
            )
        })
    };
    if let Some(status) = expect.status {
        let got = report.final_status.as_ref().map(|(s, _)| *s);
        if got != Some(status) {
            return Err(fail(
                step,
                format!("final status {status}"),
                got.map_or("no final response".into(), |s| s.to_string()),
            ));
        }
    }
    if let Some(prompts) = &expect.prompts {
        let want: Vec<PromptId> = prompts.iter().map(|p| p.0).collect();
        let got = report.prompt_ids();
        if want != got {
            return Err(fail(
                step,
                format!("prompts {}", list(&want, |p| p.as_str())),
                format!("prompts {}", list(&got, |p| p.as_str())),
            ));
        }
    }
    if let Some(outcome) = expect.outcome {
        let got = actual_outcome(obs);
        if got != outcome_name(outcome) {
            return Err(fail(
                step,
                format!("outcome {}", outcome_name(outcome)),
                format!("outcome {got} ({})", report.outcome),
            ));
        }
    }
    if let Some(t) = &expect.conference_id {
        let want = resolve(t, values, step)?;
        let record = need_record("conference_id")?;
        let got = record.joined.as_ref().map(|j| j.conference_id.to_string());
        if got.as_deref() != Some(want.as_str()) {
            return Err(fail(
                step,
                format!("joined the meeting of {want}"),
                got.map_or("joined no meeting".into(), |g| format!("joined {g}")),
            ));
        }
    }
    if let Some(attempts) = &expect.attempts {
        let record = need_record("attempts")?;
        let want: Vec<&str> = attempts.iter().map(|a| attempt_name(*a)).collect();
        let got: Vec<&str> = record.attempts.iter().map(|a| a.result.as_str()).collect();
        if want != got {
            return Err(fail(
                step,
                format!("attempts {}", list(&want, |a| a)),
                format!("attempts {}", list(&got, |a| a)),
            ));
        }
    }
    if let Some(side) = expect.hung_up_by {
        let want = match side {
            super::model::Side::Caller => Party::Caller,
            super::model::Side::Bridge => Party::Bridge,
        };
        if report.hung_up_by != Some(want) {
            return Err(fail(
                step,
                format!("hung up by the {}", want.as_str()),
                report.hung_up_by.map_or("nobody sent a BYE".into(), |p| {
                    format!("hung up by the {}", p.as_str())
                }),
            ));
        }
    }
    if let Some(reason) = &expect.reason {
        let want = format!(
            "Reason: {} ;cause={}{}",
            reason.protocol,
            reason.cause,
            reason
                .text
                .as_deref()
                .map(|t| format!(" ;text containing \"{t}\""))
                .unwrap_or_default()
        );
        let Some(header) = &report.bye_reason else {
            return Err(fail(step, want, "no Reason header"));
        };
        let (protocol, cause) = reason_parts(header);
        let text_ok = reason.text.as_deref().is_none_or(|t| {
            report
                .bye_reason_text
                .as_deref()
                .is_some_and(|got| got.contains(t))
        });
        if !protocol.eq_ignore_ascii_case(&reason.protocol)
            || cause != Some(reason.cause)
            || !text_ok
        {
            return Err(fail(step, want, format!("Reason: {header}")));
        }
    }
    if let Some(within) = &expect.decision_within {
        match report.decision_time {
            Some(t) if t <= within.0 => {}
            Some(t) => {
                return Err(fail(
                    step,
                    format!("a decision within {}", humantime::format_duration(within.0)),
                    format!("{} ms", t.as_millis()),
                ));
            }
            None => {
                return Err(fail(
                    step,
                    format!("a decision within {}", humantime::format_duration(within.0)),
                    "no decision was heard",
                ));
            }
        }
    }
    Ok(())
}

fn attempt_name(a: super::model::AttemptName) -> &'static str {
    use super::model::AttemptName;
    match a {
        AttemptName::Accepted => "accepted",
        AttemptName::Unknown => "unknown",
        AttemptName::Revoked => "revoked",
        AttemptName::Malformed => "malformed",
        AttemptName::NoInput => "no-input",
    }
}

/// Where `--record DIR` puts call `n` (from 1) of `step` in the scenario
/// file `file`: `DIR/<file stem>/<step>.wav` for the first,
/// `<step>-<n>.wav` for the others (concurrent calls), names made safe.
pub fn recording_path(dir: &Path, file: &Path, step: &str, n: usize) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or_else(|| "scenario".into(), |s| s.to_string_lossy());
    let name = match n {
        0 | 1 => format!("{}.wav", file_name_part(step)),
        n => format!("{}-{n}.wav", file_name_part(step)),
    };
    dir.join(file_name_part(&stem)).join(name)
}
