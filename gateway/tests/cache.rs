//! The Redis read cache: hits and misses, invalidation by catalog changes
//! and by order events, the checkout decision never cached, and Redis
//! stopped mid-run.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

/// GET `path` until `ok(body)` holds (the invalidation is asynchronous:
/// order events arrive over LISTEN), for at most 5 s.
async fn eventually(gw: &Gw, path: &str, ok: impl Fn(&serde_json::Value) -> bool) -> Resp {
    let start = std::time::Instant::now();
    loop {
        let r = gw.get(path, None).await;
        if ok(&r.body) || start.elapsed() > Duration::from_secs(5) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_cached_and_invalidated() {
    let admin = small_store("gw_cache").await;
    let gw = gateway("gw_cache", admin, Opts::default()).await;

    // miss, then hit, with the same body
    let a = gw.get("/products/TEE-BLK-M", None).await;
    assert_eq!(a.header("x-cache"), Some("miss"));
    let b = gw.get("/products/TEE-BLK-M", None).await;
    assert_eq!(b.header("x-cache"), Some("hit"));
    assert_eq!(a.body, b.body);
    assert_eq!(gw.get("/products?limit=2", None).await.header("x-cache"), Some("miss"));
    assert_eq!(gw.get("/products?limit=2", None).await.header("x-cache"), Some("hit"));
    assert_eq!(gw.get("/products?limit=3", None).await.header("x-cache"), Some("miss"));
    assert_eq!(gw.get("/products/TEE-BLK-M/stock", None).await.header("x-cache"), Some("miss"));
    assert_eq!(gw.get("/products/TEE-BLK-M/stock", None).await.header("x-cache"), Some("hit"));
    // errors are not cached
    assert_eq!(gw.get("/products/NOPE", None).await.header("x-cache"), None);

    // a price change through the gateway: visible on the very next read
    let r = gw.put("/products/TEE-BLK-M", Some(&gw.catalog()),
                   json!({"name": "Classic Tee", "price_cents": 2499, "category": "Apparel/Men/Shirts", "attributes": {"size": "M"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = gw.get("/products/TEE-BLK-M", None).await;
    assert_eq!((c.header("x-cache"), c.body["price_cents"].as_i64()), (Some("miss"), Some(2499)));
    let p = gw.get("/products?limit=2&after=MUG-1", None).await;
    assert_eq!(p.body["items"][1]["price_cents"], 2499, "{}", p.text);

    // an order moves stock: the product's entry goes (by the order event)
    assert_eq!(gw.get("/products/TEE-BLK-M", None).await.header("x-cache"), Some("hit"));
    let o = gw.order(1, json!([{"sku": "TEE-BLK-M", "qty": 5}])).await;
    assert_eq!(o.status, 201);
    let r = eventually(&gw, "/products/TEE-BLK-M", |b| b["available"] == 20).await;
    assert_eq!(r.body["available"], 20, "the cached product never showed the order: {}", r.text);
    let r = eventually(&gw, "/products/TEE-BLK-M/stock", |b| b[0]["reserved"] == 5).await;
    assert_eq!(r.body[0]["reserved"], 5, "{}", r.text);
    // cancelling gives the stock back, and the cache hears of it
    gw.post_raw(&format!("/orders/{}/cancel", o.body["order_id"]), Some(&gw.customer(1)), None, vec![]).await;
    let r = eventually(&gw, "/products/TEE-BLK-M", |b| b["available"] == 25).await;
    assert_eq!(r.body["available"], 25, "{}", r.text);
    // a change made in SQL behind the gateway's back also reaches it
    // through the order events (an order placed directly)
    sqlx::query("SELECT storefront.place_order(2, '[{\"sku\": \"TEE-BLK-M\", \"qty\": 1}]')").execute(&gw.admin).await.unwrap();
    let r = eventually(&gw, "/products/TEE-BLK-M", |b| b["available"] == 24).await;
    assert_eq!(r.body["available"], 24, "{}", r.text);
    // pages follow within the staleness bound
    let r = eventually(&gw, "/products?search=tee-blk-m", |b| b["items"][0]["available"] == 24).await;
    assert_eq!(r.body["items"][0]["available"], 24, "{}", r.text);

    // the checkout decision comes from the database, not the cache: a
    // restock in SQL (invisible to the cache) makes an order possible
    // although the cached product still says it is not
    let m = gw.get("/products/MUG-1", None).await;
    let cached = m.body["available"].as_i64().unwrap();
    sqlx::query("SELECT storefront.restock('MUG-1', 10)").execute(&gw.admin).await.unwrap();
    assert_eq!(gw.get("/products/MUG-1", None).await.body["available"].as_i64().unwrap(), cached, "served from the cache");
    let o = gw.order(1, json!([{"sku": "MUG-1", "qty": cached + 5}])).await;
    assert_eq!(o.status, 201, "the order was decided on cached stock: {}", o.text);

    // the counters
    let m = gw.get("/metrics", None).await;
    assert!(m.text.contains("storefront_gateway_cache_requests_total{result=\"miss\"}"), "{}", m.text);
    let ratio = gw.state().cache.hit_ratio();
    assert!(ratio > 0.0 && ratio < 1.0, "hit ratio {ratio}");
    assert_invariants(&gw.admin).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_cached_and_dropped_by_order_events() {
    let admin = small_store("gw_cache_dash").await;
    let gw = gateway("gw_cache_dash", admin, Opts::default()).await;
    let ops = gw.ops();
    let a = gw.get("/dashboard/data", Some(&ops)).await;
    assert_eq!(a.header("x-cache"), Some("miss"));
    let b = gw.get("/dashboard/data", Some(&ops)).await;
    assert_eq!(b.header("x-cache"), Some("hit"));
    gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await;
    let start = std::time::Instant::now();
    loop {
        let r = gw.get("/dashboard/data", Some(&ops)).await;
        let n: f64 = r.body["orders_per_minute"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum();
        if n == 1.0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "the dashboard kept a stale snapshot: {}", r.text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_reads_still_succeed() {
    let mut redis = OwnRedis::start().await;
    let admin = small_store("gw_cache_down").await;
    let gw = gateway("gw_cache_down", admin, Opts { redis: Some(redis.url.clone()), ..Opts::default() }).await;
    gw.get("/products/MUG-1", None).await;
    assert_eq!(gw.get("/products/MUG-1", None).await.header("x-cache"), Some("hit"));
    assert_eq!(gw.get("/readyz", None).await.body["redis"], "ok");

    redis.stop();
    // every read still answers, from the database, quickly
    for path in ["/products/MUG-1", "/products?limit=2", "/products/TEE-BLK-M/stock", "/products/MUG-1"] {
        let started = std::time::Instant::now();
        let r = gw.get(path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.header("x-cache"), Some("bypass"), "{path}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path} took {:?}", started.elapsed());
    }
    let r = gw.get("/products/MUG-1", None).await;
    assert_eq!(r.body["available"], 2);
    // writes and orders go on; reads show them (no cache to be stale)
    let o = gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await;
    assert_eq!(o.status, 201, "{}", o.text);
    assert_eq!(gw.get("/products/MUG-1", None).await.body["available"], 1);
    let ops = gw.ops();
    assert_eq!(gw.get("/dashboard/data", Some(&ops)).await.status, 200);
    // ready, but degraded
    let r = gw.get("/readyz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!((r.body["status"].as_str(), r.body["redis"].as_str()), (Some("degraded"), Some("down")));
    let m = gw.get("/metrics", None).await.text;
    assert!(m.contains("storefront_gateway_cache_errors_total") && m.contains("storefront_gateway_cache_up 0"), "{m}");

    // Redis back on the same port: the cache is used again
    let port = redis.port;
    let dir = std::env::temp_dir().join(format!("sf-gw-redis-{port}-again"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut again = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut hit = false;
    while start.elapsed() < Duration::from_secs(10) {
        if gw.get("/products/MUG-1", None).await.header("x-cache") == Some("hit") {
            hit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = again.kill();
    let _ = again.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(hit, "the cache was not used again after Redis came back");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_configured_everything_reads_the_database() {
    let admin = small_store("gw_no_cache").await;
    let gw = gateway("gw_no_cache", admin, Opts { redis: None, ..Opts::default() }).await;
    assert_eq!(gw.get("/products/MUG-1", None).await.header("x-cache"), Some("bypass"));
    assert_eq!(gw.get("/readyz", None).await.body["redis"], "disabled");
    assert_eq!(gw.get("/readyz", None).await.body["status"], "ok");
    gw.stop().await;
}
