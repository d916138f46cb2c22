//! SIP without IO: message parsing and building over rsip (kept behind
//! [`message`] so nothing else depends on rsip), TCP stream framing, the SDP
//! subset the bridge speaks, and RFC 3261 transactions and dialogs as state
//! machines that take time as an argument; [`linger`] keeps what a
//! finished call's transactions still answer, without the call;
//! [`admission`] counts TCP connections and calls per source.

pub mod admission;
pub mod dialog;
pub mod framing;
pub mod linger;
pub mod message;
pub mod sdp;
pub mod transaction;
