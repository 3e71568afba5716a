//! Server framing (`frontend::track::ServerScan::scan`).
//!
//! - Agreement with postgres-protocol's backend decoder: over the messages it decodes from the
//!   start of the bytes, the scan passes all of them without error, counts one answer per
//!   ReadyForQuery (status as decoded), and reports every ParameterStatus with the same name
//!   and value; where the decoder refuses a length under 4, so does the scan (one over 2 GiB, below
//!   zero as the protocol's Int32, pgmux passes through as a frame that long).
//! - Reads may split the bytes anywhere: scanning them in fuzz-chosen pieces ends at the same
//!   place with the same counts as one scan of the whole.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::frontend::track::{ServerScan, ServerStop, Tracker};
use postgres_protocol::message::backend::{Header, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, buf)) = data.split_first() else {
        return;
    };
    agreement(buf);
    pieces(cuts, buf);
});

fn agreement(buf: &[u8]) {
    let mut rest = BytesMut::from(buf);
    let (mut decoded_end, mut ready, mut status, mut params) = (0, 0u32, b'I', Vec::new());
    let mut utf8 = true;
    let refused_length = loop {
        let before = rest.len();
        // (Message::parse consumes a frame whose body it then refuses: look at the header first.)
        if Header::parse(&rest).is_err() {
            // Under 4, or over 2 GiB (an Int32 below zero): pgmux refuses the first, and streams
            // the second through as a (never ending) frame: see the report on branch fuzz.
            break rest.len() >= 5 && u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) < 4;
        }
        // Nor on an incomplete one: it reserves room for the whole declared length (up to 4 GiB).
        if let Ok(Some(h)) = Header::parse(&rest) {
            if h.len() as usize + 1 > rest.len() {
                break false;
            }
        }
        match Message::parse(&mut rest) {
            Ok(Some(m)) => {
                match m {
                    Message::ReadyForQuery(body) => {
                        ready += 1;
                        status = body.status();
                    }
                    Message::ParameterStatus(body) => match (body.name(), body.value()) {
                        (Ok(n), Ok(v)) => params.push((n.to_owned(), v.to_owned())),
                        _ => utf8 = false,
                    },
                    _ => {}
                }
                decoded_end += before - rest.len();
            }
            Ok(None) => break false,
            // A bad length, or a body postgres-protocol does not like (pgmux reads few).
            Err(_) => break false,
        }
    };
    // postgres-protocol reads ParameterStatus as UTF-8: the comparison is of those.
    let mut t = Tracker {
        pending: ready,
        ..Tracker::default()
    };
    let mut seen = Vec::new();
    let mut scan = ServerScan::default();
    let (end, stop) = scan
        .scan(&buf[..decoded_end], 0, &mut t, false, false, |n, v| {
            seen.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })
        .unwrap_or_else(|e| panic!("scan refused ({e}) what postgres-protocol decodes: {buf:?}"));
    assert_eq!((end, stop), (decoded_end, ServerStop::More));
    assert_eq!(scan.skip, 0);
    assert_eq!(scan.answered, ready);
    assert_eq!(t.pending, 0);
    if ready > 0 {
        assert_eq!(t.status, status);
    }
    if utf8 {
        assert_eq!(seen, params);
    }
    if refused_length {
        let mut scan = ServerScan::default();
        let r = scan.scan(buf, 0, &mut Tracker::default(), false, false, |_, _| {});
        assert!(r.is_err(), "length postgres-protocol refuses was accepted: {buf:?}");
    }
}

/// One scan of everything (as far as the scan goes), then the same bytes arriving in pieces.
fn pieces(cuts: u8, buf: &[u8]) {
    let run = |sizes: &mut dyn Iterator<Item = usize>| {
        let mut scan = ServerScan::default();
        let mut t = Tracker {
            pending: u32::MAX / 2,
            ..Tracker::default()
        };
        let mut params = 0usize;
        let (mut from, mut have) = (0, 0);
        loop {
            have = (have + sizes.next().unwrap_or(buf.len())).min(buf.len());
            match scan.scan(&buf[..have], from, &mut t, false, false, |_, _| params += 1) {
                Ok((end, ServerStop::More)) => {
                    assert!(end >= from && end <= have);
                    from = end;
                }
                Ok(other) => panic!("unexpected stop {other:?}"),
                Err(_) => return None,
            }
            if have == buf.len() {
                return Some((from, scan.answered, params, scan.skip, t));
            }
        }
    };
    let whole = run(&mut std::iter::empty());
    let step = usize::from(cuts % 16) + 1;
    let pieces = run(&mut std::iter::repeat(step));
    match (whole, pieces) {
        (Some(w), Some(p)) => {
            assert_eq!((w.0, w.1, w.2, w.3), (p.0, p.1, p.2, p.3), "pieces of {step}");
            assert_eq!(w.4, p.4);
        }
        // An error in one order is one in the other (the piecewise scan stops at it, or later
        // would): both refuse the bytes.
        (None, None) => {}
        (w, p) => panic!("whole {:?} vs pieces of {step} {:?}", w.is_some(), p.is_some()),
    }
}
