//! The live dashboard's data: one snapshot of the store's dashboard
//! functions (orders per minute, revenue per hour, page views, the funnel)
//! and the order pipeline's gauges, cached in Redis for a few seconds and
//! pushed to every open dashboard. One task computes snapshots while
//! someone watches — at most once a second when order events arrive, and
//! every few seconds anyway (the gauges and the clock move) — so a hundred
//! open dashboards cost the database what one does.

use crate::auth::Caller;
use crate::cache::Lookup;
use crate::error::ApiResult;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Point {
    pub time: DateTime<Utc>,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct RevenuePoint {
    pub time: DateTime<Utc>,
    /// major units (dollars, euros)
    pub revenue: f64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FunnelDay {
    /// the UTC day
    pub time: DateTime<Utc>,
    pub views: i64,
    pub carts: i64,
    pub orders: i64,
    pub view_to_cart_pct: Option<f64>,
    pub cart_to_order_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Pipeline {
    /// reservations held by pending orders
    pub pending_holds: i64,
    /// order events waiting for the relay
    pub relay_queue: i64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// how far the most lagging rollup's watermark is behind now (s)
    pub rollup_lag_seconds: Option<f64>,
    /// notify or relay
    pub delivery: String,
    pub relay_running: bool,
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Snapshot {
    pub generated_at: DateTime<Utc>,
    /// the last hour, by minute
    pub orders_per_minute: Vec<Point>,
    /// paid orders of the last 48 hours, by hour and currency
    pub revenue_per_hour: Vec<RevenuePoint>,
    /// the last 48 hours, by hour
    pub page_views_per_hour: Vec<Point>,
    /// the last 14 days: views → carts → orders
    pub funnel: Vec<FunnelDay>,
    pub pipeline: Pipeline,
}

pub struct Dashboard {
    tx: watch::Sender<Option<Arc<str>>>,
    dirty: Notify,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard::new()
    }
}

impl Dashboard {
    pub fn new() -> Dashboard {
        let (tx, _) = watch::channel(None);
        Dashboard { tx, dirty: Notify::new() }
    }

    /// Something changed: drop the cached snapshot and recompute soon.
    pub async fn invalidate(&self, state: &AppState) {
        state.cache.del(vec![state.cache.key(&["dashboard"])]).await;
        self.dirty.notify_one();
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<str>>> {
        let rx = self.tx.subscribe();
        // a new watcher wants a snapshot now
        self.dirty.notify_one();
        rx
    }
}

/// The snapshot as JSON: from the cache, else from the database (as the
/// operations role), cached for the dashboard TTL.
pub async fn snapshot_json(state: &AppState) -> ApiResult<(String, Lookup)> {
    let key = state.cache.key(&["dashboard"]);
    let lookup = state.cache.get(&key).await;
    if let Lookup::Hit(s) = lookup {
        return Ok((s.clone(), Lookup::Hit(s)));
    }
    let snap = compute(state).await?;
    let json = serde_json::to_string(&snap)
        .map_err(|e| crate::error::ApiError::internal("cannot encode the dashboard").details(e.to_string()))?;
    if lookup == Lookup::Miss {
        state.cache.put(&key, &json, state.cache.dashboard_ttl).await;
    }
    Ok((json, lookup))
}

type FunnelRow = (DateTime<Utc>, i64, i64, i64, Option<f64>, Option<f64>);
type PipelineRow = (i64, i64, Option<DateTime<Utc>>, Option<f64>, String, bool);

pub async fn compute(state: &AppState) -> ApiResult<Snapshot> {
    state
        .db
        .run(Caller::Operations, |c| {
            Box::pin(async move {
                let orders: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
                    "SELECT time, orders FROM storefront.dashboard_orders(now() - interval '59 minutes', now(), interval '1 minute')",
                )
                .fetch_all(&mut *c)
                .await?;
                let revenue: Vec<(DateTime<Utc>, f64, String)> = sqlx::query_as(
                    "SELECT time, revenue::float8, metric FROM storefront.dashboard_revenue(now() - interval '47 hours', now(), interval '1 hour')",
                )
                .fetch_all(&mut *c)
                .await?;
                let views: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
                    "SELECT time, page_views FROM storefront.dashboard_page_views(now() - interval '47 hours', now(), interval '1 hour')",
                )
                .fetch_all(&mut *c)
                .await?;
                let funnel: Vec<FunnelRow> = sqlx::query_as(
                    "SELECT time, views, carts, orders, view_to_cart_pct::float8, cart_to_order_pct::float8
                     FROM storefront.dashboard_funnel(now() - interval '13 days', now())",
                )
                .fetch_all(&mut *c)
                .await?;
                let p: PipelineRow = sqlx::query_as(
                    "SELECT p.pending_holds, p.relay_queue, p.oldest_queued_at,
                            extract(epoch FROM p.rollup_lag)::float8, r.delivery, r.relay_pid IS NOT NULL
                     FROM storefront.pipeline_status() p, storefront.event_relay_status() r",
                )
                .fetch_one(&mut *c)
                .await?;
                Ok(Snapshot {
                    generated_at: Utc::now(),
                    orders_per_minute: orders.into_iter().map(|(time, n)| Point { time, value: n as f64 }).collect(),
                    revenue_per_hour: revenue
                        .into_iter()
                        .map(|(time, revenue, currency)| RevenuePoint { time, revenue, currency })
                        .collect(),
                    page_views_per_hour: views.into_iter().map(|(time, n)| Point { time, value: n as f64 }).collect(),
                    funnel: funnel
                        .into_iter()
                        .map(|(time, views, carts, orders, v2c, c2o)| FunnelDay {
                            time,
                            views,
                            carts,
                            orders,
                            view_to_cart_pct: v2c,
                            cart_to_order_pct: c2o,
                        })
                        .collect(),
                    pipeline: Pipeline {
                        pending_holds: p.0,
                        relay_queue: p.1,
                        oldest_queued_at: p.2,
                        rollup_lag_seconds: p.3,
                        delivery: p.4,
                        relay_running: p.5,
                    },
                })
            })
        })
        .await
}

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(5);

/// Publish snapshots while anyone watches.
pub async fn run_broadcaster(state: AppState, shutdown: CancellationToken) {
    let dash = state.dashboard.clone();
    loop {
        // nobody watching: wait until someone does (or something changes)
        if dash.tx.receiver_count() == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = dash.dirty.notified() => {}
            }
            if dash.tx.receiver_count() == 0 {
                continue;
            }
        }
        match snapshot_json(&state).await {
            Ok((json, _)) => {
                dash.tx.send_replace(Some(Arc::from(json)));
            }
            Err(e) => tracing::warn!(code = %e.body.code, message = %e.body.message, "dashboard snapshot failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = dash.dirty.notified() => {}
            _ = tokio::time::sleep(MAX_INTERVAL - MIN_INTERVAL) => {}
        }
    }
}
