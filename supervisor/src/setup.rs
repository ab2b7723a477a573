//! What a job process is set up with beyond its command, resolved in the parent
//! before the clone (DESIGN.md, "The spawned child only makes system calls"):
//! users and groups from the system's databases, capability names as a mask,
//! `limit` values, the oom score, the AppArmor label. The child carries it out (`spawn`).
//!
//! Names are looked up in the supervisor's user and group databases (NSS), also
//! for a `chroot` job — Upstart looked them up inside the chroot; keel resolves
//! before the clone, where only its own databases are at hand.
//!
//! Every failure here is a precise reason (`setuid: no such user: www`), which
//! the runtime turns into a failed start.

use crate::errno::no_os_error;
use crate::job::{CAPABILITIES, JobDef, LimitValue, OomScore, ProcessKind};
use crate::spawn::{Ids, Setup, rlimit_resource};
use std::ffi::CString;

/// A `setuid` user's login variables, set in the job's environment as a login
/// would set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub home: String,
    pub shell: String,
}

impl Login {
    /// `HOME`, `USER`, `LOGNAME`, `SHELL`.
    pub fn vars(&self) -> [(&'static str, &str); 4] {
        [
            ("HOME", &self.home),
            ("USER", &self.user),
            ("LOGNAME", &self.user),
            ("SHELL", &self.shell),
        ]
    }
}

/// Where the AppArmor exec label is written, and whether AppArmor is on.
pub struct AppArmorHost {
    pub enabled: bool,
}

impl AppArmorHost {
    pub fn probe() -> AppArmorHost {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.trim() == "Y");
        AppArmorHost { enabled }
    }

    /// The attribute file for the next exec's label: the AppArmor-specific one
    /// (Linux 5.8 and later) when it exists, else the shared one.
    fn exec_attr() -> &'static std::ffi::CStr {
        if std::path::Path::new("/proc/self/attr/apparmor/exec").exists() {
            c"/proc/self/attr/apparmor/exec"
        } else {
            c"/proc/self/attr/exec"
        }
    }
}

/// What `prepare` found: the child's setup, the login variables of a `setuid`
/// job, and warnings to log (a stanza that cannot be applied on this system).
#[derive(Debug, Default)]
pub struct Prepared {
    pub setup: Setup,
    pub login: Option<Login>,
    pub warnings: Vec<String>,
}

/// Why a job process cannot be set up as its job file says, on this system.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "limit {resource}: the soft limit {} is above the hard limit {}",
        show_limit(*soft),
        show_limit(*hard)
    )]
    LimitOrder {
        resource: &'static str,
        soft: LimitValue,
        hard: LimitValue,
    },
    #[error("chroot {0}: not a directory")]
    ChrootNotDirectory(String),
    #[error("chroot {root}: {}", no_os_error(source))]
    Chroot {
        root: String,
        source: std::io::Error,
    },
    #[error("{stanza}: NUL byte in {text:?}")]
    Nul { stanza: &'static str, text: String },
    #[error("capabilities: unknown capability {0}")]
    UnknownCapability(String),
    #[error("capabilities: cap_{0} is not known to this kernel")]
    CapabilityNotInKernel(String),
    #[error("setuid {name}: cannot read the user database: {source}")]
    UserDatabase { name: String, source: nix::Error },
    #[error("setuid {0}: no such user")]
    NoSuchUser(String),
    #[error("setgid {name}: cannot read the group database: {source}")]
    GroupDatabase { name: String, source: nix::Error },
    #[error("setgid {0}: no such group")]
    NoSuchGroup(String),
    #[error("groups of {name}: {source}")]
    Groups { name: String, source: nix::Error },
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::Error),
    #[error("apparmor switch {profile}: {source}")]
    AppArmorProfile {
        profile: String,
        source: crate::events::ExpandError,
    },
}

/// Resolves the job's hardening stanzas for process `kind`. `env` is the job's
/// environment (for `$VAR` in the AppArmor profile, as Upstart expands it).
pub fn prepare(
    def: &JobDef,
    kind: ProcessKind,
    env: &[(String, String)],
    apparmor: &AppArmorHost,
) -> Result<Prepared, Error> {
    let mut out = Prepared::default();
    let s = &mut out.setup;
    for l in &def.limits {
        let value = |v: LimitValue| match v {
            LimitValue::Value(n) => n,
            LimitValue::Unlimited => libc::RLIM_INFINITY,
        };
        let (soft, hard) = (value(l.soft), value(l.hard));
        if soft > hard {
            return Err(Error::LimitOrder {
                resource: l.resource.name(),
                soft: l.soft,
                hard: l.hard,
            });
        }
        s.limits.push((rlimit_resource(l.resource), soft, hard));
    }
    // The supervisor raised its own fd limit; a job gets the one it was given.
    if let Some((soft, hard)) = crate::fdlimit::for_jobs()
        && !def
            .limits
            .iter()
            .any(|l| l.resource == crate::job::Resource::Nofile)
    {
        s.limits
            .push((rlimit_resource(crate::job::Resource::Nofile), soft, hard));
    }
    s.nice = def.nice;
    s.oom_score_adj = def.oom_score.map(|o| {
        let score = match o {
            OomScore::Adj(n) => n,
            OomScore::Never => -1000,
        };
        CString::new(score.to_string()).unwrap_or_default()
    });
    if let Some(root) = &def.chroot {
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::ChrootNotDirectory(root.clone())),
            Err(source) => {
                return Err(Error::Chroot {
                    root: root.clone(),
                    source,
                });
            }
        }
        s.chroot = Some(cstring("chroot", root)?);
    }
    let (ids, login) = identity(def)?;
    s.ids = ids;
    out.login = login;
    if let Some(names) = &def.capabilities {
        s.last_cap = last_cap();
        let mut mask = 0u64;
        for name in names {
            let Some(n) = CAPABILITIES.iter().position(|c| c == name) else {
                return Err(Error::UnknownCapability(name.clone()));
            };
            if n as u32 > s.last_cap {
                return Err(Error::CapabilityNotInKernel(name.clone()));
            }
            mask |= 1 << n;
        }
        s.capabilities = Some(mask);
    }
    s.no_new_privs = def.no_new_privileges;
    // Every process of the job, as its main one: a pre-start sees what main sees.
    s.mounts = crate::sandbox::resolve(&def.sandbox)?;
    s.syscall_filters = crate::sandbox::cached_syscall_filters(&def.sandbox)?;
    // As Upstart: only the main process is confined, not the pre- and post- ones.
    if let Some(profile) = def
        .apparmor_switch
        .as_ref()
        .filter(|_| kind == ProcessKind::Main)
    {
        let profile =
            crate::events::expand(profile, env).map_err(|source| Error::AppArmorProfile {
                profile: profile.clone(),
                source,
            })?;
        if apparmor.enabled {
            s.apparmor = Some((
                AppArmorHost::exec_attr().to_owned(),
                cstring("apparmor switch", &format!("exec {profile}"))?,
            ));
        } else {
            out.warnings.push(format!(
                "apparmor switch {profile}: AppArmor is not enabled on this system; the main process runs unconfined"
            ));
        }
    }
    if let Some(file) = def
        .apparmor_load
        .as_ref()
        .filter(|_| kind == ProcessKind::Main)
    {
        out.warnings.push(format!(
            "apparmor load {file}: not carried out by keel (load the profile before the job starts)"
        ));
    }
    Ok(out)
}

/// The uid, gid and groups of `setuid`/`setgid`, and the login variables.
fn identity(def: &JobDef) -> Result<(Option<Ids>, Option<Login>), Error> {
    use nix::unistd::{Gid, Group, Uid, User};
    if def.setuid.is_none() && def.setgid.is_none() {
        return Ok((None, None));
    }
    let user = match &def.setuid {
        Some(name) => Some(
            User::from_name(name)
                .map_err(|source| Error::UserDatabase {
                    name: name.clone(),
                    source,
                })?
                .ok_or_else(|| Error::NoSuchUser(name.clone()))?,
        ),
        None => None,
    };
    let gid = match (&def.setgid, &user) {
        (Some(name), _) => {
            Group::from_name(name)
                .map_err(|source| Error::GroupDatabase {
                    name: name.clone(),
                    source,
                })?
                .ok_or_else(|| Error::NoSuchGroup(name.clone()))?
                .gid
        }
        (None, Some(u)) => u.gid,
        (None, None) => Gid::effective(),
    };
    // The supplementary groups of the user the job runs as, as initgroups(3) would
    // set them (Upstart did the same, for the supervisor's own user with `setgid`
    // alone).
    let member = match &user {
        Some(u) => Some(u.name.clone()),
        None => User::from_uid(Uid::effective())
            .ok()
            .flatten()
            .map(|u| u.name),
    };
    let groups = match member {
        Some(name) => {
            let cname = cstring("setuid", &name)?;
            nix::unistd::getgrouplist(&cname, gid)
                .map_err(|source| Error::Groups {
                    name: name.clone(),
                    source,
                })?
                .into_iter()
                .map(|g| g.as_raw())
                .collect()
        }
        None => vec![gid.as_raw()],
    };
    let login = user.as_ref().map(|u| Login {
        user: u.name.clone(),
        home: u.dir.to_string_lossy().into_owned(),
        shell: u.shell.to_string_lossy().into_owned(),
    });
    Ok((
        Some(Ids {
            uid: user.map(|u| u.uid.as_raw()),
            gid: gid.as_raw(),
            groups,
        }),
        login,
    ))
}

/// The highest capability number of this kernel (`/proc/sys/kernel/cap_last_cap`),
/// or the highest keel knows when that cannot be read.
fn last_cap() -> u32 {
    let known = CAPABILITIES.len() as u32 - 1;
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(known, |n| n.min(63))
}

fn show_limit(v: LimitValue) -> String {
    match v {
        LimitValue::Value(n) => n.to_string(),
        LimitValue::Unlimited => "unlimited".into(),
    }
}

fn cstring(stanza: &'static str, s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Nul {
        stanza,
        text: s.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse;

    fn def(text: &str) -> JobDef {
        parse("j", text).def.expect("parses")
    }

    fn prepared(text: &str) -> Result<Prepared, String> {
        prepare(
            &def(text),
            ProcessKind::Main,
            &[],
            &AppArmorHost { enabled: false },
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn limits_become_rlimits_and_bad_ones_are_refused() {
        let p = prepared("limit nofile 10 20\nlimit core unlimited unlimited\nexec x\n").unwrap();
        assert_eq!(
            p.setup.limits,
            [
                (rlimit_resource(crate::job::Resource::Nofile), 10, 20),
                (
                    rlimit_resource(crate::job::Resource::Core),
                    libc::RLIM_INFINITY,
                    libc::RLIM_INFINITY
                )
            ]
        );
        assert_eq!(
            prepared("limit nofile 30 20\nexec x\n").unwrap_err(),
            "limit nofile: the soft limit 30 is above the hard limit 20"
        );
    }

    #[test]
    fn users_and_groups_resolve_with_supplementary_groups() {
        let p = prepared("setuid root\nexec x\n").unwrap();
        let ids = p.setup.ids.unwrap();
        assert_eq!((ids.uid, ids.gid), (Some(0), 0));
        assert!(ids.groups.contains(&0));
        assert_eq!(p.login.unwrap().user, "root");
        assert_eq!(
            prepared("setuid no-such-user-here\nexec x\n").unwrap_err(),
            "setuid no-such-user-here: no such user"
        );
        assert_eq!(
            prepared("setgid no-such-group-here\nexec x\n").unwrap_err(),
            "setgid no-such-group-here: no such group"
        );
        let g = prepared("setgid root\nexec x\n").unwrap();
        assert_eq!(g.setup.ids.unwrap().uid, None);
        assert!(g.login.is_none(), "login variables only for setuid");
    }

    #[test]
    fn capabilities_become_a_mask() {
        let p = prepared("capabilities net_bind_service kill\nexec x\n").unwrap();
        assert_eq!(p.setup.capabilities, Some(1 << 10 | 1 << 5));
        let none = prepared("capabilities none\nexec x\n").unwrap();
        assert_eq!(none.setup.capabilities, Some(0));
        assert_eq!(prepared("exec x\n").unwrap().setup.capabilities, None);
    }

    #[test]
    fn oom_scores_and_a_missing_chroot() {
        let p = prepared("oom score never\nexec x\n").unwrap();
        assert_eq!(p.setup.oom_score_adj.as_deref(), Some(c"-1000"));
        let err = prepared("chroot /no/such/dir\nexec x\n").unwrap_err();
        assert_eq!(err, "chroot /no/such/dir: No such file or directory");
    }

    #[test]
    fn apparmor_without_apparmor_is_a_warning_for_main_only() {
        let text = "apparmor switch prof-$X\nexec x\n";
        let env = [("X".to_string(), "1".to_string())];
        let off = AppArmorHost { enabled: false };
        let p = prepare(&def(text), ProcessKind::Main, &env, &off).unwrap();
        assert!(p.setup.apparmor.is_none());
        assert!(p.warnings[0].starts_with("apparmor switch prof-1: AppArmor is not enabled"));
        let pre = prepare(&def(text), ProcessKind::PreStart, &env, &off).unwrap();
        assert!(pre.warnings.is_empty());
        let on = AppArmorHost { enabled: true };
        let p = prepare(&def(text), ProcessKind::Main, &env, &on).unwrap();
        assert_eq!(p.setup.apparmor.unwrap().1.as_c_str(), c"exec prof-1");
    }
}
