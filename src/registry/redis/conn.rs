//! The link to Redis: the command connection (replaced after a failure, every call with
//! a timeout), what is known about it, and the backoff both reconnect loops use.

use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSub};
use ::redis::{
    AsyncConnectionConfig, Client, FromRedisValue, RedisError, RedisResult, ScriptInvocation,
};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, timeout};
use tracing::warn;

use super::error::Error;

/// First reconnect delay; doubled on each failure up to the loop's maximum.
const BACKOFF_START: Duration = Duration::from_millis(100);

/// The command connection and what is known about the subscription.
pub struct Link {
    client: Client,
    /// Limit on every Redis call, so that no session ever hangs on Redis.
    pub op_timeout: Duration,
    /// The command connection; `None` while Redis is unreachable (calls then fail at once).
    conn: Mutex<Option<Conn>>,
    /// Numbers connections, so a failure on an old one does not drop a newer one.
    next_gen: AtomicU64,
    pub state: watch::Sender<LinkState>,
    /// Wakes the heartbeat task early, to reconnect as soon as a call found Redis gone.
    pub wake: Notify,
}

/// The command connection and its generation.
struct Conn {
    generation: u64,
    conn: MultiplexedConnection,
}

/// What is known about the link to Redis.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkState {
    /// The command connection is up and the heartbeat after connecting succeeded (so the
    /// names of local users are asserted again).
    pub commands: bool,
    /// The subscription to this node's channel is up.
    pub pubsub: bool,
    /// When the command connection was last established. Other nodes may still be
    /// reconnecting shortly after (Redis restarted): their keys are not trusted to be
    /// absent until a lease after this.
    pub since: Option<Instant>,
}

impl Link {
    pub fn new(client: Client, op_timeout: Duration) -> Link {
        Link {
            client,
            op_timeout,
            conn: Mutex::new(None),
            next_gen: AtomicU64::new(0),
            state: watch::Sender::new(LinkState::default()),
            wake: Notify::new(),
        }
    }

    /// Commands and subscription are both up: logins and cross-node sends can work.
    pub fn connected(&self) -> bool {
        let s = self.state.borrow();
        s.commands && s.pubsub
    }

    /// Whether an absent key of another node means that node is gone: not until a lease
    /// after this node (re)connected, since after a Redis restart every node's keys are
    /// missing until that node has reconnected too.
    pub fn trusts_absence(&self, lease: Duration) -> bool {
        self.state
            .borrow()
            .since
            .is_some_and(|since| since.elapsed() >= lease)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        // The slot is replaced whole, so a poisoned lock still holds a consistent value.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.slot().as_ref().map(|c| (c.generation, c.conn.clone()))
    }

    /// Runs one Redis call on the command connection, within [`Link::op_timeout`]. Fails
    /// at once while Redis is known to be unreachable.
    pub async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, Error>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some((generation, conn)) = self.current() else {
            return Err(Error::Unreachable);
        };
        match timeout(self.op_timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => {
                if is_connection_error(&source) {
                    self.lost(generation, what, &source);
                } else {
                    warn!(what, error = %source, "redis call failed");
                }
                Err(Error::Failed { what, source })
            }
            Err(_) => {
                self.lost(generation, what, &"timed out");
                Err(Error::TimedOut {
                    what,
                    after: self.op_timeout,
                })
            }
        }
    }

    /// Runs a script ([`Link::call`]).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        what: &'static str,
        script: ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        self.call(what, |mut c| async move {
            script.invoke_async::<T>(&mut c).await
        })
        .await
    }

    /// `PUBLISH channel payload`; returns how many subscribers received it.
    pub async fn publish(
        &self,
        what: &'static str,
        channel: String,
        payload: Vec<u8>,
    ) -> Result<i64, Error> {
        self.call(what, |mut c| async move {
            ::redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
    }

    /// Drops connection `generation` after a failure, unless it was replaced already.
    pub fn lost(&self, generation: u64, what: &str, error: &dyn Display) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|c| c.generation == generation) {
            *slot = None;
            drop(slot);
            warn!(what, %error, "redis connection lost; reconnecting");
            self.state.send_modify(|s| s.commands = false);
            self.wake.notify_one();
        }
    }

    /// Opens a new command connection and makes it the current one.
    pub async fn connect(&self) -> Result<(), Error> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout));
        let limit = self.op_timeout * 2;
        let conn = timeout(
            limit,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| Error::ConnectTimedOut(limit))?
        .map_err(Error::Connect)?;
        let generation = self.next_gen.fetch_add(1, Relaxed) + 1;
        *self.slot() = Some(Conn { generation, conn });
        self.state.send_modify(|s| s.since = Some(Instant::now()));
        Ok(())
    }

    /// A new subscription to `channels`.
    pub async fn subscribe(&self, channels: &[&str]) -> Result<PubSub, Error> {
        let limit = self.op_timeout * 2;
        let mut pubsub = timeout(limit, self.client.get_async_pubsub())
            .await
            .map_err(|_| Error::ConnectTimedOut(limit))?
            .map_err(Error::Connect)?;
        for channel in channels {
            let failed = |source| Error::Subscribe {
                channel: channel.to_string(),
                source,
            };
            timeout(self.op_timeout, pubsub.subscribe(*channel))
                .await
                .map_err(|_| Error::SubscribeTimedOut {
                    channel: channel.to_string(),
                })?
                .map_err(failed)?;
        }
        Ok(pubsub)
    }
}

/// Failures after which the connection is not worth keeping.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Delays between reconnect attempts: from 100 ms, doubling on each failure in a row, up
/// to a maximum. Each reconnect loop (commands, subscription) has its own.
pub struct Backoff {
    delay: Duration,
    max: Duration,
    /// The last attempt failed too: the loop logs the first failure of a run loudly only.
    failing: bool,
}

/// What to do after a failed attempt.
pub struct Retry {
    /// The first failure after a success (or the start): worth a warning.
    pub first: bool,
    /// How long to wait before the next attempt.
    pub after: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            delay: BACKOFF_START,
            max,
            failing: false,
        }
    }

    /// An attempt failed: how long to wait, and the next delay doubles.
    pub fn failed(&mut self) -> Retry {
        let retry = Retry {
            first: !self.failing,
            after: self.delay,
        };
        self.failing = true;
        self.delay = (self.delay * 2).min(self.max);
        retry
    }

    /// An attempt worked: the next failure starts from the beginning.
    pub fn succeeded(&mut self) {
        self.failing = false;
        self.delay = BACKOFF_START;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| b.failed()).collect();
        assert!(delays[0].first && !delays[1].first);
        assert_eq!(
            delays
                .iter()
                .map(|r| r.after.as_millis())
                .collect::<Vec<_>>(),
            [100, 200, 400, 500, 500]
        );
        b.succeeded();
        let r = b.failed();
        assert!(r.first);
        assert_eq!(r.after, BACKOFF_START);
    }
}
