//! Writes to the target, several per round trip: statements are buffered and sent together as
//! one multi-statement query when a read needs their effect, when the buffer is full, or at a
//! flush. Applying change by change (cascades, savepoints, keyless rows) is mostly waiting for
//! round trips, so this is what makes it fast. The server executes the statements in order and
//! stops at the first error, which is returned.

use crate::db;
use crate::error::Result;
use mysql_async::Conn;

pub struct Pipe<'a> {
    pub conn: &'a mut Conn,
    /// Queued statements; owned by the applier, so they can wait across transactions of a
    /// group (sent before any other write of the group and before its commit).
    buf: &'a mut String,
    /// Flush when the buffer would grow past this many bytes.
    max: usize,
    max_packet: usize,
}

impl<'a> Pipe<'a> {
    pub fn new(conn: &'a mut Conn, buf: &'a mut String, max: usize, max_packet: usize) -> Pipe<'a> {
        Pipe {
            conn,
            buf,
            max,
            max_packet,
        }
    }

    /// Queue a statement (`what` names the table for a too-large error).
    pub async fn write(&mut self, sql: String, what: &str) -> Result<()> {
        db::check_packet(sql.len(), self.max_packet, what)?;
        if !self.buf.is_empty() && self.buf.len() + sql.len() + 2 > self.max {
            self.flush().await?;
        }
        if self.buf.is_empty() {
            *self.buf = sql;
        } else {
            self.buf.push_str(";\n");
            self.buf.push_str(&sql);
        }
        if self.buf.len() >= self.max {
            // a large statement (big rows) is not held in memory longer than needed
            self.flush().await?;
        }
        Ok(())
    }

    /// Send what is queued.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let sql = std::mem::take(self.buf);
            crate::db::run(self.conn, &sql).await?;
        }
        Ok(())
    }

    /// Run a query after everything queued (its result sees their effect).
    pub async fn rows(&mut self, sql: String) -> Result<Vec<mysql_async::Row>> {
        self.flush().await?;
        crate::db::query_rows(self.conn, &sql).await
    }
}
