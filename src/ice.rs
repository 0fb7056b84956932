//! The ICE servers each client is given at login (`iceServers` in the login reply), so the
//! page never hard-codes STUN or TURN addresses.

use serde_json::{Value, json};

use crate::protocol::Name;

/// STUN and TURN servers handed to clients.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// `stun:` URLs, given to every client as they are.
    pub stun: Vec<String>,
}

impl IceConfig {
    /// The `iceServers` list for `name`, ready for `new RTCPeerConnection({iceServers})`.
    pub fn servers_for(&self, _name: &Name) -> Value {
        let mut servers = Vec::new();
        if !self.stun.is_empty() {
            servers.push(json!({ "urls": self.stun }));
        }
        Value::Array(servers)
    }
}
