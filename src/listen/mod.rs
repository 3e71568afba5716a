//! LISTEN/NOTIFY in transaction and statement modes. A client's LISTEN runs on whichever server
//! serves its transaction; once that commits, the client is subscribed here, the server forgets
//! it (`UNLISTEN *` before it goes back to the pool), and one connection per pool, the
//! listener, LISTENs on the union of its clients' channels and hands each notification to the
//! subscribed clients' mailboxes. Sessions write them out between transactions or while idle.
//!
//! - `statement`: LISTEN and UNLISTEN in client SQL.
//! - `mailbox`: one client's bounded queue.
//! - `listener`: the pool's listener connection task.

pub mod listener;
pub mod mailbox;
pub mod statement;

pub use mailbox::Mailbox;

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One pool's subscriptions and its listener connection's progress.
pub struct Hub {
    state: Mutex<HubState>,
    /// Wakes the listener task: the wanted channels changed.
    pub(crate) changed: tokio::sync::Notify,
    /// The generation of the channel set the listener connection listens to.
    applied: tokio::sync::watch::Sender<u64>,
    /// Notifications queued for clients, and dropped because a client's queue was full.
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Default)]
struct HubState {
    channels: HashMap<Vec<u8>, Channel>,
    /// Bumped whenever a channel is added or removed.
    generation: u64,
    /// A listener task runs (it ends when no channel is left).
    task: bool,
}

struct Channel {
    subscribers: Vec<Arc<Mailbox>>,
    /// The generation that added it: the listener covers it once `applied` reaches it.
    since: u64,
    delivered: u64,
    dropped: u64,
}

/// A row of SHOW LISTENERS.
pub struct ChannelRow {
    pub channel: String,
    pub clients: usize,
    pub delivered: u64,
    pub dropped: u64,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            state: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            applied: tokio::sync::watch::Sender::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client's committed transaction changed its subscriptions: first `unlisten` (None:
    /// nothing; Some(empty): all), then `listen`. Returns the generation the listener must
    /// reach before the new channels are covered, and whether a listener task must be started.
    pub fn update(
        &self,
        mailbox: &Arc<Mailbox>,
        unlisten: Option<&[Vec<u8>]>,
        listen: &[Vec<u8>],
    ) -> (Option<u64>, bool) {
        let mut state = self.lock();
        let mut mine = mailbox.channels();
        let before = state.generation;
        if let Some(names) = unlisten {
            let gone: Vec<Vec<u8>> = match names.is_empty() {
                true => std::mem::take(&mut mine),
                false => names.to_vec(),
            };
            for name in gone {
                mine.retain(|c| *c != name);
                state.leave(&name, mailbox.id);
            }
        }
        let mut wait = None;
        for name in listen {
            if mine.contains(name) {
                continue;
            }
            mine.push(name.clone());
            let next = state.generation + 1;
            let channel = state.channels.entry(name.clone()).or_insert_with(|| Channel {
                subscribers: Vec::new(),
                since: next,
                delivered: 0,
                dropped: 0,
            });
            channel.subscribers.push(mailbox.clone());
            let since = channel.since;
            if since == next {
                state.generation = next;
            }
            wait = wait.max(Some(since));
        }
        mailbox.set_channels(mine);
        let changed = state.generation != before;
        let spawn = changed && !state.channels.is_empty() && !std::mem::replace(&mut state.task, true);
        drop(state);
        if changed {
            self.changed.notify_one();
        }
        (wait, spawn)
    }

    /// The client left: all its subscriptions go.
    pub fn leave(&self, mailbox: &Mailbox) {
        let mine = mailbox.channels();
        if mine.is_empty() {
            return;
        }
        let mut state = self.lock();
        let before = state.generation;
        for name in &mine {
            state.leave(name, mailbox.id);
        }
        mailbox.set_channels(Vec::new());
        let changed = state.generation != before;
        drop(state);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Waits until the listener connection listens on generation `generation`'s channels.
    pub async fn covered(&self, generation: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|g| *g >= generation).await;
    }

    /// Whether the listener connection already listens on `channel`.
    pub fn covers(&self, channel: &[u8]) -> bool {
        let applied = *self.applied.borrow();
        self.lock().channels.get(channel).is_some_and(|c| c.since <= applied)
    }

    /// The channels to listen on and their generation (for the listener task).
    pub(crate) fn wanted(&self) -> (u64, Vec<Vec<u8>>) {
        let state = self.lock();
        (state.generation, state.channels.keys().cloned().collect())
    }

    pub(crate) fn set_applied(&self, generation: u64) {
        self.applied.send_replace(generation);
    }

    /// The listener task ends when no channel is left (under the lock, so that a subscription
    /// racing with it starts a new one).
    pub(crate) fn retire_if_idle(&self) -> bool {
        let mut state = self.lock();
        if state.channels.is_empty() {
            state.task = false;
            return true;
        }
        false
    }

    /// A NotificationResponse (`frame`, whole) on `channel`: into every subscriber's mailbox.
    pub(crate) fn deliver(&self, channel: &[u8], frame: &Bytes) {
        let mut state = self.lock();
        let Some(entry) = state.channels.get_mut(channel) else {
            return;
        };
        let (mut kept, mut lost) = (0, 0);
        for mailbox in &entry.subscribers {
            match mailbox.push(frame) {
                true => kept += 1,
                false => lost += 1,
            }
        }
        entry.delivered += kept;
        entry.dropped += lost;
        drop(state);
        self.delivered.fetch_add(kept, Ordering::Relaxed);
        self.dropped.fetch_add(lost, Ordering::Relaxed);
    }

    /// The listener connection was lost: every subscriber hears that it may have missed some.
    pub(crate) fn lost(&self) {
        let state = self.lock();
        let mut told = std::collections::HashSet::new();
        for mailbox in state.channels.values().flat_map(|c| &c.subscribers) {
            if told.insert(mailbox.id) {
                mailbox.missed();
            }
        }
    }

    /// SHOW LISTENERS, sorted by channel.
    pub fn rows(&self) -> Vec<ChannelRow> {
        let state = self.lock();
        let mut rows: Vec<ChannelRow> = state
            .channels
            .iter()
            .map(|(name, c)| ChannelRow {
                channel: String::from_utf8_lossy(name).into_owned(),
                clients: c.subscribers.len(),
                delivered: c.delivered,
                dropped: c.dropped,
            })
            .collect();
        rows.sort_by(|a, b| a.channel.cmp(&b.channel));
        rows
    }

    /// Channels listened on.
    pub fn channel_count(&self) -> usize {
        self.lock().channels.len()
    }
}

impl HubState {
    fn leave(&mut self, name: &[u8], id: u64) {
        let Some(channel) = self.channels.get_mut(name) else {
            return;
        };
        channel.subscribers.retain(|m| m.id != id);
        if channel.subscribers.is_empty() {
            self.channels.remove(name);
            self.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn subscriptions_follow_listen_and_unlisten() {
        let hub = Hub::default();
        let (a, b) = (Arc::new(Mailbox::default()), Arc::new(Mailbox::default()));
        let (wait, spawn) = hub.update(&a, None, &names(&["x", "y"]));
        assert_eq!((wait, spawn), (Some(2), true));
        let (wait, spawn) = hub.update(&b, None, &names(&["x"]));
        assert_eq!((wait, spawn), (Some(1), false), "x is already wanted; the task runs");
        assert!(!hub.covers(b"x"));
        hub.set_applied(2);
        assert!(hub.covers(b"x") && !hub.covers(b"z"));

        let frame = Bytes::from_static(b"A\0\0\0\x0d\0\0\0\x01x\0hi\0");
        hub.deliver(b"x", &frame);
        let mut out = bytes::BytesMut::new();
        assert_eq!((a.take(&mut out), b.take(&mut out)), (1, 1));

        hub.update(&a, Some(&names(&["x"])), &[]);
        hub.deliver(b"x", &frame);
        assert_eq!((a.take(&mut out), b.take(&mut out)), (0, 1), "a unlistened x");
        assert_eq!(a.channels(), names(&["y"]));
        hub.update(&a, Some(&[]), &names(&["z"]));
        assert_eq!(a.channels(), names(&["z"]), "UNLISTEN * then LISTEN z");
        hub.leave(&a);
        hub.leave(&b);
        assert_eq!(hub.channel_count(), 0);
        assert!(hub.retire_if_idle());
        let (_, spawn) = hub.update(&a, None, &names(&["x"]));
        assert!(spawn, "a new listener task once the last one retired");
    }
}
