//! Cancel requests: each client has its own BackendKeyData from pgmux; a CancelRequest that
//! carries it goes, on a new connection, to the server running that client's query right now,
//! with that server's real key, and to nothing else. In session mode the key's process id is
//! the real pid of the client's server (linked at login), with pgmux's own secret; elsewhere it
//! is the client's pgmux id, above any pid a server can have.
//!
//! A server with a cancel in flight is not handed to another client until the cancel is done
//! (PgBouncer's `sv_being_canceled`), so a late cancel never hits someone else's query.
//!
//! The registry of handles is also the list of clients the console shows (SHOW CLIENTS) and
//! acts on (KILL_CLIENT, KILL): each handle carries what the console reports about its client.

use crate::backend::cancel::cancel;
use crate::backend::ServerConn;
use crate::backend::Settings;
use crate::pool::Pool;
use crate::route::choose::Preference;
use crate::stats::now_us;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long pgmux waits for PostgreSQL to act on a cancel before it gives up on it.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// The server a client holds, as a cancel needs it (and SHOW SERVERS shows it).
#[derive(Clone)]
pub struct Held {
    pub process_id: i32,
    secret_key: i32,
    pub server_id: u64,
    /// When the server connection was opened, seconds since start.
    pub created_s: u32,
    pub tls: bool,
    /// A replica's pool (read_write_split, failover); None for the client's own, which spares
    /// every transaction two atomic operations on the pool's shared reference count.
    pub other_pool: Option<Arc<Pool>>,
}

/// One client's cancel key, the server it holds now, and what the console shows of it.
pub struct CancelHandle {
    /// The client's id in pgmux (SHOW CLIENTS, KILL_CLIENT), unique among logged-in clients.
    pub process_id: i32,
    /// The process id of its BackendKeyData: its server's pid in session mode, else `process_id`.
    pub backend_pid: i32,
    secret_key: i32,
    /// The client's pool, whose server address a cancel goes to.
    pub pool: Arc<Pool>,
    attached: Mutex<Attached>,
    /// The server it holds now: written by the session at each checkout and read by cancels
    /// and the console without the lock (see `attach`).
    held: HeldSlot,
    pub tls: bool,
    /// Its startup settings (shared with the pool's copy), for application_name.
    pub settings: Settings,
    /// Seconds since start: login and last request (SHOW CLIENTS shows no finer).
    pub connected_s: u32,
    pub request_s: AtomicU32,
    /// µs since start (`stats::now_us`) it has been waiting for a server (0: not waiting).
    pub wait_since: AtomicU64,
    /// KILL_CLIENT or KILL: the session ends at its next step and says why.
    pub killed: AtomicBool,
    /// Cancels sent for this client and not landed yet (`cancels_in_flight`).
    in_flight: AtomicU32,
    /// `attached.waker` holds the session's waker (see `wake_on_shutdown`).
    waker_left: AtomicBool,
    /// read_write_split: when the client's last write on the primary ended (µs; 0: never), and
    /// its `pgmux.route` startup parameter.
    pub wrote_at: AtomicU64,
    pub route: Preference,
}

/// The server a client holds, as atomics: the session writes it twice per transaction, so it
/// takes no lock. `server_id` is 0 when none is held, and is written last (and cleared first).
#[derive(Default)]
struct HeldSlot {
    server_id: AtomicU64,
    process_id: AtomicI32,
    secret_key: AtomicI32,
    created_s: AtomicU32,
    tls: AtomicBool,
    /// `Attached::other_pool` holds a replica's pool (rare: only then is the lock taken).
    other: AtomicBool,
}

/// What the client's session holds, behind one lock: its socket while the session owns it (see
/// `kill`; -1 once the session let go of it), and a replica's pool while it holds its server.
struct Attached {
    other_pool: Option<Arc<Pool>>,
    socket: RawFd,
    /// The session's task while it waits, woken when a shutdown starts (`wake_all`).
    waker: Option<std::task::Waker>,
}

/// What `CancelRegistry::register` records of a new client.
pub struct ClientFacts {
    pub route: Preference,
    pub tls: bool,
    pub settings: Settings,
    pub socket: RawFd,
}

impl CancelHandle {
    pub fn secret_key(&self) -> i32 {
        self.secret_key
    }

    /// The client took this server. Its facts are written before its id, which publishes them
    /// (see `cancel_held` for why that is enough).
    pub fn attach(&self, server: &ServerConn, pool: &Arc<Pool>) {
        let held = &self.held;
        // The id's clearing (`detach`) before the facts' overwriting, for `held`'s recheck.
        fence(Ordering::Release);
        held.process_id.store(server.process_id, Ordering::Relaxed);
        held.secret_key.store(server.secret_key, Ordering::Relaxed);
        held.created_s
            .store((server.created_us / 1_000_000) as u32, Ordering::Relaxed);
        held.tls.store(server.stream.is_tls(), Ordering::Relaxed);
        if !Arc::ptr_eq(pool, &self.pool) {
            self.attached().other_pool = Some(pool.clone());
            held.other.store(true, Ordering::Relaxed);
        }
        held.server_id.store(server.id, Ordering::Release);
    }

    /// The client gave its server back: cancels from now on are dropped, and those already
    /// counted show in `cancels_in_flight`, read after this.
    pub fn detach(&self) {
        self.held.server_id.swap(0, Ordering::SeqCst);
        if self.held.other.swap(false, Ordering::Relaxed) {
            self.attached().other_pool = None;
        }
    }

    /// Cancels sent to the server it held (or holds) that have not landed yet: that server
    /// must not serve another client before they do. (SeqCst: see `cancel_held`.)
    pub fn cancels_in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The server it holds now, if any.
    pub fn held(&self) -> Option<Held> {
        let held = &self.held;
        let server_id = held.server_id.load(Ordering::Acquire);
        if server_id == 0 {
            return None;
        }
        let other_pool = match held.other.load(Ordering::Relaxed) {
            true => self.attached().other_pool.clone(),
            false => None,
        };
        let facts = Held {
            process_id: held.process_id.load(Ordering::Relaxed),
            secret_key: held.secret_key.load(Ordering::Relaxed),
            server_id,
            created_s: held.created_s.load(Ordering::Relaxed),
            tls: held.tls.load(Ordering::Relaxed),
            other_pool,
        };
        // A checkout of another server meanwhile: this one is gone. (The fence keeps the facts'
        // loads before the recheck.)
        fence(Ordering::Acquire);
        (held.server_id.load(Ordering::Relaxed) == server_id).then_some(facts)
    }

    fn attached(&self) -> std::sync::MutexGuard<'_, Attached> {
        self.attached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's address, asked of its socket (not stored: every idle client would carry it).
    pub fn peer(&self) -> Option<SocketAddr> {
        let attached = self.attached();
        let fd = attached.socket;
        if fd < 0 {
            return None;
        }
        // SAFETY: as in `kill`: the descriptor is the session's open socket while the lock is held.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket2::SockRef::from(&fd).peer_addr().ok()?.as_socket()
    }

    /// Remembers the session's task, to be woken when a shutdown starts. Under the lock that
    /// `CancelRegistry::wake_all` takes after the shutdown is marked, so a session that checks
    /// for the shutdown after this call cannot miss it.
    ///
    /// A session's task keeps its waker, so once one is left here later calls only look at
    /// `waker_left` (a load, not the lock); `wake_all` clears it with the waker it takes.
    #[inline]
    pub fn wake_on_shutdown(&self, waker: &std::task::Waker) {
        // Inline: the waker is left once per session, and this is asked twice per transaction.
        if !self.waker_left.load(Ordering::Acquire) {
            self.leave_waker(waker);
        }
    }

    #[inline(never)]
    fn leave_waker(&self, waker: &std::task::Waker) {
        let mut attached = self.attached();
        if !attached.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            attached.waker = Some(waker.clone());
        }
        self.waker_left.store(true, Ordering::Release);
    }

    /// The session is about to close the socket: `kill` must not touch it from now on.
    pub fn forget_socket(&self) {
        self.attached().socket = -1;
    }

    /// KILL_CLIENT: marks the client killed and shuts its socket for reading, so the session,
    /// wherever it waits, sees the end of its input, rolls back what it held and tells the client
    /// why before it closes. The descriptor is used under the lock the session takes (in
    /// `forget_socket`) before it closes the socket, so it is never someone else's.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        let attached = self.attached();
        let fd = attached.socket;
        if fd >= 0 {
            // SAFETY: the session keeps the socket open while `socket` holds its descriptor,
            // and it clears `socket` under this lock before closing it.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read);
        }
    }

    /// Cancels whatever the held server runs (a cancel request, or query_timeout). Returns
    /// false when the client holds no server.
    pub async fn cancel_held(&self) -> bool {
        // Counted before the server is read, and `detach` clears the server before it reads the
        // count (both SeqCst): either this sees no server, or the session, once it let go of the
        // server, sees this cancel (`cancels_in_flight`) and keeps the server until it lands.
        // Then the session cannot take another server before this cancel ends, so the facts read
        // here stay those of the server seen.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        // The id's load below may not pass the count's store (an Acquire load alone may, on
        // weaker machines than x86).
        fence(Ordering::SeqCst);
        let Some(held) = self.held() else {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        };
        let pool = held.other_pool.as_ref().unwrap_or(&self.pool);
        pool.counts.cancels.fetch_add(1, Ordering::Relaxed);
        let target = &pool.target;
        let sent = tokio::time::timeout(CANCEL_TIMEOUT, cancel(target, held.process_id, held.secret_key)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!(pool = %self.pool, backend_pid = held.process_id, "cancel request to the server failed");
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        pool.counts.cancels.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

/// Every logged-in client by its pgmux process id; session-mode clients also by their key.
#[derive(Default)]
pub struct CancelRegistry {
    /// [pooler] peer_id, in every secret handed out (see `peer`).
    peer_id: u16,
    clients: DashMap<i32, Arc<CancelHandle>>,
    /// By (server pid, secret): two servers (of two hosts, or one server reused after a logout
    /// not yet unregistered) can share a pid, so the secret keeps the keys unique.
    linked: DashMap<(i32, i32), Arc<CancelHandle>>,
}

impl CancelRegistry {
    /// The registry of a process with this peer_id (0: peering off).
    pub fn new(peer_id: u16) -> CancelRegistry {
        CancelRegistry {
            peer_id,
            ..CancelRegistry::default()
        }
    }

    /// A new secret: random, with the peer id in it when peering is on.
    fn new_secret(&self) -> i32 {
        super::peer::secret(self.peer_id, rand::random())
    }

    /// Registers a logged-in client under the first id `next` gives that no registered client
    /// holds (ids wrap after 2^31 logins; a long-lived client keeps its own); `server_pid`, in
    /// session mode, is the pid it is told, with a secret no other client has with that pid.
    /// The entry goes when the returned guard is dropped, unless it is kept (`Registered::keep`).
    pub fn register(
        &self,
        next: impl FnMut() -> i32,
        server_pid: Option<i32>,
        pool: Arc<Pool>,
        facts: ClientFacts,
    ) -> Registered<'_> {
        let handle = match server_pid {
            None => vacant(&self.clients, next, |id| {
                new_handle(id, id, self.new_secret(), pool, facts)
            }),
            // Lock order: `linked` then `clients`; nothing else holds both.
            Some(pid) => vacant(
                &self.linked,
                || (pid, self.new_secret()),
                |(pid, secret)| vacant(&self.clients, next, |id| new_handle(id, pid, secret, pool, facts)),
            ),
        };
        Registered {
            registry: self,
            handle,
            kept: false,
        }
    }
}

/// The handle of a client logging in now.
fn new_handle(
    process_id: i32,
    backend_pid: i32,
    secret_key: i32,
    pool: Arc<Pool>,
    facts: ClientFacts,
) -> Arc<CancelHandle> {
    let now = now_us();
    Arc::new(CancelHandle {
        process_id,
        backend_pid,
        secret_key,
        pool,
        attached: Mutex::new(Attached {
            other_pool: None,
            socket: facts.socket,
            waker: None,
        }),
        tls: facts.tls,
        settings: facts.settings,
        connected_s: (now / 1_000_000) as u32,
        request_s: AtomicU32::new((now / 1_000_000) as u32),
        wait_since: AtomicU64::new(0),
        killed: AtomicBool::new(false),
        held: HeldSlot::default(),
        in_flight: AtomicU32::new(0),
        waker_left: AtomicBool::new(false),
        wrote_at: AtomicU64::new(0),
        route: facts.route,
    })
}

/// Inserts `make(key)` under the first key from `next` that `map` does not hold; returns it.
fn vacant<K, V>(map: &DashMap<K, V>, mut next: impl FnMut() -> K, make: impl FnOnce(K) -> V) -> V
where
    K: Eq + std::hash::Hash + Copy,
    V: Clone,
{
    loop {
        let id = next();
        if let dashmap::Entry::Vacant(slot) = map.entry(id) {
            let value = make(id);
            slot.insert(value.clone());
            return value;
        }
    }
}

/// A client's entry in the registry, from login on: dropped unkept (a login cut by
/// client_login_timeout after registering, a session that ended or panicked), it forgets the
/// socket and leaves the registry, so no descriptor outlives its socket there.
pub struct Registered<'a> {
    registry: &'a CancelRegistry,
    handle: Arc<CancelHandle>,
    kept: bool,
}

impl Registered<'_> {
    pub fn handle(&self) -> &Arc<CancelHandle> {
        &self.handle
    }

    /// The login finished: the session owns the entry now (and removes it, see `Session`).
    pub fn keep(mut self) -> Arc<CancelHandle> {
        self.kept = true;
        self.handle.clone()
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.handle.forget_socket();
            self.registry.unregister(&self.handle);
        }
    }
}

impl CancelRegistry {
    /// A shutdown started: every session waiting for its client or its server looks at it.
    pub fn wake_all(&self) {
        let handles: Vec<_> = self.clients.iter().map(|e| e.value().clone()).collect();
        for handle in handles {
            let waker = {
                let mut attached = handle.attached();
                handle.waker_left.store(false, Ordering::Release);
                attached.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Removes this client's entries (not another's that took its id since).
    pub fn unregister(&self, handle: &Arc<CancelHandle>) {
        self.clients
            .remove_if(&handle.process_id, |_, v| Arc::ptr_eq(v, handle));
        if handle.backend_pid != handle.process_id {
            self.linked
                .remove_if(&(handle.backend_pid, handle.secret_key), |_, v| Arc::ptr_eq(v, handle));
        }
    }

    /// An upgrade's adopted client, under the key the old process gave it (transaction and
    /// statement modes: its process id is its key's). None when a client here has the id.
    pub fn adopt(
        &self,
        process_id: i32,
        backend_pid: i32,
        secret_key: i32,
        pool: Arc<Pool>,
        facts: ClientFacts,
    ) -> Option<Registered<'_>> {
        if backend_pid != process_id {
            return None;
        }
        let dashmap::Entry::Vacant(slot) = self.clients.entry(process_id) else {
            return None;
        };
        let handle = new_handle(process_id, backend_pid, secret_key, pool, facts);
        slot.insert(handle.clone());
        Some(Registered {
            registry: self,
            handle,
            kept: false,
        })
    }

    /// Every logged-in client, in login order.
    pub fn all(&self) -> Vec<Arc<CancelHandle>> {
        let mut all: Vec<_> = self.clients.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|h| (h.connected_s, h.process_id));
        all
    }

    /// How long the longest-waiting client of each pool has been waiting for a server (µs),
    /// by pool address; pools with no client waiting are absent.
    pub fn max_waits(&self) -> std::collections::HashMap<*const Pool, u64> {
        let now = now_us();
        let mut waits = std::collections::HashMap::new();
        for entry in self.clients.iter() {
            let since = entry.wait_since.load(Ordering::Relaxed);
            if since != 0 {
                let w = waits.entry(Arc::as_ptr(&entry.pool)).or_insert(0u64);
                *w = (*w).max(now.saturating_sub(since));
            }
        }
        waits
    }

    pub fn get(&self, process_id: i32) -> Option<Arc<CancelHandle>> {
        self.clients.get(&process_id).map(|e| e.value().clone())
    }

    /// The handle a CancelRequest's key names, if the key is right. (The `linked` lookup
    /// compares secrets only on a hash match, and the hash is keyed per process: its timing
    /// tells nothing of a secret.)
    pub fn find(&self, process_id: i32, secret_key: i32) -> Option<Arc<CancelHandle>> {
        if let Some(handle) = self.linked.get(&(process_id, secret_key)) {
            return Some(handle.clone());
        }
        let handle = self.clients.get(&process_id)?.clone();
        let right = crate::auth::ct_eq(&handle.secret_key.to_be_bytes(), &secret_key.to_be_bytes());
        // A session-mode client was told its server's pid, not this id.
        (right && handle.backend_pid == process_id).then_some(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of the embedded default's, for registering clients of.
    fn test_pool() -> Arc<Pool> {
        let config = crate::config::Config::embedded_default();
        let pools = crate::pool::Pools::new(None);
        let Some(db) = config.database("d") else {
            panic!("the embedded default serves every database")
        };
        pools.get_or_create(&config, db, "d", "u", None)
    }

    fn test_facts(socket: RawFd) -> ClientFacts {
        ClientFacts {
            route: Preference::Auto,
            tls: false,
            settings: Settings::default(),
            socket,
        }
    }

    #[test]
    fn ids_still_in_use_are_skipped() {
        // Issue 22: after 2^31 logins the ids wrap, and a long-lived client's id came round
        // again: its entry was replaced (its cancels stopped working, it left SHOW CLIENTS).
        let map: DashMap<i32, &str> = DashMap::new();
        map.insert(1, "long-lived");
        map.insert(2, "another");
        let mut ids = [i32::MAX, 1, 2, 3].into_iter();
        let mut next = || ids.next().unwrap_or(0);
        assert_eq!(vacant(&map, &mut next, |_| "first"), "first");
        assert_eq!(map.get(&i32::MAX).map(|v| *v), Some("first"));
        assert_eq!(
            vacant(&map, &mut next, |id| if id == 3 { "new" } else { "wrong" }),
            "new"
        );
        assert_eq!(map.get(&1).map(|v| *v), Some("long-lived"));
        assert_eq!(map.get(&2).map(|v| *v), Some("another"));
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn an_entry_not_kept_leaves_the_registry() {
        // Issue 22: a login cut between register and the welcome (client_login_timeout) left
        // its entry, with a descriptor number a later socket could reuse.
        let pool = test_pool();
        let facts = || test_facts(12345);
        let registry = CancelRegistry::default();
        let cut = registry.register(|| 7, None, pool.clone(), facts());
        assert_eq!(registry.all().len(), 1);
        let cut_handle = cut.handle().clone();
        drop(cut);
        assert!(registry.all().is_empty());
        assert_eq!(cut_handle.attached().socket, -1, "the descriptor is forgotten");

        let kept = registry.register(|| 7, None, pool.clone(), facts()).keep();
        assert_eq!(registry.all().len(), 1);
        // A stale handle with the same id removes nothing of the new client's.
        registry.unregister(&cut_handle);
        assert_eq!(registry.all().len(), 1);
        registry.unregister(&kept);
        assert!(registry.all().is_empty());
    }

    #[test]
    fn session_keys_name_their_server_pid_and_stay_unique() {
        // Issue 23: a session-mode client is told its server's pid, which another client (of
        // another host, or the next user of that server) can be told too.
        let pool = test_pool();
        let facts = || test_facts(-1);
        let registry = CancelRegistry::default();
        let mut ids = 5_000_000..;
        let mut next = || ids.next().unwrap_or(0);
        let a = registry.register(&mut next, Some(4242), pool.clone(), facts()).keep();
        let b = registry.register(&mut next, Some(4242), pool.clone(), facts()).keep();
        let t = registry.register(&mut next, None, pool.clone(), facts()).keep();
        assert_eq!((a.backend_pid, b.backend_pid), (4242, 4242));
        assert_ne!(a.process_id, b.process_id, "console ids stay unique");
        assert_ne!(a.secret_key(), b.secret_key(), "keys stay unique");
        assert_eq!(t.backend_pid, t.process_id);
        let found = |pid, key| registry.find(pid, key).map(|h| h.process_id);
        assert_eq!(found(4242, a.secret_key()), Some(a.process_id));
        assert_eq!(found(4242, b.secret_key()), Some(b.process_id));
        assert_eq!(found(t.process_id, t.secret_key()), Some(t.process_id));
        assert_eq!(found(a.process_id, a.secret_key()), None, "only the key it was told");
        assert_eq!(found(4242, t.secret_key()), None);
        registry.unregister(&a);
        assert_eq!(found(4242, a.secret_key()), None);
        assert_eq!(found(4242, b.secret_key()), Some(b.process_id));
        registry.unregister(&b);
        registry.unregister(&t);
        assert!(registry.all().is_empty());
        assert!(registry.linked.is_empty());
    }

    #[test]
    fn with_peering_every_key_names_its_peer() {
        // Issue 18: a process with peer_id 3 puts 3 in every secret it hands out, in both modes,
        // so that another peer can forward a cancel here; the forwarded bit is never set.
        let pool = test_pool();
        let facts = || test_facts(-1);
        let registry = CancelRegistry::new(3);
        let mut ids = 5_000_000..;
        let mut next = || ids.next().unwrap_or(0);
        let mut handles = Vec::new();
        for n in 0..50 {
            let server_pid = (n % 2 == 0).then_some(4242);
            handles.push(registry.register(&mut next, server_pid, pool.clone(), facts()).keep());
        }
        for h in &handles {
            assert_eq!(super::super::peer::decode(h.secret_key()), (3, false));
            let found = registry.find(h.backend_pid, h.secret_key()).map(|f| f.process_id);
            assert_eq!(found, Some(h.process_id));
            // The same key marked forwarded is not found as it is (see `peer::accept`).
            let forwarded = (h.secret_key() as u32 | super::super::peer::FORWARDED) as i32;
            assert!(registry.find(h.backend_pid, forwarded).is_none());
        }
        for h in &handles {
            registry.unregister(h);
        }
        assert!(registry.all().is_empty());
    }
}
