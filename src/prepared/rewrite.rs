//! The way to the server: a client's named statements renamed to pooler-wide ones, with a
//! Parse injected wherever the server may lack the statement, and the simple-protocol commands
//! of `query` acted on.

use super::query::{self, Command};
use super::server::{QueryReply, Reply, ReplyKind};
use super::statement::{self, Statement};
use super::{ClientStatements, ServerStatements};
use crate::protocol::frame::{peek_header, read_cstr, HEADER_LEN};
use crate::protocol::messages::PgError;
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// Where the stream to the server stands when a region is translated.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// ReadyForQuery messages the server sent so far in this checkout.
    pub answered: u32,
    /// Syncs and Queries scanned (up to the region's end) and not yet answered.
    pub pending: u32,
}

/// Rewrites the client's complete frames at `buf[from..end]` for the server, in place, and
/// returns where they end now. Frames that name no statement are copied as they are.
pub fn translate(
    buf: &mut BytesMut,
    from: usize,
    end: usize,
    view: &mut ClientStatements,
    server: &mut ServerStatements,
    at: Position,
) -> usize {
    match super::inplace::try_rename(buf, from, end, view, server) {
        Some(new_end) => new_end,
        None => translate_copying(buf, from, end, view, server, at),
    }
}

/// `translate` for every request: the region is copied aside and written again frame by frame.
/// Public for the fuzz target, which checks that both ways give the same bytes.
pub fn translate_copying(
    buf: &mut BytesMut,
    from: usize,
    end: usize,
    view: &mut ClientStatements,
    server: &mut ServerStatements,
    at: Position,
) -> usize {
    // The frames are read from a copy while the buffer is rewritten; the copy's storage is
    // kept per thread, so a prepared transaction does not ask the allocator for it.
    let mut rest = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    rest.clear();
    let Some(from_rest) = buf.get(from..) else {
        return end;
    };
    rest.extend_from_slice(from_rest);
    let new_end = translate_from(buf, from, end, &rest, view, server, at);
    if rest.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| *s.borrow_mut() = rest);
    }
    new_end
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Larger copies are freed rather than kept.
const SCRATCH_KEEP: usize = 64 * 1024;

fn translate_from(
    buf: &mut BytesMut,
    from: usize,
    end: usize,
    rest: &[u8],
    view: &mut ClientStatements,
    server: &mut ServerStatements,
    at: Position,
) -> usize {
    let region_len = (end - from).min(rest.len());
    let (region, tail) = rest.split_at(region_len);
    buf.truncate(from);
    let frames = Frames(region);
    let syncs = frames.clone().filter(|(tag, _)| is_sync(*tag)).count() as u32;
    let mut cx = Cx {
        out: buf,
        view,
        server,
        epoch: at.answered.wrapping_add(at.pending).wrapping_sub(syncs),
    };
    let mut used = 0;
    for (tag, frame) in frames {
        used += frame.len();
        cx.frame(tag, frame);
        if is_sync(tag) {
            cx.epoch = cx.epoch.wrapping_add(1);
        }
    }
    // Never reached: the scan only hands over complete, well-formed frame headers.
    cx.out.extend_from_slice(&region[used..]);
    let new_end = cx.out.len();
    cx.out.extend_from_slice(tail);
    new_end
}

fn is_sync(tag: u8) -> bool {
    matches!(tag, b'S' | b'Q' | b'F')
}

/// Complete frames of a region: (tag, whole frame).
#[derive(Clone)]
struct Frames<'a>(&'a [u8]);

impl<'a> Iterator for Frames<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (tag, total) = peek_header(self.0, usize::MAX >> 1).ok()??;
        let frame = self.0.get(..total)?;
        self.0 = &self.0[total..];
        Some((tag, frame))
    }
}

struct Cx<'a> {
    out: &'a mut BytesMut,
    view: &'a mut ClientStatements,
    server: &'a mut ServerStatements,
    epoch: u32,
}

impl Cx<'_> {
    fn frame(&mut self, tag: u8, frame: &[u8]) {
        let body = &frame[HEADER_LEN..];
        let done = match tag {
            b'P' => self.parse(body),
            b'B' => self.bind(body),
            b'D' => self.describe(body),
            b'C' => self.close(body),
            b'Q' => self.query(body),
            _ => false,
        };
        if !done {
            self.out.extend_from_slice(frame);
        }
    }

    fn expect(&mut self, kind: ReplyKind) {
        self.server.replies.push_back(Reply {
            epoch: self.epoch,
            kind,
        });
    }

    /// Parse: a new name becomes a Close and Parse of the pooler-wide statement (the server
    /// may hold it already: closing first keeps that from being an error); a name the client
    /// already uses gets PostgreSQL's 42P05 through a probe that fails in its place.
    fn parse(&mut self, body: &[u8]) -> bool {
        let mut pos = 0;
        let Some(name) = read_cstr(body, &mut pos).filter(|n| !n.is_empty()) else {
            return false;
        };
        if self.view.get(name).is_some() {
            let name = String::from_utf8_lossy(name);
            let error = PgError::new("42P05", format!("prepared statement \"{name}\" already exists"));
            self.expect(ReplyKind::Duplicate(error));
            statement::probe_bind(self.out);
            return true;
        }
        let stmt = Arc::new(Statement::new(&body[pos..]));
        self.view.insert(name, stmt.clone());
        self.send_parse(&stmt, Some((name.into(), stmt.clone())));
        true
    }

    fn send_parse(&mut self, stmt: &Arc<Statement>, client: Option<(Box<[u8]>, Arc<Statement>)>) {
        let (gen, evicted) = self.server.add(stmt.key, self.epoch, client.is_some());
        for key in evicted.into_iter().chain([stmt.key]) {
            statement::close_statement(self.out, &statement::name(key));
            self.expect(ReplyKind::Close {
                swallow: true,
                undo: None,
            });
        }
        self.out.extend_from_slice(&stmt.parse);
        self.expect(ReplyKind::Parse {
            swallow: client.is_none(),
            key: stmt.key,
            gen,
            client,
        });
    }

    /// The statement behind a client's name, made present on the server; None for a name the
    /// client never prepared (passed on as it is: the server answers 26000 as PostgreSQL would).
    fn ensure(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        let stmt = self.view.get_hot(name)?.clone();
        if !self.server.usable(stmt.key, self.epoch) {
            self.send_parse(&stmt, None);
        }
        Some(stmt)
    }

    fn bind(&mut self, body: &[u8]) -> bool {
        let mut pos = 0;
        let Some(portal) = read_cstr(body, &mut pos) else {
            return false;
        };
        let Some(name) = read_cstr(body, &mut pos).filter(|n| !n.is_empty()) else {
            return false;
        };
        let Some(stmt) = self.ensure(name) else {
            return false;
        };
        statement::frame(self.out, b'B', |b| {
            b.put_slice(portal);
            b.put_u8(0);
            b.put_slice(stmt.name());
            b.put_u8(0);
            b.put_slice(&body[pos..]);
        });
        true
    }

    fn describe(&mut self, body: &[u8]) -> bool {
        let Some(name) = statement_name(body) else {
            return false;
        };
        let Some(stmt) = self.ensure(name) else {
            return false;
        };
        statement::frame(self.out, b'D', |b| {
            b.put_u8(b'S');
            b.put_slice(stmt.name());
            b.put_u8(0);
        });
        true
    }

    /// Close goes on as the client wrote it: the server holds no statement of that name and
    /// answers CloseComplete, in its place among the replies. The pooler-wide statement stays.
    fn close(&mut self, body: &[u8]) -> bool {
        if let Some(name) = statement_name(body) {
            if let Some(stmt) = self.view.remove(name) {
                self.expect(ReplyKind::Close {
                    swallow: false,
                    undo: Some((name.into(), stmt)),
                });
            }
        }
        false
    }

    fn query(&mut self, body: &[u8]) -> bool {
        let reply = match query::classify(body) {
            Some(Command::DeallocateAll) => {
                self.view.take();
                QueryReply::Empty("DEALLOCATE ALL")
            }
            Some(Command::Deallocate(name)) if self.view.remove(&name).is_some() => QueryReply::Empty("DEALLOCATE"),
            Some(Command::DiscardAll) => {
                // The server forgets its statements too; on an error the client's come back.
                self.server.clear();
                let saved = self.view.take();
                self.expect(ReplyKind::Query(QueryReply::Discard(saved)));
                return false;
            }
            Some(Command::Sql(keyword)) => QueryReply::Refuse(refusal(keyword)),
            _ => return false,
        };
        let sql = match reply {
            QueryReply::Refuse(_) => REFUSED_SQL,
            _ => "",
        };
        self.expect(ReplyKind::Query(reply));
        statement::query(self.out, sql);
        true
    }
}

/// Sent in place of a refused SQL PREPARE or EXECUTE: it fails with a syntax error, so the
/// server's transaction fails as it would have, and the error is replaced by `refusal`'s.
pub const REFUSED_SQL: &str = "pgmux refused SQL PREPARE or EXECUTE in transaction pooling mode";

fn refusal(keyword: &str) -> PgError {
    PgError::new(
        "0A000",
        format!("SQL {keyword} is not supported in transaction or statement pooling mode (pool_mode)"),
    )
    .with_hint(
        "use protocol-level prepared statements (the driver's prepare, which pgmux tracks), \
         or pool_mode = \"session\" for this database or user",
    )
}

/// The name of a Describe or Close of a statement (`S`), when it has one.
fn statement_name(body: &[u8]) -> Option<&[u8]> {
    let (&kind, rest) = body.split_first()?;
    let mut pos = 0;
    (kind == b'S')
        .then(|| read_cstr(rest, &mut pos))
        .flatten()
        .filter(|n| !n.is_empty())
}
