//! One listening client's notifications: filled by its pool's listener connection, emptied by
//! the client's session between its transactions or while it is idle.

use crate::protocol::messages::{message, put_cstr};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Waker};

/// Bytes of notifications held for a client that has not taken them (beside what its socket
/// holds): a burst of twenty thousand small ones fits; past it, new ones are dropped (and the
/// client is told how many).
pub const QUEUE_BYTES: usize = 1 << 20;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Mailbox {
    pub id: u64,
    inner: Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    /// Encoded NotificationResponse frames, oldest first, and their total size.
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// Dropped since the client was last told.
    dropped: u64,
    /// The listener connection was lost since the client was last told.
    missed: bool,
    /// The client's session, when it waits with nothing to deliver.
    waker: Option<Waker>,
    /// The channels the client listens to (committed subscriptions).
    channels: Vec<Vec<u8>>,
}

impl Inbox {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn has_news(&self) -> bool {
        !self.queue.is_empty() || self.dropped > 0 || self.missed
    }
}

impl Default for Mailbox {
    fn default() -> Mailbox {
        Mailbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            inner: Mutex::default(),
        }
    }
}

impl Mailbox {
    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a notification; false when the queue is full and it was dropped.
    pub fn push(&self, frame: &Bytes) -> bool {
        let mut inbox = self.inbox();
        let kept = inbox.bytes + frame.len() <= QUEUE_BYTES;
        if kept {
            inbox.bytes += frame.len();
            inbox.queue.push_back(frame.clone());
        } else {
            inbox.dropped += 1;
        }
        inbox.wake();
        kept
    }

    /// The listener connection was lost: notifications may have been missed.
    pub fn missed(&self) {
        let mut inbox = self.inbox();
        inbox.missed = true;
        inbox.wake();
    }

    /// Whether something waits for the client; if not, the session is woken when it does.
    pub fn poll_news(&self, cx: &mut Context<'_>) -> bool {
        let mut inbox = self.inbox();
        if inbox.has_news() {
            return true;
        }
        if !inbox.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            inbox.waker = Some(cx.waker().clone());
        }
        false
    }

    /// Appends what waits for the client to `out`: a notice for what was missed, the
    /// notifications, then a notice for what was dropped. Returns how many notifications.
    ///
    /// A notification is dropped when the queue has no room for it, so the dropped ones came
    /// after most of those queued (a smaller one that fits may still be queued after a drop):
    /// their notice follows the queue, and the client reads the notifications it got before it
    /// learns that others were lost.
    pub fn take(&self, out: &mut BytesMut) -> usize {
        let mut inbox = self.inbox();
        if std::mem::take(&mut inbox.missed) {
            notice(
                out,
                "pgmux lost its connection listening for notifications: some may have been missed",
                "pgmux reconnected and listens again on the same channels",
            );
        }
        let n = inbox.queue.len();
        inbox.bytes = 0;
        for frame in inbox.queue.drain(..) {
            out.extend_from_slice(&frame);
        }
        let dropped = std::mem::take(&mut inbox.dropped);
        if dropped > 0 {
            notice(
                out,
                &format!("pgmux dropped {dropped} notifications for this client: it did not read them fast enough"),
                &format!(
                    "at most {} KiB of notifications wait for a client that does not read them",
                    QUEUE_BYTES >> 10
                ),
            );
        }
        n
    }

    /// The channels this client listens to.
    pub fn channels(&self) -> Vec<Vec<u8>> {
        self.inbox().channels.clone()
    }

    pub(super) fn set_channels(&self, channels: Vec<Vec<u8>>) {
        self.inbox().channels = channels;
    }
}

/// A NoticeResponse with severity WARNING (SQLSTATE 01000).
fn notice(out: &mut BytesMut, text: &str, detail: &str) {
    message(out, b'N', |b| {
        for (field, value) in [
            (b'S', "WARNING"),
            (b'V', "WARNING"),
            (b'C', "01000"),
            (b'M', text),
            (b'D', detail),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        b.put_u8(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::peek_header;

    fn tags(mut bytes: &[u8]) -> Vec<u8> {
        let mut tags = Vec::new();
        while let Ok(Some((tag, total))) = peek_header(bytes, usize::MAX >> 1) {
            tags.push(tag);
            bytes = &bytes[total..];
        }
        tags
    }

    #[test]
    fn bounded_and_tells_what_it_dropped() {
        let mb = Mailbox::default();
        let frame = Bytes::from_static(b"A\0\0\0\x0e\0\0\0\x01ch\0hi\0");
        let fit = QUEUE_BYTES / frame.len();
        for _ in 0..fit {
            assert!(mb.push(&frame));
        }
        assert!(!mb.push(&frame) && !mb.push(&frame), "the queue is full");
        mb.missed();
        let mut out = BytesMut::new();
        assert_eq!(mb.take(&mut out), fit);
        let seen = tags(&out);
        assert_eq!(seen.first(), Some(&b'N'), "missed, first");
        assert_eq!(seen.last(), Some(&b'N'), "dropped, after the queue");
        assert!(
            seen[1..fit + 1].iter().all(|&t| t == b'A'),
            "the queued notifications between"
        );
        assert_eq!(seen.len(), fit + 2);
        assert!(String::from_utf8_lossy(&out).contains("dropped 2 notifications"));
        out.clear();
        assert_eq!(mb.take(&mut out), 0);
        assert!(out.is_empty(), "told once");
    }
}
