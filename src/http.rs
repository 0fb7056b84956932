//! HTTP routes: the web client, the signaling WebSocket (at `/` like the seed, and at
//! `/ws`), `/healthz`, `/metrics`, and the sign-in routes of [`crate::auth::routes`].
//! A shared link `/call/NAME` sends the browser to the client with `#call=NAME`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::session::{self, Context};

/// The browser client, built into the binary so one file is the whole deployment.
#[derive(Embed)]
#[folder = "web/"]
struct WebAssets;

#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<Context>,
    /// WebSocket sessions, so shutdown can wait for them (axum detaches upgraded
    /// connections from the HTTP server).
    pub sessions: TaskTracker,
    pub next_id: Arc<AtomicU64>,
}

impl axum::extract::FromRef<AppState> for Arc<crate::auth::Auth> {
    fn from_ref(state: &AppState) -> Self {
        state.ctx.auth.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .merge(crate::auth::routes::router())
        .route("/", get(root))
        .route("/ws", get(websocket))
        .route("/call/{name}", get(call_link))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    let router = match state.ctx.config.web_dir.clone() {
        Some(dir) => router.fallback_service(
            tower_http::services::ServeDir::new(dir).fallback(not_found_handler.into_service()),
        ),
        None => router.fallback(asset),
    };
    router.with_state(state)
}

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `/`: the seed's clients open `ws://host:9090` (path `/`), browsers want the page.
async fn root(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if wants_websocket(&headers) {
        return match ws {
            Ok(ws) => upgrade(state, ws, addr, &headers, uri.query()),
            Err(rejection) => rejection.into_response(),
        };
    }
    match &state.ctx.config.web_dir {
        Some(dir) => match tokio::fs::read(dir.join("index.html")).await {
            Ok(body) => html(body),
            Err(_) => (StatusCode::NOT_FOUND, "index.html not found in --web-dir").into_response(),
        },
        None => match WebAssets::get("index.html") {
            Some(file) => html(file.data.into_owned()),
            None => html(PLACEHOLDER.as_bytes().to_vec()),
        },
    }
}

/// `/call/NAME`: a link that calls NAME. Redirected to the client with the name in the
/// fragment (`#call=NAME`), so the page and its relative asset paths stay at one URL and
/// the name never reaches a log line or a cache as a path of its own. The segment is
/// passed on still percent-encoded, as it came; the client decodes it.
async fn call_link(uri: Uri) -> Response {
    let name = uri.path().strip_prefix("/call/").unwrap_or_default();
    match HeaderValue::from_str(&format!("../#call={name}")) {
        Ok(location) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad name in the call link").into_response(),
    }
}

const PLACEHOLDER: &str = "<!doctype html><title>duet</title><p>duet is running. \
    The web client was not built into this binary.</p>";

fn html(body: Vec<u8>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(state, ws, addr, &headers, uri.query())
}

/// Whether the upgrade's `Sec-WebSocket-Key` is what RFC 6455 (4.1, 4.2.1) requires: one
/// header, 16 bytes in base64 (axum only checks that it is there).
fn valid_websocket_key(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(key), None) => base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .is_ok_and(|bytes| bytes.len() == 16),
        _ => false,
    }
}

/// Whether a WebSocket upgrade's `Origin` is allowed by `--allowed-origin`.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN) {
        // Not a browser: origins protect browser users from other sites' pages.
        None => true,
        Some(origin) => origin.to_str().is_ok_and(|origin| {
            allowed
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        }),
    }
}

fn upgrade(
    state: AppState,
    ws: WebSocketUpgrade,
    addr: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    let ctx = state.ctx.clone();
    if !valid_websocket_key(headers) {
        debug!(%addr, "websocket refused: Sec-WebSocket-Key is not 16 bytes in base64");
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455 4.1).\n",
        )
            .into_response();
    }
    if !origin_allowed(&ctx.config.allowed_origins, headers) {
        debug!(%addr, origin = ?headers.get(header::ORIGIN), "websocket refused: origin not allowed");
        return (
            StatusCode::FORBIDDEN,
            "This page's origin may not use this duet server (see --allowed-origin).\n",
        )
            .into_response();
    }
    let identity = match ctx.auth.check_upgrade(headers, query) {
        Ok(identity) => identity,
        Err(why) => {
            tracing::info!(addr = %crate::logging::shown(addr), %why, "websocket refused: not signed in");
            return (StatusCode::UNAUTHORIZED, format!("Not signed in: {why}.\n")).into_response();
        }
    };
    let Some(permit) = ctx.metrics.open_connection(ctx.config.max_connections) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "duet is at its connection limit; try again later.\n",
        )
            .into_response();
    };
    let id = state.next_id.fetch_add(1, Relaxed);
    let limit = ctx.config.max_message_size;
    // tungstenite's default read buffer (128 KiB, allocated and zero-filled up front) would
    // dominate an idle connection's memory; see `--ws-read-buffer`.
    ws.read_buffer_size(ctx.config.ws_read_buffer.max(64))
        .write_buffer_size(0)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(move |e| {
            debug!(id, error = %e, "websocket upgrade failed");
        })
        // The permit lives in this callback until the session takes it. If the upgrade
        // fails, axum drops the callback unrun, and the permit with it.
        .on_upgrade(move |socket| {
            state
                .sessions
                .track_future(session::run_as(socket, ctx, id, addr, permit, identity))
        })
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.ctx.registry.backend_state() {
        Some((backend, false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{backend}: disconnected\n"),
        )
            .into_response(),
        Some((backend, true)) => format!("ok\n{backend}: connected\n").into_response(),
        None => "ok\n".into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let ctx = &state.ctx;
    let body = ctx
        .metrics
        .render(ctx.registry.online_count(), ctx.registry.backend_state());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Any other path: a file of the built-in web client.
async fn asset(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    match WebAssets::get(path) {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            let mut response = Body::from(file.data.into_owned()).into_response();
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
                headers.insert(header::CONTENT_TYPE, value);
            }
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => not_found(),
    }
}

/// A page, not a bare line, for a mistyped address: it says what happened and links home.
const NOT_FOUND_PAGE: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
    <meta name=\"color-scheme\" content=\"light dark\"><title>Not found – duet</title>\
    <link rel=\"icon\" href=\"/icon.svg\">\
    <body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\">\
    <h1>Nothing here</h1><p>This address is not part of duet. \
    To call someone, open <a href=\"/\">the start page</a> and pick a name, \
    or use a link of the form <code>/call/NAME</code>.</p></body></html>";

async fn not_found_handler() -> Response {
    not_found()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        NOT_FOUND_PAGE,
    )
        .into_response()
}
