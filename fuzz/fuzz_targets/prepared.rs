//! Prepared-statement renaming (`prepared::translate`), fed as the relay feeds it: the complete
//! frames `scan_client` found, read by read.
//!
//! The rewritten region is itself well-framed (whole frames of client tags, ending exactly where
//! `translate` says), sends as many Syncs and Queries as the client did (each still gets its
//! one ReadyForQuery), passes every other frame (Execute, Flush, CopyData...) unchanged and in
//! order, and leaves the bytes after the region alone. A second view and server set, fed the
//! same reads through `translate_copying` only, give the same bytes at every read: the renaming
//! in place (`translate`'s steady state) and the general way agree.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::frontend::track::{scan_client, Tracker};
use pgmux::prepared::rewrite::{translate_copying, Position};
use pgmux::prepared::{translate, ClientStatements, ServerStatements};
use pgmux::protocol::frame::{is_frontend_tag, peek_header};

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut input)) = data.split_first() else {
        return;
    };
    let mut view = ClientStatements::default();
    let mut server = ServerStatements::default();
    server.limit = u32::from(head % 4);
    let (mut view2, mut server2) = (ClientStatements::default(), ServerStatements::default());
    server2.limit = server.limit;
    let mut t = Tracker::default();
    let mut buf = BytesMut::new();
    let mut answered = 0u32;
    // Reads of 1 to 64 bytes, sized by the high bits of the first byte.
    let step = usize::from(head >> 2) + 1;
    while !input.is_empty() {
        let n = step.min(input.len());
        buf.extend_from_slice(&input[..n]);
        input = &input[n..];
        let Ok(scan) = scan_client(&buf, 0, 1 << 20, &mut t) else {
            return;
        };
        let original = buf.to_vec();
        let at = Position {
            answered,
            pending: t.pending,
        };
        let mut copied = BytesMut::from(&original[..]);
        let new_end = translate(&mut buf, 0, scan.end, &mut view, &mut server, at);
        let copied_end = translate_copying(&mut copied, 0, scan.end, &mut view2, &mut server2, at);
        assert_eq!(&buf[..new_end], &copied[..copied_end], "in place and copying differ");
        check(&original[..scan.end], &buf[..new_end]);
        assert_eq!(&buf[new_end..], &original[scan.end..], "bytes after the region");
        let _ = buf.split_to(new_end);
        // The server answers everything at once, between reads.
        answered = answered.wrapping_add(t.pending);
        t.pending = 0;
        server.replies.clear();
        server2.replies.clear();
        if scan.terminate {
            return;
        }
    }
});

fn frames(mut b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (tag, total) = peek_header(b, usize::MAX >> 1)
            .expect("valid header")
            .unwrap_or_else(|| panic!("partial header in rewritten region: {b:?}"));
        assert!(total <= b.len(), "partial frame in rewritten region");
        assert!(is_frontend_tag(tag), "tag {tag}");
        out.push((tag, &b[..total]));
        b = &b[total..];
    }
    out
}

fn check(before: &[u8], after: &[u8]) {
    let (a, b) = (frames(before), frames(after));
    let count = |f: &[(u8, &[u8])], tag: u8| f.iter().filter(|(t, _)| *t == tag).count();
    for tag in [b'S', b'Q', b'F', b'H', b'E', b'd', b'c', b'f'] {
        assert_eq!(count(&a, tag), count(&b, tag), "count of {:?}", tag as char);
    }
    // Frames translate never touches go through verbatim, in order.
    let untouched = |f: &[(u8, &[u8])]| -> Vec<Vec<u8>> {
        f.iter()
            .filter(|(t, _)| !matches!(t, b'P' | b'B' | b'D' | b'C' | b'Q'))
            .map(|(_, fr)| fr.to_vec())
            .collect()
    };
    assert_eq!(untouched(&a), untouched(&b));
}
