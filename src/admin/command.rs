//! Parsing one console command: `WORD [ARG]`, or `SET key = value`, case-insensitive, one
//! per Query, an optional `;` at the end.

use crate::protocol::messages::PgError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The item, lowercase.
    Show(String),
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
    Kill(Option<String>),
    KillClient(String),
    Disable(String),
    Enable(String),
    Reload,
    Shutdown(ShutdownMode),
    WaitClose(Option<String>),
    Set {
        key: String,
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Exit at once (transactions in flight are cut after shutdown_timeout).
    Now,
    /// Let every transaction finish, then exit.
    WaitForServers,
    /// Stop accepting, exit when the last client has gone.
    WaitForClients,
}

impl Command {
    /// SHOW commands are for stats_users too; everything else needs admin_users.
    pub fn read_only(&self) -> bool {
        matches!(self, Command::Show(_))
    }
}

pub const USAGE: &str = "SHOW HELP|POOLS|STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|DATABASES|CLIENTS|SERVERS|USERS|CONFIG|LISTS|VERSION|STATE|SLOW_QUERIES|REPLICAS|BREAKERS|LISTENERS|PEERS|PEER_POOLS; \
SET key = value; RELOAD; PAUSE [db]; RESUME [db]; DISABLE db; ENABLE db; RECONNECT [db]; KILL [db]; KILL_CLIENT id; \
SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]; WAIT_CLOSE [db]";

fn syntax(message: String) -> PgError {
    PgError::new("42601", message).with_hint(format!("console commands: {USAGE}"))
}

pub fn parse(sql: &str) -> Result<Command, PgError> {
    let trimmed = sql.trim();
    let body = trimmed.strip_suffix(';').unwrap_or(trimmed).trim_end();
    if body.contains(';') {
        return Err(syntax("the console runs one command per query".into()));
    }
    let (first, rest) = split_word(body);
    let verb = first.to_ascii_lowercase();
    if verb == "set" {
        return parse_set(rest);
    }
    let (arg, extra) = split_word(rest);
    let arg = unquote(arg);
    if !extra.is_empty() {
        return Err(unknown(trimmed));
    }
    let optional = || (!arg.is_empty()).then(|| arg.clone());
    let required = |what: &str| {
        if arg.is_empty() {
            Err(syntax(format!("{} needs {what}", verb.to_ascii_uppercase())))
        } else {
            Ok(arg.clone())
        }
    };
    let none = |cmd: Command| if arg.is_empty() { Ok(cmd) } else { Err(unknown(trimmed)) };
    match verb.as_str() {
        "show" => Ok(Command::Show(required("an item")?.to_ascii_lowercase())),
        "pause" => Ok(Command::Pause(optional())),
        "resume" => Ok(Command::Resume(optional())),
        "reconnect" => Ok(Command::Reconnect(optional())),
        "kill" => Ok(Command::Kill(optional())),
        "kill_client" => Ok(Command::KillClient(required("a client id")?)),
        "disable" => Ok(Command::Disable(required("a database")?)),
        "enable" => Ok(Command::Enable(required("a database")?)),
        "wait_close" => Ok(Command::WaitClose(optional())),
        "reload" => none(Command::Reload),
        "shutdown" => match arg.to_ascii_lowercase().as_str() {
            "" => Ok(Command::Shutdown(ShutdownMode::Now)),
            "wait_for_servers" => Ok(Command::Shutdown(ShutdownMode::WaitForServers)),
            "wait_for_clients" => Ok(Command::Shutdown(ShutdownMode::WaitForClients)),
            _ => Err(unknown(trimmed)),
        },
        "" => Err(syntax("empty command".into())),
        "select" | "insert" | "update" | "delete" | "begin" | "with" | "values" | "create" | "explain" => {
            Err(syntax(format!(
                "the pgmux console runs console commands, not SQL: \"{}\"",
                clip(trimmed)
            )))
        }
        _ => Err(unknown(trimmed)),
    }
}

fn unknown(sql: &str) -> PgError {
    syntax(format!("invalid console command \"{}\"", clip(sql)))
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// `key = value` or `key TO value`; the value a word or a '' string.
fn parse_set(rest: &str) -> Result<Command, PgError> {
    let bad = || syntax("expected SET key = value".into());
    let (key, after) = match rest.split_once(['=', ' ', '\t']) {
        Some((key, _)) => (key, rest.get(key.len()..).unwrap_or("").trim_start()),
        None => return Err(bad()),
    };
    // Client text: cut only at char boundaries (`get`), never by a byte index that may split one.
    let to = after.get(..2).filter(|w| w.eq_ignore_ascii_case("to"));
    let value = if let Some(v) = after.strip_prefix('=') {
        v.trim()
    } else if let (Some(_), Some(v)) = (to, after.get(2..).filter(|v| v.starts_with(char::is_whitespace))) {
        v.trim()
    } else {
        return Err(bad());
    };
    let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => value.to_owned(),
    };
    if key.is_empty() || value.is_empty() {
        return Err(bad());
    }
    Ok(Command::Set {
        key: key.to_ascii_lowercase(),
        value,
    })
}

/// The first word (a "quoted" one whole) and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let end = if s.starts_with('"') {
        let mut i = 1;
        let b = s.as_bytes();
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                i += 1;
                break;
            }
            i += 1;
        }
        i
    } else {
        s.find(char::is_whitespace).unwrap_or(s.len())
    };
    (s.get(..end).unwrap_or(s), s.get(end..).unwrap_or("").trim())
}

fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => word.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("show pools;").unwrap(), Command::Show("pools".into()));
        assert_eq!(
            parse("  SHOW   Stats_Totals  ").unwrap(),
            Command::Show("stats_totals".into())
        );
        assert_eq!(parse("PAUSE").unwrap(), Command::Pause(None));
        assert_eq!(parse("pause \"My Db\";").unwrap(), Command::Pause(Some("My Db".into())));
        assert_eq!(parse("kill_client 42").unwrap(), Command::KillClient("42".into()));
        assert_eq!(
            parse("shutdown wait_for_clients").unwrap(),
            Command::Shutdown(ShutdownMode::WaitForClients)
        );
        assert_eq!(
            parse("SET default_pool_size = 30").unwrap(),
            Command::Set {
                key: "default_pool_size".into(),
                value: "30".into()
            }
        );
        assert_eq!(
            parse("set server_reset_query to 'DISCARD ''ALL'''").unwrap(),
            Command::Set {
                key: "server_reset_query".into(),
                value: "DISCARD 'ALL'".into()
            }
        );
    }

    #[test]
    fn multibyte_text_is_refused_not_a_panic() {
        // Issue 22: `SET x €` once sliced the input at byte 2, inside the euro sign.
        for text in [
            "SET x €",
            "SET x t€",
            "SET x \u{1F600}",
            "SET €x = 1",
            "set é",
            "SET x\t€€ = 1",
            "SET x = €",
        ] {
            let _ = parse(text);
        }
        assert!(parse("SET x €").is_err());
        assert_eq!(
            parse("SET x TO '€'").unwrap(),
            Command::Set {
                key: "x".into(),
                value: "€".into()
            }
        );
        // Every prefix and suffix of a mix of one- to four-byte characters.
        let mixed = "SET clé TO 'ñ€😀' ; SHOW ß";
        for (i, _) in mixed.char_indices() {
            let _ = parse(&mixed[..i]);
            let _ = parse(&mixed[i..]);
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            "select 1",
            "show",
            "frobnicate",
            "show pools; show stats",
            "reload now",
            "kill_client",
            "set x",
            "",
            "disable",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, "42601", "{bad}");
            assert!(!e.fatal);
        }
        assert!(parse("select 1").unwrap_err().message.contains("not SQL"));
        assert!(parse("set x tomato").is_err(), "TO is a word of its own");
        assert!(parse("frobnicate").unwrap_err().hint.unwrap().contains("SHOW HELP"));
    }
}
