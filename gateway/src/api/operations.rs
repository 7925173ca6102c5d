//! Operations: ship, deliver, and the order pipeline's state.

use super::orders::OrderStatus;
use super::{require_token, ApiPath};
use crate::auth::Caller;
use crate::dashboard::Pipeline;
use crate::error::{ApiResult, ErrorBody};
use crate::state::AppState;
use axum::extract::State;

async fn step(st: &AppState, caller: Caller, id: i64, function: &'static str) -> ApiResult<axum::Json<OrderStatus>> {
    require_token(caller)?;
    let status: String = st
        .db
        .run(caller, move |c| {
            Box::pin(async move {
                sqlx::query_scalar(&format!("SELECT storefront.{function}($1)")).bind(id).fetch_one(&mut *c).await
            })
        })
        .await?;
    Ok(axum::Json(OrderStatus { order_id: id, status }))
}

/// Ship an order (operations)
///
/// `ship_order`: a paid order becomes shipped. Anyone else's token is
/// refused by the database (the app and catalog roles may not call it).
///
/// ```sh
/// curl -s -X POST "$GATEWAY/orders/1/ship" -H "Authorization: Bearer $TOKEN"
/// ```
/// ```output
/// {"code":"42501","message":"permission denied for function ship_order","details":null,"hint":null}
/// ```
///
/// ```sh
/// curl -s -X POST "$GATEWAY/orders/1/ship" -H "Authorization: Bearer $OPS_TOKEN"
/// ```
/// ```output
/// {"order_id":1,"status":"shipped"}
/// ```
#[utoipa::path(
    post,
    path = "/orders/{order_id}/ship",
    tag = "operations",
    operation_id = "ship_order",
    params(("order_id" = i64, Path, description = "order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "shipped", body = OrderStatus),
        (status = 403, description = "not an operations token (42501)", body = ErrorBody),
        (status = 404, description = "no such order (P0002)", body = ErrorBody),
        (status = 409, description = "not paid (55000)", body = ErrorBody),
    )
)]
pub async fn ship(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<i64>) -> ApiResult<axum::Json<OrderStatus>> {
    step(&st, caller, id, "ship_order").await
}

/// Deliver an order (operations)
///
/// `deliver_order`: a shipped order becomes delivered.
///
/// ```sh
/// curl -s -X POST "$GATEWAY/orders/1/deliver" -H "Authorization: Bearer $OPS_TOKEN"
/// ```
/// ```output
/// {"order_id":1,"status":"delivered"}
/// ```
///
/// Once more is an illegal move:
///
/// ```sh
/// curl -s -i -X POST "$GATEWAY/orders/1/deliver" -H "Authorization: Bearer $OPS_TOKEN"
/// ```
/// ```output
/// HTTP/1.1 409 Conflict
/// content-type: application/json
///
/// {"code":"55000","message":"cannot deliver order 1: it is delivered","details":"An order cannot move from delivered to delivered.","hint":null}
/// ```
#[utoipa::path(
    post,
    path = "/orders/{order_id}/deliver",
    tag = "operations",
    operation_id = "deliver_order",
    params(("order_id" = i64, Path, description = "order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "delivered", body = OrderStatus),
        (status = 403, description = "not an operations token (42501)", body = ErrorBody),
        (status = 404, description = "no such order (P0002)", body = ErrorBody),
        (status = 409, description = "not shipped (55000)", body = ErrorBody),
    )
)]
pub async fn deliver(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<i64>) -> ApiResult<axum::Json<OrderStatus>> {
    step(&st, caller, id, "deliver_order").await
}

/// The order pipeline (operations)
///
/// `pipeline_status` and `event_relay_status`: live holds, the relay's
/// queue, rollup lag, and how events are delivered.
///
/// ```sh
/// curl -s "$GATEWAY/operations/pipeline" -H "Authorization: Bearer $OPS_TOKEN" | jq -c '{pending_holds, relay_queue, delivery}'
/// ```
/// ```output
/// {"pending_holds":0,"relay_queue":0,"delivery":"notify"}
/// ```
#[utoipa::path(
    get,
    path = "/operations/pipeline",
    tag = "operations",
    operation_id = "pipeline",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the pipeline's gauges", body = Pipeline),
        (status = 403, description = "not an operations token (42501)", body = ErrorBody),
    )
)]
pub async fn pipeline(State(st): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Pipeline>> {
    require_token(caller)?;
    let p: (i64, i64, Option<chrono::DateTime<chrono::Utc>>, Option<f64>, String, bool) = st
        .db
        .run(caller, |c| {
            Box::pin(async move {
                sqlx::query_as(
                    "SELECT p.pending_holds, p.relay_queue, p.oldest_queued_at,
                            extract(epoch FROM p.rollup_lag)::float8, r.delivery, r.relay_pid IS NOT NULL
                     FROM storefront.pipeline_status() p, storefront.event_relay_status() r",
                )
                .fetch_one(&mut *c)
                .await
            })
        })
        .await?;
    Ok(axum::Json(Pipeline {
        pending_holds: p.0,
        relay_queue: p.1,
        oldest_queued_at: p.2,
        rollup_lag_seconds: p.3,
        delivery: p.4,
        relay_running: p.5,
    }))
}
