//! The supervisor's heap: two settings of glibc's allocator that keep its
//! resident memory to what it holds (issue 17: 10,000 jobs in ≤ 40 MiB).
//!
//! Owns nothing but these calls; they change no behaviour, only where freed
//! memory goes. A bring-up allocates a lot for a short while (the job files'
//! definitions in one vector, the event queue, each spawn's plan) between what
//! stays (definitions, instances, their environment), and glibc keeps the holes:
//! - A buffer of [`MMAP_THRESHOLD`] or more gets its own mapping, returned to the
//!   kernel when freed. glibc's default threshold grows with each such buffer
//!   freed (up to 32 MiB), after which big buffers come from the heap and leave
//!   holes the size of the state in it.
//! - After a burst of spawns, once every child has exec'd, the free pages of the
//!   heap go back to the kernel ([`give_back_freed_memory`]).

/// Buffers of this size or more are mapped on their own (glibc's initial value,
/// kept fixed).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes the size above which buffers get their own mapping (see the module
/// docs). Called first thing, before the supervisor allocates much.
pub fn fix_mmap_threshold() {
    // SAFETY: mallopt only sets a parameter of glibc's allocator; no pointer
    // is involved, and no other thread runs.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
}

/// Returns the heap's free pages to the kernel (glibc's `malloc_trim`).
pub fn give_back_freed_memory() {
    // SAFETY: malloc_trim only walks and releases glibc's own free lists; it
    // takes no pointer, and the supervisor has one thread.
    unsafe { libc::malloc_trim(0) };
}
