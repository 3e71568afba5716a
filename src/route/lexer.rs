//! Tokens of a Query's text, just enough to tell quoted text from keywords: strings, `E''`
//! strings, dollar quotes and quoted identifiers are single tokens, comments are skipped.
//! Borrows the text; never allocates.

use crate::prepared::query::{skip_space, word};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    /// An unquoted identifier or keyword (or a number), as written.
    Word(&'a [u8]),
    /// A quoted identifier's inside, `""` left doubled.
    Quoted(&'a [u8]),
    /// A string, dollar-quoted or not. `ambiguous`: a plain `'...'` holding a backslash, which
    /// ends elsewhere when standard_conforming_strings is off.
    Str {
        ambiguous: bool,
    },
    Semi,
    Open,
    Close,
    /// Any other byte (operators, `,`, `.`) or a `$1` parameter.
    Other(u8),
    /// A string, quoted identifier or dollar quote that is not closed.
    Bad,
    End,
}

pub struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Lexer { text, pos: 0 }
    }

    /// Nothing left, not even a comment.
    pub fn done(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// Where the next token (or the space before it) starts.
    pub fn offset(&self) -> usize {
        self.pos
    }

    pub fn next_tok(&mut self) -> Tok<'a> {
        let text = self.text;
        let i = skip_space(text, self.pos);
        let Some(&c) = text.get(i) else {
            self.pos = text.len();
            return Tok::End;
        };
        let (tok, end) = match c {
            b'\'' => string(text, i + 1, false),
            b'"' => quoted(text, i),
            b'$' => dollar(text, i),
            b';' => (Tok::Semi, i + 1),
            b'(' => (Tok::Open, i + 1),
            b')' => (Tok::Close, i + 1),
            // A number is ASCII letters, digits and `_`, as in PostgreSQL's lexer: it ends before
            // a `$` (`4$$x$$` is 4 and a dollar quote, where `a$$b` is one identifier) and before
            // a non-ASCII byte, which starts an identifier. Found by the classify fuzz target:
            // `select 4$$$$into 2$$` hid its INTO inside one word, and `1\xff$$` (once numbers
            // ended only at `$`) opened a dollar quote PostgreSQL does not see.
            c if c.is_ascii_digit() => {
                let rest = &text[i..];
                let n = rest
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                    .unwrap_or(rest.len());
                (Tok::Word(&rest[..n]), i + n)
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                let w = word(text, i);
                let end = i + w.len();
                if w.eq_ignore_ascii_case(b"e") && text.get(end) == Some(&b'\'') {
                    string(text, end + 1, true)
                } else {
                    (Tok::Word(w), end)
                }
            }
            c => (Tok::Other(c), i + 1),
        };
        self.pos = end;
        tok
    }
}

/// The rest of a string whose opening quote is before `j`: `''` is a quote, and in an `E''`
/// string a backslash escapes the next byte.
fn string(text: &[u8], mut j: usize, escapes: bool) -> (Tok<'_>, usize) {
    let mut ambiguous = false;
    loop {
        match text.get(j) {
            None => return (Tok::Bad, text.len()),
            Some(b'\'') if text.get(j + 1) == Some(&b'\'') => j += 2,
            Some(b'\'') => return (Tok::Str { ambiguous }, j + 1),
            Some(b'\\') if escapes => j += 2,
            Some(b'\\') => {
                ambiguous = true;
                j += 1;
            }
            Some(_) => j += 1,
        }
    }
}

fn quoted(text: &[u8], i: usize) -> (Tok<'_>, usize) {
    let mut j = i + 1;
    loop {
        match text.get(j) {
            None => return (Tok::Bad, text.len()),
            Some(b'"') if text.get(j + 1) == Some(&b'"') => j += 2,
            Some(b'"') => break,
            Some(_) => j += 1,
        }
    }
    (Tok::Quoted(text.get(i + 1..j).unwrap_or_default()), j + 1)
}

/// `$tag$ ... $tag$` (tag possibly empty), else a `$1` parameter.
fn dollar(text: &[u8], i: usize) -> (Tok<'_>, usize) {
    let tag_byte = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80;
    let mut j = i + 1;
    // A tag does not start with a digit: `$1$` is not a dollar quote.
    if text.get(j).is_some_and(|c| tag_byte(c) && !c.is_ascii_digit()) {
        while text.get(j).is_some_and(tag_byte) {
            j += 1;
        }
    }
    if text.get(j) != Some(&b'$') {
        while text.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        return (Tok::Other(b'$'), j.max(i + 1));
    }
    let Some(tag) = text.get(i..=j) else {
        return (Tok::Bad, text.len());
    };
    let body = text.get(j + 1..).unwrap_or_default();
    match body.windows(tag.len()).position(|w| w == tag) {
        Some(p) => (Tok::Str { ambiguous: false }, j + 1 + p + tag.len()),
        None => (Tok::Bad, text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(sql: &str) -> Vec<Tok<'_>> {
        let mut lex = Lexer::new(sql.as_bytes());
        let mut out = Vec::new();
        loop {
            match lex.next_tok() {
                Tok::End => return out,
                t => out.push(t),
            }
        }
    }

    #[test]
    fn quoting() {
        use Tok::*;
        let s = Str { ambiguous: false };
        assert_eq!(toks("a 'it''s' b"), [Word(b"a"), s, Word(b"b")]);
        assert_eq!(toks("E'a\\'b' c"), [s, Word(b"c")]);
        assert_eq!(toks("'a\\' c"), [Str { ambiguous: true }, Word(b"c")]);
        assert_eq!(toks("$$a'b$$ $x$ $$ $x$;"), [s, s, Semi]);
        assert_eq!(toks("$1 a$$b"), [Other(b'$'), Word(b"a$$b")]);
        assert_eq!(toks("\"a\"\"b\"(x)"), [Quoted(b"a\"\"b"), Open, Word(b"x"), Close]);
        assert_eq!(toks("/* a /* b */ c */ -- d\n x"), [Word(b"x")]);
        assert_eq!(toks("'open"), [Bad]);
        assert_eq!(toks("$t$ open $t"), [Bad]);
        assert_eq!(toks("\"open"), [Bad]);
    }

    #[test]
    fn a_number_ends_before_a_dollar_quote() {
        use Tok::*;
        let s = Str { ambiguous: false };
        // The classify fuzz target's finding: PostgreSQL reads `4`, `$$$$`, `into`, `2`, `$$`.
        assert_eq!(
            toks("select 4$$$$into 2$$"),
            [Word(b"select"), Word(b"4"), s, Word(b"into"), Word(b"2"), Bad]
        );
        assert_eq!(toks("1e5 x1$$ 12abc"), [Word(b"1e5"), Word(b"x1$$"), Word(b"12abc")]);
        // A non-ASCII byte after a number starts an identifier, which goes on through `$`.
        let bytes = b"1\xff$$ x";
        let mut lex = Lexer::new(bytes);
        let toks: Vec<Tok<'_>> = std::iter::from_fn(|| Some(lex.next_tok()).filter(|t| *t != End)).collect();
        assert_eq!(toks, [Word(b"1"), Word(b"\xff$$"), Word(b"x")]);
    }
}
