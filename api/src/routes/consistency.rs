//! The consistency token: a read route given `?min_position=N` waits, up
//! to five seconds, until its projection has applied the event at N, so a
//! client reads its own writes; then it answers 503 `projection_lagging`.

use std::time::Duration;

use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a read waits for its projection.
pub const WAIT: Duration = Duration::from_secs(5);

/// The `min_position` a client sent, if any.
#[derive(Clone, Copy, Debug)]
pub struct MinPosition(pub Option<i64>);

/// Waits until `projection` has applied `position` (when given).
///
/// # Errors
/// 400 for a negative position; 503 `projection_lagging` after [`WAIT`].
pub async fn wait_for(
    state: &AppState,
    projection: &str,
    position: MinPosition,
) -> Result<(), ApiError> {
    match position.0 {
        None => Ok(()),
        Some(n) if n < 0 => Err(ApiError::bad_request(
            "min_position: must be a position (0 or more)",
        )),
        Some(n) => Ok(state.read.wait_for(projection, n, WAIT).await?),
    }
}

/// The consistency token alone, for read routes without other parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PositionQuery {
    /// Wait until the read model has applied this position (the `position`
    /// of a command's answer).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub min_position: Option<i64>,
}
