//! Rough relay throughput of duet's embedded TURN server on loopback.
//!
//! `cargo run --release --example relay_bench -- [packets] [size] [rate pkt/s, 0 = unpaced]`
//!
//! A TURN client (webrtc-rs `turn` client) allocates a relay and sends
//! `packets` datagrams of `size` bytes to a plain UDP peer through it
//! (client → server → relay socket → peer, ChannelData after the first
//! packet), then the peer sends the same amount back (peer → relay → client).
//! With a rate, senders are paced per millisecond so loss shows whether the
//! relay keeps up at that rate; unpaced runs measure the ceiling.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use duet::turn::{TurnAuth, TurnConfig, start};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let packets: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let rate: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);

    let secret = b"bench".to_vec();
    let mut cfg = TurnConfig::local(TurnAuth::Secret(secret.clone()));
    cfg.allow_loopback = true;
    let stop = CancellationToken::new();
    let h = start(cfg, stop.clone()).await?;

    let creds = duet::ice::rest_credentials(
        &secret,
        "bench",
        Duration::from_secs(600),
        SystemTime::now(),
    );
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let client = Client::new(ClientConfig {
        stun_serv_addr: h.udp_addr.to_string(),
        turn_serv_addr: h.udp_addr.to_string(),
        username: creds.username,
        password: creds.credential,
        realm: "duet".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: std::sync::Arc::new(sock),
        vnet: None,
    })
    .await?;
    client.listen().await?;
    let relay = std::sync::Arc::new(client.allocate().await?);
    let relay_addr = relay.local_addr()?;
    let peer = std::sync::Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
    let peer_addr = peer.local_addr()?;

    // Warm-up: permission + channel bind.
    let payload = vec![0x5a; size];
    relay.send_to(&payload, peer_addr).await?;
    let mut buf = vec![0u8; 2048];
    tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf)).await??;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // client -> peer
    let counter = {
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0usize;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf)).await
            {
                n += 1;
            }
            n
        })
    };
    let t0 = Instant::now();
    let mut pace = Pacer::new(rate);
    for _ in 0..packets {
        pace.tick().await;
        relay.send_to(&payload, peer_addr).await?;
    }
    let sent_for = t0.elapsed();
    let got = counter.await?;
    report("client->peer", packets, got, size, sent_for);

    // peer -> client
    let counter = {
        let relay = relay.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0usize;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), relay.recv_from(&mut buf)).await
            {
                n += 1;
            }
            n
        })
    };
    let t0 = Instant::now();
    let mut pace = Pacer::new(rate);
    for _ in 0..packets {
        pace.tick().await;
        peer.send_to(&payload, relay_addr).await?;
    }
    let sent_for = t0.elapsed();
    let got = counter.await?;
    report("peer->client", packets, got, size, sent_for);

    client.close().await?;
    stop.cancel();
    h.stopped().await;
    Ok(())
}

fn report(dir: &str, sent: usize, got: usize, size: usize, dt: Duration) {
    let secs = dt.as_secs_f64();
    println!(
        "{dir}: sent {sent} x {size} B in {secs:.2}s, received {got} ({:.1}% loss), {:.0} pkt/s, {:.0} Mbit/s delivered",
        100.0 * (sent - got.min(sent)) as f64 / sent as f64,
        got as f64 / secs,
        got as f64 * size as f64 * 8.0 / secs / 1e6
    );
}

/// Sends `rate / 1000` packets per millisecond tick.
struct Pacer {
    per_tick: usize,
    left: usize,
    interval: Option<tokio::time::Interval>,
}

impl Pacer {
    fn new(rate: usize) -> Self {
        let interval = (rate > 0).then(|| tokio::time::interval(Duration::from_millis(1)));
        Pacer {
            per_tick: (rate / 1000).max(1),
            left: 0,
            interval,
        }
    }

    async fn tick(&mut self) {
        let Some(iv) = self.interval.as_mut() else {
            tokio::task::yield_now().await;
            return;
        };
        if self.left == 0 {
            iv.tick().await;
            self.left = self.per_tick;
        }
        self.left -= 1;
    }
}
