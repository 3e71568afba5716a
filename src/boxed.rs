//! Futures boxed where they are made.
//!
//! `Box::pin(make())` builds the future on the stack and copies all of it into the allocation:
//! for the large futures of the slow paths (a transaction's, a wait for a server's) the copy
//! costs more than the allocation. `in_place` writes the future straight into its box, and
//! `Reused` into an allocation kept for the next future of the kind.

use std::alloc::Layout;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// `Box::pin(make())`, the future written straight into its box.
#[inline(always)]
pub fn in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// One allocation that takes a future of the same type again and again (a session's
/// transaction, once per transaction), so the allocator is asked once, not per use.
pub struct Reused {
    ptr: Option<NonNull<u8>>,
    layout: Layout,
    /// A `Placed` holds the memory (set until it is dropped: one that was leaked keeps it).
    busy: bool,
}

// SAFETY: the memory is owned, and what lives in it is only reached through a `Placed`, which
// is Send only when its future is.
unsafe impl Send for Reused {}

impl Reused {
    pub const fn new() -> Reused {
        Reused {
            ptr: None,
            layout: Layout::new::<()>(),
            busy: false,
        }
    }

    /// `Box::pin(make())`, the future written straight into this allocation (a new one the
    /// first time, or when the layout differs, or after a `Placed` was leaked).
    #[inline(always)]
    pub fn place<F: Future>(&mut self, make: impl FnOnce() -> F) -> Placed<'_, F> {
        let layout = Layout::new::<F>();
        let ptr = match self.ptr {
            Some(ptr) if !self.busy && self.layout == layout => ptr,
            _ => self.grow(layout),
        };
        let ptr = ptr.cast::<F>();
        // SAFETY: ptr is allocated for F's layout and holds nothing live (not busy).
        unsafe { ptr.as_ptr().write(make()) };
        self.busy = true;
        Placed { ptr, owner: self }
    }

    #[cold]
    fn grow(&mut self, layout: Layout) -> NonNull<u8> {
        if let Some(old) = self.ptr.take() {
            if !self.busy && self.layout.size() > 0 {
                // SAFETY: allocated with self.layout below, and nothing lives in it.
                unsafe { std::alloc::dealloc(old.as_ptr(), self.layout) };
            }
        }
        self.busy = false;
        let ptr = match layout.size() {
            0 => NonNull::<u8>::dangling().as_ptr().wrapping_add(layout.align() - 1),
            // SAFETY: the size is not zero.
            _ => unsafe { std::alloc::alloc(layout) },
        };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        self.ptr = Some(ptr);
        self.layout = layout;
        ptr
    }
}

impl Default for Reused {
    fn default() -> Reused {
        Reused::new()
    }
}

impl Drop for Reused {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr.take() {
            if !self.busy && self.layout.size() > 0 {
                // SAFETY: allocated with self.layout, and nothing lives in it.
                unsafe { std::alloc::dealloc(ptr.as_ptr(), self.layout) };
            }
        }
    }
}

/// A future living in a `Reused` allocation; dropping it drops the future in place and frees
/// the allocation for the next.
pub struct Placed<'a, F> {
    ptr: NonNull<F>,
    owner: &'a mut Reused,
}

// SAFETY: it owns the F it points to.
unsafe impl<F: Send> Send for Placed<'_, F> {}

impl<F: Future> Future for Placed<'_, F> {
    type Output = F::Output;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays where it was written until `drop` drops it there (a leaked
        // `Placed` leaves its memory busy for good, so it is never written over).
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

impl<F> Drop for Placed<'_, F> {
    fn drop(&mut self) {
        // SAFETY: written in `place`, dropped only here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        self.owner.busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>, u64);
    impl Future for Counted {
        type Output = u64;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u64> {
            Poll::Ready(self.1)
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn the_same_allocation_serves_each_future_and_drops_each() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut slot = Reused::new();
        let mut first = None;
        for i in 0..3 {
            let mut placed = slot.place(|| Counted(drops.clone(), i));
            let at = placed.ptr.as_ptr() as usize;
            assert_eq!(*first.get_or_insert(at), at, "allocated again");
            assert_eq!(poll_once(&mut placed), Poll::Ready(i));
        }
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        // Another type takes a fitting allocation.
        let mut other = slot.place(|| async { 7u128 });
        assert_eq!(poll_once(&mut other), Poll::Ready(7));
    }

    #[test]
    fn a_leaked_future_keeps_its_memory() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut slot = Reused::new();
        let leaked = slot.place(|| Counted(drops.clone(), 1));
        let at = leaked.ptr.as_ptr() as usize;
        std::mem::forget(leaked);
        let placed = slot.place(|| Counted(drops.clone(), 2));
        assert_ne!(
            placed.ptr.as_ptr() as usize,
            at,
            "a leaked future's memory was written over"
        );
        drop(placed);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }
}
