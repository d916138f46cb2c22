//! The tokio side: sockets, tasks and timers around the sans-IO cores.
//!
//! - [`http`]: the HTTP admin API
//! - [`sip`]: SIP over UDP and TCP, the router to calls, stateless answers
//! - [`rtp`]: a call's task (its SIP inbox, RTP socket and timers) and RTP ports
//! - [`guard`]: guessing protection shared by the router and the call tasks
//! - [`metrics`]: `GET /api/metrics` in the Prometheus text format
//! - [`events`]: the events file writer (`--events FILE`)
//! - [`server`]: `dialin serve`: the data folder, the admin API and the SIP side

pub mod caller;
pub mod events;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod pool;
pub mod rtp;
pub mod server;
pub mod sip;
