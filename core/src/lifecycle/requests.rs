//! The decisions of requests that are not a job's lifecycle: which instance a
//! request names, and the job-environment table (`set-env`, `unset-env`,
//! `reset-env`, `list-env`, `get-env`). The runtime passes what a client sent and
//! answers with what comes back; it never edits the table itself.

use super::*;

/// A request's `KEY=VALUE` words as pairs; a word without `=` or with an empty
/// key is refused.
pub fn parse_env(words: &[String]) -> Result<Vec<(String, String)>, Refusal> {
    words
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Refusal::NotKeyValue),
        })
        .collect()
}

/// A shell-style variable name.
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Jobs {
    /// The variables that name the instance a job request is about: the request's
    /// own `KEY=VALUE` words, or — named by instance, as from within a job — that
    /// instance's environment.
    pub fn request_env(
        &self,
        job: &str,
        instance: Option<&str>,
        words: &[String],
    ) -> Result<Vec<(String, String)>, Refusal> {
        let Some(name) = instance else {
            return parse_env(words);
        };
        self.jobs
            .get(job)
            .filter(|j| !j.deleted)
            .ok_or_else(|| Refusal::UnknownJob(job.to_string()))?
            .instances
            .get(name)
            .map(|i| i.env.clone())
            .ok_or_else(|| Refusal::UnknownInstance {
                job: job.to_string(),
                instance: name.to_string(),
            })
    }

    /// `list-env`: the job-environment table as jobs see it, sorted by name.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut vars = base_environment(&self.env_table);
        vars.sort();
        vars
    }

    /// `get-env NAME`.
    pub fn get_env(&self, name: &str) -> Result<String, Refusal> {
        base_environment(&self.env_table)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| Refusal::NoSuchVariable(name.to_string()))
    }

    /// `set-env [-r] NAME=VALUE...`: all or nothing — a bad name leaves the table
    /// as it was. With `retain`, a variable already there keeps its value.
    pub fn set_env(&mut self, vars: Vec<(String, String)>, retain: bool) -> Result<(), Refusal> {
        if let Some((name, _)) = vars.iter().find(|(name, _)| !valid_env_name(name)) {
            return Err(Refusal::InvalidVariableName(name.clone()));
        }
        let present = base_environment(&self.env_table);
        for (name, value) in vars {
            if !(retain && present.iter().any(|(k, _)| *k == name)) {
                self.env_table.insert(name, value);
            }
        }
        Ok(())
    }

    /// `unset-env NAME...`: removes what `set-env` added, all or nothing (the
    /// defaults PATH and TERM stay).
    pub fn unset_env(&mut self, names: &[String]) -> Result<(), Refusal> {
        if let Some(name) = names.iter().find(|n| !self.env_table.contains_key(*n)) {
            return Err(Refusal::NoSuchVariable(name.clone()));
        }
        for name in names {
            self.env_table.remove(name);
        }
        Ok(())
    }

    /// `reset-env`: the defaults only.
    pub fn reset_env(&mut self) {
        self.env_table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_environment_table_changes_all_or_nothing() {
        let mut jobs = Jobs::default();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        jobs.set_env(vec![pair("A", "1"), pair("B", "2")], false)
            .unwrap();
        assert_eq!(jobs.get_env("A").unwrap(), "1");
        let before = jobs.clone();
        assert_eq!(
            jobs.set_env(vec![pair("C", "3"), pair("9x", "4")], false),
            Err(Refusal::InvalidVariableName("9x".into()))
        );
        assert_eq!(
            jobs.unset_env(&words(&["A", "PATH"])),
            Err(Refusal::NoSuchVariable("PATH".into()))
        );
        assert_eq!(jobs, before);
        jobs.set_env(vec![pair("A", "new"), pair("TERM", "vt100")], true)
            .unwrap();
        assert_eq!(jobs.get_env("A").unwrap(), "1", "-r keeps what is there");
        assert_eq!(jobs.get_env("TERM").unwrap(), "linux");
        jobs.unset_env(&words(&["A", "B"])).unwrap();
        assert_eq!(
            jobs.get_env("A").unwrap_err().to_string(),
            "No such variable: A"
        );
        let names: Vec<String> = jobs.environment().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["PATH", "TERM"]);
        jobs.set_env(vec![pair("Z", "1")], false).unwrap();
        jobs.reset_env();
        assert_eq!(jobs.environment().len(), 2);
    }

    #[test]
    fn a_request_names_its_instance_by_its_words_or_by_instance() {
        let mut jobs = Jobs::default();
        jobs.set_definitions(vec![
            crate::job::parse("tty", "instance $TTY\nexec getty $TTY\n")
                .def
                .unwrap(),
        ]);
        assert_eq!(
            jobs.request_env("tty", None, &words(&["TTY=ttyS0"])),
            Ok(vec![("TTY".into(), "ttyS0".into())])
        );
        assert_eq!(
            jobs.request_env("tty", None, &words(&["TTY"])),
            Err(Refusal::NotKeyValue)
        );
        assert_eq!(
            jobs.request_env("nope", Some("x"), &[])
                .unwrap_err()
                .to_string(),
            "Unknown job: nope"
        );
        assert_eq!(
            jobs.request_env("tty", Some("tty9"), &[])
                .unwrap_err()
                .to_string(),
            "Unknown instance: tty (tty9)"
        );
        jobs.start("tty", vec![("TTY".into(), "ttyS0".into())], None, 0)
            .unwrap();
        let env = jobs.request_env("tty", Some("ttyS0"), &[]).unwrap();
        assert!(env.contains(&("TTY".into(), "ttyS0".into())), "{env:?}");
    }
}
