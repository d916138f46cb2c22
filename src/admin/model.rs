//! The admin model: tenant, users, meetings, migration jobs, emails and
//! revocations, as the service returns them (and as the API shows them).
//! Nothing here holds a PIN in clear: users carry it masked.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::{ConferenceId, EmailAddress, PhoneNumber};
use crate::time::Timestamp;

pub type UserId = i64;
pub type MeetingId = i64;
pub type TenantId = i64;
pub type OperationId = i64;
pub type JobId = i64;
pub type EmailId = i64;

/// How a tenant's meetings get conference IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConferenceIdMode {
    /// Each user has one static ID that all their meetings carry.
    Static,
    /// Each meeting gets its own unique ID; there is no static ID to reset.
    DynamicOnly,
}

impl FromStr for ConferenceIdMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "static" => Ok(Self::Static),
            "dynamic-only" => Ok(Self::DynamicOnly),
            other => Err(format!(
                "'{other}' is not a conference ID mode: use static or dynamic-only"
            )),
        }
    }
}

impl fmt::Display for ConferenceIdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Static => "static",
            Self::DynamicOnly => "dynamic-only",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NumberKind {
    Toll,
    TollFree,
}

impl FromStr for NumberKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "toll" => Ok(Self::Toll),
            "toll-free" => Ok(Self::TollFree),
            other => Err(format!(
                "'{other}' is not a number kind: use toll or toll-free"
            )),
        }
    }
}

impl fmt::Display for NumberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Toll => "toll",
            Self::TollFree => "toll-free",
        })
    }
}

/// A dial-in service number of the tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialInNumber {
    pub number: PhoneNumber,
    pub kind: NumberKind,
    /// Printed in emails and invitations.
    pub default: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub domain: String,
    pub conference_id_mode: ConferenceIdMode,
    pub send_emails_automatically: bool,
    pub leader_pin_length: u8,
    pub migrate_meetings_automatically: bool,
    pub dial_in_numbers: Vec<DialInNumber>,
}

impl Tenant {
    /// The numbers emails print: the defaults, or all when none is marked.
    pub fn default_numbers(&self) -> Vec<&DialInNumber> {
        let defaults: Vec<_> = self.dial_in_numbers.iter().filter(|n| n.default).collect();
        if defaults.is_empty() {
            self.dial_in_numbers.iter().collect()
        } else {
            defaults
        }
    }
}

/// Who provides a user's dial-in conferencing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Provider {
    Microsoft,
    /// A third-party audio conferencing provider (ACP) with its own numbers.
    ThirdParty {
        name: String,
        #[serde(default)]
        numbers: Vec<PhoneNumber>,
    },
}

impl Provider {
    pub fn is_microsoft(&self) -> bool {
        matches!(self, Provider::Microsoft)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Microsoft => f.write_str("microsoft"),
            Provider::ThirdParty { name, .. } => write!(f, "third-party ({name})"),
        }
    }
}

/// A user as listings show it: the PIN is masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: EmailAddress,
    pub display_name: String,
    pub enabled: bool,
    pub provider: Provider,
    pub conference_id: Option<ConferenceId>,
    /// The ID this user had before the most recent revocation, if any.
    pub previous_conference_id: Option<ConferenceId>,
    /// `*****` when a PIN is set; the PIN itself is never listed.
    pub leader_pin: Option<String>,
    pub default_service_number: Option<PhoneNumber>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Whether a meeting's invitation still carries an ID that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InvitationState {
    /// The invitation carries the organizer's current ID (or its own dynamic ID).
    Current,
    /// The invitation carries an ID that was revoked: callers will be turned away.
    Stale,
    /// A migration rewrote the invitation to the current ID.
    Migrated,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meeting {
    pub id: MeetingId,
    pub organizer: EmailAddress,
    pub subject: String,
    pub start: Timestamp,
    /// The ID printed in the invitation.
    pub conference_id: ConferenceId,
    /// The meeting has its own ID (dynamic-only tenant).
    pub dynamic: bool,
    pub invitation: InvitationState,
    pub migrated_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Pending,
    InProgress,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::InProgress => "in-progress",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Self::Pending),
            "in-progress" => Ok(Self::InProgress),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown job state '{other}'")),
        }
    }
}

/// A meeting migration job for one user (the Meeting Migration Service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationJob {
    pub id: JobId,
    pub user: EmailAddress,
    pub state: JobState,
    /// `reset-id`, `set-id` or `manual`.
    pub trigger: String,
    pub queued_at: Timestamp,
    /// When the next run may start (at least 90 minutes after queueing).
    pub next_run_at: Option<Timestamp>,
    /// Runs so far, the first one included.
    pub runs: u32,
    pub last_error: Option<String>,
    pub finished_at: Option<Timestamp>,
    pub meetings_updated: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmailKind {
    ConferenceInfo,
    IdReset,
    PinReset,
    MeetingUpdate,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::ConferenceInfo => "conference-info",
            EmailKind::IdReset => "id-reset",
            EmailKind::PinReset => "pin-reset",
            EmailKind::MeetingUpdate => "meeting-update",
        }
    }
}

impl FromStr for EmailKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "conference-info" => Ok(Self::ConferenceInfo),
            "id-reset" => Ok(Self::IdReset),
            "pin-reset" => Ok(Self::PinReset),
            "meeting-update" => Ok(Self::MeetingUpdate),
            other => Err(format!("unknown email kind '{other}'")),
        }
    }
}

/// An email in the outbox: queued at commit, delivered to the `.eml` folder
/// (and the SMTP relay, when one is set) right after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub id: EmailId,
    pub to: EmailAddress,
    pub kind: EmailKind,
    pub subject: String,
    pub created_at: Timestamp,
    /// `queued` or `delivered`.
    pub status: String,
    pub delivered_at: Option<Timestamp>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The `.eml` file name in the outbox folder, once written.
    pub file: Option<String>,
    /// The plain-text body (with `show`, not in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Why an ID stopped working.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationCause {
    ResetId,
    SetId,
    Disable,
    ReplaceProvider,
}

impl RevocationCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResetId => "reset-id",
            Self::SetId => "set-id",
            Self::Disable => "disable",
            Self::ReplaceProvider => "replace-provider",
        }
    }
}

impl FromStr for RevocationCause {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reset-id" => Ok(Self::ResetId),
            "set-id" => Ok(Self::SetId),
            "disable" => Ok(Self::Disable),
            "replace-provider" => Ok(Self::ReplaceProvider),
            other => Err(format!("unknown revocation cause '{other}'")),
        }
    }
}

/// The audit record of one revoked ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revocation {
    pub conference_id: ConferenceId,
    pub user: EmailAddress,
    pub cause: RevocationCause,
    /// The admin operation that revoked it (see the operations log).
    pub operation_id: OperationId,
    pub at: Timestamp,
    /// Who did it: the admin token's name, or the local CLI.
    pub actor: String,
}
