//! DTMF: the digits, and the three ways they arrive (RFC 4733 events in RTP,
//! SIP INFO bodies, in-band tones in the G.711 audio).

use std::fmt;

pub mod inband;
pub mod info;
pub mod rfc4733;

/// A DTMF key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Digit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Pound,
    A,
    B,
    C,
    D,
}

impl Digit {
    /// In RFC 4733 event-code order.
    const TABLE: [(Digit, char); 16] = [
        (Digit::D0, '0'),
        (Digit::D1, '1'),
        (Digit::D2, '2'),
        (Digit::D3, '3'),
        (Digit::D4, '4'),
        (Digit::D5, '5'),
        (Digit::D6, '6'),
        (Digit::D7, '7'),
        (Digit::D8, '8'),
        (Digit::D9, '9'),
        (Digit::Star, '*'),
        (Digit::Pound, '#'),
        (Digit::A, 'A'),
        (Digit::B, 'B'),
        (Digit::C, 'C'),
        (Digit::D, 'D'),
    ];

    /// The key for a character (`0`-`9`, `*`, `#`, `A`-`D`, case-insensitive).
    pub fn from_char(c: char) -> Option<Digit> {
        let c = c.to_ascii_uppercase();
        Self::TABLE.iter().find(|(_, ch)| *ch == c).map(|(d, _)| *d)
    }

    pub fn as_char(self) -> char {
        Self::TABLE[self.event_code() as usize].1
    }

    /// RFC 4733 §3.2 event code: 0-9, `*` = 10, `#` = 11, A-D = 12-15.
    pub fn event_code(self) -> u8 {
        Self::TABLE
            .iter()
            .position(|(d, _)| *d == self)
            .expect("every digit is in the table") as u8
    }

    pub fn from_event_code(code: u8) -> Option<Digit> {
        Self::TABLE.get(code as usize).map(|(d, _)| *d)
    }

    /// A decimal digit's value; `None` for `*`, `#` and `A`-`D`.
    pub fn decimal(self) -> Option<u8> {
        let code = self.event_code();
        (code < 10).then_some(code)
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// How a digit reached the bridge (the call record says, per digit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    Rfc4733,
    Info,
    Inband,
}

impl DtmfMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfMethod::Rfc4733 => "rfc4733",
            DtmfMethod::Info => "info",
            DtmfMethod::Inband => "inband",
        }
    }
}

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How close in time the same key from two methods must be to count once.
pub const MERGE_WINDOW: Duration = Duration::from_millis(100);

/// A key press after merging the methods, with the one that delivered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergedDigit {
    pub digit: Digit,
    pub method: DtmfMethod,
    pub at: Instant,
}

#[derive(Debug)]
struct RecentDigit {
    digit: Digit,
    at: Instant,
    /// Methods that have reported this press (bit per method).
    methods: u8,
}

/// Merges digits from RFC 4733, SIP INFO and in-band detection into one
/// stream. A phone that sends a key press both in-band and as an RFC 4733
/// event (or by INFO as well) is heard once: the same key from a different
/// method within [`MERGE_WINDOW`] is the same press. The first method to
/// report it is kept, and the digit goes out at once (no waiting for the
/// others), so barge-in stays fast. Two reports by the same method are
/// always two presses: each detector already reports a press once. No IO,
/// no clock.
#[derive(Debug, Default)]
pub struct DtmfMerger {
    recent: VecDeque<RecentDigit>,
    out: VecDeque<MergedDigit>,
}

impl DtmfMerger {
    pub fn new() -> DtmfMerger {
        DtmfMerger::default()
    }

    /// A detector heard `digit` by `method` at `now` (when it was detected;
    /// pass the same kind of time for every method).
    pub fn handle_digit(&mut self, now: Instant, digit: Digit, method: DtmfMethod) {
        // Older than the window, or (if time went backwards) newer than
        // now by more than it: neither can match again.
        self.recent.retain(|r| {
            now.saturating_duration_since(r.at) <= MERGE_WINDOW
                && r.at.saturating_duration_since(now) <= MERGE_WINDOW
        });
        let bit = method_bit(method);
        if let Some(r) = self
            .recent
            .iter_mut()
            .find(|r| r.digit == digit && r.methods & bit == 0)
        {
            r.methods |= bit;
            return;
        }
        self.recent.push_back(RecentDigit {
            digit,
            at: now,
            methods: bit,
        });
        self.out.push_back(MergedDigit {
            digit,
            method,
            at: now,
        });
    }

    /// The next key press, in the order heard.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<MergedDigit> {
        self.out.pop_front()
    }
}

fn method_bit(method: DtmfMethod) -> u8 {
    match method {
        DtmfMethod::Rfc4733 => 1,
        DtmfMethod::Info => 2,
        DtmfMethod::Inband => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_round_trip_through_chars_and_event_codes() {
        for code in 0..16u8 {
            let d = Digit::from_event_code(code).unwrap();
            assert_eq!(d.event_code(), code);
            assert_eq!(Digit::from_char(d.as_char()), Some(d));
        }
        assert_eq!(Digit::from_char('#'), Some(Digit::Pound));
        assert_eq!(Digit::from_char('b'), Some(Digit::B));
        assert_eq!(Digit::from_event_code(16), None);
        assert_eq!(Digit::from_char('x'), None);
        assert_eq!(Digit::D7.decimal(), Some(7));
        assert_eq!(Digit::Star.decimal(), None);
    }

    fn merged(inputs: &[(u64, char, DtmfMethod)]) -> Vec<(char, DtmfMethod)> {
        let t0 = Instant::now();
        let mut m = DtmfMerger::new();
        let mut out = Vec::new();
        for &(ms, c, method) in inputs {
            m.handle_digit(
                t0 + Duration::from_millis(ms),
                Digit::from_char(c).unwrap(),
                method,
            );
            out.extend(
                std::iter::from_fn(|| m.poll_output()).map(|d| (d.digit.as_char(), d.method)),
            );
        }
        out
    }

    use DtmfMethod::{Inband, Info, Rfc4733};

    #[test]
    fn the_same_key_inband_and_as_an_event_counts_once_with_the_first_method() {
        assert_eq!(
            merged(&[(0, '5', Inband), (40, '5', Rfc4733)]),
            vec![('5', Inband)]
        );
        assert_eq!(
            merged(&[(0, '5', Rfc4733), (90, '5', Inband)]),
            vec![('5', Rfc4733)]
        );
    }

    #[test]
    fn the_same_key_further_apart_than_the_window_counts_twice() {
        assert_eq!(
            merged(&[(0, '5', Inband), (150, '5', Rfc4733)]),
            vec![('5', Inband), ('5', Rfc4733)]
        );
    }

    #[test]
    fn different_keys_are_never_merged() {
        assert_eq!(
            merged(&[(0, '1', Rfc4733), (10, '2', Inband)]),
            vec![('1', Rfc4733), ('2', Inband)]
        );
    }

    #[test]
    fn the_same_method_twice_is_two_presses() {
        assert_eq!(
            merged(&[(0, '4', Rfc4733), (60, '4', Rfc4733)]),
            vec![('4', Rfc4733), ('4', Rfc4733)]
        );
    }

    #[test]
    fn a_phone_sending_both_ways_gives_each_press_once_in_order() {
        // "44#" sent as events and in-band, in-band detected ~30 ms later.
        let got = merged(&[
            (0, '4', Rfc4733),
            (30, '4', Inband),
            (200, '4', Rfc4733),
            (230, '4', Inband),
            (400, '#', Rfc4733),
            (430, '#', Inband),
        ]);
        assert_eq!(got, vec![('4', Rfc4733), ('4', Rfc4733), ('#', Rfc4733)]);
    }

    #[test]
    fn each_press_absorbs_at_most_one_report_per_other_method() {
        // A press seen by events, in-band and INFO counts once; a second
        // in-band report inside the window is a second press.
        let got = merged(&[
            (0, '7', Rfc4733),
            (20, '7', Inband),
            (50, '7', Info),
            (80, '7', Inband),
        ]);
        assert_eq!(got, vec![('7', Rfc4733), ('7', Inband)]);
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_merge_far_presses() {
        let got = merged(&[(500, '1', Inband), (0, '1', Rfc4733), (10, '1', Inband)]);
        assert_eq!(got, vec![('1', Inband), ('1', Rfc4733)]);
    }
}
