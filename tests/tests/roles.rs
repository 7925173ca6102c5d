//! The four kinds of role a store has, each set up by its grant function:
//! an application role acts for one customer at a time (and reads only
//! that customer's rows), a catalog role prices and stocks, an operations
//! role ships and maintains for every customer, an analyst reads and
//! writes nothing. Nobody else can hand out privileges.

use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgPool, Postgres};
use storefront_tests::*;

/// A fresh role (cluster-wide, so dropped first in case a run was cut short).
async fn fresh_role(pool: &PgPool, role: &str) {
    let _ = pool.execute(format!("DROP OWNED BY {role}").as_str()).await;
    let _ = pool.execute(format!("DROP ROLE IF EXISTS {role}").as_str()).await;
    pool.execute(format!("CREATE ROLE {role} NOLOGIN").as_str()).await.unwrap();
}

async fn drop_role(pool: &PgPool, role: &str) {
    pool.execute(format!("DROP OWNED BY {role}").as_str()).await.unwrap();
    pool.execute(format!("DROP ROLE {role}").as_str()).await.unwrap();
}

/// `sql` run as the role on `conn` fails with `code`; the store is unchanged.
async fn refused(pool: &PgPool, conn: &mut PoolConnection<Postgres>, sql: &str, code: &str) {
    let before = digest(pool).await;
    let err = match conn.execute(sql).await {
        Ok(_) => panic!("expected SQLSTATE {code}, but it succeeded: {sql}"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err).as_deref(), Some(code), "{sql}: {err}");
    assert_eq!(before, digest(pool).await, "store data changed after a refused call: {sql}");
}

async fn scalar_i64(conn: &mut PoolConnection<Postgres>, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&mut **conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A store with customers 1 and 2, SKU ROLE-1 (5.00, 10 units) and an order
/// of customer 2.
async fn store(name: &str) -> PgPool {
    let pool = fresh_db(name).await;
    pool.execute(
        "SELECT storefront.register_customer('one@example.com', 'pw', 'One');
         SELECT storefront.register_customer('two@example.com', 'pw', 'Two');
         SELECT storefront.upsert_product('ROLE-1', 'Role test', 500);
         SELECT storefront.restock('ROLE-1', 10);
         SELECT storefront.place_order(2, '[{\"sku\": \"ROLE-1\", \"qty\": 1}]');",
    )
    .await
    .unwrap();
    pool
}

#[tokio::test]
async fn app_role_acts_for_one_customer_and_touches_nothing_else() {
    let pool = store("sf_roles_app").await;
    fresh_role(&pool, "sf_test_app").await;
    let granted: Vec<(String, String)> =
        sqlx::query_as("SELECT privilege, object FROM storefront.grant_app_role('sf_test_app')")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(granted[0], ("USAGE".to_string(), "schema storefront".to_string()));
    assert!(granted.contains(&(
        "EXECUTE".to_string(),
        "function storefront.place_order(bigint,jsonb,text,interval)".to_string()
    )));
    assert!(granted.iter().all(|(p, _)| p == "USAGE" || p == "EXECUTE" || p == "SELECT"), "{granted:?}");
    let customer_read = granted.iter().find(|(_, o)| o.starts_with("table storefront.customer")).unwrap();
    assert!(!customer_read.1.contains("password_hash"), "{customer_read:?}");
    // idempotent
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.grant_app_role('sf_test_app')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, granted.len() as i64);

    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET ROLE sf_test_app").await.unwrap();
    // a whole order's life for customer 1, in the customer's transactions
    let customer: i64 = scalar_i64(&mut conn, "SELECT storefront.authenticate('one@example.com', 'pw')").await;
    assert_eq!(customer, 1);
    conn.execute("BEGIN; SELECT set_config('storefront.customer_id', '1', true)").await.unwrap();
    let order = scalar_i64(&mut conn, "SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"ROLE-1\", \"qty\": 2}]')").await;
    let status: String = sqlx::query_scalar("SELECT storefront.record_payment($1, 1000, true, 'role-pay-1')")
        .bind(order)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(status, "paid");
    assert_eq!(scalar_i64(&mut conn, &format!("SELECT count(*) FROM storefront.order_timeline({order})")).await, 2);
    assert_eq!(scalar_i64(&mut conn, &format!("SELECT count(*) FROM storefront.order_events({order}, 1)")).await, 1);
    // its own rows, directly: one order of its own, none of customer 2's
    assert_eq!(scalar_i64(&mut conn, "SELECT count(*) FROM storefront.orders").await, 1);
    assert_eq!(scalar_i64(&mut conn, "SELECT count(*) FROM storefront.customer").await, 1);
    assert_eq!(scalar_i64(&mut conn, "SELECT count(*) FROM storefront.products('role')").await, 1);
    conn.execute("COMMIT").await.unwrap();

    // not for another customer, not staff work, no table writes, no granting
    for sql in [
        "SELECT set_config('storefront.customer_id', '1', false); SELECT storefront.place_order(2, '[{\"sku\": \"ROLE-1\", \"qty\": 1}]')",
        "SELECT set_config('storefront.customer_id', '1', false); SELECT storefront.cancel_order(1)",
        "SELECT set_config('storefront.customer_id', '1', false); SELECT * FROM storefront.order_details(1)",
        "SELECT set_config('storefront.customer_id', '1', false); SELECT * FROM storefront.order_timeline(1)",
        "SELECT set_config('storefront.customer_id', '1', false); SELECT storefront.record_payment(1, 500, true, 'x')",
        "SELECT storefront.upsert_product('ROLE-1', 'Cheap now', 1)",
        "SELECT storefront.restock('ROLE-1', 100)",
        "SELECT storefront.expire_reservations('infinity')",
        "SELECT storefront.ship_order(1)",
        "SELECT storefront.set_hot_stock('ROLE-1', 4)",
        "SELECT storefront.seed_demo_data(1)",
        "SELECT * FROM storefront.check_invariants()",
        "SELECT password_hash FROM storefront.customer",
        "UPDATE storefront.inventory SET on_hand = on_hand + 100",
        "DELETE FROM storefront.orders",
        "SELECT * FROM storefront.inventory",
        "SELECT * FROM storefront.grant_app_role('sf_test_app')",
    ] {
        refused(&pool, &mut conn, sql, "42501").await;
    }
    conn.execute("RESET storefront.customer_id; RESET ROLE").await.unwrap();
    drop(conn);
    assert_invariants(&pool).await;
    drop_role(&pool, "sf_test_app").await;
}

/// Two customers in two sessions of one app role at the same time: each
/// sees and acts on its own rows only, and enable_row_security() makes an
/// app session that does not say whom it acts for fail.
#[tokio::test]
async fn two_customers_in_two_sessions_see_only_their_own_rows() {
    let pool = store("sf_roles_rls").await;
    fresh_role(&pool, "sf_test_app2").await;
    pool.execute("SELECT * FROM storefront.grant_app_role('sf_test_app2')").await.unwrap();
    let mut one = pool.acquire().await.unwrap();
    let mut two = pool.acquire().await.unwrap();
    for (conn, id) in [(&mut one, 1), (&mut two, 2)] {
        // (SET ROLE on its own: before BEGIN in one string it would be
        // part of the transaction, and a rollback would undo it)
        conn.execute("SET ROLE sf_test_app2").await.unwrap();
        conn.execute(format!("BEGIN; SELECT set_config('storefront.customer_id', '{id}', true)").as_str()).await.unwrap();
    }
    // both open at once: customer 1 places an order, customer 2 sees only its own
    let order1 = scalar_i64(&mut one, "SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"ROLE-1\", \"qty\": 1}]')").await;
    assert_eq!(scalar_i64(&mut two, "SELECT count(*) FROM storefront.orders").await, 1);
    assert_eq!(scalar_i64(&mut two, "SELECT min(order_id) FROM storefront.orders").await, 1);
    assert_eq!(scalar_i64(&mut one, "SELECT count(*) FROM storefront.orders").await, 1);
    assert_eq!(scalar_i64(&mut one, "SELECT min(order_id) FROM storefront.orders").await, order1);
    for table in ["order_line", "payment", "order_status_history", "customer"] {
        let theirs = scalar_i64(&mut one, &format!("SELECT count(*) FROM storefront.{table} WHERE customer_id <> 1")).await;
        assert_eq!(theirs, 0, "{table}");
    }
    one.execute("COMMIT").await.unwrap();
    // customer 2 cannot cancel or read customer 1's order
    let e = two.execute(format!("SELECT storefront.cancel_order({order1})").as_str()).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    two.execute("ROLLBACK").await.unwrap();

    // row security enabled: an app session must name its customer
    pool.execute("SELECT storefront.enable_row_security()").await.unwrap();
    let e = two.execute("SELECT * FROM storefront.order_details(1)").await.unwrap_err();
    let pe = pg_err(&e).unwrap();
    assert_eq!((pe.code.as_str(), pe.message.as_str()), ("42501", "an application session must set storefront.customer_id"));
    refused(&pool, &mut two, "SELECT storefront.place_order(2, '[{\"sku\": \"ROLE-1\", \"qty\": 1}]')", "42501").await;
    two.execute("BEGIN; SELECT set_config('storefront.customer_id', '2', true)").await.unwrap();
    assert_eq!(scalar_i64(&mut two, "SELECT count(*) FROM storefront.order_details(1)").await, 1);
    two.execute("COMMIT").await.unwrap();
    // the extension's owner (and staff roles) act for anyone
    pool.execute("SELECT * FROM storefront.order_details(1)").await.unwrap();
    pool.execute("SELECT storefront.disable_row_security()").await.unwrap();
    two.execute("SELECT * FROM storefront.order_details(1)").await.unwrap();
    for conn in [&mut one, &mut two] {
        conn.execute("RESET ROLE").await.unwrap();
    }
    drop((one, two));
    assert_invariants(&pool).await;
    drop_role(&pool, "sf_test_app2").await;
}

#[tokio::test]
async fn catalog_and_operations_roles_do_their_work_and_no_more() {
    let pool = store("sf_roles_staff").await;
    fresh_role(&pool, "sf_test_catalog").await;
    fresh_role(&pool, "sf_test_ops").await;
    pool.execute(
        "SELECT * FROM storefront.grant_catalog_role('sf_test_catalog');
         SELECT * FROM storefront.grant_operations_role('sf_test_ops');
         SELECT storefront.enable_row_security();",
    )
    .await
    .unwrap();
    let mut catalog = pool.acquire().await.unwrap();
    catalog.execute("SET ROLE sf_test_catalog").await.unwrap();
    catalog
        .execute(
            "SELECT storefront.upsert_product('ROLE-2', 'New thing', 900, 'USD', 'Things');
             SELECT storefront.restock('ROLE-2', 4);
             SELECT storefront.set_hot_stock('ROLE-2', 2);
             SELECT storefront.set_hot_stock('ROLE-2', 0);",
        )
        .await
        .unwrap();
    for sql in [
        "SELECT storefront.place_order(1, '[{\"sku\": \"ROLE-2\", \"qty\": 1}]')",
        "SELECT storefront.ship_order(1)",
        "SELECT * FROM storefront.orders",
        "SELECT * FROM storefront.grant_catalog_role('sf_test_catalog')",
    ] {
        refused(&pool, &mut catalog, sql, "42501").await;
    }
    catalog.execute("RESET ROLE").await.unwrap();

    // operations: moves any customer's order without naming a customer
    pool.execute("SELECT storefront.record_payment(1, 500, true, 'ops-pay')").await.unwrap();
    let mut ops = pool.acquire().await.unwrap();
    ops.execute("SET ROLE sf_test_ops").await.unwrap();
    ops.execute("SELECT storefront.ship_order(1); SELECT storefront.deliver_order(1);").await.unwrap();
    assert_eq!(scalar_i64(&mut ops, "SELECT count(*) FROM storefront.order_events(1)").await, 4);
    assert_eq!(scalar_i64(&mut ops, "SELECT pending_holds FROM storefront.pipeline_status()").await, 0);
    ops.execute("SELECT storefront.expire_reservations(now(), 10)").await.unwrap();
    for sql in [
        "SELECT storefront.upsert_product('ROLE-1', 'Cheap now', 1)",
        "SELECT storefront.restock('ROLE-1', 1)",
        "SELECT storefront.place_order(1, '[{\"sku\": \"ROLE-1\", \"qty\": 1}]')",
        "SELECT * FROM storefront.customer",
    ] {
        refused(&pool, &mut ops, sql, "42501").await;
    }
    ops.execute("RESET ROLE").await.unwrap();
    drop((catalog, ops));
    assert_invariants(&pool).await;
    drop_role(&pool, "sf_test_catalog").await;
    drop_role(&pool, "sf_test_ops").await;
}

#[tokio::test]
async fn analyst_role_reads_but_cannot_write_or_see_password_hashes() {
    let pool = store("sf_roles_analyst").await;
    fresh_role(&pool, "sf_test_analyst").await;
    let granted: Vec<(String, String)> =
        sqlx::query_as("SELECT privilege, object FROM storefront.grant_analyst_role('sf_test_analyst')")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(granted.iter().all(|(p, _)| p == "USAGE" || p == "SELECT" || p == "EXECUTE"), "{granted:?}");
    let customer_grant = granted.iter().find(|(_, o)| o.starts_with("table storefront.customer")).unwrap();
    assert!(!customer_grant.1.contains("password_hash"), "{customer_grant:?}");

    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET ROLE sf_test_analyst").await.unwrap();
    // row-level security shows an analyst every customer's rows
    assert_eq!(scalar_i64(&mut conn, "SELECT count(*) FROM storefront.orders").await, 1);
    assert_eq!(scalar_i64(&mut conn, "SELECT count(*) FROM storefront.order_line").await, 1);
    assert_eq!(scalar_i64(&mut conn, "SELECT count(*) FROM storefront.customer").await, 2);
    assert_eq!(scalar_i64(&mut conn, "SELECT count(*) FROM storefront.event").await, 0);
    let ok: bool = sqlx::query_scalar("SELECT bool_and(ok) FROM storefront.check_invariants()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(ok);
    let buckets = scalar_i64(
        &mut conn,
        "SELECT count(*) FROM storefront.dashboard_orders(now() - interval '1 hour', now() + interval '1 minute')",
    )
    .await;
    assert!(buckets > 0);

    for sql in [
        "SELECT password_hash FROM storefront.customer",
        "SELECT * FROM storefront.customer",
        "UPDATE storefront.sku SET price_cents = 1",
        "INSERT INTO storefront.location (code, name) VALUES ('x', 'X')",
        "SELECT storefront.place_order(1, '[{\"sku\": \"ROLE-1\", \"qty\": 1}]')",
        "SELECT storefront.restock('ROLE-1', 1)",
        "SELECT * FROM storefront.grant_analyst_role('sf_test_analyst')",
    ] {
        refused(&pool, &mut conn, sql, "42501").await;
    }
    conn.execute("RESET ROLE").await.unwrap();
    drop(conn);
    drop_role(&pool, "sf_test_analyst").await;
}

#[tokio::test]
async fn granting_to_null_or_unknown_roles_fails() {
    let pool = fresh_db("sf_roles_bad").await;
    for f in ["grant_app_role", "grant_catalog_role", "grant_operations_role", "grant_analyst_role"] {
        fails_unchanged(&pool, &format!("SELECT * FROM storefront.{f}(NULL)"), "22004").await;
        fails_unchanged(&pool, &format!("SELECT * FROM storefront.{f}('no_such_role_here')"), "42704").await;
    }
    fails_unchanged(&pool, "SELECT * FROM storefront.grant_functions('postgres', '{}', 'boss')", "22023").await;
    // a setting that is not a customer id
    fails_unchanged(
        &pool,
        "SELECT set_config('storefront.customer_id', 'abc', true); SELECT storefront.acting_customer()",
        "22023",
    )
    .await;
}
