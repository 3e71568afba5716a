//! Several pgmux processes that are peers of each other (issue 18: `peer_id`, `[peers]`), and
//! `Raw`, a blocking client that logs in on a plain socket and keeps its BackendKeyData
//! (tokio-postgres keeps the key to itself), to send its CancelRequest anywhere.
use super::{cluster, ensure_database, free_port, Pgmux};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The bit of a cancel key's secret that marks a request one peer forwarded to another.
pub const FORWARDED: i32 = 1 << 15;

/// The config of member `id` (1-based) of a fleet on `ports`: trust logins for `app`, the
/// database `db` as `DB_tx` (transaction mode) and `DB_session` (session mode), every member in
/// `[peers]`, then `extra` (more `[peers.N]` tables, say).
pub fn fleet_config(id: usize, ports: &[u16], db: &str, extra: &str) -> String {
    let mut text = format!(
        "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {{port}}\nauth_type = \"trust\"\n\
         admin_users = [\"app\"]\npeer_id = {id}\ndefault_pool_size = 6\n\
         [metrics]\nlisten = \"\"\n[users.app]\npassword = \"app\"\n\
         [databases.{db}_tx]\ndbname = \"{db}\"\nport = {{pg_port}}\npool_mode = \"transaction\"\n\
         [databases.{db}_session]\ndbname = \"{db}\"\nport = {{pg_port}}\npool_mode = \"session\"\n"
    );
    for (n, port) in ports.iter().enumerate() {
        text.push_str(&format!("[peers.{}]\nhost = \"127.0.0.1\"\nport = {port}\n", n + 1));
    }
    text.push_str(extra);
    text
}

/// `n` pgmux processes with peer ids 1..=n on ports of their own, each with every other in its
/// `[peers]`; `extra(id, ports)` is added to member `id`'s config.
pub fn fleet(n: usize, db: &str, extra: impl Fn(usize, &[u16]) -> String) -> Vec<Pgmux> {
    ensure_database(db);
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    (1..=n)
        .map(|id| {
            let text = fleet_config(id, &ports, db, &extra(id, &ports));
            Pgmux::start_file_on("pooler.toml", &text, ports[id - 1])
        })
        .collect()
}

/// The peer id a secret names (its top 16 bits).
pub fn peer_of(secret: i32) -> u16 {
    (secret as u32 >> 16) as u16
}

/// A CancelRequest with this key on a new connection to `port`; returns once pgmux closes it
/// (after it acted on the request: cancelled, forwarded, or dropped), at most 10 s.
pub fn send_cancel(port: u16, pid: i32, secret: i32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    s.write_all(&packet).expect("send CancelRequest");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = [0u8; 16];
    loop {
        match s.read(&mut rest) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the cancel connection to {port} stayed open: {e}"),
        }
    }
}

/// A logged-in client on a raw socket.
pub struct Raw {
    s: TcpStream,
    pub pid: i32,
    pub secret: i32,
    /// NotificationResponses read so far: (channel, payload).
    pub notifications: Vec<(String, String)>,
}

/// What a query gave: the rows (every column as text), or the SQLSTATE of its error.
pub type Outcome = Result<Vec<HashMap<String, Option<String>>>, String>;

impl Raw {
    /// Logs in as `app` (trust) to `db` through `port`.
    pub fn login(port: u16, db: &str) -> Raw {
        Self::try_login(port, db).unwrap_or_else(|e| panic!("login to {db} on {port}: {e}"))
    }

    pub fn try_login(port: u16, db: &str) -> Result<Raw, String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut body = 196_608i32.to_be_bytes().to_vec();
        for part in ["user", "app", "database", db, ""] {
            body.extend_from_slice(part.as_bytes());
            body.push(0);
        }
        let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        s.write_all(&packet).map_err(|e| e.to_string())?;
        let mut key = None;
        loop {
            match read_msg(&mut s)? {
                (b'K', body) if body.len() == 8 => key = Some((int(&body[..4]), int(&body[4..]))),
                (b'Z', _) => break,
                (b'E', body) => return Err(format!("refused: {}", String::from_utf8_lossy(&body))),
                _ => {}
            }
        }
        let (pid, secret) = key.ok_or("no BackendKeyData")?;
        Ok(Raw {
            s,
            pid,
            secret,
            notifications: Vec::new(),
        })
    }

    /// Sends a simple query without waiting for its answer.
    pub fn send(&mut self, sql: &str) {
        let mut query = vec![b'Q'];
        query.extend_from_slice(&(sql.len() as i32 + 5).to_be_bytes());
        query.extend_from_slice(sql.as_bytes());
        query.push(0);
        self.s.write_all(&query).expect("send query");
    }

    /// The answer to the query sent last, read until ReadyForQuery; Err("closed: ...") when
    /// the connection ended first.
    pub fn outcome(&mut self) -> Outcome {
        let mut columns: Vec<String> = Vec::new();
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = read_msg(&mut self.s).map_err(|e| format!("closed: {e}"))?;
            match tag {
                b'T' => columns = row_description(&body),
                b'D' => rows.push(columns.iter().cloned().zip(data_row(&body)).collect()),
                b'E' => error = Some(error_code(&body)),
                b'A' => self.notifications.push(notification(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(code) => Err(code),
            None => Ok(rows),
        }
    }

    pub fn query(&mut self, sql: &str) -> Outcome {
        self.send(sql);
        self.outcome()
    }
}

/// The console of `px` (trust, `app` is an admin): the rows of `sql`.
pub fn console_rows(px: &Pgmux, sql: &str) -> Vec<HashMap<String, Option<String>>> {
    let mut c = Raw::login(px.port, "pgbouncer");
    c.query(sql).unwrap_or_else(|code| panic!("{sql}: {code}"))
}

/// A column of a console row as a number (0 when NULL or absent).
pub fn cell(row: &HashMap<String, Option<String>>, column: &str) -> i64 {
    row.get(column)
        .cloned()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until PostgreSQL runs `sql` (as pg_stat_activity shows it) in `n` backends.
pub fn wait_running(sql: &str, n: usize) {
    let t0 = Instant::now();
    let check = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = '{}'",
        sql.replace('\'', "''")
    );
    loop {
        let now: usize = cluster().psql("postgres", &check).trim().parse().unwrap_or(0);
        if now >= n {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{sql:?} never ran in {n} backends"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A NotificationResponse's channel and payload (after the sender's pid).
fn notification(body: &[u8]) -> (String, String) {
    let mut parts = body[4..]
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

fn int(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn read_msg(s: &mut TcpStream) -> Result<(u8, Vec<u8>), String> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let len = int(&head[1..]) as usize;
    let mut body = vec![0; len.saturating_sub(4)];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((head[0], body))
}

fn row_description(body: &[u8]) -> Vec<String> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut names = Vec::new();
    for _ in 0..n {
        let end = at + body[at..].iter().position(|b| *b == 0).unwrap();
        names.push(String::from_utf8_lossy(&body[at..end]).into_owned());
        at = end + 1 + 18;
    }
    names
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut cells = Vec::new();
    for _ in 0..n {
        let len = int(&body[at..]);
        at += 4;
        if len < 0 {
            cells.push(None);
        } else {
            let len = len as usize;
            cells.push(Some(String::from_utf8_lossy(&body[at..at + len]).into_owned()));
            at += len;
        }
    }
    cells
}

fn error_code(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}
