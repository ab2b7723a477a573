//! The supervisor's log: tracing, with a priority that `initctl log-priority`
//! changes at run time. Serving the machine's init, lines go to the kernel log
//! (/dev/kmsg, each with the `<N>` priority of its level, as `keel-supervisor:
//! ...`; `dmesg` has them and the console shows them as the kernel's log level
//! says), to stderr until /dev is there; otherwise to stderr (the console of
//! keel-init, a terminal), each with its time.
//!
//! It also words what the log says of jobs ([`job_change`]): each start (and
//! readiness), stop and failure with its reason at info level, failures at warn;
//! respawns come from the core (`Effect::Info`).

use crate::job::Expect;
use crate::lifecycle::{Event, Jobs, shown_instance};
use std::sync::atomic::{AtomicU8, Ordering};
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Upstart's priority names, most verbose first, and the tracing level of each.
const PRIORITIES: [(&str, Level); 6] = [
    ("debug", Level::DEBUG),
    ("info", Level::INFO),
    ("message", Level::INFO),
    ("warn", Level::WARN),
    ("error", Level::ERROR),
    ("fatal", Level::ERROR),
];

/// Index into `PRIORITIES` of the current priority.
static PRIORITY: AtomicU8 = AtomicU8::new(1);

pub fn init(debug: bool, machine: bool) {
    if debug {
        PRIORITY.store(0, Ordering::Relaxed);
    }
    let filter = || {
        tracing_subscriber::filter::filter_fn(|meta| {
            let (_, max) = PRIORITIES[usize::from(PRIORITY.load(Ordering::Relaxed))];
            *meta.level() <= max
        })
    };
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    if machine {
        // The kernel log stamps each line itself.
        let layer = fmt
            .with_writer(Kmsg)
            .without_time()
            .with_level(false)
            .with_ansi(false)
            .with_filter(filter());
        let _ = tracing_subscriber::registry().with(layer).try_init();
    } else {
        let layer = fmt
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter());
        let _ = tracing_subscriber::registry().with(layer).try_init();
    }
}

/// /dev/kmsg, opened on first use (and tried again while /dev is not mounted).
static KMSG: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Writes each event as one kernel log record: `<N>keel-supervisor: TEXT`.
struct Kmsg;

/// One event's line, written out whole when dropped.
struct KmsgLine {
    priority: u8,
    text: Vec<u8>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Kmsg {
    type Writer = KmsgLine;

    fn make_writer(&'a self) -> KmsgLine {
        KmsgLine::new(6)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> KmsgLine {
        KmsgLine::new(kernel_priority(*meta.level()))
    }
}

/// syslog's priorities, as /dev/kmsg takes them.
fn kernel_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl KmsgLine {
    fn new(priority: u8) -> KmsgLine {
        KmsgLine {
            priority,
            text: Vec::new(),
        }
    }

    /// The record as /dev/kmsg takes it (one record per write; a newline ends it).
    fn record(&self) -> Vec<u8> {
        let text = self.text.strip_suffix(b"\n").unwrap_or(&self.text);
        let mut record = format!("<{}>keel-supervisor: ", self.priority).into_bytes();
        record.extend(text.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        record.push(b'\n');
        record
    }
}

impl std::io::Write for KmsgLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for KmsgLine {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let record = self.record();
        let mut kmsg = KMSG.lock().unwrap_or_else(|e| e.into_inner());
        if kmsg.is_none() {
            *kmsg = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .ok();
        }
        let written = kmsg
            .as_mut()
            .is_some_and(|f| std::io::Write::write_all(f, &record).is_ok());
        if !written {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &record[3..]);
        }
    }
}

/// What keel's log says of a job event, and at which level: `started` (with
/// `ready` for a job whose `expect` was met), `stopped`, or `failed` and why
/// (the respawn limit among the reasons); `None` for any other event. The
/// instance is looked up in `jobs` as it is now (it may be gone).
pub fn job_change(event: &Event, jobs: &Jobs) -> Option<(Level, String)> {
    let var = |key: &str| event.var(key);
    let (job, instance) = (var("JOB")?, var("INSTANCE").unwrap_or(""));
    let inst = jobs.instance(job, instance);
    let shown = shown_instance(job, instance);
    match event.name.as_str() {
        "started" => {
            let ready = inst.is_some_and(|i| i.def().expect != Expect::None);
            let main = inst.and_then(|i| i.pid(crate::job::ProcessKind::Main));
            let pid = main.map(|p| format!(", process {p}")).unwrap_or_default();
            let what = if ready { "started (ready)" } else { "started" };
            Some((Level::INFO, format!("{shown} {what}{pid}")))
        }
        "stopped" if var("RESULT") == Some("failed") => {
            let why = match (inst.and_then(|i| i.failure()), var("PROCESS")) {
                (Some(f), _) => f.reason.clone(),
                (None, Some("respawn")) => "respawning too fast, stopped".to_string(),
                (None, process) => {
                    let process = process.unwrap_or("main");
                    match (var("EXIT_STATUS"), var("EXIT_SIGNAL")) {
                        (Some(c), _) => format!("{process} process terminated with status {c}"),
                        (_, Some(s)) => format!("{process} process killed by {s} signal"),
                        _ => format!("{process} process failed"),
                    }
                }
            };
            Some((Level::WARN, format!("{shown} failed: {why}")))
        }
        "stopped" => Some((Level::INFO, format!("{shown} stopped"))),
        _ => None,
    }
}

/// The current priority's name.
pub fn priority() -> &'static str {
    PRIORITIES[usize::from(PRIORITY.load(Ordering::Relaxed))].0
}

/// A log priority keel does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority: {0} (debug, info, message, warn, error, fatal)")]
pub struct UnknownPriority(pub String);

/// Sets the priority named `name` (initctl log-priority's words).
pub fn set_priority(name: &str) -> Result<(), UnknownPriority> {
    let i = PRIORITIES
        .iter()
        .position(|(n, _)| *n == name)
        .ok_or_else(|| UnknownPriority(name.to_string()))?;
    PRIORITY.store(i as u8, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_kernel_log_record_has_the_levels_priority_and_is_one_line() {
        let mut line = KmsgLine::new(kernel_priority(Level::WARN));
        line.write_all(b"job web: main process ").unwrap();
        line.write_all(b"killed\nby signal 9\n").unwrap();
        assert_eq!(
            line.record(),
            b"<4>keel-supervisor: job web: main process killed by signal 9\n"
        );
        assert_eq!(kernel_priority(Level::ERROR), 3);
        assert_eq!(kernel_priority(Level::INFO), 6);
        assert_eq!(kernel_priority(Level::DEBUG), 7);
        line.text.clear(); // nothing written on drop
    }

    #[test]
    fn a_job_event_of_an_instance_gone_is_worded_from_its_variables() {
        let jobs = Jobs::default();
        let said = |e: Event| job_change(&e, &jobs);
        let tty = [("JOB", "tty"), ("INSTANCE", "ttyS0")];
        assert_eq!(
            said(Event::new("started", &tty)),
            Some((Level::INFO, "tty (ttyS0) started".into()))
        );
        let failed = |extra: &[(&str, &str)]| {
            let mut env = vec![("JOB", "web"), ("INSTANCE", ""), ("RESULT", "failed")];
            env.extend_from_slice(extra);
            said(Event::new("stopped", &env))
        };
        assert_eq!(
            failed(&[("PROCESS", "pre-start"), ("EXIT_STATUS", "3")]),
            Some((
                Level::WARN,
                "web failed: pre-start process terminated with status 3".into()
            ))
        );
        assert_eq!(
            failed(&[("PROCESS", "main"), ("EXIT_SIGNAL", "SEGV")]),
            Some((
                Level::WARN,
                "web failed: main process killed by SEGV signal".into()
            ))
        );
        assert_eq!(
            failed(&[("PROCESS", "respawn")]),
            Some((
                Level::WARN,
                "web failed: respawning too fast, stopped".into()
            ))
        );
        let ok = [("JOB", "web"), ("INSTANCE", ""), ("RESULT", "ok")];
        assert_eq!(
            said(Event::new("stopped", &ok)),
            Some((Level::INFO, "web stopped".into()))
        );
        // Other events, and events without a job, are not job changes.
        assert_eq!(said(Event::new("starting", &ok)), None);
        assert_eq!(said(Event::new("started", &[])), None);
        assert_eq!(said(Event::new("filesystem", &[])), None);
    }
}
