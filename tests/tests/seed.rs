//! seed_demo_data(1): the sizes the foundation issue asks for, every
//! invariant, the skew and rhythms, and the examples of its book page (run
//! on this seeded database). Takes about three minutes.

use sqlx::Executor;
use storefront_tests::docs::check_page;
use storefront_tests::*;

async fn scalar(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
async fn bad_scales_are_refused() {
    let pool = fresh_db("sf_seed_bad").await;
    fails_unchanged(&pool, "SELECT * FROM storefront.seed_demo_data(0)", "22023").await;
    fails_unchanged(&pool, "SELECT * FROM storefront.seed_demo_data(101)", "22023").await;
    fails_unchanged(&pool, "SELECT * FROM storefront.seed_demo_data(NULL)", "22023").await;
    fails_unchanged(&pool, "SELECT * FROM storefront.seed_demo_data(1, NULL)", "22004").await;
}

#[tokio::test]
async fn scale_one_is_big_realistic_and_consistent() {
    let db = "sf_seed";
    let pool = fresh_db(db).await;
    let src = repo_root().join("book/src");
    // the page's first example seeds with anchor 2026-11-01
    let failures = check_page(&src, &src.join("reference/seed.md"), db, false).await;
    assert!(failures.is_empty(), "book/src/reference/seed.md:\n{}", failures.join("\n"));

    assert!(scalar(&pool, "SELECT count(*) FROM storefront.order_line").await >= 1_000_000);
    assert!(scalar(&pool, "SELECT count(*) FROM storefront.customer").await >= 100_000);
    assert!(scalar(&pool, "SELECT count(*) FROM storefront.sku").await >= 10_000);
    // a 3-level tree: every product sits in a leaf two levels below a root
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM storefront.product p
             JOIN storefront.category l ON l.category_id = p.category_id
             JOIN storefront.category m ON m.category_id = l.parent_id
             JOIN storefront.category r ON r.category_id = m.parent_id AND r.parent_id IS NULL"
        )
        .await,
        scalar(&pool, "SELECT count(*) FROM storefront.product").await
    );
    assert!(
        scalar(&pool, "SELECT extract(epoch FROM max(placed_at) - min(placed_at))::bigint FROM storefront.orders").await
            >= 364 * 86400
    );
    // skew: the top 1% of SKUs sell more than 10x their share
    let top_share = scalar(
        &pool,
        "WITH u AS (SELECT sku_id, sum(qty) AS n FROM storefront.order_line GROUP BY 1)
         SELECT (1000 * (SELECT sum(n) FROM (SELECT n FROM u ORDER BY n DESC LIMIT 100) t) / sum(n))::bigint FROM u",
    )
    .await;
    assert!(top_share > 100, "top 1% of SKUs have {}‰ of units", top_share);
    // weekly rhythm: Sundays busier than Tuesdays; seasonal: December busier than June
    assert!(
        scalar(&pool, "SELECT count(*) FROM storefront.orders WHERE extract(isodow FROM placed_at) = 7").await
            > scalar(&pool, "SELECT count(*) FROM storefront.orders WHERE extract(isodow FROM placed_at) = 2").await
                * 12
                / 10
    );
    assert!(
        scalar(&pool, "SELECT count(*) FROM storefront.orders WHERE extract(month FROM placed_at) = 12").await
            > scalar(&pool, "SELECT count(*) FROM storefront.orders WHERE extract(month FROM placed_at) = 6").await
                * 15
                / 10
    );
    for status in ["cancelled", "payment_failed", "expired", "delivered"] {
        let n = scalar(&pool, &format!("SELECT count(*) FROM storefront.orders WHERE status = '{status}'")).await;
        assert!(n > 1000, "{n} {status} orders");
    }
    assert_invariants(&pool).await;

    // deterministic: the same scale and anchor give the same orders
    let fingerprint = "SELECT md5(string_agg(format('%s/%s/%s', placed_at, total_cents, status), ',' ORDER BY order_id))
                       FROM storefront.orders";
    let first: String = sqlx::query_scalar(fingerprint).fetch_one(&pool).await.unwrap();
    pool.execute("DROP EXTENSION storefront; CREATE EXTENSION storefront;").await.unwrap();
    pool.execute("SELECT * FROM storefront.seed_demo_data(1, '2026-11-01')").await.unwrap();
    let second: String = sqlx::query_scalar(fingerprint).fetch_one(&pool).await.unwrap();
    assert_eq!(first, second, "seed is not deterministic");
}
