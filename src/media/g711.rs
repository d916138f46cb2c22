//! G.711 µ-law (PCMU) and A-law (PCMA) encoding and decoding (ITU-T G.711).
//!
//! Encoding follows the segment algorithm of the ITU-T reference code
//! (G.191 software tools, `g711.c`: `ulaw_compress` / `alaw_compress`), which
//! treats negative samples by their one's complement so that `x` and `!x`
//! differ only in the sign bit of the code. Decoding reads const 256-entry
//! tables built at compile time from the matching expansion rule
//! (`ulaw_expand` / `alaw_expand`): every code decodes to the middle of its
//! quantisation step.
//!
//! The slice helpers write into caller buffers and never allocate, so a
//! media loop can encode or decode 20 ms frames with no per-packet
//! allocation.
//!
//! This module does not know about RTP, packetisation or sample rates: it
//! maps 16-bit linear samples to 8-bit codes and back, and [`Codec`] names the
//! two static RTP payload types that carry them (RFC 3551 §4.5.14, table 4).

/// µ-law sign bit: set for positive samples (after the final inversion).
const ULAW_SIGN: u8 = 0x80;
/// A-law codes are transmitted with the even bits inverted (G.711 §2, table 1).
const ALAW_XOR: u8 = 0x55;

/// One of the two G.711 codecs, as negotiated in SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// µ-law, RTP payload type 0 ("PCMU/8000").
    Pcmu,
    /// A-law, RTP payload type 8 ("PCMA/8000").
    Pcma,
}

impl Codec {
    /// Both codecs, PCMU first (the order the bridge offers them).
    pub const ALL: [Codec; 2] = [Codec::Pcmu, Codec::Pcma];

    /// The static RTP payload type (RFC 3551 §6, table 4).
    pub const fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec that a static payload type names, if it is one of the two.
    pub const fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The encoding name used in SDP `a=rtpmap` (RFC 3551 §4.5.14).
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The code for digital silence (linear 0): 0xFF in µ-law, 0xD5 in A-law.
    pub const fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }

    /// Encodes one linear sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => ulaw_encode(sample),
            Codec::Pcma => alaw_encode(sample),
        }
    }

    /// Decodes one code to a linear sample.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_decode(code),
            Codec::Pcma => alaw_decode(code),
        }
    }

    /// Encodes `src` into `dst`; see [`ulaw_encode_slice`].
    pub fn encode_slice(self, src: &[i16], dst: &mut [u8]) -> usize {
        match self {
            Codec::Pcmu => ulaw_encode_slice(src, dst),
            Codec::Pcma => alaw_encode_slice(src, dst),
        }
    }

    /// Decodes `src` into `dst`; see [`ulaw_decode_slice`].
    pub fn decode_slice(self, src: &[u8], dst: &mut [i16]) -> usize {
        match self {
            Codec::Pcmu => ulaw_decode_slice(src, dst),
            Codec::Pcma => alaw_decode_slice(src, dst),
        }
    }
}

/// Encodes a 16-bit linear sample to µ-law.
///
/// The 14-bit magnitude (plus the bias of 33) is clipped at 8191, so
/// `i16::MAX` encodes to 0x80 and `i16::MIN` to 0x00 (the loudest codes).
/// Samples 0..=3 encode to 0xFF ("positive zero"), -1..=-4 to 0x7F
/// ("negative zero").
pub fn ulaw_encode(sample: i16) -> u8 {
    // G.191 ulaw_compress: one's complement of negatives, drop the 2 bits
    // µ-law does not carry, add the bias of 33, clip to 13 bits.
    let magnitude = if sample < 0 { !sample } else { sample };
    let biased = (((magnitude >> 2) as u16) + 33).min(0x1FFF);
    // Segment number 1..=8: one more than the bits left above bit 5.
    let mut segment = 1u8;
    let mut rest = biased >> 6;
    while rest != 0 {
        segment += 1;
        rest >>= 1;
    }
    let high = 8 - segment;
    let low = 0x0F - ((biased >> segment) & 0x0F) as u8;
    let code = (high << 4) | low;
    if sample >= 0 { code | ULAW_SIGN } else { code }
}

/// Decodes a µ-law code to a 16-bit linear sample (range ±32124).
///
/// 0xFF and 0x7F both decode to 0.
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// Encodes a 16-bit linear sample to A-law.
///
/// The magnitude keeps 12 bits, so `i16::MAX` encodes to 0xAA and `i16::MIN`
/// to 0x2A. A-law has no zero code: 0..=15 encode to 0xD5 (+8), -1..=-16
/// to 0x55 (-8).
pub fn alaw_encode(sample: i16) -> u8 {
    // G.191 alaw_compress: one's complement of negatives, keep 12 bits.
    let magnitude = if sample < 0 { !sample } else { sample };
    let mut ix = (magnitude >> 4) as u16;
    if ix > 15 {
        // Segments 1..=7: shift the mantissa down to 5 bits (leading 1 + 4).
        let mut exponent = 1u16;
        while ix > 16 + 15 {
            ix >>= 1;
            exponent += 1;
        }
        ix = ix - 16 + (exponent << 4);
    }
    let code = ix as u8;
    let code = if sample >= 0 { code | 0x80 } else { code };
    code ^ ALAW_XOR
}

/// Decodes an A-law code to a 16-bit linear sample (range ±32256).
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// Encodes `src` into `dst` as µ-law, without allocating. Converts
/// `min(src.len(), dst.len())` samples and returns that count; the rest of
/// `dst` is left as it was.
pub fn ulaw_encode_slice(src: &[i16], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = ulaw_encode(*s);
    }
    n
}

/// Decodes µ-law `src` into `dst`, without allocating. Converts
/// `min(src.len(), dst.len())` codes and returns that count.
pub fn ulaw_decode_slice(src: &[u8], dst: &mut [i16]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = ulaw_decode(*s);
    }
    n
}

/// Encodes `src` into `dst` as A-law, without allocating. Converts
/// `min(src.len(), dst.len())` samples and returns that count.
pub fn alaw_encode_slice(src: &[i16], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = alaw_encode(*s);
    }
    n
}

/// Decodes A-law `src` into `dst`, without allocating. Converts
/// `min(src.len(), dst.len())` codes and returns that count.
pub fn alaw_decode_slice(src: &[u8], dst: &mut [i16]) -> usize {
    let n = src.len().min(dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = alaw_decode(*s);
    }
    n
}

/// G.191 `ulaw_expand`: the code is transmitted inverted; magnitude =
/// ((0x80 << exponent) + step * mantissa + step / 2) - 4 * 33, with
/// step = 4 << (exponent + 1).
const fn ulaw_expand(code: u8) -> i16 {
    let inverted = !code;
    let exponent = ((inverted >> 4) & 0x07) as i32;
    let mantissa = (inverted & 0x0F) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if code & ULAW_SIGN != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// G.191 `alaw_expand`: undo the even-bit inversion, then magnitude =
/// ((16 + mantissa) << 4 + 8) << (exponent - 1), or mantissa << 4 + 8 in
/// segment 0.
const fn alaw_expand(code: u8) -> i16 {
    let ix = (code ^ ALAW_XOR) & 0x7F;
    let exponent = (ix >> 4) as i32;
    let mut mantissa = (ix & 0x0F) as i32;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 0x08;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    if code & 0x80 != 0 {
        mantissa as i16
    } else {
        -mantissa as i16
    }
}

// Const fns cannot call through function pointers, hence two loops.
const ULAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = ulaw_expand(code as u8);
        code += 1;
    }
    table
};

const ALAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = alaw_expand(code as u8);
        code += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every µ-law code survives decode then encode, except 0x7F: it is the
    /// "negative zero", decodes to 0 like 0xFF, and 0 encodes to 0xFF.
    #[test]
    fn ulaw_decode_then_encode_gives_every_code_back_except_negative_zero() {
        for code in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(code));
            if code == 0x7F {
                assert_eq!(back, 0xFF, "negative zero comes back as positive zero");
            } else {
                assert_eq!(
                    back,
                    code,
                    "code {code:#04x} decodes to {}",
                    ulaw_decode(code)
                );
            }
        }
    }

    #[test]
    fn alaw_decode_then_encode_gives_every_code_back() {
        for code in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "code {code:#04x}");
        }
    }

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        // Smallest non-zero steps: first segment has a step of 8.
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        // Segment boundaries: 0xF0 is the top of segment 0, 0xEF the bottom
        // of segment 1 (step 16).
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(ulaw_decode(0xEF), 132);
        // Spot values from an independent decoder (sox; its 256-entry
        // tables were compared whole when this was written).
        assert_eq!(ulaw_decode(0x01), -31100);
        assert_eq!(ulaw_decode(0x07), -24956);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        // Segments 0 and 1 share a step of 16.
        assert_eq!(alaw_decode(0xD4), 24);
        assert_eq!(alaw_decode(0xC5), 264);
        // Spot values from sox, as for µ-law.
        assert_eq!(alaw_decode(0x00), -5504);
        assert_eq!(alaw_decode(0x01), -5248);
        assert_eq!(alaw_decode(0x02), -6016);
    }

    /// Decoded values grow strictly with the magnitude bits within each sign:
    /// µ-law positive codes 0xFF down to 0x80, negative 0x7F down to 0x00;
    /// A-law magnitude order is of the code with the even bits restored.
    #[test]
    fn decode_is_strictly_monotonic_within_each_sign() {
        let ulaw_pos: Vec<i16> = (0x80..=0xFFu8).rev().map(ulaw_decode).collect();
        let ulaw_neg: Vec<i16> = (0x00..=0x7Fu8).rev().map(ulaw_decode).collect();
        assert!(ulaw_pos.windows(2).all(|w| w[0] < w[1]), "{ulaw_pos:?}");
        assert!(ulaw_neg.windows(2).all(|w| w[0] > w[1]), "{ulaw_neg:?}");
        assert!(ulaw_pos.iter().all(|&v| v >= 0) && ulaw_neg.iter().all(|&v| v <= 0));

        let alaw_pos: Vec<i16> = (0x80..=0xFFu8).map(|m| alaw_decode(m ^ ALAW_XOR)).collect();
        let alaw_neg: Vec<i16> = (0x00..=0x7Fu8).map(|m| alaw_decode(m ^ ALAW_XOR)).collect();
        assert!(alaw_pos.windows(2).all(|w| w[0] < w[1]), "{alaw_pos:?}");
        assert!(alaw_neg.windows(2).all(|w| w[0] > w[1]), "{alaw_neg:?}");
        assert!(alaw_pos.iter().all(|&v| v > 0) && alaw_neg.iter().all(|&v| v < 0));
    }

    #[test]
    fn encode_extremes_clip_to_the_loudest_codes() {
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        // Past the last decision level everything clips to the same code.
        assert_eq!(ulaw_encode(32124), 0x80);
        assert_eq!(ulaw_encode(-32124), 0x00);
        assert_eq!(alaw_encode(32256), 0xAA);
        assert_eq!(alaw_encode(-32256), 0x2A);
    }

    #[test]
    fn encode_small_values() {
        for s in 0..=3 {
            assert_eq!(ulaw_encode(s), 0xFF, "{s}");
        }
        for s in -4..=-1 {
            assert_eq!(ulaw_encode(s), 0x7F, "{s}");
        }
        assert_eq!(ulaw_encode(4), 0xFE);
        assert_eq!(ulaw_encode(-5), 0x7E);
        for s in 0..=15 {
            assert_eq!(alaw_encode(s), 0xD5, "{s}");
        }
        for s in -16..=-1 {
            assert_eq!(alaw_encode(s), 0x55, "{s}");
        }
        assert_eq!(alaw_encode(16), 0xD4);
        assert_eq!(alaw_encode(-17), 0x54);
    }

    /// The one's-complement rule: `x` and `!x` get the same magnitude code.
    #[test]
    fn encode_is_symmetric_under_ones_complement() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            assert_eq!(ulaw_encode(s) ^ 0x80, ulaw_encode(!s), "µ-law {s}");
            assert_eq!(alaw_encode(s) ^ 0x80, alaw_encode(!s), "A-law {s}");
        }
    }

    /// Encoding picks the nearest decision interval: the decoded value of a
    /// sample's code is within half a step (the largest step, 1024, at the
    /// top) of the sample, up to the clip level.
    #[test]
    fn encode_then_decode_stays_within_half_a_step() {
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(s)) as i32;
            let a = alaw_decode(alaw_encode(s)) as i32;
            let s = s as i32;
            let clip_u = s.clamp(-32124, 32124);
            let clip_a = s.clamp(-32256, 32256);
            // Half the step of the segment the sample falls in.
            let half_u = ((s.abs() + 132) >> 5).clamp(8, 512);
            assert!((u - clip_u).abs() <= half_u + 4, "µ-law {s} -> {u}");
            let half_a = (s.abs() >> 5).clamp(8, 512);
            assert!((a - clip_a).abs() <= half_a + 8, "A-law {s} -> {a}");
        }
    }

    #[test]
    fn codec_payload_types_and_silence() {
        assert_eq!(Codec::Pcmu.payload_type(), 0);
        assert_eq!(Codec::Pcma.payload_type(), 8);
        assert_eq!(Codec::from_payload_type(0), Some(Codec::Pcmu));
        assert_eq!(Codec::from_payload_type(8), Some(Codec::Pcma));
        assert_eq!(Codec::from_payload_type(101), None);
        assert_eq!(Codec::Pcmu.silence(), 0xFF);
        assert_eq!(Codec::Pcma.silence(), 0xD5);
        for codec in Codec::ALL {
            assert_eq!(codec.encode(0), codec.silence(), "{}", codec.name());
        }
    }

    #[test]
    fn slice_helpers_convert_the_shorter_length_and_leave_the_rest() {
        let pcm = [0i16, 1000, -1000, i16::MAX, i16::MIN];
        for codec in Codec::ALL {
            let mut codes = [0x11u8; 7];
            assert_eq!(codec.encode_slice(&pcm, &mut codes), 5);
            for (c, s) in codes.iter().zip(pcm) {
                assert_eq!(*c, codec.encode(s));
            }
            assert_eq!(&codes[5..], &[0x11, 0x11], "tail untouched");

            let mut short = [0u8; 2];
            assert_eq!(codec.encode_slice(&pcm, &mut short), 2);
            assert_eq!(short, [codec.encode(0), codec.encode(1000)]);

            let mut back = [7i16; 6];
            assert_eq!(codec.decode_slice(&codes[..5], &mut back), 5);
            for (b, c) in back.iter().zip(&codes[..5]) {
                assert_eq!(*b, codec.decode(*c));
            }
            assert_eq!(back[5], 7, "tail untouched");
            assert_eq!(codec.decode_slice(&[], &mut back), 0);
        }
    }
}
