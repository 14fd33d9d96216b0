//! The secure port's authentication and authorization middleware over [`crate::auth::Auth`]: 401 and 403 as
//! Kubernetes `Status` bodies, the front proxy's identity headers removed once consumed, the user handed to
//! handlers as a request extension. The probe paths pass untouched.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::auth::{ALWAYS_ALLOW_PATHS, Attributes, Auth, ClientChain, Decision};

/// Authenticates, then authorizes, every request but the probes.
pub async fn layer(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    if ALWAYS_ALLOW_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let chain = request.extensions().get::<Arc<ClientChain>>().cloned();
    let (user, via_proxy) = match auth.authenticate(chain.as_deref(), request.headers()).await {
        Ok(found) => found,
        Err(error) => {
            auth.count("unauthorized");
            tracing::debug!(path = request.uri().path(), reason = %error.0, "unauthenticated request");
            return ApiError::unauthorized("Unauthorized").into_response();
        }
    };
    let attributes = Attributes::of(request.method(), request.uri());
    match auth.authorize(&user, &attributes).await {
        Ok(Decision::Allow) => {}
        Ok(Decision::Deny(reason)) => {
            auth.count("forbidden");
            return ApiError::forbidden(attributes.forbidden_message(&user.name, &reason))
                .into_response();
        }
        Err(error) => {
            auth.count("error");
            tracing::warn!(%error, "authorization review failed");
            return ApiError::internal(format!("authorization could not be checked: {error}"))
                .into_response();
        }
    }
    auth.count("allowed");
    if via_proxy {
        strip_identity_headers(request.headers_mut());
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// Removes the `X-Remote-*` headers the front proxy set, so no handler mistakes them for anything else.
fn strip_identity_headers(headers: &mut http::HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-remote-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}
