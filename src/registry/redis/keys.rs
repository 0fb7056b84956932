//! Every Redis key and channel name of a cluster, and the node ids that go into them, in
//! one place. The scripts get their keys from here through `KEYS`/`ARGV`; the two that
//! find node ids inside Redis (roster, count) and the send script (which finds the owner's
//! node id) get the prefixes built here and only append the id.
//!
//! With the default prefix `duet:` (the table in `docs/cluster.md`):
//!
//! | name | what |
//! |---|---|
//! | `duet:user:KEY` | string: the node id the user is connected to (KEY: the name's `Name::key`, so look-alikes share it) |
//! | `duet:resume:KEY` | string: the id of the latest resume token of a resumable user; outlives the user key by the resume window |
//! | `duet:node:NODE` | string: the node is alive |
//! | `duet:node:NODE:users` | set: the names on that node |
//! | `duet:nodes` | set: node ids |
//! | `duet:to:NODE` | channel: events for users on that node |
//! | `duet:presence` | channel: "NAME came / went" |

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::protocol::Name;

/// What follows a node's liveness key to make its user set's key.
pub const USERS_SUFFIX: &str = ":users";

/// The key and channel names of one node in one cluster.
pub struct Keys {
    /// `--redis-prefix`, so that several clusters can share one Redis.
    prefix: String,
    /// This node's id, for the keys and the channel that are its own.
    node: Arc<str>,
}

impl Keys {
    pub fn new(prefix: &str, node: Arc<str>) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            node,
        }
    }

    /// The key holding the id of the node `name` is connected to. Built from the name's
    /// key, so that look-alike names claim one key.
    pub fn user(&self, name: &Name) -> String {
        format!("{}user:{}", self.prefix, name.key())
    }

    /// The key holding the id of `name`'s latest resume token, while it is resumable.
    pub fn resume(&self, name: &Name) -> String {
        format!("{}resume:{}", self.prefix, name.key())
    }

    /// What precedes a node id in its liveness key (and its user set's key).
    pub fn node_prefix(&self) -> String {
        format!("{}node:", self.prefix)
    }

    /// The liveness key of node `node`.
    pub fn alive(&self, node: &str) -> String {
        format!("{}{node}", self.node_prefix())
    }

    /// The set of the names on node `node`.
    pub fn users_of(&self, node: &str) -> String {
        format!("{}{node}{USERS_SUFFIX}", self.node_prefix())
    }

    /// This node's liveness key.
    pub fn own_alive(&self) -> String {
        self.alive(&self.node)
    }

    /// The set of the names on this node.
    pub fn own_users(&self) -> String {
        self.users_of(&self.node)
    }

    /// The set of node ids, to find the user sets.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// What precedes a node id in the name of its channel.
    pub fn inbox_prefix(&self) -> String {
        format!("{}to:", self.prefix)
    }

    /// The channel node `node` receives its users' events on.
    pub fn inbox(&self, node: &str) -> String {
        format!("{}{node}", self.inbox_prefix())
    }

    /// This node's channel.
    pub fn own_inbox(&self) -> String {
        self.inbox(&self.node)
    }

    /// The channel every node receives presence on.
    pub fn presence(&self) -> String {
        format!("{}presence", self.prefix)
    }
}

/// A configured node label that cannot be part of key names.
#[derive(Debug, thiserror::Error)]
#[error(
    "--node-id {0:?}: use 1 to 40 letters, digits, '.', '_' or '-' \
     (it becomes part of Redis key names)"
)]
pub struct InvalidNodeId(String);

/// This node's id: the configured label (or the host name), then a random suffix that is
/// new on every start, so a restarted node is never taken for its previous life.
pub fn node_id(configured: Option<&str>) -> Result<String, InvalidNodeId> {
    let label = match configured {
        Some(id) => {
            if !valid_node_label(id) {
                return Err(InvalidNodeId(id.to_string()));
            }
            id.to_string()
        }
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| valid_node_label(h))
            .unwrap_or_else(|| "duet".into()),
    };
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(t.as_nanos());
    }
    Ok(format!("{label}-{:08x}", hasher.finish() as u32))
}

/// A `--node-id` label: short enough to leave room for the random suffix.
fn valid_node_label(id: &str) -> bool {
    id.len() <= 40 && valid_node_id(id)
}

/// A full node id as [`node_id`] makes them (label, `-`, 8 hex digits), or a bare label.
/// Node ids become parts of key and channel names: no `:` and nothing unprintable.
pub fn valid_node_id(id: &str) -> bool {
    id.len() <= 64
        && !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        let id = node_id(Some("eu-1")).expect("valid");
        assert!(
            id.starts_with("eu-1-") && id.len() == "eu-1-".len() + 8,
            "{id}"
        );
        assert_ne!(
            node_id(None).expect("default"),
            node_id(None).expect("default")
        );
        assert!(node_id(Some("a:b")).is_err());
        assert!(node_id(Some("")).is_err());
    }

    #[test]
    fn names_are_the_documented_ones() {
        let keys = Keys::new("duet:", "web-1".into());
        let name = Name::parse("Ä lice").expect("valid name");
        assert_eq!(keys.user(&name), "duet:user:ä lice");
        assert_eq!(keys.own_alive(), "duet:node:web-1");
        assert_eq!(keys.own_users(), "duet:node:web-1:users");
        assert_eq!(keys.nodes(), "duet:nodes");
        assert_eq!(keys.own_inbox(), "duet:to:web-1");
        assert_eq!(keys.presence(), "duet:presence");
    }
}
