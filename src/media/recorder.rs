//! What a caller heard, as 16-bit linear PCM on a timeline: received G.711
//! RTP audio decoded ([`Codec::decode_slice`]) and placed by RTP timestamp,
//! ready to be written as an 8 kHz mono WAV ([`Recorder::to_wav`]).
//!
//! The timeline:
//! - the first audio packet is sample 0; a later packet goes where its
//!   timestamp says, relative to the segment it belongs to;
//! - a gap in the timestamps (the bridge sends nothing between prompts and
//!   its timestamp runs on, RFC 3550 §5.1) is silence (linear 0);
//! - a packet older than the newest by sequence number (reordered or
//!   duplicated, up to [`MAX_MISORDER`] packets back) fills its place and
//!   never moves the end; one older than the current segment is dropped;
//! - a new SSRC, a timestamp jump forward beyond [`MAX_GAP`], or a newer
//!   packet whose timestamp goes back in time starts a new segment, placed
//!   after the previous one by arrival time (at most [`MAX_GAP`] of
//!   silence): a sender that restarts its clock gives a few seconds of
//!   silence, not a multi-hour file;
//! - memory is capped: [`DEFAULT_MAX_DURATION`] (10 minutes, 9.6 MB of
//!   samples) unless the owner picks another cap; audio beyond it is not
//!   recorded and [`Recorder::is_truncated`] says so.
//!
//! No IO and no clock: arrival times are arguments, the WAV is written into
//! memory, and the owner puts the bytes in a file.

use std::io::Cursor;
use std::time::{Duration, Instant};

use super::g711::Codec;
use super::rtp::RtpHeader;

/// G.711's sampling rate: one RTP timestamp unit is one sample.
pub const SAMPLE_RATE: u32 = 8000;

/// How much of a call is kept by default: 10 minutes (4.8 M samples,
/// 9.6 MB).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(600);

/// The longest silence a timestamp gap may put in the recording; a jump
/// beyond it is a new segment, placed by arrival time.
pub const MAX_GAP: Duration = Duration::from_secs(60);

/// How many packets behind the newest (by sequence number) a packet may
/// arrive and still be late rather than a restarted stream (the RFC 3550
/// A.1 misorder bound).
pub const MAX_MISORDER: u16 = 100;

/// Samples in `d` at [`SAMPLE_RATE`].
fn samples_in(d: Duration) -> usize {
    usize::try_from(d.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000).unwrap_or(usize::MAX)
}

/// What the recorder did with the packets it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Packets placed on the timeline (late ones and duplicates included).
    pub placed: u64,
    /// Packets that arrived after a newer one (by sequence number).
    pub late: u64,
    /// Late packets older than their segment: dropped.
    pub dropped: u64,
    /// Segments started (1 for a well-behaved stream).
    pub segments: u64,
}

/// The segment being recorded: one SSRC, one timestamp origin.
#[derive(Debug, Clone, Copy)]
struct Segment {
    ssrc: u32,
    /// The RTP timestamp at `base_pos`.
    base_ts: u32,
    /// Where the segment starts in the recording.
    base_pos: usize,
    /// The highest sequence number seen (the newest packet).
    highest_seq: u16,
    /// When the newest packet arrived, and how many samples it carried.
    newest_arrival: Instant,
    newest_len: usize,
}

/// One call's received audio on a timeline (see the module doc).
#[derive(Debug, Clone)]
pub struct Recorder {
    codec: Codec,
    max_samples: usize,
    samples: Vec<i16>,
    segment: Option<Segment>,
    /// The SSRC of the segment before a new SSRC took over.
    previous_ssrc: Option<u32>,
    truncated: bool,
    stats: RecorderStats,
}

impl Recorder {
    /// A recorder for audio in `codec`, keeping at most `max` of it.
    pub fn new(codec: Codec, max: Duration) -> Recorder {
        Recorder {
            codec,
            max_samples: samples_in(max),
            samples: Vec::new(),
            segment: None,
            previous_ssrc: None,
            truncated: false,
            stats: RecorderStats::default(),
        }
    }

    /// A recorder with the [`DEFAULT_MAX_DURATION`] cap.
    pub fn with_default_cap(codec: Codec) -> Recorder {
        Recorder::new(codec, DEFAULT_MAX_DURATION)
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The recording so far, 8 kHz linear PCM.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// How long the recording is.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.samples.len() as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
    }

    /// Whether audio was left out because the cap was reached.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    pub fn stats(&self) -> RecorderStats {
        self.stats
    }

    /// One received RTP packet of the negotiated audio payload type (the
    /// owner filters payload types: DTMF events and comfort noise are not
    /// audio), arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, packet: &RtpHeader<'_>) {
        self.handle_audio(
            now,
            packet.ssrc(),
            packet.sequence(),
            packet.timestamp(),
            packet.payload(),
        );
    }

    /// [`Recorder::handle_packet`] by fields.
    pub fn handle_audio(
        &mut self,
        now: Instant,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        payload: &[u8],
    ) {
        if payload.is_empty() || self.truncated {
            return;
        }
        let len = payload.len();
        let Some(seg) = self.segment else {
            self.start_segment(now, 0, ssrc, sequence, timestamp, len);
            self.place(0, payload);
            return;
        };
        if seg.ssrc != ssrc {
            if self.previous_ssrc == Some(ssrc) {
                // A straggler of the stream that was replaced.
                self.stats.late += 1;
                self.stats.dropped += 1;
                return;
            }
            self.previous_ssrc = Some(seg.ssrc);
            let pos = self.next_segment_pos(now, &seg);
            self.start_segment(now, pos, ssrc, sequence, timestamp, len);
            self.place(pos, payload);
            return;
        }
        // Where the timestamp puts it, relative to the segment's origin
        // (wrapping: the timestamp is a 32-bit counter).
        let offset = i64::from(timestamp.wrapping_sub(seg.base_ts) as i32);
        let pos = seg.base_pos as i64 + offset;
        let behind = seg.highest_seq.wrapping_sub(sequence);
        if behind < MAX_MISORDER {
            // Late or duplicate (behind == 0 is the newest packet again):
            // it fills its place inside what is recorded, never extends it.
            self.stats.late += 1;
            match usize::try_from(pos) {
                Ok(p) if p >= seg.base_pos && p + len <= self.samples.len() => {
                    self.place(p, payload)
                }
                _ => self.stats.dropped += 1,
            }
            return;
        }
        let end = self.samples.len() as i64;
        let max_gap = samples_in(MAX_GAP) as i64;
        // A newer packet may overlap the end by a packet (a sender's clock
        // slipping); further back in time, or too far ahead, is a restart.
        let restart = pos + (len as i64) < end || pos > end + max_gap;
        let pos = if restart {
            let p = self.next_segment_pos(now, &seg);
            self.start_segment(now, p, ssrc, sequence, timestamp, len);
            p
        } else {
            let p = usize::try_from(pos).unwrap_or(0).max(seg.base_pos);
            if let Some(s) = self.segment.as_mut() {
                s.highest_seq = sequence;
                s.newest_arrival = now;
                s.newest_len = len;
            }
            p
        };
        self.place(pos, payload);
    }

    /// Where a new segment starts: after the recording's end, by the
    /// arrival gap since the newest packet, at most [`MAX_GAP`].
    fn next_segment_pos(&self, now: Instant, seg: &Segment) -> usize {
        let since = now.saturating_duration_since(seg.newest_arrival);
        let gap = samples_in(since.min(MAX_GAP)).saturating_sub(seg.newest_len);
        self.samples.len().saturating_add(gap)
    }

    fn start_segment(
        &mut self,
        now: Instant,
        pos: usize,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        len: usize,
    ) {
        self.stats.segments += 1;
        self.segment = Some(Segment {
            ssrc,
            base_ts: timestamp,
            base_pos: pos,
            highest_seq: sequence,
            newest_arrival: now,
            newest_len: len,
        });
    }

    /// Decodes `payload` into the recording at `pos`, filling any gap
    /// before it with silence; stops at the cap.
    fn place(&mut self, pos: usize, payload: &[u8]) {
        if pos >= self.max_samples {
            self.truncated = true;
            return;
        }
        let room = self.max_samples - pos;
        let take = payload.len().min(room);
        let end = pos + take;
        if end > self.samples.len() {
            if end > self.samples.capacity() {
                // Grow by doubling, but never past the cap: the cap is what
                // the memory bound promises.
                let want = end.max(self.samples.capacity() * 2).min(self.max_samples);
                self.samples.reserve_exact(want - self.samples.len());
            }
            self.samples.resize(end, 0);
        }
        self.codec
            .decode_slice(&payload[..take], &mut self.samples[pos..end]);
        self.stats.placed += 1;
        if take < payload.len() {
            self.truncated = true;
        }
    }

    /// The recording as a WAV file: 8 kHz, mono, 16-bit PCM.
    pub fn to_wav(&self) -> Result<Vec<u8>, hound::Error> {
        wav_bytes(&self.samples)
    }
}

/// `samples` as an 8 kHz mono 16-bit WAV file, in memory.
pub fn wav_bytes(samples: &[i16]) -> Result<Vec<u8>, hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    {
        let mut writer = hound::WavWriter::new(&mut out, spec)?;
        // In chunks: the 16-bit writer buffers what it is told to expect.
        for chunk in samples.chunks(4096) {
            let mut chunk_writer = writer.get_i16_writer(chunk.len() as u32);
            for &s in chunk {
                chunk_writer.write_sample(s);
            }
            chunk_writer.flush()?;
        }
        writer.finalize()?;
    }
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{self, RtpFields};

    const FRAME: usize = 160;

    /// A 20 ms payload whose samples are all `code`.
    fn frame(code: u8) -> Vec<u8> {
        vec![code; FRAME]
    }

    /// µ-law code for a recognisable non-zero level, one per frame number.
    fn code(n: u8) -> u8 {
        // 0x00..0x7e are negative levels, all distinct and non-zero.
        n % 0x7e
    }

    fn level(n: u8) -> i16 {
        Codec::Pcmu.decode(code(n))
    }

    struct Feed {
        rec: Recorder,
        t0: Instant,
    }

    impl Feed {
        fn new(max: Duration) -> Feed {
            Feed {
                rec: Recorder::new(Codec::Pcmu, max),
                t0: Instant::now(),
            }
        }

        /// Frame `n` of a stream: sequence `seq0 + n`, timestamp `ts0 +
        /// 160 n`, arriving at `at_ms`.
        fn packet(&mut self, at_ms: u64, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) {
            let mut buf = [0u8; 400];
            let fields = RtpFields {
                marker: false,
                payload_type: 0,
                sequence: seq,
                timestamp: ts,
                ssrc,
            };
            let len = rtp::write_packet(&mut buf, &fields, payload).unwrap();
            let header = RtpHeader::parse(&buf[..len]).unwrap();
            self.rec
                .handle_packet(self.t0 + Duration::from_millis(at_ms), &header);
        }

        fn frame_n(&mut self, at_ms: u64, n: u16) {
            self.packet(
                at_ms,
                7,
                1000u16.wrapping_add(n),
                5000 + u32::from(n) * FRAME as u32,
                &frame(code(n as u8)),
            );
        }

        /// The level of each 20 ms frame of the recording (`None` for a
        /// frame that is not uniform).
        fn frames(&self) -> Vec<Option<i16>> {
            self.rec
                .samples()
                .chunks(FRAME)
                .map(|c| c.iter().all(|s| *s == c[0]).then_some(c[0]))
                .collect()
        }
    }

    #[test]
    fn in_order_frames_are_decoded_back_to_back() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        for n in 0..3 {
            f.frame_n(20 * u64::from(n), n);
        }
        assert_eq!(
            f.frames(),
            vec![Some(level(0)), Some(level(1)), Some(level(2))]
        );
        assert_eq!(f.rec.duration(), Duration::from_millis(60));
        assert_eq!(f.rec.stats().segments, 1);
        assert!(!f.rec.is_truncated());
    }

    #[test]
    fn a_timestamp_gap_is_silence_as_long_as_the_gap() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 0);
        // The bridge says nothing for 2 s; its timestamp runs on.
        f.frame_n(2000, 100);
        let frames = f.frames();
        assert_eq!(frames.len(), 101);
        assert_eq!(frames[0], Some(level(0)));
        assert!(frames[1..100].iter().all(|l| *l == Some(0)), "{frames:?}");
        assert_eq!(frames[100], Some(level(100)));
        assert_eq!(f.rec.stats().segments, 1);
    }

    #[test]
    fn a_reordered_packet_fills_its_place() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 0);
        f.frame_n(20, 2);
        f.frame_n(40, 1);
        f.frame_n(60, 3);
        assert_eq!(
            f.frames(),
            vec![
                Some(level(0)),
                Some(level(1)),
                Some(level(2)),
                Some(level(3))
            ]
        );
        assert_eq!(f.rec.stats().late, 1);
        assert_eq!(f.rec.stats().dropped, 0);
    }

    #[test]
    fn a_duplicate_changes_nothing() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 0);
        f.frame_n(20, 1);
        f.frame_n(25, 1);
        f.frame_n(30, 0);
        f.frame_n(40, 2);
        assert_eq!(
            f.frames(),
            vec![Some(level(0)), Some(level(1)), Some(level(2))]
        );
        assert_eq!(f.rec.stats().late, 2);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        // Sequence 1000 + n wraps at n = 64536.
        let n0 = 65534u16.wrapping_sub(1000);
        for k in 0..4u16 {
            f.frame_n(20 * u64::from(k), n0.wrapping_add(k));
        }
        assert_eq!(f.frames().len(), 4);
        assert!(f.frames().iter().all(Option::is_some));
        assert_eq!(f.rec.stats().late, 0);
        assert_eq!(f.rec.stats().segments, 1);
    }

    #[test]
    fn timestamps_wrap() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        let ts0 = u32::MAX - 100;
        for k in 0..3u16 {
            let ts = ts0.wrapping_add(u32::from(k) * FRAME as u32);
            f.packet(20 * u64::from(k), 9, k, ts, &frame(code(k as u8)));
        }
        assert_eq!(
            f.frames(),
            vec![Some(level(0)), Some(level(1)), Some(level(2))]
        );
    }

    #[test]
    fn a_packet_older_than_the_segment_is_dropped() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 5);
        f.frame_n(20, 6);
        // Frame 4 would go before the first sample recorded.
        f.frame_n(40, 4);
        assert_eq!(f.frames(), vec![Some(level(5)), Some(level(6))]);
        assert_eq!(f.rec.stats().dropped, 1);
    }

    #[test]
    fn a_timestamp_jump_is_a_new_segment_placed_by_arrival() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 0);
        // Next packet in sequence, timestamp 3 hours ahead, arriving 100 ms
        // later: 80 ms of silence, not 3 hours.
        let three_hours = 3 * 3600 * SAMPLE_RATE;
        f.packet(100, 7, 1001, 5000 + three_hours, &frame(code(1)));
        f.packet(120, 7, 1002, 5000 + three_hours + 160, &frame(code(2)));
        let frames = f.frames();
        assert_eq!(
            frames,
            vec![
                Some(level(0)),
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(level(1)),
                Some(level(2))
            ]
        );
        assert_eq!(f.rec.stats().segments, 2);
    }

    #[test]
    fn a_long_arrival_gap_across_segments_is_capped() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 0);
        // A new SSRC two hours later.
        f.packet(2 * 3600 * 1000, 8, 1, 1, &frame(code(1)));
        let max_gap = samples_in(MAX_GAP);
        assert_eq!(f.rec.samples().len(), max_gap + FRAME);
        assert_eq!(f.rec.samples()[max_gap], level(1));
    }

    #[test]
    fn a_timestamp_going_back_is_a_new_segment_not_an_overwrite() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        for n in 0..10 {
            f.frame_n(20 * u64::from(n), n);
        }
        // The sender restarts its clock: newer sequence, timestamp 5000 again.
        f.packet(200, 7, 1010, 5000, &frame(code(50)));
        let frames = f.frames();
        assert_eq!(frames.len(), 11);
        assert_eq!(frames[0], Some(level(0)), "the start is not overwritten");
        assert_eq!(frames[10], Some(level(50)));
        assert_eq!(f.rec.stats().segments, 2);
    }

    #[test]
    fn a_new_ssrc_is_a_new_segment() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 0);
        f.packet(20, 99, 1, 77, &frame(code(3)));
        // A late packet of the old stream is not placed by the new one's origin.
        f.frame_n(30, 1);
        assert_eq!(f.frames(), vec![Some(level(0)), Some(level(3))]);
        assert_eq!(f.rec.stats().segments, 2);
        assert_eq!(f.rec.stats().dropped, 1);
    }

    #[test]
    fn the_cap_stops_the_recording() {
        let mut f = Feed::new(Duration::from_millis(50));
        for n in 0..5 {
            f.frame_n(20 * u64::from(n), n);
        }
        assert!(f.rec.is_truncated());
        assert_eq!(f.rec.samples().len(), 400, "50 ms at 8 kHz");
        assert_eq!(f.rec.samples()[320], level(2));
        assert!(
            f.rec.samples.capacity() <= 400,
            "memory stays under the cap"
        );
        // A packet beyond the cap records nothing, not even the gap.
        let mut g = Feed::new(Duration::from_millis(50));
        g.frame_n(0, 0);
        g.frame_n(1000, 50);
        assert_eq!(g.rec.samples().len(), 160);
        assert!(g.rec.is_truncated());
        g.frame_n(1020, 1);
        assert_eq!(g.rec.stats().placed, 1, "nothing is placed once cut");
    }

    #[test]
    fn pcma_is_decoded_as_pcma() {
        let mut rec = Recorder::new(Codec::Pcma, DEFAULT_MAX_DURATION);
        rec.handle_audio(Instant::now(), 1, 1, 1, &[0x2a, 0xd5]);
        assert_eq!(
            rec.samples(),
            &[Codec::Pcma.decode(0x2a), Codec::Pcma.decode(0xd5)]
        );
    }

    #[test]
    fn the_wav_reads_back_as_8_khz_mono_16_bit() {
        let mut f = Feed::new(DEFAULT_MAX_DURATION);
        f.frame_n(0, 0);
        f.frame_n(40, 2);
        let bytes = f.rec.to_wav().unwrap();
        let mut reader = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (8000, 1, 16)
        );
        let back: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(back, f.rec.samples());
        assert_eq!(back.len(), 3 * FRAME);
    }

    #[test]
    fn an_empty_recording_is_a_valid_empty_wav() {
        let rec = Recorder::with_default_cap(Codec::Pcmu);
        let bytes = rec.to_wav().unwrap();
        let reader = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(reader.len(), 0);
    }
}
