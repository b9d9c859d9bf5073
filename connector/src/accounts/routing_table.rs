//! The routing table: segment-aware longest-prefix match, pure and table-tested.

use std::collections::HashMap;

/// Prefix → next-hop account id. A prefix matches a destination equal to it or starting
/// with it followed by `.`, so `g.alice` catches `g.alice.x` but not `g.alicebob`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    prefixes: HashMap<String, i64>,
}

impl RoutingTable {
    /// An empty table.
    pub fn new() -> RoutingTable {
        RoutingTable::default()
    }

    /// Adds `prefix` → `account_id`, replacing an earlier entry for the same prefix.
    pub fn insert(&mut self, prefix: &str, account_id: i64) {
        self.prefixes.insert(prefix.to_owned(), account_id);
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// True when no prefix is known.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The account for the longest prefix of `destination`, compared segment by segment.
    ///
    /// One hash lookup per segment, longest first: cost grows with the address's depth, not
    /// with the table's size (Interledger.rs scans every prefix with `starts_with`).
    pub fn resolve(&self, destination: &str) -> Option<i64> {
        let mut candidate = destination;
        loop {
            if let Some(account) = self.prefixes.get(candidate) {
                return Some(*account);
            }
            candidate = &candidate[..candidate.rfind('.')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, i64)]) -> RoutingTable {
        let mut table = RoutingTable::new();
        for (prefix, id) in entries {
            table.insert(prefix, *id);
        }
        table
    }

    #[test]
    fn longest_prefix_wins_at_segment_boundaries() {
        // Proves the match is by whole segments and the longest prefix wins.
        let t = table(&[("g", 1), ("g.alice", 2), ("g.alice.bob", 3), ("test.x", 4)]);
        let cases = [
            ("g.alice", Some(2)),
            ("g.alice.carol", Some(2)),
            ("g.alice.bob", Some(3)),
            ("g.alice.bob.dave.eve", Some(3)),
            ("g.alicebob", Some(1)),
            ("g.al", Some(1)),
            ("test.x.y", Some(4)),
            ("test.xy", None),
            ("test", None),
            ("example.z", None),
        ];
        for (destination, expected) in cases {
            assert_eq!(t.resolve(destination), expected, "{destination}");
        }
    }

    #[test]
    fn a_later_insert_replaces_the_prefix() {
        // Proves re-adding a prefix repoints it rather than keeping both.
        let mut t = table(&[("g.a", 1)]);
        t.insert("g.a", 2);
        assert_eq!(t.resolve("g.a.b"), Some(2));
        assert_eq!(t.len(), 1);
    }
}
