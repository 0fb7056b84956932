//! The presence policy: whether "who is online" updates flow, given how many users are
//! online. One rule, used by both registries and the login reply, so they cannot drift
//! (two copies once disagreed by one user). And [`Batch`]: how one client's presence
//! changes are gathered for a short while and written together.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use crate::protocol;

/// Presence is on while at most `limit` users are online; a limit of 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    limit: usize,
}

impl Presence {
    /// The policy for `--presence-limit`.
    pub fn new(limit: usize) -> Presence {
        Presence { limit }
    }

    /// Most users a roster lists; 0 when presence is off altogether.
    pub fn limit(self) -> usize {
        self.limit
    }

    /// Whether presence updates are sent while `online` users are online.
    pub fn is_on(self, online: usize) -> bool {
        self.limit > 0 && online <= self.limit
    }
}

/// How long a client's presence changes gather before they are written: a mass login (or
/// every browser reconnecting after a restart) reaches each user as a few frames and
/// writes instead of one per login.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(200);

/// Most names one client has waiting in its batch; at this many it is written at once.
/// Bounds what presence holds per client (and a `presence-batch` frame: about 200 names,
/// a few KB) whatever the number of users.
pub const BATCH_MAX: usize = 200;

/// One client's presence changes not yet written, one entry per name: a name that came
/// and went (or went and came back) within the interval is not written at all.
#[derive(Debug)]
pub struct Batch {
    /// Keyed by the name as a JSON string, as the frames carry it.
    changes: HashMap<Box<str>, Change>,
    /// When the batch is written: [`BATCH_INTERVAL`] after its first change.
    due: Instant,
}

#[derive(Debug)]
struct Change {
    /// The state the client knew before the batch (the opposite of its first change).
    was_online: bool,
    /// The latest `presence` frame for the name: what a lone change is written as.
    frame: Utf8Bytes,
    online: bool,
}

impl Batch {
    /// An empty batch, due [`BATCH_INTERVAL`] after `now`.
    pub fn new(now: Instant) -> Batch {
        Batch {
            changes: HashMap::new(),
            due: now + BATCH_INTERVAL,
        }
    }

    /// When this batch is to be written.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Adds a `presence` frame (see [`protocol::presence_frame`]); false for any other
    /// frame, which the caller writes itself.
    pub fn add(&mut self, frame: &Utf8Bytes) -> bool {
        let Some((name, online)) = protocol::parse_presence_frame(frame) else {
            return false;
        };
        match self.changes.get_mut(name) {
            Some(change) => {
                change.online = online;
                change.frame = frame.clone();
            }
            None => {
                self.changes.insert(
                    name.into(),
                    Change {
                        was_online: !online,
                        frame: frame.clone(),
                        online,
                    },
                );
            }
        }
        true
    }

    /// Whether the batch holds [`BATCH_MAX`] names and is to be written now.
    pub fn is_full(&self) -> bool {
        self.changes.len() >= BATCH_MAX
    }

    /// The frames to write: for each name whose state changed, its `presence` frame; or,
    /// when the client reads `presence-batch` (`batched`) and there are several, one
    /// frame carrying them all.
    pub fn frames(self, batched: bool) -> Vec<Utf8Bytes> {
        let changed = self
            .changes
            .into_iter()
            .filter(|(_, c)| c.online != c.was_online);
        if !batched {
            return changed.map(|(_, c)| c.frame).collect();
        }
        let changed: Vec<(Box<str>, Change)> = changed.collect();
        if changed.len() < 2 {
            return changed.into_iter().map(|(_, c)| c.frame).collect();
        }
        let online = changed.iter().filter(|(_, c)| c.online);
        let offline = changed.iter().filter(|(_, c)| !c.online);
        vec![Utf8Bytes::from(protocol::presence_batch_frame(
            online.map(|(name, _)| &**name),
            offline.map(|(name, _)| &**name),
        ))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Name, presence_frame};

    fn change(name: &str, online: bool) -> Utf8Bytes {
        let name = Name::parse(name).expect("valid name");
        Utf8Bytes::from(presence_frame(&name, online))
    }

    fn batch_of(changes: &[(&str, bool)]) -> Batch {
        let mut batch = Batch::new(Instant::now());
        for &(name, online) in changes {
            assert!(batch.add(&change(name, online)));
        }
        batch
    }

    #[test]
    fn a_lone_change_stays_a_presence_frame() {
        let frames = batch_of(&[("bob", true)]).frames(true);
        assert_eq!(frames, [change("bob", true)]);
    }

    #[test]
    fn several_changes_become_one_batch_frame() {
        let frames = batch_of(&[("a", true), ("b", true), ("c", false)]).frames(true);
        assert_eq!(frames.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&frames[0]).expect("JSON");
        assert_eq!(v["type"], "presence-batch");
        let mut online: Vec<&str> = v["online"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|n| n.as_str())
            .collect();
        online.sort();
        assert_eq!(online, ["a", "b"]);
        assert_eq!(v["offline"], serde_json::json!(["c"]));
    }

    #[test]
    fn a_client_without_batches_gets_presence_frames() {
        let mut frames = batch_of(&[("a", true), ("b", false)]).frames(false);
        frames.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(frames, [change("a", true), change("b", false)]);
    }

    #[test]
    fn a_name_that_came_and_went_is_not_written() {
        let batch = batch_of(&[
            ("a", true),
            ("a", false),
            ("b", false),
            ("b", true),
            ("c", true),
        ]);
        assert_eq!(batch.frames(true), [change("c", true)]);
        let batch = batch_of(&[("a", true), ("a", false), ("a", true)]);
        assert_eq!(batch.frames(false), [change("a", true)]);
    }

    #[test]
    fn other_frames_are_not_taken_and_the_batch_fills() {
        let mut batch = Batch::new(Instant::now());
        assert!(!batch.add(&Utf8Bytes::from_static(r#"{"type":"ringing","name":"a"}"#)));
        for i in 0..BATCH_MAX {
            assert!(!batch.is_full());
            batch.add(&change(&format!("u{i}"), true));
        }
        assert!(batch.is_full());
    }

    #[test]
    fn on_up_to_and_including_the_limit() {
        let p = Presence::new(2);
        assert!(p.is_on(0));
        assert!(p.is_on(2));
        assert!(!p.is_on(3));
    }

    #[test]
    fn zero_is_off() {
        assert!(!Presence::new(0).is_on(0));
        assert!(!Presence::new(0).is_on(1));
    }
}
