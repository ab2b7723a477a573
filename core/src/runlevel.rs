//! Runlevels, as Upstart's `telinit` and `runlevel` have them: which runlevels
//! exist, what `telinit N` does, the current and previous one (saved with the
//! state) and the variables of the `runlevel` event.

use crate::refusal::Refusal;
use serde::{Deserialize, Serialize};

/// The current and the previous runlevel, as characters; 0 for none yet. Saved
/// as the two bytes it always was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runlevels {
    pub current: u8,
    pub previous: u8,
}

/// What `telinit N` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Telinit {
    /// Runlevel 0.
    PowerOff,
    /// Runlevel 6.
    Reboot,
    /// Any other: the runlevel, as an upper-case character.
    Change(u8),
}

impl Telinit {
    /// `telinit`'s argument; `S` may be given in either case.
    pub fn parse(runlevel: u8) -> Result<Telinit, Refusal> {
        match runlevel.to_ascii_uppercase() {
            b'0' => Ok(Telinit::PowerOff),
            b'6' => Ok(Telinit::Reboot),
            r @ (b'1'..=b'5' | b'S') => Ok(Telinit::Change(r)),
            r => Err(Refusal::IllegalRunlevel(r as char)),
        }
    }
}

impl Runlevels {
    /// Records `runlevel` as the current one; the `runlevel` event's variables
    /// (`RUNLEVEL`, `PREVLEVEL`, N for none, as Upstart writes them).
    pub fn change(&mut self, runlevel: u8) -> Vec<(String, String)> {
        let previous = self.current;
        *self = Runlevels {
            current: runlevel,
            previous,
        };
        vec![
            ("RUNLEVEL".into(), shown(runlevel)),
            ("PREVLEVEL".into(), shown(previous)),
        ]
    }
}

fn shown(runlevel: u8) -> String {
    if runlevel == 0 {
        "N".to_string()
    } else {
        (runlevel as char).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telinit_knows_the_runlevels_and_the_event_says_where_from() {
        assert_eq!(Telinit::parse(b'0'), Ok(Telinit::PowerOff));
        assert_eq!(Telinit::parse(b'6'), Ok(Telinit::Reboot));
        assert_eq!(Telinit::parse(b's'), Ok(Telinit::Change(b'S')));
        assert_eq!(
            Telinit::parse(b'7').unwrap_err().to_string(),
            "illegal runlevel: 7"
        );
        let mut levels = Runlevels::default();
        let var = |v: &[(String, String)], k: &str| {
            v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone())
        };
        let first = levels.change(b'2');
        assert_eq!(var(&first, "RUNLEVEL").as_deref(), Some("2"));
        assert_eq!(var(&first, "PREVLEVEL").as_deref(), Some("N"));
        let second = levels.change(b'S');
        assert_eq!(var(&second, "PREVLEVEL").as_deref(), Some("2"));
        assert_eq!(
            levels,
            Runlevels {
                current: b'S',
                previous: b'2'
            }
        );
    }
}
