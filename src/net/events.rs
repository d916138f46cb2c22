//! `dialin serve --events FILE`: every call event appended to a file as one
//! JSON line, by a single writer task. Call tasks hand their events to an
//! [`EventSink`] that never waits: when the writer is far behind (a slow
//! disk), events are dropped and counted rather than delaying a call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::records::EventLine;

/// Events waiting for the writer; past this they are dropped.
const QUEUE: usize = 16 * 1024;
/// At shutdown, events still queued that are written before the writer stops.
const DRAIN_MAX: usize = QUEUE;

/// Where call tasks send their events.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<EventLine>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Queues one event without waiting.
    pub fn send(&self, line: EventLine) {
        if self.tx.try_send(line).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "events file writer behind: events dropped");
            }
        }
    }
}

/// The writer task; [`EventWriter::finish`] writes what is queued and stops it.
pub struct EventWriter {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Opens `path` for appending (created if missing) and starts the writer.
pub async fn open(path: &Path) -> anyhow::Result<(EventSink, EventWriter)> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .with_context(|| {
            format!(
                "opening the events file {} for appending: give a writable path for --events",
                path.display()
            )
        })?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(write_lines(file, rx, stopped));
    Ok((
        EventSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        },
        EventWriter {
            path: path.to_path_buf(),
            stop: Some(stop),
            task,
        },
    ))
}

impl EventWriter {
    /// Writes the events queued so far, then stops.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let path = self.path.clone();
        match (&mut self.task).await {
            Ok(result) => {
                result.with_context(|| format!("writing the events file {}", path.display()))
            }
            Err(e) => Err(anyhow::anyhow!("the events file writer panicked: {e}")),
        }
    }
}

async fn write_line(file: &mut tokio::fs::File, line: &EventLine) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec(line)?;
    bytes.push(b'\n');
    file.write_all(&bytes).await?;
    file.flush().await?;
    Ok(())
}

async fn write_lines(
    mut file: tokio::fs::File,
    mut rx: mpsc::Receiver<EventLine>,
    mut stopped: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => write_line(&mut file, &line).await?,
                None => return Ok(()),
            },
            _ = &mut stopped => break,
        }
    }
    for _ in 0..DRAIN_MAX {
        match rx.try_recv() {
            Ok(line) => write_line(&mut file, &line).await?,
            Err(_) => break,
        }
    }
    file.sync_data().await?;
    Ok(())
}
