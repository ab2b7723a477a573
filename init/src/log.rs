//! Log lines without a heap: `keel-init: ` + pieces, written with one write(2).
//!
//! As the machine's init, lines go to the kernel log (`/dev/kmsg`, with a `<N>`
//! priority: the console shows them as the kernel's log level says, and `dmesg`
//! keeps them), the first line to the console as well; until /dev is mounted
//! they go to the console. Otherwise (a PID namespace, a test) they go to fd 2,
//! or to /dev/kmsg if fd 2 is not open.

use core::cell::Cell;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

/// One piece of a log line.
pub enum Piece<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
    Int(i64),
    /// Milliseconds, printed as seconds with three decimals.
    Millis(u64),
}

pub struct Log {
    /// Whether lines belong in the kernel log.
    kernel: bool,
    /// `/dev/kmsg`, once opened.
    kmsg: Cell<Option<OwnedFd>>,
}

/// Kernel log priorities (syslog's).
const ERROR: &[u8] = b"<3>";
const INFO: &[u8] = b"<6>";
const LINE_MAX: usize = 256;

impl Log {
    pub fn new(machine: bool) -> Log {
        // SAFETY: fd 2 is only borrowed for the fcntl probe, not closed or kept.
        let stderr = unsafe { BorrowedFd::borrow_raw(2) };
        Log {
            kernel: machine || rustix::io::fcntl_getfd(stderr).is_err(),
            kmsg: Cell::new(None),
        }
    }

    /// A line about what happens as it should.
    pub fn line(&self, pieces: &[Piece<'_>]) {
        self.write(INFO, pieces, false);
    }

    /// A line about something that failed.
    pub fn error(&self, pieces: &[Piece<'_>]) {
        self.write(ERROR, pieces, false);
    }

    /// keel-init's first line: on the console too, whatever the kernel's log
    /// level, so that a quiet boot still shows keel starting (and when).
    pub fn announce(&self, pieces: &[Piece<'_>]) {
        self.write(INFO, pieces, true);
    }

    fn write(&self, priority: &[u8], pieces: &[Piece<'_>], console_too: bool) {
        let kmsg = if self.kernel {
            // Opened on first use, and tried again until /dev is there.
            self.kmsg.take().or_else(|| {
                rustix::fs::open(
                    "/dev/kmsg",
                    rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ok()
            })
        } else {
            None
        };
        let mut buf = [0u8; LINE_MAX];
        let mut w = Writer {
            buf: &mut buf,
            len: 0,
        };
        if kmsg.is_some() {
            w.put(priority);
        }
        w.put(b"keel-init: ");
        for p in pieces {
            match p {
                Piece::Str(s) => w.put(s.as_bytes()),
                Piece::Bytes(b) => w.put(b),
                Piece::Int(n) => w.int(*n),
                Piece::Millis(ms) => {
                    w.int((*ms / 1000) as i64);
                    w.put(b".");
                    let frac = *ms % 1000;
                    w.put(&[
                        b'0' + (frac / 100) as u8,
                        b'0' + (frac / 10 % 10) as u8,
                        b'0' + (frac % 10) as u8,
                    ]);
                    w.put(b"s");
                }
            }
        }
        // Always end the line, even a truncated one.
        let end = w.len.min(LINE_MAX - 1);
        buf[end] = b'\n';
        let line = &buf[..=end];
        if let Some(fd) = &kmsg {
            let _ = rustix::io::write(fd.as_fd(), line);
        }
        if kmsg.is_none() || console_too {
            // The console has no use for the priority.
            let text = if kmsg.is_some() {
                &line[priority.len()..]
            } else {
                line
            };
            // SAFETY: fd 2 is borrowed for this one write.
            let stderr = unsafe { BorrowedFd::borrow_raw(2) };
            let _ = rustix::io::write(stderr, text);
        }
        self.kmsg.set(kmsg);
    }
}

struct Writer<'a> {
    buf: &'a mut [u8; LINE_MAX],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len >= LINE_MAX - 1 {
                return;
            }
            // Keep the console readable: no control characters from odd input.
            self.buf[self.len] = if b == b'\t' || (0x20..0x7f).contains(&b) {
                b
            } else {
                b'?'
            };
            self.len += 1;
        }
    }

    fn int(&mut self, n: i64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            self.put(b"-");
        }
        self.put(&digits[i..]);
    }
}
