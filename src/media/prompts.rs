//! The prompts the attendant plays, and their catalog of pre-encoded frames.
//!
//! [`PromptCatalog`] holds every [`PromptId`] as 20 ms G.711 frames in both
//! codecs, encoded once when the catalog is built, so playing a prompt (or a
//! thousand at once under load) is copying ready frames into RTP packets.
//! The shipped prompts (`prompts/*.wav`, made by `scripts/gen-prompts.sh`,
//! listed in `prompts/manifest.txt`) are compiled into the binary;
//! `--prompts DIR` swaps in a user's recordings of the same names.
//!
//! The listening side is here too: G.711 encoding is deterministic, so the
//! frames a caller receives are byte for byte the catalog's. [`PromptMatcher`]
//! indexes the frames, and [`PromptListener`] turns a stream of received
//! frames into "heard prompt X" / "prompt X ended" events that scenarios
//! and tests assert on.
//!
//! Not here: RTP headers, timestamps and pacing (the playout side sends one
//! frame per 20 ms), resampling (files must already be 8 kHz mono 16-bit
//! PCM: the error says how to convert), and recognising speech that is not
//! one of the catalog's prompts.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::media::g711::Codec;

/// A prompt the attendant plays. The names are the WAV files' names and
/// what scenarios and call records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PromptId {
    /// "Welcome to the dial-in conference service. Please enter your
    /// conference ID, followed by the pound key."
    Welcome,
    /// "That conference ID is not valid. Please try again."
    NotValid,
    /// "Sorry, we did not get any input."
    NoInput,
    /// "Goodbye."
    Goodbye,
    /// "Joining the meeting."
    Joining,
    /// "You are the first person in the meeting."
    FirstPerson,
}

impl PromptId {
    pub const ALL: [PromptId; 6] = [
        PromptId::Welcome,
        PromptId::NotValid,
        PromptId::NoInput,
        PromptId::Goodbye,
        PromptId::Joining,
        PromptId::FirstPerson,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PromptId::Welcome => "welcome",
            PromptId::NotValid => "not-valid",
            PromptId::NoInput => "no-input",
            PromptId::Goodbye => "goodbye",
            PromptId::Joining => "joining",
            PromptId::FirstPerson => "first-person",
        }
    }
}

impl fmt::Display for PromptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PromptId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PromptId::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = PromptId::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "'{s}' is not a prompt: the prompts are {}",
                    names.join(", ")
                )
            })
    }
}

/// The sample rate of every prompt and of G.711 (RFC 3551 §4.5.14).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples (and G.711 bytes) in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// The duration of one frame: the packetisation interval the bridge uses.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// The longest recording `load_dir` accepts: prompts are sentences, and a
/// mistaken hour-long file would otherwise sit in memory three times over.
pub const MAX_PROMPT_DURATION: Duration = Duration::from_secs(120);

/// One 20 ms frame of G.711 codes: an RTP payload.
pub type Frame = [u8; FRAME_SAMPLES];

/// The shipped prompts, in [`PromptId::ALL`] order, compiled in so the
/// binary needs no files.
const EMBEDDED: [(PromptId, &[u8]); 6] = [
    (
        PromptId::Welcome,
        include_bytes!("../../prompts/welcome.wav"),
    ),
    (
        PromptId::NotValid,
        include_bytes!("../../prompts/not-valid.wav"),
    ),
    (
        PromptId::NoInput,
        include_bytes!("../../prompts/no-input.wav"),
    ),
    (
        PromptId::Goodbye,
        include_bytes!("../../prompts/goodbye.wav"),
    ),
    (
        PromptId::Joining,
        include_bytes!("../../prompts/joining.wav"),
    ),
    (
        PromptId::FirstPerson,
        include_bytes!("../../prompts/first-person.wav"),
    ),
];

/// What a prompt file must be, said in every format error.
const EXPECTED_FORMAT: &str = "8000 Hz, mono, 16-bit signed integer PCM WAV";

/// Why a prompt set could not be loaded. Each message names the file and
/// says what it should be.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error(
        "prompts directory {} cannot be read ({source}): expected a directory holding {}",
        dir.display(), expected_files()
    )]
    Dir { dir: PathBuf, source: io::Error },
    #[error(
        "prompt file {} is missing: a prompts directory needs {}, each an {EXPECTED_FORMAT}",
        path.display(), expected_files()
    )]
    Missing { path: PathBuf },
    #[error("prompt file {} cannot be read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("prompt file {} is not a readable WAV file ({source}): expected an {EXPECTED_FORMAT}", path.display())]
    NotWav { path: PathBuf, source: hound::Error },
    #[error(
        "prompt file {} is {found}: expected an {EXPECTED_FORMAT} \
         (convert it with: sox IN.wav -r 8000 -c 1 -b 16 -e signed-integer {})",
        path.display(), path.display()
    )]
    Format { path: PathBuf, found: String },
    #[error(
        "prompt file {} is {seconds} s long: expected at most {} s",
        path.display(), MAX_PROMPT_DURATION.as_secs()
    )]
    TooLong { path: PathBuf, seconds: u64 },
    #[error("prompt file {} has no samples: expected at least one 20 ms frame of audio", path.display())]
    Empty { path: PathBuf },
}

fn expected_files() -> String {
    let names: Vec<String> = PromptId::ALL
        .iter()
        .map(|p| format!("{}.wav", p.as_str()))
        .collect();
    names.join(", ")
}

/// Position of a prompt in [`PromptId::ALL`] and in the catalog's tables.
fn slot(prompt: PromptId) -> usize {
    match prompt {
        PromptId::Welcome => 0,
        PromptId::NotValid => 1,
        PromptId::NoInput => 2,
        PromptId::Goodbye => 3,
        PromptId::Joining => 4,
        PromptId::FirstPerson => 5,
    }
}

/// One prompt, encoded.
#[derive(Clone, Debug)]
struct Encoded {
    samples: usize,
    pcmu: Vec<Frame>,
    pcma: Vec<Frame>,
}

impl Encoded {
    fn new(pcm: &[i16]) -> Self {
        Encoded {
            samples: pcm.len(),
            pcmu: encode_frames(pcm, Codec::Pcmu),
            pcma: encode_frames(pcm, Codec::Pcma),
        }
    }
}

/// Cuts `pcm` into 20 ms frames, the last one padded with silence so that
/// every RTP payload is a full 160 bytes.
fn encode_frames(pcm: &[i16], codec: Codec) -> Vec<Frame> {
    pcm.chunks(FRAME_SAMPLES)
        .map(|chunk| {
            let mut frame = [codec.silence(); FRAME_SAMPLES];
            codec.encode_slice(chunk, &mut frame);
            frame
        })
        .collect()
}

/// Every prompt as ready-to-send 20 ms PCMU and PCMA frames.
#[derive(Clone, Debug)]
pub struct PromptCatalog {
    /// Indexed by [`slot`]; always one entry per [`PromptId`].
    prompts: Vec<Encoded>,
}

impl PromptCatalog {
    /// The prompts shipped in `prompts/`, compiled into the binary.
    ///
    /// Fails only if a shipped file is broken, which the tests rule out.
    pub fn embedded() -> Result<Self, PromptError> {
        let mut prompts = Vec::with_capacity(EMBEDDED.len());
        for (prompt, bytes) in EMBEDDED {
            let label = PathBuf::from(format!("prompts/{prompt}.wav (embedded)"));
            prompts.push(Encoded::new(&read_wav(&label, bytes)?));
        }
        Ok(PromptCatalog { prompts })
    }

    /// A user's own recordings: `DIR/<name>.wav` for every [`PromptId`]
    /// name, each 8 kHz mono 16-bit PCM. Nothing is resampled or converted:
    /// a file in another format is an error that says how to convert it.
    pub fn load_dir(dir: &Path) -> Result<Self, PromptError> {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(PromptError::Dir {
                    dir: dir.to_path_buf(),
                    source: io::Error::other("it is not a directory"),
                });
            }
            Err(source) => {
                return Err(PromptError::Dir {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        }
        let mut prompts = Vec::with_capacity(PromptId::ALL.len());
        for prompt in PromptId::ALL {
            let path = dir.join(format!("{prompt}.wav"));
            let file = File::open(&path).map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    PromptError::Missing { path: path.clone() }
                } else {
                    PromptError::Read {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
            prompts.push(Encoded::new(&read_wav(&path, BufReader::new(file))?));
        }
        Ok(PromptCatalog { prompts })
    }

    /// A catalog from linear samples at 8 kHz (synthetic prompts for tests
    /// of the layers above). An empty prompt has no frames.
    pub fn from_pcm(mut pcm: impl FnMut(PromptId) -> Vec<i16>) -> Self {
        let prompts = PromptId::ALL
            .into_iter()
            .map(|prompt| Encoded::new(&pcm(prompt)))
            .collect();
        PromptCatalog { prompts }
    }

    fn get(&self, prompt: PromptId) -> &Encoded {
        // Every constructor pushes one entry per PromptId::ALL, in slot order.
        &self.prompts[slot(prompt)]
    }

    /// The prompt's 20 ms frames in `codec`, in playing order.
    pub fn frames(&self, prompt: PromptId, codec: Codec) -> &[Frame] {
        let encoded = self.get(prompt);
        match codec {
            Codec::Pcmu => &encoded.pcmu,
            Codec::Pcma => &encoded.pcma,
        }
    }

    /// How many 20 ms frames the prompt takes.
    pub fn frame_count(&self, prompt: PromptId) -> usize {
        self.get(prompt).pcmu.len()
    }

    /// The recording's own length (the frames may add up to 19.875 ms of
    /// padding to it).
    pub fn duration(&self, prompt: PromptId) -> Duration {
        let samples = self.get(prompt).samples as u64;
        Duration::from_micros(samples * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}

/// Decodes one WAV file strictly: 8 kHz, mono, 16-bit integer PCM, at most
/// [`MAX_PROMPT_DURATION`] long, not empty. `path` only labels errors.
fn read_wav(path: &Path, source: impl Read) -> Result<Vec<i16>, PromptError> {
    let not_wav = |source| PromptError::NotWav {
        path: path.to_path_buf(),
        source,
    };
    let reader = hound::WavReader::new(source).map_err(not_wav)?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        let format = match spec.sample_format {
            hound::SampleFormat::Int => "integer",
            hound::SampleFormat::Float => "float",
        };
        let channels = match spec.channels {
            1 => "mono".to_string(),
            2 => "stereo".to_string(),
            n => format!("{n} channels"),
        };
        return Err(PromptError::Format {
            path: path.to_path_buf(),
            found: format!(
                "{} Hz, {channels}, {}-bit {format}",
                spec.sample_rate, spec.bits_per_sample
            ),
        });
    }
    let samples = reader.duration() as u64;
    if samples > MAX_PROMPT_DURATION.as_secs() * u64::from(SAMPLE_RATE) {
        return Err(PromptError::TooLong {
            path: path.to_path_buf(),
            seconds: samples / u64::from(SAMPLE_RATE),
        });
    }
    let pcm = reader
        .into_samples::<i16>()
        .collect::<Result<Vec<i16>, _>>()
        .map_err(not_wav)?;
    if pcm.is_empty() {
        return Err(PromptError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(pcm)
}

/// Frames at or below this level (about -54 dBFS) are "quiet": leading and
/// trailing silence, pauses between words. They look alike in every prompt
/// and in the bridge's own silence, so they never identify a prompt.
const QUIET_LEVEL: i16 = 64;

/// Whether every sample of `frame` is within ±[`QUIET_LEVEL`].
pub fn is_quiet(frame: &[u8], codec: Codec) -> bool {
    frame
        .iter()
        .all(|&code| codec.decode(code).unsigned_abs() <= QUIET_LEVEL as u16)
}

/// Where a received frame sits in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameRef {
    pub prompt: PromptId,
    /// Index into [`PromptCatalog::frames`].
    pub index: usize,
}

/// Finds received 20 ms frames in a catalog, for the listening side of a
/// call. Built once per codec and shared (read-only) by every listener.
#[derive(Clone, Debug)]
pub struct PromptMatcher {
    codec: Codec,
    /// Frames that identify a prompt: not quiet, and found in one prompt
    /// only (possibly at several indices). The map hashes the whole frame
    /// and compares it on lookup, so a hit is exact.
    index: HashMap<Frame, Vec<FrameRef>>,
    /// Every prompt's frames, by [`slot`], to follow a prompt through the
    /// quiet and shared frames the index leaves out.
    frames: Vec<Vec<Frame>>,
}

impl PromptMatcher {
    pub fn new(catalog: &PromptCatalog, codec: Codec) -> Self {
        let mut index: HashMap<Frame, Vec<FrameRef>> = HashMap::new();
        let mut frames = Vec::with_capacity(PromptId::ALL.len());
        for prompt in PromptId::ALL {
            let prompt_frames = catalog.frames(prompt, codec);
            for (i, frame) in prompt_frames.iter().enumerate() {
                if !is_quiet(frame, codec) {
                    index
                        .entry(*frame)
                        .or_default()
                        .push(FrameRef { prompt, index: i });
                }
            }
            frames.push(prompt_frames.to_vec());
        }
        // A frame heard in two prompts says nothing about which one plays.
        index.retain(|_, refs| refs.iter().all(|r| r.prompt == refs[0].prompt));
        PromptMatcher {
            codec,
            index,
            frames,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Where `payload` occurs in the catalog: empty unless it is a whole
    /// 160-byte frame that identifies exactly one prompt. All the returned
    /// references name the same prompt.
    pub fn candidates(&self, payload: &[u8]) -> &[FrameRef] {
        let Ok(frame) = <&Frame>::try_from(payload) else {
            return &[];
        };
        self.index.get(frame).map_or(&[], Vec::as_slice)
    }

    /// The catalog's frame `index` of `prompt`, if the prompt is that long.
    pub fn frame(&self, prompt: PromptId, index: usize) -> Option<&Frame> {
        self.frames.get(slot(prompt))?.get(index)
    }

    fn frame_count(&self, prompt: PromptId) -> usize {
        self.frames.get(slot(prompt)).map_or(0, Vec::len)
    }
}

/// What a [`PromptListener`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenEvent {
    /// The prompt is playing: [`HEARD_AFTER_FRAMES`] of its frames arrived
    /// in order.
    Heard(PromptId),
    /// The prompt that was heard stopped: it played to its last frame, or
    /// other frames took its place (another prompt, a restart of it,
    /// silence, noise), or the stream ended.
    Ended(PromptId),
}

/// In-order frames of one prompt needed before it counts as heard: enough
/// that a stray match cannot pass, few enough that a prompt cut short by
/// barge-in after 200 ms still counts.
pub const HEARD_AFTER_FRAMES: usize = 5;
/// Frames that may go missing between two matched frames (lost packets)
/// without losing track of the prompt.
pub const MAX_LOST_FRAMES: usize = 3;
/// How far behind the current position a frame of the same prompt may
/// arrive (reordered by the network) and be skipped rather than taken as
/// the prompt starting over.
pub const MAX_LATE_FRAMES: usize = 4;
/// Frames matching nothing after which the prompt is taken as ended
/// (80 ms: shorter than any pause the bridge makes between prompts).
pub const ENDED_AFTER_UNMATCHED: usize = 4;

/// Positions a track keeps at most (see [`follow`]).
const MAX_POSITIONS: usize = 64;

/// A prompt being followed.
#[derive(Clone, Debug)]
struct Track {
    prompt: PromptId,
    /// Frame indices the last matched frame may have been (usually one; more
    /// when the prompt repeats a frame).
    positions: Vec<usize>,
    matched: usize,
    unmatched: usize,
    heard: bool,
}

/// Listens to the frames a call receives and reports which prompts it
/// hears, in order. Sans-IO: feed it every received payload with
/// [`handle_frame`](Self::handle_frame), then drain
/// [`poll_output`](Self::poll_output).
///
/// Lost packets are simply not fed: the listener tolerates gaps of up to
/// [`MAX_LOST_FRAMES`] (and any forward jump to a frame that identifies the
/// same prompt). It has no clock: if the far end stops sending RTP, the
/// driver calls [`handle_end`](Self::handle_end) when it decides the stream
/// is over.
#[derive(Clone, Debug, Default)]
pub struct PromptListener {
    track: Option<Track>,
    out: VecDeque<ListenEvent>,
}

impl PromptListener {
    pub fn new() -> Self {
        Self::default()
    }

    /// One received RTP payload, in arrival order.
    pub fn handle_frame(&mut self, matcher: &PromptMatcher, payload: &[u8]) {
        let candidates = matcher.candidates(payload);
        if let Some(track) = &mut self.track {
            if let Some(next) = follow(track, matcher, payload, candidates) {
                track.positions = next;
                track.matched += 1;
                track.unmatched = 0;
                if !track.heard && track.matched >= HEARD_AFTER_FRAMES {
                    track.heard = true;
                    self.out.push_back(ListenEvent::Heard(track.prompt));
                }
                let last = matcher.frame_count(track.prompt).saturating_sub(1);
                // The earliest candidate position: in a silent tail with
                // lost frames this ends the prompt late (by the unmatched
                // rule or handle_end), never early.
                if track.positions.first() == Some(&last) {
                    // Played to the end.
                    self.end_track();
                }
                return;
            }
            if candidates.is_empty() {
                track.unmatched += 1;
                if track.unmatched >= ENDED_AFTER_UNMATCHED {
                    self.end_track();
                }
                return;
            }
            // A frame of this prompt from just behind where it is: a
            // packet the network delivered late (reordered), not a
            // restart (a restart begins at frame 0). Skip it.
            let at = track.positions.iter().copied().min().unwrap_or(0);
            if candidates.iter().any(|r| {
                r.prompt == track.prompt
                    && r.index > 0
                    && r.index < at
                    && r.index + MAX_LATE_FRAMES >= at
            }) {
                return;
            }
            // Another prompt starts, or this one starts over.
            self.end_track();
        }
        if let Some(first) = candidates.first() {
            self.track = Some(Track {
                prompt: first.prompt,
                positions: candidates.iter().map(|r| r.index).collect(),
                matched: 1,
                unmatched: 0,
                heard: false,
            });
            if matcher.frame_count(first.prompt) == 1 {
                self.end_track();
            }
        }
    }

    /// The stream stopped (hang-up, or no RTP for as long as the driver
    /// waits): a prompt being heard has ended.
    pub fn handle_end(&mut self) {
        self.end_track();
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<ListenEvent> {
        self.out.pop_front()
    }

    /// The prompt currently being heard, if any.
    pub fn hearing(&self) -> Option<PromptId> {
        self.track.as_ref().filter(|t| t.heard).map(|t| t.prompt)
    }

    fn end_track(&mut self) {
        if let Some(track) = self.track.take()
            && track.heard
        {
            self.out.push_back(ListenEvent::Ended(track.prompt));
        }
    }
}

/// The positions `payload` continues `track` at, if it does: the next frame
/// of the prompt within the lost-frame allowance (compared whole, so quiet
/// frames count), or a later frame that identifies the same prompt.
fn follow(
    track: &Track,
    matcher: &PromptMatcher,
    payload: &[u8],
    candidates: &[FrameRef],
) -> Option<Vec<usize>> {
    // Frames that matched nothing may have been garbled copies of frames
    // of this prompt: widen the window by as many.
    let window = 1 + MAX_LOST_FRAMES + track.unmatched;
    // Keep every position that fits: in a run of identical frames (digital
    // silence) a lost frame cannot be placed, and keeping only the earliest
    // would fall behind the real position.
    let mut next: Vec<usize> = Vec::new();
    for &at in &track.positions {
        for j in at + 1..=at + window {
            if matcher
                .frame(track.prompt, j)
                .is_some_and(|f| f[..] == *payload)
            {
                next.push(j);
            }
        }
    }
    next.sort_unstable();
    next.dedup();
    // Bound the work per frame on long silent stretches.
    next.truncate(MAX_POSITIONS);
    if next.is_empty() {
        let min = track.positions.iter().copied().min().unwrap_or(0);
        next = candidates
            .iter()
            .filter(|r| r.prompt == track.prompt && r.index > min)
            .map(|r| r.index)
            .collect();
    }
    (!next.is_empty()).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::{alaw_encode, ulaw_encode};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn catalog() -> PromptCatalog {
        PromptCatalog::embedded().expect("the shipped prompts load")
    }

    fn embedded_pcm(prompt: PromptId) -> Vec<i16> {
        let (_, bytes) = EMBEDDED[slot(prompt)];
        read_wav(Path::new("test"), bytes).expect("the shipped prompts decode")
    }

    fn silence(codec: Codec) -> Frame {
        [codec.silence(); FRAME_SAMPLES]
    }

    fn listen(matcher: &PromptMatcher, frames: &[Frame]) -> Vec<ListenEvent> {
        let mut listener = PromptListener::new();
        let mut events = Vec::new();
        for frame in frames {
            listener.handle_frame(matcher, frame);
            while let Some(e) = listener.poll_output() {
                events.push(e);
            }
        }
        listener.handle_end();
        while let Some(e) = listener.poll_output() {
            events.push(e);
        }
        events
    }

    fn write_wav(path: &Path, spec: hound::WavSpec, samples: usize) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..samples * spec.channels as usize {
            match spec.sample_format {
                hound::SampleFormat::Int => w.write_sample((i % 2000) as i16 - 1000).unwrap(),
                hound::SampleFormat::Float => w.write_sample(0.25f32).unwrap(),
            }
        }
        w.finalize().unwrap();
    }

    fn good_spec() -> hound::WavSpec {
        hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        }
    }

    /// A directory with all six prompts in the right format.
    fn good_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (n, prompt) in PromptId::ALL.into_iter().enumerate() {
            write_wav(
                &dir.path().join(format!("{prompt}.wav")),
                good_spec(),
                800 + n * 160,
            );
        }
        dir
    }

    #[test]
    fn embedded_order_matches_prompt_slots() {
        for (n, (prompt, _)) in EMBEDDED.iter().enumerate() {
            assert_eq!(PromptId::ALL[n], *prompt);
            assert_eq!(slot(*prompt), n);
        }
    }

    #[test]
    fn embedded_catalog_loads_all_six_prompts_in_both_codecs() {
        let catalog = catalog();
        for prompt in PromptId::ALL {
            let n = catalog.frame_count(prompt);
            assert!(n >= 2 * HEARD_AFTER_FRAMES, "{prompt} has {n} frames");
            for codec in Codec::ALL {
                let frames = catalog.frames(prompt, codec);
                assert_eq!(frames.len(), n, "{prompt} {codec:?}");
                let loud = frames.iter().filter(|f| !is_quiet(&f[..], codec)).count();
                assert!(loud > n / 2, "{prompt} {codec:?} is mostly silence");
            }
        }
    }

    #[test]
    fn frame_counts_and_durations_match_the_wavs_and_the_manifest() {
        let catalog = catalog();
        let manifest = include_str!("../../prompts/manifest.txt");
        for prompt in PromptId::ALL {
            let samples = embedded_pcm(prompt).len();
            assert_eq!(samples % FRAME_SAMPLES, 0, "{prompt} is whole frames");
            assert_eq!(catalog.frame_count(prompt), samples / FRAME_SAMPLES);
            let ms = samples as u64 / 8;
            assert_eq!(catalog.duration(prompt), Duration::from_millis(ms));
            let line = manifest
                .lines()
                .find(|l| l.split('\t').next() == Some(prompt.as_str()))
                .unwrap_or_else(|| panic!("{prompt} missing from manifest"));
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols[1], format!("{prompt}.wav"));
            assert_eq!(cols[2], ms.to_string(), "{prompt} duration in manifest");
            assert!(!cols[3].is_empty());
        }
    }

    #[test]
    fn frames_are_the_g711_encoding_of_the_wav() {
        let catalog = catalog();
        for prompt in PromptId::ALL {
            let pcm = embedded_pcm(prompt);
            let pcmu: Vec<u8> = catalog.frames(prompt, Codec::Pcmu).concat();
            let pcma: Vec<u8> = catalog.frames(prompt, Codec::Pcma).concat();
            let want_u: Vec<u8> = pcm.iter().map(|&s| ulaw_encode(s)).collect();
            let want_a: Vec<u8> = pcm.iter().map(|&s| alaw_encode(s)).collect();
            assert_eq!(pcmu, want_u, "{prompt} PCMU");
            assert_eq!(pcma, want_a, "{prompt} PCMA");
        }
    }

    #[test]
    fn last_frame_is_padded_with_silence() {
        let catalog = PromptCatalog::from_pcm(|_| vec![1000; FRAME_SAMPLES + 10]);
        for codec in Codec::ALL {
            let frames = catalog.frames(PromptId::Goodbye, codec);
            assert_eq!(frames.len(), 2);
            assert!(frames[1][..10].iter().all(|&c| c == codec.encode(1000)));
            assert!(frames[1][10..].iter().all(|&c| c == codec.silence()));
        }
        assert_eq!(
            catalog.duration(PromptId::Goodbye),
            Duration::from_micros(170 * 125)
        );
    }

    #[test]
    fn matcher_ignores_silence_and_frames_shared_by_two_prompts() {
        // Goodbye and Joining share their first 3 frames; the rest differs.
        let shared: Vec<i16> = (0..3 * FRAME_SAMPLES)
            .map(|i| (i as i16 % 400) * 20)
            .collect();
        let catalog = PromptCatalog::from_pcm(|p| {
            let mut pcm = shared.clone();
            pcm.extend((0..10 * FRAME_SAMPLES).map(|i| ((i * (slot(p) + 2)) % 3000) as i16));
            // A quiet tail that is not digital silence, the same in each.
            pcm.extend(std::iter::repeat_n(30, 2 * FRAME_SAMPLES));
            pcm
        });
        let matcher = PromptMatcher::new(&catalog, Codec::Pcmu);
        let goodbye = catalog.frames(PromptId::Goodbye, Codec::Pcmu);
        assert!(matcher.candidates(&goodbye[0]).is_empty(), "shared frame");
        assert!(matcher.candidates(&silence(Codec::Pcmu)).is_empty());
        assert_ne!(goodbye[13], silence(Codec::Pcmu));
        assert!(matcher.candidates(&goodbye[13]).is_empty(), "quiet frame");
        assert_eq!(
            matcher.candidates(&goodbye[5]),
            &[FrameRef {
                prompt: PromptId::Goodbye,
                index: 5
            }]
        );
        assert!(
            matcher.candidates(&goodbye[5][..100]).is_empty(),
            "short payload"
        );
    }

    #[test]
    fn listener_identifies_each_prompt_in_turn() {
        let catalog = catalog();
        for codec in Codec::ALL {
            let matcher = PromptMatcher::new(&catalog, codec);
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for prompt in PromptId::ALL {
                stream.extend_from_slice(catalog.frames(prompt, codec));
                stream.extend(std::iter::repeat_n(silence(codec), 10));
                want.push(ListenEvent::Heard(prompt));
                want.push(ListenEvent::Ended(prompt));
            }
            assert_eq!(listen(&matcher, &stream), want, "{codec:?}");
        }
    }

    #[test]
    fn heard_comes_after_five_frames_and_ended_at_the_last() {
        let catalog = catalog();
        let matcher = PromptMatcher::new(&catalog, Codec::Pcmu);
        let frames = catalog.frames(PromptId::Joining, Codec::Pcmu);
        let mut listener = PromptListener::new();
        for (i, frame) in frames.iter().enumerate() {
            listener.handle_frame(&matcher, frame);
            let event = listener.poll_output();
            if i + 1 == HEARD_AFTER_FRAMES {
                assert_eq!(event, Some(ListenEvent::Heard(PromptId::Joining)));
            } else if i + 1 == frames.len() {
                assert_eq!(event, Some(ListenEvent::Ended(PromptId::Joining)));
            } else {
                assert_eq!(event, None, "frame {i}");
            }
            if (HEARD_AFTER_FRAMES..frames.len()).contains(&(i + 1)) {
                assert_eq!(listener.hearing(), Some(PromptId::Joining));
            }
        }
        assert_eq!(listener.hearing(), None);
    }

    #[test]
    fn prompt_cut_short_by_barge_in_after_ten_frames_is_heard() {
        let catalog = catalog();
        for codec in Codec::ALL {
            let matcher = PromptMatcher::new(&catalog, codec);
            let mut stream = catalog.frames(PromptId::Welcome, codec)[..10].to_vec();
            stream.extend(std::iter::repeat_n(silence(codec), 5));
            stream.extend_from_slice(catalog.frames(PromptId::Joining, codec));
            assert_eq!(
                listen(&matcher, &stream),
                [
                    ListenEvent::Heard(PromptId::Welcome),
                    ListenEvent::Ended(PromptId::Welcome),
                    ListenEvent::Heard(PromptId::Joining),
                    ListenEvent::Ended(PromptId::Joining),
                ]
            );
            // Cut straight into the next prompt, no silence between.
            let mut stream = catalog.frames(PromptId::Welcome, codec)[..10].to_vec();
            stream.extend_from_slice(catalog.frames(PromptId::Goodbye, codec));
            assert_eq!(
                listen(&matcher, &stream),
                [
                    ListenEvent::Heard(PromptId::Welcome),
                    ListenEvent::Ended(PromptId::Welcome),
                    ListenEvent::Heard(PromptId::Goodbye),
                    ListenEvent::Ended(PromptId::Goodbye),
                ]
            );
        }
    }

    #[test]
    fn lost_frames_are_tolerated() {
        let catalog = catalog();
        let matcher = PromptMatcher::new(&catalog, Codec::Pcma);
        let frames = catalog.frames(PromptId::NotValid, Codec::Pcma);
        // Every 4th frame lost, plus bursts of 3 (quiet frames included).
        let stream: Vec<Frame> = frames
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 != 1 && !(40..43).contains(i) && !(150..153).contains(i))
            .map(|(_, f)| *f)
            .collect();
        assert_eq!(
            listen(&matcher, &stream),
            [
                ListenEvent::Heard(PromptId::NotValid),
                ListenEvent::Ended(PromptId::NotValid),
            ]
        );
    }

    #[test]
    fn frames_delivered_out_of_order_are_one_prompt() {
        let catalog = catalog();
        let matcher = PromptMatcher::new(&catalog, Codec::Pcmu);
        let frames = catalog.frames(PromptId::Welcome, Codec::Pcmu);
        // Every 7th frame arrives after the one behind it, and one a
        // further three frames late; a few lost too.
        let mut stream: Vec<Frame> = frames.to_vec();
        for i in (5..stream.len() - 1).step_by(7) {
            stream.swap(i, i + 1);
        }
        let late = stream.remove(60);
        stream.insert(63, late);
        stream.remove(100);
        assert_eq!(
            listen(&matcher, &stream),
            [
                ListenEvent::Heard(PromptId::Welcome),
                ListenEvent::Ended(PromptId::Welcome),
            ]
        );
    }

    #[test]
    fn the_same_prompt_twice_is_heard_twice() {
        let catalog = catalog();
        let matcher = PromptMatcher::new(&catalog, Codec::Pcmu);
        let frames = catalog.frames(PromptId::NotValid, Codec::Pcmu);
        // Replayed from the start after 30 frames, then played in full.
        let mut stream = frames[..30].to_vec();
        stream.extend_from_slice(frames);
        assert_eq!(
            listen(&matcher, &stream),
            [
                ListenEvent::Heard(PromptId::NotValid),
                ListenEvent::Ended(PromptId::NotValid),
                ListenEvent::Heard(PromptId::NotValid),
                ListenEvent::Ended(PromptId::NotValid),
            ]
        );
    }

    #[test]
    fn noise_silence_and_garbage_give_nothing() {
        let catalog = catalog();
        let matcher = PromptMatcher::new(&catalog, Codec::Pcmu);
        let mut rng = StdRng::seed_from_u64(7);
        let mut listener = PromptListener::new();
        for n in 0..2000 {
            let len = if n % 10 == 0 {
                rng.random_range(0..400)
            } else {
                FRAME_SAMPLES
            };
            let payload: Vec<u8> = if n % 3 == 0 {
                vec![0xFF; len]
            } else {
                (0..len).map(|_| rng.random_range(0..=255u8)).collect()
            };
            listener.handle_frame(&matcher, &payload);
            assert_eq!(listener.poll_output(), None, "frame {n}");
            assert_eq!(listener.hearing(), None);
        }
        listener.handle_end();
        assert_eq!(listener.poll_output(), None);
    }

    #[test]
    fn fewer_than_five_frames_are_not_heard() {
        let catalog = catalog();
        let matcher = PromptMatcher::new(&catalog, Codec::Pcmu);
        let frames = catalog.frames(PromptId::Goodbye, Codec::Pcmu);
        assert_eq!(listen(&matcher, &frames[..HEARD_AFTER_FRAMES - 1]), []);
    }

    #[test]
    fn noise_after_a_prompt_ends_it() {
        let catalog = catalog();
        let matcher = PromptMatcher::new(&catalog, Codec::Pcmu);
        let mut listener = PromptListener::new();
        for frame in &catalog.frames(PromptId::FirstPerson, Codec::Pcmu)[..20] {
            listener.handle_frame(&matcher, frame);
        }
        assert_eq!(
            listener.poll_output(),
            Some(ListenEvent::Heard(PromptId::FirstPerson))
        );
        for _ in 0..ENDED_AFTER_UNMATCHED {
            assert_eq!(listener.poll_output(), None);
            listener.handle_frame(&matcher, &[0x42; FRAME_SAMPLES]);
        }
        assert_eq!(
            listener.poll_output(),
            Some(ListenEvent::Ended(PromptId::FirstPerson))
        );
    }

    #[test]
    fn load_dir_reads_a_complete_set() {
        let dir = good_dir();
        let catalog = PromptCatalog::load_dir(dir.path()).unwrap();
        for (n, prompt) in PromptId::ALL.into_iter().enumerate() {
            assert_eq!(catalog.frame_count(prompt), 5 + n);
            assert_eq!(
                catalog.frames(prompt, Codec::Pcmu)[0][0],
                ulaw_encode(-1000)
            );
        }
    }

    #[test]
    fn load_dir_names_the_missing_file() {
        let dir = good_dir();
        std::fs::remove_file(dir.path().join("no-input.wav")).unwrap();
        let err = PromptCatalog::load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PromptError::Missing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("no-input.wav is missing"), "{msg}");
        assert!(
            msg.contains("first-person.wav") && msg.contains("8000 Hz, mono"),
            "{msg}"
        );
    }

    #[test]
    fn load_dir_rejects_stereo() {
        let dir = good_dir();
        let spec = hound::WavSpec {
            channels: 2,
            ..good_spec()
        };
        write_wav(&dir.path().join("goodbye.wav"), spec, 800);
        let msg = PromptCatalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("goodbye.wav is 8000 Hz, stereo, 16-bit integer"),
            "{msg}"
        );
        assert!(msg.contains("expected an 8000 Hz, mono, 16-bit"), "{msg}");
        assert!(msg.contains("sox IN.wav -r 8000 -c 1"), "{msg}");
    }

    #[test]
    fn load_dir_rejects_44_1_khz_and_float() {
        let dir = good_dir();
        let spec = hound::WavSpec {
            sample_rate: 44100,
            ..good_spec()
        };
        write_wav(&dir.path().join("welcome.wav"), spec, 800);
        let msg = PromptCatalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("welcome.wav is 44100 Hz, mono, 16-bit integer"),
            "{msg}"
        );

        let dir = good_dir();
        let spec = hound::WavSpec {
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
            ..good_spec()
        };
        write_wav(&dir.path().join("joining.wav"), spec, 800);
        let msg = PromptCatalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("joining.wav is 8000 Hz, mono, 32-bit float"),
            "{msg}"
        );
    }

    #[test]
    fn load_dir_rejects_empty_long_and_non_wav_files() {
        let dir = good_dir();
        write_wav(&dir.path().join("welcome.wav"), good_spec(), 0);
        let err = PromptCatalog::load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, PromptError::Empty { .. }), "{err:?}");

        let dir = good_dir();
        write_wav(&dir.path().join("welcome.wav"), good_spec(), 8000 * 121);
        let msg = PromptCatalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("is 121 s long: expected at most 120 s"),
            "{msg}"
        );

        let dir = good_dir();
        std::fs::write(dir.path().join("welcome.wav"), "not a wav").unwrap();
        let msg = PromptCatalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("welcome.wav is not a readable WAV file"),
            "{msg}"
        );
    }

    #[test]
    fn load_dir_says_when_the_directory_is_not_one() {
        let dir = good_dir();
        let missing = dir.path().join("nope");
        let msg = PromptCatalog::load_dir(&missing).unwrap_err().to_string();
        assert!(msg.contains("nope cannot be read"), "{msg}");
        assert!(msg.contains("welcome.wav, not-valid.wav"), "{msg}");
        let file = dir.path().join("welcome.wav");
        let msg = PromptCatalog::load_dir(&file).unwrap_err().to_string();
        assert!(msg.contains("not a directory"), "{msg}");
    }

    /// Truncated and corrupted WAV bytes give errors, never a panic.
    #[test]
    fn truncated_or_corrupt_wav_bytes_are_errors_not_panics() {
        let (_, bytes) = EMBEDDED[slot(PromptId::Goodbye)];
        for cut in [0, 3, 12, 20, 36, 43, 44, 45, 1001] {
            let r = read_wav(Path::new("t.wav"), &bytes[..cut]);
            assert!(
                r.is_err(),
                "cut at {cut} gave {} samples",
                r.map_or(0, |p| p.len())
            );
        }
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..2000 {
            let mut bad = bytes[..2000].to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..60);
                bad[at] = rng.random_range(0..=255u8);
            }
            let _ = read_wav(Path::new("t.wav"), &bad[..]);
        }
    }
}
