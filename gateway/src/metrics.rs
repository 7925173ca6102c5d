//! Prometheus metrics: request counts and latency histograms per route,
//! the connection pool, the cache's hit ratio, open event streams.

use crate::state::AppState;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's recorder (installed once; gateways built in one process
/// share it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                    .unwrap_or_else(|_| PrometheusBuilder::new())
            };
            match builder().install_recorder() {
                Ok(h) => h,
                Err(e) => {
                    // another recorder owns the process: render an empty registry
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    builder().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Count and time every routed request by its route template.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let secs = start.elapsed().as_secs_f64();
    metrics::counter!("storefront_gateway_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("storefront_gateway_http_request_duration_seconds", "method" => method, "route" => route).record(secs);
    resp
}

/// The exposition, with the gauges read now.
pub fn render(state: &AppState) -> String {
    let pool = &state.db.pool;
    let size = pool.size() as f64;
    let idle = pool.num_idle() as f64;
    metrics::gauge!("storefront_gateway_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("storefront_gateway_db_pool_connections", "state" => "in_use").set((size - idle).max(0.0));
    metrics::gauge!("storefront_gateway_db_pool_max_connections").set(f64::from(pool.options().get_max_connections()));
    let ratio = state.cache.hit_ratio();
    metrics::gauge!("storefront_gateway_cache_hit_ratio").set(if ratio.is_nan() { 0.0 } else { ratio });
    metrics::gauge!("storefront_gateway_cache_up").set(if state.cache.is_up() { 1.0 } else { 0.0 });
    metrics::gauge!("storefront_gateway_cache_hits").set(state.cache.hits.load(Ordering::Relaxed) as f64);
    metrics::gauge!("storefront_gateway_cache_misses").set(state.cache.misses.load(Ordering::Relaxed) as f64);
    metrics::gauge!("storefront_gateway_event_streams").set(state.streams.load(Ordering::Relaxed) as f64);
    metrics::gauge!("storefront_gateway_listener_up").set(if state.hub.is_connected() { 1.0 } else { 0.0 });
    state.metrics.render()
}
