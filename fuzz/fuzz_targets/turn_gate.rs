//! Any datagram a TURN listener can receive, through the gatekeeper that answers
//! unauthenticated and refused requests itself: it never panics, and every reply it sends
//! is a well-formed STUN error response to the request's own transaction.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use duet::turn::fuzzing::Gate;
use libfuzzer_sys::fuzz_target;

fn gate() -> &'static (tokio::runtime::Runtime, Gate) {
    static GATE: OnceLock<(tokio::runtime::Runtime, Gate)> = OnceLock::new();
    GATE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        (rt, Gate::new())
    })
}

fuzz_target!(|input: (u16, &[u8])| {
    let (port, datagram) = input;
    let (rt, gate) = gate();
    // Sources vary, so the per-source limiter does not silence the run.
    let src = SocketAddr::from(([198, 51, 100, (port >> 8) as u8], port | 1));
    let Some(reply) = rt.block_on(gate.check(datagram, src)) else {
        return;
    };
    // A STUN header: type, length, magic cookie, the request's transaction id.
    assert!(reply.len() >= 20 && reply.len() % 4 == 0, "short reply");
    assert_eq!(&reply[4..8], &[0x21, 0x12, 0xA4, 0x42], "no magic cookie");
    assert_eq!(&reply[8..20], &datagram[8..20], "another transaction's id");
    let class = ((reply[0] & 0x01) << 1) | ((reply[1] & 0x10) >> 4);
    assert_eq!(class, 0b11, "a reply that is not an error response");
    let length = usize::from(u16::from_be_bytes([reply[2], reply[3]]));
    assert_eq!(length + 20, reply.len(), "length field");
});
