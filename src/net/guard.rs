//! The guessing-protection core ([`crate::guard::Guard`]) shared by the SIP
//! router (which asks it about each new INVITE) and the call tasks (which
//! report each failed attempt as it happens). Its outputs become log lines
//! and events-file lines here.
//!
//! A std Mutex: each use is a hash lookup or two, never held across an
//! await, and events are logged after it is released.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::guard::{Admit, Config, Guard, GuardEvent, Snapshot};
use crate::records::{EventJson, EventLine};
use crate::sip::message::{Request, SipHeaders};
use crate::time::Timestamp;

use super::events::EventSink;

/// The guard of a running bridge.
#[derive(Debug)]
pub struct GuardHandle {
    guard: Mutex<Guard>,
    events: Option<EventSink>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall-clock time of `at`, by the distance from `now`.
pub fn wall(at: Instant, now: Instant) -> Timestamp {
    let wall_now = Timestamp::from(SystemTime::now());
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let offset = match at.checked_duration_since(now) {
        Some(after) => ms(after),
        None => -ms(now.duration_since(at)),
    };
    Timestamp::from_millis(wall_now.as_millis().saturating_add(offset))
}

/// The caller ID of an INVITE: the user part of its From URI (`sip:`,
/// `sips:` or `tel:`), before any `;` parameter or `:` password.
pub fn caller_id(request: &Request) -> Option<String> {
    let from = request.from()?;
    let (scheme, rest) = from.uri.split_once(':')?;
    let user = if scheme.eq_ignore_ascii_case("tel") {
        rest
    } else {
        rest.split_once('@')?.0
    };
    let user = user.split(';').next()?.split(':').next()?;
    Some(user.to_string())
}

impl GuardHandle {
    pub fn new(config: Config, events: Option<EventSink>) -> GuardHandle {
        GuardHandle {
            guard: Mutex::new(Guard::new(config)),
            events,
        }
    }

    fn with<T>(&self, call_id: &str, f: impl FnOnce(&mut Guard, Instant) -> T) -> T {
        let at = now();
        let (result, events, config) = {
            let mut guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut guard, at);
            let events: Vec<GuardEvent> = std::iter::from_fn(|| guard.poll_event()).collect();
            (result, events, *guard.config())
        };
        for event in events {
            self.report(event, call_id, at, &config);
        }
        result
    }

    /// Whether the INVITE from `source` may start a call.
    pub fn admit(&self, source: IpAddr, caller_id: Option<&str>, call_id: &str) -> Admit {
        self.with(call_id, |g, now| g.admit(now, source, caller_id))
    }

    /// One failed attempt (unknown, revoked, malformed) of call `call_id`.
    pub fn record_failure(&self, source: IpAddr, caller_id: Option<&str>, call_id: &str) {
        self.with(call_id, |g, now| g.record_failure(now, source, caller_id));
    }

    /// Ends blocks and updates the alarm; the router calls it at
    /// [`GuardHandle::next_deadline`].
    pub fn tick(&self) {
        self.with("", |g, now| g.handle_timeout(now));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll_timeout()
    }

    /// The state now, and the moment it was taken.
    pub fn snapshot(&self) -> (Snapshot, Instant) {
        let at = now();
        let guard = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        (guard.snapshot(at), at)
    }

    fn report(&self, event: GuardEvent, call_id: &str, at: Instant, config: &Config) {
        let json = match event {
            GuardEvent::Blocked {
                key,
                until,
                failures,
                source,
                caller_id,
            } => {
                tracing::warn!(
                    kind = key.kind(),
                    %key,
                    %source,
                    caller_id = caller_id.as_ref().map(|c| c.as_str()),
                    failures,
                    cooldown_s = config.cooldown.as_secs(),
                    "guard: too many failed conference ID attempts: blocked"
                );
                EventJson::GuardBlocked {
                    kind: key.kind(),
                    key: key.to_string(),
                    until: wall(until, at),
                    failures,
                    source: source.to_string(),
                    caller_id: caller_id.map(|c| c.to_string()),
                }
            }
            GuardEvent::Refused {
                key,
                until,
                source,
                caller_id,
            } => {
                tracing::warn!(
                    kind = key.kind(),
                    %key,
                    %source,
                    caller_id = caller_id.as_ref().map(|c| c.as_str()),
                    "guard: INVITE from a blocked key refused with 403 (further ones are only counted)"
                );
                EventJson::GuardRefused {
                    kind: key.kind(),
                    key: key.to_string(),
                    until: wall(until, at),
                    source: source.to_string(),
                    caller_id: caller_id.map(|c| c.to_string()),
                }
            }
            GuardEvent::Unblocked { key, refused } => {
                tracing::info!(kind = key.kind(), %key, refused, "guard: block ended");
                EventJson::GuardUnblocked {
                    kind: key.kind(),
                    key: key.to_string(),
                    refused,
                }
            }
            GuardEvent::AlarmOn { failures } => {
                tracing::warn!(
                    failures,
                    threshold = config.alarm,
                    window_s = config.window.as_secs(),
                    "guard: alarm: failed conference ID attempts across all sources crossed the threshold (a distributed guess?)"
                );
                EventJson::GuardAlarm {
                    on: true,
                    failures,
                    threshold: config.alarm,
                    window_s: config.window.as_secs(),
                }
            }
            GuardEvent::AlarmOff { failures, since } => {
                tracing::info!(
                    failures,
                    lasted_s = at.saturating_duration_since(since).as_secs(),
                    "guard: alarm cleared"
                );
                EventJson::GuardAlarm {
                    on: false,
                    failures,
                    threshold: config.alarm,
                    window_s: config.window.as_secs(),
                }
            }
        };
        if let Some(sink) = &self.events {
            sink.send(EventLine {
                at: Timestamp::from(SystemTime::now()),
                call_id: call_id.to_string(),
                event: json,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{self, Message, Method, RequestBuilder};

    fn invite_from(from: &str) -> Request {
        let bytes = RequestBuilder::new(Method::Invite, "sip:+14255550100@bridge")
            .via("UDP", "127.0.0.1:5062", "b")
            .from(from, "t")
            .to("sip:+14255550100@bridge", None)
            .call_id("c")
            .to_bytes();
        match message::parse(&bytes).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!("built a request"),
        }
    }

    #[test]
    fn the_caller_id_is_the_from_uris_user_part() {
        for (from, id) in [
            ("sip:alice@example.com", Some("alice")),
            (
                "sip:+14255550199@example.com;user=phone",
                Some("+14255550199"),
            ),
            ("sips:bob:secret@example.com:5061", Some("bob")),
            ("tel:+14255550199;ext=1", Some("+14255550199")),
            ("sip:example.com", None),
        ] {
            assert_eq!(caller_id(&invite_from(from)).as_deref(), id, "{from}");
        }
    }
}
