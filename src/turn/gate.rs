//! The gatekeeper: looks at every datagram a TURN listener receives before the `turn`
//! crate does, and answers the requests the crate would accept but duet must refuse:
//! permissions to denied peers (403), allocations over the per-user quota (486), and
//! unauthenticated requests beyond a rate.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};

use ::turn::server::Server;
use stun::attributes::{ATTR_CHANNEL_NUMBER, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{
    CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_FORBIDDEN, ErrorCode, ErrorCodeAttribute,
};
use stun::fingerprint::FINGERPRINT;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, Message, MessageType, Setter,
};

use super::filter::{Filter, Inbound};
use super::policy::PeerPolicy;
use super::relay::TokenBucket;
use crate::ice;

/// Unauthenticated requests per second and listener; every legitimate
/// allocation needs one, so this is far above what calls need.
const UNAUTHENTICATED_PER_SEC: u64 = 200;

/// The [`Filter`] on each listener connection: answers requests the crate would accept
/// but duet must refuse, before the crate's read loop sees them.
pub(super) struct Gatekeeper {
    policy: PeerPolicy,
    /// Allocations one user may hold (0 = unlimited).
    user_quota: usize,
    /// The server whose allocation table the quota is counted from. Filled in once the
    /// server exists (it is built from the gatekept connections), and weak so that the
    /// server and its connections do not keep each other alive.
    server: Arc<OnceLock<Weak<Server>>>,
    /// Requests without USERNAME (the first leg of every authentication).
    /// The crate stores a nonce for each 401 it sends and only forgets it
    /// when a client comes back with it, so a flood of spoofed unauthenticated
    /// Allocates would grow that map without bound; this caps the growth rate.
    unauthenticated: TokenBucket,
}

impl Gatekeeper {
    pub(super) fn new(
        policy: PeerPolicy,
        user_quota: usize,
        server: Arc<OnceLock<Weak<Server>>>,
    ) -> Self {
        Gatekeeper {
            policy,
            user_quota,
            server,
            unauthenticated: TokenBucket::new(UNAUTHENTICATED_PER_SEC),
        }
    }
}

impl Filter for Gatekeeper {
    async fn inbound(&self, datagram: &[u8], src: SocketAddr) -> Inbound {
        // ChannelData and garbage go straight to the crate, which validates them.
        if !stun::message::is_message(datagram) {
            return Inbound::Pass;
        }
        let mut m = Message::new();
        if m.unmarshal_binary(datagram).is_err() || m.typ.class != CLASS_REQUEST {
            return Inbound::Pass;
        }
        let has_username = m.attributes.0.iter().any(|a| a.typ == ATTR_USERNAME);
        if !has_username && m.typ.method != METHOD_BINDING && !self.unauthenticated.take(1) {
            return Inbound::Drop;
        }
        if m.typ.method == METHOD_CHANNEL_BIND && !channel_number_valid(&m) {
            tracing::debug!(%src, "TURN: refused ChannelBind outside 0x4000-0x7FFF");
            return refuse(&m, CODE_BAD_REQUEST, "Bad Request: channel number");
        }
        if m.typ.method == METHOD_CREATE_PERMISSION || m.typ.method == METHOD_CHANNEL_BIND {
            for attr in m
                .attributes
                .0
                .iter()
                .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            {
                let allowed = decode_xor_addr(&attr.value, &m.transaction_id.0)
                    .is_some_and(|peer| self.policy.allows(peer.ip()));
                if !allowed {
                    tracing::info!(%src, "TURN: refused permission to a denied peer address");
                    return refuse(&m, CODE_FORBIDDEN, "Forbidden IP");
                }
            }
        } else if m.typ.method == METHOD_ALLOCATE && self.user_quota > 0 {
            // The first Allocate carries no USERNAME (it gets the 401 with the
            // nonce); only count once the client identifies itself.
            let Some(user) = m.attributes.0.iter().find(|a| a.typ == ATTR_USERNAME) else {
                return Inbound::Pass;
            };
            let user = String::from_utf8_lossy(&user.value);
            let name = ice::username_name(&user);
            let Some(server) = self.server.get().and_then(Weak::upgrade) else {
                return Inbound::Pass;
            };
            match server.get_allocations_info(None).await {
                Ok(infos) => {
                    let held = infos
                        .values()
                        // A retransmitted Allocate for an existing allocation
                        // must get the crate's normal answer, not 486.
                        .filter(|i| {
                            i.five_tuple.src_addr != src && ice::username_name(&i.username) == name
                        })
                        .count();
                    if held >= self.user_quota {
                        tracing::info!(%src, name, held, "TURN: allocation quota reached");
                        return refuse(&m, CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached");
                    }
                }
                Err(e) => tracing::warn!("TURN: cannot count allocations: {e}"),
            }
        }
        Inbound::Pass
    }
}

/// Whether a ChannelBind carries a CHANNEL-NUMBER in 0x4000-0x7FFF. RFC 5766 §11.2
/// (the range the crate and our TCP framing use; RFC 8656 §12 narrows it to 0x4FFF):
/// anything else "MUST" get 400, and the crate accepts it (issue 11 defect 3), after
/// which ChannelData on that number could never be told from STUN on a stream.
fn channel_number_valid(m: &Message) -> bool {
    m.attributes
        .0
        .iter()
        .find(|a| a.typ == ATTR_CHANNEL_NUMBER)
        .and_then(|a| a.value.get(..2))
        .is_some_and(|v| (0x4000..=0x7FFF).contains(&u16::from_be_bytes([v[0], v[1]])))
}

/// Unsigned error response: the client's request may not even have been
/// authenticated yet, and RFC 5389 lets 4xx answers go without integrity.
fn refuse(req: &Message, code: ErrorCode, reason: &str) -> Inbound {
    let mut msg = Message::new();
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(req.transaction_id),
        Box::new(MessageType::new(req.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
        Box::new(FINGERPRINT),
    ];
    match msg.build(&setters) {
        Ok(()) => Inbound::Answer(msg.raw),
        // Cannot happen for these fixed attributes; refuse silently anyway.
        Err(_) => Inbound::Drop,
    }
}

/// Decodes an XOR-PEER-ADDRESS value (RFC 5389 §15.2) without trusting it.
fn decode_xor_addr(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    const COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();
    let family = *v.get(1)?;
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ 0x2112;
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&COOKIE);
    key[4..].copy_from_slice(txid);
    let ip = match family {
        0x01 => {
            let raw: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            IpAddr::from(std::array::from_fn::<u8, 4, _>(|i| raw[i] ^ key[i]))
        }
        0x02 => {
            let raw: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            IpAddr::from(std::array::from_fn::<u8, 16, _>(|i| raw[i] ^ key[i]))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_peer_address_decoding() {
        use stun::xoraddr::XorMappedAddress;
        for addr in ["192.0.2.1:32853", "[2001:db8::1]:443"] {
            let addr: SocketAddr = addr.parse().expect("addr");
            let mut m = Message::new();
            m.new_transaction_id().expect("txid");
            XorMappedAddress {
                ip: addr.ip(),
                port: addr.port(),
            }
            .add_to_as(&mut m, ATTR_XOR_PEER_ADDRESS)
            .expect("encode");
            let attr = m
                .attributes
                .0
                .iter()
                .find(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
                .expect("attr");
            assert_eq!(
                decode_xor_addr(&attr.value, &m.transaction_id.0),
                Some(addr)
            );
        }
        assert_eq!(decode_xor_addr(&[0, 1, 0], &[0; 12]), None);
        assert_eq!(decode_xor_addr(&[0, 9, 0, 0, 1, 2, 3, 4], &[0; 12]), None);
    }
}
