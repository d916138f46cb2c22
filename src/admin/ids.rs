//! Validated value types of the admin model: conference IDs, email
//! addresses, E.164 phone numbers and leader PINs. Each is parsed once at the
//! boundary (CLI, HTTP, CSV, store) and is valid from then on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The number of digits of a conference ID that Microsoft issues.
pub const MICROSOFT_ID_LEN: usize = 7;

/// A conference ID: a string of 1 to 18 decimal digits, leading zeros kept.
///
/// Stored as a number plus a length so that it is `Copy` and hashes fast: the
/// bridge looks one up for every completed entry.
///
/// ```
/// use dialin::admin::ids::ConferenceId;
///
/// let id: ConferenceId = "0012345".parse().unwrap();
/// assert_eq!(id.to_string(), "0012345");
/// assert_ne!(id, "12345".parse().unwrap());
/// assert!("12a4567".parse::<ConferenceId>().unwrap_err().contains("digits 0-9"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConferenceId {
    len: u8,
    value: u64,
}

impl ConferenceId {
    pub const MAX_LEN: usize = 18;

    /// An ID of `len` digits holding `value` (zero-padded on the left).
    ///
    /// Returns `None` when `value` does not fit in `len` digits.
    pub fn from_parts(value: u64, len: usize) -> Option<Self> {
        if len == 0 || len > Self::MAX_LEN || value >= 10u64.pow(len as u32) {
            return None;
        }
        Some(ConferenceId {
            len: len as u8,
            value,
        })
    }

    /// The number of digits.
    pub fn len(self) -> usize {
        self.len as usize
    }

    pub fn is_empty(self) -> bool {
        false
    }
}

impl FromStr for ConferenceId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a conference ID can't be empty: it is a string of digits".into());
        }
        if let Some(bad) = text.chars().find(|c| !c.is_ascii_digit()) {
            return Err(format!(
                "conference ID '{text}' has '{bad}' in it: use digits 0-9 only"
            ));
        }
        if text.len() > Self::MAX_LEN {
            return Err(format!(
                "conference ID '{text}' has {} digits: at most {} are allowed",
                text.len(),
                Self::MAX_LEN
            ));
        }
        let value = text.parse().expect("at most 18 ASCII digits fit in a u64");
        Ok(ConferenceId {
            len: text.len() as u8,
            value,
        })
    }
}

impl fmt::Display for ConferenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$}", self.value, width = self.len as usize)
    }
}

impl fmt::Debug for ConferenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConferenceId({self})")
    }
}

/// A user's email address, the user's identity; kept lower-case so that
/// `Alice@Contoso.com` and `alice@contoso.com` are one user.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EmailAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.parse::<lettre::Address>() {
            Ok(_) => Ok(EmailAddress(text.to_ascii_lowercase())),
            Err(e) => Err(format!(
                "'{text}' is not an email address ({e}): write it as name@domain, e.g. alice@contoso.com"
            )),
        }
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.0)
    }
}

/// A phone number in E.164 form, stored as `+` and up to 15 digits.
///
/// Accepts `+14255550100`, `14255550100` and `tel:+1-425-555-0100`; visual
/// separators (space, `-`, `.`, `(`, `)`) are dropped, as RFC 3966 allows.
///
/// ```
/// use dialin::admin::ids::PhoneNumber;
///
/// let n: PhoneNumber = "tel:+1-425-555-0100".parse().unwrap();
/// assert_eq!(n.as_str(), "+14255550100");
/// assert!("+0123".parse::<PhoneNumber>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the leading `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl FromStr for PhoneNumber {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let original = text;
        let mut rest = text.trim();
        if let Some(tel) = rest
            .strip_prefix("tel:")
            .or_else(|| rest.strip_prefix("TEL:"))
        {
            // RFC 3966: parameters follow a ';'; they do not belong to the number.
            rest = tel.split(';').next().unwrap_or_default();
        }
        let rest = rest.strip_prefix('+').unwrap_or(rest);
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                other => {
                    return Err(format!(
                        "phone number '{original}' has '{other}' in it: write it in E.164 form, e.g. +14255550100"
                    ));
                }
            }
        }
        if digits.is_empty() || digits.len() > 15 || digits.starts_with('0') {
            return Err(format!(
                "phone number '{original}' is not E.164: it needs 1 to 15 digits after '+', \
                 starting with a country code (not 0), e.g. +14255550100"
            ));
        }
        Ok(PhoneNumber(format!("+{digits}")))
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.0)
    }
}

/// A leader PIN. Its `Debug` and `Display` are masked so that it can't leak
/// into logs or listings by accident; [`Pin::reveal`] is the one way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    pub const MIN_LEN: u8 = 4;
    pub const MAX_LEN: u8 = 12;

    pub fn from_digits(digits: String) -> Result<Self, String> {
        let len = digits.len();
        if !(Self::MIN_LEN as usize..=Self::MAX_LEN as usize).contains(&len)
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "a leader PIN is {} to {} digits; got {len} characters",
                Self::MIN_LEN,
                Self::MAX_LEN
            ));
        }
        Ok(Pin(digits))
    }

    /// The PIN itself: only for the one result that shows a new PIN, the
    /// store, and the bridge's leader check.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What listings show instead of the PIN.
    pub fn masked(&self) -> String {
        "*".repeat(self.0.len())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({})", self.masked())
    }
}

macro_rules! string_serde {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
string_serde!(ConferenceId, EmailAddress, PhoneNumber);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conference_ids_keep_leading_zeros() {
        let id: ConferenceId = "0012345".parse().unwrap();
        assert_eq!(id.to_string(), "0012345");
        assert_eq!(id.len(), 7);
        assert_ne!(id, "12345".parse::<ConferenceId>().unwrap());
        assert_eq!(
            ConferenceId::from_parts(42, 7).unwrap().to_string(),
            "0000042"
        );
        assert!(ConferenceId::from_parts(10_000_000, 7).is_none());
    }

    #[test]
    fn conference_ids_reject_non_digits_and_say_why() {
        let err = "12a4567".parse::<ConferenceId>().unwrap_err();
        assert!(err.contains("'a'") && err.contains("digits"), "{err}");
        assert!("".parse::<ConferenceId>().is_err());
        assert!("1234567890123456789".parse::<ConferenceId>().is_err());
        assert!("-123".parse::<ConferenceId>().is_err());
    }

    #[test]
    fn phone_numbers_normalize_to_e164() {
        for form in [
            "+14255550100",
            "14255550100",
            "tel:+1-425-555-0100",
            "tel:+1.425.555.0100;ext=1",
            " +1 (425) 555-0100 ",
        ] {
            let n: PhoneNumber = form.parse().unwrap();
            assert_eq!(n.as_str(), "+14255550100", "{form}");
        }
    }

    #[test]
    fn phone_numbers_reject_what_is_not_e164() {
        for bad in ["", "+", "+0123", "+1234567890123456", "sip:alice", "+1425x"] {
            let err = bad.parse::<PhoneNumber>().unwrap_err();
            assert!(err.contains("E.164"), "{bad}: {err}");
        }
    }

    #[test]
    fn emails_are_case_insensitive_identities() {
        let a: EmailAddress = "Alice@Contoso.com".parse().unwrap();
        assert_eq!(a.as_str(), "alice@contoso.com");
        let err = "alice".parse::<EmailAddress>().unwrap_err();
        assert!(err.contains("name@domain"), "{err}");
    }

    #[test]
    fn pins_are_masked_everywhere_but_reveal() {
        let pin = Pin::from_digits("48213".into()).unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(*****)");
        assert_eq!(pin.masked(), "*****");
        assert_eq!(pin.reveal(), "48213");
        assert!(Pin::from_digits("123".into()).is_err());
        assert!(Pin::from_digits("12a45".into()).is_err());
    }
}
