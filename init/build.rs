//! keel-init is its own C runtime (origin's `_start`): no libc, no start files, and
//! linked static and non-PIE so the kernel needs no dynamic loader to run it.
fn main() {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
