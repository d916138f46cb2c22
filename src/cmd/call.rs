//! `dialin call`: one call from the terminal, then the report (text or JSON).
//!
//! Exit status: success when the call ran its course, whatever the outcome
//! (answered, rejected, unanswered); failure on local, transport or timeout
//! errors.

use anyhow::Context;

use crate::caller::{DtmfPlan, DtmfStart, HangUp, Transport};
use crate::cli::CallArgs;
use crate::media::dtmf::DtmfMethod;
use crate::net::caller::{CallConfig, CallError, LossyPath, RecordTo, place_call};

fn method(name: &str) -> anyhow::Result<DtmfMethod> {
    match name {
        "rfc4733" => Ok(DtmfMethod::Rfc4733),
        "info" => Ok(DtmfMethod::Info),
        "inband" => Ok(DtmfMethod::Inband),
        other => anyhow::bail!("'{other}' is not a DTMF method: use rfc4733, info or inband"),
    }
}

pub async fn run(args: CallArgs) -> anyhow::Result<()> {
    let mut dtmf = DtmfPlan::parse(&args.dtmf, method(&args.method)?).context("--dtmf")?;
    if let Some(after) = args.dtmf_after {
        dtmf.start = DtmfStart::AfterAnswer(after);
    }
    let mut config = CallConfig::new(args.uri.clone());
    config.from = args.from;
    config.dtmf = dtmf;
    config.hang_up = if args.wait_for_bye {
        HangUp::WaitForBye
    } else {
        HangUp::AfterJoined(args.hangup_after)
    };
    config.timeout = args.timeout;
    if args.tcp {
        config.transport = Transport::Tcp;
    }
    config.record = args.record.map(RecordTo::Dir);
    if args.loss > 0.0 || args.reorder > 0.0 {
        let path = LossyPath::new(args.loss, args.reorder, args.loss_seed)
            .map_err(|e| anyhow::anyhow!("--loss/--reorder: {e}"))?;
        config.lossy_path = Some(path);
    }
    let stop = async {
        // Ctrl-C hangs the call up cleanly (BYE or CANCEL); if the signal
        // handler can't be installed, the call timeout still bounds the call.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match place_call(config, stop).await {
        Ok(report) => {
            print(&report, args.json)?;
            Ok(())
        }
        Err(CallError::Timeout { timeout, report }) => {
            print(&report, args.json)?;
            anyhow::bail!(
                "the call to {} did not end within {} (raise --timeout, or --hangup-after for a joined call)",
                args.uri,
                humantime::format_duration(timeout)
            )
        }
        Err(CallError::RecordWrite {
            path,
            source,
            report,
        }) => {
            print(&report, args.json)?;
            Err(anyhow::Error::new(source)
                .context(format!("writing the recording {}", path.display())))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("calling {}", args.uri))),
    }
}

fn print(report: &crate::caller::CallReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).context("formatting the report")?
        );
    } else {
        print!("{report}");
    }
    Ok(())
}
