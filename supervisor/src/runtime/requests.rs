//! Control requests: what each kind of `initctl` request does and answers.
//!
//! Owns the reading of a connection's requests and one function per kind of
//! request (the core's queries and goal changes, the shell's own: log path,
//! show-config, reload, log priority). Answers are queued on the Runtime and
//! sent after the round's state is saved; a request that waits (`--wait`, an
//! event, a re-exec check) is answered by a later effect.

use super::{Runtime, TOKEN_CONN_BASE, now_ms};
use crate::answer::{self, Failure, failed, instances, refused};
use crate::control::ConnId;
use crate::job::Console;
use crate::lifecycle::{self, Event, parse_env};
use crate::refusal::Refusal;
use crate::{joblog, query};
use keel_proto::ctl::{ErrorKind, Request, Response};
use rustix::event::epoll;

impl Runtime {
    /// Reads and carries out what connection `id` asks, for as long as it asks.
    pub(super) fn serve(&mut self, id: ConnId) {
        while let Some(incoming) = self.control.read(id) {
            self.request(incoming.conn, incoming.request);
            if !self.control.is_open(id) {
                break;
            }
        }
    }

    /// Carries out `request` from `conn`; its answer goes out after this round's
    /// state is saved (or, for one that waits, once its outcome is known).
    fn request(&mut self, conn: ConnId, request: Request) {
        // Whatever changes something is saved before it is answered, even a goal
        // change that moves no state yet (a stop during pre-start).
        if !request.is_query() {
            self.dirty = true;
        }
        let named_job = match &request {
            Request::Start { job, .. }
            | Request::Stop { job, .. }
            | Request::Restart { job, .. }
            | Request::Reload { job, .. }
            | Request::Status { job, .. }
            | Request::LogPath { job, .. }
            | Request::Usage { job } => Some(job.clone()),
            Request::CheckConfig { job, .. } | Request::ShowConfig { job } => job.clone(),
            _ => None,
        };
        if let Some(mut answer) = self.answer(conn, request) {
            if let (Some(job), Response::Error(e)) = (&named_job, &mut answer)
                && e.kind == ErrorKind::UnknownJob
            {
                self.explain_unknown(job, &mut e.message);
            }
            self.answers.push((conn, answer));
        }
    }

    /// What `request` is answered now: `None` while the answer waits (on an
    /// outcome, or a re-exec candidate's check).
    // Long for a dispatch: one arm per kind of request, each a line or a call.
    fn answer(&mut self, conn: ConnId, request: Request) -> Option<Response> {
        let answer = match request {
            Request::Start {
                job,
                instance,
                env,
                wait,
            } => return self.change_goal(Goal::Start, conn, &job, instance, &env, wait),
            Request::Stop {
                job,
                instance,
                env,
                wait,
            } => return self.change_goal(Goal::Stop, conn, &job, instance, &env, wait),
            Request::Restart {
                job,
                instance,
                env,
                wait,
            } => return self.change_goal(Goal::Restart, conn, &job, instance, &env, wait),
            Request::Emit { event, env, wait } => {
                return self.emit_request(conn, event, &env, wait);
            }
            // Upstart's `telinit u`: re-execute.
            Request::Telinit { runlevel, .. } if runlevel == b'u' || runlevel == b'U' => {
                return self.request_reexec(conn, None);
            }
            Request::Reexec { binary } => return self.request_reexec(conn, binary),
            Request::Status { job, instance, env } => match self.select(&job, instance, &env) {
                Ok(s) => instances(s),
                Err(e) => refused(e),
            },
            Request::LogPath { job, instance, env } => match self.select(&job, instance, &env) {
                Ok(found) => self.log_path(&job, &found),
                Err(e) => refused(e),
            },
            Request::Reload { job, instance, env } => {
                match self.snap.jobs.request_env(&job, instance.as_deref(), &env) {
                    Ok(env) => self.reload(&job, &env),
                    Err(e) => refused(e),
                }
            }
            Request::List => instances(self.snap.jobs.list()),
            Request::Version => Response::Version {
                version: format!("keel {}", env!("CARGO_PKG_VERSION")),
            },
            Request::Power { action } => {
                self.begin_power(answer::core_power(action));
                Response::Ok
            }
            Request::ReloadConfiguration => {
                self.reload_configuration();
                match self.load_failures() {
                    [] => Response::Ok,
                    failed => Response::LoadFailures(failed.to_vec()),
                }
            }
            Request::LoadFailures => Response::LoadFailures(self.load_failures().to_vec()),
            Request::Timeline => Response::Timeline(self.timeline.entries().to_vec()),
            Request::CheckConfig { job, ignore } => {
                match query::check_config(self.definitions(), job.as_deref(), &ignore) {
                    Ok(problems) => answer::problems(problems),
                    Err(e) => refused(e),
                }
            }
            Request::ShowConfig { job } => self.show_config(job.as_deref()),
            Request::Telinit { runlevel, env } => match parse_env(&env) {
                Ok(env) => self.telinit(runlevel, env),
                Err(e) => refused(e),
            },
            Request::Runlevel => Response::Runlevel {
                previous: self.snap.runlevel.previous,
                current: self.snap.runlevel.current,
            },
            Request::LogPriority { level } => self.log_priority(level),
            Request::Usage { job } => match self.snap.jobs.usage(&job) {
                Ok(usage) => Response::Value(usage),
                Err(e) => refused(e),
            },
            Request::ListEnv => Response::Env(self.snap.jobs.environment()),
            Request::GetEnv { name } => match self.snap.jobs.get_env(&name) {
                Ok(value) => Response::Value(value),
                Err(e) => refused(e),
            },
            Request::SetEnv { vars, retain } => match self.snap.jobs.set_env(vars, retain) {
                Ok(()) => Response::Ok,
                Err(e) => refused(e),
            },
            Request::UnsetEnv { names } => match self.snap.jobs.unset_env(&names) {
                Ok(()) => Response::Ok,
                Err(e) => refused(e),
            },
            Request::ResetEnv => {
                self.snap.jobs.reset_env();
                Response::Ok
            }
            // Early job logs are written out after this round.
            Request::NotifyDiskWriteable => {
                self.logs.flush_wanted = true;
                Response::Ok
            }
        };
        Some(answer)
    }

    /// `start`, `stop`, `restart` of the instance `instance` or `env` selects:
    /// with `wait`, answered once the goal is reached (or missed).
    fn change_goal(
        &mut self,
        goal: Goal,
        conn: ConnId,
        job: &str,
        instance: Option<String>,
        env: &[String],
        wait: bool,
    ) -> Option<Response> {
        let now = now_ms();
        let waiter = wait.then_some(conn);
        let jobs = &mut self.snap.jobs;
        let outcome = jobs
            .request_env(job, instance.as_deref(), env)
            .and_then(|env| match goal {
                Goal::Start => jobs.start(job, env, waiter, now),
                Goal::Stop => jobs.stop(job, &env, waiter, now),
                Goal::Restart => jobs.restart(job, &env, waiter, now),
            });
        accepted(wait, outcome)
    }

    /// The instances of `job` that `instance` or `env` select.
    fn select(
        &self,
        job: &str,
        instance: Option<String>,
        env: &[String],
    ) -> Result<Vec<lifecycle::InstanceStatus>, Refusal> {
        let jobs = &self.snap.jobs;
        jobs.request_env(job, instance.as_deref(), env)
            .and_then(|env| jobs.status(job, &env))
    }

    /// `emit EVENT [KEY=VALUE…]`: with `wait`, answered once the event is done.
    fn emit_request(
        &mut self,
        conn: ConnId,
        event: String,
        env: &[String],
        wait: bool,
    ) -> Option<Response> {
        let env = match parse_env(env) {
            Ok(_) if event.is_empty() => return Some(refused(Refusal::EmptyEventName)),
            Ok(env) => env,
            Err(e) => return Some(refused(e)),
        };
        let event = Event { name: event, env };
        match self.snap.jobs.emit(event, wait.then_some(conn), now_ms()) {
            Ok(()) if wait => None,
            Ok(()) => Some(Response::Ok),
            Err(e) => Some(refused(e)),
        }
    }

    /// `log-priority [LEVEL]`: the supervisor's own log priority, read or set
    /// (and saved, so that a successor keeps it).
    fn log_priority(&mut self, level: Option<String>) -> Response {
        match level {
            None => Response::Value(crate::logging::priority().to_string()),
            Some(l) => match crate::logging::set_priority(&l) {
                Ok(()) => {
                    self.snap.shell.log_priority = Some(l);
                    Response::Ok
                }
                Err(e) => failed(e),
            },
        }
    }

    /// `LogPath`: the log file of the one instance `found`, if its job logs.
    fn log_path(&self, job: &str, found: &[lifecycle::InstanceStatus]) -> Response {
        let [only] = found else {
            return failed(Failure::ManyInstances {
                job: job.to_string(),
                count: found.len(),
            });
        };
        let logs = self
            .snap
            .jobs
            .job(job)
            .is_some_and(|j| j.def().console == Console::Log);
        if !logs {
            return failed(Failure::NoLog {
                job: job.to_string(),
            });
        }
        let path = self.logs.path(&joblog::file_name(job, &only.instance));
        Response::Value(path.display().to_string())
    }

    /// `show-config [JOB]`: each job's conditions, emits and definition.
    fn show_config(&self, only: Option<&str>) -> Response {
        let configs: Vec<_> = self
            .definitions()
            .filter(|d| only.is_none_or(|o| d.name == o))
            .map(|d| query::job_config(d, self.confdir.override_of(&d.name, &self.config.confdir)))
            .collect();
        match only {
            Some(name) if configs.is_empty() => refused(Refusal::UnknownJob(name.to_string())),
            _ => answer::configs(configs),
        }
    }

    /// `reload`: the job's reload signal to its main process.
    fn reload(&mut self, job: &str, env: &[(String, String)]) -> Response {
        let status = match self.snap.jobs.status(job, env) {
            Ok(s) => s,
            Err(e) => return refused(e),
        };
        let signal = self
            .snap
            .jobs
            .job(job)
            .map(|j| j.def().reload_signal.0)
            .unwrap_or(libc::SIGHUP);
        let main = status
            .first()
            .and_then(|s| s.processes.iter().find(|p| p.kind == "main"))
            .map(|p| p.pid);
        let Some(pid) = main else {
            return refused(Refusal::NotRunning(job.to_string()));
        };
        // As every signal: never a recycled pid.
        match rustix::process::Signal::from_named_raw(signal)
            .is_some_and(|s| self.pids.signal(self.link.as_ref(), pid, s, false))
        {
            true => instances(status),
            false => failed(Failure::Signal { pid }),
        }
    }

    /// Watches connection `id` and serves what it has sent already.
    pub(super) fn watch_conn(&mut self, id: ConnId) {
        if let Some(fd) = self.control.conn_fd(id) {
            let _ = epoll::add(
                &self.epoll,
                fd,
                epoll::EventData::new_u64(TOKEN_CONN_BASE + id),
                epoll::EventFlags::IN
                    | epoll::EventFlags::OUT
                    | epoll::EventFlags::ET
                    | epoll::EventFlags::RDHUP,
            );
        }
        self.control.flush(id);
        self.serve(id);
    }
}

/// The goal a `start`, `stop` or `restart` sets.
enum Goal {
    Start,
    Stop,
    Restart,
}

/// The immediate answer to a start/stop/restart: none while a waiter waits for
/// the outcome, else the status (or the error) now.
fn accepted(
    wait: bool,
    outcome: Result<Option<lifecycle::InstanceStatus>, Refusal>,
) -> Option<Response> {
    match outcome {
        Ok(_) if wait => None,
        Ok(status) => Some(instances(status.into_iter().collect())),
        Err(e) => Some(refused(e)),
    }
}
