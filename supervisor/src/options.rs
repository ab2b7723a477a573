//! The supervisor's options from outside its command line: an initramfs starts
//! init with no arguments, so at boot they come from a configuration file
//! (`/etc/keel/supervisor.conf`, `--config`) and from `keel.*` words of the
//! kernel command line. Each source gives an [`Options`] of what it sets; the
//! command line wins over kernel words, those over the file, that over the
//! built-in defaults ([`Options::or`]).
//!
//! The file: `KEY=VALUE` lines, KEY named like the long option (`logdir`,
//! `log-size`, ...), `#` comments and blank lines ignored. Kernel words:
//! `keel.KEY=VALUE` (`keel.supervisor=` and `keel.shutdown=` are keel-init's,
//! `keel.shutdown-timeout=` keel-shutdown's).
//! A bad line or word is reported (`FILE:LINE:COL: message`) and ignored: the
//! machine boots with the rest.

use std::path::{Path, PathBuf};

/// Where the configuration file is by default.
pub const DEFAULT_FILE: &str = "/etc/keel/supervisor.conf";

/// What one source sets; `None` where it says nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    pub confdir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub notify_socket: Option<String>,
    pub logdir: Option<PathBuf>,
    pub log_size: Option<u64>,
    pub log_keep: Option<u32>,
    pub cgroup_root: Option<PathBuf>,
}

/// The keys, as the long options spell them.
pub const KEYS: [&str; 7] = [
    "confdir",
    "socket",
    "notify-socket",
    "logdir",
    "log-size",
    "log-keep",
    "cgroup-root",
];

/// keel-init's and keel-shutdown's kernel words.
const NOT_OURS: [&str; 3] = ["supervisor", "shutdown", "shutdown-timeout"];

/// Why a setting was refused, and at which column of the text it was given
/// (0-based within the setting).
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    at: usize,
    message: String,
}

impl Options {
    /// Each option this one leaves unset, from `weaker`.
    pub fn or(self, weaker: Options) -> Options {
        Options {
            confdir: self.confdir.or(weaker.confdir),
            socket: self.socket.or(weaker.socket),
            notify_socket: self.notify_socket.or(weaker.notify_socket),
            logdir: self.logdir.or(weaker.logdir),
            log_size: self.log_size.or(weaker.log_size),
            log_keep: self.log_keep.or(weaker.log_keep),
            cgroup_root: self.cgroup_root.or(weaker.cgroup_root),
        }
    }

    /// Sets one option from `KEY=VALUE`.
    fn set(&mut self, setting: &str) -> Result<(), Refusal> {
        let Some((key, value)) = setting.split_once('=') else {
            return Err(Refusal {
                at: 0,
                message: format!("expected KEY=VALUE, found {setting:?}"),
            });
        };
        let at_value = key.len() + 1;
        let bad = |message: String| Refusal {
            at: at_value,
            message,
        };
        if value.is_empty() {
            return Err(bad(format!("{key}: empty value")));
        }
        match key {
            "confdir" => self.confdir = Some(value.into()),
            "socket" => self.socket = Some(value.into()),
            "notify-socket" => self.notify_socket = Some(value.into()),
            "logdir" => self.logdir = Some(value.into()),
            "log-size" => self.log_size = Some(parse_size(value).map_err(|e| bad(e.to_string()))?),
            "log-keep" => {
                let n = value
                    .parse()
                    .map_err(|_| bad(format!("log-keep: not a count: {value:?}")))?;
                self.log_keep = Some(n);
            }
            "cgroup-root" => self.cgroup_root = Some(value.into()),
            _ => {
                return Err(Refusal {
                    at: 0,
                    message: format!("unknown option {key:?} (known: {})", KEYS.join(", ")),
                });
            }
        }
        Ok(())
    }
}

/// The options of a configuration file's text; every bad line as
/// `NAME:LINE:COL: message`.
pub fn parse_file(name: &Path, text: &str) -> (Options, Vec<String>) {
    let mut options = Options::default();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let setting = line.trim();
        if setting.is_empty() || setting.starts_with('#') {
            continue;
        }
        if let Err(r) = options.set(setting) {
            problems.push(format!(
                "{}:{}:{}: {}",
                name.display(),
                n + 1,
                indent + r.at + 1,
                r.message
            ));
        }
    }
    (options, problems)
}

/// The options of `keel.*` words of a kernel command line; every bad word as
/// `NAME:1:COL: message`.
pub fn parse_cmdline(name: &Path, cmdline: &str) -> (Options, Vec<String>) {
    let mut options = Options::default();
    let mut problems = Vec::new();
    let mut col = 0;
    for word in cmdline.split(' ') {
        let start = col;
        col += word.len() + 1;
        let Some(setting) = word.trim_end_matches('\n').strip_prefix("keel.") else {
            continue;
        };
        let key = setting.split('=').next().unwrap_or_default();
        if NOT_OURS.contains(&key) {
            continue;
        }
        if let Err(r) = options.set(setting) {
            problems.push(format!(
                "{}:1:{}: {}",
                name.display(),
                start + "keel.".len() + r.at + 1,
                r.message
            ));
        }
    }
    (options, problems)
}

/// The options from the file at `path` (none if it does not exist) and, when
/// `machine`, from /proc/cmdline (elsewhere that is the host's, not for this
/// keel), the kernel words winning; with every problem found.
pub fn from_outside(path: &Path, machine: bool) -> (Options, Vec<String>) {
    let mut problems = Vec::new();
    let file = match std::fs::read_to_string(path) {
        Ok(text) => {
            let (options, found) = parse_file(path, &text);
            problems.extend(found);
            options
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Options::default(),
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            Options::default()
        }
    };
    let cmdline_path = Path::new("/proc/cmdline");
    let kernel = match std::fs::read_to_string(cmdline_path) {
        Ok(text) if machine => {
            let (options, found) = parse_cmdline(cmdline_path, &text);
            problems.extend(found);
            options
        }
        _ => Options::default(),
    };
    (kernel.or(file), problems)
}

/// Why a size is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("unknown unit {0:?} (expected K, M or G)")]
    Unit(char),
    #[error("not a size: {0:?}")]
    NotASize(String),
    #[error("too large: {0}")]
    TooLarge(String),
}

/// `4096`, `64K`, `16M`, `1G`.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(SizeError::Unit(unit)),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotASize(text.to_string()))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_every_option_by_its_long_name() {
        let text = "# keel\n\nconfdir=/etc/init\nsocket=/run/k/control\nnotify-socket=@keel-notify\n  logdir = /var/log/k\nlog-size=64K\nlog-keep=5\ncgroup-root=none\n";
        let (options, problems) = parse_file(Path::new("s.conf"), text);
        // `logdir = /var/log/k` has spaces around `=`: the key is "logdir ".
        assert_eq!(
            problems,
            [
                r#"s.conf:6:3: unknown option "logdir " (known: confdir, socket, notify-socket, logdir, log-size, log-keep, cgroup-root)"#
            ]
        );
        assert_eq!(
            options,
            Options {
                confdir: Some("/etc/init".into()),
                socket: Some("/run/k/control".into()),
                notify_socket: Some("@keel-notify".into()),
                logdir: None,
                log_size: Some(64 << 10),
                log_keep: Some(5),
                cgroup_root: Some("none".into()),
            }
        );
    }

    #[test]
    fn bad_lines_are_reported_where_they_are_and_the_rest_still_counts() {
        let text = "log-size=12Q\nlogdir\nlog-keep=-1\nfrob=1\nconfdir=\nlogdir=/l\n";
        let (options, problems) = parse_file(Path::new("/etc/keel/supervisor.conf"), text);
        assert_eq!(
            problems,
            [
                "/etc/keel/supervisor.conf:1:10: unknown unit 'Q' (expected K, M or G)",
                "/etc/keel/supervisor.conf:2:1: expected KEY=VALUE, found \"logdir\"",
                "/etc/keel/supervisor.conf:3:10: log-keep: not a count: \"-1\"",
                "/etc/keel/supervisor.conf:4:1: unknown option \"frob\" (known: confdir, socket, notify-socket, logdir, log-size, log-keep, cgroup-root)",
                "/etc/keel/supervisor.conf:5:9: confdir: empty value",
            ]
        );
        assert_eq!(
            options,
            Options {
                logdir: Some("/l".into()),
                ..Options::default()
            }
        );
    }

    #[test]
    fn kernel_words_set_options_and_leave_init_s_words_and_others_alone() {
        let cmdline = "BOOT_IMAGE=/vmlinuz root=/dev/vda keel.supervisor=/x keel.logdir=/run/log keel.shutdown=/y keel.log-size=1M quiet keel.bogus=2 keel.log-keep=x keel.shutdown-timeout=3\n";
        let (options, problems) = parse_cmdline(Path::new("/proc/cmdline"), cmdline);
        assert_eq!(
            options,
            Options {
                logdir: Some("/run/log".into()),
                log_size: Some(1 << 20),
                ..Options::default()
            }
        );
        assert_eq!(
            problems,
            [
                "/proc/cmdline:1:120: unknown option \"bogus\" (known: confdir, socket, notify-socket, logdir, log-size, log-keep, cgroup-root)",
                "/proc/cmdline:1:142: log-keep: not a count: \"x\"",
            ]
        );
        // Columns count from 1: the key, and the value.
        assert_eq!(&cmdline[119..124], "bogus");
        assert_eq!(&cmdline[141..142], "x");
    }

    #[test]
    fn the_stronger_source_wins_option_by_option() {
        let command_line = Options {
            logdir: Some("/cli".into()),
            ..Options::default()
        };
        let kernel = Options {
            logdir: Some("/kernel".into()),
            log_keep: Some(7),
            ..Options::default()
        };
        let file = Options {
            logdir: Some("/file".into()),
            log_keep: Some(9),
            log_size: Some(5),
            ..Options::default()
        };
        let all = command_line.or(kernel.or(file));
        assert_eq!(all.logdir, Some("/cli".into()));
        assert_eq!(all.log_keep, Some(7));
        assert_eq!(all.log_size, Some(5));
        assert_eq!(all.confdir, None, "left to the built-in default");
    }

    #[test]
    fn a_missing_file_sets_nothing_and_says_nothing() {
        let (options, problems) = from_outside(Path::new("/nonexistent/keel.conf"), false);
        assert_eq!(options, Options::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("99999999999G").is_err());
        assert!(parse_size("M").is_err());
    }
}
