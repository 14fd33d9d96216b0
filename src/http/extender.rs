//! Scheduler extender (filter and prioritize) (placeholder module: routes and state are filled in by the
//! extender work; until then no route is mounted).

use axum::Router;
use clap::Args;

use super::AppState;
use crate::telemetry::Telemetry;

/// Command-line settings of the scheduler extender.
#[derive(Debug, Clone, Default, Args)]
pub struct ExtenderArgs {}

/// Shared state of the extender handlers.
#[derive(Debug, Default)]
pub struct ExtenderState {}

impl ExtenderState {
    /// Builds the state from validated settings, registering the extender's metrics.
    pub fn from_args(_args: &ExtenderArgs, _telemetry: &Telemetry) -> Self {
        ExtenderState {}
    }
}

/// Routes of the extender on the secure port.
pub fn routes() -> Router<AppState> {
    Router::new()
}
