//! What every handler shares.

use crate::auth::Keys;
use crate::cache::Cache;
use crate::config::ServeArgs;
use crate::dashboard::Dashboard;
use crate::db::{Db, Roles};
use crate::events::Hub;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub cache: Arc<Cache>,
    pub hub: Arc<Hub>,
    pub keys: Arc<Keys>,
    pub dashboard: Arc<Dashboard>,
    pub webhook_secret: Arc<Vec<u8>>,
    pub webhook_tolerance_secs: u64,
    pub list_staleness: Duration,
    pub sse_keepalive: Duration,
    pub web_dir: Arc<PathBuf>,
    pub max_body_bytes: usize,
    /// ends event streams and background tasks at shutdown
    pub shutdown: CancellationToken,
    /// open event streams
    pub streams: Arc<AtomicI64>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl AppState {
    /// Everything but the network: a lazy pool and a lazy Redis
    /// connection, so it builds whether or not either is up.
    pub fn build(cfg: &ServeArgs, shutdown: CancellationToken) -> Result<AppState, String> {
        let pool = crate::db::connect_pool(
            &cfg.database_url,
            cfg.db_pool_size,
            Duration::from_millis(cfg.db_acquire_timeout_ms),
            cfg.statement_timeout_ms,
        )
        .map_err(|e| format!("invalid database URL: {e}"))?;
        let db = Db {
            pool,
            roles: Roles {
                app: cfg.app_role.clone(),
                catalog: cfg.catalog_role.clone(),
                operations: cfg.operations_role.clone(),
            },
            attempts: cfg.tx_attempts.max(1),
        };
        // the cache's namespace: the database (several stores may share a Redis)
        let database = crate::db::database_name(&cfg.database_url).map_err(|e| format!("invalid database URL: {e}"))?;
        let cache = Cache::new(
            cfg.redis_url.as_deref(),
            &database,
            Duration::from_secs(cfg.cache_ttl_secs.max(1)),
            Duration::from_secs(cfg.dashboard_ttl_secs.max(1)),
            Duration::from_millis(cfg.redis_timeout_ms.max(1)),
        )?;
        if cfg.webhook_secret.len() < 16 {
            return Err("the webhook secret must have at least 16 bytes".into());
        }
        Ok(AppState {
            db,
            cache: Arc::new(cache),
            hub: Arc::new(Hub::new()),
            keys: Arc::new(Keys::new(&cfg.jwt_secret, cfg.token_ttl_secs)?),
            dashboard: Arc::new(Dashboard::new()),
            webhook_secret: Arc::new(cfg.webhook_secret.as_bytes().to_vec()),
            webhook_tolerance_secs: cfg.webhook_tolerance_secs,
            list_staleness: Duration::from_millis(cfg.list_staleness_ms),
            sse_keepalive: Duration::from_secs(cfg.sse_keepalive_secs.max(1)),
            web_dir: Arc::new(cfg.web_dir.clone()),
            max_body_bytes: cfg.max_body_bytes,
            shutdown,
            streams: Arc::new(AtomicI64::new(0)),
            metrics: crate::metrics::handle(),
        })
    }
}
