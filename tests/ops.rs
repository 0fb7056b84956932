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
        command
            .args(["--rate-limit", "0", "--data-dir"])
            .arg(&dir)
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
    #[allow(dead_code)]
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
