//! grant_app_role / grant_analyst_role: an application role runs the store
//! through the API and reads no table; an analyst reads but cannot write or
//! see password hashes; nobody else can hand out privileges.

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

#[tokio::test]
async fn app_role_calls_the_api_and_touches_no_table() {
    let pool = fresh_db("sf_roles_app").await;
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
    assert!(granted.iter().all(|(p, _)| p == "USAGE" || p == "EXECUTE"), "{granted:?}");
    // idempotent
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.grant_app_role('sf_test_app')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, granted.len() as i64);

    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET ROLE sf_test_app").await.unwrap();
    // a whole order's life through the API
    conn.execute(
        "SELECT storefront.register_customer('app@example.com', 'pw', 'App User');
         SELECT storefront.upsert_product('ROLE-1', 'Role test', 500);
         SELECT storefront.restock('ROLE-1', 3);",
    )
    .await
    .unwrap();
    let customer: i64 = sqlx::query_scalar("SELECT storefront.authenticate('app@example.com', 'pw')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let order: i64 =
        sqlx::query_scalar("SELECT order_id FROM storefront.place_order($1, '[{\"sku\": \"ROLE-1\", \"qty\": 2}]')")
            .bind(customer)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let status: String = sqlx::query_scalar("SELECT storefront.record_payment($1, 1000, true, 'role-pay-1')")
        .bind(order)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(status, "paid");
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.order_timeline($1)")
        .bind(order)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(steps, 2);
    let available: i32 = sqlx::query_scalar("SELECT available FROM storefront.stock('ROLE-1')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(available, 1);

    // no table, no operator function, no granting
    for sql in [
        "SELECT * FROM storefront.orders",
        "SELECT password_hash FROM storefront.customer",
        "UPDATE storefront.inventory SET on_hand = on_hand + 100",
        "DELETE FROM storefront.outbox",
        "SELECT storefront.set_hot_stock('ROLE-1', 4)",
        "SELECT storefront.seed_demo_data(1)",
        "SELECT * FROM storefront.check_invariants()",
        "SELECT * FROM storefront.grant_app_role('sf_test_app')",
    ] {
        refused(&pool, &mut conn, sql, "42501").await;
    }
    conn.execute("RESET ROLE").await.unwrap();
    drop(conn);
    assert_invariants(&pool).await;
    drop_role(&pool, "sf_test_app").await;
}

#[tokio::test]
async fn analyst_role_reads_but_cannot_write_or_see_password_hashes() {
    let pool = fresh_db("sf_roles_analyst").await;
    pool.execute(
        "SELECT storefront.register_customer('ana@example.com', 'secret', 'Ana');
         SELECT storefront.upsert_product('ROLE-2', 'Role test', 700);
         SELECT storefront.restock('ROLE-2', 5);
         SELECT storefront.place_order((SELECT customer_id FROM storefront.customer),
                                       '[{\"sku\": \"ROLE-2\", \"qty\": 1}]');",
    )
    .await
    .unwrap();
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
    let (orders, lines): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM storefront.orders), (SELECT count(*) FROM storefront.order_line)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!((orders, lines), (1, 1));
    let email: String = sqlx::query_scalar("SELECT email FROM storefront.customer")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(email, "ana@example.com");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.event").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(events, 0);
    let ok: bool = sqlx::query_scalar("SELECT bool_and(ok) FROM storefront.check_invariants()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(ok);
    let buckets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM storefront.dashboard_orders(now() - interval '1 hour', now() + interval '1 minute')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(buckets > 0);

    for sql in [
        "SELECT password_hash FROM storefront.customer",
        "SELECT * FROM storefront.customer",
        "UPDATE storefront.sku SET price_cents = 1",
        "INSERT INTO storefront.location (code, name) VALUES ('x', 'X')",
        "SELECT storefront.place_order(1, '[{\"sku\": \"ROLE-2\", \"qty\": 1}]')",
        "SELECT storefront.restock('ROLE-2', 1)",
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
    for f in ["grant_app_role", "grant_analyst_role"] {
        fails_unchanged(&pool, &format!("SELECT * FROM storefront.{f}(NULL)"), "22004").await;
        fails_unchanged(&pool, &format!("SELECT * FROM storefront.{f}('no_such_role_here')"), "42704").await;
    }
}
