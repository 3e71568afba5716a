//! The few JSON objects of the dashboard's API, written by hand into a `String`: serde_json
//! would be a dependency for five flat shapes. Strings are escaped per RFC 8259; numbers that
//! JSON cannot hold (NaN, infinities) are written as `null`.

use std::fmt::Write;

/// `s` as a JSON string, quotes included.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Other control characters, and the two separators JavaScript once refused.
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // `</script>` and `<!--` stay harmless wherever the text ends up.
            '<' => out.push_str("\\u003c"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number, or `null` when it is not finite.
pub fn float(out: &mut String, x: f64) {
    if x.is_finite() {
        let _ = write!(out, "{x}");
    } else {
        out.push_str("null");
    }
}

/// A value that writes itself as JSON.
pub trait Value {
    fn write(&self, out: &mut String);
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integers!(u8, u16, u32, u64, usize, i64);

impl Value for f64 {
    fn write(&self, out: &mut String) {
        float(out, *self)
    }
}

impl Value for f32 {
    fn write(&self, out: &mut String) {
        float(out, f64::from(*self))
    }
}

impl Value for bool {
    fn write(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl Value for str {
    fn write(&self, out: &mut String) {
        string(out, self)
    }
}

impl Value for String {
    fn write(&self, out: &mut String) {
        string(out, self)
    }
}

impl<T: Value> Value for Option<T> {
    fn write(&self, out: &mut String) {
        match self {
            Some(v) => v.write(out),
            None => out.push_str("null"),
        }
    }
}

impl<T: Value> Value for [T] {
    fn write(&self, out: &mut String) {
        out.push('[');
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            v.write(out);
        }
        out.push(']');
    }
}

impl<T: Value> Value for Vec<T> {
    fn write(&self, out: &mut String) {
        self.as_slice().write(out)
    }
}

impl<T: Value + ?Sized> Value for &T {
    fn write(&self, out: &mut String) {
        (**self).write(out)
    }
}

/// An object being written: `{` on creation, `}` on `end`.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn field(&mut self, key: &str, value: impl Value) -> &mut Self {
        value.write(self.key(key));
        self
    }

    /// A field whose value the closure writes (a nested object or array).
    pub fn with(&mut self, key: &str, f: impl FnOnce(&mut String)) -> &mut Self {
        f(self.key(key));
        self
    }

    pub fn end(&mut self) {
        self.out.push('}');
    }
}

/// An array of objects, each written by `f`.
pub fn array<T>(out: &mut String, items: impl IntoIterator<Item = T>, mut f: impl FnMut(&mut Obj, T)) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut obj = Obj::new(out);
        f(&mut obj, item);
        obj.end();
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(s: &str) -> String {
        let mut out = String::new();
        string(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(of("plain"), r#""plain""#);
        assert_eq!(of("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(of("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(of("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(of("</script>"), r#""\u003c/script>""#);
        assert_eq!(of("\u{2028}x\u{2029}"), r#""\u2028x\u2029""#);
        assert_eq!(of("é ✓ 😀"), "\"é ✓ 😀\"");
        assert_eq!(
            of("select ? from \"T\" where a = $1"),
            r#""select ? from \"T\" where a = $1""#
        );
    }

    #[test]
    fn every_string_decodes_back() {
        // A round trip through a decoder written from the RFC, for every character class.
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert_eq!(decode(&of(&all)), all);
    }

    /// A JSON string literal's value (only what `string` writes).
    fn decode(lit: &str) -> String {
        let inner = lit.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap();
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            assert!(c as u32 >= 0x20, "raw control character {c:?}");
            if c != '\\' {
                assert_ne!(c, '"', "unescaped quote");
                out.push(c);
                continue;
            }
            match chars.next().unwrap() {
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                c @ ('"' | '\\' | '/') => out.push(c),
                c => panic!("bad escape {c}"),
            }
        }
        out
    }

    #[test]
    fn objects_arrays_and_numbers() {
        let mut out = String::new();
        let mut o = Obj::new(&mut out);
        o.field("n", 3u32)
            .field("x", 0.25)
            .field("nan", f64::NAN)
            .field("inf", f32::INFINITY)
            .field("b", true)
            .field("none", None::<u64>)
            .field("s", "q\"")
            .field("list", vec![1u64, 2])
            .with("rows", |out| {
                array(out, ["a", "b"], |o, s| {
                    o.field("name", s);
                })
            });
        o.end();
        assert_eq!(
            out,
            r#"{"n":3,"x":0.25,"nan":null,"inf":null,"b":true,"none":null,"s":"q\"","list":[1,2],"rows":[{"name":"a"},{"name":"b"}]}"#
        );
        let mut empty = String::new();
        array(&mut empty, Vec::<u8>::new(), |_, _| {});
        assert_eq!(empty, "[]");
    }
}
