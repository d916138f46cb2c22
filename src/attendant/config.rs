//! The attendant's settings: digit timeouts, how many attempts a caller gets,
//! what an entry must look like to be looked up, and what `*` does.
//!
//! [`Config::validate`] is for the boundary (CLI flags, scenario files): it
//! names the bad value and the allowed range. The flow itself never rejects
//! a config: it clamps one that fails validation ([`Config::clamped`]), so
//! no setting can make it panic or spin.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::admin::ids::{ConferenceId, MICROSOFT_ID_LEN};

/// What the `*` key does while a caller enters a conference ID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StarKey {
    /// `*` throws away the digits entered so far and the caller starts the
    /// entry over: no attempt is counted, and the first-digit timer runs
    /// again (a caller who then types nothing gets the no-input treatment).
    /// This is the default: a caller who mistypes has a way out that does
    /// not cost an attempt.
    #[default]
    ClearEntry,
    /// `*` is an ordinary key, like `A`-`D`: an entry holding it is
    /// malformed and is not looked up.
    Malformed,
}

/// The attendant's settings. `Default` is Microsoft's bridge: 7-digit IDs,
/// 10 s for the first digit, 5 s between digits, 3 attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long the caller has for the first digit once a prompt that asks
    /// for the ID has finished (or after `*` cleared the entry).
    pub first_digit_timeout: Duration,
    /// How long after a digit the entry is taken as complete without `#`.
    pub inter_digit_timeout: Duration,
    /// Failed attempts (not valid, malformed or no input, in any mix) after
    /// which the caller hears "goodbye" and is hung up on.
    pub max_attempts: u32,
    /// Shortest entry that is looked up; shorter ones are malformed.
    pub min_id_len: usize,
    /// Longest entry that is looked up; longer ones are malformed.
    pub max_id_len: usize,
    /// Keys buffered per entry. Keys past this are counted but dropped, and
    /// the entry, when it completes, is malformed: the buffer stays bounded
    /// whatever a caller (or a broken DTMF source) sends.
    pub max_digits: usize,
    /// What `*` does.
    pub star: StarKey,
    /// Safety limit on one prompt: if the media layer has not reported
    /// `PromptDone` by then, the flow carries on as if it had (so a lost
    /// report can't leave a caller in silence, or a goodbye without a BYE).
    pub prompt_limit: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            first_digit_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
            max_attempts: 3,
            min_id_len: MICROSOFT_ID_LEN,
            max_id_len: MICROSOFT_ID_LEN,
            max_digits: 20,
            star: StarKey::ClearEntry,
            prompt_limit: Duration::from_secs(30),
        }
    }
}

/// A setting outside what the attendant accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is {value:?}: it must be between {min:?} and {max:?}")]
    Duration {
        name: &'static str,
        value: Duration,
        min: Duration,
        max: Duration,
    },
    #[error("max attempts is {0}: it must be between 1 and {max}", max = Config::MAX_ATTEMPTS)]
    Attempts(u32),
    #[error(
        "accepted ID length {min}..={max} is not a range within 1..={}: \
         conference IDs have 1 to {} digits",
        ConferenceId::MAX_LEN,
        ConferenceId::MAX_LEN
    )]
    IdLength { min: usize, max: usize },
    #[error(
        "max digits is {max_digits}: it must be between the longest accepted ID \
         ({max_id_len}) and {}",
        Config::MAX_DIGITS
    )]
    MaxDigits {
        max_digits: usize,
        max_id_len: usize,
    },
}

impl Config {
    /// Bounds for every timeout: below 100 ms a DTMF event's own duration
    /// would trip it; above an hour a call is stuck, not waiting.
    pub const DURATIONS: RangeInclusive<Duration> =
        Duration::from_millis(100)..=Duration::from_secs(3600);
    /// Upper bound on attempts, so a record's attempt list stays small.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// Upper bound on the per-entry key buffer.
    pub const MAX_DIGITS: usize = 256;

    /// Checks every setting, reporting the first that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in self.durations() {
            if !Self::DURATIONS.contains(&value) {
                return Err(ConfigError::Duration {
                    name,
                    value,
                    min: *Self::DURATIONS.start(),
                    max: *Self::DURATIONS.end(),
                });
            }
        }
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::Attempts(self.max_attempts));
        }
        if self.min_id_len == 0
            || self.min_id_len > self.max_id_len
            || self.max_id_len > ConferenceId::MAX_LEN
        {
            return Err(ConfigError::IdLength {
                min: self.min_id_len,
                max: self.max_id_len,
            });
        }
        if self.max_digits < self.max_id_len || self.max_digits > Self::MAX_DIGITS {
            return Err(ConfigError::MaxDigits {
                max_digits: self.max_digits,
                max_id_len: self.max_id_len,
            });
        }
        Ok(())
    }

    /// This config with every setting forced into its valid range; a valid
    /// config comes back unchanged.
    pub fn clamped(self) -> Config {
        let clamp = |d: Duration| d.clamp(*Self::DURATIONS.start(), *Self::DURATIONS.end());
        let max_id_len = self.max_id_len.clamp(1, ConferenceId::MAX_LEN);
        Config {
            first_digit_timeout: clamp(self.first_digit_timeout),
            inter_digit_timeout: clamp(self.inter_digit_timeout),
            max_attempts: self.max_attempts.clamp(1, Self::MAX_ATTEMPTS),
            min_id_len: self.min_id_len.clamp(1, max_id_len),
            max_id_len,
            max_digits: self.max_digits.clamp(max_id_len, Self::MAX_DIGITS),
            star: self.star,
            prompt_limit: clamp(self.prompt_limit),
        }
    }

    fn durations(&self) -> [(&'static str, Duration); 3] {
        [
            ("first-digit timeout", self.first_digit_timeout),
            ("inter-digit timeout", self.inter_digit_timeout),
            ("prompt limit", self.prompt_limit),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_microsofts_bridge_and_valid() {
        let c = Config::default();
        assert_eq!(c.first_digit_timeout, Duration::from_secs(10));
        assert_eq!(c.inter_digit_timeout, Duration::from_secs(5));
        assert_eq!(c.max_attempts, 3);
        assert_eq!((c.min_id_len, c.max_id_len), (7, 7));
        assert_eq!(c.star, StarKey::ClearEntry);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.clamped(), c);
    }

    #[test]
    fn validate_names_the_bad_setting_and_the_range() {
        let zero_timeout = Config {
            inter_digit_timeout: Duration::ZERO,
            ..Config::default()
        };
        let err = zero_timeout.validate().unwrap_err().to_string();
        assert!(err.contains("inter-digit timeout is 0ns"), "{err}");
        assert!(err.contains("between 100ms and 3600s"), "{err}");

        let no_attempts = Config {
            max_attempts: 0,
            ..Config::default()
        };
        assert_eq!(no_attempts.validate(), Err(ConfigError::Attempts(0)));

        let inverted = Config {
            min_id_len: 8,
            max_id_len: 7,
            ..Config::default()
        };
        assert!(
            inverted
                .validate()
                .unwrap_err()
                .to_string()
                .contains("8..=7")
        );

        let too_long = Config {
            max_id_len: 19,
            max_digits: 30,
            ..Config::default()
        };
        assert!(matches!(
            too_long.validate(),
            Err(ConfigError::IdLength { max: 19, .. })
        ));

        let small_buffer = Config {
            max_digits: 5,
            ..Config::default()
        };
        let err = small_buffer.validate().unwrap_err().to_string();
        assert!(err.contains("max digits is 5"), "{err}");
    }

    #[test]
    fn clamped_config_always_validates() {
        let wild = Config {
            first_digit_timeout: Duration::ZERO,
            inter_digit_timeout: Duration::MAX,
            max_attempts: 0,
            min_id_len: 50,
            max_id_len: 0,
            max_digits: usize::MAX,
            star: StarKey::Malformed,
            prompt_limit: Duration::ZERO,
        };
        let c = wild.clamped();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.max_attempts, 1);
        assert_eq!((c.min_id_len, c.max_id_len), (1, 1));
        assert_eq!(c.max_digits, Config::MAX_DIGITS);
    }
}
