//! MSTL + ETS forecasts from augurs. PLACEHOLDER: being written; returns an error until then.

use super::{ForecastError, History, PointForecast, STEPS_PER_DAY};

/// Fewest observed points MSTL is fitted on: two days, so the daily period is seen twice.
pub const MIN_POINTS: usize = 2 * STEPS_PER_DAY;

/// Fits MSTL on `history` and forecasts `steps` steps after its end.
pub fn forecast(history: &History, steps: usize) -> Result<PointForecast, ForecastError> {
    let _ = (history, steps);
    Err(ForecastError::Model {
        model: "mstl",
        message: "not written yet".into(),
    })
}
