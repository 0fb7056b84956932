//! The wire protocol: what clients send (`Request`), what the server sends (frames built by
//! the `*_frame` functions), names, and the stable error codes.
//!
//! It is the seed tutorial's protocol (`login`, `offer`, `answer`, `candidate`, `leave`,
//! `error`) with additive extensions; `docs/protocol.md` is the prose version of this file.
//!
//! Parsing borrows from the incoming text: SDP and candidate payloads are never decoded into
//! a tree and re-encoded. They are kept as the client's raw JSON text and spliced into the
//! relayed frame, which is both faster and guarantees the relay is exact.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest accepted name, in Unicode scalar values, after trimming.
pub const MAX_NAME_CHARS: usize = 64;

/// A validated, trimmed user name. Cheap to clone: it is shared by the registry, the
/// session and every event that names its sender.
///
/// Shown as typed, but compared, hashed and ordered by its [key](Name::key): two names
/// that look alike (`bob`, `BOB`, `bоb` with a Cyrillic о) are equal, so the registry's
/// maps, Redis' claim keys and every `==` treat them as one user's name.
#[derive(Clone)]
pub struct Name(Arc<NameText>);

struct NameText {
    /// As the user typed it (trimmed).
    shown: Box<str>,
    /// See [`crate::names`].
    key: Box<str>,
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

impl Name {
    /// Trims `raw` and checks it is 1..=64 characters with no control characters.
    pub fn parse(raw: &str) -> Result<Name, NameError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        // Direction overrides let "alice\u{202e}ecila" pose as another name.
        if trimmed.chars().any(is_bidi_control) {
            return Err(NameError::DirectionControl);
        }
        if trimmed
            .chars()
            .all(|c| c.is_whitespace() || is_invisible(c))
        {
            return Err(NameError::Invisible);
        }
        Ok(Name(Arc::new(NameText {
            shown: trimmed.into(),
            key: crate::names::key(trimmed).into(),
        })))
    }

    /// The name as typed.
    pub fn as_str(&self) -> &str {
        &self.0.shown
    }

    /// What the name is told apart by: equal for names that could be taken for each other
    /// (case, Unicode normalization, UTS #39 confusables). Redis claims by it.
    pub fn key(&self) -> &str {
        &self.0.key
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.shown)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0.shown, f)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.shown)
    }
}

/// Unicode's explicit direction embeddings, overrides and isolates, and the marks
/// (including the Arabic letter mark, U+061C).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that draw nothing on their own: zero-width spaces and joiners, soft hyphen,
/// BOM, the Hangul fillers and the blank Braille pattern (which render as blank space but
/// are letters or symbols to Unicode), variation selectors and tag characters, and every
/// combining mark (which only decorates the character before it). They are fine inside a
/// name (emoji sequences use the zero-width joiner, many scripts need marks) but not as all
/// of it.
fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    ) || c.general_category_group() == GeneralCategoryGroup::Mark
}

/// Why a login name was refused; shown to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("The name is empty; type a name to sign in.")]
    Empty,
    #[error("The name is longer than 64 characters; choose a shorter one.")]
    TooLong,
    #[error("The name contains control characters; use letters, digits, spaces or symbols.")]
    ControlCharacter,
    #[error("The name contains text-direction controls; remove them.")]
    DirectionControl,
    #[error("The name has no visible characters; type a name.")]
    Invisible,
    #[error("The name must be a JSON string.")]
    NotAString,
}

/// The kinds of signaling message relayed between two users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Offer,
    Answer,
    Candidate,
    Leave,
}

impl SignalKind {
    pub const ALL: [SignalKind; 4] = [
        SignalKind::Offer,
        SignalKind::Answer,
        SignalKind::Candidate,
        SignalKind::Leave,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Offer => "offer",
            SignalKind::Answer => "answer",
            SignalKind::Candidate => "candidate",
            SignalKind::Leave => "leave",
        }
    }
}

/// Why a call ended, carried in `leave.reason` (an extension; the seed's `leave` had none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveReason {
    Hangup,
    Declined,
    Cancelled,
    NoAnswer,
    /// The client found no network path for the media (ICE failed, or nothing connected
    /// within the page's connect timeout).
    NoPath,
    /// Sent by the server when the peer's connection went away.
    Disconnected,
}

impl LeaveReason {
    /// Reasons a client may give; anything else (including `disconnected`, which only the
    /// server may say) becomes `hangup`.
    fn from_client(raw: &str) -> LeaveReason {
        match raw {
            "declined" => LeaveReason::Declined,
            "cancelled" => LeaveReason::Cancelled,
            "no-answer" => LeaveReason::NoAnswer,
            "no-path" => LeaveReason::NoPath,
            _ => LeaveReason::Hangup,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Hangup => "hangup",
            LeaveReason::Declined => "declined",
            LeaveReason::Cancelled => "cancelled",
            LeaveReason::NoAnswer => "no-answer",
            LeaveReason::NoPath => "no-path",
            LeaveReason::Disconnected => "disconnected",
        }
    }
}

/// A message from a client, validated, borrowing from the frame text.
#[derive(Debug)]
pub enum Request<'a> {
    Login {
        /// The claimed name, or why it is unusable (reported as a failed login).
        name: Result<Name, NameError>,
        /// `resumeToken`: the token of an earlier login of this name, to take back a held
        /// name, its call and its waiting messages. A token that is not a string is kept as
        /// an empty one, which no name accepts.
        token: Option<Cow<'a, str>>,
        /// `resume: true`: the client can resume, so it wants a token and its name held
        /// when its connection drops. A login with a token asks for the same.
        resume: bool,
        /// `call`: the peer of the call the resuming client believes it is in. Read only
        /// with a token, and used only when the server no longer has the call (after a
        /// restart, or on another node): both sides naming each other restore it. A
        /// value that is not a valid name is no call.
        call: Option<Name>,
        /// `presenceBatch: true`: the client reads `presence-batch`, so several presence
        /// changes may reach it as one frame.
        presence_batch: bool,
    },
    /// `offer`, `answer` or `candidate` to `to`, with the payload as raw JSON text.
    Relay {
        kind: SignalKind,
        to: Target,
        payload: &'a RawValue,
    },
    Leave {
        /// `None` when the client gave no name: "my current peer".
        to: Option<Target>,
        reason: LeaveReason,
    },
}

/// A target name as given by a client. A string that is not a valid name cannot be online,
/// so it is kept as text for the error message instead of failing the parse.
#[derive(Debug, Clone)]
pub enum Target {
    Valid(Name),
    Invalid(String),
}

impl Target {
    fn parse(raw: Cow<'_, str>) -> Target {
        match Name::parse(&raw) {
            Ok(name) => Target::Valid(name),
            Err(_) => Target::Invalid(raw.into_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Target::Valid(name) => name.as_str(),
            Target::Invalid(raw) => raw,
        }
    }
}

/// Stable, machine-readable error codes (the `code` field). Never rename one: clients
/// match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidJson,
    NotAnObject,
    InvalidMessage,
    UnknownType,
    BinaryNotSupported,
    NotLoggedIn,
    AlreadyLoggedIn,
    NotOnline,
    CannotCallSelf,
    Busy,
    AlreadyInCall,
    NotInCall,
    DeliveryFailed,
    RateLimited,
    Unavailable,
    // Login failure codes, carried by `login` replies rather than `error` frames.
    InvalidName,
    NameTaken,
    InvalidToken,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidJson,
        ErrorCode::NotAnObject,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::BinaryNotSupported,
        ErrorCode::NotLoggedIn,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::NotOnline,
        ErrorCode::CannotCallSelf,
        ErrorCode::Busy,
        ErrorCode::AlreadyInCall,
        ErrorCode::NotInCall,
        ErrorCode::DeliveryFailed,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::InvalidName,
        ErrorCode::NameTaken,
        ErrorCode::InvalidToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid-json",
            ErrorCode::NotAnObject => "not-an-object",
            ErrorCode::InvalidMessage => "invalid-message",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::BinaryNotSupported => "binary-not-supported",
            ErrorCode::NotLoggedIn => "not-logged-in",
            ErrorCode::AlreadyLoggedIn => "already-logged-in",
            ErrorCode::NotOnline => "not-online",
            ErrorCode::CannotCallSelf => "cannot-call-self",
            ErrorCode::Busy => "busy",
            ErrorCode::AlreadyInCall => "already-in-call",
            ErrorCode::NotInCall => "not-in-call",
            ErrorCode::DeliveryFailed => "delivery-failed",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::NameTaken => "name-taken",
            ErrorCode::InvalidToken => "invalid-token",
        }
    }

    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// Index into per-code metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A frame that could not be turned into a `Request`: the error to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: ErrorCode,
    pub message: String,
    /// The `type` of the offending message, when it had a readable one.
    pub request: Option<String>,
}

impl ParseError {
    fn new(code: ErrorCode, message: impl Into<String>, request: Option<&str>) -> Self {
        ParseError {
            code,
            message: message.into(),
            request: request.map(str::to_owned),
        }
    }
}

/// The fields duet reads. Everything is optional here so that a missing field becomes a
/// precise error instead of a generic serde message; unknown fields are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    offer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    answer: Option<&'a RawValue>,
    #[serde(borrow, default)]
    candidate: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reason: Option<&'a RawValue>,
    #[serde(rename = "resumeToken", borrow, default)]
    resume_token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resume: Option<&'a RawValue>,
    #[serde(borrow, default)]
    call: Option<&'a RawValue>,
    #[serde(rename = "presenceBatch", borrow, default)]
    presence_batch: Option<&'a RawValue>,
}

fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Request<'_>, ParseError> {
    // serde would happily read a struct from a JSON array, so rule out non-objects first.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => ParseError::new(
                ErrorCode::NotAnObject,
                "Messages must be JSON objects with a \"type\" field.",
                None,
            ),
            Err(e) => ParseError::new(
                ErrorCode::InvalidJson,
                format!("The message is not valid JSON: {e}."),
                None,
            ),
        });
    }
    let envelope: Envelope<'_> = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(e) if e.is_data() => {
            return Err(ParseError::new(
                ErrorCode::InvalidMessage,
                format!("The message is not a valid signaling message: {e}."),
                None,
            ));
        }
        Err(e) => {
            return Err(ParseError::new(
                ErrorCode::InvalidJson,
                format!("The message is not valid JSON: {e}."),
                None,
            ));
        }
    };

    let kind = match envelope.kind {
        None => {
            return Err(ParseError::new(
                ErrorCode::InvalidMessage,
                "The message has no \"type\" field.",
                None,
            ));
        }
        Some(raw) => match as_string(raw) {
            Some(kind) => kind,
            None => {
                return Err(ParseError::new(
                    ErrorCode::InvalidMessage,
                    "The \"type\" field must be a string.",
                    None,
                ));
            }
        },
    };

    let signal = match &*kind {
        "login" => {
            let name = match envelope.name.map(as_string) {
                Some(Some(raw)) => Name::parse(&raw),
                _ => Err(NameError::NotAString),
            };
            // `null` counts as missing, as for every other field.
            let token = envelope
                .resume_token
                .filter(|raw| raw.get() != "null")
                .map(|raw| as_string(raw).unwrap_or_default());
            let resume = envelope.resume.is_some_and(|raw| raw.get() == "true");
            let call = envelope
                .call
                .filter(|_| token.is_some())
                .and_then(as_string)
                .and_then(|raw| Name::parse(&raw).ok());
            let presence_batch = envelope
                .presence_batch
                .is_some_and(|raw| raw.get() == "true");
            return Ok(Request::Login {
                name,
                token,
                resume,
                call,
                presence_batch,
            });
        }
        "offer" => SignalKind::Offer,
        "answer" => SignalKind::Answer,
        "candidate" => SignalKind::Candidate,
        "leave" => SignalKind::Leave,
        other => {
            // The seed's exact text, so clients that show it keep working.
            return Err(ParseError::new(
                ErrorCode::UnknownType,
                format!("Command not found: {other}"),
                Some(other),
            ));
        }
    };
    let request = Some(signal.as_str());

    let target = match envelope.name {
        None => None,
        Some(raw) => match as_string(raw) {
            Some(name) => Some(Target::parse(name)),
            None => {
                return Err(ParseError::new(
                    ErrorCode::InvalidMessage,
                    "The \"name\" field must be a string: the user the message is for.",
                    request,
                ));
            }
        },
    };

    if signal == SignalKind::Leave {
        let reason = envelope
            .reason
            .and_then(as_string)
            .map_or(LeaveReason::Hangup, |r| LeaveReason::from_client(&r));
        return Ok(Request::Leave { to: target, reason });
    }

    let Some(to) = target else {
        return Err(ParseError::new(
            ErrorCode::InvalidMessage,
            format!(
                "The \"{}\" message has no \"name\" field: the user it is for.",
                signal.as_str()
            ),
            request,
        ));
    };
    let payload = match signal {
        SignalKind::Offer => envelope.offer,
        SignalKind::Answer => envelope.answer,
        _ => envelope.candidate,
    };
    match payload {
        Some(payload) if payload.get().starts_with('{') => Ok(Request::Relay {
            kind: signal,
            to,
            payload,
        }),
        _ => Err(ParseError::new(
            ErrorCode::InvalidMessage,
            format!(
                "The \"{0}\" message needs an object in its \"{0}\" field.",
                signal.as_str()
            ),
            request,
        )),
    }
}

/// A name encoded once as a JSON string, ready to splice into frames.
pub fn json_string(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// The frame relayed to the receiver of an `offer`/`answer`/`candidate`: the seed's fields
/// plus the sender's name. `sender_json` is the sender's name already JSON-encoded.
pub fn relay_frame(kind: SignalKind, payload: &RawValue, sender_json: &str) -> String {
    let kind = kind.as_str();
    let payload = payload.get();
    let mut frame = String::with_capacity(kind.len() * 2 + payload.len() + sender_json.len() + 32);
    frame.push_str("{\"type\":\"");
    frame.push_str(kind);
    frame.push_str("\",\"");
    frame.push_str(kind);
    frame.push_str("\":");
    frame.push_str(payload);
    frame.push_str(",\"name\":");
    frame.push_str(sender_json);
    frame.push('}');
    frame
}

/// `{"type":"leave","name":<peer>,"reason":<reason>}`.
pub fn leave_frame(peer_json: &str, reason: LeaveReason) -> String {
    format!(
        "{{\"type\":\"leave\",\"name\":{peer_json},\"reason\":\"{}\"}}",
        reason.as_str()
    )
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// `{"type":"error","code":...,"message":...}` with the request type and target name when
/// known.
pub fn error_frame(
    code: ErrorCode,
    message: &str,
    request: Option<&str>,
    name: Option<&str>,
) -> String {
    serde_json::to_string(&ErrorFrame {
        kind: "error",
        code: code.as_str(),
        message,
        request,
        name,
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
struct LoginFailed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    success: bool,
    code: &'static str,
    message: &'a str,
}

pub fn login_failed_frame(code: ErrorCode, message: &str) -> String {
    serde_json::to_string(&LoginFailed {
        kind: "login",
        success: false,
        code: code.as_str(),
        message,
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginOk<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    success: bool,
    name: &'a Name,
    ice_servers: &'a serde_json::Value,
    users: &'a [Name],
    users_truncated: bool,
    /// Only for a client that asked to be resumable.
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_token: Option<&'a str>,
    /// Only when the login carried a token: whether it took back a held session.
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<bool>,
}

/// The resume fields of a successful login reply.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResumeReply<'a> {
    /// The token to resume this login with.
    pub token: Option<&'a str>,
    /// Set when the login carried a token: `true` when it took back the held session.
    pub resumed: Option<bool>,
}

pub fn login_ok_frame(
    name: &Name,
    ice_servers: &serde_json::Value,
    users: &[Name],
    users_truncated: bool,
    resume: ResumeReply<'_>,
) -> String {
    serde_json::to_string(&LoginOk {
        kind: "login",
        success: true,
        name,
        ice_servers,
        users,
        users_truncated,
        resume_token: resume.token,
        resumed: resume.resumed,
    })
    .unwrap_or_default()
}

/// `{"type":"ringing","name":<callee>}`: sent to a caller once the callee has the offer.
pub fn ringing_frame(callee_json: &str) -> String {
    format!("{{\"type\":\"ringing\",\"name\":{callee_json}}}")
}

/// `{"type":"reconnecting","name":<peer>}`: the call peer's connection dropped and its name
/// is held for the resume window; the call goes on.
pub fn reconnecting_frame(peer_json: &str) -> String {
    format!("{{\"type\":\"reconnecting\",\"name\":{peer_json}}}")
}

/// `{"type":"resumed","name":<peer>}`: the call peer is back on a new connection.
pub fn resumed_frame(peer_json: &str) -> String {
    format!("{{\"type\":\"resumed\",\"name\":{peer_json}}}")
}

/// The kind and sender of a relayed frame (from [`relay_frame`]); `None` for anything
/// else, a `leave` included (a hang-up needs no answer).
pub fn relayed_kind_and_sender(frame: &str) -> Option<(SignalKind, Name)> {
    #[derive(Deserialize)]
    struct Relayed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
    }
    let relayed: Relayed<'_> = serde_json::from_str(frame).ok()?;
    let kind = [SignalKind::Offer, SignalKind::Answer, SignalKind::Candidate]
        .into_iter()
        .find(|k| k.as_str() == relayed.kind)?;
    Some((kind, Name::parse(&relayed.name).ok()?))
}

/// Whether `frame` is a presence update (which a held session need not keep: the roster in
/// the resumed login reply replaces them all).
pub fn is_presence_frame(frame: &str) -> bool {
    frame.starts_with("{\"type\":\"presence\"")
}

/// `{"type":"presence","name":...,"online":...}`.
pub fn presence_frame(name: &Name, online: bool) -> String {
    format!(
        "{{\"type\":\"presence\",\"name\":{},\"online\":{online}}}",
        json_string(name.as_str())
    )
}

/// The name (as the JSON string it was written with) and the state a
/// [`presence_frame`] carries; `None` for any other frame.
pub fn parse_presence_frame(frame: &str) -> Option<(&str, bool)> {
    let rest = frame.strip_prefix("{\"type\":\"presence\",\"name\":")?;
    if let Some(name) = rest.strip_suffix(",\"online\":true}") {
        return Some((name, true));
    }
    rest.strip_suffix(",\"online\":false}")
        .map(|name| (name, false))
}

/// `{"type":"presence-batch","online":[...],"offline":[...]}`: several presence changes in
/// one frame, for a client that asked for it at login; the names are JSON strings already.
pub fn presence_batch_frame<'a>(
    online: impl IntoIterator<Item = &'a str>,
    offline: impl IntoIterator<Item = &'a str>,
) -> String {
    fn list<'a>(out: &mut String, names: impl IntoIterator<Item = &'a str>) {
        out.push('[');
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
        }
        out.push(']');
    }
    let mut out = String::from("{\"type\":\"presence-batch\",\"online\":");
    list(&mut out, online);
    out.push_str(",\"offline\":");
    list(&mut out, offline);
    out.push('}');
    out
}

#[cfg(test)]
mod tests;
