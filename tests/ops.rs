//! Running duet for real: the built binary started as an operator would, its stderr read
//! as the operator (or journald) would see it: the URLs it says to open, the log formats,
//! names kept out of the log.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Client;

/// How long the binary gets to start listening (a debug build on a busy machine).
const START: Duration = Duration::from_secs(30);

/// A running `duet` process and everything it has written to stderr so far.
struct Duet {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
    pub dir: std::path::PathBuf,
}

impl Duet {
    /// Starts the binary on 127.0.0.1 port 0 (unless `args` say otherwise) with a data
    /// directory of its own, and waits until it logs the address it listens on.
    fn start(tag: &str, args: &[&str]) -> Duet {
        let dir = std::env::temp_dir().join(format!("duet-ops-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_duet"));
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--data-dir") {
            command.arg("--data-dir").arg(&dir);
        }
        command
            .args(["--rate-limit", "0"])
            .args(args)
            .env("DUET_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start duet");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        let mut duet = Duet {
            child,
            lines,
            addr: "0.0.0.0:0".parse().expect("addr"),
            dir,
        };
        let line = duet.wait_for("duet listening");
        duet.addr = listening_addr(&line);
        duet
    }

    /// Everything logged so far, one string.
    fn log(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + START;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "duet exited ({status}) before logging `{needle}`:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log within {START:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP (the reload signal).
    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Duet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The address from the `duet listening` line, in text (`addr=...`) or JSON form.
fn listening_addr(line: &str) -> SocketAddr {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json["addr"]
            .as_str()
            .expect("addr field")
            .parse()
            .expect("addr");
    }
    let rest = line.split("addr=").nth(1).expect("addr= in the line");
    let addr = rest.split_whitespace().next().expect("addr value");
    addr.parse().expect("addr")
}

#[test]
fn startup_lists_the_urls_to_open() {
    let mut duet = Duet::start("urls", &["--listen", "0.0.0.0:0", "--tls-self-signed"]);
    let port = duet.addr.port();
    duet.wait_for(&format!("open https://localhost:{port}/"));
    // Every LAN IPv4 address is offered too: that is what a phone on the Wi-Fi types.
    for ip in duet::startup::lan_addresses() {
        if ip.is_ipv4() && !ip.is_loopback() {
            duet.wait_for(&format!("open https://{ip}:{port}/"));
        }
    }
    let log = duet.log();
    assert!(!log.contains("plain HTTP"), "no warning with TLS:\n{log}");
}

#[test]
fn plain_http_on_all_interfaces_warns_and_a_pipe_gets_no_colour() {
    let mut duet = Duet::start("plain", &["--listen", "0.0.0.0:0"]);
    let port = duet.addr.port();
    duet.wait_for(&format!("open http://localhost:{port}/"));
    let warning = duet.wait_for("plain HTTP");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("--tls-self-signed"), "{warning}");
    let log = duet.log();
    assert!(!log.contains('\u{1b}'), "escape codes in a pipe:\n{log:?}");
}

#[tokio::test]
async fn json_log_lines_parse() {
    let mut duet = Duet::start("json", &["--log-format", "json"]);
    // A session's lines too, not only startup's.
    let mut client = Client::connect(&format!("ws://{}/", duet.addr)).await;
    assert_eq!(client.login("json-user").await["success"], true);
    client.close().await;
    duet.wait_for("logged out");
    let log = duet.log();
    let mut levels = 0;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["message"].is_string(), "{line}");
        levels += 1;
    }
    assert!(levels >= 4, "{log}");
    assert!(log.contains(r#""name":"json-user""#), "{log}");
}

#[tokio::test]
async fn log_names_false_keeps_names_and_addresses_out() {
    for (shown, args) in [(true, &[][..]), (false, &["--log-names", "false"][..])] {
        let mut duet = Duet::start("names", args);
        let mut client = Client::connect(&format!("ws://{}/", duet.addr)).await;
        let name = "secret-name-7f3a";
        assert_eq!(client.login(name).await["success"], true);
        // A refusal is logged too, with its code.
        let mut other = Client::connect(&format!("ws://{}/", duet.addr)).await;
        assert_eq!(other.login(name).await["success"], false);
        duet.wait_for("code=\"name-taken\"");
        client.close().await;
        other.close().await;
        duet.wait_for("logged out");
        let log = duet.log();
        assert_eq!(log.contains(name), shown, "--log-names {shown}:\n{log}");
        // The client's address, in the session's first line.
        let connected = duet.wait_for(": connected");
        assert_eq!(
            connected.contains("addr=127.0.0.1:"),
            shown,
            "--log-names {shown}: {connected}"
        );
        if !shown {
            assert!(log.contains("<hidden>"), "{log}");
        }
    }
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects over TLS to `localhost` at `addr`, trusting only the certificates in
/// `ca_file`; returns the stream and the fingerprint of the certificate it presented.
async fn tls_connect(
    addr: SocketAddr,
    ca_file: &std::path::Path,
) -> Result<(TlsStream, String), String> {
    tls_connect_to(addr, "localhost", ca_file).await
}

/// [`tls_connect`] to the server name `name`.
async fn tls_connect_to(
    addr: SocketAddr,
    name: &str,
    ca_file: &std::path::Path,
) -> Result<(TlsStream, String), String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(common::WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(duet::tls::fingerprint)
        .ok_or("no certificate")?;
    Ok((tls, leaf))
}

/// `GET path` over TLS (see [`tls_connect`]); returns the certificate's fingerprint and
/// the response.
async fn https_get(
    addr: SocketAddr,
    ca_file: &std::path::Path,
    path: &str,
) -> Result<(String, String), String> {
    https_get_from(addr, "localhost", ca_file, path).await
}

/// [`https_get`] from the server name `name`.
async fn https_get_from(
    addr: SocketAddr,
    name: &str,
    ca_file: &std::path::Path,
    path: &str,
) -> Result<(String, String), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut tls, leaf) = tls_connect_to(addr, name, ca_file).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    tokio::time::timeout(common::WAIT, tls.read_to_string(&mut response))
        .await
        .map_err(|_| "response timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok((leaf, response))
}

/// Sends `request` over plain TCP and returns everything the server answers.
async fn raw_http(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(common::WAIT, stream.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn http_on_the_https_port_is_redirected_and_https_still_works() {
    let dir = std::env::temp_dir().join(format!("duet-ops-redirect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A free port for --http-redirect-listen (bound and let go: the OS rarely hands it out
    // again at once).
    let redirect_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let data_dir = dir.clone();
    let mut server = common::Server::start(move |c| {
        c.tls.tls_self_signed = true;
        c.tls.data_dir = Some(data_dir);
        c.tls.http_redirect_listen = Some(redirect_addr);
    })
    .await;
    let port = server.addr.port();

    let response = raw_http(
        server.addr,
        &format!("GET /call?me=1 HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 301"), "{response}");
    assert_eq!(
        header(&response, "location"),
        Some(format!("https://localhost:{port}/call?me=1").as_str()),
        "{response}"
    );

    // The separate redirect port points at the HTTPS port.
    let response = raw_http(
        redirect_addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            redirect_addr.port()
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 301"), "{response}");
    assert_eq!(
        header(&response, "location"),
        Some(format!("https://127.0.0.1:{port}/").as_str()),
        "{response}"
    );

    // HTTPS on the same port is unaffected.
    let cert = dir.join("self-signed-cert.pem");
    let (_, response) = https_get(server.addr, &cert, "/healthz")
        .await
        .expect("https");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes a fresh self-signed certificate for `localhost` to `cert` and `key` (each via
/// a rename, as certbot does, so the server never reads half a file).
fn write_cert(cert: &std::path::Path, key: &std::path::Path) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let pair = rcgen::KeyPair::generate().expect("key");
    let signed = params.self_signed(&pair).expect("sign");
    for (path, pem) in [(key, pair.serialize_pem()), (cert, signed.pem())] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, pem).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
}

/// Waits (bounded) until a client trusting only `cert` gets that certificate from the
/// server; returns its fingerprint.
async fn wait_served(addr: SocketAddr, cert: &std::path::Path) -> String {
    let deadline = Instant::now() + START;
    loop {
        match https_get(addr, cert, "/healthz").await {
            Ok((fingerprint, response)) => {
                assert!(response.starts_with("HTTP/1.1 200"), "{response}");
                return fingerprint;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "{} not served within {START:?}: {e}",
                cert.display()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn certificate_files_reload_on_sighup_and_on_change_keeping_open_websockets() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let files = std::env::temp_dir().join(format!("duet-ops-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).expect("mkdir");
    let (cert, key) = (files.join("cert.pem"), files.join("key.pem"));
    write_cert(&cert, &key);
    let first_copy = files.join("first.pem");
    std::fs::copy(&cert, &first_copy).expect("copy");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let mut duet = Duet::start("reload", &["--tls-cert", &cert_s, "--tls-key", &key_s]);
    let addr = duet.addr;
    let first = wait_served(addr, &cert).await;

    // A WebSocket opened on the first certificate.
    let (tls, _) = tls_connect(addr, &cert).await.expect("tls");
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss upgrade");
    ws.send(Message::text(r#"{"type":"login","name":"stays"}"#))
        .await
        .expect("send");
    let reply = tokio::time::timeout(common::WAIT, ws.next()).await;
    assert!(
        matches!(reply, Ok(Some(Ok(Message::Text(ref t)))) if t.contains("\"success\":true")),
        "{reply:?}"
    );

    // New files and SIGHUP: the new certificate is served.
    write_cert(&cert, &key);
    duet.hangup();
    let second = wait_served(addr, &cert).await;
    assert_ne!(first, second);
    duet.wait_for("SIGHUP: reloading the certificate");
    assert!(
        https_get(addr, &first_copy, "/healthz").await.is_err(),
        "the old certificate is no longer served"
    );

    // A broken file keeps the certificate in use.
    let second_copy = files.join("second.pem");
    std::fs::copy(&cert, &second_copy).expect("copy");
    std::fs::write(&cert, "not a certificate").expect("write junk");
    duet.hangup();
    duet.wait_for("certificate not reloaded");
    let (still, _) = https_get(addr, &second_copy, "/healthz")
        .await
        .expect("the second certificate is still served");
    assert_eq!(still, second);

    // Changed files are picked up without a signal.
    write_cert(&cert, &key);
    let third = wait_served(addr, &cert).await;
    assert_ne!(third, second);

    // The WebSocket opened before all this is still open and answering.
    ws.send(Message::Ping(b"still there".to_vec().into()))
        .await
        .expect("ping");
    assert_pong(&mut ws, b"still there").await;
    let _ = std::fs::remove_dir_all(&files);
}

/// Runs the binary to completion with `args`; returns its exit status and stderr.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(args)
        .env("DUET_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run duet");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn startup_errors_suggest_the_fix() {
    // Port in use: the hint names --listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (status, stderr) = run_to_exit(&["--listen", &addr]);
    assert!(!status.success());
    assert!(stderr.contains("already uses port"), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");

    // A data directory that cannot be created (not even by root, under /proc).
    let (status, stderr) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-self-signed",
        "--data-dir",
        "/proc/duet-cannot-exist/data",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("--data-dir"), "{stderr}");
    assert!(stderr.contains("DUET_DATA_DIR"), "{stderr}");
}

/// A helper process (pebble, its DNS) killed when the test ends, however it ends.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on right now (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits (bounded) until something accepts TCP connections on `port`.
async fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + START;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} not listening on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of an HTTP/1.1 response (not chunked).
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Debian's pebble (Let's Encrypt's ACME test server) and its DNS, on loopback, in a
/// directory of their own; stopped and removed when dropped.
struct Pebble {
    dir: std::path::PathBuf,
    acme_port: u16,
    mgmt_port: u16,
    /// Pebble's own HTTPS certificate, which duet trusts through --acme-ca-file.
    cert: std::path::PathBuf,
    _dns: Helper,
    _pebble: Helper,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 at `http_port` and TLS-ALPN-01 at `tls_port`, or
    /// `None` when pebble is not installed (`scripts/test` installs it).
    async fn start(tag: &str, http_port: u16, tls_port: u16) -> Option<Pebble> {
        if Command::new("pebble").arg("-h").output().is_err() {
            eprintln!("pebble is not installed (apt-get install pebble); skipping the ACME test");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("duet-ops-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let cert = dir.join("pebble-cert.pem");
        let key = dir.join("pebble-key.pem");
        write_cert(&cert, &key);
        let (acme_port, mgmt_port, dns_port) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": cert,
            "privateKey": key,
            // Validation connects to the domain at these ports: duet's.
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            // Short-lived, so that a renewal (at a third of the lifetime left) comes soon.
            "certificateValidityPeriod": 30
        }});
        let config_file = dir.join("pebble.json");
        std::fs::write(&config_file, config.to_string()).expect("config");
        // Every name resolves to 127.0.0.1 (and no IPv6, where duet does not listen).
        let dns = Helper(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{}", free_port())])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start pebble-challtestsrv"),
        );
        let pebble = Helper(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_file)
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                // No random validation delays, no deliberately rejected nonces.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start pebble"),
        );
        wait_listening(acme_port, "pebble").await;
        wait_listening(mgmt_port, "pebble management").await;
        Some(Pebble {
            dir,
            acme_port,
            mgmt_port,
            cert,
            _dns: dns,
            _pebble: pebble,
        })
    }

    fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.acme_port)
    }

    /// The root that issues pebble's certificates, from its management interface.
    async fn root(&self) -> std::path::PathBuf {
        let mgmt: SocketAddr = format!("127.0.0.1:{}", self.mgmt_port)
            .parse()
            .expect("addr");
        let (_, response) = https_get_from(mgmt, "localhost", &self.cert, "/roots/0")
            .await
            .expect("pebble root");
        let root = self.dir.join("pebble-root.pem");
        std::fs::write(&root, body(&response)).expect("write root");
        root
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ACME against Debian's pebble, all on loopback: duet gets a certificate for a test
/// domain through TLS-ALPN-01, https and wss work with it, a renewal (pebble issues
/// short-lived certificates here) is served without a restart while a WebSocket stays
/// open, and a restart reuses the stored certificate. Skipped when pebble is not
/// installed (`scripts/test` installs it).
#[tokio::test]
async fn acme_certificate_from_pebble_is_served_and_renewed() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    const DOMAIN: &str = "duet.test";
    let duet_port = free_port();
    let Some(pebble) = Pebble::start("pebble", free_port(), duet_port).await else {
        return;
    };
    let dir = pebble.dir.clone();
    let data = dir.join("data");
    let listen = format!("127.0.0.1:{duet_port}");
    let directory = pebble.directory();
    let ca = pebble.cert.display().to_string();
    let data_s = data.display().to_string();
    let args = [
        "--listen",
        listen.as_str(),
        "--acme-domain",
        DOMAIN,
        "--acme-email",
        "ops@duet.test",
        "--acme-directory",
        directory.as_str(),
        "--acme-ca-file",
        ca.as_str(),
        "--data-dir",
        data_s.as_str(),
    ];
    let started = Instant::now();
    let mut duet = Duet::start("acme", &args);
    duet.wait_for("DeployedNewCert");
    eprintln!("certificate from pebble after {:?}", started.elapsed());

    let root = pebble.root().await;

    let addr = duet.addr;
    let (first, response) = https_get_from(addr, DOMAIN, &root, "/healthz")
        .await
        .expect("https with the ACME certificate");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (tls, _) = tls_connect_to(addr, DOMAIN, &root).await.expect("tls");
    let url = format!("wss://{DOMAIN}:{duet_port}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss upgrade");
    ws.send(Message::text(r#"{"type":"login","name":"acme-user"}"#))
        .await
        .expect("send");
    let reply = tokio::time::timeout(common::WAIT, ws.next()).await;
    assert!(
        matches!(reply, Ok(Some(Ok(Message::Text(ref t)))) if t.contains("\"success\":true")),
        "{reply:?}"
    );

    // The renewal is served without a restart (bounded wait: about 20 s of the 30 s
    // lifetime, on a quiet machine).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (now, _) = https_get_from(addr, DOMAIN, &root, "/healthz")
            .await
            .expect("https during renewal");
        if now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal served within 90 s:\n{}",
            duet.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ws.send(Message::Ping(b"renewed".to_vec().into()))
        .await
        .expect("ping");
    assert_pong(&mut ws, b"renewed").await;
    drop(ws);

    // A restart deploys the stored certificate (the data directory is the test's, not
    // the Duet helper's own, so it survives the first process).
    drop(duet);
    let mut again = Duet::start("acme2", &args);
    again.wait_for("DeployedCachedCert");
}

/// `--acme-challenge http-01`: pebble validates over plain HTTP on the
/// `--http-redirect-listen` port, which still redirects every other request; the
/// certificate is then served on the HTTPS port.
#[tokio::test]
async fn acme_http01_is_answered_on_the_redirect_port() {
    const DOMAIN: &str = "duet-http01.test";
    let (duet_port, redirect_port) = (free_port(), free_port());
    let Some(pebble) = Pebble::start("pebble-http01", redirect_port, free_port()).await else {
        return;
    };
    let listen = format!("127.0.0.1:{duet_port}");
    let redirect = format!("127.0.0.1:{redirect_port}");
    let directory = pebble.directory();
    let ca = pebble.cert.display().to_string();
    let data = pebble.dir.join("data").display().to_string();
    let args = [
        "--listen",
        listen.as_str(),
        "--acme-domain",
        DOMAIN,
        "--acme-challenge",
        "http-01",
        "--http-redirect-listen",
        redirect.as_str(),
        "--acme-directory",
        directory.as_str(),
        "--acme-ca-file",
        ca.as_str(),
        "--data-dir",
        data.as_str(),
    ];
    let started = Instant::now();
    let mut duet = Duet::start("acme-http01", &args);
    duet.wait_for("DeployedNewCert");
    eprintln!(
        "certificate from pebble over HTTP-01 after {:?}",
        started.elapsed()
    );

    let root = pebble.root().await;
    let (_, response) = https_get_from(duet.addr, DOMAIN, &root, "/healthz")
        .await
        .expect("https with the ACME certificate");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let redirect_addr: SocketAddr = redirect.parse().expect("addr");
    let response = raw_http(
        redirect_addr,
        "GET /.well-known/acme-challenge/not-a-pending-token HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    let response = raw_http(redirect_addr, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 301"), "{response}");
}

/// `--acme-challenge http-01` without the port it is answered on is refused at startup
/// with the flag to add.
#[test]
fn acme_http01_without_a_redirect_port_says_what_to_add() {
    let (status, output) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--acme-domain",
        "duet.test",
        "--acme-challenge",
        "http-01",
    ]);
    assert!(!status.success());
    assert!(output.contains("--http-redirect-listen"), "{output}");
}

/// Waits for the pong to our ping `payload`, skipping the server's own keepalive pings:
/// the WebSocket is open and answering.
async fn assert_pong<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, payload: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(common::WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            Ok(Some(Ok(Message::Pong(p)))) if &p[..] == payload => return,
            other => panic!("expected our pong, got {other:?}"),
        }
    }
}
