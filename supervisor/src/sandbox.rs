//! A job's sandbox, resolved against this system before the spawn: the mount
//! plan of `keel_core::job::sandbox` turned into the child's steps, each path as
//! a C string, each hidden path known as a directory or a file.
//!
//! This module owns the questions only the host can answer — does the path
//! exist, what is it — and the one file the host must hold for it (an empty
//! file to hide files behind, [`INACCESSIBLE_FILE`]). The child (`spawn`) only
//! makes the mount calls. A path the job file names that does not exist fails
//! the start (`read-only /srv: No such file or directory`); a path a `protect …`
//! stanza implies is skipped where the system lacks it.
//!
//! It also owns the system-call filters: compiled from the stanzas to BPF
//! (names checked against this architecture's table by seccompiler, lists
//! rewritten as ranges of call numbers), once per sandbox — when the job file
//! is loaded (`check`) or at its first start — and kept for every spawn after
//! ([`cached_syscall_filters`]); the child only installs them.

use crate::job::sandbox::{ADDRESS_FAMILIES, MountKind, Sandbox, SyscallAction};
use seccompiler::SeccompAction;
use std::ffi::CString;

/// What keeps a job's sandbox from being set up here; each names its stanza.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path the job file names is not there (or cannot be looked at).
    #[error("{stanza} {path}: {}", crate::errno::no_os_error(.source))]
    Path {
        stanza: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{stanza} {path}: not a directory")]
    NotADirectory { stanza: &'static str, path: String },
    #[error("{stanza}: NUL byte in {path:?}")]
    NulByte { stanza: &'static str, path: String },
    #[error("{stanza} {path}: cannot make {INACCESSIBLE_FILE} to hide it behind: {}", crate::errno::no_os_error(.source))]
    InaccessibleFile {
        stanza: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// A list that would refuse what the child does after installing it.
    #[error("{stanza}: {call} {how}: {why}")]
    RefusesItself {
        stanza: &'static str,
        call: &'static str,
        how: &'static str,
        why: &'static str,
    },
    #[error("{stanza}: unknown system call {name} on {}", std::env::consts::ARCH)]
    UnknownCall { stanza: &'static str, name: String },
    /// seccompiler's own refusal, or the kernel's length limit.
    #[error("{stanza}: {why}")]
    Filter { stanza: &'static str, why: Compile },
}

/// Why seccompiler made no program.
#[derive(Debug, thiserror::Error)]
pub enum Compile {
    #[error("no system-call filters on {}", std::env::consts::ARCH)]
    Architecture,
    #[error("{0}")]
    Seccompiler(String),
    #[error("the filter needs {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
}

/// A compiled system-call filter, as `seccomp(SECCOMP_SET_MODE_FILTER)` takes it.
pub type SyscallFilter = Vec<seccompiler::sock_filter>;

/// The compiled filters of one sandbox, shared by every spawn of the jobs that
/// have it.
pub type SyscallFilters = std::sync::Arc<[SyscallFilter]>;

/// [`syscall_filters`] compiled once per sandbox: the programs depend on the
/// job definition alone, and compiling them is the dearest part of a sandboxed
/// spawn's setup (a few hundred µs), so a definition's are kept for its next
/// spawns. A failed compile is not kept (it is reported at every start).
pub fn cached_syscall_filters(sandbox: &Sandbox) -> Result<SyscallFilters, Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    /// Past this many sandboxes the cache starts again (they are recompiled on
    /// demand: nothing is lost), so reloads cannot grow it without end.
    const MOST: usize = 1024;
    static CACHE: OnceLock<Mutex<HashMap<Sandbox, SyscallFilters>>> = OnceLock::new();
    if !sandbox.filters_calls() {
        return Ok(SyscallFilters::from([]));
    }
    let cache = CACHE.get_or_init(Default::default);
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(found) = lock().get(sandbox) {
        return Ok(found.clone());
    }
    let compiled: SyscallFilters = syscall_filters(sandbox)?.into();
    let mut cache = lock();
    if cache.len() >= MOST {
        cache.clear();
    }
    cache.insert(sandbox.clone(), compiled.clone());
    Ok(compiled)
}

/// The calls the child makes after installing the filters: the exec, and on
/// its failure the report on the error pipe and the exit (`spawn`).
const AFTER_THE_FILTER: [(&str, &str); 3] = [
    (
        "execve",
        "the filter is installed before the job's exec, which it would refuse",
    ),
    (
        "exit_group",
        "no process could end (nor report a failed exec)",
    ),
    ("write", "a failed exec could not be reported"),
];

/// The BPF programs of the job's system-call stanzas, compiled by seccompiler
/// before the spawn (the child only installs them, in order; the kernel runs
/// them all and the strictest answer wins). One program per stanza, each with
/// its own answer: `address families` (`EAFNOSUPPORT`, as for a family the
/// kernel lacks), `memory deny write execute`, `lock personality`, `restrict
/// namespaces` and `restrict realtime` (EPERM; `clone3`, whose flags a filter
/// cannot read, `ENOSYS`, so that libc falls back to `clone`), and last the
/// list: `syscalls allow` (every call but the allowed ones, less the denied
/// ones, gets the action) or else `syscalls deny` (the denied ones get it). The
/// list comes last because it may refuse `seccomp` itself, which installs the
/// programs after it. A name this architecture does not know, or a filter that
/// would refuse what the child does after installing it (the exec, the exit,
/// the report of a failed exec), is a clear error.
pub fn syscall_filters(sandbox: &Sandbox) -> Result<Vec<SyscallFilter>, Error> {
    let mut programs = Vec::new();
    let eperm = serde_json::json!({"errno": libc::EPERM});
    let fixed = |stanza: &'static str, rules: Vec<Rule>, action: &serde_json::Value| {
        compile(rules, action, Listed::Refused).map_err(|why| Error::Filter { stanza, why })
    };
    if let Some(families) = &sandbox.address_families {
        // socket(2) with any family but these; one rule whose conditions all hold.
        let others: Vec<Condition> = families
            .iter()
            .filter_map(|name| ADDRESS_FAMILIES.iter().find(|(n, _)| n == name))
            .map(|(_, number)| (0, op("ne"), u64::from(*number)))
            .collect();
        let action = serde_json::json!({"errno": libc::EAFNOSUPPORT});
        programs.push(fixed(
            "address families",
            vec![rule("socket", &others)],
            &action,
        )?);
    }
    if sandbox.memory_deny_write_execute {
        let write_exec = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let exec = libc::PROT_EXEC as u64;
        let rules = vec![
            rule("mmap", &[(2, masked(write_exec), write_exec)]),
            rule("mprotect", &[(2, masked(exec), exec)]),
            rule("pkey_mprotect", &[(2, masked(exec), exec)]),
            rule(
                "shmat",
                &[(2, masked(libc::SHM_EXEC as u64), libc::SHM_EXEC as u64)],
            ),
        ];
        programs.push(fixed("memory deny write execute", rules, &eperm)?);
    }
    if sandbox.lock_personality {
        // Only PER_LINUX, or the query 0xffffffff.
        let rules = vec![rule(
            "personality",
            &[(0, op("ne"), 0), (0, op("ne"), 0xffff_ffff)],
        )];
        programs.push(fixed("lock personality", rules, &eperm)?);
    }
    if sandbox.restrict_namespaces {
        let mut rules = vec![rule("setns", &[])];
        for call in ["unshare", "clone"] {
            for flag in NAMESPACE_FLAGS {
                rules.push(rule(call, &[(0, masked(flag), flag)]));
            }
        }
        programs.push(fixed("restrict namespaces", rules, &eperm)?);
        let enosys = serde_json::json!({"errno": libc::ENOSYS});
        programs.push(fixed(
            "restrict namespaces",
            vec![rule("clone3", &[])],
            &enosys,
        )?);
    }
    if sandbox.restrict_realtime {
        // The policy without SCHED_RESET_ON_FORK; sched_setattr's is in memory
        // a filter cannot read, so it is refused whole.
        let mut rules = vec![rule("sched_setattr", &[])];
        for policy in [libc::SCHED_FIFO, libc::SCHED_RR, SCHED_DEADLINE] {
            rules.push(rule(
                "sched_setscheduler",
                &[(1, masked(0xff), policy as u64)],
            ));
        }
        programs.push(fixed("restrict realtime", rules, &eperm)?);
    }
    if let Some(list) = list_program(sandbox)? {
        programs.push(list);
    }
    Ok(programs)
}

/// The program of `syscalls allow` / `syscalls deny`, if the job has either.
fn list_program(sandbox: &Sandbox) -> Result<Option<SyscallFilter>, Error> {
    let (allowed, denied) = (&sandbox.syscalls_allowed, &sandbox.syscalls_denied);
    let (stanza, names, listed): (&'static str, Vec<&String>, Listed) = if !allowed.is_empty() {
        let names = allowed.iter().filter(|n| !denied.contains(n)).collect();
        ("syscalls allow", names, Listed::Allowed)
    } else if !denied.is_empty() {
        ("syscalls deny", denied.iter().collect(), Listed::Refused)
    } else {
        return Ok(None);
    };
    // Every name is known here (one by one, as seccompiler's error does not
    // say which), before the rules they make are checked.
    let (action, answer) = match sandbox.syscall_action {
        SyscallAction::Eperm => (
            serde_json::json!({"errno": libc::EPERM}),
            SeccompAction::Errno(libc::EPERM as u32),
        ),
        SyscallAction::Kill => (
            serde_json::json!("kill_process"),
            SeccompAction::KillProcess,
        ),
    };
    let rules = |names: &[&String]| -> Vec<Rule> { names.iter().map(|n| rule(n, &[])).collect() };
    let program = compile(rules(&names), &action, listed);
    for (call, why) in AFTER_THE_FILTER {
        let lets_through = match listed {
            Listed::Allowed => names.iter().any(|n| *n == call),
            Listed::Refused => !names.iter().any(|n| *n == call),
        };
        if !lets_through {
            let how = match listed {
                Listed::Allowed if !allowed.iter().any(|n| n == call) => "not allowed",
                _ => "denied",
            };
            return Err(Error::RefusesItself {
                stanza,
                call,
                how,
                why,
            });
        }
    }
    let (on_listed, on_others) = match listed {
        Listed::Allowed => (SeccompAction::Allow, answer),
        Listed::Refused => (answer, SeccompAction::Allow),
    };
    program
        .map(|linear| Some(by_ranges(&linear, on_listed.into(), on_others.into())))
        .map_err(|why| {
            match names
                .iter()
                .find(|n| compile(rules(std::slice::from_ref(*n)), &action, listed).is_err())
            {
                Some(name) => Error::UnknownCall {
                    stanza,
                    name: name.to_string(),
                },
                None => Error::Filter { stanza, why },
            }
        })
}

/// A list program as compact as its calls allow. seccompiler tests one call
/// after another (five instructions each: some 1,700 for `@system-service`), and
/// the kernel's cost to install a program grows with its length — it was most
/// of what the sandbox added to a start. So its checked program is read back
/// (its architecture check, then one `JEQ NR` per call) and the calls, sorted
/// and merged into runs of consecutive numbers, are tested as ranges, four
/// instructions each: `listed` for the calls in them, `others` for the rest.
/// On x86_64 the x32 calls (number bit 30), which a filter would otherwise have
/// to list twice, get the refusal of the list's kind (`others` for an allow
/// list, `listed` for a deny list).
fn by_ranges(linear: &[seccompiler::sock_filter], listed: u32, others: u32) -> SyscallFilter {
    const LD_ABS_W: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGT_K: u16 = 0x25;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    /// The audit arch of x86_64, and its x32 calls' number bit.
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let insn = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    // Everything before the load of the number (offset 0) is the arch check.
    let load_nr = linear
        .iter()
        .position(|i| i.code == LD_ABS_W && i.k == 0)
        .unwrap_or(linear.len());
    let mut calls: Vec<u32> = linear[load_nr..]
        .iter()
        .filter(|i| i.code == JEQ_K)
        .map(|i| i.k)
        .collect();
    calls.sort_unstable();
    calls.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for call in calls {
        match ranges.last_mut() {
            Some((_, high)) if *high + 1 == call => *high = call,
            _ => ranges.push((call, call)),
        }
    }
    let mut out = linear[..load_nr].to_vec();
    out.push(insn(LD_ABS_W, 0, 0, 0));
    if linear
        .iter()
        .take(load_nr)
        .any(|i| i.k == AUDIT_ARCH_X86_64)
    {
        let x32 = if listed == u32::from(SeccompAction::Allow) {
            others
        } else {
            listed
        };
        out.push(insn(JGE_K, 0, 1, X32_SYSCALL_BIT));
        out.push(insn(RET_K, 0, 0, x32));
    }
    // Ascending: past this range's end, on to the next; else in it or in the
    // gap before it.
    for (low, high) in ranges {
        out.push(insn(JGT_K, 3, 0, high));
        out.push(insn(JGE_K, 0, 1, low));
        out.push(insn(RET_K, 0, 0, listed));
        out.push(insn(RET_K, 0, 0, others));
    }
    out.push(insn(RET_K, 0, 0, others));
    out
}

/// `SCHED_DEADLINE` (linux/sched.h).
const SCHED_DEADLINE: i32 = 6;

/// Every `CLONE_NEW*` flag (linux/sched.h): NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET, NEWTIME.
const NAMESPACE_FLAGS: [u64; 8] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
    0x0000_0080,
];

/// A condition on a call's argument: (index, seccompiler's operator, value).
type Condition = (u8, serde_json::Value, u64);
/// One rule of seccompiler's JSON: a call, and conditions that must all hold.
type Rule = serde_json::Value;

/// seccompiler's `masked_eq`: `(arg & mask) == value`.
fn masked(mask: u64) -> serde_json::Value {
    serde_json::json!({"masked_eq": mask})
}

/// seccompiler's operator `name` (`ne`).
fn op(name: &str) -> serde_json::Value {
    serde_json::json!(name)
}

fn rule(call: &str, conditions: &[Condition]) -> Rule {
    if conditions.is_empty() {
        return serde_json::json!({"syscall": call});
    }
    let args: Vec<serde_json::Value> = conditions
        .iter()
        .map(|(index, op, value)| {
            serde_json::json!({"index": index, "type": "qword", "op": op, "val": value})
        })
        .collect();
    serde_json::json!({"syscall": call, "args": args})
}

/// What a program's rules name: the calls it refuses, or the only ones it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    Refused,
    Allowed,
}

/// One program: the calls of `rules` refused with `action` and every other
/// allowed, or (`Listed::Allowed`) the other way round.
fn compile(
    rules: Vec<Rule>,
    action: &serde_json::Value,
    listed: Listed,
) -> Result<SyscallFilter, Compile> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| Compile::Architecture)?;
    let allow = serde_json::json!("allow");
    let (mismatch, matched) = match listed {
        Listed::Refused => (&allow, action),
        Listed::Allowed => (action, &allow),
    };
    let spec = serde_json::json!({
        "job": {"mismatch_action": mismatch, "filter_action": matched, "filter": rules}
    });
    let mut programs = seccompiler::compile_from_json(spec.to_string().as_bytes(), arch)
        .map_err(|e| Compile::Seccompiler(e.to_string()))?;
    let program = programs
        .remove("job")
        .ok_or_else(|| Compile::Seccompiler("it made no program".to_string()))?;
    // The kernel's limit for one program (BPF_MAXINSNS).
    if program.len() > 4096 {
        return Err(Compile::TooLong(program.len()));
    }
    Ok(program)
}

/// The empty, mode-0 file that inaccessible files are hidden behind.
pub const INACCESSIBLE_FILE: &str = "/run/keel/inaccessible";

/// What the child does at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOp {
    /// Read-only with everything below it.
    ReadOnly,
    /// Writable again with everything below it.
    Writable,
    /// An empty read-only tmpfs over a directory.
    HideDirectory,
    /// [`INACCESSIBLE_FILE`] bound read-only over a file.
    HideFile,
    /// A fresh tmpfs, mode 1777.
    Tmpfs,
    /// A tmpfs with only the pseudo-devices.
    Devices,
}

/// One step of the child's mount setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildMount {
    pub path: CString,
    pub op: MountOp,
    /// The stanza that asked for it, for messages (`read-only`).
    pub stanza: &'static str,
}

/// The child's mount steps for `sandbox`, in order; empty when it needs no
/// mount namespace.
pub fn resolve(sandbox: &Sandbox) -> Result<Vec<ChildMount>, Error> {
    let mut out = Vec::new();
    for mount in sandbox.mounts() {
        let stanza = mount.kind.name();
        let meta = match std::fs::metadata(&mount.path) {
            Ok(meta) => meta,
            Err(e) if !mount.required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Path {
                    stanza,
                    path: mount.path.clone(),
                    source,
                });
            }
        };
        let op = match mount.kind {
            MountKind::ReadOnly => MountOp::ReadOnly,
            MountKind::Writable => MountOp::Writable,
            MountKind::Inaccessible if meta.is_dir() => MountOp::HideDirectory,
            MountKind::Inaccessible => {
                inaccessible_file().map_err(|source| Error::InaccessibleFile {
                    stanza,
                    path: mount.path.clone(),
                    source,
                })?;
                MountOp::HideFile
            }
            MountKind::PrivateTmp | MountKind::PrivateDevices if !meta.is_dir() => {
                return Err(Error::NotADirectory {
                    stanza,
                    path: mount.path.clone(),
                });
            }
            MountKind::PrivateTmp => MountOp::Tmpfs,
            MountKind::PrivateDevices => MountOp::Devices,
        };
        let path = CString::new(mount.path.as_str()).map_err(|_| Error::NulByte {
            stanza,
            path: mount.path.clone(),
        })?;
        out.push(ChildMount { path, op, stanza });
    }
    Ok(out)
}

/// Makes [`INACCESSIBLE_FILE`] if it is not there: empty, mode 0.
fn inaccessible_file() -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::path::Path::new(INACCESSIBLE_FILE);
    if path.is_file() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o000)
        .open(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse;

    fn resolved(text: &str) -> Result<Vec<ChildMount>, String> {
        resolve(&parse("j", text).def.expect("parses").sandbox).map_err(|e| e.to_string())
    }

    #[test]
    fn named_paths_must_exist_implied_ones_may_not() {
        assert_eq!(
            resolved("read-only /no/such/path\n").unwrap_err(),
            "read-only /no/such/path: No such file or directory"
        );
        assert_eq!(
            resolved("inaccessible /no/such/path\n").unwrap_err(),
            "inaccessible /no/such/path: No such file or directory"
        );
        // /run/user may well be missing here: skipped, not an error.
        let home = resolved("protect home\n").unwrap();
        assert!(home.iter().all(|m| m.op == MountOp::HideDirectory));
        assert!(resolved("exec true\n").unwrap().is_empty());
    }

    fn filter(text: &str) -> Result<Vec<SyscallFilter>, String> {
        syscall_filters(&parse("j", text).def.expect("parses").sandbox).map_err(|e| e.to_string())
    }

    #[test]
    fn filters_compile_and_bad_ones_are_refused() {
        assert!(filter("exec true\n").unwrap().is_empty());
        let programs = filter("syscalls deny uname @mount\n").unwrap();
        assert_eq!(programs.len(), 1);
        assert!(programs[0].len() > 11, "{} instructions", programs[0].len());
        let all = "address families unix\nmemory deny write execute\nlock personality\n\
                   restrict namespaces\nrestrict realtime\n";
        // One each, and clone3's own (its answer is ENOSYS).
        assert_eq!(filter(all).unwrap().len(), 6);
        assert_eq!(
            filter("syscalls deny no_such_call\n").unwrap_err(),
            format!(
                "syscalls deny: unknown system call no_such_call on {}",
                std::env::consts::ARCH
            )
        );
        assert_eq!(
            filter("syscalls deny execve\n").unwrap_err(),
            "syscalls deny: execve denied: the filter is installed before the job's exec, which it would refuse"
        );
    }

    #[test]
    fn allow_lists_must_let_the_exec_and_the_exit_through() {
        // The list comes last: it may refuse seccomp, which installs the rest.
        // Compact: ranges of calls, not one test per call (some 1,700).
        let programs = filter("syscalls allow @system-service\nlock personality\n").unwrap();
        assert_eq!(programs.len(), 2);
        assert!(
            programs[1].len() < 200,
            "{} instructions",
            programs[1].len()
        );
        assert_eq!(
            filter("syscalls allow read write exit_group\n").unwrap_err(),
            "syscalls allow: execve not allowed: the filter is installed before the job's exec, which it would refuse"
        );
        assert_eq!(
            filter("syscalls allow execve write\n").unwrap_err(),
            "syscalls allow: exit_group not allowed: no process could end (nor report a failed exec)"
        );
        assert_eq!(
            filter("syscalls allow @default @basic-io\nsyscalls deny write\n").unwrap_err(),
            "syscalls allow: write denied: a failed exec could not be reported"
        );
        assert_eq!(
            filter("syscalls allow @default @basic-io frobnicate\n").unwrap_err(),
            format!(
                "syscalls allow: unknown system call frobnicate on {}",
                std::env::consts::ARCH
            )
        );
    }

    /// What a program answers for system call `nr` on the arch `arch`: a
    /// classic BPF interpreter for the instructions these programs use.
    fn run(program: &[seccompiler::sock_filter], arch: u32, nr: u32) -> u32 {
        let (mut pc, mut a) = (0, 0);
        loop {
            let i = &program[pc];
            let jump = |taken: bool| pc + 1 + usize::from(if taken { i.jt } else { i.jf });
            pc = match i.code {
                0x20 => {
                    a = if i.k == 4 { arch } else { nr };
                    pc + 1
                }
                0x05 => pc + 1 + i.k as usize,
                0x15 => jump(a == i.k),
                0x25 => jump(a > i.k),
                0x35 => jump(a >= i.k),
                0x06 => return i.k,
                code => panic!("instruction {code:#x}"),
            };
        }
    }

    #[test]
    fn lists_by_ranges_answer_as_seccompilers_one_by_one() {
        const X86_64: u32 = 0xc000_003e;
        let eperm = u32::from(SeccompAction::Errno(libc::EPERM as u32));
        let allow = u32::from(SeccompAction::Allow);
        for (text, listed) in [
            ("syscalls allow @system-service\n", Listed::Allowed),
            ("syscalls allow @default @basic-io uname\n", Listed::Allowed),
            ("syscalls deny @privileged @mount @debug\n", Listed::Refused),
        ] {
            let sandbox = parse("j", text).def.unwrap().sandbox;
            let names: Vec<&String> = match listed {
                Listed::Allowed => sandbox.syscalls_allowed.iter().collect(),
                Listed::Refused => sandbox.syscalls_denied.iter().collect(),
            };
            let rules = names.iter().map(|n| rule(n, &[])).collect();
            let eperm_json = serde_json::json!({"errno": libc::EPERM});
            let linear = compile(rules, &eperm_json, listed).unwrap();
            let compact = &filter(text).unwrap()[0];
            assert!(
                compact.len() < linear.len(),
                "{text}: {} instructions",
                compact.len()
            );
            if std::env::consts::ARCH != "x86_64" {
                continue;
            }
            for nr in 0..1024 {
                assert_eq!(
                    run(compact, X86_64, nr),
                    run(&linear, X86_64, nr),
                    "{text}: {nr}"
                );
            }
            // Another arch is killed; x32 calls are refused either way.
            assert_eq!(run(compact, 3, 0), run(&linear, 3, 0));
            assert_eq!(run(compact, X86_64, 0x4000_0000 | 59), eperm);
            assert_eq!(run(compact, X86_64, 59), allow, "execve");
        }
    }

    #[test]
    fn filters_are_compiled_once_per_sandbox() {
        let def = parse("j", "syscalls allow @system-service\n").def.unwrap();
        let first = cached_syscall_filters(&def.sandbox).unwrap();
        let again = cached_syscall_filters(&def.sandbox.clone()).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        assert_eq!(first.len(), 1);
        let other = parse("j", "syscalls allow @system-service\nsyscalls deny uname\n")
            .def
            .unwrap();
        let other = cached_syscall_filters(&other.sandbox).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &other));
        assert!(
            cached_syscall_filters(&Default::default())
                .unwrap()
                .is_empty()
        );
        let bad = parse("j", "syscalls deny execve\n").def.unwrap();
        assert!(cached_syscall_filters(&bad.sandbox).is_err());
    }

    #[test]
    fn every_group_names_calls_this_architecture_has() {
        for (group, _) in crate::job::sandbox::SYSCALL_GROUPS {
            let text = format!("syscalls deny {group}\n");
            let calls = crate::job::sandbox::group_calls(group).unwrap();
            match AFTER_THE_FILTER.iter().find(|(c, _)| calls.contains(c)) {
                Some((call, _)) => assert!(
                    filter(&text).is_err_and(|e| e.contains(&format!("{call} denied"))),
                    "{group}"
                ),
                None => assert_eq!(filter(&text).map(|p| p.len()), Ok(1), "{group}"),
            }
            let text = format!("syscalls allow {group} @default @basic-io\n");
            assert_eq!(filter(&text).map(|p| p.len()), Ok(1), "{group}");
        }
    }

    #[test]
    fn hidden_paths_are_told_apart_by_type() {
        let steps = resolved("inaccessible /etc /etc/hostname\nprivate tmp\n").unwrap();
        let ops: Vec<MountOp> = steps.iter().map(|m| m.op).collect();
        assert_eq!(
            ops[..3],
            [MountOp::HideDirectory, MountOp::HideFile, MountOp::Tmpfs]
        );
        assert!(std::path::Path::new(INACCESSIBLE_FILE).is_file());
        assert_eq!(
            resolved("private tmp\nwritable /etc/hostname\n").unwrap()[0]
                .path
                .as_c_str(),
            c"/etc/hostname"
        );
    }
}
