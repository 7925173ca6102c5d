//! Shared by the gateway's tests: a fresh store database per test (the
//! extension created, the gateway's roles granted, row security on), a
//! gateway serving it on an ephemeral port in this process, an HTTP client,
//! tokens, and a digest of every store table to show a refused request
//! changed nothing.
//!
//! The cluster comes from STOREFRONT_TEST_URL (as for the tests/ crate; a
//! superuser, no database part), Redis from STOREFRONT_TEST_REDIS_URL.
#![allow(dead_code)]

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use storefront_gateway::auth::{Caller, Keys};
use storefront_gateway::config::ServeArgs;
use storefront_gateway::Running;

pub const JWT_SECRET: &str = "gateway-tests-0123456789abcdef0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_gateway_tests_0123456789";

pub fn base_url() -> String {
    std::env::var("STOREFRONT_TEST_URL").unwrap_or_else(|_| "postgres://postgres:storefront@127.0.0.1:28816".into())
}

pub fn db_url(db: &str) -> String {
    format!("{}/{}", base_url().trim_end_matches('/'), db)
}

pub fn redis_url() -> String {
    std::env::var("STOREFRONT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390/".into())
}

pub fn gateway_password() -> String {
    std::env::var("STOREFRONT_GATEWAY_DB_PASSWORD").unwrap_or_else(|_| "storefront-gateway".into())
}

/// The gateway's login role's URL for database `db`.
pub fn gateway_db_url(db: &str) -> String {
    let opts = PgConnectOptions::from_str(&base_url()).expect("STOREFRONT_TEST_URL");
    format!("postgres://storefront_gateway:{}@{}:{}/{db}", gateway_password(), opts.get_host(), opts.get_port())
}

pub async fn connect(db: &str, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(PgConnectOptions::from_str(&db_url(db)).expect("valid URL"))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e} (is the test cluster running?)", db_url(db)))
}

static ROLES: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);

/// The cluster-wide roles, once per process.
async fn ensure_roles(admin: &PgPool) {
    let mut done = ROLES.lock().await;
    if !*done {
        sqlx::raw_sql(include_str!("../../sql/roles.sql")).execute(admin).await.expect("gateway/sql/roles.sql");
        let pw = gateway_password().replace('\'', "''");
        admin
            .execute(format!("ALTER ROLE storefront_gateway PASSWORD '{pw}'").as_str())
            .await
            .expect("set the gateway's password");
        *done = true;
    }
}

/// A fresh database `name` with the extension and the gateway's grants;
/// returns a superuser pool on it.
pub async fn store(name: &str) -> PgPool {
    let admin = connect("postgres", 2).await;
    ensure_roles(&admin).await;
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.expect("drop database");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
    admin.close().await;
    let pool = connect(name, 8).await;
    pool.execute("CREATE EXTENSION storefront CASCADE").await.expect("CREATE EXTENSION storefront");
    sqlx::raw_sql(include_str!("../../sql/grants.sql")).execute(&pool).await.expect("gateway/sql/grants.sql");
    pool
}

/// A store with products TEE-BLK-M (1999, 25 units), TEE-BLK-L (2199, 0),
/// MUG-1 (899, 2) and customers ada (1) and bob (2), password "pw".
pub async fn small_store(name: &str) -> PgPool {
    let pool = store(name).await;
    sqlx::raw_sql(
        "SELECT storefront.upsert_product('TEE-BLK-M', 'Classic Tee', 1999, 'USD', 'Apparel/Men/Shirts', '{\"size\": \"M\"}');
         SELECT storefront.upsert_product('TEE-BLK-L', 'Classic Tee', 2199, 'USD', 'Apparel/Men/Shirts', '{\"size\": \"L\"}');
         SELECT storefront.upsert_product('MUG-1', 'Mug', 899, 'USD', 'Home/Kitchen');
         SELECT storefront.restock('TEE-BLK-M', 25);
         SELECT storefront.restock('MUG-1', 2);
         SELECT storefront.register_customer('ada@example.com', 'pw', 'Ada Lovelace');
         SELECT storefront.register_customer('bob@example.com', 'pw', 'Bob');",
    )
    .execute(&pool)
    .await
    .expect("small store");
    pool
}

pub struct Gw {
    pub url: String,
    pub db: String,
    pub http: reqwest::Client,
    pub admin: PgPool,
    pub keys: Keys,
    running: Option<Running>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error body's code (asserting the contract's shape).
    pub fn code(&self) -> &str {
        for k in ["code", "message", "details", "hint"] {
            assert!(self.body.get(k).is_some(), "error body without {k}: {}", self.text);
        }
        let m = self.body["message"].as_str().unwrap_or_default();
        assert!(
            m.chars().next().is_some_and(|c| !c.is_uppercase()) && !m.ends_with('.'),
            "message not in PostgreSQL style: {m:?}"
        );
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// Options for [`gateway`].
pub struct Opts {
    pub redis: Option<String>,
    pub extra: axum::Router<storefront_gateway::state::AppState>,
    pub tweak: Box<dyn FnOnce(&mut ServeArgs) + Send>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { redis: Some(redis_url()), extra: axum::Router::new(), tweak: Box::new(|_| {}) }
    }
}

/// A gateway for database `db` (made with [`store`]) on an ephemeral port.
pub async fn gateway(db: &str, admin: PgPool, opts: Opts) -> Gw {
    let mut cfg = ServeArgs::for_database(&gateway_db_url(db), JWT_SECRET, WEBHOOK_SECRET);
    cfg.redis_url = opts.redis;
    cfg.shutdown_grace_secs = 3;
    // the tests share two cores with a seeding database: give Redis time
    // (a stopped Redis refuses connections at once, whatever the limit)
    cfg.redis_timeout_ms = 1000;
    (opts.tweak)(&mut cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let running = storefront_gateway::start(&cfg, listener, opts.extra).await.expect("gateway starts");
    let url = format!("http://{}", running.addr);
    // wait for the shared listener (order events) to be up
    for _ in 0..100 {
        if running.state.hub.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Gw {
        url,
        db: db.to_string(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
        admin,
        keys: Keys::new(JWT_SECRET, 3600).expect("keys"),
        running: Some(running),
    }
}

impl Gw {
    pub fn token(&self, c: Caller) -> String {
        self.keys.mint(c, 3600).expect("mint").0
    }

    pub fn customer(&self, id: i64) -> String {
        self.token(Caller::Customer(id))
    }

    pub fn ops(&self) -> String {
        self.token(Caller::Operations)
    }

    pub fn catalog(&self) -> String {
        self.token(Caller::Catalog)
    }

    pub fn state(&self) -> &storefront_gateway::state::AppState {
        &self.running.as_ref().expect("running").state
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, body, text }
    }

    fn with_token(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Self::with_token(self.http.get(format!("{}{path}", self.url)), token)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Self::with_token(self.http.post(format!("{}{path}", self.url)).json(&body), token)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(Self::with_token(self.http.put(format!("{}{path}", self.url)).json(&body), token)).await
    }

    /// POST a raw body with a content type.
    pub async fn post_raw(&self, path: &str, token: Option<&str>, content_type: Option<&str>, body: Vec<u8>) -> Resp {
        let mut req = Self::with_token(self.http.post(format!("{}{path}", self.url)), token).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req).await
    }

    /// Place an order for customer `id`; returns the response.
    pub async fn order(&self, id: i64, items: Value) -> Resp {
        self.post("/orders", Some(&self.customer(id)), serde_json::json!({ "items": items })).await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.admin.close().await;
    }
}

/// Row count and content hash of every table of the store.
pub async fn digest(pool: &PgPool) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = 'storefront'::regnamespace AND c.relkind IN ('r', 'p')
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    let mut out = Vec::new();
    for t in tables {
        let row = sqlx::query(&format!(
            "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM storefront.{t} x"
        ))
        .fetch_one(pool)
        .await
        .expect("digest table");
        out.push((t, row.get::<i64, _>(0), row.get::<String, _>(1)));
    }
    out
}

/// Every row of check_invariants() is ok.
pub async fn assert_invariants(pool: &PgPool) {
    let rows: Vec<(String, bool, String)> =
        sqlx::query_as("SELECT invariant, ok, detail FROM storefront.check_invariants()").fetch_all(pool).await.expect("check_invariants");
    let broken: Vec<_> = rows.iter().filter(|r| !r.1).collect();
    assert!(broken.is_empty(), "invariants broken: {broken:#?}");
}

/// A Redis of the test's own (for stopping it mid-test): redis-server on a
/// free port, no persistence.
pub struct OwnRedis {
    pub url: String,
    pub port: u16,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(format!("sf-gw-redis-{port}"));
        let _ = std::fs::create_dir_all(&dir);
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/gateway.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}/");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        OwnRedis { url, port, child, dir }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
