//! TURN credentials that end with their session (`--turn-credentials session`, the
//! default; issue 15 finding 8). A REST credential alone is good until its expiry
//! (`--turn-ttl`), so someone who logged in under a name could keep allocating under it
//! after logging out, and hold the name's allocation quota against its real owner (who
//! then got 486). Here the embedded server accepts a username only while a session of
//! this server that was handed it is alive (connected, or held for a resume), and when
//! the last such session ends, the allocations made with it are closed.
//!
//! The table holds one entry per live username (a count of the sessions holding it: two
//! logins of one name in the same second get the same username), so it is as large as
//! the number of sessions, and nothing outlives them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ::turn::allocation::allocation_manager::Manager;

/// The usernames of live sessions, shared by the sessions (which hold them) and the
/// embedded server's credential check.
#[derive(Clone, Default)]
pub struct LiveCredentials {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Mutex<HashMap<String, usize>>,
    /// The listeners' allocation tables, set once the server runs.
    managers: OnceLock<Arc<[Arc<Manager>]>>,
}

impl Inner {
    fn live(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // A panic elsewhere while holding it leaves counts that are still right.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LiveCredentials {
    /// `username` is accepted while the returned value lives.
    pub fn hold(&self, username: &str) -> LiveCredential {
        *self.inner.live().entry(username.to_owned()).or_insert(0) += 1;
        LiveCredential {
            username: username.to_owned(),
            inner: Arc::clone(&self.inner),
        }
    }

    /// Whether a live session holds `username`.
    pub fn is_live(&self, username: &str) -> bool {
        self.inner.live().contains_key(username)
    }

    /// Usernames held now.
    pub fn len(&self) -> usize {
        self.inner.live().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn set_managers(&self, managers: Arc<[Arc<Manager>]>) {
        let _ = self.inner.managers.set(managers);
    }
}

/// A session's hold on its TURN username; dropping the last one for a username makes
/// the server refuse it and closes its allocations.
pub struct LiveCredential {
    username: String,
    inner: Arc<Inner>,
}

impl LiveCredential {
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl Drop for LiveCredential {
    fn drop(&mut self) {
        let last = {
            let mut live = self.inner.live();
            match live.get_mut(&self.username) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    live.remove(&self.username);
                    true
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        let Some(managers) = self.inner.managers.get().cloned() else {
            return;
        };
        // Sessions end on the runtime; outside one (a test's teardown) there is nothing
        // left to close.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let username = std::mem::take(&mut self.username);
        runtime.spawn(async move {
            for manager in managers.iter() {
                manager.delete_allocations_by_username(&username).await;
            }
            tracing::debug!(
                username,
                "TURN: the session ended; its allocations are closed"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_live_while_a_session_holds_it() {
        let live = LiveCredentials::default();
        assert!(!live.is_live("100:bob"));
        let first = live.hold("100:bob");
        let second = live.hold("100:bob");
        assert!(live.is_live("100:bob"));
        drop(first);
        assert!(live.is_live("100:bob"), "another session still holds it");
        drop(second);
        assert!(!live.is_live("100:bob"));
        assert!(live.is_empty());
    }
}
