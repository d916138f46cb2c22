//! Per-source admission: how many TCP connections, or calls, each source
//! address holds, against a limit. No IO: the transport asks before it
//! takes a connection or starts a call, and gives the slot back when the
//! connection closes or the call's task ends.
//!
//! A source is an IPv4 address, or an IPv6 /64 network (one host on IPv6
//! usually holds a whole /64 and could step through it), the way the
//! guessing guard keys sources. A limit of 0 admits everything and counts
//! nothing.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};

/// Whether a source may take one more slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Admit {
    Yes,
    /// Refused. `first` is true for the first refusal since the source was
    /// last below its limit: the transport logs that one, not the flood.
    No {
        first: bool,
    },
}

/// Slots held per source, against one limit.
#[derive(Debug, Default)]
pub struct PerSource {
    limit: usize,
    held: HashMap<IpAddr, usize>,
    /// Sources refused since they were last below the limit: at most one
    /// per source at its limit, so bounded by the slots held.
    refused: HashSet<IpAddr>,
}

/// The key of a source address: IPv4 (an IPv4-mapped IPv6 address too),
/// or an IPv6 /64 network.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl PerSource {
    /// `limit` slots per source; 0: no limit.
    pub fn new(limit: usize) -> PerSource {
        PerSource {
            limit,
            ..PerSource::default()
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a slot for `ip` if it holds fewer than the limit.
    pub fn acquire(&mut self, ip: IpAddr) -> Admit {
        if self.limit == 0 {
            return Admit::Yes;
        }
        let key = source_key(ip);
        let held = self.held.entry(key).or_insert(0);
        if *held >= self.limit {
            return Admit::No {
                first: self.refused.insert(key),
            };
        }
        *held += 1;
        Admit::Yes
    }

    /// Gives back a slot `acquire` granted `ip`.
    pub fn release(&mut self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let key = source_key(ip);
        if let Some(held) = self.held.get_mut(&key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(&key);
            }
            self.refused.remove(&key);
        }
    }

    /// Slots `ip`'s source holds now.
    pub fn held(&self, ip: IpAddr) -> usize {
        self.held.get(&source_key(ip)).copied().unwrap_or(0)
    }

    /// Sources holding at least one slot.
    pub fn sources(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_limit_and_no_more_until_a_slot_comes_back() {
        let mut p = PerSource::new(2);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        assert_eq!(p.acquire(a), Admit::Yes);
        assert_eq!(p.acquire(a), Admit::Yes);
        assert_eq!(p.acquire(a), Admit::No { first: true });
        assert_eq!(p.acquire(a), Admit::No { first: false });
        // Another source is not affected.
        assert_eq!(p.acquire(b), Admit::Yes);
        assert_eq!((p.held(a), p.held(b), p.sources()), (2, 1, 2));
        p.release(a);
        assert_eq!(p.acquire(a), Admit::Yes);
        // A new episode at the limit is logged again.
        assert_eq!(p.acquire(a), Admit::No { first: true });
        for _ in 0..5 {
            p.release(a);
            p.release(b);
        }
        assert_eq!(p.sources(), 0, "no entry is left for sources with no slot");
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let mut p = PerSource::new(1);
        assert_eq!(p.acquire(ip("2001:db8:0:1::1")), Admit::Yes);
        assert_eq!(
            p.acquire(ip("2001:db8:0:1::ffff")),
            Admit::No { first: true }
        );
        assert_eq!(p.acquire(ip("2001:db8:0:2::1")), Admit::Yes);
        assert_eq!(p.acquire(ip("192.0.2.9")), Admit::Yes);
        assert_eq!(p.acquire(ip("::ffff:192.0.2.9")), Admit::No { first: true });
    }

    #[test]
    fn zero_is_no_limit_and_counts_nothing() {
        let mut p = PerSource::new(0);
        for _ in 0..1000 {
            assert_eq!(p.acquire(ip("127.0.0.1")), Admit::Yes);
        }
        p.release(ip("127.0.0.1"));
        assert_eq!(p.sources(), 0);
    }
}
