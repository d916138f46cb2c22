//! RFC 4733 telephone-events: one key press per event, however real senders send it.
//!
//! [`EventPayload`] parses and writes the 4-byte event payload (RFC 4733 §2.3).
//! [`EventDetector`] turns a stream of event packets from any number of SSRCs
//! into key presses, reporting each press once, at its first packet, so the
//! attendant can stop a prompt at once (barge-in). [`EventSender`] produces
//! the packets a caller sends for one key press; the caller paces them.
//!
//! What real senders do, and so what the detector tolerates:
//! - several SSRCs on one address: state is kept per SSRC;
//! - sequence numbers that go backwards or jump (SIPp's `dtmf_2833_*.pcap`
//!   files jump back by thousands between digits, and repeat the end packet's
//!   sequence number): the sequence number is never used to drop a packet;
//! - a missing marker bit: the event is keyed on SSRC, RTP timestamp and
//!   event code, never on the marker;
//! - a byte-identical replay of an event (SIPp presses "44" by playing the
//!   same file twice): counted again when the earlier one ended more than
//!   [`REPLAY_GAP`] before;
//! - events on a payload type other than the negotiated one (SIPp's
//!   `play_dtmf` uses 96): accepted when configured.
//!
//! Not here: RTP header parsing (the `rtp` module), RFC 2198 redundancy (a
//! payload with more than one event is read for its first event only), and
//! non-DTMF events (flash, tones: codes 16 and up are ignored).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Digit;

/// The RTP clock rate of telephone-events negotiated beside G.711
/// (RFC 4733 §2.1: the rate of the audio it goes with).
pub const CLOCK_RATE: u32 = 8000;

/// An event that ended more than this long before an identical packet
/// arrives is a new key press: a sender replaying a capture reuses the
/// timestamp, a retransmitted end packet comes within a few tens of ms.
pub const REPLAY_GAP: Duration = Duration::from_millis(300);

/// How long an event's state is kept after its last packet. Longer than
/// [`REPLAY_GAP`], so that late end packets are still recognised.
pub const EVENT_TTL: Duration = Duration::from_secs(2);

/// An SSRC with no event packet for this long is forgotten.
pub const STREAM_TTL: Duration = Duration::from_secs(10);

/// At most this many SSRCs are tracked; the one heard least recently goes.
pub const MAX_STREAMS: usize = 16;

/// At most this many recent events are tracked per SSRC.
const MAX_EVENTS_PER_STREAM: usize = 8;

/// Errors reading a telephone-event payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("telephone-event payload is {len} bytes, need at least 4 (RFC 4733 §2.3)")]
    TooShort { len: usize },
}

/// The telephone-event payload (RFC 4733 §2.3):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// |     event     |E|R| volume    |          duration             |
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code (RFC 4733 §3.2: 0-9, `*` = 10, `#` = 11, A-D = 12-15).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0, 0..=63 (only the low 6 bits are written).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl EventPayload {
    pub const LEN: usize = 4;

    /// Reads the first event of a payload. Extra bytes (more events) are
    /// ignored; the R bit is ignored as §2.3 says receivers must.
    pub fn parse(bytes: &[u8]) -> Result<EventPayload, EventError> {
        let [event, flags, d0, d1, ..] = *bytes else {
            return Err(EventError::TooShort { len: bytes.len() });
        };
        Ok(EventPayload {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4 bytes on the wire; R is sent as 0 (§2.3).
    pub fn to_bytes(self) -> [u8; 4] {
        let flags = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3f);
        let [d0, d1] = self.duration.to_be_bytes();
        [self.event, flags, d0, d1]
    }

    /// The DTMF key, for event codes 0-15.
    pub fn digit(self) -> Option<Digit> {
        Digit::from_event_code(self.event)
    }
}

/// The RTP fields of one received packet that the detector needs.
#[derive(Clone, Copy, Debug)]
pub struct EventRtpPacket<'a> {
    pub ssrc: u32,
    pub payload_type: u8,
    /// Not used to order or drop packets (see the module doc); kept so the
    /// caller can hand over the whole header.
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

/// A key press read from telephone-events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectedDigit {
    pub digit: Digit,
    pub ssrc: u32,
    /// The event's RTP timestamp (its start, RFC 4733 §2.5.1.1).
    pub rtp_timestamp: u32,
    /// When the first packet of the press arrived.
    pub at: Instant,
}

#[derive(Debug)]
struct EventState {
    timestamp: u32,
    event: u8,
    last_seen: Instant,
    ended: bool,
    max_duration: u16,
}

#[derive(Debug)]
struct StreamState {
    last_seen: Instant,
    events: Vec<EventState>,
}

/// Turns telephone-event packets into key presses. No IO, no clock.
#[derive(Debug)]
pub struct EventDetector {
    /// Bit `n` set: payload type `n` carries events.
    payload_types: u128,
    streams: HashMap<u32, StreamState>,
}

impl EventDetector {
    /// A detector accepting events on the given payload types (the
    /// negotiated one, plus extras such as 96 for SIPp's `play_dtmf`).
    /// Values above 127 are not RTP payload types and are ignored.
    pub fn new(payload_types: impl IntoIterator<Item = u8>) -> EventDetector {
        let mut detector = EventDetector {
            payload_types: 0,
            streams: HashMap::new(),
        };
        for pt in payload_types {
            detector.accept_payload_type(pt);
        }
        detector
    }

    /// Also accept events on `payload_type`.
    pub fn accept_payload_type(&mut self, payload_type: u8) {
        if payload_type < 128 {
            self.payload_types |= 1 << payload_type;
        }
    }

    pub fn accepts(&self, payload_type: u8) -> bool {
        payload_type < 128 && self.payload_types & (1 << payload_type) != 0
    }

    /// Feeds one RTP packet; returns the key press if this packet starts one.
    /// Packets on other payload types, too short, or with non-DTMF events
    /// return `None`.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &EventRtpPacket<'_>,
    ) -> Option<DetectedDigit> {
        if !self.accepts(packet.payload_type) {
            return None;
        }
        let payload = EventPayload::parse(packet.payload).ok()?;
        let digit = payload.digit()?;
        self.expire(now);
        if !self.streams.contains_key(&packet.ssrc) && self.streams.len() >= MAX_STREAMS {
            self.evict_oldest_stream();
        }
        let stream = self
            .streams
            .entry(packet.ssrc)
            .or_insert_with(|| StreamState {
                last_seen: now,
                events: Vec::new(),
            });
        stream.last_seen = now;

        // RFC 4733 §2.5.1: all packets of one event share its timestamp, so
        // (timestamp, code) names the event; marker and sequence do not.
        let known = stream
            .events
            .iter_mut()
            .find(|e| e.timestamp == packet.timestamp && e.event == payload.event);
        let new_press = match known {
            Some(state) => {
                let quiet = now.saturating_duration_since(state.last_seen);
                // A replay: the earlier event ended (or its duration starts
                // over) and nothing was heard of it for a while.
                let replay =
                    quiet > REPLAY_GAP && (state.ended || payload.duration < state.max_duration);
                if replay {
                    state.ended = payload.end;
                    state.max_duration = payload.duration;
                } else {
                    state.ended |= payload.end;
                    state.max_duration = state.max_duration.max(payload.duration);
                }
                state.last_seen = now;
                replay
            }
            None => {
                if stream.events.len() >= MAX_EVENTS_PER_STREAM
                    && let Some(oldest) = stream
                        .events
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.last_seen)
                        .map(|(i, _)| i)
                {
                    stream.events.swap_remove(oldest);
                }
                // Even an end packet alone is a press: its start was lost.
                stream.events.push(EventState {
                    timestamp: packet.timestamp,
                    event: payload.event,
                    last_seen: now,
                    ended: payload.end,
                    max_duration: payload.duration,
                });
                true
            }
        };
        new_press.then_some(DetectedDigit {
            digit,
            ssrc: packet.ssrc,
            rtp_timestamp: packet.timestamp,
            at: now,
        })
    }

    /// Forgets events and streams that have been quiet long enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has state to forget.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams
            .values()
            .flat_map(|s| {
                s.events
                    .iter()
                    .map(|e| e.last_seen + EVENT_TTL)
                    .chain(std::iter::once(s.last_seen + STREAM_TTL))
            })
            .min()
    }

    /// How many SSRCs have state (for tests and metrics).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    fn expire(&mut self, now: Instant) {
        self.streams.retain(|_, s| {
            s.events
                .retain(|e| now.saturating_duration_since(e.last_seen) < EVENT_TTL);
            now.saturating_duration_since(s.last_seen) < STREAM_TTL
        });
    }

    fn evict_oldest_stream(&mut self) {
        if let Some(ssrc) = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(ssrc, _)| *ssrc)
        {
            self.streams.remove(&ssrc);
        }
    }
}

/// One packet of an outgoing event: send `payload` at `offset` after the
/// press starts, with this marker and RTP timestamp, on the event payload
/// type. Sequence numbers come from the caller's RTP stream (one each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutgoingEvent {
    pub offset: Duration,
    pub marker: bool,
    pub timestamp: u32,
    pub payload: EventPayload,
}

/// Produces the packets for one key press (RFC 4733 §2.5.1). Pure: the
/// caller paces them by `offset`.
#[derive(Clone, Copy, Debug)]
pub struct EventSender {
    interval: Duration,
    volume: u8,
    end_repeats: usize,
}

impl Default for EventSender {
    fn default() -> Self {
        EventSender::new()
    }
}

impl EventSender {
    /// 20 ms between packets (one G.711 packet time), volume -10 dBm0, the
    /// end packet sent 3 times (§2.5.1.4).
    pub fn new() -> EventSender {
        EventSender {
            interval: Duration::from_millis(20),
            volume: 10,
            end_repeats: 3,
        }
    }

    /// Power level in -dBm0 (0..=63; larger values are clamped).
    pub fn with_volume(mut self, volume: u8) -> EventSender {
        self.volume = volume.min(63);
        self
    }

    /// The packets for `digit` held for `duration`, starting at RTP
    /// timestamp `timestamp`: a start packet with the marker (§2.5.1.1),
    /// updates every interval with the duration so far (§2.5.1.2), then the
    /// end packet three times, same timestamp, final duration (§2.5.1.4).
    /// A press shorter than one interval lasts one interval; one longer than
    /// the 16-bit duration field (8.19 s) is cut there instead of being
    /// split into segments (§2.5.1.3), which no key press needs.
    pub fn packets(&self, digit: Digit, timestamp: u32, duration: Duration) -> Vec<OutgoingEvent> {
        let interval_units = duration_units(self.interval).max(1);
        let total = duration_units(duration).clamp(interval_units, u64::from(u16::MAX));
        let updates = total.div_ceil(interval_units);
        let payload = |end: bool, units: u64| EventPayload {
            event: digit.event_code(),
            end,
            volume: self.volume,
            duration: u16::try_from(units).unwrap_or(u16::MAX),
        };
        let mut out = Vec::new();
        for k in 0..updates {
            out.push(OutgoingEvent {
                offset: self.interval * k as u32,
                marker: k == 0,
                timestamp,
                payload: payload(false, k * interval_units),
            });
        }
        for r in 0..self.end_repeats as u64 {
            out.push(OutgoingEvent {
                offset: self.interval * (updates + r) as u32,
                marker: false,
                timestamp,
                payload: payload(true, total),
            });
        }
        out
    }
}

/// A duration in RTP timestamp units at [`CLOCK_RATE`].
fn duration_units(d: Duration) -> u64 {
    (d.as_micros() * u128::from(CLOCK_RATE) / 1_000_000)
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// One RTP packet read from a capture.
    #[derive(Clone, Debug)]
    struct Captured {
        /// Capture time since the file's first packet.
        offset: Duration,
        ssrc: u32,
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: Vec<u8>,
    }

    impl Captured {
        fn rtp(&self) -> EventRtpPacket<'_> {
            EventRtpPacket {
                ssrc: self.ssrc,
                payload_type: self.payload_type,
                sequence: self.sequence,
                timestamp: self.timestamp,
                marker: self.marker,
                payload: &self.payload,
            }
        }
    }

    /// A tiny pcap reader: little-endian classic pcap, Ethernet, IPv4 + UDP.
    fn read_pcap(name: &str) -> Vec<Captured> {
        let path = format!("{}/tests/data/dtmf/{name}", env!("CARGO_MANIFEST_DIR"));
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let u32le = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().unwrap());
        let be16 = |b: &[u8]| u16::from_be_bytes(b[..2].try_into().unwrap());
        let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap());
        assert_eq!(u32le(&data), 0xa1b2_c3d4, "microsecond little-endian pcap");
        assert_eq!(u32le(&data[20..]), 1, "Ethernet link type");
        let mut out = Vec::new();
        let mut first = None;
        let mut off = 24;
        while off + 16 <= data.len() {
            let rec = &data[off..];
            let micros = u64::from(u32le(rec)) * 1_000_000 + u64::from(u32le(&rec[4..]));
            let incl = u32le(&rec[8..]) as usize;
            let frame = &data[off + 16..off + 16 + incl];
            off += 16 + incl;
            let first = *first.get_or_insert(micros);
            assert_eq!(be16(&frame[12..]), 0x0800, "IPv4");
            let ip = &frame[14..];
            assert_eq!(ip[9], 17, "UDP");
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let rtp = &ip[ihl + 8..];
            assert_eq!(rtp[0] >> 6, 2, "RTP version 2");
            out.push(Captured {
                offset: Duration::from_micros(micros - first),
                ssrc: be32(&rtp[8..]),
                payload_type: rtp[1] & 0x7f,
                sequence: be16(&rtp[2..]),
                timestamp: be32(&rtp[4..]),
                marker: rtp[1] & 0x80 != 0,
                payload: rtp[12..].to_vec(),
            });
        }
        out
    }

    const FILES: [(&str, Digit); 12] = [
        ("dtmf_2833_0.pcap", Digit::D0),
        ("dtmf_2833_1.pcap", Digit::D1),
        ("dtmf_2833_2.pcap", Digit::D2),
        ("dtmf_2833_3.pcap", Digit::D3),
        ("dtmf_2833_4.pcap", Digit::D4),
        ("dtmf_2833_5.pcap", Digit::D5),
        ("dtmf_2833_6.pcap", Digit::D6),
        ("dtmf_2833_7.pcap", Digit::D7),
        ("dtmf_2833_8.pcap", Digit::D8),
        ("dtmf_2833_9.pcap", Digit::D9),
        ("dtmf_2833_star.pcap", Digit::Star),
        ("dtmf_2833_pound.pcap", Digit::Pound),
    ];

    /// Plays a capture starting at `start`; returns the digits detected.
    fn play(det: &mut EventDetector, start: Instant, packets: &[Captured]) -> Vec<Digit> {
        packets
            .iter()
            .filter_map(|p| det.handle_packet(start + p.offset, &p.rtp()))
            .map(|d| d.digit)
            .collect()
    }

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn payload_parses_and_writes_rfc4733_layout() {
        let p = EventPayload::parse(&[0x0b, 0x8a, 0x08, 0xc0]).unwrap();
        assert_eq!(
            p,
            EventPayload {
                event: 11,
                end: true,
                volume: 10,
                duration: 0x08c0
            }
        );
        assert_eq!(p.digit(), Some(Digit::Pound));
        assert_eq!(p.to_bytes(), [0x0b, 0x8a, 0x08, 0xc0]);
        // R bit set on the wire is ignored; extra bytes (a second event) too.
        let r = EventPayload::parse(&[0x05, 0x4a, 0x00, 0xa0, 0x06, 0x0a, 0, 0]).unwrap();
        assert_eq!((r.event, r.end, r.volume, r.duration), (5, false, 10, 160));
        assert_eq!(r.to_bytes(), [0x05, 0x0a, 0x00, 0xa0]);
        // Volume over 63 cannot leak into E or R.
        let loud = EventPayload { volume: 0xff, ..r };
        assert_eq!(loud.to_bytes()[1], 0x3f);
    }

    #[test]
    fn short_payloads_are_errors_and_garbage_never_panics() {
        for len in 0..4 {
            assert_eq!(
                EventPayload::parse(&[0u8; 4][..len]),
                Err(EventError::TooShort { len })
            );
        }
        let mut det = EventDetector::new([101]);
        let t0 = t0();
        let mut rng = StdRng::seed_from_u64(7);
        let mut digits = 0;
        for i in 0..5000u32 {
            let len = rng.random_range(0..9usize);
            let mut payload = [0u8; 8];
            for b in &mut payload {
                *b = rng.random_range(0..=255u8);
            }
            // Mostly plausible event codes, so the state logic is exercised.
            payload[0] %= 20;
            let p = EventRtpPacket {
                ssrc: rng.random_range(0..40),
                payload_type: if rng.random_range(0..2) == 0 {
                    101
                } else {
                    rng.random_range(0..=255)
                },
                sequence: rng.random_range(0..=u16::MAX),
                timestamp: rng.random_range(0..8),
                marker: rng.random_range(0..2) == 0,
                payload: &payload[..len],
            };
            if det
                .handle_packet(t0 + Duration::from_millis(u64::from(i)), &p)
                .is_some()
            {
                digits += 1;
            }
            assert!(det.stream_count() <= MAX_STREAMS);
        }
        assert!(digits > 0, "some random packets are valid events");
    }

    #[test]
    fn each_sipp_capture_encodes_the_digit_its_name_says() {
        for (name, digit) in FILES {
            let packets = read_pcap(name);
            assert_eq!(packets.len(), 10, "{name}");
            let mut det = EventDetector::new([101]);
            let found: Vec<_> = packets
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    det.handle_packet(t0() + p.offset, &p.rtp())
                        .map(|d| (i, d.digit))
                })
                .collect();
            // Reported once, at the very first packet (fast barge-in).
            assert_eq!(found, vec![(0, digit)], "{name}");
        }
    }

    #[test]
    fn all_captures_in_a_row_give_the_whole_sequence_despite_sequence_jumps() {
        // 0 then 1 goes from sequence 12087 back to 7984, then forwards again.
        let mut det = EventDetector::new([101]);
        let start = t0();
        let mut got = String::new();
        for (i, (name, _)) in FILES.iter().enumerate() {
            let at = start + Duration::from_millis(500) * i as u32;
            got.extend(
                play(&mut det, at, &read_pcap(name))
                    .iter()
                    .map(|d| d.as_char()),
            );
        }
        assert_eq!(got, "0123456789*#");
    }

    #[test]
    fn replaying_a_capture_after_the_replay_gap_is_a_second_press() {
        // SIPp presses "44" by playing dtmf_2833_4.pcap twice.
        let packets = read_pcap("dtmf_2833_4.pcap");
        let last = packets.last().unwrap().offset;
        let mut det = EventDetector::new([101]);
        let start = t0();
        let mut got = play(&mut det, start, &packets);
        got.extend(play(
            &mut det,
            start + last + Duration::from_millis(350),
            &packets,
        ));
        assert_eq!(got, vec![Digit::D4, Digit::D4]);
    }

    #[test]
    fn replaying_a_capture_within_the_replay_gap_counts_once() {
        let packets = read_pcap("dtmf_2833_4.pcap");
        let last = packets.last().unwrap().offset;
        let mut det = EventDetector::new([101]);
        let start = t0();
        let mut got = play(&mut det, start, &packets);
        got.extend(play(
            &mut det,
            start + last + Duration::from_millis(200),
            &packets,
        ));
        assert_eq!(got, vec![Digit::D4]);
    }

    #[test]
    fn a_replay_whose_end_packets_were_lost_is_a_new_press_when_duration_restarts() {
        let packets = read_pcap("dtmf_2833_4.pcap");
        let no_end: Vec<_> = packets[..7].to_vec();
        let last = no_end.last().unwrap().offset;
        let mut det = EventDetector::new([101]);
        let start = t0();
        let mut got = play(&mut det, start, &no_end);
        // Long quiet, but a duration that keeps growing is the same press.
        let mut later = no_end[6].clone();
        later.payload = EventPayload::parse(&later.payload)
            .map(|p| EventPayload {
                duration: p.duration + 320,
                ..p
            })
            .unwrap()
            .to_bytes()
            .to_vec();
        got.extend(play(
            &mut det,
            start + last + Duration::from_millis(400),
            &[later],
        ));
        assert_eq!(got, vec![Digit::D4]);
        got.extend(play(
            &mut det,
            start + last + Duration::from_secs(1),
            &no_end,
        ));
        assert_eq!(got, vec![Digit::D4, Digit::D4]);
    }

    #[test]
    fn sequence_numbers_going_backwards_do_not_drop_events() {
        let mut det = EventDetector::new([101]);
        let start = t0();
        let mut got = Vec::new();
        for (i, (name, seq_base)) in [("dtmf_2833_5.pcap", 40000u16), ("dtmf_2833_6.pcap", 3)]
            .into_iter()
            .enumerate()
        {
            let mut packets = read_pcap(name);
            // Sequence runs backwards within the event as well.
            for (k, p) in packets.iter_mut().enumerate() {
                p.sequence = seq_base.wrapping_sub(k as u16);
            }
            got.extend(play(
                &mut det,
                start + Duration::from_secs(i as u64),
                &packets,
            ));
        }
        assert_eq!(got, vec![Digit::D5, Digit::D6]);
    }

    #[test]
    fn two_ssrcs_interleaved_give_independent_digits() {
        let a = read_pcap("dtmf_2833_7.pcap");
        // Same timestamp and code on the other SSRC: still its own press.
        let b: Vec<_> = a
            .iter()
            .map(|p| Captured {
                ssrc: 0xdead_beef,
                ..p.clone()
            })
            .collect();
        let c: Vec<_> = read_pcap("dtmf_2833_8.pcap")
            .into_iter()
            .map(|p| Captured { ssrc: 42, ..p })
            .collect();
        let mut det = EventDetector::new([101]);
        let start = t0();
        let mut got = Vec::new();
        for i in 0..a.len() {
            for p in [&a[i], &b[i], &c[i]] {
                if let Some(d) = det.handle_packet(start + p.offset, &p.rtp()) {
                    got.push((d.ssrc, d.digit));
                }
            }
        }
        assert_eq!(
            got,
            vec![
                (0x0e05_384e, Digit::D7),
                (0xdead_beef, Digit::D7),
                (42, Digit::D8)
            ]
        );
    }

    #[test]
    fn a_missing_marker_bit_still_gives_the_digit() {
        let mut packets = read_pcap("dtmf_2833_9.pcap");
        for p in &mut packets {
            p.marker = false;
        }
        let mut det = EventDetector::new([101]);
        assert_eq!(play(&mut det, t0(), &packets), vec![Digit::D9]);
        // And a capture whose start packets were all lost: end packets alone.
        let mut det = EventDetector::new([101]);
        assert_eq!(play(&mut det, t0(), &packets[7..]), vec![Digit::D9]);
    }

    #[test]
    fn payload_type_96_is_accepted_only_when_configured() {
        let packets: Vec<_> = read_pcap("dtmf_2833_3.pcap")
            .into_iter()
            .map(|p| Captured {
                payload_type: 96,
                ..p
            })
            .collect();
        let mut strict = EventDetector::new([101]);
        assert!(play(&mut strict, t0(), &packets).is_empty());
        let mut sipp = EventDetector::new([101, 96]);
        assert_eq!(play(&mut sipp, t0(), &packets), vec![Digit::D3]);
        let mut added = EventDetector::new([101]);
        added.accept_payload_type(96);
        added.accept_payload_type(200); // not a payload type: ignored
        assert!(added.accepts(96) && !added.accepts(200));
        assert_eq!(play(&mut added, t0(), &packets), vec![Digit::D3]);
    }

    #[test]
    fn non_dtmf_events_are_ignored() {
        let mut det = EventDetector::new([101]);
        let flash = EventPayload {
            event: 16,
            end: false,
            volume: 10,
            duration: 0,
        }
        .to_bytes();
        let p = EventRtpPacket {
            ssrc: 1,
            payload_type: 101,
            sequence: 1,
            timestamp: 1,
            marker: true,
            payload: &flash,
        };
        assert_eq!(det.handle_packet(t0(), &p), None);
        assert_eq!(det.stream_count(), 0);
    }

    #[test]
    fn state_expires_and_streams_are_bounded() {
        let packets = read_pcap("dtmf_2833_2.pcap");
        let mut det = EventDetector::new([101]);
        let start = t0();
        assert_eq!(det.poll_timeout(), None);
        for ssrc in 0..(MAX_STREAMS as u32 + 5) {
            let p = Captured {
                ssrc,
                ..packets[0].clone()
            };
            let d = det.handle_packet(start + Duration::from_millis(u64::from(ssrc)), &p.rtp());
            assert_eq!(d.map(|d| d.ssrc), Some(ssrc));
        }
        assert_eq!(det.stream_count(), MAX_STREAMS);
        let deadline = det.poll_timeout().unwrap();
        assert_eq!(deadline, start + Duration::from_millis(5) + EVENT_TTL);
        det.handle_timeout(start + STREAM_TTL + Duration::from_secs(1));
        assert_eq!(det.stream_count(), 0);
        assert_eq!(det.poll_timeout(), None);
    }

    #[test]
    fn sender_packets_follow_rfc4733_and_round_trip_through_the_detector() {
        let sender = EventSender::new();
        let pkts = sender.packets(Digit::Pound, 1000, Duration::from_millis(100));
        // 5 updates (0..80 ms) + 3 end packets.
        assert_eq!(pkts.len(), 8);
        assert!(pkts[0].marker && pkts[1..].iter().all(|p| !p.marker));
        assert!(
            pkts.iter()
                .all(|p| p.timestamp == 1000 && p.payload.event == 11)
        );
        let durations: Vec<_> = pkts.iter().map(|p| p.payload.duration).collect();
        assert_eq!(durations, vec![0, 160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<_> = pkts.iter().map(|p| p.payload.end).collect();
        assert_eq!(
            ends,
            vec![false, false, false, false, false, true, true, true]
        );
        let offsets: Vec<_> = pkts.iter().map(|p| p.offset.as_millis()).collect();
        assert_eq!(offsets, vec![0, 20, 40, 60, 80, 100, 120, 140]);

        let mut det = EventDetector::new([101]);
        let start = t0();
        let mut got = Vec::new();
        for (seq, p) in pkts.iter().enumerate() {
            let bytes = p.payload.to_bytes();
            let rtp = EventRtpPacket {
                ssrc: 7,
                payload_type: 101,
                sequence: seq as u16,
                timestamp: p.timestamp,
                marker: p.marker,
                payload: &bytes,
            };
            got.extend(det.handle_packet(start + p.offset, &rtp).map(|d| d.digit));
        }
        assert_eq!(got, vec![Digit::Pound]);
    }

    #[test]
    fn sender_clamps_tiny_and_huge_durations() {
        let sender = EventSender::new().with_volume(99);
        let tiny = sender.packets(Digit::D1, 0, Duration::from_millis(1));
        assert_eq!(tiny.len(), 4);
        assert_eq!(tiny[3].payload.duration, 160);
        assert_eq!(tiny[0].payload.volume, 63);
        let huge = sender.packets(Digit::D1, 0, Duration::from_secs(20));
        assert_eq!(huge.last().unwrap().payload.duration, u16::MAX);
    }
}
