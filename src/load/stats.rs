//! The load report: each call's observation classified against the judge,
//! counted by outcome and by cause of failure, and its latencies in
//! HdrHistograms (microseconds, 3 significant figures). No IO: the driver
//! feeds [`CallSummary`]s and prints what [`LoadReport`] renders.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::judge::{Decision, Expect, IdKind, Judge, Verdict};
use crate::admin::ids::ConferenceId;

/// Why a call failed, as a short label the report counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The call did not end within the call timeout.
    Timeout,
    /// The INVITE got this final error (503 when the bridge is full).
    SipStatus(u16),
    /// No final response to the INVITE (Timer B).
    NoAnswer,
    /// A local or transport error (bind, send, receive), with its kind.
    Transport(String),
    /// The call was answered but could not go on (unusable SDP answer…).
    CallFailed,
    /// The call ended before all its keys were pressed.
    DigitsNotSent,
    /// The bridge's decision was not the one the ID must get.
    WrongOutcome { kind: IdKind, got: Decision },
    /// The bridge judged the entry as something else (malformed, no input).
    NotLookedUp(String),
    /// The decision could not be found (no record, no prompt heard) where
    /// one should have been.
    NoDecision,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Timeout => f.write_str("timeout"),
            Cause::SipStatus(s) => write!(f, "SIP {s}"),
            Cause::NoAnswer => f.write_str("no answer to the INVITE"),
            Cause::Transport(what) => write!(f, "transport: {what}"),
            Cause::CallFailed => f.write_str("call failed after the answer"),
            Cause::DigitsNotSent => f.write_str("ended before the digits were sent"),
            Cause::WrongOutcome { kind, got } => {
                let got = match got {
                    Decision::Accepted => "accepted",
                    Decision::Rejected => "rejected",
                };
                write!(f, "wrong outcome: {} ID {got}", kind.as_str())
            }
            Cause::NotLookedUp(result) => write!(f, "entry not looked up: {result}"),
            Cause::NoDecision => f.write_str("no decision observed"),
        }
    }
}

/// What the driver observed of one call. Times are offsets from the run's
/// start; latencies are the caller's.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSummary {
    pub id: ConferenceId,
    pub kind: IdKind,
    /// Set when the call failed before the bridge could decide.
    pub failure: Option<Cause>,
    /// When the `#` was sent.
    pub hash_sent: Option<Duration>,
    /// By when the caller knew the decision (a decision prompt started, or
    /// the call was over).
    pub decided_by: Option<Duration>,
    /// What the bridge decided, when it could be observed.
    pub decision: Option<Decision>,
    /// INVITE → 200.
    pub answer: Option<Duration>,
    /// `#` → decision.
    pub decision_latency: Option<Duration>,
    /// INVITE → end.
    pub whole: Option<Duration>,
    /// RFC 3550 interarrival jitter of the bridge's audio.
    pub jitter: Option<Duration>,
    /// SIP requests the caller sent again (Timers A and E).
    pub retransmissions: u64,
}

/// How one call ended, for the counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Joined,
    /// Rejected as it must be: an invalid ID (unknown or revoked before
    /// the run), or a valid one revoked by a reset during the run.
    Rejected {
        reset_during_run: bool,
    },
    /// Ended without a failure, but the decision was not observable (muted
    /// prompts and no bridge records).
    Undecided,
    Failed(Cause),
    /// The revocation race went wrong.
    Violation,
}

/// Classifies one call.
pub fn classify(judge: &Judge, call: &CallSummary) -> Classified {
    if let Some(cause) = &call.failure {
        return Classified::Failed(cause.clone());
    }
    let Some(hash_sent) = call.hash_sent else {
        return Classified::Failed(Cause::DigitsNotSent);
    };
    let Some(decision) = call.decision else {
        return Classified::Undecided;
    };
    let decided_by = call.decided_by.unwrap_or(Duration::MAX).max(hash_sent);
    match judge.judge(call.id, call.kind, hash_sent, decided_by, decision) {
        Verdict::Violation => Classified::Violation,
        Verdict::Wrong => Classified::Failed(Cause::WrongOutcome {
            kind: call.kind,
            got: decision,
        }),
        Verdict::Right => match decision {
            Decision::Accepted => Classified::Joined,
            Decision::Rejected => Classified::Rejected {
                reset_during_run: call.kind == IdKind::Valid
                    && judge.expect(call.id, call.kind, hash_sent, decided_by) != Expect::Accept,
            },
        },
    }
}

/// Latencies in microseconds, 1 µs to 1 hour.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant bounds: low ≥ 1, high ≥ 2 × low, 3 significant figures"),
        )
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `q` (0..=1), `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.0.value_at_quantile(q)))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.0.max()))
    }

    fn to_json(&self) -> Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        json!({
            "count": self.count(),
            "p50_ms": ms(self.quantile(0.50)),
            "p90_ms": ms(self.quantile(0.90)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms(self.max()),
        })
    }

    fn line(&self, name: &str) -> String {
        let f = |d: Option<Duration>| match d {
            Some(d) => format!("{:.3} ms", d.as_secs_f64() * 1000.0),
            None => "-".into(),
        };
        if self.count() == 0 {
            return format!("  {name:<16} n/a (not observed)");
        }
        format!(
            "  {name:<16} p50 {:>10}  p90 {:>10}  p99 {:>10}  max {:>10}  ({} calls)",
            f(self.quantile(0.50)),
            f(self.quantile(0.90)),
            f(self.quantile(0.99)),
            f(self.max()),
            self.count()
        )
    }
}

/// The counts and latencies of a run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub calls: u64,
    pub joined: u64,
    /// Invalid IDs (unknown or revoked before the run), rejected.
    pub rejected_invalid: u64,
    /// Valid IDs revoked by a reset during the run, rejected.
    pub rejected_reset: u64,
    pub undecided: u64,
    pub failed: u64,
    pub violations: u64,
    /// SIP requests the callers sent again because an answer was late;
    /// as for SIPp, a rate is held only with none.
    pub retransmissions: u64,
    /// Calls that sent at least one retransmission.
    pub calls_retransmitting: u64,
    pub failures: BTreeMap<String, u64>,
    /// Calls started with each kind of ID.
    pub by_kind: BTreeMap<&'static str, u64>,
    pub resets: u64,
    pub answer: Latency,
    pub decision: Latency,
    pub whole: Latency,
    pub jitter: Latency,
    /// Wall time of the run, first start to last end.
    pub elapsed: Duration,
    /// From the first call's start to the last one's: the rate achieved.
    pub start_span: Duration,
    /// The run's settings, echoed in the JSON for tools.
    pub settings: Value,
    /// Lines about how the run was set up (target, users, notes).
    pub notes: Vec<String>,
}

impl LoadReport {
    /// Classifies every call against the judge and aggregates.
    pub fn build(judge: &Judge, calls: &[CallSummary], elapsed: Duration) -> LoadReport {
        let mut r = LoadReport {
            elapsed,
            resets: judge.resets() as u64,
            ..LoadReport::default()
        };
        for call in calls {
            r.add(judge, call);
        }
        r
    }

    fn add(&mut self, judge: &Judge, call: &CallSummary) {
        self.calls += 1;
        self.retransmissions += call.retransmissions;
        if call.retransmissions > 0 {
            self.calls_retransmitting += 1;
        }
        *self.by_kind.entry(call.kind.as_str()).or_default() += 1;
        match classify(judge, call) {
            Classified::Joined => self.joined += 1,
            Classified::Rejected { reset_during_run } => {
                if reset_during_run {
                    self.rejected_reset += 1;
                } else {
                    self.rejected_invalid += 1;
                }
            }
            Classified::Undecided => self.undecided += 1,
            Classified::Failed(cause) => {
                self.failed += 1;
                *self.failures.entry(cause.to_string()).or_default() += 1;
            }
            Classified::Violation => self.violations += 1,
        }
        if let Some(d) = call.answer {
            self.answer.record(d);
        }
        if let Some(d) = call.decision_latency {
            self.decision.record(d);
        }
        if let Some(d) = call.whole {
            self.whole.record(d);
        }
        if let Some(d) = call.jitter {
            self.jitter.record(d);
        }
    }

    /// No unexpected failure and no revocation violation.
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.violations == 0
    }

    /// Calls started per second, first start to last.
    pub fn started_per_second(&self) -> f64 {
        let secs = self.start_span.as_secs_f64();
        if self.calls > 1 && secs > 0.0 {
            (self.calls - 1) as f64 / secs
        } else {
            0.0
        }
    }

    /// Completed calls per second over the run.
    pub fn calls_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.calls - self.failed) as f64 / secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "passed": self.passed(),
            "settings": self.settings,
            "calls": self.calls,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "started_per_second": self.started_per_second(),
            "calls_per_second": self.calls_per_second(),
            "outcomes": {
                "joined": self.joined,
                "rejected_invalid": self.rejected_invalid,
                "rejected_reset": self.rejected_reset,
                "undecided": self.undecided,
                "failed": self.failed,
            },
            "ids": self.by_kind,
            "failures": self.failures,
            "resets": self.resets,
            "violations": self.violations,
            "retransmissions": self.retransmissions,
            "calls_retransmitting": self.calls_retransmitting,
            "latency": {
                "invite_to_200": self.answer.to_json(),
                "hash_to_decision": self.decision.to_json(),
                "whole_call": self.whole.to_json(),
                "rtp_jitter": self.jitter.to_json(),
            },
            "notes": self.notes,
        })
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        writeln!(
            f,
            "{} calls in {:.2}s: started at {:.1}/s, {:.1} completed calls/s over the whole run",
            self.calls,
            self.elapsed.as_secs_f64(),
            self.started_per_second(),
            self.calls_per_second()
        )?;
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        writeln!(f, "IDs entered: {}", kinds.join(", "))?;
        writeln!(f, "outcomes:")?;
        writeln!(f, "  joined                 {}", self.joined)?;
        writeln!(f, "  rejected (invalid ID)  {}", self.rejected_invalid)?;
        writeln!(f, "  rejected (reset)       {}", self.rejected_reset)?;
        if self.undecided > 0 {
            writeln!(
                f,
                "  completed, unchecked   {} (the decision was not read: muted prompts, no record read)",
                self.undecided
            )?;
        }
        writeln!(f, "  failed                 {}", self.failed)?;
        if !self.failures.is_empty() {
            writeln!(f, "failures by cause:")?;
            for (cause, n) in &self.failures {
                writeln!(f, "  {n:>8}  {cause}")?;
            }
        }
        writeln!(
            f,
            "resets during the run: {}, revocation violations: {}",
            self.resets, self.violations
        )?;
        writeln!(
            f,
            "SIP retransmissions: {} (from {} calls){}",
            self.retransmissions,
            self.calls_retransmitting,
            if self.retransmissions > 0 {
                ": answers came late, the bridge or this machine did not keep up"
            } else {
                ""
            }
        )?;
        writeln!(f, "latency:")?;
        writeln!(f, "{}", self.answer.line("INVITE → 200"))?;
        writeln!(f, "{}", self.decision.line("# → decision"))?;
        writeln!(f, "{}", self.whole.line("whole call"))?;
        writeln!(f, "{}", self.jitter.line("RTP jitter"))?;
        write!(
            f,
            "{}",
            if self.passed() {
                "PASS: no unexpected failure, no violation"
            } else {
                "FAIL: unexpected failures or revocation violations"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::judge::ResetWindow;

    fn id(s: &str) -> ConferenceId {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn call(id_text: &str, kind: IdKind, decision: Option<Decision>) -> CallSummary {
        CallSummary {
            id: id(id_text),
            kind,
            failure: None,
            hash_sent: Some(ms(10)),
            decided_by: Some(ms(12)),
            decision,
            answer: Some(ms(1)),
            decision_latency: Some(ms(2)),
            whole: Some(ms(300)),
            jitter: None,
            retransmissions: 0,
        }
    }

    #[test]
    fn retransmissions_are_summed_and_named_in_the_report() {
        let judge = Judge::new();
        let mut late = call("1234567", IdKind::Valid, Some(Decision::Accepted));
        late.retransmissions = 2;
        let quiet = call("1234567", IdKind::Valid, Some(Decision::Accepted));
        let report = LoadReport::build(&judge, &[late, quiet], ms(1000));
        assert_eq!(
            (report.retransmissions, report.calls_retransmitting),
            (2, 1)
        );
        assert_eq!(report.to_json()["retransmissions"], 2);
        let text = report.to_string();
        assert!(
            text.contains("SIP retransmissions: 2 (from 1 calls)"),
            "{text}"
        );
        let clean = LoadReport::build(&judge, &[call("1234567", IdKind::Valid, None)], ms(10));
        assert!(
            clean
                .to_string()
                .contains("SIP retransmissions: 0 (from 0 calls)\n")
        );
    }

    #[test]
    fn outcomes_and_causes_are_counted_and_add_up() {
        let mut judge = Judge::new();
        judge.add_reset(ResetWindow {
            old: id("5555555"),
            new: id("6666666"),
            started: ms(0),
            returned: ms(5),
        });
        let mut timeout = call("1111111", IdKind::Valid, None);
        timeout.failure = Some(Cause::Timeout);
        let mut busy = call("1111111", IdKind::Valid, None);
        busy.failure = Some(Cause::SipStatus(503));
        let calls = vec![
            call("1111111", IdKind::Valid, Some(Decision::Accepted)),
            call("1111111", IdKind::Valid, Some(Decision::Accepted)),
            call("2222222", IdKind::Unknown, Some(Decision::Rejected)),
            call("3333333", IdKind::Revoked, Some(Decision::Rejected)),
            // Reset before `#`: a right rejection, counted apart.
            call("5555555", IdKind::Valid, Some(Decision::Rejected)),
            // Reset before `#` yet accepted: a violation.
            call("5555555", IdKind::Valid, Some(Decision::Accepted)),
            // An unknown ID accepted: a wrong outcome.
            call("2222222", IdKind::Unknown, Some(Decision::Accepted)),
            call("1111111", IdKind::Valid, None),
            timeout,
            busy,
        ];
        let r = LoadReport::build(&judge, &calls, Duration::from_secs(1));
        assert_eq!(r.calls, 10);
        assert_eq!(r.joined, 2);
        assert_eq!(r.rejected_invalid, 2);
        assert_eq!(r.rejected_reset, 1);
        assert_eq!(r.violations, 1);
        assert_eq!(r.undecided, 1);
        assert_eq!(r.failed, 3);
        assert_eq!(
            r.joined
                + r.rejected_invalid
                + r.rejected_reset
                + r.undecided
                + r.failed
                + r.violations,
            r.calls
        );
        assert_eq!(r.failures.get("timeout"), Some(&1));
        assert_eq!(r.failures.get("SIP 503"), Some(&1));
        assert_eq!(
            r.failures.get("wrong outcome: unknown ID accepted"),
            Some(&1)
        );
        assert_eq!(r.resets, 1);
        assert!(!r.passed());
        let json = r.to_json();
        assert_eq!(json["violations"], 1);
        assert_eq!(json["outcomes"]["failed"], 3);
        let text = r.to_string();
        assert!(text.contains("revocation violations: 1"), "{text}");
        assert!(text.ends_with("FAIL: unexpected failures or revocation violations"));
    }

    #[test]
    fn a_call_that_never_sent_its_pound_is_a_failure() {
        let mut c = call("1111111", IdKind::Valid, Some(Decision::Accepted));
        c.hash_sent = None;
        assert_eq!(
            classify(&Judge::new(), &c),
            Classified::Failed(Cause::DigitsNotSent)
        );
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut l = Latency::default();
        assert_eq!(l.quantile(0.5), None);
        for n in 1..=100 {
            l.record(ms(n));
        }
        let p50 = l.quantile(0.5).unwrap();
        let p99 = l.quantile(0.99).unwrap();
        // 3 significant figures: within 0.1%.
        assert!(p50 >= ms(49) && p50 <= ms(51), "{p50:?}");
        assert!(p99 >= ms(98) && p99 <= ms(100), "{p99:?}");
        assert!(l.max().unwrap() >= ms(100));
        assert_eq!(l.count(), 100);
        // Zero is recorded as the smallest value, not lost.
        l.record(Duration::ZERO);
        assert_eq!(l.count(), 101);
    }

    #[test]
    fn a_clean_run_passes() {
        let calls = vec![call("1111111", IdKind::Valid, Some(Decision::Accepted))];
        let r = LoadReport::build(&Judge::new(), &calls, Duration::from_secs(1));
        assert!(r.passed());
        assert!(
            r.to_string()
                .ends_with("PASS: no unexpected failure, no violation")
        );
    }
}
