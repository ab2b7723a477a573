//! keel's Upstart-style globs (`keel_core::glob::glob`) against libc's fnmatch(3)
//! with flags 0, as Upstart called it. This test lives in the supervisor, not beside
//! the glob in keel-core, because it calls libc, which the pure core may not use.

use keel_core::glob::glob;

/// libc's fnmatch(3) with flags 0, as Upstart called it (in the C locale of
/// the test process: bytes, which are characters for the ASCII used here).
fn fnmatch(pattern: &str, text: &str) -> bool {
    let p = std::ffi::CString::new(pattern).expect("no NUL");
    let t = std::ffi::CString::new(text).expect("no NUL");
    // SAFETY: fnmatch(3) reads two NUL-terminated strings that outlive it.
    unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) == 0 }
}

/// What the random patterns are made of: every character fnmatch treats
/// specially, a few ordinary ones, and whole classes and symbols.
const PATTERN_PIECES: &[&str] = &[
    "a",
    "b",
    "z",
    "1",
    "*",
    "?",
    "[",
    "]",
    "!",
    "^",
    "-",
    "\\",
    ":",
    "=",
    ".",
    "[:alpha:]",
    "[:digit:]",
    "[:bogus:]",
    "[:z:]",
    "[=a=]",
    "[.a.]",
    "[.ab.]",
    "[!",
    "[^",
    "\\*",
];
const TEXT_CHARS: &[char] = &[
    'a', 'b', 'z', '1', '*', '?', '[', ']', '!', '^', '-', '\\', ':', '=', '.',
];

#[test]
fn globs_agree_with_fnmatch_on_the_cases_that_once_differed() {
    for (pattern, text) in [
        ("\\*", "\\b]"),
        ("[\\*]", "\\"),
        ("[\\]]", "]"),
        ("a\\", "a\\"),
        ("a\\", "a"),
        ("*\\", "x\\"),
        ("[a", "[a"),
        ("[a", "a"),
        ("*[a", "x[a"),
        ("[ab", "a"),
        ("[a-", "[a-"),
        ("[a\\", "[a\\"),
        ("[!a", "[!a"),
        ("[[:alpha:]]", "b"),
        ("[[:alpha:]]", "1"),
        ("[[:bogus:]]", "b"),
        ("[[:z:]]", "z"),
        ("[[:z:]]", ":"),
        ("[[=a=]]", "a"),
        ("[[.a.]]", "a"),
        ("[[.ab.]]", "a"),
        ("[[.a.]-]", "a"),
        ("[]a]", "]"),
        ("[!]a]", "b"),
        ("[a-]", "-"),
        ("[b-a]", "a"),
        ("*[![:alpha:]", "b"),
    ] {
        assert_eq!(
            glob(pattern, text),
            fnmatch(pattern, text),
            "glob({pattern:?}, {text:?})"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(50_000))]

    /// Random patterns and texts from fnmatch's special characters: keel's
    /// glob says what libc's fnmatch(3) (flags 0) says.
    #[test]
    fn globs_agree_with_fnmatch(
        pieces in proptest::collection::vec(proptest::sample::select(PATTERN_PIECES), 0..8),
        text in proptest::collection::vec(proptest::sample::select(TEXT_CHARS), 0..8),
    ) {
        let pattern: String = pieces.concat();
        let text: String = text.into_iter().collect();
        proptest::prop_assert_eq!(
            glob(&pattern, &text),
            fnmatch(&pattern, &text),
            "glob({:?}, {:?})", pattern, text
        );
    }
}
