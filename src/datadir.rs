//! The data folder: one place for everything a bridge keeps.
//!
//! ```text
//! <data>/dialin.sqlite    the store (WAL mode: also -wal and -shm files)
//! <data>/outbox/          emails as .eml files
//! <data>/admin-token      the admin API's bearer token (mode 0600)
//! <data>/lock             held (flock) by the process that owns the folder
//! <data>/server.json      where the running server's admin API listens
//! ```
//!
//! A server holds the lock while it runs; the CLI finds it through
//! `server.json` and talks to it over HTTP, or, when no server runs, takes
//! the lock and opens the store itself. Two writers never share a folder.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// What a running server publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub admin_url: String,
    pub pid: u32,
}

/// The exclusive lock on a data folder; released when dropped.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

/// A fresh folder under the system's temporary folder, named
/// `PREFIX-PID-N-NANOS` so runs in parallel (threads or processes) never
/// share one. The caller removes it.
pub fn temp_folder(prefix: &str) -> io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static FOLDER: AtomicU64 = AtomicU64::new(0);
    let n = FOLDER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos:09}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

impl DataDir {
    /// Opens the folder, creating it (and `outbox/`) when missing.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("outbox")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("can't create the data folder {}: {e}", root.display()),
            )
        })?;
        Ok(DataDir { root })
    }

    /// The folder as it is, without creating anything.
    pub fn existing(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("dialin.sqlite")
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.root.join("outbox")
    }

    pub fn token_path(&self) -> PathBuf {
        self.root.join("admin-token")
    }

    fn server_info_path(&self) -> PathBuf {
        self.root.join("server.json")
    }

    /// The admin token, created (64 hex digits from the OS's CSPRNG, file
    /// mode 0600) on first use.
    pub fn token(&self) -> io::Result<String> {
        if let Some(token) = self.read_token()? {
            return Ok(token);
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.token_path())
        {
            Ok(mut f) => {
                f.write_all(token.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()?;
                Ok(token)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self
                .read_token()?
                .ok_or_else(|| io::Error::other("the admin token file is empty")),
            Err(e) => Err(e),
        }
    }

    pub fn read_token(&self) -> io::Result<Option<String>> {
        match std::fs::read_to_string(self.token_path()) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the folder's lock; `None` when another process holds it.
    pub fn try_lock(&self) -> io::Result<Option<FolderLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FolderLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn write_server_info(&self, info: &ServerInfo) -> io::Result<()> {
        let tmp = self.root.join(".server.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(info).map_err(io::Error::other)?,
        )?;
        std::fs::rename(tmp, self.server_info_path())
    }

    pub fn read_server_info(&self) -> Option<ServerInfo> {
        let text = std::fs::read(self.server_info_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn remove_server_info(&self) {
        let _ = std::fs::remove_file(self.server_info_path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::create(tmp.path()).unwrap();
        let token = dir.token().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(
            dir.token().unwrap(),
            token,
            "the second call reads the same token"
        );
        let mode = std::fs::metadata(dir.token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn only_one_holder_of_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::create(tmp.path()).unwrap();
        let first = dir.try_lock().unwrap();
        assert!(first.is_some());
        assert!(
            dir.try_lock().unwrap().is_none(),
            "a second open file description can't lock"
        );
        drop(first);
        assert!(dir.try_lock().unwrap().is_some(), "released on drop");
    }
}
