//! Realistic signaling payloads: a browser-like SDP of a requested size and the ICE
//! candidates a browser trickles (host, srflx, relay; UDP and TCP).

use serde_json::{Value, json};

/// The candidate line inside relay probes (a typical server-reflexive candidate).
pub const PROBE_CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 198.51.100.7 \
     54321 typ srflx raddr 192.168.1.20 rport 54321 generation 0 ufrag EsAw network-cost 999";

/// A Chrome-like audio+video SDP of at least `min_bytes` bytes (padded with further
/// codec lines, as a browser offering more codecs would be).
pub fn sdp(kind: &str, min_bytes: usize) -> String {
    let setup = if kind == "offer" { "actpass" } else { "active" };
    let mut s = String::with_capacity(min_bytes + 512);
    s.push_str(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS stream0\r\n",
    );
    for (mid, media) in [(0, "audio"), (1, "video")] {
        let (pts, codecs): (&str, &[(&str, &str)]) = if media == "audio" {
            (
                "111 63 9 0 8 13 110 126",
                &[
                    ("111", "opus/48000/2"),
                    ("63", "red/48000/2"),
                    ("9", "G722/8000"),
                    ("0", "PCMU/8000"),
                    ("8", "PCMA/8000"),
                    ("13", "CN/8000"),
                    ("110", "telephone-event/48000"),
                    ("126", "telephone-event/8000"),
                ],
            )
        } else {
            (
                "96 97 98 99 100 101 45 46",
                &[
                    ("96", "VP8/90000"),
                    ("97", "rtx/90000"),
                    ("98", "VP9/90000"),
                    ("99", "rtx/90000"),
                    ("100", "H264/90000"),
                    ("101", "rtx/90000"),
                    ("45", "AV1/90000"),
                    ("46", "rtx/90000"),
                ],
            )
        };
        s.push_str(&format!(
            "m={media} 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=ice-options:trickle\r\n\
             a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\n\
             a=setup:{setup}\r\na=mid:{mid}\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
             a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
             a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\n\
             a=msid:stream0 track{mid}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n"
        ));
        for (pt, codec) in codecs {
            s.push_str(&format!("a=rtpmap:{pt} {codec}\r\n"));
            if !codec.starts_with("rtx") && media == "video" {
                s.push_str(&format!(
                    "a=rtcp-fb:{pt} goog-remb\r\na=rtcp-fb:{pt} transport-cc\r\n\
                     a=rtcp-fb:{pt} ccm fir\r\na=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n"
                ));
            }
        }
        s.push_str(&format!(
            "a=ssrc:{0} cname:4TOk42mSjXCkVIa6\r\na=ssrc:{0} msid:stream0 track{mid}\r\n",
            1_000_000 + mid
        ));
    }
    // Pad with further H264 profiles, as a browser with hardware codecs offers.
    let mut pt = 102;
    while s.len() < min_bytes {
        s.push_str(&format!(
            "a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        ));
        pt += 1;
    }
    s
}

/// The `i`-th of a side's trickled ICE candidates, as `RTCIceCandidate.toJSON()` gives it.
pub fn candidate(i: usize) -> Value {
    let port = 50_000 + i;
    let line = match i % 4 {
        0 => format!(
            "candidate:{} 1 udp 2122260223 192.168.1.20 {port} typ host generation 0 ufrag EsAw network-id 1 network-cost 10",
            1_467_250_027 + i
        ),
        1 => format!(
            "candidate:{} 1 udp 1686052607 198.51.100.7 {port} typ srflx raddr 192.168.1.20 rport {port} generation 0 ufrag EsAw network-id 1 network-cost 10",
            842_163_049 + i
        ),
        2 => format!(
            "candidate:{} 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active generation 0 ufrag EsAw network-id 1 network-cost 10",
            2_000_000_000 + i
        ),
        _ => format!(
            "candidate:{} 1 udp 41885439 203.0.113.5 {port} typ relay raddr 198.51.100.7 rport {port} generation 0 ufrag EsAw network-id 1 network-cost 10",
            3_000_000_000u64 + i as u64
        ),
    };
    json!({
        "candidate": line,
        "sdpMid": if i.is_multiple_of(2) { "0" } else { "1" },
        "sdpMLineIndex": i % 2,
        "usernameFragment": "EsAw",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_reaches_the_requested_size() {
        let base = sdp("offer", 0).len();
        assert!(base > 1500, "base SDP is {base} bytes");
        for want in [0, 3000, 6000] {
            let s = sdp("answer", want);
            assert!(s.len() >= want && s.len() < want.max(base) + 200);
            assert!(s.starts_with("v=0\r\n") && s.ends_with("\r\n"));
        }
    }

    #[test]
    fn candidates_look_like_browser_ones() {
        for i in 0..10 {
            let c = candidate(i);
            let line = c["candidate"].as_str().unwrap();
            assert!(line.starts_with("candidate:"));
            assert!(c["sdpMLineIndex"].is_u64());
        }
    }
}
