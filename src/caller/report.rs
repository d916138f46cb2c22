//! What a call did, for people (text), scenarios and tests (fields) and
//! tools (`to_json`). Times are offsets from the moment the INVITE was
//! first sent.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::g711::Codec;
use crate::media::prompts::PromptId;

/// How the call ended, as a call: every variant is a completed attempt,
/// not a local failure (those are the driver's errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not over yet.
    InProgress,
    /// Answered, then ended by a BYE from either side.
    Completed,
    /// A final non-2xx response to the INVITE.
    Rejected { status: u16, reason: String },
    /// This side gave up before an answer (CANCEL, or nothing to cancel yet).
    Cancelled,
    /// No final response to the INVITE within Timer B (64×T1).
    NoAnswer,
    /// The call was answered but could not go on (e.g. an unusable SDP
    /// answer); this side sent BYE.
    Failed { why: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::InProgress => f.write_str("in progress"),
            Outcome::Completed => f.write_str("completed"),
            Outcome::Rejected { status, reason } => write!(f, "rejected: {status} {reason}"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::NoAnswer => f.write_str("no answer (no final response to the INVITE)"),
            Outcome::Failed { why } => write!(f, "failed: {why}"),
        }
    }
}

/// Who ended an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// This side (the caller) sent BYE.
    Caller,
    /// The far end (the bridge) sent BYE.
    Bridge,
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "caller",
            Party::Bridge => "bridge",
        }
    }
}

/// A prompt identified in the received audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeardPrompt {
    pub prompt: PromptId,
    /// When its first frame arrived (the listener is sure a few frames later).
    pub started_at: Duration,
    /// When the listener was sure.
    pub heard_at: Duration,
    /// When it stopped (played out, cut off by barge-in, or the call ended).
    pub ended_at: Option<Duration>,
}

/// A key press this side made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentDigit {
    pub digit: Digit,
    /// The method actually used (RFC 4733 falls back to in-band when the
    /// answer has no telephone-event).
    pub method: DtmfMethod,
    /// When the press started (first packet, or the INFO sent).
    pub at: Duration,
    /// For INFO: the final response status, once it came.
    pub status: Option<u16>,
}

/// Which way a SIP message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// One line of the SIP ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderEntry {
    pub at: Duration,
    pub direction: Direction,
    /// The start line: `INVITE sip:... SIP/2.0` or `SIP/2.0 200 OK`.
    pub first_line: String,
}

/// The WAV file of what the call heard (`--record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFile {
    pub path: PathBuf,
    /// How much audio it holds (from the first packet heard).
    pub duration: Duration,
    /// Audio was left out: the recording reached its cap.
    pub truncated: bool,
}

/// What a simulated lossy path ([`crate::net::caller::LossyPath`]) did to
/// one call's datagrams (SIP over UDP and RTP), each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Datagrams the caller sent / of those, lost on the way out.
    pub sent: u64,
    pub lost_out: u64,
    /// Datagrams that reached the caller / of those, lost on the way in.
    pub arrived: u64,
    pub lost_in: u64,
    /// RTP packets delivered after the one behind them, either way.
    pub reordered: u64,
}

/// Everything one call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    pub call_id: String,
    pub target: String,
    pub outcome: Outcome,
    /// The INVITE's final response status and reason phrase.
    pub final_status: Option<(u16, String)>,
    /// The negotiated codec, once answered.
    pub codec: Option<Codec>,
    pub prompts: Vec<HeardPrompt>,
    pub digits: Vec<SentDigit>,
    pub hung_up_by: Option<Party>,
    /// The Reason header of the far end's BYE, verbatim (RFC 3326).
    pub bye_reason: Option<String>,
    /// The `text` parameter of that Reason (`Conference ID not valid`).
    pub bye_reason_text: Option<String>,
    /// INVITE sent → 200 received.
    pub answer_time: Option<Duration>,
    /// Last digit pressed → first prompt that started after it (how long
    /// the bridge took to decide and speak).
    pub decision_time: Option<Duration>,
    /// INVITE sent → the call was over (or until now, while in progress).
    pub duration: Duration,
    pub ladder: Vec<LadderEntry>,
    pub rtp_sent: u64,
    pub rtp_received: u64,
    /// SIP requests sent again because their answer was late (Timers A
    /// and E): none on a bridge that keeps up.
    pub retransmissions: u64,
    /// The interarrival jitter of the bridge's audio (RFC 3550 A.8), once
    /// two packets came.
    pub rtp_jitter: Option<Duration>,
    /// Things worth knowing that are not failures: fallbacks, a peer's odd
    /// behaviour.
    pub notes: Vec<String>,
    /// Where what the call heard was written, when it was recorded (the
    /// driver fills this in once the file is written).
    pub recording: Option<RecordingFile>,
    /// What the simulated lossy path did, when the call had one.
    pub path: Option<PathCounts>,
}

impl CallReport {
    /// The prompts heard, in order.
    pub fn prompt_ids(&self) -> Vec<PromptId> {
        self.prompts.iter().map(|p| p.prompt).collect()
    }

    /// The digits pressed, as text.
    pub fn digit_text(&self) -> String {
        self.digits.iter().map(|d| d.digit.as_char()).collect()
    }

    pub fn to_json(&self) -> Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        json!({
            "call_id": self.call_id,
            "target": self.target,
            "outcome": self.outcome.to_string(),
            "final_status": self.final_status.as_ref().map(|(s, _)| *s),
            "final_reason": self.final_status.as_ref().map(|(_, r)| r.clone()),
            "codec": self.codec.map(Codec::name),
            "prompts": self.prompts.iter().map(|p| json!({
                "prompt": p.prompt.as_str(),
                "started_ms": ms(p.started_at),
                "heard_ms": ms(p.heard_at),
                "ended_ms": p.ended_at.map(ms),
            })).collect::<Vec<_>>(),
            "digits": self.digits.iter().map(|d| json!({
                "digit": d.digit.as_char().to_string(),
                "method": d.method.as_str(),
                "at_ms": ms(d.at),
                "status": d.status,
            })).collect::<Vec<_>>(),
            "hung_up_by": self.hung_up_by.map(Party::as_str),
            "bye_reason": self.bye_reason,
            "bye_reason_text": self.bye_reason_text,
            "answer_ms": self.answer_time.map(ms),
            "decision_ms": self.decision_time.map(ms),
            "duration_ms": ms(self.duration),
            "rtp_sent": self.rtp_sent,
            "rtp_received": self.rtp_received,
            "retransmissions": self.retransmissions,
            "rtp_jitter_ms": self.rtp_jitter.map(ms),
            "ladder": self.ladder.iter().map(|l| json!({
                "at_ms": ms(l.at),
                "direction": match l.direction { Direction::Sent => "sent", Direction::Received => "received" },
                "first_line": l.first_line,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
            "lossy_path": self.path.map(|p| json!({
                "sent": p.sent, "lost_out": p.lost_out,
                "arrived": p.arrived, "lost_in": p.lost_in,
                "reordered": p.reordered,
            })),
            "recording": self.recording.as_ref().map(|r| json!({
                "path": r.path.display().to_string(),
                "duration_ms": ms(r.duration),
                "truncated": r.truncated,
            })),
        })
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

impl fmt::Display for CallReport {
    /// The text `dialin call` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "call {} to {}", self.call_id, self.target)?;
        writeln!(f, "outcome: {}", self.outcome)?;
        if let Some((status, reason)) = &self.final_status {
            write!(f, "answer: {status} {reason}")?;
            if let Some(t) = self.answer_time {
                write!(f, " after {}", secs(t))?;
            }
            if let Some(codec) = self.codec {
                write!(f, ", {}", codec.name())?;
            }
            writeln!(f)?;
        }
        writeln!(f, "prompts heard:")?;
        if self.prompts.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for p in &self.prompts {
            write!(f, "  {:>8}  {}", secs(p.started_at), p.prompt)?;
            match p.ended_at {
                Some(end) => writeln!(f, " (until {})", secs(end))?,
                None => writeln!(f)?,
            }
        }
        writeln!(f, "digits sent:")?;
        if self.digits.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for d in &self.digits {
            write!(
                f,
                "  {:>8}  {} by {}",
                secs(d.at),
                d.digit,
                d.method.as_str()
            )?;
            match d.status {
                Some(s) => writeln!(f, " ({s})")?,
                None => writeln!(f)?,
            }
        }
        if let Some(t) = self.decision_time {
            writeln!(f, "last digit to next prompt: {}", secs(t))?;
        }
        if let Some(who) = self.hung_up_by {
            write!(f, "hung up by: {}", who.as_str())?;
            if let Some(reason) = &self.bye_reason {
                write!(f, " (Reason: {reason})")?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "duration: {}, RTP sent {} received {}",
            secs(self.duration),
            self.rtp_sent,
            self.rtp_received
        )?;
        if self.retransmissions > 0 {
            writeln!(
                f,
                "SIP retransmissions: {} (answers came late)",
                self.retransmissions
            )?;
        }
        if let Some(p) = &self.path {
            writeln!(
                f,
                "lossy path: lost {} of {} sent, {} of {} arriving; {} RTP reordered",
                p.lost_out, p.sent, p.lost_in, p.arrived, p.reordered
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        if let Some(r) = &self.recording {
            write!(f, "recording: {} ({})", r.path.display(), secs(r.duration))?;
            if r.truncated {
                write!(f, ", cut at its cap")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "SIP ladder:")?;
        for l in &self.ladder {
            let arrow = match l.direction {
                Direction::Sent => "-->",
                Direction::Received => "<--",
            };
            writeln!(f, "  {:>8}  {arrow} {}", secs(l.at), l.first_line)?;
        }
        Ok(())
    }
}
