//! A console answer: RowDescription, DataRows, CommandComplete, in text format.

use crate::protocol::messages::{message, put_cstr};
use bytes::{BufMut, BytesMut};

/// Column types, as PgBouncer sends them (exporters decode numbers by these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Text,
    Int4,
    Int8,
    Numeric,
}

impl Ty {
    fn oid(self) -> (i32, i16) {
        match self {
            Ty::Text => (25, -1),
            Ty::Int4 => (23, 4),
            Ty::Int8 => (20, 8),
            Ty::Numeric => (1700, -1),
        }
    }
}

/// A cell; None is NULL.
pub type Cell = Option<String>;

pub struct Rows {
    columns: Vec<(String, Ty)>,
    rows: Vec<Vec<Cell>>,
}

impl Rows {
    pub fn new(columns: &[(&str, Ty)]) -> Rows {
        Rows {
            columns: columns.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            rows: Vec::new(),
        }
    }

    /// Columns named in `names`, all of one type.
    pub fn of(names: &[&str], ty: Ty) -> Rows {
        Rows {
            columns: names.iter().map(|n| (n.to_string(), ty)).collect(),
            rows: Vec::new(),
        }
    }

    pub fn add_column(&mut self, name: &str, ty: Ty) {
        self.columns.push((name.to_string(), ty));
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The messages of the answer, ending with CommandComplete `tag`.
    pub fn encode(&self, out: &mut BytesMut, tag: &str) {
        message(out, b'T', |b| {
            b.put_i16(self.columns.len() as i16);
            for (name, ty) in &self.columns {
                let (oid, len) = ty.oid();
                put_cstr(b, name);
                b.put_i32(0);
                b.put_i16(0);
                b.put_i32(oid);
                b.put_i16(len);
                b.put_i32(-1);
                b.put_i16(0);
            }
        });
        for row in &self.rows {
            message(out, b'D', |b| {
                b.put_i16(row.len() as i16);
                for cell in row {
                    match cell {
                        Some(v) => {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v.as_bytes());
                        }
                        None => b.put_i32(-1),
                    }
                }
            });
        }
        complete(out, tag);
    }
}

pub fn complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |b| put_cstr(b, tag));
}

/// Cell helpers.
pub fn text(v: impl Into<String>) -> Cell {
    Some(v.into())
}

pub fn num(v: impl std::fmt::Display) -> Cell {
    Some(v.to_string())
}

/// A wall-clock time from `stats::now_us` µs, as PgBouncer prints it (UTC here).
pub fn time(us_since_start: u64) -> Cell {
    Some(utc(crate::stats::wall_clock_secs(us_since_start)))
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_415), (2025, 11, 23));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn encodes_a_result() {
        let mut rows = Rows::new(&[("a", Ty::Text), ("b", Ty::Int4)]);
        rows.push(vec![text("x"), None]);
        let mut out = BytesMut::new();
        rows.encode(&mut out, "SHOW");
        assert_eq!(out[0], b'T');
        let tail = &out[out.len() - 10..];
        assert_eq!(tail, b"C\0\0\0\x09SHOW\0");
        assert!(out.windows(2).any(|w| w == [0xff, 0xff]), "NULL is length -1");
    }
}
