//! The flow in virtual time against a map-backed directory.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::admin::model::RevocationCause;
use crate::directory::{PinDigits, Revoked};
use crate::time::Timestamp;

/// A directory in a `HashMap`, counting lookups; `RefCell` so a test can
/// change it mid-call, as an admin reset would.
#[derive(Default)]
struct Map {
    entries: RefCell<HashMap<ConferenceId, Lookup>>,
    lookups: Cell<u32>,
}

impl Map {
    fn with(entries: &[(&str, Lookup)]) -> Self {
        let map = Map::default();
        for (id, lookup) in entries {
            map.set(id, *lookup);
        }
        map
    }

    fn set(&self, id: &str, lookup: Lookup) {
        self.entries.borrow_mut().insert(cid(id), lookup);
    }
}

impl IdLookup for Map {
    fn lookup(&self, id: ConferenceId) -> Lookup {
        self.lookups.set(self.lookups.get() + 1);
        self.entries
            .borrow()
            .get(&id)
            .copied()
            .unwrap_or(Lookup::Unknown)
    }
}

const VALID: &str = "1234567";
const OTHER_VALID: &str = "7654321";

fn cid(s: &str) -> ConferenceId {
    s.parse().unwrap()
}

fn target(organizer: i64) -> Target {
    Target {
        tenant: 1,
        organizer,
        meeting: None,
        leader_pin: PinDigits::NONE,
    }
}

fn revocation() -> Revoked {
    Revoked {
        at: Timestamp::from_millis(1_700_000_000_000),
        operation: 42,
        cause: RevocationCause::ResetId,
        organizer: 1,
    }
}

fn directory() -> Map {
    Map::with(&[
        (VALID, Lookup::Valid(target(1))),
        (OTHER_VALID, Lookup::Valid(target(2))),
        ("1111111", Lookup::Revoked(revocation())),
    ])
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A flow, its clock and what it has said so far.
struct Call {
    flow: Flow,
    t0: Instant,
    now: Instant,
    said: Vec<Output>,
}

impl Call {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        let t0 = Instant::now();
        let mut call = Call {
            flow: Flow::new(config, t0),
            t0,
            now: t0,
            said: Vec::new(),
        };
        call.drain();
        call
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut got = Vec::new();
        while let Some(o) = self.flow.poll_output() {
            got.push(o);
        }
        self.said.extend(got.iter().copied());
        got
    }

    fn at(&mut self, offset: Duration) -> &mut Self {
        self.now = self.t0 + offset;
        self
    }

    fn advance(&mut self, by: Duration) -> &mut Self {
        self.now += by;
        self
    }

    fn input(&mut self, input: Input, dir: &Map) -> Vec<Output> {
        self.flow.handle(self.now, input, dir);
        self.drain()
    }

    fn done(&mut self, prompt: PromptId, dir: &Map) -> Vec<Output> {
        self.input(Input::PromptDone(prompt), dir)
    }

    /// Presses each key of `keys`, one per 500 ms, by RFC 4733.
    fn press(&mut self, keys: &str, dir: &Map) -> Vec<Output> {
        let mut got = Vec::new();
        for c in keys.chars() {
            let digit = Digit::from_char(c).unwrap();
            got.extend(self.input(
                Input::Digit {
                    digit,
                    method: DtmfMethod::Rfc4733,
                },
                dir,
            ));
            self.advance(Duration::from_millis(500));
        }
        got
    }

    /// Runs the flow's timer, wherever it is.
    fn fire(&mut self, dir: &Map) -> Vec<Output> {
        self.now = self.flow.poll_timeout().expect("a timer is running");
        self.flow.handle_timeout(self.now, dir);
        self.drain()
    }

    fn prompts(&self) -> Vec<PromptId> {
        self.flow.record().prompt_ids()
    }
}

use Output::*;
use PromptId::*;

#[test]
fn new_flow_plays_welcome_and_waits_for_it() {
    let call = Call::new();
    assert_eq!(call.said, vec![Play(Welcome)]);
    assert_eq!(call.flow.record().outcome, Outcome::Pending);
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(30)));
}

#[test]
fn valid_id_joins_with_welcome_joining_and_first_person_when_alone() {
    let dir = directory();
    let mut call = Call::new();
    call.at(secs(6)).done(Welcome, &dir);
    assert_eq!(call.press("1234567#", &dir), vec![Play(Joining)]);
    assert_eq!(
        call.done(Joining, &dir),
        vec![Join {
            id: cid(VALID),
            target: target(1)
        }]
    );
    assert_eq!(
        call.input(Input::Joined { alone: true }, &dir),
        vec![Play(FirstPerson)]
    );
    assert_eq!(call.done(FirstPerson, &dir), vec![]);
    assert_eq!(call.prompts(), vec![Welcome, Joining, FirstPerson]);

    let record = call.flow.record();
    assert_eq!(record.results(), vec!["accepted"]);
    assert_eq!(record.attempts[0].digits(), VALID);
    assert_eq!(record.attempts[0].method(), Some(DtmfMethod::Rfc4733));
    assert_eq!(record.attempts[0].completed_by, Completion::Pound);
    assert!(matches!(
        record.outcome,
        Outcome::Joined { id, alone: true, .. } if id == cid(VALID)
    ));
    // Connected until the caller hangs up: no timer, no output, however long.
    assert_eq!(call.flow.poll_timeout(), None);
    call.advance(secs(3600));
    assert_eq!(call.input(Input::Hangup, &dir), vec![]);
    let ended = call.flow.record().ended.unwrap();
    assert_eq!(ended.by, EndedBy::Caller);
    assert!(call.flow.is_ended());
    assert!(matches!(call.flow.record().outcome, Outcome::Joined { .. }));
}

#[test]
fn joining_others_plays_no_first_person() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("7654321#", &dir);
    assert_eq!(
        call.done(Joining, &dir),
        vec![Join {
            id: cid(OTHER_VALID),
            target: target(2)
        }]
    );
    assert_eq!(call.input(Input::Joined { alone: false }, &dir), vec![]);
    assert_eq!(call.prompts(), vec![Welcome, Joining]);
    assert!(matches!(
        call.flow.record().outcome,
        Outcome::Joined { alone: false, .. }
    ));
}

#[test]
fn wrong_id_then_right_id_joins() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    assert_eq!(call.press("9999999#", &dir), vec![Play(NotValid)]);
    call.done(NotValid, &dir);
    assert_eq!(call.press("1234567#", &dir), vec![Play(Joining)]);
    assert_eq!(call.prompts(), vec![Welcome, NotValid, Joining]);
    assert_eq!(call.flow.record().results(), vec!["unknown", "accepted"]);
}

#[test]
fn three_wrong_ids_say_goodbye_and_hang_up_with_403() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    assert_eq!(call.press("9999990#", &dir), vec![Play(NotValid)]);
    call.done(NotValid, &dir);
    assert_eq!(call.press("9999991#", &dir), vec![Play(NotValid)]);
    call.done(NotValid, &dir);
    // The last failure goes straight to goodbye: no "please try again".
    assert_eq!(call.press("9999992#", &dir), vec![Play(Goodbye)]);
    assert_eq!(
        call.flow.record().outcome,
        Outcome::Rejected(EndReason::NotValid)
    );
    assert!(!call.flow.is_ended(), "the BYE waits for goodbye to finish");

    // Keys during goodbye change nothing.
    assert_eq!(call.press("1234567#", &dir), vec![]);
    let hangup = call.done(Goodbye, &dir);
    assert_eq!(hangup, vec![HangUp(EndReason::NotValid)]);
    assert_eq!(EndReason::NotValid.cause(), 403);
    assert_eq!(EndReason::NotValid.text(), "Conference ID not valid");
    assert_eq!(call.prompts(), vec![Welcome, NotValid, NotValid, Goodbye]);
    let record = call.flow.record();
    assert_eq!(record.results(), vec!["unknown"; 3]);
    assert_eq!(record.ignored_keys, 8);
    assert_eq!(
        record.ended.unwrap().by,
        EndedBy::Attendant(EndReason::NotValid)
    );
    assert_eq!(call.flow.poll_timeout(), None);
}

#[test]
fn no_input_three_times_hangs_up_with_no_input_reason() {
    let dir = directory();
    let mut call = Call::new();
    call.at(secs(5)).done(Welcome, &dir);
    // The first-digit timer runs from the end of the welcome.
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(15)));
    assert_eq!(call.fire(&dir), vec![Play(NoInput)]);
    assert_eq!(call.now, call.t0 + secs(15));
    assert_eq!(call.done(NoInput, &dir), vec![Play(Welcome)]);
    call.done(Welcome, &dir);
    assert_eq!(call.fire(&dir), vec![Play(NoInput)]);
    assert_eq!(call.done(NoInput, &dir), vec![Play(Welcome)]);
    call.done(Welcome, &dir);
    assert_eq!(call.fire(&dir), vec![Play(Goodbye)]);
    assert_eq!(call.done(Goodbye, &dir), vec![HangUp(EndReason::NoInput)]);
    assert_eq!(
        call.prompts(),
        vec![Welcome, NoInput, Welcome, NoInput, Welcome, Goodbye]
    );
    let record = call.flow.record();
    assert_eq!(record.results(), vec!["no-input"; 3]);
    assert_eq!(record.outcome, Outcome::Rejected(EndReason::NoInput));
    assert_eq!(EndReason::NoInput.cause(), 408);
    assert_eq!(dir.lookups.get(), 0);
}

#[test]
fn a_mix_of_failures_ends_as_not_valid() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.fire(&dir); // no input
    call.done(NoInput, &dir);
    call.done(Welcome, &dir);
    call.press("123#", &dir); // malformed
    call.done(NotValid, &dir);
    assert_eq!(call.fire(&dir), vec![Play(Goodbye)]); // no input again
    assert_eq!(call.done(Goodbye, &dir), vec![HangUp(EndReason::NotValid)]);
    assert_eq!(
        call.flow.record().results(),
        vec!["no-input", "malformed", "no-input"]
    );
}

#[test]
fn timeout_with_partial_digits_completes_the_entry() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("1234567", &dir);
    let last_key = call.now - Duration::from_millis(500);
    assert_eq!(call.flow.poll_timeout(), Some(last_key + secs(5)));
    assert_eq!(call.fire(&dir), vec![Play(Joining)]);
    let attempt = &call.flow.record().attempts[0];
    assert_eq!(attempt.completed_by, Completion::Timeout);
    assert_eq!(attempt.digits(), VALID);

    // Three digits and silence: complete, malformed.
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("123", &dir);
    assert_eq!(call.fire(&dir), vec![Play(NotValid)]);
    assert_eq!(
        call.flow.record().attempts[0].result,
        AttemptResult::Malformed(Malformed::WrongLength { len: 3 })
    );
}

#[test]
fn inter_digit_timer_restarts_at_each_key() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("12", &dir);
    // 4.9 s of silence is not yet a timeout.
    call.advance(Duration::from_millis(4400));
    assert_eq!(call.press("34567#", &dir), vec![Play(Joining)]);
    assert_eq!(call.flow.record().attempts[0].digits(), VALID);
}

#[test]
fn barge_in_during_welcome_stops_playback_and_the_digits_count() {
    let dir = directory();
    let mut call = Call::new();
    call.at(Duration::from_millis(1500));
    assert_eq!(call.press("1", &dir), vec![StopPlayback]);
    assert_eq!(call.press("234567#", &dir), vec![Play(Joining)]);
    let record = call.flow.record();
    assert_eq!(record.attempts[0].digits(), VALID);
    assert_eq!(
        record.prompts[0].end,
        PromptEnd::Stopped(call.t0 + Duration::from_millis(1500))
    );
    // The stopped welcome's late PromptDone is ignored.
    assert_eq!(call.done(Welcome, &dir), vec![]);
    assert_eq!(
        call.done(Joining, &dir),
        vec![Join {
            id: cid(VALID),
            target: target(1)
        }]
    );
}

#[test]
fn type_ahead_during_not_valid_and_no_input_counts() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("9999999#", &dir);
    assert_eq!(call.press("12", &dir), vec![StopPlayback]);
    assert_eq!(call.press("34567#", &dir), vec![Play(Joining)]);
    assert_eq!(call.flow.record().results(), vec!["unknown", "accepted"]);

    // During NoInput: the queued Welcome is skipped too.
    let mut call = Call::new();
    call.done(Welcome, &dir);
    assert_eq!(call.fire(&dir), vec![Play(NoInput)]);
    assert_eq!(
        call.press("1234567#", &dir),
        vec![StopPlayback, Play(Joining)]
    );
    assert_eq!(call.prompts(), vec![Welcome, NoInput, Joining]);

    // ...also when the typed-ahead entry fails: NotValid asks, not Welcome.
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.fire(&dir);
    assert_eq!(
        call.press("9999999#", &dir),
        vec![StopPlayback, Play(NotValid)]
    );
    assert_eq!(call.done(NotValid, &dir), vec![]);
    assert_eq!(call.prompts(), vec![Welcome, NoInput, NotValid]);
}

#[test]
fn reset_during_the_call_rejects_the_old_id_at_completion() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("123456", &dir);
    // The admin reset returns while the caller is still typing.
    dir.set(VALID, Lookup::Revoked(revocation()));
    assert_eq!(call.press("7#", &dir), vec![Play(NotValid)]);
    assert_eq!(
        call.flow.record().attempts[0].result,
        AttemptResult::Revoked {
            id: cid(VALID),
            revoked: revocation()
        }
    );

    // And the other way: an ID activated before completion works.
    let dir = Map::default();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("5555555", &dir);
    dir.set("5555555", Lookup::Valid(target(3)));
    assert_eq!(call.press("#", &dir), vec![Play(Joining)]);
    assert_eq!(dir.lookups.get(), 1, "looked up once, at completion");
}

#[test]
fn revoked_and_unknown_give_the_same_outputs_but_different_records() {
    let dir = directory();
    let run = |id: &str| {
        let mut call = Call::new();
        call.done(Welcome, &dir);
        call.press(&format!("{id}#"), &dir);
        call.done(NotValid, &dir);
        let record = call.flow.record().clone();
        (call.said, record)
    };
    let (revoked_said, revoked) = run("1111111");
    let (unknown_said, unknown) = run("2222222");
    assert_eq!(revoked_said, unknown_said);
    assert_eq!(revoked_said, vec![Play(Welcome), Play(NotValid)]);
    assert_eq!(
        revoked.attempts[0].result,
        AttemptResult::Revoked {
            id: cid("1111111"),
            revoked: revocation()
        }
    );
    match revoked.attempts[0].result {
        AttemptResult::Revoked { revoked, .. } => {
            assert_eq!(revoked.operation, 42);
            assert_eq!(revoked.at, Timestamp::from_millis(1_700_000_000_000));
        }
        other => panic!("expected revoked, got {other:?}"),
    }
    assert_eq!(
        unknown.attempts[0].result,
        AttemptResult::Unknown { id: cid("2222222") }
    );
}

#[test]
fn malformed_entries_are_not_looked_up() {
    let cases: [(&str, StarKey, Malformed); 6] = [
        (
            "123456#",
            StarKey::ClearEntry,
            Malformed::WrongLength { len: 6 },
        ),
        (
            "12345678#",
            StarKey::ClearEntry,
            Malformed::WrongLength { len: 8 },
        ),
        ("#", StarKey::ClearEntry, Malformed::WrongLength { len: 0 }),
        (
            "123*567#",
            StarKey::Malformed,
            Malformed::NotDecimal { key: Digit::Star },
        ),
        (
            "12A4567#",
            StarKey::ClearEntry,
            Malformed::NotDecimal { key: Digit::A },
        ),
        (
            "1234567123456712345671#",
            StarKey::ClearEntry,
            Malformed::TooLong { len: 22 },
        ),
    ];
    for (keys, star, expected) in cases {
        let dir = directory();
        let mut call = Call::with(Config {
            star,
            ..Config::default()
        });
        call.done(Welcome, &dir);
        assert_eq!(call.press(keys, &dir), vec![Play(NotValid)], "{keys}");
        assert_eq!(dir.lookups.get(), 0, "{keys} was looked up");
        let attempt = &call.flow.record().attempts[0];
        assert_eq!(attempt.result, AttemptResult::Malformed(expected), "{keys}");
    }
}

#[test]
fn overflowing_keys_are_dropped_not_buffered() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press(&"1".repeat(500), &dir);
    call.press("#", &dir);
    let attempt = &call.flow.record().attempts[0];
    assert_eq!(attempt.keys.len(), 20);
    assert_eq!(attempt.overflow, 480);
    assert_eq!(
        attempt.result,
        AttemptResult::Malformed(Malformed::TooLong { len: 500 })
    );
}

#[test]
fn star_clears_the_entry_by_default() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("999*", &dir);
    // After `*` the caller has the full first-digit time again.
    let star_at = call.now - Duration::from_millis(500);
    assert_eq!(call.flow.poll_timeout(), Some(star_at + secs(10)));
    assert_eq!(call.press("1234567#", &dir), vec![Play(Joining)]);
    let attempt = &call.flow.record().attempts[0];
    assert_eq!(attempt.digits(), VALID);
    assert_eq!(attempt.cleared, 1);

    // `*` then silence: no input, and the attempt says it was cleared.
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("12*", &dir);
    assert_eq!(call.fire(&dir), vec![Play(NoInput)]);
    let attempt = &call.flow.record().attempts[0];
    assert_eq!(
        (attempt.result, attempt.cleared),
        (AttemptResult::NoInput, 1)
    );
}

#[test]
fn caller_hangup_mid_entry_ends_cleanly_with_outcome_recorded() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("123", &dir);
    assert_eq!(call.input(Input::Hangup, &dir), vec![]);
    assert!(call.flow.is_ended());
    assert_eq!(call.flow.poll_timeout(), None);
    let record = call.flow.record();
    assert_eq!(
        record.outcome,
        Outcome::Abandoned {
            pending: "123".into()
        }
    );
    assert_eq!(record.ended.unwrap().by, EndedBy::Caller);
    assert!(record.attempts.is_empty());
    // Nothing after the end does anything.
    assert_eq!(call.press("4567#", &dir), vec![]);
    assert_eq!(call.input(Input::Cancelled, &dir), vec![]);
    assert_eq!(dir.lookups.get(), 0);
}

#[test]
fn cancelled_hangs_up_with_503() {
    let dir = directory();
    let mut call = Call::new();
    assert_eq!(
        call.input(Input::Cancelled, &dir),
        vec![HangUp(EndReason::Shutdown)]
    );
    assert_eq!(call.flow.record().outcome, Outcome::Cancelled);
    assert_eq!(EndReason::Shutdown.cause(), 503);

    // In the room the outcome stays joined; the ending says shutdown.
    let mut call = Call::new();
    call.press("1234567#", &dir);
    call.done(Joining, &dir);
    call.input(Input::Joined { alone: false }, &dir);
    assert_eq!(
        call.input(Input::Cancelled, &dir),
        vec![HangUp(EndReason::Shutdown)]
    );
    let record = call.flow.record();
    assert!(matches!(record.outcome, Outcome::Joined { .. }));
    assert_eq!(
        record.ended.unwrap().by,
        EndedBy::Attendant(EndReason::Shutdown)
    );
}

#[test]
fn goodbye_hangs_up_at_the_safety_deadline_without_prompt_done() {
    let dir = directory();
    let mut call = Call::with(Config {
        max_attempts: 1,
        ..Config::default()
    });
    call.done(Welcome, &dir);
    assert_eq!(call.press("0000000#", &dir), vec![Play(Goodbye)]);
    let goodbye_at = call.now - Duration::from_millis(500);
    assert_eq!(call.flow.poll_timeout(), Some(goodbye_at + secs(30)));
    // An early wake-up does nothing.
    call.flow.handle_timeout(goodbye_at + secs(29), &dir);
    assert_eq!(call.drain(), vec![]);
    assert_eq!(call.fire(&dir), vec![HangUp(EndReason::NotValid)]);
    assert_eq!(
        call.flow.record().prompts.last().unwrap().end,
        PromptEnd::TimedOut(goodbye_at + secs(30))
    );
}

#[test]
fn a_lost_joining_prompt_done_still_joins() {
    let dir = directory();
    let mut call = Call::new();
    call.press("1234567#", &dir);
    assert_eq!(
        call.fire(&dir),
        vec![Join {
            id: cid(VALID),
            target: target(1)
        }]
    );
    // Waiting for the bridge: nothing timed.
    assert_eq!(call.flow.poll_timeout(), None);
}

#[test]
fn poll_timeout_always_reflects_the_next_deadline() {
    let dir = directory();
    let mut call = Call::new();
    // Welcome playing: its safety limit.
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(30)));
    call.at(secs(4)).done(Welcome, &dir);
    // First digit.
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(14)));
    call.at(secs(8)).press("1", &dir);
    // Inter-digit, from the key.
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(13)));
    call.at(secs(12)).press("2#", &dir);
    // NotValid playing.
    let not_valid_at = call.t0 + secs(12) + Duration::from_millis(500);
    assert_eq!(call.flow.poll_timeout(), Some(not_valid_at + secs(30)));
    call.at(secs(15)).done(NotValid, &dir);
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(25)));
    call.at(secs(16)).press("1234567#", &dir);
    assert_eq!(
        call.flow.poll_timeout(),
        Some(call.t0 + secs(16) + Duration::from_millis(3500) + secs(30))
    );
    call.at(secs(21)).done(Joining, &dir);
    assert_eq!(call.flow.poll_timeout(), None);
    call.input(Input::Joined { alone: true }, &dir);
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(51)));
    call.at(secs(24)).done(FirstPerson, &dir);
    assert_eq!(call.flow.poll_timeout(), None);
}

#[test]
fn a_key_after_an_unreported_deadline_sees_the_deadline_first() {
    let dir = directory();
    let mut call = Call::new();
    call.done(Welcome, &dir);
    call.press("1234567", &dir);
    // The driver slept past the inter-digit deadline; the next key belongs
    // to the time after the entry completed.
    call.advance(secs(10));
    assert_eq!(call.press("9", &dir), vec![Play(Joining)]);
    let record = call.flow.record();
    assert_eq!(record.attempts[0].digits(), VALID);
    assert_eq!(record.ignored_keys, 1);
}

#[test]
fn stray_inputs_are_ignored() {
    let dir = directory();
    let mut call = Call::new();
    // Done for prompts that are not playing, Joined when not joining.
    assert_eq!(call.done(Goodbye, &dir), vec![]);
    assert_eq!(call.done(NotValid, &dir), vec![]);
    assert_eq!(call.input(Input::Joined { alone: true }, &dir), vec![]);
    assert_eq!(call.flow.poll_timeout(), Some(call.t0 + secs(30)));
    assert_eq!(call.prompts(), vec![Welcome]);
    // Still works as a normal call afterwards.
    call.done(Welcome, &dir);
    assert_eq!(call.press("1234567#", &dir), vec![Play(Joining)]);
    // A second Joined after joining changes nothing.
    call.done(Joining, &dir);
    assert_eq!(call.input(Input::Joined { alone: false }, &dir), vec![]);
    assert_eq!(call.input(Input::Joined { alone: true }, &dir), vec![]);
    assert!(matches!(
        call.flow.record().outcome,
        Outcome::Joined { alone: false, .. }
    ));
}

#[test]
fn digits_after_joining_are_counted_not_acted_on() {
    let dir = directory();
    let mut call = Call::new();
    call.press("1234567#", &dir);
    assert_eq!(call.press("99", &dir), vec![]);
    call.done(Joining, &dir);
    call.input(Input::Joined { alone: true }, &dir);
    assert_eq!(call.press("7654321#", &dir), vec![]);
    assert_eq!(call.flow.record().ignored_keys, 10);
    assert_eq!(dir.lookups.get(), 1);
}

#[test]
fn dtmf_method_is_recorded_per_key() {
    let dir = directory();
    let mut call = Call::new();
    for (c, method) in [('1', DtmfMethod::Info), ('2', DtmfMethod::Inband)] {
        let digit = Digit::from_char(c).unwrap();
        call.input(Input::Digit { digit, method }, &dir);
    }
    call.input(
        Input::Digit {
            digit: Digit::Pound,
            method: DtmfMethod::Info,
        },
        &dir,
    );
    let attempt = &call.flow.record().attempts[0];
    assert_eq!(attempt.method(), Some(DtmfMethod::Info));
    assert_eq!(attempt.keys[1].method, DtmfMethod::Inband);
}

/// Random inputs in random order, at random (sometimes backwards) times:
/// no panic, at most one HangUp and nothing after it, no output or timer
/// once ended, and a bounded record.
#[test]
fn no_panics_for_any_input_order() {
    let dir = directory();
    let mut outcomes = HashMap::<&str, u32>::new();
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = if seed % 3 == 0 {
            Config {
                max_attempts: rng.random_range(0..6),
                first_digit_timeout: Duration::ZERO,
                prompt_limit: Duration::from_millis(rng.random_range(0..3000)),
                star: StarKey::Malformed,
                ..Config::default()
            }
        } else {
            Config::default()
        };
        let t0 = Instant::now();
        let mut now = t0;
        let mut flow = Flow::new(config, now);
        let mut hangups = 0;
        let mut ended_at_step = None;
        for step in 0..400 {
            now = match rng.random_range(0..10) {
                0 => now.checked_sub(Duration::from_millis(300)).unwrap_or(now),
                1 => now + secs(rng.random_range(5..40)),
                _ => now + Duration::from_millis(rng.random_range(0..2000)),
            };
            if rng.random_range(0..4) == 0 {
                flow.handle_timeout(now, &dir);
            } else {
                let input = match rng.random_range(0..20) {
                    0..=11 => Input::Digit {
                        digit: Digit::from_event_code(rng.random_range(0..16)).unwrap(),
                        method: DtmfMethod::Rfc4733,
                    },
                    12..=15 => Input::PromptDone(PromptId::ALL[rng.random_range(0..6)]),
                    16 | 17 => Input::Joined {
                        alone: rng.random_range(0..2) == 0,
                    },
                    18 => Input::Hangup,
                    _ => Input::Cancelled,
                };
                // Mostly digits that make real IDs, so joins happen too.
                let input = if step < 9 && seed % 2 == 0 {
                    let digit =
                        Digit::from_char("1234567#".chars().nth(step % 8).unwrap()).unwrap();
                    Input::Digit {
                        digit,
                        method: DtmfMethod::Info,
                    }
                } else {
                    input
                };
                flow.handle(now, input, &dir);
            }
            while let Some(out) = flow.poll_output() {
                assert!(
                    ended_at_step.is_none_or(|s| s == step),
                    "seed {seed}: {out:?} after the end"
                );
                if matches!(out, HangUp(_)) {
                    hangups += 1;
                }
            }
            if flow.is_ended() {
                ended_at_step.get_or_insert(step);
                assert_eq!(flow.poll_timeout(), None, "seed {seed}");
                assert!(flow.record().ended.is_some(), "seed {seed}");
            }
        }
        assert!(hangups <= 1, "seed {seed}: {hangups} hangups");
        let record = flow.record();
        assert!(record.attempts.len() <= Config::MAX_ATTEMPTS as usize);
        assert!(record.attempts.iter().all(|a| a.keys.len() <= 20));
        assert!(
            record
                .attempts
                .iter()
                .filter(|a| a.result.is_accepted())
                .count()
                <= 1,
            "seed {seed}"
        );
        let kind = match record.outcome {
            Outcome::Pending => "pending",
            Outcome::Joined { .. } => "joined",
            Outcome::Rejected(_) => "rejected",
            Outcome::Abandoned { .. } => "abandoned",
            Outcome::Cancelled => "cancelled",
        };
        *outcomes.entry(kind).or_default() += 1;
    }
    // The walk reached every ending, so the checks above ran on each.
    for kind in ["joined", "rejected", "abandoned", "cancelled"] {
        assert!(outcomes.get(kind).is_some_and(|n| *n > 0), "{outcomes:?}");
    }
}
