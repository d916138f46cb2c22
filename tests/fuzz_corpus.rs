//! Replays the fuzz corpus as a normal test, so that CI catches a
//! regression without running the fuzzer (which needs nightly and
//! libFuzzer): every file in `fuzz/corpus/<target>/`, the crashes kept in
//! `fuzz/regressions/<target>/`, and whatever a local fuzzing run left in
//! `fuzz/artifacts/<target>/`, fed to the same `dialin::fuzzing` function
//! the fuzz target calls. A panic (an assertion of the harness included)
//! fails the test and names the file.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use dialin::fuzzing;

/// The files of one folder, sorted; none if the folder does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Feeds every input of `target` to `run`; fails with the files that
/// panicked. The corpus folder must not be empty, so a wrong path can't
/// make the test pass without running anything.
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&root.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ has no inputs: the corpus is missing or the path is wrong"
    );
    let kept = files(&root.join("regressions").join(target));
    let local = files(&root.join("artifacts").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&kept).chain(&local) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panicked (the panic messages are above):\n{}",
        failed.len(),
        corpus.len() + kept.len() + local.len(),
        failed.join("\n")
    );
}

#[test]
fn sip_datagram() {
    replay("sip_datagram", fuzzing::sip_datagram);
}

#[test]
fn tcp_stream() {
    replay("tcp_stream", fuzzing::tcp_stream);
}

#[test]
fn sdp() {
    replay("sdp", fuzzing::sdp);
}

#[test]
fn rtp() {
    replay("rtp", fuzzing::rtp);
}

#[test]
fn info_body() {
    replay("info_body", fuzzing::info_body);
}

#[test]
fn scenario() {
    replay("scenario", fuzzing::scenario);
}

#[test]
fn admin_json() {
    replay("admin_json", fuzzing::admin_json);
}

#[test]
fn csv_import() {
    replay("csv_import", fuzzing::csv_import);
}

/// The replay is only worth something if a panic in the harness fails it.
#[test]
fn a_panicking_input_fails_the_replay() {
    fn explode(_: &[u8]) {
        panic!("this input breaks the harness");
    }
    let replayed = catch_unwind(|| replay("info_body", explode));
    assert!(
        replayed.is_err(),
        "a harness that panics on every input passed the replay"
    );
}
