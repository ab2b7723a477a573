//! Tokenising job-file text the way Upstart's config reader (libnih) does.
//!
//! This module owns the low-level rules: what whitespace is (space, tab, CR), that
//! `#` starts a comment outside quotes, that `"…"` and `'…'` quote (across lines),
//! that a backslash before a newline continues the line, how a `script` block
//! ends, and how much indentation a block loses. Stanza meaning lives in `parse`.
//!
//! It works on bytes: every delimiter is ASCII, so no cut ever splits a UTF-8
//! character, and tokens are rebuilt from whole characters only.
//!
//! One deliberate difference from libnih: there, whitespace before a backslash
//! that escapes an ordinary character is overwritten by the backslash
//! (`echo \$HOME` becomes `echo\\$HOME`). Here the text is kept as written.

/// A problem found while reading the text, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub pos: usize,
    pub message: String,
}

impl Problem {
    pub fn new(pos: usize, message: impl Into<String>) -> Self {
        Problem {
            pos,
            message: message.into(),
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub text: String,
    pub start: usize,
}

/// Which characters end a token (outside quotes and escapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delim {
    /// Whitespace, `#` or newline: an argument or a keyword.
    Word,
    /// As `Word`, and also `(` and `)`: an operand of an event expression.
    Operand,
    /// `#` or newline only: the rest of the line (an `exec` command).
    Line,
}

impl Delim {
    fn stops_at(self, byte: u8) -> bool {
        match self {
            Delim::Word => matches!(byte, b'#' | b'\n') || is_blank(byte),
            Delim::Operand => matches!(byte, b'#' | b'\n' | b'(' | b')') || is_blank(byte),
            Delim::Line => matches!(byte, b'#' | b'\n'),
        }
    }
}

/// libnih's whitespace: space, tab, carriage return (never newline).
pub(super) fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r')
}

#[derive(Debug, Clone)]
pub(super) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str) -> Self {
        Lexer {
            src: text.as_bytes(),
            pos: 0,
        }
    }

    /// The same text from another position (to rescan a line).
    pub fn at(&self, pos: usize) -> Lexer<'a> {
        Lexer {
            src: self.src,
            pos: pos.min(self.src.len()),
        }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Steps over one byte; only called on an ASCII byte just peeked.
    pub fn bump(&mut self) {
        if self.pos < self.src.len() {
            self.pos += 1;
        }
    }

    /// True if a token starts here: not the end, a comment or a newline.
    pub fn has_token(&self) -> bool {
        matches!(self.peek(), Some(byte) if byte != b'#' && byte != b'\n')
    }

    /// Skips blanks only (the start of a stanza line).
    pub fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(byte) if is_blank(byte)) {
            self.pos += 1;
        }
    }

    /// Skips blanks and backslash-newline continuations (between tokens).
    pub fn skip_whitespace(&mut self) {
        loop {
            match self.peek() {
                Some(byte) if is_blank(byte) => self.pos += 1,
                Some(b'\\') if self.src.get(self.pos + 1) == Some(&b'\n') => self.pos += 2,
                _ => return,
            }
        }
    }

    /// Moves past the end of the current line, whatever is on it.
    pub fn next_line(&mut self) {
        match self.src[self.pos.min(self.src.len())..]
            .iter()
            .position(|&byte| byte == b'\n')
        {
            Some(offset) => self.pos += offset + 1,
            None => self.pos = self.src.len(),
        }
    }

    /// The token that starts here (possibly empty), then the whitespace after it.
    /// `dequote` removes quotes and the backslash of `\\` and `\<blank>`, as
    /// libnih does for arguments; commands and keywords keep them.
    ///
    /// Inside a token, a quoted or escaped newline and the blanks around it
    /// become one space; blanks at the end are dropped.
    pub fn token(&mut self, delim: Delim, dequote: bool) -> Result<Token, Problem> {
        let start = self.pos;
        let mut out: Vec<u8> = Vec::new();
        // Blanks seen but not yet copied: they are dropped at the end of the
        // token and collapse into one space around a newline.
        let mut blanks_from: Option<usize> = None;
        let mut newline_pending = false;
        let mut quote: Option<(u8, usize)> = None;
        let mut backslash_at: Option<usize> = None;
        let mut p = start;

        while p < self.src.len() {
            let byte = self.src[p];
            if let Some(slash) = backslash_at.take() {
                if byte == b'\n' {
                    newline_pending = true;
                } else {
                    flush_blanks(
                        &mut out,
                        self.src,
                        &mut blanks_from,
                        &mut newline_pending,
                        slash,
                    );
                    let drop_slash = dequote && (byte == b'\\' || is_blank(byte));
                    if !drop_slash {
                        out.push(b'\\');
                    }
                    out.push(byte);
                }
                p += 1;
                continue;
            }
            if byte == b'\\' {
                backslash_at = Some(p);
                p += 1;
                continue;
            }
            if let Some((open, _)) = quote {
                if byte == b'\n' {
                    newline_pending = true;
                } else if is_blank(byte) {
                    blanks_from.get_or_insert(p);
                } else {
                    flush_blanks(
                        &mut out,
                        self.src,
                        &mut blanks_from,
                        &mut newline_pending,
                        p,
                    );
                    if byte == open {
                        quote = None;
                        if !dequote {
                            out.push(byte);
                        }
                    } else {
                        out.push(byte);
                    }
                }
                p += 1;
                continue;
            }
            if byte == b'"' || byte == b'\'' {
                flush_blanks(
                    &mut out,
                    self.src,
                    &mut blanks_from,
                    &mut newline_pending,
                    p,
                );
                quote = Some((byte, p));
                if !dequote {
                    out.push(byte);
                }
            } else if delim.stops_at(byte) {
                break;
            } else if is_blank(byte) {
                blanks_from.get_or_insert(p);
            } else {
                flush_blanks(
                    &mut out,
                    self.src,
                    &mut blanks_from,
                    &mut newline_pending,
                    p,
                );
                out.push(byte);
            }
            p += 1;
        }

        if let Some(slash) = backslash_at {
            self.pos = self.src.len();
            return Err(Problem::new(slash, "backslash at the end of the file"));
        }
        if let Some((_, open_at)) = quote {
            self.pos = self.src.len();
            return Err(Problem::new(open_at, "unterminated quoted string"));
        }
        self.pos = p;
        self.skip_whitespace();
        Ok(Token {
            text: String::from_utf8_lossy(&out).into_owned(),
            start,
        })
    }

    /// If the line starting here is `end script` (blanks around, a comment
    /// allowed after), returns the offset just past it.
    fn block_end_after(&self, line_start: usize) -> Option<usize> {
        let rest = &self.src[line_start.min(self.src.len())..];
        let mut i = rest.iter().take_while(|&&b| is_blank(b)).count();
        // libnih wants a blank right after `end`: `end script` at the very end
        // of the file without a newline still counts, `endscript` does not.
        if !rest[i..].starts_with(b"end") || !rest.get(i + 3).is_some_and(|&b| is_blank(b)) {
            return None;
        }
        i += 3;
        i += rest[i..].iter().take_while(|&&b| is_blank(b)).count();
        if !rest[i..].starts_with(b"script") {
            return None;
        }
        i += "script".len();
        i += rest[i..].iter().take_while(|&&b| is_blank(b)).count();
        if rest.get(i) == Some(&b'#') {
            i += rest[i..].iter().take_while(|&&b| b != b'\n').count();
        }
        match rest.get(i) {
            None => Some(line_start + i),
            Some(b'\n') => Some(line_start + i + 1),
            Some(_) => None,
        }
    }

    /// Reads a `script` block from here (the line after the opening stanza) up
    /// to its `end script` line, and moves past that line. The indentation
    /// the first line starts with is removed from every line, as far as each
    /// line repeats it exactly (libnih's rule: a line with less, even an
    /// empty one, shrinks it for all). `None` if no `end script` line comes;
    /// the position is then the end of the file.
    pub fn block(&mut self) -> Option<String> {
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let mut indent: Option<&[u8]> = None;
        let mut strip = 0usize;
        let mut p = self.pos;
        loop {
            if let Some(after) = self.block_end_after(p) {
                self.pos = after;
                break;
            }
            let Some(newline) = self.src[p..].iter().position(|&b| b == b'\n') else {
                self.pos = self.src.len();
                return None;
            };
            let line = &self.src[p..p + newline];
            match indent {
                None => {
                    strip = line.iter().take_while(|&&b| is_blank(b)).count();
                    indent = Some(&line[..strip]);
                }
                Some(first) => {
                    let same = first
                        .iter()
                        .zip(line.iter())
                        .take_while(|(a, b)| a == b)
                        .count();
                    strip = strip.min(same);
                }
            }
            lines.push((p, p + newline + 1));
            p += newline + 1;
        }
        let mut body = Vec::new();
        for (from, to) in lines {
            body.extend_from_slice(&self.src[from + strip..to]);
        }
        Some(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Copies pending blanks before the next character: as they are, or as a
/// single space if a newline was among them.
fn flush_blanks(
    out: &mut Vec<u8>,
    src: &[u8],
    blanks_from: &mut Option<usize>,
    newline_pending: &mut bool,
    upto: usize,
) {
    if std::mem::take(newline_pending) {
        out.push(b' ');
    } else if let Some(from) = *blanks_from {
        out.extend(src[from..upto].iter().filter(|&&b| is_blank(b)));
    }
    *blanks_from = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, delim: Delim, dequote: bool) -> Result<(String, usize), Problem> {
        let mut lexer = Lexer::new(text);
        lexer.token(delim, dequote).map(|t| (t.text, lexer.pos()))
    }

    // Expected values were checked against libnih 1.0.3's nih_config_token.
    #[test]
    fn tokens_split_on_blanks_and_stop_at_comments() {
        assert_eq!(
            tok("foo bar", Delim::Word, true).unwrap(),
            ("foo".into(), 4)
        );
        assert_eq!(tok("foo#x", Delim::Word, true).unwrap(), ("foo".into(), 3));
        assert_eq!(
            tok("foo\nbar", Delim::Word, true).unwrap(),
            ("foo".into(), 3)
        );
        assert_eq!(tok("a(b", Delim::Operand, true).unwrap(), ("a".into(), 1));
        assert_eq!(tok("a(b", Delim::Word, true).unwrap(), ("a(b".into(), 3));
    }

    #[test]
    fn quotes_group_and_are_removed_only_when_dequoting() {
        assert_eq!(tok("\"a b\" c", Delim::Word, true).unwrap().0, "a b");
        assert_eq!(tok("\"a b\" c", Delim::Word, false).unwrap().0, "\"a b\"");
        assert_eq!(tok("x'#'y", Delim::Word, true).unwrap().0, "x#y");
        assert_eq!(tok("\"\" x", Delim::Word, true).unwrap().0, "");
        assert_eq!(tok("'a \"b' c", Delim::Word, true).unwrap().0, "a \"b");
    }

    #[test]
    fn newlines_inside_quotes_collapse_to_one_space() {
        assert_eq!(tok("\"a  \n   b\"", Delim::Word, true).unwrap().0, "a b");
        assert_eq!(
            tok("a \"b  c\" \\\n   d   ", Delim::Line, false).unwrap().0,
            "a \"b  c\" d"
        );
    }

    #[test]
    fn backslashes_follow_libnih() {
        assert_eq!(
            tok("a\\ b\\\\c\\\"d", Delim::Word, true).unwrap().0,
            "a b\\c\\\"d"
        );
        assert_eq!(
            tok("a\\ b\\\\c", Delim::Word, false).unwrap().0,
            "a\\ b\\\\c"
        );
        assert_eq!(tok("foo\\\nbar x", Delim::Word, true).unwrap().0, "foo bar");
        // libnih would give `echo\\$HOME`; keel keeps the blank.
        assert_eq!(
            tok("echo \\$HOME", Delim::Line, false).unwrap().0,
            "echo \\$HOME"
        );
        assert_eq!(
            tok("echo \\# x", Delim::Line, false).unwrap().0,
            "echo \\# x"
        );
    }

    #[test]
    fn trailing_blanks_are_dropped_inner_blanks_kept() {
        assert_eq!(
            tok("a \t b   # c", Delim::Line, false).unwrap(),
            ("a \t b".into(), 8)
        );
        assert_eq!(tok("\"a \"", Delim::Word, true).unwrap().0, "a ");
    }

    #[test]
    fn unterminated_quote_and_trailing_backslash_are_errors() {
        let err = tok("x \"abc\n\n", Delim::Line, false).unwrap_err();
        assert_eq!(err.pos, 2);
        assert_eq!(err.message, "unterminated quoted string");
        let err = tok("abc\\", Delim::Line, false).unwrap_err();
        assert_eq!(err.pos, 3);
    }

    #[test]
    fn whitespace_skipping_follows_continuations() {
        let mut lexer = Lexer::new("a \\\n  b");
        lexer.token(Delim::Word, true).unwrap();
        assert_eq!(lexer.pos(), 6);
        assert!(lexer.has_token());
    }

    fn block(text: &str) -> (Option<String>, usize) {
        let mut lexer = Lexer::new(text);
        let body = lexer.block();
        (body, lexer.pos())
    }

    #[test]
    fn blocks_end_at_an_end_script_line() {
        assert_eq!(block("  a\n  b\nend script\nx").0.unwrap(), "a\nb\n");
        assert_eq!(block("  a\n  end script # done\nx").0.unwrap(), "a\n");
        assert_eq!(block("end script").0.unwrap(), "");
        assert_eq!(block("end\tscript\n"), (Some(String::new()), 11));
        assert_eq!(
            block("echo end script\nend script\n").0.unwrap(),
            "echo end script\n"
        );
        assert_eq!(
            block("end script x\nend scriptx\nendscript\nend script\n")
                .0
                .unwrap(),
            "end script x\nend scriptx\nendscript\n"
        );
    }

    #[test]
    fn block_indentation_is_removed_as_libnih_does() {
        assert_eq!(
            block("\t\ta\n\t\t  b\n\tc\nend script\n").0.unwrap(),
            "\ta\n\t  b\nc\n"
        );
        // An empty line shares no indentation, so none is removed.
        assert_eq!(block("  a\n\n  b\nend script\n").0.unwrap(), "  a\n\n  b\n");
        // Tabs and spaces are different characters.
        assert_eq!(block("\ta\n  b\nend script\n").0.unwrap(), "\ta\n  b\n");
    }

    #[test]
    fn unterminated_blocks_run_to_the_end() {
        assert_eq!(block("a\nb\n"), (None, 4));
        assert_eq!(block("a\nend script x"), (None, 14));
        assert_eq!(block(""), (None, 0));
    }
}
