//! What a call is told to do: where to call, which digits to press and how,
//! when to hang up. Plain data; [`super::Caller`] acts on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::g711::Codec;
use crate::media::prompts::{PromptCatalog, PromptError, PromptId, PromptMatcher};
use crate::sip::transaction::TimerConfig;

/// How long a key is held by default: long enough for every detector (the
/// in-band one needs 36 ms), and the `Duration=160` SIP INFO senders use.
pub const DEFAULT_TONE: Duration = Duration::from_millis(160);

/// The pause between two key presses by default.
pub const DEFAULT_GAP: Duration = Duration::from_millis(100);

/// What a `,` in a digit string waits, as on a phone's dial string.
pub const COMMA_PAUSE: Duration = Duration::from_millis(500);

/// Why a digit string could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigitsError {
    #[error(
        "{found:?} at position {position} of {digits:?} is not a DTMF key: use 0-9, *, #, A-D, and ',' for a 500 ms pause"
    )]
    BadKey {
        digits: String,
        position: usize,
        found: char,
    },
}

/// One key press of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedDigit {
    pub digit: Digit,
    /// The pause before this press: after the start trigger for the first
    /// digit, after the previous press ended for the others.
    pub delay: Duration,
}

/// When the first digit may be pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfStart {
    /// When this prompt is heard playing (as a person waits for the
    /// greeting to start before typing).
    OnPrompt(PromptId),
    /// This long after the call was answered, whatever is heard.
    AfterAnswer(Duration),
}

/// The digits to press and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfPlan {
    pub digits: Vec<PlannedDigit>,
    pub method: DtmfMethod,
    pub start: DtmfStart,
    /// How long each key is held (tone length, RFC 4733 event duration, the
    /// INFO body's `Duration`).
    pub tone: Duration,
}

impl DtmfPlan {
    /// Presses nothing.
    pub fn none() -> DtmfPlan {
        DtmfPlan {
            digits: Vec::new(),
            method: DtmfMethod::Rfc4733,
            start: DtmfStart::OnPrompt(PromptId::Welcome),
            tone: DEFAULT_TONE,
        }
    }

    /// `digits` like `1234567#`, pressed by `method` once the welcome prompt
    /// starts, [`DEFAULT_GAP`] apart; a `,` adds [`COMMA_PAUSE`] before the
    /// next key. Spaces are ignored.
    pub fn parse(digits: &str, method: DtmfMethod) -> Result<DtmfPlan, DigitsError> {
        let mut planned = Vec::new();
        let mut extra = Duration::ZERO;
        for (position, c) in digits.chars().enumerate() {
            match c {
                ',' => extra += COMMA_PAUSE,
                ' ' => {}
                _ => {
                    let digit = Digit::from_char(c).ok_or_else(|| DigitsError::BadKey {
                        digits: digits.to_string(),
                        position,
                        found: c,
                    })?;
                    let gap = if planned.is_empty() {
                        Duration::ZERO
                    } else {
                        DEFAULT_GAP
                    };
                    planned.push(PlannedDigit {
                        digit,
                        delay: gap + extra,
                    });
                    extra = Duration::ZERO;
                }
            }
        }
        Ok(DtmfPlan {
            digits: planned,
            method,
            ..DtmfPlan::none()
        })
    }

    /// The digits as text (`1234567#`).
    pub fn text(&self) -> String {
        self.digits.iter().map(|d| d.digit.as_char()).collect()
    }
}

/// When this side ends the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUp {
    /// Never: wait for the far end's BYE (the driver's call timeout bounds it).
    WaitForBye,
    /// This long after hearing that the call joined a meeting (the
    /// `joining` or `first-person` prompt): a joined caller stays until it
    /// leaves. Until then, wait for the far end's BYE.
    AfterJoined(Duration),
    /// This long after the call was answered, whatever happened.
    AfterAnswer(Duration),
    /// `hold` after hearing the bridge's decision on the ID (the `joining`,
    /// `first-person` or `not-valid` prompt), or `limit` after the last
    /// planned key was pressed (by INFO: after its answer, since the bridge
    /// decides as it handles it) if no decision was heard by then (a bridge
    /// with muted prompts says nothing): how a load generator keeps every
    /// call short whatever the outcome.
    AfterDecision { hold: Duration, limit: Duration },
    /// This long after the INVITE went out: CANCEL if the far end has not
    /// answered by then (§9.1), BYE if it has.
    CancelAfter(Duration),
}

/// How the call's SIP travels (RTP is always UDP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: the core retransmits requests (Timers A and E).
    #[default]
    Udp,
    /// One connection for the whole dialog: no retransmissions, since the
    /// stream delivers or fails (RFC 3261 §17.1.1.2, §17.1.2.2); Timers B
    /// and F still bound the wait for an answer.
    Tcp,
}

impl Transport {
    /// The Via transport token (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Whether requests are retransmitted by the transaction layer.
    pub fn is_reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// The prompt catalog indexed for listening, once per codec, shared by
/// every call (read-only; building it hashes every frame).
#[derive(Debug, Clone)]
pub struct PromptMatchers {
    pcmu: PromptMatcher,
    pcma: PromptMatcher,
}

impl PromptMatchers {
    pub fn new(catalog: &PromptCatalog) -> PromptMatchers {
        PromptMatchers {
            pcmu: PromptMatcher::new(catalog, Codec::Pcmu),
            pcma: PromptMatcher::new(catalog, Codec::Pcma),
        }
    }

    /// The prompts compiled into the binary (what `dialin serve` plays
    /// unless given `--prompts`).
    pub fn embedded() -> Result<PromptMatchers, PromptError> {
        Ok(PromptMatchers::new(&PromptCatalog::embedded()?))
    }

    pub fn get(&self, codec: Codec) -> &PromptMatcher {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }
}

/// Everything the core needs for one call. The driver binds its sockets
/// first and fills in the local addresses.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// The Request-URI, e.g. `sip:+14255550100@127.0.0.1:5060`.
    pub target: String,
    /// The From URI, e.g. `sip:caller@127.0.0.1`.
    pub from: String,
    /// Where every SIP message goes (the target's host and port, or an
    /// outbound proxy): the core resolves no names.
    pub remote_sip: SocketAddr,
    /// This side's SIP address (Via sent-by and Contact).
    pub local_sip: SocketAddr,
    /// This side's RTP address (the SDP offer's `c=` and `m=`).
    pub local_rtp: SocketAddr,
    pub dtmf: DtmfPlan,
    pub hang_up: HangUp,
    pub timers: TimerConfig,
    /// UDP or TCP for SIP: the Via, the Contact and whether Timers A and E run.
    pub transport: Transport,
    pub prompts: Arc<PromptMatchers>,
    /// Keep what is heard ([`crate::media::recorder::Recorder`]), at most
    /// this long; `None` records nothing.
    pub record: Option<Duration>,
    /// Send silence frames every 20 ms between key presses, as a phone
    /// does. Off, only key presses (tones, RFC 4733 events) go out as RTP:
    /// signalling-only load, like SIPp's INFO scenarios.
    pub send_silence: bool,
}
