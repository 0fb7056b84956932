//! HTTPS for duet: a [`tokio_rustls::TlsAcceptor`] from PEM files or from a
//! self-signed certificate kept in the data directory.
//!
//! Browsers only grant camera and microphone to secure origins, so a LAN
//! deployment without a real certificate needs `--tls-self-signed`: the
//! certificate covers this machine's host name, `localhost`, the loopback
//! addresses and the addresses of its interfaces, and is reused across
//! restarts (so users accept the browser warning once). Its SHA-256
//! fingerprint is logged so users can compare it with what the browser shows.
//!
//! The crypto provider is `ring`: it builds with just a C compiler (no cmake,
//! no NASM) and is already in the tree through the `turn` crate.
//!
//! Intended use in the accept loop:
//! `TcpListener::accept` → `set_nodelay` → `acceptor.accept(stream)` →
//! `hyper_util::server::conn::auto::Builder::serve_connection_with_upgrades`.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::tls_reload::{CurrentCert, Reloader};

const CERT_FILE: &str = "self-signed-cert.pem";
const KEY_FILE: &str = "self-signed-key.pem";
const META_FILE: &str = "self-signed.json";
/// Apple platforms reject server certificates valid for more than 825 days
/// and Chrome warns past 398 days even after a click-through, so stay below.
const VALIDITY_DAYS: i64 = 397;
/// Regenerate this long before expiry so a restart never serves a certificate
/// that dies mid-week.
const RENEW_BEFORE_DAYS: i64 = 30;

/// TLS flags. Without `--tls-cert/--tls-key` or `--tls-self-signed`, duet
/// serves plain HTTP (e.g. behind a reverse proxy).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "HTTPS")]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first), e.g. certbot's fullchain.pem. Reloaded on
    /// SIGHUP and when the file changes.
    #[arg(
        long,
        env = "DUET_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "DUET_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Generate (once) and use a self-signed certificate for this machine's
    /// names and addresses, stored in the data directory.
    #[arg(long, env = "DUET_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,

    /// Get and renew a certificate for this domain automatically through ACME (Let's
    /// Encrypt by default), validated over TLS-ALPN-01 on --listen's port, which must be
    /// reachable as port 443 from the internet (or see --acme-challenge). Turns HTTPS on.
    /// Repeatable; comma-separated in the environment.
    #[arg(
        long = "acme-domain",
        env = "DUET_ACME_DOMAINS",
        value_delimiter = ',',
        value_name = "DOMAIN",
        conflicts_with_all = ["tls_cert", "tls_self_signed"]
    )]
    pub acme_domains: Vec<String>,

    /// Contact address given to the ACME server (expiry warnings, policy changes).
    #[arg(
        long,
        env = "DUET_ACME_EMAIL",
        value_name = "EMAIL",
        requires = "acme_domains"
    )]
    pub acme_email: Option<String>,

    /// ACME directory to order from. Let's Encrypt's staging directory, for trying a
    /// setup without its rate limits, is
    /// https://acme-staging-v02.api.letsencrypt.org/directory.
    #[arg(
        long,
        env = "DUET_ACME_DIRECTORY",
        value_name = "URL",
        default_value = crate::acme::LETS_ENCRYPT
    )]
    pub acme_directory: String,

    /// How the ACME server checks that this machine holds the domain: tls-alpn-01 on
    /// --listen's port (reachable as 443), or http-01 on --http-redirect-listen's port
    /// (reachable as 80), for hosts where 443 is not reachable from the ACME server.
    #[arg(
        long,
        env = "DUET_ACME_CHALLENGE",
        value_name = "CHALLENGE",
        default_value = "tls-alpn-01"
    )]
    pub acme_challenge: AcmeChallenge,

    /// Also trust this PEM CA certificate for the ACME directory's own HTTPS (a private
    /// ACME server), besides the public roots.
    #[arg(
        long,
        env = "DUET_ACME_CA_FILE",
        value_name = "FILE",
        requires = "acme_domains"
    )]
    pub acme_ca_file: Option<PathBuf>,

    /// Also listen on this address (e.g. 0.0.0.0:80) and answer every request there with a
    /// redirect to the same host and path over https on --listen's port. Needs HTTPS.
    #[arg(long, env = "DUET_HTTP_REDIRECT_LISTEN", value_name = "ADDR:PORT")]
    pub http_redirect_listen: Option<std::net::SocketAddr>,

    /// Directory for persistent state (the self-signed certificate) [default:
    /// $XDG_DATA_HOME/duet, ~/.local/share/duet, or ./duet-data].
    #[arg(
        long,
        env = "DUET_DATA_DIR",
        value_name = "DIR",
        help_heading = "Basics"
    )]
    pub data_dir: Option<PathBuf>,
}

/// `--acme-challenge`: the ACME challenge type that proves control of a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737), answered in the TLS handshake on the HTTPS port.
    #[default]
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// HTTP-01, answered at `/.well-known/acme-challenge/` on `--http-redirect-listen`.
    #[value(name = "http-01")]
    Http01,
}

/// What the server needs to serve HTTPS.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// Certificate file in use.
    pub cert_path: PathBuf,
    /// SHA-256 of the leaf certificate, `AB:CD:...` as browsers show it.
    pub fingerprint: String,
    /// For `--tls-cert/--tls-key`: reloads them into the acceptor (see
    /// [`crate::tls_reload`]). The self-signed certificate is duet's own and changes only
    /// at a restart.
    pub reloader: Option<Reloader>,
    /// For `--acme-domain`: the ACME client to drive in a task.
    pub acme: Option<crate::acme::Acme>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_path", &self.cert_path)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl TlsConfig {
    /// The data directory, resolved against the environment.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        match (std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")) {
            (Some(xdg), _) if !xdg.is_empty() => PathBuf::from(xdg).join("duet"),
            (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".local/share/duet"),
            _ => PathBuf::from("duet-data"),
        }
    }

    /// Builds the acceptor, or `None` for plain HTTP. Call once at startup;
    /// errors name the offending file.
    pub fn load(&self) -> anyhow::Result<Option<Tls>> {
        if !self.acme_domains.is_empty() {
            return self.load_acme().map(Some);
        }
        let (cert_path, key_path, files) =
            match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
                (Some(c), Some(k), _) => (c.clone(), k.clone(), true),
                (None, None, true) => {
                    let (c, k) = ensure_self_signed(&self.data_dir(), &local_names())?;
                    (c, k, false)
                }
                (None, None, false) => return Ok(None),
                _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
            };
        let (key, fingerprint) = certified_key(&cert_path, &key_path)?;
        let current = CurrentCert::new(key);
        let config = server_config_for(current.clone())?;
        tracing::info!(cert = %cert_path.display(), %fingerprint, "TLS enabled");
        let reloader =
            files.then(|| Reloader::new(cert_path.clone(), key_path, current, fingerprint.clone()));
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_path,
            fingerprint,
            reloader,
            acme: None,
        }))
    }

    /// HTTPS with certificates from ACME: the challenge handshakes and the certificate
    /// both come from the ACME client's resolver.
    fn load_acme(&self) -> anyhow::Result<Tls> {
        if self.acme_challenge == AcmeChallenge::Http01 && self.http_redirect_listen.is_none() {
            anyhow::bail!(
                "--acme-challenge http-01 is answered on the plain HTTP port: add \
                 --http-redirect-listen 0.0.0.0:80 (or the port that the internet reaches as 80)"
            );
        }
        let acme = crate::acme::start(
            &self.acme_domains,
            self.acme_challenge,
            self.acme_email.as_deref(),
            &self.acme_directory,
            self.acme_ca_file.as_deref(),
            &self.data_dir(),
        )?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(acme.resolver.clone());
        config.alpn_protocols = vec![
            b"h2".to_vec(),
            b"http/1.1".to_vec(),
            crate::acme::ACME_TLS_ALPN.to_vec(),
        ];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_path: self.data_dir().join("acme"),
            fingerprint: String::new(),
            reloader: None,
            acme: Some(acme),
        })
    }
}

/// Loads a PEM chain and key into a rustls server config (ALPN h2 and
/// http/1.1, matching hyper-util's auto builder). Returns the leaf's
/// fingerprint too.
pub fn server_config(cert_path: &Path, key_path: &Path) -> anyhow::Result<(ServerConfig, String)> {
    let (key, fingerprint) = certified_key(cert_path, key_path)?;
    Ok((server_config_for(CurrentCert::new(key))?, fingerprint))
}

/// A server config whose every handshake gets what `current` holds at that moment.
fn server_config_for(current: Arc<CurrentCert>) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(current);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The same acceptor, also accepting ALPN protocol `proto`, in first place: the server's
/// order decides, and a TURN client offering `stun.turn` and `http/1.1` (coturn's does)
/// must get `stun.turn`. Browsers never offer it, so they still get `h2` or `http/1.1`.
pub fn with_alpn(acceptor: &TlsAcceptor, proto: &[u8]) -> TlsAcceptor {
    let mut config = ServerConfig::clone(acceptor.config());
    config.alpn_protocols.insert(0, proto.to_vec());
    TlsAcceptor::from(Arc::new(config))
}

/// Reads a PEM chain and its private key, checks that they belong together, and returns
/// them ready for rustls with the leaf's fingerprint. Errors name the file.
pub fn certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<(Arc<CertifiedKey>, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", cert_path.display()))?;
    let leaf = certs
        .first()
        .with_context(|| format!("no certificate in {}", cert_path.display()))?;
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading private key {}", key_path.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "{} does not match {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok((Arc::new(key), fingerprint))
}

/// SHA-256 over the DER certificate as colon-separated upper-case hex, the
/// form Chrome/Firefox certificate viewers and `openssl x509 -fingerprint`
/// print.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Names the self-signed certificate covers: host name, `localhost`,
/// loopback addresses and every interface address (link-local IPv6 is left
/// out: a scoped address cannot appear in a URL a browser accepts).
pub fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Some(host) = gethostname::gethostname().to_str()
        && !host.is_empty()
        && host != "localhost"
    {
        names.push(host.to_string());
    }
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    match if_addrs::get_if_addrs() {
        Ok(ifaces) => ips.extend(ifaces.into_iter().map(|i| i.ip())),
        Err(e) => tracing::warn!("cannot list network interfaces: {e}"),
    }
    ips.sort();
    ips.dedup();
    names.extend(ips.iter().map(IpAddr::to_string));
    names
}

/// What was generated, so a restart can tell whether to reuse it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Meta {
    names: Vec<String>,
    /// Unix seconds.
    not_after: i64,
}

/// Returns paths of a self-signed certificate and key in `dir` covering
/// `names`, reusing the stored pair unless the names changed (a new
/// interface address) or it is close to expiry.
pub fn ensure_self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let meta_path = dir.join(META_FILE);
    let now = time::OffsetDateTime::now_utc();

    let stored: Option<Meta> = fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let reusable = stored.as_ref().is_some_and(|m| {
        let mut wanted = names.to_vec();
        wanted.sort();
        let mut have = m.names.clone();
        have.sort();
        // Superset is enough: an interface that went away does not warrant
        // a new certificate (and a new browser warning).
        wanted.iter().all(|n| have.contains(n))
            && m.not_after - now.unix_timestamp() > RENEW_BEFORE_DAYS * 86_400
            && cert_path.is_file()
            && key_path.is_file()
    });
    if reusable {
        return Ok((cert_path, key_path));
    }

    fs::create_dir_all(dir).with_context(|| data_dir_hint(dir))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("certificate names")?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "duet self-signed");
    params.distinguished_name = dn;
    // Backdate a little for clients with skewed clocks.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate().context("generating key")?;
    let cert = params.self_signed(&key).context("self-signing")?;

    // Key first and private; the certificate and metadata only reference it.
    // An existing directory this user may not write (a service's leftover, owned by
    // root) fails here rather than at `create_dir_all`.
    write_atomic(&key_path, key.serialize_pem().as_bytes(), true)
        .with_context(|| data_dir_hint(dir))?;
    write_atomic(&cert_path, cert.pem().as_bytes(), false)?;
    let meta = Meta {
        names: names.to_vec(),
        not_after: params.not_after.unix_timestamp(),
    };
    write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta)?, false)?;
    tracing::info!(cert = %cert_path.display(), ?names, "generated self-signed certificate");
    Ok((cert_path, key_path))
}

/// What to do when the data directory cannot be created: the usual case is a service
/// user without a home directory, whose default (`~/.local/share/duet`) does not exist.
fn data_dir_hint(dir: &Path) -> String {
    format!(
        "cannot create or write the data directory {}: choose a directory this user may write with \
         --data-dir (or DUET_DATA_DIR), e.g. --data-dir /var/lib/duet (under systemd, \
         StateDirectory=duet creates it: see docs/duet.service)",
        dir.display()
    )
}

/// Writes via a temporary file and rename so a crash never leaves a torn
/// key or certificate behind. `private`: readable by this user only (0600).
pub(crate) fn write_atomic(path: &Path, data: &[u8], private: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    // A leftover of a crashed write keeps its mode when opened again: start afresh.
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("duet-tls-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn local_names_cover_loopback() {
        let names = local_names();
        for n in ["localhost", "127.0.0.1", "::1"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }

    #[test]
    fn self_signed_is_reused_and_renewed_on_new_names() {
        let dir = tmpdir("reuse");
        let names = local_names();
        let (c, k) = ensure_self_signed(&dir, &names).expect("generate");
        let (_, fp1) = server_config(&c, &k).expect("load");
        let (_, fp2) = server_config(&c, &k).expect("load again");
        assert_eq!(fp1, fp2);
        let (c2, k2) = ensure_self_signed(&dir, &names).expect("reuse");
        assert_eq!(
            server_config(&c2, &k2).expect("load").1,
            fp1,
            "restart must reuse"
        );
        // Fewer names: still reused.
        ensure_self_signed(&dir, &names[..1]).expect("subset");
        assert_eq!(server_config(&c, &k).expect("load").1, fp1);
        // A new address appears: regenerate.
        let mut more = names.clone();
        more.push("192.0.2.7".into());
        ensure_self_signed(&dir, &more).expect("regen");
        assert_ne!(server_config(&c, &k).expect("load").1, fp1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&k).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Fingerprint format and agreement with openssl, when present.
        assert_eq!(fp1.len(), 32 * 3 - 1);
        let fp = server_config(&c, &k).expect("load").1;
        if let Ok(out) = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&c)
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.trim().ends_with(&fp),
                "openssl says {text}, we say {fp}"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_reported_with_path() {
        let dir = tmpdir("bad");
        fs::create_dir_all(&dir).expect("mkdir");
        let junk = dir.join("junk.pem");
        fs::write(&junk, "not a pem").expect("write");
        let err = server_config(&junk, &junk).expect_err("junk").to_string();
        assert!(err.contains("junk.pem"), "{err}");
        let missing = dir.join("missing.pem");
        let err = format!(
            "{:#}",
            server_config(&missing, &missing).expect_err("missing")
        );
        assert!(err.contains("missing.pem"), "{err}");
        // A key that does not belong to the certificate.
        let (c, _) = ensure_self_signed(&dir.join("a"), &["localhost".into()]).expect("a");
        let (_, k) = ensure_self_signed(&dir.join("b"), &["localhost".into()]).expect("b");
        assert!(server_config(&c, &k).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            tls: TlsConfig,
        }
        assert!(Cli::try_parse_from(["duet", "--tls-cert", "c.pem"]).is_err());
        assert!(
            Cli::try_parse_from([
                "duet",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--tls-self-signed"
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from(["duet"]).expect("parse");
        assert!(cli.tls.load().expect("plain").is_none());
    }

    #[tokio::test]
    async fn handshake_over_loopback() {
        let dir = tmpdir("hs");
        let cfg = TlsConfig {
            tls_self_signed: true,
            data_dir: Some(dir.clone()),
            ..Default::default()
        };
        let tls = cfg.load().expect("load").expect("tls on");

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tls.acceptor.clone();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                let mut s = acceptor.accept(stream).await.expect("handshake");
                let alpn = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                s.write_all(&alpn.unwrap_or_default()).await.expect("write");
                s.shutdown().await.expect("shutdown");
            }
        });

        // Trust exactly the generated certificate, then connect by name and by IP.
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&tls.cert_path).expect("read") {
            roots.add(c.expect("cert")).expect("add");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        for name in ["localhost", "127.0.0.1"] {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let sn = ServerName::try_from(name.to_string()).expect("name");
            let mut s = connector.connect(sn, tcp).await.expect("client handshake");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"http/1.1");
        }
        server.await.expect("server task");
        let _ = fs::remove_dir_all(&dir);
    }
}
