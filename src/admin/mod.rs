//! The admin side: everything an administrator does to tenants, users,
//! conference IDs, PINs, meetings and emails, and the one [`Service`] that
//! does it.
//!
//! # Layout
//! - [`ids`]: validated values (conference IDs, emails, E.164 numbers, PINs)
//! - [`model`]: the entities the service returns
//! - [`service`]: the rules, the one writer: validate, commit, update the directory
//! - [`store`]: SQLite schema and rows
//! - [`mail`]: email texts and the outbox
//! - [`migration`]: the meeting migration job's state machine
//! - [`import`]: the CSV of users to enable at once

pub mod error;
pub mod ids;
pub mod import;
pub mod mail;
pub mod migration;
pub mod model;
pub mod service;
pub mod store;

pub use error::AdminError;
pub use service::{Options, Service};
