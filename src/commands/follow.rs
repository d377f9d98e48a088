use super::Context;
use crate::cli::FollowArgs;
use crate::error::{Error, Result};
use crate::state::Store;
pub async fn run(_ctx: &Context, _args: &FollowArgs) -> Result<i32> {
    Err(Error::definite("follow is not built yet", "wait"))
}
pub async fn catch_up(_ctx: &Context, _s: &Store, lo: &str, _hi: &str) -> Result<String> {
    Ok(lo.to_string())
}
