//! The heartbeat task: keeps the command connection up (reconnecting with backoff) and,
//! every quarter lease, runs one pipeline that frees names whose release failed,
//! refreshes (or re-asserts) every local name and this node's liveness, counts the other
//! nodes' users, and looks up what the watchdog needs: the liveness of the nodes whose
//! users were announced by presence, and the user keys of the watched call peers
//! ([`super::peers`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ::redis::Value;
use tracing::{debug, info, warn};

use super::conn::Backoff;
use super::error::Error;
use super::keys::USERS_SUFFIX;
use super::lua;
use super::node::Node;
use super::peers::{Verdict, Watch, peer_left};
use super::reply::{exact_name, int, strings, values};
use crate::protocol::{self, Name};
use crate::registry::mailbox::Event;

/// Names refreshed (and peers looked up) per script or command, so that none blocks Redis
/// for long.
const CHUNK: usize = 500;

/// What a heartbeat found, to apply to the local state.
struct Found {
    /// Names whose release went through now.
    unreleased: Vec<Name>,
    /// Names another node holds now.
    lost: Vec<Name>,
    /// Names that had vanished and were set again.
    reasserted: Vec<Name>,
    /// Nodes of presence-announced users whose liveness key is gone.
    dead: HashSet<Arc<str>>,
    /// Each watched (local user, peer) with the node holding the peer's name, if any,
    /// and whether the peer's name is held for a resume.
    peers: Vec<(Name, Name, Option<String>, bool)>,
}

impl Node {
    /// Keeps the command connection up and runs the heartbeat and the watchdog.
    pub async fn maintain(self: Arc<Self>) {
        let mut backoff = Backoff::new(self.max_backoff());
        loop {
            if self.link.current().is_none() {
                let connected = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    r = self.link.connect() => r,
                };
                if let Err(e) = connected {
                    let retry = backoff.failed();
                    if retry.first {
                        warn!(error = %e, "cannot connect to redis; retrying with backoff");
                    } else {
                        debug!(error = %e, backoff = ?retry.after, "redis still unreachable");
                    }
                    if !self.pause(retry.after).await {
                        return;
                    }
                    continue;
                }
                backoff.succeeded();
                // Names may have been released while the connection was down.
                self.rebuild.store(true, Relaxed);
            }
            if let Err(e) = self.beat().await {
                debug!(error = %e, "heartbeat failed");
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.heartbeat) => {}
                _ = self.link.wake.notified() => {}
            }
        }
    }

    /// One heartbeat: one pipeline, one round trip.
    async fn beat(&self) -> Result<(), Error> {
        let (names, unreleased, nodes, watches, resumable) = {
            let local = self.local();
            (
                local.users.keys().cloned().collect::<Vec<_>>(),
                local.unreleased.iter().cloned().collect::<Vec<_>>(),
                local.remote_present.keys().cloned().collect::<Vec<_>>(),
                local.peers.snapshot(),
                local.resumable.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let rebuild = self.rebuild.swap(false, Relaxed);
        let lease = self.lease_ms().to_string();
        let keys = &self.keys;
        let mut pipe = ::redis::pipe();
        for name in &unreleased {
            let release_keys = [keys.user(name), keys.own_users(), keys.resume(name)];
            lua::eval_in(
                &mut pipe,
                lua::RELEASE,
                &release_keys,
                &[&*self.id, name.as_str(), "0"],
            )
            .ignore();
        }
        // The resume keys outlive this node's last heartbeat by the resume window.
        let resume_ttl = self.resume_ttl_ms();
        for name in &resumable {
            pipe.cmd("PEXPIRE")
                .arg(keys.resume(name))
                .arg(resume_ttl)
                .ignore();
        }
        let chunks: Vec<&[Name]> = if names.is_empty() {
            vec![&[]]
        } else {
            names.chunks(CHUNK).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let mut script_keys = vec![keys.own_alive(), keys.nodes(), keys.own_users()];
            script_keys.extend(chunk.iter().map(|name| keys.user(name)));
            let flag = if i == 0 && rebuild { "1" } else { "0" };
            let mut args = vec![&*self.id, lease.as_str(), flag];
            args.extend(chunk.iter().map(|name| name.as_str()));
            lua::eval_in(&mut pipe, lua::HEARTBEAT, &script_keys, &args);
        }
        let node_prefix = keys.node_prefix();
        lua::eval_in(
            &mut pipe,
            lua::COUNT,
            &[keys.nodes()],
            &[&node_prefix, USERS_SUFFIX, &self.id],
        );
        for node in &nodes {
            pipe.cmd("EXISTS").arg(keys.alive(node));
        }
        let peer_chunks: Vec<&[(Name, Watch)]> = watches.chunks(CHUNK).collect();
        for chunk in &peer_chunks {
            let cmd = pipe.cmd("MGET");
            for (_, watch) in *chunk {
                cmd.arg(keys.user(&watch.peer));
            }
            let cmd = pipe.cmd("MGET");
            for (_, watch) in *chunk {
                cmd.arg(keys.resume(&watch.peer));
            }
        }
        let result = self
            .link
            .call("heartbeat", |mut c| async move {
                pipe.query_async::<Vec<Value>>(&mut c).await
            })
            .await;
        let expected = chunks.len() + 1 + nodes.len() + 2 * peer_chunks.len();
        let replies = match result {
            Ok(replies) if replies.len() == expected => replies,
            Ok(replies) => {
                self.rebuild.fetch_or(rebuild, Relaxed);
                return Err(Error::UnexpectedReply {
                    what: "heartbeat",
                    reply: format!("{replies:?}"),
                });
            }
            Err(e) => {
                self.rebuild.fetch_or(rebuild, Relaxed);
                return Err(e);
            }
        };
        let (scripts, rest) = replies.split_at(chunks.len());
        let (count, rest) = rest.split_at(1);
        let (alive, owners) = rest.split_at(nodes.len());

        let mut lost = Vec::new();
        let mut reasserted = Vec::new();
        for reply in scripts {
            if let Value::Array(parts) = reply
                && let [l, r] = parts.as_slice()
            {
                lost.extend(strings(l).iter().filter_map(|s| exact_name(s)));
                reasserted.extend(strings(r).iter().filter_map(|s| exact_name(s)));
            }
        }
        let others = count.first().and_then(int).unwrap_or(0);
        self.others_online
            .store(usize::try_from(others).unwrap_or(0), Relaxed);
        let dead = nodes
            .into_iter()
            .zip(alive)
            .filter(|(_, exists)| int(exists) == Some(0))
            .map(|(node, _)| node)
            .collect();
        let mut peers = Vec::new();
        for (chunk, replies) in peer_chunks.iter().zip(owners.chunks(2)) {
            // An unreadable reply says nothing about these peers: they stay watched.
            let [owners, resumes] = replies else {
                continue;
            };
            let (Some(found), Some(resumes)) =
                (values(owners, chunk.len()), values(resumes, chunk.len()))
            else {
                continue;
            };
            for (((me, watch), owner), resume) in chunk.iter().zip(found).zip(resumes) {
                peers.push((
                    me.clone(),
                    watch.peer.clone(),
                    owner.map(str::to_string),
                    resume.is_some(),
                ));
            }
        }
        let reasserted_count = reasserted.len();
        self.after_beat(Found {
            unreleased,
            lost,
            reasserted,
            dead,
            peers,
        });

        if !self.link.state.borrow().commands {
            self.link.state.send_modify(|s| s.commands = true);
            info!(node = %self.id, reasserted = reasserted_count, "redis connected");
        }
        Ok(())
    }

    /// Applies what a heartbeat found to the local state: the watchdog's half.
    fn after_beat(&self, found: Found) {
        let trust_absence = self.link.trusts_absence(self.lease);
        let mut local = self.local();
        for name in &found.unreleased {
            local.unreleased.remove(name);
        }
        for name in &found.lost {
            // Another node took the name while this one could not vouch for it (cut off
            // from Redis for longer than the lease, or Redis lost its data and another
            // node claimed the name before this heartbeat set it again). Two connections
            // must not share a name: ours ends with its own close code (4002, name lost),
            // and its peer hears `leave` from it. Its peer also tells the newcomer from
            // it by session id, so the call cannot be taken over meanwhile.
            let resumable = local.resumable.contains(name);
            if let Some(mailbox) = local.remove_user(name) {
                if resumable {
                    // Most likely resumed on that node (its `dropped` may still be on the
                    // way): end quietly, the call goes on there.
                    info!(%name, "name taken over by another node (a resume); dropping the session here");
                    if mailbox.deliver(Event::Replaced).is_err() {
                        mailbox.kick();
                    }
                    continue;
                }
                warn!(%name, "name claimed by another node while this node could not vouch for it (redis unreachable or its data lost); disconnecting its user here");
                if mailbox.deliver(Event::NameLost).is_err() {
                    mailbox.kick();
                }
            }
        }
        for name in found.reasserted {
            // Released between the heartbeat's snapshot and its run: free it again.
            if !local.users.contains_key(&name) {
                local.unreleased.insert(name);
            }
        }
        for (me, peer, owner, resumable) in &found.peers {
            let event = match local.peers.found(
                me,
                peer,
                owner.as_deref(),
                *resumable,
                trust_absence,
            ) {
                Verdict::Unchanged => continue,
                Verdict::Reconnecting => {
                    info!(%peer, user = %me, "call peer's node stopped holding its name, which is held for a resume; telling the user here the peer is reconnecting");
                    let frame = protocol::reconnecting_frame(&protocol::json_string(peer.as_str()));
                    Event::Notice(frame.into())
                }
                Verdict::Left => {
                    warn!(%peer, user = %me, "call peer's node stopped refreshing its lease (or the name moved); telling the user here that the peer left");
                    peer_left(peer)
                }
            };
            if let Some(mailbox) = local.users.get(me) {
                let _ = mailbox.deliver(event);
            }
        }
        if found.dead.is_empty() || !trust_absence {
            return;
        }
        for node in &found.dead {
            warn!(node = %node, "node stopped refreshing its lease; announcing its users offline here");
        }
        let departed: Vec<Name> = found
            .dead
            .iter()
            .filter_map(|node| local.remote_present.remove(node))
            .flatten()
            .collect();
        drop(local);
        for name in departed {
            self.present(&name, false);
        }
    }
}
