//! What goes wrong inside the Redis backend. Callers see the text (sessions log it as the
//! reason of `unavailable`); the variants let the backend tell a connection that is down
//! from a call that failed on its own or an answer it cannot read.

use std::time::Duration;

use ::redis::RedisError;

use super::outbox::MalformedBatch;
use super::wire::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command connection is known to be down: the call was not even tried.
    #[error("redis is unreachable")]
    Unreachable,
    #[error("redis {what} failed: {source}")]
    Failed {
        what: &'static str,
        source: RedisError,
    },
    #[error("redis {what} timed out after {after:?}")]
    TimedOut { what: &'static str, after: Duration },
    /// Redis answered something the script or command never returns.
    #[error("unexpected reply from redis to {what}: {reply}")]
    UnexpectedReply { what: &'static str, reply: String },
    /// The target's node holds its name but has no subscription right now (reconnecting).
    #[error("node {node} is alive but not listening to redis")]
    NotListening { node: String },
    #[error("cannot connect to redis: {0}")]
    Connect(RedisError),
    #[error("connecting to redis timed out after {0:?}")]
    ConnectTimedOut(Duration),
    #[error("cannot subscribe to {channel}: {source}")]
    Subscribe { channel: String, source: RedisError },
    #[error("subscribing to {channel} timed out")]
    SubscribeTimedOut { channel: String },
    /// Another node published something this one cannot read.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// Another node's send batch that cannot be split into its messages.
    #[error("{0}")]
    MalformedBatch(#[from] MalformedBatch),
}
