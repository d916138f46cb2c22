//! In-band DTMF: a Goertzel detector over G.711 audio, and the tone generator callers use.
//!
//! [`InbandDetector`] takes linear 16-bit PCM at 8 kHz (decoded G.711; the
//! decoding is the `g711` module's job) and reports each key press once,
//! with the time its tone started. [`ToneGenerator`] makes the samples a
//! caller sends to press keys in-band.
//!
//! How the detector decides (the classic Goertzel receiver, with the checks
//! ITU-T Q.24 asks for):
//! - windows of [`BLOCK`] samples (12.75 ms: bins 78 Hz wide, enough to tell
//!   neighbouring DTMF frequencies apart) every [`HOP`] samples, so tone
//!   edges are known to a few ms and 30 ms can be told from 40 ms;
//! - per window, the power at the 8 DTMF frequencies and at the 2nd
//!   harmonics of the 4 high-group ones;
//! - a window is a hit for a key when both tones are loud enough, each is the
//!   clear peak of its group, the twist is within limits (high group at most
//!   8 dB above the low group, at most 4 dB below), the two tones carry most
//!   of the window's energy, and the high tone has no strong 2nd harmonic
//!   (voice has harmonics, a DTMF generator does not);
//! - a press needs hits for about [`MIN_TONE`], and a new press of the same
//!   key needs a pause of about [`MIN_GAP`] (shorter dropouts are part of
//!   the same press, as Q.24 says of interruptions up to 10 ms).
//!
//! Not here: G.711 decoding, sample rates other than 8 kHz, and the Q.24
//! frequency-deviation rejection (±3.5 %), which needs longer windows than
//! a fast detector can afford.

use std::collections::VecDeque;
use std::f64::consts::PI;
use std::time::{Duration, Instant};

use super::Digit;

/// Samples per second of the PCM the detector and generator use.
pub const SAMPLE_RATE: u32 = 8000;

/// Samples per analysis window (the usual 102 for 8 kHz DTMF receivers).
pub const BLOCK: usize = 102;

/// Samples between the starts of consecutive windows.
pub const HOP: usize = 17;

/// Shortest tone reported as a key press (Q.24: 40 ms must be accepted;
/// shorter than about 30 ms must not).
pub const MIN_TONE: Duration = Duration::from_millis(36);

/// Shortest pause that separates two presses of the same key.
pub const MIN_GAP: Duration = Duration::from_millis(20);

/// Low group (rows) and high group (columns), Hz.
pub const ROW_HZ: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
pub const COL_HZ: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// Keys by row and column of the keypad.
const KEYPAD: [[Digit; 4]; 4] = [
    [Digit::D1, Digit::D2, Digit::D3, Digit::A],
    [Digit::D4, Digit::D5, Digit::D6, Digit::B],
    [Digit::D7, Digit::D8, Digit::D9, Digit::C],
    [Digit::Star, Digit::D0, Digit::Pound, Digit::D],
];

/// Peak amplitude in 16-bit linear PCM of a 0 dBm0 sine: G.711's full-scale
/// sine is +3.17 dBm0 (G.711 Table 1/2), 32635 once scaled to 16 bits.
pub const DBM0_AMPLITUDE: f64 = 22_700.0;

/// Each tone at least this loud (dBm0); Q.24 sensitivities range about
/// -25 to -36 dBm0.
const MIN_LEVEL_DBM0: f64 = -30.0;
/// Each tone's power at least this many times that of the other
/// frequencies of its group (8 dB).
const GROUP_DOMINANCE: f64 = 6.3;
/// High group stronger than low group by at most 8 dB ("normal" twist).
const NORMAL_TWIST: f64 = 6.3;
/// Low group stronger than high group by at most 4 dB ("reverse" twist).
const REVERSE_TWIST: f64 = 2.5;
/// The two tones carry at least this share of the window's energy. A
/// window only partly covered by a tone has a share about equal to the
/// covered fraction, which (with the group-dominance check, as a cut-off
/// tone's spectrum smears) keeps tone edges sharp. Also rejects a key's
/// frequencies inside louder sound (speech, music).
const TONE_SHARE: f64 = 0.75;
/// The high tone's 2nd harmonic is at least 10 dB below it. Only the high
/// group is checked: low-group harmonics (1394-1882 Hz) fall within a bin
/// of high-group tones, whose leakage would reject real keys.
const HARMONIC_RATIO: f64 = 0.1;

/// One Goertzel filter: the power of one frequency over a block.
#[derive(Clone, Copy, Debug)]
pub struct Goertzel {
    coeff: f64,
}

impl Goertzel {
    pub fn new(freq_hz: f64, sample_rate: u32) -> Goertzel {
        Goertzel {
            coeff: 2.0 * (2.0 * PI * freq_hz / f64::from(sample_rate)).cos(),
        }
    }

    /// `|X(f)|²` over `samples` (the DTFT at exactly the filter frequency).
    pub fn power(&self, samples: &[f64]) -> f64 {
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s = x + self.coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - self.coeff * s1 * s2).max(0.0)
    }

    /// The energy of the sinusoid at this frequency in `samples`: scaled so a
    /// full-block sine of amplitude `a` gives `a² n / 2`, its energy.
    pub fn tone_energy(&self, samples: &[f64]) -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        2.0 * self.power(samples) / samples.len() as f64
    }
}

/// A key press heard in the audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InbandDigit {
    pub digit: Digit,
    /// When the tone started (to within a few ms).
    pub at: Instant,
}

#[derive(Debug)]
struct Tone {
    digit: Digit,
    start: Instant,
    hits: usize,
    misses: usize,
    reported: bool,
}

/// Finds key presses in 8 kHz linear PCM. No IO, no clock.
#[derive(Debug)]
pub struct InbandDetector {
    rows: [Goertzel; 4],
    cols: [Goertzel; 4],
    col_harmonics: [Goertzel; 4],
    /// Samples not yet slid past; `buf[0]` was heard at `buf_start`.
    buf: Vec<f64>,
    buf_start: Option<Instant>,
    tone: Option<Tone>,
    out: VecDeque<InbandDigit>,
}

impl Default for InbandDetector {
    fn default() -> Self {
        InbandDetector::new()
    }
}

/// Hit windows needed for a press. A tone of `L` samples gives about
/// `(L - (2 * TONE_SHARE - 1) * BLOCK) / HOP` hits (windows at least
/// `TONE_SHARE` covered), so this is [`MIN_TONE`] in windows.
const MIN_HITS: usize = {
    let tone = (MIN_TONE.as_millis() as usize) * (SAMPLE_RATE as usize) / 1000;
    let edge = BLOCK / 2; // (2 * 0.75 - 1) * BLOCK
    (tone - edge).div_ceil(HOP)
};

/// Miss windows that end a press: a pause of `G` samples gives about
/// `(G + (2 * TONE_SHARE - 1) * BLOCK) / HOP` misses.
const GAP_MISSES: usize = {
    let gap = (MIN_GAP.as_millis() as usize) * (SAMPLE_RATE as usize) / 1000;
    (gap + BLOCK / 2).div_ceil(HOP)
};

const SAMPLE_TIME: Duration = Duration::from_nanos(1_000_000_000 / SAMPLE_RATE as u64);

impl InbandDetector {
    pub fn new() -> InbandDetector {
        let g = |hz: f64| Goertzel::new(hz, SAMPLE_RATE);
        InbandDetector {
            rows: ROW_HZ.map(g),
            cols: COL_HZ.map(g),
            col_harmonics: COL_HZ.map(|hz| g(2.0 * hz)),
            buf: Vec::with_capacity(2 * BLOCK),
            buf_start: None,
            tone: None,
            out: VecDeque::new(),
        }
    }

    /// Feeds audio; `now` is when `samples[0]` was heard. Samples are taken
    /// to follow on from the previous call without a gap.
    pub fn handle_samples(&mut self, now: Instant, samples: &[i16]) {
        for (i, &x) in samples.iter().enumerate() {
            if self.buf.is_empty() {
                self.buf_start = Some(now + SAMPLE_TIME * i as u32);
            }
            self.buf.push(f64::from(x));
            if self.buf.len() >= BLOCK {
                let at = self.buf_start.unwrap_or(now);
                let hit = self.classify();
                self.track(at, hit);
                self.buf.drain(..HOP);
                self.buf_start = Some(at + SAMPLE_TIME * HOP as u32);
            }
        }
    }

    /// The next key press heard, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<InbandDigit> {
        self.out.pop_front()
    }

    /// The key whose tones fill the current window, if any.
    fn classify(&self) -> Option<Digit> {
        let w = &self.buf[..BLOCK];
        let energy: f64 = w.iter().map(|x| x * x).sum();
        let rows = self.rows.map(|g| g.tone_energy(w));
        let cols = self.cols.map(|g| g.tone_energy(w));
        let (ri, row) = peak(&rows);
        let (ci, col) = peak(&cols);

        let min_amp = DBM0_AMPLITUDE * 10f64.powf(MIN_LEVEL_DBM0 / 20.0);
        let min_energy = min_amp * min_amp * BLOCK as f64 / 2.0;
        let loud = row >= min_energy && col >= min_energy;
        let dominant = |group: &[f64; 4], i: usize, p: f64| {
            group
                .iter()
                .enumerate()
                .all(|(j, &q)| j == i || q * GROUP_DOMINANCE <= p)
        };
        let twist_ok = col <= row * NORMAL_TWIST && row <= col * REVERSE_TWIST;
        let share_ok = row + col >= TONE_SHARE * energy;
        let harmonic_ok = self.col_harmonics[ci].tone_energy(w) <= HARMONIC_RATIO * col;

        (loud
            && dominant(&rows, ri, row)
            && dominant(&cols, ci, col)
            && twist_ok
            && share_ok
            && harmonic_ok)
            .then_some(KEYPAD[ri][ci])
    }

    /// Turns per-window hits into presses: enough hits in a row make a
    /// press, reported once; a long enough run of misses ends it.
    fn track(&mut self, at: Instant, hit: Option<Digit>) {
        match (hit, self.tone.as_mut()) {
            (Some(d), Some(t)) if t.digit == d => {
                t.hits += 1;
                t.misses = 0;
            }
            (Some(d), _) => {
                self.tone = Some(Tone {
                    digit: d,
                    start: at,
                    hits: 1,
                    misses: 0,
                    reported: false,
                });
            }
            (None, Some(t)) => {
                t.misses += 1;
                // A candidate must be continuous; a reported press survives
                // dropouts shorter than the minimum pause.
                if !t.reported || t.misses >= GAP_MISSES {
                    self.tone = None;
                }
            }
            (None, None) => {}
        }
        if let Some(t) = self.tone.as_mut()
            && !t.reported
            && t.hits >= MIN_HITS
        {
            t.reported = true;
            self.out.push_back(InbandDigit {
                digit: t.digit,
                at: t.start,
            });
        }
    }
}

fn peak(p: &[f64; 4]) -> (usize, f64) {
    p.iter().copied().enumerate().fold(
        (0, f64::MIN),
        |best, (i, v)| if v > best.1 { (i, v) } else { best },
    )
}

/// The low- and high-group frequencies of a key, Hz.
pub fn frequencies(digit: Digit) -> (f64, f64) {
    let (row, col) = match digit {
        Digit::D1 => (0, 0),
        Digit::D2 => (0, 1),
        Digit::D3 => (0, 2),
        Digit::A => (0, 3),
        Digit::D4 => (1, 0),
        Digit::D5 => (1, 1),
        Digit::D6 => (1, 2),
        Digit::B => (1, 3),
        Digit::D7 => (2, 0),
        Digit::D8 => (2, 1),
        Digit::D9 => (2, 2),
        Digit::C => (2, 3),
        Digit::Star => (3, 0),
        Digit::D0 => (3, 1),
        Digit::Pound => (3, 2),
        Digit::D => (3, 3),
    };
    (ROW_HZ[row], COL_HZ[col])
}

/// The 16-bit peak amplitude of a sine at `dbm0` (G.711 scale).
pub fn dbm0_amplitude(dbm0: f64) -> i16 {
    (DBM0_AMPLITUDE * 10f64.powf(dbm0 / 20.0)).clamp(0.0, f64::from(i16::MAX)) as i16
}

/// Makes in-band DTMF: both tones of a key at one amplitude each, then
/// silence. Pure: the caller encodes and paces the samples.
#[derive(Clone, Copy, Debug)]
pub struct ToneGenerator {
    amplitude: i16,
}

impl Default for ToneGenerator {
    /// Each tone at -8 dBm0, a typical telephone level.
    fn default() -> Self {
        ToneGenerator::new(dbm0_amplitude(-8.0))
    }
}

impl ToneGenerator {
    /// `amplitude` is the peak of each of the two tones; their sum is
    /// clipped to 16 bits if it would overflow.
    pub fn new(amplitude: i16) -> ToneGenerator {
        ToneGenerator { amplitude }
    }

    /// The tones of `digit` for `duration`.
    pub fn tone(&self, digit: Digit, duration: Duration) -> Vec<i16> {
        let (low, high) = frequencies(digit);
        let a = f64::from(self.amplitude);
        let step = 2.0 * PI / f64::from(SAMPLE_RATE);
        (0..samples_for(duration))
            .map(|n| {
                let t = step * n as f64;
                let x = a * (low * t).sin() + a * (high * t).sin();
                x.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
            })
            .collect()
    }

    /// Silence for `duration`.
    pub fn silence(&self, duration: Duration) -> Vec<i16> {
        vec![0; samples_for(duration)]
    }

    /// One key press: the tone, then the pause after it.
    pub fn press(&self, digit: Digit, tone: Duration, pause: Duration) -> Vec<i16> {
        let mut out = self.tone(digit, tone);
        out.extend(self.silence(pause));
        out
    }
}

fn samples_for(duration: Duration) -> usize {
    (duration.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000)
        .try_into()
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const ALL: &str = "0123456789*#ABCD";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs `samples` through a detector in 160-sample (20 ms) packets.
    fn detect(t0: Instant, samples: &[i16]) -> Vec<InbandDigit> {
        let mut det = InbandDetector::new();
        for (i, chunk) in samples.chunks(160).enumerate() {
            det.handle_samples(t0 + ms(20) * i as u32, chunk);
        }
        std::iter::from_fn(|| det.poll_output()).collect()
    }

    fn digits(samples: &[i16]) -> String {
        detect(Instant::now(), samples)
            .iter()
            .map(|d| d.digit.as_char())
            .collect()
    }

    /// Two tones at separate levels (dBm0), for twist.
    fn dual(low: f64, high: f64, low_db: f64, high_db: f64, d: Duration) -> Vec<i16> {
        let (al, ah) = (
            f64::from(dbm0_amplitude(low_db)),
            f64::from(dbm0_amplitude(high_db)),
        );
        (0..samples_for(d))
            .map(|n| {
                let t = 2.0 * PI * n as f64 / 8000.0;
                (al * (low * t).sin() + ah * (high * t).sin()) as i16
            })
            .collect()
    }

    /// G.711 µ-law round trip, so detection is tested on codec audio.
    fn mulaw(x: i16) -> i16 {
        const BIAS: i32 = 0x84;
        let m = i32::from(x).abs().min(32635) + BIAS;
        let exp = (31 - (m as u32).leading_zeros() as i32 - 7).clamp(0, 7);
        let mant = (m >> (exp + 3)) & 0x0f;
        let y = (((mant << 3) + BIAS) << exp) - BIAS;
        (if x < 0 { -y } else { y }) as i16
    }

    fn silence(d: Duration) -> Vec<i16> {
        ToneGenerator::default().silence(d)
    }

    #[test]
    fn goertzel_measures_a_sine_energy() {
        let g = Goertzel::new(1000.0, 8000);
        let sine: Vec<f64> = (0..160)
            .map(|n| 1000.0 * (2.0 * PI * 1000.0 * n as f64 / 8000.0).sin())
            .collect();
        let e = g.tone_energy(&sine);
        assert!((e / (1000.0 * 1000.0 * 80.0) - 1.0).abs() < 0.01, "{e}");
        assert!(Goertzel::new(1500.0, 8000).tone_energy(&sine) < e / 1000.0);
        assert_eq!(g.tone_energy(&[]), 0.0);
    }

    #[test]
    fn every_digit_at_typical_levels_is_detected_exactly_once() {
        for level in [-3.0, -8.0, -15.0, -25.0] {
            let generator = ToneGenerator::new(dbm0_amplitude(level));
            for c in ALL.chars() {
                let d = Digit::from_char(c).unwrap();
                let mut s = silence(ms(30));
                s.extend(generator.press(d, ms(100), ms(100)));
                let codec: Vec<i16> = s.iter().map(|&x| mulaw(x)).collect();
                assert_eq!(digits(&s), c.to_string(), "{c} at {level} dBm0");
                assert_eq!(digits(&codec), c.to_string(), "{c} at {level} dBm0, µ-law");
            }
        }
    }

    #[test]
    fn a_whole_number_is_read_in_order_with_start_times() {
        let generator = ToneGenerator::default();
        let mut s = Vec::new();
        for c in "1234567#".chars() {
            s.extend(generator.press(Digit::from_char(c).unwrap(), ms(80), ms(70)));
        }
        let t0 = Instant::now();
        let got = detect(t0, &s);
        let text: String = got.iter().map(|d| d.digit.as_char()).collect();
        assert_eq!(text, "1234567#");
        for (i, d) in got.iter().enumerate() {
            let start = ms(150) * i as u32;
            let err = d.at.saturating_duration_since(t0 + start)
                + (t0 + start).saturating_duration_since(d.at);
            assert!(err <= ms(5), "press {i} at {:?}", d.at - t0);
        }
    }

    #[test]
    fn tones_of_40_ms_are_accepted_and_30_ms_rejected_at_any_alignment() {
        let generator = ToneGenerator::default();
        for lead in 0..HOP as u64 {
            for c in ALL.chars() {
                let d = Digit::from_char(c).unwrap();
                let mut s = vec![0; lead as usize + 40];
                s.extend(generator.press(d, ms(40), ms(60)));
                assert_eq!(digits(&s), c.to_string(), "40 ms {c} lead {lead}");
                let mut s = vec![0; lead as usize + 40];
                s.extend(generator.press(d, ms(30), ms(60)));
                assert_eq!(digits(&s), "", "30 ms {c} lead {lead}");
            }
        }
    }

    #[test]
    fn a_held_tone_counts_once() {
        let generator = ToneGenerator::default();
        assert_eq!(digits(&generator.press(Digit::D5, ms(3000), ms(100))), "5");
        // A 5 ms dropout (Q.24: up to 10 ms is not a pause) is the same press.
        let mut s = generator.tone(Digit::D8, ms(200));
        s.extend(silence(ms(5)));
        s.extend(generator.press(Digit::D8, ms(200), ms(100)));
        assert_eq!(digits(&s), "8");
    }

    #[test]
    fn two_presses_of_a_key_with_a_50_ms_gap_count_twice() {
        let generator = ToneGenerator::default();
        let mut s = generator.press(Digit::D4, ms(60), ms(50));
        s.extend(generator.press(Digit::D4, ms(60), ms(100)));
        assert_eq!(digits(&s), "44");
    }

    #[test]
    fn noise_is_not_a_key() {
        let mut rng = StdRng::seed_from_u64(1);
        for amp in [300, 3000, 12000] {
            let noise: Vec<i16> = (0..8000 * 3)
                .map(|_| rng.random_range(-amp..=amp))
                .collect();
            assert_eq!(digits(&noise), "", "noise ±{amp}");
        }
    }

    #[test]
    fn a_single_sine_is_not_a_key() {
        for hz in ROW_HZ.iter().chain(&COL_HZ).chain(&[1000.0, 440.0]) {
            let s = dual(*hz, 3000.0, -6.0, -200.0, ms(500));
            assert_eq!(digits(&s), "", "{hz} Hz");
        }
    }

    #[test]
    fn a_voice_like_mix_of_harmonics_is_not_a_key() {
        // A vowel on f0 = 174.25 Hz: harmonics 4 and 7 land on 697 and
        // ~1220 Hz (key 1), with the rest of the series around them.
        let f0 = 174.25;
        let voice: Vec<i16> = (0..8000)
            .map(|n| {
                let t = 2.0 * PI * n as f64 / 8000.0;
                (1..=20)
                    .map(|k| 6000.0 / k as f64 * (k as f64 * f0 * t).sin())
                    .sum::<f64>() as i16
            })
            .collect();
        assert_eq!(digits(&voice), "");

        // Key 1's two tones, each with its 2nd harmonic at -6 dB: only the
        // harmonic check stands between this and a key; without the
        // harmonics it is one.
        let (lo, hi) = frequencies(Digit::D1);
        let pure = dual(lo, hi, -10.0, -10.0, ms(300));
        let harmonics = dual(2.0 * lo, 2.0 * hi, -16.0, -16.0, ms(300));
        let mix: Vec<i16> = pure.iter().zip(&harmonics).map(|(a, b)| a + b).collect();
        assert_eq!(digits(&pure), "1");
        assert_eq!(digits(&mix), "");
    }

    #[test]
    fn key_tones_buried_in_other_loud_sound_are_not_a_key() {
        // Key 6's tones with two other partials as loud (speech or music
        // passing through the DTMF frequencies): under half the energy is in
        // the key's tones. Only the energy-share check rejects this; with
        // the other partials 20 dB down it is a key.
        let (lo, hi) = frequencies(Digit::D6);
        let key = dual(lo, hi, -12.0, -12.0, ms(300));
        let with = |db: f64| -> String {
            let other = dual(400.0, 2200.0, db, db, ms(300));
            digits(
                &key.iter()
                    .zip(&other)
                    .map(|(a, b)| a + b)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(with(-12.0), "");
        assert_eq!(with(-32.0), "6");
    }

    #[test]
    fn twist_beyond_limits_is_rejected() {
        let (lo, hi) = frequencies(Digit::D9);
        let d = ms(200);
        // Normal twist (high group louder): 6 dB fine, 10 dB not.
        assert_eq!(digits(&dual(lo, hi, -12.0, -6.0, d)), "9");
        assert_eq!(digits(&dual(lo, hi, -16.0, -6.0, d)), "");
        // Reverse twist (low group louder): 3 dB fine, 6 dB not.
        assert_eq!(digits(&dual(lo, hi, -6.0, -9.0, d)), "9");
        assert_eq!(digits(&dual(lo, hi, -6.0, -12.0, d)), "");
    }

    #[test]
    fn tones_too_quiet_are_not_keys() {
        let quiet = ToneGenerator::new(dbm0_amplitude(-40.0));
        assert_eq!(digits(&quiet.press(Digit::D2, ms(200), ms(50))), "");
    }

    #[test]
    fn odd_chunk_sizes_and_extreme_samples_never_panic() {
        let mut det = InbandDetector::new();
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        for i in 0..500u32 {
            let len = rng.random_range(0..400);
            let s: Vec<i16> = (0..len)
                .map(|_| match rng.random_range(0..3) {
                    0 => i16::MIN,
                    1 => i16::MAX,
                    _ => rng.random_range(i16::MIN..=i16::MAX),
                })
                .collect();
            det.handle_samples(t0 + ms(u64::from(i)), &s);
        }
        det.handle_samples(t0, &[]);
        // Clipped full-scale junk is not a key.
        assert_eq!(det.poll_output(), None);
        // And the detector still works after it.
        det.handle_samples(
            t0 + ms(600),
            &ToneGenerator::default().press(Digit::C, ms(100), ms(50)),
        );
        assert_eq!(det.poll_output().map(|d| d.digit), Some(Digit::C));
    }

    #[test]
    fn generator_makes_the_asked_length_and_stays_in_range() {
        let generator = ToneGenerator::new(i16::MAX);
        let s = generator.press(Digit::D, ms(100), ms(50));
        assert_eq!(s.len(), 1200);
        assert!(s[800..].iter().all(|&x| x == 0));
        assert!(s[..800].contains(&i16::MAX), "clipped, not wrapped");
        assert_eq!(frequencies(Digit::Star), (941.0, 1209.0));
        assert_eq!(frequencies(Digit::D0), (941.0, 1336.0));
    }
}
