//! Client framing (`frontend::track::scan_client`, `protocol::frame`).
//!
//! Two properties, chosen by the first byte:
//! - raw bytes: the frames `scan_client` forwards are exactly the whole frames postgres-protocol's
//!   header decoder finds, walking the same bytes, up to the first frame pgmux must refuse
//!   (length over `max`, a tag no client sends, a PasswordMessage) or a Terminate; and its
//!   Query/Sync/FunctionCall count is that of those frames;
//! - messages: a sequence of frontend messages written by postgres-protocol's encoders, cut
//!   anywhere, is split by `scan_client` at the end of the last whole message, with the same count.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::frontend::track::{scan_client, Tracker};
use pgmux::protocol::frame::{is_frontend_tag, FrameError};
use postgres_protocol::message::{backend::Header, frontend};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(mode, rest);
    } else {
        messages(rest);
    }
});

/// What the relay may forward, by postgres-protocol's framing and pgmux's rules.
struct Expected {
    end: usize,
    pending: u32,
    terminate: bool,
    error: bool,
    copy_end: bool,
}

fn reference(buf: &[u8], max: usize) -> Expected {
    let (mut pos, mut pending, mut copy_end) = (0, 0, false);
    loop {
        let header = match Header::parse(&buf[pos..]) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            // Length under 4, or (as i32) over 2 GiB: pgmux refuses both, one way or the other.
            Err(_) => {
                return Expected {
                    end: pos,
                    pending,
                    terminate: false,
                    error: true,
                    copy_end,
                }
            }
        };
        let total = header.len() as usize + 1;
        if header.len() as usize > max || !is_frontend_tag(header.tag()) {
            return Expected {
                end: pos,
                pending,
                terminate: false,
                error: true,
                copy_end,
            };
        }
        if header.tag() == b'X' {
            return Expected {
                end: pos,
                pending,
                terminate: true,
                error: false,
                copy_end,
            };
        }
        if buf.len() - pos < total {
            break;
        }
        match header.tag() {
            b'p' => {
                return Expected {
                    end: pos,
                    pending,
                    terminate: false,
                    error: true,
                    copy_end,
                }
            }
            b'Q' | b'S' | b'F' => pending += 1,
            b'c' | b'f' => copy_end = true,
            _ => {}
        }
        pos += total;
    }
    Expected {
        end: pos,
        pending,
        terminate: false,
        error: false,
        copy_end,
    }
}

fn raw(mode: u8, buf: &[u8]) {
    // Small limits too, so that TooLarge is reached.
    let max = match mode >> 1 {
        0..=31 => 1 << 20,
        m => m as usize * 4,
    };
    let want = reference(buf, max);
    let mut t = Tracker::default();
    match scan_client(buf, 0, max, &mut t) {
        Ok(scan) => {
            assert!(!want.error, "pgmux accepted what it should refuse: {buf:?}");
            assert_eq!(scan.end, want.end, "frames forwarded: {buf:?}");
            assert_eq!(scan.terminate, want.terminate);
            // CopyDone and CopyFail take back Syncs swallowed by COPY: not modelled here.
            if !want.copy_end {
                assert_eq!(t.pending, want.pending);
            }
        }
        Err(e) => {
            assert!(want.error, "pgmux refused ({e}) what it should accept: {buf:?}");
            if let FrameError::TooLarge { len, max: m } = e {
                assert!(len > m);
            }
        }
    }
}

/// A few bytes at a time from the fuzz input.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    /// A short string without NUL (postgres-protocol's encoders refuse NUL).
    fn text(&mut self) -> Option<String> {
        let n = (self.byte()? % 24) as usize;
        let (s, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        Some(String::from_utf8_lossy(s).replace('\0', " "))
    }
}

fn messages(data: &[u8]) {
    let mut c = Cursor(data);
    let Some(cut) = c.byte() else { return };
    let mut buf = BytesMut::new();
    let mut ends = Vec::new();
    let mut pending_at = Vec::new();
    let mut pending = 0u32;
    while let Some(kind) = c.byte() {
        let ok = match kind % 10 {
            0 => c.text().map(|q| frontend::query(&q, &mut buf)),
            1 => {
                let (name, sql) = (c.text(), c.text());
                let n = c.byte().unwrap_or(0) % 4;
                name.zip(sql)
                    .map(|(n2, s)| frontend::parse(&n2, &s, (0..n).map(u32::from), &mut buf))
            }
            2 => {
                let (portal, stmt) = (c.text(), c.text());
                let values: Vec<Option<Vec<u8>>> = (0..c.byte().unwrap_or(0) % 4)
                    .map(|i| (i != 1).then(|| vec![i; i as usize]))
                    .collect();
                portal.zip(stmt).map(|(p, s)| {
                    frontend::bind(
                        &p,
                        &s,
                        [1i16],
                        values,
                        |v, out| match v {
                            Some(v) => {
                                out.extend_from_slice(&v);
                                Ok(postgres_protocol::IsNull::No)
                            }
                            None => Ok(postgres_protocol::IsNull::Yes),
                        },
                        [0i16],
                        &mut buf,
                    )
                    .map_err(|_| std::io::Error::other("bind"))
                })
            }
            3 => c
                .text()
                .map(|n| frontend::describe(if kind & 0x10 == 0 { b'S' } else { b'P' }, &n, &mut buf)),
            4 => c
                .text()
                .map(|n| frontend::close(if kind & 0x10 == 0 { b'S' } else { b'P' }, &n, &mut buf)),
            5 => c.text().map(|p| frontend::execute(&p, i32::from(kind), &mut buf)),
            6 => {
                frontend::sync(&mut buf);
                Some(Ok(()))
            }
            7 => {
                frontend::flush(&mut buf);
                Some(Ok(()))
            }
            8 => c
                .text()
                .map(|d| frontend::CopyData::new(d.into_bytes().as_slice()).map(|m| m.write(&mut buf))),
            _ => {
                // A large Query, so that cuts fall inside a body.
                let n = c.byte().unwrap_or(0) as usize * 64;
                Some(frontend::query(&"x".repeat(n), &mut buf))
            }
        };
        match ok {
            Some(Ok(())) => {}
            _ => return,
        }
        if matches!(kind % 10, 0 | 6 | 9) {
            pending += 1;
        }
        ends.push(buf.len());
        pending_at.push(pending);
    }
    let cut = if cut == 255 {
        buf.len()
    } else {
        buf.len() * usize::from(cut) / 255
    };
    let bytes = &buf[..cut];
    let whole = ends.iter().take_while(|&&e| e <= cut).count();
    let want_end = if whole == 0 { 0 } else { ends[whole - 1] };
    let want_pending = if whole == 0 { 0 } else { pending_at[whole - 1] };
    let mut t = Tracker::default();
    let scan = scan_client(bytes, 0, 1 << 30, &mut t).expect("postgres-protocol's messages are well-framed");
    assert_eq!(scan.end, want_end, "cut at {cut} of {ends:?}");
    assert!(!scan.terminate);
    assert_eq!(t.pending, want_pending);
    // Scanning in two steps (as reads arrive) ends at the same place.
    let mut t2 = Tracker::default();
    let first = scan_client(&bytes[..cut / 2], 0, 1 << 30, &mut t2).unwrap();
    let second = scan_client(bytes, first.end, 1 << 30, &mut t2).unwrap();
    assert_eq!(second.end, want_end);
    assert_eq!(t2.pending, want_pending);
}
