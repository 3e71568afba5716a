//! Read buffers: the room every read asks for (`reserve`), and clients' buffers between
//! transactions.
//!
//! An idle client holds no read buffer: when it waits for its next request with nothing
//! buffered, its buffer goes to a small per-thread stock, and it takes one back when its socket
//! turns readable. The stock (a thread-local Vec: no lock, no atomic) spares the allocator a
//! round trip per transaction; it keeps at most `KEEP` buffers per worker thread.

use bytes::BytesMut;
use std::cell::RefCell;

/// What a client's read buffer holds when it is taken (the relay reads in chunks this size).
pub const READ_BUFFER: usize = 16 * 1024;
const KEEP: usize = 32;

thread_local! {
    static STOCK: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Room for the next read into a buffer (a client's or a server's): READ_BUFFER more when less
/// than a quarter of it is left, so a read is never tiny and the buffer grows in steps.
#[inline]
pub fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_BUFFER / 4 {
        buf.reserve(READ_BUFFER);
    }
}

/// An empty buffer with room for READ_BUFFER bytes.
pub fn take() -> BytesMut {
    let spare = STOCK.try_with(|s| s.borrow_mut().pop()).ok().flatten();
    let mut buf = spare.unwrap_or_default();
    buf.reserve(READ_BUFFER);
    buf
}

/// Takes an empty buffer from its owner (who is left with one of no capacity) and keeps it for
/// the next `take`, unless the stock is full or the buffer is too small or too large to reuse.
pub fn give(buf: &mut BytesMut) {
    debug_assert!(buf.is_empty());
    let mut buf = std::mem::take(buf);
    // Reads advanced its start: take the room before it back (free for an empty buffer).
    let _ = buf.try_reclaim(READ_BUFFER);
    if !(READ_BUFFER..=4 * READ_BUFFER).contains(&buf.capacity()) {
        return;
    }
    let _ = STOCK.try_with(|s| {
        let mut stock = s.borrow_mut();
        if stock.len() < KEEP {
            stock.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_room() {
        let mut a = take();
        assert!(a.capacity() >= READ_BUFFER);
        a.extend_from_slice(b"hello");
        a.clear();
        give(&mut a);
        assert_eq!(a.capacity(), 0);
        let b = take();
        assert!(b.is_empty() && b.capacity() >= READ_BUFFER);
        // A buffer whose start moved on with its reads is taken back whole.
        let mut used = take();
        used.extend_from_slice(&[1; 100]);
        bytes::Buf::advance(&mut used, 100);
        give(&mut used);
        assert_eq!(used.capacity(), 0);
        assert_eq!(STOCK.with(|s| s.borrow().len()), 1, "kept");
        let mut small = BytesMut::with_capacity(100);
        give(&mut small);
        assert_eq!(small.capacity(), 0);
    }
}
