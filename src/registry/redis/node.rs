//! This node's state in a cluster: its identity and timings, the link to Redis, and the
//! users connected here (their mailboxes, the call peers watched for them, names still
//! to free, remote users seen through presence). The background tasks live in
//! [`super::heartbeat`] and [`super::subscription`]; both work on a [`Node`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::Link;
use super::keys::Keys;
use super::lua::Scripts;
use super::outbox::Outbox;
use super::peers::Peers;
use crate::presence::Presence;
use crate::protocol::Name;
use crate::registry::mailbox::{Mailbox, fan_out_presence};

/// Shared by the registry handle and the background tasks.
pub struct Node {
    /// This node's id in Redis (see [`super::keys::node_id`]).
    pub id: Arc<str>,
    pub keys: Keys,
    /// How long names and liveness outlive the last heartbeat.
    pub lease: Duration,
    /// Heartbeat period: a quarter of the lease, so three heartbeats may fail in a row
    /// before anything expires.
    pub heartbeat: Duration,
    /// The presence policy, also applied to presence arriving from other nodes.
    pub presence: Presence,
    /// How long a resume key outlives its node's last refresh: the lease, then the
    /// resume window.
    pub resume_ttl: Duration,
    pub link: Link,
    local: Mutex<Local>,
    /// Users on the other live nodes, as of the last heartbeat.
    pub others_online: AtomicUsize,
    /// Set when this node's user set in Redis may hold stale names (after a reconnect or a
    /// failed release): the next heartbeat rebuilds it.
    pub rebuild: AtomicBool,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
    pub scripts: Scripts,
    /// Cross-node sends on their way to the batch task ([`super::outbox`]).
    pub outbox: Outbox,
}

/// State of the users connected to this node.
#[derive(Default)]
pub struct Local {
    pub users: HashMap<Name, Mailbox>,
    /// The call peer on another node of each local user in such a call.
    pub peers: Peers,
    /// Names released while Redis was unreachable; the heartbeat frees them.
    pub unreleased: HashSet<Name>,
    /// Local users that are resumable: the heartbeat refreshes their resume keys.
    pub resumable: HashSet<Name>,
    /// Remote users seen coming online through presence, by node: when a node dies
    /// without announcing its users' departure, they are announced offline from here.
    pub remote_present: HashMap<Arc<str>, HashSet<Name>>,
}

impl Local {
    /// `name` is no longer a user here: its mailbox, if still there, and its watch go.
    pub fn remove_user(&mut self, name: &Name) -> Option<Mailbox> {
        self.peers.forget(name);
        self.resumable.remove(name);
        self.users.remove(name)
    }

    /// A presence update from node `origin`, remembered so that its users can be announced
    /// offline should that node die.
    pub fn remote_presence(&mut self, origin: &str, name: &Name, online: bool) {
        let node: Arc<str> = origin.into();
        if online {
            self.remote_present
                .entry(node)
                .or_default()
                .insert(name.clone());
        } else if let Some(names) = self.remote_present.get_mut(&node) {
            names.remove(name);
            if names.is_empty() {
                self.remote_present.remove(&node);
            }
        }
    }
}

impl Node {
    pub fn new(
        id: Arc<str>,
        keys: Keys,
        lease: Duration,
        resume_window: Duration,
        presence: Presence,
        link: Link,
        outbox: Outbox,
    ) -> Node {
        Node {
            id,
            keys,
            lease,
            heartbeat: lease / 4,
            presence,
            resume_ttl: lease + resume_window,
            link,
            local: Mutex::default(),
            others_online: AtomicUsize::new(0),
            rebuild: AtomicBool::new(true),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            scripts: Scripts::new(),
            outbox,
        }
    }

    pub fn local(&self) -> MutexGuard<'_, Local> {
        // Every critical section leaves the maps consistent, so a poisoned lock is usable.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn online_count(&self) -> usize {
        self.local().users.len() + self.others_online.load(Relaxed)
    }

    /// The lease in milliseconds, as the scripts take it.
    pub fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// The resume keys' time to live in milliseconds.
    pub fn resume_ttl_ms(&self) -> u64 {
        u64::try_from(self.resume_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The longest wait between reconnect attempts.
    pub fn max_backoff(&self) -> Duration {
        self.heartbeat.min(Duration::from_secs(2))
    }

    /// Sleeps for `d`; false if the node is stopping meanwhile.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = sleep(d) => true,
        }
    }

    /// Delivers a presence update to every local user but `name`.
    pub fn present(&self, name: &Name, online: bool) {
        fan_out_presence(self.local().users.iter(), name, online);
    }
}
