//! An insertion-ordered hash map with the operations of Python's `OrderedDict` that span pairing uses:
//! assigning to a present key keeps its place, removal anywhere is O(1) (the order queue drops stale
//! entries lazily, and is compacted when they outnumber the live ones), the front is O(1) amortised.
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A fast hasher for random ids (trace ids, span ids): multiply-rotate over 8-byte words.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let h = self.0 ^ (self.0 >> 29);
        h.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap());
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub type IdBuild = BuildHasherDefault<IdHasher>;
pub type IdMap<K, V> = HashMap<K, V, IdBuild>;

pub struct OMap<K, V> {
    map: IdMap<K, (u64, V)>,
    order: VecDeque<(u64, K)>,
    next: u64,
}

impl<K: Hash + Eq + Clone, V> Default for OMap<K, V> {
    fn default() -> Self {
        OMap { map: IdMap::default(), order: VecDeque::new(), next: 0 }
    }
}

impl<K: Hash + Eq + Clone, V> OMap<K, V> {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|e| &e.1)
    }
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|e| &mut e.1)
    }
    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }
    /// `d[k] = v`: a present key keeps its place.
    pub fn insert(&mut self, k: K, v: V) {
        match self.map.entry(k) {
            Entry::Occupied(mut e) => e.get_mut().1 = v,
            Entry::Vacant(e) => {
                let seq = self.next;
                self.next += 1;
                self.order.push_back((seq, e.key().clone()));
                e.insert((seq, v));
            }
        }
    }
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let out = self.map.remove(k).map(|e| e.1);
        if out.is_some() && self.order.len() > 64 && self.order.len() > 3 * self.map.len() {
            let map = &self.map;
            self.order.retain(|(seq, key)| map.get(key).is_some_and(|e| e.0 == *seq));
        }
        out
    }
    fn skip_stale(&mut self) {
        while let Some((seq, key)) = self.order.front() {
            if self.map.get(key).is_some_and(|e| e.0 == *seq) {
                return;
            }
            self.order.pop_front();
        }
    }
    /// The first key in order.
    pub fn front(&mut self) -> Option<(K, &V)> {
        self.skip_stale();
        let (_, key) = self.order.front()?;
        let key = key.clone();
        let v = &self.map.get(&key).unwrap().1;
        Some((key, v))
    }
    pub fn front_mut(&mut self) -> Option<(K, &mut V)> {
        self.skip_stale();
        let (_, key) = self.order.front()?;
        let key = key.clone();
        let v = &mut self.map.get_mut(&key).unwrap().1;
        Some((key, v))
    }
    pub fn pop_front(&mut self) -> Option<(K, V)> {
        self.skip_stale();
        let (_, key) = self.order.pop_front()?;
        let v = self.map.remove(&key).unwrap().1;
        Some((key, v))
    }
    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order.iter().filter_map(move |(seq, key)| match self.map.get_key_value(key) {
            Some((k, (s, v))) if s == seq => Some((k, v)),
            _ => None,
        })
    }
}
