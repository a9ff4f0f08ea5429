//! Stack high-water mark by painting.
//!
//! cortex-m-rt puts the main stack at the top of RAM (`_stack_start`) growing down to
//! `_stack_end`, the end of the statics. [`paint`] fills the unused part of that range
//! (everything below the current stack pointer) with a pattern; [`high_water`] finds the
//! lowest word that no longer holds it. The depth reported is measured from
//! `_stack_start`, so it includes the frames of `main` itself: it is the whole stack this
//! program needed since the last paint.
//!
//! Caveat of the method: a frame that reserves space but never writes a word of it is not
//! seen (it cannot be, without a debugger); and a word written with the pattern's exact
//! value would be missed. Both only make the figure smaller by a few words at most.

use core::ptr::{addr_of, read_volatile, write_volatile};

const PATTERN: u32 = 0x5AFE_C0DE;

unsafe extern "C" {
    // Provided by cortex-m-rt's link.x: top of the stack (initial SP) and the lowest
    // address it may reach (end of .bss/.uninit).
    static _stack_start: u32;
    static _stack_end: u32;
}

fn bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken, never their contents.
    (
        addr_of!(_stack_end) as usize,
        addr_of!(_stack_start) as usize,
    )
}

/// Bytes available to the stack (from the top of RAM down to the end of the statics).
pub fn capacity() -> usize {
    let (bottom, top) = bounds();
    top - bottom
}

/// Fills the free part of the stack (below the current stack pointer, minus a margin
/// for this function's own frame) with the pattern. Call it from a shallow frame.
#[inline(never)]
pub fn paint() {
    let (bottom, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    // This function's frame lives above `sp` already; the margin covers anything the
    // compiler might still push below it while the loop runs (it pushes nothing).
    let limit = sp.saturating_sub(64) & !3;
    let mut p = (bottom + 3) & !3;
    while p < limit {
        // SAFETY: [bottom, sp - 64) is RAM that belongs to the stack and holds no live
        // frame (the stack grows down and sp is above it); it is word aligned.
        unsafe { write_volatile(p as *mut u32, PATTERN) };
        p += 4;
    }
}

/// The deepest the stack has been since the last [`paint`], in bytes from the top.
#[inline(never)]
pub fn high_water() -> usize {
    let (bottom, top) = bounds();
    let mut p = (bottom + 3) & !3;
    while p < top {
        // SAFETY: reads of word-aligned stack RAM between the linker's bounds.
        let w = unsafe { read_volatile(p as *const u32) };
        if w != PATTERN {
            break;
        }
        p += 4;
    }
    top - p
}
