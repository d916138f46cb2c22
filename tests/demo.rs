//! `dialin demo --fast` as a user runs it: the binary, its own bridge on
//! loopback with ephemeral ports, and the story's key lines in its output.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The fast demo takes about 25 s (three calls at their real pace); this
/// leaves room for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// Reads a pipe to its end on a thread of its own, so neither pipe fills up.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs `dialin ARGS…` to its end (killed after the deadline) and returns
/// its exit status, stdout and stderr.
fn run_dialin(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dialin"))
        .args(args)
        .env("DIALIN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dialin starts");
    let pid = child.id();
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = match exited.recv_timeout(DEADLINE) {
        Ok(status) => status.expect("dialin can be waited for"),
        Err(_) => {
            // Our own child, by its id.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let _ = exited.recv_timeout(Duration::from_secs(10));
            let out = stdout.join().unwrap_or_default();
            panic!("dialin {args:?} did not finish within {DEADLINE:?}; its output so far:\n{out}");
        }
    };
    let out = stdout.join().expect("stdout was read");
    let err = stderr.join().expect("stderr was read");
    (status, out, err)
}

#[test]
fn the_fast_demo_tells_the_whole_reset_story_and_exits_0() {
    let (status, out, err) = run_dialin(&["demo", "--fast"]);
    assert!(status.success(), "exit {status}\n{out}\n{err}");

    for step in 1..=8 {
        assert!(
            out.contains(&format!("Step {step}. ")),
            "step {step}:\n{out}"
        );
    }
    let reset = out
        .lines()
        .find(|l| l.contains("conference ID:") && l.contains(" → new "))
        .unwrap_or_else(|| panic!("an old → new line:\n{out}"));
    let ids: Vec<&str> = reset
        .split_whitespace()
        .filter(|w| w.len() == 7 && w.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(ids.len(), 2, "{reset}");
    assert_ne!(ids[0], ids[1], "{reset}");
    assert!(out.contains("not-valid"), "{out}");
    assert!(
        out.contains("Reason:         SIP ;cause=403 ;text=\"Conference ID not valid\""),
        "{out}"
    );
    assert!(
        out.contains(&format!("carries {} (migrated)", ids[1])),
        "{out}"
    );
    assert!(out.contains("Updated invitation: Weekly sync"), "{out}");
    assert!(
        out.contains(&format!("New conference ID: {}", ids[1])),
        "{out}"
    );
    assert!(out.contains("All 8 steps saw what they expected."), "{out}");
}

/// A step that does not see what it expects says so and fails the demo:
/// here a dynamic-only tenant gives Alice no static ID to reset.
#[test]
fn a_step_that_sees_something_else_prints_expected_and_seen_and_exits_non_zero() {
    let data = tempfile::tempdir().expect("a temporary data folder");
    let folder = data.path().to_str().expect("a UTF-8 path");
    let (status, out, err) = run_dialin(&[
        "admin",
        "--data",
        folder,
        "tenant",
        "set",
        "--conference-id-mode",
        "dynamic-only",
    ]);
    assert!(status.success(), "{out}\n{err}");
    let (status, out, err) = run_dialin(&["demo", "--fast", "--data", folder]);
    assert!(!status.success(), "{out}\n{err}");
    assert!(out.contains("Step 2. "), "{out}");
    assert!(!out.contains("Step 3. "), "{out}");
    assert!(out.contains("FAILED: expected a conference ID"), "{out}");
    assert!(out.contains("saw      none"), "{out}");
    assert!(err.contains("step 2 failed"), "{err}");
}
