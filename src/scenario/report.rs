//! What `dialin run` shows and writes: a line per scenario (with the
//! failure's step, expected vs actual and the SIP ladders), JUnit XML (one
//! testsuite per file, one testcase per scenario) and JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::runner::{Failure, ScenarioResult};

/// One file's result: the scenario's run, or why the file did not load.
#[derive(Debug, Clone)]
pub enum FileResult {
    Ran(ScenarioResult),
    /// The file could not be read or checked; nothing ran.
    Invalid {
        file: PathBuf,
        error: String,
    },
}

impl FileResult {
    pub fn file(&self) -> &Path {
        match self {
            FileResult::Ran(r) => &r.file,
            FileResult::Invalid { file, .. } => file,
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self, FileResult::Ran(r) if r.passed())
    }

    /// Why the scenario did not run on this bridge, if it was skipped.
    pub fn skipped(&self) -> Option<&str> {
        match self {
            FileResult::Ran(r) if r.is_skipped() => r.skipped.as_deref(),
            _ => None,
        }
    }

    /// Neither passed nor skipped: a failure or a file that did not load.
    pub fn failed(&self) -> bool {
        !self.passed() && self.skipped().is_none()
    }

    /// `passed`, `failed`, `skipped`, or `invalid` (the file did not load).
    pub fn verdict(&self) -> &'static str {
        match self {
            FileResult::Invalid { .. } => "invalid",
            _ if self.passed() => "passed",
            _ if self.skipped().is_some() => "skipped",
            _ => "failed",
        }
    }

    fn notes(&self) -> &[String] {
        match self {
            FileResult::Ran(r) => &r.notes,
            FileResult::Invalid { .. } => &[],
        }
    }

    fn title(&self) -> &str {
        match self {
            FileResult::Ran(r) => &r.title,
            FileResult::Invalid { .. } => "(not loaded)",
        }
    }

    fn duration(&self) -> Duration {
        match self {
            FileResult::Ran(r) => r.duration,
            FileResult::Invalid { .. } => Duration::ZERO,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// `PASS  scenarios/01-….toml  A static … (3.41s)`, and for a failure the
/// lines that say why, indented; `SKIP  file  (reason)` for a scenario the
/// bridge can't run. Notes (steps left out) follow, indented.
pub fn text(result: &FileResult) -> String {
    let mut out = String::new();
    if let Some(reason) = result.skipped() {
        let _ = write!(out, "SKIP  {}  ({reason})", result.file().display());
        return out;
    }
    let verdict = if result.passed() { "PASS" } else { "FAIL" };
    let _ = write!(
        out,
        "{verdict}  {}  {} ({})",
        result.file().display(),
        result.title(),
        secs(result.duration())
    );
    match result {
        FileResult::Invalid { error, .. } => {
            let _ = write!(out, "\n      {error}");
        }
        FileResult::Ran(r) => {
            for note in &r.notes {
                let _ = write!(out, "\n      note: {note}");
            }
            if let Some(f) = &r.failure {
                out.push('\n');
                out.push_str(&failure_text(f));
            }
        }
    }
    out
}

/// The failing step, expected vs actual, and each call's ladder.
pub fn failure_text(f: &Failure) -> String {
    let mut out = String::new();
    let step = if f.step.is_empty() {
        "(bridge)"
    } else {
        &f.step
    };
    let _ = writeln!(out, "      step:     {step}");
    let _ = writeln!(out, "      expected: {}", f.expected);
    let _ = write!(out, "      actual:   {}", f.actual);
    for call in &f.calls {
        let _ = write!(out, "\n      ladder of call {}:", call.call_id);
        for line in &call.lines {
            let _ = write!(out, "\n        {line}");
        }
    }
    out
}

/// Escapes text for XML attributes and content; drops the characters XML
/// 1.0 can't carry.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite per file, one testcase per scenario.
pub fn junit(results: &[FileResult]) -> String {
    let failures = results
        .iter()
        .filter(|r| matches!(r, FileResult::Ran(_)) && r.failed())
        .count();
    let errors = results
        .iter()
        .filter(|r| matches!(r, FileResult::Invalid { .. }))
        .count();
    let skipped = results.iter().filter(|r| r.skipped().is_some()).count();
    let total: Duration = results.iter().map(FileResult::duration).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"dialin scenarios\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\">",
        results.len(),
        total.as_secs_f64()
    );
    for r in results {
        let file = xml_escape(&r.file().display().to_string());
        let time = r.duration().as_secs_f64();
        let (failed, errors) = match r {
            FileResult::Invalid { .. } => (0, 1),
            FileResult::Ran(run) => (usize::from(run.failure.is_some()), 0),
        };
        let skipped = usize::from(r.skipped().is_some());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{file}\" tests=\"1\" failures=\"{failed}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">"
        );
        let _ = write!(
            out,
            "    <testcase classname=\"{file}\" name=\"{}\" time=\"{time:.3}\"",
            xml_escape(r.title())
        );
        match r {
            FileResult::Invalid { error, .. } => {
                let _ = writeln!(
                    out,
                    ">\n      <error message=\"{}\">{}</error>\n    </testcase>",
                    xml_escape(error),
                    xml_escape(error)
                );
            }
            FileResult::Ran(run) => match &run.failure {
                None if r.skipped().is_some() || !run.notes.is_empty() => {
                    out.push_str(">\n");
                    if let Some(reason) = r.skipped() {
                        let _ =
                            writeln!(out, "      <skipped message=\"{}\"/>", xml_escape(reason));
                    }
                    if !run.notes.is_empty() {
                        let _ = writeln!(
                            out,
                            "      <system-out>{}</system-out>",
                            xml_escape(&run.notes.join("\n"))
                        );
                    }
                    out.push_str("    </testcase>\n");
                }
                None => out.push_str("/>\n"),
                Some(f) => {
                    let message = format!(
                        "step '{}': expected {}, actual {}",
                        f.step, f.expected, f.actual
                    );
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_escape(&message),
                        xml_escape(&failure_text(f))
                    );
                }
            },
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// The results as JSON: `{ "passed": n, "failed": n, "skipped": n,
/// "scenarios": [...] }`; each scenario's `result` is `passed`, `failed`,
/// `skipped` or `invalid`.
pub fn json(results: &[FileResult]) -> Value {
    let scenarios: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut v = json!({
                "file": r.file().display().to_string(),
                "title": r.title(),
                "result": r.verdict(),
                "passed": r.passed(),
                "duration_ms": r.duration().as_secs_f64() * 1000.0,
            });
            if let Some(reason) = r.skipped() {
                v["skipped"] = json!(reason);
            }
            if !r.notes().is_empty() {
                v["notes"] = json!(r.notes());
            }
            match r {
                FileResult::Invalid { error, .. } => v["error"] = json!(error),
                FileResult::Ran(run) => {
                    v["steps_run"] = json!(run.steps_run);
                    if let Some(f) = &run.failure {
                        v["failure"] = json!({
                            "step": f.step,
                            "expected": f.expected,
                            "actual": f.actual,
                            "calls": f.calls.iter().map(|c| json!({
                                "call_id": c.call_id,
                                "ladder": c.lines,
                            })).collect::<Vec<_>>(),
                        });
                    }
                }
            }
            v
        })
        .collect();
    let passed = results.iter().filter(|r| r.passed()).count();
    let skipped = results.iter().filter(|r| r.skipped().is_some()).count();
    json!({
        "passed": passed,
        "failed": results.len() - passed - skipped,
        "skipped": skipped,
        "scenarios": scenarios,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::runner::CallLadder;

    fn failed() -> FileResult {
        FileResult::Ran(ScenarioResult {
            file: "s/a&b.toml".into(),
            title: "Title <with> \"quotes\"".into(),
            duration: Duration::from_millis(1500),
            steps_run: 2,
            skipped: None,
            notes: Vec::new(),
            failure: Some(Failure {
                step: "join".into(),
                expected: "outcome joined".into(),
                actual: "outcome rejected".into(),
                calls: vec![CallLadder {
                    call_id: "abc".into(),
                    lines: vec!["0.000s  --> INVITE sip:x@y".into()],
                }],
            }),
        })
    }

    #[test]
    fn xml_escapes_markup_and_control_characters() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;\\u{1}"
        );
    }

    #[test]
    fn junit_has_a_suite_and_case_per_file_with_the_failure() {
        let ok = FileResult::Ran(ScenarioResult {
            file: "s/ok.toml".into(),
            title: "ok".into(),
            duration: Duration::from_millis(10),
            steps_run: 1,
            failure: None,
            skipped: None,
            notes: Vec::new(),
        });
        let bad = FileResult::Invalid {
            file: "s/bad.toml".into(),
            error: "s/bad.toml:1:1: missing field `title`".into(),
        };
        let xml = junit(&[ok, failed(), bad]);
        assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
        assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
        assert_eq!(xml.matches("<error ").count(), 1, "{xml}");
        assert!(xml.contains("s/a&amp;b.toml"), "{xml}");
        assert!(
            xml.contains("Title &lt;with&gt; &quot;quotes&quot;"),
            "{xml}"
        );
        assert!(xml.contains("--&gt; INVITE"), "{xml}");
    }

    #[test]
    fn text_says_the_step_expected_actual_and_ladder() {
        let shown = text(&failed());
        assert!(shown.starts_with("FAIL  s/a&b.toml"), "{shown}");
        assert!(shown.contains("(1.50s)"), "{shown}");
        assert!(shown.contains("step:     join"), "{shown}");
        assert!(shown.contains("expected: outcome joined"), "{shown}");
        assert!(shown.contains("actual:   outcome rejected"), "{shown}");
        assert!(shown.contains("ladder of call abc"), "{shown}");
    }

    fn skipped() -> FileResult {
        FileResult::Ran(ScenarioResult {
            file: "s/clock.toml".into(),
            title: "needs the clock".into(),
            duration: Duration::from_millis(20),
            steps_run: 0,
            failure: None,
            skipped: Some("needs a controllable clock <here>".into()),
            notes: Vec::new(),
        })
    }

    #[test]
    fn a_skip_is_its_own_state_in_every_report() {
        let r = skipped();
        assert!(!r.passed() && !r.failed());
        assert_eq!(r.verdict(), "skipped");
        assert_eq!(
            text(&r),
            "SKIP  s/clock.toml  (needs a controllable clock <here>)"
        );
        let xml = junit(&[r.clone(), failed()]);
        assert!(
            xml.contains("<skipped message=\"needs a controllable clock &lt;here&gt;\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{xml}"
        );
        let v = json(&[r, failed()]);
        assert_eq!(v["skipped"], 1);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["passed"], 0);
        assert_eq!(v["scenarios"][0]["result"], "skipped");
        assert_eq!(v["scenarios"][1]["result"], "failed");
    }

    #[test]
    fn notes_show_under_a_pass() {
        let r = FileResult::Ran(ScenarioResult {
            file: "s/n.toml".into(),
            title: "n".into(),
            duration: Duration::from_millis(20),
            steps_run: 2,
            failure: None,
            skipped: None,
            notes: vec!["step 'later': advance 2h skipped".into()],
        });
        let shown = text(&r);
        assert!(shown.starts_with("PASS  s/n.toml"), "{shown}");
        assert!(
            shown.contains("\n      note: step 'later': advance 2h skipped"),
            "{shown}"
        );
        assert!(junit(std::slice::from_ref(&r)).contains("<system-out>step &apos;later&apos;"));
        assert_eq!(
            json(&[r])["scenarios"][0]["notes"][0],
            "step 'later': advance 2h skipped"
        );
    }

    #[test]
    fn json_counts_and_carries_the_failure() {
        let v = json(&[failed()]);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["scenarios"][0]["failure"]["step"], "join");
        assert_eq!(v["scenarios"][0]["failure"]["calls"][0]["call_id"], "abc");
    }
}
