//! The in-memory index of current records and the digests that make anti-entropy cheap.
//!
//! Records are keyed by the SHA-256 of their name, so the key space is a uniform 16-ary trie.
//! A prefix's summary is the count of records under it and the XOR of their digests; the root
//! summary is kept up to date on every change, so "are we in sync?" costs one comparison and a
//! few dozen bytes whatever the number of files. When summaries differ, peers descend only into
//! the children that differ, so catching up on K changes exchanges metadata in proportion to K.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::name::FileName;
use crate::record::Record;

/// A prefix with at most this many records is answered with the records themselves.
pub const LEAF_MAX: u32 = 4;
/// Nibbles in a key.
pub const MAX_DEPTH: u8 = 64;

/// Count and XOR of digests of the records under a prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub count: u32,
    pub digest: [u8; 16],
}

impl Summary {
    fn toggle(&mut self, digest: &[u8; 16], added: bool) {
        for (acc, byte) in self.digest.iter_mut().zip(digest) {
            *acc ^= byte;
        }
        self.count = if added {
            self.count.saturating_add(1)
        } else {
            self.count.saturating_sub(1)
        };
    }
}

/// The first `depth` nibbles of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub depth: u8,
    pub key: [u8; 32],
}

impl Prefix {
    pub const ROOT: Prefix = Prefix {
        depth: 0,
        key: [0; 32],
    };

    /// A prefix with the nibbles beyond `depth` cleared; `None` when `depth` is out of range.
    pub fn new(depth: u8, mut key: [u8; 32]) -> Option<Self> {
        if depth > MAX_DEPTH {
            return None;
        }
        let full = usize::from(depth / 2);
        if depth % 2 == 1 {
            key[full] &= 0xf0;
        }
        let clear_from = usize::from(depth.div_ceil(2));
        key[clear_from..].fill(0);
        Some(Self { depth, key })
    }

    pub fn child(&self, nibble: u8) -> Option<Prefix> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        let mut key = self.key;
        let at = usize::from(self.depth / 2);
        key[at] |= if self.depth % 2 == 0 {
            (nibble & 0xf) << 4
        } else {
            nibble & 0xf
        };
        Prefix::new(self.depth + 1, key)
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        Prefix::new(self.depth, *key).is_some_and(|p| p.key == self.key)
    }

    /// The key range `[start, end]` this prefix covers.
    fn range(&self) -> ([u8; 32], [u8; 32]) {
        let mut end = self.key;
        let full = usize::from(self.depth / 2);
        if self.depth % 2 == 1 {
            end[full] |= 0x0f;
        }
        end[usize::from(self.depth.div_ceil(2))..].fill(0xff);
        (self.key, end)
    }
}

fn nibble_at(key: &[u8; 32], depth: u8) -> usize {
    let byte = key[usize::from(depth / 2)];
    usize::from(if depth % 2 == 0 {
        byte >> 4
    } else {
        byte & 0x0f
    })
}

/// The key of a name in the trie.
pub fn key_of(name: &FileName) -> [u8; 32] {
    Sha256::digest(name.as_str().as_bytes()).into()
}

struct Entry {
    record: Record,
    digest: [u8; 16],
}

/// Current records by name, with digests for reconciliation.
#[derive(Default)]
pub struct Index {
    entries: BTreeMap<[u8; 32], Entry>,
    root: Summary,
}

impl Index {
    pub fn get(&self, name: &FileName) -> Option<&Record> {
        self.entries.get(&key_of(name)).map(|entry| &entry.record)
    }

    /// Sets the current record of its name, replacing any other.
    pub fn insert(&mut self, record: Record) {
        let key = key_of(&record.name);
        self.remove_key(&key);
        let digest = short_digest(&record);
        self.root.toggle(&digest, true);
        self.entries.insert(key, Entry { record, digest });
    }

    pub fn remove(&mut self, name: &FileName) -> Option<Record> {
        self.remove_key(&key_of(name))
    }

    fn remove_key(&mut self, key: &[u8; 32]) -> Option<Record> {
        let entry = self.entries.remove(key)?;
        self.root.toggle(&entry.digest, false);
        Some(entry.record)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.entries.values().map(|entry| &entry.record)
    }

    pub fn root(&self) -> Summary {
        self.root
    }

    fn entries_in(&self, prefix: &Prefix) -> impl Iterator<Item = (&[u8; 32], &Entry)> {
        let prefix = *prefix;
        let (start, end) = prefix.range();
        self.entries
            .range(start..=end)
            .filter(move |(key, _)| prefix.contains(key))
    }

    pub fn summary(&self, prefix: &Prefix) -> Summary {
        if prefix.depth == 0 {
            return self.root;
        }
        let mut summary = Summary::default();
        for (_, entry) in self.entries_in(prefix) {
            summary.toggle(&entry.digest, true);
        }
        summary
    }

    /// Summaries of the 16 children of `prefix` (all empty at the deepest level).
    pub fn children(&self, prefix: &Prefix) -> [Summary; 16] {
        let mut children = [Summary::default(); 16];
        if prefix.depth < MAX_DEPTH {
            for (key, entry) in self.entries_in(prefix) {
                children[nibble_at(key, prefix.depth)].toggle(&entry.digest, true);
            }
        }
        children
    }

    pub fn records_in(&self, prefix: &Prefix) -> Vec<&Record> {
        self.entries_in(prefix)
            .map(|(_, entry)| &entry.record)
            .collect()
    }
}

fn short_digest(record: &Record) -> [u8; 16] {
    let full = record.digest();
    let mut short = [0; 16];
    short.copy_from_slice(&full[..16]);
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn records(count: usize, tag: &[u8]) -> Vec<Record> {
        let key = SecretKey::from_seed([7; 32]);
        let network = key.public();
        (0..count)
            .map(|i| {
                let name = FileName::parse(&format!("file_{i}")).unwrap();
                Record::sign_update(&key, network, name, tag, 1, None)
            })
            .collect()
    }

    #[test]
    fn root_summary_is_independent_of_insertion_order_and_tracks_changes() {
        let mut forward = Index::default();
        let mut backward = Index::default();
        let all = records(50, b"a");
        all.iter().cloned().for_each(|r| forward.insert(r));
        all.iter().rev().cloned().for_each(|r| backward.insert(r));
        assert_eq!(forward.root(), backward.root());
        assert_eq!(forward.root().count, 50);
        let changed = records(1, b"b").remove(0);
        backward.insert(changed);
        assert_ne!(forward.root(), backward.root());
        assert_eq!(backward.len(), 50);
    }

    #[test]
    fn children_partition_the_parent() {
        let mut index = Index::default();
        records(200, b"a").into_iter().for_each(|r| index.insert(r));
        for prefix in [
            Prefix::ROOT,
            Prefix::ROOT.child(3).unwrap(),
            Prefix::ROOT.child(3).unwrap().child(9).unwrap(),
        ] {
            let children = index.children(&prefix);
            let total: u32 = children.iter().map(|c| c.count).sum();
            assert_eq!(total, index.summary(&prefix).count);
            for (nibble, child) in children.iter().enumerate() {
                let child_prefix = prefix.child(nibble as u8).unwrap();
                assert_eq!(*child, index.summary(&child_prefix));
                assert_eq!(index.records_in(&child_prefix).len() as u32, child.count);
            }
        }
    }

    #[test]
    fn prefix_new_masks_and_bounds_depth() {
        assert!(Prefix::new(65, [0xff; 32]).is_none());
        let p = Prefix::new(3, [0xff; 32]).unwrap();
        assert_eq!(&p.key[..3], &[0xff, 0xf0, 0]);
        assert!(Prefix::new(64, [0xff; 32]).unwrap().child(1).is_none());
    }
}
