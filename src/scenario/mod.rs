//! Call scenarios: TOML files that set up a tenant, users and meetings, then
//! run named steps (calls, admin actions, clock moves, waits, captures) and
//! check what happened. `scenarios/README.md` documents every key.
//!
//! This module loads and checks a file: the shape (serde, unknown keys are
//! errors), then the meaning (unique step names, references to users,
//! meetings and steps that exist, digits the caller can press). Every error
//! names the file, the line and the column, and says what is expected.
//! [`runner::run_scenario`] runs a checked scenario on its own in-process
//! bridge, or on one that already runs; [`report`] turns the results into text, JUnit XML and JSON.

pub mod model;
pub mod report;
pub mod runner;

use std::collections::HashMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::admin::ids::{ConferenceId, EmailAddress, PhoneNumber};
use crate::caller::DtmfPlan;
use crate::media::dtmf::DtmfMethod;

pub use model::{
    Action, AdminAction, AdminSpec, CallSpec, ClockNeed, Expect, MeetingSpec, NumberSpec, Step,
    Template, TenantSettings, UserSpec,
};
use model::{MEETING_FIELDS, ScenarioFile, USER_FIELDS};

/// The most calls one concurrent step may place.
pub const MAX_CONCURRENT: u32 = 1000;

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("{}: cannot read the scenario: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ScenarioError {
    /// The 1-based line of an [`ScenarioError::Invalid`].
    pub fn line(&self) -> Option<usize> {
        match self {
            ScenarioError::Invalid { line, .. } => Some(*line),
            ScenarioError::Read { .. } => None,
        }
    }
}

/// A scenario file, parsed and checked.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: PathBuf,
    pub title: String,
    pub description: Option<String>,
    pub clock: ClockNeed,
    pub tenant: TenantSettings,
    pub numbers: Vec<NumberSpec>,
    pub users: Vec<UserSpec>,
    pub meetings: Vec<MeetingSpec>,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Parses and checks `text`; `file` names it in errors.
    pub fn from_str(text: &str, file: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let file = file.as_ref().to_path_buf();
        let parsed: ScenarioFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            invalid(&file, text, span, e.message().trim_end().to_string())
        })?;
        Checker {
            file: &file,
            text,
            names: HashMap::new(),
        }
        .check(&parsed)?;
        Ok(Scenario {
            file,
            title: parsed.title,
            description: parsed.description,
            clock: parsed.clock,
            tenant: parsed.tenant,
            numbers: parsed.numbers,
            users: parsed.users,
            meetings: parsed.meetings,
            steps: parsed.steps,
        })
    }

    /// Reads and checks one file.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Scenario::from_str(&text, path)
    }

    /// The user a fixture knows by `name`.
    pub fn user(&self, name: &str) -> Option<&UserSpec> {
        self.users.iter().find(|u| u.name.get_ref() == name)
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name.get_ref() == name)
    }
}

/// One file of [`load_dir`]: its path and what loading it gave.
pub type Loaded = (PathBuf, Result<Scenario, ScenarioError>);

/// Every `*.toml` in `dir`, sorted by path, each loaded on its own (one bad
/// file does not hide the others). A folder that can't be read comes back
/// as one entry: the folder and its read error.
pub fn load_dir(dir: impl AsRef<Path>) -> Vec<Loaded> {
    let dir = dir.as_ref();
    let mut paths = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            let file = dir.to_path_buf();
            return vec![(file.clone(), Err(ScenarioError::Read { file, source }))];
        }
    };
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(source) => {
                let file = dir.to_path_buf();
                return vec![(file.clone(), Err(ScenarioError::Read { file, source }))];
            }
        };
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let loaded = Scenario::load(&p);
            (p, loaded)
        })
        .collect()
}

fn invalid(file: &Path, text: &str, span: Range<usize>, message: String) -> ScenarioError {
    let (line, column) = position(text, span.start);
    ScenarioError::Invalid {
        file: file.to_path_buf(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Meeting,
    Capture,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Meeting => "meeting",
            Kind::Capture => "capture",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::User | Kind::Capture => &USER_FIELDS,
            Kind::Meeting => &MEETING_FIELDS,
        }
    }
}

/// The meaning checks, in file order: a name is known from where it is
/// defined on.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    names: HashMap<String, Kind>,
}

type Spanned<T> = toml::Spanned<T>;

impl Checker<'_> {
    fn err(&self, span: Range<usize>, message: String) -> ScenarioError {
        invalid(self.file, self.text, span, message)
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        position(self.text, span.start).0
    }

    fn define(&mut self, name: &Spanned<String>, kind: Kind) -> Result<(), ScenarioError> {
        let n = name.get_ref();
        let ok = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(self.err(
                name.span(),
                format!(
                    "'{n}' is not a {} name: use letters, digits, '_' and '-'",
                    kind.as_str()
                ),
            ));
        }
        if let Some(old) = self.names.insert(n.clone(), kind) {
            return Err(self.err(
                name.span(),
                format!(
                    "'{n}' is already the name of a {}: give each user, meeting and capture its own name",
                    old.as_str()
                ),
            ));
        }
        Ok(())
    }

    fn known(&self, kind: Kind) -> String {
        let mut names: Vec<_> = self
            .names
            .iter()
            .filter(|(_, k)| **k == kind)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort();
        if names.is_empty() {
            "none is defined".into()
        } else {
            format!("defined: {}", names.join(", "))
        }
    }

    fn expect_kind(&self, name: &Spanned<String>, kind: Kind) -> Result<(), ScenarioError> {
        match self.names.get(name.get_ref()) {
            Some(k) if *k == kind => Ok(()),
            Some(k) => Err(self.err(
                name.span(),
                format!(
                    "'{}' is a {}, not a {} ({})",
                    name.get_ref(),
                    k.as_str(),
                    kind.as_str(),
                    self.known(kind)
                ),
            )),
            None => Err(self.err(
                name.span(),
                format!(
                    "no {} is named '{}' ({})",
                    kind.as_str(),
                    name.get_ref(),
                    self.known(kind)
                ),
            )),
        }
    }

    fn template(&self, t: &Template) -> Result<(), ScenarioError> {
        for (name, field) in t.references() {
            let Some(kind) = self.names.get(name) else {
                let mut all: Vec<_> = self.names.keys().map(String::as_str).collect();
                all.sort();
                return Err(self.err(
                    t.span(),
                    format!(
                        "'{}': no user, meeting or capture is named '{name}' at this step (known here: {})",
                        t.as_str(),
                        if all.is_empty() { "none".into() } else { all.join(", ") }
                    ),
                ));
            };
            if !kind.fields().contains(&field) {
                return Err(self.err(
                    t.span(),
                    format!(
                        "'{}': a {} has no field '{field}': use one of {}",
                        t.as_str(),
                        kind.as_str(),
                        kind.fields().join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn parse_value<T: std::str::FromStr<Err = String>>(
        &self,
        value: &Spanned<String>,
    ) -> Result<T, ScenarioError> {
        value
            .get_ref()
            .parse()
            .map_err(|e: String| self.err(value.span(), e))
    }

    fn check(mut self, file: &ScenarioFile) -> Result<(), ScenarioError> {
        for n in &file.numbers {
            self.parse_value::<PhoneNumber>(&n.number)?;
        }
        for u in &file.users {
            self.define(&u.name, Kind::User)?;
            self.parse_value::<EmailAddress>(&u.email)?;
            if let Some(id) = &u.conference_id {
                self.parse_value::<ConferenceId>(id)?;
            }
        }
        for m in &file.meetings {
            self.expect_kind(&m.organizer, Kind::User)?;
            self.define(&m.name, Kind::Meeting)?;
        }
        if file.steps.is_empty() {
            return Err(self.err(
                0..0,
                "the scenario has no [[step]]: add at least one".into(),
            ));
        }
        let mut steps: HashMap<&str, (usize, bool)> = HashMap::new();
        for (i, step) in file.steps.iter().enumerate() {
            let name = step.name.get_ref();
            if name.trim().is_empty() {
                return Err(self.err(step.name.span(), "a step name can't be empty".into()));
            }
            if let Some((first, _)) = steps.get(name.as_str()) {
                let first_span = file.steps[*first].name.span();
                return Err(self.err(
                    step.name.span(),
                    format!(
                        "a step is already named '{name}' (line {}): give each step its own name",
                        self.line_of(&first_span)
                    ),
                ));
            }
            steps.insert(name, (i, step.concurrent.is_some()));
        }
        let step_exists = |s: &Spanned<String>| -> Result<(), ScenarioError> {
            if steps.contains_key(s.get_ref().as_str()) {
                Ok(())
            } else {
                Err(invalid(
                    self.file,
                    self.text,
                    s.span(),
                    format!("no step is named '{}'", s.get_ref()),
                ))
            }
        };
        for (i, step) in file.steps.iter().enumerate() {
            self.step(i, step, &steps, &step_exists)?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        index: usize,
        step: &Step,
        steps: &HashMap<&str, (usize, bool)>,
        step_exists: &dyn Fn(&Spanned<String>) -> Result<(), ScenarioError>,
    ) -> Result<(), ScenarioError> {
        let name = step.name.get_ref();
        match &step.action {
            Action::Call(call) => self.call(call)?,
            Action::Admin(admin) => self.admin(admin)?,
            Action::Advance(_) | Action::Wait(_) | Action::WaitJoined(_) | Action::Check => {}
            Action::WaitFor(target) => {
                step_exists(target)?;
                let (at, concurrent) = steps[target.get_ref().as_str()];
                if at >= index || !concurrent {
                    return Err(self.err(
                        target.span(),
                        format!(
                            "wait_for '{}': name an earlier step with concurrent calls",
                            target.get_ref()
                        ),
                    ));
                }
            }
            Action::Capture(capture) => {
                self.expect_kind(&capture.user, Kind::User)?;
                self.define(&capture.name, Kind::Capture)?;
            }
        }
        if let Some(count) = &step.concurrent {
            let n = *count.get_ref();
            if n == 0 || n > MAX_CONCURRENT {
                return Err(self.err(
                    count.span(),
                    format!("concurrent = {n}: use 1 to {MAX_CONCURRENT} calls"),
                ));
            }
        }
        let Some(expect) = &step.expect else {
            return Ok(());
        };
        let is_call = matches!(step.action, Action::Call(_));
        let call_keys = expect.call_keys();
        if !is_call && !call_keys.is_empty() {
            return Err(self.err(
                step.name.span(),
                format!(
                    "step '{name}' expects {} but places no call: put them on a call step",
                    call_keys.join(", ")
                ),
            ));
        }
        let count_keys = expect.count_keys();
        if step.concurrent.is_none() && !count_keys.is_empty() {
            return Err(self.err(
                step.name.span(),
                format!(
                    "step '{name}' expects {} but has no concurrent calls: set concurrent = N",
                    count_keys.join(", ")
                ),
            ));
        }
        for s in [&expect.all_accepted_before, &expect.none_accepted_after]
            .into_iter()
            .flatten()
        {
            step_exists(s)?;
        }
        if let Some(t) = &expect.conference_id {
            self.template(t)?;
        }
        for e in &expect.email {
            self.expect_kind(&e.to, Kind::User)?;
            for t in e.contains.iter().chain(&e.not_contains) {
                self.template(t)?;
            }
        }
        for m in &expect.meeting {
            self.expect_kind(&m.name, Kind::Meeting)?;
            if let Some(t) = &m.conference_id {
                self.template(t)?;
            }
        }
        for m in &expect.migration {
            self.expect_kind(&m.user, Kind::User)?;
        }
        for r in &expect.roster {
            self.template(&r.conference_id)?;
        }
        for l in &expect.lookup {
            self.template(&l.conference_id)?;
        }
        Ok(())
    }

    fn call(&self, call: &CallSpec) -> Result<(), ScenarioError> {
        self.template(&call.to)?;
        if let Some(from) = &call.from {
            self.template(from)?;
        }
        if let Some(digits) = &call.digits {
            self.template(digits)?;
            // The references are filled in later; with a digit in their
            // place the rest must already be keys the caller can press.
            let sample = digits
                .resolve(|_, _| Some("0".into()))
                .expect("every reference resolves to 0");
            DtmfPlan::parse(&sample, DtmfMethod::Rfc4733).map_err(|e| {
                self.err(digits.span(), format!("digits '{}': {e}", digits.as_str()))
            })?;
        }
        Ok(())
    }

    fn admin(&mut self, admin: &AdminSpec) -> Result<(), ScenarioError> {
        let action = *admin.action.get_ref();
        let needs = |what: &str| {
            self.err(
                admin.action.span(),
                format!("admin action {} needs {what}", action.as_str()),
            )
        };
        match action {
            AdminAction::SetTenant => {
                if admin.tenant.is_none() {
                    return Err(needs("a tenant table (tenant = { send_emails = false })"));
                }
            }
            _ => match &admin.user {
                Some(user) => self.expect_kind(user, Kind::User)?,
                None => return Err(needs("user = \"NAME\"")),
            },
        }
        if action != AdminAction::Enable {
            let only_enable = [
                ("provider", admin.provider.is_some()),
                ("replace_provider", admin.replace_provider),
            ];
            if let Some((key, _)) = only_enable.iter().find(|(_, set)| *set) {
                return Err(self.err(
                    admin.action.span(),
                    format!(
                        "{key} applies to admin action enable, not {}: remove it or use action = \"enable\"",
                        action.as_str()
                    ),
                ));
            }
        }
        if action == AdminAction::SetId && admin.conference_id.is_none() {
            return Err(needs("conference_id = \"NEW ID\""));
        }
        if let Some(t) = &admin.conference_id {
            self.template(t)?;
        }
        if action == AdminAction::ScheduleMeeting {
            match &admin.meeting {
                Some(meeting) => self.define(meeting, Kind::Meeting)?,
                None => return Err(needs("meeting = \"NAME\" (how later steps refer to it)")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::prompts::PromptId;

    const MINIMAL: &str = r#"
title = "t"

[[user]]
name = "alice"
email = "alice@contoso.com"

[[step]]
name = "join"
[step.call]
to = "+14255550100"
digits = "${alice.conference_id}#"
[step.expect]
prompts = ["welcome", "joining"]
outcome = "joined"
"#;

    fn error(text: &str) -> (usize, String) {
        match Scenario::from_str(text, "t.toml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => {
                let line = e.line().expect("an invalid file has a line");
                let shown = e.to_string();
                assert!(shown.starts_with("t.toml:"), "{shown}");
                (line, shown)
            }
        }
    }

    fn line_of(text: &str, needle: &str) -> usize {
        let at = text.find(needle).expect("needle in text");
        text[..at].matches('\n').count() + 1
    }

    #[test]
    fn every_example_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let loaded = load_dir(&dir);
        assert!(loaded.len() >= 5, "only {} scenarios", loaded.len());
        for (path, result) in &loaded {
            if let Err(e) = result {
                panic!("{} does not parse: {e}", path.display());
            }
        }
        let paths: Vec<_> = loaded.iter().map(|(p, _)| p.clone()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn a_minimal_scenario_reads_as_written() {
        let s = Scenario::from_str(MINIMAL, "t.toml").unwrap();
        assert_eq!(s.steps.len(), 1);
        let Action::Call(call) = &s.steps[0].action else {
            panic!("a call step")
        };
        assert_eq!(call.method.0, DtmfMethod::Rfc4733);
        let digits = call.digits.as_ref().unwrap();
        let resolved = digits
            .resolve(|name, field| {
                (name == "alice" && field == "conference_id").then(|| "7654321".into())
            })
            .unwrap();
        assert_eq!(resolved, "7654321#");
        let expect = s.steps[0].expect.as_ref().unwrap();
        let prompts: Vec<_> = expect
            .prompts
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(prompts, vec![PromptId::Welcome, PromptId::Joining]);
        assert_eq!(expect.outcome, Some(model::CallOutcome::Joined));
    }

    #[test]
    fn fixture_values_read_as_written() {
        let text = MINIMAL.replace(
            "[[user]]",
            "[tenant]\nconference_id_mode = \"dynamic-only\"\nleader_pin_length = 6\n\n\
             [[user]]\nname = \"ian\"\nemail = \"ian@contoso.com\"\nprovider = { third-party = \"InterCall\" }\n\
             enabled = false\nconference_id = \"12345678\"\n\n[[user]]",
        );
        let s = Scenario::from_str(&text, "t.toml").unwrap();
        assert_eq!(
            s.tenant.conference_id_mode,
            Some(crate::admin::model::ConferenceIdMode::DynamicOnly)
        );
        assert_eq!(s.tenant.leader_pin_length, Some(6));
        let ian = s.user("ian").unwrap();
        assert_eq!(
            ian.provider,
            model::ProviderSpec::ThirdParty("InterCall".into())
        );
        assert!(!ian.enabled);
        assert!(s.user("alice").unwrap().enabled);

        let bad_id = text.replace("12345678", "12-45");
        let (line, shown) = error(&bad_id);
        assert_eq!(line, line_of(&bad_id, "12-45"));
        assert!(shown.contains("digits 0-9"), "{shown}");
    }

    #[test]
    fn resolve_reports_a_missing_value() {
        let t = Template::parse("${alice.previous_conference_id}", 0..0).unwrap();
        let e = t.resolve(|_, _| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "${alice.previous_conference_id} has no value here"
        );
    }

    #[test]
    fn an_unknown_key_gives_its_line() {
        let text = MINIMAL.replace(
            "outcome = \"joined\"",
            "outcome = \"joined\"\nhangs_up = true",
        );
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "hangs_up"));
        assert!(shown.contains("unknown field `hangs_up`"), "{shown}");
        assert!(shown.contains("expected one of"), "{shown}");
    }

    #[test]
    fn a_type_error_gives_its_line_and_the_expected_type() {
        let text = MINIMAL.replace("[step.call]", "concurrent = \"fifty\"\n[step.call]");
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "concurrent"));
        assert!(
            shown.contains("u32") || shown.contains("integer"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let text = MINIMAL.replace("to = \"+14255550100\"\n", "");
        let (line, shown) = error(&text);
        assert!(shown.contains("missing field `to`"), "{shown}");
        assert_eq!(line, line_of(&text, "[step.call]"), "{shown}");
    }

    #[test]
    fn an_undefined_user_in_a_template_gives_its_line() {
        let text = MINIMAL.replace("${alice.conference_id}", "${bob.conference_id}");
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "digits"));
        assert!(shown.contains("'bob'"), "{shown}");
        assert!(shown.contains("alice"), "names the known ones: {shown}");
    }

    #[test]
    fn an_unknown_template_field_lists_the_fields() {
        let text = MINIMAL.replace("${alice.conference_id}", "${alice.pin}");
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "digits"));
        assert!(shown.contains("leader_pin"), "{shown}");
    }

    #[test]
    fn a_bad_prompt_name_lists_the_valid_ones() {
        let text = MINIMAL.replace("\"joining\"]", "\"joined\"]");
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "prompts"));
        for p in PromptId::ALL {
            assert!(shown.contains(p.as_str()), "{shown}");
        }
    }

    #[test]
    fn duplicate_step_names_point_at_both() {
        let text = format!("{MINIMAL}\n[[step]]\nname = \"join\"\nadvance = \"2h\"\n");
        let (line, shown) = error(&text);
        assert_eq!(line, text.lines().count() - 1);
        assert!(
            shown.contains(&format!("line {}", line_of(&text, "name = \"join\""))),
            "{shown}"
        );
    }

    #[test]
    fn a_capture_is_known_only_after_its_step() {
        let early = MINIMAL.replace("${alice.conference_id}", "${old.conference_id}");
        let text = format!(
            "{early}\n[[step]]\nname = \"keep\"\ncapture = {{ user = \"alice\", as = \"old\" }}\n"
        );
        let (line, _) = error(&text);
        assert_eq!(line, line_of(&text, "digits"));

        let text = MINIMAL.replace(
            "[[step]]\nname = \"join\"",
            "[[step]]\nname = \"keep\"\ncapture = { user = \"alice\", as = \"old\" }\n\n[[step]]\nname = \"join\"",
        )
        .replace("${alice.conference_id}", "${old.conference_id}");
        Scenario::from_str(&text, "t.toml").unwrap();
    }

    #[test]
    fn bad_values_are_explained() {
        for (from, to, says) in [
            (
                "digits = \"${alice.conference_id}#\"",
                "digits = \"12x#\"",
                "'x'",
            ),
            (
                "[step.call]",
                "[step.call]\nhang_up = \"never\"",
                "wait-for-bye",
            ),
            (
                "[step.call]",
                "[step.call]\nmethod = \"sip-info\"",
                "rfc4733, info or inband",
            ),
            (
                "outcome = \"joined\"",
                "outcome = \"joined\"\ndecision_within = \"soon\"",
                "500ms",
            ),
            (
                "outcome = \"joined\"",
                "outcome = \"joined\"\njoined = 3",
                "concurrent",
            ),
            ("[step.call]", "advance = \"1h\"\n[step.call]", "2 actions"),
        ] {
            let text = MINIMAL.replace(from, to);
            let (_, shown) = error(&text);
            assert!(shown.contains(says), "{to}: {shown}");
        }
    }

    #[test]
    fn admin_actions_need_their_arguments() {
        let base = "title = \"t\"\n[[user]]\nname = \"alice\"\nemail = \"alice@contoso.com\"\n[[step]]\nname = \"a\"\n[step.admin]\n";
        let (_, shown) = error(&format!("{base}action = \"set-id\"\nuser = \"alice\"\n"));
        assert!(shown.contains("conference_id"), "{shown}");
        let (_, shown) = error(&format!("{base}action = \"reset-id\"\n"));
        assert!(shown.contains("user ="), "{shown}");
        let (_, shown) = error(&format!("{base}action = \"reset-id\"\nuser = \"zed\"\n"));
        assert!(shown.contains("'zed'"), "{shown}");
        let (line, shown) = error(&format!("{base}action = \"explode\"\nuser = \"alice\"\n"));
        assert_eq!(line, 8, "{shown}");
        assert!(shown.contains("reset-id"), "{shown}");
    }

    #[test]
    fn enable_takes_a_provider_and_replace_provider() {
        let base = "title = \"t\"\n[[user]]\nname = \"ian\"\nemail = \"ian@contoso.com\"\nprovider = { third-party = \"InterCall\" }\nconference_id = \"12345678\"\n[[step]]\nname = \"a\"\n[step.admin]\n";
        let text = format!(
            "{base}action = \"enable\"\nuser = \"ian\"\nprovider = \"microsoft\"\nreplace_provider = true\n"
        );
        let s = Scenario::from_str(&text, "t.toml").unwrap();
        let Action::Admin(admin) = &s.steps[0].action else {
            panic!("an admin step")
        };
        assert_eq!(admin.provider, Some(model::ProviderSpec::Microsoft));
        assert!(admin.replace_provider);
        let text = format!(
            "{base}action = \"enable\"\nuser = \"ian\"\nprovider = {{ third-party = \"PGi\" }}\n"
        );
        let s = Scenario::from_str(&text, "t.toml").unwrap();
        let Action::Admin(admin) = &s.steps[0].action else {
            panic!("an admin step")
        };
        assert_eq!(
            admin.provider,
            Some(model::ProviderSpec::ThirdParty("PGi".into()))
        );
        assert!(!admin.replace_provider);

        // Only enable takes them; the error points at the action.
        let text =
            format!("{base}action = \"reset-id\"\nuser = \"ian\"\nreplace_provider = true\n");
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "action = \"reset-id\""), "{shown}");
        assert!(
            shown.contains("replace_provider applies to admin action enable, not reset-id"),
            "{shown}"
        );
        let text =
            format!("{base}action = \"disable\"\nuser = \"ian\"\nprovider = \"microsoft\"\n");
        let (_, shown) = error(&text);
        assert!(
            shown.contains("provider applies to admin action enable"),
            "{shown}"
        );
        // A typo is an unknown key with its line.
        let text = format!("{base}action = \"enable\"\nuser = \"ian\"\nreplace_providers = true\n");
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "replace_providers"), "{shown}");
        assert!(
            shown.contains("unknown field `replace_providers`"),
            "{shown}"
        );
        let text = format!("{base}action = \"enable\"\nuser = \"ian\"\nprovider = \"acme\"\n");
        let (line, _) = error(&text);
        assert_eq!(line, line_of(&text, "provider = \"acme\""));
    }

    #[test]
    fn the_clock_key_says_what_a_real_clock_does_to_the_scenario() {
        let s = Scenario::from_str(MINIMAL, "t.toml").unwrap();
        assert_eq!(s.clock, ClockNeed::Required);
        let text = format!("clock = \"skip-advance\"\n{MINIMAL}");
        let s = Scenario::from_str(&text, "t.toml").unwrap();
        assert_eq!(s.clock, ClockNeed::SkipAdvance);
        let text = format!("clock = \"sometimes\"\n{MINIMAL}");
        let (line, shown) = error(&text);
        assert_eq!(line, 1, "{shown}");
        assert!(
            shown.contains("required") && shown.contains("skip-advance"),
            "{shown}"
        );
    }

    #[test]
    fn wait_for_names_an_earlier_concurrent_step() {
        let text = format!("{MINIMAL}\n[[step]]\nname = \"w\"\nwait_for = \"join\"\n");
        let (line, shown) = error(&text);
        assert_eq!(line, line_of(&text, "wait_for"));
        assert!(shown.contains("concurrent"), "{shown}");
    }

    #[test]
    fn load_dir_reports_an_unreadable_folder() {
        let loaded = load_dir("/nonexistent-scenarios");
        assert_eq!(loaded.len(), 1);
        assert!(matches!(loaded[0].1, Err(ScenarioError::Read { .. })));
    }

    #[test]
    fn load_reports_a_missing_file() {
        let e = Scenario::load("/nonexistent/x.toml").unwrap_err();
        assert!(matches!(e, ScenarioError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/x.toml"));
    }

    #[test]
    fn position_counts_lines_and_columns_from_one() {
        assert_eq!(position("ab\ncd", 0), (1, 1));
        assert_eq!(position("ab\ncd", 4), (2, 2));
        assert_eq!(position("ab\ncd", 99), (2, 3));
    }
}
