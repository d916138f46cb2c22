//! `--record`: a real call against the in-process bridge is written as a WAV
//! that holds, sample for sample, the G.711 prompts the bridge played, each
//! where the RTP timestamps put it, silence between; `dialin run --record`
//! names a file per call by scenario and step.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::bridge::{Bridge, NUMBER, assert_joined, call, call_config};
use dialin::caller::HeardPrompt;
use dialin::media::dtmf::DtmfMethod;
use dialin::media::g711::Codec;
use dialin::media::prompts::{FRAME_SAMPLES, HEARD_AFTER_FRAMES, PromptCatalog, PromptId};
use dialin::net::caller::RecordTo;

/// How far a prompt may sit from where its arrival time puts it: the
/// bridge's timestamps follow its clock, arrivals the caller's, and a busy
/// machine delays either.
const TOLERANCE: Duration = Duration::from_millis(250);

fn samples(d: Duration) -> usize {
    (d.as_secs_f64() * 8000.0).round() as usize
}

fn read_wav(path: &Path) -> Vec<i16> {
    let reader = hound::WavReader::open(path).expect("a readable WAV");
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (8000, 1, 16),
        "{}",
        path.display()
    );
    reader
        .into_samples::<i16>()
        .map(|s| s.expect("a sample"))
        .collect()
}

/// A prompt as the caller hears it: its G.711 frames decoded.
fn decoded(catalog: &PromptCatalog, prompt: PromptId, codec: Codec) -> Vec<i16> {
    catalog
        .frames(prompt, codec)
        .iter()
        .flat_map(|f| f.iter().map(move |c| codec.decode(*c)))
        .collect()
}

/// Where `needle` starts in `hay` at or after `from`.
fn find(hay: &[i16], needle: &[i16], from: usize) -> Option<usize> {
    (from..=hay.len().checked_sub(needle.len())?).find(|&i| hay[i..i + needle.len()] == *needle)
}

fn heard(prompts: &[HeardPrompt], id: PromptId) -> HeardPrompt {
    *prompts
        .iter()
        .find(|p| p.prompt == id)
        .unwrap_or_else(|| panic!("{id} was heard"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_holds_the_prompts_it_heard_where_they_played() {
    let bridge = Bridge::start().await;
    let id = bridge.enable("alice@contoso.com", None).await;
    let folder = tempfile::tempdir().expect("a temporary folder");
    let dir = folder.path().join("recordings");
    let mut config = call_config(&bridge, NUMBER, &format!("{id}#"), DtmfMethod::Rfc4733);
    // Long enough after "joining" for "you are the first person" to play out.
    config.hang_up = dialin::caller::HangUp::AfterJoined(Duration::from_millis(5500));
    config.record = Some(RecordTo::Dir(dir.clone()));
    let report = call(config).await;
    assert_joined(&report);
    let file = report.recording.clone().expect("the call was recorded");
    assert!(file.path.starts_with(&dir), "{}", file.path.display());
    assert!(!file.truncated);
    let wav = read_wav(&file.path);
    assert_eq!(samples(file.duration), wav.len());

    let catalog = PromptCatalog::embedded().expect("the shipped prompts");
    let codec = report.codec.expect("a codec was negotiated");
    // The welcome plays from its first frame until the caller's digits
    // barge in: the recording starts with it, sample for sample.
    let welcome = decoded(&catalog, PromptId::Welcome, codec);
    let played = wav.iter().zip(&welcome).take_while(|(a, b)| a == b).count();
    assert!(
        played >= HEARD_AFTER_FRAMES * FRAME_SAMPLES,
        "the recording starts with the welcome prompt: {played} samples match"
    );
    assert!(played < welcome.len(), "barge-in cut the welcome");

    // Then silence while the caller types, then "joining" where its
    // timestamps put it, which is when it arrived.
    let joining = decoded(&catalog, PromptId::Joining, codec);
    let at = find(&wav, &joining, played).expect("the joining prompt is in the recording");
    let start = heard(&report.prompts, PromptId::Welcome).started_at;
    let expected = samples(heard(&report.prompts, PromptId::Joining).started_at - start);
    assert!(
        at.abs_diff(expected) <= samples(TOLERANCE),
        "joining at sample {at}, its arrival says {expected}"
    );
    let quiet = played.next_multiple_of(FRAME_SAMPLES);
    assert!(
        wav[quiet..at].iter().all(|s| *s == 0),
        "silence between the prompts"
    );

    // "You are the first person" follows and plays out; the recording ends
    // with it, as long as the call's audio lasted.
    let first = decoded(&catalog, PromptId::FirstPerson, codec);
    let first_at = find(&wav, &first, at + joining.len()).expect("first-person is recorded");
    assert_eq!(
        wav.len(),
        first_at + first.len(),
        "nothing after the last prompt"
    );
    let audio_time = heard(&report.prompts, PromptId::FirstPerson).started_at - start
        + catalog.duration(PromptId::FirstPerson);
    assert!(
        wav.len().abs_diff(samples(audio_time)) <= samples(TOLERANCE),
        "{} samples recorded for {audio_time:?} of audio",
        wav.len()
    );
    bridge.stop().await;
}

const JOINS: &str = r#"
title = "joins, twice at once, and a stranger's number"

[[number]]
number = "+14255550100"
default = true

[[user]]
name = "alice"
email = "alice@contoso.com"

[[step]]
name = "joins"
[step.call]
to = "+14255550100"
digits = "${alice.conference_id}#"
hang_up = "after-joined 1s"

[[step]]
name = "two at once"
concurrent = 2
[step.call]
to = "+14255550100"
digits = "${alice.conference_id}#"
hang_up = "after-joined 1s"

[[step]]
name = "both done"
wait_for = "two at once"

[[step]]
name = "stranger's number"
[step.call]
to = "+14255559999"
[step.expect]
status = 404
"#;

const QUIET: &str = r#"
title = "time passes"

[[step]]
name = "a minute"
advance = "1m"
"#;

#[test]
fn dialin_run_records_each_call_by_scenario_and_step() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let joins = dir.path().join("joins.toml");
    std::fs::write(&joins, JOINS).expect("write the scenario");
    // Four files: more than the progress bar's threshold, but stderr is
    // not a terminal here, so no bar and no escape codes.
    let mut files = vec![joins];
    for n in 1..=3 {
        let quiet = dir.path().join(format!("quiet{n}.toml"));
        std::fs::write(&quiet, QUIET).expect("write the scenario");
        files.push(quiet);
    }
    let record = dir.path().join("rec");
    let out = Command::new(env!("CARGO_BIN_EXE_dialin"))
        .arg("run")
        .args(&files)
        .arg("--jobs")
        .arg("2")
        .arg("--record")
        .arg(&record)
        .output()
        .expect("dialin runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("4 scenarios: 4 passed, 0 failed"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "no terminal codes off a terminal: {stdout:?} {stderr:?}"
    );

    let catalog = PromptCatalog::embedded().expect("the shipped prompts");
    let welcome = decoded(&catalog, PromptId::Welcome, Codec::Pcmu);
    let prefix = &welcome[..HEARD_AFTER_FRAMES * FRAME_SAMPLES];
    for name in ["joins.wav", "two_at_once.wav", "two_at_once-2.wav"] {
        let wav = read_wav(&record.join("joins").join(name));
        assert!(wav.starts_with(prefix), "{name} starts with the welcome");
    }
    assert!(
        read_wav(&record.join("joins").join("stranger_s_number.wav")).is_empty(),
        "an unanswered call heard nothing"
    );
    let mut names: Vec<String> = std::fs::read_dir(record.join("joins"))
        .expect("the scenario's folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "joins.wav",
            "stranger_s_number.wav",
            "two_at_once-2.wav",
            "two_at_once.wav"
        ],
        "one file per call, no temporary files"
    );
}

#[test]
fn dialin_call_refuses_an_unwritable_record_folder_before_calling() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").expect("write a file");
    // Nothing listens on port 9 of loopback; the call would time out, but
    // the folder check comes first.
    let out = Command::new(env!("CARGO_BIN_EXE_dialin"))
        .args(["call", "sip:+14255550100@127.0.0.1:9", "--timeout", "30s"])
        .arg("--record")
        .arg(file.join("rec"))
        .output()
        .expect("dialin runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("can't write recordings in"), "{stderr}");
    assert!(stderr.contains("not-a-folder"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no call report: the call was not placed"
    );
}
