//! The caller flow as a pure state machine: greeting, digit collection,
//! lookup, retries, joining or goodbye. No IO and no clock: time is passed
//! in, and the directory is asked through [`IdLookup`].
//!
//! What it does: plays [`PromptId::Welcome`], collects DTMF keys until `#`
//! (or a timeout), looks the entry up *at the moment it completes* (so a
//! reset that returned before that moment rejects the old ID on this very
//! call, even one that started before the reset), then either asks the
//! bridge to join the caller to the meeting or says "not valid" and asks
//! again. After [`Config::max_attempts`] failures it says goodbye and hangs
//! up with an RFC 3326 reason ([`EndReason`]).
//!
//! What it does not: play audio, detect DTMF, send SIP, keep the meeting
//! roster (the bridge does, and says whether the caller is alone through
//! [`Input::Joined`]), or check a leader PIN.
//!
//! # Sequence
//!
//! ```text
//! Welcome ──(keys… #  or timeout)──> lookup
//!   valid ──> Joining ──PromptDone──> Join ──Joined{alone}──> [FirstPerson] ── in room until Hangup
//!   unknown / revoked / malformed ──> NotValid ──> (keys…)           } a failed attempt; after
//!   nothing typed before the first-digit timeout ──> NoInput, Welcome } max_attempts: Goodbye, HangUp
//! ```
//!
//! Rules worth knowing:
//! - Keys pressed while Welcome, NotValid or NoInput plays stop it
//!   ([`Output::StopPlayback`], barge-in) and count (type-ahead). Prompts
//!   after an accepted entry (Joining, FirstPerson, Goodbye) can't be
//!   interrupted; keys then are counted in [`CallRecord::ignored_keys`].
//! - The first-digit timer starts when a prompt asking for the ID finishes;
//!   the inter-digit timer restarts at each key. A timeout with keys entered
//!   completes the entry; with none it is a no-input attempt.
//! - An entry that is not exactly [`Config::min_id_len`]..=[`Config::max_id_len`]
//!   decimal digits is malformed: a failed attempt, never looked up, with
//!   the same prompt as an unknown ID. `#` alone is malformed (length 0).
//! - `*` clears the entry by default ([`StarKey`]).
//! - On the last allowed failure the flow goes straight to Goodbye: NotValid
//!   says "please try again", which would then be a lie. The hang-up reason
//!   is [`EndReason::NoInput`] when every failure was no input, otherwise
//!   [`EndReason::NotValid`]: a caller who typed a wrong ID even once is
//!   told it was not valid.
//! - Every prompt has a safety limit ([`Config::prompt_limit`]): if
//!   `PromptDone` never comes, the flow carries on as if it had.
//! - An input arriving after a deadline the driver has not yet reported
//!   sees that deadline's effect first (`handle` runs `handle_timeout`).
//! - After the flow ended (HangUp output, caller hangup) every input is
//!   ignored and there is no timeout.
//!
//! The driver must drain [`Flow::poll_output`] after every input and call
//! [`Flow::handle_timeout`] at [`Flow::poll_timeout`]. After it sent
//! `StopPlayback`, it should not report `PromptDone` for that playback; a
//! stray `PromptDone` for a prompt that is not playing is ignored.

mod config;
mod record;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use config::{Config, ConfigError, StarKey};
pub use record::{
    Attempt, AttemptResult, CallRecord, Completion, EndReason, EndedBy, Ending, KeyPress,
    Malformed, Outcome, PlayedPrompt, PromptEnd,
};

use crate::admin::ids::ConferenceId;
use crate::directory::{IdLookup, Lookup, Target};
use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::prompts::PromptId;

/// An event for the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The caller pressed a key.
    Digit { digit: Digit, method: DtmfMethod },
    /// The media layer finished playing this prompt.
    PromptDone(PromptId),
    /// The bridge put the caller into the meeting's room; `alone` when
    /// nobody else is in it.
    Joined { alone: bool },
    /// The caller hung up (their BYE, or the call dropped).
    Hangup,
    /// The bridge is shutting down: end the call.
    Cancelled,
}

/// An action for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Start playing this prompt (nothing else is playing).
    Play(PromptId),
    /// Stop the prompt that is playing: the caller pressed a key.
    StopPlayback,
    /// Put the caller into the meeting's conference room, then report
    /// [`Input::Joined`].
    Join { id: ConferenceId, target: Target },
    /// Hang up: send BYE with this reason's Reason header.
    HangUp(EndReason),
}

/// Where the flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Collecting an entry; a prompt asking for it may be playing.
    Collecting,
    /// Accepted: playing Joining, then `Join`.
    Joining {
        id: ConferenceId,
        target: Target,
    },
    /// `Join` sent, waiting for `Joined`.
    AwaitingRoom,
    /// In the meeting until the caller hangs up.
    InRoom,
    /// Playing Goodbye, then `HangUp`.
    Goodbye(EndReason),
    Ended,
}

/// The prompt playing now.
#[derive(Clone, Copy, Debug)]
struct Playing {
    prompt: PromptId,
    /// The safety limit: carry on as if it finished.
    limit: Instant,
    /// Its entry in the record's prompt list.
    index: usize,
}

/// The entry being typed.
#[derive(Debug, Default)]
struct Entry {
    keys: Vec<KeyPress>,
    cleared: u32,
    overflow: u32,
}

/// One call's attendant.
#[derive(Debug)]
pub struct Flow {
    config: Config,
    phase: Phase,
    playing: Option<Playing>,
    /// The prompt to play when the current one finishes (Welcome after NoInput).
    queued: Option<PromptId>,
    entry: Entry,
    /// First-digit or inter-digit deadline; only while collecting with no
    /// prompt playing.
    digit_deadline: Option<Instant>,
    out: VecDeque<Output>,
    record: CallRecord,
}

impl Flow {
    /// A new call: plays Welcome. A config outside [`Config::validate`]'s
    /// ranges is clamped into them.
    pub fn new(config: Config, now: Instant) -> Self {
        let mut flow = Flow {
            config: config.clamped(),
            phase: Phase::Collecting,
            playing: None,
            queued: None,
            entry: Entry::default(),
            digit_deadline: None,
            out: VecDeque::new(),
            record: CallRecord::new(now),
        };
        flow.play(now, PromptId::Welcome);
        flow
    }

    /// Feeds one event. `dir` is asked only when an entry completes.
    pub fn handle(&mut self, now: Instant, input: Input, dir: &impl IdLookup) {
        // A deadline the driver has not reported yet happened first.
        self.handle_timeout(now, dir);
        if self.phase == Phase::Ended {
            return;
        }
        match input {
            Input::Digit { digit, method } => self.on_key(
                now,
                KeyPress {
                    digit,
                    method,
                    at: now,
                },
                dir,
            ),
            Input::PromptDone(prompt) => {
                if self.playing.is_some_and(|p| p.prompt == prompt) {
                    self.prompt_finished(now, PromptEnd::Done(now));
                }
            }
            Input::Joined { alone } => {
                if self.phase == Phase::AwaitingRoom {
                    self.on_joined(now, alone);
                }
            }
            Input::Hangup => {
                if self.record.outcome == Outcome::Pending {
                    self.record.outcome = Outcome::Abandoned {
                        pending: self.entry.keys.iter().map(|k| k.digit.as_char()).collect(),
                    };
                }
                self.end(now, EndedBy::Caller);
            }
            Input::Cancelled => {
                if self.record.outcome == Outcome::Pending {
                    self.record.outcome = Outcome::Cancelled;
                }
                self.hang_up(now, EndReason::Shutdown);
            }
        }
    }

    /// Runs the deadline if it has passed; otherwise does nothing (a timer
    /// may wake the driver early or twice).
    pub fn handle_timeout(&mut self, now: Instant, dir: &impl IdLookup) {
        if self.phase == Phase::Ended {
            return;
        }
        if let Some(playing) = self.playing {
            if now >= playing.limit {
                self.prompt_finished(now, PromptEnd::TimedOut(now));
            }
            return;
        }
        if self.phase == Phase::Collecting && self.digit_deadline.is_some_and(|d| now >= d) {
            self.digit_deadline = None;
            if self.entry.keys.is_empty() && self.entry.overflow == 0 {
                self.no_input(now);
            } else {
                self.complete(now, Completion::Timeout, dir);
            }
        }
    }

    /// The next action for the driver.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Flow::handle_timeout`] should run next; `None` when nothing
    /// is timed (in the room with no prompt playing, waiting for `Joined`,
    /// or ended).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Ended {
            return None;
        }
        match self.playing {
            Some(playing) => Some(playing.limit),
            None => self.digit_deadline,
        }
    }

    /// What happened so far.
    pub fn record(&self) -> &CallRecord {
        &self.record
    }

    /// Whether the flow has ended (hung up, or the caller did).
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    fn on_key(&mut self, now: Instant, key: KeyPress, dir: &impl IdLookup) {
        if self.phase != Phase::Collecting {
            self.record.ignored_keys = self.record.ignored_keys.saturating_add(1);
            return;
        }
        if let Some(playing) = self.playing.take() {
            // Barge-in: the caller knows what to do; stop talking, and skip
            // the Welcome that would follow NoInput.
            self.out.push_back(Output::StopPlayback);
            self.set_prompt_end(playing.index, PromptEnd::Stopped(now));
            self.queued = None;
        }
        match key.digit {
            Digit::Pound => self.complete(now, Completion::Pound, dir),
            Digit::Star if self.config.star == StarKey::ClearEntry => {
                self.entry.keys.clear();
                self.entry.overflow = 0;
                self.entry.cleared = self.entry.cleared.saturating_add(1);
                // Starting over: the caller gets the full first-digit time.
                self.digit_deadline = Some(after(now, self.config.first_digit_timeout));
            }
            _ => {
                if self.entry.keys.len() < self.config.max_digits {
                    self.entry.keys.push(key);
                } else {
                    self.entry.overflow = self.entry.overflow.saturating_add(1);
                }
                self.digit_deadline = Some(after(now, self.config.inter_digit_timeout));
            }
        }
    }

    /// The entry is complete: judge it, looking it up now if well-formed.
    fn complete(&mut self, now: Instant, completed_by: Completion, dir: &impl IdLookup) {
        self.digit_deadline = None;
        let entry = std::mem::take(&mut self.entry);
        let result = self.evaluate(&entry, dir);
        self.record.attempts.push(Attempt {
            at: now,
            keys: entry.keys,
            cleared: entry.cleared,
            overflow: entry.overflow,
            completed_by,
            result,
        });
        match result {
            AttemptResult::Accepted { id, target } => {
                self.phase = Phase::Joining { id, target };
                self.play(now, PromptId::Joining);
            }
            _ => self.failed(now),
        }
    }

    fn evaluate(&self, entry: &Entry, dir: &impl IdLookup) -> AttemptResult {
        let len = entry.keys.len();
        if entry.overflow > 0 {
            return AttemptResult::Malformed(Malformed::TooLong {
                len: len.saturating_add(entry.overflow as usize),
            });
        }
        if let Some(key) = entry.keys.iter().find(|k| k.digit.decimal().is_none()) {
            return AttemptResult::Malformed(Malformed::NotDecimal { key: key.digit });
        }
        if !(self.config.min_id_len..=self.config.max_id_len).contains(&len) {
            return AttemptResult::Malformed(Malformed::WrongLength { len });
        }
        let digits: String = entry.keys.iter().map(|k| k.digit.as_char()).collect();
        let Ok(id) = digits.parse::<ConferenceId>() else {
            // Unreachable with a clamped config (1..=18 decimal digits
            // always parse), but a malformed entry is the honest answer.
            return AttemptResult::Malformed(Malformed::WrongLength { len });
        };
        match dir.lookup(id) {
            Lookup::Valid(target) => AttemptResult::Accepted { id, target },
            Lookup::Revoked(revoked) => AttemptResult::Revoked { id, revoked },
            Lookup::Unknown => AttemptResult::Unknown { id },
        }
    }

    fn no_input(&mut self, now: Instant) {
        let entry = std::mem::take(&mut self.entry);
        self.record.attempts.push(Attempt {
            at: now,
            keys: Vec::new(),
            cleared: entry.cleared,
            overflow: 0,
            completed_by: Completion::Timeout,
            result: AttemptResult::NoInput,
        });
        self.failed(now);
    }

    /// After a failed attempt (the last one in the record): try again, or
    /// say goodbye.
    fn failed(&mut self, now: Instant) {
        let attempts = &self.record.attempts;
        let failures = attempts.iter().filter(|a| !a.result.is_accepted()).count();
        let last_was_no_input = attempts
            .last()
            .is_some_and(|a| a.result == AttemptResult::NoInput);
        if failures >= self.config.max_attempts as usize {
            let all_no_input = attempts.iter().all(|a| a.result == AttemptResult::NoInput);
            let reason = if all_no_input {
                EndReason::NoInput
            } else {
                EndReason::NotValid
            };
            self.record.outcome = Outcome::Rejected(reason);
            self.phase = Phase::Goodbye(reason);
            self.play(now, PromptId::Goodbye);
        } else if last_was_no_input {
            // "We did not get any input", then the question again.
            self.play(now, PromptId::NoInput);
            self.queued = Some(PromptId::Welcome);
        } else {
            // "Not valid, please try again" is itself the question.
            self.play(now, PromptId::NotValid);
        }
    }

    fn on_joined(&mut self, now: Instant, alone: bool) {
        if let Some(Attempt {
            result: AttemptResult::Accepted { id, target },
            ..
        }) = self.record.attempts.last()
        {
            self.record.outcome = Outcome::Joined {
                id: *id,
                target: *target,
                alone,
                at: now,
            };
        }
        self.phase = Phase::InRoom;
        if alone {
            self.play(now, PromptId::FirstPerson);
        }
    }

    /// The playing prompt is over (done or timed out): do what follows it.
    fn prompt_finished(&mut self, now: Instant, end: PromptEnd) {
        let Some(playing) = self.playing.take() else {
            return;
        };
        self.set_prompt_end(playing.index, end);
        match self.phase {
            Phase::Collecting => match self.queued.take() {
                Some(next) => self.play(now, next),
                // The question has been asked: the caller's turn.
                None => self.digit_deadline = Some(after(now, self.config.first_digit_timeout)),
            },
            Phase::Joining { id, target } => {
                self.phase = Phase::AwaitingRoom;
                self.out.push_back(Output::Join { id, target });
            }
            Phase::Goodbye(reason) => self.hang_up(now, reason),
            Phase::AwaitingRoom | Phase::InRoom | Phase::Ended => {}
        }
    }

    fn play(&mut self, now: Instant, prompt: PromptId) {
        self.out.push_back(Output::Play(prompt));
        self.playing = Some(Playing {
            prompt,
            limit: after(now, self.config.prompt_limit),
            index: self.record.prompts.len(),
        });
        self.record.prompts.push(PlayedPrompt {
            prompt,
            at: now,
            end: PromptEnd::Playing,
        });
    }

    fn set_prompt_end(&mut self, index: usize, end: PromptEnd) {
        if let Some(p) = self.record.prompts.get_mut(index) {
            p.end = end;
        }
    }

    fn hang_up(&mut self, now: Instant, reason: EndReason) {
        self.out.push_back(Output::HangUp(reason));
        self.end(now, EndedBy::Attendant(reason));
    }

    fn end(&mut self, now: Instant, by: EndedBy) {
        self.phase = Phase::Ended;
        self.playing = None;
        self.queued = None;
        self.digit_deadline = None;
        self.record.ended = Some(Ending { at: now, by });
    }
}

/// `now + d`, saturating: a clamped config keeps `d` at an hour at most, so
/// this only guards an `Instant` near the end of its range.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}
