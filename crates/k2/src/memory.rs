//! The process's memory: the allocator, transparent huge pages, and what the process
//! holds (resident, peak, live heap) for the figures `k2 demo` and `k2 bench` print.

// The pipeline allocates per record; mimalloc measured faster than the system allocator here.
#[cfg(all(feature = "mimalloc", not(feature = "heap-stats")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "heap-stats")]
#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// Live heap bytes (allocated and not yet freed), when built with the `heap-stats` feature:
/// `k2 bench feed` prints them next to resident memory, which tells memory the program
/// holds from memory the allocator keeps after it was freed.
pub fn heap_live_bytes() -> Option<u64> {
    #[cfg(feature = "heap-stats")]
    return Some(heap::live());
    #[cfg(not(feature = "heap-stats"))]
    None
}

#[cfg(feature = "heap-stats")]
mod heap {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicIsize, Ordering};

    /// mimalloc with one shared counter of live bytes: an atomic add per allocation and
    /// per free, which is why it is a build feature and not always on.
    pub struct Counting;

    static LIVE: AtomicIsize = AtomicIsize::new(0);

    pub fn live() -> u64 {
        LIVE.load(Ordering::Relaxed).max(0) as u64
    }

    // SAFETY: every call is passed to mimalloc unchanged; the counter only observes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE.fetch_add(
                    new_size as isize - layout.size() as isize,
                    Ordering::Relaxed,
                );
            }
            p
        }
    }
}

/// Turns transparent huge pages off for this process (docs/design/operations.md, "Memory"): the
/// allocator asks for them, and a 2 MB page faulted in whole for a few bytes, split when
/// part of it is returned and gathered again by the kernel later, made resident memory
/// grow in steps while live data stayed flat, and held back freshness.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE sets one flag of the calling process; no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "warning: could not turn transparent huge pages off: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Resident memory of this process, bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Resident memory of this process, bytes: (anonymous, file-backed). The file-backed
/// part is mostly the program's own code, paged in as it is first run.
pub fn rss_anon_file() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb << 10)
    };
    (kb("RssAnon:"), kb("RssFile:") + kb("RssShmem:"))
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
