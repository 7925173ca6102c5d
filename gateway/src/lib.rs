//! storefront-gateway: the storefront extension's SQL API over HTTP.
//!
//! - `api`: the routes and the OpenAPI document generated from them;
//! - `db`: one transaction per request under the caller's database role,
//!   serialization failures retried;
//! - `error`: SQLSTATE → HTTP status, PostgREST's error body;
//! - `auth`: signed tokens → callers → database roles;
//! - `events`: one shared LISTEN connection, fanned out to order streams,
//!   the cache invalidator and the dashboard;
//! - `cache`: the Redis read cache, which the gateway can lose;
//! - `dashboard`: the live dashboard's snapshots;
//! - `metrics`: Prometheus;
//! - `book`: the book's HTTP API reference, rendered from the document.

pub mod api;
pub mod auth;
pub mod book;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod events;
pub mod metrics;
pub mod state;

use crate::config::{LogFormat, ServeArgs};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "42704", format!("no route for {}", uri.path()))
        .hint("The routes are listed in /openapi.json.")
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "0A000", format!("method {method} is not allowed on {}", uri.path()))
        .hint("The routes and their methods are listed in /openapi.json.")
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ::metrics::counter!("storefront_gateway_panics_total").increment(1);
    ApiError::internal("internal error")
        .details("The request failed inside the gateway; the server keeps running.")
        .into_response()
}

/// The whole HTTP service: the API, the dashboard's files, and the layers
/// every request goes through (request ids, access log, panic guard, body
/// limit, metrics). `extra` routes are merged in (tests add some).
pub fn router(state: AppState, extra: Router<AppState>) -> Router {
    let (api, _doc) = api::api_router();
    let assets = ServeDir::new(state.web_dir.as_ref());
    api.nest_service("/dashboard/assets", assets)
        .merge(extra)
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    // the path only: query strings may carry tokens
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    pub shutdown: CancellationToken,
    server: JoinHandle<Result<(), std::io::Error>>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Running {
    /// Stop accepting, end event streams, wait for open requests (up to
    /// the grace period), stop the background tasks, close the pool.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(self.grace, self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => tracing::warn!("open requests did not finish within the grace period"),
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        self.state.db.pool.close().await;
        tracing::info!("gateway stopped");
    }

    /// Wait until the server ends (after `shutdown` is cancelled).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.stop().await;
    }
}

/// Build the gateway from `cfg` and serve on `listener`.
pub async fn start(cfg: &ServeArgs, listener: TcpListener, extra: Router<AppState>) -> Result<Running, String> {
    let shutdown = CancellationToken::new();
    let state = AppState::build(cfg, shutdown.clone())?;
    state.db.check_roles().await?;
    // connect to Redis now rather than on the first request
    let cache = state.cache.clone();
    tokio::spawn(async move {
        if cache.health().await == cache::CacheHealth::Down {
            tracing::warn!("redis does not answer at start-up: serving from the database until it does");
        }
    });
    let tasks = vec![
        tokio::spawn(events::run_listener(state.clone(), shutdown.clone())),
        tokio::spawn(events::run_invalidator(state.clone(), shutdown.clone())),
        tokio::spawn(dashboard::run_broadcaster(state.clone(), shutdown.clone())),
    ];
    let addr = listener.local_addr().map_err(|e| format!("cannot read the listening address: {e}"))?;
    let app = router(state.clone(), extra);
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    tracing::info!(%addr, redis = state.cache.enabled(), "gateway listening");
    Ok(Running { addr, state, shutdown, server, tasks, grace: Duration::from_secs(cfg.shutdown_grace_secs) })
}

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
