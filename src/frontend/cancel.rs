//! Cancel requests: each client has its own BackendKeyData from pgmux; a CancelRequest that
//! carries it goes, on a new connection, to the server running that client's query right now,
//! with that server's real key, and to nothing else.
//!
//! A server with a cancel in flight is not handed to another client until the cancel is done
//! (PgBouncer's `sv_being_canceled`), so a late cancel never hits someone else's query.

use crate::backend::cancel::{cancel, InFlight};
use crate::backend::ServerConn;
use crate::pool::Pool;
use dashmap::DashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long pgmux waits for PostgreSQL to act on a cancel before it gives up on it.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// The server a client holds, as a cancel needs it.
#[derive(Clone)]
struct Held {
    process_id: i32,
    secret_key: i32,
    in_flight: Arc<InFlight>,
}

/// One client's cancel key and the server it holds now.
pub struct CancelHandle {
    pub process_id: i32,
    secret_key: i32,
    /// The client's pool, whose server address a cancel goes to.
    pub pool: Arc<Pool>,
    held: Mutex<Option<Held>>,
}

impl CancelHandle {
    pub fn secret_key(&self) -> i32 {
        self.secret_key
    }

    /// The client took this server.
    pub fn attach(&self, server: &ServerConn) {
        let held = Held {
            process_id: server.process_id,
            secret_key: server.secret_key,
            in_flight: server.in_flight.clone(),
        };
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
    }

    /// The client gave its server back: cancels from now on are dropped.
    pub fn detach(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Cancels whatever the held server runs (a cancel request, or query_timeout). Returns
    /// false when the client holds no server.
    pub async fn cancel_held(&self) -> bool {
        let Some(held) = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return false;
        };
        held.in_flight.begin();
        let target = &self.pool.target;
        let sent = tokio::time::timeout(CANCEL_TIMEOUT, cancel(target, held.process_id, held.secret_key)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!(pool = %self.pool, backend_pid = held.process_id, "cancel request to the server failed");
        }
        held.in_flight.end();
        true
    }
}

/// Every logged-in client by its pgmux process id.
#[derive(Default)]
pub struct CancelRegistry {
    clients: DashMap<i32, Arc<CancelHandle>>,
}

impl CancelRegistry {
    pub fn register(&self, process_id: i32, pool: Arc<Pool>) -> Arc<CancelHandle> {
        let secret_key = rand::random();
        let handle = Arc::new(CancelHandle {
            process_id,
            secret_key,
            pool,
            held: Mutex::new(None),
        });
        self.clients.insert(process_id, handle.clone());
        handle
    }

    pub fn unregister(&self, process_id: i32) {
        self.clients.remove(&process_id);
    }

    /// The handle a CancelRequest's key names, if the key is right.
    pub fn find(&self, process_id: i32, secret_key: i32) -> Option<Arc<CancelHandle>> {
        let handle = self.clients.get(&process_id)?.clone();
        crate::auth::ct_eq(&handle.secret_key.to_be_bytes(), &secret_key.to_be_bytes()).then_some(handle)
    }
}
