//! Reading what Redis answers without trusting it: anything unexpected becomes "nothing"
//! or an error value, never a panic.

use ::redis::Value;

use crate::protocol::Name;

/// The send script's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent<'a> {
    /// No node holds the name.
    NotOnline,
    /// Published to the channel of the owner's node.
    Published { owner: &'a str },
    /// The owner's node is alive but has no subscription right now.
    NotListening { owner: &'a str },
}

/// `send.lua`'s reply: `{0}`, `{1, owner}` or `{2, owner}`; `None` for anything else.
pub fn sent(reply: &Value) -> Option<Sent<'_>> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let owner = match parts.get(1) {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
        _ => None,
    };
    match (parts.first().and_then(int), owner) {
        (Some(0), _) => Some(Sent::NotOnline),
        (Some(1), Some(owner)) => Some(Sent::Published { owner }),
        (Some(2), Some(owner)) => Some(Sent::NotListening { owner }),
        _ => None,
    }
}

pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// The strings in an array reply; anything else is skipped.
pub fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().filter_map(string).collect(),
        _ => Vec::new(),
    }
}

/// `MGET`'s reply for `n` keys: each key's string value, `None` where it has none. `None`
/// altogether when the reply does not have one entry per key.
pub fn values(v: &Value, n: usize) -> Option<Vec<Option<&str>>> {
    match v {
        Value::Array(items) if items.len() == n => Some(items.iter().map(string).collect()),
        _ => None,
    }
}

pub fn string(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// `s` as a name, if it is one exactly (already trimmed and valid), as everything a node
/// writes to Redis is.
pub fn exact_name(s: &str) -> Option<Name> {
    Name::parse(s).ok().filter(|n| n.as_str() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn send_replies() {
        assert_eq!(
            sent(&Value::Array(vec![Value::Int(0)])),
            Some(Sent::NotOnline)
        );
        assert_eq!(
            sent(&Value::Array(vec![Value::Int(1), bulk("n1")])),
            Some(Sent::Published { owner: "n1" })
        );
        assert_eq!(
            sent(&Value::Array(vec![Value::Int(2), bulk("n1")])),
            Some(Sent::NotListening { owner: "n1" })
        );
        for odd in [
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(7), bulk("n1")]),
        ] {
            assert_eq!(sent(&odd), None, "{odd:?}");
        }
    }

    #[test]
    fn mget_replies() {
        let reply = Value::Array(vec![bulk("n1"), Value::Nil]);
        assert_eq!(values(&reply, 2), Some(vec![Some("n1"), None]));
        assert_eq!(values(&reply, 3), None);
        assert_eq!(values(&Value::Nil, 0), None);
    }
}
