//! What resume keeps in the data directory, so that tokens and held names outlive the
//! process (a crash and SIGKILL included):
//! - `resume.key`: the key tokens are signed with, made by the first process that hands
//!   out a token (mode 0600), unless `--resume-secret` gives one;
//! - `resume-names-PORT.json`: the resumable names (each with its latest token's id and
//!   expiry), rewritten at most once per [`WRITE_DELAY`] after a change. One file per
//!   listening port, so that processes sharing a data directory (two nodes of a cluster on
//!   one host, test servers) do not hold each other's names. A restarted
//!   process holds each of them for `--resume-window`, so no stranger takes a name while
//!   its owner reconnects, and only the latest token takes it back.
//!
//! Every write goes to a temporary file first and is renamed over the old one, so a crash
//! leaves the previous file or the new one, never a torn one. A file that cannot be read
//! or parsed is logged and ignored: resume is a convenience, never a reason not to start.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::protocol::Name;

pub const KEY_FILE: &str = "resume.key";
/// The table of names of the process listening on `port`.
pub fn names_file(port: u16) -> String {
    format!("resume-names-{port}.json")
}

/// How long a change waits before the table is written: a burst of logins (every client
/// coming back after a restart) costs one write, and a crash loses at most this much.
pub const WRITE_DELAY: Duration = Duration::from_millis(500);

/// Most names written, and read back. More resumable sessions than this (the default
/// `--max-connections` is 50,000) are still resumable in the process, only not across a
/// restart.
pub const MAX_NAMES: usize = 200_000;

/// Largest table read back; a row is under 150 bytes.
const MAX_FILE_BYTES: u64 = 64 << 20;

const KEY_LEN: usize = 32;
/// Shortest key accepted from the key file.
const MIN_KEY_LEN: usize = 16;
const FORMAT_VERSION: u32 = 1;

/// One resumable name, as written to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: Name,
    /// The id in the latest token of the name: only that token takes it back.
    pub id: [u8; 16],
    /// The token's expiry (Unix seconds); a row past it is not read back.
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
struct Table {
    version: u32,
    names: Vec<RowText>,
}

#[derive(Serialize, Deserialize)]
struct RowText {
    name: String,
    /// base64url, unpadded.
    id: String,
    expires: u64,
}

/// The resume files of one data directory.
pub struct Store {
    dir: PathBuf,
    /// The table of names in `dir`.
    names: PathBuf,
    /// A key this process made, written to `resume.key` with the first token handed out
    /// (a server that never hands one out writes nothing).
    unsaved_key: Mutex<Option<Vec<u8>>>,
    /// Set by every change to the resumable names.
    changed: Notify,
    /// Set when the server shuts down, after the last write: the sessions that end then
    /// give up their seats, but their names must stay in the table for the restart.
    frozen: AtomicBool,
    /// One writer at a time (they share the temporary file).
    writing: tokio::sync::Mutex<()>,
}

impl Store {
    /// Opens the resume files of `dir`: the key to sign tokens with (`secret`'s bytes
    /// when given) and the names to hold, those with a token still good at `now`.
    pub fn open(
        dir: &Path,
        port: u16,
        secret: Option<&str>,
        now: u64,
    ) -> (Store, Vec<u8>, Vec<Row>) {
        let (key, unsaved) = match secret {
            Some(secret) => (secret.as_bytes().to_vec(), None),
            None => match read_key(&dir.join(KEY_FILE)) {
                Some(key) => (key, None),
                None => {
                    let key = rand::random::<[u8; KEY_LEN]>().to_vec();
                    (key.clone(), Some(key))
                }
            },
        };
        let names = dir.join(names_file(port));
        let rows = read_names(&names, now);
        let store = Store {
            dir: dir.to_owned(),
            names,
            unsaved_key: Mutex::new(unsaved),
            changed: Notify::new(),
            frozen: AtomicBool::new(false),
            writing: tokio::sync::Mutex::new(()),
        };
        (store, key, rows)
    }

    /// A token is about to be handed out: the key it is signed with must be on disk.
    pub fn key_used(&self) {
        let mut unsaved = self.unsaved_key.lock().unwrap_or_else(|p| p.into_inner());
        let Some(key) = unsaved.take() else {
            return;
        };
        let path = self.dir.join(KEY_FILE);
        let written = std::fs::create_dir_all(&self.dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                crate::tls::write_atomic(&path, BASE64URL.encode(&key).as_bytes(), true)
            });
        match written {
            Ok(()) => info!(path = %path.display(), "made the resume key"),
            Err(e) => warn!(
                path = %path.display(),
                error = %format!("{e:#}"),
                "cannot keep the resume key: tokens will not outlive this process (give \
                 --resume-secret, or a --data-dir this user may write)"
            ),
        }
    }

    /// The resumable names changed: write them soon.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Waits for the next change, then for [`WRITE_DELAY`]. False once frozen.
    pub async fn next_write(&self) -> bool {
        self.changed.notified().await;
        tokio::time::sleep(WRITE_DELAY).await;
        !self.frozen.load(Ordering::Relaxed)
    }

    /// Writes the table (the last write, when `freeze`: later changes are not written).
    pub async fn write(&self, mut rows: Vec<Row>, freeze: bool) {
        let _writing = self.writing.lock().await;
        if self.frozen.load(Ordering::Relaxed) {
            return;
        }
        if freeze {
            self.frozen.store(true, Ordering::Relaxed);
        }
        // A server that never had a resumable name leaves nothing behind.
        if rows.is_empty() && !self.names.exists() {
            return;
        }
        if rows.len() > MAX_NAMES {
            warn!(
                names = rows.len(),
                kept = MAX_NAMES,
                "too many resumable names to keep for a restart; keeping the latest tokens"
            );
            rows.sort_by_key(|r| std::cmp::Reverse(r.expires));
            rows.truncate(MAX_NAMES);
        }
        let table = Table {
            version: FORMAT_VERSION,
            names: rows
                .iter()
                .map(|r| RowText {
                    name: r.name.as_str().to_owned(),
                    id: BASE64URL.encode(r.id),
                    expires: r.expires,
                })
                .collect(),
        };
        let path = self.names.clone();
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let bytes = serde_json::to_vec(&table)?;
            std::fs::create_dir_all(&dir)?;
            crate::tls::write_atomic(&path, &bytes, true)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %format!("{e:#}"), dir = %self.dir.display(), "cannot write the resumable names: a restart will free them")
            }
            Err(e) => warn!(error = %e, "writing the resumable names failed"),
        }
    }
}

fn read_key(path: &Path) -> Option<Vec<u8>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the resume key; making a new one (earlier tokens are refused)");
            return None;
        }
    };
    match BASE64URL.decode(text.trim()) {
        Ok(key) if key.len() >= MIN_KEY_LEN => Some(key),
        _ => {
            warn!(path = %path.display(), "the resume key is damaged; making a new one (earlier tokens are refused)");
            None
        }
    }
}

fn read_names(path: &Path, now: u64) -> Vec<Row> {
    let ignored = |why: &dyn std::fmt::Display| {
        warn!(path = %path.display(), error = %why, "ignoring the resumable names kept from the last run: no name is held");
        Vec::new()
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return ignored(&format!("larger than {MAX_FILE_BYTES} bytes"));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return ignored(&e),
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return ignored(&e),
    };
    let table: Table = match serde_json::from_slice(&bytes) {
        Ok(table) => table,
        Err(e) => return ignored(&e),
    };
    if table.version != FORMAT_VERSION {
        return ignored(&format!("unknown format version {}", table.version));
    }
    let mut bad = 0usize;
    let rows: Vec<Row> = table
        .names
        .into_iter()
        .take(MAX_NAMES)
        .filter_map(|r| {
            let row = parse_row(&r);
            bad += usize::from(row.is_none());
            row
        })
        .filter(|r| r.expires > now)
        .collect();
    if bad > 0 {
        warn!(path = %path.display(), bad, "skipped damaged rows of the resumable names");
    }
    rows
}

fn parse_row(r: &RowText) -> Option<Row> {
    let name = Name::parse(&r.name).ok()?;
    let id = BASE64URL.decode(&r.id).ok()?.try_into().ok()?;
    Some(Row {
        name,
        id,
        expires: r.expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("duet-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn row(name: &str, expires: u64) -> Row {
        Row {
            name: Name::parse(name).expect("name"),
            id: [3; 16],
            expires,
        }
    }

    #[tokio::test]
    async fn the_key_and_names_come_back_in_the_next_process() {
        let dir = tmpdir("back");
        let (store, key, rows) = Store::open(&dir, 1, None, 100);
        assert!(rows.is_empty());
        assert!(!dir.join(KEY_FILE).exists(), "no token, no key file");
        store.key_used();
        store
            .write(vec![row("alice", 200), row("bob", 150)], false)
            .await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for file in [KEY_FILE, &names_file(1)] {
                let mode = std::fs::metadata(dir.join(file))
                    .expect("file")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
        // The next process: the same key, and the names whose tokens are still good.
        let (_, key2, rows) = Store::open(&dir, 1, None, 160);
        assert_eq!(key2, key);
        assert_eq!(rows, vec![row("alice", 200)]);
        // A secret wins over the file.
        let (_, key3, _) = Store::open(&dir, 1, Some("s"), 0);
        assert_eq!(key3, b"s");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn damaged_files_are_ignored() {
        let dir = tmpdir("damaged");
        std::fs::create_dir_all(&dir).expect("dir");
        for junk in [
            &b"{not json"[..],
            b"[]",
            b"{\"version\":9,\"names\":[]}",
            b"\xff\xfe",
        ] {
            std::fs::write(dir.join(names_file(1)), junk).expect("write");
            std::fs::write(dir.join(KEY_FILE), b"short").expect("write");
            let (store, key, rows) = Store::open(&dir, 1, None, 0);
            assert!(rows.is_empty());
            assert_eq!(key.len(), KEY_LEN, "a new key");
            // It replaces the damaged one once used.
            store.key_used();
            let (_, again, _) = Store::open(&dir, 1, None, 0);
            assert_eq!(again, key);
        }
        // Damaged rows are skipped, the good ones kept.
        std::fs::write(
            dir.join(names_file(1)),
            r#"{"version":1,"names":[{"name":"","id":"AwMDAwMDAwMDAwMDAwMDAw","expires":9},
               {"name":"bob","id":"short","expires":9},
               {"name":"alice","id":"AwMDAwMDAwMDAwMDAwMDAw","expires":9}]}"#,
        )
        .expect("write");
        let (_, _, rows) = Store::open(&dir, 1, None, 0);
        assert_eq!(rows, vec![row("alice", 9)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn nothing_is_written_after_the_freeze() {
        let dir = tmpdir("freeze");
        let (store, _, _) = Store::open(&dir, 1, None, 0);
        store.write(Vec::new(), false).await;
        assert!(!dir.exists(), "nothing to keep, nothing written");
        store.write(vec![row("alice", 9)], true).await;
        store.write(Vec::new(), false).await;
        let (_, _, rows) = Store::open(&dir, 1, None, 0);
        assert_eq!(rows, vec![row("alice", 9)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
