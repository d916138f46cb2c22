//! What one call did in the attendant: each attempt with its keys, DTMF
//! method and result, the prompts played, and how the call ended.
//!
//! The caller hears the same prompt for an unknown and a revoked ID (DESIGN
//! rule 4); this record is where the two differ, a revoked result carrying
//! the revocation's time and operation. It is data only: writing it out
//! (logs, JSON, scenario reports) is for the layers above.

use std::time::Instant;

use crate::admin::ids::ConferenceId;
use crate::directory::{Revoked, Target};
use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::prompts::PromptId;

/// One key the caller pressed, as the media layer reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPress {
    pub digit: Digit,
    pub method: DtmfMethod,
    pub at: Instant,
}

/// What ended an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The caller pressed `#`.
    Pound,
    /// The first-digit or inter-digit timer ran out.
    Timeout,
}

/// Why an entry was not looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Decimal digits, but not an accepted number of them (0 when the caller
    /// pressed `#` alone).
    WrongLength { len: usize },
    /// A key that is not 0-9: `A`-`D`, or `*` when it does not clear.
    NotDecimal { key: Digit },
    /// More keys than the buffer holds; `len` counts them all.
    TooLong { len: usize },
}

/// The result of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Found active at the moment the entry completed.
    Accepted { id: ConferenceId, target: Target },
    /// Not in the directory.
    Unknown { id: ConferenceId },
    /// Revoked (reset, set, disabled...) before the entry completed.
    Revoked { id: ConferenceId, revoked: Revoked },
    /// Not looked up: see [`Malformed`].
    Malformed(Malformed),
    /// The first-digit timer ran out with nothing entered.
    NoInput,
}

impl AttemptResult {
    /// The name call records and scenario expectations use.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptResult::Accepted { .. } => "accepted",
            AttemptResult::Unknown { .. } => "unknown",
            AttemptResult::Revoked { .. } => "revoked",
            AttemptResult::Malformed(_) => "malformed",
            AttemptResult::NoInput => "no-input",
        }
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, AttemptResult::Accepted { .. })
    }
}

/// One completed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When the entry completed: the moment of the lookup.
    pub at: Instant,
    /// The keys of the entry as evaluated: after the last `*` that cleared
    /// it, without the closing `#`, at most `max_digits` of them.
    pub keys: Vec<KeyPress>,
    /// How many times `*` cleared this entry.
    pub cleared: u32,
    /// Keys dropped because the buffer was full.
    pub overflow: u32,
    pub completed_by: Completion,
    pub result: AttemptResult,
}

impl Attempt {
    /// The keys as text, e.g. `"1234567"`.
    pub fn digits(&self) -> String {
        self.keys.iter().map(|k| k.digit.as_char()).collect()
    }

    /// How the entry's digits arrived: the method of its first key (a caller
    /// rarely mixes; `keys` has the method of each). `None` for no input.
    pub fn method(&self) -> Option<DtmfMethod> {
        self.keys.first().map(|k| k.method)
    }
}

/// How a prompt's playback ended, as far as the flow knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptEnd {
    /// Still playing, or the call ended while it played.
    Playing,
    /// The media layer reported it finished.
    Done(Instant),
    /// The caller pressed a key and the flow stopped it (barge-in).
    Stopped(Instant),
    /// No `PromptDone` came within the prompt limit.
    TimedOut(Instant),
}

/// A prompt the flow asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayedPrompt {
    pub prompt: PromptId,
    pub at: Instant,
    pub end: PromptEnd,
}

/// Why the attendant hung up, with what the BYE's Reason header says
/// (RFC 3326 §2: `Reason: SIP ;cause=<status code> ;text="<text>"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Too many failed attempts, at least one of which entered something:
    /// 403 Forbidden, the response a bad credential gets (RFC 3261 §21.4.4).
    NotValid,
    /// Too many attempts in which the caller entered nothing: 408 Request
    /// Timeout (RFC 3261 §21.4.9), because the bridge gave up waiting for
    /// the caller. 480 was the other candidate; it says the callee is
    /// unavailable, which is not what happened.
    NoInput,
    /// The bridge is shutting down: 503 Service Unavailable (RFC 3261 §21.5.4).
    Shutdown,
}

impl EndReason {
    /// The SIP status code for the Reason header's `cause`.
    pub fn cause(self) -> u16 {
        match self {
            EndReason::NotValid => 403,
            EndReason::NoInput => 408,
            EndReason::Shutdown => 503,
        }
    }

    /// The Reason header's `text`.
    pub fn text(self) -> &'static str {
        match self {
            EndReason::NotValid => "Conference ID not valid",
            EndReason::NoInput => "No input",
            EndReason::Shutdown => "Service shutting down",
        }
    }

    /// The Reason header's value, ready for the BYE.
    pub fn header_value(self) -> String {
        format!("SIP ;cause={} ;text=\"{}\"", self.cause(), self.text())
    }
}

/// Where the call got to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still collecting, or on the way into the room.
    Pending,
    /// In the meeting (see [`CallRecord::ended`] for whether it still is).
    Joined {
        id: ConferenceId,
        target: Target,
        alone: bool,
        at: Instant,
    },
    /// Out of attempts: the attendant said goodbye and hung up (or is about to).
    Rejected(EndReason),
    /// The caller hung up before joining; `pending` is what they had typed
    /// of an unfinished entry.
    Abandoned { pending: String },
    /// Shutdown before the caller joined.
    Cancelled,
}

/// Who ended the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// The caller hung up (their BYE).
    Caller,
    /// The attendant hung up (our BYE, with this reason).
    Attendant(EndReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub at: Instant,
    pub by: EndedBy,
}

/// Everything the flow knows about the call so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    pub started: Instant,
    pub attempts: Vec<Attempt>,
    pub prompts: Vec<PlayedPrompt>,
    pub outcome: Outcome,
    pub ended: Option<Ending>,
    /// Keys pressed when no entry was being collected (during "joining",
    /// in the room, during "goodbye"): counted, not acted on.
    pub ignored_keys: u32,
}

impl CallRecord {
    pub(crate) fn new(started: Instant) -> Self {
        CallRecord {
            started,
            attempts: Vec::new(),
            prompts: Vec::new(),
            outcome: Outcome::Pending,
            ended: None,
            ignored_keys: 0,
        }
    }

    /// The prompts in the order they were asked for.
    pub fn prompt_ids(&self) -> Vec<PromptId> {
        self.prompts.iter().map(|p| p.prompt).collect()
    }

    /// Each attempt's result name, in order.
    pub fn results(&self) -> Vec<&'static str> {
        self.attempts.iter().map(|a| a.result.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_headers_follow_rfc_3326() {
        assert_eq!(
            EndReason::NotValid.header_value(),
            r#"SIP ;cause=403 ;text="Conference ID not valid""#
        );
        assert_eq!(
            EndReason::NoInput.header_value(),
            r#"SIP ;cause=408 ;text="No input""#
        );
        assert_eq!(
            EndReason::Shutdown.header_value(),
            r#"SIP ;cause=503 ;text="Service shutting down""#
        );
    }

    #[test]
    fn attempt_reports_digits_and_first_method() {
        let t0 = Instant::now();
        let key = |digit, method| KeyPress {
            digit,
            method,
            at: t0,
        };
        let a = Attempt {
            at: t0,
            keys: vec![
                key(Digit::D1, DtmfMethod::Info),
                key(Digit::A, DtmfMethod::Rfc4733),
            ],
            cleared: 0,
            overflow: 0,
            completed_by: Completion::Pound,
            result: AttemptResult::Malformed(Malformed::NotDecimal { key: Digit::A }),
        };
        assert_eq!(a.digits(), "1A");
        assert_eq!(a.method(), Some(DtmfMethod::Info));
        assert_eq!(a.result.as_str(), "malformed");
        let none = Attempt {
            keys: vec![],
            result: AttemptResult::NoInput,
            ..a
        };
        assert_eq!(none.method(), None);
        assert_eq!(none.digits(), "");
    }
}
