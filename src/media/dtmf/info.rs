//! DTMF in SIP INFO bodies: `application/dtmf-relay` and `application/dtmf`.
//!
//! `application/dtmf-relay` is the de-facto format (Cisco, Asterisk, SIPp):
//! `Signal=5\r\nDuration=160\r\n`, keys case-insensitive, spaces allowed,
//! `Signal` one of `0`-`9 * # A-D`, or `10`/`11` for `*`/`#` as some senders
//! write event codes. `Duration` is in milliseconds. `application/dtmf`
//! carries the key alone (`5`, `#`).
//!
//! Not here: the INFO transaction itself (the dialog layer answers 200, or
//! the code [`InfoError::status_code`] names), and RFC 6086 Info-Package
//! negotiation, which dial-in phones do not use.

use std::time::Duration;

use super::Digit;

/// A key press carried in an INFO body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigitEvent {
    pub digit: Digit,
    /// How long the key was held, when the body says.
    pub duration: Option<Duration>,
}

/// Why an INFO body is not a key press, and the response that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    #[error(
        "content type {0:?} does not carry DTMF: use application/dtmf-relay or application/dtmf"
    )]
    UnsupportedContentType(String),
    #[error("dtmf body is not utf-8 text")]
    NotText,
    #[error("dtmf-relay body has no Signal= line")]
    MissingSignal,
    #[error("dtmf signal {0:?} is not a key: use 0-9, *, #, A-D, or 10/11 for * and #")]
    BadSignal(String),
    #[error("dtmf-relay duration {0:?} is not a whole number of milliseconds")]
    BadDuration(String),
}

impl InfoError {
    /// The SIP response to the INFO (RFC 3261 §21.4): 415 for a body type
    /// we do not take, 400 for a body we cannot read.
    pub fn status_code(&self) -> u16 {
        match self {
            InfoError::UnsupportedContentType(_) => 415,
            _ => 400,
        }
    }
}

/// Reads the key press from an INFO request's `Content-Type` and body.
/// Media type parameters (`; charset=...`) and letter case are ignored.
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<DigitEvent, InfoError> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let parse: fn(&str) -> Result<DigitEvent, InfoError> = match media_type.as_str() {
        "application/dtmf-relay" => parse_relay,
        "application/dtmf" => parse_plain,
        _ => return Err(InfoError::UnsupportedContentType(content_type.to_string())),
    };
    let text = std::str::from_utf8(body).map_err(|_| InfoError::NotText)?;
    parse(text)
}

fn parse_relay(text: &str) -> Result<DigitEvent, InfoError> {
    let mut digit = None;
    let mut duration = None;
    for line in text.lines() {
        // Lines without `=` (blank lines, junk) are skipped, as are keys
        // other than Signal and Duration: senders add their own.
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "signal" => digit = Some(parse_signal(value)?),
            "duration" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| InfoError::BadDuration(value.to_string()))?;
                duration = Some(Duration::from_millis(ms));
            }
            _ => {}
        }
    }
    let digit = digit.ok_or(InfoError::MissingSignal)?;
    Ok(DigitEvent { digit, duration })
}

fn parse_plain(text: &str) -> Result<DigitEvent, InfoError> {
    Ok(DigitEvent {
        digit: parse_signal(text.trim())?,
        duration: None,
    })
}

/// One key: a character, or the RFC 4733 event code 10 (`*`) or 11 (`#`).
fn parse_signal(value: &str) -> Result<Digit, InfoError> {
    let bad = || InfoError::BadSignal(value.to_string());
    let mut chars = value.chars();
    match (chars.next(), chars.next(), chars.next()) {
        (Some(c), None, _) => Digit::from_char(c).ok_or_else(bad),
        (Some('1'), Some('0'), None) => Ok(Digit::Star),
        (Some('1'), Some('1'), None) => Ok(Digit::Pound),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(body: &str) -> Result<DigitEvent, InfoError> {
        parse_info("application/dtmf-relay", body.as_bytes())
    }

    #[test]
    fn dtmf_relay_gives_signal_and_duration() {
        assert_eq!(
            relay("Signal=5\r\nDuration=160\r\n"),
            Ok(DigitEvent {
                digit: Digit::D5,
                duration: Some(Duration::from_millis(160))
            })
        );
    }

    #[test]
    fn dtmf_relay_keys_are_case_insensitive_and_spaces_allowed() {
        let got = relay("  SIGNAL = #  \nduration= 250\n").unwrap();
        assert_eq!(got.digit, Digit::Pound);
        assert_eq!(got.duration, Some(Duration::from_millis(250)));
        assert_eq!(relay("signal=b").unwrap().digit, Digit::B);
    }

    #[test]
    fn dtmf_relay_without_duration_has_none() {
        assert_eq!(
            relay("Signal=*"),
            Ok(DigitEvent {
                digit: Digit::Star,
                duration: None
            })
        );
    }

    #[test]
    fn event_codes_10_and_11_are_star_and_pound() {
        assert_eq!(relay("Signal=10").unwrap().digit, Digit::Star);
        assert_eq!(relay("Signal=11").unwrap().digit, Digit::Pound);
        assert_eq!(relay("Signal=12"), Err(InfoError::BadSignal("12".into())));
    }

    #[test]
    fn every_key_is_read() {
        for c in "0123456789*#ABCDabcd".chars() {
            let body = format!("Signal={c}\r\nDuration=100");
            assert_eq!(relay(&body).unwrap().digit, Digit::from_char(c).unwrap());
        }
    }

    #[test]
    fn unknown_lines_are_skipped() {
        let got = relay("Foo=bar\r\n\r\nnonsense\r\nSignal=7\r\n").unwrap();
        assert_eq!(got.digit, Digit::D7);
    }

    #[test]
    fn application_dtmf_carries_the_key_alone() {
        assert_eq!(
            parse_info("application/dtmf", b"5"),
            Ok(DigitEvent {
                digit: Digit::D5,
                duration: None
            })
        );
        assert_eq!(
            parse_info("Application/DTMF; charset=utf-8", b" #\r\n")
                .unwrap()
                .digit,
            Digit::Pound
        );
    }

    #[test]
    fn bad_bodies_are_400() {
        let cases = [
            (
                "application/dtmf-relay",
                &b"Duration=160"[..],
                InfoError::MissingSignal,
            ),
            (
                "application/dtmf-relay",
                b"Signal=x",
                InfoError::BadSignal("x".into()),
            ),
            (
                "application/dtmf-relay",
                b"Signal=55",
                InfoError::BadSignal("55".into()),
            ),
            (
                "application/dtmf-relay",
                b"Signal=",
                InfoError::BadSignal("".into()),
            ),
            (
                "application/dtmf-relay",
                b"Signal=1\nDuration=-3",
                InfoError::BadDuration("-3".into()),
            ),
            ("application/dtmf-relay", b"Signal=\xff", InfoError::NotText),
            ("application/dtmf", b"", InfoError::BadSignal("".into())),
            ("application/dtmf", b"12", InfoError::BadSignal("12".into())),
        ];
        for (ct, body, want) in cases {
            let err = parse_info(ct, body).unwrap_err();
            assert_eq!(err, want, "{ct} {body:?}");
            assert_eq!(err.status_code(), 400);
        }
    }

    #[test]
    fn unknown_content_type_is_415() {
        for ct in [
            "application/sdp",
            "text/plain",
            "",
            "application/dtmf-relayx",
        ] {
            let err = parse_info(ct, b"Signal=5").unwrap_err();
            assert_eq!(err, InfoError::UnsupportedContentType(ct.to_string()));
            assert_eq!(err.status_code(), 415);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x9e37_79b9u32;
        for len in 0..200 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    b"Signal=Duration\r\n=0123456789#*\xc3\xa9 "[(x % 33) as usize]
                })
                .collect();
            for ct in ["application/dtmf-relay", "application/dtmf"] {
                if let Err(e) = parse_info(ct, &body) {
                    assert_eq!(e.status_code(), 400);
                }
            }
        }
    }
}
