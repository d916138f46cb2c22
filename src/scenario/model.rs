//! The scenario file's shape, as serde types: the fixture (tenant, numbers,
//! users, meetings) and the steps with their expectations.
//!
//! Every table denies unknown keys, so a typo is an error with its line, not
//! a silently skipped check. Values that need the rest of the file to be
//! checked (references to users, step names) are checked by
//! [`super::Scenario::from_str`] after parsing; this module only checks what
//! a value can say about itself (a duration, a prompt name, a `${…}`
//! template's syntax).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::admin::model::{ConferenceIdMode, EmailKind, JobState, NumberKind};
use crate::caller::{HangUp, Transport};
use crate::media::dtmf::DtmfMethod;
use crate::media::prompts::PromptId;

// ------------------------------------------------------------------ the file

/// The file as written. [`super::Scenario`] wraps it with its file name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// One line saying what the scenario shows.
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the scenario needs a clock it can move (`advance` steps).
    #[serde(default)]
    pub clock: ClockNeed,
    #[serde(default)]
    pub tenant: TenantSettings,
    /// The tenant's dial-in numbers; none means the built-in default
    /// (+14255550100).
    #[serde(default, rename = "number")]
    pub numbers: Vec<NumberSpec>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserSpec>,
    #[serde(default, rename = "meeting")]
    pub meetings: Vec<MeetingSpec>,
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
}

/// What a scenario with `advance` steps does on a bridge whose clock can't
/// be moved (a running bridge on the real clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockNeed {
    /// The scenario is skipped there (the default).
    #[default]
    Required,
    /// The scenario runs, its `advance` steps (and their expectations)
    /// skipped, each with a note.
    SkipAdvance,
}

/// Tenant settings; an absent key keeps the default tenant's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// `static` or `dynamic-only`.
    pub conference_id_mode: Option<ConferenceIdMode>,
    /// Email users on enable, reset, PIN reset.
    pub send_emails: Option<bool>,
    /// 4 to 12.
    pub leader_pin_length: Option<u8>,
    /// Queue a meeting migration job on every ID change.
    pub migrate_meetings: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberSpec {
    pub number: Spanned<String>,
    /// `toll` or `toll-free`.
    #[serde(default = "toll")]
    pub kind: NumberKind,
    #[serde(default)]
    pub default: bool,
}

fn toll() -> NumberKind {
    NumberKind::Toll
}

/// A user of the fixture, known in the file by `name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The handle steps and `${name.field}` use.
    pub name: Spanned<String>,
    pub email: Spanned<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub provider: ProviderSpec,
    /// A fixed conference ID; otherwise the service picks one.
    #[serde(default)]
    pub conference_id: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// `provider = "microsoft"` or `provider = { third-party = "InterCall" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderSpec {
    #[default]
    Microsoft,
    ThirdParty(String),
}

/// A meeting scheduled before the first step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingSpec {
    pub name: Spanned<String>,
    /// A user's name.
    pub organizer: Spanned<String>,
    pub subject: String,
    /// When it starts, from the scenario's start (`+1d`).
    #[serde(default = "one_day")]
    pub start: Offset,
}

fn one_day() -> Offset {
    Offset(Duration::from_secs(86_400))
}

// ------------------------------------------------------------------ steps

/// One step: a name, exactly one action (or none, for a step that only
/// checks), and expectations.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawStep")]
pub struct Step {
    pub name: Spanned<String>,
    pub action: Action,
    /// Calls at once for a `call` step; they run in the background while
    /// the next steps go on, until a `wait_for` names this step (or the
    /// scenario ends).
    pub concurrent: Option<Spanned<u32>>,
    pub expect: Option<Expect>,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Place a call (or `concurrent` calls) and, unless concurrent, wait
    /// for it to end.
    Call(CallSpec),
    Admin(AdminSpec),
    /// Move the scenario clock forward (due jobs run).
    Advance(Duration),
    /// Let real time pass.
    Wait(Duration),
    /// Wait until the calls of a concurrent step have ended.
    WaitFor(Spanned<String>),
    /// Wait until this many calls have joined a meeting since the scenario
    /// began (callers of a concurrent step are in, say, before a reset).
    WaitJoined(u32),
    /// Snapshot a user's fields under a new name.
    Capture(CaptureSpec),
    /// Only check the expectations.
    Check,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Call(_) => "call",
            Action::Admin(_) => "admin",
            Action::Advance(_) => "advance",
            Action::Wait(_) => "wait",
            Action::WaitFor(_) => "wait_for",
            Action::WaitJoined(_) => "wait_joined",
            Action::Capture(_) => "capture",
            Action::Check => "check",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    call: Option<CallSpec>,
    admin: Option<AdminSpec>,
    advance: Option<DurationText>,
    wait: Option<DurationText>,
    wait_for: Option<Spanned<String>>,
    wait_joined: Option<u32>,
    capture: Option<CaptureSpec>,
    concurrent: Option<Spanned<u32>>,
    expect: Option<Expect>,
}

impl TryFrom<RawStep> for Step {
    type Error = String;

    fn try_from(raw: RawStep) -> Result<Step, String> {
        let mut actions = Vec::new();
        if let Some(call) = raw.call {
            actions.push(Action::Call(call));
        }
        if let Some(admin) = raw.admin {
            actions.push(Action::Admin(admin));
        }
        if let Some(d) = raw.advance {
            actions.push(Action::Advance(d.0));
        }
        if let Some(d) = raw.wait {
            actions.push(Action::Wait(d.0));
        }
        if let Some(step) = raw.wait_for {
            actions.push(Action::WaitFor(step));
        }
        if let Some(n) = raw.wait_joined {
            actions.push(Action::WaitJoined(n));
        }
        if let Some(capture) = raw.capture {
            actions.push(Action::Capture(capture));
        }
        let name = raw.name.get_ref().clone();
        if actions.len() > 1 {
            let kinds: Vec<_> = actions.iter().map(Action::kind).collect();
            return Err(format!(
                "step '{name}' has {} actions ({}): give each step one of call, admin, advance, wait, wait_for, wait_joined, capture",
                actions.len(),
                kinds.join(", ")
            ));
        }
        let action = actions.pop().unwrap_or(Action::Check);
        if matches!(action, Action::Check) && raw.expect.is_none() {
            return Err(format!(
                "step '{name}' does nothing: give it one of call, admin, advance, wait, wait_for, wait_joined, capture, or an expect table"
            ));
        }
        if raw.concurrent.is_some() && !matches!(action, Action::Call(_)) {
            return Err(format!(
                "step '{name}': concurrent is the number of calls of a call step; this step is {}",
                action.kind()
            ));
        }
        Ok(Step {
            name: raw.name,
            action,
            concurrent: raw.concurrent,
            expect: raw.expect,
        })
    }
}

/// A call placed by the project's caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    /// The dialed number (`+14255550100`); the request URI's user part.
    pub to: Template,
    /// The caller ID (the From user part).
    #[serde(default)]
    pub from: Option<Template>,
    /// `rfc4733` (default), `info` or `inband`.
    #[serde(default)]
    pub method: Method,
    /// The keys to press, `${alice.conference_id}#`; a `,` pauses 500 ms.
    #[serde(default)]
    pub digits: Option<Template>,
    /// Time between keys (default the caller's 150 ms).
    #[serde(default)]
    pub gap: Option<DurationText>,
    /// Start pressing this long after the answer, instead of when the
    /// welcome prompt starts.
    #[serde(default)]
    pub start_after: Option<DurationText>,
    /// `wait-for-bye`, `after-joined 2s` (default `after-joined 1s`),
    /// `after-answer 5s`, `cancel-after 100ms`.
    #[serde(default)]
    pub hang_up: HangUpPolicy,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub transport: TransportSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method(pub DtmfMethod);

impl Default for Method {
    fn default() -> Self {
        Method(DtmfMethod::Rfc4733)
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        [DtmfMethod::Rfc4733, DtmfMethod::Info, DtmfMethod::Inband]
            .into_iter()
            .find(|m| m.as_str() == s)
            .map(Method)
            .ok_or_else(|| format!("'{s}' is not a DTMF method: use rfc4733, info or inband"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HangUpPolicy(pub HangUp);

impl Default for HangUpPolicy {
    fn default() -> Self {
        HangUpPolicy(HangUp::AfterJoined(Duration::from_secs(1)))
    }
}

impl FromStr for HangUpPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<HangUpPolicy, String> {
        let bad = || {
            format!(
                "'{s}' is not a hang-up policy: use wait-for-bye, after-joined DURATION, after-answer DURATION or cancel-after DURATION"
            )
        };
        let s = s.trim();
        if s == "wait-for-bye" {
            return Ok(HangUpPolicy(HangUp::WaitForBye));
        }
        let (kind, rest) = s.split_once(' ').ok_or_else(bad)?;
        let d = humantime::parse_duration(rest.trim()).map_err(|e| format!("{}: {e}", bad()))?;
        let policy = match kind {
            "after-joined" => HangUp::AfterJoined(d),
            "after-answer" => HangUp::AfterAnswer(d),
            "cancel-after" => HangUp::CancelAfter(d),
            _ => return Err(bad()),
        };
        Ok(HangUpPolicy(policy))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportSpec(pub Transport);

impl FromStr for TransportSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<TransportSpec, String> {
        match s {
            "udp" => Ok(TransportSpec(Transport::Udp)),
            "tcp" => Ok(TransportSpec(Transport::Tcp)),
            _ => Err(format!("'{s}' is not a SIP transport: use udp or tcp")),
        }
    }
}

/// An admin action, as `dialin admin` would do it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    pub action: Spanned<AdminAction>,
    /// The user acted on (all actions but `set-tenant`).
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    /// Don't email the user (`--no-email`).
    #[serde(default)]
    pub no_email: bool,
    /// `set-id`: the new ID; `enable`: a fixed ID.
    #[serde(default)]
    pub conference_id: Option<Template>,
    /// `enable`: the provider, like `[[user]] provider` (default microsoft).
    #[serde(default)]
    pub provider: Option<ProviderSpec>,
    /// `enable`: move the user from their current provider to `provider`,
    /// revoking the old provider's ID (`--replace-provider`).
    #[serde(default)]
    pub replace_provider: bool,
    /// `schedule-meeting`: the name later steps use for it.
    #[serde(default)]
    pub meeting: Option<Spanned<String>>,
    /// `schedule-meeting`: the subject (default "Meeting").
    #[serde(default)]
    pub subject: Option<String>,
    /// `schedule-meeting`: the start, from now (default `+1d`).
    #[serde(default)]
    pub start: Option<Offset>,
    /// `set-tenant`: the settings to change.
    #[serde(default)]
    pub tenant: Option<TenantSettings>,
    /// The action must fail with an error containing this text.
    #[serde(default)]
    pub expect_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminAction {
    Enable,
    ResetId,
    SetId,
    ResetPin,
    SendInfo,
    Disable,
    ScheduleMeeting,
    StartMigration,
    SetTenant,
}

impl AdminAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::Enable => "enable",
            AdminAction::ResetId => "reset-id",
            AdminAction::SetId => "set-id",
            AdminAction::ResetPin => "reset-pin",
            AdminAction::SendInfo => "send-info",
            AdminAction::Disable => "disable",
            AdminAction::ScheduleMeeting => "schedule-meeting",
            AdminAction::StartMigration => "start-migration",
            AdminAction::SetTenant => "set-tenant",
        }
    }
}

/// `capture = { user = "alice", as = "alice_before" }`: later steps read
/// `${alice_before.conference_id}` as it was at this step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    pub user: Spanned<String>,
    #[serde(rename = "as")]
    pub name: Spanned<String>,
}

// ------------------------------------------------------------------ expectations

/// What must hold after a step. The call keys apply to a `call` step (to
/// every call of a concurrent one); the count keys to a concurrent step;
/// the state lists to any step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The prompts heard, in order.
    #[serde(default)]
    pub prompts: Option<Vec<PromptName>>,
    pub outcome: Option<CallOutcome>,
    /// The conference ID of the meeting joined.
    pub conference_id: Option<Template>,
    /// The call record's attempt results, in order.
    pub attempts: Option<Vec<AttemptName>>,
    pub hung_up_by: Option<Side>,
    /// The Reason header of the BYE.
    pub reason: Option<ReasonExpect>,
    /// The final response to the INVITE (200, 404, …).
    pub status: Option<u16>,
    /// From sending `#` to the decision prompt (`joining`, `not-valid`).
    pub decision_within: Option<DurationText>,

    /// Concurrent steps: how many calls joined, were rejected, heard no input.
    pub joined: Option<u32>,
    pub rejected: Option<u32>,
    pub no_input: Option<u32>,
    /// Every accepted attempt happened before this step completed.
    pub all_accepted_before: Option<Spanned<String>>,
    /// No attempt was accepted after this step completed.
    pub none_accepted_after: Option<Spanned<String>>,

    #[serde(default)]
    pub email: Vec<EmailExpect>,
    #[serde(default)]
    pub meeting: Vec<MeetingExpect>,
    #[serde(default)]
    pub migration: Vec<MigrationExpect>,
    #[serde(default)]
    pub roster: Vec<RosterExpect>,
    #[serde(default)]
    pub lookup: Vec<LookupExpect>,
}

impl Expect {
    /// The keys that only make sense for a call, by name, when present.
    pub fn call_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let present = [
            ("prompts", self.prompts.is_some()),
            ("outcome", self.outcome.is_some()),
            ("conference_id", self.conference_id.is_some()),
            ("attempts", self.attempts.is_some()),
            ("hung_up_by", self.hung_up_by.is_some()),
            ("reason", self.reason.is_some()),
            ("status", self.status.is_some()),
            ("decision_within", self.decision_within.is_some()),
        ];
        for (key, is) in present {
            if is {
                keys.push(key);
            }
        }
        keys
    }

    /// The keys that only make sense for a concurrent step, when present.
    pub fn count_keys(&self) -> Vec<&'static str> {
        let present = [
            ("joined", self.joined.is_some()),
            ("rejected", self.rejected.is_some()),
            ("no_input", self.no_input.is_some()),
            ("all_accepted_before", self.all_accepted_before.is_some()),
            ("none_accepted_after", self.none_accepted_after.is_some()),
        ];
        present
            .into_iter()
            .filter(|(_, is)| *is)
            .map(|(k, _)| k)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallOutcome {
    /// Joined a meeting.
    Joined,
    /// The bridge turned the caller away after too many bad IDs.
    Rejected,
    /// The bridge gave up waiting for digits.
    NoInput,
    /// The INVITE got a final error response (see `status`).
    NotAnswered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptName {
    Accepted,
    Unknown,
    Revoked,
    Malformed,
    NoInput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Caller,
    Bridge,
}

/// `reason = { cause = 403, text = "Conference ID not valid" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonExpect {
    #[serde(default = "sip")]
    pub protocol: String,
    pub cause: u16,
    /// Contained in the Reason's text.
    #[serde(default)]
    pub text: Option<String>,
}

fn sip() -> String {
    "SIP".into()
}

/// An email in the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailExpect {
    /// A user's name.
    pub to: Spanned<String>,
    /// `conference-info`, `id-reset`, `pin-reset`, `meeting-update`.
    #[serde(default)]
    pub kind: Option<EmailKind>,
    /// How many such emails; absent means at least one.
    #[serde(default)]
    pub count: Option<u32>,
    /// The newest such email's body contains each of these.
    #[serde(default)]
    pub contains: Vec<Template>,
    /// … and none of these.
    #[serde(default)]
    pub not_contains: Vec<Template>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingExpect {
    /// A meeting's name (fixture or `schedule-meeting`).
    pub name: Spanned<String>,
    #[serde(default)]
    pub invitation: Option<Invitation>,
    /// The ID the invitation carries.
    #[serde(default)]
    pub conference_id: Option<Template>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invitation {
    Current,
    Stale,
    Migrated,
}

/// The user's newest migration job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationExpect {
    pub user: Spanned<String>,
    /// `pending`, `in-progress`, `succeeded`, `failed`.
    pub state: JobState,
    #[serde(default)]
    pub meetings_updated: Option<u32>,
}

/// Who is in a meeting right now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterExpect {
    pub conference_id: Template,
    pub callers: u32,
}

/// What the bridge's directory says about an ID.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupExpect {
    pub conference_id: Template,
    pub result: LookupResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LookupResult {
    Active,
    Revoked,
    Unknown,
}

// ------------------------------------------------------------------ values

/// A prompt name from [`PromptId`]; a wrong one lists the valid ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptName(pub PromptId);

impl FromStr for PromptName {
    type Err = String;
    fn from_str(s: &str) -> Result<PromptName, String> {
        s.parse::<PromptId>().map(PromptName).map_err(|_| {
            let names: Vec<_> = PromptId::ALL.iter().map(|p| p.as_str()).collect();
            format!("'{s}' is not a prompt: use one of {}", names.join(", "))
        })
    }
}

/// `500ms`, `2h`, `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl FromStr for DurationText {
    type Err = String;
    fn from_str(s: &str) -> Result<DurationText, String> {
        humantime::parse_duration(s)
            .map(DurationText)
            .map_err(|e| format!("'{s}' is not a duration ({e}): write it like 500ms, 2s, 90m, 2h"))
    }
}

/// `+1d`, `+90m`: a time from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub Duration);

impl FromStr for Offset {
    type Err = String;
    fn from_str(s: &str) -> Result<Offset, String> {
        let bad = |why: String| {
            format!("'{s}' is not a time from now ({why}): write it like +1d or +90m")
        };
        let rest = s
            .strip_prefix('+')
            .ok_or_else(|| bad("it starts with '+'".into()))?;
        humantime::parse_duration(rest)
            .map(Offset)
            .map_err(|e| bad(e.to_string()))
    }
}

/// Deserializes the string-shaped values above through their `FromStr`,
/// so that the error carries the value's line.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

deserialize_from_str!(
    Method,
    HangUpPolicy,
    TransportSpec,
    PromptName,
    DurationText,
    Offset
);

// ------------------------------------------------------------------ templates

/// A string with `${name.field}` references, resolved when a step runs.
///
/// `name` is a user, a meeting or a capture; the fields are
/// [`USER_FIELDS`] and [`MEETING_FIELDS`]. The syntax is checked when the
/// file is parsed; that the names and fields exist is checked by
/// [`super::Scenario::from_str`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
    span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Reference { name: String, field: String },
}

/// Fields of a user (and of a capture of one).
pub const USER_FIELDS: [&str; 5] = [
    "email",
    "display_name",
    "conference_id",
    "previous_conference_id",
    "leader_pin",
];

/// Fields of a meeting.
pub const MEETING_FIELDS: [&str; 2] = ["conference_id", "subject"];

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("${{{name}.{field}}} has no value here")]
pub struct Unresolved {
    pub name: String,
    pub field: String,
}

impl Template {
    /// Parses `text`; `span` is where it stands in the file (for errors).
    pub fn parse(text: &str, span: Range<usize>) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("'{text}': a '${{' is not closed: write ${{user.field}}"))?;
            let inner = &after[..end];
            let (name, field) = inner.split_once('.').ok_or_else(|| {
                format!("'{text}': '${{{inner}}}' has no field: write ${{user.field}}, e.g. ${{alice.conference_id}}")
            })?;
            let ok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            };
            if !ok(name) || !ok(field) {
                return Err(format!(
                    "'{text}': '${{{inner}}}' is not a reference: names and fields are letters, digits, '_' and '-'"
                ));
            }
            if !USER_FIELDS.contains(&field) && !MEETING_FIELDS.contains(&field) {
                return Err(format!(
                    "'{text}': '{field}' is not a field: a user has {}; a meeting has {}",
                    USER_FIELDS.join(", "),
                    MEETING_FIELDS.join(", ")
                ));
            }
            parts.push(Part::Reference {
                name: name.to_string(),
                field: field.to_string(),
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
            span,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Where the value stands in the file (byte offsets).
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The `(name, field)` pairs referenced.
    pub fn references(&self) -> impl Iterator<Item = (&str, &str)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Reference { name, field } => Some((name.as_str(), field.as_str())),
            Part::Literal(_) => None,
        })
    }

    /// The text with every reference replaced by `lookup(name, field)`.
    pub fn resolve(
        &self,
        lookup: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<String, Unresolved> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Reference { name, field } => {
                    let value = lookup(name, field).ok_or_else(|| Unresolved {
                        name: name.clone(),
                        field: field.clone(),
                    })?;
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Spanned::<String>::deserialize(d)?;
        Template::parse(text.get_ref(), text.span()).map_err(serde::de::Error::custom)
    }
}
