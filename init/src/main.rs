#![no_std]
#![no_main]
extern crate origin;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
unsafe fn origin_main(_argc: usize, _argv: *mut *mut u8, _envp: *mut *mut u8) -> i32 {
    0
}

/// The precompiled `core` references an unwinding personality routine even though
/// keel-init aborts on panic and never unwinds; this symbol satisfies the linker and
/// is never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
