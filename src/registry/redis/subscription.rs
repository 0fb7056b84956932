//! The subscription task: keeps this node subscribed to its own channel and to presence
//! (reconnecting with backoff), and hands what arrives to the local users: events, with a
//! bounce back to the sender when the receiver is gone or too slow, and presence.

use std::sync::Arc;

use ::redis::Value;
use futures_util::StreamExt;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use super::conn::Backoff;
use super::error::Error;
use super::node::Node;
use super::outbox::unbatch;
use super::wire::{self, Message};
use crate::protocol::{ErrorCode, Name, SignalKind};
use crate::registry::mailbox::{DeliverError, Event};

impl Node {
    /// Keeps this node subscribed to its channel and to presence, reconnecting with backoff.
    pub async fn subscribe(self: Arc<Self>) {
        let mut backoff = Backoff::new(self.max_backoff());
        let inbox = self.keys.own_inbox();
        let presence = self.keys.presence();
        let channels = [inbox.as_str(), presence.as_str()];
        loop {
            let pubsub = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = self.link.subscribe(&channels) => r,
            };
            let pubsub = match pubsub {
                Ok(p) => p,
                Err(e) => {
                    let retry = backoff.failed();
                    if retry.first {
                        warn!(error = %e, "cannot subscribe on redis; retrying with backoff");
                    }
                    if !self.pause(retry.after).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.succeeded();
            self.link.state.send_modify(|s| s.pubsub = true);
            debug!(channel = %inbox, "subscribed");
            let (mut sink, mut stream) = pubsub.split();
            // A ping now and then finds a connection that hangs without closing.
            let mut ping =
                tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
            loop {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            // Several events for this node may come in one message.
                            for payload in unbatch(msg.get_payload_bytes()) {
                                let handled = payload
                                    .map_err(Error::from)
                                    .and_then(|payload| self.on_message(payload));
                                if let Err(e) = handled {
                                    warn!(error = %e, "ignoring a message from redis");
                                }
                            }
                        }
                        None => break,
                    },
                    _ = ping.tick() => {
                        let pong = timeout(self.link.op_timeout, sink.ping::<Value>()).await;
                        if !matches!(pong, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            self.link.state.send_modify(|s| s.pubsub = false);
            warn!("redis subscription lost; resubscribing");
            // Redis restarted or went away: the command connection is most likely dead
            // too, and would only say so on its next use. Replace it now, so that the
            // node reports connected again only after a fresh heartbeat has re-asserted
            // its names.
            if let Some((generation, _)) = self.link.current() {
                self.link
                    .lost(generation, "subscription", &"subscription lost");
            }
        }
    }

    /// Handles one message published to this node.
    fn on_message(self: &Arc<Self>, payload: &[u8]) -> Result<(), Error> {
        match wire::decode(payload)? {
            Message::Presence {
                origin,
                name,
                online,
            } => {
                // Our own announcements were delivered here already.
                if *origin == *self.id {
                    return Ok(());
                }
                self.local().remote_presence(&origin, &name, online);
                if self.presence.is_on(self.online_count()) {
                    self.present(&name, online);
                }
            }
            Message::Dropped { origin, name } => {
                // Resumed on `origin`: the session here (held, or connected over a link
                // the client left) ends without a word to its peer, whose call goes on.
                let mut local = self.local();
                if let Some(mailbox) = local.remove_user(&name) {
                    info!(%name, node = %origin, "resumed on another node; dropping the session here");
                    if mailbox.deliver(Event::Replaced).is_err() {
                        mailbox.kick();
                    }
                }
            }
            Message::Event { origin, to, event } => {
                let outcome = {
                    let mut local = self.local();
                    match &event {
                        Event::Signal { from, .. } => local.peers.seen(&to, from, &origin),
                        // The peer resumed on `origin`: watch it there.
                        Event::Rejoin { from, .. } => local.peers.moved(&to, from, &origin),
                        _ => {}
                    }
                    match local.users.get(&to) {
                        Some(mailbox) => mailbox.deliver(event.clone()),
                        None => Err(DeliverError::Gone),
                    }
                };
                if let Err(e) = outcome {
                    self.bounce(&origin, &to, &event, e);
                }
            }
        }
        Ok(())
    }

    /// Tells the sender on `origin` that `event` could not be delivered to `to` (the
    /// sender was told "sent" before the receiver was found gone or too slow), as the
    /// session would have been told synchronously on one node.
    fn bounce(self: &Arc<Self>, origin: &str, to: &Name, event: &Event, e: DeliverError) {
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
        let payload = wire::encode_event(&self.id, from, &bounce);
        let channel = self.keys.inbox(origin);
        let this = self.clone();
        self.tasks.spawn(async move {
            let _ = this.link.publish("bounce", channel, payload).await;
        });
    }
}
