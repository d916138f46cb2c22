//! `dialin demo`: the conference ID reset story, told step by step on the
//! real pieces, in-process: a bridge on loopback, the admin service on a
//! manual clock (so "90 minutes later" is an advance, not a wait) and the
//! project's caller for each call.
//!
//! Every step checks what it saw; the first surprise prints what was
//! expected and what came instead, and the command exits non-zero. The
//! pauses between steps are presentation pacing only (`--fast` drops them).

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

use crate::admin::Service;
use crate::admin::ids::{ConferenceId, EmailAddress};
use crate::admin::model::{EmailKind, InvitationState, JobState};
use crate::admin::service::EnableRequest;
use crate::caller::{CallReport, Direction, DtmfPlan, HangUp, Outcome, Party};
use crate::cli::DemoArgs;
use crate::directory::Lookup;
use crate::media::dtmf::DtmfMethod;
use crate::media::prompts::{PromptCatalog, PromptId};
use crate::net::caller::{CallConfig, CallError, place_call};
use crate::net::server::{ServeOptions, Server};
use crate::net::sip::SipOptions;
use crate::time::{Clock, ManualClock, SystemClock};

const USER: &str = "alice@contoso.com";
const MEETING: &str = "Weekly sync";
/// The pause between steps for an audience.
const PAUSE: Duration = Duration::from_millis(1500);
/// The most one demo call may take (three wrong IDs take about 13 s).
const CALL_DEADLINE: Duration = Duration::from_secs(40);
/// How long the migration service waits after a reset.
const MIGRATION_DELAY: Duration = Duration::from_secs(90 * 60);
/// The Reason text the bridge's BYE carries for a caller turned away.
const NOT_VALID_REASON: &str = "Conference ID not valid";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (data, temporary) = match &args.data {
        Some(dir) => (dir.clone(), false),
        None => (temp_folder()?, true),
    };
    let result = run_in(&args, data.clone()).await;
    if temporary && let Err(e) = std::fs::remove_dir_all(&data) {
        tracing::warn!(folder = %data.display(), error = %e, "could not remove the demo's data folder");
    }
    result
}

/// A fresh folder under the system's temporary folder (tempfile is a
/// dev-dependency only).
fn temp_folder() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("dialin-demo-{}-{nanos:09}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the demo's data folder {}", dir.display()))?;
    Ok(dir)
}

async fn run_in(args: &DemoArgs, data: PathBuf) -> anyhow::Result<()> {
    let clock = ManualClock::new(SystemClock.now());
    let mut options = ServeOptions::new(data.clone());
    options.admin = args.admin;
    options.clock = Arc::new(clock.clone());
    let prompts = PromptCatalog::embedded().context("loading the shipped prompts")?;
    let mut sip = SipOptions::new(args.sip, Arc::new(prompts));
    // The OS picks the RTP ports: a demo must not collide with a bridge
    // already running on this machine.
    sip.rtp_ports = 0..=0;
    options.sip = Some(sip);
    let server = Server::bind(options).await?;
    let demo = Demo {
        fast: args.fast,
        sip: server.sip_addr().context("the bridge was configured")?,
        admin: server.admin_addr(),
        service: server.service().clone(),
        clock,
        data,
        user: USER.parse().map_err(anyhow::Error::msg)?,
        seed: AtomicU64::new(u64::from(std::process::id()) << 16),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let story = demo.tell().await;
    let _ = stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .context("the bridge did not stop within 15 s")?
        .context("the bridge task panicked")?;
    story?;
    stopped.context("the bridge stopped with an error")?;
    println!();
    println!("All 8 steps saw what they expected.");
    Ok(())
}

struct Demo {
    fast: bool,
    sip: SocketAddr,
    admin: SocketAddr,
    service: Arc<Service>,
    clock: ManualClock,
    data: PathBuf,
    user: EmailAddress,
    /// Each call its own seed, so each its own Call-ID.
    seed: AtomicU64,
}

/// What the story carries from one step to the next.
struct Ids {
    number: String,
    old: ConferenceId,
}

impl Demo {
    async fn tell(&self) -> anyhow::Result<()> {
        println!("dialin demo: resetting a conference ID, end to end");
        let number = self.step1().await?;
        self.pause().await;
        let old = self.step2().await?;
        let ids = Ids { number, old };
        self.pause().await;
        self.step3(&ids).await?;
        self.pause().await;
        self.step4(&ids).await?;
        self.pause().await;
        let new = self.step5(&ids).await?;
        self.pause().await;
        self.step6(&ids).await?;
        self.pause().await;
        self.step7(&ids, new).await?;
        self.pause().await;
        self.step8(&ids, new).await
    }

    async fn pause(&self) {
        if !self.fast {
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// Runs admin work (SQLite) off the async threads.
    async fn admin<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Service) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let service = self.service.clone();
        tokio::task::spawn_blocking(move || work(&service))
            .await
            .context("the admin work panicked")?
    }

    async fn step1(&self) -> anyhow::Result<String> {
        heading(1, "Start the bridge");
        narrate(
            "A dial-in bridge answers SIP calls; its admin service owns the users, \
             their conference IDs and the directory the bridge looks IDs up in.",
        );
        let tenant = self.admin(|s| Ok(s.tenant()?)).await?;
        let number = tenant
            .default_numbers()
            .first()
            .map(|n| n.number.to_string())
            .unwrap_or_default();
        saw("SIP", format!("{} (UDP and TCP)", self.sip));
        saw(
            "dial-in number",
            format!("{number} (sip:{number}@{})", self.sip),
        );
        saw("admin API", format!("http://{}", self.admin));
        saw("data folder", self.data.display());
        saw("clock", format!("manual, now {}", self.clock.now()));
        check(
            1,
            !number.is_empty(),
            "the tenant has a dial-in number",
            "none",
        )?;
        Ok(number)
    }

    async fn step2(&self) -> anyhow::Result<ConferenceId> {
        heading(2, &format!("Enable {USER}"));
        narrate(
            "The admin enables Alice for dial-in conferencing: she gets a static conference ID, and an email tells her.",
        );
        let user = self.user.clone();
        let (outcome, email) = self
            .admin(move |s| {
                let request = EnableRequest {
                    email: Some(user.clone()),
                    display_name: Some("Alice".into()),
                    ..EnableRequest::default()
                };
                let outcome = s.enable_user("demo", &request)?;
                // An existing data folder (--data) may have enabled her
                // already: then send the info email by hand.
                let email_id = match outcome.email_id {
                    Some(id) => id,
                    None => s.send_conference_info("demo", &user)?.email_id,
                };
                let email = s.email(email_id)?;
                Ok((outcome, email))
            })
            .await?;
        let Some(id) = outcome.user.conference_id else {
            return fail(2, "a conference ID", "none");
        };
        saw("conference ID", id);
        if let Some(pin) = &outcome.leader_pin {
            saw("leader PIN", format!("{pin} (shown once, never emailed)"));
        }
        saw("email", format!("to {} \"{}\"", email.to, email.subject));
        let body = email.body.unwrap_or_default();
        let id_line = line_with(&body, "Conference ID:");
        saw("", format!("  | {id_line}"));
        check(
            2,
            id_line.contains(&id.to_string()),
            format!("the email's ID line names {id}"),
            &id_line,
        )?;
        Ok(id)
    }

    async fn step3(&self, ids: &Ids) -> anyhow::Result<()> {
        heading(3, "Schedule a meeting for tomorrow");
        narrate(&format!(
            "Alice schedules \"{MEETING}\"; its invitation carries her conference ID, and her attendees keep that invitation."
        ));
        let user = self.user.clone();
        let tomorrow = self
            .clock
            .now()
            .checked_add(Duration::from_secs(24 * 3600))
            .context("tomorrow is a valid time")?;
        let meeting = self
            .admin(move |s| Ok(s.schedule_meeting("alice", &user, MEETING, tomorrow)?))
            .await?;
        saw(
            "meeting",
            format!(
                "#{} \"{}\" at {}",
                meeting.id, meeting.subject, meeting.start
            ),
        );
        saw(
            "invitation",
            format!(
                "Conference ID: {} ({})",
                meeting.conference_id,
                invitation(meeting.invitation)
            ),
        );
        check(
            3,
            meeting.conference_id == ids.old && meeting.invitation == InvitationState::Current,
            format!("a current invitation with {}", ids.old),
            format!(
                "{} ({})",
                meeting.conference_id,
                invitation(meeting.invitation)
            ),
        )
    }

    async fn step4(&self, ids: &Ids) -> anyhow::Result<()> {
        heading(4, "A caller dials in with the ID");
        narrate(&format!(
            "An attendee dials {} and enters {}# from the invitation.",
            ids.number, ids.old
        ));
        let report = self.call(ids, &format!("{}#", ids.old), true).await?;
        show_call(&report);
        expect_joined(4, &report)
    }

    async fn step5(&self, ids: &Ids) -> anyhow::Result<ConferenceId> {
        heading(5, "The admin resets Alice's conference ID");
        narrate(
            "Say the ID leaked: the admin resets it. The new ID works at once and the old one \
             stops working at that same instant; Alice gets an email.",
        );
        let user = self.user.clone();
        let old = ids.old;
        let (change, lookup, email) = self
            .admin(move |s| {
                let change = s.reset_conference_id("admin", &user, false)?;
                let lookup = s.lookup(old);
                let email = change.email_id.map(|id| s.email(id)).transpose()?;
                Ok((change, lookup, email))
            })
            .await?;
        let new = change.new_conference_id;
        saw("conference ID", format!("old {} → new {new}", ids.old));
        check(
            5,
            change.old_conference_id == Some(ids.old) && new != ids.old,
            format!("{} replaced by a new ID", ids.old),
            format!(
                "{:?} → {new}",
                change.old_conference_id.map(|i| i.to_string())
            ),
        )?;
        let now = self.clock.now();
        match lookup {
            Lookup::Revoked(revoked) => {
                saw(
                    "directory",
                    format!(
                        "{} is revoked ({}) at {} by operation #{}",
                        ids.old,
                        revoked.cause.as_str(),
                        revoked.at,
                        revoked.operation
                    ),
                );
                check(
                    5,
                    revoked.at == now && Some(revoked.operation) == change.revocation_operation,
                    format!(
                        "revoked at {now} by operation #{}",
                        change.revocation_operation.unwrap_or_default()
                    ),
                    format!(
                        "revoked at {} by operation #{}",
                        revoked.at, revoked.operation
                    ),
                )?;
            }
            Lookup::Valid(_) => return fail(5, format!("{} revoked", ids.old), "still valid"),
            Lookup::Unknown => return fail(5, format!("{} revoked", ids.old), "unknown"),
        }
        if let Some(job) = &change.migration_job
            && let Some(at) = job.next_run_at
        {
            saw(
                "migration",
                format!("job #{} queued, runs after {at}", job.id),
            );
        }
        let Some(email) = email else {
            return fail(
                5,
                "an email to Alice",
                change.email_skipped.as_deref().unwrap_or("none"),
            );
        };
        saw("email", format!("to {} \"{}\"", email.to, email.subject));
        let body = email.body.unwrap_or_default();
        let id_line = line_with(&body, "New conference ID:");
        let number_line = line_with(&body, &ids.number);
        saw("", format!("  | {id_line}"));
        saw("", format!("  | {}", number_line.trim()));
        check(
            5,
            id_line.contains(&new.to_string()) && !number_line.is_empty(),
            format!("\"New conference ID: {new}\" and the number {}", ids.number),
            format!("{id_line:?} / {number_line:?}"),
        )?;
        Ok(new)
    }

    async fn step6(&self, ids: &Ids) -> anyhow::Result<()> {
        heading(6, "A caller with the OLD ID");
        narrate(&format!(
            "An attendee still has the old invitation and enters {}#, three times; the bridge \
             says it is not valid and, after the third try, says goodbye and hangs up.",
            ids.old
        ));
        let digits = format!("{0}#,,,,{0}#,,,,{0}#", ids.old);
        let report = self.call(ids, &digits, false).await?;
        show_call(&report);
        let prompts = report.prompt_ids();
        let not_valid = prompts.iter().filter(|p| **p == PromptId::NotValid).count();
        check(
            6,
            prompts.first() == Some(&PromptId::Welcome)
                && not_valid >= 1
                && prompts.last() == Some(&PromptId::Goodbye)
                && !prompts.contains(&PromptId::Joining),
            "welcome, not-valid…, goodbye (never joining)",
            prompt_list(&report),
        )?;
        let reason = report.bye_reason.clone().unwrap_or_default();
        check(
            6,
            report.hung_up_by == Some(Party::Bridge)
                && report.bye_reason_text.as_deref() == Some(NOT_VALID_REASON)
                && reason.contains("cause=403"),
            format!("the bridge's BYE with Reason: SIP ;cause=403 ;text=\"{NOT_VALID_REASON}\""),
            format!(
                "hung up by {}, Reason {reason:?}",
                report.hung_up_by.map_or("nobody", Party::as_str)
            ),
        )
    }

    async fn step7(&self, ids: &Ids, new: ConferenceId) -> anyhow::Result<()> {
        heading(7, "A caller with the NEW ID joins");
        narrate(&format!(
            "An attendee with the new ID from Alice's email enters {new}#."
        ));
        let report = self.call(ids, &format!("{new}#"), true).await?;
        show_call(&report);
        expect_joined(7, &report)
    }

    async fn step8(&self, ids: &Ids, new: ConferenceId) -> anyhow::Result<()> {
        heading(8, "The meeting invitation is migrated");
        narrate(
            "The invitation for tomorrow still says the old ID: it is stale. The migration \
             service rewrites future meetings 90 minutes after a reset; the clock is a manual \
             one, so we move it forward instead of waiting.",
        );
        let user = self.user.clone();
        let before = self.admin(move |s| Ok(s.meetings(Some(&user))?)).await?;
        let Some(meeting) = before.iter().find(|m| m.subject == MEETING) else {
            return fail(8, format!("the meeting \"{MEETING}\""), "no such meeting");
        };
        saw(
            "before",
            format!(
                "\"{}\" carries {} ({})",
                meeting.subject,
                meeting.conference_id,
                invitation(meeting.invitation)
            ),
        );
        check(
            8,
            meeting.conference_id == ids.old && meeting.invitation == InvitationState::Stale,
            format!("a stale invitation with {}", ids.old),
            format!(
                "{} ({})",
                meeting.conference_id,
                invitation(meeting.invitation)
            ),
        )?;
        let meeting_id = meeting.id;
        let now = self
            .clock
            .advance(MIGRATION_DELAY)
            .map_err(anyhow::Error::msg)?;
        saw("clock", format!("advanced 90 minutes, now {now}"));
        let user = self.user.clone();
        let (jobs, meeting, emails) = self
            .admin(move |s| {
                // The server's ticker may get there first; the service runs
                // one pass at a time, so after this call the job has run.
                s.run_due_migrations()?;
                let jobs = s.migration_jobs(Some(&user))?;
                let meeting = s.meeting(meeting_id)?;
                let emails = s
                    .emails(Some(&user))?
                    .into_iter()
                    .filter(|e| e.kind == EmailKind::MeetingUpdate)
                    .map(|e| s.email(e.id))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((jobs, meeting, emails))
            })
            .await?;
        let Some(job) = jobs.last() else {
            return fail(8, "a migration job", "none");
        };
        saw(
            "migration",
            format!(
                "job #{} {} ({} meeting(s) updated)",
                job.id,
                job.state.as_str(),
                job.meetings_updated
            ),
        );
        check(
            8,
            job.state == JobState::Succeeded && job.meetings_updated >= 1,
            "the job succeeded and updated the meeting",
            format!(
                "{} ({} updated){}",
                job.state.as_str(),
                job.meetings_updated,
                job.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        )?;
        saw(
            "after",
            format!(
                "\"{}\" carries {} ({})",
                meeting.subject,
                meeting.conference_id,
                invitation(meeting.invitation)
            ),
        );
        check(
            8,
            meeting.conference_id == new && meeting.invitation == InvitationState::Migrated,
            format!("the invitation migrated to {new}"),
            format!(
                "{} ({})",
                meeting.conference_id,
                invitation(meeting.invitation)
            ),
        )?;
        let Some(email) = emails.last() else {
            return fail(8, "an updated-invitation email", "none");
        };
        saw("email", format!("to {} \"{}\"", email.to, email.subject));
        let body = email.body.clone().unwrap_or_default();
        let id_line = line_with(&body, "Conference ID:");
        saw("", format!("  | {id_line}"));
        check(
            8,
            id_line.contains(&new.to_string()),
            format!("the updated invitation names {new}"),
            id_line,
        )
    }

    /// One call from the project's caller: `digits` once the welcome plays;
    /// a joining caller stays a moment, then hangs up; otherwise the call
    /// waits for the bridge's BYE.
    async fn call(&self, ids: &Ids, digits: &str, joins: bool) -> anyhow::Result<CallReport> {
        let mut config = CallConfig::new(format!("sip:{}@{}", ids.number, self.sip));
        config.remote = Some(self.sip);
        config.dtmf = DtmfPlan::parse(digits, DtmfMethod::Rfc4733)?;
        config.hang_up = if joins {
            // Long enough after "joining" to hear "you are the first person".
            let stay = if self.fast { 2500 } else { 4000 };
            HangUp::AfterJoined(Duration::from_millis(stay))
        } else {
            HangUp::WaitForBye
        };
        config.timeout = CALL_DEADLINE;
        config.seed = Some(self.seed.fetch_add(1, Ordering::Relaxed));
        println!("  calling sip:{}@{} …", ids.number, self.sip);
        match place_call(config, std::future::pending::<()>()).await {
            Ok(report) => Ok(report),
            Err(CallError::Timeout { report, .. }) => {
                show_call(&report);
                anyhow::bail!(
                    "the demo call did not end within {}",
                    humantime::format_duration(CALL_DEADLINE)
                )
            }
            Err(e) => Err(anyhow::Error::new(e).context("placing the demo call")),
        }
    }
}

fn heading(n: u32, title: &str) {
    println!();
    println!("Step {n}. {title}");
    println!("{}", "-".repeat(title.len() + 9));
}

fn narrate(text: &str) {
    println!("{text}");
}

fn saw(label: &str, value: impl Display) {
    if label.is_empty() {
        println!("  {:<15} {value}", "");
    } else {
        println!("  {:<15} {value}", format!("{label}:"));
    }
}

/// A step's check: on a surprise, prints expected vs seen and fails the demo.
fn check(step: u32, ok: bool, expected: impl Display, seen: impl Display) -> anyhow::Result<()> {
    if ok {
        return Ok(());
    }
    fail(step, expected, seen)
}

fn fail<T>(step: u32, expected: impl Display, seen: impl Display) -> anyhow::Result<T> {
    println!("  FAILED: expected {expected}");
    println!("          saw      {seen}");
    anyhow::bail!("step {step} failed: expected {expected}, saw {seen}")
}

fn expect_joined(step: u32, report: &CallReport) -> anyhow::Result<()> {
    check(
        step,
        report.prompt_ids() == [PromptId::Welcome, PromptId::Joining, PromptId::FirstPerson]
            && report.outcome == Outcome::Completed
            && report.hung_up_by == Some(Party::Caller),
        "welcome, joining, first-person; completed, hung up by the caller",
        format!(
            "{}; {}, hung up by {}",
            prompt_list(report),
            report.outcome,
            report.hung_up_by.map_or("nobody", Party::as_str)
        ),
    )
}

fn invitation(state: InvitationState) -> &'static str {
    match state {
        InvitationState::Current => "current",
        InvitationState::Stale => "stale",
        InvitationState::Migrated => "migrated",
    }
}

/// The first line of `body` containing `needle`, trimmed; empty if none.
fn line_with(body: &str, needle: &str) -> String {
    body.lines()
        .find(|l| l.contains(needle))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

fn prompt_list(report: &CallReport) -> String {
    if report.prompts.is_empty() {
        return "(no prompts)".into();
    }
    report
        .prompts
        .iter()
        .map(|p| p.prompt.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// What the caller heard and pressed, how it ended, and a short ladder.
fn show_call(report: &CallReport) {
    let heard = report
        .prompts
        .iter()
        .map(|p| format!("{} ({})", p.prompt.as_str(), secs(p.started_at)))
        .collect::<Vec<_>>()
        .join(", ");
    saw(
        "heard",
        if heard.is_empty() {
            "(nothing)".into()
        } else {
            heard
        },
    );
    let pressed = report.digit_text();
    if !pressed.is_empty() {
        let method = report.digits.first().map_or("", |d| d.method.as_str());
        saw("pressed", format!("{pressed} ({method})"));
    }
    let who = report
        .hung_up_by
        .map(|p| format!(", hung up by the {}", p.as_str()))
        .unwrap_or_default();
    saw(
        "outcome",
        format!("{}{who} after {}", report.outcome, secs(report.duration)),
    );
    if let Some(reason) = &report.bye_reason {
        saw("Reason", reason);
    }
    println!("  ladder:");
    let lines: Vec<String> = report
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
            format!("    {:>7}  {arrow} {line}", secs(l.at))
        })
        .collect();
    const HEAD: usize = 5;
    const TAIL: usize = 3;
    if lines.len() <= HEAD + TAIL + 1 {
        lines.iter().for_each(|l| println!("{l}"));
    } else {
        lines[..HEAD].iter().for_each(|l| println!("{l}"));
        println!("    … {} more", lines.len() - HEAD - TAIL);
        lines[lines.len() - TAIL..]
            .iter()
            .for_each(|l| println!("{l}"));
    }
}
