//! Passwords as pooler.toml holds them: plain, md5 or a SCRAM secret.

use base64::Engine as _;
use std::fmt;

/// A password from `[users]` or `[databases]`. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    /// md5(password + username), as PostgreSQL stores it after "md5".
    Md5([u8; 16]),
    Scram(ScramSecret),
}

/// PostgreSQL's pg_authid SCRAM-SHA-256 secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(***)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(***)"),
            Secret::Scram(s) => write!(f, "Secret::Scram({s:?})"),
        }
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramSecret {{ iterations: {}, *** }}", self.iterations)
    }
}

impl Secret {
    /// Parses a password as written in the file: "md5" + 32 hex digits, a PostgreSQL
    /// "SCRAM-SHA-256$..." secret, else plain text (as PostgreSQL and PgBouncer read them, so a
    /// plain password may well start with "md5"). Errors never contain the input.
    pub fn parse(text: &str) -> Result<Secret, String> {
        if let Some(hex) = text.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return parse_md5(hex).map(Secret::Md5);
            }
        }
        if let Some(rest) = text.strip_prefix("SCRAM-SHA-256$") {
            return parse_scram(rest).map(Secret::Scram);
        }
        if text.is_empty() {
            return Err("empty password; leave the key out instead".into());
        }
        Ok(Secret::Plain(text.to_string()))
    }
}

fn parse_md5(hex: &str) -> Result<[u8; 16], String> {
    let len = hex.chars().count();
    if len != 32 {
        return Err(format!(
            "md5 secret: expected 32 hex digits after \"md5\", found {len} characters"
        ));
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("md5 secret: the part after \"md5\" is not all hex digits".into());
    }
    let digit = |b: &u8| (*b as char).to_digit(16).unwrap_or(0) as u8;
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = pair.iter().fold(0, |acc, d| acc << 4 | digit(d));
    }
    Ok(out)
}

fn parse_scram(rest: &str) -> Result<ScramSecret, String> {
    let shape = "expected SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>";
    let missing = |what: &str| format!("SCRAM secret: missing {what}; {shape}");
    let (iter_salt, keys) = rest.split_once('$').ok_or_else(|| missing("'$' before the keys"))?;
    let (iterations, salt) = iter_salt
        .split_once(':')
        .ok_or_else(|| missing("':' between iteration count and salt"))?;
    let (stored, server) = keys
        .split_once(':')
        .ok_or_else(|| missing("':' between stored key and server key"))?;
    let iterations = match iterations.parse::<u32>() {
        Ok(n) if n > 0 && iterations.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err("SCRAM secret: the iteration count is not a positive integer".into()),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64
        .decode(salt)
        .map_err(|_| "SCRAM secret: the salt is not valid base64")?;
    if salt.is_empty() {
        return Err("SCRAM secret: the salt is empty".into());
    }
    let key = |text: &str, what: &str| -> Result<[u8; 32], String> {
        let bytes = b64
            .decode(text)
            .map_err(|_| format!("SCRAM secret: the {what} is not valid base64"))?;
        let n = bytes.len();
        <[u8; 32]>::try_from(bytes).map_err(|_| format!("SCRAM secret: the {what} must be 32 bytes, found {n}"))
    };
    let (stored_key, server_key) = (key(stored, "stored key")?, key(server, "server key")?);
    Ok(ScramSecret {
        iterations,
        salt,
        stored_key,
        server_key,
    })
}
