//! MariaDB-specific events (mysql_common returns them as unknown) and event type numbers.

use crate::error::{Error, Result};
use crate::position::Gtid;

pub const GTID_EVENT: u8 = 162;
pub const GTID_LIST_EVENT: u8 = 163;
pub const BINLOG_CHECKPOINT_EVENT: u8 = 161;
pub const ANNOTATE_ROWS_EVENT: u8 = 160;
pub const START_ENCRYPTION_EVENT: u8 = 164;

/// GTID flags2: the group is one standalone statement (DDL), no BEGIN/COMMIT.
const FL_STANDALONE: u8 = 0x01;
const FL_GROUP_COMMIT_ID: u8 = 0x02;
/// An XA transaction's PREPARE (0x40) or its COMMIT/ROLLBACK (0x80).
const FL_PREPARED_XA: u8 = 0x40;
const FL_COMPLETED_XA: u8 = 0x80;

/// GTID event body: `u64 seq_no, u32 domain_id, u8 flags2, ...`; server id is in the header.
pub struct GtidEvent {
    pub gtid: Gtid,
    /// No BEGIN/COMMIT: the next QUERY event is the whole transaction (DDL).
    pub standalone: bool,
    /// Part of an XA transaction (its prepare or its completion).
    pub xa: bool,
}

pub fn parse_gtid(body: &[u8], server_id: u32) -> Result<GtidEvent> {
    if body.len() < 13 {
        return Err(Error::definite(
            "binlog: truncated GTID event",
            "report this with the source version",
        ));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&body[0..8]);
    let mut domain = [0u8; 4];
    domain.copy_from_slice(&body[8..12]);
    let flags2 = body[12];
    let _ = FL_GROUP_COMMIT_ID;
    Ok(GtidEvent {
        gtid: Gtid {
            domain: u32::from_le_bytes(domain),
            server: server_id,
            seq: u64::from_le_bytes(seq),
        },
        standalone: flags2 & FL_STANDALONE != 0,
        xa: flags2 & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn gtid_event() {
        let mut b = 42u64.to_le_bytes().to_vec();
        b.extend(3u32.to_le_bytes());
        b.push(0x01);
        let g = parse_gtid(&b, 7).unwrap();
        assert_eq!(g.gtid.to_string(), "3-7-42");
        assert!(g.standalone && !g.xa);
        b[12] = 0x40;
        assert!(parse_gtid(&b, 7).unwrap().xa);
        assert!(parse_gtid(&b[..10], 7).is_err());
    }
}
