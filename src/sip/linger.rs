//! What a finished call still owes the network, without the call: the
//! responses its retransmitted requests must get until their transactions'
//! timers run out.
//!
//! RFC 3261 keeps a server transaction after its final response so that a
//! retransmitted request gets that response again (§17.2.2 Timer J, 64×T1 =
//! 32 s over UDP; §17.2.1 Timer I for the ACK of a non-2xx; RFC 6026 §7.1
//! the Accepted state of an INVITE answered 2xx). For a bridge taking
//! thousands of calls a second, a whole call (its task, core, timers) kept
//! alive 32 s for that is most of its memory and wake-ups. So once a call
//! has ended and nothing of it retransmits on its own, its transactions
//! hand their last responses here ([`ServerTransactions::absorbers`]) and
//! the call goes; one [`LingerTable`] per bridge answers retransmissions
//! and is swept at one deadline.
//!
//! What is not here: no IO and no clock (time is an argument), no parsing:
//! a request is described by [`RequestKeyParts`] as for the transactions.
//!
//! [`ServerTransactions::absorbers`]: super::transaction::ServerTransactions::absorbers

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::transaction::{Absorber, RequestKeyParts, TransactionKey};

/// What the table says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LingerMatch {
    /// A retransmission of one of the call's transactions: send these
    /// bytes back to where it came from (`None`: absorb it silently, as an
    /// ACK or an INVITE retransmission in Confirmed).
    Absorbed(Option<Arc<[u8]>>),
    /// The call lingers here, but this request is none of its transactions:
    /// a new request on an ended dialog.
    Unmatched,
}

#[derive(Debug)]
struct Lingering {
    absorbers: Vec<Absorber>,
    /// The latest `until` of the absorbers: the entry goes then.
    until: Instant,
}

/// The finished calls' transactions, by Call-ID, each until its timer ends.
#[derive(Debug, Default)]
pub struct LingerTable {
    calls: HashMap<String, Lingering>,
    /// Sweep order: (until, Call-ID). An entry replaced under the same
    /// Call-ID leaves a stale item, skipped when its `until` differs.
    expiry: BinaryHeap<Reverse<(Instant, String)>>,
}

impl LingerTable {
    pub fn new() -> LingerTable {
        LingerTable::default()
    }

    /// Calls lingering (some may be past their time until the next sweep).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Takes over a finished call's transactions. Nothing to absorb: nothing kept.
    pub fn insert(&mut self, call_id: &str, absorbers: Vec<Absorber>) {
        let Some(until) = absorbers.iter().map(Absorber::until).max() else {
            return;
        };
        self.expiry.push(Reverse((until, call_id.to_owned())));
        self.calls
            .insert(call_id.to_owned(), Lingering { absorbers, until });
    }

    /// A request whose Call-ID no live call has. `None` when no call
    /// lingers under its Call-ID (or its time is over): the request is
    /// handled as outside any call.
    pub fn handle_request(
        &self,
        now: Instant,
        request: &RequestKeyParts<'_>,
    ) -> Option<LingerMatch> {
        let call = self.calls.get(request.call_id.trim())?;
        if call.until <= now {
            return None;
        }
        let Ok(key) = TransactionKey::for_request(request) else {
            return Some(LingerMatch::Unmatched);
        };
        let is_ack = request.method.trim() == "ACK";
        let found = call
            .absorbers
            .iter()
            .find(|a| a.until() > now && *a.key() == key);
        Some(match found {
            // §17.2.1: the ACK of a non-2xx final is absorbed, never answered.
            Some(_) if is_ack => LingerMatch::Absorbed(None),
            Some(a) => LingerMatch::Absorbed(a.response().cloned()),
            None => LingerMatch::Unmatched,
        })
    }

    /// Forgets the calls whose time is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((until, _))) = self.expiry.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, call_id))) = self.expiry.pop() else {
                break;
            };
            if self.calls.get(&call_id).is_some_and(|c| c.until == until) {
                self.calls.remove(&call_id);
            }
        }
    }

    /// When the next call's time is over.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.peek().map(|Reverse((until, _))| *until)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sip::transaction::{Route, ServerTransactions, TimerConfig, Transport};

    fn parts<'a>(method: &'a str, branch: &'a str, call_id: &'a str) -> RequestKeyParts<'a> {
        RequestKeyParts {
            method,
            request_uri: "sip:dialin@bridge",
            via_branch: Some(branch),
            via_sent_by: "caller.example.com:5060",
            via: "SIP/2.0/UDP caller.example.com:5060",
            from_tag: Some("ft"),
            call_id,
            cseq: 1,
        }
    }

    /// A finished call's transactions: INVITE accepted at `t0`, BYE
    /// answered 200 at `t0 + 10 s`.
    fn finished_call(t0: Instant, call_id: &str) -> Vec<Absorber> {
        let mut t = ServerTransactions::new(TimerConfig::default());
        let Ok(Route::New(invite)) = t.handle_request(
            t0,
            &parts("INVITE", "z9hG4bKinv", call_id),
            Transport::Unreliable,
        ) else {
            panic!("new INVITE")
        };
        t.send_response(t0, &invite, 200, &b"SIP/2.0 200 OK (INVITE)"[..])
            .unwrap();
        let t1 = t0 + Duration::from_secs(10);
        let Ok(Route::New(bye)) = t.handle_request(
            t1,
            &parts("BYE", "z9hG4bKbye", call_id),
            Transport::Unreliable,
        ) else {
            panic!("new BYE")
        };
        t.send_response(t1, &bye, 200, &b"SIP/2.0 200 OK (BYE)"[..])
            .unwrap();
        while t.poll_transmit().is_some() {}
        t.absorbers().unwrap()
    }

    #[test]
    fn a_retransmitted_request_gets_the_same_final_response_until_its_timer_ends() {
        let t0 = Instant::now();
        let mut table = LingerTable::new();
        table.insert("c1", finished_call(t0, "c1"));
        assert_eq!(table.len(), 1);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let bye = parts("BYE", "z9hG4bKbye", "c1");
        assert_eq!(
            table.handle_request(at(11), &bye),
            Some(LingerMatch::Absorbed(Some(Arc::from(
                &b"SIP/2.0 200 OK (BYE)"[..]
            ))))
        );
        let invite = parts("INVITE", "z9hG4bKinv", "c1");
        assert_eq!(
            table.handle_request(at(11), &invite),
            Some(LingerMatch::Absorbed(Some(Arc::from(
                &b"SIP/2.0 200 OK (INVITE)"[..]
            ))))
        );
        // An ACK is never answered.
        assert_eq!(
            table.handle_request(at(11), &parts("ACK", "z9hG4bKinv", "c1")),
            Some(LingerMatch::Absorbed(None))
        );
        // A new request on the ended dialog: the caller of the table answers it.
        assert_eq!(
            table.handle_request(at(11), &parts("INFO", "z9hG4bKnew", "c1")),
            Some(LingerMatch::Unmatched)
        );
        // Another Call-ID: not here.
        assert_eq!(
            table.handle_request(at(11), &parts("BYE", "z9hG4bKbye", "c2")),
            None
        );
        // The INVITE's Accepted state ends at 64×T1 = 32 s; the BYE's Timer J at 42 s.
        assert_eq!(
            table.handle_request(at(33), &invite),
            Some(LingerMatch::Unmatched)
        );
        assert!(matches!(
            table.handle_request(at(41), &bye),
            Some(LingerMatch::Absorbed(Some(_)))
        ));
        assert_eq!(table.poll_timeout(), Some(at(42)));
        assert_eq!(
            table.handle_request(at(42), &bye),
            None,
            "over, even before the sweep"
        );
        table.handle_timeout(at(41));
        assert_eq!(table.len(), 1);
        table.handle_timeout(at(42));
        assert!(table.is_empty());
        assert_eq!(table.poll_timeout(), None);
    }

    #[test]
    fn the_sweep_forgets_calls_in_order_and_keeps_a_replaced_entry() {
        let t0 = Instant::now();
        let mut table = LingerTable::new();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            table.insert(id, finished_call(t0 + Duration::from_secs(i as u64), id));
        }
        // Nothing to absorb: nothing kept.
        table.insert("d", Vec::new());
        assert_eq!(table.len(), 3);
        table.handle_timeout(t0 + Duration::from_secs(43));
        assert_eq!(table.len(), 1, "a and b are over, c is not");
        // "c" again, later: the earlier expiry must not remove it.
        table.insert("c", finished_call(t0 + Duration::from_secs(20), "c"));
        table.handle_timeout(t0 + Duration::from_secs(45));
        assert_eq!(table.len(), 1);
        table.handle_timeout(t0 + Duration::from_secs(62));
        assert!(table.is_empty());
    }
}
