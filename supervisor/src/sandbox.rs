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

use crate::job::sandbox::{MountKind, Sandbox, SyscallAction};
use std::ffi::CString;

/// A compiled system-call filter, as `seccomp(SECCOMP_SET_MODE_FILTER)` takes it.
pub type SyscallFilter = Vec<seccompiler::sock_filter>;

/// The BPF program for `syscalls deny`, compiled by seccompiler before the
/// spawn (the child only installs it); `None` without a `syscalls deny`.
/// A name this architecture does not know, or a filter that would refuse the
/// exec the job starts with, is a clear error.
pub fn syscall_filter(sandbox: &Sandbox) -> Result<Option<SyscallFilter>, String> {
    let denied = &sandbox.syscalls_denied;
    if denied.is_empty() {
        return Ok(None);
    }
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
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| format!("syscalls deny: no filters on {}", std::env::consts::ARCH))?;
    let action = match sandbox.syscall_action {
        SyscallAction::Eperm => serde_json::json!({"errno": libc::EPERM}),
        SyscallAction::Kill => serde_json::json!("kill_process"),
    };
    let compile = |names: &[String]| {
        let rules: Vec<serde_json::Value> = names
            .iter()
            .map(|name| serde_json::json!({"syscall": name}))
            .collect();
        let spec = serde_json::json!({
            "job": {"mismatch_action": "allow", "filter_action": action, "filter": rules}
        });
        seccompiler::compile_from_json(spec.to_string().as_bytes(), arch)
    };
    let mut programs = compile(denied).map_err(|e| {
        // seccompiler's error does not say which name: find it, one by one.
        match denied
            .iter()
            .find(|n| compile(std::slice::from_ref(*n)).is_err())
        {
            Some(name) => format!(
                "syscalls deny: unknown system call {name} on {}",
                std::env::consts::ARCH
            ),
            None => format!("syscalls deny: {e}"),
        }
    })?;
    Ok(programs.remove("job"))
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
                    crate::setup::no_os_error(&e)
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
                        crate::setup::no_os_error(&e)
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

    fn filter(text: &str) -> Result<Option<SyscallFilter>, String> {
        syscall_filter(&parse("j", text).def.expect("parses").sandbox)
    }

    #[test]
    fn filters_compile_and_bad_ones_are_refused() {
        assert!(filter("exec true\n").unwrap().is_none());
        let program = filter("syscalls deny uname @mount\n").unwrap().unwrap();
        assert!(program.len() > 11, "{} instructions", program.len());
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
