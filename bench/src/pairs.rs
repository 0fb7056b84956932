//! Pairs of logged-in connections in a call with each other: the fixture of the relay
//! scenarios. duet relays `answer`/`candidate` only within a call, so each pair first does
//! offer (A to B) and answer (B to A); the seed needs nothing but works the same way.

use crate::target::{Dialer, Ws};
use crate::wire;
use anyhow::{Context as _, Result};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use std::time::Duration;
use tokio::time::Instant;

/// Two connections in a call: `a` called `b`, `b` answered.
pub struct Pair {
    pub a: Ws,
    pub b: Ws,
    pub a_name: String,
    pub b_name: String,
    /// Non-JSON frames seen during setup (the seed's greeting): 2 per pair on the seed.
    pub not_json: usize,
}

/// Sets up `count` pairs, `concurrency` at a time, all within `timeout`. Every `a` connects
/// through `dialer`, every `b` through `peer_dialer` (another node of a cluster, or the
/// same server).
pub async fn setup(
    dialer: &Dialer,
    peer_dialer: &Dialer,
    prefix: &str,
    count: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<Pair>> {
    let deadline = Instant::now() + timeout;
    stream::iter(0..count)
        .map(|i| {
            setup_one(
                dialer,
                peer_dialer,
                format!("{prefix}a{i}"),
                format!("{prefix}b{i}"),
                deadline,
            )
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

async fn setup_one(
    dialer: &Dialer,
    peer_dialer: &Dialer,
    a_name: String,
    b_name: String,
    deadline: Instant,
) -> Result<Pair> {
    let connect_login = |dialer: &Dialer, name: &str| {
        let (dialer, name) = (dialer.clone(), name.to_owned());
        async move {
            let mut ws = tokio::time::timeout_at(deadline, dialer.connect())
                .await
                .context("timed out connecting")??;
            let seen = wire::login_as(&mut ws, &name, deadline).await?;
            anyhow::Ok((ws, seen))
        }
    };
    let ((mut a, sa), (mut b, sb)) = tokio::try_join!(
        connect_login(dialer, &a_name),
        connect_login(peer_dialer, &b_name)
    )?;
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    wire::send(&mut a, wire::offer(&b_name, sdp)).await?;
    let mut seen_b = sb;
    wire::expect(&mut b, "offer", deadline, &mut seen_b)
        .await
        .with_context(|| format!("{b_name} waiting for the offer of {a_name}"))?;
    wire::send(&mut b, wire::answer(&a_name, sdp)).await?;
    let mut seen_a = sa;
    wire::expect(&mut a, "answer", deadline, &mut seen_a)
        .await
        .with_context(|| format!("{a_name} waiting for the answer of {b_name}"))?;
    Ok(Pair {
        a,
        b,
        a_name,
        b_name,
        not_json: seen_a.not_json + seen_b.not_json,
    })
}
