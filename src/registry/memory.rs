//! The single-node registry: a map from name to mailbox behind a mutex.
//!
//! The lock is held only for a map lookup and a non-blocking `try_send`, never across an
//! `.await`, so it stays uncontended in practice (see `docs/benchmarks.md`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::presence::Presence;
use crate::protocol::Name;
use crate::registry::mailbox::{ClaimError, Event, Mailbox, Roster, SendError, fan_out_presence};

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

    pub fn replace(&self, name: &Name, old: &Mailbox, new: &Mailbox) -> bool {
        match self.users().get_mut(name) {
            Some(mailbox) if mailbox.same_channel(old) => {
                *mailbox = new.clone();
                true
            }
            _ => false,
        }
    }

    pub fn send(&self, to: &Name, event: Event) -> Result<(), SendError> {
        let users = self.users();
        let mailbox = users.get(to).ok_or(SendError::NotOnline)?;
        Ok(mailbox.deliver(event)?)
    }

    pub fn is_online(&self, name: &Name) -> bool {
        self.users().contains_key(name)
    }

    pub fn roster(&self, except: &Name, limit: usize) -> Roster {
        Roster::collect(self.users().keys().cloned(), except, limit)
    }

    /// Delivers the update to every user but `name` (the caller applied the policy).
    pub fn announce(&self, name: &Name, online: bool) {
        fan_out_presence(self.users().iter(), name, online);
    }

    pub fn online_count(&self) -> usize {
        self.users().len()
    }
}
