//! Call records and call events as JSON, and the ring of recent records the
//! admin API lists (`GET /api/calls`).
//!
//! The sans-IO cores keep [`Instant`]s; a record is written in wall-clock
//! time. The driver takes a [`TimeAnchor`] (an `Instant` and the
//! [`Timestamp`] of the same moment) when the call starts and every instant
//! of the call is converted through it, so the record's times are as exact
//! as the call's own clock, whatever the wall clock does during the call.
//!
//! A record never carries a leader PIN: the directory's [`Target`] has one,
//! so targets are written field by field, never whole.
//!
//! [`Target`]: crate::directory::Target

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admin::ids::ConferenceId;
use crate::admin::model::{MeetingId, OperationId, RevocationCause, TenantId, UserId};
use crate::attendant::{
    Attempt, AttemptResult, CallRecord, Completion, EndReason, EndedBy, Malformed, Outcome,
    PlayedPrompt, PromptEnd,
};
use crate::call::{CallEnd, Source};
use crate::directory::Target;
use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::prompts::PromptId;
use crate::time::Timestamp;

/// How many records the bridge keeps for the API by default.
pub const DEFAULT_CAPACITY: usize = 1000;

/// One moment in both clocks, to turn a call's instants into wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct TimeAnchor {
    pub instant: Instant,
    pub wall: Timestamp,
}

impl TimeAnchor {
    pub fn new(instant: Instant, wall: Timestamp) -> TimeAnchor {
        TimeAnchor { instant, wall }
    }

    /// The wall-clock time of `at`.
    pub fn wall(&self, at: Instant) -> Timestamp {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let offset = match at.checked_duration_since(self.instant) {
            Some(after) => ms(after),
            None => -ms(self.instant.duration_since(at)),
        };
        Timestamp::from_millis(self.wall.as_millis().saturating_add(offset))
    }
}

/// What the call's driver knows besides the attendant's record.
#[derive(Clone, Debug)]
pub struct CallInfo {
    pub call_id: String,
    /// The From URI of the INVITE.
    pub from: String,
    /// The Request-URI's user part (the dialled number), if any.
    pub dialed: Option<String>,
    pub source: Source,
    pub anchor: TimeAnchor,
    pub answered: Option<Instant>,
}

/// Where a meeting target points (no leader PIN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MeetingJson {
    pub conference_id: ConferenceId,
    pub tenant: TenantId,
    pub organizer_id: UserId,
    /// `None` for a static ID (the organizer's own meeting space).
    pub meeting_id: Option<MeetingId>,
}

impl MeetingJson {
    fn new(id: ConferenceId, target: &Target) -> MeetingJson {
        MeetingJson {
            conference_id: id,
            tenant: target.tenant,
            organizer_id: target.organizer,
            meeting_id: target.meeting,
        }
    }
}

/// One attempt: the digits, how they came, and what the lookup said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttemptJson {
    pub at: Timestamp,
    pub digits: String,
    /// The method of the first key (`None`: nothing entered).
    pub method: Option<&'static str>,
    /// Every key's method, when the caller mixed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<&'static str>>,
    /// `pound` or `timeout`.
    pub completed_by: &'static str,
    pub cleared: u32,
    pub overflow: u32,
    /// accepted, unknown, revoked, malformed or no-input.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conference_id: Option<ConferenceId>,
    /// For `accepted`: where the ID leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meeting: Option<MeetingJson>,
    /// For `revoked`: when, by which operation, why, and whose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<RevokedJson>,
    /// For `malformed`: what was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RevokedJson {
    pub at: Timestamp,
    pub operation_id: OperationId,
    pub cause: RevocationCause,
    pub organizer_id: UserId,
}

fn completion(c: Completion) -> &'static str {
    match c {
        Completion::Pound => "pound",
        Completion::Timeout => "timeout",
    }
}

fn malformed(m: Malformed) -> String {
    match m {
        Malformed::WrongLength { len } => format!("wrong length: {len} digits"),
        Malformed::NotDecimal { key } => format!("not a decimal digit: {}", key.as_char()),
        Malformed::TooLong { len } => format!("too long: {len} keys"),
    }
}

impl AttemptJson {
    pub fn new(attempt: &Attempt, anchor: &TimeAnchor) -> AttemptJson {
        let methods: Vec<&'static str> = attempt.keys.iter().map(|k| k.method.as_str()).collect();
        let mixed = methods.windows(2).any(|w| w[0] != w[1]);
        let (conference_id, meeting, revoked, malformed_text) = match &attempt.result {
            AttemptResult::Accepted { id, target } => {
                (Some(*id), Some(MeetingJson::new(*id, target)), None, None)
            }
            AttemptResult::Unknown { id } => (Some(*id), None, None, None),
            AttemptResult::Revoked { id, revoked } => (
                Some(*id),
                None,
                Some(RevokedJson {
                    at: revoked.at,
                    operation_id: revoked.operation,
                    cause: revoked.cause,
                    organizer_id: revoked.organizer,
                }),
                None,
            ),
            AttemptResult::Malformed(m) => (None, None, None, Some(malformed(*m))),
            AttemptResult::NoInput => (None, None, None, None),
        };
        AttemptJson {
            at: anchor.wall(attempt.at),
            digits: attempt.digits(),
            method: attempt.method().map(DtmfMethod::as_str),
            methods: mixed.then_some(methods),
            completed_by: completion(attempt.completed_by),
            cleared: attempt.cleared,
            overflow: attempt.overflow,
            result: attempt.result.as_str(),
            conference_id,
            meeting,
            revoked,
            malformed: malformed_text,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PromptJson {
    pub prompt: &'static str,
    pub at: Timestamp,
    /// playing (when the call ended), done, stopped (barge-in) or timed-out.
    pub end: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
}

impl PromptJson {
    fn new(p: &PlayedPrompt, anchor: &TimeAnchor) -> PromptJson {
        let (end, at) = match p.end {
            PromptEnd::Playing => ("playing", None),
            PromptEnd::Done(at) => ("done", Some(at)),
            PromptEnd::Stopped(at) => ("stopped", Some(at)),
            PromptEnd::TimedOut(at) => ("timed-out", Some(at)),
        };
        PromptJson {
            prompt: p.prompt.as_str(),
            at: anchor.wall(p.at),
            end,
            ended_at: at.map(|at| anchor.wall(at)),
        }
    }
}

/// An RFC 3326 Reason, as sent in the bridge's BYE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReasonJson {
    pub cause: u16,
    pub text: String,
    /// The header value as sent.
    pub header: String,
}

impl From<EndReason> for ReasonJson {
    fn from(r: EndReason) -> Self {
        ReasonJson {
            cause: r.cause(),
            text: r.text().to_string(),
            header: r.header_value(),
        }
    }
}

/// Parses `SIP ;cause=408 ;text="No ACK for the 200"` (a BYE the call core
/// sent for its own reasons, not the attendant's).
fn reason_from_header(header: &str) -> ReasonJson {
    let cause = header
        .split(';')
        .find_map(|p| p.trim().strip_prefix("cause="))
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_default();
    let text = header
        .split_once("text=")
        .map(|(_, t)| t.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    ReasonJson {
        cause,
        text,
        header: header.to_string(),
    }
}

/// The record of one call, as the API and the events file show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallRecordJson {
    pub call_id: String,
    pub from: String,
    pub dialed: Option<String>,
    pub source: String,
    pub transport: &'static str,
    pub started_at: Timestamp,
    pub answered_at: Option<Timestamp>,
    pub ended_at: Timestamp,
    pub attempts: Vec<AttemptJson>,
    pub prompts: Vec<PromptJson>,
    /// joined, rejected, abandoned, cancelled, refused (the INVITE got a
    /// final error) or pending.
    pub outcome: &'static str,
    /// The meeting the caller joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<JoinedJson>,
    /// For `abandoned`: what the caller had typed of an unfinished entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_digits: Option<String>,
    /// For `refused`: the INVITE's final status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// caller or bridge (`None` when the INVITE was refused).
    pub hung_up_by: Option<&'static str>,
    /// The Reason of the bridge's BYE.
    pub reason: Option<ReasonJson>,
    pub ignored_keys: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JoinedJson {
    #[serde(flatten)]
    pub meeting: MeetingJson,
    pub alone: bool,
    pub at: Timestamp,
}

impl CallRecordJson {
    /// The record of a call that ended at `ended` with `end`; `record` is
    /// the attendant's (none when the call was refused before its ACK).
    pub fn new(
        info: &CallInfo,
        end: &CallEnd,
        record: Option<&CallRecord>,
        ended: Instant,
    ) -> CallRecordJson {
        let anchor = &info.anchor;
        let mut json = CallRecordJson {
            call_id: info.call_id.clone(),
            from: info.from.clone(),
            dialed: info.dialed.clone(),
            source: info.source.addr.to_string(),
            transport: info.source.transport_name(),
            started_at: anchor.wall(anchor.instant),
            answered_at: info.answered.map(|at| anchor.wall(at)),
            ended_at: anchor.wall(ended),
            attempts: Vec::new(),
            prompts: Vec::new(),
            outcome: "pending",
            joined: None,
            pending_digits: None,
            sip_status: None,
            hung_up_by: None,
            reason: None,
            ignored_keys: 0,
        };
        match end {
            CallEnd::Rejected(status) => {
                json.outcome = "refused";
                json.sip_status = Some(*status);
            }
            CallEnd::CallerHungUp => json.hung_up_by = Some("caller"),
            CallEnd::BridgeHungUp(header) => {
                json.hung_up_by = Some("bridge");
                json.reason = Some(reason_from_header(header));
            }
        }
        let Some(record) = record else {
            return json;
        };
        json.attempts = record
            .attempts
            .iter()
            .map(|a| AttemptJson::new(a, anchor))
            .collect();
        json.prompts = record
            .prompts
            .iter()
            .map(|p| PromptJson::new(p, anchor))
            .collect();
        json.ignored_keys = record.ignored_keys;
        if let Some(ending) = record.ended {
            json.ended_at = anchor.wall(ending.at);
            match ending.by {
                EndedBy::Caller => json.hung_up_by = Some("caller"),
                EndedBy::Attendant(reason) => {
                    json.hung_up_by = Some("bridge");
                    json.reason = Some(reason.into());
                }
            }
        }
        match &record.outcome {
            Outcome::Pending => {}
            Outcome::Joined {
                id,
                target,
                alone,
                at,
            } => {
                json.outcome = "joined";
                json.joined = Some(JoinedJson {
                    meeting: MeetingJson::new(*id, target),
                    alone: *alone,
                    at: anchor.wall(*at),
                });
            }
            Outcome::Rejected(_) => json.outcome = "rejected",
            Outcome::Abandoned { pending } => {
                json.outcome = "abandoned";
                json.pending_digits = Some(pending.clone());
            }
            Outcome::Cancelled => json.outcome = "cancelled",
        }
        json
    }
}

/// One line of the events file (`dialin serve --events FILE`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventLine {
    pub at: Timestamp,
    pub call_id: String,
    #[serde(flatten)]
    pub event: EventJson,
}

/// What happened, by its `event` name.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventJson {
    /// An INVITE started a call.
    Started {
        from: String,
        dialed: Option<String>,
        source: String,
        transport: &'static str,
    },
    Answered,
    Digit {
        digit: String,
        method: &'static str,
    },
    Prompt {
        prompt: &'static str,
    },
    /// Nested: the attempt has its own `at` (when the entry completed).
    Attempt {
        attempt: AttemptJson,
    },
    Joined {
        #[serde(flatten)]
        meeting: MeetingJson,
        alone: bool,
    },
    Left,
    Ended {
        record: Box<CallRecordJson>,
    },
    /// Guessing protection blocked a source or caller ID (`call_id`: the
    /// call whose failed attempt crossed the threshold).
    GuardBlocked {
        /// `source` or `caller-id`.
        kind: &'static str,
        key: String,
        until: Timestamp,
        failures: u32,
        source: String,
        caller_id: Option<String>,
    },
    /// The first INVITE a block refused with 403 (`call_id`: its Call-ID).
    GuardRefused {
        kind: &'static str,
        key: String,
        until: Timestamp,
        source: String,
        caller_id: Option<String>,
    },
    /// A block's cool-down ended (`call_id` empty).
    GuardUnblocked {
        kind: &'static str,
        key: String,
        refused: u64,
    },
    /// The global alarm went on or off (`call_id` empty): failed attempts
    /// across all sources in the window against the threshold.
    GuardAlarm {
        on: bool,
        failures: u64,
        threshold: u32,
        window_s: u64,
    },
}

impl EventJson {
    pub fn digit(digit: Digit, method: DtmfMethod) -> EventJson {
        EventJson::Digit {
            digit: digit.as_char().to_string(),
            method: method.as_str(),
        }
    }

    pub fn prompt(prompt: PromptId) -> EventJson {
        EventJson::Prompt {
            prompt: prompt.as_str(),
        }
    }

    /// The `event` name.
    pub fn name(&self) -> &'static str {
        match self {
            EventJson::Started { .. } => "started",
            EventJson::Answered => "answered",
            EventJson::Digit { .. } => "digit",
            EventJson::Prompt { .. } => "prompt",
            EventJson::Attempt { .. } => "attempt",
            EventJson::Joined { .. } => "joined",
            EventJson::Left => "left",
            EventJson::Ended { .. } => "ended",
            EventJson::GuardBlocked { .. } => "guard-blocked",
            EventJson::GuardRefused { .. } => "guard-refused",
            EventJson::GuardUnblocked { .. } => "guard-unblocked",
            EventJson::GuardAlarm { .. } => "guard-alarm",
        }
    }
}

/// The last records of the bridge, newest last. A std Mutex: held to push
/// or copy out, never across an await.
#[derive(Debug)]
pub struct CallLog {
    capacity: usize,
    records: Mutex<VecDeque<std::sync::Arc<CallRecordJson>>>,
}

impl Default for CallLog {
    fn default() -> Self {
        CallLog::new(DEFAULT_CAPACITY)
    }
}

impl CallLog {
    pub fn new(capacity: usize) -> CallLog {
        CallLog {
            capacity: capacity.max(1),
            records: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds a record, dropping the oldest past the capacity.
    pub fn push(&self, record: CallRecordJson) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        while records.len() >= self.capacity {
            records.pop_front();
        }
        records.push_back(std::sync::Arc::new(record));
    }

    /// Up to `limit` records, newest first.
    pub fn recent(&self, limit: usize) -> Vec<std::sync::Arc<CallRecordJson>> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().rev().take(limit).cloned().collect()
    }

    /// The newest record with this Call-ID.
    pub fn get(&self, call_id: &str) -> Option<std::sync::Arc<CallRecordJson>> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().rev().find(|r| r.call_id == call_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Source;
    use crate::sip::transaction::Transport;

    fn record(call_id: &str) -> CallRecordJson {
        let t0 = Instant::now();
        let info = CallInfo {
            call_id: call_id.into(),
            from: "sip:a@b".into(),
            dialed: Some("+14255550100".into()),
            source: Source {
                transport: Transport::Reliable,
                addr: "127.0.0.1:5062".parse().unwrap(),
            },
            anchor: TimeAnchor::new(t0, Timestamp::from_millis(1_000_000)),
            answered: None,
        };
        CallRecordJson::new(
            &info,
            &CallEnd::Rejected(488),
            None,
            t0 + Duration::from_millis(1500),
        )
    }

    #[test]
    fn the_log_keeps_the_newest_records_up_to_its_capacity() {
        let log = CallLog::new(3);
        for i in 0..5 {
            log.push(record(&format!("c{i}")));
        }
        assert_eq!(log.len(), 3);
        let ids: Vec<_> = log.recent(10).iter().map(|r| r.call_id.clone()).collect();
        assert_eq!(ids, ["c4", "c3", "c2"]);
        assert_eq!(log.recent(1)[0].call_id, "c4");
        assert!(log.get("c0").is_none());
        assert_eq!(log.get("c2").unwrap().call_id, "c2");
    }

    #[test]
    fn a_refused_call_has_its_status_and_times_through_the_anchor() {
        let r = record("x");
        assert_eq!(r.outcome, "refused");
        assert_eq!(r.sip_status, Some(488));
        assert_eq!(r.transport, "TCP");
        assert_eq!(r.ended_at, Timestamp::from_millis(1_001_500));
        assert_eq!(r.hung_up_by, None);
        let anchor = TimeAnchor::new(Instant::now(), Timestamp::from_millis(10_000));
        let before = anchor.instant.checked_sub(Duration::from_secs(2)).unwrap();
        assert_eq!(anchor.wall(before), Timestamp::from_millis(8_000));
    }

    #[test]
    fn an_attempt_event_nests_the_attempt_so_no_key_repeats() {
        use crate::attendant::KeyPress;
        let t0 = Instant::now();
        let anchor = TimeAnchor::new(t0, Timestamp::from_millis(0));
        let attempt = Attempt {
            at: t0,
            keys: vec![KeyPress {
                digit: Digit::D1,
                method: DtmfMethod::Info,
                at: t0,
            }],
            cleared: 0,
            overflow: 0,
            completed_by: Completion::Pound,
            result: AttemptResult::Malformed(Malformed::WrongLength { len: 1 }),
        };
        let line = EventLine {
            at: anchor.wall(t0),
            call_id: "c".into(),
            event: EventJson::Attempt {
                attempt: AttemptJson::new(&attempt, &anchor),
            },
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(text.matches("\"at\":").count(), 2, "{text}");
        assert!(
            text.contains(r#""event":"attempt","attempt":{"at":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""malformed":"wrong length: 1 digits""#),
            "{text}"
        );
        assert!(text.contains(r#""method":"info""#), "{text}");
    }

    #[test]
    fn a_reason_header_the_core_wrote_is_read_back() {
        let r = reason_from_header(r#"SIP ;cause=408 ;text="No ACK for the 200""#);
        assert_eq!(r.cause, 408);
        assert_eq!(r.text, "No ACK for the 200");
    }
}
