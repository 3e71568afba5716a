//! Values as PgBouncer reads them, written back as TOML values.

use super::Src;
use crate::config::ConfigError;

/// A TOML string literal.
pub(super) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML basic string on one line, as a key must be: quotes, backslashes and control
/// characters escaped.
pub(super) fn toml_key_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub(super) fn toml_strs(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

/// An integer as PgBouncer's `strtol(value, &end, 0)` takes it, the whole value: decimal,
/// `0x` hexadecimal or `0` octal (so `unix_socket_mode = 0777` is 511), with an optional sign.
pub(super) fn int(value: &str, src: &Src) -> Result<i64, ConfigError> {
    let bad = || {
        let hint = match value.find([';', '#']) {
            Some(_) => "; a comment must be on a line of its own",
            None => "",
        };
        src.err(format!("expected an integer, found {value:?}{hint}"))
    };
    let (negative, digits) = match value.as_bytes().first() {
        Some(b'-') => (true, value.get(1..).unwrap_or("")),
        Some(b'+') => (false, value.get(1..).unwrap_or("")),
        _ => (false, value),
    };
    let (radix, digits) = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, digits.get(1..).unwrap_or(""))
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let n = i64::from_str_radix(digits, radix).map_err(|_| src.err(format!("{value} is out of range")))?;
    Ok(if negative { -n } else { n })
}

/// An integer from 0 to u32::MAX.
pub(super) fn uint(value: &str, src: &Src) -> Result<u32, ConfigError> {
    let n = int(value, src)?;
    u32::try_from(n).map_err(|_| match n {
        n if n < 0 => src.err(format!("must not be negative, found {n}")),
        n => src.err(format!("{n} is too large")),
    })
}

/// PgBouncer's booleans are integers: 0 is off, anything else on.
pub(super) fn flag(value: &str, src: &Src) -> Result<bool, ConfigError> {
    Ok(int(value, src)? != 0)
}

/// Seconds as PgBouncer's time settings take them (`strtod`, not negative), as a TOML number.
pub(super) fn seconds(value: &str, src: &Src) -> Result<String, ConfigError> {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let x: f64 = match value.parse() {
        Ok(x) if plain => x,
        _ => {
            let hint = match value.find([';', '#']) {
                Some(_) => "; a comment must be on a line of its own",
                None => "",
            };
            return Err(src.err(format!("expected a number of seconds, found {value:?}{hint}")));
        }
    };
    if x < 0.0 {
        return Err(src.err(format!("must not be negative, found {value}")));
    }
    toml_seconds(x).ok_or_else(|| src.err(format!("{value} seconds is too large")))
}

/// Whole seconds as a TOML integer, others as a float; None past what a duration holds.
pub(super) fn toml_seconds(x: f64) -> Option<String> {
    if !x.is_finite() || x >= 1e15 {
        return None;
    }
    if x.fract() == 0.0 {
        // Exact: below 1e15 an f64 integer converts without loss.
        return Some(format!("{}", x as u64));
    }
    Some(format!("{x:?}"))
}

/// One of `words`, matched without regard to case as PgBouncer's lookups are.
pub(super) fn lookup(value: &str, words: &[&'static str], src: &Src) -> Result<&'static str, ConfigError> {
    words
        .iter()
        .find(|w| w.eq_ignore_ascii_case(value))
        .copied()
        .ok_or_else(|| {
            let words: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
            src.err(format!("invalid value {value:?}, expected one of {}", words.join(", ")))
        })
}

/// A comma-separated list (admin_users, host): items trimmed, empty ones dropped.
pub(super) fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
