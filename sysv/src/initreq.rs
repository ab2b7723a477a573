//! sysvinit's control requests: the fixed 384-byte `struct init_request` that
//! `telinit`, `shutdown` and `halt` write into the FIFO `/run/initctl`
//! (sysvinit's initreq.h). Pure decoding, no I/O: what a request asks for, or
//! why it is refused.
//!
//! Layout (native endian, x86_64 and every Linux sysvinit supports):
//! `int magic; int cmd; int runlevel; int sleeptime;` then a 368-byte union,
//! whose `data` form carries NUL-separated `NAME=VALUE` strings for SETENV.

/// `INIT_MAGIC`: every request starts with it.
pub const MAGIC: i32 = 0x0309_1969;
/// `sizeof(struct init_request)`.
pub const REQUEST_SIZE: usize = 384;
const HEADER_SIZE: usize = 16;

/// The commands of initreq.h that a request may carry.
const CMD_START: i32 = 0;
const CMD_RUNLVL: i32 = 1;
const CMD_POWERFAIL: i32 = 2;
const CMD_POWERFAILNOW: i32 = 3;
const CMD_POWEROK: i32 = 4;
const CMD_BSD: i32 = 5;
const CMD_SETENV: i32 = 6;
const CMD_UNSETENV: i32 = 7;
const CMD_CHANGECONS: i32 = 12345;

/// What a well-formed request asks of init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// telinit N: change to runlevel `0`–`6`, `S`, or `Q` (re-read the
    /// configuration) / `U` (re-execute); letters as sent, upper-cased.
    Runlevel(char),
    /// The UPS daemon's power states (sysvinit's powerfail, powerfailnow, powerok).
    Power(PowerState),
    /// INIT_* variables set (`Some`) or removed (`None`) for the next runlevel change.
    Env(Vec<(String, Option<String>)>),
    /// A command sysvinit knows and keel has no use for (START, BSD, CHANGECONS):
    /// acknowledged and ignored.
    Ignored(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Failing,
    FailingNow,
    Ok,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes, not a whole request of {REQUEST_SIZE}")]
    Size(usize),
    #[error("bad magic {0:#010x}")]
    Magic(i32),
    #[error("unknown command {0}")]
    Command(i32),
    #[error("bad runlevel {0}")]
    Runlevel(i32),
    #[error("environment data is not NAME=VALUE strings of INIT_ variables")]
    Env,
    #[error("bytes after the request's fields (a torn write)")]
    Payload,
}

fn int_at(bytes: &[u8], at: usize) -> i32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    i32::from_ne_bytes(word)
}

/// Decodes one request: exactly [`REQUEST_SIZE`] bytes.
pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
    if bytes.len() != REQUEST_SIZE {
        return Err(DecodeError::Size(bytes.len()));
    }
    let magic = int_at(bytes, 0);
    if magic != MAGIC {
        return Err(DecodeError::Magic(magic));
    }
    let cmd = int_at(bytes, 4);
    // telinit, shutdown and halt zero the whole request before filling it in, so
    // anything else past what a command uses is the tail of a torn write.
    let data = &bytes[HEADER_SIZE..];
    let zero_data = data.iter().all(|&b| b == 0);
    if matches!(
        cmd,
        CMD_RUNLVL | CMD_POWERFAIL | CMD_POWERFAILNOW | CMD_POWEROK
    ) && !zero_data
    {
        return Err(DecodeError::Payload);
    }
    match cmd {
        CMD_RUNLVL => {
            let level = int_at(bytes, 8);
            let c = u8::try_from(level)
                .map(|b| char::from(b).to_ascii_uppercase())
                .map_err(|_| DecodeError::Runlevel(level))?;
            match c {
                '0'..='6' | 'S' | 'Q' | 'U' => Ok(Request::Runlevel(c)),
                _ => Err(DecodeError::Runlevel(level)),
            }
        }
        CMD_POWERFAIL => Ok(Request::Power(PowerState::Failing)),
        CMD_POWERFAILNOW => Ok(Request::Power(PowerState::FailingNow)),
        CMD_POWEROK => Ok(Request::Power(PowerState::Ok)),
        CMD_SETENV | CMD_UNSETENV => decode_env(data).map(Request::Env),
        CMD_START => Ok(Request::Ignored("START")),
        CMD_BSD => Ok(Request::Ignored("BSD")),
        CMD_CHANGECONS => Ok(Request::Ignored("CHANGECONS")),
        cmd => Err(DecodeError::Command(cmd)),
    }
}

/// NUL-separated strings up to the first empty one: `NAME=VALUE` sets, a bare
/// `NAME` removes. As sysvinit, only INIT_* names are accepted.
fn decode_env(data: &[u8]) -> Result<Vec<(String, Option<String>)>, DecodeError> {
    let mut vars = Vec::new();
    let mut used = 0;
    for item in data.split(|&b| b == 0).take_while(|s| !s.is_empty()) {
        used += item.len() + 1;
        let text = std::str::from_utf8(item).map_err(|_| DecodeError::Env)?;
        let (name, value) = match text.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (text, None),
        };
        let valid_name = name.len() > 5
            && name.starts_with("INIT_")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(DecodeError::Env);
        }
        vars.push((name.to_owned(), value));
    }
    if vars.is_empty() {
        return Err(DecodeError::Env);
    }
    if data
        .get(used..)
        .is_some_and(|rest| rest.iter().any(|&b| b != 0))
    {
        return Err(DecodeError::Payload);
    }
    Ok(vars)
}

/// What the FIFO's byte stream holds: a request (or why one was refused), or
/// bytes that belong to no request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Request(Result<Request, DecodeError>),
    /// This many bytes that start no request (a short or garbled write).
    Garbage(usize),
}

/// Finds the requests in the FIFO's byte stream. A pipe keeps no write
/// boundaries: one read may return several writes, or part of one. Writers
/// write a whole request at once (384 bytes, below PIPE_BUF, so never
/// interleaved), so a request starts with the magic; what precedes one is
/// garbage. A candidate that holds the magic again inside its first 384 bytes is
/// a short write followed by the next request: its bytes up to that magic are
/// garbage, so a bad writer never takes a good request down with it. Holds at
/// most one incomplete request between reads.
#[derive(Debug, Default)]
pub struct Stream {
    pending: Vec<u8>,
}

fn magic_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..at + 4) == Some(&MAGIC.to_ne_bytes()[..])
}

impl Stream {
    /// Takes the bytes of one read; returns what they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Item> {
        self.pending.extend_from_slice(bytes);
        let mut items = Vec::new();
        let mut at = 0;
        let mut garbage = 0;
        loop {
            let rest = &self.pending[at..];
            if rest.len() < 4 {
                break;
            }
            if !magic_at(rest, 0) {
                garbage += 1;
                at += 1;
                continue;
            }
            // A later magic inside the candidate: a short write, then another.
            if let Some(inner) = (1..REQUEST_SIZE.min(rest.len())).find(|&i| magic_at(rest, i)) {
                garbage += inner;
                at += inner;
                continue;
            }
            if rest.len() < REQUEST_SIZE {
                break; // the rest of this request is still to come
            }
            if garbage > 0 {
                items.push(Item::Garbage(garbage));
                garbage = 0;
            }
            items.push(Item::Request(decode(&rest[..REQUEST_SIZE])));
            at += REQUEST_SIZE;
        }
        // Fewer than 4 bytes left that are no magic's beginning are garbage too.
        let tail = &self.pending[at..];
        if tail.len() < 4 && !MAGIC.to_ne_bytes().starts_with(tail) {
            garbage += tail.len();
            at = self.pending.len();
        }
        if garbage > 0 {
            items.push(Item::Garbage(garbage));
        }
        self.pending.drain(..at);
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(cmd: i32, runlevel: i32, data: &[u8]) -> Vec<u8> {
        let mut r = vec![0; REQUEST_SIZE];
        r[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
        r[4..8].copy_from_slice(&cmd.to_ne_bytes());
        r[8..12].copy_from_slice(&runlevel.to_ne_bytes());
        r[HEADER_SIZE..HEADER_SIZE + data.len()].copy_from_slice(data);
        r
    }

    #[test]
    fn runlevels_as_telinit_sends_them() {
        for (sent, want) in [
            (b'0', '0'),
            (b'6', '6'),
            (b'2', '2'),
            (b's', 'S'),
            (b'q', 'Q'),
            (b'U', 'U'),
        ] {
            assert_eq!(
                decode(&request(CMD_RUNLVL, sent.into(), b"")),
                Ok(Request::Runlevel(want))
            );
        }
        for bad in [i32::from(b'7'), i32::from(b'x'), 0, -1, 0x132] {
            assert_eq!(
                decode(&request(CMD_RUNLVL, bad, b"")),
                Err(DecodeError::Runlevel(bad))
            );
        }
    }

    #[test]
    fn setenv_as_shutdown_sends_it() {
        let r = request(CMD_SETENV, 0, b"INIT_HALT=POWEROFF\0");
        assert_eq!(
            decode(&r),
            Ok(Request::Env(vec![(
                "INIT_HALT".into(),
                Some("POWEROFF".into())
            )]))
        );
        let r = request(CMD_UNSETENV, 0, b"INIT_HALT\0INIT_X=1\0");
        assert_eq!(
            decode(&r),
            Ok(Request::Env(vec![
                ("INIT_HALT".into(), None),
                ("INIT_X".into(), Some("1".into()))
            ]))
        );
    }

    #[test]
    fn setenv_refuses_what_sysvinit_refuses() {
        for data in [
            &b"PATH=/tmp\0"[..],
            b"INIT_=x\0",
            b"\0",
            b"INIT_A B=1\0",
            b"INIT_\xff=1\0",
        ] {
            assert_eq!(
                decode(&request(CMD_SETENV, 0, data)),
                Err(DecodeError::Env),
                "{data:?}"
            );
        }
    }

    #[test]
    fn power_and_ignored_commands() {
        assert_eq!(
            decode(&request(CMD_POWERFAIL, 0, b"")),
            Ok(Request::Power(PowerState::Failing))
        );
        assert_eq!(
            decode(&request(CMD_POWEROK, 0, b"")),
            Ok(Request::Power(PowerState::Ok))
        );
        assert_eq!(
            decode(&request(CMD_CHANGECONS, 0, b"")),
            Ok(Request::Ignored("CHANGECONS"))
        );
        assert_eq!(decode(&request(99, 0, b"")), Err(DecodeError::Command(99)));
    }

    #[test]
    fn bytes_past_the_fields_are_refused() {
        let mut r = request(CMD_RUNLVL, b'2'.into(), b"");
        r[300] = 1;
        assert_eq!(decode(&r), Err(DecodeError::Payload));
        let r = request(CMD_SETENV, 0, b"INIT_HALT=HALT\0\0junk");
        assert_eq!(decode(&r), Err(DecodeError::Payload));
    }

    #[test]
    fn wrong_size_or_magic_is_refused() {
        let mut r = request(CMD_RUNLVL, b'0'.into(), b"");
        assert_eq!(decode(&r[..100]), Err(DecodeError::Size(100)));
        r[0] ^= 1;
        assert!(matches!(decode(&r), Err(DecodeError::Magic(_))));
    }

    fn requests(items: &[Item]) -> Vec<Request> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Request(Ok(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn stream_finds_requests_among_garbage_in_one_read() {
        let level = |c: u8| request(CMD_RUNLVL, c.into(), b"");
        let mut bad_magic = level(b'5');
        bad_magic[0] ^= 0xff;
        // Garbage, a short write of a request, a bad magic, then two good ones,
        // all in one read (as a busy reader finds them).
        let read = [
            &b"not a request"[..],
            &level(b'4')[..200],
            &bad_magic,
            &level(b'3'),
            &level(b'0'),
        ]
        .concat();
        let mut stream = Stream::default();
        let items = stream.push(&read);
        assert_eq!(
            requests(&items),
            [Request::Runlevel('3'), Request::Runlevel('0')]
        );
        let garbage: usize = items
            .iter()
            .map(|i| if let Item::Garbage(n) = i { *n } else { 0 })
            .sum();
        // The short write runs into the bad one: a torn request, refused; the
        // rest of the bad one, and the text before, start no request.
        assert!(items.contains(&Item::Request(Err(DecodeError::Payload))));
        assert_eq!(garbage, 13 + 200);
        assert!(stream.pending.is_empty());
    }

    #[test]
    fn stream_joins_a_request_split_across_reads() {
        let r = request(CMD_RUNLVL, b'2'.into(), b"");
        let mut stream = Stream::default();
        assert_eq!(stream.push(&r[..2]), []);
        assert_eq!(stream.push(&r[2..100]), []);
        assert_eq!(requests(&stream.push(&r[100..])), [Request::Runlevel('2')]);
        // A lone short write that starts like a request waits, bounded, for more.
        assert_eq!(stream.push(&r[..300]), []);
        assert_eq!(stream.pending.len(), 300);
        let items = stream.push(&r);
        assert_eq!(requests(&items), [Request::Runlevel('2')]);
        assert!(items.contains(&Item::Garbage(300)));
    }

    proptest! {
        /// Any bytes at all: an answer, never a panic, and never more than one
        /// incomplete request held.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let _ = decode(&bytes);
            let mut stream = Stream::default();
            for chunk in bytes.chunks(97) {
                stream.push(chunk);
                prop_assert!(stream.pending.len() < REQUEST_SIZE);
            }
        }

        /// Every good request comes out, whatever garbage surrounds it.
        #[test]
        fn garbage_never_hides_a_request(junk in proptest::collection::vec(any::<u8>(), 0..400), level in 0u8..7) {
            let good = request(CMD_RUNLVL, (b'0' + level).into(), b"");
            let mut stream = Stream::default();
            let mut items = stream.push(&junk);
            items.extend(stream.push(&good));
            let got = requests(&items);
            prop_assert_eq!(got.last(), Some(&Request::Runlevel(char::from(b'0' + level))));
        }

        /// A valid header with arbitrary union bytes: still an answer.
        #[test]
        fn any_payload_of_a_valid_header(cmd in 0i32..8, level in any::<i32>(), data in proptest::collection::vec(any::<u8>(), 368)) {
            let _ = decode(&request(cmd, level, &data));
        }
    }
}
