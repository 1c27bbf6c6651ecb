//! The global allocator: mimalloc, asked through the entry points that are fastest for what is
//! asked. The `mimalloc` crate sends every request to `mi_malloc_aligned`, and mimalloc 3 takes
//! an over-allocating slow path there for blocks above 1 KiB whose size is not a power of two —
//! hyper's read buffers and request futures, several times per request (callgrind: about 1k
//! instructions per proxied request). mimalloc's plain functions already align every block of
//! at least 16 bytes to 16 (`MI_MAX_ALIGN_SIZE`), so layouts asking no more use those.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// What `mi_malloc` guarantees for a block at least this large.
const PLAIN_ALIGNMENT: usize = 16;

pub struct Mimalloc;

fn plain(layout: &Layout) -> bool {
    layout.align() <= PLAIN_ALIGNMENT && layout.align() <= layout.size()
}

// SAFETY: every function forwards to mimalloc, which upholds GlobalAlloc's contract; blocks
// are freed with `mi_free` whichever way they were allocated, as mimalloc allows.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; a null return reports failure as GlobalAlloc expects.
        unsafe {
            if plain(&layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(&layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of the mimalloc calls above.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps its
        // alignment, which the plain path guarantees only while the size stays ≥ it.
        unsafe {
            let grown = Layout::from_size_align_unchecked(new_size, layout.align());
            if plain(&layout) && plain(&grown) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// `mi_option_arena_eager_commit` in mimalloc 3's `mi_option_t` (mimalloc.h); libmimalloc-sys
/// names only mimalloc 2's options. Its default, 2, commits a whole arena chunk on systems that
/// overcommit (Linux), and with transparent huge pages on that chunk is backed at once: about
/// 8 MiB of resident memory before the first request, more than gatehouse's buffers use.
const ARENA_EAGER_COMMIT: mi::mi_option_t = 4;

/// Makes mimalloc commit arena memory as it is used. Must run before the first allocation,
/// which reserves the first arena: the binary registers it in `.init_array`, ahead of Rust's
/// runtime. An environment variable `MIMALLOC_ARENA_EAGER_COMMIT` still wins.
pub extern "C" fn commit_arenas_on_demand() {
    // SAFETY: sets a process-wide option; mimalloc reads options without locks, and nothing
    // else runs yet.
    unsafe { mi::mi_option_set_default(ARENA_EAGER_COMMIT, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_turned_off_is_mimallocs_arena_eager_commit() {
        // Test binaries keep the system allocator and never run the constructor, so mimalloc
        // reports its defaults: 2 is arena_eager_commit's, and no option near it defaults to 2.
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            // SAFETY: reads an option.
            assert_eq!(unsafe { mi::mi_option_get(ARENA_EAGER_COMMIT) }, 2);
        }
    }
}
