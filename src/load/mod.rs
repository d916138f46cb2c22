//! `dialin load`'s logic, no IO: the schedule of call starts
//! ([`schedule`]), the revocation judge ([`judge`]), the classification of
//! each call and the report with its latency histograms ([`stats`]), and
//! the validated options ([`options`]). The driver that places the calls
//! is `cmd::load`.

pub mod judge;
pub mod options;
pub mod schedule;
pub mod stats;

pub use judge::{Decision, IdKind, Judge, ResetWindow};
pub use options::{DtmfChoice, LoadOptions, OptionsError};
pub use schedule::Schedule;
pub use stats::{CallSummary, Cause, LoadReport};
