//! What nodes publish to each other, in a compact text form: one header line per field,
//! then the frame as is (SDP is not escaped twice). Names and node ids never contain line
//! breaks (names have no control characters), so the split is unambiguous.
//!
//! ```text
//! d2\n{tag}\n{origin node}\n{to}\n{from}\n{session}\n{frame}
//! ```
//!
//! `session` is the sender's [`SessionId`] in decimal (`0`: unknown). Version `d1`, the
//! same without the session line, is still read (from a node not yet upgraded), with the
//! session unknown.
//!
//! Tags: `offer`, `answer`, `candidate`, `leave` or `leave/{reason}` (a signal),
//! `bounce/{code}/{kind}`, `notice`, `rejoin` (no frame), `dropped` (`to` was resumed
//! on the origin node; no `from`), and `online`/`offline` (presence of `to`; no `from`).

use axum::extract::ws::Utf8Bytes;

use super::keys::valid_node_id;
use super::reply::exact_name;
use crate::protocol::{ErrorCode, LeaveReason, Name, SignalKind};
use crate::registry::mailbox::{Event, SessionId};

const VERSION: &str = "d2";
/// The version before session ids: read, never written.
const VERSION_1: &str = "d1";

const REASONS: [LeaveReason; 5] = [
    LeaveReason::Hangup,
    LeaveReason::Declined,
    LeaveReason::Cancelled,
    LeaveReason::NoAnswer,
    LeaveReason::Disconnected,
];

#[derive(Debug)]
pub enum Message {
    Event {
        origin: String,
        to: Name,
        event: Event,
    },
    Presence {
        origin: String,
        name: Name,
        online: bool,
    },
    /// `name` was resumed on node `origin`: drop its session here.
    Dropped { origin: String, name: Name },
}

fn join(tag: &str, origin: &str, to: &str, from: &str, sid: SessionId, body: &str) -> Vec<u8> {
    let sid = sid.as_u64().to_string();
    let mut out = Vec::with_capacity(
        VERSION.len()
            + tag.len()
            + origin.len()
            + to.len()
            + from.len()
            + sid.len()
            + body.len()
            + 6,
    );
    for part in [VERSION, tag, origin, to, from, &sid] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(body.as_bytes());
    out
}

pub fn encode_event(origin: &str, to: &Name, event: &Event) -> Vec<u8> {
    match event {
        Event::Signal {
            from,
            sid,
            kind,
            reason,
            frame,
        } => {
            let tag = match reason {
                Some(r) => format!("{}/{}", kind.as_str(), r.as_str()),
                None => kind.as_str().to_string(),
            };
            join(
                &tag,
                origin,
                to.as_str(),
                from.as_str(),
                *sid,
                frame.as_str(),
            )
        }
        Event::Bounce {
            from,
            code,
            request,
        } => {
            let tag = format!("bounce/{}/{}", code.as_str(), request.as_str());
            join(
                &tag,
                origin,
                to.as_str(),
                from.as_str(),
                SessionId::UNKNOWN,
                "",
            )
        }
        Event::Notice(frame) => join(
            "notice",
            origin,
            to.as_str(),
            "",
            SessionId::UNKNOWN,
            frame.as_str(),
        ),
        Event::Rejoin { from, sid } => join("rejoin", origin, to.as_str(), from.as_str(), *sid, ""),
        // Made by the receiving node itself; never published (see `encode_dropped`).
        Event::Replaced | Event::NameLost => {
            join("dropped", origin, to.as_str(), "", SessionId::UNKNOWN, "")
        }
    }
}

/// `name` was resumed on node `origin`: its old node drops its session.
pub fn encode_dropped(origin: &str, name: &Name) -> Vec<u8> {
    join("dropped", origin, name.as_str(), "", SessionId::UNKNOWN, "")
}

pub fn encode_presence(origin: &str, name: &Name, online: bool) -> Vec<u8> {
    let tag = if online { "online" } else { "offline" };
    join(tag, origin, name.as_str(), "", SessionId::UNKNOWN, "")
}

/// Why a published message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("too few fields")]
    TooFewFields,
    #[error("unknown version {0:?}")]
    Version(String),
    #[error("invalid origin node {0:?}")]
    Origin(String),
    #[error("invalid {field} name {value:?}")]
    Name { field: &'static str, value: String },
    #[error("unknown signal kind {0:?}")]
    Kind(String),
    #[error("bad bounce {0:?}")]
    Bounce(String),
    #[error("unknown leave reason {0:?}")]
    Reason(String),
    #[error("invalid session id {0:?}")]
    Session(String),
}

fn kind(s: &str) -> Result<SignalKind, DecodeError> {
    SignalKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| DecodeError::Kind(s.to_string()))
}

fn name(field: &'static str, s: &str) -> Result<Name, DecodeError> {
    exact_name(s).ok_or_else(|| DecodeError::Name {
        field,
        value: s.to_string(),
    })
}

pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    let (version, rest) = text.split_once('\n').ok_or(DecodeError::TooFewFields)?;
    let fields = match version {
        VERSION => 6,
        VERSION_1 => 5,
        _ => return Err(DecodeError::Version(version.to_string())),
    };
    let mut parts = rest.splitn(fields, '\n');
    let mut next = || parts.next().ok_or(DecodeError::TooFewFields);
    let (tag, origin, to, from) = (next()?, next()?, next()?, next()?);
    let sid = if version == VERSION {
        let sid = next()?;
        sid.parse::<u64>()
            .map(SessionId::from_u64)
            .map_err(|_| DecodeError::Session(sid.to_string()))?
    } else {
        SessionId::UNKNOWN
    };
    let body = next()?;
    // The origin becomes part of a channel name when a bounce goes back to it.
    if !valid_node_id(origin) {
        return Err(DecodeError::Origin(origin.to_string()));
    }
    let origin = origin.to_string();
    let to = name("target", to)?;
    let frame = || Utf8Bytes::from(body.to_string());
    let event = match tag {
        "online" | "offline" => {
            return Ok(Message::Presence {
                origin,
                name: to,
                online: tag == "online",
            });
        }
        "dropped" => return Ok(Message::Dropped { origin, name: to }),
        "notice" => Event::Notice(frame()),
        "rejoin" => Event::Rejoin {
            from: name("sender", from)?,
            sid,
        },
        _ if tag.starts_with("bounce/") => {
            let mut fields = tag.split('/').skip(1);
            let code = fields
                .next()
                .and_then(ErrorCode::from_code)
                .ok_or_else(|| DecodeError::Bounce(tag.to_string()))?;
            let request = kind(fields.next().unwrap_or_default())?;
            Event::Bounce {
                from: name("sender", from)?,
                code,
                request,
            }
        }
        _ => {
            let (kind_str, reason) = match tag.split_once('/') {
                Some((k, r)) => {
                    let reason = REASONS
                        .into_iter()
                        .find(|x| x.as_str() == r)
                        .ok_or_else(|| DecodeError::Reason(r.to_string()))?;
                    (k, Some(reason))
                }
                None => (tag, None),
            };
            Event::Signal {
                from: name("sender", from)?,
                sid,
                kind: kind(kind_str)?,
                reason,
                frame: frame(),
            }
        }
    };
    Ok(Message::Event { origin, to, event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::redis::peers::peer_left;

    fn n(s: &str) -> Name {
        Name::parse(s).expect("valid name")
    }

    fn roundtrip(event: Event) -> Event {
        let bytes = encode_event("node-1", &n("bob"), &event);
        match decode(&bytes).expect("decodes") {
            Message::Event { origin, to, event } => {
                assert_eq!(origin, "node-1");
                assert_eq!(to, n("bob"));
                event
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn dropped_roundtrips() {
        let got = decode(&encode_dropped("node-2", &n("bob"))).expect("decodes");
        assert!(
            matches!(got, Message::Dropped { ref origin, ref name } if origin == "node-2" && *name == n("bob"))
        );
    }

    #[test]
    fn signals_roundtrip_exactly() {
        let frame =
            "{\"type\":\"offer\",\"offer\":{\"sdp\":\"v=0\\r\\na=x\\n\"},\"name\":\"ä lice\"}";
        let got = roundtrip(Event::Signal {
            from: n("ä lice"),
            sid: SessionId::from_u64(u64::MAX),
            kind: SignalKind::Offer,
            reason: None,
            frame: frame.into(),
        });
        let Event::Signal {
            from,
            sid,
            kind,
            reason,
            frame: got_frame,
        } = got
        else {
            panic!("expected a signal")
        };
        assert_eq!(from, n("ä lice"));
        assert_eq!(sid, SessionId::from_u64(u64::MAX));
        assert_eq!(kind, SignalKind::Offer);
        assert_eq!(reason, None);
        assert_eq!(got_frame.as_str(), frame);

        let got = roundtrip(peer_left(&n("carol")));
        assert!(matches!(
            got,
            Event::Signal { kind: SignalKind::Leave, reason: Some(LeaveReason::Disconnected), ref from, .. }
                if *from == n("carol")
        ));
    }

    #[test]
    fn bounces_notices_and_presence_roundtrip() {
        let got = roundtrip(Event::Bounce {
            from: n("x/y"),
            code: ErrorCode::Busy,
            request: SignalKind::Offer,
        });
        assert!(matches!(
            got,
            Event::Bounce { code: ErrorCode::Busy, request: SignalKind::Offer, ref from } if *from == n("x/y")
        ));
        let sid = SessionId::from_u64(7);
        let got = roundtrip(Event::Rejoin {
            from: n("alice"),
            sid,
        });
        assert!(
            matches!(got, Event::Rejoin { ref from, sid: s } if *from == n("alice") && s == sid)
        );
        let got = roundtrip(Event::Notice("{\"type\":\"presence\"}".into()));
        assert!(matches!(got, Event::Notice(ref f) if f.as_str() == "{\"type\":\"presence\"}"));
        match decode(&encode_presence("n", &n("dave"), false)) {
            Ok(Message::Presence {
                origin,
                name,
                online,
            }) => {
                assert_eq!((origin.as_str(), name, online), ("n", n("dave"), false));
            }
            _ => panic!("expected presence"),
        }
    }

    /// A node not yet upgraded sends `d1`, without session ids: read with the session
    /// unknown, which admits any session of the name.
    #[test]
    fn version_1_is_read_with_the_session_unknown() {
        let got = decode(b"d1\ncandidate\nn\nbob\nalice\n{\"x\":1}").expect("decodes");
        let Message::Event {
            event: Event::Signal {
                from, sid, frame, ..
            },
            ..
        } = got
        else {
            panic!("expected a signal, got {got:?}")
        };
        assert_eq!(from, n("alice"));
        assert_eq!(sid, SessionId::UNKNOWN);
        assert_eq!(frame.as_str(), "{\"x\":1}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"d1",
            b"d2\noffer\nn\nbob\nalice\n{}",
            b"d2\noffer\nn\nbob\nalice\nx\n{}",
            b"d2\noffer\nn\nbob\nalice\n-1\n{}",
            b"d2\noffer\nn\nbob\nalice\n99999999999999999999\n{}",
            b"d3\noffer\nn\nbob\nalice\n1\n{}",
            b"d1\ndance\nn\nbob\nalice\n{}",
            b"d1\noffer\nn\n\nalice\n{}",
            b"d1\noffer\nn\n  bob\nalice\n{}",
            b"d1\nleave/sideways\nn\nbob\nalice\n{}",
            b"d1\nbounce/nope/offer\nn\nbob\nalice\n",
            b"d1\nbounce/busy\nn\nbob\nalice\n",
            b"d1\noffer\nn\nbob\n\n{}",
            b"d1\noffer\nbad node:x\nbob\nalice\n{}",
            b"d1\noffer\n\nbob\nalice\n{}",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
