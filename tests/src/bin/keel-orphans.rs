//! keel-orphans: `keel-orphans N` forks N children and exits; the children end
//! together as soon as it has gone (they wait for the end of a pipe only it held
//! open). They are orphans then, re-parented to keel-init, so N exits reach
//! keel-init at once that no job owns: what a busy machine's short-lived helpers do.

fn main() {
    let Some(n) = std::env::args().nth(1).and_then(|a| a.parse::<u32>().ok()) else {
        eprintln!("usage: keel-orphans N");
        std::process::exit(2);
    };
    let mut ends = [0i32; 2];
    // SAFETY: pipe(2) writes two fds into the array it is given.
    if unsafe { libc::pipe(ends.as_mut_ptr()) } != 0 {
        eprintln!("keel-orphans: pipe: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let [read_end, write_end] = ends;
    for made in 0..n {
        // SAFETY: this program has one thread; the child only makes the
        // async-signal-safe calls close, read and _exit.
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::close(write_end);
                let mut byte = 0u8;
                // EOF (0) once the parent is gone; only EINTR is retried.
                while libc::read(read_end, (&raw mut byte).cast(), 1) < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
                libc::_exit(0)
            },
            -1 => {
                eprintln!(
                    "keel-orphans: fork after {made}: {}",
                    std::io::Error::last_os_error()
                );
                std::process::exit(1);
            }
            _ => {}
        }
    }
}
