//! The cluster registry: several duet nodes share one Redis to know who is online anywhere
//! and to route events between nodes. `docs/cluster.md` is the prose version of this file.
//!
//! - A name is the key `{prefix}user:{name}`, holding the id of the node its connection is
//!   on. It is claimed with `SET NX PX lease` (so exactly one racing claim wins) and kept
//!   alive by the node's heartbeat, which refreshes all of the node's names in one pipeline.
//! - Each node keeps `{prefix}node:{id}` alive with the same lease and lists its users in
//!   the set `{prefix}node:{id}:users` (for the roster and the online count).
//! - Each node subscribes to its own channel `{prefix}to:{id}`. A send to a user on another
//!   node is one Lua script (look up the owner, publish to its channel), so `not-online`
//!   comes back at once; users on this node are reached directly, without Redis. Events
//!   from one sender to one receiver stay in order: a session awaits each send, and one
//!   command connection and one subscription carry them.
//! - A node that dies without warning stops refreshing: its names expire after the lease,
//!   and a watchdog on every other node tells local users whose call peer was on that node
//!   (`leave`, reason `disconnected`) once its liveness key is gone.
//! - Every Redis call has a timeout. While Redis is unreachable, logins and cross-node
//!   sends fail with `unavailable`; a background task reconnects with backoff and
//!   re-asserts the names of the users still connected here.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, Script, Value};
use anyhow::{Context as _, bail};
use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{ClaimError, DeliverError, Event, Mailbox, Roster, SendError};
use crate::config::Config;
use crate::presence::Presence;
use crate::protocol::{self, ErrorCode, LeaveReason, Name, SignalKind, presence_frame};

/// Remote users remembered per local user as possible call peers (see [`Local::links`]).
/// A call has one peer; the rest is room for strangers' offers that were refused.
const LINKS_PER_USER: usize = 8;

/// Names refreshed per heartbeat script, so one script never blocks Redis for long.
const HEARTBEAT_CHUNK: usize = 500;

/// First reconnect delay; doubled on each failure up to [`Inner::max_backoff`].
const BACKOFF_START: Duration = Duration::from_millis(100);

/// Claims `KEYS[1]` (the user key) for node `ARGV[1]` unless another node holds it. A key
/// held by this very node is stale (the caller checked the name is not in use here: it is
/// left over from a release that could not reach Redis) and is taken over.
const CLAIM_LUA: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// Frees `KEYS[1]` if node `ARGV[1]` still holds it, and drops the name from the node's set.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

/// A cross-node send in one round trip: `{0}` not online, `{1, owner}` published to the
/// owner's node, `{2, owner}` the owner's node is alive but not subscribed right now.
const SEND_LUA: &str = r"
local owner = redis.call('GET', KEYS[1])
if not owner then return {0} end
if redis.call('PUBLISH', ARGV[1] .. 'to:' .. owner, ARGV[2]) > 0 then return {1, owner} end
if redis.call('EXISTS', ARGV[1] .. 'node:' .. owner) == 1 then return {2, owner} end
return {0}
";

/// Up to `ARGV[2]` names from the live nodes' user sets; forgets nodes that are gone.
const ROSTER_LUA: &str = r"
local P, want = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'node:' .. id) == 0 then
    redis.call('SREM', P .. 'nodes', id)
  elseif #out < want then
    for _, n in ipairs(redis.call('SRANDMEMBER', P .. 'node:' .. id .. ':users', want - #out)) do
      out[#out + 1] = n
    end
  end
end
return out
";

/// One heartbeat chunk: keeps node `ARGV[2]` alive, refreshes the leases of the names
/// `ARGV[5..]`, re-asserts those that vanished (Redis restarted or the lease ran out while
/// unreachable) and reports those another node took meanwhile. `ARGV[4] == '1'` rebuilds
/// the node's user set first. Returns `{lost, reasserted}`.
const HEARTBEAT_LUA: &str = r"
local P, node, lease = ARGV[1], ARGV[2], ARGV[3]
local set = P .. 'node:' .. node .. ':users'
redis.call('SET', P .. 'node:' .. node, '1', 'PX', lease)
redis.call('SADD', P .. 'nodes', node)
if ARGV[4] == '1' then redis.call('DEL', set) end
local lost, reasserted = {}, {}
for i = 5, #ARGV do
  local name = ARGV[i]
  local key = P .. 'user:' .. name
  local owner = redis.call('GET', key)
  if owner == node then
    redis.call('PEXPIRE', key, lease)
    redis.call('SADD', set, name)
  elseif owner then
    lost[#lost + 1] = name
    redis.call('SREM', set, name)
  else
    redis.call('SET', key, node, 'PX', lease)
    redis.call('SADD', set, name)
    reasserted[#reasserted + 1] = name
  end
end
if redis.call('EXISTS', set) == 1 then redis.call('PEXPIRE', set, lease) end
return {lost, reasserted}
";

/// Users on the live nodes other than `ARGV[2]`.
const COUNT_LUA: &str = r"
local P, me = ARGV[1], ARGV[2]
local total = 0
for _, id in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if id ~= me then
    if redis.call('EXISTS', P .. 'node:' .. id) == 1 then
      total = total + redis.call('SCARD', P .. 'node:' .. id .. ':users')
    else
      redis.call('SREM', P .. 'nodes', id)
    end
  end
end
return total
";

/// Graceful shutdown: frees the names `ARGV[3..]` still held by node `ARGV[2]` and removes
/// the node, so nothing waits for a lease to run out.
const SHUTDOWN_LUA: &str = r"
local P, node = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  local key = P .. 'user:' .. ARGV[i]
  if redis.call('GET', key) == node then redis.call('DEL', key) end
end
redis.call('DEL', P .. 'node:' .. node, P .. 'node:' .. node .. ':users')
redis.call('SREM', P .. 'nodes', node)
return 1
";

/// The Redis-backed registry; a cheap handle to shared state and two background tasks
/// (heartbeat with reconnect and watchdog, and the subscription).
#[derive(Clone)]
pub struct RedisRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's id in Redis: `--node-id` (or the host name) plus a random suffix that
    /// is new on every start, so a restarted node is never taken for its previous life.
    node: Arc<str>,
    /// Prefix of every key and channel (`--redis-prefix`).
    prefix: String,
    client: Client,
    /// How long names and liveness outlive the last heartbeat.
    lease: Duration,
    /// Heartbeat period: a quarter of the lease, so three heartbeats may fail in a row
    /// before anything expires.
    heartbeat: Duration,
    /// Limit on every Redis call, so that no session ever hangs on Redis.
    op_timeout: Duration,
    /// The presence policy, also applied to presence arriving from other nodes.
    presence: Presence,
    /// The command connection; `None` while Redis is unreachable (calls then fail at once).
    conn: Mutex<Option<Conn>>,
    /// Numbers connections, so a failure on an old one does not drop a newer one.
    next_gen: AtomicU64,
    local: Mutex<Local>,
    /// Users on the other live nodes, as of the last heartbeat.
    others_online: AtomicUsize,
    state: watch::Sender<LinkState>,
    /// Set when this node's user set in Redis may hold stale names (after a reconnect or a
    /// failed release): the next heartbeat rebuilds it.
    rebuild: AtomicBool,
    /// Wakes the heartbeat task early, to reconnect as soon as a call found Redis gone.
    wake: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
    claim: Script,
    release: Script,
    send: Script,
    roster: Script,
}

/// The command connection and its generation.
struct Conn {
    generation: u64,
    conn: MultiplexedConnection,
}

/// What is known about the link to Redis.
#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    /// The command connection is up and the heartbeat after connecting succeeded (so the
    /// names of local users are asserted again).
    commands: bool,
    /// The subscription to this node's channel is up.
    pubsub: bool,
    /// When the command connection was last established. Other nodes may still be
    /// reconnecting shortly after (Redis restarted): their liveness keys are not trusted
    /// to be absent until a lease after this.
    since: Option<Instant>,
}

/// State of the users connected to this node.
#[derive(Default)]
struct Local {
    users: HashMap<Name, Mailbox>,
    /// For each local user, the remote users it exchanged offers or answers with, and their
    /// node: whom to tell "your peer left" when that node dies. Only call set-up is seen
    /// here (call state lives in the session), so this may hold more than the call peer;
    /// a `leave` from someone who is not the peer is ignored by the session.
    links: HashMap<Name, VecDeque<(Name, Arc<str>)>>,
    /// Names released while Redis was unreachable; the heartbeat frees them.
    unreleased: HashSet<Name>,
    /// Remote users seen coming online through presence, by node: when a node dies
    /// without announcing its users' departure, they are announced offline from here.
    remote_present: HashMap<Arc<str>, HashSet<Name>>,
}

impl RedisRegistry {
    /// Connects to the Redis at `url` (waiting a few seconds at most: a node whose Redis is
    /// down starts anyway and keeps trying) and starts the background tasks.
    pub async fn start(url: &str, config: &Config) -> anyhow::Result<RedisRegistry> {
        let client = Client::open(url)
            .context("invalid --redis-url; expected e.g. redis://127.0.0.1:6379/")?;
        if config.redis_lease < Duration::from_millis(400) {
            bail!("--redis-lease must be at least 400ms");
        }
        let node = node_id(config.node_id.as_deref())?;
        let lease = config.redis_lease;
        let heartbeat = lease / 4;
        let inner = Arc::new(Inner {
            node: node.into(),
            prefix: config.redis_prefix.clone(),
            client,
            lease,
            heartbeat,
            op_timeout: heartbeat.clamp(Duration::from_millis(500), Duration::from_secs(2)),
            presence: Presence::new(config.presence_limit),
            conn: Mutex::new(None),
            next_gen: AtomicU64::new(0),
            local: Mutex::default(),
            others_online: AtomicUsize::new(0),
            state: watch::Sender::new(LinkState::default()),
            rebuild: AtomicBool::new(true),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            claim: Script::new(CLAIM_LUA),
            release: Script::new(RELEASE_LUA),
            send: Script::new(SEND_LUA),
            roster: Script::new(ROSTER_LUA),
        });
        info!(node = %inner.node, lease = ?lease, "cluster mode: coordinating through redis");
        inner.tasks.spawn(inner.clone().maintain());
        inner.tasks.spawn(inner.clone().subscribe());
        let mut state = inner.state.subscribe();
        let ready = timeout(
            inner.op_timeout * 3,
            state.wait_for(|s| s.commands && s.pubsub),
        )
        .await;
        if !matches!(ready, Ok(Ok(_))) {
            warn!("redis is not reachable yet; logins are refused until it is");
        }
        Ok(RedisRegistry { inner })
    }

    /// Whether Redis is reachable (for `/healthz` and `/metrics`).
    pub fn connected(&self) -> bool {
        self.inner.connected()
    }

    pub async fn claim(&self, name: &Name, mailbox: &Mailbox) -> Result<(), ClaimError> {
        let inner = &self.inner;
        if inner.local().users.contains_key(name) {
            return Err(ClaimError::Taken);
        }
        if !inner.connected() {
            return Err(ClaimError::Unavailable("redis is unreachable".into()));
        }
        let mut call = inner.claim.prepare_invoke();
        call.key(inner.user_key(name))
            .key(inner.users_key())
            .arg(&*inner.node)
            .arg(lease_ms(inner.lease))
            .arg(name.as_str());
        let claimed = inner
            .call("claim", |mut c| async move {
                call.invoke_async::<i64>(&mut c).await
            })
            .await;
        let mut local = inner.local();
        match claimed {
            Ok(1) => match local.users.entry(name.clone()) {
                // Another connection here claimed it a moment earlier: it holds the key.
                Entry::Occupied(_) => Err(ClaimError::Taken),
                Entry::Vacant(slot) => {
                    slot.insert(mailbox.clone());
                    local.unreleased.remove(name);
                    Ok(())
                }
            },
            Ok(_) => Err(ClaimError::Taken),
            Err(reason) => {
                // The claim may have gone through before the reply was lost: free it later
                // unless someone here holds it by then.
                if !local.users.contains_key(name) {
                    local.unreleased.insert(name.clone());
                }
                Err(ClaimError::Unavailable(reason))
            }
        }
    }

    pub async fn release(&self, name: &Name, mailbox: &Mailbox) {
        let inner = &self.inner;
        {
            let mut local = inner.local();
            if !local
                .users
                .get(name)
                .is_some_and(|m| m.same_channel(mailbox))
            {
                return;
            }
            local.users.remove(name);
            local.links.remove(name);
        }
        let mut call = inner.release.prepare_invoke();
        call.key(inner.user_key(name))
            .key(inner.users_key())
            .arg(&*inner.node)
            .arg(name.as_str());
        let released = inner
            .call("release", |mut c| async move {
                call.invoke_async::<i64>(&mut c).await
            })
            .await;
        if released.is_err() {
            // The lease would free it eventually; the heartbeat frees it as soon as Redis
            // is back.
            let mut local = inner.local();
            if !local.users.contains_key(name) {
                local.unreleased.insert(name.clone());
            }
            inner.rebuild.store(true, Relaxed);
        }
    }

    pub async fn send(&self, to: &Name, event: Event) -> Result<(), SendError> {
        let inner = &self.inner;
        {
            let local = inner.local();
            if let Some(mailbox) = local.users.get(to) {
                return mailbox.deliver(event).map_err(|e| match e {
                    DeliverError::Gone => SendError::NotOnline,
                    DeliverError::Full => SendError::Full,
                });
            }
        }
        let payload = wire::encode_event(&inner.node, to, &event);
        let mut call = inner.send.prepare_invoke();
        call.key(inner.user_key(to)).arg(&inner.prefix).arg(payload);
        let reply = inner
            .call("send", |mut c| async move {
                call.invoke_async::<Value>(&mut c).await
            })
            .await
            .map_err(SendError::Unavailable)?;
        let (code, owner) = send_reply(&reply);
        match (code, owner) {
            (1, Some(owner)) => {
                inner.note_outgoing(to, &event, owner);
                Ok(())
            }
            (2, Some(owner)) => Err(SendError::Unavailable(format!(
                "node {owner} is alive but not listening to redis"
            ))),
            (0, _) => Err(SendError::NotOnline),
            _ => Err(SendError::Unavailable(format!(
                "unexpected reply from redis: {reply:?}"
            ))),
        }
    }

    pub async fn is_online(&self, name: &Name) -> bool {
        let inner = &self.inner;
        if inner.local().users.contains_key(name) {
            return true;
        }
        let key = inner.user_key(name);
        inner
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
        let inner = &self.inner;
        let mut call = inner.roster.prepare_invoke();
        // One more than the limit tells whether there are more; one more for `except`.
        call.arg(&inner.prefix).arg(limit.saturating_add(2));
        let names: Vec<Name> = match inner
            .call("roster", |mut c| async move {
                call.invoke_async::<Value>(&mut c).await
            })
            .await
        {
            Ok(reply) => strings(&reply)
                .iter()
                .filter_map(|s| exact_name(s))
                .collect(),
            // Better a partial list than none: the users on this node.
            Err(_) => inner.local().users.keys().cloned().collect(),
        };
        let mut roster = Roster::default();
        let mut seen = HashSet::new();
        for name in names {
            if name == *except || !seen.insert(name.clone()) {
                continue;
            }
            if roster.users.len() == limit {
                roster.truncated = true;
                break;
            }
            roster.users.push(name);
        }
        roster
    }

    /// Delivers the update here and publishes it to the other nodes (the caller applied
    /// the policy).
    pub async fn announce(&self, name: &Name, online: bool) {
        let inner = &self.inner;
        inner.present(name, online);
        if !inner.state.borrow().commands {
            return;
        }
        let channel = inner.presence_channel();
        let payload = wire::encode_presence(&inner.node, name, online);
        // Presence is best-effort, as on one node: a failure only costs an update.
        let _ = inner.publish("publish presence", channel, payload).await;
    }

    pub fn presence(&self) -> Presence {
        self.inner.presence
    }

    /// `me`'s call peer changed. Not used yet: the watchdog still learns peers from
    /// traffic (`note`).
    pub fn set_peer(&self, _me: &Name, _peer: Option<&Name>) {}

    /// Users online on every live node (the other nodes' count is as of the last heartbeat).
    pub fn online_count(&self) -> usize {
        self.inner.online_count()
    }

    /// Stops the background tasks and removes this node and its names from Redis.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        inner.tasks.close();
        let _ = timeout(inner.op_timeout, inner.tasks.wait()).await;
        let names: Vec<Name> = {
            let local = inner.local();
            local
                .users
                .keys()
                .chain(local.unreleased.iter())
                .cloned()
                .collect()
        };
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(SHUTDOWN_LUA)
            .arg(0)
            .arg(&inner.prefix)
            .arg(&*inner.node);
        for name in &names {
            cmd.arg(name.as_str());
        }
        match inner
            .call("shutdown", |mut c| async move {
                cmd.query_async::<i64>(&mut c).await
            })
            .await
        {
            Ok(_) => info!(node = %inner.node, "left the cluster"),
            Err(e) => warn!(node = %inner.node, error = %e,
                "could not leave the cluster cleanly; names free themselves within the lease"),
        }
    }
}

impl Inner {
    fn local(&self) -> MutexGuard<'_, Local> {
        // Every critical section leaves the maps consistent, so a poisoned lock is usable.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self) -> bool {
        let s = self.state.borrow();
        s.commands && s.pubsub
    }

    fn online_count(&self) -> usize {
        self.local().users.len() + self.others_online.load(Relaxed)
    }

    fn user_key(&self, name: &Name) -> String {
        format!("{}user:{}", self.prefix, name.as_str())
    }

    fn users_key(&self) -> String {
        format!("{}node:{}:users", self.prefix, self.node)
    }

    fn alive_key(&self, node: &str) -> String {
        format!("{}node:{}", self.prefix, node)
    }

    fn inbox_channel(&self) -> String {
        format!("{}to:{}", self.prefix, self.node)
    }

    fn presence_channel(&self) -> String {
        format!("{}presence", self.prefix)
    }

    fn max_backoff(&self) -> Duration {
        self.heartbeat.min(Duration::from_secs(2))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map(|c| (c.generation, c.conn.clone()))
    }

    /// Runs one Redis call on the command connection, within [`Inner::op_timeout`]. Fails
    /// at once while Redis is known to be unreachable.
    /// `PUBLISH channel payload`; returns how many subscribers received it.
    async fn publish(
        &self,
        what: &'static str,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<i64, String> {
        self.call(what, |mut c| async move {
            ::redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
    }

    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, String>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some((generation, conn)) = self.current() else {
            return Err("redis is unreachable".into());
        };
        match timeout(self.op_timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    self.lost(generation, what, &e.to_string());
                } else {
                    warn!(what, error = %e, "redis call failed");
                }
                Err(format!("redis {what} failed: {e}"))
            }
            Err(_) => {
                self.lost(generation, what, "timed out");
                Err(format!(
                    "redis {what} timed out after {:?}",
                    self.op_timeout
                ))
            }
        }
    }

    /// Drops connection `generation` after a failure, unless it was replaced already.
    fn lost(&self, generation: u64, what: &str, error: &str) {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|c| c.generation == generation) {
            *slot = None;
            drop(slot);
            warn!(what, error, "redis connection lost; reconnecting");
            self.state.send_modify(|s| s.commands = false);
            self.wake.notify_one();
        }
    }

    /// Keeps the command connection up and runs the heartbeat and the watchdog.
    async fn maintain(self: Arc<Self>) {
        let mut backoff = BACKOFF_START;
        let mut failing = false;
        loop {
            if self.current().is_none() {
                let connected = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    r = self.connect() => r,
                };
                if let Err(e) = connected {
                    if !failing {
                        warn!(error = %e, "cannot connect to redis; retrying with backoff");
                        failing = true;
                    } else {
                        debug!(error = %e, ?backoff, "redis still unreachable");
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.max_backoff());
                    continue;
                }
                failing = false;
                backoff = BACKOFF_START;
            }
            if let Err(e) = self.beat().await {
                debug!(error = %e, "heartbeat failed");
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = sleep(self.heartbeat) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn connect(&self) -> RedisResult<()> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout));
        let conn = match timeout(
            self.op_timeout * 2,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to redis timed out",
                )));
            }
        };
        let generation = self.next_gen.fetch_add(1, Relaxed) + 1;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(Conn { generation, conn });
        self.rebuild.store(true, Relaxed);
        self.state.send_modify(|s| s.since = Some(Instant::now()));
        Ok(())
    }

    /// One heartbeat: frees names whose release failed, refreshes (or re-asserts) every
    /// local name and this node's liveness, counts the other nodes' users, and checks that
    /// the nodes of remote call peers are alive. One pipeline, one round trip.
    async fn beat(&self) -> Result<(), String> {
        let (names, unreleased, watched) = {
            let local = self.local();
            let watched: HashSet<Arc<str>> = local
                .links
                .values()
                .flatten()
                .map(|(_, node)| node.clone())
                .chain(local.remote_present.keys().cloned())
                .collect();
            (
                local.users.keys().cloned().collect::<Vec<_>>(),
                local.unreleased.iter().cloned().collect::<Vec<_>>(),
                watched.into_iter().collect::<Vec<_>>(),
            )
        };
        let rebuild = self.rebuild.swap(false, Relaxed);
        let lease = lease_ms(self.lease);
        let mut pipe = ::redis::pipe();
        for name in &unreleased {
            pipe.cmd("EVAL")
                .arg(RELEASE_LUA)
                .arg(2)
                .arg(self.user_key(name))
                .arg(self.users_key())
                .arg(&*self.node)
                .arg(name.as_str())
                .ignore();
        }
        let chunks: Vec<&[Name]> = if names.is_empty() {
            vec![&[]]
        } else {
            names.chunks(HEARTBEAT_CHUNK).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            pipe.cmd("EVAL")
                .arg(HEARTBEAT_LUA)
                .arg(0)
                .arg(&self.prefix)
                .arg(&*self.node)
                .arg(lease)
                .arg(if i == 0 && rebuild { "1" } else { "0" });
            for name in *chunk {
                pipe.arg(name.as_str());
            }
        }
        pipe.cmd("EVAL")
            .arg(COUNT_LUA)
            .arg(0)
            .arg(&self.prefix)
            .arg(&*self.node);
        for node in &watched {
            pipe.cmd("EXISTS").arg(self.alive_key(node));
        }
        let result = self
            .call("heartbeat", |mut c| async move {
                pipe.query_async::<Vec<Value>>(&mut c).await
            })
            .await;
        let replies = match result {
            Ok(replies) if replies.len() == chunks.len() + 1 + watched.len() => replies,
            Ok(replies) => {
                self.rebuild.fetch_or(rebuild, Relaxed);
                return Err(format!("unexpected heartbeat reply: {replies:?}"));
            }
            Err(e) => {
                self.rebuild.fetch_or(rebuild, Relaxed);
                return Err(e);
            }
        };

        let mut lost = Vec::new();
        let mut reasserted = Vec::new();
        for reply in &replies[..chunks.len()] {
            if let Value::Array(parts) = reply
                && let [l, r] = parts.as_slice()
            {
                lost.extend(strings(l).iter().filter_map(|s| exact_name(s)));
                reasserted.extend(strings(r).iter().filter_map(|s| exact_name(s)));
            }
        }
        let others = int(&replies[chunks.len()]).unwrap_or(0);
        self.others_online
            .store(usize::try_from(others).unwrap_or(0), Relaxed);
        let dead: HashSet<Arc<str>> = watched
            .into_iter()
            .zip(&replies[chunks.len() + 1..])
            .filter(|(_, exists)| int(exists) == Some(0))
            .map(|(node, _)| node)
            .collect();
        self.after_beat(&unreleased, &lost, &reasserted, dead);

        let was = self.state.borrow().commands;
        if !was {
            self.state.send_modify(|s| s.commands = true);
            info!(node = %self.node, reasserted = reasserted.len(), "redis connected");
        }
        Ok(())
    }

    /// Applies what a heartbeat found to the local state.
    fn after_beat(
        &self,
        unreleased: &[Name],
        lost: &[Name],
        reasserted: &[Name],
        dead: HashSet<Arc<str>>,
    ) {
        let grace_over = self
            .state
            .borrow()
            .since
            .is_some_and(|since| since.elapsed() >= self.lease);
        let mut local = self.local();
        for name in unreleased {
            local.unreleased.remove(name);
        }
        for name in lost {
            // Another node took the name while this one could not refresh it (cut off from
            // Redis for longer than the lease). Two connections must not share a name:
            // close ours (1013, try again later); the client can log in again.
            if let Some(mailbox) = local.users.remove(name) {
                warn!(%name, "name taken over by another node while redis was unreachable; disconnecting its user here");
                mailbox.kick.cancel();
                local.links.remove(name);
            }
        }
        for name in reasserted {
            // Released between the heartbeat's snapshot and its run: free it again.
            if !local.users.contains_key(name) {
                local.unreleased.insert(name.clone());
            }
        }
        if dead.is_empty() || !grace_over {
            return;
        }
        let mut gone = Vec::new();
        for (name, links) in local.links.iter_mut() {
            links.retain(|(peer, node)| {
                let alive = !dead.contains(node);
                if !alive {
                    gone.push((name.clone(), peer.clone()));
                }
                alive
            });
        }
        local.links.retain(|_, links| !links.is_empty());
        for node in &dead {
            warn!(node = %node, "node stopped refreshing its lease; telling its users' call peers here");
        }
        for (name, peer) in gone {
            if let Some(mailbox) = local.users.get(&name) {
                let _ = mailbox.deliver(peer_left(&peer));
            }
        }
        let departed: Vec<Name> = dead
            .iter()
            .filter_map(|node| local.remote_present.remove(node))
            .flatten()
            .collect();
        drop(local);
        for name in departed {
            self.present(&name, false);
        }
    }

    /// Keeps this node subscribed to its channel and to presence, reconnecting with backoff.
    async fn subscribe(self: Arc<Self>) {
        let mut backoff = BACKOFF_START;
        let mut failing = false;
        let inbox = self.inbox_channel();
        let presence = self.presence_channel();
        loop {
            let connect = async {
                let mut pubsub = timeout(self.op_timeout * 2, self.client.get_async_pubsub())
                    .await
                    .map_err(|_| "connecting timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                for channel in [&inbox, &presence] {
                    timeout(self.op_timeout, pubsub.subscribe(channel))
                        .await
                        .map_err(|_| "subscribing timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(pubsub)
            };
            let pubsub = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = connect => r,
            };
            let pubsub = match pubsub {
                Ok(p) => p,
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "cannot subscribe on redis; retrying with backoff");
                        failing = true;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.max_backoff());
                    continue;
                }
            };
            failing = false;
            backoff = BACKOFF_START;
            self.state.send_modify(|s| s.pubsub = true);
            debug!(channel = %inbox, "subscribed");
            let (mut sink, mut stream) = pubsub.split();
            // A ping now and then finds a connection that hangs without closing.
            let mut ping =
                tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    msg = stream.next() => match msg {
                        Some(msg) => self.on_message(msg.get_payload_bytes()),
                        None => break,
                    },
                    _ = ping.tick() => {
                        if !matches!(timeout(self.op_timeout, sink.ping::<Value>()).await, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            self.state.send_modify(|s| s.pubsub = false);
            warn!("redis subscription lost; resubscribing");
            // Redis restarted or went away: the command connection is most likely dead
            // too, and would only say so on its next use. Replace it now, so that the
            // node reports connected again only after a fresh heartbeat has re-asserted
            // its names.
            if let Some((generation, _)) = self.current() {
                self.lost(generation, "subscription", "subscription lost");
            }
        }
    }

    /// Handles one message published to this node.
    fn on_message(self: &Arc<Self>, payload: &[u8]) {
        let message = match wire::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "ignoring a malformed message from redis");
                return;
            }
        };
        match message {
            wire::Message::Presence {
                origin,
                name,
                online,
            } => {
                if *origin != *self.node {
                    let mut local = self.local();
                    let node: Arc<str> = origin.as_str().into();
                    if online {
                        local
                            .remote_present
                            .entry(node)
                            .or_default()
                            .insert(name.clone());
                    } else if let Some(names) = local.remote_present.get_mut(&node) {
                        names.remove(&name);
                        if names.is_empty() {
                            local.remote_present.remove(&node);
                        }
                    }
                }
                // Our own announcements were delivered here already.
                if *origin != *self.node && self.presence.is_on(self.online_count()) {
                    self.present(&name, online);
                }
            }
            wire::Message::Event { origin, to, event } => {
                let origin: Arc<str> = origin.into();
                let outcome = {
                    let mut local = self.local();
                    note(&mut local, &to, &event, &origin);
                    match local.users.get(&to) {
                        Some(mailbox) => mailbox.deliver(event.clone()),
                        None => Err(DeliverError::Gone),
                    }
                };
                if let Err(e) = outcome {
                    self.bounce(origin, &to, &event, e);
                }
            }
        }
    }

    /// Tells the sender on `origin` that `event` could not be delivered to `to` (the
    /// sender was told "sent" before the receiver was found gone or too slow), as the
    /// session would have been told synchronously on one node.
    fn bounce(self: &Arc<Self>, origin: Arc<str>, to: &Name, event: &Event, e: DeliverError) {
        let Event::Signal { from, kind, .. } = event else {
            return;
        };
        if *kind == SignalKind::Leave {
            return;
        }
        let code = match e {
            DeliverError::Gone => ErrorCode::NotOnline,
            DeliverError::Full => ErrorCode::DeliveryFailed,
        };
        let bounce = Event::Bounce {
            from: to.clone(),
            code,
            request: *kind,
        };
        let payload = wire::encode_event(&self.node, from, &bounce);
        let channel = format!("{}to:{}", self.prefix, origin);
        let this = self.clone();
        self.tasks.spawn(async move {
            let _ = this.publish("bounce", channel, payload).await;
        });
    }

    /// Delivers a presence update to every local user but `name`.
    fn present(&self, name: &Name, online: bool) {
        let frame = Utf8Bytes::from(presence_frame(name, online));
        let local = self.local();
        for (other, mailbox) in &local.users {
            if other != name {
                // A full mailbox kicks its slow owner; presence is best-effort by nature.
                let _ = mailbox.deliver(Event::Notice(frame.clone()));
            }
        }
    }

    /// Remembers (or forgets) the remote peer of a local sender after a cross-node send.
    fn note_outgoing(&self, to: &Name, event: &Event, owner: &str) {
        let Event::Signal { from, kind, .. } = event else {
            return;
        };
        let mut local = self.local();
        if !local.users.contains_key(from) {
            return;
        }
        match kind {
            SignalKind::Offer | SignalKind::Answer => link(&mut local, from, to, owner.into()),
            SignalKind::Leave => unlink(&mut local, from, to),
            SignalKind::Candidate => {}
        }
    }
}

/// Remembers (or forgets) the remote sender of an event arriving for local user `to`.
fn note(local: &mut Local, to: &Name, event: &Event, origin: &Arc<str>) {
    let Event::Signal { from, kind, .. } = event else {
        return;
    };
    if !local.users.contains_key(to) {
        return;
    }
    match kind {
        SignalKind::Offer | SignalKind::Answer => link(local, to, from, origin.clone()),
        SignalKind::Leave => unlink(local, to, from),
        SignalKind::Candidate => {}
    }
}

fn link(local: &mut Local, name: &Name, peer: &Name, node: Arc<str>) {
    let links = local.links.entry(name.clone()).or_default();
    links.retain(|(p, _)| p != peer);
    if links.len() == LINKS_PER_USER {
        links.pop_front();
    }
    links.push_back((peer.clone(), node));
}

fn unlink(local: &mut Local, name: &Name, peer: &Name) {
    if let Some(links) = local.links.get_mut(name) {
        links.retain(|(p, _)| p != peer);
        if links.is_empty() {
            local.links.remove(name);
        }
    }
}

/// The `leave` a local user gets when `peer`'s node died.
fn peer_left(peer: &Name) -> Event {
    let frame = protocol::leave_frame(
        &protocol::json_string(peer.as_str()),
        LeaveReason::Disconnected,
    );
    Event::Signal {
        from: peer.clone(),
        kind: SignalKind::Leave,
        reason: Some(LeaveReason::Disconnected),
        frame: frame.into(),
    }
}

/// This node's id: the configured label (or the host name), then a random suffix.
fn node_id(configured: Option<&str>) -> anyhow::Result<String> {
    let label = match configured {
        Some(id) => {
            if !valid_node_label(id) {
                bail!(
                    "--node-id {id:?}: use 1 to 40 letters, digits, '.', '_' or '-' \
                     (it becomes part of Redis key names)"
                );
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
fn valid_node_id(id: &str) -> bool {
    id.len() <= 64
        && !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)
}

/// Failures after which the connection is not worth keeping.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// `SEND_LUA`'s reply: its code and the owner's node id.
fn send_reply(reply: &Value) -> (i64, Option<&str>) {
    let Value::Array(parts) = reply else {
        return (-1, None);
    };
    let code = parts.first().and_then(int).unwrap_or(-1);
    let owner = match parts.get(1) {
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
        _ => None,
    };
    (code, owner)
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// The strings in an array reply; anything else is skipped.
fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::Array(items) | Value::Set(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::BulkString(b) => std::str::from_utf8(b).ok(),
                Value::SimpleString(s) => Some(s.as_str()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `s` as a name, if it is one exactly (already trimmed and valid), as everything this
/// node writes to Redis is.
fn exact_name(s: &str) -> Option<Name> {
    Name::parse(s).ok().filter(|n| n.as_str() == s)
}

/// What nodes publish to each other, in a compact text form: one header line per field,
/// then the frame as is (SDP is not escaped twice). Names and node ids never contain line
/// breaks (names have no control characters), so the split is unambiguous.
///
/// ```text
/// d1\n{tag}\n{origin node}\n{to}\n{from}\n{frame}
/// ```
///
/// Tags: `offer`, `answer`, `candidate`, `leave` or `leave/{reason}` (a signal),
/// `bounce/{code}/{kind}`, `notice`, and `online`/`offline` (presence of `to`; no `from`).
mod wire {
    use axum::extract::ws::Utf8Bytes;

    use super::{Event, exact_name, valid_node_id};
    use crate::protocol::{ErrorCode, LeaveReason, Name, SignalKind};

    const VERSION: &str = "d1";

    const REASONS: [LeaveReason; 5] = [
        LeaveReason::Hangup,
        LeaveReason::Declined,
        LeaveReason::Cancelled,
        LeaveReason::NoAnswer,
        LeaveReason::Disconnected,
    ];

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
    }

    fn join(tag: &str, origin: &str, to: &str, from: &str, body: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            VERSION.len() + tag.len() + origin.len() + to.len() + from.len() + body.len() + 5,
        );
        for part in [VERSION, tag, origin, to, from] {
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
                kind,
                reason,
                frame,
            } => {
                let tag = match reason {
                    Some(r) => format!("{}/{}", kind.as_str(), r.as_str()),
                    None => kind.as_str().to_string(),
                };
                join(&tag, origin, to.as_str(), from.as_str(), frame.as_str())
            }
            Event::Bounce {
                from,
                code,
                request,
            } => {
                let tag = format!("bounce/{}/{}", code.as_str(), request.as_str());
                join(&tag, origin, to.as_str(), from.as_str(), "")
            }
            Event::Notice(frame) => join("notice", origin, to.as_str(), "", frame.as_str()),
        }
    }

    pub fn encode_presence(origin: &str, name: &Name, online: bool) -> Vec<u8> {
        let tag = if online { "online" } else { "offline" };
        join(tag, origin, name.as_str(), "", "")
    }

    fn kind(s: &str) -> Result<SignalKind, String> {
        SignalKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown signal kind {s:?}"))
    }

    fn name(field: &str, s: &str) -> Result<Name, String> {
        exact_name(s).ok_or_else(|| format!("invalid {field} name {s:?}"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut parts = text.splitn(6, '\n');
        let mut next = || parts.next().ok_or_else(|| "too few fields".to_string());
        let (version, tag, origin, to, from, body) =
            (next()?, next()?, next()?, next()?, next()?, next()?);
        if version != VERSION {
            return Err(format!("unknown version {version:?}"));
        }
        // The origin becomes part of a channel name when a bounce goes back to it.
        if !valid_node_id(origin) {
            return Err(format!("invalid origin node {origin:?}"));
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
            "notice" => Event::Notice(frame()),
            _ if tag.starts_with("bounce/") => {
                let mut fields = tag.split('/').skip(1);
                let code = fields
                    .next()
                    .and_then(ErrorCode::from_code)
                    .ok_or_else(|| format!("bad bounce {tag:?}"))?;
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
                            .ok_or_else(|| format!("unknown leave reason {r:?}"))?;
                        (k, Some(reason))
                    }
                    None => (tag, None),
                };
                Event::Signal {
                    from: name("sender", from)?,
                    kind: kind(kind_str)?,
                    reason,
                    frame: frame(),
                }
            }
        };
        Ok(Message::Event { origin, to, event })
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{Message, decode, encode_event, encode_presence};
    use super::*;

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
            Message::Presence { .. } => panic!("expected an event"),
        }
    }

    #[test]
    fn signals_roundtrip_exactly() {
        let frame =
            "{\"type\":\"offer\",\"offer\":{\"sdp\":\"v=0\\r\\na=x\\n\"},\"name\":\"ä lice\"}";
        let got = roundtrip(Event::Signal {
            from: n("ä lice"),
            kind: SignalKind::Offer,
            reason: None,
            frame: frame.into(),
        });
        let Event::Signal {
            from,
            kind,
            reason,
            frame: got_frame,
        } = got
        else {
            panic!("expected a signal")
        };
        assert_eq!(from, n("ä lice"));
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

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"d1",
            b"d2\noffer\nn\nbob\nalice\n{}",
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
    fn links_are_bounded_and_deduplicated() {
        let mut local = Local::default();
        let me = n("me");
        for i in 0..20 {
            link(&mut local, &me, &n(&format!("p{i}")), "n".into());
        }
        link(&mut local, &me, &n("p19"), "m".into());
        let links = &local.links[&me];
        assert_eq!(links.len(), LINKS_PER_USER);
        assert_eq!(
            links.back().map(|(p, node)| (p.as_str(), &**node)),
            Some(("p19", "m"))
        );
        unlink(&mut local, &me, &n("p19"));
        assert_eq!(local.links[&me].len(), LINKS_PER_USER - 1);
    }
}
