//! The job-file parser on arbitrary text: it never panics, and every diagnostic
//! points at a line of the text (or just past its end). The glob matcher of
//! event arguments takes the text's two halves as pattern and subject.
#![no_main]

use keel_supervisor::job;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = job::parse("fuzz", text);
    let lines = text.split('\n').count();
    for d in &parsed.diagnostics {
        let line = d.line as usize;
        assert!(
            line >= 1 && line <= lines + 1,
            "{d:?} outside {lines} lines"
        );
    }
    // Any text as a glob and as what it is matched against: never a panic.
    if let Some((pattern, subject)) = text.split_at_checked(text.len() / 2) {
        let _ = keel_supervisor::glob::glob(pattern, subject);
    }
});
