//! `auth_hba_file`: PostgreSQL's pg_hba.conf rules, as PgBouncer reads them for
//! `auth_type = hba`. The first rule whose connection type, database, user and address match
//! decides the method; no match refuses the client as PostgreSQL does (28000).
//!
//! Read once per (re)load: a malformed line refuses the whole file with `file:line: problem`,
//! so a reload with a broken file keeps the rules that were running.

use std::net::IpAddr;
use std::path::Path;

/// How a matching client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Trust,
    Reject,
    Md5,
    ScramSha256,
    /// A clear-text password, checked against any kind of stored secret.
    Password,
    /// The client's TLS certificate names the user.
    Cert,
}

impl Method {
    fn parse(word: &str) -> Option<Method> {
        Some(match word {
            "trust" => Method::Trust,
            "reject" => Method::Reject,
            "md5" => Method::Md5,
            "scram-sha-256" => Method::ScramSha256,
            "password" => Method::Password,
            "cert" => Method::Cert,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

/// A database or user name as the rule lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    All,
    /// `sameuser` (databases): the database named like the user.
    SameUser,
    /// `replication` (databases): replication connections, which pgmux does not take.
    Replication,
    /// `+role` (users): members of the role, as `member_of` reports them.
    Member(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Any,
    Net { addr: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    line: usize,
    conn: ConnType,
    databases: Vec<Name>,
    users: Vec<Name>,
    address: Address,
    method: Method,
}

/// The rules of one file, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hba {
    rules: Vec<Rule>,
}

/// Who is connecting, and how.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// None for a Unix-socket connection.
    pub addr: Option<IpAddr>,
    pub tls: bool,
    pub database: &'a str,
    pub user: &'a str,
}

/// What the rules say about a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The first matching rule's method, and its line.
    Method(Method, usize),
    /// No rule matched.
    NoEntry,
}

impl Hba {
    /// Reads the file; `@file` lists are read relative to its directory.
    pub fn load(path: &Path) -> Result<Hba, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Hba::parse(&text, &path.display().to_string(), &|name| {
            let file = dir.join(name);
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))
        })
    }

    /// Parses rules from `text`; `read` gives the contents of an `@file` reference.
    pub fn parse(text: &str, origin: &str, read: &dyn Fn(&str) -> Result<String, String>) -> Result<Hba, String> {
        let mut rules = Vec::new();
        for (i, line) in logical_lines(text) {
            let words = tokens(&line).map_err(|e| format!("{origin}:{i}: {e}"))?;
            if words.is_empty() {
                continue;
            }
            let rule = rule(i, &words, read).map_err(|e| format!("{origin}:{i}: {e}"))?;
            rules.push(rule);
        }
        Ok(Hba { rules })
    }

    /// The first rule that matches; `member_of(user, role)` answers `+role` entries (false when
    /// membership cannot be known).
    pub fn decide(&self, client: &Client<'_>, member_of: &dyn Fn(&str, &str) -> bool) -> Decision {
        for rule in &self.rules {
            let conn = match rule.conn {
                ConnType::Local => client.addr.is_none(),
                ConnType::Host => client.addr.is_some(),
                ConnType::HostSsl => client.addr.is_some() && client.tls,
                ConnType::HostNoSsl => client.addr.is_some() && !client.tls,
            };
            let address = match (&rule.address, client.addr) {
                (Address::Any, _) => true,
                (Address::Net { addr, prefix }, Some(ip)) => in_net(ip, *addr, *prefix),
                (Address::Net { .. }, None) => false,
            };
            let database = rule.databases.iter().any(|d| match d {
                Name::All => true,
                Name::SameUser => client.database == client.user,
                Name::Replication => false,
                Name::Member(role) => member_of(client.user, role),
                Name::Exact(name) => name == client.database,
            });
            let user = rule.users.iter().any(|u| match u {
                Name::All => true,
                Name::Member(role) => client.user == role || member_of(client.user, role),
                Name::Exact(name) => name == client.user,
                Name::SameUser | Name::Replication => false,
            });
            if conn && address && database && user {
                return Decision::Method(rule.method, rule.line);
            }
        }
        Decision::NoEntry
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// PostgreSQL's refusal when no rule matches.
pub fn no_entry_message(client: &Client<'_>) -> String {
    let host = client.addr.map_or_else(|| "[local]".to_owned(), |a| a.to_string());
    let encryption = if client.tls { "SSL encryption" } else { "no encryption" };
    format!(
        "no pg_hba.conf entry for host \"{host}\", user \"{}\", database \"{}\", {encryption}",
        client.user, client.database
    )
}

/// PostgreSQL's refusal by a `reject` rule.
pub fn rejected_message(client: &Client<'_>) -> String {
    let host = client.addr.map_or_else(|| "[local]".to_owned(), |a| a.to_string());
    let encryption = if client.tls { "SSL encryption" } else { "no encryption" };
    format!(
        "pg_hba.conf rejects connection for host \"{host}\", user \"{}\", database \"{}\", {encryption}",
        client.user, client.database
    )
}

/// Lines without comments, joined where a line ends in a backslash, with the number of the
/// line each starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(line);
                out.push((start, acc));
            }
        }
    }
    if let Some(last) = pending {
        out.push(last);
    }
    out
}

/// The line up to a `#` outside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return line.get(..i).unwrap_or(line),
            _ => {}
        }
    }
    line
}

/// A word of a rule: its text, and whether any of it was quoted (a quoted `all` is a name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    quoted: bool,
}

/// Splits a line into fields (whitespace-separated), each field into its comma-separated
/// tokens (whitespace after a comma continues the list). Double quotes keep spaces and commas;
/// `""` inside quotes is a quote.
fn tokens(line: &str) -> Result<Vec<Vec<Token>>, String> {
    let mut fields: Vec<Vec<Token>> = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(fields);
        }
        let mut field = Vec::new();
        let mut token = Token {
            text: String::new(),
            quoted: false,
        };
        let mut in_quotes = false;
        loop {
            match chars.next() {
                None if in_quotes => return Err("unterminated quoted string".into()),
                None => break,
                Some('"') if in_quotes && chars.peek() == Some(&'"') => {
                    chars.next();
                    token.text.push('"');
                }
                Some('"') => {
                    in_quotes = !in_quotes;
                    token.quoted = true;
                }
                Some(',') if !in_quotes => {
                    field.push(std::mem::replace(
                        &mut token,
                        Token {
                            text: String::new(),
                            quoted: false,
                        },
                    ));
                    // "a, b": a list goes on after a comma, whitespace or not.
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                Some(c) if c.is_whitespace() && !in_quotes => break,
                Some(c) => token.text.push(c),
            }
        }
        field.push(token);
        if field.iter().any(|t| t.text.is_empty() && !t.quoted) {
            return Err("empty entry in a comma-separated list".into());
        }
        fields.push(field);
    }
}

fn rule(line: usize, words: &[Vec<Token>], read: &dyn Fn(&str) -> Result<String, String>) -> Result<Rule, String> {
    let word = |i: usize| -> Option<&str> {
        words
            .get(i)
            .and_then(|f| if f.len() == 1 { f.first() } else { None })
            .map(|t| t.text.as_str())
    };
    let conn = match word(0).unwrap_or("") {
        "local" => ConnType::Local,
        "host" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        "hostgssenc" | "hostnogssenc" => return Err("GSSAPI connection types are not supported".into()),
        other => {
            return Err(format!(
                "invalid connection type {other:?}, expected local, host, hostssl or hostnossl"
            ))
        }
    };
    let databases = names(words.get(1).ok_or("missing database")?, true, read)?;
    let users = names(words.get(2).ok_or("missing user")?, false, read)?;
    let mut next = 3;
    let address = if conn == ConnType::Local {
        Address::Any
    } else {
        let text = word(3).ok_or("missing address")?;
        next = 4;
        match address(text)? {
            Some(a) => a,
            None => {
                // address and mask in two fields
                let mask = word(4).ok_or_else(|| format!("{text:?} needs a /prefix length or a netmask"))?;
                next = 5;
                let addr: IpAddr = text.parse().map_err(|_| format!("invalid IP address {text:?}"))?;
                let mask: IpAddr = mask.parse().map_err(|_| format!("invalid netmask {mask:?}"))?;
                let prefix = mask_prefix(mask).ok_or_else(|| format!("netmask {mask} is not contiguous"))?;
                if addr.is_ipv4() != mask.is_ipv4() {
                    return Err("address and netmask are of different IP versions".into());
                }
                Address::Net { addr, prefix }
            }
        }
    };
    let method_word = word(next).ok_or("missing authentication method")?;
    let method = Method::parse(method_word).ok_or_else(|| {
        format!(
            "authentication method {method_word:?} is not supported; use trust, reject, md5, scram-sha-256, password or cert"
        )
    })?;
    if let Some(option) = words.get(next + 1).and_then(|f| f.first()) {
        return Err(format!(
            "authentication option {:?} is not supported (pgmux reads no options after the method)",
            option.text
        ));
    }
    Ok(Rule {
        line,
        conn,
        databases,
        users,
        address,
        method,
    })
}

fn names(field: &[Token], databases: bool, read: &dyn Fn(&str) -> Result<String, String>) -> Result<Vec<Name>, String> {
    let mut out = Vec::new();
    for token in field {
        let text = token.text.as_str();
        if token.quoted {
            out.push(Name::Exact(text.to_owned()));
            continue;
        }
        if let Some(file) = text.strip_prefix('@') {
            let contents = read(file)?;
            for line in contents.lines() {
                let words = tokens(strip_comment(line)).map_err(|e| format!("@{file}: {e}"))?;
                for field in words {
                    out.extend(names(&field, databases, read)?);
                }
            }
            continue;
        }
        out.push(match text {
            "all" => Name::All,
            "sameuser" if databases => Name::SameUser,
            "samerole" | "samegroup" if databases => Name::Member(String::new()),
            "replication" if databases => Name::Replication,
            _ => match text.strip_prefix('+') {
                Some(role) if !role.is_empty() => Name::Member(role.to_owned()),
                _ => Name::Exact(text.to_owned()),
            },
        });
    }
    // samerole: the database named like a role the user belongs to.
    if out.contains(&Name::Member(String::new())) {
        return Err("samerole is not supported; list the databases".into());
    }
    Ok(out)
}

/// `all`, `a.b.c.d/n`, `::1/128`: Some; a bare IP (a netmask follows): None.
fn address(text: &str) -> Result<Option<Address>, String> {
    match text {
        "all" => return Ok(Some(Address::Any)),
        "samehost" | "samenet" => return Err(format!("{text} is not supported; write the network in CIDR form")),
        _ => {}
    }
    let Some((addr, prefix)) = text.split_once('/') else {
        return match text.parse::<IpAddr>() {
            Ok(_) => Ok(None),
            Err(_) => Err(format!(
                "invalid address {text:?}: host names are not supported, use an IP address with /prefix"
            )),
        };
    };
    let addr: IpAddr = addr.parse().map_err(|_| format!("invalid IP address {addr:?}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("invalid prefix length {prefix:?}, expected 0 to {max}"))?;
    Ok(Some(Address::Net { addr, prefix }))
}

/// The prefix length of a contiguous netmask.
fn mask_prefix(mask: IpAddr) -> Option<u8> {
    let (bits, width) = match mask {
        IpAddr::V4(m) => (u128::from(u32::from(m)) << 96, 32),
        IpAddr::V6(m) => (u128::from(m), 128),
    };
    let ones = bits.leading_ones();
    let contiguous = bits.checked_shl(ones).unwrap_or(0) == 0;
    (contiguous && ones <= width).then_some(ones as u8)
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        // An IPv4 client over an IPv6 socket arrives mapped: compare as IPv4.
        (IpAddr::V6(a), IpAddr::V4(_)) => match a.to_ipv4_mapped() {
            Some(v4) => return in_net(IpAddr::V4(v4), net, prefix),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    let host_bits = width.saturating_sub(u32::from(prefix));
    let keep = |x: u128| x.checked_shr(host_bits).unwrap_or(0);
    keep(ip) == keep(net)
}

#[cfg(test)]
#[path = "hba_tests.rs"]
mod tests;
