//! The single-node registry: a map from name to mailbox behind a mutex.
//!
//! The lock is held only for a map lookup and a non-blocking `try_send`, never across an
//! `.await`, so it stays uncontended in practice (see `docs/benchmarks.md`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;

use super::{ClaimError, DeliverError, Event, Mailbox, Roster, SendError};
use crate::presence::Presence;
use crate::protocol::{Name, presence_frame};

#[derive(Clone)]
pub struct MemoryRegistry {
    users: Arc<Mutex<HashMap<Name, Mailbox>>>,
    presence: Presence,
}

impl MemoryRegistry {
    pub fn new(presence: Presence) -> Self {
        MemoryRegistry {
            users: Default::default(),
            presence,
        }
    }

    pub fn presence(&self) -> Presence {
        self.presence
    }

    fn users(&self) -> MutexGuard<'_, HashMap<Name, Mailbox>> {
        // A panic while holding this lock cannot leave the map half-updated (every
        // critical section is a single map operation), so a poisoned lock is still usable.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn claim(&self, name: &Name, mailbox: &Mailbox) -> Result<(), ClaimError> {
        match self.users().entry(name.clone()) {
            Entry::Occupied(_) => Err(ClaimError::Taken),
            Entry::Vacant(slot) => {
                slot.insert(mailbox.clone());
                Ok(())
            }
        }
    }

    pub fn release(&self, name: &Name, mailbox: &Mailbox) {
        let mut users = self.users();
        if users.get(name).is_some_and(|m| m.same_channel(mailbox)) {
            users.remove(name);
        }
    }

    pub fn send(&self, to: &Name, event: Event) -> Result<(), SendError> {
        let users = self.users();
        let mailbox = users.get(to).ok_or(SendError::NotOnline)?;
        mailbox.deliver(event).map_err(|e| match e {
            DeliverError::Gone => SendError::NotOnline,
            DeliverError::Full => SendError::Full,
        })
    }

    pub fn is_online(&self, name: &Name) -> bool {
        self.users().contains_key(name)
    }

    pub fn roster(&self, except: &Name, limit: usize) -> Roster {
        let users = self.users();
        let mut roster = Roster::default();
        for name in users.keys().filter(|n| *n != except) {
            if roster.users.len() == limit {
                roster.truncated = true;
                break;
            }
            roster.users.push(name.clone());
        }
        roster
    }

    /// Delivers the update to every user but `name` (the caller applied the policy).
    pub fn announce(&self, name: &Name, online: bool) {
        let users = self.users();
        let frame = Utf8Bytes::from(presence_frame(name, online));
        for (other, mailbox) in users.iter() {
            if other != name {
                // A full mailbox kicks its slow owner; presence is best-effort by nature.
                let _ = mailbox.deliver(Event::Notice(frame.clone()));
            }
        }
    }

    pub fn online_count(&self) -> usize {
        self.users().len()
    }
}
