//! The presence policy: whether "who is online" updates flow, given how many users are
//! online. One rule, used by both registries and the login reply, so they cannot drift
//! (two copies once disagreed by one user).

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

#[cfg(test)]
mod tests {
    use super::*;

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
