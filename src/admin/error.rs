//! Admin errors. Each knows the HTTP status it maps to and a stable code, so
//! the API, the CLI and scenarios can tell refusals apart.

use super::ids::{ConferenceId, EmailAddress};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input could not be parsed or breaks a rule on its own.
    #[error("{0}")]
    Invalid(String),

    #[error("no user with email {0}: enable them first (dialin admin user enable {0})")]
    UnknownUser(EmailAddress),

    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    #[error(
        "{user} is not enabled for dial-in conferencing: enable them first (dialin admin user enable {user})"
    )]
    NotEnabled { user: EmailAddress },

    #[error(
        "this tenant uses dynamic conference IDs only: each meeting gets its own ID, so there is \
         no static conference ID to reset or set (with Microsoft as provider the tenant is Dynamic Only by \
         default and can't be changed in the admin center). To use static IDs, switch the tenant: \
         dialin admin tenant set --conference-id-mode static"
    )]
    DynamicOnlyTenant,

    #[error(
        "{user} uses the third-party audio conferencing provider '{provider}': its conference ID \
         is set by hand (dialin admin user set-id {user} ID), not reset"
    )]
    ThirdPartyReset {
        user: EmailAddress,
        provider: String,
    },

    #[error(
        "{user} is enabled with the audio conferencing provider '{current}': to move them to \
         {wanted}, enable again with --replace-provider"
    )]
    ProviderConflict {
        user: EmailAddress,
        current: String,
        wanted: String,
    },

    #[error("conference ID {id} is in use by {holder}: pick another")]
    IdInUse { id: ConferenceId, holder: String },

    #[error(
        "conference ID {id} was revoked and is never issued again (old invitations still carry \
         it): pick another"
    )]
    IdRevoked { id: ConferenceId },

    #[error("{0}")]
    Conflict(String),

    #[error("the store failed: {0}")]
    Store(rusqlite::Error),

    /// SQLite said SQLITE_FULL: the data folder's disk is full, or the store
    /// reached `--store-max-bytes`. The transaction rolled back.
    #[error(
        "the store is full (the data folder's disk is full, or the store reached its \
         --store-max-bytes limit): free space on that disk or raise the limit, then retry; \
         nothing was changed ({0})"
    )]
    StoreFull(String),

    /// SQLite said SQLITE_READONLY: the store's files or folder can't be
    /// written by this process. The transaction rolled back.
    #[error(
        "the store is read-only (the data folder or its dialin.sqlite files can't be written \
         by the user running dialin): make them writable (chmod u+w), then retry; nothing was \
         changed ({0})"
    )]
    StoreReadOnly(String),

    /// SQLite said SQLITE_IOERR or SQLITE_CANTOPEN: the disk failed a read
    /// or a write. The transaction rolled back.
    #[error(
        "the store's disk failed to read or write: check the data folder's disk and its \
         files, then retry; nothing was changed ({0})"
    )]
    StoreIo(String),

    #[error("{0}")]
    Io(String),
}

impl AdminError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::Invalid(_) => 400,
            AdminError::UnknownUser(_) | AdminError::NotFound { .. } => 404,
            AdminError::NotEnabled { .. }
            | AdminError::DynamicOnlyTenant
            | AdminError::ThirdPartyReset { .. }
            | AdminError::ProviderConflict { .. }
            | AdminError::IdInUse { .. }
            | AdminError::IdRevoked { .. }
            | AdminError::Conflict(_) => 409,
            AdminError::Store(_) | AdminError::Io(_) => 500,
            // RFC 4918 §11.5: the server can't store what the request needs.
            AdminError::StoreFull(_) => 507,
            // Temporary: the operation can succeed once the folder is fixed.
            AdminError::StoreReadOnly(_) | AdminError::StoreIo(_) => 503,
        }
    }

    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::Invalid(_) => "invalid",
            AdminError::UnknownUser(_) => "unknown-user",
            AdminError::NotFound { .. } => "not-found",
            AdminError::NotEnabled { .. } => "not-enabled",
            AdminError::DynamicOnlyTenant => "dynamic-only-tenant",
            AdminError::ThirdPartyReset { .. } => "third-party-provider",
            AdminError::ProviderConflict { .. } => "provider-conflict",
            AdminError::IdInUse { .. } => "conference-id-in-use",
            AdminError::IdRevoked { .. } => "conference-id-revoked",
            AdminError::Conflict(_) => "conflict",
            AdminError::Store(_) => "store",
            AdminError::Io(_) => "io",
            AdminError::StoreFull(_) => "store-full",
            AdminError::StoreReadOnly(_) => "store-read-only",
            AdminError::StoreIo(_) => "store-io",
        }
    }

    /// A fault of the store's disk or folder (full, read-only, IO error),
    /// as opposed to a refused request: the request may succeed unchanged
    /// once the fault is fixed.
    pub fn is_store_fault(&self) -> bool {
        matches!(
            self,
            AdminError::StoreFull(_) | AdminError::StoreReadOnly(_) | AdminError::StoreIo(_)
        )
    }
}

/// Sorts SQLite's errors by what an admin can do about them: a full disk
/// (or store limit), a read-only folder, a failing disk, or anything else.
impl From<rusqlite::Error> for AdminError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => AdminError::StoreFull(e.to_string()),
            Some(ErrorCode::ReadOnly) => AdminError::StoreReadOnly(e.to_string()),
            Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
                AdminError::StoreIo(e.to_string())
            }
            _ => AdminError::Store(e),
        }
    }
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn sqlite(code: std::os::raw::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_faults_of_the_disk_map_to_store_faults_with_their_status() {
        let cases = [
            (ffi::SQLITE_FULL, 507, "store-full"),
            (ffi::SQLITE_READONLY, 503, "store-read-only"),
            (ffi::SQLITE_IOERR_WRITE, 503, "store-io"),
            (ffi::SQLITE_IOERR_FSYNC, 503, "store-io"),
            (ffi::SQLITE_CANTOPEN, 503, "store-io"),
            (ffi::SQLITE_CONSTRAINT, 500, "store"),
            (ffi::SQLITE_CORRUPT, 500, "store"),
        ];
        for (code, status, name) in cases {
            let err = AdminError::from(sqlite(code));
            assert_eq!((err.status(), err.code()), (status, name), "{code}: {err}");
            assert_eq!(err.is_store_fault(), status != 500, "{code}");
        }
    }

    #[test]
    fn a_full_store_says_what_to_do_and_that_nothing_changed() {
        let text = AdminError::from(sqlite(ffi::SQLITE_FULL)).to_string();
        assert!(text.contains("disk is full"), "{text}");
        assert!(text.contains("--store-max-bytes"), "{text}");
        assert!(text.contains("then retry"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
    }
}
