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
}

impl Horizons {
    pub fn set_table(&mut self, db: &str, name: &str, pos: FilePos) {
        self.tables.insert((db.to_string(), name.to_string()), pos);
    }
    pub fn set_database(&mut self, db: &str, pos: FilePos) {
        self.databases.insert(db.to_string(), pos);
    }
    /// An event on `db.name` that ends at `end` is already contained in the copy.
    pub fn covers_table(&self, db: &str, name: &str, end: &FilePos) -> bool {
        self.databases.get(db).is_some_and(|h| end <= h)
            || self
                .tables
                .get(&(db.to_string(), name.to_string()))
                .is_some_and(|h| end <= h)
    }
    /// An event on database `db` itself that ends at `end` is already contained in the copy.
    pub fn covers_database(&self, db: &str, end: &FilePos) -> bool {
        self.databases.get(db).is_some_and(|h| end <= h)
    }
    /// The latest horizon: past it, no event is covered.
    pub fn last(&self) -> Option<&FilePos> {
        self.tables.values().chain(self.databases.values()).max()
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
    }
}
