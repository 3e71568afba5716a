//! Password guessing, slowed down: every failed password waits `auth_failure_delay` before its
//! error (PostgreSQL's `auth_delay`), and a client address that keeps failing for one user name
//! is refused at once, before any password exchange, until it has waited long enough.
//!
//! Each (address, user) has a leaky bucket: a wrong password adds 1, the level drains by
//! `auth_failure_limit` per `auth_failure_window`, and a login is refused while one more failure
//! would overflow `auth_failure_limit`. So that many failures in a row are let through, then one
//! per window / limit; a burst of parallel guesses that all started before the first refusal
//! landed (at most max_client_conn) is paid back by as long a wait. The right password empties
//! the bucket. Refusals other than a wrong password (the client left, a server that could not be
//! asked) count nothing.
//!
//! The record is a fixed table of `SLOTS` slots allocated at start (about 160 KiB): an attacker
//! with many addresses or names replaces slots, never grows the table. A slot holds a keyed hash
//! of (address, user), so a name of any length costs 8 bytes and nobody outside the process can
//! aim at a bucket. Only logins touch it (one short mutex per bucket, never held across an
//! await); the data path never does.

use super::conn::Peer;
use crate::config::PoolerConfig;
use crate::protocol::messages::PgError;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const BUCKETS: usize = 1024;
const WAYS: usize = 4;
/// How many (address, user) pairs are remembered at most.
pub const SLOTS: usize = BUCKETS * WAYS;

/// The SQLSTATE of a wrong password (or an unknown user): the only refusal counted.
const WRONG_PASSWORD: &str = "28P01";

/// `auth_failure_limit` failures, drained over `auth_failure_window`; either 0 turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub failures: u32,
    pub window: Duration,
}

impl Limits {
    pub fn of(pooler: &PoolerConfig) -> Limits {
        Limits {
            failures: pooler.auth_failure_limit,
            window: pooler.auth_failure_window,
        }
    }

    fn on(self) -> bool {
        self.failures > 0 && !self.window.is_zero()
    }

    /// Failures forgiven per second.
    fn drain(self) -> f64 {
        f64::from(self.failures) / self.window.as_secs_f64()
    }
}

/// What `check_at` says of a new login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refuse it: one more failure fits in `retry_in`.
    Throttled {
        retry_in: Duration,
    },
}

/// One remembered (address, user): its bucket's `level` at `at`. An empty slot has no `at`.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tag: u64,
    at: Option<Instant>,
    level: f64,
}

impl Slot {
    /// The level at `now`, drained since `at` (0 for an empty slot).
    fn level(&self, limits: Limits, now: Instant) -> f64 {
        let Some(at) = self.at else { return 0.0 };
        let drained = now.saturating_duration_since(at).as_secs_f64() * limits.drain();
        (self.level - drained).max(0.0)
    }
}

type Bucket = [Slot; WAYS];

/// The table of failed logins, one per process (`Shared::throttle`).
pub struct Throttle {
    buckets: Box<[Mutex<Bucket>]>,
    keys: RandomState,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            buckets: (0..BUCKETS).map(|_| Mutex::new(Bucket::default())).collect(),
            keys: RandomState::new(),
        }
    }
}

/// What a client is counted as: its IPv4 address, or its IPv6 /64 (one host usually holds a
/// whole /64). None on the Unix socket (exempt: who may connect there is the socket file's
/// permissions' business, and every client there would be one source) and for a client gone.
pub fn source(peer: &Peer) -> Option<[u8; 16]> {
    let Peer::Tcp(addr) = peer else { return None };
    Some(match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => v6.octets(),
        IpAddr::V6(v6) => {
            let mut prefix = v6.octets();
            prefix[8..].fill(0);
            prefix
        }
    })
}

impl Throttle {
    /// The slot key of `user` from `source`.
    pub fn tag(&self, source: &[u8; 16], user: &str) -> u64 {
        self.keys.hash_one((source, user))
    }

    fn bucket(&self, tag: u64) -> std::sync::MutexGuard<'_, Bucket> {
        let index = (tag % BUCKETS as u64) as usize;
        // A panic while the mutex was held leaves plain numbers behind: still usable.
        self.buckets[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// May `tag` try a password now?
    pub fn check_at(&self, tag: u64, limits: Limits, now: Instant) -> Verdict {
        if !limits.on() {
            return Verdict::Allowed;
        }
        let bucket = self.bucket(tag);
        let Some(slot) = bucket.iter().find(|s| s.tag == tag && s.at.is_some()) else {
            return Verdict::Allowed;
        };
        let over = slot.level(limits, now) + 1.0 - f64::from(limits.failures);
        if over <= 0.0 {
            return Verdict::Allowed;
        }
        let secs = over / limits.drain();
        let retry_in = Duration::try_from_secs_f64(secs).unwrap_or(limits.window);
        Verdict::Throttled { retry_in }
    }

    /// A wrong password of `tag`; true when it filled the bucket (the next login is refused).
    pub fn failed_at(&self, tag: u64, limits: Limits, now: Instant) -> bool {
        if !limits.on() {
            return false;
        }
        let mut bucket = self.bucket(tag);
        let slot = match bucket.iter().position(|s| s.tag == tag && s.at.is_some()) {
            Some(i) => &mut bucket[i],
            None => {
                let slot = victim(&mut bucket, limits, now);
                *slot = Slot { tag, ..Slot::default() };
                slot
            }
        };
        let full = f64::from(limits.failures) - 1.0;
        let before = slot.level(limits, now);
        slot.level = before + 1.0;
        slot.at = Some(now);
        before <= full && slot.level > full
    }

    /// The right password: the record of `tag` is cleared.
    pub fn forget(&self, tag: u64) {
        let mut bucket = self.bucket(tag);
        if let Some(slot) = bucket.iter_mut().find(|s| s.tag == tag) {
            *slot = Slot::default();
        }
    }

    /// Starts a login of `user` from `peer`; a throttled one gets its 53300 here.
    pub fn begin<'a>(&'a self, peer: &Peer, user: &'a str, pooler: &PoolerConfig) -> Result<Attempt<'a>, PgError> {
        let limits = Limits::of(pooler);
        let tag = source(peer).filter(|_| limits.on()).map(|s| self.tag(&s, user));
        if let Some(tag) = tag {
            if let Verdict::Throttled { retry_in } = self.check_at(tag, limits, Instant::now()) {
                return Err(throttled(user, limits, retry_in));
            }
        }
        Ok(Attempt {
            throttle: self,
            peer: peer.clone(),
            user,
            tag,
            limits,
            delay: pooler.auth_failure_delay,
        })
    }
}

/// The slot a new (address, user) takes: an empty or drained one, else the lowest level, so
/// that a flood of single failures replaces its own kind before a record close to its limit.
fn victim(bucket: &mut Bucket, limits: Limits, now: Instant) -> &mut Slot {
    let mut best = 0;
    for i in 1..WAYS {
        if bucket[i].level(limits, now) < bucket[best].level(limits, now) {
            best = i;
        }
    }
    &mut bucket[best]
}

/// The refusal of a throttled login (PostgreSQL has none; 53300 is its "try again later").
fn throttled(user: &str, limits: Limits, retry_in: Duration) -> PgError {
    let secs = retry_in.as_secs_f64().ceil().max(1.0);
    PgError::fatal(
        "53300",
        format!("too many failed logins for user \"{user}\" from this address: try again in {secs} s"),
    )
    .with_hint(format!(
        "pgmux lets auth_failure_limit ({}) failed logins of a user from one address through, then one per auth_failure_window ({} s) / auth_failure_limit",
        limits.failures,
        limits.window.as_secs_f64()
    ))
}

/// A login under way; `passed` or `refused` says how it ended (dropped: it counts nothing).
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    peer: Peer,
    user: &'a str,
    /// None: not counted (the limit is off, the Unix socket).
    tag: Option<u64>,
    limits: Limits,
    delay: Duration,
}

impl Attempt<'_> {
    /// The password was right.
    pub fn passed(self) {
        if let Some(tag) = self.tag {
            self.throttle.forget(tag);
        }
    }

    /// The login was refused with `error`: a wrong password is counted and its error waits
    /// `auth_failure_delay`; any other refusal goes out as it is.
    pub async fn refused(self, error: PgError) -> PgError {
        if error.code != WRONG_PASSWORD {
            return error;
        }
        if let Some(tag) = self.tag {
            if self.throttle.failed_at(tag, self.limits, Instant::now()) {
                // Once as the limit is reached: the refusals that follow are logged as any is.
                let (client, user) = (&self.peer, self.user);
                tracing::warn!(%client, user, limit = self.limits.failures, "login throttled: too many wrong passwords");
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        error
    }
}

#[cfg(test)]
mod tests;
