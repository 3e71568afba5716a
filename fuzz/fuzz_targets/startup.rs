//! Startup packets (`protocol::startup::parse_startup`, read by `frontend::startup`).
//!
//! A packet is taken whole or not at all (its length is the one it declares, within the
//! buffer); a StartupMessage's parameters, written again by postgres-protocol's encoder, read
//! back the same, and for protocol 3.0 are the very bytes the client sent.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::protocol::startup::{parse_startup, StartupPacket, MAX_STARTUP_LEN};
use postgres_protocol::message::frontend;

fuzz_target!(|buf: &[u8]| {
    let declared = buf
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
    match parse_startup(buf) {
        Ok(None) => assert!(declared.is_none_or(|d| d > buf.len())),
        Ok(Some((packet, len))) => {
            assert_eq!(Some(len), declared);
            assert!((8..=MAX_STARTUP_LEN).contains(&len) && len <= buf.len());
            if let StartupPacket::Startup { minor, params } = packet {
                let mut again = BytesMut::new();
                frontend::startup_message(params.iter().map(|(n, v)| (n.as_str(), v.as_str())), &mut again)
                    .expect("parameters hold no NUL");
                if minor == 0 {
                    assert_eq!(&again[..], &buf[..len]);
                }
                match parse_startup(&again) {
                    Ok(Some((StartupPacket::Startup { minor: 0, params: p2 }, l2))) => {
                        assert_eq!(l2, again.len());
                        assert_eq!(p2, params);
                    }
                    other => panic!("re-encoded startup message reads as {other:?}"),
                }
            }
        }
        Err(_) => {}
    }
});
