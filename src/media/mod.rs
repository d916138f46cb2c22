//! Media without IO: RTP packets, G.711, DTMF (RFC 4733, SIP INFO, in-band
//! tones) and the prompt catalog.

pub mod dtmf;
pub mod g711;
pub mod prompts;
pub mod recorder;
pub mod rtp;
