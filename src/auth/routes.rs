//! The sign-in endpoints. They answer JSON with a stable `code` on refusal, like the
//! WebSocket protocol (docs/auth.md):
//!
//! - `GET /auth/status`: `{"password":bool,"signedIn":bool}`, what the page should ask.
//! - `POST /auth/password` with `{"password":"..."}`: 200 and the session cookie; 401
//!   `wrong-password`; 429 `rate-limited` (with `Retry-After`) after too many attempts
//!   from one address; 404 when no password is configured.
//! - `POST /auth/logout`: 204, and the cookie cleared.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::{Auth, cookie};
use crate::logging::shown;

/// The routes, for any router state that hands out the [`Auth`].
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Auth>: FromRef<S>,
{
    Router::new()
        .route("/auth/status", get(status))
        .route("/auth/password", post(password))
        .route("/auth/logout", post(logout))
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

async fn status(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    let signed_in = auth.has_session(&headers);
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({"password": auth.password.is_some(), "signedIn": signed_in})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PasswordForm {
    password: String,
}

async fn password(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    form: Result<axum::Json<PasswordForm>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (Some(password), Some(key)) = (auth.password.clone(), auth.cookies.as_ref()) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "no-password",
            "This server has no password (no --password-file).",
        );
    };
    let Ok(axum::Json(form)) = form else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid-message",
            "Send {\"password\": \"...\"} as JSON.",
        );
    };
    if !auth.attempts.allow(addr.ip()) {
        info!(addr = %shown(addr.ip()), "password sign-in refused: too many attempts from this address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "10")],
            axum::Json(json!({
                "code": "rate-limited",
                "message": "Too many password attempts from your network; wait a few seconds and try again.",
            })),
        )
            .into_response();
    }
    let candidate = form.password;
    let right = match tokio::task::spawn_blocking(move || password.verify(&candidate)).await {
        Ok(right) => right,
        Err(e) => {
            warn!(error = %e, "password check failed");
            false
        }
    };
    if !right {
        info!(addr = %shown(addr.ip()), "password sign-in refused: wrong password");
        return refusal(
            StatusCode::UNAUTHORIZED,
            "wrong-password",
            "That is not the password; try again.",
        );
    }
    info!(addr = %shown(addr.ip()), "signed in with the password");
    let value = cookie::set_cookie(&key.issue(SystemTime::now()), auth.secure);
    let mut response = axum::Json(json!({"signedIn": true})).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(auth): State<Arc<Auth>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie::clear_cookie(auth.secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
