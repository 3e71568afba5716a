//! The way there and back together: client frames through `translate`, the server's replies
//! through `on_reply`, as the relay runs them.

use super::rewrite::Position;
use super::statement::{self, Statement};
use super::{on_reply, translate, ClientStatements, ServerStatements};
use crate::protocol::frame::{peek_header, read_cstr};
use bytes::BytesMut;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

fn bind(stmt: &str) -> Vec<u8> {
    frame(b'B', format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes())
}

fn describe(stmt: &str) -> Vec<u8> {
    frame(b'D', format!("S{stmt}\0").as_bytes())
}

fn close(stmt: &str) -> Vec<u8> {
    frame(b'C', format!("S{stmt}\0").as_bytes())
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

fn query(sql: &str) -> Vec<u8> {
    frame(b'Q', format!("{sql}\0").as_bytes())
}

fn error(code: &str, message: &str) -> Vec<u8> {
    frame(b'E', format!("SERROR\0C{code}\0M{message}\0\0").as_bytes())
}

/// Tags, with the statement a P/B/D/C names (`x` for a pooler-wide name) and a Query's text.
fn describe_frames(buf: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Ok(Some((tag, total))) = peek_header(rest, usize::MAX >> 1) {
        let body = &rest[5..total];
        let mut pos = 0;
        let name = match tag {
            b'P' => read_cstr(body, &mut pos),
            b'B' => read_cstr(body, &mut pos).and_then(|_| read_cstr(body, &mut pos)),
            b'D' | b'C' if body.first() == Some(&b'S') => read_cstr(&body[1..], &mut pos),
            b'E' => body.split(|&b| b == 0).find_map(|f| f.strip_prefix(b"M")),
            b'Q' | b'C' => body.split(|&b| b == 0).next(),
            _ => None,
        };
        let name = name.map(|n| {
            let n = String::from_utf8_lossy(n).into_owned();
            if n.starts_with("pgmux_") && n.len() == statement::NAME_LEN {
                "x".to_owned()
            } else {
                n
            }
        });
        out.push(match name {
            Some(n) => format!("{}:{n}", tag as char),
            None => (tag as char).to_string(),
        });
        rest = &rest[total..];
    }
    out
}

#[derive(Default)]
struct Link {
    view: ClientStatements,
    server: ServerStatements,
    /// ReadyForQuery seen, and Syncs/Queries sent.
    answered: u32,
    sent: u32,
}

impl Link {
    fn new(limit: u32) -> Link {
        let mut link = Link::default();
        link.server.limit = limit;
        link
    }

    fn send(&mut self, frames: &[Vec<u8>]) -> Vec<String> {
        let bytes = frames.concat();
        self.sent += frames.iter().filter(|f| matches!(f[0], b'S' | b'Q')).count() as u32;
        let mut buf = BytesMut::from(&bytes[..]);
        buf.extend_from_slice(b"tail");
        let at = Position {
            answered: self.answered,
            pending: self.sent - self.answered,
        };
        let end = translate(&mut buf, 0, bytes.len(), &mut self.view, &mut self.server, at);
        assert_eq!(&buf[end..], b"tail", "bytes after the region stay as they were");
        describe_frames(&buf[..end])
    }

    fn receive(&mut self, frames: &[Vec<u8>]) -> Vec<String> {
        let mut buf = BytesMut::from(&frames.concat()[..]);
        let mut pos = 0;
        while let Ok(Some((tag, total))) = peek_header(&buf[pos..], usize::MAX >> 1) {
            if tag == b'Z' {
                self.answered += 1;
                pos += total;
            } else {
                pos = on_reply(&mut buf, pos, &mut self.view, &mut self.server, self.answered);
            }
        }
        describe_frames(&buf)
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const Z: &[u8] = b"Z\0\0\0\x05I";

fn z() -> Vec<u8> {
    Z.to_vec()
}

fn tagged(tag: u8) -> Vec<u8> {
    frame(tag, b"")
}

#[test]
fn parse_becomes_close_and_parse_and_only_the_parse_is_answered() {
    let mut l = Link::new(10);
    let sent = l.send(&[parse("s1", "SELECT 1"), bind("s1"), sync()]);
    assert_eq!(sent, strs(&["C:x", "P:x", "B:x", "S"]));
    let got = l.receive(&[tagged(b'3'), tagged(b'1'), tagged(b'2'), z()]);
    assert_eq!(got, strs(&["1", "2", "Z"]));
    // The server has it now: a Bind is renamed, nothing injected.
    assert_eq!(l.send(&[bind("s1"), sync()]), strs(&["B:x", "S"]));
    assert!(l.server.replies.is_empty());
}

#[test]
fn a_server_that_lacks_the_statement_gets_it_injected_and_the_reply_swallowed() {
    let mut l = Link::new(10);
    l.send(&[parse("s1", "SELECT 1"), sync()]);
    l.receive(&[tagged(b'3'), tagged(b'1'), z()]);
    // Another server: same client view, empty set.
    l.server = ServerStatements::default();
    l.server.limit = 10;
    let sent = l.send(&[describe("s1"), bind("s1"), sync()]);
    assert_eq!(sent, strs(&["C:x", "P:x", "D:x", "B:x", "S"]));
    let got = l.receive(&[
        tagged(b'3'),
        tagged(b'1'),
        tagged(b't'),
        tagged(b'n'),
        tagged(b'2'),
        z(),
    ]);
    assert_eq!(got, strs(&["t", "n", "2", "Z"]));
}

#[test]
fn unknown_names_and_unnamed_statements_pass_untouched() {
    let mut l = Link::new(10);
    let sent = l.send(&[
        parse("", "SELECT 1"),
        bind(""),
        describe("nope"),
        bind("nope"),
        close("nope"),
        sync(),
    ]);
    assert_eq!(sent, strs(&["P:", "B:", "D:nope", "B:nope", "C:nope", "S"]));
    assert!(l.server.replies.is_empty());
}

#[test]
fn a_failed_parse_leaves_nothing_behind() {
    let mut l = Link::new(10);
    l.send(&[parse("s1", "SELEC 1"), bind("s1"), sync()]);
    let got = l.receive(&[tagged(b'3'), error("42601", "syntax error"), z()]);
    assert_eq!(got, strs(&["E:syntax error", "Z"]));
    assert!(l.view.is_empty() && l.server.is_empty() && l.server.replies.is_empty());
    // So the name is free again.
    assert_eq!(l.send(&[parse("s1", "SELECT 1"), sync()]), strs(&["C:x", "P:x", "S"]));
}

#[test]
fn an_error_before_an_injected_parse_skips_it() {
    let mut l = Link::new(10);
    l.send(&[parse("s1", "SELECT 1"), sync()]);
    l.receive(&[tagged(b'3'), tagged(b'1'), z()]);
    l.server = ServerStatements::default();
    l.server.limit = 10;
    let sent = l.send(&[bind("nope"), bind("s1"), sync()]);
    assert_eq!(sent, strs(&["B:nope", "C:x", "P:x", "B:x", "S"]));
    let got = l.receive(&[error("26000", "prepared statement \"nope\" does not exist"), z()]);
    assert_eq!(got.len(), 2);
    assert!(
        l.server.is_empty(),
        "the skipped Parse is not taken to be on the server"
    );
    assert_eq!(l.view.len(), 1, "the client's own statement stays");
}

#[test]
fn a_name_in_use_gets_42p05_from_the_probe() {
    let mut l = Link::new(10);
    l.send(&[parse("s1", "SELECT 1"), sync()]);
    l.receive(&[tagged(b'3'), tagged(b'1'), z()]);
    let sent = l.send(&[parse("s1", "SELECT 2"), sync()]);
    assert_eq!(sent, strs(&["B:pgmux_probe", "S"]));
    let probe_error = error("26000", "prepared statement \"pgmux_probe\" does not exist");
    let got = l.receive(&[probe_error, z()]);
    assert_eq!(got, strs(&["E:prepared statement \"s1\" already exists", "Z"]));
    assert_eq!(l.view.len(), 1);
}

#[test]
fn close_and_deallocate_act_on_the_view() {
    let mut l = Link::new(10);
    l.send(&[parse("a", "SELECT 1"), parse("b", "SELECT 2"), sync()]);
    l.receive(&[tagged(b'3'), tagged(b'1'), tagged(b'3'), tagged(b'1'), z()]);
    assert_eq!(l.send(&[close("a"), sync()]), strs(&["C:a", "S"]));
    assert_eq!(l.receive(&[tagged(b'3'), z()]), strs(&["3", "Z"]));
    assert_eq!(l.view.len(), 1);
    assert_eq!(l.send(&[query("DEALLOCATE b")]), strs(&["Q:"]));
    let got = l.receive(&[tagged(b'I'), z()]);
    assert_eq!(got, strs(&["C:DEALLOCATE", "Z"]));
    assert!(l.view.is_empty());
    assert_eq!(l.server.len(), 2, "pooler-wide statements stay on the server");
}

#[test]
fn discard_all_empties_both_sides_and_an_error_brings_the_view_back() {
    let mut l = Link::new(10);
    l.send(&[parse("a", "SELECT 1"), sync()]);
    l.receive(&[tagged(b'3'), tagged(b'1'), z()]);
    assert_eq!(l.send(&[query("DISCARD ALL")]), strs(&["Q:DISCARD ALL"]));
    assert!(l.view.is_empty() && l.server.is_empty());
    l.receive(&[error("25001", "DISCARD ALL cannot run inside a transaction block"), z()]);
    assert_eq!(l.view.len(), 1);
    // A DEALLOCATE ALL inside a longer string is seen in the CommandComplete.
    l.send(&[query("SELECT 1; DEALLOCATE ALL")]);
    l.receive(&[frame(b'C', b"SELECT 1\0"), frame(b'C', b"DEALLOCATE ALL\0"), z()]);
    assert!(l.view.is_empty());
}

#[test]
fn sql_prepare_is_refused_through_a_failing_query() {
    let mut l = Link::new(10);
    let sent = l.send(&[query("PREPARE p AS SELECT 1")]);
    assert_eq!(sent, strs(&[&format!("Q:{}", super::rewrite::REFUSED_SQL)]));
    let got = l.receive(&[error("42601", "syntax error at or near \"pgmux\""), z()]);
    assert!(got[0].starts_with("E:SQL PREPARE is not supported"), "{got:?}");
}

#[test]
fn eviction_closes_the_least_recently_used_first() {
    let mut l = Link::new(1);
    l.send(&[parse("a", "SELECT 1"), sync()]);
    l.receive(&[tagged(b'3'), tagged(b'1'), z()]);
    let sent = l.send(&[parse("b", "SELECT 2"), bind("a"), sync()]);
    // b evicts a; a's Bind brings a back and evicts b.
    assert_eq!(sent, strs(&["C:x", "C:x", "P:x", "C:x", "C:x", "P:x", "B:x", "S"]));
    let replies = [3, 3, 1, 3, 3, 1].map(|t| tagged(b'0' + t));
    let mut all = replies.to_vec();
    all.extend([tagged(b'2'), z()]);
    assert_eq!(l.receive(&all), strs(&["1", "2", "Z"]));
    assert_eq!(l.server.len(), 1);
}

#[test]
fn statements_are_named_by_content() {
    let a = Statement::new(b"SELECT 1\0\0\0");
    let mut l = Link::new(10);
    l.send(&[parse("one", "SELECT 1"), parse("two", "SELECT 1"), sync()]);
    assert!(Statement::new(b"SELECT 1\0\0\0").key == a.key);
    assert!(std::sync::Arc::ptr_eq(
        l.view.get(b"one").unwrap(),
        l.view.get(b"one").unwrap()
    ));
    assert_eq!(l.view.get(b"one").unwrap().key, l.view.get(b"two").unwrap().key);
}

/// The request after `setup`, translated by `translate` (renamed in place when it can be) and
/// by `translate_copying` on a link set up the same way: the same bytes, and the same tail.
fn both_ways(setup: &[Vec<u8>], replies: &[Vec<u8>], request: &[Vec<u8>]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut in_place = false;
    for copying in [false, true] {
        let mut link = Link::new(10);
        link.send(setup);
        link.receive(replies);
        let bytes = request.concat();
        let mut buf = BytesMut::from(&bytes[..]);
        buf.extend_from_slice(b"tail");
        let at = Position {
            answered: link.answered,
            pending: 1,
        };
        let end = if copying {
            super::rewrite::translate_copying(&mut buf, 0, bytes.len(), &mut link.view, &mut link.server, at)
        } else {
            let mut probe = buf.clone();
            in_place =
                super::inplace::try_rename(&mut probe, 0, bytes.len(), &mut link.view, &mut link.server).is_some();
            translate(&mut buf, 0, bytes.len(), &mut link.view, &mut link.server, at)
        };
        assert_eq!(&buf[end..], b"tail");
        out.push(buf[..end].to_vec());
    }
    assert_eq!(out[0], out[1], "renamed in place and copied give the same bytes");
    (out.swap_remove(0), in_place)
}

#[test]
fn binds_and_describes_of_held_statements_are_renamed_in_place() {
    let setup = [parse("a", "select 1"), parse("a_much_longer_name", "select 2"), sync()];
    let replies = [tagged(b'3'), tagged(b'1'), tagged(b'3'), tagged(b'1'), z()];
    let execute = frame(b'E', b"\0\0\0\0\0");
    let portal = frame(b'D', b"P\0");
    let steady = [bind("a"), portal.clone(), execute.clone(), sync()];
    let (bytes, in_place) = both_ways(&setup, &replies, &steady);
    assert!(in_place, "the steady state is renamed in place");
    assert_eq!(describe_frames(&bytes), strs(&["B:x", "D", "E", "S"]));
    let mixed = [
        describe("a"),
        bind("a_much_longer_name"),
        bind("never_prepared"),
        bind(""),
        execute.clone(),
        bind("a"),
        execute.clone(),
        sync(),
        frame(b'H', b""),
    ];
    let (bytes, in_place) = both_ways(&setup, &replies, &mixed);
    assert!(in_place);
    assert_eq!(
        describe_frames(&bytes),
        strs(&["D:x", "B:x", "B:never_prepared", "B:", "E", "B:x", "E", "S", "H"])
    );
    // Left to the copying way: a Parse in the request, more renames than handled in place.
    let (_, in_place) = both_ways(&setup, &replies, &[parse("b", "select 3"), bind("a"), sync()]);
    assert!(!in_place);
    let many: Vec<_> = (0..9)
        .flat_map(|_| [bind("a"), execute.clone()])
        .chain([sync()])
        .collect();
    let (_, in_place) = both_ways(&setup, &replies, &many);
    assert!(!in_place);
}

#[test]
fn a_statement_the_server_may_lack_is_left_to_the_copying_way() {
    // No replies: the client's Parse decides for later stretches, so it is held for good...
    let setup = [parse("a", "select 1"), sync()];
    let (_, in_place) = both_ways(&setup, &[], &[bind("a"), sync()]);
    assert!(in_place);
    // ...while a name longer than the pooler-wide one would shrink its frame.
    let long = "n".repeat(statement::NAME_LEN + 1);
    let (bytes, in_place) = both_ways(&[parse(&long, "select 1"), sync()], &[], &[bind(&long), sync()]);
    assert!(!in_place);
    assert_eq!(describe_frames(&bytes), strs(&["B:x", "S"]));
}

#[test]
fn a_frame_past_the_region_marks_nothing_used() {
    let mut link = Link::new(2);
    link.send(&[parse("a", "select 1"), parse("b", "select 2"), sync()]);
    link.receive(&[tagged(b'3'), tagged(b'1'), tagged(b'3'), tagged(b'1'), z()]);
    link.send(&[bind("a"), sync()]);
    link.receive(&[tagged(b'2'), z()]);
    // A region that ends inside a Bind of "b" (the relay never hands one over): "b" stays the
    // least recently used, so the next Parse evicts it and not "a".
    let bytes = bind("b");
    let mut buf = BytesMut::from(&bytes[..]);
    let at = Position {
        answered: link.answered,
        pending: 0,
    };
    translate(&mut buf, 0, 5, &mut link.view, &mut link.server, at);
    assert_eq!(&buf[..], &bytes[..], "nothing changed");
    link.send(&[parse("c", "select 3"), sync()]);
    let key = |sql: &str| Statement::new(format!("{sql}\0\0\0").as_bytes()).key;
    assert!(
        link.server.holds(key("select 1")),
        "the more recently used statement stays"
    );
    assert!(!link.server.holds(key("select 2")));
}
