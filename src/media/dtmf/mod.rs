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
}
