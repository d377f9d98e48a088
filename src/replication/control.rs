//! Pausing a running follower from another process, through the state store: `verify` (and
//! later cutover) writes a pause request — "pause now", or "pause exactly at GTID G" — and the
//! follower commits what it has (or applies up to G), reports where it paused, and waits until
//! the request is withdrawn. The handshake is two rows of the store's `meta` table.

use crate::error::{Error, Result};
use crate::position::Position;
use crate::state::Store;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

const REQUEST: &str = "control.pause";
const PAUSED: &str = "control.paused";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PauseRequest {
    /// Chosen by the requester; the follower echoes it.
    pub id: String,
    /// Pause exactly at this GTID position (None: as soon as the current group is committed).
    pub at: Option<String>,
    /// The requesting process: a follower whose requester died (kill -9) resumes by itself.
    #[serde(default)]
    pub pid: u32,
}

impl PauseRequest {
    /// Whether the process that asked is gone (its request will never be withdrawn).
    pub fn orphaned(&self) -> bool {
        self.pid != 0 && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Paused {
    pub id: String,
    /// Where the follower paused (everything up to it is committed on the target).
    pub at: String,
    /// It had already applied past the requested position and could not pause there.
    pub passed: bool,
}

pub fn request(store: &Store) -> Result<Option<PauseRequest>> {
    Ok(store
        .get(REQUEST)?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

pub fn paused(store: &Store) -> Result<Option<Paused>> {
    Ok(store
        .get(PAUSED)?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

pub fn report(store: &Store, p: &Paused) -> Result<()> {
    store.set(PAUSED, &serde_json::to_string(p).unwrap_or_default())
}

/// Withdraw the request (the follower resumes).
pub fn release(store: &Store) -> Result<()> {
    store.delete(REQUEST)?;
    store.delete(PAUSED)
}

/// Ask the running follower to pause (at `at`, or now) and wait until it reports. Returns
/// where it paused.
pub async fn pause(store: &Store, at: Option<&Position>, timeout: Duration) -> Result<Paused> {
    let id = format!("{}-{}", std::process::id(), crate::state::unix_now());
    store.delete(PAUSED)?;
    store.set(
        REQUEST,
        &serde_json::to_string(&PauseRequest {
            id: id.clone(),
            at: at.map(|p| p.to_string()),
            pid: std::process::id(),
        })
        .unwrap_or_default(),
    )?;
    let t = Instant::now();
    loop {
        if let Some(p) = paused(store)? {
            if p.id == id {
                return Ok(p);
            }
        }
        if t.elapsed() > timeout {
            let _ = release(store);
            return Err(Error::transient(format!(
                "the running follow did not pause{} within {timeout:?}",
                at.map(|p| format!(" at {p}")).unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const STOP: &str = "control.stop";

/// Tell the running follower to stop for good (cutover, once the application may write to
/// the target): it stops where it is (paused at the final GTID) and does not resume.
pub fn request_stop(store: &Store) -> Result<()> {
    store.set(STOP, "cutover")
}

/// Whether a stop was requested through the state store.
pub fn stop_requested(store: &Store) -> Result<bool> {
    Ok(store.get(STOP)?.is_some())
}

/// Withdraw a stop request (a cutover aborted before the switch).
pub fn clear_stop(store: &Store) -> Result<()> {
    store.delete(STOP)
}
