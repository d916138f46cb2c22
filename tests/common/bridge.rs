//! An in-process bridge (`dialin serve` with SIP) on loopback, with
//! ephemeral SIP and RTP ports and its own data folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dialin::admin::Service;
use dialin::admin::service::EnableRequest;
use dialin::caller::{CallReport, DtmfPlan, HangUp, Outcome, Party};
use dialin::media::dtmf::DtmfMethod;
use dialin::media::prompts::PromptCatalog;
use dialin::media::prompts::PromptId;
use dialin::net::caller::{CallConfig, CallError, HANG_UP_GRACE, place_call};
use dialin::net::rtp::BridgeMonitor;
use dialin::net::server::{ServeOptions, Server};
use dialin::net::sip::SipOptions;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long one call, SIPp run or expected datagram may take.
pub const DEADLINE: Duration = Duration::from_secs(40);

/// The default tenant's toll number.
pub const NUMBER: &str = "+14255550100";

/// Each call its own seed: the seed makes the Call-ID, and two calls with
/// one Call-ID would be one call to the bridge.
static SEED: AtomicU64 = AtomicU64::new(1);

/// A call from the project's caller to `number` at the bridge, pressing
/// `digits` by `method` once the welcome prompt plays, and hanging up long
/// enough after "joining" to hear "you are the first person".
pub fn call_config(bridge: &Bridge, number: &str, digits: &str, method: DtmfMethod) -> CallConfig {
    let mut config = CallConfig::new(format!("sip:{number}@{}", bridge.sip));
    config.remote = Some(bridge.sip);
    config.dtmf = DtmfPlan::parse(digits, method).expect("valid digits");
    config.hang_up = HangUp::AfterJoined(Duration::from_millis(2500));
    config.timeout = DEADLINE;
    config.seed = Some(SEED.fetch_add(1, Ordering::Relaxed));
    config
}

/// Places the call, bounded by the deadline.
pub async fn call(config: CallConfig) -> CallReport {
    call_within(config, DEADLINE).await
}

/// Places the call, which hangs up after `deadline`.
pub async fn call_within(mut config: CallConfig, deadline: Duration) -> CallReport {
    config.timeout = deadline;
    placed(config, std::future::pending::<()>()).await
}

/// Places the call and hangs it up (BYE) when `hang_up` resolves, bounded
/// by the call's timeout: for a caller that must stay until something
/// else has happened, whatever the machine's speed.
pub async fn call_until(config: CallConfig, hang_up: impl Future<Output = ()>) -> CallReport {
    placed(config, hang_up).await
}

/// Places the call; a call past its timeout fails the test with the
/// partial report. The task's own bound is later than the call's timeout
/// plus the grace it waits for the answer to its BYE, so the caller's
/// timeout, whose error carries that report, comes first.
async fn placed(config: CallConfig, hang_up: impl Future<Output = ()>) -> CallReport {
    let bound = config.timeout + HANG_UP_GRACE + Duration::from_secs(5);
    match tokio::time::timeout(bound, place_call(config, hang_up)).await {
        Ok(Ok(report)) => report,
        Ok(Err(CallError::Timeout { timeout, report })) => {
            panic!("the call did not end within {timeout:?}: {report}")
        }
        Ok(Err(err)) => panic!("the call did not run: {:#}", anyhow::Error::from(err)),
        Err(_) => panic!("the call's task did not return within {bound:?}"),
    }
}

/// The caller joined, heard welcome, joining and first person, and hung up
/// itself (the bridge kept it in the meeting).
pub fn assert_joined(report: &CallReport) {
    assert_eq!(report.outcome, Outcome::Completed, "{report}");
    assert_eq!(
        report.hung_up_by,
        Some(Party::Caller),
        "we hung up, the bridge kept us: {report}"
    );
    assert_eq!(
        report.prompt_ids(),
        vec![PromptId::Welcome, PromptId::Joining, PromptId::FirstPerson],
        "{report}"
    );
}

pub struct Bridge {
    pub sip: SocketAddr,
    /// The admin API and its token.
    pub admin: SocketAddr,
    pub token: String,
    pub service: Arc<Service>,
    pub monitor: BridgeMonitor,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _data: TempDir,
}

impl Bridge {
    pub async fn start() -> Bridge {
        Bridge::start_with(|_| {}, None).await
    }

    /// A bridge that appends its call events to `events` (`--events FILE`).
    pub async fn start_with_events(events: Option<PathBuf>) -> Bridge {
        Bridge::start_with(|_| {}, events).await
    }

    /// Starts a bridge whose SIP options `configure` adjusts first.
    pub async fn start_with(
        configure: impl FnOnce(&mut SipOptions),
        events: Option<PathBuf>,
    ) -> Bridge {
        let data = tempfile::tempdir().expect("a temporary data folder");
        let mut options = ServeOptions::new(data.path().to_path_buf());
        options.admin = SocketAddr::from(([127, 0, 0, 1], 0));
        let prompts = PromptCatalog::embedded().expect("the shipped prompts load");
        let mut sip = SipOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(prompts));
        sip.rtp_ports = 0..=0;
        configure(&mut sip);
        options.sip = Some(sip);
        options.events = events;
        let server = Server::bind(options).await.expect("the bridge binds");
        let sip = server.sip_addr().expect("SIP was configured");
        let monitor = server.bridge().expect("SIP was configured");
        let service = server.service().clone();
        let admin = server.admin_addr();
        let token = server.token().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Bridge {
            sip,
            admin,
            token,
            service,
            monitor,
            stop: Some(stop),
            task: Some(task),
            _data: data,
        }
    }

    /// The data folder (its `server.json` leads the CLI to this bridge).
    pub fn data(&self) -> &Path {
        self._data.path()
    }

    /// Enables a user (a hand-set ID when given) and returns their conference ID.
    pub async fn enable(&self, email: &str, id: Option<&str>) -> String {
        let service = self.service.clone();
        let request = EnableRequest {
            email: Some(email.parse().expect("a valid email")),
            display_name: Some("Test User".into()),
            conference_id: id.map(|id| id.parse().expect("a valid ID")),
            no_email: true,
            ..EnableRequest::default()
        };
        tokio::task::spawn_blocking(move || service.enable_user("test", &request))
            .await
            .expect("enable ran")
            .expect("the user is enabled")
            .user
            .conference_id
            .expect("an enabled Microsoft user has an ID")
            .to_string()
    }

    /// Asks the bridge to stop (it sends BYE to its calls), without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the bridge and waits for it (bounded).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the bridge stops in time")
                .expect("the bridge task did not panic")
                .expect("the bridge stopped cleanly");
        }
    }
}
