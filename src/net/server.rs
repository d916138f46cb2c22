//! `dialin serve`: owns a data folder, rebuilds the directory from its
//! store, and serves the admin API (and, when configured, the SIP bridge)
//! until the shutdown future resolves. At shutdown the bridge refuses new
//! calls (503) and ends those in progress with a BYE before `run` returns.
//! A ticker runs due migration jobs, checkpoints the WAL and retries
//! queued emails.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::admin::mail::SmtpRelay;
use crate::admin::{Options, Service};
use crate::datadir::{DataDir, FolderLock, ServerInfo};
use crate::time::{Clock, SystemClock};

use crate::records::CallLog;

use super::events::EventWriter;
use super::sip::{SipOptions, SipServer};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data: PathBuf,
    pub admin: SocketAddr,
    pub smtp: Option<SmtpRelay>,
    pub clock: Arc<dyn Clock>,
    /// How often due migrations and queued emails are looked at.
    pub tick: Duration,
    /// The SIP bridge; `None` serves the admin API only.
    pub sip: Option<SipOptions>,
    /// Append every call event to this file as a JSON line.
    pub events: Option<PathBuf>,
    /// Bound the store's size (`--store-max-bytes`): writes past it fail as
    /// on a full disk.
    pub store_max_bytes: Option<u64>,
}

impl ServeOptions {
    pub fn new(data: PathBuf) -> Self {
        ServeOptions {
            data,
            admin: SocketAddr::from(([127, 0, 0, 1], 8080)),
            smtp: None,
            clock: Arc::new(SystemClock),
            tick: Duration::from_secs(1),
            sip: None,
            events: None,
            store_max_bytes: None,
        }
    }
}

/// A bound server, ready to run.
pub struct Server {
    service: Arc<Service>,
    listener: TcpListener,
    data: DataDir,
    token: String,
    tick: Duration,
    sip: Option<SipServer>,
    /// The records of the last calls, shared by the bridge and the admin API.
    calls: Arc<CallLog>,
    events: Option<EventWriter>,
    _lock: FolderLock,
}

impl Server {
    /// Takes the data folder, opens the store and binds the admin address.
    pub async fn bind(options: ServeOptions) -> anyhow::Result<Server> {
        let data = DataDir::create(&options.data)?;
        let Some(lock) = data.try_lock()? else {
            let info = data
                .read_server_info()
                .map(|i| format!(" (pid {}, admin API at {})", i.pid, i.admin_url))
                .unwrap_or_default();
            bail!(
                "the data folder {} is in use by another dialin server{info}: stop it, or give another --data",
                data.root().display()
            );
        };
        let token = data.token().context("reading the admin token")?;
        let service_options = Options {
            clock: options.clock,
            rng_seed: None,
            smtp: options.smtp,
        };
        let (store, outbox) = (data.store_path(), data.outbox_dir());
        let max_bytes = options.store_max_bytes;
        let service = tokio::task::spawn_blocking(move || {
            Service::open_with_store_limit(&store, outbox, service_options, max_bytes)
        })
        .await?
        .with_context(|| format!("opening the store in {}", data.root().display()))?;
        if let Some(wanted) = max_bytes {
            let limit = service.set_store_max_bytes(Some(wanted))?;
            let size = service.store_size_bytes()?;
            tracing::info!(limit, size, "the store's size is bounded");
            if limit > wanted {
                tracing::warn!(
                    wanted,
                    limit,
                    "--store-max-bytes is below the store's size; the bound is the size: \
                     changes that grow the store will fail"
                );
            }
        }
        let listener = TcpListener::bind(options.admin)
            .await
            .with_context(|| format!("binding the admin API to {}", options.admin))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the admin API listens beyond loopback without TLS: put it behind a TLS proxy");
        }
        let service = Arc::new(service);
        let calls = Arc::new(CallLog::default());
        let (sink, events) = match &options.events {
            Some(path) => {
                let (sink, writer) = super::events::open(path).await?;
                (Some(sink), Some(writer))
            }
            None => (None, None),
        };
        let sip = match options.sip {
            Some(mut sip) => {
                sip.log = calls.clone();
                sip.events = sink;
                Some(SipServer::bind(sip, service.clone()).await?)
            }
            None => None,
        };
        data.write_server_info(&ServerInfo {
            admin_url: format!("http://{addr}"),
            pid: std::process::id(),
        })?;
        Ok(Server {
            service,
            listener,
            data,
            token,
            tick: options.tick,
            sip,
            calls,
            events,
            _lock: lock,
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where SIP listens (UDP and TCP), if the bridge runs.
    pub fn sip_addr(&self) -> Option<SocketAddr> {
        self.sip.as_ref().map(SipServer::local_addr)
    }

    /// Watches the bridge's calls, if the bridge runs.
    pub fn bridge(&self) -> Option<super::rtp::BridgeMonitor> {
        self.sip.as_ref().map(SipServer::monitor)
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The records of the last calls.
    pub fn calls(&self) -> &Arc<CallLog> {
        &self.calls
    }

    /// Serves until `shutdown` resolves, then releases the data folder.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = super::http::router(
            self.service.clone(),
            self.token.clone(),
            "admin-token".into(),
            self.calls.clone(),
            self.sip.as_ref().map(SipServer::monitor),
        );
        let ticker = tokio::spawn(run_ticker(self.service.clone(), self.tick));
        // One trigger, two listeners: the SIP side drains its calls while
        // the admin API finishes its requests.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let sip = self.sip.map(|sip| tokio::spawn(sip.run(wait())));
        let admin = axum::serve(self.listener, router).with_graceful_shutdown(wait());
        let trigger = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let (served, ()) = tokio::join!(admin.into_future(), trigger);
        let sip_result = match sip {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("the SIP side panicked: {e}")),
            },
            None => Ok(()),
        };
        ticker.abort();
        // After the calls: their last events are queued by now.
        let events_result = match self.events {
            Some(writer) => writer.finish().await,
            None => Ok(()),
        };
        self.data.remove_server_info();
        served.context("serving the admin API")?;
        sip_result.context("serving SIP")?;
        events_result
    }
}

/// Runs due migrations and retries queued emails, once per `tick`.
async fn run_ticker(service: Arc<Service>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A store fault (full disk, read-only folder) fails every tick until it
    // is fixed: say so once, and again when it clears, not every second.
    let mut failing: Option<String> = None;
    loop {
        interval.tick().await;
        let service = service.clone();
        // Each step runs whatever the others did: a failed migration run
        // must not hold up a checkpoint or the emails.
        let result = tokio::task::spawn_blocking(move || {
            let migrations = service.run_due_migrations().map(drop);
            let checkpoint = service.checkpoint();
            let emails = service.deliver_due().map(drop);
            migrations.and(checkpoint).and(emails)
        })
        .await;
        match result {
            Ok(Ok(_)) => {
                if failing.take().is_some() {
                    tracing::info!("background admin work runs again");
                }
            }
            Ok(Err(e)) => {
                let text = e.to_string();
                if failing.as_deref() != Some(text.as_str()) {
                    tracing::error!(error = %e, "background admin work failed; retrying every tick");
                    failing = Some(text);
                }
            }
            Err(e) => tracing::error!(error = %e, "background admin work panicked"),
        }
    }
}
