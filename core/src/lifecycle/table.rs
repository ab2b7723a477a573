//! A map of the saved state that knows which of its entries changed: what the
//! incremental journal writes each round (see [`crate::journal`]).
//!
//! Owns the map ([`Tracked`]) and the keys changed since the journal last took
//! them. Reading it is reading the map (`Deref`); every way to change it goes
//! through a method here ([`Tracked::get_mut`], [`Tracked::insert`],
//! [`Tracked::remove`], [`Tracked::values_mut`], [`Tracked::retain`]…), which
//! notes the keys it hands out: an entry changed is never left out of the next
//! round's records, whatever changed it (there is no `DerefMut`). A map made
//! anew (`Default`, as when a whole part of the state is replaced) is "fresh":
//! the journal writes it whole, after a record that clears the old one.
//!
//! The core's job table and pid table are `Tracked`, and so are the shell's
//! tables that grow with the number of jobs (cgroups, log pipes): a round costs
//! the entries it changed, not the number of jobs.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

/// A map whose changed keys are noted until the journal takes them.
#[derive(Clone, Debug)]
pub struct Tracked<K, V> {
    map: BTreeMap<K, V>,
    /// Keys inserted, changed or removed since the journal last took them.
    changed: BTreeSet<K>,
    /// Made anew since the journal last took the changes: saved whole.
    fresh: bool,
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            changed: BTreeSet::new(),
            fresh: true,
        }
    }
}

/// Two tables are equal when their maps are: what is noted is no part of it.
impl<K: PartialEq, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Eq, V: Eq> Eq for Tracked<K, V> {}

impl<K, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<'a, K, V> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Ord + Clone, V> From<BTreeMap<K, V>> for Tracked<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        Tracked {
            map,
            ..Tracked::default()
        }
    }
}

impl<K: Ord + Clone, V, const N: usize> From<[(K, V); N]> for Tracked<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        Tracked::from(BTreeMap::from(entries))
    }
}

impl<K: Ord + Clone, V> FromIterator<(K, V)> for Tracked<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Tracked::from(iter.into_iter().collect::<BTreeMap<K, V>>())
    }
}

impl<K: Ord + Clone, V> Tracked<K, V> {
    /// Entry `key`, to change.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if !self.fresh
            && let Some((k, _)) = self.map.get_key_value(key)
            && !self.changed.contains::<K>(k)
        {
            self.changed.insert(k.clone());
        }
        self.map.get_mut(key)
    }

    /// Every entry, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.iter_mut().map(|(_, v)| v)
    }

    /// Every entry, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        if !self.fresh {
            self.changed.extend(self.map.keys().cloned());
        }
        self.map.iter_mut()
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.note(&key);
        self.map.insert(key, value)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let (key, value) = self.map.remove_entry(key)?;
        self.note(&key);
        Some(value)
    }

    /// Keeps the entries `keep` says to keep (it may change them). Only the
    /// entries it removes or changes are noted: each is compared with a copy.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool)
    where
        V: Clone + PartialEq,
    {
        let fresh = self.fresh;
        let changed = &mut self.changed;
        self.map.retain(|k, v| {
            let before = (!fresh).then(|| v.clone());
            let kept = keep(k, v);
            if before.is_some_and(|b| !kept || b != *v) {
                changed.insert(k.clone());
            }
            kept
        });
    }

    fn note(&mut self, key: &K) {
        if !self.fresh && !self.changed.contains(key) {
            self.changed.insert(key.clone());
        }
    }

    /// The changes since the last call: `None` if the table is to be saved
    /// whole (made anew), else the keys changed. The table is clean afterwards.
    pub(crate) fn take_changes(&mut self) -> Option<BTreeSet<K>> {
        let changed = std::mem::take(&mut self.changed);
        let fresh = std::mem::replace(&mut self.fresh, false);
        (!fresh).then_some(changed)
    }

    /// The keys changed since the journal last took them (every key of a fresh
    /// table).
    pub fn changed_keys(&self) -> Box<dyn Iterator<Item = &K> + '_> {
        if self.fresh {
            Box::new(self.map.keys())
        } else {
            Box::new(self.changed.iter())
        }
    }
}

thread_local! {
    /// While set, every `Tracked` serialises as an empty map: the journal's
    /// head record, which holds everything but the tables (see [`head_only`]).
    static HEAD_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Whether the journal's head is being written (the tables are left out).
pub(crate) fn writing_head() -> bool {
    HEAD_ONLY.with(Cell::get)
}

/// Runs `f` with every [`Tracked`] serialising as an empty map.
pub(crate) fn head_only<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            HEAD_ONLY.with(|h| h.set(false));
        }
    }
    HEAD_ONLY.with(|h| h.set(true));
    let _reset = Reset;
    f()
}

impl<K: Serialize, V: Serialize> Serialize for Tracked<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if writing_head() {
            return BTreeMap::<K, V>::new().serialize(s);
        }
        self.map.serialize(s)
    }
}

/// A table loaded from a saved state is clean: nothing changed since. Its
/// entries were saved in order, so the map is built from them at once rather
/// than by an insert (and its search) per entry: a recovery at 10,000 jobs
/// spent a fifth of its time comparing keys.
impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Tracked<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tracked<K, V>, D::Error> {
        struct Entries<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> serde::de::Visitor<'de>
            for Entries<K, V>
        {
            type Value = BTreeMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<BTreeMap<K, V>, A::Error> {
                // Bounded: the length is the input's word, the entries are not.
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = access.next_entry()? {
                    entries.push(entry);
                }
                // Sorted already, as saved: `collect` then checks the order and
                // builds the tree in one pass (a duplicate key keeps the last).
                Ok(entries.into_iter().collect())
            }
        }
        Ok(Tracked {
            map: d.deserialize_map(Entries(std::marker::PhantomData))?,
            changed: BTreeSet::new(),
            fresh: false,
        })
    }
}

/// A [`Tracked`] as the journal sees it, whatever its key and value.
pub trait Table {
    /// Appends a record for each change since the last call (see
    /// [`crate::journal`]'s records): `Clear` then every entry for a fresh
    /// table, else a `Put` or `Delete` per key changed.
    fn write_changes(
        &mut self,
        id: u8,
        out: &mut super::super::journal::Records,
    ) -> postcard::Result<()>;
    /// Forgets the changes: a whole snapshot was saved.
    fn saved(&mut self);
    /// Applies a record's body.
    fn put(&mut self, entry: &[u8]) -> postcard::Result<()>;
    fn delete(&mut self, key: &[u8]) -> postcard::Result<()>;
    fn clear(&mut self);
    /// Exchanges the entries with `other`, a table of the same type.
    fn swap(&mut self, other: &mut dyn Table);
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

impl<K, V> Table for Tracked<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    fn write_changes(
        &mut self,
        id: u8,
        out: &mut super::super::journal::Records,
    ) -> postcard::Result<()> {
        match self.take_changes() {
            None => {
                out.clear(id);
                for entry in &self.map {
                    out.put(id, &entry)?;
                }
            }
            Some(keys) => {
                for key in keys {
                    match self.map.get_key_value(&key) {
                        Some(entry) => out.put(id, &entry)?,
                        None => out.delete(id, &key)?,
                    }
                }
            }
        }
        Ok(())
    }

    fn saved(&mut self) {
        self.take_changes();
    }

    fn put(&mut self, entry: &[u8]) -> postcard::Result<()> {
        let (k, v): (K, V) = postcard::from_bytes(entry)?;
        self.map.insert(k, v);
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> postcard::Result<()> {
        let k: K = postcard::from_bytes(key)?;
        self.map.remove(&k);
        Ok(())
    }

    fn clear(&mut self) {
        self.map.clear();
    }

    fn swap(&mut self, other: &mut dyn Table) {
        if let Some(other) = other.as_any().downcast_mut::<Tracked<K, V>>() {
            std::mem::swap(&mut self.map, &mut other.map);
        }
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(t: &Tracked<u32, String>) -> Vec<u32> {
        t.changed_keys().copied().collect()
    }

    #[test]
    fn every_way_to_change_an_entry_notes_its_key_and_only_its_key() {
        let fresh: Tracked<u32, String> = [(1, "a".into()), (2, "b".into())].into();
        assert_eq!(keys(&fresh), [1, 2], "a table made anew is saved whole");
        let bytes = postcard::to_stdvec(&fresh).unwrap();
        assert_eq!(
            bytes,
            postcard::to_stdvec(&*fresh).unwrap(),
            "saved as its map"
        );
        let mut t: Tracked<u32, String> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(t, fresh);
        assert!(keys(&t).is_empty(), "a table loaded is clean");
        t.get_mut(&1).unwrap().push('!');
        t.insert(3, "c".into());
        t.remove(&2);
        assert_eq!(keys(&t), [1, 2, 3]);
        assert_eq!(t.take_changes(), Some([1, 2, 3].into()));
        // `retain` notes what it removes or changes, nothing it leaves be.
        t.insert(4, "d".into());
        t.take_changes();
        t.retain(|k, v| {
            if *k == 3 {
                v.push('?');
            }
            *k != 4
        });
        assert_eq!(keys(&t), [3, 4]);
        t.take_changes();
        t.values_mut().for_each(drop);
        assert_eq!(keys(&t), [1, 3], "handed out: noted, changed or not");
        assert!(head_only(|| postcard::to_stdvec(&t)).unwrap() == [0]);
    }
}
