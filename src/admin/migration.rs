//! The meeting migration job's life: Pending → InProgress → Succeeded, or
//! back to Pending for a retry after a failed run, or Failed for good.
//!
//! Pure rules on [`MigrationJob`], with time passed in; the service runs the
//! job's work (rewriting invitations) and stores each transition.

use std::time::Duration;

use super::model::{JobState, MigrationJob};
use crate::time::Timestamp;

/// A job waits at least this long after being queued before its first run,
/// as Microsoft's meeting migration service does.
pub const START_DELAY: Duration = Duration::from_secs(90 * 60);
/// Failed runs are retried up to this many times...
pub const MAX_RETRIES: u32 = 9;
/// ...spread over this window.
pub const RETRY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The wait between a failed run and its retry: the window split evenly.
pub fn retry_interval() -> Duration {
    RETRY_WINDOW / MAX_RETRIES
}

impl MigrationJob {
    /// A new pending job for `user`, first run no earlier than 90 minutes on.
    pub fn queued(user: super::ids::EmailAddress, trigger: &str, now: Timestamp) -> Self {
        MigrationJob {
            id: 0,
            user,
            state: JobState::Pending,
            trigger: trigger.to_string(),
            queued_at: now,
            next_run_at: Some(now + START_DELAY),
            runs: 0,
            last_error: None,
            finished_at: None,
            meetings_updated: 0,
        }
    }

    pub fn is_due(&self, now: Timestamp) -> bool {
        self.state == JobState::Pending && self.next_run_at.is_some_and(|at| at <= now)
    }

    /// Starts a run.
    pub fn start(&mut self) {
        self.state = JobState::InProgress;
        self.runs += 1;
        self.next_run_at = None;
    }

    pub fn succeed(&mut self, now: Timestamp, meetings_updated: u32) {
        self.state = JobState::Succeeded;
        self.finished_at = Some(now);
        self.meetings_updated = meetings_updated;
        self.last_error = None;
    }

    /// Records a failed run: retried later while retries are left, else failed for good.
    pub fn fail(&mut self, now: Timestamp, error: String) {
        self.last_error = Some(error);
        if self.runs <= MAX_RETRIES {
            self.state = JobState::Pending;
            self.next_run_at = Some(now + retry_interval());
        } else {
            self.state = JobState::Failed;
            self.finished_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn job() -> MigrationJob {
        MigrationJob::queued("alice@contoso.com".parse().unwrap(), "reset-id", T0)
    }

    #[test]
    fn waits_ninety_minutes_before_the_first_run() {
        let job = job();
        assert_eq!(job.state, JobState::Pending);
        assert!(!job.is_due(T0 + Duration::from_secs(89 * 60 + 59)));
        assert!(job.is_due(T0 + START_DELAY));
    }

    #[test]
    fn succeeds_after_a_run() {
        let mut job = job();
        job.start();
        assert_eq!(job.state, JobState::InProgress);
        assert!(
            !job.is_due(T0 + START_DELAY),
            "a running job is not due again"
        );
        job.succeed(T0 + START_DELAY, 3);
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.meetings_updated, 3);
    }

    #[test]
    fn retries_nine_times_within_a_day_then_fails() {
        let mut job = job();
        let mut now = T0 + START_DELAY;
        let first_run = now;
        for retry in 0..=MAX_RETRIES {
            assert!(job.is_due(now), "run {} is due", retry + 1);
            job.start();
            job.fail(now, "mailbox unavailable".into());
            if retry < MAX_RETRIES {
                assert_eq!(job.state, JobState::Pending);
                now = job.next_run_at.unwrap();
            }
        }
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.runs, 1 + MAX_RETRIES);
        assert_eq!(job.last_error.as_deref(), Some("mailbox unavailable"));
        assert_eq!(
            now.saturating_sub(first_run),
            RETRY_WINDOW,
            "9 retries span 24 hours"
        );
    }
}
