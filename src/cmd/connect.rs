//! Finding the admin API the CLI talks to: `--server URL` (with `--token`,
//! or the data folder's token), the server that runs on the data folder
//! (its `server.json`), or, when none does and the command allows it, the
//! data folder opened in-process behind the same router.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::admin::{Options, Service};
use crate::client::Client;
use crate::datadir::{DataDir, FolderLock};

/// The client plus what must live as long as it (the folder lock).
pub struct Connection {
    pub client: Client,
    _lock: Option<FolderLock>,
}

/// What to do when no server runs on the data folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// Open the folder here (admin commands work without a server).
    Open,
    /// Refuse: the answer only a running server has (its calls).
    Refuse,
}

pub async fn connect(
    data_path: &Path,
    server: Option<&str>,
    token: Option<&str>,
    local: Local,
) -> anyhow::Result<Connection> {
    if let Some(url) = server {
        let token = match token {
            Some(t) => t.to_string(),
            None => DataDir::existing(data_path).read_token()?.with_context(|| {
                format!(
                    "no admin token: give --token (or DIALIN_TOKEN), or --data with the server's folder \
                     ({} has no admin-token)",
                    data_path.display()
                )
            })?,
        };
        return Ok(Connection {
            client: Client::remote(url, token)?,
            _lock: None,
        });
    }
    if local == Local::Refuse && !data_path.is_dir() {
        bail!(
            "no data folder at {}: give --data with the running server's folder, or --server URL",
            data_path.display()
        );
    }
    let data = DataDir::create(data_path)?;
    match data.try_lock()? {
        Some(_) if local == Local::Refuse => bail!(
            "no dialin server runs on the data folder {}: start `dialin serve --data {}`, \
             or give --server URL",
            data.root().display(),
            data.root().display()
        ),
        Some(lock) => {
            // No server owns the folder: open it here, holding its lock.
            let token = data.token()?;
            let (store, outbox) = (data.store_path(), data.outbox_dir());
            let service = tokio::task::spawn_blocking(move || -> anyhow::Result<Service> {
                let service = Service::open(&store, outbox, Options::default())?;
                // Catch up on migrations that came due while no server ran.
                // Queued emails wait for a server: only it knows the SMTP
                // relay they may be waiting for.
                service.run_due_migrations()?;
                Ok(service)
            })
            .await?
            .with_context(|| format!("opening the data folder {}", data.root().display()))?;
            let router = crate::net::http::router(
                Arc::new(service),
                token.clone(),
                "local-cli".into(),
                // No server runs, so no calls: an empty list.
                Arc::new(crate::records::CallLog::default()),
                None,
            );
            Ok(Connection {
                client: Client::local(router, token),
                _lock: Some(lock),
            })
        }
        None => {
            let Some(info) = data.read_server_info() else {
                bail!(
                    "the data folder {} is in use by another dialin process (another admin command, \
                     or a server that has not published its admin API address yet): try again \
                     when it is done, or give --server URL",
                    data.root().display()
                );
            };
            let token = match token {
                Some(t) => t.to_string(),
                None => data
                    .read_token()?
                    .context("the running server's data folder has no admin-token file")?,
            };
            Ok(Connection {
                client: Client::remote(&info.admin_url, token)?,
                _lock: None,
            })
        }
    }
}
