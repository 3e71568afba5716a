//! The steady state of a prepared workload, renamed in place: a request whose only frames that
//! name statements are Binds and Describes of statements the server holds for good. Their
//! names grow to the pooler-wide ones by moving the bytes behind them once, back to front,
//! instead of copying the region aside and writing it again frame by frame (`rewrite`).
//! Anything else (a Parse, a Close, a Query, a statement the server may lack, too many
//! renames, a name longer than the pooler-wide one) is left to `rewrite`, which gives the
//! same bytes.

use super::statement::NAME_LEN;
use super::{ClientStatements, ServerStatements};
use crate::protocol::frame::{peek_header, read_cstr, HEADER_LEN};
use bytes::BytesMut;

/// Renames per request handled here; a longer pipeline goes through `rewrite`. (The list is
/// set up on every call: 8 took about 8 instructions more per transaction than 4.)
const MAX_RENAMES: usize = 4;

#[derive(Clone, Copy)]
struct Rename {
    /// Where the frame starts and where the client's name ends, in the buffer (which `try_rename`
    /// takes below 4 GiB), and the name's length.
    frame: u32,
    name_end: u32,
    len: u8,
    to: [u8; NAME_LEN],
}

/// Renames the region `buf[from..end]` in place and returns its new end, or None (buffer
/// untouched) when the region needs `rewrite`. Statements it renames are marked used, as
/// `rewrite` marks them: when it gives up after that, `rewrite` marks them again, later, which
/// leaves their order among all statements the same.
pub fn try_rename(
    buf: &mut BytesMut,
    from: usize,
    end: usize,
    view: &mut ClientStatements,
    server: &mut ServerStatements,
) -> Option<usize> {
    if buf.len() > u32::MAX as usize - 64 {
        return None;
    }
    let empty = Rename {
        frame: 0,
        name_end: 0,
        len: 0,
        to: [0; NAME_LEN],
    };
    let mut renames = [empty; MAX_RENAMES];
    let mut count = 0;
    let mut growth = 0;
    let mut pos = from;
    // Frames are read within the region only: one running past `end` is not marked used (nor
    // is it by `rewrite`).
    let region = buf.get(..end)?;
    while pos < end {
        // Frames near 2 GiB could not grow without overflowing their length word.
        let (tag, total) = peek_header(region.get(pos..)?, i32::MAX as usize - NAME_LEN).ok()??;
        let body = region.get(pos + HEADER_LEN..pos + total)?;
        let mut at = 0;
        let name = match tag {
            b'B' => read_cstr(body, &mut at).and_then(|_| read_cstr(body, &mut at)),
            b'D' if body.first() == Some(&b'S') => {
                at = 1;
                let name = read_cstr(body, &mut at);
                // `rewrite` writes a Describe anew, without bytes past the name's end.
                if name.is_some() && at != body.len() {
                    return None;
                }
                name
            }
            b'P' | b'C' | b'Q' => return None,
            _ => None,
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            // A name the client never prepared goes on as it is (the server answers 26000).
            if let Some(stmt) = view.get_hot(name) {
                if name.len() > NAME_LEN || count == MAX_RENAMES || !server.settled(stmt.key) {
                    return None;
                }
                let name_end = pos + HEADER_LEN + at - 1;
                let to: [u8; NAME_LEN] = stmt.name().try_into().ok()?;
                renames[count] = Rename {
                    frame: pos as u32,
                    name_end: name_end as u32,
                    len: name.len() as u8,
                    to,
                };
                count += 1;
                growth += NAME_LEN - name.len();
            }
        }
        pos += total;
    }
    if pos != end {
        return None;
    }
    let Some(renames) = renames.get(..count).filter(|r| !r.is_empty()) else {
        return Some(end);
    };
    // The buffer changes from here on; every index below is within it by construction.
    let len = buf.len();
    buf.resize(len + growth, 0);
    // Back to front: what follows rename i moves by the growth of renames 0..=i.
    let mut shift = growth;
    let mut tail_end = len;
    for r in renames.iter().rev() {
        let (name_end, name) = (r.name_end as usize, r.name_end as usize - usize::from(r.len));
        buf.copy_within(name_end..tail_end, name_end + shift);
        shift -= NAME_LEN - usize::from(r.len);
        buf[name + shift..name + shift + NAME_LEN].copy_from_slice(&r.to);
        tail_end = name;
    }
    // The frames' length words, each where its frame moved to.
    let mut shift = 0;
    for r in renames {
        let grow = NAME_LEN - usize::from(r.len);
        let at = r.frame as usize + shift + 1;
        let mut word = [0; 4];
        word.copy_from_slice(&buf[at..at + 4]);
        let new = u32::from_be_bytes(word) + grow as u32;
        buf[at..at + 4].copy_from_slice(&new.to_be_bytes());
        shift += grow;
    }
    Some(end + growth)
}
