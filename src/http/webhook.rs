//! Mutating admission webhook for Deployments (placeholder module: routes and state are filled in by the
//! webhook work; until then no route is mounted).

use axum::Router;
use clap::Args;

use super::AppState;
use crate::telemetry::Telemetry;

/// Command-line settings of the admission webhook.
#[derive(Debug, Clone, Default, Args)]
pub struct WebhookArgs {}

/// Shared state of the webhook handlers.
#[derive(Debug, Default)]
pub struct WebhookState {}

impl WebhookState {
    /// Builds the state from validated settings, registering the webhook's metrics.
    pub fn from_args(_args: &WebhookArgs, _telemetry: &Telemetry) -> Self {
        WebhookState {}
    }
}

/// Routes of the webhook on the secure port.
pub fn routes() -> Router<AppState> {
    Router::new()
}
