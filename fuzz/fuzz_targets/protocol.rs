//! Any text a client can send: parsing never panics, and what it accepts is well formed.
#![no_main]

use duet::protocol::{self, Name, Request, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match protocol::parse(text) {
        Err(e) => {
            // Every refusal carries a stable code and a message for the user.
            assert!(!e.code.as_str().is_empty());
            assert!(!e.message.is_empty());
        }
        Ok(Request::Login { name: Ok(name), .. }) => check_name(&name),
        Ok(Request::Login { name: Err(_), .. }) => {}
        Ok(Request::Relay { kind, to, payload }) => {
            if let Target::Valid(name) = &to {
                check_name(name);
            }
            // The relayed frame is the payload spliced in as is: it must stay valid JSON.
            let sender = protocol::json_string("fuzz");
            let frame = protocol::relay_frame(kind, payload, &sender);
            assert!(serde_json_valid(&frame), "relay frame is not JSON: {frame}");
        }
        Ok(Request::Leave { to, .. }) => {
            if let Some(Target::Valid(name)) = &to {
                check_name(name);
            }
        }
    }
    // Names on their own, as the login and every target go through it.
    if let Ok(name) = Name::parse(text) {
        check_name(&name);
    }
});

/// A parsed name is trimmed, bounded, and parses again to itself.
fn check_name(name: &Name) {
    let s = name.as_str();
    assert_eq!(s, s.trim());
    assert!(!s.is_empty() && s.chars().count() <= protocol::MAX_NAME_CHARS);
    assert!(Name::parse(s).as_ref() == Ok(name));
    let json = protocol::json_string(s);
    assert!(serde_json_valid(&json));
}

fn serde_json_valid(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}
