//! The tokio side: sockets, tasks and timers around the sans-IO cores.
//! Today: the HTTP admin API and the server that owns a data folder.

pub mod caller;
pub mod http;
pub mod server;
