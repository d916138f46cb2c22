//! Guessing protection: a 7-digit conference ID is ten million numbers,
//! and anyone who can send a UDP packet can try them. The attendant already
//! hangs up after a few wrong entries in one call; [`Guard`] counts wrong
//! entries *across* calls:
//!
//! - per source address and per caller ID, in a sliding window: past a
//!   threshold that key is blocked for a cool-down (new INVITEs from it get
//!   `403`), and an event names it once per block;
//! - across all sources, per window: past a threshold (a distributed guess)
//!   a global alarm goes on, and off again once the rate has fallen to half
//!   the threshold (hysteresis, so the alarm does not flap).
//!
//! No IO and no clock: time is an argument; outputs are polled
//! ([`Guard::poll_event`], [`Guard::poll_timeout`]). The driver
//! (`net::guard`) holds it in a mutex shared by the SIP router and the call
//! tasks.
//!
//! # What counts as a failure
//!
//! An entry that was looked up and not found (`unknown`), one that was
//! revoked (`revoked`), and one that could not be looked up (`malformed`,
//! e.g. six digits): each is a wrong ID, the only way to guess. `no-input`
//! (the first-digit timer ran out with nothing pressed) does **not** count:
//! it tries no ID, so it teaches a scanner nothing, and a caller fumbling
//! for their invitation should not lock out their office's NAT address.
//! Calls that never press a key cost the bridge a call slot, which
//! `--max-calls` and the first-digit timeout already bound; they are
//! counted in the metrics by result.
//!
//! # Keys
//!
//! - The source IP. IPv4 as is; an IPv4-mapped IPv6 address as its IPv4;
//!   any other IPv6 address by its /64 network, since one host on IPv6
//!   usually holds a whole /64 and could step through it.
//! - The caller ID: the user part of the From URI, trimmed, lower-cased,
//!   visual separators dropped from a number, at most 64 characters. It is
//!   the caller's claim, so anyone can send someone else's: a lockout by
//!   caller ID can shut out a real caller whose ID a guesser spoofs. Its
//!   threshold is separate (`caller_id_failures`; 0 leaves caller IDs
//!   unkeyed). `anonymous` and other withheld IDs are never keys (they are
//!   shared by every caller who withholds theirs).
//!
//! # Memory
//!
//! A key keeps at most `threshold` failure times (the sliding window is
//! exact: blocked when the `threshold`-th latest failure is within the
//! window). The table holds at most `max_entries` keys. When a new key
//! finds it full, keys with nothing left in the window are dropped first;
//! if it is still full, the least recently failing eighth of the keys that
//! are not blocked is evicted. Blocked keys are never evicted (a flood of
//! spoofed sources must not lift a block); when every key is blocked the
//! new key is not tracked (it still counts toward the global alarm) and
//! `untracked` counts it. The global count is kept in 60 buckets per
//! window, so it is bounded whatever the rate; it may count up to one
//! bucket (1/60 of the window) of failures that just left the window.
//!
//! A key's failures are cleared when its block starts: after the cool-down
//! it starts from zero.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The global count's resolution: buckets per window.
const BUCKETS: u32 = 60;
/// The most keys a snapshot lists under `recent`.
pub const MAX_RECENT: usize = 100;
/// The longest caller ID kept as a key (longer ones are cut).
pub const MAX_CALLER_ID: usize = 64;

/// The guard's settings. `Default` is what `dialin serve` runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Failures from one source within `window` that block it (0: sources
    /// are not keyed).
    pub failures: u32,
    /// Failures with one caller ID within `window` that block it (0: caller
    /// IDs are not keyed).
    pub caller_id_failures: u32,
    /// The sliding window the failures are counted in.
    pub window: Duration,
    /// How long a block lasts.
    pub cooldown: Duration,
    /// Failures across all sources within `window` that raise the global
    /// alarm (0: no alarm). It clears when the count falls below half.
    pub alarm: u32,
    /// The most keys tracked at once (see the module doc).
    pub max_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failures: 10,
            caller_id_failures: 10,
            window: Duration::from_secs(10 * 60),
            cooldown: Duration::from_secs(15 * 60),
            alarm: 100,
            max_entries: 10_000,
        }
    }
}

/// A setting outside what the guard accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is {value}: it must be between {min} and {max}")]
    Count {
        name: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("{name} is {value:?}: it must be between {min:?} and {max:?}")]
    Duration {
        name: &'static str,
        value: Duration,
        min: Duration,
        max: Duration,
    },
}

impl Config {
    /// The largest per-key threshold (a key keeps this many failure times).
    pub const MAX_FAILURES: u32 = 1000;
    pub const MAX_ALARM: u32 = 10_000_000;
    pub const MIN_ENTRIES: usize = 16;
    pub const MAX_ENTRIES: usize = 1_000_000;
    pub const MIN_DURATION: Duration = Duration::from_secs(1);
    pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

    /// For the boundary (CLI flags): names the bad value and the range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let count = |name, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Count {
                    name,
                    value,
                    min,
                    max,
                })
            }
        };
        let duration = |name, value: Duration| {
            if (Self::MIN_DURATION..=Self::MAX_DURATION).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Duration {
                    name,
                    value,
                    min: Self::MIN_DURATION,
                    max: Self::MAX_DURATION,
                })
            }
        };
        let max_failures = u64::from(Self::MAX_FAILURES);
        count("--guard-failures", self.failures.into(), 0, max_failures)?;
        count(
            "--guard-caller-id-failures",
            self.caller_id_failures.into(),
            0,
            max_failures,
        )?;
        count(
            "--guard-alarm",
            self.alarm.into(),
            0,
            Self::MAX_ALARM.into(),
        )?;
        count(
            "--guard-max-entries",
            self.max_entries as u64,
            Self::MIN_ENTRIES as u64,
            Self::MAX_ENTRIES as u64,
        )?;
        duration("--guard-window", self.window)?;
        duration("--guard-cooldown", self.cooldown)
    }

    /// The nearest valid config (the guard never refuses one).
    pub fn clamped(self) -> Config {
        Config {
            failures: self.failures.min(Self::MAX_FAILURES),
            caller_id_failures: self.caller_id_failures.min(Self::MAX_FAILURES),
            window: self.window.clamp(Self::MIN_DURATION, Self::MAX_DURATION),
            cooldown: self.cooldown.clamp(Self::MIN_DURATION, Self::MAX_DURATION),
            alarm: self.alarm.min(Self::MAX_ALARM),
            max_entries: self.max_entries.clamp(Self::MIN_ENTRIES, Self::MAX_ENTRIES),
        }
    }
}

/// A caller ID as a key (see the module doc for the normalization).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerId(String);

/// Caller IDs that say "withheld": never keys.
const WITHHELD: &[&str] = &[
    "anonymous",
    "unknown",
    "unavailable",
    "restricted",
    "private",
    "withheld",
];

impl CallerId {
    /// The key for a From URI's user part, or `None` when there is nothing
    /// to key (empty, or a withheld ID).
    pub fn new(user: &str) -> Option<CallerId> {
        let user = user.trim();
        let phone_like = user.starts_with('+') || user.starts_with(|c: char| c.is_ascii_digit());
        let mut text = String::with_capacity(user.len().min(MAX_CALLER_ID));
        for c in user.chars() {
            if phone_like && matches!(c, '-' | '.' | '(' | ')' | ' ') {
                continue;
            }
            if text.chars().count() >= MAX_CALLER_ID {
                break;
            }
            text.push(c.to_ascii_lowercase());
        }
        if text.is_empty() || WITHHELD.contains(&text.as_str()) {
            return None;
        }
        Some(CallerId(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is counted and blocked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A source address (an IPv6 one as its /64 network).
    Source(IpAddr),
    CallerId(CallerId),
}

impl Key {
    /// The key of a source address: IPv4, or an IPv6 /64 network.
    pub fn source(ip: IpAddr) -> Key {
        Key::Source(match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let net = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(Ipv6Addr::from(net))
                }
            },
        })
    }

    /// `source` or `caller-id`.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Source(_) => "source",
            Key::CallerId(_) => "caller-id",
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Source(IpAddr::V6(net)) => write!(f, "{net}/64"),
            Key::Source(ip) => write!(f, "{ip}"),
            Key::CallerId(id) => write!(f, "{id}"),
        }
    }
}

/// Whether a new INVITE may start a call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Admit {
    Yes,
    /// Refuse it (403): this key is blocked until then.
    Blocked {
        key: Key,
        until: Instant,
    },
}

/// What the guard tells its driver (to log and to write as events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardEvent {
    /// A key crossed its threshold: blocked until `until`. `source` and
    /// `caller_id` are those of the failure that crossed it.
    Blocked {
        key: Key,
        until: Instant,
        failures: u32,
        source: IpAddr,
        caller_id: Option<CallerId>,
    },
    /// The first INVITE a block refused (later ones are only counted).
    Refused {
        key: Key,
        until: Instant,
        source: IpAddr,
        caller_id: Option<CallerId>,
    },
    /// A block's cool-down ended; `refused` INVITEs were turned away.
    Unblocked { key: Key, refused: u64 },
    /// The failures across all sources in the window reached the alarm threshold.
    AlarmOn { failures: u64 },
    /// They fell below half of it.
    AlarmOff { failures: u64, since: Instant },
}

/// Running totals since the guard started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Failures recorded.
    pub failures: u64,
    /// Blocks started, by source and by caller ID.
    pub source_blocks: u64,
    pub caller_id_blocks: u64,
    /// INVITEs refused because of a block.
    pub refused: u64,
    /// Times the global alarm went on.
    pub alarms: u64,
    /// Keys evicted to make room.
    pub evicted: u64,
    /// Failures of a new key not tracked because every key was blocked.
    pub untracked: u64,
}

/// A blocked key, for the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub key: Key,
    pub until: Instant,
    /// INVITEs refused so far in this block.
    pub refused: u64,
}

/// A key with failures in the window, for the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recent {
    pub key: Key,
    pub failures: u32,
    pub last: Instant,
}

/// The guard's state at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub config: Config,
    /// Blocked keys, soonest to end first.
    pub blocked: Vec<Blocked>,
    /// Keys with failures in the window and not blocked, most failures
    /// first, at most [`MAX_RECENT`].
    pub recent: Vec<Recent>,
    /// Failures across all sources in the window.
    pub window_failures: u64,
    /// Since when the global alarm is on, if it is.
    pub alarm_since: Option<Instant>,
    /// Keys in the table.
    pub tracked: usize,
    pub totals: Totals,
}

#[derive(Debug)]
struct Entry {
    /// Failure times, oldest first, at most the key's threshold.
    failures: VecDeque<Instant>,
    /// The latest failure (or the end of the latest block).
    last: Instant,
    blocked_until: Option<Instant>,
    /// INVITEs refused in the current block.
    refused: u64,
}

/// The guessing-protection core. See the module doc.
#[derive(Debug)]
pub struct Guard {
    config: Config,
    entries: HashMap<Key, Entry>,
    /// Every block's end, for expiry in time order.
    blocks: BTreeSet<(Instant, Key)>,
    /// The global count: (bucket start, failures), oldest first.
    buckets: VecDeque<(Instant, u64)>,
    alarm_since: Option<Instant>,
    events: VecDeque<GuardEvent>,
    totals: Totals,
}

/// The start of the window ending at `now` (`None`: before the clock's
/// origin, so everything is in it).
fn window_start(now: Instant, window: Duration) -> Option<Instant> {
    now.checked_sub(window)
}

fn in_window(t: Instant, start: Option<Instant>) -> bool {
    start.is_none_or(|s| t > s)
}

impl Guard {
    /// A guard with `config` (clamped to the valid ranges).
    pub fn new(config: Config) -> Guard {
        Guard {
            config: config.clamped(),
            entries: HashMap::new(),
            blocks: BTreeSet::new(),
            buckets: VecDeque::new(),
            alarm_since: None,
            events: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One wrong entry (unknown, revoked or malformed) from `source`, with
    /// the INVITE's caller ID (the From URI's user part), at `now`.
    pub fn record_failure(&mut self, now: Instant, source: IpAddr, caller_id: Option<&str>) {
        self.handle_timeout(now);
        self.totals.failures += 1;
        self.add_global(now);
        let caller = caller_id.and_then(CallerId::new);
        if self.config.failures > 0 {
            self.count(
                now,
                Key::source(source),
                self.config.failures,
                source,
                &caller,
            );
        }
        if let Some(id) = &caller
            && self.config.caller_id_failures > 0
        {
            self.count(
                now,
                Key::CallerId(id.clone()),
                self.config.caller_id_failures,
                source,
                &caller,
            );
        }
        self.update_alarm(now);
    }

    /// Whether a new INVITE from `source` with this caller ID may start a
    /// call. A refusal is counted; the first one of a block is an event.
    pub fn admit(&mut self, now: Instant, source: IpAddr, caller_id: Option<&str>) -> Admit {
        self.handle_timeout(now);
        let caller = caller_id.and_then(CallerId::new);
        let keys = std::iter::once(Key::source(source)).chain(caller.clone().map(Key::CallerId));
        for key in keys {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let Some(until) = entry.blocked_until else {
                continue;
            };
            entry.refused += 1;
            self.totals.refused += 1;
            if entry.refused == 1 {
                self.events.push_back(GuardEvent::Refused {
                    key: key.clone(),
                    until,
                    source,
                    caller_id: caller.clone(),
                });
            }
            return Admit::Blocked { key, until };
        }
        Admit::Yes
    }

    /// Ends the blocks whose cool-down is over and updates the alarm.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((until, _)) = self.blocks.first() {
            if *until > now {
                break;
            }
            let Some((until, key)) = self.blocks.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.blocked_until == Some(until)
            {
                entry.blocked_until = None;
                entry.last = until;
                let refused = std::mem::take(&mut entry.refused);
                self.events
                    .push_back(GuardEvent::Unblocked { key, refused });
            }
        }
        self.update_alarm(now);
    }

    /// The next moment [`Guard::handle_timeout`] has something to do: a
    /// block's end, or (while the alarm is on) the oldest failures leaving
    /// the window.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let block = self.blocks.first().map(|(until, _)| *until);
        let alarm = if self.alarm_since.is_some() {
            self.buckets
                .front()
                .map(|(start, _)| *start + self.bucket_width() + self.config.window)
        } else {
            None
        };
        match (block, alarm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<GuardEvent> {
        self.events.pop_front()
    }

    /// Whether the global alarm is on.
    pub fn alarm(&self) -> bool {
        self.alarm_since.is_some()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The state at `now`, for the API and the metrics.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let start = window_start(now, self.config.window);
        let mut blocked: Vec<Blocked> = self
            .entries
            .iter()
            .filter_map(|(key, e)| {
                e.blocked_until.map(|until| Blocked {
                    key: key.clone(),
                    until,
                    refused: e.refused,
                })
            })
            .collect();
        blocked.sort_by(|a, b| a.until.cmp(&b.until).then_with(|| a.key.cmp(&b.key)));
        let mut recent: Vec<Recent> = self
            .entries
            .iter()
            .filter(|(_, e)| e.blocked_until.is_none())
            .filter_map(|(key, e)| {
                let failures = e.failures.iter().filter(|&&t| in_window(t, start)).count();
                (failures > 0).then(|| Recent {
                    key: key.clone(),
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    last: e.last,
                })
            })
            .collect();
        recent.sort_by(|a, b| {
            b.failures
                .cmp(&a.failures)
                .then_with(|| b.last.cmp(&a.last))
                .then_with(|| a.key.cmp(&b.key))
        });
        recent.truncate(MAX_RECENT);
        Snapshot {
            config: self.config,
            blocked,
            recent,
            window_failures: self.window_failures(now),
            alarm_since: self.alarm_since,
            tracked: self.entries.len(),
            totals: self.totals,
        }
    }

    /// Failures across all sources in the window ending at `now`.
    pub fn window_failures(&self, now: Instant) -> u64 {
        let width = self.bucket_width();
        let start = window_start(now, self.config.window);
        self.buckets
            .iter()
            .filter(|(s, _)| in_window(*s + width, start))
            .map(|(_, n)| n)
            .sum()
    }

    // --- inside ---

    fn bucket_width(&self) -> Duration {
        (self.config.window / BUCKETS).max(Duration::from_millis(1))
    }

    fn prune_buckets(&mut self, now: Instant) {
        let width = self.bucket_width();
        let start = window_start(now, self.config.window);
        while let Some((s, _)) = self.buckets.front() {
            if in_window(*s + width, start) {
                break;
            }
            self.buckets.pop_front();
        }
    }

    fn add_global(&mut self, now: Instant) {
        self.prune_buckets(now);
        let width = self.bucket_width();
        match self.buckets.back_mut() {
            Some((start, n)) if *start + width > now => *n += 1,
            _ => self.buckets.push_back((now, 1)),
        }
    }

    fn update_alarm(&mut self, now: Instant) {
        self.prune_buckets(now);
        if self.config.alarm == 0 {
            return;
        }
        let count = self.window_failures(now);
        let threshold = u64::from(self.config.alarm);
        match self.alarm_since {
            None if count >= threshold => {
                self.alarm_since = Some(now);
                self.totals.alarms += 1;
                self.events
                    .push_back(GuardEvent::AlarmOn { failures: count });
            }
            Some(since) if count * 2 < threshold => {
                self.alarm_since = None;
                self.events.push_back(GuardEvent::AlarmOff {
                    failures: count,
                    since,
                });
            }
            _ => {}
        }
    }

    /// Counts one failure against `key`; blocks it at `threshold`.
    fn count(
        &mut self,
        now: Instant,
        key: Key,
        threshold: u32,
        source: IpAddr,
        caller: &Option<CallerId>,
    ) {
        if !self.entries.contains_key(&key) {
            if !self.make_room(now) {
                self.totals.untracked += 1;
                return;
            }
            self.entries.insert(
                key.clone(),
                Entry {
                    failures: VecDeque::new(),
                    last: now,
                    blocked_until: None,
                    refused: 0,
                },
            );
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.last = now;
        if entry.blocked_until.is_some() {
            // A call that started before the block: counted in the totals,
            // but the block is not extended (its end is known to whoever
            // was told).
            return;
        }
        let start = window_start(now, self.config.window);
        while entry
            .failures
            .front()
            .is_some_and(|&t| !in_window(t, start))
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        let threshold_len = usize::try_from(threshold).unwrap_or(usize::MAX);
        while entry.failures.len() > threshold_len {
            entry.failures.pop_front();
        }
        if entry.failures.len() < threshold_len {
            return;
        }
        let until = now + self.config.cooldown;
        entry.blocked_until = Some(until);
        entry.refused = 0;
        entry.failures.clear();
        self.blocks.insert((until, key.clone()));
        match key {
            Key::Source(_) => self.totals.source_blocks += 1,
            Key::CallerId(_) => self.totals.caller_id_blocks += 1,
        }
        self.events.push_back(GuardEvent::Blocked {
            key,
            until,
            failures: threshold,
            source,
            caller_id: caller.clone(),
        });
    }

    /// Makes room for one more key; false when the table is full of blocks.
    fn make_room(&mut self, now: Instant) -> bool {
        let max = self.config.max_entries;
        if self.entries.len() < max {
            return true;
        }
        let start = window_start(now, self.config.window);
        self.entries.retain(|_, e| {
            e.blocked_until.is_some() || e.failures.back().is_some_and(|&t| in_window(t, start))
        });
        if self.entries.len() < max {
            return true;
        }
        let mut unblocked: Vec<(Instant, Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.blocked_until.is_none())
            .map(|(k, e)| (e.last, k.clone()))
            .collect();
        if unblocked.is_empty() {
            return false;
        }
        let n = (max / 8).clamp(1, unblocked.len());
        unblocked.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
        for (_, key) in &unblocked[..n] {
            self.entries.remove(key);
        }
        self.totals.evicted += n as u64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn config() -> Config {
        Config {
            failures: 3,
            caller_id_failures: 5,
            window: 10 * MIN,
            cooldown: 15 * MIN,
            alarm: 0,
            max_entries: 1000,
        }
    }

    fn events(g: &mut Guard) -> Vec<GuardEvent> {
        std::iter::from_fn(|| g.poll_event()).collect()
    }

    #[test]
    fn a_source_is_blocked_at_the_threshold_and_others_are_not() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        let bad = ip("192.0.2.7");
        g.record_failure(t0, bad, None);
        g.record_failure(t0 + MIN, bad, None);
        assert_eq!(g.admit(t0 + MIN, bad, None), Admit::Yes);
        assert!(events(&mut g).is_empty());
        g.record_failure(t0 + 2 * MIN, bad, None);
        let until = t0 + 2 * MIN + 15 * MIN;
        assert_eq!(
            events(&mut g),
            vec![GuardEvent::Blocked {
                key: Key::Source(bad),
                until,
                failures: 3,
                source: bad,
                caller_id: None,
            }]
        );
        assert_eq!(
            g.admit(t0 + 3 * MIN, bad, Some("alice")),
            Admit::Blocked {
                key: Key::Source(bad),
                until
            }
        );
        // Another source is unaffected, with or without a caller ID.
        assert_eq!(g.admit(t0 + 3 * MIN, ip("192.0.2.8"), None), Admit::Yes);
        assert_eq!(
            g.admit(t0 + 3 * MIN, ip("192.0.2.8"), Some("bob")),
            Admit::Yes
        );
        assert_eq!(g.totals().source_blocks, 1);
    }

    #[test]
    fn only_the_first_refusal_of_a_block_is_an_event() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        let bad = ip("192.0.2.7");
        for i in 0..3 {
            g.record_failure(t0 + i * MIN, bad, Some("mallory"));
        }
        let _ = events(&mut g);
        for i in 0..5 {
            assert!(matches!(
                g.admit(t0 + 3 * MIN + i * MIN, bad, Some("mallory")),
                Admit::Blocked { .. }
            ));
        }
        let evs = events(&mut g);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert!(matches!(
            &evs[0],
            GuardEvent::Refused { key: Key::Source(s), source, caller_id: Some(c), .. }
                if *s == bad && *source == bad && c.as_str() == "mallory"
        ));
        let snapshot = g.snapshot(t0 + 9 * MIN);
        assert_eq!(snapshot.blocked.len(), 1);
        assert_eq!(snapshot.blocked[0].refused, 5);
        assert_eq!(snapshot.totals.refused, 5);
    }

    #[test]
    fn failures_that_slide_out_of_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        let src = ip("192.0.2.7");
        g.record_failure(t0, src, None);
        g.record_failure(t0 + 5 * MIN, src, None);
        // The first is 10 min old at t0 + 10 min: out of (now - 10 min, now].
        g.record_failure(t0 + 10 * MIN, src, None);
        assert_eq!(g.admit(t0 + 10 * MIN, src, None), Admit::Yes);
        assert!(events(&mut g).is_empty());
        let snapshot = g.snapshot(t0 + 10 * MIN);
        assert_eq!(snapshot.recent.len(), 1);
        assert_eq!(snapshot.recent[0].failures, 2);
        // One more within the window of the last two: blocked.
        g.record_failure(t0 + 11 * MIN, src, None);
        assert!(matches!(
            g.admit(t0 + 11 * MIN, src, None),
            Admit::Blocked { .. }
        ));
    }

    #[test]
    fn a_block_ends_after_the_cooldown_and_counting_starts_over() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        let src = ip("192.0.2.7");
        for _ in 0..3 {
            g.record_failure(t0, src, None);
        }
        let until = t0 + 15 * MIN;
        assert_eq!(g.poll_timeout(), Some(until));
        let _ = events(&mut g);
        g.handle_timeout(until - Duration::from_millis(1));
        assert!(matches!(
            g.admit(until - Duration::from_millis(1), src, None),
            Admit::Blocked { .. }
        ));
        g.handle_timeout(until);
        let evs = events(&mut g);
        assert!(evs.contains(&GuardEvent::Unblocked {
            key: Key::Source(src),
            refused: 1
        }));
        assert_eq!(g.poll_timeout(), None);
        assert_eq!(g.admit(until, src, None), Admit::Yes);
        // From zero: two failures do not block again.
        g.record_failure(until, src, None);
        g.record_failure(until, src, None);
        assert_eq!(g.admit(until, src, None), Admit::Yes);
        g.record_failure(until, src, None);
        assert!(matches!(g.admit(until, src, None), Admit::Blocked { .. }));
    }

    #[test]
    fn admit_itself_ends_an_expired_block() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        let src = ip("192.0.2.7");
        for _ in 0..3 {
            g.record_failure(t0, src, None);
        }
        // No timer ran: the next INVITE after the cool-down still gets in.
        assert_eq!(g.admit(t0 + 15 * MIN, src, None), Admit::Yes);
    }

    #[test]
    fn a_caller_id_is_blocked_across_sources() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        // Five sources, one failure each from the same caller ID: no
        // source reaches 3, the caller ID reaches 5.
        for i in 0..5u8 {
            g.record_failure(
                t0 + u32::from(i) * MIN,
                IpAddr::from([198, 51, 100, i]),
                Some("+1 (425) 555-0199"),
            );
        }
        let evs = events(&mut g);
        assert_eq!(evs.len(), 1, "{evs:?}");
        let key = Key::CallerId(CallerId::new("+14255550199").unwrap());
        assert!(matches!(&evs[0], GuardEvent::Blocked { key: k, failures: 5, .. } if *k == key));
        // A new source with that caller ID is refused; without it, admitted.
        let fresh = ip("203.0.113.1");
        assert!(matches!(
            g.admit(t0 + 5 * MIN, fresh, Some("+14255550199")),
            Admit::Blocked { key: k, .. } if k == key
        ));
        assert_eq!(
            g.admit(t0 + 5 * MIN, fresh, Some("+14255550100")),
            Admit::Yes
        );
        assert_eq!(g.admit(t0 + 5 * MIN, fresh, None), Admit::Yes);
        assert_eq!(g.totals().caller_id_blocks, 1);
        assert_eq!(g.totals().source_blocks, 0);
    }

    #[test]
    fn withheld_caller_ids_are_never_keys() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        for i in 0..20u8 {
            g.record_failure(t0, IpAddr::from([198, 51, 100, i]), Some("Anonymous"));
        }
        assert!(events(&mut g).is_empty());
        assert_eq!(
            g.admit(t0, ip("203.0.113.1"), Some("anonymous")),
            Admit::Yes
        );
        assert_eq!(CallerId::new("  "), None);
        assert_eq!(CallerId::new("Alice").unwrap().as_str(), "alice");
        assert_eq!(
            CallerId::new(&"9".repeat(200)).unwrap().as_str().len(),
            MAX_CALLER_ID
        );
    }

    #[test]
    fn a_zero_threshold_leaves_that_key_unkeyed() {
        let t0 = Instant::now();
        let mut g = Guard::new(Config {
            caller_id_failures: 0,
            ..config()
        });
        for i in 0..10u8 {
            g.record_failure(t0, IpAddr::from([198, 51, 100, i]), Some("mallory"));
        }
        assert!(events(&mut g).is_empty());
        assert_eq!(g.snapshot(t0).tracked, 10);
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        for i in 1..=3u16 {
            let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i);
            g.record_failure(t0, IpAddr::V6(a), None);
        }
        let neighbour = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 9));
        let other_net = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(matches!(
            g.admit(t0, neighbour, None),
            Admit::Blocked { key, .. } if key.to_string() == "2001:db8:0:1::/64"
        ));
        assert_eq!(g.admit(t0, other_net, None), Admit::Yes);
        assert_eq!(
            Key::source(ip("::ffff:192.0.2.1")),
            Key::Source(ip("192.0.2.1"))
        );
    }

    #[test]
    fn the_alarm_goes_on_at_the_threshold_and_off_below_half() {
        let t0 = Instant::now();
        let mut g = Guard::new(Config {
            alarm: 10,
            ..config()
        });
        // A distributed guess: one failure from each of ten sources, no
        // source or caller ID near its own threshold.
        for i in 0..9u8 {
            g.record_failure(t0, IpAddr::from([198, 51, 100, i]), None);
        }
        assert!(!g.alarm());
        assert!(events(&mut g).is_empty());
        g.record_failure(t0 + MIN, ip("198.51.100.99"), None);
        assert!(g.alarm());
        assert_eq!(events(&mut g), vec![GuardEvent::AlarmOn { failures: 10 }]);
        assert_eq!(g.snapshot(t0 + MIN).alarm_since, Some(t0 + MIN));
        // The nine leave the window when the bucket they are in does; the
        // guard asks to be woken for it.
        let wake = g.poll_timeout().expect("a wake-up while the alarm is on");
        assert!(
            wake > t0 + 10 * MIN && wake <= t0 + 10 * MIN + MIN,
            "{wake:?}"
        );
        g.handle_timeout(t0 + 5 * MIN);
        assert!(g.alarm(), "still 10 in the window");
        g.handle_timeout(wake);
        assert!(!g.alarm());
        assert_eq!(
            events(&mut g),
            vec![GuardEvent::AlarmOff {
                failures: 1,
                since: t0 + MIN
            }]
        );
        assert_eq!(g.totals().alarms, 1);
        assert_eq!(g.snapshot(wake).window_failures, 1);
    }

    #[test]
    fn the_alarm_does_not_flap_between_half_and_the_threshold() {
        let t0 = Instant::now();
        let mut g = Guard::new(Config {
            alarm: 4,
            failures: 0,
            caller_id_failures: 0,
            ..config()
        });
        for i in 0..4 {
            g.record_failure(t0 + i * MIN, ip("198.51.100.1"), None);
        }
        assert!(g.alarm());
        // At t0 + 10 min + a bucket the first has left: 3 >= 4/2, still on.
        g.handle_timeout(t0 + 10 * MIN + 10 * MIN / BUCKETS);
        assert!(g.alarm());
        // Two gone: 2 is not below half of 4. Three gone: 1 is.
        g.handle_timeout(t0 + 11 * MIN + 10 * MIN / BUCKETS);
        assert!(g.alarm());
        g.handle_timeout(t0 + 12 * MIN + 10 * MIN / BUCKETS);
        assert!(!g.alarm());
    }

    #[test]
    fn the_table_stays_within_its_cap_under_a_flood_and_keeps_blocks() {
        let t0 = Instant::now();
        let cap = 64;
        let mut g = Guard::new(Config {
            max_entries: cap,
            caller_id_failures: 0,
            ..config()
        });
        let blocked = ip("192.0.2.7");
        for _ in 0..3 {
            g.record_failure(t0, blocked, None);
        }
        // Ten thousand spoofed sources, one failure each, all in the window.
        for i in 0..10_000u32 {
            let source = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            g.record_failure(t0 + Duration::from_millis(u64::from(i)), source, None);
            assert!(g.snapshot(t0).tracked <= cap);
        }
        assert!(matches!(
            g.admit(t0 + MIN, blocked, None),
            Admit::Blocked { .. }
        ));
        let totals = g.totals();
        assert!(totals.evicted >= 10_000 - cap as u64, "{totals:?}");
        assert_eq!(totals.untracked, 0);
        // The most recent sources are the ones kept.
        let newest = IpAddr::from((0x0a00_0000u32 + 9_999).to_be_bytes());
        assert!(
            g.snapshot(t0 + MIN)
                .recent
                .iter()
                .any(|r| r.key == Key::Source(newest))
        );
    }

    #[test]
    fn a_table_full_of_blocks_tracks_no_new_key() {
        let t0 = Instant::now();
        let cap = Config::MIN_ENTRIES;
        let mut g = Guard::new(Config {
            max_entries: cap,
            failures: 1,
            caller_id_failures: 0,
            ..config()
        });
        for i in 0..cap as u32 {
            g.record_failure(t0, IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), None);
        }
        assert_eq!(g.snapshot(t0).blocked.len(), cap);
        g.record_failure(t0, ip("192.0.2.99"), None);
        assert_eq!(g.totals().untracked, 1);
        assert_eq!(g.snapshot(t0).blocked.len(), cap);
        // Once the blocks end, there is room again.
        g.record_failure(t0 + 15 * MIN, ip("192.0.2.99"), None);
        assert!(matches!(
            g.admit(t0 + 15 * MIN, ip("192.0.2.99"), None),
            Admit::Blocked { .. }
        ));
    }

    #[test]
    fn failures_during_a_block_do_not_extend_it() {
        let t0 = Instant::now();
        let mut g = Guard::new(config());
        let src = ip("192.0.2.7");
        for _ in 0..3 {
            g.record_failure(t0, src, None);
        }
        g.record_failure(t0 + 5 * MIN, src, None);
        g.record_failure(t0 + 6 * MIN, src, None);
        assert_eq!(g.snapshot(t0).blocked[0].until, t0 + 15 * MIN);
        assert_eq!(g.totals().failures, 5);
        assert_eq!(g.totals().source_blocks, 1);
    }

    #[test]
    fn config_validation_names_the_flag_and_the_range() {
        assert_eq!(Config::default().validate(), Ok(()));
        let e = Config {
            window: Duration::ZERO,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("--guard-window"), "{e}");
        let e = Config {
            failures: 5000,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--guard-failures is 5000: it must be between 0 and 1000"
        );
        let c = Config {
            max_entries: 0,
            window: Duration::ZERO,
            ..Config::default()
        }
        .clamped();
        assert_eq!(c.validate(), Ok(()));
    }
}
