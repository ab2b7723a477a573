//! Job definitions as the core holds them: [`Def`], one allocation shared by a
//! job and every instance that started with it. An instance keeps the definition
//! it started with across a reload, so a reload that changes nothing about a job
//! keeps its `Def` (same id, same allocation).
//!
//! In the saved state a `Def` is only its id: the definitions themselves are
//! saved apart, and only when they change (`journal`), so the state saved every
//! round stays small whatever the job files hold.

use crate::job::JobDef;
use serde::{Serialize, Serializer};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Names a definition for as long as something holds it; never reused.
pub type DefId = u64;

/// A shared job definition (see the module docs). Derefs to the [`JobDef`].
#[derive(Clone)]
pub struct Def(Arc<Shared>);

struct Shared {
    id: DefId,
    def: JobDef,
}

impl Def {
    /// `def` under `id` (the core hands out ids, `Jobs::define`; the journal
    /// brings saved ones back).
    pub fn new(id: DefId, def: JobDef) -> Def {
        Def(Arc::new(Shared { id, def }))
    }

    pub fn id(&self) -> DefId {
        self.0.id
    }
}

impl Deref for Def {
    type Target = JobDef;
    fn deref(&self) -> &JobDef {
        &self.0.def
    }
}

impl PartialEq for Def {
    fn eq(&self, other: &Def) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.id == other.0.id && self.0.def == other.0.def)
    }
}

impl Eq for Def {}

impl fmt::Debug for Def {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} ", self.0.id)?;
        self.0.def.fmt(f)
    }
}

/// Saved as its id; `journal` resolves the id against the saved definitions
/// when the state is loaded (its `Deserialize` lives there, with that table).
impl Serialize for Def {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.id.serialize(s)
    }
}
