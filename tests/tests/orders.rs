//! place_order, record_payment, cancel / ship / deliver, expiry, timeline
//! and NOTIFY: the flows, and every bad input with its SQLSTATE and no
//! change to any table.

use serde_json::json;
use sqlx::postgres::PgListener;
use sqlx::{Executor, PgPool, Row};
use std::time::Duration;
use storefront_tests::*;

/// Two customers (1, 2) and SKUs A (10.00, 5 units), B (2.50, 2 units),
/// OFF (not for sale), EUR-1 (in euros).
async fn store(name: &str) -> PgPool {
    let pool = fresh_db(name).await;
    pool.execute(
        "SELECT storefront.register_customer('one@example.com', 'pw', 'One');
         SELECT storefront.register_customer('two@example.com', 'pw', 'Two');
         SELECT storefront.upsert_product('A', 'Alpha', 1000);
         SELECT storefront.upsert_product('B', 'Beta', 250);
         SELECT storefront.upsert_product('OFF', 'Gone', 100);
         SELECT storefront.upsert_product('EUR-1', 'Euro thing', 100, 'EUR');
         SELECT storefront.restock('A', 5);
         SELECT storefront.restock('B', 2);
         SELECT storefront.restock('OFF', 2);
         SELECT storefront.restock('EUR-1', 2);
         SELECT storefront.set_sellable('OFF', false);",
    )
    .await
    .unwrap();
    pool
}

#[derive(Debug, Clone, PartialEq)]
struct Receipt {
    order_id: i64,
    status: String,
    total_cents: i64,
    currency: String,
    replayed: bool,
}

async fn place(pool: &PgPool, customer: i64, items: serde_json::Value, key: Option<&str>) -> Result<Receipt, sqlx::Error> {
    let row = sqlx::query(
        "SELECT order_id, status, total_cents, currency::text, replayed
         FROM storefront.place_order($1, $2, $3)",
    )
    .bind(customer)
    .bind(items)
    .bind(key)
    .fetch_one(pool)
    .await?;
    Ok(Receipt {
        order_id: row.get(0),
        status: row.get(1),
        total_cents: row.get(2),
        currency: row.get(3),
        replayed: row.get(4),
    })
}

async fn available(pool: &PgPool, sku: &str) -> i32 {
    sqlx::query_scalar("SELECT sum(available)::int FROM storefront.stock($1)").bind(sku).fetch_one(pool).await.unwrap()
}

async fn status(pool: &PgPool, order_id: i64) -> String {
    sqlx::query_scalar("SELECT status FROM storefront.orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn pay(pool: &PgPool, order_id: i64, amount: i64, ok: bool, reference: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT storefront.record_payment($1, $2, $3, $4)")
        .bind(order_id)
        .bind(amount)
        .bind(ok)
        .bind(reference)
        .fetch_one(pool)
        .await
}

#[tokio::test]
async fn place_pay_ship_deliver() {
    let pool = store("sf_orders_happy").await;
    let r = place(&pool, 1, json!([{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}, {"sku": "A", "qty": 1}]), None)
        .await
        .unwrap();
    assert_eq!((r.status.as_str(), r.total_cents, r.currency.as_str(), r.replayed), ("pending", 3250, "USD", false));
    // repeated SKUs were merged into one line
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.order_line WHERE order_id = $1")
        .bind(r.order_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(lines, 2);
    assert_eq!(available(&pool, "A").await, 2);
    assert_invariants(&pool).await;

    assert_eq!(pay(&pool, r.order_id, 3250, true, "psp-1").await.unwrap(), "paid");
    // sold: on_hand and reserved both dropped
    let (on_hand, reserved): (i32, i32) =
        sqlx::query_as("SELECT on_hand, reserved FROM storefront.stock('A')").fetch_one(&pool).await.unwrap();
    assert_eq!((on_hand, reserved), (2, 0));
    // the same provider_ref again: the same answer, nothing new
    assert_eq!(pay(&pool, r.order_id, 3250, true, "psp-1").await.unwrap(), "paid");
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.payment").fetch_one(&pool).await.unwrap();
    assert_eq!(payments, 1);

    let shipped: String = sqlx::query_scalar("SELECT storefront.ship_order($1)").bind(r.order_id).fetch_one(&pool).await.unwrap();
    let delivered: String =
        sqlx::query_scalar("SELECT storefront.deliver_order($1)").bind(r.order_id).fetch_one(&pool).await.unwrap();
    assert_eq!((shipped.as_str(), delivered.as_str()), ("shipped", "delivered"));
    let timeline: Vec<String> = sqlx::query_scalar("SELECT status FROM storefront.order_timeline($1)")
        .bind(r.order_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(timeline, ["pending", "paid", "shipped", "delivered"]);
    let outbox: Vec<String> = sqlx::query_scalar(
        "SELECT type FROM storefront.outbox WHERE aggregateid = $1::text ORDER BY (payload->>'seq')::int",
    )
    .bind(r.order_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(outbox, ["order.pending", "order.paid", "order.shipped", "order.delivered"]);
    assert_invariants(&pool).await;
}

#[tokio::test]
async fn failed_payment_and_cancel_release_stock() {
    let pool = store("sf_orders_release").await;
    let r = place(&pool, 1, json!([{"sku": "A", "qty": 3}]), None).await.unwrap();
    assert_eq!(available(&pool, "A").await, 2);
    assert_eq!(pay(&pool, r.order_id, 3000, false, "psp-fail").await.unwrap(), "payment_failed");
    assert_eq!(available(&pool, "A").await, 5);
    assert_invariants(&pool).await;
    // a later successful payment takes the stock again
    assert_eq!(pay(&pool, r.order_id, 3000, true, "psp-ok").await.unwrap(), "paid");
    assert_eq!(available(&pool, "A").await, 2);

    let c = place(&pool, 2, json!([{"sku": "B", "qty": 2}]), None).await.unwrap();
    assert_eq!(available(&pool, "B").await, 0);
    let cancelled: String = sqlx::query_scalar("SELECT storefront.cancel_order($1, 'changed my mind')")
        .bind(c.order_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cancelled, "cancelled");
    assert_eq!(available(&pool, "B").await, 2);
    let reason: String = sqlx::query_scalar(
        "SELECT detail->>'reason' FROM storefront.order_timeline($1) WHERE status = 'cancelled'",
    )
    .bind(c.order_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reason, "changed my mind");
    assert_invariants(&pool).await;
}

#[tokio::test]
async fn holds_expire_and_late_payments_re_reserve() {
    let pool = store("sf_orders_expiry").await;
    let short = |items: serde_json::Value| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT order_id FROM storefront.place_order(1, $1, NULL, '10 milliseconds')")
                .bind(items)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let late_ok = short(json!([{"sku": "A", "qty": 2}])).await;
    let late_short = short(json!([{"sku": "B", "qty": 2}])).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // not yet expired as of a time before the holds ended
    let none: i32 = sqlx::query_scalar("SELECT storefront.expire_reservations(now() - interval '1 hour')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(none, 0);
    let released: i32 = sqlx::query_scalar("SELECT storefront.expire_reservations()").fetch_one(&pool).await.unwrap();
    assert_eq!(released, 2);
    assert_eq!(status(&pool, late_ok).await, "expired");
    assert_eq!((available(&pool, "A").await, available(&pool, "B").await), (5, 2));
    assert_invariants(&pool).await;

    // stock is still there: a late payment re-reserves it and sells it
    assert_eq!(pay(&pool, late_ok, 2000, true, "late-1").await.unwrap(), "paid");
    assert_eq!(available(&pool, "A").await, 3);
    // stock is gone: 23514, and nothing changes
    place(&pool, 2, json!([{"sku": "B", "qty": 2}]), None).await.unwrap();
    let e = fails_unchanged(&pool, &format!("SELECT storefront.record_payment({late_short}, 500, true, 'late-2')"), "23514").await;
    assert!(e.detail.unwrap_or_default().contains("SKU \"B\": requested 2, available 0."));
    assert_eq!(status(&pool, late_short).await, "expired");
    assert_invariants(&pool).await;
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let pool = store("sf_orders_idem").await;
    let first = place(&pool, 1, json!([{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}]), Some("key-1")).await.unwrap();
    // same request (items in another order, one split in two): the original receipt
    let again = place(&pool, 1, json!([{"sku": "B", "qty": 1}, {"sku": "A", "qty": 1}]), Some("key-1")).await.unwrap();
    assert_eq!(again, Receipt { replayed: true, ..first.clone() });
    assert_eq!(available(&pool, "A").await, 4, "a replay reserves nothing more");
    // the same key for another customer is another order
    let other = place(&pool, 2, json!([{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}]), Some("key-1")).await.unwrap();
    assert_ne!(other.order_id, first.order_id);
    // a different request under the key
    let e = fails_unchanged(
        &pool,
        "SELECT * FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 2}]', 'key-1')",
        "23505",
    )
    .await;
    assert_eq!(e.message, "idempotency key was already used for a different request");
    // a replay still answers after stock ran out, and after payment
    pay(&pool, first.order_id, first.total_cents, true, "psp").await.unwrap();
    let paid = place(&pool, 1, json!([{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}]), Some("key-1")).await.unwrap();
    assert_eq!((paid.status.as_str(), paid.replayed), ("paid", true));
    assert_invariants(&pool).await;
}

#[tokio::test]
async fn bad_orders_fail_with_their_sqlstate_and_change_nothing() {
    let pool = store("sf_orders_bad").await;
    let ok = place(&pool, 1, json!([{"sku": "A", "qty": 1}]), None).await.unwrap();
    let many: Vec<serde_json::Value> = (0..101).map(|i| json!({"sku": format!("S{i}"), "qty": 1})).collect();
    let many = serde_json::Value::Array(many).to_string();
    let cases: Vec<(String, &str)> = vec![
        ("'[]'".into(), "22023"),
        ("'{\"sku\": \"A\", \"qty\": 1}'".into(), "22P02"),
        ("'\"A\"'".into(), "22P02"),
        ("'[{\"sku\": \"A\"}]'".into(), "22P02"),
        ("'[{\"qty\": 1}]'".into(), "22P02"),
        ("'[{\"sku\": \"A\", \"qty\": 1, \"price\": 1}]'".into(), "22P02"),
        ("'[{\"sku\": \"A\", \"qty\": 0}]'".into(), "22023"),
        ("'[{\"sku\": \"A\", \"qty\": -2}]'".into(), "22023"),
        ("'[{\"sku\": \"A\", \"qty\": 1.5}]'".into(), "22P02"),
        ("'[{\"sku\": \"A\", \"qty\": \"1\"}]'".into(), "22P02"),
        ("'[{\"sku\": \"A\", \"qty\": 1001}]'".into(), "22023"),
        ("'[{\"sku\": \"A\", \"qty\": 600}, {\"sku\": \"A\", \"qty\": 401}]'".into(), "22023"),
        (format!("'{many}'"), "22023"),
        ("'[{\"sku\": \"NOPE\", \"qty\": 1}]'".into(), "23503"),
        ("'[{\"sku\": \"OFF\", \"qty\": 1}]'".into(), "23503"),
        ("'[{\"sku\": \"A\", \"qty\": 1}, {\"sku\": \"EUR-1\", \"qty\": 1}]'".into(), "22023"),
        ("'[{\"sku\": \"A\", \"qty\": 6}]'".into(), "23514"),
        ("'[{\"sku\": \"A\", \"qty\": 4}, {\"sku\": \"B\", \"qty\": 3}]'".into(), "23514"),
        ("NULL".into(), "22004"),
    ];
    for (items, code) in &cases {
        fails_unchanged(&pool, &format!("SELECT * FROM storefront.place_order(1, {items})"), code).await;
    }
    let e = fails_unchanged(&pool, "SELECT * FROM storefront.place_order(1, '[{\"sku\": \"NOPE\", \"qty\": 1}, {\"sku\": \"OFF\", \"qty\": 1}]')", "23503").await;
    assert_eq!(e.detail.as_deref(), Some("Unknown: \"NOPE\". Not for sale: \"OFF\"."));
    let e = fails_unchanged(&pool, "SELECT * FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 5}, {\"sku\": \"B\", \"qty\": 3}]')", "23514").await;
    assert_eq!(e.message, "insufficient stock for 2 items");
    assert_eq!(e.detail.as_deref(), Some("SKU \"A\": requested 5, available 4. SKU \"B\": requested 3, available 2."));

    // customers and holds
    fails_unchanged(&pool, "SELECT * FROM storefront.place_order(99, '[{\"sku\": \"A\", \"qty\": 1}]')", "23503").await;
    fails_unchanged(&pool, "SELECT * FROM storefront.place_order(NULL, '[{\"sku\": \"A\", \"qty\": 1}]')", "23503").await;
    for hold in ["'0 seconds'", "'-5 minutes'", "'8 days'", "NULL"] {
        let code = if hold == "NULL" { "22004" } else { "22023" };
        fails_unchanged(&pool, &format!("SELECT * FROM storefront.place_order(1, '[{{\"sku\": \"A\", \"qty\": 1}}]', NULL, {hold})"), code).await;
    }
    fails_unchanged(&pool, "SELECT * FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 1}]', '')", "22023").await;

    // payments and moves
    let id = ok.order_id;
    fails_unchanged(&pool, "SELECT storefront.record_payment(424242, 1000, true, 'x')", "P0002").await;
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({id}, 999, true, 'x')"), "22023").await;
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({id}, -1, true, 'x')"), "22023").await;
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({id}, 1000, true, '')"), "22023").await;
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({id}, 1000, NULL, 'x')"), "22004").await;
    fails_unchanged(&pool, &format!("SELECT storefront.ship_order({id})"), "55000").await;
    fails_unchanged(&pool, &format!("SELECT storefront.deliver_order({id})"), "55000").await;
    fails_unchanged(&pool, "SELECT storefront.ship_order(424242)", "P0002").await;
    fails_unchanged(&pool, "SELECT * FROM storefront.order_timeline(424242)", "P0002").await;
    pay(&pool, id, 1000, true, "psp-1").await.unwrap();
    let e = fails_unchanged(&pool, &format!("SELECT storefront.record_payment({id}, 1000, true, 'psp-2')"), "55000").await;
    assert_eq!(e.message, format!("cannot pay order {id}: it is paid"));
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({id}, 1000, false, 'psp-3')"), "55000").await;
    fails_unchanged(&pool, &format!("SELECT storefront.cancel_order({id})"), "55000").await;
    // the provider reference of another payment
    let other = place(&pool, 1, json!([{"sku": "B", "qty": 1}]), None).await.unwrap();
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({}, 250, true, 'psp-1')", other.order_id), "23505").await;
    // paying a cancelled order
    sqlx::query("SELECT storefront.cancel_order($1)").bind(other.order_id).execute(&pool).await.unwrap();
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({}, 250, true, 'psp-9')", other.order_id), "55000").await;
    fails_unchanged(&pool, &format!("SELECT storefront.cancel_order({})", other.order_id), "55000").await;

    fails_unchanged(&pool, "SELECT storefront.expire_reservations(now(), 0)", "22023").await;
    fails_unchanged(&pool, "SELECT storefront.set_hot_stock('A', 65)", "22023").await;
    fails_unchanged(&pool, "SELECT storefront.set_hot_stock('NOPE', 4)", "23503").await;
    assert_invariants(&pool).await;
}

/// Every status change is announced on channel storefront_order_events at
/// commit; a rolled-back change is never heard.
#[tokio::test]
async fn notify_is_sent_at_commit_only() {
    let pool = store("sf_orders_notify").await;
    let mut listener = PgListener::connect(&db_url("sf_orders_notify")).await.unwrap();
    listener.listen("storefront_order_events").await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT * FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 1}]')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let heard = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(heard.is_err(), "heard a rolled-back order: {heard:?}");

    let r = place(&pool, 1, json!([{"sku": "A", "qty": 1}]), None).await.unwrap();
    pay(&pool, r.order_id, 1000, true, "psp").await.unwrap();
    for expected in ["pending", "paid"] {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.expect("a notification").unwrap();
        let payload: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
        assert_eq!(payload["order_id"], json!(r.order_id));
        assert_eq!(payload["status"], json!(expected));
        assert_eq!(payload["customer_id"], json!(1));
    }
}

#[tokio::test]
async fn hot_stock_mode_keeps_every_invariant() {
    let pool = store("sf_orders_hot").await;
    let held = place(&pool, 1, json!([{"sku": "A", "qty": 2}]), None).await.unwrap();
    let n: i32 = sqlx::query_scalar("SELECT storefront.set_hot_stock('A', 4)").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 4);
    assert_invariants(&pool).await;
    assert_eq!(available(&pool, "A").await, 3);
    // the live hold moved into a slot with its units; paying it sells from there
    pay(&pool, held.order_id, 2000, true, "psp-hot").await.unwrap();
    assert_invariants(&pool).await;
    let on_base: i32 = sqlx::query_scalar(
        "SELECT on_hand + reserved FROM storefront.inventory WHERE sku_id = (SELECT sku_id FROM storefront.sku WHERE code = 'A')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(on_base, 0, "a hot SKU keeps its stock in slots");
    // a line larger than any single slot is allocated across slots
    let big = place(&pool, 2, json!([{"sku": "A", "qty": 3}]), None).await.unwrap();
    assert_eq!(available(&pool, "A").await, 0);
    fails_unchanged(&pool, "SELECT * FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 1}]')", "23514").await;
    sqlx::query("SELECT storefront.restock('A', 8)").execute(&pool).await.unwrap();
    assert_eq!(available(&pool, "A").await, 8);
    let slots: Vec<i32> = sqlx::query_scalar(
        "SELECT on_hand - reserved FROM storefront.inventory_slot ORDER BY slot",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(slots.iter().sum::<i32>(), 8);
    assert!(slots.iter().all(|&s| s == 2), "restock spreads evenly: {slots:?}");
    sqlx::query("SELECT storefront.cancel_order($1)").bind(big.order_id).execute(&pool).await.unwrap();
    assert_eq!(available(&pool, "A").await, 11);
    // and back to normal mode
    sqlx::query("SELECT storefront.set_hot_stock('A', 0)").execute(&pool).await.unwrap();
    assert_eq!(available(&pool, "A").await, 11);
    let slot_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.inventory_slot").fetch_one(&pool).await.unwrap();
    assert_eq!(slot_rows, 0);
    assert_invariants(&pool).await;
}

/// Any jsonb a caller can send gets 22P02 or 22023, never an internal
/// error: documents nested deeper than a JSON parser's limit, numbers no
/// integer type holds, SKU codes that cannot exist.
#[tokio::test]
async fn hostile_item_documents_are_refused_with_their_sqlstate() {
    let pool = store("sf_orders_hostile_json").await;
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let deep_obj = format!("{}1{}", "{\"a\": ".repeat(300), "}".repeat(300));
    let nines = "9".repeat(400);
    for (items, code) in [
        (deep.clone(), "22P02"),
        (deep_obj, "22P02"),
        (format!("[{{\"sku\": \"A\", \"qty\": {nines}}}]"), "22023"),
        (format!("[{{\"sku\": \"A\", \"qty\": -{nines}}}]"), "22023"),
        (format!("[{{\"sku\": \"A\", \"qty\": 0.{nines}}}]"), "22P02"),
        (format!("[{{\"sku\": \"A\", \"qty\": 1, \"x\": {nines}}}]"), "22P02"),
        (format!("[{{\"sku\": \"{}\", \"qty\": 1}}]", "X".repeat(100_000)), "22023"),
        (format!("[{{\"sku\": \"{deep}\", \"qty\": 1}}]"), "22023"),
        (format!("[{{\"sku\": {deep}, \"qty\": 1}}]"), "22P02"),
    ] {
        let sql = format!("SELECT storefront.place_order(1, '{}'::jsonb)", items.replace('\'', "''"));
        let e = fails_unchanged(&pool, &sql, code).await;
        assert!(e.message.len() < 200, "the message quotes a bounded part of the input: {}", e.message);
        assert!(e.detail.as_ref().is_none_or(|d| d.len() < 400), "the detail is bounded: {:?}", e.detail);
    }
    assert_invariants(&pool).await;
}

/// Money is bounded and checked: a price above the documented limit is
/// 22003 with nothing changed, and no order total can wrap.
#[tokio::test]
async fn prices_are_bounded_and_totals_cannot_wrap() {
    let pool = store("sf_orders_money").await;
    let limit: i64 = sqlx::query_scalar("SELECT storefront.max_price_cents()").fetch_one(&pool).await.unwrap();
    assert_eq!(limit, 1_000_000_000_000);
    for price in ["9000000000000000000", "1000000000001", "9223372036854775807"] {
        let e = fails_unchanged(&pool, &format!("SELECT storefront.upsert_product('RICH', 'Rich', {price})"), "22003").await;
        assert_eq!(e.message, "price is out of range");
        assert!(e.detail.unwrap().contains("1000000000000"));
    }
    // the table refuses it too, whoever writes it
    fails_unchanged(&pool, "UPDATE storefront.sku SET price_cents = 9000000000000000000 WHERE code = 'A'", "23514").await;
    // the largest order at the largest price fits
    pool.execute(
        "SELECT storefront.upsert_product('MAX' || n, 'Max ' || n, storefront.max_price_cents()) FROM generate_series(1, 100) n;
         SELECT storefront.restock('MAX' || n, 1000) FROM generate_series(1, 100) n;",
    )
    .await
    .unwrap();
    let items: Vec<serde_json::Value> = (1..=100).map(|n| json!({"sku": format!("MAX{n}"), "qty": 1000})).collect();
    let r = place(&pool, 1, serde_json::Value::Array(items), None).await.unwrap();
    assert_eq!(r.total_cents, 100 * 1000 * 1_000_000_000_000);
    // and a tiny payment cannot settle it
    fails_unchanged(&pool, &format!("SELECT storefront.record_payment({}, 1, true, 'tiny')", r.order_id), "22023").await;
    assert_invariants(&pool).await;
}

/// Free text that enters an order event is bounded (22023, nothing
/// changed), in both delivery modes: in relay mode an oversized reason
/// used to commit and then stop every relay batch.
#[tokio::test]
async fn cancellation_reasons_are_bounded() {
    let pool = store("sf_orders_reason").await;
    let r = place(&pool, 1, json!([{"sku": "A", "qty": 1}]), None).await.unwrap();
    for mode in ["notify", "relay"] {
        let sql = format!(
            "SET storefront.event_delivery = '{mode}'; SELECT storefront.cancel_order({}, repeat('x', 9000))",
            r.order_id
        );
        let e = fails_unchanged(&pool, &sql, "22023").await;
        assert_eq!(e.message, "cancellation reason is too long");
    }
    // 500 characters (even of four bytes each) still fit a NOTIFY
    let ok: String = sqlx::query_scalar(&format!("SELECT storefront.cancel_order({}, repeat('🙂', 500))", r.order_id))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ok, "cancelled");
    assert_invariants(&pool).await;
}

/// A stock UPDATE that hits no row (here: a hot-stock slot deleted behind
/// the extension's back) is refused with 40001 and changes nothing; it used
/// to succeed and leave the units reserved forever.
#[tokio::test]
async fn stock_updates_that_miss_their_row_are_refused() {
    let pool = store("sf_orders_row_counts").await;
    pool.execute("SELECT storefront.set_hot_stock('A', 2)").await.unwrap();
    let r = place(&pool, 1, json!([{"sku": "A", "qty": 1}]), None).await.unwrap();
    pool.execute(
        "DELETE FROM storefront.inventory_slot s USING storefront.reservation r
         WHERE r.order_id = 1 AND s.slot = r.slot",
    )
    .await
    .unwrap();
    let e = fails_unchanged(&pool, &format!("SELECT storefront.record_payment({}, 1000, true, 'p')", r.order_id), "40001").await;
    assert!(e.detail.unwrap().contains("slot update should have changed 1 row(s) but changed 0"));
    fails_unchanged(&pool, &format!("SELECT storefront.cancel_order({})", r.order_id), "40001").await;
}

/// Each status change is stamped when it happens: an order's timeline is
/// in time order even when its changes come from transactions that began
/// in the other order (the exact interleaving is in
/// tests/isolation/specs/timeline_order.spec).
#[tokio::test]
async fn timelines_are_monotonic() {
    let pool = store("sf_orders_timeline_time").await;
    let id: i64 = sqlx::query_scalar(
        "SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 1}]', NULL, '1 millisecond')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut payer = pool.begin().await.unwrap();
    payer.execute("SELECT 1").await.unwrap(); // its now() is fixed here
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired: i32 =
        sqlx::query_scalar("SELECT storefront.expire_reservations()").fetch_one(&pool).await.unwrap();
    assert_eq!(expired, 1);
    let paid: String = sqlx::query_scalar("SELECT storefront.record_payment($1, 1000, true, 'late')")
        .bind(id)
        .fetch_one(&mut *payer)
        .await
        .unwrap();
    assert_eq!(paid, "paid");
    payer.commit().await.unwrap();
    let (by_seq, monotonic): (String, bool) = sqlx::query_as(
        "SELECT string_agg(status, ' -> ' ORDER BY seq), bool_and(at >= prev) FROM (
           SELECT seq, status, at, lag(at, 1, at) OVER (ORDER BY seq) AS prev
           FROM storefront.order_status_history WHERE order_id = $1) h",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(by_seq, "pending -> expired -> paid");
    assert!(monotonic, "the timeline's times go backwards");
    assert_invariants(&pool).await;
}
