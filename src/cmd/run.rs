//! `dialin run PATH...`: runs scenario files, each on its own in-process
//! bridge (temporary data folder, ephemeral ports, its own clock), `--jobs`
//! at a time. Prints a line per scenario as it finishes (a failure with its
//! step, expected vs actual and the SIP ladders), writes `--junit` and
//! `--json`, and fails unless every scenario passed. With `--record DIR`
//! every call's audio goes to `DIR/<file stem>/<step>[-<n>].wav`.
//!
//! More than [`PROGRESS_AFTER`] files on a terminal get a progress bar on
//! stderr (position, passed/failed, elapsed); the result lines go to stdout
//! through it so they do not tear. `--no-progress`, or stderr not being a
//! terminal (CI logs, tests), means no bar and no escape codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::RunArgs;
use crate::scenario::report::{self, FileResult};
use crate::scenario::runner::{RunOptions, run_scenario};
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

/// Runs the loaded scenarios, `jobs` at a time; `each` sees every result as
/// it comes. The results come back in the order of `loaded`.
pub async fn run_loaded(
    loaded: Vec<Loaded>,
    jobs: usize,
    options: RunOptions,
    mut each: impl FnMut(&FileResult),
) -> Vec<FileResult> {
    let permits = Arc::new(Semaphore::new(jobs.max(1)));
    let options = Arc::new(options);
    let mut slots: Vec<Option<FileResult>> = vec![None; loaded.len()];
    let mut tasks = JoinSet::new();
    for (index, (file, scenario)) in loaded.into_iter().enumerate() {
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
                let permits = permits.clone();
                let options = options.clone();
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    (index, run_scenario(&scenario, &options).await)
                });
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
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
    let show = show_progress(
        loaded.len(),
        args.no_progress,
        std::io::stderr().is_terminal(),
    );
    let bar = progress_bar(loaded.len(), show);
    let (mut ok, mut bad) = (0, 0);
    let results = run_loaded(loaded, args.jobs as usize, options, |r| {
        if r.passed() {
            ok += 1;
        } else {
            bad += 1;
        }
        bar.suspend(|| println!("{}", report::text(r)));
        bar.inc(1);
        bar.set_message(format!("{ok} passed, {bad} failed"));
    })
    .await;
    bar.finish_and_clear();
    let passed = results.iter().filter(|r| r.passed()).count();
    let failed = results.len() - passed;
    println!(
        "{} scenarios: {passed} passed, {failed} failed",
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
}
