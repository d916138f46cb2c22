//! The commands behind the CLI: each takes its parsed arguments and runs.

pub mod admin;
pub mod call;
pub mod calls;
pub mod connect;
pub mod demo;
pub mod load;
pub mod run;
pub mod serve;
