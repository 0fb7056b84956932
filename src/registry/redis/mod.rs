//! The cluster registry: several duet nodes share one Redis to know who is online anywhere
//! and to route events between nodes. `docs/cluster.md` is the prose version of this
//! module.
//!
//! - A name is the key `{prefix}user:{name}`, holding the id of the node its connection is
//!   on. It is claimed with `SET NX PX lease` (so exactly one racing claim wins) and kept
//!   alive by the node's heartbeat, which refreshes all of the node's names in one pipeline.
//! - Each node keeps `{prefix}node:{id}` alive with the same lease and lists its users in
//!   the set `{prefix}node:{id}:users` (for the roster and the online count).
//! - Each node subscribes to its own channel `{prefix}to:{id}`. A send to a user on another
//!   node is one Lua script (look up the owner, publish to its channel), so `not-online`
//!   comes back at once; the sends of all sessions go in batches, one script call each
//!   (`outbox`); users on this node are reached directly, without Redis. Events
//!   from one sender to one receiver stay in order: a session awaits each send, and one
//!   command connection and one subscription carry them.
//! - A node that dies without warning stops refreshing: its names expire after the lease.
//!   Sessions tell the registry their call peer ([`RedisRegistry::set_peer`]); the
//!   heartbeat on every other node looks up the names of its users' remote peers and tells
//!   a user whose peer's name is gone (`leave`, reason `disconnected`).
//! - Every Redis call has a timeout. While Redis is unreachable, logins and cross-node
//!   sends fail with `unavailable`; a background task reconnects with backoff and
//!   re-asserts the names of the users still connected here.
//!
//! Files: `keys` (every key and channel name), `lua` (the scripts, `scripts/*.lua`),
//! `wire` (what nodes publish), `conn` (the connection, timeouts, backoff), `node` (this
//! node's state), `outbox` (cross-node sends, batched), `peers` (the watched call peers),
//! `heartbeat` and `subscription` (the two background tasks), `reply` (reading Redis
//! replies), `error`.

mod conn;
mod error;
mod heartbeat;
mod keys;
mod lua;
mod node;
mod outbox;
mod peers;
mod reply;
mod subscription;
// Public to the fuzz targets only (`cargo fuzz` sets `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod wire;
#[cfg(not(fuzzing))]
mod wire;

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ::redis::{Client, Value};
use anyhow::{Context as _, bail};
use tokio::time::timeout;
use tracing::{info, warn};

use self::conn::Link;
use self::error::Error;
use self::keys::{Keys, USERS_SUFFIX, node_id};
use self::node::Node;
use self::reply::{Sent, exact_name, sent, strings};
use crate::presence::Presence;
use crate::protocol::Name;
use crate::registry::TakeOver;
use crate::registry::mailbox::{ClaimError, Event, Mailbox, Roster, SendError};

/// A resume token id as kept in Redis.
fn token_id(id: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// What a cluster node needs to know, from the command line (`--redis-*`, `--node-id`,
/// `--presence-limit`).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--redis-url`: the Redis every node of the cluster shares.
    pub url: String,
    /// `--redis-lease`: how long names and liveness outlive the last heartbeat.
    pub lease: Duration,
    /// `--redis-prefix`: prefix of every key and channel.
    pub prefix: String,
    /// `--node-id`: this node's label; the host name when `None`.
    pub node_id: Option<String>,
    /// The presence policy, also applied to presence arriving from other nodes.
    pub presence: Presence,
    /// `--resume-window`: how long a resumable name stays held after its node stopped
    /// holding it (died, or shut down).
    pub resume_window: Duration,
}

/// The Redis-backed registry; a cheap handle to shared state and two background tasks
/// (heartbeat with reconnect and watchdog, and the subscription).
#[derive(Clone)]
pub struct RedisRegistry {
    node: Arc<Node>,
}

impl RedisRegistry {
    /// Connects to the Redis at `options.url` (waiting a few seconds at most: a node whose
    /// Redis is down starts anyway and keeps trying) and starts the background tasks.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<RedisRegistry> {
        let client = Client::open(options.url.as_str())
            .context("invalid --redis-url; expected e.g. redis://127.0.0.1:6379/")?;
        if options.lease < Duration::from_millis(400) {
            bail!("--redis-lease must be at least 400ms");
        }
        let id: Arc<str> = node_id(options.node_id.as_deref())?.into();
        let lease = options.lease;
        let op_timeout = (lease / 4).clamp(Duration::from_millis(500), Duration::from_secs(2));
        let (outbox, batches) = outbox::outbox();
        let node = Arc::new(Node::new(
            id.clone(),
            Keys::new(&options.prefix, id),
            lease,
            options.resume_window,
            options.presence,
            Link::new(client, op_timeout),
            outbox,
        ));
        info!(node = %node.id, lease = ?lease, "cluster mode: coordinating through redis");
        node.tasks.spawn(node.clone().maintain());
        node.tasks.spawn(node.clone().subscribe());
        node.tasks.spawn(node.clone().batch_sends(batches));
        let mut state = node.link.state.subscribe();
        let ready = timeout(op_timeout * 3, state.wait_for(|s| s.commands && s.pubsub)).await;
        if !matches!(ready, Ok(Ok(_))) {
            warn!("redis is not reachable yet; logins are refused until it is");
        }
        Ok(RedisRegistry { node })
    }

    /// Whether Redis is reachable (for `/healthz` and `/metrics`).
    pub fn connected(&self) -> bool {
        self.node.link.connected()
    }

    pub async fn claim(&self, name: &Name, mailbox: &Mailbox) -> Result<(), ClaimError> {
        self.claim_with(name, mailbox, None).await
    }

    /// Claims `name`; `held`: the token id of a resume hold on it this claim may pass.
    pub async fn claim_with(
        &self,
        name: &Name,
        mailbox: &Mailbox,
        held: Option<&[u8; 16]>,
    ) -> Result<(), ClaimError> {
        let node = &self.node;
        if node.local().users.contains_key(name) {
            return Err(ClaimError::Taken);
        }
        if !node.link.connected() {
            return Err(ClaimError::Unavailable(Error::Unreachable.to_string()));
        }
        let mut call = node.scripts.claim.prepare_invoke();
        call.key(node.keys.user(name))
            .key(node.keys.own_users())
            .key(node.keys.resume(name))
            .arg(&*node.id)
            .arg(node.lease_ms())
            .arg(name.as_str())
            .arg(held.map(token_id).unwrap_or_default());
        let claimed = node.link.invoke::<i64>("claim", call).await;
        let mut local = node.local();
        match claimed {
            Ok(1) => match local.users.entry(name.clone()) {
                // Another connection here claimed it a moment earlier: it holds the key.
                Entry::Occupied(_) => Err(ClaimError::Taken),
                Entry::Vacant(slot) => {
                    slot.insert(mailbox.clone());
                    local.unreleased.remove(name);
                    if held.is_some() {
                        local.resumable.insert(name.clone());
                    }
                    Ok(())
                }
            },
            Ok(2) => Err(ClaimError::Reserved),
            Ok(_) => Err(ClaimError::Taken),
            Err(e) => {
                // The claim may have gone through before the reply was lost: free it later
                // unless someone here holds it by then.
                if !local.users.contains_key(name) {
                    local.unreleased.insert(name.clone());
                }
                Err(ClaimError::Unavailable(e.to_string()))
            }
        }
    }

    /// Records `name`'s latest resume token id (see [`crate::registry::Registry::set_resumable`]).
    pub async fn set_resumable(&self, name: &Name, id: &[u8; 16]) {
        let node = &self.node;
        {
            let mut local = node.local();
            if !local.users.contains_key(name) {
                return;
            }
            local.resumable.insert(name.clone());
        }
        let key = node.keys.resume(name);
        let (value, ttl) = (token_id(id), node.resume_ttl_ms());
        // Best effort: without it the name is resumable on this node only, as before.
        if let Err(e) = node
            .link
            .call("set resume", |mut c| async move {
                ::redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
        {
            warn!(%name, error = %e, "cannot record the resume token in redis; the name resumes on this node only");
        }
    }

    /// See [`crate::registry::Registry::take_over`].
    pub async fn take_over(
        &self,
        name: &Name,
        old: &[u8; 16],
        new: &[u8; 16],
        mailbox: &Mailbox,
    ) -> Result<TakeOver, ClaimError> {
        let node = &self.node;
        if node.local().users.contains_key(name) {
            // Someone here has the name, and it is not resumable here (a seed login).
            return Err(ClaimError::Taken);
        }
        let mut call = node.scripts.takeover.prepare_invoke();
        call.key(node.keys.user(name))
            .key(node.keys.resume(name))
            .key(node.keys.own_users())
            .arg(&*node.id)
            .arg(node.lease_ms())
            .arg(token_id(old))
            .arg(token_id(new))
            .arg(name.as_str())
            .arg(node.resume_ttl_ms());
        let reply = node
            .link
            .invoke::<Value>("takeover", call)
            .await
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        let parts = match &reply {
            Value::Array(parts) => parts.as_slice(),
            _ => &[],
        };
        match parts.first().and_then(reply::int) {
            Some(1) => {}
            Some(0) => return Ok(TakeOver::NotHeld),
            Some(-1) => return Ok(TakeOver::Stale),
            _ => {
                return Err(ClaimError::Unavailable(
                    Error::UnexpectedReply {
                        what: "takeover",
                        reply: format!("{reply:?}"),
                    }
                    .to_string(),
                ));
            }
        }
        let owner = parts.get(1).and_then(reply::string).unwrap_or_default();
        {
            let mut local = node.local();
            local.users.insert(name.clone(), mailbox.clone());
            local.resumable.insert(name.clone());
            local.unreleased.remove(name);
        }
        if !owner.is_empty() && owner != &*node.id {
            // The old node, if alive, drops its session for the name (close 4000 there).
            let payload = wire::encode_dropped(&node.id, name);
            let _ = node
                .link
                .publish("dropped", node.keys.inbox(owner), payload)
                .await;
        }
        info!(%name, from = %owner, "resume taken over from another node");
        Ok(TakeOver::TookOver)
    }

    pub async fn release(&self, name: &Name, mailbox: &Mailbox, keep_resume: bool) {
        let node = &self.node;
        {
            let mut local = node.local();
            if !local
                .users
                .get(name)
                .is_some_and(|m| m.same_channel(mailbox))
            {
                return;
            }
            local.remove_user(name);
        }
        let mut call = node.scripts.release.prepare_invoke();
        call.key(node.keys.user(name))
            .key(node.keys.own_users())
            .key(node.keys.resume(name))
            .arg(&*node.id)
            .arg(name.as_str())
            .arg(if keep_resume { "1" } else { "0" });
        let released = node.link.invoke::<i64>("release", call).await;
        if released.is_err() {
            // The lease would free it eventually; the heartbeat frees it as soon as Redis
            // is back.
            let mut local = node.local();
            if !local.users.contains_key(name) {
                local.unreleased.insert(name.clone());
            }
            node.rebuild.store(true, Relaxed);
        }
    }

    /// Only the mailbox changes: the name stays claimed by this node in Redis, and the
    /// call peer watched for it stays watched.
    pub fn replace(&self, name: &Name, old: &Mailbox, new: &Mailbox) -> bool {
        match self.node.local().users.get_mut(name) {
            Some(mailbox) if mailbox.same_channel(old) => {
                *mailbox = new.clone();
                true
            }
            _ => false,
        }
    }

    pub async fn send(&self, to: &Name, event: Event) -> Result<(), SendError> {
        let node = &self.node;
        if let Some(mailbox) = node.local().users.get(to) {
            return Ok(mailbox.deliver(event)?);
        }
        let payload = wire::encode_event(&node.id, to, &event);
        let reply = node
            .send_batched(node.keys.user(to), payload)
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        let error = match sent(&reply) {
            Some(Sent::Published { owner }) => {
                // The peer's connection is on `owner`: where the watchdog looks for it.
                if let Event::Signal { from, .. } = &event {
                    node.local().peers.seen(from, to, owner);
                }
                return Ok(());
            }
            Some(Sent::NotOnline) => return Err(SendError::NotOnline),
            Some(Sent::NotListening { owner }) => Error::NotListening {
                node: owner.to_string(),
            },
            None => Error::UnexpectedReply {
                what: "send",
                reply: format!("{reply:?}"),
            },
        };
        Err(SendError::Unavailable(error.to_string()))
    }

    pub async fn is_online(&self, name: &Name) -> bool {
        let node = &self.node;
        if node.local().users.contains_key(name) {
            return true;
        }
        let key = node.keys.user(name);
        node.link
            .call("exists", |mut c| async move {
                ::redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .is_ok_and(|n| n > 0)
    }

    pub async fn roster(&self, except: &Name, limit: usize) -> Roster {
        let node = &self.node;
        let mut call = node.scripts.roster.prepare_invoke();
        // One more than the limit tells whether there are more; one more for `except`.
        call.key(node.keys.nodes())
            .arg(node.keys.node_prefix())
            .arg(USERS_SUFFIX)
            .arg(limit.saturating_add(2));
        let names: Vec<Name> = match node.link.invoke::<Value>("roster", call).await {
            Ok(reply) => strings(&reply)
                .iter()
                .filter_map(|s| exact_name(s))
                .collect(),
            // Better a partial list than none: the users on this node.
            Err(_) => node.local().users.keys().cloned().collect(),
        };
        Roster::collect(names, except, limit)
    }

    /// Delivers the update here and publishes it to the other nodes (the caller applied
    /// the policy).
    pub async fn announce(&self, name: &Name, online: bool) {
        let node = &self.node;
        node.present(name, online);
        if !node.link.state.borrow().commands {
            return;
        }
        let payload = wire::encode_presence(&node.id, name, online);
        // Presence is best-effort, as on one node: a failure only costs an update.
        let _ = node
            .link
            .publish("publish presence", node.keys.presence(), payload)
            .await;
    }

    pub fn presence(&self) -> Presence {
        self.node.presence
    }

    /// `me`'s call peer is now `peer` (`None`: no call). A peer on another node is
    /// watched, so that `me` hears `leave` if that node dies (see `peers.rs`).
    pub fn set_peer(&self, me: &Name, peer: Option<&Name>) {
        let mut local = self.node.local();
        // Only users connected here are watched for (`release` forgets them).
        if !local.users.contains_key(me) {
            return;
        }
        let here = peer.is_some_and(|p| local.users.contains_key(p));
        local.peers.set(me, peer, here);
    }

    /// Users online on every live node (the other nodes' count is as of the last heartbeat).
    pub fn online_count(&self) -> usize {
        self.node.online_count()
    }

    /// Stops the background tasks and removes this node and its names from Redis.
    pub async fn shutdown(&self) {
        let node = &self.node;
        node.stop.cancel();
        node.tasks.close();
        let _ = timeout(node.link.op_timeout, node.tasks.wait()).await;
        let mut keys = vec![
            node.keys.own_alive(),
            node.keys.own_users(),
            node.keys.nodes(),
        ];
        {
            let local = node.local();
            let names = local.users.keys().chain(local.unreleased.iter());
            keys.extend(names.map(|name| node.keys.user(name)));
        }
        let cmd = lua::eval(lua::SHUTDOWN, &keys, &[&node.id]);
        match node
            .link
            .call("shutdown", |mut c| async move {
                cmd.query_async::<i64>(&mut c).await
            })
            .await
        {
            Ok(_) => info!(node = %node.id, "left the cluster"),
            Err(e) => warn!(node = %node.id, error = %e,
                "could not leave the cluster cleanly; names free themselves within the lease"),
        }
    }
}
