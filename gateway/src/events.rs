//! Order events: one shared `LISTEN storefront_order_events` connection,
//! fanned out to every subscriber (order streams, the cache invalidator,
//! the dashboard) through a broadcast channel.
//!
//! A notification is a wake-up call, not the record: subscribers read what
//! happened from the order's timeline (`order_events(order_id, after_seq)`),
//! so a stream delivers the same events in the same shape whether they
//! arrived live or were read after a reconnect. When the listener loses its
//! connection it reconnects and broadcasts [`Signal::Resync`]: whatever was
//! announced in between is read from the timelines, never lost.

use crate::auth::Caller;
use crate::state::AppState;
use serde::Deserialize;
use sqlx::postgres::PgListener;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub const CHANNEL: &str = "storefront_order_events";

/// What a notification says (the payload has more; this is what the
/// gateway routes on).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct OrderNote {
    pub order_id: i64,
    #[serde(default)]
    pub customer_id: Option<i64>,
    #[serde(default)]
    pub seq: Option<i32>,
    #[serde(default)]
    pub status: Option<String>,
}

impl OrderNote {
    /// Does this change move available stock (reserve or release it)?
    pub fn moves_stock(&self) -> bool {
        matches!(self.status.as_deref(), Some("pending" | "payment_failed" | "cancelled" | "expired") | None)
    }
}

#[derive(Debug, Clone)]
pub enum Signal {
    Order(Arc<OrderNote>),
    /// the listener (re)connected: notifications may have been missed
    /// (`initial`: its first connection since start-up)
    Resync { initial: bool },
}

pub struct Hub {
    tx: broadcast::Sender<Signal>,
    connected: AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        let (tx, _) = broadcast::channel(4096);
        Hub { tx, connected: AtomicBool::new(false) }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.tx.subscribe()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn publish(&self, s: Signal) {
        // no subscribers is fine
        let _ = self.tx.send(s);
    }
}

/// Keep one listener connection up until shutdown.
pub async fn run_listener(state: AppState, shutdown: CancellationToken) {
    let hub = state.hub.clone();
    let mut backoff = Duration::from_millis(100);
    let mut initial = true;
    while !shutdown.is_cancelled() {
        let mut listener = match connect(&state).await {
            Ok(l) => l,
            Err(e) => {
                hub.connected.store(false, Ordering::Relaxed);
                metrics::gauge!("storefront_gateway_listener_up").set(0.0);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "order event listener cannot connect");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        hub.connected.store(true, Ordering::Relaxed);
        metrics::gauge!("storefront_gateway_listener_up").set(1.0);
        tracing::info!(channel = CHANNEL, "listening for order events");
        hub.publish(Signal::Resync { initial });
        initial = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => match serde_json::from_str::<OrderNote>(n.payload()) {
                    Ok(note) => {
                        metrics::counter!("storefront_gateway_order_events_total").increment(1);
                        hub.publish(Signal::Order(Arc::new(note)));
                    }
                    Err(e) => tracing::warn!(error = %e, "order event with an unexpected payload"),
                },
                Ok(None) => {
                    tracing::warn!("order event listener lost its connection; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "order event listener failed; reconnecting");
                    break;
                }
            }
        }
        hub.connected.store(false, Ordering::Relaxed);
        metrics::gauge!("storefront_gateway_listener_up").set(0.0);
    }
}

async fn connect(state: &AppState) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(&state.db.pool).await?;
    l.listen(CHANNEL).await?;
    Ok(l)
}

/// Invalidate cached reads as order events arrive: a product's entries when
/// an order moves its stock (the SKUs come from the order's lines, read in
/// one query per batch), catalog pages at most once per
/// `list_staleness`, and the dashboard on every event.
pub async fn run_invalidator(state: AppState, shutdown: CancellationToken) {
    let mut rx = state.hub.subscribe();
    let staleness = state.list_staleness;
    let mut last_page_bump = Instant::now() - staleness;
    let mut page_bump_due: Option<Instant> = None;
    loop {
        // wait for an event (or a due page bump), then gather a batch
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = rx.recv() => Some(s),
            _ = sleep_until_opt(page_bump_due) => None,
        };
        let mut orders: BTreeSet<i64> = BTreeSet::new();
        let mut any = false;
        let mut resync = false;
        let mut absorb = |s: Result<Signal, broadcast::error::RecvError>, orders: &mut BTreeSet<i64>| match s {
            Ok(Signal::Order(n)) => {
                any = true;
                if n.moves_stock() {
                    orders.insert(n.order_id);
                }
            }
            // entries cached before this gateway first listened may miss
            // changes of those moments only (they expire with their TTL)
            Ok(Signal::Resync { initial: true }) => any = true,
            Ok(Signal::Resync { initial: false }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                any = true;
                resync = true;
            }
            Err(broadcast::error::RecvError::Closed) => {}
        };
        if let Some(s) = first {
            absorb(s, &mut orders);
            let until = tokio::time::Instant::now() + Duration::from_millis(20);
            while let Ok(s) = tokio::time::timeout_at(until, rx.recv()).await {
                let closed = matches!(s, Err(broadcast::error::RecvError::Closed));
                absorb(s, &mut orders);
                if closed || orders.len() >= 1000 {
                    break;
                }
            }
        }
        if any {
            state.dashboard.invalidate(&state).await;
        }
        if !state.cache.enabled() {
            continue;
        }
        if !orders.is_empty() {
            let skus = skus_of(&state, &orders).await;
            if let Some(g) = state.cache.generations().await {
                let keys: Vec<String> = skus
                    .iter()
                    .flat_map(|s| [state.cache.sku_key(g, "product", s), state.cache.sku_key(g, "stock", s)])
                    .flatten()
                    .collect();
                state.cache.del(keys).await;
            }
        }
        if resync {
            // changes may have gone unheard: retire every cached entry
            state.cache.bump("catalog").await;
        }
        if resync || !orders.is_empty() || page_bump_due.is_some() {
            let now = Instant::now();
            if resync || now.duration_since(last_page_bump) >= staleness {
                state.cache.bump("products").await;
                last_page_bump = now;
                page_bump_due = None;
            } else if page_bump_due.is_none() {
                page_bump_due = Some(last_page_bump + staleness);
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// The SKUs on the lines of `orders` (as the operations role).
async fn skus_of(state: &AppState, orders: &BTreeSet<i64>) -> Vec<String> {
    let ids: Vec<i64> = orders.iter().copied().collect();
    const SQL: &str = "SELECT DISTINCT l ->> 'sku'
                       FROM unnest($1::bigint[]) AS o(id)
                       CROSS JOIN LATERAL storefront.order_details(o.id) d
                       CROSS JOIN LATERAL jsonb_array_elements(d.lines) l";
    let batch = ids.clone();
    let r = state
        .db
        .run(Caller::Operations, move |c| {
            let ids = batch.clone();
            Box::pin(async move { sqlx::query_scalar::<_, String>(SQL).bind(ids).fetch_all(&mut *c).await })
        })
        .await;
    match r {
        Ok(s) => s,
        Err(e) => {
            // one order of the batch is gone (a dropped database, a
            // restored dump): look them up one by one
            tracing::debug!(code = %e.body.code, "batch SKU lookup failed; one order at a time");
            let mut out = BTreeSet::new();
            for id in ids {
                let one = state
                    .db
                    .run(Caller::Operations, move |c| {
                        Box::pin(async move { sqlx::query_scalar::<_, String>(SQL).bind(vec![id]).fetch_all(&mut *c).await })
                    })
                    .await;
                if let Ok(s) = one {
                    out.extend(s);
                }
            }
            out.into_iter().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let n: OrderNote = serde_json::from_str(
            r#"{"order_id": 7, "customer_id": 3, "seq": 2, "status": "paid", "previous": "pending", "at": "x", "detail": {}}"#,
        )
        .unwrap();
        assert_eq!(n.order_id, 7);
        assert!(!n.moves_stock());
        // the relay's stub for an oversized payload still routes
        let n: OrderNote =
            serde_json::from_str(r#"{"order_id": 7, "customer_id": null, "seq": 2, "status": "cancelled", "truncated": true}"#)
                .unwrap();
        assert!(n.moves_stock());
    }
}
