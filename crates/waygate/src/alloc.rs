//! The global allocator: mimalloc, called through its plain entry points
//! whenever the alignment asked for is one its blocks have anyway.
//!
//! The `mimalloc` crate's allocator passes every request to
//! `mi_malloc_aligned`. In mimalloc 3, that function serves a request over
//! 1 KiB whose size class is not a power of two (the 3.6 KB request future,
//! hyper's 8.4 KB channel blocks, tokio's task cells), and a small one when
//! its page has no free block left, by over-allocating: `size + align - 1`
//! bytes from a larger size class, after two extra calls. The pages of the
//! right size class are then never created, so such requests keep taking
//! that path (BENCHMARKS.md, "Release profile and allocator", has the
//! counts). Rust's own `System` allocator makes the same distinction with
//! `malloc`.

use std::alloc::{GlobalAlloc, Layout};

use libmimalloc_sys as mi;

/// The alignment every mimalloc block of at least this many bytes has:
/// two machine words. Its size classes above one word are multiples of two
/// words (16 bytes on 64-bit targets, `MI_MAX_ALIGN_SIZE`), laid out from a
/// 16-byte aligned page start.
const NATURAL_ALIGN: usize = 2 * std::mem::size_of::<usize>();

/// mimalloc, without its aligned entry points for ordinary alignments.
pub(crate) struct Mimalloc;

/// Whether a plain `mi_malloc` of `size` bytes is aligned enough.
fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && align <= size
}

// SAFETY: every method hands the request to mimalloc, which returns blocks
// of at least the size asked for and null on failure. The plain entry
// points are used only where `natural` holds, for which mimalloc's blocks
// are aligned as asked (see `NATURAL_ALIGN`); every other request goes to
// the aligned ones. `dealloc` and `realloc` only receive pointers this
// allocator returned, and `mi_free` and `mi_realloc` take any of them.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if natural(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if natural(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if natural(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Mimalloc;

    /// Every size up to 20 KB (and some larger) with every alignment up to
    /// 4 KiB comes back aligned, writable, and keeps its bytes through
    /// growing and shrinking reallocations.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let sizes =
            (1..=300)
                .chain((301..20_000).step_by(37))
                .chain([65_536, 1 << 20, (1 << 20) + 24]);
        let mut checked = 0;
        for size in sizes {
            for align in (0..=12).map(|s| 1usize << s) {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY: non-zero sizes; each block is used within its
                // size and freed once with the layout it was made with.
                unsafe {
                    let zeroed = Mimalloc.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} B, align {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size)
                        .iter()
                        .all(|&b| b == 0));
                    Mimalloc.dealloc(zeroed, layout);

                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} B, align {align}");
                    let fill = (size % 251) as u8;
                    std::ptr::write_bytes(p, fill, size);

                    let grown = size * 3 + 5;
                    let q = Mimalloc.realloc(p, layout, grown);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "{size} -> {grown} B, align {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == fill));
                    std::ptr::write_bytes(q, fill, grown);

                    let small = size.div_ceil(2);
                    let grown_layout =
                        Layout::from_size_align(grown, align).expect("a valid layout");
                    let r = Mimalloc.realloc(q, grown_layout, small);
                    assert!(!r.is_null());
                    assert_eq!(r as usize % align, 0, "{grown} -> {small} B, align {align}");
                    assert!(std::slice::from_raw_parts(r, small)
                        .iter()
                        .all(|&b| b == fill));
                    Mimalloc.dealloc(
                        r,
                        Layout::from_size_align(small, align).expect("a valid layout"),
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 5_000);
    }
}
