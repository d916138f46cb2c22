//! The revocation judge: what each call's outcome must be, given the ID it
//! entered and the resets that ran while the load did.
//!
//! A reset is linearizable (DESIGN.md): the old ID stops working at one
//! moment between the reset's start and its return. A call's lookup happens
//! at one moment between the caller sending `#` and the caller observing the
//! decision. So with `L = [hash_sent, decided_by]` and `R = [started,
//! returned]`:
//! - `L` ends before `R` starts: the lookup came first, the ID must be accepted;
//! - `L` starts after `R` ends: the ID must be rejected;
//! - the two overlap: either answer is right.
//!
//! Times are offsets from the run's start, on one monotonic clock. No IO.

use std::collections::HashMap;
use std::time::Duration;

use crate::admin::ids::ConferenceId;

/// What kind of ID a call was given when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// A user's current ID (a reset during the call may revoke it).
    Valid,
    /// Never issued.
    Unknown,
    /// Revoked before the load began.
    Revoked,
}

impl IdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Valid => "valid",
            IdKind::Unknown => "unknown",
            IdKind::Revoked => "revoked",
        }
    }
}

/// What the bridge decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accepted,
    Rejected,
}

/// What a call's outcome must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Accept,
    Reject,
    /// The lookup may have come before or after the revocation.
    Either,
}

/// One reset that ran during the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetWindow {
    pub old: ConferenceId,
    pub new: ConferenceId,
    /// Just before the reset was asked for.
    pub started: Duration,
    /// Just after its answer came back.
    pub returned: Duration,
}

/// How one call's outcome compares with what it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As expected (or either was right).
    Right,
    /// Accepted an ID whose reset had returned before `#`, or rejected an
    /// ID whose reset started after the decision: linearizable revocation
    /// was broken.
    Violation,
    /// Wrong, without a reset involved (a valid ID rejected, an unknown one
    /// accepted).
    Wrong,
}

/// The resets of a run, by the ID each revoked.
#[derive(Debug, Clone, Default)]
pub struct Judge {
    revoked_by: HashMap<ConferenceId, ResetWindow>,
}

impl Judge {
    pub fn new() -> Judge {
        Judge::default()
    }

    /// Records a reset. An ID is revoked at most once (a revoked ID is
    /// never issued again), so a second window for the same ID keeps the
    /// earlier one.
    pub fn add_reset(&mut self, window: ResetWindow) {
        self.revoked_by.entry(window.old).or_insert(window);
    }

    pub fn resets(&self) -> usize {
        self.revoked_by.len()
    }

    /// What a call that entered `id` (of `kind` when picked) must get, with
    /// `#` sent at `hash_sent` and the decision observed by `decided_by`.
    pub fn expect(
        &self,
        id: ConferenceId,
        kind: IdKind,
        hash_sent: Duration,
        decided_by: Duration,
    ) -> Expect {
        match kind {
            IdKind::Unknown | IdKind::Revoked => return Expect::Reject,
            IdKind::Valid => {}
        }
        let Some(reset) = self.revoked_by.get(&id) else {
            return Expect::Accept;
        };
        if decided_by < reset.started {
            Expect::Accept
        } else if hash_sent > reset.returned {
            Expect::Reject
        } else {
            Expect::Either
        }
    }

    /// The verdict on a call that got `decision`.
    pub fn judge(
        &self,
        id: ConferenceId,
        kind: IdKind,
        hash_sent: Duration,
        decided_by: Duration,
        decision: Decision,
    ) -> Verdict {
        let expect = self.expect(id, kind, hash_sent, decided_by);
        let raced = kind == IdKind::Valid && self.revoked_by.contains_key(&id);
        match (expect, decision) {
            (Expect::Either, _)
            | (Expect::Accept, Decision::Accepted)
            | (Expect::Reject, Decision::Rejected) => Verdict::Right,
            _ if raced => Verdict::Violation,
            _ => Verdict::Wrong,
        }
    }

    /// Whether `id` was revoked by a reset of this run.
    pub fn was_reset(&self, id: ConferenceId) -> bool {
        self.revoked_by.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ConferenceId {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One reset of 1111111 → 2222222, running from 100 ms to 110 ms.
    fn judge() -> Judge {
        let mut j = Judge::new();
        j.add_reset(ResetWindow {
            old: id("1111111"),
            new: id("2222222"),
            started: ms(100),
            returned: ms(110),
        });
        j
    }

    #[test]
    fn lookups_clear_of_the_window_have_one_right_answer() {
        let j = judge();
        let old = id("1111111");
        assert_eq!(j.expect(old, IdKind::Valid, ms(50), ms(99)), Expect::Accept);
        assert_eq!(
            j.expect(old, IdKind::Valid, ms(111), ms(120)),
            Expect::Reject
        );
        // Overlapping the reset on either side, or containing it: either.
        assert_eq!(
            j.expect(old, IdKind::Valid, ms(90), ms(100)),
            Expect::Either
        );
        assert_eq!(
            j.expect(old, IdKind::Valid, ms(105), ms(106)),
            Expect::Either
        );
        assert_eq!(
            j.expect(old, IdKind::Valid, ms(110), ms(130)),
            Expect::Either
        );
        assert_eq!(j.expect(old, IdKind::Valid, ms(0), ms(500)), Expect::Either);
        // The new ID and IDs nobody reset are simply valid.
        assert_eq!(
            j.expect(id("2222222"), IdKind::Valid, ms(200), ms(210)),
            Expect::Accept
        );
        assert_eq!(
            j.expect(id("3333333"), IdKind::Valid, ms(105), ms(106)),
            Expect::Accept
        );
    }

    #[test]
    fn accepted_after_the_reset_returned_is_a_violation() {
        let j = judge();
        let v = j.judge(
            id("1111111"),
            IdKind::Valid,
            ms(111),
            ms(115),
            Decision::Accepted,
        );
        assert_eq!(v, Verdict::Violation);
    }

    #[test]
    fn rejected_before_the_reset_started_is_a_violation() {
        let j = judge();
        let v = j.judge(
            id("1111111"),
            IdKind::Valid,
            ms(10),
            ms(99),
            Decision::Rejected,
        );
        assert_eq!(v, Verdict::Violation);
    }

    #[test]
    fn either_answer_is_right_inside_the_window() {
        let j = judge();
        for decision in [Decision::Accepted, Decision::Rejected] {
            let v = j.judge(id("1111111"), IdKind::Valid, ms(95), ms(105), decision);
            assert_eq!(v, Verdict::Right);
        }
    }

    #[test]
    fn invalid_ids_must_be_rejected_and_valid_ones_accepted() {
        let j = judge();
        let unknown = j.judge(
            id("9999999"),
            IdKind::Unknown,
            ms(1),
            ms(2),
            Decision::Accepted,
        );
        assert_eq!(unknown, Verdict::Wrong);
        let revoked = j.judge(
            id("8888888"),
            IdKind::Revoked,
            ms(1),
            ms(2),
            Decision::Rejected,
        );
        assert_eq!(revoked, Verdict::Right);
        let valid = j.judge(
            id("3333333"),
            IdKind::Valid,
            ms(1),
            ms(2),
            Decision::Rejected,
        );
        assert_eq!(valid, Verdict::Wrong);
    }

    #[test]
    fn an_id_is_revoked_once_so_the_first_window_stands() {
        let mut j = judge();
        j.add_reset(ResetWindow {
            old: id("1111111"),
            new: id("4444444"),
            started: ms(500),
            returned: ms(510),
        });
        assert_eq!(j.resets(), 1);
        assert_eq!(
            j.expect(id("1111111"), IdKind::Valid, ms(200), ms(210)),
            Expect::Reject
        );
    }
}
