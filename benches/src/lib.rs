//! Shared by the load driver (src/bin/load.rs) and the criterion benches:
//! the benchmark database, the three ways of placing an order that are
//! compared, and random order items.
//!
//! The three implementations do the same work — validate, merge, look up
//! SKUs, insert the order, lock stock rows in SKU order, reserve, write
//! lines, reservations, history and outbox, and announce the order: by
//! NOTIFY in the transaction, or by queueing the event for the relay when
//! the database's `storefront.event_delivery` is `relay` ([`Events`]):
//! - `Extension`: `storefront.place_order` (Rust, one call);
//! - `Plpgsql`: `bench.place_order_plpgsql` (baselines/place_order_plpgsql.sql);
//! - `Client`: the same steps as statements of a client-side sqlx
//!   transaction (one round trip each, prepared and cached by sqlx).

use rand::rngs::SmallRng;
use rand::Rng;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::fmt::Write as _;
use std::time::Duration;

pub const BASELINE_SQL: &str = include_str!("../baselines/place_order_plpgsql.sql");
pub const SKUS: i64 = 2000;
pub const CUSTOMERS: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Impl {
    Extension,
    Plpgsql,
    Client,
}

impl Impl {
    pub const ALL: [Impl; 3] = [Impl::Extension, Impl::Plpgsql, Impl::Client];
    pub fn name(self) -> &'static str {
        match self {
            Impl::Extension => "storefront.place_order (Rust)",
            Impl::Plpgsql => "PL/pgSQL baseline",
            Impl::Client => "client-side sqlx transaction",
        }
    }
    pub fn short(self) -> &'static str {
        match self {
            Impl::Extension => "extension",
            Impl::Plpgsql => "plpgsql",
            Impl::Client => "client",
        }
    }
}

/// How the order's event is announced, as `storefront.event_delivery`
/// says: the extension and the PL/pgSQL baseline read the setting; the
/// client-side transaction is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// `pg_notify` in the ordering transaction (the default)
    Notify,
    /// a row in `storefront.order_event_queue`, sent by the relay worker
    Relay,
}

impl Events {
    pub fn setting(self) -> &'static str {
        match self {
            Events::Notify => "notify",
            Events::Relay => "relay",
        }
    }
}

/// Command-line flags as (flag, value) pairs: every flag takes a value.
/// `usage` names where the flags are described, for the error message.
/// Run one statement and return its wall time in seconds (panics with the
/// statement on an error: a benchmark that fails has no result).
pub async fn timed(pool: &PgPool, sql: &str) -> f64 {
    let t = std::time::Instant::now();
    pool.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    t.elapsed().as_secs_f64()
}

pub fn flag_pairs(usage: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            panic!("unknown argument {flag}; see {usage}");
        }
        let val = it.next().unwrap_or_else(|| panic!("{flag} needs a value; see {usage}"));
        pairs.push((flag, val));
    }
    pairs
}

pub fn url(base: &str, db: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), db)
}

pub async fn pool(base: &str, db: &str, max: u32) -> PgPool {
    let opts = PgConnectOptions::from_str(&url(base, db)).expect("valid URL").application_name("sf-bench");
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .expect("connect to the benchmark cluster")
}

/// (Re)create database `db` with the extension, the PL/pgSQL baseline,
/// CUSTOMERS customers, SKUS SKUs with a million units each, and one
/// hot-stock SKU per mode for the contention scenario.
pub async fn setup(base: &str, db: &str) {
    let admin = pool(base, "postgres", 1).await;
    admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await.expect("drop");
    admin.execute(format!("CREATE DATABASE {db}").as_str()).await.expect("create");
    admin.close().await;
    let p = pool(base, db, 1).await;
    p.execute("CREATE EXTENSION storefront CASCADE").await.expect("CREATE EXTENSION storefront CASCADE");
    p.execute(BASELINE_SQL).await.expect("PL/pgSQL baseline");
    p.execute(
        format!(
            "INSERT INTO storefront.customer (email, password_hash, full_name)
             SELECT 'bench' || n || '@example.com', '!bench', 'Bench ' || n FROM generate_series(1, {CUSTOMERS}) n;
             SELECT storefront.upsert_product('B-' || n, 'Bench ' || n, 100 + n % 900) FROM generate_series(1, {SKUS}) n;
             SELECT storefront.restock('B-' || n, 1000000) FROM generate_series(1, {SKUS}) n;
             SELECT storefront.upsert_product(s, 'Flash sale', 999) FROM unnest(ARRAY['FLASH-NORMAL', 'FLASH-HOT']) s;
             SELECT storefront.restock(s, 1000000) FROM unnest(ARRAY['FLASH-NORMAL', 'FLASH-HOT']) s;
             SELECT storefront.set_hot_stock('FLASH-HOT', 32);"
        )
        .as_str(),
    )
    .await
    .expect("benchmark data");
    p.execute("VACUUM ANALYZE").await.expect("VACUUM ANALYZE");
    // start every run from a clean slate: no pending checkpoint work
    p.execute("CHECKPOINT").await.expect("CHECKPOINT");
    p.close().await;
}

/// `lines` distinct random SKUs, one unit each.
pub fn random_items(rng: &mut SmallRng, lines: usize) -> serde_json::Value {
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < lines {
        picked.insert(rng.gen_range(1..=SKUS));
    }
    serde_json::Value::Array(picked.into_iter().map(|n| json!({"sku": format!("B-{n}"), "qty": 1})).collect())
}

pub fn items_for(sku: &str) -> serde_json::Value {
    json!([{"sku": sku, "qty": 1}])
}

/// Place one order with `imp`; returns the order id.
pub async fn place(
    imp: Impl,
    events: Events,
    conn: &mut PgConnection,
    customer: i64,
    items: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    match imp {
        Impl::Extension => {
            sqlx::query_scalar("SELECT order_id FROM storefront.place_order($1, $2)")
                .bind(customer)
                .bind(items)
                .fetch_one(conn)
                .await
        }
        Impl::Plpgsql => {
            sqlx::query_scalar("SELECT order_id FROM bench.place_order_plpgsql($1, $2)")
                .bind(customer)
                .bind(items)
                .fetch_one(conn)
                .await
        }
        Impl::Client => place_client(conn, events, customer, items).await,
    }
}

/// The client-side transaction: the same steps, one statement at a time.
async fn place_client(
    conn: &mut PgConnection,
    events: Events,
    customer: i64,
    items: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    // validate and merge (as the extension does, here in the client)
    let mut merged: BTreeMap<String, i32> = BTreeMap::new();
    for it in items.as_array().into_iter().flatten() {
        let sku = it["sku"].as_str().unwrap_or_default().to_string();
        *merged.entry(sku).or_default() += it["qty"].as_i64().unwrap_or(0) as i32;
    }
    let codes: Vec<String> = merged.keys().cloned().collect();
    let mut tx = conn.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM storefront.customer WHERE customer_id = $1)")
        .bind(customer)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(sqlx::Error::RowNotFound);
    }
    let skus = sqlx::query(
        "SELECT sku_id, code, price_cents, currency::text, sellable FROM storefront.sku
         WHERE code = ANY ($1) ORDER BY sku_id",
    )
    .bind(&codes)
    .fetch_all(&mut *tx)
    .await?;
    let mut lines = Vec::new();
    let mut total = 0i64;
    let mut currency = String::from("USD");
    for r in &skus {
        let code: String = r.get(1);
        let qty = merged[&code];
        total += r.get::<i64, _>(2) * qty as i64;
        currency = r.get(3);
        lines.push((r.get::<i64, _>(0), qty, r.get::<i64, _>(2)));
    }
    let (order_id, expires): (i64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "INSERT INTO storefront.orders (customer_id, status, currency, total_cents)
         VALUES ($1, 'pending', $2, $3) RETURNING order_id, now() + interval '15 minutes'",
    )
    .bind(customer)
    .bind(&currency)
    .bind(total)
    .fetch_one(&mut *tx)
    .await?;
    let sku_ids: Vec<i64> = lines.iter().map(|l| l.0).collect();
    let stock = sqlx::query(
        "SELECT sku_id, location_id, on_hand - reserved FROM storefront.inventory
         WHERE sku_id = ANY ($1) ORDER BY sku_id, location_id FOR NO KEY UPDATE",
    )
    .bind(&sku_ids)
    .fetch_all(&mut *tx)
    .await?;
    for (i, (sku_id, qty, price)) in lines.iter().enumerate() {
        let line_no = i as i32 + 1;
        sqlx::query(
            "INSERT INTO storefront.order_line (customer_id, order_id, line_no, sku_id, qty, unit_price_cents)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(customer)
        .bind(order_id)
        .bind(line_no)
        .bind(sku_id)
        .bind(qty)
        .bind(price)
        .execute(&mut *tx)
        .await?;
        let mut need = *qty;
        for row in stock.iter().filter(|r| r.get::<i64, _>(0) == *sku_id) {
            let take = row.get::<i32, _>(2).max(0).min(need);
            if take == 0 {
                continue;
            }
            let location: i32 = row.get(1);
            sqlx::query(
                "UPDATE storefront.inventory SET reserved = reserved + $3, updated_at = now()
                 WHERE sku_id = $1 AND location_id = $2",
            )
            .bind(sku_id)
            .bind(location)
            .bind(take)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO storefront.reservation (customer_id, order_id, line_no, location_id, qty, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(customer)
            .bind(order_id)
            .bind(line_no)
            .bind(location)
            .bind(take)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
            need -= take;
        }
        if need > 0 {
            return Err(sqlx::Error::RowNotFound);
        }
    }
    sqlx::query(
        "INSERT INTO storefront.order_status_history (customer_id, order_id, seq, status, at, detail)
         VALUES ($1, $2, 1, 'pending', now(), jsonb_build_object('lines', $3::int, 'expires_at', $4::timestamptz))",
    )
    .bind(customer)
    .bind(order_id)
    .bind(lines.len() as i32)
    .bind(expires)
    .execute(&mut *tx)
    .await?;
    let payload: serde_json::Value = sqlx::query_scalar(
        "INSERT INTO storefront.outbox (customer_id, aggregatetype, aggregateid, type, payload, created_at)
         VALUES ($1, 'order', $2::text, 'order.pending',
                 jsonb_build_object('order_id', $2, 'customer_id', $1, 'seq', 1, 'status', 'pending',
                                    'previous', NULL, 'at', now(), 'total_cents', $3::bigint,
                                    'currency', $4::text, 'expires_at', $5::timestamptz), now())
         RETURNING payload",
    )
    .bind(customer)
    .bind(order_id)
    .bind(total)
    .bind(&currency)
    .bind(expires)
    .fetch_one(&mut *tx)
    .await?;
    let announce = match events {
        Events::Notify => "SELECT pg_notify('storefront_order_events', $1)",
        Events::Relay => "INSERT INTO storefront.order_event_queue (payload) VALUES ($1)",
    };
    sqlx::query(announce).bind(payload.to_string()).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(order_id)
}

/// Latency percentiles (microseconds) from sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

const COLORS: [&str; 4] = ["#2b6cb0", "#dd6b20", "#718096", "#38a169"];

/// A grouped bar chart as an SVG document.
pub fn bar_chart(title: &str, groups: &[String], series: &[&str], values: &[Vec<f64>], unit: &str) -> String {
    let (w, h, left, bottom, top) = (760.0, 360.0, 70.0, 60.0, 40.0);
    let max = values.iter().flatten().cloned().fold(1.0, f64::max) * 1.1;
    let plot_w = w - left - 20.0;
    let plot_h = h - bottom - top;
    let gw = plot_w / groups.len() as f64;
    let bw = gw * 0.8 / series.len() as f64;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
"#,
        w / 2.0,
        h - bottom,
        w - 20.0,
        h - bottom
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = h - bottom - plot_h * k as f64 / 4.0;
        let _ = writeln!(s, r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e2e8f0"/><text x="{}" y="{:.1}" text-anchor="end">{:.0}</text>"##, w - 20.0, left - 6.0, y + 4.0, v);
    }
    let _ = writeln!(s, r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{unit}</text>"#, top + plot_h / 2.0, top + plot_h / 2.0);
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + gi as f64 * gw + gw * 0.1;
        for (si, v) in values[gi].iter().enumerate() {
            let bh = plot_h * v / max;
            let x = gx + si as f64 * bw;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {v:.0}</title></rect>"#,
                h - bottom - bh,
                bw * 0.92,
                COLORS[si % COLORS.len()],
                series[si]
            );
        }
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{g}</text>"#, left + gi as f64 * gw + gw / 2.0, h - bottom + 18.0);
    }
    for (si, name) in series.iter().enumerate() {
        let x = left + si as f64 * 170.0;
        let _ = writeln!(s, r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{name}</text>"#, h - 22.0, COLORS[si % COLORS.len()], x + 16.0, h - 12.0);
    }
    s.push_str("</svg>\n");
    s
}

