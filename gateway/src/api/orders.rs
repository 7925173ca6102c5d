//! Orders: place (idempotent), read, follow live (SSE), cancel.

use super::{require_token, ApiJson, ApiPath, OptionalJson};
use crate::auth::{Caller, StreamCaller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::events::Signal;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    #[schema(example = "TEE-BLK-M")]
    pub sku: String,
    /// 1 to 1000 units
    #[schema(example = 2)]
    pub qty: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1 to 100 lines; repeated SKUs are merged
    pub items: Vec<OrderItem>,
    /// how long the stock stays reserved for payment (default 15 minutes, at most 7 days)
    pub hold_seconds: Option<i64>,
}

/// What `place_order` returns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
pub struct Receipt {
    pub order_id: i64,
    #[schema(example = "pending")]
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    /// end of the stock hold
    pub expires_at: Option<DateTime<Utc>>,
    /// true when this is the answer to an earlier request with the same Idempotency-Key
    pub replayed: bool,
}

fn customer_only(caller: Caller, what: &str) -> Result<i64, ApiError> {
    require_token(caller)?;
    caller.customer_id().ok_or_else(|| ApiError::forbidden(format!("{what} needs a customer token")))
}

/// Place an order
///
/// `place_order` for the customer of the token, in one transaction: every
/// line is reserved, or none. With an `Idempotency-Key` header a retry
/// returns the first answer (200, `Idempotent-Replayed: true`) instead of
/// ordering twice, however many copies arrive at once; the same key with a
/// different request is 409 (23505). The availability shown while
/// browsing may be cached; this decision never is.
///
/// ```sh
/// curl -s -i -X POST "$GATEWAY/orders" -H "Authorization: Bearer $TOKEN" -H 'Idempotency-Key: checkout-7' \
///      -H 'Content-Type: application/json' \
///      -d '{"items": [{"sku": "TEE-BLK-M", "qty": 2}, {"sku": "MUG-1", "qty": 1}]}'
/// ```
/// ```output
/// HTTP/1.1 201 Created
/// content-type: application/json
/// location: /orders/1
///
/// {"order_id":1,"status":"pending","total_cents":4897,"currency":"USD","expires_at":"2026-01-01T00:15:00Z","replayed":false}
/// ```
///
/// The same request again (a client that timed out and retried):
///
/// ```sh
/// curl -s -i -X POST "$GATEWAY/orders" -H "Authorization: Bearer $TOKEN" -H 'Idempotency-Key: checkout-7' \
///      -H 'Content-Type: application/json' \
///      -d '{"items": [{"sku": "TEE-BLK-M", "qty": 2}, {"sku": "MUG-1", "qty": 1}]}'
/// ```
/// ```output
/// HTTP/1.1 200 OK
/// content-type: application/json
/// location: /orders/1
/// idempotent-replayed: true
///
/// {"order_id":1,"status":"pending","total_cents":4897,"currency":"USD","expires_at":"2026-11-30T11:54:54.165956Z","replayed":true}
/// ```
///
/// Not enough stock is 409 with the short SKUs:
///
/// ```sh
/// curl -s -X POST "$GATEWAY/orders" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
///      -d '{"items": [{"sku": "MUG-1", "qty": 5}]}'
/// ```
/// ```output
/// {"code":"23514","message":"insufficient stock for 1 item","details":"SKU \"MUG-1\": requested 5, available 1.","hint":"Order fewer units, or retry after a restock.","short_skus":[{"sku":"MUG-1","requested":5,"available":1}]}
/// ```
///
/// Malformed JSON never reaches the database:
///
/// ```sh
/// curl -s -X POST "$GATEWAY/orders" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
///      -d '{"items": [{"sku": "MUG-1", "qty": 1.5}]}'
/// ```
/// ```output
/// {"code":"22023","message":"invalid request body","details":"Invalid type: floating point `1.5`, expected i64 at line 1 column 38 (in items[0].qty).","hint":"See the operation's request schema in /openapi.json."}
/// ```
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    operation_id = "place_order",
    request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe: the same key returns the first answer")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "placed", body = Receipt,
         headers(("location" = String, description = "the order"))),
        (status = 200, description = "a replay of an earlier request with the same key", body = Receipt,
         headers(("idempotent-replayed" = String, description = "true"), ("location" = String, description = "the order"))),
        (status = 400, description = "bad items (22023, 22P02)", body = ErrorBody),
        (status = 401, description = "no or a bad token", body = ErrorBody),
        (status = 403, description = "not a customer token", body = ErrorBody),
        (status = 409, description = "not enough stock (23514), an unknown SKU (23503), a key reused for another request (23505)", body = ErrorBody),
        (status = 503, description = "stock rows stayed locked (55P03) or the transaction kept conflicting (40001); retry", body = ErrorBody),
    )
)]
pub async fn place_order(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PlaceOrder>,
) -> ApiResult<Response> {
    let customer = customer_only(caller, "placing an order")?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "22023", "invalid Idempotency-Key header")
                        .details("The key must be printable ASCII.")
                })?
                .to_string(),
        ),
    };
    let items = serde_json::to_value(&body.items)
        .map_err(|e| ApiError::internal("cannot encode the items").details(e.to_string()))?;
    let hold = body.hold_seconds;
    let receipt: Receipt = st
        .db
        .run(caller, move |c| {
            let (items, key) = (items.clone(), key.clone());
            Box::pin(async move {
                const COLS: &str = "order_id, status, total_cents, currency::text AS currency, expires_at, replayed";
                match hold {
                    None => {
                        sqlx::query_as(&format!("SELECT {COLS} FROM storefront.place_order($1, $2, $3)"))
                            .bind(customer)
                            .bind(items)
                            .bind(key)
                            .fetch_one(&mut *c)
                            .await
                    }
                    Some(secs) => {
                        sqlx::query_as(&format!(
                            "SELECT {COLS} FROM storefront.place_order($1, $2, $3, make_interval(secs => $4::float8))"
                        ))
                        .bind(customer)
                        .bind(items)
                        .bind(key)
                        .bind(secs as f64)
                        .fetch_one(&mut *c)
                        .await
                    }
                }
            })
        })
        .await?;
    let status = if receipt.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let location = format!("/orders/{}", receipt.order_id);
    let mut resp = (status, axum::Json(&receipt)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if receipt.replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct OrderLine {
    pub line_no: i32,
    pub sku: String,
    pub qty: i32,
    pub unit_price_cents: i64,
}

/// An order as its customer sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Order {
    pub order_id: i64,
    pub customer_id: i64,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// end of the stock hold while pending
    pub expires_at: Option<DateTime<Utc>>,
    pub lines: Vec<OrderLine>,
}

type OrderRow = (
    i64,
    i64,
    String,
    i64,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    sqlx::types::Json<Vec<OrderLine>>,
);

/// Get an order
///
/// `order_details`: a customer sees only their own orders (another
/// customer's is 403, from the database's row-level security); operations
/// tokens see every order.
///
/// ```sh
/// curl -s "$GATEWAY/orders/1" -H "Authorization: Bearer $TOKEN"
/// ```
/// ```output
/// {"order_id":1,"customer_id":1,"status":"pending","total_cents":4897,"currency":"USD","placed_at":"2026-11-30T11:39:54.165956Z","updated_at":"2026-11-30T11:39:54.165956Z","expires_at":"2026-11-30T11:54:54.165956Z","lines":[{"line_no":1,"sku":"TEE-BLK-M","qty":2,"unit_price_cents":1999},{"line_no":2,"sku":"MUG-1","qty":1,"unit_price_cents":899}]}
/// ```
///
/// ```sh
/// curl -s "$GATEWAY/orders/999" -H "Authorization: Bearer $TOKEN"
/// ```
/// ```output
/// {"code":"P0002","message":"order 999 does not exist","details":null,"hint":null}
/// ```
#[utoipa::path(
    get,
    path = "/orders/{order_id}",
    tag = "orders",
    operation_id = "get_order",
    params(("order_id" = i64, Path, description = "order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the order", body = Order),
        (status = 401, description = "no or a bad token", body = ErrorBody),
        (status = 403, description = "another customer's order (42501)", body = ErrorBody),
        (status = 404, description = "no such order (P0002)", body = ErrorBody),
    )
)]
pub async fn get_order(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<i64>) -> ApiResult<axum::Json<Order>> {
    require_token(caller)?;
    let row: OrderRow = st
        .db
        .run(caller, move |c| {
            Box::pin(async move {
                sqlx::query_as(
                    "SELECT order_id, customer_id, status, total_cents, currency, placed_at, updated_at, expires_at,
                            coalesce(lines, '[]'::jsonb)
                     FROM storefront.order_details($1)",
                )
                .bind(id)
                .fetch_one(&mut *c)
                .await
            })
        })
        .await?;
    Ok(axum::Json(Order {
        order_id: row.0,
        customer_id: row.1,
        status: row.2,
        total_cents: row.3,
        currency: row.4,
        placed_at: row.5,
        updated_at: row.6,
        expires_at: row.7,
        lines: row.8 .0,
    }))
}

/// One status change of an order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
pub struct OrderEvent {
    /// 1, 2, 3, ... per order: the event stream's ids
    pub seq: i32,
    pub at: DateTime<Utc>,
    #[schema(example = "paid")]
    pub status: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

async fn read_events(st: &AppState, caller: Caller, id: i64, after: i32) -> ApiResult<Vec<OrderEvent>> {
    st.db
        .run(caller, move |c| {
            Box::pin(async move {
                sqlx::query_as::<_, OrderEvent>(
                    "SELECT seq, at, status, coalesce(detail, '{}'::jsonb) AS detail FROM storefront.order_events($1, $2)",
                )
                .bind(id)
                .bind(after)
                .fetch_all(&mut *c)
                .await
            })
        })
        .await
}

/// An order's timeline
///
/// `order_events`: every status change, oldest first.
///
/// ```sh
/// curl -s "$GATEWAY/orders/1/timeline" -H "Authorization: Bearer $TOKEN" | jq -c '.[] | {seq, status}'
/// ```
/// ```output
/// {"seq":1,"status":"pending"}
/// ```
#[utoipa::path(
    get,
    path = "/orders/{order_id}/timeline",
    tag = "orders",
    operation_id = "order_timeline",
    params(("order_id" = i64, Path, description = "order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the status changes", body = Vec<OrderEvent>),
        (status = 403, description = "another customer's order (42501)", body = ErrorBody),
        (status = 404, description = "no such order (P0002)", body = ErrorBody),
    )
)]
pub async fn timeline(State(st): State<AppState>, caller: Caller, ApiPath(id): ApiPath<i64>) -> ApiResult<axum::Json<Vec<OrderEvent>>> {
    require_token(caller)?;
    read_events(&st, caller, id, 0).await.map(axum::Json)
}

/// What an event stream sends as `data`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StreamedEvent {
    pub order_id: i64,
    pub seq: i32,
    pub at: DateTime<Utc>,
    pub status: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Counts open streams for the metrics while it lives.
struct StreamGuard(Arc<AtomicI64>);

impl StreamGuard {
    fn new(n: Arc<AtomicI64>) -> StreamGuard {
        n.fetch_add(1, Ordering::Relaxed);
        StreamGuard(n)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The state of one order's stream.
struct Tail {
    st: AppState,
    caller: Caller,
    order_id: i64,
    last: i32,
    pending: VecDeque<OrderEvent>,
    rx: broadcast::Receiver<Signal>,
    first: bool,
    _guard: StreamGuard,
}

impl Tail {
    async fn next(&mut self) -> Option<Event> {
        let mut reread = false;
        loop {
            while let Some(ev) = self.pending.pop_front() {
                if ev.seq <= self.last {
                    continue;
                }
                self.last = ev.seq;
                let data = StreamedEvent { order_id: self.order_id, seq: ev.seq, at: ev.at, status: ev.status, detail: ev.detail };
                let mut e = Event::default().id(data.seq.to_string()).event("status");
                if self.first {
                    // reconnect soon after a drop; Last-Event-ID resumes
                    e = e.retry(Duration::from_secs(2));
                    self.first = false;
                }
                return match e.json_data(&data) {
                    Ok(e) => Some(e),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot encode an order event");
                        None
                    }
                };
            }
            if !reread {
                let sig = tokio::select! {
                    _ = self.st.shutdown.cancelled() => return None,
                    s = self.rx.recv() => s,
                };
                reread = match sig {
                    Ok(Signal::Order(n)) => n.order_id == self.order_id && n.seq.is_none_or(|s| s > self.last),
                    // the listener reconnected, or this stream fell behind
                    Ok(Signal::Resync { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                if !reread {
                    continue;
                }
            }
            match read_events(&self.st, self.caller, self.order_id, self.last).await {
                Ok(rows) => {
                    self.pending.extend(rows);
                    reread = false;
                }
                // the caller lost access (or the order is gone): end the stream
                Err(e) if matches!(e.code(), "42501" | "P0002" | "28000") => return None,
                Err(e) => {
                    tracing::warn!(code = %e.body.code, message = %e.body.message, "order stream read failed; retrying");
                    tokio::select! {
                        _ = self.st.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }
}

/// Follow an order live (Server-Sent Events)
///
/// Each status change as an SSE event: `id` is the change's `seq`, `event`
/// is `status`, `data` a `StreamedEvent`. The stream starts with the
/// changes so far (after `Last-Event-ID`, when the client reconnects) and
/// then follows `LISTEN storefront_order_events` through the gateway's one
/// shared listener, so a reconnecting client misses nothing and sees
/// nothing twice. Browsers' `EventSource` cannot set headers: it may pass
/// the token as `?access_token=`.
///
/// ```sh
/// curl -s -N --max-time 1 "$GATEWAY/orders/1/events" -H "Authorization: Bearer $TOKEN"
/// ```
/// ```output
/// id: 1
/// event: status
/// retry: 2000
/// data: {"order_id":1,"seq":1,"at":"2026-11-30T11:39:54.170513Z","status":"pending","detail":{"expires_at":"2026-11-30T11:54:54.165956+00:00","lines":2}}
/// ```
#[utoipa::path(
    get,
    path = "/orders/{order_id}/events",
    tag = "orders",
    operation_id = "order_events",
    params(
        ("order_id" = i64, Path, description = "order id"),
        ("Last-Event-ID" = Option<i32>, Header, description = "the last seq the client has; the stream resumes after it"),
        ("access_token" = Option<String>, Query, description = "the token, for clients that cannot send headers"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "an event stream of StreamedEvent", content_type = "text/event-stream", body = StreamedEvent),
        (status = 401, description = "no or a bad token", body = ErrorBody),
        (status = 403, description = "another customer's order (42501)", body = ErrorBody),
        (status = 404, description = "no such order (P0002)", body = ErrorBody),
    )
)]
pub async fn events(
    State(st): State<AppState>,
    StreamCaller(caller): StreamCaller,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    require_token(caller)?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<i32>().ok()).filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "22P02", "invalid Last-Event-ID header")
                .details("The header must be the seq of an event of this stream (a whole number, 0 or more).")
        })?,
    };
    // subscribe before the first read: nothing falls between the two
    let rx = st.hub.subscribe();
    let first = read_events(&st, caller, id, after).await?;
    let keepalive = st.sse_keepalive;
    let tail = Tail {
        _guard: StreamGuard::new(st.streams.clone()),
        st,
        caller,
        order_id: id,
        last: after,
        pending: first.into(),
        rx,
        first: true,
    };
    let stream = futures_util::stream::unfold(tail, |mut t| async move { t.next().await.map(|e| (Ok(e), t)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keepalive)))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// at most 500 characters; kept in the order's timeline
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct OrderStatus {
    pub order_id: i64,
    pub status: String,
}

/// Cancel an order
///
/// `cancel_order`: a pending, failed or expired order; its held stock is
/// released. Customers cancel their own orders, operations anyone's. The
/// body is optional.
///
/// ```sh
/// ORDER=$(curl -s -X POST "$GATEWAY/orders" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
///      -d '{"items": [{"sku": "TEE-BLK-M", "qty": 1}]}' | jq .order_id)
/// ```
///
/// ```sh
/// curl -s -X POST "$GATEWAY/orders/$ORDER/cancel" -H "Authorization: Bearer $TOKEN" \
///      -H 'Content-Type: application/json' -d '{"reason": "found it cheaper"}'
/// ```
/// ```output
/// {"order_id":3,"status":"cancelled"}
/// ```
///
/// ```sh
/// curl -s -X POST "$GATEWAY/orders/$ORDER/cancel" -H "Authorization: Bearer $TOKEN"
/// ```
/// ```output
/// {"code":"55000","message":"cannot cancel order 3: it is cancelled","details":"An order cannot move from cancelled to cancelled.","hint":null}
/// ```
#[utoipa::path(
    post,
    path = "/orders/{order_id}/cancel",
    tag = "orders",
    operation_id = "cancel_order",
    params(("order_id" = i64, Path, description = "order id")),
    request_body(content = Option<CancelInput>, description = "optional"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "cancelled", body = OrderStatus),
        (status = 403, description = "another customer's order (42501)", body = ErrorBody),
        (status = 404, description = "no such order (P0002)", body = ErrorBody),
        (status = 409, description = "the order cannot be cancelled now (55000)", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    OptionalJson(body): OptionalJson<CancelInput>,
) -> ApiResult<axum::Json<OrderStatus>> {
    require_token(caller)?;
    let reason = body.unwrap_or_default().reason;
    let status: String = st
        .db
        .run(caller, move |c| {
            let reason = reason.clone();
            Box::pin(async move {
                match reason {
                    Some(r) => {
                        sqlx::query_scalar("SELECT storefront.cancel_order($1, $2)").bind(id).bind(r).fetch_one(&mut *c).await
                    }
                    None => sqlx::query_scalar("SELECT storefront.cancel_order($1)").bind(id).fetch_one(&mut *c).await,
                }
            })
        })
        .await?;
    Ok(axum::Json(OrderStatus { order_id: id, status }))
}
