//! The certificate in use, swapped without a restart: on SIGHUP (`systemctl reload`, a
//! certbot deploy hook) and when the `--tls-cert`/`--tls-key` files change.
//!
//! Each TLS handshake asks [`CurrentCert`] for the certificate, so a swap applies to the
//! next handshake; connections already open keep the session they negotiated. A new file
//! that does not load (half-written, key and certificate from different renewals) keeps
//! the old certificate and logs why; the next change is tried again.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How often the certificate files' modification times are compared. A renewal is
/// picked up within this; checking costs two `stat` calls.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The certificate every new handshake gets.
#[derive(Debug)]
pub struct CurrentCert {
    /// A std lock, held only to clone or replace the `Arc`: never across an `.await`.
    key: RwLock<Arc<CertifiedKey>>,
}

impl CurrentCert {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<CurrentCert> {
        Arc::new(CurrentCert {
            key: RwLock::new(key),
        })
    }

    pub fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole `Arc` (replacing it cannot half-happen).
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Reloads certificate files into a [`CurrentCert`].
pub struct Reloader {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub current: Arc<CurrentCert>,
    /// Of the certificate in use, to log whether a reload changed anything.
    fingerprint: String,
    /// The files' modification times and sizes when last tried, successfully or not
    /// (sizes too, for file systems whose timestamps are coarse).
    seen: Option<[(SystemTime, u64); 2]>,
}

impl Reloader {
    pub fn new(
        cert_path: PathBuf,
        key_path: PathBuf,
        current: Arc<CurrentCert>,
        fingerprint: String,
    ) -> Reloader {
        let mut reloader = Reloader {
            cert_path,
            key_path,
            current,
            fingerprint,
            seen: None,
        };
        reloader.seen = reloader.mtimes();
        reloader
    }

    fn mtimes(&self) -> Option<[(SystemTime, u64); 2]> {
        // `metadata` follows symlinks: certbot's `live/` links move to new files.
        let stamp = |path: &PathBuf| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        Some([stamp(&self.cert_path)?, stamp(&self.key_path)?])
    }

    /// Loads the files again; on success the next handshake gets the new certificate.
    /// Returns whether it loaded.
    pub fn reload(&mut self) -> bool {
        self.seen = self.mtimes();
        match crate::tls::certified_key(&self.cert_path, &self.key_path) {
            Ok((key, fingerprint)) => {
                self.current.set(key);
                if fingerprint == self.fingerprint {
                    info!(cert = %self.cert_path.display(), "certificate reloaded (unchanged)");
                } else {
                    info!(cert = %self.cert_path.display(), %fingerprint, "new certificate in use");
                }
                self.fingerprint = fingerprint;
                true
            }
            Err(e) => {
                error!(
                    "certificate not reloaded, still serving the previous one \
                     (fingerprint {}): {e:#}. Fix the files; they are tried again when they \
                     change or on SIGHUP",
                    self.fingerprint
                );
                false
            }
        }
    }

    /// Reloads if either file's modification time moved since the last attempt.
    fn reload_if_changed(&mut self) {
        let now = self.mtimes();
        if now.is_some() && now != self.seen {
            self.reload();
        }
    }
}

/// Reloads on SIGHUP and on file changes until `cancel` fires. Without certificate files
/// (`reloader` is `None`) it still takes SIGHUP, so that `systemctl reload` never kills
/// the process (SIGHUP's default action), and says there is nothing to reload.
pub async fn watch(mut reloader: Option<Reloader>, cancel: CancellationToken) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            error!("cannot listen for SIGHUP: {e}; certificates reload on file change only");
            None
        }
    };
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signal = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signal = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = signal => match reloader.as_mut() {
                Some(r) => {
                    info!("SIGHUP: reloading the certificate");
                    r.reload();
                }
                None => info!("SIGHUP: no certificate files to reload (--tls-cert/--tls-key)"),
            },
            _ = poll.tick(), if reloader.is_some() => {
                if let Some(r) = reloader.as_mut() {
                    r.reload_if_changed();
                }
            }
        }
    }
}
