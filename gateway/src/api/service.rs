//! Health, readiness, metrics and the OpenAPI document.

use crate::cache::CacheHealth;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness
///
/// The process is up and serving; no dependency is checked.
///
/// ```sh
/// curl -s "$GATEWAY/healthz"
/// ```
/// ```output
/// {"status":"ok"}
/// ```
#[utoipa::path(get, path = "/healthz", tag = "service", operation_id = "healthz",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok".into() })
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// ok, or degraded when Redis is down (reads then come from the database)
    pub status: String,
    /// ok or down
    pub database: String,
    /// ok, down or disabled
    pub redis: String,
    /// ok or down: the shared LISTEN connection behind order streams
    pub listener: String,
}

/// Readiness
///
/// 200 while the database answers — with Redis down the gateway still
/// serves (from the database) and says `degraded`; 503 when the database
/// does not answer within 2 seconds.
///
/// ```sh
/// curl -s "$GATEWAY/readyz"
/// ```
/// ```output
/// {"status":"ok","database":"ok","redis":"ok","listener":"ok"}
/// ```
#[utoipa::path(get, path = "/readyz", tag = "service", operation_id = "readyz",
    responses(
        (status = 200, description = "ready", body = Readiness),
        (status = 503, description = "the database does not answer", body = Readiness),
    ))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let db_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&st.db.pool)).await,
        Ok(Ok(_))
    );
    let redis = st.cache.health().await;
    let listener = st.hub.is_connected();
    let status = if !db_ok {
        "down"
    } else if redis == CacheHealth::Down || !listener {
        "degraded"
    } else {
        "ok"
    };
    let body = Readiness {
        status: status.into(),
        database: if db_ok { "ok" } else { "down" }.into(),
        redis: redis.as_str().into(),
        listener: if listener { "ok" } else { "down" }.into(),
    };
    let code = if db_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

/// Prometheus metrics
///
/// Request counts and latency histograms per route
/// (`storefront_gateway_http_requests_total`,
/// `storefront_gateway_http_request_duration_seconds`), the connection
/// pool, the cache's hits, misses and hit ratio, retries, open event
/// streams and the listener.
///
/// ```sh
/// curl -s "$GATEWAY/metrics" | grep '^storefront_gateway_http_requests_total{method="GET",route="/products/{sku}"' | sort
/// ```
/// ```output
/// storefront_gateway_http_requests_total{method="GET",route="/products/{sku}",status="200"} 1
/// storefront_gateway_http_requests_total{method="GET",route="/products/{sku}",status="404"} 1
/// ```
#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "metrics",
    responses((status = 200, description = "the exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut r = crate::metrics::render(&st).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// This document
///
/// Generated from the handlers (utoipa); the book's HTTP API chapter is
/// generated from it.
///
/// ```sh
/// curl -s "$GATEWAY/openapi.json" | jq -r '.info.title, (.paths | length)'
/// ```
/// ```output
/// storefront HTTP API
/// 24
/// ```
#[utoipa::path(get, path = "/openapi.json", tag = "service", operation_id = "openapi",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    match crate::api::openapi_json() {
        Ok(s) => super::json_response(StatusCode::OK, s.to_string()),
        Err(e) => crate::error::ApiError::internal("cannot encode the OpenAPI document").details(e).into_response(),
    }
}
