//! How exposed a job is: a score from 0 (every protection keel has) to 10 (none),
//! with the reason for each point, in the spirit of `systemd-analyze security`
//! (`initctl security`).
//!
//! This module owns the checks and their weights ([`CHECKS`]); it reads only the
//! job definition, never the running system. Each check gives the job between 0
//! and its weight in exposure points (a partial protection, such as `protect
//! system` without `strict`, gives some); the score is the points over the sum
//! of every weight, times 10, rounded to one decimal.

use super::JobDef;
use super::sandbox::{ProtectHome, ProtectSystem};

/// One check: what it looks at, how much it weighs, and how much of that weight
/// a definition is exposed to, with why.
pub struct Check {
    /// The stanza that protects (`no new privileges`).
    pub setting: &'static str,
    pub weight: u32,
    /// The points the job gets (0..=weight) and what is exposed ("" when none).
    pub exposure: fn(&JobDef) -> (u32, &'static str),
}

/// One check's finding for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub setting: &'static str,
    pub weight: u32,
    pub points: u32,
    /// What is exposed; empty when the job is protected.
    pub reason: &'static str,
}

/// A job's score and every finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    /// 0.0 ..= 10.0, one decimal.
    pub score: f64,
    pub findings: Vec<Finding>,
}

impl Exposure {
    /// `ok` (≤ 2), `medium` (≤ 5), `exposed` (≤ 8), `unsafe`.
    pub fn rating(&self) -> &'static str {
        match self.score {
            s if s <= 2.0 => "ok",
            s if s <= 5.0 => "medium",
            s if s <= 8.0 => "exposed",
            _ => "unsafe",
        }
    }
}

fn flag(on: bool, weight: u32, reason: &'static str) -> (u32, &'static str) {
    if on { (0, "") } else { (weight, reason) }
}

/// Every check, in the order `initctl security` lists them.
pub const CHECKS: &[Check] = &[
    Check {
        setting: "setuid",
        weight: 10,
        exposure: |d| {
            let root = d.setuid.as_deref().is_none_or(|u| u == "root");
            flag(!root, 10, "runs as root")
        },
    },
    Check {
        setting: "capabilities",
        weight: 10,
        exposure: |d| match &d.capabilities {
            None => (10, "keeps every capability"),
            Some(caps) if caps.iter().any(|c| c == "sys_admin") => (5, "keeps cap_sys_admin"),
            Some(_) => (0, ""),
        },
    },
    Check {
        setting: "no new privileges",
        weight: 5,
        exposure: |d| {
            flag(
                d.no_new_privileges || d.sandbox.filters_calls(),
                5,
                "may gain privileges through setuid binaries and file capabilities",
            )
        },
    },
    Check {
        setting: "protect system",
        weight: 5,
        exposure: |d| match d.sandbox.protect_system {
            ProtectSystem::Off => (5, "may write to /usr, /boot and /etc"),
            ProtectSystem::System => (2, "may write everywhere but /usr, /boot and /etc"),
            ProtectSystem::Strict => (0, ""),
        },
    },
    Check {
        setting: "protect home",
        weight: 4,
        exposure: |d| match d.sandbox.protect_home {
            ProtectHome::Off => (4, "may read and write home directories"),
            ProtectHome::ReadOnly => (2, "may read home directories"),
            ProtectHome::Inaccessible => (0, ""),
        },
    },
    Check {
        setting: "private tmp",
        weight: 3,
        exposure: |d| flag(d.sandbox.private_tmp, 3, "shares /tmp with other jobs"),
    },
    Check {
        setting: "private devices",
        weight: 4,
        exposure: |d| flag(d.sandbox.private_devices, 4, "sees every device node"),
    },
    Check {
        setting: "protect kernel tunables",
        weight: 4,
        exposure: |d| {
            flag(
                d.sandbox.protect_kernel_tunables,
                4,
                "may change kernel tunables in /proc/sys and /sys",
            )
        },
    },
    Check {
        setting: "protect kernel modules",
        weight: 4,
        exposure: |d| {
            let refused = |c: &str| d.sandbox.refuses_call(c);
            let calls = refused("init_module") && refused("finit_module");
            let no_cap = d
                .capabilities
                .as_ref()
                .is_some_and(|caps| !caps.iter().any(|c| c == "sys_module"));
            flag(
                d.sandbox.protect_kernel_modules && (calls || no_cap),
                4,
                "may load kernel modules",
            )
        },
    },
    Check {
        setting: "protect kernel logs",
        weight: 2,
        exposure: |d| flag(d.sandbox.protect_kernel_logs, 2, "may read the kernel log"),
    },
    Check {
        setting: "protect control groups",
        weight: 3,
        exposure: |d| {
            flag(
                d.sandbox.protect_control_groups || d.sandbox.protect_kernel_tunables,
                3,
                "may change control groups",
            )
        },
    },
    // An allow list is stronger than a deny list: what a deny list forgets
    // (a new system call among them) stays open.
    Check {
        setting: "syscalls allow",
        weight: 5,
        exposure: |d| {
            if !d.sandbox.syscalls_allowed.is_empty() {
                (0, "")
            } else if !d.sandbox.syscalls_denied.is_empty() {
                (2, "may make every system call its deny list does not name")
            } else {
                (5, "may make every system call")
            }
        },
    },
    Check {
        setting: "address families",
        weight: 4,
        exposure: |d| {
            flag(
                d.sandbox.address_families.is_some(),
                4,
                "may open sockets of every family",
            )
        },
    },
    Check {
        setting: "memory deny write execute",
        weight: 3,
        exposure: |d| {
            flag(
                d.sandbox.memory_deny_write_execute,
                3,
                "may make writable memory executable",
            )
        },
    },
    Check {
        setting: "restrict namespaces",
        weight: 4,
        exposure: |d| {
            flag(
                d.sandbox.restrict_namespaces,
                4,
                "may create and join namespaces",
            )
        },
    },
    Check {
        setting: "lock personality",
        weight: 1,
        exposure: |d| {
            flag(
                d.sandbox.lock_personality,
                1,
                "may change its execution domain",
            )
        },
    },
    Check {
        setting: "restrict realtime",
        weight: 1,
        exposure: |d| {
            flag(
                d.sandbox.restrict_realtime,
                1,
                "may take realtime scheduling",
            )
        },
    },
];

/// The job's exposure (see the module docs).
pub fn exposure(def: &JobDef) -> Exposure {
    let findings: Vec<Finding> = CHECKS
        .iter()
        .map(|c| {
            let (points, reason) = (c.exposure)(def);
            Finding {
                setting: c.setting,
                weight: c.weight,
                points: points.min(c.weight),
                reason,
            }
        })
        .collect();
    let points: u32 = findings.iter().map(|f| f.points).sum();
    let total: u32 = findings.iter().map(|f| f.weight).sum();
    let score = (100.0 * f64::from(points) / f64::from(total)).round() / 10.0;
    Exposure { score, findings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse;

    fn score(text: &str) -> (f64, &'static str) {
        let e = exposure(&parse("j", text).def.expect("parses"));
        (e.score, e.rating())
    }

    #[test]
    fn the_weights_add_up_to_72() {
        assert_eq!(CHECKS.iter().map(|c| c.weight).sum::<u32>(), 72);
    }

    #[test]
    fn hand_computed_cases() {
        // Nothing protected: 72 of 72.
        assert_eq!(score("exec true\n"), (10.0, "unsafe"));
        // A user (−10), no new privileges (−5), private tmp (−3): 54/72 = 7.5.
        assert_eq!(
            score("setuid nobody\nno new privileges\nprivate tmp\nexec true\n"),
            (7.5, "exposed")
        );
        // protect system (2 of 5 left) and protect home read-only (2 of 4 left):
        // 72 − 3 − 2 = 67/72 = 9.3.
        assert_eq!(
            score("protect system\nprotect home read-only\nexec true\n"),
            (9.3, "unsafe")
        );
        // Capabilities with sys_admin (5 of 10 left); a filter implies no new
        // privileges (−5) and denies modules (with protect kernel modules, −4),
        // a deny list (2 of 5 left): 72 − 5 − 5 − 4 − 3 = 55/72 = 7.6.
        assert_eq!(
            score(
                "capabilities sys_admin\nsyscalls deny @module\nprotect kernel modules\nexec true\n"
            ),
            (7.6, "exposed")
        );
        // The same with an allow list, which leaves the module calls out (−4)
        // and counts whole (−5): 72 − 5 − 5 − 4 − 5 = 53/72 = 7.4.
        assert_eq!(
            score(
                "capabilities sys_admin\nsyscalls allow @system-service\nprotect kernel modules\nexec true\n"
            ),
            (7.4, "exposed")
        );
        // An allow list that lets the module calls through (and every
        // capability kept) does not protect them: 72 − 5 − 5 = 62/72 = 8.6.
        assert_eq!(
            score("syscalls allow @system-service @module\nprotect kernel modules\nexec true\n"),
            (8.6, "unsafe")
        );
        // A deny list alone: no new privileges (−5), 2 of 5 left (−3):
        // 64/72 = 8.9; an allow list alone: 62/72 = 8.6.
        assert_eq!(score("syscalls deny @mount\nexec true\n"), (8.9, "unsafe"));
        assert_eq!(
            score("syscalls allow @default\nexec true\n"),
            (8.6, "unsafe")
        );
    }

    #[test]
    fn everything_protected_scores_zero() {
        let text = "setuid nobody\ncapabilities none\nno new privileges\n\
                    protect system strict\nprotect home\nprivate tmp\nprivate devices\n\
                    protect kernel tunables\nprotect kernel modules\nprotect kernel logs\n\
                    protect control groups\nsyscalls allow @system-service\n\
                    address families unix\nmemory deny write execute\n\
                    restrict namespaces\nlock personality\nrestrict realtime\nexec true\n";
        let e = exposure(&parse("j", text).def.unwrap());
        assert_eq!((e.score, e.rating()), (0.0, "ok"));
        assert!(
            e.findings
                .iter()
                .all(|f| f.points == 0 && f.reason.is_empty())
        );
    }
}
