//! Anything a Redis pub/sub message can hold: decoding never panics, and what decodes
//! encodes back to the same bytes (the codec is exact, so relayed frames are too).
#![no_main]

use duet::registry::redis::wire::{self, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = wire::decode(bytes) else {
        return;
    };
    let encoded = match &message {
        Message::Event { origin, to, event } => wire::encode_event(origin, to, event),
        Message::Presence {
            origin,
            name,
            online,
        } => wire::encode_presence(origin, name, *online),
        Message::Dropped { origin, name } => wire::encode_dropped(origin, name),
    };
    let again = wire::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(
        format!("{message:?}"),
        format!("{again:?}"),
        "decode(encode(m)) != m"
    );
});
