//! `dialin run PATH...`: runs scenario files, each on its own in-process
//! bridge (temporary data folder, ephemeral ports, its own clock), `--jobs`
//! at a time; or, with `--target sip:HOST:PORT`, on a bridge that already
//! runs (its admin API from `--admin`/`--token` or its data folder), one at
//! a time. Prints a line per scenario as it finishes (a failure with its
//! step, expected vs actual and the SIP ladders; a skip with its reason),
//! writes `--junit` and `--json`, and fails if a scenario failed. With
//! `--record DIR` every call's audio goes to
//! `DIR/<file stem>/<step>[-<n>].wav`.
//!
//! More than [`PROGRESS_AFTER`] files on a terminal get a progress bar on
//! stderr (position, passed/failed/skipped, elapsed); the result lines go to
//! stdout through it so they do not tear. `--no-progress`, or stderr not
//! being a terminal (CI logs, tests), means no bar and no escape codes.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;

use crate::cli::RunArgs;
use crate::datadir::DataDir;
use crate::scenario::report::{self, FileResult};
use crate::scenario::runner::{RemoteBridge, RunOptions, check_remote, run_scenario};
use crate::scenario::{Loaded, Scenario, load_dir};

/// Every scenario file named by `paths` (a folder means its `*.toml`
/// files, sorted), loaded, in order.
pub fn load_paths(paths: &[PathBuf]) -> Vec<Loaded> {
    let mut loaded = Vec::new();
    for path in paths {
        if path.is_dir() {
            loaded.extend(load_dir(path));
        } else {
            loaded.push((path.clone(), Scenario::load(path)));
        }
    }
    loaded
}

/// Runs the loaded scenarios, `jobs` at a time, started in the order of
/// `loaded` (on a shared bridge one scenario's fixed ID can make a later one
/// skip, so the order must not depend on the scheduler); `each` sees every
/// result as it comes. The results come back in the order of `loaded`.
pub async fn run_loaded(
    loaded: Vec<Loaded>,
    jobs: usize,
    options: RunOptions,
    mut each: impl FnMut(&FileResult),
) -> Vec<FileResult> {
    let jobs = jobs.max(1);
    let options = Arc::new(options);
    let mut slots: Vec<Option<FileResult>> = vec![None; loaded.len()];
    let mut queue = loaded.into_iter().enumerate();
    let mut tasks = JoinSet::new();
    loop {
        // Start the next ones while there is room.
        while tasks.len() < jobs {
            let Some((index, (file, scenario))) = queue.next() else {
                break;
            };
            match scenario {
                Err(e) => {
                    let result = FileResult::Invalid {
                        file,
                        error: e.to_string(),
                    };
                    each(&result);
                    slots[index] = Some(result);
                }
                Ok(scenario) => {
                    let options = options.clone();
                    tasks.spawn(async move { (index, run_scenario(&scenario, &options).await) });
                }
            }
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok((index, result)) => {
                let result = FileResult::Ran(result);
                each(&result);
                slots[index] = Some(result);
            }
            Err(e) => tracing::error!(error = %e, "a scenario task panicked"),
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| FileResult::Invalid {
                file: PathBuf::from(format!("scenario #{}", i + 1)),
                error: "the scenario's task panicked".into(),
            })
        })
        .collect()
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let loaded = load_paths(&args.paths);
    if loaded.is_empty() {
        anyhow::bail!(
            "no scenario files in {}: give .toml files or folders holding them",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut options = RunOptions::default();
    if let Some(dir) = &args.record {
        check_record_dir(dir)?;
        options.record = Some(dir.clone());
    }
    let mut jobs = args.jobs as usize;
    if let Some(target) = &args.target {
        let remote = remote_bridge(&args, target).await?;
        for warning in check_remote(&remote).await.map_err(anyhow::Error::msg)? {
            println!("warning: {warning}");
        }
        if jobs > 1 {
            println!(
                "note: --jobs {jobs} ignored: scenarios on a running bridge share its tenant, so they run one at a time"
            );
            jobs = 1;
        }
        options.remote = Some(remote);
    }
    let show = show_progress(
        loaded.len(),
        args.no_progress,
        std::io::stderr().is_terminal(),
    );
    let bar = progress_bar(loaded.len(), show);
    let (mut ok, mut bad, mut skip) = (0, 0, 0);
    let results = run_loaded(loaded, jobs, options, |r| {
        if r.passed() {
            ok += 1;
        } else if r.skipped().is_some() {
            skip += 1;
        } else {
            bad += 1;
        }
        bar.suspend(|| println!("{}", report::text(r)));
        bar.inc(1);
        bar.set_message(format!("{ok} passed, {bad} failed, {skip} skipped"));
    })
    .await;
    bar.finish_and_clear();
    let passed = results.iter().filter(|r| r.passed()).count();
    let skipped = results.iter().filter(|r| r.skipped().is_some()).count();
    let failed = results.len() - passed - skipped;
    println!(
        "{} scenarios: {passed} passed, {failed} failed, {skipped} skipped",
        results.len()
    );
    if let Some(path) = &args.junit {
        write(path, &report::junit(&results))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report::json(&results))?;
        write(path, &text)?;
    }
    if failed > 0 {
        // Skips do not fail the run: the scenario could not run here.
        anyhow::bail!("{failed} of {} scenarios failed", results.len());
    }
    Ok(())
}

/// A bar shows for more files than this.
pub const PROGRESS_AFTER: usize = 3;

/// Whether `dialin run` shows a progress bar.
fn show_progress(files: usize, no_progress: bool, stderr_is_terminal: bool) -> bool {
    files > PROGRESS_AFTER && !no_progress && stderr_is_terminal
}

/// The bar on stderr, or a hidden one that draws nothing.
fn progress_bar(files: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(files as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} scenarios, {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message("0 passed, 0 failed");
    // Elapsed time moves while a long scenario runs.
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Creates the `--record` folder and checks a file can be written there,
/// before any scenario runs.
fn check_record_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--record: creating the folder {}", dir.display()))?;
    let probe = dir.join(format!(".dialin-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "--record: {} is not writable: give a folder you can write to",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `sip:HOST:PORT` (or `HOST:PORT`) → host and port; the error says what is
/// wrong and what is right.
pub fn parse_target(text: &str) -> Result<(String, u16), String> {
    let bad = |why: &str| {
        format!(
            "--target '{text}' {why}: write sip:HOST:PORT, e.g. sip:127.0.0.1:5060 (the address `dialin serve --sip` listens on)"
        )
    };
    let rest = text.trim();
    let rest = match rest.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sip") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("sips") => {
            return Err(bad("uses sips: (TLS), which the bridge does not serve"));
        }
        _ => rest,
    };
    if rest.contains('@') {
        return Err(bad("has a user part; the scenarios dial their own numbers"));
    }
    if rest.contains(';') || rest.contains('?') {
        return Err(bad(
            "has URI parameters; the scenarios choose the transport",
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an IPv6 address without its closing ']'"))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("has no port"))?;
        (host, port)
    } else {
        rest.rsplit_once(':').ok_or_else(|| bad("has no port"))?
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(&format!("has '{port}' for a port (1 to 65535)")))?;
    Ok((host.to_string(), port))
}

/// The running bridge the arguments name: its SIP address (resolved now),
/// its admin API and token (from the flags, else the data folder).
async fn remote_bridge(args: &RunArgs, target: &str) -> anyhow::Result<RemoteBridge> {
    let (host, port) = parse_target(target).map_err(anyhow::Error::msg)?;
    let sip: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("--target {target}: can't resolve '{host}'"))?
        .next()
        .with_context(|| format!("--target {target}: '{host}' has no address"))?;
    let data = DataDir::existing(&args.data);
    let admin = match &args.admin {
        Some(url) => url.clone(),
        None => match data.read_server_info() {
            Some(info) => info.admin_url,
            None => bail!(
                "no --admin URL, and no running server's server.json in {}: give --admin http://HOST:PORT (the bridge's admin API), or --data with the bridge's data folder",
                args.data.display()
            ),
        },
    };
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.trim().to_string(),
        (None, Some(file)) => read_token_file(file)?,
        (None, None) => data
            .read_token()
            .with_context(|| format!("reading the admin token in {}", args.data.display()))?
            .with_context(|| {
                format!(
                    "no --token, and no admin-token in {}: give --token, --token-file, or --data with the bridge's data folder",
                    args.data.display()
                )
            })?,
    };
    if token.is_empty() {
        bail!(
            "the admin token is empty: give the server's token (its data folder's admin-token file)"
        );
    }
    Ok(RemoteBridge { sip, admin, token })
}

fn read_token_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--token-file {}: can't read it", file.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        bail!(
            "--token-file {} is empty: it should hold the server's admin token",
            file.display()
        );
    }
    Ok(token)
}

fn write(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the folder {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_only_for_many_files_on_a_terminal() {
        assert!(show_progress(4, false, true));
        assert!(!show_progress(3, false, true), "a few files: no bar");
        assert!(!show_progress(10, true, true), "--no-progress");
        assert!(!show_progress(10, false, false), "not a terminal");
    }

    #[test]
    fn a_hidden_bar_draws_nothing() {
        assert!(progress_bar(10, false).is_hidden());
    }

    #[test]
    fn an_unwritable_record_folder_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = check_record_dir(&file.join("rec")).unwrap_err();
        assert!(format!("{err:#}").contains("--record"), "{err:#}");
        check_record_dir(&dir.path().join("new/rec")).unwrap();
        assert!(dir.path().join("new/rec").is_dir());
        assert_eq!(
            std::fs::read_dir(dir.path().join("new/rec"))
                .unwrap()
                .count(),
            0,
            "the probe is gone"
        );
    }

    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn a_target_is_sip_host_port() {
        assert_eq!(
            parse_target("sip:127.0.0.1:5060"),
            Ok(("127.0.0.1".into(), 5060))
        );
        assert_eq!(
            parse_target("SIP:bridge.example:5080"),
            Ok(("bridge.example".into(), 5080))
        );
        assert_eq!(
            parse_target("127.0.0.1:5060"),
            Ok(("127.0.0.1".into(), 5060))
        );
        assert_eq!(parse_target("sip:[::1]:5060"), Ok(("::1".into(), 5060)));
    }

    #[test]
    fn a_malformed_target_says_what_is_wrong_and_what_is_right() {
        for (text, says) in [
            ("sip:127.0.0.1", "has no port"),
            ("sip:127.0.0.1:0", "'0' for a port"),
            ("sip:127.0.0.1:99999", "'99999' for a port"),
            ("sip:127.0.0.1:five", "'five' for a port"),
            ("sip::5060", "has no host"),
            ("sip:alice@127.0.0.1:5060", "user part"),
            ("sip:127.0.0.1:5060;transport=tcp", "parameters"),
            ("sips:127.0.0.1:5061", "TLS"),
            ("sip:[::1:5060", "closing ']'"),
        ] {
            let e = parse_target(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
            assert!(e.contains("sip:HOST:PORT"), "{text}: {e}");
        }
    }

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["dialin", "run", "scenarios"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(a) => Ok(a),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn the_remote_flags_need_a_target() {
        let a = run_args(&[]).expect("no flags are fine");
        assert!(a.target.is_none());
        for flag in [
            ["--admin", "http://127.0.0.1:8080"],
            ["--token", "t"],
            ["--token-file", "t.txt"],
            ["--data", "d"],
        ] {
            let e = run_args(&flag).expect_err(flag[0]);
            assert!(e.to_string().contains("--target"), "{}: {e}", flag[0]);
        }
        let a = run_args(&[
            "--target",
            "sip:127.0.0.1:5060",
            "--admin",
            "http://127.0.0.1:8080",
            "--token",
            "t",
        ])
        .expect("a full remote run");
        assert_eq!(a.target.as_deref(), Some("sip:127.0.0.1:5060"));
        assert_eq!(a.admin.as_deref(), Some("http://127.0.0.1:8080"));
        assert!(
            run_args(&["--target", "sip:h:1", "--token", "t", "--token-file", "f"]).is_err(),
            "--token and --token-file conflict"
        );
    }

    #[tokio::test]
    async fn without_admin_or_token_the_data_folder_is_read() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let data = dir.path().display().to_string();
        let args = run_args(&["--target", "sip:127.0.0.1:5060", "--data", &data]).unwrap();
        let e = remote_bridge(&args, "sip:127.0.0.1:5060")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--admin"), "{e}");

        let info = r#"{"admin_url": "http://127.0.0.1:9", "pid": 1}"#;
        std::fs::write(dir.path().join("server.json"), info).unwrap();
        let e = remote_bridge(&args, "sip:127.0.0.1:5060")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--token"), "{e}");

        std::fs::write(dir.path().join("admin-token"), "secret\n").unwrap();
        let remote = remote_bridge(&args, "sip:127.0.0.1:5060").await.unwrap();
        assert_eq!(remote.admin, "http://127.0.0.1:9");
        assert_eq!(remote.token, "secret");
        assert_eq!(remote.sip, "127.0.0.1:5060".parse().unwrap());

        let file = dir.path().join("token.txt");
        std::fs::write(&file, "  other \n").unwrap();
        let file = file.display().to_string();
        let args = run_args(&[
            "--target",
            "sip:127.0.0.1:5060",
            "--data",
            &data,
            "--token-file",
            &file,
        ])
        .unwrap();
        let remote = remote_bridge(&args, "sip:127.0.0.1:5060").await.unwrap();
        assert_eq!(remote.token, "other");
    }
}
