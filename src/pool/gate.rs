//! The console's hold on a database (PAUSE, KILL, DISABLE), shared by its pools: while
//! paused, new transactions wait at checkout until RESUME; while disabled, new clients are
//! refused at login. One gate per database, and one for every database (PAUSE without a name).

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Gate {
    paused: AtomicBool,
    disabled: AtomicBool,
    resumed: Notify,
}

impl Gate {
    #[inline]
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// True when it was not paused before.
    pub fn pause(&self) -> bool {
        !self.paused.swap(true, Ordering::AcqRel)
    }

    /// True when it was paused.
    pub fn resume(&self) -> bool {
        let was = self.paused.swap(false, Ordering::AcqRel);
        self.resumed.notify_waiters();
        was
    }

    /// Resolves once the gate is not paused.
    pub async fn opened(&self) {
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.paused() {
                return;
            }
            resumed.await;
        }
    }

    pub fn disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_pass_after_resume() {
        let gate = Arc::new(Gate::default());
        assert!(gate.pause());
        assert!(!gate.pause());
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.opened().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert!(gate.resume());
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!gate.resume());
        gate.opened().await;
    }
}
