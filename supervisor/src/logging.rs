//! The supervisor's log: tracing to stderr (the console under keel-init), with a
//! priority that `initctl log-priority` changes at run time.

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

pub fn init(debug: bool) {
    if debug {
        PRIORITY.store(0, Ordering::Relaxed);
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            let (_, max) = PRIORITIES[usize::from(PRIORITY.load(Ordering::Relaxed))];
            *meta.level() <= max
        }));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The current priority's name.
pub fn priority() -> &'static str {
    PRIORITIES[usize::from(PRIORITY.load(Ordering::Relaxed))].0
}

pub fn set_priority(name: &str) -> Result<(), String> {
    let i = PRIORITIES
        .iter()
        .position(|(n, _)| *n == name)
        .ok_or_else(|| {
            format!("unknown priority: {name} (debug, info, message, warn, error, fatal)")
        })?;
    PRIORITY.store(i as u8, Ordering::Relaxed);
    Ok(())
}
