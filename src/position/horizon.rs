//! Where each copied table's binlog history starts on the target. A table copied by the
//! snapshot holds every source change up to its horizon (the binlog position of the first
//! consistent read of its current copy), so a binlog event on it that ends at or before that
//! position is already in the copy and must not be applied again: not its rows (a keyless
//! table would get them twice, a cascade would move rows that already moved), not its DDL
//! (the copy was created with the definition that DDL produced). Databases and tables that
//! disappeared during the copy have a horizon too: the position at which the snapshot saw
//! them gone (and dropped them on the target).

use super::FilePos;
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct Horizons {
    tables: HashMap<(String, String), FilePos>,
    databases: HashMap<String, FilePos>,
    /// The binlog position at the snapshot's final listing of the source's tables (read right
    /// after it; the snapshot checked that no DDL was logged while the listing was taken): a
    /// table absent from that listing (so neither copied nor seen gone) did not exist at this
    /// position, so an event on it ending at or before it concerns an earlier table of that
    /// name that was dropped (or renamed away): its effect is not on the source at the end of
    /// the snapshot, and must not be on the target.
    listed_before: Option<FilePos>,
    /// Tables the snapshot knows (copied, being copied, or without a horizon of their own):
    /// `listed_before` never applies to them.
    known: std::collections::HashSet<(String, String)>,
}

impl Horizons {
    pub fn set_table(&mut self, db: &str, name: &str, pos: FilePos) {
        self.tables.insert((db.to_string(), name.to_string()), pos);
    }
    pub fn set_database(&mut self, db: &str, pos: FilePos) {
        self.databases.insert(db.to_string(), pos);
    }
    pub fn set_known(&mut self, db: &str, name: &str) {
        self.known.insert((db.to_string(), name.to_string()));
    }
    pub fn set_listed_before(&mut self, pos: FilePos) {
        self.listed_before = Some(pos);
    }
    /// An event on `db.name` that ends at `end` is already contained in the copy (or, for a
    /// table created and dropped during the snapshot, already undone on the source).
    pub fn covers_table(&self, db: &str, name: &str, end: &FilePos) -> bool {
        if self.databases.get(db).is_some_and(|h| end <= h) {
            return true;
        }
        let key = (db.to_string(), name.to_string());
        match self.tables.get(&key) {
            Some(h) => end <= h,
            None if self.known.contains(&key) => false,
            None => self.listed_before.as_ref().is_some_and(|p| end <= p),
        }
    }
    /// An event on database `db` itself that ends at `end` is already contained in the copy.
    pub fn covers_database(&self, db: &str, end: &FilePos) -> bool {
        self.databases.get(db).is_some_and(|h| end <= h)
    }
    /// The latest horizon: past it, no event is covered.
    pub fn last(&self) -> Option<&FilePos> {
        self.tables
            .values()
            .chain(self.databases.values())
            .chain(self.listed_before.iter())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn covers_up_to_the_horizon() {
        let mut h = Horizons::default();
        h.set_table("s", "t", FilePos::new("bin.000002", 500));
        h.set_database("gone", FilePos::new("bin.000003", 4));
        assert!(h.covers_table("s", "t", &FilePos::new("bin.000001", 9000)));
        assert!(h.covers_table("s", "t", &FilePos::new("bin.000002", 500)));
        assert!(!h.covers_table("s", "t", &FilePos::new("bin.000002", 501)));
        assert!(!h.covers_table("s", "u", &FilePos::new("bin.000001", 1)));
        assert!(h.covers_table("gone", "x", &FilePos::new("bin.000002", 9)));
        assert!(h.covers_database("gone", &FilePos::new("bin.000003", 4)));
        assert_eq!(h.last(), Some(&FilePos::new("bin.000003", 4)));
        // a table absent from the snapshot's final listing: created and dropped during it
        h.set_listed_before(FilePos::new("bin.000002", 800));
        h.set_known("s", "no_horizon");
        assert!(h.covers_table("s", "u", &FilePos::new("bin.000002", 800)));
        assert!(!h.covers_table("s", "u", &FilePos::new("bin.000002", 801)));
        assert!(!h.covers_table("s", "no_horizon", &FilePos::new("bin.000001", 1)));
        assert!(!h.covers_table("s", "t", &FilePos::new("bin.000002", 700)));
    }
}
