//! TURN over TCP (RFC 5766 §2.1): the `turn` crate reads from one packet connection,
//! so [`TcpMux`] accepts the TCP clients and presents them as one, framing STUN and
//! ChannelData messages off each byte stream (padding per §11.5).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;

use crate::source_limit::source_key;

/// Largest datagram the crate's read loop accepts (`INBOUND_MTU` upstream);
/// longer TCP frames could only be truncated, so they are skipped.
const MAX_FRAME: usize = 1500;
/// TCP clients at once; each costs two tasks and a file descriptor.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// TCP clients at once from one address (an IPv4 address or an IPv6 /64). A browser
/// opens at most four per call (TCP and TLS, twice before BUNDLE settles), so this fits
/// a NAT full of callers (and a test machine whose browsers all share 127.0.0.1), while one
/// host cannot take the whole [`MAX_TCP_CONNECTIONS`]
/// (issue 15 finding 8: 1,024 idle connections from one host filled it for 120 s).
const MAX_TCP_PER_ADDRESS: u32 = 64;
/// A TURN client refreshes its allocation and ICE sends consent checks every
/// few seconds, so a TCP connection silent this long is dead or hostile.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A TURN client speaks first (its Allocate, or a Binding request) at once: a connection
/// that sends nothing for this long after it opened is closed.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// All TURN-over-TCP clients presented to the crate as one packet
/// connection: `recv_from` yields whole STUN/ChannelData frames tagged with
/// the client's address, `send_to` writes to that client's stream.
///
/// Clients come from two places: the `--turn-listen-tcp` listener, and the HTTP(S)
/// port's connections that turn out to speak TURN (`server::demux`), handed over with
/// a [`TcpIntake`]. Both are the same to the crate.
pub struct TcpMux {
    /// The address the crate reports as the server's side of every TCP client's
    /// 5-tuple (the TURN TCP listener's, else the UDP listener's).
    local: SocketAddr,
    /// Frames from every client, tagged with its address. Bounded: when the crate's
    /// read loop falls behind, the clients' readers wait (TCP pushes back to them).
    /// An async mutex because `recv_from` holds it while it waits for a frame.
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    /// Each connected client's writer queue, which `send_to` looks up.
    peers: Peers,
}

/// Writer queues of the connected clients by address; each client's task removes its
/// entry when it ends.
type Peers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// Open connections by source ([`source_key`]); entries go when their count is 0.
type PerSource = Arc<Mutex<HashMap<u128, u32>>>;

/// A place under [`MAX_TCP_PER_ADDRESS`], given back when dropped.
struct SourcePlace {
    per_source: PerSource,
    key: u128,
}

impl SourcePlace {
    fn take(per_source: &PerSource, ip: std::net::IpAddr) -> Option<SourcePlace> {
        let key = source_key(ip);
        let mut counts = lock(per_source);
        let count = counts.entry(key).or_insert(0);
        if *count >= MAX_TCP_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(SourcePlace {
            per_source: per_source.clone(),
            key,
        })
    }
}

impl Drop for SourcePlace {
    fn drop(&mut self) {
        let mut counts = lock(&self.per_source);
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Hands byte streams (a TCP connection, or a TLS session over one) to the TURN server's
/// TCP path. Cheap to clone; every clone feeds the same [`TcpMux`].
#[derive(Clone)]
pub struct TcpIntake {
    inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    peers: Peers,
    /// [`MAX_TCP_CONNECTIONS`] places, shared by both sources of clients.
    slots: Arc<Semaphore>,
    /// Connections per source ([`MAX_TCP_PER_ADDRESS`]).
    per_source: PerSource,
    /// The TURN server's shutdown.
    cancel: CancellationToken,
}

impl TcpIntake {
    /// Serves `stream`, from the client at `addr`, as a TURN-over-TCP client in a task
    /// of its own until it ends, idles out or the server shuts down. `false` (and the
    /// stream dropped) when the server is full or already has a client of that address.
    pub fn serve<S>(&self, stream: S, addr: SocketAddr) -> bool
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if self.cancel.is_cancelled() {
            return false;
        }
        let Some(place) = SourcePlace::take(&self.per_source, addr.ip()) else {
            tracing::info!(%addr, "TURN TCP: too many connections from this address");
            return false;
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "TURN TCP: too many connections");
            return false;
        };
        let (out_tx, out_rx) = mpsc::channel(256);
        {
            let mut peers = lock(&self.peers);
            // The same client address on two of our ports (the TURN TCP port and the
            // HTTPS port) would share one entry; keep the first.
            if peers.contains_key(&addr) {
                tracing::debug!(%addr, "TURN TCP: a client of this address is connected already");
                return false;
            }
            peers.insert(addr, out_tx);
        }
        tokio::spawn(serve_tcp(
            stream,
            addr,
            self.inbound.clone(),
            out_rx,
            self.peers.clone(),
            self.cancel.clone(),
            (permit, place),
        ));
        true
    }
}

impl TcpMux {
    /// A mux with no clients yet, reporting `local` as its address, and the intake that
    /// feeds it. Its clients' tasks end when `cancel` (server shutdown) fires. Only
    /// `cancel` stops it: see [`Conn::close`] below.
    pub(super) fn new(local: SocketAddr, cancel: CancellationToken) -> (Arc<Self>, TcpIntake) {
        let (in_tx, in_rx) = mpsc::channel(1024);
        let peers = Peers::default();
        let mux = Arc::new(TcpMux {
            local,
            inbound: tokio::sync::Mutex::new(in_rx),
            peers: peers.clone(),
        });
        let intake = TcpIntake {
            inbound: in_tx,
            peers,
            slots: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
            per_source: PerSource::default(),
            cancel,
        };
        (mux, intake)
    }
}

/// Accepts TCP clients on `listener` (`--turn-listen-tcp`) into `intake` until the
/// server shuts down.
pub(super) async fn accept(listener: TcpListener, intake: TcpIntake) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = intake.cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("TURN TCP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        intake.serve(stream, addr);
    }
}

/// Locks the peer map. A poisoned lock only means a task panicked mid-update; a map of
/// queues is still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One client: frames from its stream go to the mux's inbound queue, and its writer
/// queue goes to its stream, until either side ends, it idles out or the mux closes.
async fn serve_tcp<S>(
    stream: S,
    addr: SocketAddr,
    inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    peers: Peers,
    cancel: CancellationToken,
    _places: (tokio::sync::OwnedSemaphorePermit, SourcePlace),
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let reader = async {
        let mut frame = Vec::with_capacity(MAX_FRAME);
        let mut idle = FIRST_FRAME_TIMEOUT;
        loop {
            match tokio::time::timeout(idle, read_frame(&mut rd, &mut frame)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) | Err(_) => return,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, "TURN TCP read: {e}");
                    return;
                }
            }
            idle = TCP_IDLE_TIMEOUT;
            if frame.len() > MAX_FRAME {
                continue;
            }
            if inbound.send((frame.clone(), addr)).await.is_err() {
                return;
            }
        }
    };
    let writer = async {
        while let Some(mut frame) = outbound.recv().await {
            pad_for_stream(&mut frame);
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = cancel.cancelled() => {}
    }
    // TLS: a close_notify, then FIN; best effort.
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    // The allocation of this 5-tuple is left to expire (lifetime <= 10 min):
    // the crate has no API to delete a single allocation by 5-tuple.
    lock(&peers).remove(&addr);
}

/// Reads one STUN or ChannelData message off a TCP stream into `frame`.
/// Returns `Ok(false)` on clean EOF between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    frame: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut hdr = [0u8; 4];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    // The top two bits tell STUN (00) from ChannelData (01, channels
    // 0x4000-0x7FFF); anything else means we lost framing.
    let (body, keep) = match hdr[0] >> 6 {
        0 => (16 + len, 20 + len),
        1 => (len.div_ceil(4) * 4, 4 + len),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not STUN or ChannelData",
            ));
        }
    };
    frame.clear();
    frame.extend_from_slice(&hdr);
    frame.resize(4 + body, 0);
    r.read_exact(&mut frame[4..]).await?;
    // Drop ChannelData padding; the crate expects the exact length.
    frame.truncate(keep);
    Ok(true)
}

/// Over TCP, ChannelData must be padded to a multiple of four bytes
/// (RFC 5766 §11.5); over UDP the crate sends it unpadded.
pub fn pad_for_stream(frame: &mut Vec<u8>) {
    if frame.first().is_some_and(|b| b >> 6 == 1) {
        frame.resize(frame.len().div_ceil(4) * 4, 0);
    }
}

#[async_trait]
impl Conn for TcpMux {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other("TcpMux cannot connect".into()))
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut rx = self.inbound.lock().await;
        loop {
            let Some((frame, addr)) = rx.recv().await else {
                return Err(webrtc_util::Error::Other("TURN TCP listener closed".into()));
            };
            if let Some(dst) = buf.get_mut(..frame.len()) {
                dst.copy_from_slice(&frame);
                return Ok((frame.len(), addr));
            }
        }
    }
    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "TcpMux needs a destination".into(),
        ))
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let tx = lock(&self.peers).get(&target).cloned();
        // A client whose connection is gone keeps its allocation until it expires, and its
        // peer may go on sending: drop those packets quietly, as a UDP socket sends to a
        // host that left. (An error here becomes an ERROR line per packet in the crate.)
        let Some(tx) = tx else {
            return Ok(buf.len());
        };
        // try_send: a client that does not read must not stall the server's
        // single read loop; its media is dropped like on a full UDP buffer.
        let _ = tx.try_send(buf.to_vec());
        Ok(buf.len())
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    /// Does nothing. The `turn` crate hands every allocation the listener's connection
    /// as its "turn socket" and closes it when the allocation ends (a no-op for a UDP
    /// socket); here that would end the accept loop and every other client's connection
    /// (issue 11 defect 1). The mux is shared by all TCP clients, so it ends only with
    /// the server's shutdown token given to [`TcpMux::new`].
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_framing() {
        // ChannelData 0x4001 with 5 bytes, padded to 8 on the wire, then a
        // 20-byte STUN header with empty body.
        let mut wire = vec![0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        wire.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        wire.extend_from_slice(&[9; 12]);
        let mut r = &wire[..];
        let mut f = Vec::new();
        assert!(read_frame(&mut r, &mut f).await.expect("frame"));
        assert_eq!(f, [0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
        assert!(read_frame(&mut r, &mut f).await.expect("frame"));
        assert_eq!(f.len(), 20);
        assert!(!read_frame(&mut r, &mut f).await.expect("eof"));
        let mut bad = &[0xC0u8, 0, 0, 0][..];
        assert!(read_frame(&mut bad, &mut f).await.is_err());
        let mut cd = vec![0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
        pad_for_stream(&mut cd);
        assert_eq!(cd.len(), 12);
    }
}
