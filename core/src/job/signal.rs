use serde::{Deserialize, Serialize};

/// A signal number as the job language names it (`TERM`, `SIGTERM` or `15`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signal(pub i32);

/// Linux x86_64 signal numbers and names, without the `SIG` prefix.
const NAMES: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl Signal {
    pub const HUP: Signal = Signal(1);
    pub const INT: Signal = Signal(2);
    pub const KILL: Signal = Signal(9);
    pub const TERM: Signal = Signal(15);
    pub const CONT: Signal = Signal(18);
    pub const STOP: Signal = Signal(19);

    /// Parses `TERM`, `SIGTERM` or a number 1..=64.
    pub fn parse(text: &str) -> Option<Signal> {
        if let Ok(n) = text.parse::<i32>() {
            return (1..=64).contains(&n).then_some(Signal(n));
        }
        let bare = text.strip_prefix("SIG").unwrap_or(text);
        NAMES
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|&(_, n)| Signal(n))
    }

    /// `TERM` for 15; the number itself for signals without a name.
    pub fn name(self) -> String {
        NAMES
            .iter()
            .find(|&&(_, n)| n == self.0)
            .map(|(name, _)| (*name).to_string())
            .unwrap_or_else(|| self.0.to_string())
    }
}
