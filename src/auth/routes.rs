//! The sign-in endpoints. They answer JSON with a stable `code` on refusal, like the
//! WebSocket protocol (docs/auth.md):
//!
//! - `GET /auth/status`: `{"password":bool,"oidc":null|{"provider":".."},"signedIn":bool,
//!   "name":null|".."}`, what the page should ask (`name`: an OpenID session's name).
//! - `POST /auth/password` with `{"password":"..."}`: 200 and the session cookie; 401
//!   `wrong-password`; 429 `rate-limited` (with `Retry-After`) after too many attempts
//!   from one address; 404 when no password is configured.
//! - `GET /auth/oidc/login`: 303 to the OpenID provider (and the flow cookie); 404
//!   without `--oidc-issuer`.
//! - `GET /auth/callback`: where the provider sends the browser back: 303 to `/` with the
//!   session cookie, or an HTML page saying why not (its `code` in `#oidcError`).
//! - `POST /auth/logout`: 204, and the cookie cleared.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::oidc::{FLOW_COOKIE, FLOW_LIFETIME, OidcError, SESSION_LIFETIME};
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
        .route("/auth/oidc/login", get(oidc_login))
        .route("/auth/callback", get(oidc_callback))
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
    let session = auth.session(&headers);
    let name = session.clone().flatten().map(|identity| identity.name);
    let oidc = auth
        .oidc
        .as_ref()
        .map(|oidc| json!({"provider": oidc.provider_name}));
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({
            "password": auth.password.is_some(),
            "oidc": oidc,
            "signedIn": session.is_some(),
            "name": name,
        })),
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

/// `scheme://host` of the request: where the browser reached us.
fn request_origin(auth: &Auth, headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let scheme = if auth.secure { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// The `Set-Cookie` value of the flow cookie (`value` empty: cleared).
fn flow_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let age = if value.is_empty() {
        0
    } else {
        FLOW_LIFETIME.as_secs()
    };
    // Lax: the provider's redirect back is a top-level GET, which carries it.
    format!("{FLOW_COOKIE}={value}; Path=/auth; Max-Age={age}; HttpOnly; SameSite=Lax{secure}")
}

fn with_cookie(mut response: Response, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The page a failed OpenID sign-in lands on: what happened, what to do, its code.
fn oidc_error_page(error: &OidcError) -> Response {
    let status = match error {
        OidcError::BadState | OidcError::NoName(_) => StatusCode::BAD_REQUEST,
        OidcError::NotAllowed(_) => StatusCode::FORBIDDEN,
        OidcError::Provider(_) | OidcError::BadToken(_) => StatusCode::UNAUTHORIZED,
        OidcError::Unavailable(_) => StatusCode::BAD_GATEWAY,
    };
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign-in failed · duet</title>\
         <main style=\"font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem\">\
         <h1>Sign-in failed</h1>\
         <p id=\"oidcError\" data-code=\"{code}\">{message}.</p>\
         <p><small>Code: <code>{code}</code></small></p>\
         <p><a href=\"/\">Back to duet</a></p></main></html>",
        code = error.code(),
        message = escape(&error.to_string()),
    );
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn oidc_login(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let (Some(oidc), Some(key)) = (auth.oidc.as_ref(), auth.cookies.as_ref()) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "no-oidc",
            "This server signs nobody in with an OpenID provider (no --oidc-issuer).",
        );
    };
    match oidc
        .start(key, &request_origin(&auth, &headers, &uri))
        .await
    {
        Ok((to, flow)) => with_cookie(see_other(to.as_str()), &flow_cookie(&flow, auth.secure)),
        Err(e) => {
            warn!(code = e.code(), error = %e, "OpenID sign-in cannot start");
            oidc_error_page(&e)
        }
    }
}

async fn oidc_callback(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let (Some(oidc), Some(key)) = (auth.oidc.as_ref(), auth.cookies.as_ref()) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "no-oidc",
            "This server signs nobody in with an OpenID provider (no --oidc-issuer).",
        );
    };
    let query = query
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let flow = cookie::named_cookie(&headers, FLOW_COOKIE);
    let origin = request_origin(&auth, &headers, &uri);
    let cleared = flow_cookie("", auth.secure);
    match oidc.finish(key, &origin, &query, flow).await {
        Ok(who) => {
            info!(addr = %shown(addr.ip()), sub = %shown(&who.sub), name = %shown(&who.name), "signed in with the OpenID provider");
            let session =
                key.issue_identity(SystemTime::now(), SESSION_LIFETIME, &who.sub, &who.name);
            let session = cookie::set_cookie_for(&session, auth.secure, SESSION_LIFETIME);
            with_cookie(with_cookie(see_other("/"), &session), &cleared)
        }
        Err(e) => {
            info!(addr = %shown(addr.ip()), code = e.code(), error = %e, "OpenID sign-in refused");
            with_cookie(oidc_error_page(&e), &cleared)
        }
    }
}

async fn logout(State(auth): State<Arc<Auth>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie::clear_cookie(auth.secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
