//! Job logs (`console log`): each instance's stdout and stderr, through a pipe whose
//! read end lives in keel-init's lifeboat, into `LOGDIR/JOB.log`
//! (`JOB-INSTANCE.log`; `/` in names becomes `_`, as in Upstart).
//!
//! One pipe per instance: every process of the instance gets a write end (a fresh
//! one opened through `/proc/self/fd/N` of the read end, so the supervisor itself
//! holds none and sees EOF once the last writer is gone). The read end is deposited
//! as `log:ID` (ID a number kept in the saved state, [`Saved`]) and watched by the
//! event loop; a new supervisor takes it back and goes on reading.
//!
//! Exactly once across a kill -9 or a re-exec: bytes move from the pipe into the file
//! with `splice(2)` at the file's current length, so each byte is either still in
//! the pipe or already in the file — never in a buffer the supervisor could lose.
//!
//! Each line starts with the time (UTC) its first bytes were moved into the file,
//! `2026-12-07T04:40:01.123Z ` (the file stays plain text: `cut -d' ' -f2-`
//! gives the job's own output back). The bytes still move by `splice`; the
//! supervisor only peeks at them (`tee(2)` into a pipe of its own) to find where
//! a line ends, writes the time when the file ends at a line start, then splices
//! the line. Whether a time is due is read from the file (its last byte), so a
//! supervisor killed between the time and its line leaves a successor that
//! splices the line after that time, not a second one. Output kept early (below)
//! is written out as it came, without times.
//!
//! Size cap and rotation: a file never grows past `--log-size` bytes (0: no cap);
//! when full, `JOB.log` becomes `JOB.log.1` (`.1` → `.2` …, `--log-keep` kept) and a
//! new `JOB.log` starts. So a chatty job holds at most (keep + 1) × size bytes.
//! Rotation is at a line boundary: an unfinished last line moves to the new file
//! (a line longer than the cap is the exception: cut where the file is full).
//!
//! Early log: while LOGDIR cannot be written (its parent missing, a read-only file
//! system, a full disk), output is spliced into a memfd deposited as `early:ID`
//! (at most [`EARLY_MAX`] bytes, or the cap if smaller; beyond that it is counted
//! and dropped, and a line in the log says how much; when the disk has room for
//! the note but not for the output kept, that output is dropped too and counted
//! in the note). Writing it out is retried when
//! output arrives (at most once a second) and on `initctl notify-disk-writeable`;
//! the flush first saves the file's length in the state (`flush_base`), so a
//! supervisor that dies mid-flush is followed by one that truncates the file back to
//! it and flushes again — nothing lost, nothing twice.
//!
//! A pipe is closed once it is drained and every writer has closed it (EOF), whether
//! or not its instance still exists; the next process of the instance gets a new one.
//! Its log file closes with it, and at most [`OPEN_FILES_MAX`] files are open at
//! once, so the supervisor's fds do not grow with the jobs that ever wrote.
//!
//! LOGDIR is trusted only once checked ([`open_logdir`]): keel creates it (0755,
//! if its parent passes the check) or verifies it, walking the whole path from `/`
//! one directory fd at a time: every directory owned by root (or the supervisor's
//! own uid), none writable by others (group-writable only for group root; a sticky
//! ancestor such as /tmp may be world-writable), LOGDIR itself no symlink, an
//! ancestor symlink followed only if root owns it. Log files are then opened
//! relative to that fd (`O_NOFOLLOW`) and must be regular files of root's. A
//! LOGDIR that fails is refused with an error saying why, and output is kept in
//! memory as when the disk is not writable — never written into someone else's
//! files, nor read back from them.

use crate::initlink::InitLink;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default size cap of one log file.
pub const DEFAULT_SIZE: u64 = 16 << 20;
/// The default number of rotated files kept (`JOB.log.1` … `JOB.log.N`).
pub const DEFAULT_KEEP: u32 = 3;
/// Log files kept open at once. Without a bound the supervisor would hold one
/// per job that ever wrote, besides its pipe and pidfd: 10,000 jobs would cost
/// 30,000 fds.
pub const OPEN_FILES_MAX: usize = 64;
/// The most output kept per instance while LOGDIR cannot be written.
pub const EARLY_MAX: u64 = 1 << 20;
/// Bytes moved per splice.
const CHUNK: usize = 64 << 10;
/// Bytes moved from one pipe per round of the event loop, so one chatty job never
/// keeps the loop from everything else.
const ROUND_BUDGET: usize = 1 << 20;
/// Retries of an early log's flush, at most this often (unless asked).
const RETRY: Duration = Duration::from_secs(1);

/// The log pipes as the saved state keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub next_id: u64,
    /// A journal table: saved entry by entry.
    pub pipes: keel_core::journal::Tracked<u64, SavedPipe>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPipe {
    pub job: String,
    pub instance: String,
    /// Output goes to the early memfd (LOGDIR could not be written).
    pub early: bool,
    /// A flush in progress: the file's length before it.
    pub flush_base: Option<u64>,
    /// Bytes dropped because the early buffer was full.
    pub dropped: u64,
    /// The pipe reached EOF (only its early buffer is left to write out).
    pub closed: bool,
}

/// `--logdir`, `--log-size`, `--log-keep`.
#[derive(Clone, Debug)]
pub struct Config {
    pub dir: PathBuf,
    /// The size cap of one file; 0 for none.
    pub size: u64,
    pub keep: u32,
}

pub fn pipe_name(id: u64) -> String {
    format!("log:{id}")
}

pub fn early_name(id: u64) -> String {
    format!("early:{id}")
}

/// `JOB.log` or `JOB-INSTANCE.log`, `/` as `_`.
pub fn file_name(job: &str, instance: &str) -> String {
    let base = if instance.is_empty() {
        job.replace('/', "_")
    } else {
        format!("{}-{}", job.replace('/', "_"), instance.replace('/', "_"))
    };
    format!("{base}.log")
}

/// The open fds behind [`Saved`].
pub struct Logs {
    config: Config,
    pipes: BTreeMap<u64, OwnedFd>,
    early: BTreeMap<u64, OwnedFd>,
    /// Read ends of pipes that closed, until the caller has taken them out of its
    /// epoll set (`take_closed`): closing our fd alone would not, while keel-init
    /// still holds its copy of the pipe (epoll watches the pipe, not the fd), and
    /// epoll would go on reporting the hang-up of a pipe nobody reads.
    closed: Vec<OwnedFd>,
    /// Open log files, each with when it was last used ([`Logs::file`]).
    files: BTreeMap<String, (std::fs::File, u64)>,
    uses: u64,
    null: Option<OwnedFd>,
    /// A pipe of the supervisor's own (read, write end): a copy of a log pipe's
    /// bytes, read to find where lines end (see the module docs).
    peek: Option<(OwnedFd, OwnedFd)>,
    last_try: Option<Instant>,
    /// An early log is to be written out after this round.
    pub flush_wanted: bool,
}

impl Logs {
    pub fn new(config: Config) -> Logs {
        Logs {
            config,
            pipes: BTreeMap::new(),
            early: BTreeMap::new(),
            closed: Vec::new(),
            files: BTreeMap::new(),
            uses: 0,
            null: None,
            peek: None,
            last_try: None,
            flush_wanted: false,
        }
    }

    /// Takes back the pipes and early buffers a previous supervisor left in the
    /// lifeboat, drops what the saved state does not know (withdrawn), and undoes
    /// a flush cut short. Returns the ids of the pipes to watch.
    pub fn recover(
        &mut self,
        saved: &mut Saved,
        entries: Vec<(String, OwnedFd)>,
        link: Option<&InitLink>,
    ) -> Vec<u64> {
        for (name, fd) in entries {
            let parsed = |prefix: &str| name.strip_prefix(prefix)?.parse::<u64>().ok();
            match (parsed("log:"), parsed("early:")) {
                (Some(id), _) if saved.pipes.get(&id).is_some_and(|p| !p.closed) => {
                    self.pipes.insert(id, fd);
                }
                (_, Some(id)) if saved.pipes.get(&id).is_some_and(|p| p.early) => {
                    self.early.insert(id, fd);
                }
                _ => {
                    // A pipe of a round never saved, or an early buffer already
                    // written out.
                    if let Some(link) = link {
                        let _ = link.withdraw(&name);
                    }
                }
            }
        }
        saved.pipes.retain(|id, p| {
            if !self.pipes.contains_key(id) {
                p.closed = true;
            }
            if p.early && !self.early.contains_key(id) && p.dropped == 0 {
                // Nothing was kept early.
                p.early = false;
            }
            !p.closed || p.early
        });
        // Only the pipes with a flush to undo change (and are saved again).
        let unfinished: Vec<u64> = saved
            .pipes
            .iter()
            .filter(|(_, p)| p.flush_base.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in unfinished {
            let Some(p) = saved.pipes.get_mut(&id) else {
                continue;
            };
            if let Some(base) = p.flush_base.take() {
                let path = self.config.dir.join(file_name(&p.job, &p.instance));
                let file = open_logdir(&self.config.dir)
                    .and_then(|dir| open_log_file(&dir, &file_name(&p.job, &p.instance)));
                match file {
                    Ok(f) => {
                        let _ = f.set_len(base);
                        tracing::info!(
                            "undoing an unfinished flush of {} (log {id})",
                            path.display()
                        );
                    }
                    Err(e) => tracing::warn!("cannot undo a flush of {}: {e}", path.display()),
                }
                self.flush_wanted = true;
            }
        }
        self.pipes.keys().copied().collect()
    }

    /// The read ends of the pipes that closed since the last call, to be taken
    /// out of the caller's epoll set before they are dropped.
    pub fn take_closed(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.closed)
    }

    /// Closes every open log file, so that none keeps its filesystem busy (the
    /// power action is next); the number closed. A later write opens it again.
    pub fn close_files(&mut self) -> usize {
        std::mem::take(&mut self.files).len()
    }

    pub fn pipe_fd(&self, id: u64) -> Option<BorrowedFd<'_>> {
        self.pipes.get(&id).map(|f| f.as_fd())
    }

    /// A write end of the instance's log pipe for one more process, and the id of
    /// the pipe if it is new (to be watched).
    pub fn writer(
        &mut self,
        saved: &mut Saved,
        link: Option<&InitLink>,
        job: &str,
        instance: &str,
    ) -> std::io::Result<(OwnedFd, Option<u64>)> {
        let open = saved
            .pipes
            .iter()
            .find(|(id, p)| p.job == job && p.instance == instance && self.pipes.contains_key(id))
            .map(|(id, _)| *id);
        if let Some(fd) = open.and_then(|id| self.pipes.get(&id)) {
            use rustix::fs::{Mode, OFlags};
            let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let w = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
            return Ok((w, None));
        }
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // Only the supervisor's end is non-blocking: a job writes as to any pipe.
        rustix::io::ioctl_fionbio(&r, true)?;
        let id = saved.next_id;
        saved.next_id += 1;
        // Without its place in the lifeboat the pipe would die with this
        // supervisor, and the job at its next write: the start fails instead.
        if let Some(link) = link {
            link.deposit_for_job(&pipe_name(id), r.as_fd())?;
        }
        saved.pipes.insert(
            id,
            SavedPipe {
                job: job.to_string(),
                instance: instance.to_string(),
                ..SavedPipe::default()
            },
        );
        self.pipes.insert(id, r);
        Ok((w, Some(id)))
    }

    /// Moves what pipe `id` holds into its file (or early buffer). Returns whether
    /// the state must be saved before anything else happens: the pipe went early,
    /// or closed with an early buffer left. An ordinary pipe that closes needs no
    /// save of its own: a successor whose saved state still names it finds it gone
    /// from the lifeboat and drops it (`recover`). So a job's exit and its respawn
    /// cost one save, not two.
    pub fn drain(&mut self, saved: &mut Saved, link: Option<&InitLink>, id: u64) -> bool {
        let Some(p) = saved.pipes.get_mut(&id) else {
            // Not ours (any more).
            self.closed.extend(self.pipes.remove(&id));
            return false;
        };
        let mut changed = false;
        let mut moved = 0;
        while moved < ROUND_BUDGET {
            let Some(pipe) = self.pipes.get(&id) else {
                return changed;
            };
            let step = match nothing_left(pipe) {
                Some(end) => end,
                None if p.early => self.splice_to_early(p, id, link, &mut changed),
                None => self.splice_to_file(p, pipe.as_raw_fd()),
            };
            match step {
                Ok(0) => {
                    // Every writer is gone and the pipe is empty. Its file is
                    // closed too: an fd per job that has ended would add up.
                    self.closed.extend(self.pipes.remove(&id));
                    self.files.remove(&file_name(&p.job, &p.instance));
                    if let Some(link) = link {
                        let _ = link.withdraw(&pipe_name(id));
                    }
                    p.closed = true;
                    if !p.early {
                        saved.pipes.remove(&id);
                        return changed;
                    }
                    return true;
                }
                Ok(n) => moved += n,
                Err(Step::Empty) => return changed,
                Err(Step::FileFailed(e)) => {
                    tracing::warn!(
                        "cannot write the log of {}: {e}; keeping its output until {} can be written",
                        p.job,
                        self.config.dir.display()
                    );
                    p.early = true;
                    changed = true;
                }
                Err(Step::Rotated) => {}
                Err(Step::PipeFailed(e)) => {
                    tracing::error!("cannot read the log pipe of {}: {e}", p.job);
                    return changed;
                }
            }
        }
        changed
    }

    fn splice_to_file(&mut self, p: &SavedPipe, pipe: i32) -> Result<usize, Step> {
        let name = file_name(&p.job, &p.instance);
        let cap = self.config.size;
        let file = self.file(&name).map_err(Step::FileFailed)?;
        let meta = file.metadata().map_err(Step::FileFailed)?;
        let mut offset = meta.len();
        if cap > 0 && offset >= cap {
            self.rotate(&name);
            return Err(Step::Rotated);
        }
        let len = if cap > 0 {
            (cap - offset).min(CHUNK as u64) as usize
        } else {
            CHUNK
        };
        // SAFETY: `pipe` is the open read end in `self.pipes`, borrowed for the call.
        let pipe = unsafe { BorrowedFd::borrow_raw(pipe) };
        let file = self.files.get(&name).map(|(f, _)| f).ok_or(Step::Empty)?;
        let Some(line) = peek_line(&mut self.peek, pipe, len)? else {
            return Ok(0); // every writer gone, nothing left
        };
        let mut line = line;
        if at_line_start(file, offset).map_err(Step::FileFailed)? {
            let stamp = format!("{} ", utc_stamp(std::time::SystemTime::now()));
            let stamped = offset + stamp.len() as u64;
            if cap > 0 && offset > 0 && stamped >= cap {
                // No room for the time and a byte of its line: a new file.
                self.rotate(&name);
                return Err(Step::Rotated);
            }
            if let Err(e) = write_at(file, stamp.as_bytes(), offset) {
                // A full disk may take part of it: never leave half a time.
                let _ = file.set_len(offset);
                return Err(Step::FileFailed(e));
            }
            offset = stamped;
            if cap > 0 {
                line = line.min(cap.saturating_sub(offset).max(1) as usize);
            }
        }
        splice(pipe, file, &mut offset, line)
    }

    fn splice_to_early(
        &mut self,
        p: &mut SavedPipe,
        id: u64,
        link: Option<&InitLink>,
        changed: &mut bool,
    ) -> Result<usize, Step> {
        if self.last_try.is_none_or(|t| t.elapsed() >= RETRY) {
            self.flush_wanted = true;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = self.early.entry(id) {
            let fd = rustix::fs::memfd_create("keel-early-log", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| Step::PipeFailed(e.into()))?;
            if let Some(link) = link
                && let Err(e) = link.deposit(&early_name(id), fd.as_fd())
            {
                tracing::error!(
                    "cannot keep the early log of {} in the lifeboat: {e}",
                    p.job
                );
            }
            slot.insert(fd);
            *changed = true;
        }
        let limit = self.early_limit();
        let pipe = self.pipes.get(&id).ok_or(Step::Empty)?;
        let buffer = self.early.get(&id).ok_or(Step::Empty)?;
        let mut offset = rustix::fs::fstat(buffer)
            .map_err(|e| Step::PipeFailed(e.into()))?
            .st_size as u64;
        if offset < limit {
            let len = (limit - offset).min(CHUNK as u64) as usize;
            return splice(pipe.as_fd(), buffer, &mut offset, len);
        }
        // Full: count and drop.
        if self.null.is_none() {
            use rustix::fs::{Mode, OFlags};
            self.null = Some(
                rustix::fs::open("/dev/null", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| Step::PipeFailed(e.into()))?,
            );
        }
        let null = self.null.as_ref().ok_or(Step::Empty)?;
        let pipe = self.pipes.get(&id).ok_or(Step::Empty)?;
        let n = match rustix::pipe::splice(
            pipe,
            None,
            null,
            None,
            CHUNK,
            rustix::pipe::SpliceFlags::NONBLOCK,
        ) {
            Ok(n) => n,
            Err(Errno::AGAIN) | Err(Errno::INTR) => return Err(Step::Empty),
            Err(e) => return Err(Step::PipeFailed(e.into())),
        };
        p.dropped += n as u64;
        *changed = true;
        Ok(n)
    }

    /// The early buffer's bound: [`EARLY_MAX`], or the file cap if smaller (so a
    /// flush always fits in one file).
    fn early_limit(&self) -> u64 {
        match self.config.size {
            0 => EARLY_MAX,
            cap => cap.min(EARLY_MAX),
        }
    }

    /// The open log file `name` in LOGDIR, opened (and LOGDIR made if needed) and
    /// checked ([`open_logdir`], [`open_log_file`]) when needed; a file unlinked
    /// behind keel's back is opened anew. At most [`OPEN_FILES_MAX`] stay open:
    /// beyond, the least recently used is closed (bytes go in at the file's length,
    /// so a file closed and opened again loses nothing).
    fn file(&mut self, name: &str) -> std::io::Result<&std::fs::File> {
        use std::os::unix::fs::MetadataExt;
        let stale = self
            .files
            .get(name)
            .is_some_and(|(f, _)| f.metadata().is_ok_and(|m| m.nlink() == 0));
        if stale {
            self.files.remove(name);
        }
        self.uses += 1;
        if !self.files.contains_key(name) {
            if self.files.len() >= OPEN_FILES_MAX
                && let Some(oldest) = self
                    .files
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(n, _)| n.clone())
            {
                self.files.remove(&oldest);
            }
            let dir = open_logdir(&self.config.dir)?;
            recover_rotation(&dir, name, self.config.keep);
            let f = open_log_file(&dir, name)?;
            self.files.insert(name.to_string(), (f, self.uses));
        }
        let (file, used) = self
            .files
            .get_mut(name)
            .ok_or_else(|| std::io::Error::other("log file vanished"))?;
        *used = self.uses;
        Ok(file)
    }

    /// `NAME` → `NAME.1` → … → `NAME.KEEP` (the oldest dropped); a new `NAME` next.
    /// At a line boundary: a last line not yet ended (its rest still to come)
    /// moves to the new `NAME` — unless it is the file's only line (a line
    /// longer than the cap is cut there). Crash-safe, see [`finish_rotation`].
    fn rotate(&mut self, name: &str) {
        self.files.remove(name);
        let Ok(dir) = open_logdir(&self.config.dir) else {
            return;
        };
        let next = format!("{name}.next");
        let carried = match carry_last_line(&dir, name, &next) {
            Ok(carried) => carried,
            Err(e) => {
                tracing::warn!("cannot rotate {name} at a line boundary: {e}");
                let _ = rustix::fs::unlinkat(&dir, &next, rustix::fs::AtFlags::empty());
                false
            }
        };
        if !carried && self.config.keep == 0 {
            if let Ok(f) = open_log_file(&dir, name) {
                let _ = f.set_len(0);
            }
            return;
        }
        finish_rotation(&dir, name, self.config.keep);
    }

    /// The ids of early logs to write out, when a flush is wanted; clears the wish.
    pub fn take_flushes(&mut self, saved: &Saved) -> Vec<u64> {
        if !self.flush_wanted {
            return Vec::new();
        }
        self.flush_wanted = false;
        self.last_try = Some(Instant::now());
        saved
            .pipes
            .iter()
            .filter(|(_, p)| p.early)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The first step of writing out early log `id`: opens the file (rotating it
    /// first if the buffer would not fit) and records its length as `flush_base`.
    /// False if LOGDIR still cannot be written; the caller saves the state next.
    pub fn flush_begin(&mut self, saved: &mut Saved, id: u64) -> bool {
        let Some(p) = saved.pipes.get_mut(&id) else {
            return false;
        };
        let name = file_name(&p.job, &p.instance);
        let pending = self
            .early
            .get(&id)
            .and_then(|f| rustix::fs::fstat(f).ok())
            .map_or(0, |s| s.st_size as u64)
            + dropped_note(p.dropped).len() as u64;
        let mut len = match self.file(&name).and_then(|f| f.metadata()) {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::debug!("{} still cannot be written: {e}", self.config.dir.display());
                return false;
            }
        };
        let cap = self.config.size;
        if cap > 0 && len > 0 && len + pending > cap {
            self.rotate(&name);
            len = match self.file(&name).and_then(|f| f.metadata()) {
                Ok(m) => m.len(),
                Err(_) => return false,
            };
        }
        p.flush_base = Some(len);
        true
    }

    /// The second step: copies the early buffer into the file at `flush_base`.
    /// On a write error the file is cut back and the log stays early.
    pub fn flush_copy(&mut self, saved: &mut Saved, id: u64) -> bool {
        use std::os::unix::fs::FileExt;
        let Some(p) = saved.pipes.get_mut(&id) else {
            return false;
        };
        let Some(base) = p.flush_base else {
            return false;
        };
        let name = file_name(&p.job, &p.instance);
        let note = dropped_note(p.dropped);
        let early = self.early.get(&id).map(|f| f.as_raw_fd());
        let Ok(file) = self.file(&name) else {
            p.flush_base = None;
            return false;
        };
        let mut at = base;
        let mut copy = || -> std::io::Result<()> {
            if let Some(early) = early {
                // SAFETY: `early` is the open memfd in `self.early`, borrowed here.
                let early = unsafe { BorrowedFd::borrow_raw(early) };
                let mut buf = vec![0u8; CHUNK];
                let mut from = 0u64;
                loop {
                    let n = rustix::io::pread(early, &mut buf, from)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all_at(&buf[..n], at)?;
                    from += n as u64;
                    at += n as u64;
                }
            }
            file.write_all_at(note.as_bytes(), at)
        };
        let Err(e) = copy() else {
            return true;
        };
        let _ = file.set_len(base);
        // The disk has less room than the output kept: drop it, and say so in a
        // note, which is short enough to fit where the output did not.
        let no_room = matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
        );
        if no_room {
            let kept = early.map_or(0, |fd| {
                // SAFETY: as above, the open memfd in `self.early`, borrowed here.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                rustix::fs::fstat(fd).map_or(0, |st| st.st_size as u64)
            });
            let note = dropped_note(p.dropped + kept);
            if file.write_all_at(note.as_bytes(), base).is_ok() {
                tracing::warn!(
                    "no room for the {kept} bytes of output of {} kept while its log could not be written: dropped",
                    p.job
                );
                return true;
            }
            let _ = file.set_len(base);
        }
        tracing::warn!("cannot write out the early log of {}: {e}", p.job);
        p.flush_base = None;
        false
    }

    /// The last step: the early buffer is written; output goes to the file again.
    pub fn flush_end(&mut self, saved: &mut Saved, link: Option<&InitLink>, id: u64) {
        let Some(p) = saved.pipes.get_mut(&id) else {
            return;
        };
        p.early = false;
        p.flush_base = None;
        p.dropped = 0;
        if p.closed {
            saved.pipes.remove(&id);
        }
        if self.early.remove(&id).is_some()
            && let Some(link) = link
        {
            let _ = link.withdraw(&early_name(id));
        }
    }

    /// The file of job log `name` (for tests and messages).
    pub fn path(&self, name: &str) -> PathBuf {
        self.config.dir.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }
}

/// Opens LOGDIR as a directory fd once it is safe to write into (see the module
/// docs), creating it (mode 0755) if it is missing and its parent is safe.
pub fn open_logdir(dir: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let trusted = [0, rustix::process::geteuid().as_raw()];
    let refuse = |why: Unsafe| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("log directory {} refused: {why}", dir.display()),
        )
    };
    let start = if dir.is_absolute() { "/" } else { "." };
    let mut cur = rustix::fs::open(
        start,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut shown = PathBuf::from(start);
    let components: Vec<_> = dir.components().collect();
    let last = components
        .iter()
        .rposition(|c| matches!(c, std::path::Component::Normal(_)));
    for (i, component) in components.iter().enumerate() {
        let std::path::Component::Normal(name) = component else {
            if *component == std::path::Component::ParentDir {
                cur = rustix::fs::openat(
                    &cur,
                    "..",
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                shown.push("..");
            }
            continue;
        };
        let is_logdir = Some(i) == last;
        check_dir(&cur, &shown, false, &trusted).map_err(&refuse)?;
        shown.push(name);
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let next = match rustix::fs::openat(&cur, *name, flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if is_logdir => {
                match rustix::fs::mkdirat(&cur, *name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                // Exactly 0755, whatever the supervisor's umask; only root can
                // swap the name meanwhile (its directory passed the check).
                let mode = Mode::from_raw_mode(0o755);
                let _ = rustix::fs::chmodat(&cur, *name, mode, rustix::fs::AtFlags::empty());
                rustix::fs::openat(&cur, *name, flags, Mode::empty())?
            }
            other => other?,
        };
        let link = rustix::fs::fstat(&next)?;
        let next =
            if rustix::fs::FileType::from_raw_mode(link.st_mode) == rustix::fs::FileType::Symlink {
                if is_logdir {
                    return Err(refuse(Unsafe::Symlink(shown)));
                }
                if !trusted.contains(&link.st_uid) {
                    return Err(refuse(Unsafe::ForeignSymlink {
                        path: shown,
                        uid: link.st_uid,
                    }));
                }
                rustix::fs::openat(
                    &cur,
                    *name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            } else {
                next
            };
        cur = next;
    }
    check_dir(&cur, &shown, true, &trusted).map_err(&refuse)?;
    Ok(cur)
}

/// Why a directory of LOGDIR's path is not safe to write logs under.
#[derive(Debug, thiserror::Error)]
enum Unsafe {
    #[error("{}: {source}", path.display())]
    Stat {
        path: PathBuf,
        source: rustix::io::Errno,
    },
    #[error("{} is not a directory", .0.display())]
    NotDirectory(PathBuf),
    #[error("{} is owned by uid {uid}, not root", path.display())]
    Owner { path: PathBuf, uid: u32 },
    #[error("{} is writable by others (mode {mode:o})", path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is a symlink", .0.display())]
    Symlink(PathBuf),
    #[error("{} is a symlink owned by uid {uid}", path.display())]
    ForeignSymlink { path: PathBuf, uid: u32 },
}

/// One directory of LOGDIR's path: owned by a trusted uid, not writable by
/// others (LOGDIR itself: not even if sticky).
fn check_dir(fd: &OwnedFd, shown: &Path, is_logdir: bool, trusted: &[u32]) -> Result<(), Unsafe> {
    let st = rustix::fs::fstat(fd).map_err(|source| Unsafe::Stat {
        path: shown.to_path_buf(),
        source,
    })?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Err(Unsafe::NotDirectory(shown.to_path_buf()));
    }
    if !trusted.contains(&st.st_uid) {
        return Err(Unsafe::Owner {
            path: shown.to_path_buf(),
            uid: st.st_uid,
        });
    }
    let sticky = st.st_mode & 0o1000 != 0 && !is_logdir;
    let group_writable = st.st_mode & 0o020 != 0 && st.st_gid != 0;
    if (st.st_mode & 0o002 != 0 && !sticky) || group_writable {
        return Err(Unsafe::Writable {
            path: shown.to_path_buf(),
            mode: st.st_mode & 0o7777,
        });
    }
    Ok(())
}

/// Opens (creating, mode 0640) log file `name` in the checked LOGDIR `dir`: no
/// symlink followed, and only a regular file owned by root (or the supervisor's
/// uid) is taken.
fn open_log_file(dir: &OwnedFd, name: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDWR
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NOCTTY
            | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o640),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    let own = rustix::process::geteuid().as_raw();
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || (st.st_uid != 0 && st.st_uid != own)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("log file {name} refused: not a regular file of root's"),
        ));
    }
    // Writes go at explicit offsets; the flag only kept a FIFO from blocking open.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(std::fs::File::from(fd))
}

/// The first step of a rotation at a line boundary: if `name` ends inside a
/// line that began after an earlier newline, that unfinished line is copied to
/// `next` and then cut off `name` (in this order, so a crash leaves it in
/// `name`, or in `next` with `name` ending at a newline: [`recover_rotation`]
/// tells the two apart). True if a line was carried.
fn carry_last_line(dir: &OwnedFd, name: &str, next: &str) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let file = open_log_file(dir, name)?;
    let len = file.metadata()?.len();
    let mut byte = [0u8; 1];
    if len == 0 || (file.read_at(&mut byte, len - 1)? == 1 && byte[0] == b'\n') {
        return Ok(false);
    }
    // The last newline, searched backwards a chunk at a time.
    let mut buf = vec![0u8; CHUNK];
    let mut end = len;
    let line_start = loop {
        if end == 0 {
            // One line fills the file: longer than the cap, cut here.
            return Ok(false);
        }
        let start = end.saturating_sub(CHUNK as u64);
        let part = &mut buf[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    let _ = rustix::fs::unlinkat(dir, next, rustix::fs::AtFlags::empty());
    let out = open_log_file(dir, next)?;
    let mut from = line_start;
    while from < len {
        let n = file.read_at(&mut buf, from)?;
        if n == 0 {
            break;
        }
        out.write_all_at(&buf[..n], from - line_start)?;
        from += n as u64;
    }
    file.set_len(line_start)?;
    Ok(true)
}

/// The rest of a rotation: `name` → `name.1` → … → `name.KEEP` (the oldest
/// dropped, or with KEEP 0 `name` itself), then `name.next` (a carried line),
/// if any, becomes `name`.
fn finish_rotation(dir: &OwnedFd, name: &str, keep: u32) {
    use rustix::fs::{AtFlags, renameat, unlinkat};
    let path = |n: u32| -> String {
        if n == 0 {
            name.to_string()
        } else {
            format!("{name}.{n}")
        }
    };
    let _ = unlinkat(dir, path(keep), AtFlags::empty());
    for n in (0..keep).rev() {
        let _ = renameat(dir, path(n), dir, path(n + 1));
    }
    let _ = renameat(dir, format!("{name}.next"), dir, name);
}

/// Completes or undoes a rotation a dead supervisor left half done, seen by a
/// `name.next` that still exists: beside a `name` that ends inside its last
/// line it is a copy not yet cut off (removed); beside a `name` cut at a
/// newline the files are still to be renamed; with `name` gone, only
/// `name.next` is.
fn recover_rotation(dir: &OwnedFd, name: &str, keep: u32) {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use std::os::unix::fs::FileExt;
    let next = format!("{name}.next");
    if rustix::fs::statat(dir, &next, AtFlags::SYMLINK_NOFOLLOW).is_err() {
        return;
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let Ok(current) = rustix::fs::openat(dir, name, flags, Mode::empty()) else {
        let _ = rustix::fs::renameat(dir, &next, dir, name);
        return;
    };
    let current = std::fs::File::from(current);
    let len = current.metadata().map_or(0, |m| m.len());
    let mut byte = [0u8; 1];
    let inside_a_line = len > 0
        && current
            .read_at(&mut byte, len - 1)
            .is_ok_and(|n| n == 1 && byte[0] != b'\n');
    if inside_a_line {
        let _ = rustix::fs::unlinkat(dir, &next, AtFlags::empty());
    } else {
        tracing::info!("finishing the rotation of {name} a previous supervisor began");
        finish_rotation(dir, name, keep);
    }
}

/// The line written after an early log that overflowed.
fn dropped_note(dropped: u64) -> String {
    if dropped == 0 {
        String::new()
    } else {
        format!("[keel: {dropped} bytes of output dropped while the log could not be written]\n")
    }
}

/// Why a drain step moved nothing.
enum Step {
    /// The pipe is empty, writers remain.
    Empty,
    /// The file was full and rotated: go on.
    Rotated,
    FileFailed(std::io::Error),
    PipeFailed(std::io::Error),
}

/// For a pipe that holds nothing: `Ok(0)` if every writer has gone, `Empty` if
/// not — told before any file or buffer is opened, so that the pipe of a job
/// that ended without a word costs no fd on its way out. A supervisor out of
/// fds (EMFILE) still closes such pipes, those of failed starts among them:
/// opening the file first failed there, and kept every one of them open.
/// `None` when there is something to move (or the pipe cannot be asked).
fn nothing_left(pipe: &OwnedFd) -> Option<Result<usize, Step>> {
    use rustix::event::{PollFd, PollFlags};
    let mut poll = [PollFd::new(pipe, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut poll, Some(&zero)).ok()?;
    let ready = poll[0].revents();
    // A hang-up without data is final: no writer can come back but through this
    // supervisor (`Logs::writer`), which is busy here.
    if ready.contains(PollFlags::IN) {
        None
    } else if ready.contains(PollFlags::HUP) {
        Some(Ok(0))
    } else if ready.is_empty() {
        Some(Err(Step::Empty))
    } else {
        None
    }
}

/// How many bytes of `pipe` (at most `len`) make its next line, up to and with
/// its newline (all it holds if none), without taking them: they are copied
/// into `peek` (made on first use) with `tee` and read from there. `None` at
/// EOF; `Step::Empty` when nothing is there yet.
fn peek_line(
    peek: &mut Option<(OwnedFd, OwnedFd)>,
    pipe: BorrowedFd<'_>,
    len: usize,
) -> Result<Option<usize>, Step> {
    use rustix::pipe::{PipeFlags, SpliceFlags};
    if peek.is_none() {
        *peek = Some(
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
                .map_err(|e| Step::PipeFailed(e.into()))?,
        );
    }
    let (peek_read, peek_write) = peek.as_ref().ok_or(Step::Empty)?;
    let copied = loop {
        match rustix::pipe::tee(pipe, peek_write, len, SpliceFlags::NONBLOCK) {
            Ok(n) => break n,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(Step::Empty),
            Err(e) => return Err(Step::PipeFailed(e.into())),
        }
    };
    // As splice: 0 once the pipe is empty and every writer has gone.
    if copied == 0 {
        return Ok(None);
    }
    let mut bytes = vec![0u8; copied];
    let mut got = 0;
    while got < copied {
        match rustix::io::read(peek_read, &mut bytes[got..]) {
            Ok(0) | Err(Errno::AGAIN) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(Step::PipeFailed(e.into())),
        }
    }
    let line = bytes[..got]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(got, |i| i + 1);
    Ok(Some(line.max(1)))
}

/// Whether the next byte at `len` starts a line: the file is empty or ends in a
/// newline.
fn at_line_start(file: &std::fs::File, len: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

fn write_at(file: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

/// `2026-12-07T04:40:01.123Z`: the time in UTC, to the millisecond.
pub fn utc_stamp(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// `splice` from `pipe` into `out` at `offset`. An error of the destination is
/// told apart from an empty pipe; a destination that cannot take splices is
/// written with read and pwrite instead (without the exactly-once guarantee).
fn splice(
    pipe: BorrowedFd<'_>,
    out: impl AsFd,
    offset: &mut u64,
    len: usize,
) -> Result<usize, Step> {
    loop {
        match rustix::pipe::splice(
            pipe,
            None,
            &out,
            Some(offset),
            len,
            rustix::pipe::SpliceFlags::NONBLOCK,
        ) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(Step::Empty),
            Err(Errno::INVAL) => {
                let mut buf = vec![0u8; len];
                let n = match rustix::io::read(pipe, &mut buf) {
                    Ok(n) => n,
                    Err(Errno::AGAIN) => return Err(Step::Empty),
                    Err(e) => return Err(Step::PipeFailed(e.into())),
                };
                let mut done = 0;
                while done < n {
                    done += rustix::io::pwrite(&out, &buf[done..n], *offset + done as u64)
                        .map_err(|e| Step::FileFailed(e.into()))?;
                }
                *offset += n as u64;
                return Ok(n);
            }
            Err(e) => return Err(Step::FileFailed(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("keel-joblog-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_all(fd: &OwnedFd, bytes: &[u8]) {
        let mut done = 0;
        while done < bytes.len() {
            done += rustix::io::write(fd, &bytes[done..]).unwrap();
        }
    }

    #[test]
    fn more_jobs_than_open_files_all_reach_their_logs() {
        let dir = Dir::new("many");
        let mut logs = Logs::new(Config {
            dir: dir.0.join("log"),
            size: 0,
            keep: 1,
        });
        let mut saved = Saved::default();
        let jobs = OPEN_FILES_MAX * 2 + 1;
        let pipes: Vec<(OwnedFd, u64)> = (0..jobs)
            .map(|i| {
                let (w, id) = logs.writer(&mut saved, None, &format!("j{i}"), "").unwrap();
                (w, id.unwrap())
            })
            .collect();
        // Two rounds of output, so that files closed to make room open again.
        for round in 0..2 {
            for (i, (w, id)) in pipes.iter().enumerate() {
                write_all(w, format!("job {i} line {round}\n").as_bytes());
                logs.drain(&mut saved, None, *id);
                assert!(logs.files.len() <= OPEN_FILES_MAX);
            }
        }
        for i in 0..jobs {
            let text = std::fs::read(dir.0.join(format!("log/j{i}.log"))).unwrap();
            assert_eq!(
                untimed(&text),
                format!("job {i} line 0\njob {i} line 1\n").as_bytes()
            );
        }
    }

    #[test]
    fn names_follow_upstart() {
        assert_eq!(file_name("net/apache", ""), "net_apache.log");
        assert_eq!(file_name("tty", "ttyS0"), "tty-ttyS0.log");
        assert_eq!(file_name("j", "a/b"), "j-a_b.log");
    }

    /// A log's text without the time that starts each line.
    fn untimed(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let stamped = line.len() >= 25 && line[4] == b'-' && &line[23..25] == b"Z ";
            out.extend_from_slice(if stamped { &line[25..] } else { line });
        }
        out
    }

    #[test]
    fn each_line_starts_with_its_time_also_when_it_comes_in_pieces() {
        let dir = Dir::new("stamps");
        let mut logs = Logs::new(Config {
            dir: dir.0.clone(),
            size: 0,
            keep: 1,
        });
        let mut saved = Saved::default();
        let (w, id) = logs.writer(&mut saved, None, "j", "").unwrap();
        let id = id.unwrap();
        let before = utc_stamp(std::time::SystemTime::now());
        write_all(&w, b"one\ntw");
        logs.drain(&mut saved, None, id);
        write_all(&w, b"o\nthree\n");
        drop(w);
        logs.drain(&mut saved, None, id);
        let text = std::fs::read_to_string(dir.0.join("j.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, want) in lines.iter().zip(["one", "two", "three"]) {
            let (time, rest) = line.split_once(' ').unwrap();
            assert_eq!(rest, want);
            assert_eq!(time.len(), before.len());
            assert!(time >= before.as_str(), "{time} is not before {before}");
        }
        assert_eq!(untimed(text.as_bytes()), b"one\ntwo\nthree\n");
    }

    #[test]
    fn the_time_is_utc_to_the_millisecond() {
        let at = |secs: u64, ms: u64| {
            utc_stamp(std::time::UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_796_618_401, 123), "2026-12-07T04:40:01.123Z");
    }

    #[test]
    fn output_reaches_the_file_and_the_pipe_closes_at_eof() {
        let dir = Dir::new("basic");
        let mut logs = Logs::new(Config {
            dir: dir.0.join("log"),
            size: 0,
            keep: 1,
        });
        let mut saved = Saved::default();
        let (w, id) = logs.writer(&mut saved, None, "j", "").unwrap();
        let id = id.unwrap();
        let (w2, again) = logs.writer(&mut saved, None, "j", "").unwrap();
        assert_eq!(again, None, "one pipe per instance");
        write_all(&w, b"one\n");
        write_all(&w2, b"two\n");
        assert!(!logs.drain(&mut saved, None, id), "writers remain");
        drop((w, w2));
        assert!(
            !logs.drain(&mut saved, None, id),
            "EOF closes it, with no save of its own"
        );
        assert!(saved.pipes.is_empty());
        assert!(logs.pipe_fd(id).is_none());
        assert_eq!(
            logs.take_closed().len(),
            1,
            "handed back, to leave epoll first"
        );
        assert!(logs.take_closed().is_empty());
        assert!(logs.files.is_empty(), "its file closed with it");
        let text = std::fs::read(dir.0.join("log/j.log")).unwrap();
        assert_eq!(untimed(&text), b"one\ntwo\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.0.join("log/j.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn a_capped_log_rotates_and_keeps_each_file_under_the_cap() {
        let dir = Dir::new("rotate");
        let mut logs = Logs::new(Config {
            dir: dir.0.clone(),
            size: 100,
            keep: 2,
        });
        let mut saved = Saved::default();
        let (w, id) = logs.writer(&mut saved, None, "j", "").unwrap();
        let id = id.unwrap();
        let all: Vec<u8> = (0..450u32).map(|i| b'a' + (i % 26) as u8).collect();
        write_all(&w, &all);
        drop(w);
        logs.drain(&mut saved, None, id);
        let read = |n: &str| std::fs::read(dir.0.join(n)).unwrap_or_default();
        for n in ["j.log", "j.log.1", "j.log.2"] {
            assert!(read(n).len() <= 100, "{n}: {}", read(n).len());
        }
        assert!(
            !dir.0.join("j.log.3").exists(),
            "only two rotated files kept"
        );
        // The newest bytes are all there, in order (each file starts with a
        // time, so each holds 75 of them).
        let mut kept = untimed(&read("j.log.2"));
        kept.extend(untimed(&read("j.log.1")));
        kept.extend(untimed(&read("j.log")));
        assert!(kept.len() >= 150 && all.ends_with(&kept), "{}", kept.len());
    }

    #[test]
    fn rotation_never_cuts_a_line_but_one_longer_than_the_cap() {
        let dir = Dir::new("lines");
        let mut logs = Logs::new(Config {
            dir: dir.0.clone(),
            size: 100,
            keep: 100,
        });
        let mut saved = Saved::default();
        let (w, id) = logs.writer(&mut saved, None, "j", "").unwrap();
        let id = id.unwrap();
        // Lines of 1 to 70 bytes (75 with their time), written in pieces that
        // end mid-line, and one line of 250 bytes.
        let mut all = Vec::new();
        for i in 0..60u32 {
            let len = (i * 37 % 70) as usize;
            all.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
            all.push(b'\n');
            if i == 30 {
                all.extend([b'L'; 250]);
                all.push(b'\n');
            }
        }
        for piece in all.chunks(53) {
            write_all(&w, piece);
            logs.drain(&mut saved, None, id);
        }
        drop(w);
        logs.drain(&mut saved, None, id);
        let read = |n: &str| std::fs::read(dir.0.join(n)).unwrap_or_default();
        let mut files: Vec<Vec<u8>> = (1..=100)
            .rev()
            .map(|n| read(&format!("j.log.{n}")))
            .collect();
        files.push(read("j.log"));
        files.retain(|f| !f.is_empty());
        assert!(!dir.0.join("j.log.next").exists());
        for f in &files {
            assert!(f.len() <= 100, "{} bytes", f.len());
            // Whole lines, or a piece of the one line longer than the cap.
            assert!(
                f.ends_with(b"\n") || untimed(f).iter().all(|&b| b == b'L'),
                "a line was cut: {:?}",
                String::from_utf8_lossy(f)
            );
        }
        let untimed_all: Vec<u8> = files.iter().flat_map(|f| untimed(f)).collect();
        assert_eq!(untimed_all, all, "every byte once, in order");
    }

    #[test]
    fn a_rotation_cut_short_is_finished_or_undone() {
        let dir = Dir::new("half-rotated");
        let logdir = open_logdir(&dir.0).unwrap();
        let write = |n: &str, t: &str| std::fs::write(dir.0.join(n), t).unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.0.join(n)).unwrap_or_default();
        // Copied, not cut yet: the copy goes, the file stays.
        write("j.log", "one\ntw");
        write("j.log.next", "tw");
        recover_rotation(&logdir, "j.log", 2);
        assert_eq!(read("j.log"), "one\ntw");
        assert!(!dir.0.join("j.log.next").exists());
        // Cut, not renamed yet: renamed.
        write("j.log", "one\n");
        write("j.log.next", "tw");
        recover_rotation(&logdir, "j.log", 2);
        assert_eq!(
            (read("j.log.1"), read("j.log")),
            ("one\n".into(), "tw".into())
        );
        // Renamed but for the carried line.
        std::fs::rename(dir.0.join("j.log"), dir.0.join("j.log.next")).unwrap();
        std::fs::rename(dir.0.join("j.log.1"), dir.0.join("j.log.2")).unwrap();
        recover_rotation(&logdir, "j.log", 2);
        assert_eq!(
            (read("j.log.2"), read("j.log")),
            ("one\n".into(), "tw".into())
        );
        assert!(!dir.0.join("j.log.1").exists());
    }

    /// Job `j` logging into `logdir` that cannot be written: `bytes` went into
    /// its early buffer. The logs, the state, the writer, the pipe's id.
    fn gone_early(logdir: &Path, bytes: &[u8]) -> (Logs, Saved, OwnedFd, u64) {
        let mut logs = Logs::new(Config {
            dir: logdir.to_path_buf(),
            size: 0,
            keep: 1,
        });
        let mut saved = Saved::default();
        let (w, id) = logs.writer(&mut saved, None, "j", "").unwrap();
        let id = id.unwrap();
        write_all(&w, bytes);
        assert!(logs.drain(&mut saved, None, id), "went early");
        assert!(saved.pipes[&id].early);
        (logs, saved, w, id)
    }

    #[test]
    fn early_output_is_kept_and_written_out_once_the_directory_appears() {
        let dir = Dir::new("early");
        let logdir = dir.0.join("late/log");
        let (mut logs, mut saved, w, id) = gone_early(&logdir, b"early\n");
        assert_eq!(logs.take_flushes(&saved), [id]);
        assert!(!logs.flush_begin(&mut saved, id), "not writable yet");
        std::fs::create_dir(dir.0.join("late")).unwrap();
        write_all(&w, b"later\n");
        logs.drain(&mut saved, None, id);
        assert!(logs.flush_begin(&mut saved, id));
        assert_eq!(saved.pipes[&id].flush_base, Some(0));
        assert!(logs.flush_copy(&mut saved, id));
        logs.flush_end(&mut saved, None, id);
        assert!(!saved.pipes[&id].early);
        write_all(&w, b"direct\n");
        logs.drain(&mut saved, None, id);
        // What was kept early comes as it came; what follows, with its time.
        let text = std::fs::read_to_string(logdir.join("j.log")).unwrap();
        assert!(text.starts_with("early\nlater\n2"), "{text}");
        assert_eq!(untimed(text.as_bytes()), b"early\nlater\ndirect\n");
    }

    #[test]
    fn a_flush_cut_short_is_undone_on_recovery() {
        let dir = Dir::new("recover");
        let config = Config {
            dir: dir.0.clone(),
            size: 0,
            keep: 1,
        };
        std::fs::write(dir.0.join("j.log"), "old\nhalf-flushed").unwrap();
        let mut saved = Saved::default();
        saved.pipes.insert(
            3,
            SavedPipe {
                job: "j".into(),
                early: true,
                flush_base: Some(4),
                dropped: 1,
                ..SavedPipe::default()
            },
        );
        let mut logs = Logs::new(config);
        let watch = logs.recover(&mut saved, Vec::new(), None);
        assert!(watch.is_empty());
        assert_eq!(
            std::fs::read_to_string(dir.0.join("j.log")).unwrap(),
            "old\n"
        );
        assert_eq!(saved.pipes[&3].flush_base, None);
        assert!(logs.flush_wanted);
    }

    #[test]
    fn a_saved_pipe_gone_from_the_lifeboat_is_dropped_on_recovery() {
        // A pipe closed (and withdrawn) after the last save: the successor's
        // state still names it.
        let dir = Dir::new("stale");
        let mut saved = Saved::default();
        saved.pipes.insert(
            5,
            SavedPipe {
                job: "j".into(),
                ..SavedPipe::default()
            },
        );
        let mut logs = Logs::new(Config {
            dir: dir.0.clone(),
            size: 0,
            keep: 1,
        });
        assert!(logs.recover(&mut saved, Vec::new(), None).is_empty());
        assert!(saved.pipes.is_empty());
        // The instance's next process gets a new pipe.
        let (_w, id) = logs.writer(&mut saved, None, "j", "").unwrap();
        assert!(id.is_some());
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refusal(dir: &Path) -> String {
        open_logdir(dir).expect_err("refused").to_string()
    }

    /// Runs as root (as every test of keel does): files can be given away.
    #[test]
    fn the_log_directory_is_created_or_verified_along_its_whole_path() {
        const NOBODY: u32 = 65534;
        let dir = Dir::new("trust");
        chmod(&dir.0, 0o755);
        // Missing: made, 0755 whatever the umask.
        let made = dir.0.join("made");
        open_logdir(&made).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o7777, 0o755);
        // A sticky world-writable ancestor (/tmp) is fine.
        let sticky = dir.0.join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        chmod(&sticky, 0o1777);
        open_logdir(&sticky.join("log")).unwrap();
        // Owned by someone else.
        let theirs = dir.0.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        chown(&theirs, NOBODY);
        assert_eq!(
            refusal(&theirs),
            format!(
                "log directory {0} refused: {0} is owned by uid 65534, not root",
                theirs.display()
            )
        );
        // Writable by others, or below a directory that is (not sticky).
        let open = dir.0.join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        assert!(refusal(&open).ends_with("is writable by others (mode 777)"));
        assert!(refusal(&open.join("log")).ends_with(&format!(
            "{} is writable by others (mode 777)",
            open.display()
        )));
        assert!(!open.join("log").exists(), "nothing made below it");
        // A sticky LOGDIR is still writable by others.
        assert!(refusal(&sticky).ends_with("is writable by others (mode 1777)"));
        // A symlink swapped in for LOGDIR, and an ancestor symlink of nobody's.
        let link = dir.0.join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        assert!(refusal(&link).ends_with("link is a symlink"));
        open_logdir(&link.join("sub")).unwrap();
        chown(&link, NOBODY);
        assert!(refusal(&link.join("sub")).ends_with("is a symlink owned by uid 65534"));
    }

    #[test]
    fn output_for_a_refused_directory_is_kept_in_memory_not_written_there() {
        let dir = Dir::new("refused");
        let logdir = dir.0.join("log");
        std::fs::create_dir(&logdir).unwrap();
        chown(&logdir, 65534);
        // A file nobody prepared, for keel to append to.
        std::fs::write(logdir.join("j.log"), "").unwrap();
        chown(&logdir.join("j.log"), 65534);
        let (mut logs, mut saved, _w, id) = gone_early(&logdir, b"SECRET=hunter2\n");
        assert!(!logs.flush_begin(&mut saved, id), "still refused");
        assert_eq!(std::fs::read_to_string(logdir.join("j.log")).unwrap(), "");
        // Given back to root, the file of nobody's is still refused; once gone,
        // the output is written out.
        chown(&logdir, 0);
        assert!(!logs.flush_begin(&mut saved, id));
        std::fs::remove_file(logdir.join("j.log")).unwrap();
        assert!(logs.flush_begin(&mut saved, id));
        assert!(logs.flush_copy(&mut saved, id));
        logs.flush_end(&mut saved, None, id);
        assert_eq!(
            std::fs::read_to_string(logdir.join("j.log")).unwrap(),
            "SECRET=hunter2\n"
        );
    }
}
