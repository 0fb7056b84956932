//! The seed protocol as far as a load generator needs it: the messages it sends, a cheap
//! borrowed view of what it receives, and read helpers with deadlines.
//!
//! Works against duet and the seed alike: extra fields (duet's `name` on relayed
//! messages, error `code`s, `users`/`presence`) are ignored, and frames that are not JSON
//! (the seed greets with the text `Hello world`) are skipped and counted, never fatal.

use crate::target::Ws;
use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub fn login(name: &str) -> String {
    json!({"type": "login", "name": name}).to_string()
}

pub fn offer(to: &str, sdp: &str) -> String {
    json!({"type": "offer", "name": to, "offer": {"type": "offer", "sdp": sdp}}).to_string()
}

pub fn answer(to: &str, sdp: &str) -> String {
    json!({"type": "answer", "name": to, "answer": {"type": "answer", "sdp": sdp}}).to_string()
}

pub fn candidate(to: &str, candidate: &serde_json::Value) -> String {
    json!({"type": "candidate", "name": to, "candidate": candidate}).to_string()
}

pub fn leave(to: &str) -> String {
    json!({"type": "leave", "name": to}).to_string()
}

/// Builds relay probes: a realistic `candidate` message to one peer whose payload also
/// carries a sequence number and the scheduled send time, cheap to format per message.
#[derive(Clone)]
pub struct ProbeTemplate {
    /// Everything up to the value of `seq`.
    head: String,
}

impl ProbeTemplate {
    pub fn new(to: &str) -> Self {
        // serde_json escapes the name; names are ours, but stay correct anyway.
        let to = serde_json::Value::from(to).to_string();
        let head = format!(
            "{{\"type\":\"candidate\",\"name\":{to},\"candidate\":{{\"candidate\":\"{}\",\
             \"sdpMid\":\"0\",\"sdpMLineIndex\":0,\"usernameFragment\":\"EsAw\",\"seq\":",
            crate::payload::PROBE_CANDIDATE
        );
        Self { head }
    }

    /// A probe with `seq` and `t` (nanoseconds since the run's start).
    pub fn build(&self, seq: u64, t: u64) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(self.head.len() + 48);
        s.push_str(&self.head);
        let _ = write!(s, "{seq},\"t\":{t}}}}}");
        s
    }

    /// A probe without timing fields, for closed-loop runs that only count.
    pub fn fixed(&self) -> String {
        self.build(0, 0)
    }
}

/// What duet-bench reads of a received message; everything else is skipped unparsed.
#[derive(Deserialize, Debug)]
pub struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
    #[serde(default)]
    pub candidate: Option<Probe>,
}

/// The timing fields of a relay probe; absent in real candidates.
#[derive(Deserialize, Debug, Default, Clone, Copy)]
pub struct Probe {
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub t: Option<u64>,
}

/// Only the type, when the fuller view does not fit (e.g. a candidate that is a string).
#[derive(Deserialize)]
struct KindOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

impl<'a> Incoming<'a> {
    /// `None` for anything that is not a JSON object with a string `type`.
    pub fn parse(text: &'a str) -> Option<Self> {
        match serde_json::from_str::<Incoming>(text) {
            Ok(m) => Some(m),
            Err(_) => serde_json::from_str::<KindOnly>(text)
                .ok()
                .map(|k| Incoming {
                    kind: k.kind,
                    success: None,
                    code: None,
                    message: None,
                    candidate: None,
                }),
        }
    }

    /// `code: message` of an `error`, for reports.
    pub fn describe(&self) -> String {
        let code = self.code.as_deref().unwrap_or("(no code)");
        let message = self.message.as_deref().unwrap_or("");
        format!("{} {code}: {message}", self.kind)
    }
}

/// Cheap test for a relayed candidate in the hot loop: both duet and the seed write
/// `type` first (serde field order, `JSON.stringify` insertion order). Anything else
/// goes through [`Incoming::parse`].
pub fn looks_like_candidate(text: &str) -> bool {
    text.starts_with("{\"type\":\"candidate\"")
}

/// Sends one text frame and flushes.
pub async fn send(ws: &mut Ws, text: String) -> Result<()> {
    ws.send(Message::text(text)).await.context("sending")
}

/// Queues one text frame without flushing (flush after a batch).
pub async fn feed(ws: &mut Ws, text: Utf8Bytes) -> Result<()> {
    ws.feed(Message::Text(text)).await.context("sending")
}

/// The next text frame, skipping control and binary frames; `None` when the server closed.
pub async fn next_text(ws: &mut Ws, deadline: Instant) -> Result<Option<Utf8Bytes>> {
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for the server"))?;
        match frame {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(t))) => return Ok(Some(t)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("reading"),
        }
    }
}

/// Counts what a side saw while it was waiting for something else.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// `candidate` messages received.
    pub candidates: usize,
    /// `leave` messages received.
    pub leaves: usize,
    /// Frames that were not JSON objects with a `type` (the seed's `Hello world`).
    pub not_json: usize,
}

/// Reads until a message of type `kind` arrives; an `error` (or a failed `login`) on the way
/// is returned as an error, other messages are counted in `seen` and skipped.
pub async fn expect(ws: &mut Ws, kind: &str, deadline: Instant, seen: &mut Seen) -> Result<()> {
    loop {
        let Some(text) = next_text(ws, deadline)
            .await
            .with_context(|| format!("waiting for `{kind}`"))?
        else {
            bail!("server closed the connection while we waited for `{kind}`");
        };
        let Some(msg) = Incoming::parse(&text) else {
            seen.not_json += 1;
            continue;
        };
        if msg.kind == "error" {
            bail!(
                "server refused while we waited for `{kind}`: {}",
                msg.describe()
            );
        }
        if msg.kind == "login" && msg.success == Some(false) {
            bail!("login refused: {}", msg.describe());
        }
        if msg.kind == kind {
            if kind == "candidate" {
                seen.candidates += 1;
            }
            return Ok(());
        }
        match msg.kind.as_ref() {
            "candidate" => seen.candidates += 1,
            "leave" => seen.leaves += 1,
            _ => {}
        }
    }
}

/// Reads until `seen.candidates` reaches `n`.
pub async fn expect_candidates(
    ws: &mut Ws,
    n: usize,
    deadline: Instant,
    seen: &mut Seen,
) -> Result<()> {
    while seen.candidates < n {
        expect(ws, "candidate", deadline, seen).await?;
    }
    Ok(())
}

/// Logs in as `name` and waits for the successful reply.
pub async fn login_as(ws: &mut Ws, name: &str, deadline: Instant) -> Result<Seen> {
    send(ws, login(name)).await?;
    let mut seen = Seen::default();
    expect(ws, "login", deadline, &mut seen)
        .await
        .with_context(|| format!("logging in as {name}"))?;
    Ok(seen)
}

/// Starts the close handshake and reads until the server has closed too (or `deadline`).
pub async fn close(ws: &mut Ws, deadline: Instant) -> Result<()> {
    // A failed close frame just means the socket is already gone.
    let _ = ws.close(None).await;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("server did not finish the close handshake"),
            Ok(None) | Ok(Some(Err(_))) => return Ok(()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips() {
        let p = ProbeTemplate::new("bob \"the\" peer");
        let text = p.build(42, 1_234_567);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "candidate");
        assert_eq!(v["name"], "bob \"the\" peer");
        assert_eq!(v["candidate"]["seq"], 42);
        let m = Incoming::parse(&text).unwrap();
        assert_eq!(m.kind, "candidate");
        let probe = m.candidate.unwrap();
        assert_eq!((probe.seq, probe.t), (Some(42), Some(1_234_567)));
    }

    #[test]
    fn fast_candidate_test() {
        assert!(looks_like_candidate(&ProbeTemplate::new("b").fixed()));
        assert!(looks_like_candidate(
            r#"{"type":"candidate","candidate":{}}"#
        ));
        assert!(!looks_like_candidate(
            r#"{"candidate":{},"type":"candidate"}"#
        ));
        assert!(!looks_like_candidate(r#"{"type":"error"}"#));
    }

    #[test]
    fn tolerates_what_servers_send() {
        assert!(Incoming::parse("Hello world").is_none());
        assert!(Incoming::parse("[1,2]").is_none());
        assert!(Incoming::parse("{\"no\":\"type\"}").is_none());
        let m = Incoming::parse(r#"{"type":"login","success":true}"#).unwrap();
        assert_eq!((m.kind.as_ref(), m.success), ("login", Some(true)));
        // A candidate that is a string still yields the type.
        let m = Incoming::parse(r#"{"type":"candidate","candidate":"x"}"#).unwrap();
        assert_eq!(m.kind, "candidate");
        // duet's extra fields and escapes.
        let m = Incoming::parse(
            r#"{"type":"error","code":"not-in-call","message":"no \"call\"","name":"x"}"#,
        )
        .unwrap();
        assert_eq!(m.describe(), "error not-in-call: no \"call\"");
        let m = Incoming::parse(
            r#"{"type":"offer","offer":{"type":"offer","sdp":"v=0\r\n"},"name":"a"}"#,
        )
        .unwrap();
        assert_eq!(m.kind, "offer");
    }
}
