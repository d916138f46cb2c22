//! The directory the bridge looks conference IDs up in: a concurrent map from
//! ID to what a call needs (tenant, organizer, meeting), or to the fact that
//! the ID was revoked, when and by which operation.
//!
//! Only [`crate::admin::Service`] writes it, after each commit and before the
//! admin call returns, so a lookup that starts after a reset returned never
//! finds the old ID valid. Readers never block each other for long: DashMap
//! shards its locks, and every value is `Copy`, so a lookup holds a shard's
//! read lock only for the copy.

use dashmap::DashMap;

use crate::admin::ids::ConferenceId;
use crate::admin::model::{MeetingId, OperationId, RevocationCause, TenantId, UserId};
use crate::time::Timestamp;

/// Where a valid ID leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub tenant: TenantId,
    pub organizer: UserId,
    /// The meeting for a dynamic ID; `None` for a static ID (the organizer's
    /// own meeting space, which every meeting with that ID shares).
    pub meeting: Option<MeetingId>,
    /// The organizer's leader PIN, for the leader check.
    pub leader_pin: PinDigits,
}

/// When and how an ID was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub at: Timestamp,
    pub operation: OperationId,
    pub cause: RevocationCause,
    pub organizer: UserId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Active(Target),
    Revoked(Revoked),
}

/// The answer to a lookup. The caller hears the same prompt for `Unknown`
/// and `Revoked`; the call record tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Valid(Target),
    Revoked(Revoked),
    Unknown,
}

/// A leader PIN held inline (no allocation, `Copy`) for the bridge's check.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PinDigits {
    len: u8,
    digits: [u8; 12],
}

impl PinDigits {
    pub const NONE: PinDigits = PinDigits {
        len: 0,
        digits: [0; 12],
    };

    pub fn new(pin: &str) -> Self {
        let mut digits = [0u8; 12];
        let len = pin.len().min(12);
        digits[..len].copy_from_slice(&pin.as_bytes()[..len]);
        PinDigits {
            len: len as u8,
            digits,
        }
    }

    /// Compares in constant time for PINs of the same length.
    pub fn matches(&self, entered: &str) -> bool {
        if self.len == 0 || entered.len() != self.len as usize {
            return false;
        }
        let diff = self.digits[..self.len as usize]
            .iter()
            .zip(entered.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

impl std::fmt::Debug for PinDigits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinDigits({})", "*".repeat(self.len as usize))
    }
}

/// Anything the attendant can look an ID up in: the directory, or a test's map.
pub trait IdLookup {
    fn lookup(&self, id: ConferenceId) -> Lookup;
}

impl IdLookup for Directory {
    fn lookup(&self, id: ConferenceId) -> Lookup {
        Directory::lookup(self, id)
    }
}

/// A change the admin service applies after a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Activate(ConferenceId, Target),
    Revoke(ConferenceId, Revoked),
}

/// Shards of the map. Every lookup takes its shard's read lock, which
/// writes the lock's cache line; with many shards two threads rarely touch
/// the same one. DashMap's default (4 per CPU) leaves 8 on a 2-CPU machine.
const SHARDS: usize = 256;

#[derive(Debug)]
pub struct Directory {
    map: DashMap<ConferenceId, Entry>,
}

impl Default for Directory {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Directory {
            map: DashMap::with_capacity_and_shard_amount(capacity, SHARDS),
        }
    }

    pub fn lookup(&self, id: ConferenceId) -> Lookup {
        match self.map.get(&id).map(|e| *e) {
            Some(Entry::Active(target)) => Lookup::Valid(target),
            Some(Entry::Revoked(revoked)) => Lookup::Revoked(revoked),
            None => Lookup::Unknown,
        }
    }

    /// Applies one commit's changes in the order given. The service lists
    /// revocations first, so an old ID is revoked before its replacement works.
    pub fn apply(&self, changes: &[Change]) {
        for change in changes {
            match *change {
                Change::Activate(id, target) => {
                    self.map.insert(id, Entry::Active(target));
                }
                Change::Revoke(id, revoked) => {
                    self.map.insert(id, Entry::Revoked(revoked));
                }
            }
        }
    }

    /// Loads one entry while rebuilding from the store.
    pub fn load(&self, id: ConferenceId, entry: Entry) {
        self.map.insert(id, entry);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry, sorted by ID: for comparing the directory with the store.
    pub fn snapshot(&self) -> Vec<(ConferenceId, Entry)> {
        let mut all: Vec<_> = self.map.iter().map(|e| (*e.key(), *e.value())).collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ConferenceId {
        s.parse().unwrap()
    }

    fn target(organizer: UserId) -> Target {
        Target {
            tenant: 1,
            organizer,
            meeting: None,
            leader_pin: PinDigits::new("12345"),
        }
    }

    #[test]
    fn lookup_tells_valid_revoked_and_unknown_apart() {
        let dir = Directory::new();
        let revoked = Revoked {
            at: Timestamp::from_millis(5),
            operation: 9,
            cause: RevocationCause::ResetId,
            organizer: 1,
        };
        dir.apply(&[
            Change::Activate(id("1234567"), target(1)),
            Change::Activate(id("7654321"), target(1)),
            Change::Revoke(id("7654321"), revoked),
        ]);
        assert_eq!(dir.lookup(id("1234567")), Lookup::Valid(target(1)));
        assert_eq!(dir.lookup(id("7654321")), Lookup::Revoked(revoked));
        assert_eq!(dir.lookup(id("0000000")), Lookup::Unknown);
        assert_eq!(dir.len(), 2);
    }

    #[test]
    fn pin_check_needs_the_exact_digits() {
        let pin = PinDigits::new("48213");
        assert!(pin.matches("48213"));
        assert!(!pin.matches("48214"));
        assert!(!pin.matches("4821"));
        assert!(!PinDigits::NONE.matches(""));
        assert_eq!(format!("{pin:?}"), "PinDigits(*****)");
    }
}
