//! When each call of a load run starts: `rate` calls per second, evenly
//! spaced, until `calls` have started or `duration` has passed. A pure
//! function of the time since the run began, so a driver that woke late
//! starts every call that came due at once and the average rate holds.

use std::time::Duration;

/// The plan of call starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Calls per second, > 0.
    rate: f64,
    /// At most this many calls (`None`: bounded by `duration` only).
    calls: Option<u64>,
    /// No call starts at or after this offset (`None`: bounded by `calls` only).
    duration: Option<Duration>,
}

impl Schedule {
    /// A plan of `rate` calls per second. At least one of `calls` and
    /// `duration` should be set; with neither, [`Schedule::total`] is `None`
    /// and the plan runs until the driver stops it.
    pub fn new(rate: f64, calls: Option<u64>, duration: Option<Duration>) -> Schedule {
        Schedule {
            rate,
            calls,
            duration,
        }
    }

    /// Whether the rate starts anything (not zero, negative or NaN).
    fn runs(&self) -> bool {
        self.rate.is_finite() && self.rate > 0.0
    }

    /// When call number `n` (0-based) starts, from the run's beginning;
    /// `None` when the plan has no call `n`.
    pub fn start_of(&self, n: u64) -> Option<Duration> {
        if self.calls.is_some_and(|c| n >= c) || !self.runs() {
            return None;
        }
        let at = Duration::try_from_secs_f64(n as f64 / self.rate).ok()?;
        match self.duration {
            Some(d) if at >= d => None,
            _ => Some(at),
        }
    }

    /// How many calls are due by `elapsed` (those whose start is at or
    /// before it).
    pub fn due(&self, elapsed: Duration) -> u64 {
        if !self.runs() {
            return 0;
        }
        // floor(elapsed × rate) + 1 starts are ≤ elapsed; float rounding can
        // put that one off at a boundary, which the steps below correct.
        let mut n = (elapsed.as_secs_f64() * self.rate).floor() as u64 + 1;
        if let Some(total) = self.total() {
            n = n.min(total);
        }
        for _ in 0..4 {
            if n > 0 && self.start_of(n - 1).is_none_or(|at| at > elapsed) {
                n -= 1;
            } else if self.start_of(n).is_some_and(|at| at <= elapsed) {
                n += 1;
            } else {
                break;
            }
        }
        n
    }

    /// The number of calls the plan starts in all, if bounded.
    pub fn total(&self) -> Option<u64> {
        let by_duration = self
            .duration
            .map(|d| (d.as_secs_f64() * self.rate).ceil() as u64);
        match (self.calls, by_duration) {
            (Some(c), Some(d)) => Some(c.min(d)),
            (Some(c), None) => Some(c),
            (None, d) => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn calls_are_evenly_spaced_at_the_rate() {
        let s = Schedule::new(100.0, Some(5), None);
        let starts: Vec<_> = (0..6).map(|n| s.start_of(n)).collect();
        assert_eq!(
            starts,
            [
                Some(ms(0)),
                Some(ms(10)),
                Some(ms(20)),
                Some(ms(30)),
                Some(ms(40)),
                None
            ]
        );
        assert_eq!(s.total(), Some(5));
    }

    #[test]
    fn due_counts_every_start_at_or_before_now_and_never_more_than_the_total() {
        let s = Schedule::new(100.0, Some(5), None);
        assert_eq!(s.due(ms(0)), 1);
        assert_eq!(s.due(ms(9)), 1);
        assert_eq!(s.due(ms(10)), 2);
        assert_eq!(s.due(ms(35)), 4);
        // A driver that woke late starts what came due at once.
        assert_eq!(s.due(Duration::from_secs(60)), 5);
    }

    #[test]
    fn duration_bounds_the_plan_and_the_sooner_bound_wins() {
        let s = Schedule::new(10.0, None, Some(Duration::from_secs(1)));
        assert_eq!(s.total(), Some(10));
        assert_eq!(s.start_of(9), Some(ms(900)));
        assert_eq!(s.start_of(10), None);
        assert_eq!(s.due(Duration::from_secs(5)), 10);
        let both = Schedule::new(10.0, Some(3), Some(Duration::from_secs(1)));
        assert_eq!(both.total(), Some(3));
        assert_eq!(both.due(Duration::from_secs(5)), 3);
    }

    #[test]
    fn fractional_and_high_rates_keep_their_average() {
        let s = Schedule::new(0.5, Some(3), None);
        assert_eq!(s.start_of(1), Some(Duration::from_secs(2)));
        assert_eq!(s.due(Duration::from_millis(3999)), 2);
        let fast = Schedule::new(5500.0, None, Some(Duration::from_secs(2)));
        assert_eq!(fast.total(), Some(11_000));
        assert_eq!(fast.due(Duration::from_secs(1)), 5501);
        assert_eq!(fast.due(Duration::from_secs(3)), 11_000);
    }

    #[test]
    fn a_zero_rate_starts_nothing() {
        let s = Schedule::new(0.0, Some(3), None);
        assert_eq!(s.start_of(0), None);
        assert_eq!(s.due(Duration::from_secs(10)), 0);
    }
}
