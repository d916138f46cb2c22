//! `dialin serve`: bind, print where to reach the server, run until Ctrl-C.

use std::sync::Arc;

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::media::prompts::PromptCatalog;
use crate::net::server::{ServeOptions, Server};
use crate::net::sip::SipOptions;
use crate::time::{Clock, ManualClock, SystemClock, Timestamp};

fn clock(spec: &str) -> anyhow::Result<Arc<dyn Clock>> {
    match spec
        .split_once(':')
        .map_or((spec, None), |(a, b)| (a, Some(b)))
    {
        ("real", None) => Ok(Arc::new(SystemClock)),
        ("manual", start) => {
            let now = SystemClock.now();
            let start = match start {
                Some(text) => Timestamp::parse_relative(text, now).map_err(anyhow::Error::msg)?,
                None => now,
            };
            Ok(Arc::new(ManualClock::new(start)))
        }
        _ => anyhow::bail!("'{spec}' is not a clock: use real, manual, or manual:TIME (RFC 3339)"),
    }
}

/// `FIRST-LAST` (or one port) to a port range.
pub fn port_range(spec: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let bad = || {
        anyhow::anyhow!(
            "'{spec}' is not a port range: use FIRST-LAST with FIRST <= LAST, e.g. 20000-20999"
        )
    };
    let (first, last) = spec.split_once('-').unwrap_or((spec, spec));
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(bad());
    }
    Ok(first..=last)
}

/// The guessing-protection settings of the flags; `None` for `--guard off`.
fn guard_config(args: &ServeArgs) -> anyhow::Result<Option<crate::guard::Config>> {
    if args.guard == "off" {
        return Ok(None);
    }
    let duration = |flag: &str, text: &str| {
        crate::time::parse_duration(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
    };
    let config = crate::guard::Config {
        failures: args.guard_failures,
        caller_id_failures: args.guard_caller_id_failures,
        window: duration("--guard-window", &args.guard_window)?,
        cooldown: duration("--guard-cooldown", &args.guard_cooldown)?,
        alarm: args.guard_alarm,
        max_entries: args.guard_max_entries,
    };
    config.validate()?;
    Ok(Some(config))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut options = ServeOptions::new(args.data.clone());
    options.admin = args.admin;
    options.clock = clock(&args.clock)?;
    options.smtp = args
        .smtp
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let prompts = match &args.prompts {
        Some(dir) => PromptCatalog::load_dir(dir)
            .with_context(|| format!("loading the prompts in {}", dir.display()))?,
        None => PromptCatalog::embedded().context("loading the shipped prompts")?,
    };
    let mut sip = SipOptions::new(args.sip, Arc::new(prompts));
    sip.rtp_ports = port_range(&args.rtp_ports)?;
    sip.max_calls = args.max_calls;
    sip.socket_buffer = args.sip_socket_buffer;
    sip.ring = crate::time::parse_duration(&args.ring).map_err(anyhow::Error::msg)?;
    sip.mute_prompts = args.mute_prompts;
    sip.attendant.max_attempts = args.max_attempts;
    sip.attendant
        .validate()
        .map_err(|e| anyhow::anyhow!("--max-attempts: {e}"))?;
    sip.guard = guard_config(&args)?;
    sip.limits = crate::sip::framing::Limits {
        max_headers: args.max_headers,
        max_header_line: args.max_header_line,
        ..crate::sip::framing::Limits::with_max_message(args.max_message)
    };
    sip.tcp_per_source = args.tcp_per_source;
    sip.tcp_idle = crate::time::parse_duration(&args.tcp_idle)
        .map_err(|e| anyhow::anyhow!("--tcp-idle: {e}"))?;
    sip.calls_per_source = args.calls_per_source;
    sip.validate()?;
    options.sip = Some(sip);
    options.events = args.events.clone();
    options.store_max_bytes = args.store_max_bytes;
    let server = Server::bind(options).await?;
    let addr = server.admin_addr();
    if let Some(sip) = server.sip_addr() {
        tracing::info!(%sip, "SIP bridge listening");
        println!(
            "dialin: SIP on {sip} (UDP and TCP), RTP ports {}",
            args.rtp_ports
        );
    }
    let directory = server.service().directory().len();
    tracing::info!(%addr, directory, "dialin is serving");
    println!(
        "dialin: admin API on http://{addr} (token in {}); {directory} conference IDs in the directory. Ctrl-C or SIGTERM stops.",
        args.data.join("admin-token").display()
    );
    server
        .run(stop_signal()?)
        .await
        .context("the server stopped with an error")
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so both a terminal and a
/// service manager stop the server cleanly.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping");
    })
}
