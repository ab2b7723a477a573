//! keel's man pages, written by `initctl man [PAGE]`.
//!
//! initctl(8) is clap's page from initctl's one CLI definition, with the sections
//! clap knows nothing of added after it; the other pages are short roff texts
//! drawn from the README (which stays the full reference). Every page ends in
//! SEE ALSO naming only pages of this list.

use std::io::Write;

/// The pages, by the name `initctl man` takes.
pub const PAGES: &[&str] = &["initctl", "keel-init", "keel-supervisor", "keel-job"];

const SEE_ALSO: &str = ".SH \"SEE ALSO\"\n\\fBinitctl\\fR(8), \\fBkeel\\-init\\fR(8), \\fBkeel\\-supervisor\\fR(8), \\fBkeel\\-job\\fR(5)\n";

/// Writes `page` (one of [`PAGES`]) as roff to `out`.
pub fn write(page: &str, out: &mut impl Write) -> Result<(), String> {
    let text = match page {
        "initctl" => initctl()?,
        "keel-init" => KEEL_INIT.to_string(),
        "keel-supervisor" => KEEL_SUPERVISOR.to_string(),
        "keel-job" => KEEL_JOB.to_string(),
        other => {
            return Err(format!(
                "no man page {other}: there are {}",
                PAGES.join(", ")
            ));
        }
    };
    out.write_all((text + SEE_ALSO).as_bytes())
        .map_err(|e| e.to_string())
}

fn initctl() -> Result<String, String> {
    let cmd = <crate::Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .render(&mut page)
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&page).into_owned() + INITCTL_MORE)
}

const INITCTL_MORE: &str = r#".SH LINKS
Invoked as \fBstart\fR, \fBstop\fR, \fBrestart\fR, \fBreload\fR, \fBstatus\fR,
\fBtelinit\fR, \fBrunlevel\fR, \fBpoweroff\fR, \fBreboot\fR or \fBhalt\fR
(a link to initctl), initctl is that command.
.SH ENVIRONMENT
.TP
.B KEEL_SOCKET
The supervisor's control socket, where \fB\-\-socket\fR is not given.
.SH FILES
.TP
.I /run/keel/control
The supervisor's control socket (default).
.TP
.I /var/log/keel/JOB.log
A job's log, read by \fBinitctl log\fR.
.SH "EXIT STATUS"
0 on success; 1 on any error, which is printed on standard error as
\fINAME\fR: \fIMESSAGE\fR.
"#;

const KEEL_INIT: &str = r#".TH KEEL\-INIT 8 "" keel "System Manager's Manual"
.SH NAME
keel\-init \- keel's PID 1
.SH SYNOPSIS
.B keel\-init
[\fB\-\-supervisor\fR \fIPATH\fR] [\fB\-\-shutdown\fR \fIPATH\fR]
[\fB\-\-\fR \fISUPERVISOR_ARGS\fR...]
.SH DESCRIPTION
keel\-init reaps every process, relays signals to keel\-supervisor, keeps its
lifeboat of file descriptors, restarts the supervisor when it dies, and at the
end executes keel\-shutdown for the power action.
It runs only as PID 1: of the machine (the kernel's \fBinit=\fR), or of a PID
namespace.
.SH OPTIONS
.TP
.BI \-\-supervisor " PATH"
The supervisor (\fBkeel.supervisor=\fR on the kernel command line).
.TP
.BI \-\-shutdown " PATH"
The program executed for the power action (\fBkeel.shutdown=\fR).
.TP
.BR \-\-help ", " \-\-version
Print the usage or the version and exit (not as PID 1).
.SH ENVIRONMENT
keel\-init reads no environment variables; it passes its environment to the
supervisor.
.SH FILES
.TP
.I /sbin/keel\-supervisor
The supervisor (default).
.TP
.I /sbin/keel\-shutdown
The power action's program (default).
.SH "EXIT STATUS"
As PID 1 it never exits. Otherwise 0 after \fB\-\-help\fR or
\fB\-\-version\fR, and 2 when it is not PID 1.
"#;

const KEEL_SUPERVISOR: &str = r#".TH KEEL\-SUPERVISOR 8 "" keel "System Manager's Manual"
.SH NAME
keel\-supervisor \- keel's supervisor: job files, lifecycles, events, the control socket
.SH SYNOPSIS
.B keel\-supervisor
[\fIOPTIONS\fR]
.SH DESCRIPTION
keel\-supervisor reads the job files, runs every job's lifecycle on events and
on requests, and serves the control socket that \fBinitctl\fR(8) speaks to.
keel\-init starts it, and restarts it, without losing a job, when it dies or is
re\-executed.
.SH OPTIONS
.TP
.BI \-\-confdir " DIR"
The directory of job files (\fINAME\fR.conf).
.TP
.BI \-\-socket " PATH"
The control socket.
.TP
.BI \-\-notify\-socket " PATH|@NAME"
The sd_notify socket for \fBexpect notify\fR jobs.
.TP
.BI \-\-logdir " DIR"
The directory for \fBconsole log\fR output.
.TP
.BI \-\-log\-size " SIZE"
The size cap of one job log file (bytes, or with K, M or G; 0 for none).
.TP
.BI \-\-log\-keep " N"
How many rotated job log files are kept.
.TP
.BI \-\-cgroup\-root " PATH"
keel's cgroup2 subtree for job cgroups (\fBnone\fR: no cgroups).
.TP
.BI \-\-fstab " PATH\fR|\fBnone"
The fstab whose mounts give mountall's events (\fBmounted\fR,
\fBlocal\-filesystems\fR, ...; see \fBkeel\-job\fR(5)). Default:
\fI/etc/fstab\fR as the machine's init, otherwise none.
.TP
.BI \-\-config " FILE"
The configuration file: \fIKEY\fR=\fIVALUE\fR lines named like these options.
.TP
.BI \-\-check " PATH..."
Check job files or directories offline and exit.
.SH ENVIRONMENT
.TP
.B KEEL_NOTIFY_SOCKET
As \fB\-\-notify\-socket\fR.
.TP
.B KEEL_LOG_SIZE
As \fB\-\-log\-size\fR.
.TP
.B KEEL_LOG_KEEP
As \fB\-\-log\-keep\fR.
.TP
.B KEEL_CGROUP_ROOT
As \fB\-\-cgroup\-root\fR.
.SH FILES
.TP
.I /etc/init/*.conf
Job files, and their \fI.override\fR files.
.TP
.I /etc/keel/supervisor.conf
The configuration file.
.TP
.I /etc/fstab
The mounts whose events keel emits, as mountall did.
.TP
.I /run/keel/control
The control socket.
.TP
.I /var/log/keel
Job logs.
.SH "EXIT STATUS"
With \fB\-\-check\fR: 0 when every job file loads, 1 if any does not.
Otherwise the supervisor exits only when keel\-init ends the machine.
"#;

const KEEL_JOB: &str = r#".TH KEEL\-JOB 5 "" keel "File Formats Manual"
.SH NAME
keel\-job \- keel's job files, in Upstart's language
.SH SYNOPSIS
.I /etc/init/NAME.conf
.br
.I /etc/init/NAME.override
.SH DESCRIPTION
A job file describes one job in Upstart 1.13's language, as in Upstart's
\fBinit\fR(5): its processes (\fBexec\fR or \fBscript\fR ... \fBend script\fR,
\fBpre\-start\fR, \fBpost\-start\fR, \fBpre\-stop\fR, \fBpost\-stop\fR), when it
runs (\fBstart on\fR, \fBstop on\fR, \fBmanual\fR), whether it is a \fBtask\fR,
\fBrespawn\fR, \fBinstance\fR, \fBenv\fR, \fBexport\fR, \fBexpect\fR,
\fBconsole\fR, \fBsetuid\fR, \fBsetgid\fR, \fBchdir\fR, \fBchroot\fR,
\fBumask\fR, \fBnice\fR, \fBoom score\fR, \fBlimit\fR, \fBkill signal\fR,
\fBkill timeout\fR, \fBreload signal\fR, \fBnormal exit\fR, \fBemits\fR,
\fBusage\fR and \fBdescription\fR.
An error is reported as \fIFILE\fR:\fILINE\fR:\fICOLUMN\fR: \fIMESSAGE\fR and
the other jobs load.
.PP
keel adds:
.TP
.BI "script " "INTERPRETER \fR[\fIARG\fR...]"
A script in another language (default \fB/bin/sh \-e\fR).
.TP
.BR "expect notify" ", " "expect fd \fIN" ", " "expect listen" ", " "expect dbus \fINAME" ", " "ready timeout \fISECONDS"
Readiness protocols.
.TP
.BI "capabilities " "CAP...\fR|\fBnone"
The job's capability set.
.TP
.B no new privileges
No exec gains privileges.
.TP
.BI "limit rttime " "SOFT HARD"
The real\-time CPU limit.
.TP
.B private tmp\fR, \fBprivate devices\fR, \fBprotect system\fR, \fBprotect home\fR, \fBread\-only\fR, \fBwritable\fR, \fBinaccessible\fR, \fBsyscalls allow\fR, \fBsyscalls deny\fR, \fBaddress families\fR ...
The sandbox; \fBinitctl security\fR rates it.
.TP
.BI "syscalls allow " "NAME|@GROUP..." "\fR, \fBsyscalls deny " "NAME|@GROUP..."
Only these system calls (allow), or all but these (deny); the others get
\fBsyscall action eperm\fR|\fBkill\fR. Groups: @aio, @basic\-io, @chown, @clock,
@cpu\-emulation, @credentials, @debug, @default, @file\-system, @io\-event, @ipc,
@keyring, @memlock, @module, @mount, @network\-io, @privileged, @process,
@raw\-io, @reboot, @resources, @setuid, @signal, @swap, @sync, @system\-service,
@timer (their calls: README, "System\-call filters"). A list that refuses
\fBexecve\fR, \fBexit_group\fR or \fBwrite\fR fails the start.
.SH EVENTS
Besides the events jobs emit (\fBinitctl emit\fR), keel emits Upstart's:
\fBstartup\fR; \fBstarting\fR, \fBstarted\fR, \fBstopping\fR, \fBstopped\fR
(\fBJOB\fR, \fBINSTANCE\fR, \fBRESULT\fR, ...); \fBrunlevel\fR;
\fBcontrol\-alt\-delete\fR, \fBkeyboard\-request\fR,
\fBpower\-status\-changed\fR; and those Upstart's bridges and mountall emitted:
.TP
.B socket
\fBPROTO\fR, \fBPORT\fR, \fBADDR\fR or \fBSOCKET_PATH\fR: the first connection
to a socket a job's \fBstart on\fR names (upstart\-socket\-bridge).
.TP
.B file
\fBFILE\fR, \fBEVENT\fR (create, modify, delete), \fBMATCH\fR
(upstart\-file\-bridge).
.TP
\fISUBSYSTEM\fB\-device\-added\fR, \fB\-device\-changed\fR, \fB\-device\-removed\fR
\fBKERNEL\fR, \fBDEVPATH\fR, \fBDEVNAME\fR, \fBSUBSYSTEM\fR, \fBACTION\fR and
udev's properties (\fBINTERFACE\fR, \fBID_FS_TYPE\fR, ...), from udev's monitor,
or the kernel's uevents where no udevd runs (upstart\-udev\-bridge).
.TP
.BR net\-device\-up ", " net\-device\-down
\fBIFACE\fR, \fBLOGICAL\fR, \fBADDRFAM\fR, \fBMETHOD\fR, from ifupdown's hooks.
.TP
.B mounted
\fBMOUNTPOINT\fR, \fBTYPE\fR, \fBDEVICE\fR, \fBOPTIONS\fR: an fstab entry is
mounted as fstab says (mountall).
.TP
.BR virtual\-filesystems ", " local\-filesystems ", " remote\-filesystems ", " filesystem
Every fstab entry of that class is mounted; \fBfilesystem\fR after the three
(mountall). Each once per boot.
.SH ENVIRONMENT
A job's processes get the job\-environment table (\fBinitctl list\-env\fR),
its \fBenv\fR stanzas, and the variables of the event that started it.
.SH FILES
.TP
.I /etc/init/NAME.conf
The job \fINAME\fR.
.TP
.I /etc/init/NAME.override
Stanzas that replace the job file's.
.SH "EXIT STATUS"
Not applicable to a file; \fBkeel\-supervisor \-\-check\fR exits 1 when a job
file does not load.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_page_is_refused_naming_the_pages() {
        let e = write("nope", &mut Vec::new()).unwrap_err();
        assert!(
            e.contains("initctl, keel-init, keel-supervisor, keel-job"),
            "{e}"
        );
    }
}
