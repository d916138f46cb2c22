//! The admin service: the one writer of admin state.
//!
//! Every change goes through here: validate, commit to the store in one
//! transaction (the change, its operation record, any revocation, queued
//! emails and migration jobs), apply the change to the [`Directory`], then
//! return. Commits and directory updates happen under one mutex, so the
//! directory sees changes in commit order, and by the time a reset returns
//! the old ID is already rejected (linearizable revocation).
//!
//! Why a std `Mutex` and synchronous code: SQLite allows one writer anyway,
//! a commit takes well under a millisecond, and async callers wrap calls in
//! `spawn_blocking`. Emails are delivered after the lock is released.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::error::{AdminError, Result};
use super::ids::{ConferenceId, EmailAddress, MICROSOFT_ID_LEN, PhoneNumber, Pin};
use super::import::{self, ImportRow};
use super::mail::{self, Composed, Outbox, Recipient, SmtpRelay};
use super::model::*;
use super::store::{self, IdStatus, UserRow};
use crate::directory::{Change, Directory, Entry, Lookup, PinDigits, Revoked, Target};
use crate::time::{Clock, SystemClock, Timestamp};

/// Shortest and longest conference ID an admin may set for a third-party provider.
pub const THIRD_PARTY_ID_LEN: std::ops::RangeInclusive<usize> = 4..=ConferenceId::MAX_LEN;

/// How to open a [`Service`].
#[derive(Debug, Clone)]
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// Seed for IDs and PINs (tests only); `None` seeds from the OS.
    pub rng_seed: Option<u64>,
    pub smtp: Option<SmtpRelay>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            rng_seed: None,
            smtp: None,
        }
    }
}

struct Inner {
    conn: Connection,
    /// A CSPRNG (ChaCha12) for conference IDs and PINs.
    rng: StdRng,
}

pub struct Service {
    inner: Mutex<Inner>,
    /// One delivery pass at a time, so a queued email is not sent twice.
    delivery: Mutex<()>,
    /// The tenant's dial-in numbers, for the bridge's check of each INVITE
    /// without a store read; replaced under the write lock after a commit.
    numbers: RwLock<Arc<[PhoneNumber]>>,
    /// A second connection for WAL checkpoints, so their fsyncs run beside
    /// commits instead of inside one, under the write lock.
    checkpointer: Mutex<Connection>,
    /// One migration pass at a time: a caller that finds a pass running
    /// waits for it, so when its own pass returns, what was due has run.
    migrations: Mutex<()>,
    directory: Arc<Directory>,
    clock: Arc<dyn Clock>,
    outbox: Outbox,
    tenant_id: TenantId,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

/// The tenant a fresh data folder starts with, so the embedded default
/// answers calls with no set-up.
pub fn default_tenant() -> Tenant {
    Tenant {
        id: 0,
        name: "Contoso".into(),
        domain: "contoso.com".into(),
        conference_id_mode: ConferenceIdMode::Static,
        send_emails_automatically: true,
        leader_pin_length: 5,
        migrate_meetings_automatically: true,
        dial_in_numbers: vec![DialInNumber {
            number: "+14255550100".parse().expect("valid literal"),
            kind: NumberKind::Toll,
            default: true,
        }],
    }
}

// ------------------------------------------------------------------ requests and outcomes

/// Enable a user for dial-in conferencing (creating the user if needed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnableRequest {
    #[serde(skip)]
    pub email: Option<EmailAddress>,
    pub display_name: Option<String>,
    /// `None` means Microsoft.
    pub provider: Option<Provider>,
    pub conference_id: Option<ConferenceId>,
    pub default_service_number: Option<PhoneNumber>,
    #[serde(default)]
    pub replace_provider: bool,
    #[serde(default)]
    pub no_email: bool,
}

/// `Debug` masks the PIN.
#[derive(Clone, Serialize)]
pub struct EnableOutcome {
    pub user: User,
    /// The user did not exist before.
    pub created: bool,
    /// Anything changed (enabling an enabled Microsoft user changes nothing).
    pub changed: bool,
    /// The new leader PIN, shown this once.
    pub leader_pin: Option<String>,
    pub email_id: Option<EmailId>,
    /// IDs revoked by replacing the provider.
    pub revoked: Vec<ConferenceId>,
}

/// What a reset or set of a conference ID did.
#[derive(Debug, Clone, Serialize)]
pub struct IdChange {
    pub user: User,
    pub changed: bool,
    pub old_conference_id: Option<ConferenceId>,
    pub new_conference_id: ConferenceId,
    pub revocation_operation: Option<OperationId>,
    pub email_id: Option<EmailId>,
    /// Why no email was sent, when none was.
    pub email_skipped: Option<String>,
    pub migration_job: Option<MigrationJob>,
}

/// `Debug` masks the PIN.
#[derive(Clone, Serialize)]
pub struct PinChange {
    pub user: User,
    /// The new PIN, shown this once and never again.
    pub leader_pin: String,
    pub email_id: Option<EmailId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disabled {
    pub user: User,
    pub changed: bool,
    pub revoked: Vec<ConferenceId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InfoSent {
    pub user: User,
    pub email_id: EmailId,
}

/// `Debug` masks the PIN.
#[derive(Clone, Serialize)]
pub struct ImportLine {
    pub line: usize,
    pub email: EmailAddress,
    pub created: bool,
    pub changed: bool,
    pub conference_id: Option<ConferenceId>,
    pub leader_pin: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub created: usize,
    pub enabled: usize,
    pub unchanged: usize,
    pub users: Vec<ImportLine>,
}

/// A change to tenant settings; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub domain: Option<String>,
    pub conference_id_mode: Option<ConferenceIdMode>,
    pub send_emails_automatically: Option<bool>,
    pub leader_pin_length: Option<u8>,
    pub migrate_meetings_automatically: Option<bool>,
}

/// What one migration run did.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationRun {
    pub job: MigrationJob,
    pub email_ids: Vec<EmailId>,
}

/// The one place a PIN is shown is the JSON answer; `Debug` (logs) masks it.
fn masked(pin: Option<&str>) -> Option<String> {
    pin.map(|p| "*".repeat(p.len()))
}

impl std::fmt::Debug for EnableOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnableOutcome")
            .field("user", &self.user)
            .field("created", &self.created)
            .field("changed", &self.changed)
            .field("leader_pin", &masked(self.leader_pin.as_deref()))
            .field("email_id", &self.email_id)
            .field("revoked", &self.revoked)
            .finish()
    }
}

impl std::fmt::Debug for PinChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinChange")
            .field("user", &self.user)
            .field("leader_pin", &masked(Some(&self.leader_pin)))
            .field("email_id", &self.email_id)
            .finish()
    }
}

impl std::fmt::Debug for ImportLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportLine")
            .field("line", &self.line)
            .field("email", &self.email)
            .field("created", &self.created)
            .field("changed", &self.changed)
            .field("conference_id", &self.conference_id)
            .field("leader_pin", &masked(self.leader_pin.as_deref()))
            .finish()
    }
}

// ------------------------------------------------------------------ the transaction context

/// One admin operation in progress: the open transaction and what to do
/// after it commits.
struct Tx<'a> {
    conn: &'a Connection,
    rng: &'a mut StdRng,
    now: Timestamp,
    actor: &'a str,
    kind: &'static str,
    tenant: Tenant,
    operation: Option<OperationId>,
    changes: Vec<Change>,
    emails: Vec<EmailId>,
    /// The tenant's dial-in numbers, when this operation changed them.
    numbers: Option<Arc<[PhoneNumber]>>,
}

fn number_list(tenant: &Tenant) -> Arc<[PhoneNumber]> {
    tenant
        .dial_in_numbers
        .iter()
        .map(|n| n.number.clone())
        .collect()
}

impl Tx<'_> {
    /// The operation record, created on first use.
    /// The operation record, created on first use; the first user named
    /// is recorded, whichever step creates the record.
    fn operation(&mut self, user: Option<UserId>) -> Result<OperationId> {
        if let Some(op) = self.operation {
            if let Some(user) = user {
                store::set_operation_user(self.conn, op, user)?;
            }
            return Ok(op);
        }
        let op = store::insert_operation(self.conn, self.now, self.actor, self.kind, user)?;
        self.operation = Some(op);
        Ok(op)
    }

    fn user(&self, email: &EmailAddress) -> Result<UserRow> {
        store::find_user(self.conn, email)?.ok_or_else(|| AdminError::UnknownUser(email.clone()))
    }

    fn enabled_user(&self, email: &EmailAddress) -> Result<UserRow> {
        let row = self.user(email)?;
        if !row.user.enabled {
            return Err(AdminError::NotEnabled {
                user: email.clone(),
            });
        }
        Ok(row)
    }

    /// A random ID of `len` digits that was never issued.
    fn fresh_id(&mut self, len: usize) -> Result<ConferenceId> {
        let space = 10u64.pow(len as u32);
        for _ in 0..64 {
            let id = ConferenceId::from_parts(self.rng.random_range(0..space), len)
                .expect("value below 10^len");
            if store::id_status(self.conn, id)? == IdStatus::Free {
                return Ok(id);
            }
        }
        Err(AdminError::Conflict(format!(
            "could not find a free {len}-digit conference ID in 64 tries: the ID space is nearly used up"
        )))
    }

    /// Refuses an ID that is in use or was ever revoked.
    fn check_free(&self, id: ConferenceId) -> Result<()> {
        match store::id_status(self.conn, id)? {
            IdStatus::Free => Ok(()),
            IdStatus::Revoked => Err(AdminError::IdRevoked { id }),
            IdStatus::Active { user, meeting } => {
                let holder = store::user_by_id(self.conn, user)?.user.email;
                Err(AdminError::IdInUse {
                    id,
                    holder: match meeting {
                        Some(m) => format!("meeting {m} of {holder}"),
                        None => holder.to_string(),
                    },
                })
            }
        }
    }

    fn target(&self, row: &UserRow, meeting: Option<MeetingId>) -> Target {
        Target {
            tenant: row.tenant,
            organizer: row.user.id,
            meeting,
            leader_pin: row.pin.as_deref().map(PinDigits::new).unwrap_or_default(),
        }
    }

    fn issue(&mut self, id: ConferenceId, row: &UserRow, meeting: Option<MeetingId>) -> Result<()> {
        let op = self.operation(Some(row.user.id))?;
        store::insert_id(
            self.conn,
            id,
            row.tenant,
            row.user.id,
            meeting,
            self.now,
            op,
        )?;
        let target = self.target(row, meeting);
        self.changes.push(Change::Activate(id, target));
        Ok(())
    }

    fn revoke(
        &mut self,
        id: ConferenceId,
        user: UserId,
        cause: RevocationCause,
    ) -> Result<OperationId> {
        let op = self.operation(Some(user))?;
        store::revoke_id(self.conn, id, self.now, op, cause)?;
        self.changes.push(Change::Revoke(
            id,
            Revoked {
                at: self.now,
                operation: op,
                cause,
                organizer: user,
            },
        ));
        Ok(op)
    }

    /// Revokes every active ID of the user (static and meetings' dynamic ones).
    fn revoke_all(&mut self, user: UserId, cause: RevocationCause) -> Result<Vec<ConferenceId>> {
        let ids = store::active_ids(self.conn, user)?;
        for (id, _) in &ids {
            self.revoke(*id, user, cause)?;
        }
        Ok(ids.into_iter().map(|(id, _)| id).collect())
    }

    /// A random PIN of the tenant's length, avoiding the trivially guessed
    /// ones (all one digit, or a run such as 12345).
    fn new_pin(&mut self) -> Pin {
        let len = self.tenant.leader_pin_length as usize;
        loop {
            let digits: Vec<u8> = (0..len).map(|_| self.rng.random_range(0..10u8)).collect();
            let same = digits.iter().all(|d| *d == digits[0]);
            let run = |step: i8| digits.windows(2).all(|w| (w[1] as i8 - w[0] as i8) == step);
            if !same && !run(1) && !run(-1) {
                let text = digits.iter().map(|d| char::from(b'0' + d)).collect();
                return Pin::from_digits(text)
                    .expect("length comes from the tenant's 4..=12 setting");
            }
        }
    }

    fn queue_email(&mut self, to: &EmailAddress, mail: Composed) -> Result<EmailId> {
        let op = self.operation(None)?;
        let id = store::insert_email(
            self.conn,
            &store::NewEmail {
                to,
                kind: mail.kind,
                subject: &mail.subject,
                body: &mail.body,
                message: &mail.message,
                operation: Some(op),
            },
            self.now,
        )?;
        self.emails.push(id);
        Ok(id)
    }

    /// A pending migration job for the user: the one already waiting, or a new one.
    fn queue_migration(&mut self, row: &UserRow, trigger: &str) -> Result<MigrationJob> {
        if let Some(job) = store::pending_job_for(self.conn, row.user.id)? {
            return Ok(job);
        }
        let mut job = MigrationJob::queued(row.user.email.clone(), trigger, self.now);
        job.id = store::insert_job(self.conn, row.user.id, &job)?;
        Ok(job)
    }

    fn reload(&self, row: &UserRow) -> Result<UserRow> {
        store::user_by_id(self.conn, row.user.id)
    }

    fn save(&self, row: &UserRow) -> Result<()> {
        store::save_user(self.conn, row, self.now)
    }

    fn check_service_number(&self, number: &PhoneNumber) -> Result<()> {
        if self
            .tenant
            .dial_in_numbers
            .iter()
            .any(|n| &n.number == number)
        {
            Ok(())
        } else {
            Err(AdminError::Invalid(format!(
                "{number} is not one of the tenant's dial-in numbers ({}): add it first with \
                 dialin admin tenant number add {number}",
                self.tenant
                    .dial_in_numbers
                    .iter()
                    .map(|n| n.number.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// Enables one user; shared by `enable_user` and `import_users`.
    fn enable(&mut self, req: &EnableRequest, email: &EmailAddress) -> Result<EnableOutcome> {
        let provider = req.provider.clone().unwrap_or(Provider::Microsoft);
        if let Provider::ThirdParty { name, .. } = &provider
            && (name.trim().is_empty() || name.eq_ignore_ascii_case("microsoft"))
        {
            return Err(AdminError::Invalid(format!(
                "'{name}' is not a third-party provider name: give the provider's name, or \
                 leave the provider out for Microsoft"
            )));
        }
        if let Some(n) = &req.default_service_number {
            self.check_service_number(n)?;
        }
        if let Some(name) = &req.display_name
            && (name.trim().is_empty() || name.len() > 256)
        {
            return Err(AdminError::Invalid(
                "a display name is 1 to 256 characters".into(),
            ));
        }

        let (mut row, created) = match store::find_user(self.conn, email)? {
            Some(row) => (row, false),
            None => {
                let name = req
                    .display_name
                    .clone()
                    .unwrap_or_else(|| email.as_str().split('@').next().unwrap_or("").to_string());
                let id = store::insert_user(self.conn, self.tenant.id, email, &name, self.now)?;
                (store::user_by_id(self.conn, id)?, true)
            }
        };

        let mut revoked = Vec::new();
        if row.user.enabled {
            let same_provider = match (&row.user.provider, &provider) {
                (Provider::Microsoft, Provider::Microsoft) => true,
                (Provider::ThirdParty { name: a, .. }, Provider::ThirdParty { name: b, .. }) => {
                    a == b
                }
                _ => false,
            };
            if same_provider {
                if let Some(wanted) = req.conference_id
                    && row.user.conference_id != Some(wanted)
                {
                    return Err(AdminError::Conflict(format!(
                        "{email} is already enabled with conference ID {}: change it with \
                         dialin admin user set-id {email} {wanted}",
                        row.user
                            .conference_id
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "(none)".into())
                    )));
                }
                return Ok(EnableOutcome {
                    user: row.user,
                    created: false,
                    changed: false,
                    leader_pin: None,
                    email_id: None,
                    revoked,
                });
            }
            if !req.replace_provider {
                let current = match &row.user.provider {
                    Provider::ThirdParty { name, .. } => name.clone(),
                    Provider::Microsoft => "microsoft".into(),
                };
                return Err(AdminError::ProviderConflict {
                    user: email.clone(),
                    current,
                    wanted: provider.to_string(),
                });
            }
            revoked = self.revoke_all(row.user.id, RevocationCause::ReplaceProvider)?;
            row.user.conference_id = None;
        }

        // Enable (first time, again after a disable, or with a new provider).
        let pin = self.new_pin();
        row.pin = Some(pin.reveal().to_string());
        row.user.enabled = true;
        row.user.provider = provider.clone();
        if let Some(name) = &req.display_name {
            row.user.display_name = name.clone();
        }
        if req.default_service_number.is_some() {
            row.user.default_service_number = req.default_service_number.clone();
        }
        let id = match (&provider, self.tenant.conference_id_mode) {
            (Provider::Microsoft, ConferenceIdMode::Static) => Some(match req.conference_id {
                Some(id) => {
                    check_microsoft_len(id)?;
                    self.check_free(id)?;
                    id
                }
                None => self.fresh_id(MICROSOFT_ID_LEN)?,
            }),
            (Provider::Microsoft, ConferenceIdMode::DynamicOnly) => {
                if req.conference_id.is_some() {
                    return Err(AdminError::DynamicOnlyTenant);
                }
                None
            }
            (Provider::ThirdParty { name, .. }, _) => {
                let id = req.conference_id.ok_or_else(|| {
                    AdminError::Invalid(format!(
                        "{email} uses the third-party provider '{name}': give the provider's \
                         conference ID by hand (--conference-id)"
                    ))
                })?;
                check_third_party_len(id)?;
                self.check_free(id)?;
                Some(id)
            }
        };
        row.user.conference_id = id;
        self.save(&row)?;
        if let Some(id) = id {
            self.issue(id, &row, None)?;
            // Back after a disable (or a provider switch): invitations sent
            // before carry a revoked ID, so they move to the new one.
            if !created && self.tenant.migrate_meetings_automatically {
                self.queue_migration(&row, "enable")?;
            }
        }
        let email_id = if !req.no_email && self.tenant.send_emails_automatically {
            let mail = mail::conference_info(
                &self.tenant,
                &Recipient {
                    email,
                    name: &row.user.display_name,
                },
                id,
                self.now,
            );
            Some(self.queue_email(email, mail)?)
        } else {
            None
        };
        Ok(EnableOutcome {
            user: self.reload(&row)?.user,
            created,
            changed: true,
            leader_pin: Some(pin.reveal().to_string()),
            email_id,
            revoked,
        })
    }

    /// Replaces a user's ID (reset or set), revoking the old one.
    fn change_id(
        &mut self,
        mut row: UserRow,
        new: ConferenceId,
        cause: RevocationCause,
        no_email: bool,
    ) -> Result<IdChange> {
        let old = row.user.conference_id;
        let revocation_operation = match old {
            Some(old) => Some(self.revoke(old, row.user.id, cause)?),
            None => None,
        };
        row.user.conference_id = Some(new);
        self.save(&row)?;
        self.issue(new, &row, None)?;

        let migration_job = if self.tenant.migrate_meetings_automatically {
            Some(self.queue_migration(&row, cause.as_str())?)
        } else {
            None
        };
        let (email_id, email_skipped) = if no_email {
            (None, Some("--no-email was given".to_string()))
        } else if !self.tenant.send_emails_automatically {
            (
                None,
                Some("the tenant does not send emails automatically".to_string()),
            )
        } else {
            let mail = mail::id_reset(
                &self.tenant,
                &Recipient {
                    email: &row.user.email,
                    name: &row.user.display_name,
                },
                old,
                new,
                migration_job.as_ref().and_then(|j| j.next_run_at),
                self.now,
            );
            (Some(self.queue_email(&row.user.email.clone(), mail)?), None)
        };
        Ok(IdChange {
            user: self.reload(&row)?.user,
            changed: true,
            old_conference_id: old,
            new_conference_id: new,
            revocation_operation,
            email_id,
            email_skipped,
            migration_job,
        })
    }
}

fn check_microsoft_len(id: ConferenceId) -> Result<()> {
    if id.len() != MICROSOFT_ID_LEN {
        return Err(AdminError::Invalid(format!(
            "conference ID {id} has {} digits: a Microsoft conference ID has exactly {MICROSOFT_ID_LEN}",
            id.len()
        )));
    }
    Ok(())
}

fn check_third_party_len(id: ConferenceId) -> Result<()> {
    if !THIRD_PARTY_ID_LEN.contains(&id.len()) {
        return Err(AdminError::Invalid(format!(
            "conference ID {id} has {} digits: a third-party provider's ID has {} to {}",
            id.len(),
            THIRD_PARTY_ID_LEN.start(),
            THIRD_PARTY_ID_LEN.end()
        )));
    }
    Ok(())
}

// ------------------------------------------------------------------ the service

impl Service {
    /// Opens the store at `store_path` (creating it with the default tenant
    /// when new) and rebuilds the directory from it.
    pub fn open(store_path: &Path, outbox_dir: PathBuf, options: Options) -> Result<Service> {
        Self::open_with_store_limit(store_path, outbox_dir, options, None)
    }

    /// [`Service::open`] with the store's size bounded (`dialin serve
    /// --store-max-bytes`): a write that would grow the store past
    /// `max_bytes` fails as on a full disk ([`AdminError::StoreFull`]).
    pub fn open_with_store_limit(
        store_path: &Path,
        outbox_dir: PathBuf,
        options: Options,
        max_bytes: Option<u64>,
    ) -> Result<Service> {
        let conn = store::open_limited(store_path, max_bytes)?;
        if store::tenant_count(&conn)? == 0 {
            store::insert_tenant(&conn, &default_tenant())?;
        }
        let tenant_id: TenantId =
            conn.query_row("SELECT min(id) FROM tenants", [], |r| r.get(0))?;
        let requeued = store::requeue_interrupted_jobs(&conn, options.clock.now())?;
        if requeued > 0 {
            tracing::warn!(
                requeued,
                "migration runs were interrupted; they will run again"
            );
        }
        let directory = Arc::new(rebuild_directory(&conn)?);
        let rng = match options.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Ok(Service {
            numbers: RwLock::new(number_list(&store::load_tenant(&conn, tenant_id)?)),
            inner: Mutex::new(Inner { conn, rng }),
            checkpointer: Mutex::new(store::open(store_path)?),
            delivery: Mutex::new(()),
            migrations: Mutex::new(()),
            directory,
            clock: options.clock,
            outbox: Outbox::new(outbox_dir, options.smtp),
            tenant_id,
        })
    }

    /// Copies committed WAL pages into the database file without blocking
    /// writers (a passive checkpoint); the server calls it every tick.
    pub fn checkpoint(&self) -> Result<()> {
        let conn = self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Bounds the store's size from now on (`None` lifts the bound), e.g.
    /// to let writes through again after a [`AdminError::StoreFull`].
    /// Returns the bound in force in bytes: never below the store's size.
    pub fn set_store_max_bytes(&self, max_bytes: Option<u64>) -> Result<u64> {
        store::set_max_bytes(&self.lock().conn, max_bytes)
    }

    /// The store's size in bytes (pages in use, committed WAL pages included).
    pub fn store_size_bytes(&self) -> Result<u64> {
        self.read(store::size_bytes)
    }

    /// The tenant's dial-in numbers as of the last commit (no store read).
    pub fn dial_in_numbers(&self) -> Arc<[PhoneNumber]> {
        self.numbers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The directory the bridge reads.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside an operation rolled its transaction back (the
        // Transaction is dropped while unwinding), so the state is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let inner = self.lock();
        f(&inner.conn)
    }

    /// Runs one admin operation: one transaction, then the directory, then
    /// email delivery.
    fn write<T>(
        &self,
        actor: &str,
        kind: &'static str,
        f: impl FnOnce(&mut Tx) -> Result<T>,
    ) -> Result<T> {
        let emails;
        let out;
        {
            let mut guard = self.lock();
            // Read under the lock, so operation times follow commit order.
            let now = self.clock.now();
            let Inner { conn, rng } = &mut *guard;
            let conn = conn.transaction()?;
            let tenant = store::load_tenant(&conn, self.tenant_id)?;
            let mut tx = Tx {
                conn: &conn,
                rng,
                now,
                actor,
                kind,
                tenant,
                operation: None,
                changes: Vec::new(),
                emails: Vec::new(),
                numbers: None,
            };
            out = f(&mut tx)?;
            let mut changes = std::mem::take(&mut tx.changes);
            emails = std::mem::take(&mut tx.emails);
            let numbers = tx.numbers.take();
            drop(tx);
            conn.commit()?;
            if let Some(numbers) = numbers {
                *self.numbers.write().unwrap_or_else(PoisonError::into_inner) = numbers;
            }
            // Revocations first: an old ID is rejected before its successor works.
            changes.sort_by_key(|c| matches!(c, Change::Activate(..)));
            self.directory.apply(&changes);
        }
        self.deliver(&emails);
        Ok(out)
    }

    // -------------------------------------------------------------- reads

    pub fn tenant(&self) -> Result<Tenant> {
        self.read(|c| store::load_tenant(c, self.tenant_id))
    }

    pub fn user(&self, email: &EmailAddress) -> Result<User> {
        self.read(|c| {
            store::find_user(c, email)?
                .map(|r| r.user)
                .ok_or_else(|| AdminError::UnknownUser(email.clone()))
        })
    }

    pub fn users(&self, enabled: Option<bool>) -> Result<Vec<User>> {
        self.read(|c| store::list_users(c, enabled))
    }

    fn user_id(c: &Connection, email: Option<&EmailAddress>) -> Result<Option<UserId>> {
        email
            .map(|e| {
                store::find_user(c, e)?
                    .map(|r| r.user.id)
                    .ok_or_else(|| AdminError::UnknownUser(e.clone()))
            })
            .transpose()
    }

    pub fn meetings(&self, organizer: Option<&EmailAddress>) -> Result<Vec<Meeting>> {
        self.read(|c| store::list_meetings(c, Self::user_id(c, organizer)?))
    }

    pub fn meeting(&self, id: MeetingId) -> Result<Meeting> {
        self.read(|c| store::meeting(c, id))
    }

    pub fn migration_jobs(&self, user: Option<&EmailAddress>) -> Result<Vec<MigrationJob>> {
        self.read(|c| store::list_jobs(c, Self::user_id(c, user)?))
    }

    pub fn migration_job(&self, id: JobId) -> Result<MigrationJob> {
        self.read(|c| store::job(c, id))
    }

    pub fn emails(&self, to: Option<&EmailAddress>) -> Result<Vec<Email>> {
        self.read(|c| store::list_emails(c, to))
    }

    pub fn email(&self, id: EmailId) -> Result<Email> {
        self.read(|c| store::email(c, id))
    }

    pub fn revocations(&self, user: Option<&EmailAddress>) -> Result<Vec<Revocation>> {
        self.read(|c| store::list_revocations(c, Self::user_id(c, user)?))
    }

    /// What the bridge would find for `id` right now.
    pub fn lookup(&self, id: ConferenceId) -> Lookup {
        self.directory.lookup(id)
    }

    /// Rebuilds a directory from the store and lists every ID on which it
    /// differs from the live one; empty when they agree.
    pub fn verify_directory(&self) -> Result<Vec<String>> {
        // Both sides under the write lock, so no commit lands in between.
        let (live, stored) = self.read(|c| {
            let fresh = rebuild_directory(c)?;
            Ok((self.directory.snapshot(), fresh.snapshot()))
        })?;
        let mut diffs = Vec::new();
        let mut a = live.iter().peekable();
        let mut b = stored.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((id, e)), None) => {
                    diffs.push(format!("{id}: directory has {e:?}, store has nothing"));
                    a.next();
                }
                (None, Some((id, e))) => {
                    diffs.push(format!("{id}: store has {e:?}, directory has nothing"));
                    b.next();
                }
                (Some((ia, ea)), Some((ib, eb))) => {
                    if ia < ib {
                        diffs.push(format!("{ia}: directory has {ea:?}, store has nothing"));
                        a.next();
                    } else if ib < ia {
                        diffs.push(format!("{ib}: store has {eb:?}, directory has nothing"));
                        b.next();
                    } else {
                        if ea != eb {
                            diffs.push(format!("{ia}: directory has {ea:?}, store has {eb:?}"));
                        }
                        a.next();
                        b.next();
                    }
                }
            }
        }
        Ok(diffs)
    }

    // -------------------------------------------------------------- tenant

    pub fn update_tenant(&self, actor: &str, patch: &TenantPatch) -> Result<Tenant> {
        self.write(actor, "tenant-set", |tx| {
            let mut t = tx.tenant.clone();
            if let Some(name) = &patch.name {
                if name.trim().is_empty() {
                    return Err(AdminError::Invalid("a tenant name can't be empty".into()));
                }
                t.name = name.clone();
            }
            if let Some(domain) = &patch.domain {
                if format!("noreply@{domain}").parse::<EmailAddress>().is_err() {
                    return Err(AdminError::Invalid(format!(
                        "'{domain}' is not a mail domain: write it as contoso.com"
                    )));
                }
                t.domain = domain.to_ascii_lowercase();
            }
            if let Some(len) = patch.leader_pin_length {
                if !(Pin::MIN_LEN..=Pin::MAX_LEN).contains(&len) {
                    return Err(AdminError::Invalid(format!(
                        "a leader PIN length of {len} is out of range: use {} to {}",
                        Pin::MIN_LEN,
                        Pin::MAX_LEN
                    )));
                }
                t.leader_pin_length = len;
            }
            if let Some(v) = patch.send_emails_automatically {
                t.send_emails_automatically = v;
            }
            if let Some(v) = patch.migrate_meetings_automatically {
                t.migrate_meetings_automatically = v;
            }
            let to_static = patch.conference_id_mode == Some(ConferenceIdMode::Static)
                && t.conference_id_mode == ConferenceIdMode::DynamicOnly;
            if let Some(mode) = patch.conference_id_mode {
                t.conference_id_mode = mode;
            }
            tx.operation(None)?;
            store::update_tenant(tx.conn, &t)?;
            tx.tenant = t.clone();
            if to_static {
                // Every enabled Microsoft user gets the static ID the new mode
                // promises; dynamic meeting IDs already issued keep working.
                for mut row in store::list_users(tx.conn, Some(true))?
                    .into_iter()
                    .filter(|u| u.provider.is_microsoft() && u.conference_id.is_none())
                    .map(|u| store::user_by_id(tx.conn, u.id))
                    .collect::<Result<Vec<_>>>()?
                {
                    let id = tx.fresh_id(MICROSOFT_ID_LEN)?;
                    row.user.conference_id = Some(id);
                    tx.save(&row)?;
                    tx.issue(id, &row, None)?;
                }
            }
            Ok(t)
        })
    }

    pub fn add_number(
        &self,
        actor: &str,
        number: PhoneNumber,
        kind: NumberKind,
        default: bool,
    ) -> Result<Tenant> {
        self.write(actor, "number-add", |tx| {
            if let Some(owner) = store::number_owner(tx.conn, &number)? {
                return Err(AdminError::Conflict(format!(
                    "{number} is already a dial-in number{}",
                    if owner == tx.tenant.id {
                        " of this tenant"
                    } else {
                        " of another tenant"
                    }
                )));
            }
            let mut numbers = tx.tenant.dial_in_numbers.clone();
            if default {
                // One default per kind: the new one replaces the old.
                for n in numbers.iter_mut().filter(|n| n.kind == kind) {
                    n.default = false;
                }
            }
            numbers.push(DialInNumber {
                number: number.clone(),
                kind,
                default,
            });
            tx.operation(None)?;
            store::set_numbers(tx.conn, tx.tenant.id, &numbers)?;
            let tenant = store::load_tenant(tx.conn, tx.tenant.id)?;
            tx.numbers = Some(number_list(&tenant));
            Ok(tenant)
        })
    }

    pub fn remove_number(&self, actor: &str, number: &PhoneNumber) -> Result<Tenant> {
        self.write(actor, "number-remove", |tx| {
            let mut numbers = tx.tenant.dial_in_numbers.clone();
            let before = numbers.len();
            numbers.retain(|n| &n.number != number);
            if numbers.len() == before {
                return Err(AdminError::NotFound {
                    what: "dial-in number",
                    id: number.to_string(),
                });
            }
            if numbers.is_empty() {
                return Err(AdminError::Conflict(format!(
                    "{number} is the tenant's last dial-in number: add another before removing it"
                )));
            }
            tx.operation(None)?;
            store::set_numbers(tx.conn, tx.tenant.id, &numbers)?;
            tx.conn.execute(
                "UPDATE users SET default_service_number = NULL WHERE default_service_number = ?1",
                [number.as_str()],
            )?;
            let tenant = store::load_tenant(tx.conn, tx.tenant.id)?;
            tx.numbers = Some(number_list(&tenant));
            Ok(tenant)
        })
    }

    // -------------------------------------------------------------- users

    /// Adds a user who is not enabled for dial-in conferencing yet.
    pub fn add_user(&self, actor: &str, email: &EmailAddress, display_name: &str) -> Result<User> {
        self.write(actor, "user-add", |tx| {
            if store::find_user(tx.conn, email)?.is_some() {
                return Err(AdminError::Conflict(format!("{email} already exists")));
            }
            if display_name.trim().is_empty() || display_name.len() > 256 {
                return Err(AdminError::Invalid(
                    "a display name is 1 to 256 characters".into(),
                ));
            }
            let id = store::insert_user(tx.conn, tx.tenant.id, email, display_name, tx.now)?;
            tx.operation(Some(id))?;
            Ok(store::user_by_id(tx.conn, id)?.user)
        })
    }

    pub fn enable_user(&self, actor: &str, req: &EnableRequest) -> Result<EnableOutcome> {
        let email = req
            .email
            .clone()
            .ok_or_else(|| AdminError::Invalid("enable needs the user's email".into()))?;
        self.write(actor, "enable", |tx| tx.enable(req, &email))
    }

    pub fn disable_user(&self, actor: &str, email: &EmailAddress) -> Result<Disabled> {
        self.write(actor, "disable", |tx| {
            let mut row = tx.user(email)?;
            if !row.user.enabled {
                return Ok(Disabled {
                    user: row.user,
                    changed: false,
                    revoked: Vec::new(),
                });
            }
            let revoked = tx.revoke_all(row.user.id, RevocationCause::Disable)?;
            store::cancel_pending_jobs(
                tx.conn,
                row.user.id,
                tx.now,
                "cancelled: the user was disabled",
            )?;
            row.user.enabled = false;
            row.user.conference_id = None;
            row.pin = None;
            tx.save(&row)?;
            Ok(Disabled {
                user: tx.reload(&row)?.user,
                changed: true,
                revoked,
            })
        })
    }

    /// Resets a user's static conference ID: a new random ID, the old one
    /// revoked at once, the user emailed, a migration job queued.
    pub fn reset_conference_id(
        &self,
        actor: &str,
        email: &EmailAddress,
        no_email: bool,
    ) -> Result<IdChange> {
        self.write(actor, "reset-id", |tx| {
            let row = tx.enabled_user(email)?;
            if let Provider::ThirdParty { name, .. } = &row.user.provider {
                return Err(AdminError::ThirdPartyReset {
                    user: email.clone(),
                    provider: name.clone(),
                });
            }
            if tx.tenant.conference_id_mode == ConferenceIdMode::DynamicOnly {
                return Err(AdminError::DynamicOnlyTenant);
            }
            let new = tx.fresh_id(MICROSOFT_ID_LEN)?;
            tx.change_id(row, new, RevocationCause::ResetId, no_email)
        })
    }

    /// Sets a user's conference ID by hand (third-party provider users, or
    /// an easy-to-remember static ID).
    pub fn set_conference_id(
        &self,
        actor: &str,
        email: &EmailAddress,
        id: ConferenceId,
        no_email: bool,
    ) -> Result<IdChange> {
        self.write(actor, "set-id", |tx| {
            let row = tx.enabled_user(email)?;
            match &row.user.provider {
                Provider::Microsoft => {
                    if tx.tenant.conference_id_mode == ConferenceIdMode::DynamicOnly {
                        return Err(AdminError::DynamicOnlyTenant);
                    }
                    check_microsoft_len(id)?;
                }
                Provider::ThirdParty { .. } => check_third_party_len(id)?,
            }
            if row.user.conference_id == Some(id) {
                return Ok(IdChange {
                    old_conference_id: Some(id),
                    new_conference_id: id,
                    user: row.user,
                    changed: false,
                    revocation_operation: None,
                    email_id: None,
                    email_skipped: Some("the ID did not change".into()),
                    migration_job: None,
                });
            }
            tx.check_free(id)?;
            tx.change_id(row, id, RevocationCause::SetId, no_email)
        })
    }

    /// Gives the user a new leader PIN, returned this once.
    pub fn reset_pin(
        &self,
        actor: &str,
        email: &EmailAddress,
        no_email: bool,
    ) -> Result<PinChange> {
        self.write(actor, "reset-pin", |tx| {
            let mut row = tx.enabled_user(email)?;
            let pin = tx.new_pin();
            row.pin = Some(pin.reveal().to_string());
            tx.save(&row)?;
            tx.operation(Some(row.user.id))?;
            // The directory holds the PIN for the leader check on every active ID.
            for (id, meeting) in store::active_ids(tx.conn, row.user.id)? {
                let target = tx.target(&row, meeting);
                tx.changes.push(Change::Activate(id, target));
            }
            let email_id = if !no_email && tx.tenant.send_emails_automatically {
                let mail = mail::pin_reset(
                    &tx.tenant,
                    &Recipient {
                        email,
                        name: &row.user.display_name,
                    },
                    tx.now,
                );
                Some(tx.queue_email(email, mail)?)
            } else {
                None
            };
            Ok(PinChange {
                user: tx.reload(&row)?.user,
                leader_pin: pin.reveal().to_string(),
                email_id,
            })
        })
    }

    /// Emails the user their conference ID and dial-in numbers (never the PIN).
    pub fn send_conference_info(&self, actor: &str, email: &EmailAddress) -> Result<InfoSent> {
        self.write(actor, "send-info", |tx| {
            let row = tx.enabled_user(email)?;
            tx.operation(Some(row.user.id))?;
            let mail = mail::conference_info(
                &tx.tenant,
                &Recipient {
                    email,
                    name: &row.user.display_name,
                },
                row.user.conference_id,
                tx.now,
            );
            let email_id = tx.queue_email(email, mail)?;
            Ok(InfoSent {
                user: row.user,
                email_id,
            })
        })
    }

    /// Enables every user of a CSV in one transaction: all of them or none.
    pub fn import_users(&self, actor: &str, csv: &str, no_email: bool) -> Result<ImportReport> {
        let rows = import::parse(csv).map_err(AdminError::Invalid)?;
        self.write(actor, "import", |tx| {
            let mut report = ImportReport {
                created: 0,
                enabled: 0,
                unchanged: 0,
                users: Vec::with_capacity(rows.len()),
            };
            for row in &rows {
                let req = import_request(row, no_email);
                let out = tx.enable(&req, &row.email).map_err(|e| match e {
                    AdminError::Store(_) | AdminError::Io(_) => e,
                    e if e.is_store_fault() => e,
                    other => AdminError::Invalid(format!("line {}: {other}", row.line)),
                })?;
                report.created += out.created as usize;
                if out.changed {
                    report.enabled += 1;
                } else {
                    report.unchanged += 1;
                }
                report.users.push(ImportLine {
                    line: row.line,
                    email: row.email.clone(),
                    created: out.created,
                    changed: out.changed,
                    conference_id: out.user.conference_id,
                    leader_pin: out.leader_pin,
                });
            }
            Ok(report)
        })
    }

    // -------------------------------------------------------------- meetings

    pub fn schedule_meeting(
        &self,
        actor: &str,
        organizer: &EmailAddress,
        subject: &str,
        start: Timestamp,
    ) -> Result<Meeting> {
        self.write(actor, "schedule-meeting", |tx| {
            if subject.trim().is_empty() || subject.len() > 256 {
                return Err(AdminError::Invalid(
                    "a meeting subject is 1 to 256 characters".into(),
                ));
            }
            let row = tx.enabled_user(organizer)?;
            tx.operation(Some(row.user.id))?;
            let dynamic = tx.tenant.conference_id_mode == ConferenceIdMode::DynamicOnly
                && row.user.provider.is_microsoft();
            let id = if dynamic {
                tx.fresh_id(MICROSOFT_ID_LEN)?
            } else {
                row.user.conference_id.ok_or_else(|| {
                    AdminError::Conflict(format!(
                        "{organizer} has no conference ID to put in the invitation"
                    ))
                })?
            };
            let meeting = store::insert_meeting(
                tx.conn,
                &store::NewMeeting {
                    tenant: row.tenant,
                    organizer: row.user.id,
                    subject,
                    start,
                    conference_id: id,
                    dynamic,
                },
                tx.now,
            )?;
            if dynamic {
                tx.issue(id, &row, Some(meeting))?;
            }
            store::meeting(tx.conn, meeting)
        })
    }

    // -------------------------------------------------------------- migrations

    /// Queues a migration for the user by hand (the Meeting Update Tool).
    pub fn start_migration(&self, actor: &str, email: &EmailAddress) -> Result<MigrationJob> {
        self.write(actor, "migration-start", |tx| {
            let row = tx.enabled_user(email)?;
            tx.operation(Some(row.user.id))?;
            tx.queue_migration(&row, "manual")
        })
    }

    /// Runs every migration job that is due by the clock. Each run is two
    /// commits: InProgress, then the rewritten invitations with the outcome.
    pub fn run_due_migrations(&self) -> Result<Vec<MigrationRun>> {
        let _one_pass = self
            .migrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        // Only a pass puts a job in progress, and this is the only pass: a
        // job still in progress is one whose run failed and whose failure
        // could not be recorded either (a full or read-only store). Put it
        // back, so it is not stranded once the store takes writes again.
        let stranded = self.read(|c| store::requeue_interrupted_jobs(c, now))?;
        if stranded > 0 {
            tracing::warn!(
                stranded,
                "migration runs cut short by a store failure will run again"
            );
        }
        let due = self.read(|c| store::due_jobs(c, now))?;
        let mut runs = Vec::with_capacity(due.len());
        for id in due {
            let started = self.write("migration-service", "migration-run", |tx| {
                let mut job = store::job(tx.conn, id)?;
                if !job.is_due(tx.now) {
                    return Ok(false);
                }
                job.start();
                store::save_job(tx.conn, &job)?;
                Ok(true)
            })?;
            if !started {
                continue;
            }
            let run = self.write("migration-service", "migration-run", |tx| {
                let mut job = store::job(tx.conn, id)?;
                let row = store::user_by_id(tx.conn, store::job_user(tx.conn, id)?)?;
                let mut email_ids = Vec::new();
                match (row.user.enabled, row.user.conference_id) {
                    (true, Some(current)) => {
                        let meetings =
                            store::stale_future_meetings(tx.conn, row.user.id, current, tx.now)?;
                        for m in &meetings {
                            store::migrate_meeting(tx.conn, m.id, current, tx.now)?;
                            let updated = store::meeting(tx.conn, m.id)?;
                            let mail = mail::meeting_update(
                                &tx.tenant,
                                &Recipient {
                                    email: &row.user.email,
                                    name: &row.user.display_name,
                                },
                                &updated,
                                tx.now,
                            );
                            email_ids.push(tx.queue_email(&row.user.email, mail)?);
                        }
                        job.succeed(tx.now, meetings.len() as u32);
                    }
                    (false, _) => job.fail(
                        tx.now,
                        format!("{} is not enabled for dial-in conferencing", row.user.email),
                    ),
                    (true, None) => job.fail(
                        tx.now,
                        format!(
                            "{} has no static conference ID to move meetings to",
                            row.user.email
                        ),
                    ),
                }
                tx.operation(Some(row.user.id))?;
                store::save_job(tx.conn, &job)?;
                Ok(MigrationRun { job, email_ids })
            });
            match run {
                Ok(run) => runs.push(run),
                // The run's transaction rolled back: record the failed run in
                // a transaction of its own, so the job is retried, not stuck.
                Err(error) => {
                    tracing::error!(job = id, %error, "a migration run failed");
                    runs.push(self.write("migration-service", "migration-run", |tx| {
                        let mut job = store::job(tx.conn, id)?;
                        job.fail(tx.now, format!("the run failed: {error}"));
                        store::save_job(tx.conn, &job)?;
                        Ok(MigrationRun {
                            job,
                            email_ids: Vec::new(),
                        })
                    })?);
                }
            }
        }
        Ok(runs)
    }

    // -------------------------------------------------------------- email delivery

    /// Writes the given emails' `.eml` files right after their commit. With
    /// an SMTP relay, sending waits for the next delivery pass, so that a
    /// slow or absent relay never holds up an admin operation.
    fn deliver(&self, ids: &[EmailId]) {
        // No pass lock: writing an .eml is idempotent (same name, atomic
        // rename), and an SMTP pass in progress must not hold this call up.
        for id in ids {
            match self.read(|c| store::queued_email(c, *id)) {
                Ok(Some(queued)) => {
                    self.deliver_one(&queued, false);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(email = id, error = %e, "could not read a queued email"),
            }
        }
    }

    /// Delivers every queued email now: the `.eml` file if not written yet,
    /// and the SMTP relay when one is set. Returns how many were delivered.
    pub fn deliver_queued(&self) -> Result<usize> {
        self.deliver_pass(None)
    }

    /// Delivers the queued emails whose retry back-off has passed (the
    /// server calls this every tick, so a relay that is down is not hammered).
    pub fn deliver_due(&self) -> Result<usize> {
        self.deliver_pass(Some(self.clock.now()))
    }

    fn deliver_pass(&self, due_by: Option<Timestamp>) -> Result<usize> {
        let _one_pass = self.delivery.lock().unwrap_or_else(PoisonError::into_inner);
        let queued = self.read(|c| store::queued_emails(c, due_by, 100))?;
        Ok(queued.iter().filter(|q| self.deliver_one(q, true)).count())
    }

    /// One delivery attempt; true when the email is now delivered.
    fn deliver_one(&self, email: &store::QueuedEmail, send_smtp: bool) -> bool {
        let now = self.clock.now();
        let result = (|| -> std::result::Result<bool, String> {
            if email.file.is_none() {
                let name = self
                    .outbox
                    .write_file(email)
                    .map_err(|e| format!("writing to {}: {e}", self.outbox.dir().display()))?;
                self.read(|c| store::mark_email_written(c, email.id, &name))
                    .map_err(|e| e.to_string())?;
            }
            if !self.outbox.has_smtp() {
                return Ok(true);
            }
            if !send_smtp {
                return Ok(false);
            }
            let domain = self.tenant().map(|t| t.domain).unwrap_or_default();
            self.outbox.send_smtp(email, &domain)?;
            Ok(true)
        })();
        let stored = match &result {
            Ok(true) => self.read(|c| store::mark_email_delivered(c, email.id, now)),
            Ok(false) => Ok(()),
            Err(error) => {
                tracing::warn!(email = email.id, %error, "email delivery failed; it stays queued");
                self.read(|c| store::mark_email_failed(c, email.id, error, now))
            }
        };
        if let Err(e) = stored {
            tracing::error!(email = email.id, error = %e, "could not record an email delivery");
        }
        matches!(result, Ok(true))
    }
}

fn import_request(row: &ImportRow, no_email: bool) -> EnableRequest {
    let provider = match row.provider.as_deref() {
        None => None,
        Some(p) if p.eq_ignore_ascii_case("microsoft") => None,
        Some(name) => Some(Provider::ThirdParty {
            name: name.to_string(),
            numbers: row.provider_numbers.clone(),
        }),
    };
    EnableRequest {
        email: Some(row.email.clone()),
        display_name: row.display_name.clone(),
        provider,
        conference_id: row.conference_id,
        default_service_number: row.default_service_number.clone(),
        replace_provider: false,
        no_email,
    }
}

/// Builds the directory from the store: every ID, active or revoked.
fn rebuild_directory(conn: &Connection) -> Result<Directory> {
    let count: i64 = conn.query_row("SELECT count(*) FROM conference_ids", [], |r| r.get(0))?;
    let directory = Directory::with_capacity(count as usize);
    store::for_each_directory_row(conn, |row| {
        let entry = match row.revoked {
            Some((at, operation, cause)) => Entry::Revoked(Revoked {
                at,
                operation,
                cause,
                organizer: row.user,
            }),
            None => Entry::Active(Target {
                tenant: row.tenant,
                organizer: row.user,
                meeting: row.meeting,
                leader_pin: row.pin,
            }),
        };
        directory.load(row.id, entry);
    })?;
    Ok(directory)
}
