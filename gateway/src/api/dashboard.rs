//! The live dashboard: the page (public; it holds no data), its data and
//! its live stream (operations tokens).

use super::{json_response, require_operations, with_cache_header};
use crate::auth::{Caller, StreamCaller};
use crate::dashboard::{snapshot_json, Snapshot};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, Response};
use futures_util::Stream;
use std::convert::Infallible;

/// The files the page needs, relative to the web directory.
pub const PAGE_FILES: &[&str] = &["dashboard.html", "dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"];

/// The dashboard page
///
/// Charts of orders per minute, revenue per hour, page views and the
/// view → cart → order funnel, and the order pipeline's gauges, updated
/// live from `/dashboard/stream`. Open it as
/// `/dashboard#token=<operations token>`: the token stays in the browser
/// (a fragment is never sent to a server).
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    operation_id = "dashboard_page",
    responses(
        (status = 200, description = "the page", content_type = "text/html", body = String),
        (status = 503, description = "the page's scripts are not built (scripts/gateway.sh: gateway_assets)", body = ErrorBody),
    )
)]
pub async fn page(State(st): State<AppState>) -> ApiResult<Html<String>> {
    for f in PAGE_FILES {
        if !st.web_dir.join(f).is_file() {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "58P01", "the dashboard is not built")
                .details(format!("{} is missing.", st.web_dir.join(f).display()))
                .hint("Run gateway_assets from scripts/gateway.sh (npm ci and the chart bundle)."));
        }
    }
    let html = tokio::fs::read_to_string(st.web_dir.join("dashboard.html"))
        .await
        .map_err(|e| ApiError::internal("cannot read the dashboard page").details(e.to_string()))?;
    Ok(Html(html))
}

/// The dashboard's data now (operations)
///
/// The same snapshot the stream sends: cached for a few seconds
/// (`X-Cache`) and dropped from the cache by every order event.
///
/// ```sh
/// curl -s "$GATEWAY/dashboard/data" -H "Authorization: Bearer $OPS_TOKEN" \
///   | jq -c '{minutes: (.orders_per_minute | length), orders_last_hour: ([.orders_per_minute[].value] | add), pending_holds: .pipeline.pending_holds}'
/// ```
/// ```output
/// {"minutes":60,"orders_last_hour":2,"pending_holds":0}
/// ```
#[utoipa::path(
    get,
    path = "/dashboard/data",
    tag = "dashboard",
    operation_id = "dashboard_data",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the snapshot", body = Snapshot, headers(("x-cache" = String, description = "hit, miss or bypass"))),
        (status = 401, description = "no or a bad token", body = ErrorBody),
        (status = 403, description = "not an operations token", body = ErrorBody),
    )
)]
pub async fn data(State(st): State<AppState>, caller: Caller) -> ApiResult<Response> {
    require_operations(caller)?;
    let (json, lookup) = snapshot_json(&st).await?;
    Ok(with_cache_header(json_response(StatusCode::OK, json), &lookup))
}

/// The dashboard, live (operations; Server-Sent Events)
///
/// A `snapshot` event with the data now, then one whenever it changes:
/// within about a second of an order event, and every few seconds anyway.
/// One task computes the snapshots for every open dashboard. `EventSource`
/// passes the token as `?access_token=`.
#[utoipa::path(
    get,
    path = "/dashboard/stream",
    tag = "dashboard",
    operation_id = "dashboard_stream",
    params(("access_token" = Option<String>, Query, description = "the token, for clients that cannot send headers")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "an event stream of Snapshot", content_type = "text/event-stream", body = Snapshot),
        (status = 401, description = "no or a bad token", body = ErrorBody),
        (status = 403, description = "not an operations token", body = ErrorBody),
    )
)]
pub async fn stream(
    State(st): State<AppState>,
    StreamCaller(caller): StreamCaller,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    require_operations(caller)?;
    let rx = st.dashboard.subscribe();
    let shutdown = st.shutdown.clone();
    let keepalive = st.sse_keepalive;
    let stream = futures_util::stream::unfold((rx, true, shutdown), |(mut rx, first, shutdown)| async move {
        loop {
            if !first || rx.borrow().is_none() {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    r = rx.changed() => if r.is_err() { return None },
                }
            }
            let current = rx.borrow_and_update().clone();
            if let Some(json) = current {
                let ev = Event::default().event("snapshot").data(json.as_ref());
                return Some((Ok(ev), (rx, false, shutdown)));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keepalive)))
}
