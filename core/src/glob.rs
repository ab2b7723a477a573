//! Upstart's globs: fnmatch(3) with no flags, as Upstart calls it for every
//! event argument (`init/event_operator.c`) and the file bridge for its paths.
//! Pure; used by the event expressions ([`crate::events`]) and the file events
//! ([`crate::job::file`]).

/// fnmatch(3) with no flags, as Upstart calls it (`fnmatch (expoval, eval, 0)`
/// in init/event_operator.c), and as glibc reads a pattern: `*`, `?`, `\x`
/// (a trailing `\` never matches), bracket expressions `[abc]`, `[a-z]`, `[!x]`
/// and `[^x]`, `]` first as a member, `\` escapes inside them, the classes
/// `[:alpha:]` … (an unknown class name never matches), `[=x=]` and `[.x.]`; an
/// unclosed `[` is a literal `[` — unless a member matched first, or it ends in
/// `\` or in a range, which never match (glibc's rules, tested against libc's
/// fnmatch). Characters, not bytes, as in a UTF-8 locale; ranges and classes are
/// the C locale's on ASCII. Nothing is allocated, and a pattern without any of
/// `*?[\` is compared with `==`.
pub fn glob(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?', '[', '\\']) {
        return pattern == text;
    }
    // Positions are byte offsets at character boundaries.
    let at = |s: &str, i: usize| s[i..].chars().next();
    // Iterative with one backtrack point for `*`: linear in practice, never recursive.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(t) = at(text, ti) {
        let tn = ti + t.len_utf8();
        if at(pattern, pi) == Some('*') {
            star = Some((pi, ti));
            pi += 1;
            continue;
        }
        if let Some(len) = element(&pattern[pi..], t) {
            (pi, ti) = (pi + len, tn);
            continue;
        }
        match star {
            Some((sp, st)) => {
                // The star takes one more character of the text.
                let taken = st + at(text, st).map_or(1, char::len_utf8);
                pi = sp + 1;
                ti = taken;
                star = Some((sp, taken));
            }
            None => return false,
        }
    }
    pattern[pi..].chars().all(|c| c == '*')
}

/// Whether the pattern element at the start of `p` (not `*`) matches `t`: its
/// length in bytes if so.
fn element(p: &str, t: char) -> Option<usize> {
    let mut chars = p.chars();
    match chars.next()? {
        '?' => Some(1),
        '\\' => {
            let c = chars.next()?;
            (c == t).then_some(1 + c.len_utf8())
        }
        '[' => match bracket(p, t) {
            Bracket::Match(len) => Some(len),
            Bracket::Literal => (t == '[').then_some(1),
            Bracket::NoMatch | Bracket::Invalid => None,
        },
        c => (c == t).then_some(c.len_utf8()),
    }
}

/// What a bracket expression does with one character of the text.
enum Bracket {
    /// It matches; the expression is this many bytes long.
    Match(usize),
    NoMatch,
    /// Unclosed, with no member matched: the `[` is an ordinary character.
    Literal,
    /// Ill-formed where glibc gives up: no match here.
    Invalid,
}

/// A cursor over a pattern's characters.
#[derive(Clone)]
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.at..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.s[self.at..].chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    /// After `[:`, `[=` or `[.`: the text up to the closing `:]`, `=]` or `.]`
    /// (the cursor then after it); `None` (the cursor anywhere) if there is none.
    fn delimited(&mut self, close: char) -> Option<&str> {
        let start = self.at;
        loop {
            let end = self.at;
            match self.bump()? {
                c if c == close && self.peek() == Some(']') => {
                    self.bump();
                    return Some(&self.s[start..end]);
                }
                _ => {}
            }
        }
    }
}

/// The bracket expression at the start of `p` (which begins with `[`) against
/// `t`, read as glibc's fnmatch reads it.
fn bracket(p: &str, t: char) -> Bracket {
    let mut cur = Cursor { s: p, at: 1 };
    let negate = matches!(cur.peek(), Some('!' | '^'));
    if negate {
        cur.bump();
    }
    let mut c = cur.bump();
    let matched = loop {
        let Some(member) = c else {
            return Bracket::Literal;
        };
        // The member's character, when it may start a range. After a
        // collating symbol, `-]` still reads as a range (to fail there).
        let mut symbol = false;
        let low = match member {
            '\\' => match cur.bump() {
                Some(e) => e,
                None => return Bracket::Invalid,
            },
            '[' if cur.peek() == Some(':') => {
                let back = cur.clone();
                cur.bump();
                match class_name(&mut cur) {
                    Some(name) => match class(name, t) {
                        Some(true) => break true,
                        Some(false) => {
                            c = cur.bump();
                            if c == Some(']') {
                                break false;
                            }
                            continue;
                        }
                        None => return Bracket::Invalid,
                    },
                    None => {
                        cur = back;
                        '['
                    }
                }
            }
            '[' if cur.peek() == Some('=') => {
                let back = cur.clone();
                cur.bump();
                match (cur.bump(), cur.bump(), cur.peek()) {
                    (Some(x), Some('='), Some(']')) => {
                        cur.bump();
                        if x == t {
                            break true;
                        }
                        c = cur.bump();
                        if c == Some(']') {
                            break false;
                        }
                        continue;
                    }
                    _ => {
                        cur = back;
                        '['
                    }
                }
            }
            '[' if cur.peek() == Some('.') => {
                cur.bump();
                symbol = true;
                match collating_symbol(&mut cur) {
                    Some(x) => x,
                    None => return Bracket::Invalid,
                }
            }
            other => other,
        };
        let is_range = cur.peek() == Some('-')
            && match cur.peek2() {
                None => false,
                Some(']') => symbol,
                Some(_) => true,
            };
        if !is_range && low == t {
            break true;
        }
        c = cur.bump();
        if c == Some('-') && cur.peek() != Some(']') {
            let high = match cur.bump() {
                Some('[') if cur.peek() == Some('.') => {
                    cur.bump();
                    collating_symbol(&mut cur)
                }
                Some('\\') => cur.bump(),
                other => other,
            };
            let Some(high) = high else {
                return Bracket::Invalid;
            };
            if low <= t && t <= high {
                break true;
            }
            c = cur.bump();
        }
        if c == Some(']') {
            break false;
        }
    };
    if matched {
        // The rest of the expression is skipped, as glibc skips it.
        if !skip_to_close(&mut cur) {
            return Bracket::Invalid;
        }
    }
    if matched != negate {
        Bracket::Match(cur.at)
    } else {
        Bracket::NoMatch
    }
}

/// After `[:`: a class name up to `:]` (letters `a`…`y`: glibc stops before
/// `z`), the cursor after it; `None` (the cursor anywhere) if this is no class
/// name but a plain `[`.
fn class_name<'a>(cur: &mut Cursor<'a>) -> Option<&'a str> {
    let start = cur.at;
    loop {
        let end = cur.at;
        let c = cur.bump()?;
        if c == ':' && cur.peek() == Some(']') {
            cur.bump();
            return Some(&cur.s[start..end]);
        }
        if !('a'..='y').contains(&c) {
            return None;
        }
    }
}

/// Whether `t` is in class `name`; `None` for an unknown class.
fn class(name: &str, t: char) -> Option<bool> {
    let alnum = t.is_alphanumeric();
    let graph = !t.is_control() && !t.is_whitespace();
    Some(match name {
        "alnum" => alnum,
        "alpha" => t.is_alphabetic(),
        "blank" => t == ' ' || t == '\t',
        "cntrl" => t.is_control(),
        "digit" => t.is_ascii_digit(),
        "graph" => graph,
        "lower" => t.is_lowercase(),
        "print" => graph || t == ' ',
        "punct" => graph && !alnum,
        "space" => t.is_whitespace(),
        "upper" => t.is_uppercase(),
        "xdigit" => t.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// After `[.`: a one-character collating symbol up to `.]` (the C locale
/// knows no longer names); `None` if ill-formed.
fn collating_symbol(cur: &mut Cursor<'_>) -> Option<char> {
    let mut name = cur.delimited('.')?.chars();
    let c = name.next()?;
    name.next().is_none().then_some(c)
}

/// After a member that matched: past the closing `]`, as glibc skips (escapes,
/// `[:…:]`, `[=x=]`, `[.….]`); false if the expression never closes or is
/// ill-formed on the way.
fn skip_to_close(cur: &mut Cursor<'_>) -> bool {
    loop {
        match cur.bump() {
            None => return false,
            Some(']') => return true,
            Some('\\') => {
                if cur.bump().is_none() {
                    return false;
                }
            }
            Some('[') if cur.peek() == Some(':') => {
                let back = cur.clone();
                cur.bump();
                if class_name(cur).is_none() {
                    *cur = back;
                }
            }
            Some('[') if cur.peek() == Some('=') => {
                cur.bump();
                if !matches!(
                    (cur.bump(), cur.bump(), cur.bump()),
                    (Some(_), Some('='), Some(']'))
                ) {
                    return false;
                }
            }
            Some('[') if cur.peek() == Some('.') => {
                cur.bump();
                if cur.delimited('.').is_none() {
                    return false;
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("runlevel", "runlevel"));
        assert!(glob("[2345]", "3"));
        assert!(!glob("[2345]", "1"));
        assert!(glob("[!016]", "2"));
        assert!(!glob("[!016]", "0"));
        assert!(glob("tty*", "ttyS0"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("\\*", "*"));
        assert!(glob("[", "["));
        // Characters, not bytes; ranges, a literal `]` first and `-` last.
        assert!(glob("t?y", "téy"));
        assert!(glob("*é*", "caféine"));
        assert!(!glob("*é", "cafe"));
        assert!(glob("[à-ü]", "é"));
        assert!(glob("[]a]", "]"));
        assert!(glob("[a-]", "-"));
        assert!(!glob("[a-]", "b"));
        assert!(glob("x[!é]y", "xay"));
        assert!(!glob("x[!é]y", "xéy"));
        assert!(glob("a\\é", "aé"));
        assert!(glob("**a*", "bba"));
        assert!(!glob("eth0", "eth1"));
    }
}
