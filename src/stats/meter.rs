//! One client's share of the counters while it holds a server: kept in the relay's state and
//! added to the pool's totals when a transaction ends, so the data path pays a handful of
//! relaxed atomic adds per transaction and two clock reads per query.

use super::counter::shard;
use super::{now_us, PoolStats};
use crate::protocol::frame::{read_cstr, HEADER_LEN};
use std::sync::atomic::Ordering;

/// At most this much of a query's text is kept for the slow-query list.
const CAPTURE: usize = 1024;

#[derive(Default)]
pub struct Meter {
    received: u64,
    sent: u64,
    queries: u64,
    query_time: u64,
    client_parses: u64,
    server_parses: u64,
    binds: u64,
    /// When the server started on the oldest request it has not answered (µs; 0: none).
    busy_since: u64,
    /// When the current transaction started (µs; 0: none).
    xact_since: u64,
    /// slow_query_threshold in µs (0: off), and the text (or `B` + a statement name) of the
    /// request the server is busy with.
    slow_threshold: u64,
    capture: Vec<u8>,
    /// A transaction ended (and was added to the totals) during this checkout.
    flushed: bool,
}

/// What a query's text is, for the slow-query list.
pub enum Captured<'a> {
    Text(&'a [u8]),
    /// A Bind of this prepared statement name (the client's).
    Statement(&'a [u8]),
}

impl Meter {
    /// `capture`: the server connection's buffer for the slow-query text (`ServerConn::capture`),
    /// given back with `take_capture`.
    #[inline(always)]
    pub fn new(slow_threshold_us: u64, capture: Vec<u8>) -> Meter {
        Meter {
            slow_threshold: slow_threshold_us,
            capture,
            ..Meter::default()
        }
    }

    /// The capture buffer, emptied, for the next transaction on the same server (none when a
    /// long query grew it past what is worth keeping).
    pub fn take_capture(&mut self) -> Vec<u8> {
        let mut capture = std::mem::take(&mut self.capture);
        capture.clear();
        match capture.capacity() <= 2 * CAPTURE {
            true => capture,
            false => Vec::new(),
        }
    }

    #[inline]
    pub fn from_client(&mut self, bytes: usize) {
        self.received += bytes as u64;
    }

    #[inline]
    pub fn to_client(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }

    /// Client frames `frames` went on their way; `idle_before` says the server owed nothing
    /// before them. Counts Parse and Bind, and starts the clocks.
    pub fn requests(&mut self, frames: &[u8], idle_before: bool) {
        // The frames were checked when they were scanned (`track::scan_client`): only their
        // tags and lengths are read here, the first Query, Parse or Bind's text captured.
        let mut capture = idle_before && self.slow_threshold > 0;
        let mut rest = frames;
        while let [tag, a, b, c, d, ..] = *rest {
            let total = (u32::from_be_bytes([a, b, c, d]) as usize).saturating_add(1);
            match tag {
                b'P' => self.client_parses += 1,
                b'B' => self.binds += 1,
                _ => {}
            }
            if capture && matches!(tag, b'Q' | b'P' | b'B') {
                capture = false;
                self.capture_text(tag, rest.get(HEADER_LEN..total).unwrap_or_default());
            }
            rest = rest.get(total..).unwrap_or_default();
        }
        if idle_before && !frames.is_empty() {
            let now = now_us();
            self.busy_since = now;
            if self.xact_since == 0 {
                self.xact_since = now;
            }
        }
    }

    /// Keeps the frame's tag and the start of its body as they are: they are read
    /// (`captured`) only for a slow query, so the copy is all the data path pays.
    fn capture_text(&mut self, tag: u8, body: &[u8]) {
        self.capture.clear();
        self.capture.push(tag);
        // A Parse's statement name comes first: room for a short one beside CAPTURE bytes of text.
        self.capture.extend_from_slice(body.get(..CAPTURE + 64).unwrap_or(body));
    }

    /// What the server is busy with, if captured.
    pub fn captured(&self) -> Option<Captured<'_>> {
        let (&tag, body) = self.capture.split_first()?;
        let mut at = 0;
        let text = match tag {
            b'Q' => body,
            b'P' => {
                let _ = read_cstr(body, &mut at);
                body.get(at..).unwrap_or_default()
            }
            _ => {
                // A Bind: portal name, then the statement's.
                let _ = read_cstr(body, &mut at);
                return Some(Captured::Statement(read_cstr(body, &mut at).unwrap_or_default()));
            }
        };
        // A Query's text ends at its frame's end, a Parse's at a NUL.
        let text = text.get(..CAPTURE).unwrap_or(text);
        let text = match tag {
            b'Q' => text.strip_suffix(b"\0").unwrap_or(text),
            _ => std::ffi::CStr::from_bytes_until_nul(text).map_or(text, |t| t.to_bytes()),
        };
        Some(Captured::Text(text))
    }

    /// Nothing came back from the server and nothing but the first `request` bytes went to it.
    pub fn untouched(&self, request: usize) -> bool {
        !self.flushed && self.sent == 0 && self.received == request as u64
    }

    /// The server sent `parses` ParseCompletes.
    pub fn server_parsed(&mut self, parses: u32) {
        self.server_parses += u64::from(parses);
    }

    /// `answered` ReadyForQuery messages just came; `pending` are still owed, and the last
    /// said `status`. Records each answer's latency (from when the server got the request it
    /// answers: pipelined requests share it) and, at the end of a transaction, adds it all to
    /// `stats`. Returns the latency when it reached slow_query_threshold.
    pub fn answered(&mut self, answered: u32, pending: u32, status: u8, stats: &PoolStats) -> Option<u64> {
        if answered == 0 {
            return None;
        }
        let now = now_us();
        let took = if self.busy_since == 0 {
            0
        } else {
            now.saturating_sub(self.busy_since)
        };
        let line = shard();
        for _ in 0..answered {
            stats.query_latency.record_at(line, took);
        }
        self.queries += u64::from(answered);
        self.query_time += took;
        let slow = (self.slow_threshold > 0 && took >= self.slow_threshold).then_some(took);
        self.busy_since = if pending > 0 { now } else { 0 };
        if pending == 0 && status == b'I' && self.xact_since > 0 {
            let xact = now.saturating_sub(self.xact_since);
            stats.xact_latency.record_at(line, xact);
            add(&stats.xact_time, line, xact);
            stats.xacts.add_at(line, 1, Ordering::Relaxed);
            self.xact_since = 0;
            self.flush_at(line, stats);
        }
        slow
    }

    /// Adds what was counted to the pool's totals (also when a transaction ends otherwise).
    pub fn flush(&mut self, stats: &PoolStats) {
        // Nothing since the transaction's end added it all (the usual release): no shard lookup.
        let counted = self.received | self.sent | self.queries | self.query_time;
        if counted | self.client_parses | self.server_parses | self.binds == 0 {
            self.flushed = true;
            return;
        }
        self.flush_at(shard(), stats);
    }

    fn flush_at(&mut self, line: usize, stats: &PoolStats) {
        self.flushed = true;
        add(&stats.received, line, std::mem::take(&mut self.received));
        add(&stats.sent, line, std::mem::take(&mut self.sent));
        add(&stats.queries, line, std::mem::take(&mut self.queries));
        add(&stats.query_time, line, std::mem::take(&mut self.query_time));
        add(&stats.client_parses, line, std::mem::take(&mut self.client_parses));
        add(&stats.server_parses, line, std::mem::take(&mut self.server_parses));
        add(&stats.binds, line, std::mem::take(&mut self.binds));
    }
}

#[inline]
fn add(counter: &super::Counter, line: usize, n: u64) {
    if n > 0 {
        counter.add_at(line, n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::frame::test_frame as frame;

    #[test]
    fn counts_a_transaction_once_it_ends() {
        let stats = PoolStats::default();
        let mut m = Meter::new(1, Vec::new());
        let mut frames = frame(b'P', b"s1\0select $1\0\0\0");
        frames.extend(frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
        frames.extend(frame(b'S', b""));
        m.requests(&frames, true);
        m.from_client(frames.len());
        assert!(matches!(m.captured(), Some(Captured::Text(t)) if t == b"select $1"));
        m.server_parsed(1);
        m.to_client(30);
        m.answered(1, 0, b'T', &stats);
        assert_eq!(
            m.answered(0, 0, b'T', &stats),
            None,
            "nothing answered, nothing recorded"
        );
        assert_eq!(PoolStats::get(&stats.xacts), 0, "still in a transaction");
        m.requests(&frame(b'B', b"\0s1\0\0\0\0\0\0\0"), true);
        assert!(matches!(m.captured(), Some(Captured::Statement(b"s1"))));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(m.answered(1, 0, b'I', &stats).is_some_and(|us| us >= 2000));
        assert_eq!(PoolStats::get(&stats.xacts), 1);
        assert_eq!(PoolStats::get(&stats.queries), 2);
        assert_eq!(PoolStats::get(&stats.client_parses), 1);
        assert_eq!(PoolStats::get(&stats.server_parses), 1);
        assert_eq!(PoolStats::get(&stats.binds), 2);
        assert_eq!(PoolStats::get(&stats.sent), 30);
        assert_eq!(PoolStats::get(&stats.received), frames.len() as u64);
        assert!(PoolStats::get(&stats.xact_time) >= 2000);
        assert_eq!(stats.query_latency.snapshot().iter().sum::<u64>(), 2);
        // The next meter (the same server's next transaction) reuses the capture buffer, empty.
        let mut next = Meter::new(1, m.take_capture());
        assert!(next.captured().is_none());
        next.requests(&frame(b'Q', b"select 2\0"), true);
        assert!(matches!(next.captured(), Some(Captured::Text(t)) if t == b"select 2"));
    }
}
