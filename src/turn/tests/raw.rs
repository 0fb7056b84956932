//! A hand-rolled TURN client for tests: one request, one answer, every attribute of the
//! answer visible. The `turn` crate's client hides error codes behind strings and retries
//! on its own, which is exactly what the regression tests need to see through.

use std::net::SocketAddr;
use std::time::Duration;

use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_REFRESH, Message, MessageType, Method, Setter,
};
use stun::textattrs::{Nonce, Realm, TextAttribute, Username};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use turn::proto::PROTO_UDP;
use turn::proto::channum::ChannelNumber;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::reqtrans::RequestedTransport;

use crate::ice::TurnCredentials;
use crate::turn::read_frame;

enum Wire {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

/// The outcome of one request: the answer's class and error code (0 on success), and
/// the REALM and NONCE it carried, if any.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) success: bool,
    pub(crate) code: u16,
    pub(crate) realm: Option<String>,
    pub(crate) nonce: Option<String>,
}

pub(crate) struct Raw {
    wire: Wire,
    creds: TurnCredentials,
    /// REALM and NONCE of the last challenge, sent with every later request.
    realm: String,
    nonce: Option<String>,
}

impl Raw {
    pub(crate) async fn udp_from(local: &str, server: SocketAddr, creds: TurnCredentials) -> Self {
        let sock = UdpSocket::bind(local).await.expect("bind");
        Self::new(Wire::Udp(sock, server), creds)
    }

    pub(crate) async fn udp(server: SocketAddr, creds: TurnCredentials) -> Self {
        Self::udp_from("127.0.0.1:0", server, creds).await
    }

    pub(crate) async fn tcp(server: SocketAddr, creds: TurnCredentials) -> Self {
        let stream = TcpStream::connect(server).await.expect("connect");
        Self::new(Wire::Tcp(stream), creds)
    }

    fn new(wire: Wire, creds: TurnCredentials) -> Self {
        Raw {
            wire,
            creds,
            realm: "duet".into(),
            nonce: None,
        }
    }

    /// Sends `method` with `extra` attributes, signed when a nonce is known; after a
    /// 401 or 438 challenge it retries once with the new nonce, as a client does.
    pub(crate) async fn request(
        &mut self,
        method: Method,
        extra: impl Fn() -> Vec<Box<dyn Setter>>,
    ) -> Result<Answer, String> {
        let mut answer = self.once(method, &extra, true).await?;
        if matches!(answer.code, 401 | 438) && answer.nonce.is_some() {
            let retried_with = answer.nonce.clone();
            if let Some(realm) = answer.realm.clone() {
                self.realm = realm;
            }
            self.nonce = retried_with;
            answer = self.once(method, &extra, true).await?;
        }
        Ok(answer)
    }

    /// Sends one request: signed if `sign` and a nonce is known, else bare.
    pub(crate) async fn once(
        &mut self,
        method: Method,
        extra: &dyn Fn() -> Vec<Box<dyn Setter>>,
        sign: bool,
    ) -> Result<Answer, String> {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        setters.extend(extra());
        if let (true, Some(nonce)) = (sign, &self.nonce) {
            setters.push(Box::new(Username::new(
                ATTR_USERNAME,
                self.creds.username.clone(),
            )));
            setters.push(Box::new(Realm::new(ATTR_REALM, self.realm.clone())));
            setters.push(Box::new(Nonce::new(ATTR_NONCE, nonce.clone())));
            setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
                self.creds.username.clone(),
                self.realm.clone(),
                self.creds.credential.clone(),
            )));
        }
        setters.push(Box::new(FINGERPRINT));
        let mut m = Message::new();
        m.build(&setters).map_err(|e| e.to_string())?;
        self.send(&m.raw).await?;
        let reply = self.recv_for(&m).await?;
        let code = if reply.typ.class == CLASS_ERROR_RESPONSE {
            let mut e = ErrorCodeAttribute::default();
            e.get_from(&reply).map_err(|e| e.to_string())?;
            e.code.0
        } else {
            0
        };
        let text = |attr| {
            TextAttribute::get_from_as(&reply, attr)
                .ok()
                .map(|t| t.text)
        };
        Ok(Answer {
            success: reply.typ.class == CLASS_SUCCESS_RESPONSE,
            code,
            realm: text(ATTR_REALM),
            nonce: text(ATTR_NONCE),
        })
    }

    pub(crate) async fn send(&mut self, raw: &[u8]) -> Result<(), String> {
        match &mut self.wire {
            Wire::Udp(sock, server) => sock
                .send_to(raw, *server)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Wire::Tcp(stream) => stream.write_all(raw).await.map_err(|e| e.to_string()),
        }
    }

    /// Reads until the answer to `req` arrives (skipping other transactions' answers).
    async fn recv_for(&mut self, req: &Message) -> Result<Message, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let raw = timeout(deadline - tokio::time::Instant::now(), self.recv())
                .await
                .map_err(|_| "no answer in 3 s".to_string())??;
            let mut m = Message::new();
            if m.unmarshal_binary(&raw).is_ok() && m.transaction_id == req.transaction_id {
                return Ok(m);
            }
        }
    }

    async fn recv(&mut self) -> Result<Vec<u8>, String> {
        match &mut self.wire {
            Wire::Udp(sock, _) => {
                let mut buf = vec![0u8; 1500];
                let (n, _) = sock.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
                buf.truncate(n);
                Ok(buf)
            }
            Wire::Tcp(stream) => {
                let mut frame = Vec::new();
                match read_frame(stream, &mut frame).await {
                    Ok(true) => Ok(frame),
                    Ok(false) => Err("connection closed by the server".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    pub(crate) async fn allocate(&mut self) -> Result<Answer, String> {
        self.request(METHOD_ALLOCATE, || {
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })]
        })
        .await
    }

    pub(crate) async fn refresh(&mut self, lifetime: Duration) -> Result<Answer, String> {
        self.request(METHOD_REFRESH, move || vec![Box::new(Lifetime(lifetime))])
            .await
    }

    pub(crate) async fn channel_bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
    ) -> Result<Answer, String> {
        self.request(METHOD_CHANNEL_BIND, move || {
            vec![
                Box::new(ChannelNumber(number)),
                Box::new(PeerAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                }),
            ]
        })
        .await
    }
}
