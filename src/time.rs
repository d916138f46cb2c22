//! Wall-clock time for admin state, and the injected [`Clock`] that supplies it.
//!
//! Admin rules never read the system clock: they ask a `Clock`, which is the
//! real clock in production and a [`ManualClock`] in scenarios and tests, so
//! that "advance 2 hours" runs a meeting migration without waiting.
//! Call timers (SIP, RTP) use `tokio::time::Instant` instead; this module is
//! only for timestamps that are stored or shown.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC. Stored as an integer, shown as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The latest time shown and stored: 9999-12-31T23:59:59.999Z (RFC 3339
    /// has four-digit years). Arithmetic saturates here.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);
    /// The earliest: the Unix epoch.
    pub const MIN: Timestamp = Timestamp(0);

    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 time (`2026-11-27T15:00:00Z`; a space instead of
    /// `T` and a missing `Z` are accepted, the time is then UTC), or a time
    /// relative to `now` written `+DURATION` (`+2h`, `+1day 30min`).
    pub fn parse_relative(text: &str, now: Timestamp) -> Result<Timestamp, String> {
        let text = text.trim();
        let out_of_range = || format!("'{text}' is past {}: give an earlier time", Timestamp::MAX);
        if let Some(offset) = text.strip_prefix('+') {
            let duration = parse_duration(offset)?;
            return now.checked_add(duration).ok_or_else(out_of_range);
        }
        let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
            format!(
                "'{text}' is not a time ({e}): write an RFC 3339 time such as \
                 2026-11-27T15:00:00Z, or +DURATION such as +2h"
            )
        })?;
        let time = Timestamp::from(time);
        if !(Timestamp::MIN..=Timestamp::MAX).contains(&time) {
            return Err(out_of_range());
        }
        Ok(time)
    }

    /// `self + d`, or `None` past [`Timestamp::MAX`].
    pub fn checked_add(self, d: Duration) -> Option<Timestamp> {
        let ms = i64::try_from(d.as_millis()).ok()?;
        let sum = self.0.checked_add(ms)?;
        (sum <= Self::MAX.0).then_some(Timestamp(sum))
    }

    pub fn saturating_sub(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

/// Parses a duration such as `90min`, `2h`, `1day 2h`, naming the bad input on error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("'{text}' is not a duration ({e}): write for example 90s, 30min, 2h or 1day")
    })
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        let ms = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        };
        Timestamp(ms)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(t.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(t.0.unsigned_abs())
        }
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturates at [`Timestamp::MAX`].
    fn add(self, d: Duration) -> Timestamp {
        self.checked_add(d).unwrap_or(Timestamp::MAX)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !(Timestamp::MIN..=Timestamp::MAX).contains(self) {
            // Never produced by this crate's arithmetic; shown, not panicked on.
            return write!(f, "@{}ms", self.0);
        }
        if self.0 % 1000 == 0 {
            write!(f, "{}", humantime::format_rfc3339_seconds((*self).into()))
        } else {
            write!(f, "{}", humantime::format_rfc3339_millis((*self).into()))
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Timestamp::from)
            .map_err(|e| serde::de::Error::custom(format!("'{text}' is not an RFC 3339 time: {e}")))
    }
}

/// Where admin code gets "now".
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;

    /// The manual clock behind this one, if it can be advanced.
    fn as_manual(&self) -> Option<&ManualClock> {
        None
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        SystemTime::now().into()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            ms: Arc::new(AtomicI64::new(start.as_millis())),
        }
    }

    /// Moves the clock forward and returns the new time; refuses to pass
    /// [`Timestamp::MAX`], leaving the clock where it was.
    pub fn advance(&self, by: Duration) -> Result<Timestamp, String> {
        let mut now = self.now();
        loop {
            let next = now.checked_add(by).ok_or_else(|| {
                format!(
                    "advancing {} from {now} would pass {}: give a shorter duration",
                    humantime::format_duration(by),
                    Timestamp::MAX
                )
            })?;
            match self
                .ms
                .compare_exchange(now.0, next.0, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(next),
                Err(actual) => now = Timestamp(actual),
            }
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.ms.load(Ordering::SeqCst))
    }

    fn as_manual(&self) -> Option<&ManualClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_millis(1_795_000_000_000);

    #[test]
    fn displays_rfc3339_and_parses_back() {
        let shown = T0.to_string();
        assert_eq!(shown, "2026-11-18T11:06:40Z");
        assert_eq!(Timestamp::parse_relative(&shown, T0), Ok(T0));
        assert_eq!(
            Timestamp::parse_relative("2026-11-18 11:06:40", T0),
            Ok(T0),
            "space separator and no zone are UTC"
        );
    }

    #[test]
    fn relative_times_count_from_now() {
        let later = Timestamp::parse_relative("+2h", T0).unwrap();
        assert_eq!(later.saturating_sub(T0), Duration::from_secs(7200));
    }

    #[test]
    fn bad_times_say_what_is_expected() {
        let err = Timestamp::parse_relative("tomorrow", T0).unwrap_err();
        assert!(
            err.contains("'tomorrow'") && err.contains("RFC 3339"),
            "{err}"
        );
        let err = parse_duration("2 fortnights").unwrap_err();
        assert!(err.contains("30min"), "{err}");
    }

    #[test]
    fn manual_clock_advances_shared_time() {
        let clock = ManualClock::new(T0);
        let other = clock.clone();
        clock.advance(Duration::from_secs(90 * 60)).unwrap();
        assert_eq!(other.now().saturating_sub(T0), Duration::from_secs(5400));
    }

    #[test]
    fn times_stay_within_years_1970_to_9999() {
        let err = Timestamp::parse_relative("+9000years", T0).unwrap_err();
        assert!(err.contains("9999-12-31"), "{err}");
        assert!(Timestamp::parse_relative("1969-12-31T00:00:00Z", T0).is_err());
        assert_eq!(
            T0 + Duration::from_secs(u64::MAX),
            Timestamp::MAX,
            "saturates"
        );
        let clock = ManualClock::new(T0);
        let err = clock
            .advance(Duration::from_secs(400 * 365 * 86400 * 30))
            .unwrap_err();
        assert!(err.contains("shorter"), "{err}");
        assert_eq!(clock.now(), T0, "a refused advance leaves the clock");
        assert_eq!(Timestamp::from_millis(-5).to_string(), "@-5ms");
    }
}
