//! The outbox: cross-node sends go to Redis in batches. One send script call carries all
//! the sends that sessions queued while the previous batch was on its way, and Redis
//! answers once per batch; the payloads for one node go in one `PUBLISH`, in a batch
//! envelope ([`unbatch`]) when there are several. So under load Redis runs one script, and
//! each receiving node reads one message, per batch instead of per message.
//!
//! A session still awaits its own send's outcome (that keeps one sender's events in order
//! and `not-online` synchronous). When the node is quiet a batch holds one send and goes at
//! once (its payload published as is); under load the next batch gathers what arrives
//! during the previous one's round trip, up to [`BATCH`] sends.
//!
//! What it saves is measured in docs/cluster.md, "Performance".

use std::sync::Arc;

use ::redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use super::error::Error;
use super::node::Node;

/// Most sends in one script call, so that none blocks Redis for long (each is a `GET` and
/// a `PUBLISH`, a few microseconds).
const BATCH: usize = 128;

/// Sends waiting for a batch; a session finding it full waits (within the call timeout).
const QUEUE: usize = 8 * BATCH;

/// What starts a batch envelope: several payloads for one node in one published message.
const ENVELOPE: &[u8] = b"b1\n";

/// One queued send and where its outcome goes.
struct Queued {
    /// The target's user key.
    key: String,
    /// What the target's node gets (`wire::encode_event`).
    payload: Vec<u8>,
    /// The send script's reply for this send (see `reply::sent`).
    done: oneshot::Sender<Result<Value, Arc<Error>>>,
}

/// The sessions' end of the outbox.
pub struct Outbox {
    queue: mpsc::Sender<Queued>,
}

/// The batching task's end.
pub struct Batches {
    queue: mpsc::Receiver<Queued>,
}

pub fn outbox() -> (Outbox, Batches) {
    let (queue, rx) = mpsc::channel(QUEUE);
    (Outbox { queue }, Batches { queue: rx })
}

impl Node {
    /// Sends `payload` to the node holding the user key `key`, in the next batch; returns
    /// the send script's reply for it. Bounded by twice the call timeout (a wait in the
    /// queue, then the call).
    pub async fn send_batched(&self, key: String, payload: Vec<u8>) -> Result<Value, Arc<Error>> {
        let (done, outcome) = oneshot::channel();
        let limit = self.link.op_timeout * 2;
        let queued = Queued { key, payload, done };
        let sent = timeout(limit, async {
            self.outbox
                .queue
                .send(queued)
                .await
                .map_err(|_| Arc::new(Error::Unreachable))?;
            // The batch task dropped the send without an answer: it is stopping.
            outcome.await.map_err(|_| Arc::new(Error::Unreachable))?
        })
        .await;
        sent.unwrap_or(Err(Arc::new(Error::TimedOut {
            what: "send",
            after: limit,
        })))
    }

    /// Forms batches from the queue and sends each as one script call, one batch at a
    /// time (what arrives meanwhile is the next batch), until the node stops.
    pub async fn batch_sends(self: Arc<Self>, mut batches: Batches) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                _ = self.stop.cancelled() => return,
                n = batches.queue.recv_many(&mut batch, BATCH) => n,
            };
            if received == 0 {
                return;
            }
            self.send_batch(std::mem::take(&mut batch)).await;
        }
    }

    /// One script call for `batch`; every send gets its own reply, or the call's error.
    async fn send_batch(&self, batch: Vec<Queued>) {
        let mut call = self.scripts.send.prepare_invoke();
        call.arg(self.keys.inbox_prefix())
            .arg(self.keys.node_prefix());
        for queued in &batch {
            call.key(&queued.key).arg(&queued.payload);
        }
        let reply = self.link.invoke::<Value>("send", call).await;
        let replies = match reply {
            Ok(Value::Array(replies)) if replies.len() == batch.len() => replies,
            Ok(other) => {
                let error = Arc::new(Error::UnexpectedReply {
                    what: "send",
                    reply: format!("{other:?}"),
                });
                for queued in batch {
                    let _ = queued.done.send(Err(error.clone()));
                }
                return;
            }
            Err(e) => {
                let error = Arc::new(e);
                for queued in batch {
                    let _ = queued.done.send(Err(error.clone()));
                }
                return;
            }
        };
        for (queued, reply) in batch.into_iter().zip(replies) {
            let _ = queued.done.send(Ok(reply));
        }
    }
}

/// The payloads in a published message: the message itself, or those of a batch envelope
/// (`b1\n`, then `<byte length>\n<payload>` for each, as `scripts/send.lua` builds it). A
/// malformed envelope yields what came before the fault, then `Err`.
pub fn unbatch(message: &[u8]) -> impl Iterator<Item = Result<&[u8], MalformedBatch>> {
    let (mut rest, batched) = match message.strip_prefix(ENVELOPE) {
        Some(rest) => (rest, true),
        None => (message, false),
    };
    let mut single = (!batched).then_some(message);
    std::iter::from_fn(move || {
        if !batched {
            return single.take().map(Ok);
        }
        if rest.is_empty() {
            return None;
        }
        let parsed = rest.iter().position(|&b| b == b'\n').and_then(|end| {
            let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
            let body = rest.get(end + 1..)?;
            Some((body.get(..len)?, &body[len..]))
        });
        match parsed {
            Some((payload, after)) => {
                rest = after;
                Some(Ok(payload))
            }
            None => {
                rest = &[];
                Some(Err(MalformedBatch))
            }
        }
    })
}

/// A batch envelope whose lengths do not match its bytes.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed batch envelope")]
pub struct MalformedBatch;

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(message: &[u8]) -> Vec<Result<&[u8], MalformedBatch>> {
        unbatch(message).collect()
    }

    #[test]
    fn a_plain_message_is_one_payload() {
        assert_eq!(parts(b"d1\noffer\n..."), [Ok(&b"d1\noffer\n..."[..])]);
    }

    #[test]
    fn an_envelope_holds_its_payloads_in_order() {
        let message = b"b1\n3\nabc5\nd1\n\nx0\n";
        assert_eq!(
            parts(message),
            [Ok(&b"abc"[..]), Ok(&b"d1\n\nx"[..]), Ok(&b""[..])]
        );
    }

    #[test]
    fn a_broken_envelope_ends_with_an_error() {
        for (message, good) in [
            (&b"b1\n3\nabc9\nshort"[..], 1),
            (&b"b1\nx\nabc"[..], 0),
            (&b"b1\n3"[..], 0),
            (&b"b1\n99999999999999999999999\n"[..], 0),
        ] {
            let got = parts(message);
            assert_eq!(got.len(), good + 1, "{message:?}");
            assert_eq!(got.last(), Some(&Err(MalformedBatch)), "{message:?}");
        }
    }
}
