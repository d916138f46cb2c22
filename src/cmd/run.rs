//! `dialin run PATH...`: runs scenario files, each on its own in-process
//! bridge (temporary data folder, ephemeral ports, its own clock), `--jobs`
//! at a time. Prints a line per scenario as it finishes (a failure with its
//! step, expected vs actual and the SIP ladders), writes `--junit` and
//! `--json`, and fails unless every scenario passed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
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
    let results = run_loaded(loaded, args.jobs as usize, RunOptions::default(), |r| {
        println!("{}", report::text(r))
    })
    .await;
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

fn write(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the folder {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
