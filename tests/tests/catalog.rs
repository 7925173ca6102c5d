//! upsert_product, set_sellable, add_location, restock and stock: the error
//! contract for each bad input, and that a failed call changes nothing.

use sqlx::Executor;
use storefront_tests::*;

async fn store(name: &str) -> sqlx::PgPool {
    let pool = fresh_db(name).await;
    pool.execute(
        "SELECT storefront.upsert_product('TEE-1', 'Tee', 1999, 'USD', 'Apparel/Tees');
         SELECT storefront.restock('TEE-1', 4);",
    )
    .await
    .unwrap();
    pool
}

#[tokio::test]
async fn upsert_product_rejects_bad_input() {
    let pool = store("sf_catalog_upsert").await;
    for (sql, code) in [
        ("SELECT storefront.upsert_product('', 'Tee', 100)", "22023"),
        ("SELECT storefront.upsert_product('has space', 'Tee', 100)", "22023"),
        ("SELECT storefront.upsert_product(NULL, 'Tee', 100)", "22023"),
        ("SELECT storefront.upsert_product('OK-1', '  ', 100)", "22023"),
        ("SELECT storefront.upsert_product('OK-1', 'Tee', -1)", "22023"),
        ("SELECT storefront.upsert_product('OK-1', 'Tee', NULL)", "22023"),
        ("SELECT storefront.upsert_product('OK-1', 'Tee', 100, 'US1')", "22023"),
        ("SELECT storefront.upsert_product('OK-1', 'Tee', 100, 'USD', 'A//B')", "22023"),
        ("SELECT storefront.upsert_product('OK-1', 'Tee', 100, 'USD', NULL, '[1, 2]')", "22023"),
        ("SELECT storefront.upsert_product('OK-1', 'Tee', 100, 'USD', NULL, '\"x\"')", "22023"),
    ] {
        fails_unchanged(&pool, sql, code).await;
    }
    // and the error names what is wrong
    let e = fails_unchanged(&pool, "SELECT storefront.upsert_product('OK-1', 'Tee', 100, 'dollars')", "22023").await;
    assert_eq!(e.message, "invalid currency code \"dollars\"");
}

#[tokio::test]
async fn restock_and_stock_reject_bad_input() {
    let pool = store("sf_catalog_restock").await;
    for (sql, code) in [
        ("SELECT storefront.restock('TEE-1', 0)", "22023"),
        ("SELECT storefront.restock('TEE-1', -3)", "22023"),
        ("SELECT storefront.restock('TEE-1', NULL)", "22023"),
        ("SELECT storefront.restock('TEE-1', 1000001)", "22023"),
        ("SELECT storefront.restock('NOPE-1', 1)", "23503"),
        ("SELECT storefront.restock('TEE-1', 1, 'nowhere')", "23503"),
        ("SELECT * FROM storefront.stock('NOPE-1')", "23503"),
        ("SELECT storefront.set_sellable('NOPE-1', false)", "23503"),
        ("SELECT storefront.add_location('Bad Code', 'x')", "22023"),
        ("SELECT storefront.add_location('main', 'again')", "23505"),
    ] {
        fails_unchanged(&pool, sql, code).await;
    }
    let e = fails_unchanged(&pool, "SELECT storefront.restock('NOPE-1', 1)", "23503").await;
    assert_eq!(e.message, "product SKU \"NOPE-1\" does not exist");
    assert!(e.hint.is_some());
}

#[tokio::test]
async fn stock_reflects_restocks_across_locations() {
    let pool = store("sf_catalog_stock").await;
    pool.execute("SELECT storefront.add_location('east', 'East'); SELECT storefront.restock('TEE-1', 6, 'east');")
        .await
        .unwrap();
    let rows: Vec<(String, i32, i32, i32)> =
        sqlx::query_as("SELECT location, on_hand, reserved, available FROM storefront.stock('TEE-1')")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![("main".into(), 4, 0, 4), ("east".into(), 6, 0, 6)]);
    assert_invariants(&pool).await;
}

/// product(sku): one SKU as products() shows it, sellable or not; an
/// unknown SKU is 23503. (It used to fail at every call: PL/pgSQL refuses a
/// parameter named like an output column.)
#[tokio::test]
async fn product_shows_one_sku_and_refuses_an_unknown_one() {
    let pool = store("sf_catalog_product").await;
    let row: (String, String, i64, String, Option<String>, i64) = sqlx::query_as(
        "SELECT sku, product, price_cents, currency, category, available FROM storefront.product(' TEE-1 ')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row, ("TEE-1".into(), "Tee".into(), 1999, "USD".into(), Some("apparel/tees".into()), 4));
    pool.execute("SELECT storefront.set_sellable('TEE-1', false)").await.unwrap();
    let named: i64 = sqlx::query_scalar("SELECT available FROM storefront.product(sku => 'TEE-1')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(named, 4);
    let e = fails_unchanged(&pool, "SELECT * FROM storefront.product('NOPE-1')", "23503").await;
    assert_eq!(e.message, "product SKU \"NOPE-1\" does not exist");
    fails_unchanged(&pool, "SELECT * FROM storefront.product(NULL)", "23503").await;
}
