//! The Lua scripts (`scripts/*.lua`, each says what it takes and returns). Redis runs a
//! script without interleaving other commands, which is what makes a claim race-free
//! and a send one round trip. They take their keys from [`super::keys`].

use ::redis::{Cmd, Pipeline, Script};

pub const CLAIM: &str = include_str!("scripts/claim.lua");
pub const RELEASE: &str = include_str!("scripts/release.lua");
pub const SEND: &str = include_str!("scripts/send.lua");
pub const ROSTER: &str = include_str!("scripts/roster.lua");
pub const HEARTBEAT: &str = include_str!("scripts/heartbeat.lua");
pub const COUNT: &str = include_str!("scripts/count.lua");
pub const SHUTDOWN: &str = include_str!("scripts/shutdown.lua");
pub const TAKEOVER: &str = include_str!("scripts/takeover.lua");

/// The scripts run on their own, by hash: `EVALSHA`, and the text again when Redis does
/// not know the hash (after a restart). A pipeline cannot retry that way, so the scripts
/// in the heartbeat's pipeline, and the shutdown script (run once), go as `EVAL` with
/// their text ([`eval_in`], [`eval`]).
pub struct Scripts {
    pub claim: Script,
    pub release: Script,
    pub send: Script,
    pub roster: Script,
    pub takeover: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            send: Script::new(SEND),
            roster: Script::new(ROSTER),
            takeover: Script::new(TAKEOVER),
        }
    }
}

/// `EVAL script numkeys keys... args...`, added to `pipe`.
pub fn eval_in<'a>(
    pipe: &'a mut Pipeline,
    script: &str,
    keys: &[String],
    args: &[&str],
) -> &'a mut Pipeline {
    pipe.cmd("EVAL")
        .arg(script)
        .arg(keys.len())
        .arg(keys)
        .arg(args)
}

/// `EVAL script numkeys keys... args...` as a command of its own.
pub fn eval(script: &str, keys: &[String], args: &[&str]) -> Cmd {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd
}
