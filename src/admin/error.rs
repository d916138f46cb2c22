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
    Store(#[from] rusqlite::Error),

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
        }
    }
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;
