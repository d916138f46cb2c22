//! The SQLite store: schema, versioned migrations, and typed row access.
//!
//! Only [`super::Service`] calls this module, inside its transactions. The
//! database runs in WAL mode with `synchronous = NORMAL`: a committed
//! transaction survives the process being killed (the WAL is in the OS page
//! cache); after a power loss the last few commits may roll back, never half.

use std::path::Path;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::{AdminError, Result};
use super::ids::{ConferenceId, EmailAddress, PhoneNumber};
use super::model::*;
use crate::directory::PinDigits;
use crate::time::Timestamp;

/// Schema migrations, applied in order; `PRAGMA user_version` is the count
/// applied so far. Append; never edit a shipped step.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE tenants (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        domain TEXT NOT NULL,
        conference_id_mode TEXT NOT NULL,
        send_emails_automatically INTEGER NOT NULL,
        leader_pin_length INTEGER NOT NULL,
        migrate_meetings_automatically INTEGER NOT NULL
    );
    CREATE TABLE dial_in_numbers (
        number TEXT PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        kind TEXT NOT NULL,
        is_default INTEGER NOT NULL,
        position INTEGER NOT NULL
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id),
        email TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        provider TEXT NOT NULL,
        provider_numbers TEXT NOT NULL DEFAULT '',
        conference_id TEXT,
        leader_pin TEXT,
        default_service_number TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        user_id INTEGER
    );
    CREATE TABLE conference_ids (
        id TEXT PRIMARY KEY,
        tenant_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id),
        meeting_id INTEGER,
        issued_at INTEGER NOT NULL,
        issued_by INTEGER NOT NULL REFERENCES operations(id),
        revoked_at INTEGER,
        revoked_by INTEGER REFERENCES operations(id),
        revocation_cause TEXT
    ) WITHOUT ROWID;
    CREATE INDEX conference_ids_user ON conference_ids(user_id);
    CREATE TABLE meetings (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL,
        organizer_id INTEGER NOT NULL REFERENCES users(id),
        subject TEXT NOT NULL,
        start_at INTEGER NOT NULL,
        conference_id TEXT NOT NULL,
        dynamic INTEGER NOT NULL,
        migrated_at INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX meetings_organizer ON meetings(organizer_id, start_at);
    CREATE TABLE migration_jobs (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        state TEXT NOT NULL,
        trigger TEXT NOT NULL,
        queued_at INTEGER NOT NULL,
        next_run_at INTEGER,
        runs INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        finished_at INTEGER,
        meetings_updated INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX migration_jobs_due ON migration_jobs(state, next_run_at);
    CREATE INDEX migration_jobs_user ON migration_jobs(user_id);
    CREATE TABLE emails (
        id INTEGER PRIMARY KEY,
        to_addr TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        message BLOB NOT NULL,
        operation_id INTEGER REFERENCES operations(id),
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        delivered_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at INTEGER,
        file TEXT
    );
    CREATE INDEX emails_status ON emails(status);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Opens (creating if needed) the database and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection> {
    open_limited(path, None)
}

/// [`open`] with the store's size bounded by `max_bytes` (see
/// [`set_max_bytes`]) before anything is written, so a limit too small for
/// the schema fails here, as a full disk would.
pub fn open_limited(path: &Path, max_bytes: Option<u64>) -> Result<Connection> {
    if let Some(folder) = path.parent() {
        check_folder_writable(folder)?;
    }
    let mut conn = Connection::open(path)?;
    if max_bytes.is_some() {
        set_max_bytes(&conn, max_bytes)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoints run off the write path (Service::checkpoint, from the
    // server's tick); this is only the backstop when nothing calls it.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// The most pages SQLite allows a database (`SQLITE_MAX_PAGE_COUNT`), the
/// `max_page_count` of a connection with no limit.
const UNLIMITED_PAGES: u64 = 0xffff_fffe;

/// Bounds the size of the database `conn` writes: a transaction that would
/// grow it past `max_bytes` (whole pages of `page_size`) fails with
/// SQLITE_FULL, exactly as on a full disk, and rolls back. `None` lifts the
/// bound. The bound belongs to this connection only (`PRAGMA
/// max_page_count`), and never lies below the database's current size:
/// SQLite raises it to that. Returns the bound in force, in bytes. The WAL
/// file comes on top: it holds pages until a checkpoint copies them in.
pub fn set_max_bytes(conn: &Connection, max_bytes: Option<u64>) -> Result<u64> {
    let page_size: u64 = conn.pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))? as u64;
    let pages = match max_bytes {
        // At least one page: 0 would ask for the current bound, not set one.
        Some(bytes) => (bytes / page_size.max(1)).clamp(1, UNLIMITED_PAGES),
        None => UNLIMITED_PAGES,
    };
    let in_force: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get(0)
    })?;
    Ok(in_force.max(0) as u64 * page_size)
}

/// The database's current size in bytes (pages in use, WAL included).
pub fn size_bytes(conn: &Connection) -> Result<u64> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok((pages.max(0) * page_size.max(0)) as u64)
}

/// SQLite in WAL mode creates files beside the database (`-wal`, `-shm`)
/// and grows them: a folder that can't take a new file would fail later
/// with a vaguer error (SQLITE_CANTOPEN or SQLITE_READONLY), so open
/// checks first by writing one page to a probe file and removing it.
fn check_folder_writable(folder: &Path) -> Result<()> {
    use std::io::Write;
    let probe = folder.join(".dialin-write-probe");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(&[0u8; 4096]));
    // Remove whatever was created, even when the write failed.
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| folder_fault(folder, &e))
}

/// Names what is wrong with the folder, in the terms of [`AdminError`]'s
/// store faults.
pub(crate) fn folder_fault(folder: &Path, e: &std::io::Error) -> AdminError {
    use std::io::ErrorKind;
    let detail = format!("writing a file in {}: {e}", folder.display());
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            AdminError::StoreReadOnly(detail)
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => {
            AdminError::StoreFull(detail)
        }
        _ => AdminError::StoreIo(detail),
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = version.max(0) as usize;
    if version > SCHEMA_VERSION {
        return Err(AdminError::Io(format!(
            "the data folder's store has schema version {version}, newer than this dialin \
             understands ({SCHEMA_VERSION}): use a newer dialin"
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Turns a stored text into a value, or a clear error naming the column.
fn parse_col<T: FromStr<Err = String>>(row: &Row, col: &str) -> rusqlite::Result<T> {
    let text: String = row.get(col)?;
    text.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("column {col}: {e}").into(),
        )
    })
}

fn parse_opt<T: FromStr<Err = String>>(row: &Row, col: &str) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(col)?;
    text.map(|t| {
        t.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("column {col}: {e}").into(),
            )
        })
    })
    .transpose()
}

fn ts(row: &Row, col: &str) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp::from_millis(row.get(col)?))
}

fn ts_opt(row: &Row, col: &str) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(col)?.map(Timestamp::from_millis))
}

// ---------------------------------------------------------------- tenant

pub fn tenant_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM tenants", [], |r| r.get(0))?)
}

pub fn insert_tenant(conn: &Connection, t: &Tenant) -> Result<TenantId> {
    conn.execute(
        "INSERT INTO tenants (name, domain, conference_id_mode, send_emails_automatically,
             leader_pin_length, migrate_meetings_automatically) VALUES ('', '', '', 0, 0, 0)",
        [],
    )?;
    let id = conn.last_insert_rowid();
    update_tenant(conn, &Tenant { id, ..t.clone() })?;
    for n in &t.dial_in_numbers {
        insert_number(conn, id, n)?;
    }
    Ok(id)
}

pub fn load_tenant(conn: &Connection, id: TenantId) -> Result<Tenant> {
    let mut stmt = conn.prepare_cached("SELECT * FROM tenants WHERE id = ?1")?;
    let mut tenant = stmt.query_row([id], |row| {
        Ok(Tenant {
            id: row.get("id")?,
            name: row.get("name")?,
            domain: row.get("domain")?,
            conference_id_mode: parse_col(row, "conference_id_mode")?,
            send_emails_automatically: row.get("send_emails_automatically")?,
            leader_pin_length: row.get("leader_pin_length")?,
            migrate_meetings_automatically: row.get("migrate_meetings_automatically")?,
            dial_in_numbers: Vec::new(),
        })
    })?;
    let mut stmt = conn.prepare_cached(
        "SELECT number, kind, is_default FROM dial_in_numbers WHERE tenant_id = ?1 ORDER BY position",
    )?;
    tenant.dial_in_numbers = stmt
        .query_map([id], |row| {
            Ok(DialInNumber {
                number: parse_col(row, "number")?,
                kind: parse_col(row, "kind")?,
                default: row.get("is_default")?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(tenant)
}

pub fn update_tenant(conn: &Connection, t: &Tenant) -> Result<()> {
    conn.execute(
        "UPDATE tenants SET name = ?2, domain = ?3, conference_id_mode = ?4,
             send_emails_automatically = ?5, leader_pin_length = ?6,
             migrate_meetings_automatically = ?7 WHERE id = ?1",
        params![
            t.id,
            t.name,
            t.domain,
            t.conference_id_mode.to_string(),
            t.send_emails_automatically,
            t.leader_pin_length,
            t.migrate_meetings_automatically
        ],
    )?;
    Ok(())
}

fn insert_number(conn: &Connection, tenant: TenantId, n: &DialInNumber) -> Result<()> {
    conn.execute(
        "INSERT INTO dial_in_numbers (number, tenant_id, kind, is_default, position)
         VALUES (?1, ?2, ?3, ?4, (SELECT coalesce(max(position), 0) + 1 FROM dial_in_numbers))",
        params![n.number.as_str(), tenant, n.kind.to_string(), n.default],
    )?;
    Ok(())
}

/// Replaces the tenant's numbers with `numbers`, keeping their order.
pub fn set_numbers(conn: &Connection, tenant: TenantId, numbers: &[DialInNumber]) -> Result<()> {
    conn.execute("DELETE FROM dial_in_numbers WHERE tenant_id = ?1", [tenant])?;
    for n in numbers {
        insert_number(conn, tenant, n)?;
    }
    Ok(())
}

/// The tenant that owns a dial-in number, if any.
pub fn number_owner(conn: &Connection, number: &PhoneNumber) -> Result<Option<TenantId>> {
    Ok(conn
        .query_row(
            "SELECT tenant_id FROM dial_in_numbers WHERE number = ?1",
            [number.as_str()],
            |r| r.get(0),
        )
        .optional()?)
}

// ---------------------------------------------------------------- users

/// A user row with the PIN in clear: only the service sees this.
#[derive(Clone)]
pub struct UserRow {
    pub user: User,
    pub tenant: TenantId,
    pub pin: Option<String>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The user's own listing already masks the PIN; so does this.
        f.debug_struct("UserRow")
            .field("user", &self.user)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

const USER_SELECT: &str = "SELECT u.*,
    (SELECT c.id FROM conference_ids c
      WHERE c.user_id = u.id AND c.meeting_id IS NULL AND c.revoked_at IS NOT NULL
      ORDER BY c.revoked_by DESC LIMIT 1) AS previous_id
    FROM users u";

fn user_row(row: &Row) -> rusqlite::Result<UserRow> {
    let provider_name: String = row.get("provider")?;
    let provider = if provider_name == "microsoft" {
        Provider::Microsoft
    } else {
        let numbers: String = row.get("provider_numbers")?;
        Provider::ThirdParty {
            name: provider_name,
            numbers: numbers
                .split(',')
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect(),
        }
    };
    let pin: Option<String> = row.get("leader_pin")?;
    Ok(UserRow {
        tenant: row.get("tenant_id")?,
        user: User {
            id: row.get("id")?,
            email: parse_col(row, "email")?,
            display_name: row.get("display_name")?,
            enabled: row.get("enabled")?,
            provider,
            conference_id: parse_opt(row, "conference_id")?,
            previous_conference_id: parse_opt(row, "previous_id")?,
            leader_pin: pin.as_deref().map(|p| "*".repeat(p.len())),
            default_service_number: parse_opt(row, "default_service_number")?,
            created_at: ts(row, "created_at")?,
            updated_at: ts(row, "updated_at")?,
        },
        pin,
    })
}

pub fn find_user(conn: &Connection, email: &EmailAddress) -> Result<Option<UserRow>> {
    let mut stmt = conn.prepare_cached(&format!("{USER_SELECT} WHERE u.email = ?1"))?;
    Ok(stmt.query_row([email.as_str()], user_row).optional()?)
}

pub fn user_by_id(conn: &Connection, id: UserId) -> Result<UserRow> {
    let mut stmt = conn.prepare_cached(&format!("{USER_SELECT} WHERE u.id = ?1"))?;
    Ok(stmt.query_row([id], user_row)?)
}

pub fn list_users(conn: &Connection, enabled: Option<bool>) -> Result<Vec<User>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{USER_SELECT} WHERE ?1 IS NULL OR u.enabled = ?1 ORDER BY u.email"
    ))?;
    let rows = stmt.query_map([enabled], user_row)?;
    Ok(rows
        .map(|r| r.map(|row| row.user))
        .collect::<rusqlite::Result<_>>()?)
}

pub fn insert_user(
    conn: &Connection,
    tenant: TenantId,
    email: &EmailAddress,
    display_name: &str,
    now: Timestamp,
) -> Result<UserId> {
    conn.execute(
        "INSERT INTO users (tenant_id, email, display_name, enabled, provider, created_at, updated_at)
         VALUES (?1, ?2, ?3, 0, 'microsoft', ?4, ?4)",
        params![tenant, email.as_str(), display_name, now.as_millis()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Writes the mutable fields of a user.
pub fn save_user(conn: &Connection, row: &UserRow, now: Timestamp) -> Result<()> {
    let u = &row.user;
    let (provider, numbers) = match &u.provider {
        Provider::Microsoft => ("microsoft".to_string(), String::new()),
        Provider::ThirdParty { name, numbers } => (
            name.clone(),
            numbers
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    conn.execute(
        "UPDATE users SET display_name = ?2, enabled = ?3, provider = ?4, provider_numbers = ?5,
             conference_id = ?6, leader_pin = ?7, default_service_number = ?8, updated_at = ?9
         WHERE id = ?1",
        params![
            u.id,
            u.display_name,
            u.enabled,
            provider,
            numbers,
            u.conference_id.map(|c| c.to_string()),
            row.pin,
            u.default_service_number.as_ref().map(|n| n.as_str()),
            now.as_millis()
        ],
    )?;
    Ok(())
}

// ---------------------------------------------------------------- operations and IDs

pub fn insert_operation(
    conn: &Connection,
    at: Timestamp,
    actor: &str,
    kind: &str,
    user: Option<UserId>,
) -> Result<OperationId> {
    conn.execute(
        "INSERT INTO operations (at, actor, kind, user_id) VALUES (?1, ?2, ?3, ?4)",
        params![at.as_millis(), actor, kind, user],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn set_operation_user(conn: &Connection, op: OperationId, user: UserId) -> Result<()> {
    conn.execute(
        "UPDATE operations SET user_id = ?2 WHERE id = ?1 AND user_id IS NULL",
        params![op, user],
    )?;
    Ok(())
}

/// What the store knows of an ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdStatus {
    Free,
    Active {
        user: UserId,
        meeting: Option<MeetingId>,
    },
    Revoked,
}

pub fn id_status(conn: &Connection, id: ConferenceId) -> Result<IdStatus> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, meeting_id, revoked_at FROM conference_ids WHERE id = ?1",
    )?;
    let row = stmt
        .query_row([id.to_string()], |r| {
            Ok((
                r.get::<_, UserId>(0)?,
                r.get::<_, Option<MeetingId>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()?;
    Ok(match row {
        None => IdStatus::Free,
        Some((_, _, Some(_))) => IdStatus::Revoked,
        Some((user, meeting, None)) => IdStatus::Active { user, meeting },
    })
}

pub fn insert_id(
    conn: &Connection,
    id: ConferenceId,
    tenant: TenantId,
    user: UserId,
    meeting: Option<MeetingId>,
    at: Timestamp,
    operation: OperationId,
) -> Result<()> {
    conn.execute(
        "INSERT INTO conference_ids (id, tenant_id, user_id, meeting_id, issued_at, issued_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id.to_string(),
            tenant,
            user,
            meeting,
            at.as_millis(),
            operation
        ],
    )?;
    Ok(())
}

pub fn revoke_id(
    conn: &Connection,
    id: ConferenceId,
    at: Timestamp,
    operation: OperationId,
    cause: RevocationCause,
) -> Result<()> {
    let changed = conn.execute(
        "UPDATE conference_ids SET revoked_at = ?2, revoked_by = ?3, revocation_cause = ?4
         WHERE id = ?1 AND revoked_at IS NULL",
        params![id.to_string(), at.as_millis(), operation, cause.as_str()],
    )?;
    if changed != 1 {
        return Err(AdminError::Conflict(format!(
            "conference ID {id} is not active, so it can't be revoked"
        )));
    }
    Ok(())
}

/// The user's active IDs: the static one and their meetings' dynamic ones.
pub fn active_ids(
    conn: &Connection,
    user: UserId,
) -> Result<Vec<(ConferenceId, Option<MeetingId>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, meeting_id FROM conference_ids WHERE user_id = ?1 AND revoked_at IS NULL",
    )?;
    let rows = stmt.query_map([user], |r| Ok((parse_col(r, "id")?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One row of the directory as the store holds it.
pub struct DirectoryRow {
    pub id: ConferenceId,
    pub tenant: TenantId,
    pub user: UserId,
    pub meeting: Option<MeetingId>,
    /// The holder's leader PIN ([`PinDigits::NONE`] when they have none).
    pub pin: PinDigits,
    pub revoked: Option<(Timestamp, OperationId, RevocationCause)>,
}

/// Streams every conference ID with what the directory needs.
///
/// Start-up reads the whole table with this (a million users must be
/// ready in well under 2 s), so it is two sequential scans rather than a
/// join: the PINs by user ID first, then the IDs in their table's order.
/// A join looked each ID's user up in `users` at random, one page read per
/// row once the table outgrew SQLite's cache. Columns are read in place
/// (no `String` per row).
pub fn for_each_directory_row(conn: &Connection, mut f: impl FnMut(DirectoryRow)) -> Result<()> {
    let pins = UserPins::load(conn)?;
    let mut stmt = conn.prepare(
        "SELECT id, tenant_id, user_id, meeting_id, revoked_at, revoked_by, revocation_cause
         FROM conference_ids",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let revoked = match r.get::<_, Option<i64>>(4)? {
            Some(at) => Some((
                Timestamp::from_millis(at),
                r.get(5)?,
                parse_ref(r, 6, "revocation_cause")?,
            )),
            None => None,
        };
        let user = r.get(2)?;
        f(DirectoryRow {
            id: parse_ref(r, 0, "id")?,
            tenant: r.get(1)?,
            user,
            meeting: r.get(3)?,
            pin: pins.get(user),
            revoked,
        });
    }
    Ok(())
}

/// Every user's leader PIN, sorted by user ID (the `users` table's own
/// order, so loading is one sequential scan).
struct UserPins(Vec<(UserId, PinDigits)>);

impl UserPins {
    fn load(conn: &Connection) -> Result<UserPins> {
        let count: i64 = conn.query_row(
            "SELECT count(*) FROM users WHERE leader_pin IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        let mut pins = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut stmt = conn
            .prepare("SELECT id, leader_pin FROM users WHERE leader_pin IS NOT NULL ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let pin = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            pins.push((r.get::<_, UserId>(0)?, PinDigits::new(pin)));
        }
        Ok(UserPins(pins))
    }

    fn get(&self, user: UserId) -> PinDigits {
        // User IDs are usually dense from 1: try the slot the ID would
        // have then, before searching.
        let guess = user.checked_sub(1).and_then(|i| usize::try_from(i).ok());
        if let Some((id, pin)) = guess.and_then(|i| self.0.get(i))
            && *id == user
        {
            return *pin;
        }
        self.0
            .binary_search_by_key(&user, |(id, _)| *id)
            .map_or(PinDigits::NONE, |i| self.0[i].1)
    }
}

/// Parses a text column in place, or a clear error naming the column.
fn parse_ref<T: FromStr<Err = String>>(row: &Row, idx: usize, col: &str) -> rusqlite::Result<T> {
    let text = row.get_ref(idx)?.as_str().map_err(rusqlite::Error::from)?;
    text.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("column {col}: {e}").into(),
        )
    })
}

pub fn list_revocations(conn: &Connection, user: Option<UserId>) -> Result<Vec<Revocation>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, u.email, c.revocation_cause, c.revoked_by, c.revoked_at, o.actor
         FROM conference_ids c JOIN users u ON u.id = c.user_id
              JOIN operations o ON o.id = c.revoked_by
         WHERE c.revoked_at IS NOT NULL AND (?1 IS NULL OR c.user_id = ?1)
         ORDER BY c.revoked_by, c.id",
    )?;
    let rows = stmt.query_map([user], |r| {
        Ok(Revocation {
            conference_id: parse_col(r, "id")?,
            user: parse_col(r, "email")?,
            cause: parse_col(r, "revocation_cause")?,
            operation_id: r.get("revoked_by")?,
            at: ts(r, "revoked_at")?,
            actor: r.get("actor")?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---------------------------------------------------------------- meetings

fn meeting_row(row: &Row) -> rusqlite::Result<Meeting> {
    let conference_id: ConferenceId = parse_col(row, "conference_id")?;
    let dynamic: bool = row.get("dynamic")?;
    let current: Option<ConferenceId> = parse_opt(row, "current_id")?;
    let migrated_at = ts_opt(row, "migrated_at")?;
    // A dynamic meeting's own ID is current until it is revoked (disable).
    let revoked_dynamic: bool = row.get("revoked_dynamic")?;
    let stale = if dynamic {
        revoked_dynamic
    } else {
        current != Some(conference_id)
    };
    let invitation = match (stale, migrated_at) {
        (true, _) => InvitationState::Stale,
        (false, Some(_)) => InvitationState::Migrated,
        (false, None) => InvitationState::Current,
    };
    Ok(Meeting {
        id: row.get("id")?,
        organizer: parse_col(row, "organizer_email")?,
        subject: row.get("subject")?,
        start: ts(row, "start_at")?,
        conference_id,
        dynamic,
        invitation,
        migrated_at,
        created_at: ts(row, "created_at")?,
    })
}

fn meeting_query(filter: &str) -> String {
    format!(
        "SELECT * FROM (SELECT m.*, u.email AS organizer_email, u.conference_id AS current_id,
             EXISTS (SELECT 1 FROM conference_ids c WHERE c.id = m.conference_id
                     AND c.revoked_at IS NOT NULL) AS revoked_dynamic
         FROM meetings m JOIN users u ON u.id = m.organizer_id) AS m {filter}"
    )
}

pub struct NewMeeting<'a> {
    pub tenant: TenantId,
    pub organizer: UserId,
    pub subject: &'a str,
    pub start: Timestamp,
    pub conference_id: ConferenceId,
    pub dynamic: bool,
}

pub fn insert_meeting(conn: &Connection, m: &NewMeeting, now: Timestamp) -> Result<MeetingId> {
    conn.execute(
        "INSERT INTO meetings (tenant_id, organizer_id, subject, start_at, conference_id, dynamic, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            m.tenant,
            m.organizer,
            m.subject,
            m.start.as_millis(),
            m.conference_id.to_string(),
            m.dynamic,
            now.as_millis()
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn meeting(conn: &Connection, id: MeetingId) -> Result<Meeting> {
    let mut stmt = conn.prepare_cached(&meeting_query("WHERE m.id = ?1"))?;
    stmt.query_row([id], meeting_row)
        .optional()?
        .ok_or(AdminError::NotFound {
            what: "meeting",
            id: id.to_string(),
        })
}

pub fn list_meetings(conn: &Connection, organizer: Option<UserId>) -> Result<Vec<Meeting>> {
    let mut stmt = conn.prepare_cached(&meeting_query(
        "WHERE ?1 IS NULL OR m.organizer_id = ?1 ORDER BY m.start_at, m.id",
    ))?;
    let rows = stmt.query_map([organizer], meeting_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Future static-ID meetings of `organizer` whose invitation carries another ID.
pub fn stale_future_meetings(
    conn: &Connection,
    organizer: UserId,
    current: ConferenceId,
    now: Timestamp,
) -> Result<Vec<Meeting>> {
    let mut stmt = conn.prepare_cached(&meeting_query(
        "WHERE m.organizer_id = ?1 AND m.dynamic = 0 AND m.start_at > ?2 AND m.conference_id != ?3
         ORDER BY m.start_at",
    ))?;
    let rows = stmt.query_map(
        params![organizer, now.as_millis(), current.to_string()],
        meeting_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn migrate_meeting(
    conn: &Connection,
    id: MeetingId,
    to: ConferenceId,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "UPDATE meetings SET conference_id = ?2, migrated_at = ?3 WHERE id = ?1",
        params![id, to.to_string(), now.as_millis()],
    )?;
    Ok(())
}

// ---------------------------------------------------------------- migration jobs

fn job_row(row: &Row) -> rusqlite::Result<MigrationJob> {
    Ok(MigrationJob {
        id: row.get("id")?,
        user: parse_col(row, "email")?,
        state: parse_col(row, "state")?,
        trigger: row.get("trigger")?,
        queued_at: ts(row, "queued_at")?,
        next_run_at: ts_opt(row, "next_run_at")?,
        runs: row.get("runs")?,
        last_error: row.get("last_error")?,
        finished_at: ts_opt(row, "finished_at")?,
        meetings_updated: row.get("meetings_updated")?,
    })
}

const JOB_SELECT: &str =
    "SELECT j.*, u.email FROM migration_jobs j JOIN users u ON u.id = j.user_id";

pub fn insert_job(conn: &Connection, user: UserId, job: &MigrationJob) -> Result<JobId> {
    conn.execute(
        "INSERT INTO migration_jobs (user_id, state, trigger, queued_at, next_run_at, runs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            user,
            job.state.as_str(),
            job.trigger,
            job.queued_at.as_millis(),
            job.next_run_at.map(|t| t.as_millis()),
            job.runs
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn save_job(conn: &Connection, job: &MigrationJob) -> Result<()> {
    conn.execute(
        "UPDATE migration_jobs SET state = ?2, next_run_at = ?3, runs = ?4, last_error = ?5,
             finished_at = ?6, meetings_updated = ?7 WHERE id = ?1",
        params![
            job.id,
            job.state.as_str(),
            job.next_run_at.map(|t| t.as_millis()),
            job.runs,
            job.last_error,
            job.finished_at.map(|t| t.as_millis()),
            job.meetings_updated
        ],
    )?;
    Ok(())
}

pub fn job(conn: &Connection, id: JobId) -> Result<MigrationJob> {
    let mut stmt = conn.prepare_cached(&format!("{JOB_SELECT} WHERE j.id = ?1"))?;
    stmt.query_row([id], job_row)
        .optional()?
        .ok_or(AdminError::NotFound {
            what: "migration job",
            id: id.to_string(),
        })
}

pub fn job_user(conn: &Connection, id: JobId) -> Result<UserId> {
    Ok(conn.query_row(
        "SELECT user_id FROM migration_jobs WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?)
}

pub fn pending_job_for(conn: &Connection, user: UserId) -> Result<Option<MigrationJob>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{JOB_SELECT} WHERE j.user_id = ?1 AND j.state = 'pending' ORDER BY j.id LIMIT 1"
    ))?;
    Ok(stmt.query_row([user], job_row).optional()?)
}

pub fn list_jobs(conn: &Connection, user: Option<UserId>) -> Result<Vec<MigrationJob>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{JOB_SELECT} WHERE ?1 IS NULL OR j.user_id = ?1 ORDER BY j.id"
    ))?;
    let rows = stmt.query_map([user], job_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn due_jobs(conn: &Connection, now: Timestamp) -> Result<Vec<JobId>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM migration_jobs WHERE state = 'pending' AND next_run_at <= ?1
         ORDER BY next_run_at, id",
    )?;
    let rows = stmt.query_map([now.as_millis()], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A run cut short by a crash goes back to pending, due at once. The
/// interrupted run counts: a job that crashes the server every time fails
/// for good once its retries are used up.
pub fn requeue_interrupted_jobs(conn: &Connection, now: Timestamp) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE migration_jobs SET
             state = CASE WHEN runs > ?2 THEN 'failed' ELSE 'pending' END,
             next_run_at = CASE WHEN runs > ?2 THEN NULL ELSE ?1 END,
             finished_at = CASE WHEN runs > ?2 THEN ?1 ELSE NULL END,
             last_error = 'the run was interrupted (the server stopped, or the store failed)'
         WHERE state = 'in-progress'",
        params![now.as_millis(), super::migration::MAX_RETRIES],
    )?)
}

/// A disabled user's waiting jobs can't succeed: they end now.
pub fn cancel_pending_jobs(
    conn: &Connection,
    user: UserId,
    now: Timestamp,
    why: &str,
) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE migration_jobs SET state = 'failed', next_run_at = NULL, finished_at = ?2,
             last_error = ?3
         WHERE user_id = ?1 AND state = 'pending'",
        params![user, now.as_millis(), why],
    )?)
}

// ---------------------------------------------------------------- emails

pub struct NewEmail<'a> {
    pub to: &'a EmailAddress,
    pub kind: EmailKind,
    pub subject: &'a str,
    pub body: &'a str,
    pub message: &'a [u8],
    pub operation: Option<OperationId>,
}

pub fn insert_email(conn: &Connection, e: &NewEmail, now: Timestamp) -> Result<EmailId> {
    conn.execute(
        "INSERT INTO emails (to_addr, kind, subject, body, message, operation_id, created_at, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued')",
        params![
            e.to.as_str(),
            e.kind.as_str(),
            e.subject,
            e.body,
            e.message,
            e.operation,
            now.as_millis()
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

fn email_row(row: &Row, with_body: bool) -> rusqlite::Result<Email> {
    Ok(Email {
        id: row.get("id")?,
        to: parse_col(row, "to_addr")?,
        kind: parse_col(row, "kind")?,
        subject: row.get("subject")?,
        created_at: ts(row, "created_at")?,
        status: row.get("status")?,
        delivered_at: ts_opt(row, "delivered_at")?,
        attempts: row.get("attempts")?,
        last_error: row.get("last_error")?,
        file: row.get("file")?,
        body: if with_body {
            Some(row.get("body")?)
        } else {
            None
        },
    })
}

pub fn list_emails(conn: &Connection, to: Option<&EmailAddress>) -> Result<Vec<Email>> {
    let mut stmt =
        conn.prepare_cached("SELECT * FROM emails WHERE ?1 IS NULL OR to_addr = ?1 ORDER BY id")?;
    let rows = stmt.query_map([to.map(|t| t.as_str())], |r| email_row(r, false))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn email(conn: &Connection, id: EmailId) -> Result<Email> {
    conn.query_row("SELECT * FROM emails WHERE id = ?1", [id], |r| {
        email_row(r, true)
    })
    .optional()?
    .ok_or(AdminError::NotFound {
        what: "email",
        id: id.to_string(),
    })
}

/// An email waiting for delivery: what the outbox needs to write or send it.
pub struct QueuedEmail {
    pub id: EmailId,
    pub to: EmailAddress,
    pub kind: EmailKind,
    pub message: Vec<u8>,
    pub file: Option<String>,
}

fn queued_row(r: &Row) -> rusqlite::Result<QueuedEmail> {
    Ok(QueuedEmail {
        id: r.get("id")?,
        to: parse_col(r, "to_addr")?,
        kind: parse_col(r, "kind")?,
        message: r.get("message")?,
        file: r.get("file")?,
    })
}

/// The oldest queued emails, at most `limit`; with `due_by`, only those
/// whose retry back-off has passed by then.
pub fn queued_emails(
    conn: &Connection,
    due_by: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<QueuedEmail>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, to_addr, kind, message, file FROM emails WHERE status = 'queued'
             AND (?1 IS NULL OR next_attempt_at IS NULL OR next_attempt_at <= ?1)
         ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![due_by.map(|t| t.as_millis()), limit as i64],
        queued_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One email, if it is still queued.
pub fn queued_email(conn: &Connection, id: EmailId) -> Result<Option<QueuedEmail>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, to_addr, kind, message, file FROM emails WHERE id = ?1 AND status = 'queued'",
    )?;
    Ok(stmt.query_row([id], queued_row).optional()?)
}

pub fn mark_email_written(conn: &Connection, id: EmailId, file: &str) -> Result<()> {
    conn.execute(
        "UPDATE emails SET file = ?2 WHERE id = ?1",
        params![id, file],
    )?;
    Ok(())
}

pub fn mark_email_delivered(conn: &Connection, id: EmailId, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE emails SET status = 'delivered', delivered_at = ?2, attempts = attempts + 1,
             last_error = NULL WHERE id = ?1",
        params![id, now.as_millis()],
    )?;
    Ok(())
}

/// Records a failed attempt; the next one is due after a back-off that
/// doubles per attempt from 2 s up to 10 minutes.
pub fn mark_email_failed(
    conn: &Connection,
    id: EmailId,
    error: &str,
    now: Timestamp,
) -> Result<()> {
    conn.execute(
        "UPDATE emails SET attempts = attempts + 1, last_error = ?2,
             next_attempt_at = ?3 + min(600000, 1000 * (1 << min(attempts + 1, 10)))
         WHERE id = ?1",
        params![id, error, now.as_millis()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OpenFlags;

    /// Inserts a row of `bytes` bytes in one transaction.
    fn grow(conn: &mut Connection, bytes: usize) -> Result<()> {
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO operations (at, actor, kind) VALUES (0, ?1, 'filler')",
            [("x".repeat(bytes))],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn filler_rows(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT count(*) FROM operations WHERE kind = 'filler'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_store_at_its_bound_fails_as_full_rolls_back_and_takes_writes_once_raised() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("s.sqlite")).unwrap();
        let size = size_bytes(&conn).unwrap();
        let limit = set_max_bytes(&conn, Some(size)).unwrap();
        assert_eq!(limit, size, "a bound at the size is the size");

        // A 64 KiB row needs new pages: refused as SQLITE_FULL, rolled back.
        let err = grow(&mut conn, 64 << 10).unwrap_err();
        assert!(matches!(err, AdminError::StoreFull(_)), "{err:?}");
        assert_eq!(err.status(), 507);
        assert_eq!(err.code(), "store-full");
        assert!(err.is_store_fault());
        assert_eq!(filler_rows(&conn), 0, "the failed transaction left a row");
        assert!(conn.is_autocommit(), "the failed transaction is still open");
        assert_eq!(size_bytes(&conn).unwrap(), size);

        // Raised: the same write goes through.
        let raised = set_max_bytes(&conn, Some(size + (1 << 20))).unwrap();
        assert!(raised > size + (64 << 10), "{raised}");
        grow(&mut conn, 64 << 10).unwrap();
        assert_eq!(filler_rows(&conn), 1);

        // Lifted: no bound but SQLite's own.
        let lifted = set_max_bytes(&conn, None).unwrap();
        assert_eq!(lifted, UNLIMITED_PAGES * 4096, "page size 4096 by default");
    }

    #[test]
    fn a_bound_below_the_size_is_raised_to_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("s.sqlite")).unwrap();
        let size = size_bytes(&conn).unwrap();
        assert!(size > 4096, "the schema takes several pages: {size}");
        assert_eq!(set_max_bytes(&conn, Some(1)).unwrap(), size);
        assert_eq!(set_max_bytes(&conn, Some(0)).unwrap(), size);
    }

    #[test]
    fn a_bound_too_small_for_the_schema_fails_the_open_as_full() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_limited(&dir.path().join("s.sqlite"), Some(4096)).unwrap_err();
        assert!(matches!(err, AdminError::StoreFull(_)), "{err:?}");
        // Nothing half-made: the schema is all there or not at all.
        let conn = open(&dir.path().join("s.sqlite")).unwrap();
        assert_eq!(
            conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .unwrap(),
            SCHEMA_VERSION as i64
        );
    }

    /// Root ignores file modes, so the read-only case is made by opening the
    /// connection read-only: SQLite answers a write with SQLITE_READONLY, as
    /// it does for a file it could only open for reading.
    #[test]
    fn a_write_to_a_read_only_store_is_a_read_only_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        drop(open(&path).unwrap());
        let mut conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let err = grow(&mut conn, 10).unwrap_err();
        assert!(matches!(err, AdminError::StoreReadOnly(_)), "{err:?}");
        assert_eq!((err.status(), err.code()), (503, "store-read-only"));
        assert!(err.to_string().contains("chmod u+w"), "{err}");
        // Reads still work.
        assert_eq!(tenant_count(&conn).unwrap(), 0);
    }

    #[test]
    fn folder_faults_name_the_folder_and_what_is_wrong() {
        use std::io::{Error, ErrorKind};
        let folder = Path::new("/srv/dialin");
        let cases = [
            (ErrorKind::PermissionDenied, "store-read-only"),
            (ErrorKind::ReadOnlyFilesystem, "store-read-only"),
            (ErrorKind::StorageFull, "store-full"),
            (ErrorKind::QuotaExceeded, "store-full"),
            (ErrorKind::NotADirectory, "store-io"),
        ];
        for (kind, code) in cases {
            let err = folder_fault(folder, &Error::from(kind));
            assert_eq!(err.code(), code, "{kind:?}");
            assert!(err.to_string().contains("/srv/dialin"), "{err}");
        }
    }

    #[test]
    fn opening_a_store_whose_folder_is_a_file_is_a_clear_fault() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"").unwrap();
        let err = open(&file.join("s.sqlite")).unwrap_err();
        assert_eq!(err.code(), "store-io", "{err}");
        assert!(err.to_string().contains("not-a-folder"), "{err}");
        assert!(
            !dir.path().join(".dialin-write-probe").exists(),
            "the probe is cleaned up"
        );
    }

    #[test]
    fn the_write_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(&dir.path().join("s.sqlite")).unwrap());
        assert!(!dir.path().join(".dialin-write-probe").exists());
    }

    #[test]
    fn user_pins_are_found_by_slot_or_by_search() {
        let pin = |p: &str| PinDigits::new(p);
        // Dense from 1, then a gap: 5 is found by searching.
        let pins = UserPins(vec![
            (1, pin("11111")),
            (2, pin("22222")),
            (5, pin("55555")),
        ]);
        assert!(pins.get(1).matches("11111"));
        assert!(pins.get(2).matches("22222"));
        assert!(pins.get(5).matches("55555"));
        assert_eq!(pins.get(3), PinDigits::NONE);
        assert_eq!(pins.get(0), PinDigits::NONE);
        assert_eq!(pins.get(i64::MIN), PinDigits::NONE);
        assert_eq!(pins.get(i64::MAX), PinDigits::NONE);
    }
}
