//! check_invariants() catches what it says it checks: for each invariant,
//! a store where everything holds, one row broken on purpose (inside a
//! transaction that is rolled back), and the invariant reports it, with
//! the broken row named in its detail.

use sqlx::{Executor, PgPool, Row};
use storefront_tests::*;

/// Orders in every state that holds or sells stock: pending (held),
/// paid, shipped, cancelled, with an idempotency key and a hot-stock SKU.
async fn store(name: &str) -> PgPool {
    let pool = fresh_db(name).await;
    pool.execute(
        "SELECT storefront.register_customer('one@example.com', 'pw', 'One');
         SELECT storefront.upsert_product('A', 'Alpha', 1000);
         SELECT storefront.upsert_product('H', 'Hot', 500);
         SELECT storefront.restock('A', 20);
         SELECT storefront.restock('H', 20);
         SELECT storefront.set_hot_stock('H', 4);
         SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 2}]', 'k-1');         -- 1 pending
         SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 1}, {\"sku\": \"H\", \"qty\": 2}]'); -- 2 paid
         SELECT storefront.record_payment(2, 2000, true, 'psp-2');
         SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"H\", \"qty\": 1}]');              -- 3 shipped
         SELECT storefront.record_payment(3, 500, true, 'psp-3');
         SELECT storefront.ship_order(3);
         SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 3}]');              -- 4 cancelled
         SELECT storefront.cancel_order(4, 'changed my mind');
         SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"H\", \"qty\": 1}]');              -- 5 pending, hot",
    )
    .await
    .expect("set up a store");
    assert_invariants(&pool).await;
    pool
}

/// Break the store with `sql` in a transaction, read check_invariants()
/// there, roll back. Returns (ok, detail) of `invariant`, and the names of
/// every invariant that failed.
async fn broken(pool: &PgPool, sql: &str, invariant: &str) -> (bool, String, Vec<String>) {
    let mut tx = pool.begin().await.unwrap();
    tx.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = sqlx::query("SELECT invariant, ok, detail FROM storefront.check_invariants()")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let failing: Vec<String> = rows.iter().filter(|r| !r.get::<bool, _>(1)).map(|r| r.get::<String, _>(0)).collect();
    let row = rows
        .iter()
        .find(|r| r.get::<String, _>(0) == invariant)
        .unwrap_or_else(|| panic!("no invariant named {invariant:?}"));
    (row.get(1), row.get(2), failing)
}

async fn reports(pool: &PgPool, invariant: &str, sql: &str, detail_has: &str) {
    let (ok, detail, failing) = broken(pool, sql, invariant).await;
    assert!(!ok, "{invariant:?} did not notice: {sql}\n(failing: {failing:?})");
    assert!(detail.contains(detail_has), "{invariant:?} detail {detail:?} lacks {detail_has:?}");
    // and the store is whole again
    assert_invariants(pool).await;
}

#[tokio::test]
async fn each_invariant_reports_a_broken_row() {
    let pool = store("sf_invariants_corrupt").await;
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.check_invariants()").fetch_one(&pool).await.unwrap();
    let sku = "(SELECT sku_id FROM storefront.sku WHERE code = 'A')";

    reports(
        &pool,
        "inventory: 0 <= reserved <= on_hand",
        &format!(
            "ALTER TABLE storefront.inventory DROP CONSTRAINT inventory_reserved_range;
             UPDATE storefront.inventory SET reserved = on_hand + 1 WHERE sku_id = {sku}"
        ),
        "has on_hand",
    )
    .await;
    reports(
        &pool,
        "inventory: on_hand = initial + restocks - sold",
        &format!("UPDATE storefront.inventory SET on_hand = on_hand + 1 WHERE sku_id = {sku}"),
        "but movements",
    )
    .await;
    reports(
        &pool,
        "inventory: reserved = sum of live reservations",
        "UPDATE storefront.inventory_slot SET reserved = reserved + 1
         WHERE (sku_id, location_id, slot) = (SELECT sku_id, location_id, slot FROM storefront.inventory_slot
                                               WHERE on_hand > reserved ORDER BY 1, 2, 3 LIMIT 1)",
        "but live holds total",
    )
    .await;
    reports(
        &pool,
        "orders: total = sum of lines",
        "UPDATE storefront.orders SET total_cents = total_cents + 1 WHERE order_id = 4",
        "order 4 has total",
    )
    .await;
    reports(
        &pool,
        "orders: at least one line",
        "INSERT INTO storefront.orders (customer_id, status, currency, total_cents) VALUES (1, 'cancelled', 'USD', 0)",
        "has no lines",
    )
    .await;
    reports(
        &pool,
        "payments: a paid order has exactly one succeeded payment equal to its total",
        "UPDATE storefront.payment SET amount_cents = amount_cents - 1 WHERE order_id = 2",
        "order 2 (paid",
    )
    .await;
    reports(
        &pool,
        "orders: one order per (customer, idempotency key)",
        "DROP INDEX storefront.orders_idempotency_key;
         UPDATE storefront.orders SET idempotency_key = 'k-1', request_hash = '\\x00' WHERE order_id = 4",
        "under idempotency key 'k-1'",
    )
    .await;
    reports(
        &pool,
        "history: every order's history follows the status machine to its status",
        "UPDATE storefront.orders SET status = 'delivered' WHERE order_id = 2",
        "order 2 is delivered, but its history ends with paid",
    )
    .await;
    reports(
        &pool,
        "history: every order's history follows the status machine to its status",
        "UPDATE storefront.order_status_history SET status = 'shipped' WHERE order_id = 2 AND seq = 2",
        "is not a legal move",
    )
    .await;
    reports(
        &pool,
        "outbox: every status change has its outbox row",
        "DELETE FROM storefront.outbox WHERE aggregateid = '3' AND type = 'order.shipped'",
        "order 3 status change 3 (shipped) has no outbox row",
    )
    .await;
    reports(
        &pool,
        "reservations: every line is held, sold or released as its order's status says",
        "UPDATE storefront.reservation SET state = 'released', ended_at = now() WHERE order_id = 1",
        "order 1 (pending) line 1",
    )
    .await;
    // every invariant the function checks has a case above
    assert_eq!(all, 10);
}
