//! Futures boxed where they are made.
//!
//! `Box::pin(make())` builds the future on the stack and copies all of it into the allocation:
//! for the large futures of the slow paths (a transaction's, a wait for a server's) the copy
//! costs more than the allocation. `in_place` writes the future straight into its box.

use std::future::Future;
use std::pin::Pin;

/// `Box::pin(make())`, the future written straight into its box.
#[inline(always)]
pub fn in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let mut slot = Box::<F>::new_uninit();
    slot.write(make());
    // SAFETY: written just above.
    Box::into_pin(unsafe { slot.assume_init() })
}

/// `Box::new(make())`, the value written straight into its box (see `in_place`).
#[inline(always)]
pub fn new_in_place<T>(make: impl FnOnce() -> T) -> Box<T> {
    let mut slot = Box::<T>::new_uninit();
    slot.write(make());
    // SAFETY: written just above.
    unsafe { slot.assume_init() }
}
