//! The job table, and each job's saved bytes kept between saves (issue 17).
//!
//! Every round that changes something saves the whole state; with 10,000 jobs
//! that is over a megabyte, and encoding it was most of what a round cost. Most
//! rounds change a handful of jobs. Postcard writes a map as its length then each
//! entry's bytes, one after the other, so each job's entry can be encoded once,
//! kept, and copied into every later save until the job changes: the table's
//! bytes ([`JobTable::encode_into`]) are byte for byte those of a full encode of
//! the map, at the cost of encoding what changed and copying the rest.
//!
//! Owns the map of jobs by name. Reading it is reading the map (`Deref`); every
//! way to change it goes through a method here ([`JobTable::get_mut`],
//! [`JobTable::insert`], [`JobTable::remove`], [`JobTable::values_mut`]), which
//! drops the kept bytes of what it hands out: a job changed is never saved from
//! stale bytes, whatever changed it (there is no `DerefMut`).

use super::Job;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::Deref;

/// The jobs by name, each with its kept bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JobTable {
    map: BTreeMap<String, Job>,
}

/// A job's entry as postcard writes it in the map (name, then job), as of the
/// last save, until the job is next handed out for a change. Never saved itself,
/// and no part of comparing two jobs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Kept(OnceCell<Box<[u8]>>);

impl PartialEq for Kept {
    fn eq(&self, _: &Kept) -> bool {
        true
    }
}

impl Eq for Kept {}

impl Deref for JobTable {
    type Target = BTreeMap<String, Job>;
    fn deref(&self) -> &BTreeMap<String, Job> {
        &self.map
    }
}

impl<'a> IntoIterator for &'a JobTable {
    type Item = (&'a String, &'a Job);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Job>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl JobTable {
    /// Job `name`, to change: its kept bytes are dropped.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Job> {
        let job = self.map.get_mut(name)?;
        job.kept = Kept::default();
        Some(job)
    }

    /// Every job, to change: every kept byte is dropped.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Job> {
        for job in self.map.values_mut() {
            job.kept = Kept::default();
        }
        self.map.values_mut()
    }

    pub(crate) fn insert(&mut self, name: String, mut job: Job) {
        job.kept = Kept::default();
        self.map.insert(name, job);
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Job> {
        self.map.remove(name)
    }

    /// Appends the map's postcard encoding to `out`: its length, then each
    /// entry's kept bytes, encoding (and keeping) those of the jobs changed since
    /// the last call. `after`: how many bytes the caller appends next.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>, after: usize) -> postcard::Result<()> {
        // Room for what is kept and what follows at once, rather than growing
        // (and copying everything) by halves.
        let kept: usize = self
            .map
            .values()
            .filter_map(|j| j.kept.0.get())
            .map(|b| b.len())
            .sum();
        out.reserve(kept + after + 16);
        postcard::to_io(&self.map.len(), &mut *out)?;
        for (name, job) in &self.map {
            let bytes = match job.kept.0.get() {
                Some(bytes) => bytes,
                None => {
                    let bytes = postcard::to_stdvec(&(name, job))?.into_boxed_slice();
                    job.kept.0.get_or_init(|| bytes)
                }
            };
            out.extend_from_slice(bytes);
        }
        Ok(())
    }
}

impl Serialize for JobTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JobTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JobTable, D::Error> {
        Ok(JobTable {
            map: BTreeMap::deserialize(d)?,
        })
    }
}
