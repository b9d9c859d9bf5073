//! The routing table: segment-aware longest-prefix match, pure and table-tested.
//!
//! A [`ShardedMap`]: a copy costs O(1) and a change copies 1/64 of the table at most, so the
//! directory changes one route at a time while packets keep reading the previous copy.

use std::sync::Arc;

use super::sharded::ShardedMap;

/// Prefix → next-hop account. A prefix matches a destination equal to it or starting with it
/// followed by `.`, so `g.alice` catches `g.alice.x` but not `g.alicebob`. A prefix can be a
/// static route, an account's own address, or both; the static route wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    prefixes: ShardedMap<Arc<str>, Entry>,
}

/// What one prefix leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// A static route (`routes` row).
    route: Option<i64>,
    /// The account whose own address this is.
    address: Option<i64>,
}

impl RoutingTable {
    /// An empty table.
    pub fn new() -> RoutingTable {
        RoutingTable::default()
    }

    /// Points the static route `prefix` at `account_id`; `None` removes it.
    pub fn set_route(&mut self, prefix: &str, account_id: Option<i64>) {
        self.update(
            prefix,
            || Arc::from(prefix),
            |entry| entry.route = account_id,
        );
    }

    /// Records `address` as `account_id`'s own address (keyed by the account's own copy of
    /// the text, so the table adds none).
    pub fn set_address(&mut self, address: &Arc<str>, account_id: i64) {
        self.update(
            address,
            || address.clone(),
            |entry| entry.address = Some(account_id),
        );
    }

    /// Forgets `address` as `account_id`'s own address (another account's stays).
    pub fn clear_address(&mut self, address: &str, account_id: i64) {
        self.update(
            address,
            || Arc::from(address),
            |entry| {
                if entry.address == Some(account_id) {
                    entry.address = None;
                }
            },
        );
    }

    /// Changes the entry of `prefix`; `key` makes its key when it has none yet.
    fn update(
        &mut self,
        prefix: &str,
        key: impl FnOnce() -> Arc<str>,
        change: impl FnOnce(&mut Entry),
    ) {
        let before = self.prefixes.get(prefix).copied().unwrap_or_default();
        let mut entry = before;
        change(&mut entry);
        if entry == before {
            return;
        }
        if entry == Entry::default() {
            self.prefixes.remove(prefix);
        } else if let Some(slot) = self.prefixes.get_mut(prefix) {
            *slot = entry;
        } else {
            self.prefixes.insert(key(), entry);
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// True when no prefix is known.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The account for the longest prefix of `destination`, compared segment by segment,
    /// among the accounts `usable` accepts (a route to a removed account leads nowhere, so a
    /// shorter prefix gets the packet).
    ///
    /// One hash lookup per segment, longest first: cost grows with the address's depth, not
    /// with the table's size (Interledger.rs scans every prefix with `starts_with`).
    pub fn resolve(&self, destination: &str, usable: impl Fn(i64) -> bool) -> Option<i64> {
        let mut candidate = destination;
        loop {
            if let Some(entry) = self.prefixes.get(candidate)
                && let Some(account) = [entry.route, entry.address]
                    .into_iter()
                    .flatten()
                    .find(|id| usable(*id))
            {
                return Some(account);
            }
            candidate = &candidate[..candidate.rfind('.')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, i64)]) -> RoutingTable {
        let mut table = RoutingTable::new();
        for (prefix, id) in routes {
            table.set_route(prefix, Some(*id));
        }
        table
    }

    fn any(_: i64) -> bool {
        true
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
            assert_eq!(t.resolve(destination, any), expected, "{destination}");
        }
    }

    #[test]
    fn a_later_route_replaces_the_prefix_and_removing_it_empties_the_table() {
        // Proves re-adding a prefix repoints it rather than keeping both, and removal is total.
        let mut t = table(&[("g.a", 1)]);
        t.set_route("g.a", Some(2));
        assert_eq!(t.resolve("g.a.b", any), Some(2));
        assert_eq!(t.len(), 1);
        t.set_route("g.a", None);
        assert_eq!(t.resolve("g.a.b", any), None);
        assert!(t.is_empty());
    }

    #[test]
    fn a_static_route_beats_an_address_and_removing_it_uncovers_the_address() {
        // Proves the two kinds of entry on one prefix are kept apart.
        let mut t = RoutingTable::new();
        t.set_address(&Arc::from("g.bob"), 7);
        t.set_route("g.bob", Some(8));
        assert_eq!(t.resolve("g.bob.x", any), Some(8));
        t.set_route("g.bob", None);
        assert_eq!(t.resolve("g.bob.x", any), Some(7));
        // Clearing another account's address leaves this one's.
        t.clear_address("g.bob", 9);
        assert_eq!(t.resolve("g.bob", any), Some(7));
        t.clear_address("g.bob", 7);
        assert!(t.is_empty());
    }

    #[test]
    fn an_unusable_account_passes_the_packet_to_a_shorter_prefix() {
        // Proves a route to a removed account does not shadow the routes above it.
        let t = table(&[("g", 1), ("g.a", 2)]);
        assert_eq!(t.resolve("g.a.x", |id| id != 2), Some(1));
        assert_eq!(t.resolve("g.a.x", |_| false), None);
    }
}
