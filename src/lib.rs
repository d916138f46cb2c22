//! dialin: a dial-in conferencing bridge simulator.
//!
//! A caller dials a service number, the auto attendant asks for a 7-digit
//! conference ID followed by `#`, looks it up in the [`directory`], and puts
//! the caller into the meeting or rejects the ID. Admins enable users, reset
//! conference IDs (the old ID stops working at once), send conference info
//! and migrate meetings, through the [`admin`] service.
//!
//! # Layout
//! - [`time`]: timestamps and the injected clock
//! - [`admin`]: the admin model, rules, SQLite store, emails, migration jobs
//! - [`directory`]: the concurrent map the bridge looks IDs up in; only the
//!   admin service writes it
//! - [`sip`]: SIP messages, framing, SDP, transactions and dialogs (no IO)
//! - [`media`]: RTP, G.711, DTMF and prompts (no IO)
//! - [`attendant`]: the caller flow state machine (no IO)
//! - [`call`]: one call at the bridge: transactions, dialog, SDP, the
//!   attendant, prompt playout and DTMF, as one sans-IO core
//! - [`caller`]: the SIP caller (UAC) that places test calls, presses DTMF
//!   and hears prompts (no IO)
//! - [`scenario`]: call scenario files (TOML): the fixture, the steps and
//!   their expectations, parsed and checked with file and line in errors
//! - [`guard`]: guessing protection: failed conference ID entries counted
//!   per source and per caller ID, lockouts and the global alarm (no IO)
//! - [`records`]: call records and call events as JSON, and the ring of
//!   recent records the admin API lists
//! - [`datadir`]: the data folder (store, outbox, token, lock)
//! - [`load`]: the load generator's schedule, revocation judge and report
//!   (no IO; `cmd::load` drives it)
//! - [`net`]: the tokio side: the HTTP admin API, SIP over UDP/TCP, call
//!   tasks with their RTP sockets, and the server
//! - [`client`]: the admin API client the CLI uses
//! - [`cmd`]: the command-line commands (`serve`, `admin`)
//! - [`fuzzing`]: one entry point per kind of untrusted input, for the fuzz
//!   targets in `fuzz/` and the replay of their corpus in `cargo test`

pub mod admin;
pub mod attendant;
pub mod call;
pub mod caller;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod datadir;
pub mod directory;
pub mod fuzzing;
pub mod guard;
pub mod load;
pub mod media;
pub mod net;
pub mod records;
pub mod scenario;
pub mod sip;
pub mod time;
