//! Parsing and validation cases of the wire protocol.

use super::*;

fn err(text: &str) -> ErrorCode {
    match parse(text) {
        Err(e) => e.code,
        Ok(r) => panic!("expected an error for {text}, got {r:?}"),
    }
}

#[test]
fn names_are_trimmed_and_bounded() {
    assert_eq!(
        Name::parse("  alice ").map(|n| n.to_string()),
        Ok("alice".into())
    );
    assert_eq!(Name::parse("   "), Err(NameError::Empty));
    assert_eq!(
        Name::parse(&"é".repeat(64)).map(|n| n.as_str().chars().count()),
        Ok(64)
    );
    assert_eq!(Name::parse(&"x".repeat(65)), Err(NameError::TooLong));
    assert_eq!(Name::parse("a\u{7}b"), Err(NameError::ControlCharacter));
    assert!(Name::parse("李雷 🎥").is_ok());
    assert!(Name::parse("👩\u{200D}💻 dev").is_ok());
    assert_eq!(Name::parse("\u{200B}"), Err(NameError::Invisible));
    assert_eq!(Name::parse(" \u{200B}\u{FEFF} "), Err(NameError::Invisible));
    // Blank-looking letters and symbols, marks with nothing to mark, selectors, tags.
    for blank in [
        "\u{3164}",
        "\u{3164}\u{3164}",
        "\u{2800}",
        "\u{FFA0}",
        "\u{115F}\u{1160}",
        "\u{0301}\u{0308}",
        "\u{20DD}",
        "\u{FE0F}",
        "\u{E0041}\u{E007F}",
        "\u{E0100}",
    ] {
        assert_eq!(Name::parse(blank), Err(NameError::Invisible), "{blank:?}");
    }
    // Marks and joiners inside a name are fine.
    for fine in ["Zoë", "e\u{0301}", "नमस्ते", "👩\u{200D}💻", "❤\u{FE0F}"] {
        assert!(Name::parse(fine).is_ok(), "{fine:?}");
    }
    assert_eq!(Name::parse("a\u{061C}b"), Err(NameError::DirectionControl));
    assert_eq!(
        Name::parse("bob\u{202E}ecila"),
        Err(NameError::DirectionControl)
    );
}

#[test]
fn classifies_bad_frames() {
    assert_eq!(err("not json"), ErrorCode::InvalidJson);
    assert_eq!(err("{\"type\":"), ErrorCode::InvalidJson);
    assert_eq!(err("[1,2]"), ErrorCode::NotAnObject);
    assert_eq!(err("42"), ErrorCode::NotAnObject);
    assert_eq!(err("{}"), ErrorCode::InvalidMessage);
    assert_eq!(err("{\"type\":5}"), ErrorCode::InvalidMessage);
    assert_eq!(err("{\"type\":\"dance\"}"), ErrorCode::UnknownType);
    assert_eq!(
        err("{\"type\":\"offer\",\"offer\":{}}"),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        err("{\"type\":\"offer\",\"name\":\"b\"}"),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        err("{\"type\":\"offer\",\"name\":\"b\",\"offer\":\"sdp\"}"),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        err("{\"type\":\"candidate\",\"name\":7,\"candidate\":{}}"),
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        err("{\"type\":\"x\",\"type\":\"y\"}"),
        ErrorCode::InvalidMessage
    );
}

#[test]
fn unknown_type_keeps_the_seed_text() {
    let e = parse("{\"type\":\"dance\"}").unwrap_err();
    assert_eq!(e.message, "Command not found: dance");
}

#[test]
fn relay_is_exact() {
    let text =
        r#"{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0\r\n\u00e9"},"x":1}"#;
    let Ok(Request::Relay { kind, to, payload }) = parse(text) else {
        panic!("expected relay");
    };
    assert_eq!(kind, SignalKind::Offer);
    assert_eq!(to.as_str(), "bob");
    let frame = relay_frame(kind, payload, &json_string("al\"ice"));
    let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(v["offer"]["sdp"], "v=0\r\né");
    assert_eq!(v["name"], "al\"ice");
    assert_eq!(v["type"], "offer");
}

#[test]
fn leave_defaults() {
    let Ok(Request::Leave { to, reason }) = parse("{\"type\":\"leave\"}") else {
        panic!()
    };
    assert!(to.is_none());
    assert_eq!(reason, LeaveReason::Hangup);
    let Ok(Request::Leave { reason, .. }) =
        parse("{\"type\":\"leave\",\"name\":\"b\",\"reason\":\"disconnected\"}")
    else {
        panic!()
    };
    assert_eq!(reason, LeaveReason::Hangup);
    let Ok(Request::Leave { reason, .. }) = parse("{\"type\":\"leave\",\"reason\":\"no-path\"}")
    else {
        panic!()
    };
    assert_eq!(reason, LeaveReason::NoPath);
}

#[test]
fn login_with_a_bad_name_is_a_failed_login_not_a_parse_error() {
    let Ok(Request::Login { name, .. }) = parse("{\"type\":\"login\",\"name\":\"\"}") else {
        panic!()
    };
    assert_eq!(name, Err(NameError::Empty));
    let Ok(Request::Login { name, .. }) = parse("{\"type\":\"login\"}") else {
        panic!()
    };
    assert_eq!(name, Err(NameError::NotAString));
}

#[test]
fn login_reads_the_resume_fields() {
    let Ok(Request::Login { token, resume, .. }) =
        parse(r#"{"type":"login","name":"a","resumeToken":"abc","resume":true}"#)
    else {
        panic!()
    };
    assert_eq!(token.as_deref(), Some("abc"));
    assert!(resume);
    // A seed login has neither; null is missing; a token that is no string is empty.
    for (text, expected) in [
        (r#"{"type":"login","name":"a"}"#, None),
        (r#"{"type":"login","name":"a","resumeToken":null}"#, None),
        (r#"{"type":"login","name":"a","resumeToken":7}"#, Some("")),
    ] {
        let Ok(Request::Login { token, resume, .. }) = parse(text) else {
            panic!("{text}")
        };
        assert_eq!(token.as_deref(), expected, "{text}");
        assert!(!resume, "{text}");
    }
}

#[test]
fn a_resuming_login_names_its_call() {
    let call = |text: &str| match parse(text) {
        Ok(Request::Login { call, .. }) => call.map(|n| n.as_str().to_owned()),
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(
        call(r#"{"type":"login","name":"a","resumeToken":"t","call":" bob "}"#).as_deref(),
        Some("bob")
    );
    // No token: not a resume, so no call. Not a name: no call.
    for text in [
        r#"{"type":"login","name":"a","call":"bob"}"#,
        r#"{"type":"login","name":"a","resumeToken":"t","call":7}"#,
        r#"{"type":"login","name":"a","resumeToken":"t","call":""}"#,
        r#"{"type":"login","name":"a","resumeToken":"t","call":null}"#,
        r#"{"type":"login","name":"a","resumeToken":"t"}"#,
    ] {
        assert_eq!(call(text), None, "{text}");
    }
}

#[test]
fn error_codes_round_trip() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(code.as_str()), Some(code));
    }
}

#[test]
fn presence_frames_read_back_and_batch() {
    let name = Name::parse("Zoë \"z\"").expect("valid name");
    for online in [true, false] {
        let frame = presence_frame(&name, online);
        let (json, state) = parse_presence_frame(&frame).expect("a presence frame");
        assert_eq!(state, online);
        assert_eq!(
            serde_json::from_str::<String>(json).ok().as_deref(),
            Some(name.as_str())
        );
    }
    assert_eq!(
        parse_presence_frame(r#"{"type":"ringing","name":"a"}"#),
        None
    );
    let frame = presence_batch_frame(["\"a\"", "\"b\""], ["\"c\""]);
    let v: serde_json::Value = serde_json::from_str(&frame).expect("valid JSON");
    assert_eq!(
        v,
        serde_json::json!({"type":"presence-batch","online":["a","b"],"offline":["c"]})
    );
}

#[test]
fn login_asks_for_presence_batches() {
    let batch = |text| match parse(text) {
        Ok(Request::Login { presence_batch, .. }) => presence_batch,
        other => panic!("not a login: {other:?}"),
    };
    assert!(batch(r#"{"type":"login","name":"a","presenceBatch":true}"#));
    assert!(!batch(r#"{"type":"login","name":"a"}"#));
    assert!(!batch(
        r#"{"type":"login","name":"a","presenceBatch":"yes"}"#
    ));
}
