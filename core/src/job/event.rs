//! `start on` / `stop on` event expressions, parsed as Upstart 1.13 does.
//!
//! `and` and `or` have the same precedence and group from the left, so
//! `a or b and c` means `(a or b) and c`; parentheses group explicitly and let
//! an expression continue over several lines (comments may end those lines; a
//! line with nothing but a comment or blanks inside parentheses is an error,
//! as in Upstart). The first word of an event is its name, the rest are its
//! arguments: positional values first, then `KEY=VALUE` or `KEY!=VALUE`.
//! Quoting `"and"` makes it an ordinary word.

use super::lexer::{Delim, Lexer, Problem, Token};
use super::{ArgMatch, EventExpr, EventMatch};
use super::{file, socket};

/// Deepest parenthesis nesting accepted (keeps the tree shallow).
pub const MAX_PAREN_DEPTH: usize = 64;
/// Most events one expression may name; the tree's depth is bounded by it.
pub const MAX_EXPRESSION_EVENTS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    And,
    Or,
}

impl Operator {
    fn word(self) -> &'static str {
        match self {
            Operator::And => "and",
            Operator::Or => "or",
        }
    }

    fn join(self, left: EventExpr, right: EventExpr) -> EventExpr {
        match self {
            Operator::And => EventExpr::And(Box::new(left), Box::new(right)),
            Operator::Or => EventExpr::Or(Box::new(left), Box::new(right)),
        }
    }
}

/// An entry of the operator stack (Upstart's algorithm, made explicit).
enum Pending {
    /// An open parenthesis: collecting stops here.
    Group { pos: usize },
    /// An operator waiting for its right operand.
    Operator { operator: Operator, left: EventExpr },
    /// An event still taking arguments.
    Event {
        event: EventMatch,
        pos: usize,
        /// Where each argument starts (for messages about one of them).
        arg_pos: Vec<usize>,
        named_seen: bool,
    },
}

/// Where collecting happens, for the message when an event is missing.
enum Before<'a> {
    Word(&'a str),
    End,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Pending>,
    /// The last collected (complete) expression.
    root: Option<EventExpr>,
    events: usize,
    /// `start on`: a `socket` event must describe a socket keel can bind.
    check_sockets: bool,
}

impl Builder {
    /// Folds the stack down to the innermost open group into `root`.
    fn collect(&mut self, at: usize, before: Before) -> Result<(), Problem> {
        while let Some(top) = self.stack.pop() {
            match top {
                Pending::Group { pos } => {
                    self.stack.push(Pending::Group { pos });
                    break;
                }
                Pending::Operator { operator, left } => {
                    let Some(right) = self.root.take() else {
                        let message = match before {
                            Before::Word(word) => {
                                format!(
                                    "expected event after '{}', found '{word}'",
                                    operator.word()
                                )
                            }
                            Before::End => format!("expected event after '{}'", operator.word()),
                        };
                        return Err(Problem::new(at, message));
                    };
                    self.root = Some(operator.join(left, right));
                }
                Pending::Event {
                    mut event,
                    pos,
                    arg_pos,
                    ..
                } => {
                    // A problem with an argument points at it, else at the event.
                    let located = |(arg, message): socket::SpecError| {
                        let at = arg.and_then(|i| arg_pos.get(i).copied()).unwrap_or(pos);
                        Problem::new(at, message)
                    };
                    if self.check_sockets && event.name == socket::EVENT {
                        socket::SocketSpec::from_event(&event).map_err(located)?;
                        socket::normalize(&mut event);
                    }
                    if event.name == file::EVENT {
                        file::FileSpec::from_event(&event).map_err(located)?;
                    }
                    if self.root.is_some() {
                        return Err(Problem::new(
                            pos,
                            format!("expected operator before '{}'", event.name),
                        ));
                    }
                    self.root = Some(EventExpr::Event(event));
                }
            }
        }
        if self.root.is_none() {
            let message = match before {
                Before::Word(word) => format!("expected event before '{word}'"),
                Before::End => "expected event".to_string(),
            };
            return Err(Problem::new(at, message));
        }
        Ok(())
    }

    fn open(&mut self, pos: usize) -> Result<(), Problem> {
        if self.root.is_some() || matches!(self.stack.last(), Some(Pending::Event { .. })) {
            return Err(Problem::new(pos, "expected operator before '('"));
        }
        self.stack.push(Pending::Group { pos });
        Ok(())
    }

    fn close(&mut self, pos: usize) -> Result<(), Problem> {
        self.collect(pos, Before::Word(")"))?;
        match self.stack.pop() {
            Some(Pending::Group { .. }) => Ok(()),
            _ => Err(Problem::new(pos, "unmatched ')'")),
        }
    }

    fn operator(&mut self, operator: Operator, pos: usize) -> Result<(), Problem> {
        self.collect(pos, Before::Word(operator.word()))?;
        let left = self
            .root
            .take()
            .ok_or_else(|| Problem::new(pos, "expected event"))?;
        self.stack.push(Pending::Operator { operator, left });
        Ok(())
    }

    fn operand(&mut self, token: Token) -> Result<(), Problem> {
        if let Some(Pending::Event {
            event,
            named_seen,
            arg_pos,
            ..
        }) = self.stack.last_mut()
        {
            let named = token.text.contains('=');
            if *named_seen && !named {
                return Err(Problem::new(
                    token.start,
                    format!(
                        "expected KEY=VALUE, found '{}' (positional values come before KEY=VALUE ones)",
                        token.text
                    ),
                ));
            }
            *named_seen |= named;
            event.args.push(arg_match(&token.text));
            arg_pos.push(token.start);
            return Ok(());
        }
        self.events += 1;
        if self.events > MAX_EXPRESSION_EVENTS {
            return Err(Problem::new(
                token.start,
                format!("more than {MAX_EXPRESSION_EVENTS} events in one expression"),
            ));
        }
        self.stack.push(Pending::Event {
            event: EventMatch {
                name: token.text,
                args: Vec::new(),
            },
            pos: token.start,
            arg_pos: Vec::new(),
            named_seen: false,
        });
        Ok(())
    }

    fn finish(mut self, end: usize) -> Result<EventExpr, Problem> {
        self.collect(end, Before::End)?;
        match (self.stack.pop(), self.root) {
            (Some(Pending::Group { pos }), _) => Err(Problem::new(pos, "unclosed '('")),
            (None, Some(root)) => Ok(root),
            _ => Err(Problem::new(end, "expected event")),
        }
    }
}

/// `KEY!=VALUE` (split at the first `!=`), `KEY=VALUE` (at the first `=`), or a
/// positional value — Upstart's order of looking.
fn arg_match(text: &str) -> ArgMatch {
    if let Some((key, value)) = text.split_once("!=") {
        return ArgMatch {
            key: Some(key.to_string()),
            value: value.to_string(),
            negated: true,
        };
    }
    if let Some((key, value)) = text.split_once('=') {
        return ArgMatch {
            key: Some(key.to_string()),
            value: value.to_string(),
            negated: false,
        };
    }
    ArgMatch {
        key: None,
        value: text.to_string(),
        negated: false,
    }
}

/// Parses the expression after `start on` / `stop on`, up to the end of its
/// last line (a comment or the newline). On an error the rest of the
/// expression is still consumed (following the parentheses over lines), so
/// parsing resumes at the next stanza.
pub(super) fn parse_on(lexer: &mut Lexer) -> Result<EventExpr, Problem> {
    parse_expression(lexer, Builder::default())
}

/// [`parse_on`] for `start on`: a `socket` event there is also a socket for
/// keel to bind, so its arguments must describe one ([`socket::SocketSpec`]).
pub(super) fn parse_start_on(lexer: &mut Lexer) -> Result<EventExpr, Problem> {
    let builder = Builder {
        check_sockets: true,
        ..Builder::default()
    };
    parse_expression(lexer, builder)
}

fn parse_expression(lexer: &mut Lexer, mut builder: Builder) -> Result<EventExpr, Problem> {
    let mut depth = 0usize;
    let mut first_problem: Option<Problem> = None;
    let mut end = lexer.pos();
    loop {
        lexer.skip_whitespace();
        loop {
            if first_problem.is_none() {
                if let Err(problem) = step(lexer, &mut builder, &mut depth) {
                    first_problem = Some(problem);
                }
            } else {
                skip_step(lexer, &mut depth);
            }
            if !lexer.has_token() {
                break;
            }
        }
        end = end.max(lexer.pos());
        if depth == 0 {
            break;
        }
        lexer.next_line();
        if lexer.at_end() {
            break;
        }
    }
    match first_problem {
        Some(problem) => Err(problem),
        None => builder.finish(end),
    }
}

/// One parenthesis, operator or operand. A parenthesis that is in error is
/// left in place, so that `skip_step` counts it.
fn step(lexer: &mut Lexer, builder: &mut Builder, depth: &mut usize) -> Result<(), Problem> {
    let pos = lexer.pos();
    match lexer.peek() {
        Some(b'(') => {
            if *depth >= MAX_PAREN_DEPTH {
                return Err(Problem::new(
                    pos,
                    format!("parentheses nested more than {MAX_PAREN_DEPTH} deep"),
                ));
            }
            builder.open(pos)?;
            *depth += 1;
            lexer.bump();
            lexer.skip_whitespace();
        }
        Some(b')') => {
            builder.close(pos)?;
            *depth = depth.saturating_sub(1);
            lexer.bump();
            lexer.skip_whitespace();
        }
        _ => {
            // Operators are recognised before dequoting, so `"and"` is a word.
            let mut probe = lexer.clone();
            let raw = probe.token(Delim::Operand, false);
            let operator = match raw.as_ref().map(|t| t.text.as_str()) {
                Ok("and") => Some(Operator::And),
                Ok("or") => Some(Operator::Or),
                _ => None,
            };
            if let Some(operator) = operator {
                *lexer = probe;
                return builder.operator(operator, pos);
            }
            let token = lexer.token(Delim::Operand, true)?;
            if token.text.is_empty() {
                let message = if lexer.pos() > pos {
                    "expected event, found an empty string"
                } else {
                    "expected event"
                };
                return Err(Problem::new(pos, message));
            }
            builder.operand(token)?;
        }
    }
    Ok(())
}

/// After an error: consumes one element, only counting parentheses.
fn skip_step(lexer: &mut Lexer, depth: &mut usize) {
    match lexer.peek() {
        Some(b'(') => {
            *depth += 1;
            lexer.bump();
            lexer.skip_whitespace();
        }
        Some(b')') => {
            *depth = depth.saturating_sub(1);
            lexer.bump();
            lexer.skip_whitespace();
        }
        // An unterminated quote leaves the lexer at the end of the file.
        _ => {
            let _ = lexer.token(Delim::Operand, false);
        }
    }
}
