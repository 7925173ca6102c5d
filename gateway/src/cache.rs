//! The Redis read cache: catalog pages, products, stock and the dashboard.
//!
//! Entries live for a TTL and are invalidated by the events that change
//! them. Keys carry generation numbers: a catalog change made through the
//! gateway (a price, a restock, taking a SKU off sale) bumps the catalog
//! generation, which retires every product, stock and page entry at once;
//! an order event that moves stock deletes the entries of the SKUs on the
//! order's lines, and bumps the pages' generation at most once per
//! `list_staleness`. What is
//! cached is only ever shown to browsing users: the checkout decision
//! (`place_order`) always reads the database.
//!
//! Redis is an optimisation, never a dependency: every command has a short
//! time limit, and after a failure the cache is skipped for a second (the
//! gateway serves from the database, logs the degradation once, and tries
//! Redis again).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The outcome of a cache read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(String),
    Miss,
    /// no cache configured, or Redis is down: read the database
    Bypass,
}

impl Lookup {
    pub fn header(&self) -> &'static str {
        match self {
            Lookup::Hit(_) => "hit",
            Lookup::Miss => "miss",
            Lookup::Bypass => "bypass",
        }
    }
}

pub struct Cache {
    conn: Option<ConnectionManager>,
    prefix: String,
    pub ttl: Duration,
    pub dashboard_ttl: Duration,
    op_timeout: Duration,
    down_until: Mutex<Option<Instant>>,
    degraded: AtomicBool,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
}

/// Generation numbers in cache keys: bumping one retires every key built
/// with the old number, atomically and without racing a reader that is
/// about to store what it read before the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generations {
    /// bumped by every catalog change made through the gateway
    pub catalog: u64,
    /// bumped when orders move stock (at most once per list_staleness)
    pub pages: u64,
}

/// Redis as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheHealth {
    Disabled,
    Up,
    Down,
}

impl CacheHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheHealth::Disabled => "disabled",
            CacheHealth::Up => "ok",
            CacheHealth::Down => "down",
        }
    }
}

const BREAKER: Duration = Duration::from_secs(1);

impl Cache {
    /// A cache on `url` (None: no cache). Connects lazily, so the gateway
    /// starts whether Redis is up or not. `namespace` separates databases
    /// sharing one Redis.
    pub fn new(
        url: Option<&str>,
        namespace: &str,
        ttl: Duration,
        dashboard_ttl: Duration,
        op_timeout: Duration,
    ) -> Result<Cache, String> {
        let conn = match url {
            None => None,
            Some(u) => {
                let client = redis::Client::open(u).map_err(|e| format!("invalid Redis URL: {e}"))?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(op_timeout.max(Duration::from_millis(50))))
                    .set_response_timeout(Some(op_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(200));
                Some(
                    ConnectionManager::new_lazy_with_config(client, cfg)
                        .map_err(|e| format!("cannot set up the Redis connection: {e}"))?,
                )
            }
        };
        Ok(Cache {
            conn,
            prefix: format!("storefront:{namespace}:"),
            ttl,
            dashboard_ttl,
            op_timeout,
            down_until: Mutex::new(None),
            degraded: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.conn.is_some()
    }

    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    /// The key of a catalog page: both generations, then a hash of the
    /// query (search terms are free text).
    pub fn page_key(&self, g: Generations, search: Option<&str>, after: Option<&str>, limit: i32) -> String {
        let mut h = Sha256::new();
        for part in [search.unwrap_or("\u{0}"), "\u{1}", after.unwrap_or("\u{0}"), "\u{1}", &limit.to_string()] {
            h.update(part.as_bytes());
        }
        let digest = hex::encode(h.finalize());
        self.key(&["products", &format!("{}.{}", g.catalog, g.pages), &digest])
    }

    /// The key of one SKU's entry of `kind` (product, stock); None for
    /// strings that cannot be SKU codes.
    pub fn sku_key(&self, g: Generations, kind: &str, sku: &str) -> Option<String> {
        (!sku.is_empty() && sku.len() <= 64).then(|| self.key(&[kind, &g.catalog.to_string(), sku]))
    }

    /// The connection, unless Redis failed within the last second.
    fn usable(&self) -> Option<ConnectionManager> {
        let conn = self.conn.clone()?;
        let mut until = self.down_until.lock().ok()?;
        match *until {
            Some(t) if Instant::now() < t => None,
            Some(_) => {
                *until = None;
                Some(conn)
            }
            None => Some(conn),
        }
    }

    fn failed(&self, what: &str, err: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("storefront_gateway_cache_errors_total").increment(1);
        if let Ok(mut until) = self.down_until.lock() {
            *until = Some(Instant::now() + BREAKER);
        }
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(op = what, error = err, "redis unavailable: serving from the database (degraded)");
            metrics::gauge!("storefront_gateway_cache_up").set(0.0);
        }
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is back: cache in use again");
            metrics::gauge!("storefront_gateway_cache_up").set(1.0);
        }
    }

    /// Run one command with the time limit and the breaker.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.usable()?;
        match tokio::time::timeout(self.op_timeout, f(conn)).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(what, "timed out");
                None
            }
        }
    }

    /// Read `key`, counting hits and misses.
    pub async fn get(&self, key: &str) -> Lookup {
        if !self.enabled() {
            return Lookup::Bypass;
        }
        let key = key.to_string();
        let r: Option<Option<String>> = self.call("GET", |mut c| async move { c.get(&key).await }).await;
        let out = match r {
            Some(Some(v)) => Lookup::Hit(v),
            Some(None) => Lookup::Miss,
            None => Lookup::Bypass,
        };
        let label = match &out {
            Lookup::Hit(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                "hit"
            }
            Lookup::Miss => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                "miss"
            }
            Lookup::Bypass => "bypass",
        };
        metrics::counter!("storefront_gateway_cache_requests_total", "result" => label).increment(1);
        out
    }

    pub async fn put(&self, key: &str, value: &str, ttl: Duration) {
        if !self.enabled() {
            return;
        }
        let (key, value) = (key.to_string(), value.to_string());
        let secs = ttl.as_secs().max(1);
        let _: Option<()> = self.call("SET", |mut c| async move { c.set_ex(&key, &value, secs).await }).await;
    }

    pub async fn del(&self, keys: Vec<String>) {
        if !self.enabled() || keys.is_empty() {
            return;
        }
        let _: Option<u64> = self.call("DEL", |mut c| async move { c.del(&keys).await }).await;
    }

    /// The current generations (0 until first bumped); None when Redis
    /// is not usable.
    pub async fn generations(&self) -> Option<Generations> {
        if !self.enabled() {
            return None;
        }
        let keys = vec![self.key(&["gen", "catalog"]), self.key(&["gen", "pages"])];
        let v: Vec<Option<u64>> = self.call("MGET", |mut c| async move { c.mget(&keys).await }).await?;
        Some(Generations {
            catalog: v.first().copied().flatten().unwrap_or(0),
            pages: v.get(1).copied().flatten().unwrap_or(0),
        })
    }

    /// Retire every key of a family: "catalog" (every product, stock and
    /// page entry) or "pages" (catalog pages only).
    pub async fn bump(&self, name: &str) {
        if !self.enabled() {
            return;
        }
        let key = self.key(&["gen", name]);
        let _: Option<u64> = self.call("INCR", |mut c| async move { c.incr(&key, 1u64).await }).await;
    }

    /// PING, bypassing the breaker (for /readyz).
    pub async fn health(&self) -> CacheHealth {
        let Some(conn) = self.conn.clone() else { return CacheHealth::Disabled };
        let ping = async move {
            let mut c = conn;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        match tokio::time::timeout(self.op_timeout.max(Duration::from_millis(250)), ping).await {
            Ok(Ok(_)) => {
                self.succeeded();
                CacheHealth::Up
            }
            _ => CacheHealth::Down,
        }
    }

    /// Configured and not failing (as far as the last command knows).
    pub fn is_up(&self) -> bool {
        self.enabled() && !self.degraded.load(Ordering::Relaxed)
    }

    /// hits / (hits + misses) since start; NaN before any read.
    pub fn hit_ratio(&self) -> f64 {
        let h = self.hits.load(Ordering::Relaxed) as f64;
        let m = self.misses.load(Ordering::Relaxed) as f64;
        if h + m == 0.0 {
            f64::NAN
        } else {
            h / (h + m)
        }
    }
}
