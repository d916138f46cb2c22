use std::io::IsTerminal;

use clap::Parser;
use dialin::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// mimalloc, not glibc's malloc: under load the bridge's calls allocate on
/// one worker thread and free on another, and glibc's per-arena locks made
/// allocation a fifth of the bridge's CPU. Built without transparent huge
/// pages, which had the kernel zero 2 MiB each time mimalloc reused memory
/// (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DIALIN_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in log files and CI output.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dialin: can't start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => dialin::cmd::serve::run(args).await,
            Command::Admin(args) => dialin::cmd::admin::run(args).await,
            Command::Call(args) => dialin::cmd::call::run(args).await,
            Command::Calls(args) => dialin::cmd::calls::run(args).await,
            Command::Demo(args) => dialin::cmd::demo::run(args).await,
            Command::Run(args) => dialin::cmd::run::run(args).await,
            Command::Load(args) => dialin::cmd::load::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dialin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
