//! Automatic certificates (`--acme-domain`): obtained from an ACME server (Let's Encrypt
//! by default) through the TLS-ALPN-01 challenge on the HTTPS port itself, so port 443
//! alone is enough (or, with `--acme-challenge http-01`, through HTTP-01 on the
//! `--http-redirect-listen` port, answered by [`crate::redirect`]); kept in the data directory (`acme/`, account key and certificate) and
//! reused after a restart; renewed in the background once a third of the certificate's
//! lifetime remains, and served from the next handshake on, without a restart.
//!
//! The protocol is the `rustls-acme` crate's: maintained, built on the same rustls, and
//! its resolver answers the challenge handshakes. This module configures it from the
//! flags and drives it, logging each step.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls_acme::caches::DirCache;
use rustls_acme::{AcmeConfig, AcmeState, ResolvesServerCertAcme, UseChallenge};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::tls::AcmeChallenge;

/// Let's Encrypt's production directory, the default of `--acme-directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737): such a connection carries no
/// HTTP and is closed after the handshake.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A running ACME client: the resolver goes into the TLS config, the driver into a task.
pub struct Acme {
    pub resolver: Arc<ResolvesServerCertAcme>,
    pub challenge: AcmeChallenge,
    driver: AcmeState<std::io::Error, std::io::Error>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme").finish_non_exhaustive()
    }
}

/// Sets up the ACME client for `domains`, storing its state under `data_dir/acme`.
/// `ca_file` is trusted, besides the usual public roots, for the directory's own HTTPS (a
/// private ACME server, or pebble in tests).
pub fn start(
    domains: &[String],
    challenge: AcmeChallenge,
    email: Option<&str>,
    directory: &str,
    ca_file: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<Acme> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .with_context(|| format!("reading --acme-ca-file {}", file.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing certificates in {}", file.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "no certificate in --acme-ca-file {}",
            file.display()
        );
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("a certificate in {} is not a CA", file.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let cache_dir = data_dir.join("acme");
    std::fs::create_dir_all(&cache_dir).with_context(|| {
        format!(
            "cannot create {}: choose a writable data directory with --data-dir (or \
             DUET_DATA_DIR)",
            cache_dir.display()
        )
    })?;
    let contact: Vec<String> = email.map(|e| format!("mailto:{e}")).into_iter().collect();
    let state = AcmeConfig::new_with_client_config(domains, Arc::new(client))
        .contact(contact)
        .directory(directory)
        .cache(DirCache::new(cache_dir.clone()))
        .challenge_type(match challenge {
            AcmeChallenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
            AcmeChallenge::Http01 => UseChallenge::Http01,
        })
        .state();
    let how = match challenge {
        AcmeChallenge::TlsAlpn01 => "TLS-ALPN-01 on this port",
        AcmeChallenge::Http01 => "HTTP-01 on the --http-redirect-listen port",
    };
    info!(
        ?domains,
        directory,
        state = %cache_dir.display(),
        "ACME: certificates come from the directory, through {how}"
    );
    Ok(Acme {
        resolver: state.resolver(),
        challenge,
        driver: state,
    })
}

impl Acme {
    /// Orders, stores and renews certificates until `cancel` fires. Until the first
    /// certificate is deployed, handshakes other than the challenge fail.
    pub async fn drive(self, cancel: CancellationToken) {
        let mut state = self.driver;
        let challenge = self.challenge;
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = state.next() => event,
            };
            match event {
                Some(Ok(ok)) => info!("ACME: {ok:?}"),
                // The crate retries on its own schedule; say what failed and what to check.
                Some(Err(e)) => error!(
                    "ACME: {e}. Check that the domain points at this machine, that {} \
                     and --acme-directory",
                    match challenge {
                        AcmeChallenge::TlsAlpn01 =>
                            "this port is reachable from the internet on 443",
                        AcmeChallenge::Http01 =>
                            "the --http-redirect-listen port is reachable from the internet on 80",
                    }
                ),
                None => return,
            }
        }
    }
}

/// The HTTP-01 answer for a request path, when it is `/.well-known/acme-challenge/<token>`:
/// `Some(None)` for a challenge path whose token is not the one pending, `None` for any
/// other path.
pub fn http01_answer(resolver: &ResolvesServerCertAcme, path: &str) -> Option<Option<String>> {
    let token = path.strip_prefix("/.well-known/acme-challenge/")?;
    Some(resolver.get_http_01_key_auth(token))
}
