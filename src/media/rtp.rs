//! RTP packets (RFC 3550): header parsing and building, without IO.
//!
//! What it does:
//! - [`RtpHeader`] is a zero-copy view over a received datagram: it checks
//!   the fixed header (§5.1), skips CSRCs and the header extension (§5.3.1),
//!   strips padding, and hands back the payload slice. Any byte string gives
//!   either a header or an [`RtpError`], never a panic.
//! - [`write_packet`] writes a header and payload into a buffer the caller
//!   owns, so sending needs no allocation.
//! - [`RtpSender`] is the state of one outgoing stream (the bridge's prompts):
//!   SSRC, sequence number and timestamp, the marker bit on the first packet
//!   of a talkspurt (RFC 3551 §4.1).
//! - [`RtpReceiverStats`] counts received, lost and reordered packets and
//!   estimates interarrival jitter (RFC 3550 A.1, A.3, A.8).
//!
//! What it does not: sockets, clocks, pacing (the driver sends one packet per
//! 20 ms), RTCP, SRTP, or decoding payloads (see `g711` and `dtmf`).

use rand::{Rng, RngExt};

/// Size of the fixed RTP header (RFC 3550 §5.1), without CSRCs.
pub const HEADER_LEN: usize = 12;

/// The only RTP version there is (RFC 3550 §5.1).
pub const VERSION: u8 = 2;

/// Samples in 20 ms at 8 kHz: one G.711 packet (RFC 3551 §4.5.14, §4.2).
pub const SAMPLES_PER_20MS: u32 = 160;

/// Why a byte string is not an RTP packet, or a packet does not fit a buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("rtp packet of {len} bytes is shorter than the {HEADER_LEN}-byte fixed header")]
    TooShort { len: usize },

    #[error("rtp version {version} is not supported; expected version 2 (RFC 3550 §5.1)")]
    BadVersion { version: u8 },

    #[error(
        "rtp packet of {len} bytes is too short for its {csrc_count} csrc entries; \
         expected at least {needed} bytes"
    )]
    CsrcTruncated {
        len: usize,
        csrc_count: u8,
        needed: usize,
    },

    #[error(
        "rtp header extension of {words} words runs past the end of the {len}-byte packet; \
         expected at least {needed} bytes"
    )]
    ExtensionTruncated {
        len: usize,
        words: u16,
        needed: usize,
    },

    #[error(
        "rtp padding count {count} does not fit the {available} bytes after the header; \
         expected 1 to {available}"
    )]
    BadPadding { count: u8, available: usize },

    #[error("rtp payload type {payload_type} is out of range; expected 0 to 127")]
    BadPayloadType { payload_type: u8 },

    #[error("buffer of {len} bytes is too small for a {needed}-byte rtp packet")]
    BufferTooSmall { len: usize, needed: usize },
}

/// A parsed RTP packet, borrowing the datagram it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader<'a> {
    packet: &'a [u8],
    /// Where the payload starts: after the fixed header, CSRCs and extension.
    payload_start: usize,
    /// Where the payload ends: before any padding.
    payload_end: usize,
}

impl<'a> RtpHeader<'a> {
    /// Checks `packet` as an RTP packet (RFC 3550 §5.1) and returns a view of it.
    pub fn parse(packet: &'a [u8]) -> Result<Self, RtpError> {
        let len = packet.len();
        if len < HEADER_LEN {
            return Err(RtpError::TooShort { len });
        }
        let version = packet[0] >> 6;
        if version != VERSION {
            return Err(RtpError::BadVersion { version });
        }
        let csrc_count = packet[0] & 0x0f;
        let mut start = HEADER_LEN + 4 * usize::from(csrc_count);
        if len < start {
            return Err(RtpError::CsrcTruncated {
                len,
                csrc_count,
                needed: start,
            });
        }
        // RFC 3550 §5.3.1: a 4-byte extension header (profile, length in
        // 32-bit words) followed by that many words.
        if packet[0] & 0x10 != 0 {
            let Some(ext) = packet.get(start..start + 4) else {
                return Err(RtpError::ExtensionTruncated {
                    len,
                    words: 0,
                    needed: start + 4,
                });
            };
            let words = u16::from_be_bytes([ext[2], ext[3]]);
            let needed = start + 4 + 4 * usize::from(words);
            if len < needed {
                return Err(RtpError::ExtensionTruncated { len, words, needed });
            }
            start = needed;
        }
        let mut end = len;
        // RFC 3550 §5.1: the last octet counts the padding octets, itself
        // included, so it is at least 1 and cannot reach into the header.
        if packet[0] & 0x20 != 0 {
            let count = packet[len - 1];
            let available = len - start;
            if count == 0 || usize::from(count) > available {
                return Err(RtpError::BadPadding { count, available });
            }
            end = len - usize::from(count);
        }
        Ok(RtpHeader {
            packet,
            payload_start: start,
            payload_end: end,
        })
    }

    pub fn version(&self) -> u8 {
        self.packet[0] >> 6
    }

    pub fn has_padding(&self) -> bool {
        self.packet[0] & 0x20 != 0
    }

    pub fn has_extension(&self) -> bool {
        self.packet[0] & 0x10 != 0
    }

    pub fn csrc_count(&self) -> u8 {
        self.packet[0] & 0x0f
    }

    pub fn marker(&self) -> bool {
        self.packet[1] & 0x80 != 0
    }

    pub fn payload_type(&self) -> u8 {
        self.packet[1] & 0x7f
    }

    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.packet[2], self.packet[3]])
    }

    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([
            self.packet[4],
            self.packet[5],
            self.packet[6],
            self.packet[7],
        ])
    }

    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([
            self.packet[8],
            self.packet[9],
            self.packet[10],
            self.packet[11],
        ])
    }

    /// The contributing sources (RFC 3550 §5.1), in packet order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let end = HEADER_LEN + 4 * usize::from(self.csrc_count());
        self.packet[HEADER_LEN..end]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The header extension's profile-defined id and its data (RFC 3550 §5.3.1).
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        if !self.has_extension() {
            return None;
        }
        let start = HEADER_LEN + 4 * usize::from(self.csrc_count());
        let profile = u16::from_be_bytes([self.packet[start], self.packet[start + 1]]);
        Some((profile, &self.packet[start + 4..self.payload_start]))
    }

    /// The payload, without header, CSRCs, extension or padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.packet[self.payload_start..self.payload_end]
    }
}

/// The header fields of a packet to send. No CSRCs, extension or padding:
/// the bridge is the only source of what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Writes an RTP packet into `buf` and returns its length.
///
/// Errors, rather than panics, when the payload type needs more than 7 bits
/// or `buf` is shorter than [`HEADER_LEN`] + `payload.len()`.
pub fn write_packet(buf: &mut [u8], fields: &RtpFields, payload: &[u8]) -> Result<usize, RtpError> {
    if fields.payload_type > 0x7f {
        return Err(RtpError::BadPayloadType {
            payload_type: fields.payload_type,
        });
    }
    let needed = HEADER_LEN + payload.len();
    let Some(out) = buf.get_mut(..needed) else {
        return Err(RtpError::BufferTooSmall {
            len: buf.len(),
            needed,
        });
    };
    out[0] = VERSION << 6;
    out[1] = (u8::from(fields.marker) << 7) | fields.payload_type;
    out[2..4].copy_from_slice(&fields.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&fields.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&fields.ssrc.to_be_bytes());
    out[HEADER_LEN..].copy_from_slice(payload);
    Ok(needed)
}

/// One outgoing RTP stream: SSRC, next sequence number, next timestamp.
///
/// Sans-IO: the driver paces packets (one per 20 ms for prompts) and sends
/// the bytes [`RtpSender::next_packet`] writes into its own buffer.
#[derive(Debug, Clone)]
pub struct RtpSender {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    /// The next packet starts a talkspurt and carries the marker bit.
    talkspurt: bool,
}

impl RtpSender {
    /// A stream with random SSRC, initial sequence number and timestamp
    /// (RFC 3550 §5.1: random so that known-plaintext attacks on encryption
    /// get harder and so that streams are told apart, §8.1).
    ///
    /// The first packet carries the marker bit: it starts the first talkspurt.
    /// A `payload_type` above 127 makes every [`RtpSender::next_packet`] fail
    /// with [`RtpError::BadPayloadType`].
    pub fn new<R: Rng + ?Sized>(rng: &mut R, payload_type: u8) -> Self {
        RtpSender {
            payload_type,
            ssrc: rng.random(),
            sequence: rng.random(),
            timestamp: rng.random(),
            talkspurt: true,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// The sequence number the next packet gets.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The timestamp the next packet gets.
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Marks the next packet as the first of a talkspurt (RFC 3551 §4.1:
    /// the marker bit tells the receiver's jitter buffer it may adjust).
    pub fn start_talkspurt(&mut self) {
        self.talkspurt = true;
    }

    /// Accounts for `samples` of silence in which nothing was sent: the
    /// timestamp runs on with the sampling clock (RFC 3550 §5.1) while the
    /// sequence number does not, and the next packet starts a talkspurt.
    pub fn skip(&mut self, samples: u32) {
        if samples > 0 {
            self.timestamp = self.timestamp.wrapping_add(samples);
            self.talkspurt = true;
        }
    }

    /// Writes the next G.711 packet for `payload` into `buf` and returns its
    /// length. G.711 has one byte per sample (RFC 3551 §4.5.14), so the
    /// timestamp advances by `payload.len()` (160 for 20 ms).
    ///
    /// The marker bit is set when `marker` is true or a talkspurt starts.
    pub fn next_packet(
        &mut self,
        payload: &[u8],
        buf: &mut [u8],
        marker: bool,
    ) -> Result<usize, RtpError> {
        // A payload longer than u32::MAX cannot fit a datagram; saturating
        // keeps the conversion total without a panic path.
        let samples = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.next_packet_with_samples(payload, samples, buf, marker)
    }

    /// As [`RtpSender::next_packet`], for payloads whose sample count is not
    /// their byte count.
    pub fn next_packet_with_samples(
        &mut self,
        payload: &[u8],
        samples: u32,
        buf: &mut [u8],
        marker: bool,
    ) -> Result<usize, RtpError> {
        let fields = RtpFields {
            marker: marker || self.talkspurt,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        // Nothing advances when the packet was not written: the stream has
        // no gap for a buffer the driver sized wrong.
        let len = write_packet(buf, &fields, payload)?;
        self.talkspurt = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        Ok(len)
    }
}

/// RFC 3550 A.1: a jump ahead of more than this many is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a packet at most this far behind is late, not a restart.
const MAX_MISORDER: u16 = 100;
/// One cycle of the 16-bit sequence number.
const SEQ_MOD: u32 = 1 << 16;

/// Reception statistics for one incoming stream (RFC 3550 A.1, A.3, A.8).
///
/// Unlike A.1 there is no probation: the source is the one SDP negotiated,
/// so its first packet counts.
#[derive(Debug, Clone, Default)]
pub struct RtpReceiverStats {
    started: bool,
    max_seq: u16,
    /// Sequence-number wraps seen, shifted left 16 (A.1 `cycles`).
    cycles: u32,
    base_seq: u32,
    /// After a big jump, the sequence number that confirms a restart (A.1).
    bad_seq: Option<u32>,
    received: u64,
    reordered: u64,
    transit: Option<u32>,
    /// Jitter scaled by 16, as in A.8's integer form; u64 so that 16 times
    /// the largest transit difference (2^31) cannot overflow.
    jitter_x16: u64,
}

impl RtpReceiverStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a received packet. `arrival` is the arrival time in the
    /// stream's timestamp units (e.g. 8000 per second), from any origin.
    ///
    /// Returns false when the packet is not counted: a jump too far from the
    /// stream, until the next packet in sequence confirms a restart (A.1).
    pub fn record(&mut self, sequence: u16, timestamp: u32, arrival: u32) -> bool {
        if !self.started {
            self.restart(sequence);
            self.started = true;
        } else if !self.update_seq(sequence) {
            return false;
        }
        self.received += 1;
        self.update_jitter(timestamp, arrival);
        true
    }

    fn restart(&mut self, seq: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = u32::from(seq);
        self.bad_seq = None;
        self.received = 0;
        self.reordered = 0;
    }

    /// RFC 3550 A.1 `update_seq`, without probation.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta == 0 {
            // A duplicate: counted as received, which A.3 allows to make
            // the loss count go negative.
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
            // A very large jump. Two in a row mean the sender restarted.
            if self.bad_seq == Some(u32::from(seq)) {
                self.restart(seq);
            } else {
                self.bad_seq = Some((u32::from(seq) + 1) & (SEQ_MOD - 1));
                return false;
            }
        } else {
            // Up to MAX_MISORDER behind: late or reordered.
            self.reordered += 1;
        }
        true
    }

    /// RFC 3550 A.8: J += (|D| - J) / 16, in integer form scaled by 16.
    fn update_jitter(&mut self, timestamp: u32, arrival: u32) {
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(last) = self.transit {
            let d = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            // J16 - (J16 + 8) / 16 >= 0 for any J16, so this cannot underflow.
            self.jitter_x16 = self.jitter_x16 - ((self.jitter_x16 + 8) >> 4) + d;
        }
        self.transit = Some(transit);
    }

    /// Packets counted, duplicates included (A.3 `received`).
    pub fn packets(&self) -> u64 {
        self.received
    }

    /// The highest sequence number seen, extended with the wrap count (A.1).
    pub fn extended_max_sequence(&self) -> u32 {
        self.cycles | u32::from(self.max_seq)
    }

    /// Packets expected from the first sequence number to the highest (A.3).
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        u64::from(self.cycles) + u64::from(self.max_seq) - u64::from(self.base_seq) + 1
    }

    /// Packets lost: expected minus received (A.3). Negative with duplicates.
    pub fn lost(&self) -> i64 {
        // Both fit i64: expected < 2^48 and received counts datagrams.
        self.expected() as i64 - self.received as i64
    }

    /// Packets that arrived behind the highest sequence number already seen.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Interarrival jitter estimate in timestamp units (A.8).
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn fields() -> RtpFields {
        RtpFields {
            marker: true,
            payload_type: 8,
            sequence: 0xbeef,
            timestamp: 0xdead_cafe,
            ssrc: 0x1234_5678,
        }
    }

    #[test]
    fn header_round_trips_every_field() {
        let mut buf = [0u8; 200];
        let payload = [0xd5u8; 160];
        let len = write_packet(&mut buf, &fields(), &payload).unwrap();
        assert_eq!(len, HEADER_LEN + 160);
        let h = RtpHeader::parse(&buf[..len]).unwrap();
        assert_eq!(h.version(), 2);
        assert!(h.marker());
        assert_eq!(h.payload_type(), 8);
        assert_eq!(h.sequence(), 0xbeef);
        assert_eq!(h.timestamp(), 0xdead_cafe);
        assert_eq!(h.ssrc(), 0x1234_5678);
        assert!(!h.has_padding() && !h.has_extension());
        assert_eq!(h.csrc_count(), 0);
        assert_eq!(h.payload(), &payload[..]);
    }

    #[test]
    fn written_bytes_match_rfc3550_layout() {
        let mut buf = [0u8; 16];
        let f = RtpFields {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
        };
        let len = write_packet(&mut buf, &f, &[9, 9, 9, 9]).unwrap();
        assert_eq!(
            &buf[..len],
            &[0x80, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9, 9, 9, 9]
        );
        let f = RtpFields {
            marker: true,
            payload_type: 101,
            ..f
        };
        write_packet(&mut buf, &f, &[]).unwrap();
        assert_eq!(buf[1], 0x80 | 101);
    }

    #[test]
    fn write_refuses_small_buffer_and_wide_payload_type() {
        let mut buf = [0u8; 20];
        assert_eq!(
            write_packet(&mut buf, &fields(), &[0; 9]),
            Err(RtpError::BufferTooSmall {
                len: 20,
                needed: 21
            })
        );
        let f = RtpFields {
            payload_type: 128,
            ..fields()
        };
        assert_eq!(
            write_packet(&mut buf, &f, &[]),
            Err(RtpError::BadPayloadType { payload_type: 128 })
        );
    }

    #[test]
    fn parse_rejects_short_and_wrong_version() {
        assert_eq!(
            RtpHeader::parse(&[0x80; 11]),
            Err(RtpError::TooShort { len: 11 })
        );
        let mut p = [0u8; 12];
        p[0] = 0x40;
        assert_eq!(
            RtpHeader::parse(&p),
            Err(RtpError::BadVersion { version: 1 })
        );
    }

    #[test]
    fn parse_skips_csrcs() {
        let mut p = vec![0x82, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[0, 0, 0, 0xaa, 0, 0, 0, 0xbb]);
        p.extend_from_slice(b"pay");
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.csrc_count(), 2);
        assert_eq!(h.csrcs().collect::<Vec<_>>(), vec![0xaa, 0xbb]);
        assert_eq!(h.payload(), b"pay");
        // One CSRC byte short.
        assert_eq!(
            RtpHeader::parse(&p[..19]),
            Err(RtpError::CsrcTruncated {
                len: 19,
                csrc_count: 2,
                needed: 20
            })
        );
    }

    #[test]
    fn parse_skips_header_extension() {
        // X bit, one CSRC, extension profile 0xbede with 2 words.
        let mut p = vec![0x91, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[0, 0, 0, 0x77]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        p.extend_from_slice(b"audio");
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.has_extension());
        assert_eq!(
            h.extension(),
            Some((0xbede, &[1u8, 2, 3, 4, 5, 6, 7, 8][..]))
        );
        assert_eq!(h.payload(), b"audio");
        // Extension claims more words than are there.
        let cut = &p[..16 + 4 + 7];
        assert!(matches!(
            RtpHeader::parse(cut),
            Err(RtpError::ExtensionTruncated { words: 2, .. })
        ));
        // Extension header itself cut off.
        assert!(matches!(
            RtpHeader::parse(&p[..18]),
            Err(RtpError::ExtensionTruncated { words: 0, .. })
        ));
    }

    #[test]
    fn parse_strips_padding_and_validates_its_count() {
        let mut p = vec![0xa0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(b"abc");
        p.extend_from_slice(&[0, 0, 3]);
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.has_padding());
        assert_eq!(h.payload(), b"abc");

        // Padding of the whole body leaves an empty payload.
        let n = p.len();
        p[n - 1] = 6;
        assert_eq!(RtpHeader::parse(&p).unwrap().payload(), b"");
        // Zero is not a valid count; neither is one past the body.
        p[n - 1] = 0;
        assert_eq!(
            RtpHeader::parse(&p),
            Err(RtpError::BadPadding {
                count: 0,
                available: 6
            })
        );
        p[n - 1] = 7;
        assert_eq!(
            RtpHeader::parse(&p),
            Err(RtpError::BadPadding {
                count: 7,
                available: 6
            })
        );
    }

    #[test]
    fn parse_never_panics_on_random_bytes() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut buf = [0u8; 64];
        let mut parsed = 0;
        for _ in 0..200_000 {
            let len = rng.random_range(0..buf.len());
            rng.fill(&mut buf[..len]);
            // Bias towards version 2 so the deeper checks get exercised.
            if len > 0 && rng.random_bool(0.8) {
                buf[0] = (buf[0] & 0x3f) | 0x80;
            }
            if let Ok(h) = RtpHeader::parse(&buf[..len]) {
                parsed += 1;
                let _ = (h.csrcs().count(), h.extension(), h.payload().len());
                assert!(h.payload().len() <= len - HEADER_LEN);
            }
        }
        assert!(parsed > 1000, "only {parsed} random packets parsed");
    }

    #[test]
    fn sender_numbers_packets_and_marks_first() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = RtpSender::new(&mut rng, 0);
        let (seq0, ts0, ssrc) = (s.next_sequence(), s.next_timestamp(), s.ssrc());
        let mut buf = [0u8; 172];
        let payload = [0xffu8; 160];
        for i in 0..5u16 {
            let len = s.next_packet(&payload, &mut buf, false).unwrap();
            assert_eq!(len, 172);
            let h = RtpHeader::parse(&buf[..len]).unwrap();
            assert_eq!(h.sequence(), seq0.wrapping_add(i));
            assert_eq!(
                h.timestamp(),
                ts0.wrapping_add(u32::from(i) * SAMPLES_PER_20MS)
            );
            assert_eq!(h.ssrc(), ssrc);
            assert_eq!(h.payload_type(), 0);
            assert_eq!(h.marker(), i == 0, "packet {i}");
        }
    }

    #[test]
    fn sender_initial_values_come_from_the_rng() {
        let a = RtpSender::new(&mut StdRng::seed_from_u64(1), 0);
        let b = RtpSender::new(&mut StdRng::seed_from_u64(1), 0);
        let c = RtpSender::new(&mut StdRng::seed_from_u64(2), 0);
        assert_eq!(
            (a.ssrc(), a.next_sequence(), a.next_timestamp()),
            (b.ssrc(), b.next_sequence(), b.next_timestamp())
        );
        assert_ne!(
            (a.ssrc(), a.next_sequence(), a.next_timestamp()),
            (c.ssrc(), c.next_sequence(), c.next_timestamp())
        );
    }

    #[test]
    fn sender_marks_talkspurts_and_explicit_marker() {
        let mut s = RtpSender::new(&mut StdRng::seed_from_u64(3), 8);
        let mut buf = [0u8; 172];
        let marker_of = |s: &mut RtpSender, buf: &mut [u8], m: bool| {
            let len = s.next_packet(&[0xd5; 160], buf, m).unwrap();
            RtpHeader::parse(&buf[..len]).unwrap().marker()
        };
        assert!(marker_of(&mut s, &mut buf, false));
        assert!(!marker_of(&mut s, &mut buf, false));
        s.start_talkspurt();
        assert!(marker_of(&mut s, &mut buf, false));
        assert!(!marker_of(&mut s, &mut buf, false));
        assert!(marker_of(&mut s, &mut buf, true));
        assert!(!marker_of(&mut s, &mut buf, false));
    }

    #[test]
    fn skip_advances_timestamp_not_sequence_and_marks_next() {
        let mut s = RtpSender::new(&mut StdRng::seed_from_u64(4), 0);
        let mut buf = [0u8; 172];
        s.next_packet(&[0; 160], &mut buf, false).unwrap();
        let (seq, ts) = (s.next_sequence(), s.next_timestamp());
        // One second of silence.
        s.skip(8000);
        let len = s.next_packet(&[0; 160], &mut buf, false).unwrap();
        let h = RtpHeader::parse(&buf[..len]).unwrap();
        assert_eq!(h.sequence(), seq);
        assert_eq!(h.timestamp(), ts.wrapping_add(8000));
        assert!(h.marker());
        // skip(0) is no gap: no marker.
        s.skip(0);
        let len = s.next_packet(&[0; 160], &mut buf, false).unwrap();
        assert!(!RtpHeader::parse(&buf[..len]).unwrap().marker());
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut s = RtpSender::new(&mut StdRng::seed_from_u64(5), 0);
        s.sequence = 65534;
        s.timestamp = u32::MAX - 100;
        let mut buf = [0u8; 172];
        let mut seen = Vec::new();
        for _ in 0..3 {
            let len = s.next_packet(&[0; 160], &mut buf, false).unwrap();
            let h = RtpHeader::parse(&buf[..len]).unwrap();
            seen.push((h.sequence(), h.timestamp()));
        }
        assert_eq!(seen, vec![(65534, u32::MAX - 100), (65535, 59), (0, 219)]);
    }

    #[test]
    fn failed_write_does_not_advance_the_stream() {
        let mut s = RtpSender::new(&mut StdRng::seed_from_u64(6), 0);
        let (seq, ts) = (s.next_sequence(), s.next_timestamp());
        let mut small = [0u8; 100];
        assert!(s.next_packet(&[0; 160], &mut small, false).is_err());
        assert_eq!((s.next_sequence(), s.next_timestamp()), (seq, ts));
        let mut buf = [0u8; 172];
        let len = s.next_packet(&[0; 160], &mut buf, false).unwrap();
        assert!(RtpHeader::parse(&buf[..len]).unwrap().marker());
    }

    /// The sender's hot path writes into the caller's buffer; this pins the
    /// shape (`&mut [u8]` in, length out) and that a stack buffer suffices
    /// for a long run, so no per-packet allocation is needed.
    #[test]
    fn next_packet_writes_into_caller_stack_buffer() {
        let mut s = RtpSender::new(&mut StdRng::seed_from_u64(8), 0);
        let mut buf = [0u8; HEADER_LEN + 160];
        let payload = [0x7fu8; 160];
        type NextPacket = fn(&mut RtpSender, &[u8], &mut [u8], bool) -> Result<usize, RtpError>;
        let f: NextPacket = RtpSender::next_packet;
        for _ in 0..100_000 {
            assert_eq!(f(&mut s, &payload, &mut buf, false), Ok(172));
        }
        assert_eq!(&buf[HEADER_LEN..], &payload[..]);
    }

    #[test]
    fn stats_count_in_order_stream_without_loss() {
        let mut st = RtpReceiverStats::new();
        for i in 0..50u16 {
            let ts = u32::from(i) * 160;
            assert!(st.record(1000 + i, ts, ts + 500));
        }
        assert_eq!(st.packets(), 50);
        assert_eq!(st.expected(), 50);
        assert_eq!(st.lost(), 0);
        assert_eq!(st.reordered(), 0);
        assert_eq!(st.jitter(), 0);
    }

    #[test]
    fn stats_count_loss_across_sequence_wrap() {
        let mut st = RtpReceiverStats::new();
        let mut seq = 65530u16;
        for i in 0..20 {
            // Drop every fifth packet.
            if i % 5 != 4 {
                st.record(seq, 0, 0);
            }
            seq = seq.wrapping_add(1);
        }
        // Last sent was i = 19 (dropped), so the highest seen is i = 18.
        assert_eq!(st.extended_max_sequence(), (1 << 16) + 65530 + 18 - 65536);
        assert_eq!(st.expected(), 19);
        assert_eq!(st.packets(), 16);
        assert_eq!(st.lost(), 3);
    }

    #[test]
    fn stats_count_reordering_without_loss() {
        let mut st = RtpReceiverStats::new();
        for seq in [1u16, 2, 4, 3, 5, 7, 6, 8] {
            assert!(st.record(seq, 0, 0));
        }
        assert_eq!(st.reordered(), 2);
        assert_eq!(st.lost(), 0);
        assert_eq!(st.expected(), 8);
    }

    #[test]
    fn stats_treat_two_big_jumps_in_a_row_as_restart() {
        let mut st = RtpReceiverStats::new();
        for seq in 100..110u16 {
            st.record(seq, 0, 0);
        }
        // A jump of 30000: ignored once, then confirmed by its successor.
        assert!(!st.record(30_100, 0, 0));
        assert_eq!(st.packets(), 10);
        assert!(st.record(30_101, 0, 0));
        assert_eq!(st.packets(), 1);
        assert_eq!(st.lost(), 0);
        // A lone jump followed by the old sequence is dropped as a stray.
        let mut st = RtpReceiverStats::new();
        st.record(5, 0, 0);
        assert!(!st.record(40_000, 0, 0));
        assert!(st.record(6, 0, 0));
        assert_eq!((st.packets(), st.lost()), (2, 0));
    }

    #[test]
    fn stats_jitter_follows_rfc3550_a8() {
        let mut st = RtpReceiverStats::new();
        // Packets every 160 units, arrivals alternately on time and 80 late:
        // |D| is 80 each step after the first.
        let mut expected = 0f64;
        for i in 0..200u32 {
            let ts = i * 160;
            let arrival = ts + if i % 2 == 0 { 0 } else { 80 };
            st.record(i as u16, ts, arrival);
            if i > 0 {
                expected += (80.0 - expected) / 16.0;
            }
        }
        let j = st.jitter();
        assert!(
            (f64::from(j) - expected).abs() <= 1.0,
            "jitter {j}, expected about {expected}"
        );
        assert!(j > 70, "jitter {j} should approach 80");
    }

    #[test]
    fn stats_count_duplicates_as_negative_loss() {
        let mut st = RtpReceiverStats::new();
        for seq in [1u16, 2, 2, 3] {
            st.record(seq, 0, 0);
        }
        assert_eq!(st.packets(), 4);
        assert_eq!(st.lost(), -1);
    }
}
