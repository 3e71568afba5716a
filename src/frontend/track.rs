//! Where a client's transaction stands, read off the frame tags flowing each way.
//!
//! Every Query, FunctionCall and Sync the client sends is answered by exactly one ReadyForQuery,
//! whatever happens in between (errors, COPY, several statements), but for Syncs that a COPY
//! FROM STDIN swallows (`CopySyncs`) and messages the server skips after an error while it waits
//! for a Sync. So the server may go back to the pool when every one of them is answered, the
//! client has sent nothing since its last Sync, and the last ReadyForQuery says idle (`I`).
//! Where the count cannot be sure it errs high: the server then stays with its client, and is
//! closed when the client leaves, rather than handed to another while it still owes answers.

use crate::protocol::frame::{
    header_total, is_frontend_tag, parse_query, peek_header, read_cstr, FrameError, HEADER_LEN,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    /// Query, FunctionCall and Sync messages sent and not yet answered by ReadyForQuery.
    pub pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    pub unsynced: bool,
    /// Status of the last ReadyForQuery: `I` idle, `T` in a transaction, `E` failed transaction.
    pub status: u8,
    /// An Execute sent since the last Sync.
    pub executed: bool,
    /// Syncs that a COPY FROM STDIN may swallow (see `CopySyncs`).
    pub copy: CopySyncs,
}

/// A server in COPY FROM STDIN mode reads and ignores Syncs: they get no ReadyForQuery. Whether
/// an Execute or Query starts a COPY only the server knows (CopyInResponse), and its answer may
/// come after the client sent more. So pgmux counts the Syncs sent right after such a message,
/// before anything else, and takes them off `pending` only when the server's CopyInResponse
/// says they were swallowed. It does that only when the message was the one thing in flight,
/// so the CopyInResponse is surely its answer. Anything less certain keeps the Syncs pending:
/// a count too high keeps the server with its client (and closes it when the client leaves),
/// one too low would hand over a server that still owes answers.
///
/// One byte, so that each client message costs an instruction or two: `NONE`, or the count of
/// Syncs (up to `MAX`) with `CLOSED` set once something other than a Sync or Flush followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySyncs(u8);

impl CopySyncs {
    /// No Execute or Query whose CopyInResponse could be attributed.
    pub const NONE: CopySyncs = CopySyncs(u8::MAX);
    const CLOSED: u8 = 0x80;
    /// More Syncs in a row stay pending: too many is safe.
    const MAX: u8 = 0x7f;
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            pending: 0,
            unsynced: false,
            status: b'I',
            executed: false,
            copy: CopySyncs::NONE,
        }
    }
}

impl Tracker {
    /// Nothing is in flight: the server owes no answer and the client is between messages.
    pub fn quiet(&self) -> bool {
        self.pending == 0 && !self.unsynced
    }

    /// The transaction is over and the server is clean.
    pub fn idle(&self) -> bool {
        self.quiet() && self.status == b'I'
    }

    /// An Execute or Query is sent: a CopyInResponse can be its answer only if nothing else is
    /// in flight.
    #[inline(always)]
    fn starts(&mut self) {
        self.copy = if self.pending == 0 && !self.executed {
            CopySyncs(0)
        } else {
            CopySyncs::NONE
        };
    }

    /// A Sync: one more the COPY may swallow, while nothing else came since the Execute.
    #[inline(always)]
    fn synced(&mut self) {
        if self.copy.0 < CopySyncs::MAX {
            self.copy.0 += 1;
        }
    }

    /// A client message other than Sync and Flush ends the Syncs a COPY may swallow.
    #[inline(always)]
    fn other(&mut self) {
        self.copy.0 |= CopySyncs::CLOSED;
    }

    /// The server entered COPY FROM STDIN: the Syncs that came straight after are swallowed.
    #[inline]
    pub fn copy_in(&mut self) {
        let copy = std::mem::replace(&mut self.copy, CopySyncs::NONE);
        if copy != CopySyncs::NONE {
            self.pending = self.pending.saturating_sub((copy.0 & !CopySyncs::CLOSED).into());
        }
    }
}

/// What a scan of client bytes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientScan {
    /// End of the complete frames that may be forwarded.
    pub end: usize,
    /// A Terminate message starts at `end`: the client is leaving.
    pub terminate: bool,
    /// A frame names a prepared statement or may be a DEALLOCATE, DISCARD ALL, PREPARE or
    /// EXECUTE: in transaction mode the frames need `prepared::translate`.
    pub rewrite: bool,
    /// A Query or Parse may be a LISTEN or UNLISTEN (`crate::listen::statement`).
    pub listen: bool,
    /// A Query or Parse may be a SET, RESET or DISCARD (`frontend::set::candidate`).
    pub set: bool,
}

/// Scans the client's complete frames in `buf[from..]`, counting what will need an answer.
/// A partial frame at the end is left for the next read.
pub fn scan_client(buf: &[u8], from: usize, max: usize, t: &mut Tracker) -> Result<ClientScan, FrameError> {
    let mut pos = from;
    let (mut rewrite, mut listen, mut set) = (false, false, false);
    while let Some(&[tag, a, b, c, d]) = buf.get(pos..pos.saturating_add(HEADER_LEN)) {
        let total = header_total(u32::from_be_bytes([a, b, c, d]), max)?;
        if !is_frontend_tag(tag) {
            return Err(FrameError::BadTag(tag as char));
        }
        if tag == b'X' {
            return Ok(ClientScan {
                end: pos,
                terminate: true,
                rewrite,
                listen,
                set,
            });
        }
        let Some(body) = buf.get(pos + HEADER_LEN..pos + total) else {
            break;
        };
        match tag {
            b'Q' => {
                t.starts();
                t.pending += 1;
                let (r, l, s) = query_flags(body);
                rewrite |= r;
                listen |= l;
                set |= s;
            }
            b'S' => {
                t.pending += 1;
                t.unsynced = false;
                t.executed = false;
                t.synced();
            }
            b'E' => {
                t.starts();
                t.unsynced = true;
                t.executed = true;
            }
            b'P' => {
                t.other();
                t.unsynced = true;
                rewrite |= names_statement(tag, body);
                if let Some(query) = parse_query(body) {
                    listen |= crate::listen::statement::candidate(query);
                    set |= super::set::candidate(query);
                }
            }
            b'B' | b'D' | b'C' => {
                t.other();
                t.unsynced = true;
                rewrite |= names_statement(tag, body);
            }
            b'F' => {
                t.other();
                t.pending += 1;
            }
            // A Flush asks for output and opens nothing: after the last Sync it must not keep
            // the server (psycopg sends one at the end of a pipeline block).
            b'H' => {}
            b'p' => return Err(FrameError::Malformed("password message outside authentication")),
            // CopyData, CopyDone, CopyFail and the rest.
            _ => t.other(),
        }
        pos += total;
    }
    Ok(ClientScan {
        end: pos,
        terminate: false,
        rewrite,
        listen,
        set,
    })
}

/// Whether a Query's text may need `prepared::translate` (`ClientScan::rewrite`), may be a
/// LISTEN or UNLISTEN (`ClientScan::listen`), or a SET, RESET or DISCARD (`ClientScan::set`).
/// Every Query passes here: its first letters settle most of them.
#[inline]
fn query_flags(text: &[u8]) -> (bool, bool, bool) {
    use super::set::candidate as set;
    use crate::listen::statement::candidate as listen;
    use crate::prepared::query::candidate as prepared;
    let i = crate::prepared::query::skip_blank(text, 0);
    match text.get(i).map(|c| c | 0x20) {
        // SELECT is settled by its third letter.
        Some(b's') if text.get(i + 2).is_some_and(|c| c | 0x20 != b't') => (false, false, false),
        Some(b's' | b'r') => (false, false, set(text)),
        Some(b'd') => (prepared(text), false, set(text)),
        Some(b'p' | b'e') => (prepared(text), false, false),
        Some(b'l' | b'u') => (false, listen(text), false),
        // A comment first (`/` and `-` are unchanged by the case bit).
        Some(b'/' | b'-') => (prepared(text), listen(text), set(text)),
        _ => (false, false, false),
    }
}

/// A Parse, Bind, Describe or Close that names a prepared statement (not the unnamed one).
#[inline]
fn names_statement(tag: u8, body: &[u8]) -> bool {
    let name = match tag {
        b'P' => body.first(),
        b'B' => {
            let mut pos = 0;
            read_cstr(body, &mut pos).and_then(|_| body.get(pos))
        }
        _ => match body {
            [b'S', first, ..] => Some(first),
            _ => None,
        },
    };
    name.is_some_and(|&b| b != 0)
}

/// Where a scan of server bytes stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStop {
    /// Prepared-statement tracking wants the complete frame at `end` (see `Intercept`).
    Intercept,
    /// Ran out of bytes: forward up to `end` and read more.
    More,
    /// The transaction ended (idle ReadyForQuery) at `end`: the server can go back to the pool.
    Release,
    /// Statement mode: a ReadyForQuery at `end` says a transaction block is open.
    TransactionBlock,
    /// A NotificationResponse (complete) at `end` from a server that ran LISTEN in this
    /// transaction: the relay decides whether it goes on (`crate::listen`).
    Notification,
}

/// `ServerScan::listen` flags: what the server's CommandComplete tags said of LISTEN.
pub mod listen_tags {
    /// LISTEN ran: the server listens until pgmux's UNLISTEN *.
    pub const LISTENED: u8 = 1;
    /// LISTEN, UNLISTEN or DISCARD ALL ran: the client's subscriptions may change.
    pub const TOUCHED: u8 = 2;
    /// An error or a ROLLBACK came after that: the changes may not count.
    pub const FAILED: u8 = 4;
    /// DISCARD ALL ran (an UNLISTEN *).
    pub const DISCARDED: u8 = 8;
}

/// Server-side scan state: the server's frames may be large (a DataRow, a CopyData), so they
/// stream through without being buffered whole; only ReadyForQuery and ParameterStatus,
/// which are small, are read.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerScan {
    /// Bytes of a large frame still to pass through before the next header.
    pub skip: usize,
    /// ReadyForQuery messages seen: the Sync stretches the server finished.
    pub answered: u32,
    pub intercept: Intercept,
    /// The ReadyForQuery (by `answered` count) that ends a SET being tracked (`frontend::set`).
    pub watch: Option<u32>,
    /// An ErrorResponse came while watching.
    pub watch_failed: bool,
    /// The watched statement ended: whether it succeeded outside a transaction block.
    pub watched: Option<bool>,
    /// ParseCompletes passed over (intercepted ones are the relay's to count).
    pub parses: u32,
    /// SQLSTATE classes of the ErrorResponses passed over (likewise).
    pub errors: ErrorClasses,
    /// `listen_tags` seen (transaction and statement modes only).
    pub listen: u8,
    /// SET, RESET and DISCARD ALL CommandCompletes (transaction and statement modes only): one
    /// pgmux did not follow leaves the server's settings unknown (`RelayState::settings_unknown`).
    pub set_tags: u16,
}

/// SQLSTATE classes and how many errors of each, for the pool's error counts; the relay
/// takes them after each scan.
#[derive(Debug, Default, Clone, Copy)]
pub struct ErrorClasses {
    seen: [([u8; 2], u32); 4],
    len: u8,
}

impl ErrorClasses {
    pub fn push(&mut self, class: [u8; 2]) {
        let len = self.len as usize;
        if let Some(slot) = self.seen[..len].iter_mut().find(|(c, _)| *c == class) {
            slot.1 += 1;
        } else if let Some(slot) = self.seen.get_mut(len) {
            *slot = (class, 1);
            self.len += 1;
        } else if let Some(last) = self.seen.last_mut() {
            // More classes than slots in one read: the count stays right, the class is the last's.
            last.1 += 1;
        }
    }

    /// The classes seen, and the list emptied. (It reads them in place: most reads have none,
    /// and a copy of the array would cost every one of them.)
    #[inline]
    pub fn take(&mut self) -> impl Iterator<Item = ([u8; 2], u32)> + '_ {
        let len = std::mem::take(&mut self.len) as usize;
        self.seen.iter().take(len).copied()
    }
}

/// The SQLSTATE class of an ErrorResponse's body (`XX` when it names none).
pub fn error_class(body: &[u8]) -> [u8; 2] {
    let mut fields = body.split(|&b| b == 0);
    fields
        .find_map(|f| match f {
            [b'C', a, b, ..] => Some([*a, *b]),
            _ => None,
        })
        .unwrap_or(*b"XX")
}

/// Which frames a scan stops at for prepared-statement tracking (`prepared::on_reply`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Intercept {
    /// Session mode, or tracking off: none.
    #[default]
    Off,
    /// Tracking, nothing expected: a CommandComplete that may say DISCARD ALL or DEALLOCATE ALL.
    Commands,
    /// Replies are expected: ParseComplete, CloseComplete, errors, EmptyQueryResponse,
    /// CommandComplete.
    Replies,
}

/// Server frames no larger than this are complete before they are looked at.
const SERVER_FRAME_LIMIT: usize = usize::MAX >> 1;

impl ServerScan {
    /// A CommandComplete's tag, in transaction mode: LISTEN, UNLISTEN, DISCARD ALL, ROLLBACK.
    #[inline]
    fn command_tag(&mut self, body: &[u8]) {
        use listen_tags::*;
        match body.first() {
            Some(b'L') if body == b"LISTEN\0" => self.listen |= LISTENED | TOUCHED,
            Some(b'U') if body == b"UNLISTEN\0" => self.listen |= TOUCHED,
            Some(b'D') if body == b"DISCARD ALL\0" => {
                self.listen |= DISCARDED | TOUCHED;
                self.set_tags += 1;
            }
            Some(b'S') if body == b"SET\0" => self.set_tags += 1,
            Some(b'R') if body == b"RESET\0" => self.set_tags += 1,
            Some(b'R') if self.listen & TOUCHED != 0 && body == b"ROLLBACK\0" => self.listen |= FAILED,
            _ => {}
        }
    }

    /// Scans `buf[from..]`. Returns the end of what may be forwarded and why it stopped.
    /// `release_at_idle` is false in session mode; `statement_mode` refuses transaction blocks.
    /// `on_param` sees every ParameterStatus (name, value).
    pub fn scan(
        &mut self,
        buf: &[u8],
        from: usize,
        t: &mut Tracker,
        release_at_idle: bool,
        statement_mode: bool,
        mut on_param: impl FnMut(&[u8], &[u8]),
    ) -> Result<(usize, ServerStop), FrameError> {
        let mut pos = from;
        loop {
            if self.skip > 0 {
                let step = self.skip.min(buf.len() - pos);
                self.skip -= step;
                pos += step;
                if self.skip > 0 {
                    return Ok((pos, ServerStop::More));
                }
            }
            let Some((tag, total)) = peek_header(&buf[pos..], SERVER_FRAME_LIMIT)? else {
                return Ok((pos, ServerStop::More));
            };
            let wanted = match self.intercept {
                Intercept::Off => false,
                Intercept::Commands => tag == b'C',
                Intercept::Replies => matches!(tag, b'1' | b'3' | b'E' | b'I' | b'C'),
            };
            if tag == b'E' {
                self.watch_failed |= self.watch.is_some();
                if self.listen & listen_tags::TOUCHED != 0 {
                    self.listen |= listen_tags::FAILED;
                }
            }
            // Transaction mode looks at CommandComplete tags for LISTEN (`crate::listen`).
            let looked = matches!(tag, b'C' | b'A') && release_at_idle;
            if !wanted && !matches!(tag, b'Z' | b'S' | b'E' | b'G' | b'W') && !looked {
                if tag == b'1' {
                    self.parses += 1;
                }
                // Whole in the buffer (nearly always): past it at once; else streamed through.
                match pos.checked_add(total).filter(|&end| end <= buf.len()) {
                    Some(end) => pos = end,
                    None => self.skip = total,
                }
                continue;
            }
            let Some(frame) = buf.get(pos..pos + total) else {
                return Ok((pos, ServerStop::More));
            };
            let body = &frame[HEADER_LEN..];
            if looked {
                if tag == b'A' {
                    if self.listen & listen_tags::LISTENED != 0 {
                        return Ok((pos, ServerStop::Notification));
                    }
                    pos += total;
                    continue;
                }
                self.command_tag(body);
            }
            if tag == b'E' && !wanted {
                self.errors.push(error_class(body));
                pos += total;
                continue;
            }
            if wanted {
                if self.intercept == Intercept::Replies || body.first() == Some(&b'D') {
                    return Ok((pos, ServerStop::Intercept));
                }
                pos += total;
                continue;
            }
            if tag == b'C' {
                pos += total;
                continue;
            }
            if matches!(tag, b'G' | b'W') {
                t.copy_in();
                pos += total;
                continue;
            }
            if tag == b'S' {
                let mut parts = body.split(|&b| b == 0);
                if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                    on_param(name, value);
                }
                pos += total;
                continue;
            }
            let status = *body.first().ok_or(FrameError::Malformed("ReadyForQuery"))?;
            t.pending = t.pending.saturating_sub(1);
            t.status = status;
            // Whatever was in flight is answered: a later CopyInResponse is not its.
            t.copy = CopySyncs::NONE;
            self.answered = self.answered.wrapping_add(1);
            if self.watch == Some(self.answered) {
                self.watch = None;
                self.watched = Some(status == b'I' && !std::mem::take(&mut self.watch_failed));
            }
            if t.quiet() {
                if statement_mode && status != b'I' {
                    return Ok((pos, ServerStop::TransactionBlock));
                }
                if release_at_idle && status == b'I' {
                    return Ok((pos + total, ServerStop::Release));
                }
            }
            pos += total;
        }
    }
}

#[cfg(test)]
#[path = "track_model.rs"]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::frame::test_frame as frame;

    #[test]
    fn error_classes_are_taken_once() {
        let mut errors = ErrorClasses::default();
        assert_eq!(errors.take().count(), 0);
        errors.push(*b"23");
        errors.push(*b"42");
        errors.push(*b"23");
        assert_eq!(errors.take().collect::<Vec<_>>(), [(*b"23", 2), (*b"42", 1)]);
        assert_eq!(errors.take().count(), 0, "taken: the list is empty");
        errors.push(*b"57");
        assert_eq!(errors.take().collect::<Vec<_>>(), [(*b"57", 1)]);
    }

    #[test]
    fn client_counts_syncs_and_queries() {
        let mut t = Tracker::default();
        let mut buf = frame(b'P', b"\0select 1\0\0\0");
        buf.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        buf.extend(frame(b'E', b"\0\0\0\0\0"));
        let scan = scan_client(&buf, 0, 1 << 20, &mut t).unwrap();
        assert_eq!(
            scan,
            ClientScan {
                end: buf.len(),
                terminate: false,
                rewrite: false,
                listen: false,
                set: false
            }
        );
        assert!(t.unsynced && t.pending == 0);
        let start = buf.len();
        buf.extend(frame(b'S', b""));
        buf.extend(frame(b'Q', b"select 1\0"));
        buf.extend(&frame(b'Q', b"x")[..3]);
        let scan = scan_client(&buf, start, 1 << 20, &mut t).unwrap();
        assert_eq!(scan.end, buf.len() - 3);
        assert_eq!(
            t,
            Tracker {
                pending: 2,
                unsynced: false,
                status: b'I',
                ..Tracker::default()
            }
        );
    }

    /// Scans `client` then `server` (from the server's side), one read each.
    fn exchange(t: &mut Tracker, client: &[u8], server: &[u8]) -> ServerStop {
        scan_client(client, 0, 1 << 20, t).unwrap();
        let (end, stop) = ServerScan::default()
            .scan(server, 0, t, true, false, |_, _| {})
            .unwrap();
        assert_eq!(end, server.len(), "{stop:?}");
        stop
    }

    fn frames(list: &[(u8, &[u8])]) -> Vec<u8> {
        list.iter().flat_map(|(tag, body)| frame(*tag, body)).collect()
    }

    const EXECUTE: (u8, &[u8]) = (b'E', b"\0\0\0\0\0");
    const SYNC: (u8, &[u8]) = (b'S', b"");
    const COPY_IN: (u8, &[u8]) = (b'G', b"\0\0\0");
    const READY: (u8, &[u8]) = (b'Z', b"I");

    #[test]
    fn syncs_swallowed_by_copy_mode_are_not_pending() {
        // libpq's extended COPY: Execute and Sync, then the data, CopyDone and another Sync.
        let mut t = Tracker::default();
        let bind = (b'B', b"\0\0\0\0\0\0\0\0" as &[u8]);
        exchange(
            &mut t,
            &frames(&[bind, EXECUTE, SYNC]),
            &frames(&[(b'2', b""), COPY_IN]),
        );
        assert_eq!(t.pending, 0, "the Sync came in copy mode: no ReadyForQuery for it");
        exchange(&mut t, &frames(&[(b'd', b"1\n"), (b'c', b""), SYNC]), b"");
        assert_eq!(t.pending, 1, "one ReadyForQuery comes, after CopyDone's Sync");
        let done = frames(&[(b'C', b"COPY 1\0"), READY]);
        assert_eq!(exchange(&mut t, b"", &done), ServerStop::Release);

        // A client that sends it all before the CopyInResponse comes back.
        let mut t = Tracker::default();
        let all = frames(&[EXECUTE, SYNC, (b'd', b"1\n"), (b'c', b""), SYNC]);
        exchange(&mut t, &all, &frames(&[COPY_IN]));
        assert_eq!(t.pending, 1);

        // The same over the simple protocol: a Query, a stray Sync, the data.
        let mut t = Tracker::default();
        let q = (b'Q', b"copy t from stdin\0" as &[u8]);
        exchange(&mut t, &frames(&[q, SYNC]), &frames(&[COPY_IN]));
        assert_eq!(t.pending, 1, "the Query's ReadyForQuery is still to come");
    }

    #[test]
    fn copy_done_without_a_copy_swallows_nothing() {
        // Sync, CopyFail, Query: no COPY runs, so two ReadyForQuery come. The first must not
        // release the server with the Query still running (a fuzzer found this).
        let mut t = Tracker::default();
        let q = (b'Q', b"select pg_sleep(0.01)\0" as &[u8]);
        scan_client(&frames(&[SYNC, (b'c', b""), q]), 0, 1 << 20, &mut t).unwrap();
        assert_eq!(t.pending, 2);
        assert_eq!(exchange(&mut t, b"", &frames(&[READY])), ServerStop::More);
        let answer = frames(&[(b'T', b"\0\0"), (b'D', b"\0\0"), (b'C', b"SELECT 1\0"), READY]);
        assert_eq!(exchange(&mut t, b"", &answer), ServerStop::Release);

        // A query answered, then a Sync and a CopyDone: the Sync is answered too.
        let mut t = Tracker::default();
        let q = (b'Q', b"select 1\0" as &[u8]);
        scan_client(&frames(&[q, SYNC, (b'c', b"")]), 0, 1 << 20, &mut t).unwrap();
        assert_eq!(exchange(&mut t, b"", &frames(&[READY])), ServerStop::More);
        assert_eq!(exchange(&mut t, b"", &frames(&[READY])), ServerStop::Release);
    }

    #[test]
    fn a_copy_answer_that_may_not_be_the_last_messages_keeps_syncs_pending() {
        // Two Executes before the Sync: the CopyInResponse may answer the first, and the
        // second then ends the COPY with an error, so the Sync is answered.
        let mut t = Tracker::default();
        exchange(&mut t, &frames(&[EXECUTE, EXECUTE, SYNC]), &frames(&[COPY_IN]));
        assert_eq!(t.pending, 1);
        // An Execute sent while an earlier Sync is unanswered: likewise.
        let mut t = Tracker::default();
        exchange(&mut t, &frames(&[SYNC, EXECUTE, SYNC]), &frames(&[READY, COPY_IN]));
        assert_eq!(t.pending, 1);
        // Syncs after CopyData may come after the data ended the COPY: they stay pending.
        let mut t = Tracker::default();
        let q = (b'Q', b"copy t from stdin\0" as &[u8]);
        exchange(&mut t, &frames(&[q, (b'd', b"x\n"), SYNC]), &frames(&[COPY_IN]));
        assert_eq!(t.pending, 2);
    }

    #[test]
    fn client_terminate_and_garbage() {
        let mut t = Tracker::default();
        let mut buf = frame(b'Q', b"select 1\0");
        let end = buf.len();
        buf.extend(frame(b'X', b""));
        assert_eq!(
            scan_client(&buf, 0, 100, &mut t).unwrap(),
            ClientScan {
                end,
                terminate: true,
                rewrite: false,
                listen: false,
                set: false
            }
        );
        assert!(scan_client(b"GET / HTTP/1.1\r\n", 0, 100, &mut Tracker::default()).is_err());
        assert!(scan_client(&frame(b'Q', &[b'x'; 200]), 0, 100, &mut Tracker::default()).is_err());
    }

    #[test]
    fn server_release_at_last_ready_for_query() {
        let mut t = Tracker {
            pending: 2,
            ..Tracker::default()
        };
        let mut buf = frame(b'C', b"SELECT 1\0");
        buf.extend(frame(b'Z', b"I"));
        let first_end = buf.len();
        buf.extend(frame(b'D', &[0; 100]));
        buf.extend(frame(b'Z', b"I"));
        let mut scan = ServerScan::default();
        let mut seen = 0;
        // Feed it in small pieces, as reads arrive.
        let mut from = 0;
        let mut stop = ServerStop::More;
        for cut in (7..=buf.len()).step_by(7).chain([buf.len()]) {
            let (end, s) = scan
                .scan(&buf[..cut], from, &mut t, true, false, |_, _| seen += 1)
                .unwrap();
            assert!(end >= from && end <= cut);
            from = end;
            stop = s;
            if s != ServerStop::More {
                break;
            }
        }
        assert!(from > first_end);
        assert_eq!((from, stop), (buf.len(), ServerStop::Release));
        assert!(t.idle());
    }

    #[test]
    fn server_keeps_transactions_and_reports_params() {
        let mut t = Tracker {
            pending: 1,
            ..Tracker::default()
        };
        let mut buf = frame(b'S', b"application_name\0x\0");
        buf.extend(frame(b'Z', b"T"));
        let mut params = Vec::new();
        let (end, stop) = ServerScan::default()
            .scan(&buf, 0, &mut t, true, false, |n, v| {
                params.push((n.to_vec(), v.to_vec()))
            })
            .unwrap();
        assert_eq!((end, stop), (buf.len(), ServerStop::More));
        assert_eq!(params, vec![(b"application_name".to_vec(), b"x".to_vec())]);
        assert_eq!(t.status, b'T');
        let mut t = Tracker {
            pending: 1,
            ..Tracker::default()
        };
        let z = frame(b'Z', b"T");
        let (end, stop) = ServerScan::default()
            .scan(&z, 0, &mut t, true, true, |_, _| {})
            .unwrap();
        assert_eq!((end, stop), (0, ServerStop::TransactionBlock));
    }
}
