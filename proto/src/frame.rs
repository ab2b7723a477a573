//! Stream framing for the control socket: a 4-byte little-endian length, then that
//! many bytes of postcard. Frames larger than [`MAX_FRAME`] are refused by both sides
//! before anything is allocated for them.

use serde::{Deserialize, Serialize};
use std::vec::Vec;

/// The largest frame body either side accepts.
pub const MAX_FRAME: usize = 4 << 20;

/// The length-prefix size.
pub const HEADER: usize = 4;

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME`] (or the caller's smaller limit).
    TooLarge(usize),
    /// The body is not a valid message (garbage, truncated, trailing bytes).
    Malformed,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the limit"),
            FrameError::Malformed => f.write_str("malformed frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes `msg` as a whole frame, header included.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = std::vec![0u8; HEADER];
    out = postcard::to_extend(msg, out).map_err(|_| FrameError::Malformed)?;
    let body = out.len() - HEADER;
    if body > MAX_FRAME {
        return Err(FrameError::TooLarge(body));
    }
    out[..HEADER].copy_from_slice(&(body as u32).to_le_bytes());
    Ok(out)
}

/// The body length announced by a header, checked against `limit` (≤ [`MAX_FRAME`]).
pub fn body_len(header: [u8; HEADER], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > limit.min(MAX_FRAME) {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes one frame body; trailing bytes make it malformed.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes(body) {
        Ok((msg, [])) => Ok(msg),
        _ => Err(FrameError::Malformed),
    }
}

/// Splits the first whole frame off `buf`: `Ok(None)` if more bytes are needed.
/// Returns the body range and the total length consumed.
pub fn split(
    buf: &[u8],
    limit: usize,
) -> Result<Option<(core::ops::Range<usize>, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let mut h = [0u8; HEADER];
    h.copy_from_slice(header);
    let len = body_len(h, limit)?;
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    Ok(Some((HEADER..HEADER + len, HEADER + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::{Request, Response};

    #[test]
    fn split_waits_for_whole_frames() {
        let f = encode(&Request::List).unwrap();
        for cut in 0..f.len() {
            assert_eq!(split(&f[..cut], MAX_FRAME), Ok(None));
        }
        let (range, used) = split(&f, MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(decode::<Request>(&f[range]), Ok(Request::List));
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        let mut f = (MAX_FRAME as u32 + 1).to_le_bytes().to_vec();
        f.extend_from_slice(&[0; 16]);
        assert_eq!(
            split(&f, MAX_FRAME),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            split(&100u32.to_le_bytes(), 64),
            Err(FrameError::TooLarge(100))
        );
    }

    #[test]
    fn truncated_and_garbage_bodies_are_malformed() {
        let f = encode(&Response::Version {
            version: "1.0".into(),
        })
        .unwrap();
        let body = &f[HEADER..];
        for cut in 0..body.len() {
            assert_eq!(decode::<Response>(&body[..cut]), Err(FrameError::Malformed));
        }
        assert_eq!(
            decode::<Request>(&[0xff, 0xff, 0xff]),
            Err(FrameError::Malformed)
        );
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert_eq!(decode::<Response>(&trailing), Err(FrameError::Malformed));
    }
}

#[cfg(test)]
mod fuzz {
    //! The decoder against arbitrary bytes: never a panic, never a frame larger
    //! than the limit, and whatever decodes re-encodes to a message that decodes
    //! the same (so nothing half-understood is acted on).
    use super::*;
    use crate::ctl::{ClientHello, Request, Response, ServerHello};
    use proptest::prelude::*;
    use std::vec::Vec;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn split_never_panics_or_oversteps(buf in proptest::collection::vec(any::<u8>(), 0..256), limit in 0usize..512) {
            match split(&buf, limit) {
                Ok(Some((range, used))) => {
                    prop_assert_eq!(range.start, HEADER);
                    prop_assert_eq!(range.end, used);
                    prop_assert!(used <= buf.len());
                    prop_assert!(range.len() <= limit);
                }
                Ok(None) => prop_assert!(buf.len() < HEADER || buf.len() < HEADER + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize),
                Err(FrameError::TooLarge(n)) => prop_assert!(n > limit),
                Err(FrameError::Malformed) => prop_assert!(false, "split never judges bodies"),
            }
        }

        #[test]
        fn arbitrary_bodies_decode_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(r) = decode::<Request>(&body) {
                let again = encode(&r).unwrap();
                prop_assert_eq!(decode::<Request>(&again[HEADER..]), Ok(r));
            }
            if let Ok(r) = decode::<Response>(&body) {
                let again = encode(&r).unwrap();
                prop_assert_eq!(decode::<Response>(&again[HEADER..]), Ok(r));
            }
            let _ = decode::<ClientHello>(&body);
            let _ = decode::<ServerHello>(&body);
        }

        /// A valid request with bytes flipped, cut or appended.
        #[test]
        fn damaged_requests_never_panic(
            job in "[a-z/]{0,12}",
            env in proptest::collection::vec("[A-Z]{1,4}=[a-z]{0,4}", 0..4),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
            extra in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let request = Request::Start { job, instance: None, env, wait: true };
            let mut body: Vec<u8> = encode(&request).unwrap()[HEADER..].to_vec();
            for (at, bits) in flips {
                let len = body.len();
                body[at % len] ^= bits;
            }
            body.truncate(cut % (body.len() + 1));
            body.extend(extra);
            let _ = decode::<Request>(&body);
        }
    }
}
