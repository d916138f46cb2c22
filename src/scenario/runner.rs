//! Runs a [`Scenario`] on the real pieces, in-process: its own bridge on
//! loopback (temporary data folder, ephemeral SIP and RTP ports), the admin
//! service on its own [`ManualClock`], and the project's caller for every
//! call. Scenarios share nothing, so several can run at once.
//!
//! Steps run in file order: each step's action, then its expectations. The
//! first failing step ends the scenario with what was expected, what came
//! instead, and the SIP ladders of that step's calls. Every call and wait is
//! bounded ([`RunOptions`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Scenario;
use super::model::{
    Action, AdminAction, AdminSpec, CallOutcome, CallSpec, EmailExpect, Expect, Invitation,
    LookupResult, ProviderSpec, Step, Template, TenantSettings,
};
use crate::admin::Service;
use crate::admin::ids::{ConferenceId, EmailAddress, PhoneNumber};
use crate::admin::model::{InvitationState, MeetingId, Provider};
use crate::admin::service::{EnableRequest, TenantPatch};
use crate::call::MeetingKey;
use crate::caller::{CallReport, DEFAULT_GAP, Direction, DtmfPlan, DtmfStart, Outcome, Party};
use crate::directory::Lookup;
use crate::media::prompts::{PromptCatalog, PromptId};
use crate::net::caller::{CallConfig, CallError, RecordTo, file_name_part, place_call};
use crate::net::rtp::BridgeMonitor;
use crate::net::server::{ServeOptions, Server};
use crate::net::sip::SipOptions;
use crate::records::CallRecordJson;
use crate::time::{Clock, ManualClock, SystemClock, Timestamp};

/// The actor name the runner's admin actions are logged under.
const ACTOR: &str = "scenario";

/// Bounds for one scenario run.
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            call_timeout: Duration::from_secs(60),
            bridge_timeout: Duration::from_secs(15),
            record_timeout: Duration::from_secs(3),
            record: None,
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
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
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

/// Runs `scenario` on a bridge of its own and says how it went.
pub async fn run_scenario(scenario: &Scenario, options: &RunOptions) -> ScenarioResult {
    let started = tokio::time::Instant::now();
    let mut steps_run = 0;
    let failure = run_inner(scenario, options, &mut steps_run).await.err();
    ScenarioResult {
        file: scenario.file.clone(),
        title: scenario.title.clone(),
        duration: started.elapsed(),
        steps_run,
        failure,
    }
}

static FOLDER: AtomicU64 = AtomicU64::new(0);

/// A fresh folder under the system's temporary folder.
fn temp_folder() -> Result<PathBuf, Failure> {
    let n = FOLDER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir =
        std::env::temp_dir().join(format!("dialin-run-{}-{n}-{nanos:09}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        fail(
            "",
            "a temporary data folder",
            format!("{}: {e}", dir.display()),
        )
    })?;
    Ok(dir)
}

async fn run_inner(
    scenario: &Scenario,
    options: &RunOptions,
    steps_run: &mut usize,
) -> Result<(), Failure> {
    let data = temp_folder()?;
    let result = run_in(scenario, options, steps_run, data.clone()).await;
    if let Err(e) = std::fs::remove_dir_all(&data) {
        tracing::warn!(folder = %data.display(), error = %e, "could not remove a scenario's data folder");
    }
    result
}

async fn run_in(
    scenario: &Scenario,
    options: &RunOptions,
    steps_run: &mut usize,
    data: PathBuf,
) -> Result<(), Failure> {
    let bridge_err = |what: &str, e: &dyn std::fmt::Display| fail("", what, e.to_string());
    let clock = ManualClock::new(SystemClock.now());
    let mut serve = ServeOptions::new(data);
    serve.admin = SocketAddr::from(([127, 0, 0, 1], 0));
    serve.clock = Arc::new(clock.clone());
    let prompts = PromptCatalog::embedded().map_err(|e| bridge_err("the shipped prompts", &e))?;
    let mut sip = SipOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(prompts));
    sip.rtp_ports = 0..=0;
    serve.sip = Some(sip);
    let server = Server::bind(serve)
        .await
        .map_err(|e| bridge_err("the bridge binds", &e))?;
    let (Some(sip), Some(monitor)) = (server.sip_addr(), server.bridge()) else {
        return Err(fail("", "a bridge with SIP", "SIP was not configured"));
    };
    let service = server.service().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut run = Run {
        scenario,
        options,
        service,
        clock,
        sip,
        monitor,
        users: HashMap::new(),
        pins: HashMap::new(),
        meetings: HashMap::new(),
        captures: HashMap::new(),
        completed: HashMap::new(),
        pending: HashMap::new(),
        seed: 1,
        recorded: HashMap::new(),
    };
    let mut result = run.fixture().await;
    if result.is_ok() {
        result = run.steps(steps_run).await;
    }
    // Calls still running end with the bridge: abort what is left.
    for (_, calls) in run.pending.drain() {
        for call in calls {
            call.abort();
        }
    }
    let _ = stop.send(());
    let stopped = tokio::time::timeout(options.bridge_timeout, task).await;
    result?;
    match stopped {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(bridge_err("the bridge stops cleanly", &format!("{e:#}"))),
        Ok(Err(e)) => Err(bridge_err("the bridge stops cleanly", &e)),
        Err(_) => Err(fail(
            "",
            format!(
                "the bridge stops within {}",
                humantime::format_duration(options.bridge_timeout)
            ),
            "it did not",
        )),
    }
}

/// What the runner saw of one call: the caller's report and the bridge's
/// record of it (when the bridge answered and wrote one).
#[derive(Debug, Clone)]
struct Observed {
    report: CallReport,
    record: Option<Arc<CallRecordJson>>,
}

type CallTask = JoinHandle<Result<Observed, Failure>>;

struct Run<'a> {
    scenario: &'a Scenario,
    options: &'a RunOptions,
    service: Arc<Service>,
    clock: ManualClock,
    sip: SocketAddr,
    monitor: BridgeMonitor,
    /// Fixture user name → email.
    users: HashMap<String, EmailAddress>,
    /// User name → the leader PIN last issued (the service lists it masked).
    pins: HashMap<String, String>,
    meetings: HashMap<String, MeetingId>,
    /// Capture name → field → value.
    captures: HashMap<String, HashMap<String, String>>,
    /// Step name → wall time just after its action returned.
    completed: HashMap<String, Timestamp>,
    /// Concurrent step name → its running calls.
    pending: HashMap<String, Vec<CallTask>>,
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

impl Run<'_> {
    /// Admin work (SQLite) off the async threads.
    async fn admin<T: Send + 'static>(
        &self,
        step: &str,
        work: impl FnOnce(&Service) -> Result<T, String> + Send + 'static,
    ) -> Result<Result<T, String>, Failure> {
        let service = self.service.clone();
        tokio::task::spawn_blocking(move || work(&service))
            .await
            .map_err(|e| fail(step, "the admin work to run", format!("it panicked: {e}")))
    }

    fn email_of(&self, name: &str, step: &str) -> Result<EmailAddress, Failure> {
        self.users
            .get(name)
            .cloned()
            .ok_or_else(|| fail(step, format!("a user named '{name}'"), "none"))
    }

    async fn fixture(&mut self) -> Result<(), Failure> {
        const STEP: &str = "(fixture)";
        let patch = patch_of(&self.scenario.tenant);
        self.admin(STEP, move |s| {
            s.update_tenant(ACTOR, &patch).map_err(|e| e.to_string())
        })
        .await?
        .map_err(|e| fail(STEP, "the tenant settings apply", e))?;

        if !self.scenario.numbers.is_empty() {
            let mut wanted = Vec::new();
            for n in &self.scenario.numbers {
                let number: PhoneNumber = n.number.get_ref().parse().map_err(|e: String| {
                    fail(
                        STEP,
                        "an E.164 number",
                        format!("{}: {e}", n.number.get_ref()),
                    )
                })?;
                wanted.push((number, n.kind, n.default));
            }
            self.admin(STEP, move |s| {
                let tenant = s.tenant().map_err(|e| e.to_string())?;
                for old in &tenant.dial_in_numbers {
                    if !wanted.iter().any(|(n, _, _)| *n == old.number) {
                        s.remove_number(ACTOR, &old.number)
                            .map_err(|e| format!("removing {}: {e}", old.number))?;
                    }
                }
                for (number, kind, default) in wanted {
                    let present = tenant.dial_in_numbers.iter().find(|d| d.number == number);
                    if let Some(d) = present {
                        if d.kind == kind && d.default == default {
                            continue;
                        }
                        s.remove_number(ACTOR, &number)
                            .map_err(|e| format!("replacing {number}: {e}"))?;
                    }
                    s.add_number(ACTOR, number.clone(), kind, default)
                        .map_err(|e| format!("adding {number}: {e}"))?;
                }
                Ok(())
            })
            .await?
            .map_err(|e| fail(STEP, "the dial-in numbers apply", e))?;
        }

        for user in &self.scenario.users {
            let name = user.name.get_ref().clone();
            let email: EmailAddress = user
                .email
                .get_ref()
                .parse()
                .map_err(|e: String| fail(STEP, "an email address", e))?;
            let id = match &user.conference_id {
                Some(id) => Some(id.get_ref().parse::<ConferenceId>().map_err(|e| {
                    fail(STEP, "a conference ID", format!("{}: {e}", id.get_ref()))
                })?),
                None => None,
            };
            let display = user.display_name.clone().unwrap_or_else(|| name.clone());
            let provider = match &user.provider {
                ProviderSpec::Microsoft => None,
                ProviderSpec::ThirdParty(n) => Some(Provider::ThirdParty {
                    name: n.clone(),
                    numbers: Vec::new(),
                }),
            };
            let enabled = user.enabled;
            let mail = email.clone();
            let pin = self
                .admin(STEP, move |s| {
                    if !enabled {
                        s.add_user(ACTOR, &mail, &display)
                            .map_err(|e| e.to_string())?;
                        return Ok(None);
                    }
                    let request = EnableRequest {
                        email: Some(mail),
                        display_name: Some(display),
                        provider,
                        conference_id: id,
                        no_email: true,
                        ..EnableRequest::default()
                    };
                    s.enable_user(ACTOR, &request)
                        .map(|o| o.leader_pin)
                        .map_err(|e| e.to_string())
                })
                .await?
                .map_err(|e| fail(STEP, format!("user '{name}' is set up"), e))?;
            if let Some(pin) = pin {
                self.pins.insert(name.clone(), pin);
            }
            self.users.insert(name, email);
        }

        for meeting in &self.scenario.meetings {
            let organizer = self.email_of(meeting.organizer.get_ref(), STEP)?;
            let subject = meeting.subject.clone();
            let start = self.clock.now() + meeting.start.0;
            let id = self
                .admin(STEP, move |s| {
                    s.schedule_meeting(ACTOR, &organizer, &subject, start)
                        .map(|m| m.id)
                        .map_err(|e| e.to_string())
                })
                .await?
                .map_err(|e| {
                    fail(
                        STEP,
                        format!("meeting '{}' is scheduled", meeting.name.get_ref()),
                        e,
                    )
                })?;
            self.meetings.insert(meeting.name.get_ref().clone(), id);
        }
        Ok(())
    }

    /// The `${…}` values now: users (live), meetings (live), captures.
    async fn values(&self, step: &str) -> Result<Values, Failure> {
        let users: Vec<(String, EmailAddress)> = self
            .users
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        let meetings: Vec<(String, MeetingId)> = self
            .meetings
            .iter()
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        let (users, meetings) = self
            .admin(step, move |s| {
                let mut us = Vec::new();
                for (name, email) in users {
                    us.push((name, s.user(&email).map_err(|e| e.to_string())?));
                }
                let mut ms = Vec::new();
                for (name, id) in meetings {
                    ms.push((name, s.meeting(id).map_err(|e| e.to_string())?));
                }
                Ok((us, ms))
            })
            .await?
            .map_err(|e| fail(step, "the users and meetings to read", e))?;
        let mut values = Values::new();
        let mut put = |name: &str, field: &str, value: String| {
            values.insert((name.to_string(), field.to_string()), value);
        };
        for (name, user) in users {
            put(&name, "email", user.email.to_string());
            put(&name, "display_name", user.display_name.clone());
            if let Some(id) = user.conference_id {
                put(&name, "conference_id", id.to_string());
            }
            if let Some(id) = user.previous_conference_id {
                put(&name, "previous_conference_id", id.to_string());
            }
            if let Some(pin) = self.pins.get(&name) {
                put(&name, "leader_pin", pin.clone());
            }
        }
        for (name, meeting) in meetings {
            put(&name, "conference_id", meeting.conference_id.to_string());
            put(&name, "subject", meeting.subject.clone());
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
            Action::Advance(by) => {
                self.clock
                    .advance(*by)
                    .map_err(|e| fail(name, "the clock to move", e))?;
                self.admin(name, |s| {
                    s.run_due_migrations()
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await?
                .map_err(|e| fail(name, "the due migrations to run", e))?;
            }
            Action::Wait(d) => tokio::time::sleep(*d).await,
            Action::WaitFor(target) => {
                self.finish_concurrent(target.get_ref(), name).await?;
            }
            Action::WaitJoined(n) => {
                let limit = self.options.call_timeout;
                if tokio::time::timeout(limit, self.monitor.joined_at_least(u64::from(*n)))
                    .await
                    .is_err()
                {
                    return Err(Failure {
                        step: name.to_string(),
                        expected: format!("{n} calls joined within {}s", limit.as_secs()),
                        actual: format!("{} joined", self.monitor.joined_total()),
                        calls: Vec::new(),
                    });
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
        let mut config = CallConfig::new(format!("sip:{to}@{}", self.sip));
        config.remote = Some(self.sip);
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
        // Distinct across scenarios running at once in one process.
        (u64::from(std::process::id()) << 32) ^ (FOLDER.load(Ordering::Relaxed) << 20) ^ self.seed
    }

    fn spawn_call(&self, config: CallConfig, step: &str) -> CallTask {
        let monitor = self.monitor.clone();
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
            let record = wait_for_record(&monitor, &report, record_timeout).await;
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
        let email = match &user_name {
            Some(name) => Some(self.email_of(name, step)?),
            None => None,
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
        let no_email = admin.no_email;
        let subject = admin.subject.clone().unwrap_or_else(|| "Meeting".into());
        let start = self.clock.now()
            + admin
                .start
                .map_or(Duration::from_secs(86_400), |offset| offset.0);
        let patch = admin.tenant.as_ref().map(patch_of).unwrap_or_default();
        let result = self
            .admin(step, move |s| {
                let email = || email.clone().ok_or_else(|| "no user given".to_string());
                let e = |e: crate::admin::AdminError| e.to_string();
                Ok::<_, String>(match action {
                    AdminAction::Enable => {
                        let request = EnableRequest {
                            email: Some(email()?),
                            conference_id: id,
                            no_email,
                            ..EnableRequest::default()
                        };
                        Done::Pin(s.enable_user(ACTOR, &request).map_err(e)?.leader_pin)
                    }
                    AdminAction::ResetId => {
                        s.reset_conference_id(ACTOR, &email()?, no_email)
                            .map_err(e)?;
                        Done::Nothing
                    }
                    AdminAction::SetId => {
                        let id = id.ok_or("set-id needs conference_id")?;
                        s.set_conference_id(ACTOR, &email()?, id, no_email)
                            .map_err(e)?;
                        Done::Nothing
                    }
                    AdminAction::ResetPin => Done::Pin(Some(
                        s.reset_pin(ACTOR, &email()?, no_email)
                            .map_err(e)?
                            .leader_pin,
                    )),
                    AdminAction::SendInfo => {
                        s.send_conference_info(ACTOR, &email()?).map_err(e)?;
                        Done::Nothing
                    }
                    AdminAction::Disable => {
                        s.disable_user(ACTOR, &email()?).map_err(e)?;
                        Done::Nothing
                    }
                    AdminAction::ScheduleMeeting => Done::Meeting(
                        s.schedule_meeting(ACTOR, &email()?, &subject, start)
                            .map_err(e)?
                            .id,
                    ),
                    AdminAction::StartMigration => {
                        s.start_migration(ACTOR, &email()?).map_err(e)?;
                        Done::Nothing
                    }
                    AdminAction::SetTenant => {
                        s.update_tenant(ACTOR, &patch).map_err(e)?;
                        Done::Nothing
                    }
                })
            })
            .await?;
        let what = format!("admin {}", action.as_str());
        match (result, &admin.expect_error) {
            (Ok(done), None) => {
                match done {
                    Done::Pin(Some(pin)) => {
                        if let Some(name) = user_name {
                            self.pins.insert(name, pin);
                        }
                    }
                    Done::Meeting(id) => {
                        if let Some(m) = &admin.meeting {
                            self.meetings.insert(m.get_ref().clone(), id);
                        }
                    }
                    Done::Pin(None) | Done::Nothing => {}
                }
                Ok(())
            }
            (Ok(_), Some(text)) => Err(fail(
                step,
                format!("{what} to fail with an error containing '{text}'"),
                "it succeeded",
            )),
            (Err(e), None) => Err(fail(step, format!("{what} to succeed"), e)),
            (Err(e), Some(text)) if e.contains(text.as_str()) => Ok(()),
            (Err(e), Some(text)) => Err(fail(
                step,
                format!("{what} to fail with an error containing '{text}'"),
                e,
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
            let meeting = self
                .admin(step, move |s| s.meeting(id).map_err(|e| e.to_string()))
                .await?
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
            let jobs = self
                .admin(step, move |s| {
                    s.migration_jobs(Some(&email)).map_err(|e| e.to_string())
                })
                .await?
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
                Ok(id) => match self.service.lookup(id) {
                    Lookup::Valid(_) => LookupResult::Active,
                    Lookup::Revoked(_) => LookupResult::Revoked,
                    Lookup::Unknown => LookupResult::Unknown,
                },
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
            let callers = match text
                .parse::<ConferenceId>()
                .map(|id| self.service.lookup(id))
            {
                Ok(Lookup::Valid(target)) => self.monitor.in_room(&MeetingKey::from(target)),
                _ => {
                    return Err(fail(
                        step,
                        format!("{} caller(s) in the meeting of {text}", r.callers),
                        format!("{text} is not an active ID"),
                    ));
                }
            };
            if callers != r.callers as usize {
                return Err(fail(
                    step,
                    format!("{} caller(s) in the meeting of {text}", r.callers),
                    format!("{callers}"),
                ));
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
        let emails = self
            .admin(step, move |s| {
                let mut list: Vec<_> = s
                    .emails(Some(&email))
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|m| kind.is_none_or(|k| m.kind == k))
                    .collect();
                list.sort_by_key(|m| m.id);
                let newest = match list.last() {
                    Some(m) => Some(s.email(m.id).map_err(|e| e.to_string())?),
                    None => None,
                };
                Ok((list.len(), newest))
            })
            .await?
            .map_err(|e| fail(step, format!("{user}'s emails"), e))?;
        let (count, newest) = emails;
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
        let body = newest.and_then(|m| m.body).unwrap_or_default();
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

enum Done {
    Nothing,
    Pin(Option<String>),
    Meeting(MeetingId),
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn patch_of(t: &TenantSettings) -> TenantPatch {
    TenantPatch {
        conference_id_mode: t.conference_id_mode,
        send_emails_automatically: t.send_emails,
        leader_pin_length: t.leader_pin_length,
        migrate_meetings_automatically: t.migrate_meetings,
        ..TenantPatch::default()
    }
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
/// end first. Polls, bounded by `limit`.
async fn wait_for_record(
    monitor: &BridgeMonitor,
    report: &CallReport,
    limit: Duration,
) -> Option<Arc<CallRecordJson>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(record) = monitor.records().get(&report.call_id) {
            return Some(record);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        let got = record
            .joined
            .as_ref()
            .map(|j| j.meeting.conference_id.to_string());
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
        let got: Vec<&str> = record.attempts.iter().map(|a| a.result).collect();
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
