//! Many sessions at once: the last unit, one idempotency key, and a
//! randomized stress run with backends killed mid-transaction. After each,
//! every invariant of DESIGN.md holds exactly.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storefront_tests::*;
use tokio::sync::Barrier;

async fn pool_for(db: &str, app: &str, max: u32) -> PgPool {
    let opts = PgConnectOptions::from_str(&db_url(db)).unwrap().application_name(app);
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .unwrap()
}

async fn race_for_last_unit(db: &str, hot: bool) {
    let setup = fresh_db(db).await;
    setup
        .execute(
            "SELECT storefront.register_customer('c' || n || '@example.com', 'pw', 'C' || n) FROM generate_series(1, 32) n;
             SELECT storefront.upsert_product('LAST', 'Last one', 500);
             SELECT storefront.restock('LAST', 1);",
        )
        .await
        .unwrap();
    if hot {
        setup.execute("SELECT storefront.set_hot_stock('LAST', 8)").await.unwrap();
    }
    let pool = pool_for(db, "sf-last-unit", 32).await;
    let barrier = Arc::new(Barrier::new(32));
    let mut tasks = Vec::new();
    for customer in 1..=32i64 {
        let pool = pool.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            sqlx::query_scalar::<_, i64>("SELECT order_id FROM storefront.place_order($1, '[{\"sku\": \"LAST\", \"qty\": 1}]')")
                .bind(customer)
                .fetch_one(&pool)
                .await
        }));
    }
    let mut won = 0;
    let mut codes = BTreeMap::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => *codes.entry(sqlstate(&e).unwrap_or_else(|| e.to_string())).or_insert(0) += 1,
        }
    }
    assert_eq!(won, 1, "exactly one order gets the last unit (hot = {hot}); errors: {codes:?}");
    assert_eq!(codes, BTreeMap::from([("23514".to_string(), 31)]), "hot = {hot}");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.orders").fetch_one(&setup).await.unwrap();
    assert_eq!(orders, 1);
    assert_invariants(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_sessions_race_for_the_last_unit() {
    race_for_last_unit("sf_race_last", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_sessions_race_for_the_last_hot_unit() {
    race_for_last_unit("sf_race_last_hot", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_calls_with_one_key_make_one_order() {
    let db = "sf_race_idem";
    let setup = fresh_db(db).await;
    setup
        .execute(
            "SELECT storefront.register_customer('one@example.com', 'pw', 'One');
             SELECT storefront.upsert_product('IDEM', 'Idem', 700);
             SELECT storefront.restock('IDEM', 100);",
        )
        .await
        .unwrap();
    let pool = pool_for(db, "sf-idem", 20).await;
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let pool = pool.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            sqlx::query_as::<_, (i64, bool)>(
                "SELECT order_id, replayed FROM storefront.place_order(1, '[{\"sku\": \"IDEM\", \"qty\": 3}]', 'checkout-42')",
            )
            .fetch_one(&pool)
            .await
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let (id, replayed) = t.await.unwrap().expect("every call answers with the receipt");
        ids.insert(id);
        if !replayed {
            fresh += 1;
        }
    }
    assert_eq!(ids.len(), 1, "one order id for all 20 calls");
    assert_eq!(fresh, 1, "one original, 19 replays");
    let (orders, reserved): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM storefront.orders), (SELECT reserved FROM storefront.stock('IDEM'))",
    )
    .fetch_one(&setup)
    .await
    .unwrap();
    assert_eq!((orders, reserved), (1, 3));
    assert_invariants(&setup).await;
}

/// What the stress run did, by operation and outcome.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, usize>>);

impl Tally {
    fn add(&self, op: &str, outcome: &str) {
        *self.0.lock().unwrap().entry(format!("{op}: {outcome}")).or_insert(0) += 1;
    }
}

const NORMAL_SKUS: usize = 30;
const HOT_SKUS: usize = 3;
const CLIENTS: usize = 16;
const OPS_PER_CLIENT: usize = 1300; // 20,800 operations

/// The failures an operation may legitimately end with in the stress run,
/// per operation: anything else (a CHECK violation from a stock row, a
/// 40001 from a stock update that missed its row, an internal error) is a
/// bug, even when another operation may raise the same SQLSTATE for a good
/// reason.
fn expected_failure(op: &str, e: &PgErr) -> bool {
    let out_of_stock = e.code == "23514" && e.message.starts_with("insufficient stock for");
    let common = matches!(e.code.as_str(), "55P03" | "57P01"); // lock_timeout; our backend was terminated
    common
        || match op {
            // the order moved meanwhile (expired by a sweeper, paid, ...)
            "place" => out_of_stock,
            // an expired or failed order re-takes its stock, which may be gone;
            // a deliberately wrong amount
            "pay ok" => out_of_stock || e.code == "55000" || e.code == "22023",
            "pay fail" => e.code == "55000" || e.code == "22023",
            "cancel" => e.code == "55000",
            "transaction" => out_of_stock,
            "expire" | "restock" | "hot switch" => false,
            _ => false,
        }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_stress_with_killed_backends_keeps_every_invariant() {
    let db = "sf_stress";
    let setup = fresh_db(db).await;
    setup
        .execute(
            format!(
                "SELECT storefront.register_customer('c' || n || '@example.com', 'pw', 'C' || n) FROM generate_series(1, {CLIENTS}) n;
                 SELECT storefront.upsert_product('N-' || n, 'Normal ' || n, 100 + n) FROM generate_series(1, {NORMAL_SKUS}) n;
                 SELECT storefront.restock('N-' || n, 60) FROM generate_series(1, {NORMAL_SKUS}) n;
                 SELECT storefront.upsert_product('H-' || n, 'Hot ' || n, 999) FROM generate_series(1, {HOT_SKUS}) n;
                 SELECT storefront.restock('H-' || n, 300) FROM generate_series(1, {HOT_SKUS}) n;
                 SELECT storefront.set_hot_stock('H-' || n, 8) FROM generate_series(1, {HOT_SKUS}) n;"
            )
            .as_str(),
        )
        .await
        .unwrap();

    let pool = pool_for(db, "sf-stress", CLIENTS as u32 + 2).await;
    let tally = Arc::new(Tally::default());
    let seen: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));

    // the killer: terminate a busy or mid-transaction client backend now and then
    let killer = {
        let admin = connect(db, 1).await;
        let done = done.clone();
        let kills = kills.clone();
        tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(7);
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(20..80))).await;
                let killed: Option<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name = 'sf-stress'
                       AND state IN ('active', 'idle in transaction')
                     ORDER BY random() LIMIT 1",
                )
                .fetch_optional(&admin)
                .await
                .ok()
                .flatten();
                if killed == Some(true) {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let pool = pool.clone();
        let tally = tally.clone();
        let seen = seen.clone();
        let unexpected = unexpected.clone();
        clients.push(tokio::spawn(async move {
            let customer = c as i64 + 1;
            let mut rng = SmallRng::seed_from_u64(1000 + c as u64);
            // my orders that may still be pending: (order_id, total)
            let mut mine: Vec<(i64, i64)> = Vec::new();
            // the last keyed request, retried now and then exactly as sent
            let mut last_keyed: Option<(String, serde_json::Value)> = None;
            for i in 0..OPS_PER_CLIENT {
                let roll = rng.gen_range(0..100);
                let items = random_items(&mut rng);
                let hold = if rng.gen_bool(0.2) { "150 milliseconds" } else { "15 minutes" };
                let (op, result): (&str, Result<(), sqlx::Error>) = if roll < 40 {
                    let (key, items) = match (&last_keyed, rng.gen_range(0..10)) {
                        (Some((k, it)), 0) => (Some(k.clone()), it.clone()),
                        (_, 1) => {
                            last_keyed = Some((format!("c{c}-k{i}"), items.clone()));
                            (Some(format!("c{c}-k{i}")), items)
                        }
                        _ => (None, items),
                    };
                    let hold = if key.is_some() { "15 minutes" } else { hold };
                    let r = sqlx::query_as::<_, (i64, i64)>(
                        "SELECT order_id, total_cents FROM storefront.place_order($1, $2, $3, $4::interval)",
                    )
                    .bind(customer)
                    .bind(&items)
                    .bind(key)
                    .bind(hold)
                    .fetch_one(&pool)
                    .await;
                    ("place", r.map(|(id, total)| {
                        seen.lock().unwrap().insert(id);
                        if !mine.contains(&(id, total)) {
                            mine.push((id, total));
                        }
                    }))
                } else if roll < 70 && !mine.is_empty() {
                    let (id, total) = mine[rng.gen_range(0..mine.len())];
                    let ok = roll < 62;
                    let amount = if rng.gen_bool(0.02) { total + 1 } else { total };
                    let r = sqlx::query("SELECT storefront.record_payment($1, $2, $3, $4)")
                        .bind(id)
                        .bind(amount)
                        .bind(ok)
                        .bind(format!("psp-{c}-{i}"))
                        .execute(&pool)
                        .await
                        .map(|_| ());
                    (if ok { "pay ok" } else { "pay fail" }, r)
                } else if roll < 77 && !mine.is_empty() {
                    let (id, _) = mine.swap_remove(rng.gen_range(0..mine.len()));
                    let r = sqlx::query("SELECT storefront.cancel_order($1, 'stress')").bind(id).execute(&pool).await.map(|_| ());
                    ("cancel", r)
                } else if roll < 85 {
                    let r = sqlx::query("SELECT storefront.expire_reservations(now(), 50)").execute(&pool).await.map(|_| ());
                    ("expire", r)
                } else if roll < 89 || (roll < 90 && c >= 4) {
                    let sku = format!("N-{}", rng.gen_range(1..=NORMAL_SKUS));
                    let sku = if rng.gen_bool(0.3) { format!("H-{}", rng.gen_range(1..=HOT_SKUS)) } else { sku };
                    let r = sqlx::query("SELECT storefront.restock($1, $2)")
                        .bind(sku)
                        .bind(rng.gen_range(1..20))
                        .execute(&pool)
                        .await
                        .map(|_| ());
                    ("restock", r)
                } else if roll < 90 {
                    // four clients now and then switch a SKU's stock mode
                    // while everyone buys, pays, cancels and restocks it
                    let n = rng.gen_range(1..=HOT_SKUS + 2);
                    let (sku, slots) = if n <= HOT_SKUS {
                        (format!("H-{n}"), if rng.gen_bool(0.5) { 0 } else { rng.gen_range(2..=8) })
                    } else {
                        (format!("N-{n}"), if rng.gen_bool(0.5) { 0 } else { 4 })
                    };
                    let r = sqlx::query("SELECT storefront.set_hot_stock($1, $2)")
                        .bind(sku)
                        .bind(slots)
                        .execute(&pool)
                        .await
                        .map(|_| ());
                    ("hot switch", r)
                } else {
                    // an explicit transaction the killer can catch in the middle
                    let r = async {
                        let mut tx = pool.begin().await?;
                        let (id, total): (i64, i64) =
                            sqlx::query_as("SELECT order_id, total_cents FROM storefront.place_order($1, $2)")
                                .bind(customer)
                                .bind(&items)
                                .fetch_one(&mut *tx)
                                .await?;
                        sqlx::query("SELECT pg_sleep(0.005)").execute(&mut *tx).await?;
                        sqlx::query("SELECT storefront.record_payment($1, $2, true, $3)")
                            .bind(id)
                            .bind(total)
                            .bind(format!("psp-tx-{c}-{i}"))
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        Ok::<i64, sqlx::Error>(id)
                    }
                    .await;
                    ("transaction", r.map(|id| {
                        seen.lock().unwrap().insert(id);
                    }))
                };
                match result {
                    Ok(()) => tally.add(op, "ok"),
                    Err(e) => match pg_err(&e) {
                        Some(pe) if expected_failure(op, &pe) => tally.add(op, &pe.code),
                        // a killed backend surfaces as an I/O or protocol error
                        None if is_disconnect(&e) => tally.add(op, "disconnected"),
                        other => {
                            tally.add(op, "UNEXPECTED");
                            unexpected.lock().unwrap().push(format!("{op}: {other:?} {e}"));
                        }
                    },
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    killer.await.unwrap();

    let summary = tally.0.lock().unwrap().clone();
    let total: usize = summary.values().sum();
    eprintln!("stress: {total} operations, {} backends killed\n{summary:#?}", kills.load(Ordering::Relaxed));
    assert!(total >= 20_000);
    assert!(kills.load(Ordering::Relaxed) >= 5, "the killer should have hit some backends");
    let unexpected = unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected errors: {unexpected:#?}");
    for op in ["place", "pay ok", "pay fail", "cancel", "expire", "restock", "transaction", "hot switch"] {
        assert!(summary.get(&format!("{op}: ok")).copied().unwrap_or(0) > 0, "no successful {op}");
    }

    // every order a client saw committed is there
    let seen: Vec<i64> = seen.lock().unwrap().iter().copied().collect();
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.orders WHERE order_id = ANY ($1)")
        .bind(&seen)
        .fetch_one(&setup)
        .await
        .unwrap();
    assert_eq!(present as usize, seen.len(), "orders a client saw committed are missing");
    assert_invariants(&setup).await;
    // and after the sweeper drains every expired hold, still
    loop {
        let n: i32 = sqlx::query_scalar("SELECT storefront.expire_reservations(now() + interval '1 hour', 10000)")
            .fetch_one(&setup)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
    }
    assert_invariants(&setup).await;
}

fn random_items(rng: &mut SmallRng) -> serde_json::Value {
    let lines = rng.gen_range(1..=4);
    let items: Vec<serde_json::Value> = (0..lines)
        .map(|_| {
            let sku = if rng.gen_bool(0.25) {
                format!("H-{}", rng.gen_range(1..=HOT_SKUS))
            } else {
                format!("N-{}", rng.gen_range(1..=NORMAL_SKUS))
            };
            json!({"sku": sku, "qty": rng.gen_range(1..=3)})
        })
        .collect();
    serde_json::Value::Array(items)
}

fn is_disconnect(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut)
        || e.to_string().contains("terminating connection")
        || e.to_string().contains("connection")
}
