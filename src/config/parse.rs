//! Walking the TOML document: typed values, spans for line numbers, cross-key checks.

use super::*;

impl Config {
    /// `Config::default()` is what an empty file gives: no users, no databases.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cx = Cx { text, origin };
        let root = DeTable::parse(text).map_err(|e| {
            let message = e.message().trim().replace('\n', "; ");
            let span = e.span();
            cx.err(span.as_ref(), "", format!("TOML syntax error: {message}"))
        })?;
        let mut p = Parser {
            cx,
            spans: BTreeMap::new(),
        };
        let config = p.document(root.get_ref())?;
        p.check(&config)?;
        Ok(config)
    }

    /// Reads pooler.toml, or PgBouncer's pgbouncer.ini (a `.ini` name, or a `[pgbouncer]`
    /// section in the text), whose problems name the ini file and line.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            // PgBouncer's format, by name or by content (see `ini::looks_like_ini`).
            Ok(text) if ini::looks_like_ini(path, &text) => {
                let cwd = std::env::current_dir().unwrap_or_default();
                let converted = ini::convert(&text, path, &cwd)?;
                let config = converted.config()?;
                config.read_auth_files(path).map_err(|e| converted.locate_pooler_key(e))
            }
            Ok(text) => Config::parse(&text, &origin)?.read_auth_files(path),
            Err(e) => {
                let message = format!("cannot read file: {e}");
                Err(ConfigError {
                    origin,
                    line: None,
                    key: String::new(),
                    message,
                })
            }
        }
    }
}

impl Config {
    /// Reads the files the configuration names: `auth_file`'s users join `[users]` (a password
    /// set there wins, as the file is the more specific place), and with auth_type = "hba" the
    /// rules of `auth_hba_file`. Relative paths are taken from the directory of `config_path`,
    /// the configuration file.
    pub fn read_auth_files(mut self, config_path: &Path) -> Result<Config, ConfigError> {
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let file_err = |key: &str, message: String| ConfigError {
            origin: config_path.display().to_string(),
            line: None,
            key: format!("pooler.{key}"),
            message,
        };
        let resolve = |name: &str| {
            let path = Path::new(name);
            if path.is_absolute() {
                path.to_path_buf()
            } else {
                dir.join(path)
            }
        };
        if !self.pooler.auth_file.is_empty() {
            let path = resolve(&self.pooler.auth_file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| file_err("auth_file", format!("cannot read {}: {e}", path.display())))?;
            let users = userlist::parse(&text, &path.display().to_string()).map_err(|e| file_err("auth_file", e))?;
            for (name, secret) in users {
                let user = self.users.entry(name).or_default();
                if user.password.is_none() {
                    user.password = Some(secret);
                }
            }
        }
        // Checked once auth_file's users have joined: a name without a password could never log in.
        if let Some(user) = self
            .metrics
            .auth_users
            .iter()
            .find(|u| self.users.get(*u).and_then(|u| u.password.as_ref()).is_none())
        {
            return Err(ConfigError {
                key: "metrics.auth_users".into(),
                ..file_err("", format!("user \"{user}\" has no password in [users] or auth_file"))
            });
        }
        if self.pooler.auth_type == AuthType::Hba {
            if self.pooler.auth_hba_file.is_empty() {
                return Err(file_err("auth_type", "\"hba\" needs auth_hba_file".into()));
            }
            let path = resolve(&self.pooler.auth_hba_file);
            self.hba = Some(hba::Hba::load(&path).map_err(|e| file_err("auth_hba_file", e))?);
        }
        Ok(self)
    }

    /// The console's `SET key = value`: one `[pooler]` key, its value written as in the file
    /// (a bare word is taken as a string), with the checks a file gets. Returns the new config.
    pub fn with_pooler_key(&self, key: &str, value: &str) -> Result<Config, ConfigError> {
        let quoted = format!("{key} = {}", toml::Value::String(value.to_owned()));
        let text = match DeTable::parse(&format!("{key} = {value}")) {
            Ok(_) => format!("{key} = {value}"),
            Err(_) => quoted,
        };
        let cx = Cx {
            text: &text,
            origin: "SET",
        };
        let root = DeTable::parse(&text).map_err(|e| cx.err(None, key, e.message().trim().to_owned()))?;
        let mut c = self.clone();
        let p = Parser {
            cx,
            spans: BTreeMap::new(),
        };
        for (k, v) in in_file_order(root.get_ref()) {
            let val = p.cx.val(join("pooler", k.get_ref()), v);
            if !set_pooler(&mut c.pooler, k.get_ref(), &val)? {
                return Err(p
                    .cx
                    .err(None, &val.path, unknown_key(k.get_ref(), "pooler", POOLER_KEYS)));
            }
        }
        p.check(&c)?;
        Ok(c)
    }
}

const SECTIONS: &[&str] = &["pooler", "metrics", "breaker", "users", "databases", "peers"];

struct Cx<'a> {
    text: &'a str,
    origin: &'a str,
}

type Span = Range<usize>;

impl Cx<'_> {
    fn val<'v, 'i>(&'v self, path: String, v: &'v Spanned<DeValue<'i>>) -> Val<'v, 'i> {
        Val { cx: self, path, v }
    }

    fn err(&self, span: Option<&Span>, key: &str, message: impl Into<String>) -> ConfigError {
        let newlines = |end: usize| self.text.bytes().take(end).filter(|&b| b == b'\n').count();
        ConfigError {
            origin: self.origin.to_string(),
            line: span.map(|s| newlines(s.start) + 1),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// A value in the document with its full key path, for typed extraction.
pub(super) struct Val<'v, 'i> {
    cx: &'v Cx<'v>,
    path: String,
    v: &'v Spanned<DeValue<'i>>,
}

impl<'v, 'i> Val<'v, 'i> {
    pub(super) fn get(&self) -> &'v DeValue<'i> {
        self.v.get_ref()
    }

    pub(super) fn err(&self, message: impl Into<String>) -> ConfigError {
        self.cx.err(Some(&self.v.span()), &self.path, message)
    }

    pub(super) fn expected(&self, what: &str) -> ConfigError {
        let found = match self.get() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.err(format!("expected {what}, found {found}"))
    }

    pub(super) fn str(&self) -> Result<&'v str, ConfigError> {
        self.get().as_str().ok_or_else(|| self.expected("a string"))
    }

    pub(super) fn string(&self) -> Result<String, ConfigError> {
        self.str().map(str::to_string)
    }

    pub(super) fn nonempty(&self) -> Result<String, ConfigError> {
        match self.str()? {
            "" => Err(self.err("must not be empty")),
            s => Ok(s.to_string()),
        }
    }

    pub(super) fn bool(&self) -> Result<bool, ConfigError> {
        self.get().as_bool().ok_or_else(|| self.expected("true or false"))
    }

    pub(super) fn int(&self, min: u64, max: u64) -> Result<u64, ConfigError> {
        let i = self.get().as_integer().ok_or_else(|| self.expected("an integer"))?;
        let n = i64::from_str_radix(i.as_str(), i.radix());
        let n = n.map_err(|_| self.err("integer out of range"))?;
        match u64::try_from(n) {
            Err(_) => Err(self.err(format!("must not be negative, found {n}"))),
            Ok(n) if n < min => Err(self.err(format!("{n} is too small, must be at least {min}"))),
            Ok(n) if n > max => Err(self.err(format!("{n} is too large, must be at most {max}"))),
            Ok(n) => Ok(n),
        }
    }

    pub(super) fn u32(&self, min: u32) -> Result<u32, ConfigError> {
        let n = self.int(min.into(), u32::MAX.into())?;
        u32::try_from(n).map_err(|_| self.err("integer out of range"))
    }

    /// A peer id: 0 (peering off) to 65535, as PgBouncer's.
    pub(super) fn peer_id(&self) -> Result<u16, ConfigError> {
        let n = self.int(0, u16::MAX.into())?;
        u16::try_from(n).map_err(|_| self.err("integer out of range"))
    }

    pub(super) fn port(&self) -> Result<u16, ConfigError> {
        let n = self.int(0, u64::MAX)?;
        match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(self.err(format!("{n} is not a valid port, expected 1 to 65535"))),
        }
    }

    /// Seconds, integer or float.
    pub(super) fn duration(&self) -> Result<Duration, ConfigError> {
        let f = match self.get() {
            DeValue::Integer(_) => return self.int(0, u64::MAX).map(Duration::from_secs),
            DeValue::Float(f) => f.as_str(),
            DeValue::String(_) => {
                return Err(self.err("expected a number of seconds such as 5 or 0.25, found a string"))
            }
            _ => return Err(self.expected("a number of seconds")),
        };
        let x: f64 = f.parse().map_err(|_| self.err("invalid number"))?;
        if x.is_nan() || x < 0.0 {
            return Err(self.err(format!("must not be negative, found {f}")));
        }
        Duration::try_from_secs_f64(x).map_err(|_| self.err(format!("{f} seconds is too large")))
    }

    pub(super) fn nonzero_duration(&self) -> Result<Duration, ConfigError> {
        match self.duration()? {
            d if d.is_zero() => Err(self.err("must be greater than 0")),
            d => Ok(d),
        }
    }

    pub(super) fn keyword<T: FromStr<Err = String>>(&self) -> Result<T, ConfigError> {
        self.str()?.parse().map_err(|e: String| self.err(e))
    }

    pub(super) fn secret(&self) -> Result<Secret, ConfigError> {
        Secret::parse(self.str()?).map_err(|e| self.err(e))
    }

    pub(super) fn address(&self) -> Result<(String, u16), ConfigError> {
        parse_host_port(self.str()?).map_err(|e| self.err(e))
    }

    pub(super) fn items(&self) -> Result<Vec<Val<'v, 'i>>, ConfigError> {
        let array = self.get().as_array().ok_or_else(|| self.expected("an array"))?;
        let item = |(n, v)| self.cx.val(format!("{}[{n}]", self.path), v);
        Ok(array.iter().enumerate().map(item).collect())
    }

    /// An array of non-empty strings.
    pub(super) fn names(&self) -> Result<Vec<String>, ConfigError> {
        self.items()?.iter().map(Val::nonempty).collect()
    }
}

/// An IP address, a comma-separated list of them, or `*`.
pub(super) fn listen_addr(v: &Val) -> Result<String, ConfigError> {
    let addr = v.nonempty()?;
    for part in addr.split(',').map(str::trim) {
        if part.parse::<std::net::SocketAddr>().is_ok() {
            return Err(v.err("expected an address without a port; set the port with listen_port"));
        }
        if part != "*" && part.parse::<std::net::IpAddr>().is_err() {
            return Err(v.err(format!(
                "{part:?} is not an IP address; expected an IP address, a comma-separated list of them, or *"
            )));
        }
    }
    Ok(addr)
}

pub(super) fn metrics_listen(v: &Val) -> Result<String, ConfigError> {
    if !v.str()?.is_empty() {
        v.address()?;
    }
    v.string()
}

pub(super) fn replicas(v: &Val) -> Result<Vec<(String, u16)>, ConfigError> {
    let mut out = Vec::new();
    for item in v.items()? {
        let addr = item.address()?;
        if out.contains(&addr) {
            return Err(item.err("duplicate replica"));
        }
        out.push(addr);
    }
    Ok(out)
}

/// "host:port" or "[v6addr]:port"; the host is returned without brackets.
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' after the IPv6 address")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {host:?} in {text:?}"));
        }
        let port = after.strip_prefix(':');
        (
            host,
            port.ok_or_else(|| format!("expected \"[address]:port\", found {text:?}"))?,
        )
    } else {
        let split = text.rsplit_once(':');
        let (host, port) = split.ok_or_else(|| format!("expected \"host:port\", found {text:?}"))?;
        if host.contains(':') {
            return Err(format!(
                "invalid address {text:?}: write IPv6 in brackets, e.g. \"[::1]:5432\""
            ));
        }
        (host, port)
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("invalid host in {text:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host.to_string(), p)),
        _ => Err(format!("invalid port in {text:?}, expected 1 to 65535")),
    }
}

/// Path segment as TOML would write it: bare when it can be, quoted otherwise.
fn join(prefix: &str, key: &str) -> String {
    let bare = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let seg = match key {
        k if !k.is_empty() && k.bytes().all(bare) => k.to_string(),
        k => format!("{k:?}"),
    };
    match prefix {
        "" => seg,
        p => format!("{p}.{seg}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let mut prev: Vec<usize> = (0..=b.chars().count()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for ((cb, diag), up) in b.chars().zip(&prev).zip(prev.iter().skip(1)) {
            let left = cur.last().copied().unwrap_or(0);
            cur.push((diag + usize::from(ca != cb)).min(up + 1).min(left + 1));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

fn unknown_key(key: &str, section: &str, known: &[&str]) -> String {
    let what = if section.is_empty() {
        "unknown section"
    } else {
        "unknown key"
    };
    let limit = 2.max(key.chars().count() / 4);
    let typo = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit);
    // A truncated key ("server_tls_ca") is too far for the edit distance but plain to see.
    let prefix = || {
        known
            .iter()
            .find(|k| key.len() >= 4 && k.starts_with(key))
            .map(|k| (0, *k))
    };
    if let Some((_, k)) = typo.min().or_else(prefix) {
        return format!("{what}, did you mean {k:?}?");
    }
    let homes: [(&[&str], &str); 6] = [
        (POOLER_KEYS, "[pooler]"),
        (METRICS_KEYS, "[metrics]"),
        (BREAKER_KEYS, "[breaker]"),
        (USER_KEYS, "[users.NAME]"),
        (DATABASE_KEYS, "[databases.NAME]"),
        (PEER_KEYS, "[peers.ID]"),
    ];
    match homes.iter().find(|(keys, _)| keys.contains(&key)) {
        Some((_, home)) if !section.is_empty() => format!("{what} ({key} belongs in {home})"),
        _ if known.len() > 6 => what.to_string(),
        _ => format!("{what}, expected one of: {}", known.join(", ")),
    }
}

type Entry<'v, 'i> = (&'v Spanned<DeString<'i>>, &'v Spanned<DeValue<'i>>);

/// Entries sorted by position, so the first error reported is the first in the file.
fn in_file_order<'v, 'i>(table: &'v DeTable<'i>) -> Vec<Entry<'v, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

type SetFn<T> = fn(&mut T, &str, &Val) -> Result<bool, ConfigError>;

struct Parser<'a> {
    cx: Cx<'a>,
    /// Span of every value by full key path, for the checks made after the walk.
    spans: BTreeMap<String, Span>,
}

impl Parser<'_> {
    fn table<'v, 'i>(&self, path: &str, v: &'v Spanned<DeValue<'i>>) -> Result<&'v DeTable<'i>, ConfigError> {
        let table = v.get_ref().as_table();
        table.ok_or_else(|| self.cx.val(path.to_string(), v).expected("a table"))
    }

    /// Builds a section from its defaults and the keys present in the table.
    fn section<T: Default>(
        &mut self,
        path: &str,
        v: &Spanned<DeValue>,
        known: &[&str],
        set: SetFn<T>,
    ) -> Result<T, ConfigError> {
        let mut out = T::default();
        for (k, v) in in_file_order(self.table(path, v)?) {
            let key: &str = k.get_ref();
            let full = join(path, key);
            self.spans.insert(full.clone(), v.span());
            let val = self.cx.val(full, v);
            if !set(&mut out, key, &val)? {
                let message = unknown_key(key, path, known);
                return Err(self.cx.err(Some(&k.span()), &val.path, message));
            }
        }
        Ok(out)
    }

    fn document(&mut self, root: &DeTable) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for (k, v) in in_file_order(root) {
            let name: &str = k.get_ref();
            match name {
                "pooler" => c.pooler = self.section(name, v, POOLER_KEYS, set_pooler)?,
                "metrics" => c.metrics = self.section(name, v, METRICS_KEYS, set_metrics)?,
                "breaker" => c.breaker = self.section(name, v, BREAKER_KEYS, set_breaker)?,
                "users" | "databases" => {
                    for (k, v) in in_file_order(self.table(name, v)?) {
                        let (entry, path) = (k.get_ref().to_string(), join(name, k.get_ref()));
                        if entry.is_empty() {
                            let message = "the name must not be empty";
                            return Err(self.cx.err(Some(&k.span()), &path, message));
                        }
                        if name == "users" {
                            let user = self.section(&path, v, USER_KEYS, set_user)?;
                            c.users.insert(entry, user);
                        } else {
                            let db = self.section(&path, v, DATABASE_KEYS, set_database)?;
                            c.databases.insert(entry, db);
                        }
                    }
                }
                "peers" => {
                    for (k, v) in in_file_order(self.table(name, v)?) {
                        let path = join(name, k.get_ref());
                        let id = k.get_ref().parse::<u16>().ok().filter(|id| *id > 0);
                        let Some(id) = id else {
                            let message = "a peer's name is its peer_id, a number from 1 to 65535 ([peers.1])";
                            return Err(self.cx.err(Some(&k.span()), &path, message));
                        };
                        let peer = self.section(&path, v, PEER_KEYS, set_peer)?;
                        if peer.host.is_empty() {
                            let message = "missing host: every peer needs the address it listens on";
                            return Err(self.cx.err(Some(&k.span()), &path, message));
                        }
                        if c.peers.insert(id, peer).is_some() {
                            let message = format!("peer {id} is listed twice");
                            return Err(self.cx.err(Some(&k.span()), &path, message));
                        }
                    }
                }
                _ => {
                    let message = unknown_key(name, "", SECTIONS);
                    return Err(self.cx.err(Some(&k.span()), &join("", name), message));
                }
            }
        }
        Ok(c)
    }

    fn err_at(&self, key: &str, message: String) -> ConfigError {
        self.cx.err(self.spans.get(key), key, message)
    }

    /// Rules that involve more than one key, checked once everything is read.
    fn check(&self, c: &Config) -> Result<(), ConfigError> {
        let p = &c.pooler;
        if p.min_pool_size > p.default_pool_size {
            let (min, size) = (p.min_pool_size, p.default_pool_size);
            let message = format!("{min} is larger than default_pool_size {size}");
            return Err(self.err_at("pooler.min_pool_size", message));
        }
        if p.tls_mode != TlsMode::Disable && (p.tls_cert_file.is_empty() || p.tls_key_file.is_empty()) {
            let message = format!(
                "tls_mode {:?} needs tls_cert_file and tls_key_file",
                p.tls_mode.as_str()
            );
            return Err(self.err_at("pooler.tls_mode", message));
        }
        if p.server_tls_mode == ServerTlsMode::VerifyFull && p.server_tls_ca_file.is_empty() {
            let message = "server_tls_mode \"verify-full\" needs server_tls_ca_file".to_string();
            return Err(self.err_at("pooler.server_tls_mode", message));
        }
        let b = &c.breaker;
        if !b.max_open_timeout.is_zero() && b.max_open_timeout < b.open_timeout {
            let message = format!(
                "{} s is shorter than open_timeout ({} s); 0 keeps every re-open at open_timeout",
                b.max_open_timeout.as_secs_f64(),
                b.open_timeout.as_secs_f64()
            );
            return Err(self.err_at("breaker.max_open_timeout", message));
        }
        for (name, d) in &c.databases {
            let path = join("databases", name);
            let (size, size_key) = match d.pool_size {
                Some(n) => (n, format!("{path}.pool_size")),
                None => (p.default_pool_size, "pooler.default_pool_size".to_string()),
            };
            let (min, min_key) = match d.min_pool_size {
                Some(n) => (n, format!("{path}.min_pool_size")),
                None => (p.min_pool_size, "pooler.min_pool_size".to_string()),
            };
            // Blame the database's own key: the pooler-wide pair was checked above.
            if min > size && d.min_pool_size.is_some() {
                let message = format!("{min} is larger than the pool size {size} ({size_key})");
                return Err(self.err_at(&min_key, message));
            }
            if min > size {
                let message = format!("{size} is smaller than min_pool_size {min} ({min_key})");
                return Err(self.err_at(&size_key, message));
            }
        }
        Ok(())
    }
}
