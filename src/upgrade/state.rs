//! What a client's session is, written down for the process that adopts it: who it is (pool,
//! cancel key), what it set (tracked settings), what it prepared (its statement names and
//! texts), what it listens to, and the pool's credentials where a client's login taught them.
//! Not included: anything of a server (the new process opens its own) nor TLS (such a client is
//! not handed over).

use super::wire::{Body, Reader};
use crate::config::ScramSecret;
use crate::config::Secret;
use crate::route::choose::Preference;
use std::io;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The socket is TCP (else the Unix socket).
    pub tcp: bool,
    pub database: String,
    pub user: String,
    pub process_id: i32,
    pub backend_pid: i32,
    pub secret_key: i32,
    pub route: Preference,
    /// µs since its last write on the primary (read-your-writes), if any.
    pub wrote_ago_us: Option<u64>,
    pub settings: Vec<(String, String)>,
    /// Its settings at login, when a SET changed them since.
    pub startup: Option<Vec<(String, String)>>,
    /// Prepared statements: the client's name and the Parse body after the name.
    pub prepared: Vec<(Vec<u8>, Vec<u8>)>,
    /// LISTEN channels (transaction and statement modes).
    pub channels: Vec<Vec<u8>>,
    /// The pool's login secret and ClientKey, when pgmux learnt them from a client.
    pub password: Option<Secret>,
    pub client_key: Option<[u8; 32]>,
}

impl State {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Body::default();
        b.u8(u8::from(self.tcp));
        b.bytes(self.database.as_bytes());
        b.bytes(self.user.as_bytes());
        for v in [self.process_id, self.backend_pid, self.secret_key] {
            b.u32(v as u32);
        }
        b.u8(match self.route {
            Preference::Auto => 0,
            Preference::Primary => 1,
            Preference::Replica => 2,
        });
        b.u8(u8::from(self.wrote_ago_us.is_some()));
        b.u64(self.wrote_ago_us.unwrap_or_default());
        pairs(&mut b, &self.settings);
        b.u8(u8::from(self.startup.is_some()));
        pairs(&mut b, self.startup.as_deref().unwrap_or_default());
        b.u32(self.prepared.len() as u32);
        for (name, tail) in &self.prepared {
            b.bytes(name);
            b.bytes(tail);
        }
        b.u32(self.channels.len() as u32);
        for channel in &self.channels {
            b.bytes(channel);
        }
        match &self.password {
            None => b.u8(0),
            Some(Secret::Plain(p)) => {
                b.u8(1);
                b.bytes(p.as_bytes());
            }
            Some(Secret::Md5(hash)) => {
                b.u8(2);
                b.bytes(hash);
            }
            Some(Secret::Scram(s)) => {
                b.u8(3);
                b.u32(s.iterations);
                b.bytes(&s.salt);
                b.bytes(&s.stored_key);
                b.bytes(&s.server_key);
            }
        }
        b.u8(u8::from(self.client_key.is_some()));
        b.bytes(&self.client_key.unwrap_or_default());
        b.0
    }

    pub fn decode(bytes: &[u8]) -> io::Result<State> {
        let mut r = Reader(bytes);
        let tcp = r.u8()? != 0;
        let database = r.string()?;
        let user = r.string()?;
        let process_id = r.u32()? as i32;
        let backend_pid = r.u32()? as i32;
        let secret_key = r.u32()? as i32;
        let route = match r.u8()? {
            0 => Preference::Auto,
            1 => Preference::Primary,
            2 => Preference::Replica,
            _ => return Err(bad("route")),
        };
        let wrote = r.u8()? != 0;
        let ago = r.u64()?;
        let settings = read_pairs(&mut r)?;
        let has_startup = r.u8()? != 0;
        let startup = read_pairs(&mut r)?;
        let count = r.u32()? as usize;
        let mut prepared = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            prepared.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
        }
        let count = r.u32()? as usize;
        let mut channels = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            channels.push(r.bytes()?.to_vec());
        }
        let password = match r.u8()? {
            0 => None,
            1 => Some(Secret::Plain(r.string()?)),
            2 => Some(Secret::Md5(key(r.bytes()?)?)),
            3 => Some(Secret::Scram(ScramSecret {
                iterations: r.u32()?,
                salt: r.bytes()?.to_vec(),
                stored_key: key(r.bytes()?)?,
                server_key: key(r.bytes()?)?,
            })),
            _ => return Err(bad("secret")),
        };
        let has_key = r.u8()? != 0;
        let client_key = r.bytes()?;
        let client_key = match has_key {
            true => Some(key(client_key)?),
            false => None,
        };
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(State {
            tcp,
            database,
            user,
            process_id,
            backend_pid,
            secret_key,
            route,
            wrote_ago_us: wrote.then_some(ago),
            settings,
            startup: has_startup.then_some(startup),
            prepared,
            channels,
            password,
            client_key,
        })
    }
}

fn pairs(b: &mut Body, list: &[(String, String)]) {
    b.u32(list.len() as u32);
    for (k, v) in list {
        b.bytes(k.as_bytes());
        b.bytes(v.as_bytes());
    }
}

fn read_pairs(r: &mut Reader<'_>) -> io::Result<Vec<(String, String)>> {
    let count = r.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        out.push((r.string()?, r.string()?));
    }
    Ok(out)
}

fn key<const N: usize>(bytes: &[u8]) -> io::Result<[u8; N]> {
    bytes.try_into().map_err(|_| bad("key length"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("upgrade: a session's state is malformed ({what})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            tcp: true,
            database: "app".into(),
            user: "alice".into(),
            process_id: 4_194_305,
            backend_pid: 4_194_305,
            secret_key: -17,
            route: Preference::Replica,
            wrote_ago_us: Some(1234),
            settings: vec![
                ("application_name".into(), "x".into()),
                ("timezone".into(), "UTC".into()),
            ],
            startup: Some(vec![("application_name".into(), "y".into())]),
            prepared: vec![(b"s1".to_vec(), b"select 1\0\0\0".to_vec())],
            channels: vec![b"jobs".to_vec()],
            password: Some(Secret::Scram(ScramSecret {
                iterations: 4096,
                salt: vec![1, 2, 3],
                stored_key: [4; 32],
                server_key: [5; 32],
            })),
            client_key: Some([6; 32]),
        }
    }

    #[test]
    fn states_read_back() {
        let full = sample();
        assert_eq!(State::decode(&full.encode()).unwrap(), full);
        let bare = State {
            tcp: false,
            route: Preference::Auto,
            wrote_ago_us: None,
            settings: vec![],
            startup: None,
            prepared: vec![],
            channels: vec![],
            password: Some(Secret::Plain("pw".into())),
            client_key: None,
            ..sample()
        };
        assert_eq!(State::decode(&bare.encode()).unwrap(), bare);
        let md5 = State {
            password: Some(Secret::Md5([9; 16])),
            ..sample()
        };
        assert_eq!(State::decode(&md5.encode()).unwrap(), md5);
    }

    #[test]
    fn damaged_states_are_errors() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(State::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(State::decode(&long).is_err(), "trailing byte");
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0xff;
            let _ = State::decode(&flipped); // an error or another state, never a panic
        }
    }
}
