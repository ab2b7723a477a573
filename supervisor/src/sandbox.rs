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

use crate::job::sandbox::{ADDRESS_FAMILIES, MountKind, Sandbox, SyscallAction};
use std::ffi::CString;

/// A compiled system-call filter, as `seccomp(SECCOMP_SET_MODE_FILTER)` takes it.
pub type SyscallFilter = Vec<seccompiler::sock_filter>;

/// The BPF programs of the job's system-call stanzas, compiled by seccompiler
/// before the spawn (the child only installs them, in order; the kernel runs
/// them all and the strictest answer wins). One program per stanza, each with
/// its own answer: `syscalls deny` (EPERM or kill), `address families`
/// (`EAFNOSUPPORT`, as for a family the kernel lacks), `memory deny write
/// execute`, `lock personality`, `restrict namespaces` and `restrict realtime`
/// (EPERM; `clone3`, whose flags a filter cannot read, `ENOSYS`, so that libc
/// falls back to `clone`). A name this architecture does not know, or a filter
/// that would refuse the exec the job starts with, is a clear error.
pub fn syscall_filters(sandbox: &Sandbox) -> Result<Vec<SyscallFilter>, String> {
    let mut programs = Vec::new();
    let eperm = serde_json::json!({"errno": libc::EPERM});
    let denied = &sandbox.syscalls_denied;
    if !denied.is_empty() {
        if let Some(exec) = denied.iter().find(|n| *n == "execve" || *n == "execveat") {
            return Err(format!(
                "syscalls deny {exec}: the filter is installed before the job's exec, which it would refuse"
            ));
        }
        if let Some(exit) = denied.iter().find(|n| *n == "exit" || *n == "exit_group") {
            return Err(format!(
                "syscalls deny {exit}: no process could end (nor report a failed exec)"
            ));
        }
        let action = match sandbox.syscall_action {
            SyscallAction::Eperm => eperm.clone(),
            SyscallAction::Kill => serde_json::json!("kill_process"),
        };
        let rules =
            |names: &[String]| -> Vec<Rule> { names.iter().map(|name| rule(name, &[])).collect() };
        let program = compile(rules(denied), &action).map_err(|e| {
            // seccompiler's error does not say which name: find it, one by one.
            match denied
                .iter()
                .find(|n| compile(rules(std::slice::from_ref(*n)), &action).is_err())
            {
                Some(name) => format!(
                    "syscalls deny: unknown system call {name} on {}",
                    std::env::consts::ARCH
                ),
                None => format!("syscalls deny: {e}"),
            }
        })?;
        programs.push(program);
    }
    let fixed = |what: &str, rules: Vec<Rule>, action: &serde_json::Value| {
        compile(rules, action).map_err(|e| format!("{what}: {e}"))
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
    Ok(programs)
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

/// One program: `rules` answered with `action`, every other call allowed.
fn compile(rules: Vec<Rule>, action: &serde_json::Value) -> Result<SyscallFilter, String> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| format!("no system-call filters on {}", std::env::consts::ARCH))?;
    let spec = serde_json::json!({
        "job": {"mismatch_action": "allow", "filter_action": action, "filter": rules}
    });
    let mut programs = seccompiler::compile_from_json(spec.to_string().as_bytes(), arch)
        .map_err(|e| e.to_string())?;
    let program = programs
        .remove("job")
        .ok_or_else(|| "seccompiler made no program".to_string())?;
    // The kernel's limit for one program (BPF_MAXINSNS).
    if program.len() > 4096 {
        return Err(format!(
            "the filter needs {} instructions, more than the kernel's 4096",
            program.len()
        ));
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
pub fn resolve(sandbox: &Sandbox) -> Result<Vec<ChildMount>, String> {
    let mut out = Vec::new();
    for mount in sandbox.mounts() {
        let stanza = mount.kind.name();
        let meta = match std::fs::metadata(&mount.path) {
            Ok(meta) => meta,
            Err(e) if !mount.required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(format!(
                    "{stanza} {}: {}",
                    mount.path,
                    crate::errno::no_os_error(&e)
                ));
            }
        };
        let op = match mount.kind {
            MountKind::ReadOnly => MountOp::ReadOnly,
            MountKind::Writable => MountOp::Writable,
            MountKind::Inaccessible if meta.is_dir() => MountOp::HideDirectory,
            MountKind::Inaccessible => {
                inaccessible_file().map_err(|e| {
                    format!(
                        "{stanza} {}: cannot make {INACCESSIBLE_FILE} to hide it behind: {}",
                        mount.path,
                        crate::errno::no_os_error(&e)
                    )
                })?;
                MountOp::HideFile
            }
            MountKind::PrivateTmp | MountKind::PrivateDevices if !meta.is_dir() => {
                return Err(format!("{stanza} {}: not a directory", mount.path));
            }
            MountKind::PrivateTmp => MountOp::Tmpfs,
            MountKind::PrivateDevices => MountOp::Devices,
        };
        let path = CString::new(mount.path.as_str())
            .map_err(|_| format!("{stanza}: NUL byte in {:?}", mount.path))?;
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
        resolve(&parse("j", text).def.expect("parses").sandbox)
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
        syscall_filters(&parse("j", text).def.expect("parses").sandbox)
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
            "syscalls deny execve: the filter is installed before the job's exec, which it would refuse"
        );
    }

    #[test]
    fn every_group_names_calls_this_architecture_has() {
        for (group, _) in crate::job::sandbox::SYSCALL_GROUPS {
            let text = format!("syscalls deny {group}\n");
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
