//! The one retry policy every verb uses: which failures are worth another try (`Error::
//! is_transient`: lost connections, deadlocks, lock waits, a server shutting down — decided by
//! error code in `error.rs`) and one backoff: 200 ms, doubling up to 10 s, back to 200 ms after
//! any success. A verb that ends (snapshot, verify, cutover) gives up after `BOUNDED_ATTEMPTS`
//! failures in a row (about five minutes of an unreachable server) with an error that names
//! the server to check; follow retries for as long as it runs.

use crate::error::{Error, Result};
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(10);
/// Failures in a row a bounded verb accepts: 200 ms .. 10 s doubling, then 10 s each, is
/// about five minutes.
pub const BOUNDED_ATTEMPTS: u32 = 36;

#[derive(Debug)]
pub struct Backoff {
    failures: u32,
    limit: Option<u32>,
}

impl Backoff {
    /// For a verb that ends: gives up after `BOUNDED_ATTEMPTS` failures in a row.
    pub fn bounded() -> Backoff {
        Backoff {
            failures: 0,
            limit: Some(BOUNDED_ATTEMPTS),
        }
    }
    /// For `follow`: never gives up on a transient failure.
    pub fn forever() -> Backoff {
        Backoff {
            failures: 0,
            limit: None,
        }
    }
    /// A bounded backoff with a smaller budget (e.g. the first connection of a short verb).
    pub fn attempts(n: u32) -> Backoff {
        Backoff {
            failures: 0,
            limit: Some(n),
        }
    }

    /// The work succeeded: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// After a failure: how long to wait before trying again, or None when it is not worth
    /// another try (a definite error, or the budget is spent).
    pub fn delay(&mut self, e: &Error) -> Option<Duration> {
        if !e.is_transient() || self.limit.is_some_and(|l| self.failures + 1 >= l) {
            return None;
        }
        let d = FIRST.saturating_mul(1u32 << self.failures.min(10)).min(CAP);
        self.failures += 1;
        Some(d)
    }

    /// After a failure: wait and return Ok to try again (logging what failed), or return the
    /// error when it is not worth another try.
    pub async fn retry_after(&mut self, e: Error, doing: &str) -> Result<()> {
        match self.delay(&e) {
            Some(d) => {
                tracing::warn!(
                    attempt = self.failures,
                    "{doing}: {e}; trying again in {d:?} (attempt {})",
                    self.failures
                );
                tokio::time::sleep(d).await;
                Ok(())
            }
            None if e.is_transient() => Err(Error::definite(
                format!("{doing}: {e} (gave up after {} attempts)", self.failures + 1),
                "check that both servers are reachable from this host, then run the same command again: it continues where it stopped",
            )),
            None => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backoff_doubles_to_a_cap_resets_and_gives_up() {
        let lost = Error::transient("lost connection");
        let mut b = Backoff::bounded();
        let delays: Vec<u64> = (0..8)
            .map(|_| b.delay(&lost).map(|d| d.as_millis() as u64).unwrap_or(0))
            .collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.delay(&lost), Some(FIRST));
        // a definite error is never retried
        assert_eq!(b.delay(&Error::definite("bad", "fix")), None);
        // the budget
        let mut b = Backoff::attempts(3);
        assert!(b.delay(&lost).is_some() && b.delay(&lost).is_some());
        assert_eq!(b.delay(&lost), None);
        let mut f = Backoff::forever();
        assert!((0..1000).all(|_| f.delay(&lost).is_some()));
    }
}
